"""The dataset directory: the format ``build-data`` writes and every training stage reads.

Layout (format version 2)::

    DIR/
      dataset.json                      the card: name, kind, counts, category names, splits, rooms,
                                        content fingerprint, the profile it is meant for, provenance
      frames.parquet                    one row per image (the index)
      images.h5                         encoded JPEG/PNG bytes of every image (see below)
      room_assignment_balanced.json     video datasets: room name -> category ids ("Uncertain": dropped)
      room_assignment_random.json       the random control assignment (same room sizes)

``frames.parquet`` columns for ``kind: video``: ``category`` (int64), ``object`` (string), ``frame``
(int32, position in the video), ``length`` (int32, frames in the video), ``partition`` (string),
``split`` ("train" | "val" | "test"), ``index`` (int64 into ``images.h5``) and ``path`` (string, the
source file, may be empty). The first five mirror the columns of the original MVImgNet loader.

``images.h5`` is the checksummed image store of :mod:`simtool.formats.image_store`.

The **fingerprint** is a SHA-256 of the content (the index columns and every image's bytes, in
order), so two copies of one dataset are recognised as the same dataset wherever they live.

A directory is written under a temporary name and renamed into place when complete, so a
half-built dataset never looks like a dataset. Every reading problem is one :class:`UserError`
sentence naming the file and the fix.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from simtool import __version__
from simtool.data.rooms import load_room_assignment
from simtool.errors import UserError
from simtool.formats.image_store import ImageSpool, ImageStore, rebuild_hint
from simtool.io import atomic_dir, atomic_write_json

FORMAT_VERSION = 2
CARD = "dataset.json"
FRAMES = "frames.parquet"
IMAGES = "images.h5"
ROOM_FILES = {"semantic": "room_assignment_balanced.json", "random": "room_assignment_random.json"}
SPLITS = ("train", "val", "test")
KINDS = ("video",)

VIDEO_COLUMNS = {
    "category": pa.int64(),
    "object": pa.string(),
    "frame": pa.int32(),
    "length": pa.int32(),
    "partition": pa.string(),
    "split": pa.string(),
    "index": pa.int64(),
    "path": pa.string(),
}
# Columns that define a dataset's content (``path`` says where a file came from, not what it is).
FINGERPRINT_COLUMNS = ("category", "object", "frame", "length", "partition", "split", "index")


def fingerprint(table: pa.Table, images_digest: str) -> str:
    """Content fingerprint of an index table and the digest of its images (``"sha256:<hex>"``)."""
    h = hashlib.sha256(b"simtool-dataset-v2\0")
    for name in FINGERPRINT_COLUMNS:
        if name not in table.column_names:
            continue
        col = table.column(name)
        h.update(name.encode() + b"\0")
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            values = col.to_numpy(zero_copy_only=False).astype(str)
            h.update("\x00".join(values.tolist()).encode("utf-8"))
        else:
            h.update(np.ascontiguousarray(col.to_numpy(zero_copy_only=False).astype(np.int64)).tobytes())
        h.update(b"\0")
    h.update(images_digest.encode())
    return "sha256:" + h.hexdigest()


class DatasetWriter:
    """Write a complete video dataset directory atomically.

    Use as a context manager; a block that raises leaves nothing behind::

        with DatasetWriter(out, name="my-videos") as w:
            for ...:
                w.add(encoded_jpeg, category=c, obj="obj-17", frame=i, length=n, split="train")
            w.write(category_names, rooms={"semantic": {...}, "random": {...}}, card_extra={...})

    ``rooms`` maps ``"semantic"`` / ``"random"`` to a room assignment in the MVImgNet JSON shape.
    ``profile`` names the train profile the dataset is meant for (``toyworld`` for the toy world).
    """

    def __init__(self, out: str | Path, name: str, kind: str = "video", profile: str | None = None):
        self.out = Path(out)
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
            raise UserError(f"The output {self.out} already exists; choose another --out or delete it first.")
        if kind not in KINDS:
            raise ValueError(f"unknown dataset kind {kind!r}")
        self.name, self.kind, self.profile = name, kind, profile
        self._dir_cm = atomic_dir(self.out)
        self.tmp = self._dir_cm.__enter__()
        self._spool = ImageSpool(self.tmp / ".images.raw")
        self._rows: dict[str, list] = {k: [] for k in VIDEO_COLUMNS}
        self._done = False

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._done:
            self._abort(exc_type, exc, tb)

    def _abort(self, exc_type=None, exc=None, tb=None) -> None:
        self._spool.discard()
        self._done = True
        try:
            self._dir_cm.__exit__(exc_type or RuntimeError, exc or RuntimeError("aborted"), tb)
        except BaseException:  # noqa: BLE001 - the context manager re-raises what we passed in
            pass

    def add(self, image: bytes, category: int, obj: str, frame: int, length: int, split: str, partition: str = "", path: str = "") -> int:
        """Add one frame; returns its image index."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        index = self._spool.add(image)
        row = {"category": int(category), "object": str(obj), "frame": int(frame), "length": int(length),
               "partition": str(partition), "split": split, "index": index, "path": str(path)}
        for k, v in row.items():
            self._rows[k].append(v)
        return index

    def write(self, category_names: Sequence[str], rooms: dict[str, dict] | None = None, card_extra: dict | None = None) -> Path:
        try:
            table = pa.table({k: pa.array(v, t) for (k, t), v in zip(VIDEO_COLUMNS.items(), self._rows.values())})
            pq.write_table(table, self.tmp / FRAMES)
            digest = self._spool.write_h5(self.tmp / IMAGES)
            split = np.asarray(self._rows["split"])
            objs = np.asarray(self._rows["object"])
            counts = {
                "images": len(self._spool),
                "categories": len(category_names),
                "objects": int(len(np.unique(objs))),
                **{f"{s}_objects": int(len(np.unique(objs[split == s]))) for s in SPLITS},
                **{f"{s}_images": int((split == s).sum()) for s in SPLITS},
            }
            room_files = {}
            for key, assignment in (rooms or {}).items():
                atomic_write_json(self.tmp / ROOM_FILES[key], assignment)
                room_files[key] = ROOM_FILES[key]
            card = {
                "name": self.name,
                "kind": self.kind,
                "format_version": FORMAT_VERSION,
                "fingerprint": fingerprint(table, digest),
                "profile": self.profile,
                "counts": counts,
                "category_names": list(category_names),
                "splits": list(SPLITS),
                "rooms": room_files,
                "built_by": {"tool": f"simtool {__version__}", **(card_extra or {})},
            }
            atomic_write_json(self.tmp / CARD, card)
        except BaseException as exc:
            self._abort(type(exc), exc, exc.__traceback__)
            raise
        self._done = True
        self._dir_cm.__exit__(None, None, None)
        return self.out


