"""The dataset directory: the one format every training and evaluation stage reads.

Layout (format version 1)::

    DIR/
      frames.parquet                    one row per image
      images.h5                         encoded JPEG/PNG bytes, entry i = row with index == i
      dataset.json                      the card: name, kind, counts, category names, splits, provenance
      room_assignment_balanced.json     video datasets: room name -> category ids ("Uncertain": dropped)
      room_assignment_random.json       the random control assignment (same room sizes)

``frames.parquet`` columns for videos: ``category`` (int64), ``object`` (string), ``frame`` (int32,
position in the video), ``length`` (int32, frames in the video), ``partition`` (string), ``split``
("train" | "val" | "test"), ``index`` (int64 into ``images.h5``) and optionally ``path`` (string,
the source file). The first five mirror the columns of the original MVImgNet loader.

A directory is written under a temporary name and renamed into place when complete, so a
half-built dataset never looks like a dataset.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from simtool import __version__
from simtool.data.images import ImageStore, write_images_h5
from simtool.data.rooms import load_room_assignment
from simtool.errors import UserError
from simtool.io import atomic_write_json

FORMAT_VERSION = 1
FRAMES = "frames.parquet"
IMAGES = "images.h5"
CARD = "dataset.json"
ROOMS = {"semantic": "room_assignment_balanced.json", "random": "room_assignment_random.json"}
SPLITS = ("train", "val", "test")


def split_by_object(objects: np.ndarray, categories: np.ndarray, fractions: dict[str, float], rng: np.random.Generator) -> dict[int, str]:
    """Assign every object to a split, per category, so splits never share an object.

    ``objects``/``categories``: (N,) per-row ids. In each category the objects are shuffled and the
    first ``round(test*n)`` go to test, the next ``round(val*n)`` to val, the rest to train (at least
    one object stays in train).
    """
    out: dict[int, str] = {}
    pairs = np.unique(np.stack([categories, objects], 1), axis=0)
    for cat in np.unique(pairs[:, 0]):
        objs = rng.permutation(pairs[pairs[:, 0] == cat, 1])
        n = len(objs)
        n_test = int(round(fractions.get("test", 0) * n))
        n_val = int(round(fractions.get("val", 0) * n))
        while n_test + n_val > n - 1 and (n_test or n_val):
            if n_val >= n_test and n_val:
                n_val -= 1
            else:
                n_test -= 1
        for i, o in enumerate(objs):
            out[int(o)] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return out


@dataclass
class DatasetWriter:
    """Collects rows and encoded images, then writes a complete dataset directory atomically."""

    out: Path
    name: str
    kind: str = "video"
    rows: dict[str, list] = field(default_factory=lambda: {k: [] for k in ("category", "object", "frame", "length", "partition", "split", "index", "path")})
    encoded: list[bytes] = field(default_factory=list)

    def __post_init__(self):
        self.out = Path(self.out)
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
            raise UserError(f"The output {self.out} already exists; choose another --out or delete it first.")

    def add(self, image: bytes, category: int, obj: str, frame: int, length: int, split: str, partition: str = "", path: str = "") -> None:
        self.rows["category"].append(int(category))
        self.rows["object"].append(str(obj))
        self.rows["frame"].append(int(frame))
        self.rows["length"].append(int(length))
        self.rows["partition"].append(partition)
        self.rows["split"].append(split)
        self.rows["index"].append(len(self.encoded))
        self.rows["path"].append(path)
        self.encoded.append(image)

    def write(self, category_names: Sequence[str], rooms: dict[str, dict] | None, card_extra: dict) -> Path:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".tmp", dir=self.out.parent))
        try:
            table = pa.table(
                {
                    "category": pa.array(self.rows["category"], pa.int64()),
                    "object": pa.array(self.rows["object"], pa.string()),
                    "frame": pa.array(self.rows["frame"], pa.int32()),
                    "length": pa.array(self.rows["length"], pa.int32()),
                    "partition": pa.array(self.rows["partition"], pa.string()),
                    "split": pa.array(self.rows["split"], pa.string()),
                    "index": pa.array(self.rows["index"], pa.int64()),
                    "path": pa.array(self.rows["path"], pa.string()),
                }
            )
            pq.write_table(table, tmp / FRAMES)
            write_images_h5(tmp / IMAGES, self.encoded)
            split = np.array(self.rows["split"])
            objs = np.array(self.rows["object"])
            counts = {
                "images": len(self.encoded),
                "categories": len(category_names),
                "objects": int(len(np.unique(objs))),
                **{f"{s}_objects": int(len(np.unique(objs[split == s]))) for s in SPLITS},
                **{f"{s}_images": int((split == s).sum()) for s in SPLITS},
            }
            room_files = {}
            for key, assignment in (rooms or {}).items():
                atomic_write_json(tmp / ROOMS[key], assignment)
                room_files[key] = ROOMS[key]
            card = {
                "name": self.name,
                "kind": self.kind,
                "format_version": FORMAT_VERSION,
                "counts": counts,
                "category_names": list(category_names),
                "splits": list(SPLITS),
                "rooms": room_files,
                "built_by": {"tool": f"simtool {__version__}", **card_extra},
            }
            atomic_write_json(tmp / CARD, card)
            if self.out.exists():
                self.out.rmdir()
            tmp.rename(self.out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self.out


class VideoDataset:
    """Read side of a dataset directory; validates it and exposes columns as NumPy arrays."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"The data directory {self.root} does not exist; build one with 'simtool build-data --format toyworld --out DIR'.")
        for name in (FRAMES, IMAGES, CARD):
            if not (self.root / name).is_file():
                raise UserError(
                    f"{self.root} is not a simtool dataset: {name} is missing; build one with 'simtool build-data'."
                )
        try:
            self.card = json.loads((self.root / CARD).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{self.root / CARD} is not valid JSON ({exc.msg}); rebuild the dataset.") from exc
        version = self.card.get("format_version")
        if version != FORMAT_VERSION:
            raise UserError(f"{self.root} has dataset format version {version}; this simtool reads version {FORMAT_VERSION}, rebuild it.")
        table = pq.read_table(self.root / FRAMES)
        needed = {"category", "object", "frame", "split", "index"}
        missing = needed - set(table.column_names)
        if missing:
            raise UserError(f"{self.root / FRAMES} lacks the column(s) {', '.join(sorted(missing))}; rebuild the dataset.")
        self.category = table.column("category").to_numpy().astype(np.int64)
        self.object_names = np.asarray(table.column("object").to_pylist(), dtype=object)
        uniq, self.object = np.unique(self.object_names.astype(str), return_inverse=True)
        self.object = self.object.astype(np.int64)
        self.frame = table.column("frame").to_numpy().astype(np.int64)
        self.split = np.asarray(table.column("split").to_pylist(), dtype=object).astype(str)
        self.index = table.column("index").to_numpy().astype(np.int64)
        self.category_names: list[str] = list(self.card.get("category_names", []))
        self.n_categories = max(len(self.category_names), int(self.category.max()) + 1 if len(self.category) else 0)

    def __len__(self) -> int:
        return len(self.category)

    @property
    def name(self) -> str:
        return str(self.card.get("name", self.root.name))

    def rooms(self, which: str = "semantic") -> tuple[np.ndarray, list[str], str]:
        """Room of every category for ``which`` = 'semantic' | 'random' | a JSON path.

        Returns ``(room_of_category int64 (C,) with -1 = dropped, room names, source path)``.
        """
        if which in ROOMS:
            path = self.root / ROOMS[which]
            if not path.is_file():
                raise UserError(f"The dataset {self.root} has no {which} room assignment ({ROOMS[which]}); pass a room JSON file instead.")
        else:
            path = Path(which)
        room_of_category, names = load_room_assignment(path, self.n_categories)
        return room_of_category, names, str(path)

    def images(self, size: int) -> ImageStore:
        return ImageStore(self.root / IMAGES, size)

    def rows(self, split: str) -> np.ndarray:
        """Row indices of a split ('all' = every row)."""
        if split == "all":
            return np.arange(len(self))
        return np.flatnonzero(self.split == split)
