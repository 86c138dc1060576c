"""Writing a dataset directory: under a temporary name, renamed into place when complete."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from simtool import __version__
from simtool.errors import UserError
from simtool.formats.dataset_dir._layout import CARD, FORMAT_VERSION, IMAGES, REJECTED, SPLITS, codes, conform_table, strings
from simtool.formats.dataset_dir._registry import DATASET_KINDS
from simtool.formats.dataset_dir.video import FRAMES, VIDEO_COLUMNS
from simtool.formats.image_store import ImageSpool
from simtool.formats.rooms import write_rooms
from simtool.io import atomic_dir, atomic_write_json, atomic_write_text


@contextmanager
def new_dataset_dir(out: str | Path) -> Iterator[Path]:
    """A temporary directory that becomes ``out`` when the block succeeds (nothing is left if it fails)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"The output {out} already exists; choose another --out or delete it first.")
    with atomic_dir(out) as tmp:
        yield tmp


def write_rejected(tmp: Path, rejected: Sequence[tuple[str, str]]) -> None:
    """``rejected.txt``: one ``path<TAB>reason`` line per skipped file or object."""
    lines = [f"{p}\t{why}".replace("\n", " ") for p, why in rejected]
    atomic_write_text(tmp / REJECTED, "".join(line + "\n" for line in lines))


def write_tables(tmp: Path, kind: str, tables: dict[str, pa.Table], images_digest: str, card: dict) -> dict:
    """Write the index tables of ``kind`` and the card into ``tmp`` (``images.h5`` is written by the caller).

    ``tables`` maps file names to tables (see the module docstring); they are cast to the declared
    column types. ``card`` holds everything but ``kind``, ``format_version`` and ``fingerprint``,
    which are added here. Returns the card.
    """
    if kind not in DATASET_KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}")
    cls = DATASET_KINDS[kind]
    declared = {**cls.tables, **cls.optional_tables}
    unknown = set(tables) - set(declared)
    if unknown or not set(cls.tables) <= set(tables):
        raise ValueError(f"a {kind} dataset needs the tables {sorted(cls.tables)}, got {sorted(tables)}")
    conformed = {}
    for name, table in tables.items():
        required, optional = declared[name]
        conformed[name] = conform_table(table, required, optional, name)
        pq.write_table(conformed[name], tmp / name)
    full = {"name": card.get("name", tmp.name), "kind": kind, "format_version": FORMAT_VERSION,
            "fingerprint": cls.fingerprint_of(conformed, images_digest)}
    full.update({k: v for k, v in card.items() if k not in full})
    full.setdefault("splits", list(SPLITS))
    full.setdefault("built_by", {"tool": f"simtool {__version__}"})
    atomic_write_json(tmp / CARD, full)
    return full


class DatasetWriter:
    """Write a complete video dataset directory atomically (for small, in-memory builds such as the toy world).

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
        if kind != "video":
            raise ValueError(f"DatasetWriter writes video datasets; got kind {kind!r}")
        self.name, self.kind, self.profile = name, kind, profile
        self._dir_cm = atomic_dir(self.out)
        self.tmp = self._dir_cm.__enter__()
        self._spool = ImageSpool(self.tmp / ".images.raw")
        self._rows: dict[str, list] = {k: [] for k in VIDEO_COLUMNS}
        self._done = False

    def __enter__(self) -> DatasetWriter:
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
            digest = self._spool.write_h5(self.tmp / IMAGES)
            card = {
                "name": self.name,
                "profile": self.profile,
                "counts": video_counts(table, len(self._spool), len(category_names)),
                "category_names": list(category_names),
                "splits": list(SPLITS),
                "rooms": write_rooms(self.tmp, rooms),
                "built_by": {"tool": f"simtool {__version__}", **(card_extra or {})},
            }
            write_tables(self.tmp, "video", {FRAMES: table}, digest, card)
        except BaseException as exc:
            self._abort(type(exc), exc, exc.__traceback__)
            raise
        self._done = True
        self._dir_cm.__exit__(None, None, None)
        return self.out


def video_counts(table: pa.Table, n_images: int, n_categories: int) -> dict:
    split = strings(table.column("split"))
    objs = codes(table.column("object"))[0]
    counts = {"images": int(n_images), "categories": int(n_categories), "objects": int(len(np.unique(objs)))}
    counts.update({f"{s}_objects": int(len(np.unique(objs[split == s]))) for s in SPLITS})
    counts.update({f"{s}_images": int((split == s).sum()) for s in SPLITS})
    return counts