class Dataset:
    """Read side of a dataset directory: validates it and exposes the index as NumPy columns."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"The data directory {self.root} does not exist; build one with 'simtool build-data --format toyworld --out DIR'.")
        for name in (CARD, FRAMES, IMAGES):
            if not (self.root / name).is_file():
                raise UserError(f"{self.root} is not a simtool dataset: {name} is missing; build one with 'simtool build-data'.")
        try:
            self.card = json.loads((self.root / CARD).read_text(encoding="utf-8"))
            if not isinstance(self.card, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError) as exc:
            raise UserError(f"{self.root / CARD} is damaged (not a JSON object: {exc}); {rebuild_hint(self.root)}.") from None
        version = self.card.get("format_version")
        if version != FORMAT_VERSION:
            raise UserError(f"{self.root} has dataset format version {version}; this simtool reads version {FORMAT_VERSION}: rebuild it with simtool build-data.")
        if self.card.get("kind") not in KINDS:
            raise UserError(f"{self.root} holds a dataset of kind {self.card.get('kind')!r}; this stage reads: {', '.join(KINDS)}.")
        try:
            table = pq.read_table(self.root / FRAMES)
        except (pa.ArrowException, OSError) as exc:
            raise UserError(f"{self.root / FRAMES} is damaged ({str(exc).splitlines()[0]}); {rebuild_hint(self.root)}.") from None
        missing = {"category", "object", "frame", "split", "index"} - set(table.column_names)
        if missing:
            raise UserError(f"{self.root / FRAMES} lacks the column(s) {', '.join(sorted(missing))}; {rebuild_hint(self.root)}.")
        self.table = table
        self.category = table.column("category").to_numpy().astype(np.int64)
        self.object_names = table.column("object").to_numpy(zero_copy_only=False).astype(str)
        _, self.object = np.unique(self.object_names, return_inverse=True)
        self.object = self.object.astype(np.int64).reshape(-1)
        self.frame = table.column("frame").to_numpy().astype(np.int64)
        self.split = table.column("split").to_numpy(zero_copy_only=False).astype(str)
        self.index = table.column("index").to_numpy().astype(np.int64)
        self.category_names: list[str] = list(self.card.get("category_names", []))
        self.n_categories = max(len(self.category_names), int(self.category.max()) + 1 if len(self.category) else 0)
        bad = sorted(set(np.unique(self.split)) - set(SPLITS))
        if bad:
            raise UserError(f"{self.root / FRAMES} has unknown split value {bad[0]!r} (expected {', '.join(SPLITS)}); {rebuild_hint(self.root)}.")

    def __len__(self) -> int:
        return len(self.category)

    @property
    def name(self) -> str:
        return str(self.card.get("name", self.root.name))

    @property
    def fingerprint(self) -> str:
        return str(self.card.get("fingerprint", ""))

    @property
    def profile(self) -> str | None:
        return self.card.get("profile")

    def ref(self) -> dict:
        """What a run or an embeddings file records about its dataset."""
        return {"name": self.name, "fingerprint": self.fingerprint, "path": str(self.root.resolve()), "kind": self.card.get("kind")}

    @property
    def room_assignments(self) -> list[str]:
        """Names of the room assignments stored in the directory (e.g. semantic, random)."""
        return [k for k in ROOM_FILES if (self.root / ROOM_FILES[k]).is_file()]

    def rooms(self, which: str = "semantic") -> tuple[np.ndarray, list[str], str]:
        """Room of every category for ``which`` = 'semantic' | 'random' | a JSON path.

        Returns ``(room_of_category int64 (C,) with -1 = dropped, room names, source path)``.
        """
        if which in ROOM_FILES:
            path = self.root / ROOM_FILES[which]
            if not path.is_file():
                raise UserError(f"The dataset {self.root} has no {which} room assignment ({ROOM_FILES[which]}); pass a room JSON file instead.")
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

    def ids(self, rows: np.ndarray) -> np.ndarray:
        """Stable item ids of ``rows`` (``"<object>/<frame>"``), the same in every copy of the dataset."""
        return np.char.add(np.char.add(self.object_names[rows], "/"), self.frame[rows].astype(str))


def read_card(root: str | Path) -> dict | None:
    """The card of a dataset directory, or None when ``root`` holds no readable card (no error)."""
    path = Path(root) / CARD
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) else None

