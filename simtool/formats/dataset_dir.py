"""The dataset directory: the format ``build-data`` writes and every training stage reads.

Layout (format version 2). Every kind has::

    DIR/
      dataset.json      the card: name, kind, counts, splits, source, the resolved build spec, the
                        content fingerprint, the profile it is meant for (optional), how it was built
      images.h5         the checksummed image store (:mod:`simtool.formats.image_store`); may hold
                        zero images (a triplets dataset without pictures)
      rejected.txt      (datasets built from files) every skipped source file or object, one per
                        line: ``<path relative to SRC><TAB><reason>``; may be empty

and, by ``kind`` (the card's ``kind``):

``video`` -- ``frames.parquet``, one row per frame: ``category`` (int64), ``object`` (string),
``frame`` (int32, 0-based position in the video), ``length`` (int32, frames in the video),
``partition`` (string, e.g. the MVImgNet archive), ``split`` ("train" | "val" | "test"), ``index``
(int64 into ``images.h5``), ``path`` (string, source file relative to SRC, may be empty). The first
five mirror the columns of the original MVImgNet loader. Card: ``category_names`` (list, index =
category id; ids may have gaps, named ""), ``rooms`` (which room files exist). Room files:
``room_assignment_balanced.json`` ("semantic") and ``room_assignment_random.json`` ("random"), room
name -> category ids, ``"Uncertain"`` = dropped.

``classes`` -- ``images.parquet``, one row per image: ``class`` (int64, 0-based), ``split``,
``index`` (int64 into ``images.h5``), ``path`` (string, source path relative to SRC) and, where the
source has one, ``superclass`` (int64). Card: ``class_names`` (list, index = class id) and
``superclass_names`` when there is a ``superclass`` column.

``triplets`` -- ``items.parquet``, one row per item: ``item`` (int64 0..N-1, row order), ``id``
(string, the item id as given: a file stem, a catalogue id, or the 0-based row number of an items
file), ``name`` (string, may be ""), ``index`` (int64 into ``images.h5``, -1 = the item has no
image), ``split`` (the item's split with ``split_by: item``, else ""), and ``class`` (int64, -1 =
unknown) where the source knows classes (card ``class_names``). ``triplets.parquet``: ``a``, ``b``,
``c`` (int64 item numbers), ``kind`` ("directed": a anchor, b closer, c farther; "odd-one-out":
(a, b) the pair judged most similar, c the odd one) and ``split``. Optional
``item_images.parquet`` (``item``, ``index``, ``path``) lists every image of every item when an item
has several (THINGS concepts); ``items.index`` is then the item's first image. Card: ``split_by``
("triplet" | "item") and ``dropped`` (triplets dropped while building, by reason).

The **fingerprint** is a SHA-256 of the content (the index columns and every image's bytes, in
order), so two copies of one dataset are recognised as the same dataset wherever they live.

A directory is written under a temporary name and renamed into place when complete, so a
half-built dataset never looks like a dataset. Every reading problem is one :class:`UserError`
sentence naming the file and the fix.

Reading (:class:`Dataset`) uses columnar pyarrow -> NumPy conversions (dictionary encoding for
strings), never per-row Python lists: a generated 6.5-million-frame video index opens in about
1.3 s on a 2-core machine (``benchmarks/bench_build.py``). Common to every kind: ``kind``, ``card``, ``name``,
``fingerprint``, ``profile``, ``ref()``, ``images(size)``, ``rows(split)`` (rows of the main
table: frames / images / items), ``ids(rows)``, ``labels(rows)``, ``split_of(rows)``, ``index``
(image of every row, -1 = none). Per kind: video ``category``, ``object`` (codes in sorted name
order), ``object_names``, ``frame``, ``split``, ``category_names``, ``n_categories``, ``rooms()``,
``room_assignments``; classes ``cls``, ``class_names``, ``split``, ``path``, ``superclass``
(or None); triplets ``item_ids``, ``item_names``, ``item_index``, ``item_split``, ``item_class``
(or None), ``triplets`` (T, 3), ``triplet_kind``, ``triplet_split``, ``split_by``,
``item_images`` (or None), ``triplet_rows(split)``.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from simtool import __version__
from simtool.data.rooms import load_room_assignment
from simtool.errors import UserError
from simtool.formats.image_store import ImageSpool, ImageStore, rebuild_hint
from simtool.io import atomic_dir, atomic_write_json, atomic_write_text

FORMAT_VERSION = 2
CARD = "dataset.json"
FRAMES = "frames.parquet"
CLASS_INDEX = "images.parquet"
ITEMS = "items.parquet"
TRIPLETS = "triplets.parquet"
ITEM_IMAGES = "item_images.parquet"
IMAGES = "images.h5"
REJECTED = "rejected.txt"
ROOM_FILES = {"semantic": "room_assignment_balanced.json", "random": "room_assignment_random.json"}
ROOM_LABEL_PREFIX = "room:"
SPLITS = ("train", "val", "test")
KINDS = ("video", "classes", "triplets")
TRIPLET_KINDS = ("directed", "odd-one-out")
SPLIT_BY = ("triplet", "item")

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
CLASSES_COLUMNS = {"class": pa.int64(), "split": pa.string(), "index": pa.int64(), "path": pa.string()}
CLASSES_OPTIONAL = {"superclass": pa.int64()}
ITEMS_COLUMNS = {"item": pa.int64(), "id": pa.string(), "name": pa.string(), "index": pa.int64(), "split": pa.string()}
ITEMS_OPTIONAL = {"class": pa.int64()}
TRIPLETS_COLUMNS = {"a": pa.int64(), "b": pa.int64(), "c": pa.int64(), "kind": pa.string(), "split": pa.string()}
ITEM_IMAGES_COLUMNS = {"item": pa.int64(), "index": pa.int64(), "path": pa.string()}

# file -> (required columns, optional columns) for each kind; the first file is the main table.
TABLES: dict[str, dict[str, tuple[dict, dict]]] = {
    "video": {FRAMES: (VIDEO_COLUMNS, {})},
    "classes": {CLASS_INDEX: (CLASSES_COLUMNS, CLASSES_OPTIONAL)},
    "triplets": {ITEMS: (ITEMS_COLUMNS, ITEMS_OPTIONAL), TRIPLETS: (TRIPLETS_COLUMNS, {})},
}
OPTIONAL_TABLES = {"triplets": {ITEM_IMAGES: (ITEM_IMAGES_COLUMNS, {})}}
# Columns that define a dataset's content (a video frame's ``path`` says where a file came from,
# not what it is; a class image's path is its id, so it counts).
FINGERPRINT_COLUMNS = ("category", "object", "frame", "length", "partition", "split", "index")
KIND_FINGERPRINT_COLUMNS = {
    CLASS_INDEX: ("class", "superclass", "split", "index", "path"),
    ITEMS: ("item", "id", "name", "index", "split", "class"),
    TRIPLETS: ("a", "b", "c", "kind", "split"),
    ITEM_IMAGES: ("item", "index", "path"),
}
_HASH_CHUNK = 100_000


def _hash_columns(h, table: pa.Table, columns: Sequence[str]) -> None:
    for name in columns:
        if name not in table.column_names:
            continue
        col = table.column(name)
        h.update(name.encode() + b"\0")
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            # "\0".join(all values), fed in chunks (same bytes, bounded memory)
            for start in range(0, len(col), _HASH_CHUNK):
                values = col.slice(start, _HASH_CHUNK).to_numpy(zero_copy_only=False).astype(str)
                if start:
                    h.update(b"\x00")
                h.update("\x00".join(values.tolist()).encode("utf-8"))
        else:
            h.update(np.ascontiguousarray(col.to_numpy(zero_copy_only=False).astype(np.int64)).tobytes())
        h.update(b"\0")


def fingerprint(table: pa.Table, images_digest: str) -> str:
    """Content fingerprint of a video index table and the digest of its images (``"sha256:<hex>"``)."""
    h = hashlib.sha256(b"simtool-dataset-v2\0")
    _hash_columns(h, table, FINGERPRINT_COLUMNS)
    h.update(images_digest.encode())
    return "sha256:" + h.hexdigest()


def fingerprint_tables(kind: str, tables: dict[str, pa.Table], images_digest: str) -> str:
    """Content fingerprint of a dataset of ``kind`` from its tables (file name -> table) and image digest."""
    if kind == "video":
        return fingerprint(tables[FRAMES], images_digest)
    h = hashlib.sha256(b"simtool-dataset-v2\0" + kind.encode() + b"\0")
    for name in list(TABLES[kind]) + list(OPTIONAL_TABLES.get(kind, {})):
        if name in tables:
            h.update(name.encode() + b"\0")
            _hash_columns(h, tables[name], KIND_FINGERPRINT_COLUMNS[name])
    h.update(images_digest.encode())
    return "sha256:" + h.hexdigest()


def conform_table(table: pa.Table | dict, required: dict, optional: dict | None = None, what: str = "table") -> pa.Table:
    """``table`` with exactly the declared columns (required, then optional ones present), cast to their types."""
    if isinstance(table, dict):
        table = pa.table(table)
    optional = optional or {}
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise ValueError(f"{what} lacks the column(s) {', '.join(missing)}")
    cols, fields = [], []
    for name, typ in list(required.items()) + [(k, t) for k, t in optional.items() if k in table.column_names]:
        col = table.column(name)
        if col.type != typ:
            col = col.cast(typ)
        cols.append(col)
        fields.append(pa.field(name, typ))
    return pa.Table.from_arrays(cols, schema=pa.schema(fields))


@contextmanager
def new_dataset_dir(out: str | Path) -> Iterator[Path]:
    """A temporary directory that becomes ``out`` when the block succeeds (nothing is left if it fails)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"The output {out} already exists; choose another --out or delete it first.")
    with atomic_dir(out) as tmp:
        yield tmp


def write_rooms(tmp: Path, rooms: dict[str, dict] | None) -> dict[str, str]:
    """Write room assignments (``"semantic"`` / ``"random"`` -> MVImgNet-shaped JSON); returns the card's ``rooms``."""
    room_files = {}
    for key, assignment in (rooms or {}).items():
        atomic_write_json(tmp / ROOM_FILES[key], assignment)
        room_files[key] = ROOM_FILES[key]
    return room_files


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
    if kind not in KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}")
    declared = {**TABLES[kind], **OPTIONAL_TABLES.get(kind, {})}
    unknown = set(tables) - set(declared)
    if unknown or not set(TABLES[kind]) <= set(tables):
        raise ValueError(f"a {kind} dataset needs the tables {sorted(TABLES[kind])}, got {sorted(tables)}")
    conformed = {}
    for name, table in tables.items():
        required, optional = declared[name]
        conformed[name] = conform_table(table, required, optional, name)
        pq.write_table(conformed[name], tmp / name)
    full = {"name": card.get("name", tmp.name), "kind": kind, "format_version": FORMAT_VERSION,
            "fingerprint": fingerprint_tables(kind, conformed, images_digest)}
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
    split = _strings(table.column("split"))
    objs = _codes(table.column("object"))[0]
    counts = {"images": int(n_images), "categories": int(n_categories), "objects": int(len(np.unique(objs)))}
    counts.update({f"{s}_objects": int(len(np.unique(objs[split == s]))) for s in SPLITS})
    counts.update({f"{s}_images": int((split == s).sum()) for s in SPLITS})
    return counts


# -- reading --------------------------------------------------------------------------------------


def _codes(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of a string column in sorted order of its values, and the sorted values.

    Equal to ``np.unique(values, return_inverse=True)`` reversed, but built by dictionary encoding:
    no per-row Python objects.
    """
    if len(col) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=str)
    if isinstance(col, pa.ChunkedArray) and pa.types.is_dictionary(col.type):
        col = col.unify_dictionaries()  # as read with read_dictionary: one dictionary for every chunk
        dictionary = col.chunk(0).dictionary
        indices = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in col.chunks]) if col.num_chunks else np.zeros(0, np.int64)
    else:
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        enc = col if pa.types.is_dictionary(col.type) else pc.dictionary_encode(col)
        dictionary, indices = enc.dictionary, enc.indices.to_numpy(zero_copy_only=False)
    values = dictionary.to_numpy(zero_copy_only=False).astype(str)
    # values may repeat in a dictionary unified from chunks: map equal values to one code
    uniq, first_code = np.unique(values, return_inverse=True)
    codes = first_code.reshape(-1).astype(np.int64)[indices.astype(np.int64)]
    return codes, uniq


def _strings(col) -> np.ndarray:
    """A string column as a NumPy str array, built from its dictionary (fast for repetitive values)."""
    codes, values = _codes(col)
    return values[codes] if len(codes) else np.zeros(0, dtype=str)


def _ints(col) -> np.ndarray:
    return np.asarray(col.to_numpy(), dtype=np.int64) if len(col) else np.zeros(0, dtype=np.int64)


_VIDEO_ATTRS = {"category", "object", "object_names", "frame", "category_names", "n_categories", "length", "partition"}
_CLASSES_ATTRS = {"cls", "class_names", "path", "superclass", "n_classes"}
_TRIPLET_ATTRS = {"item_ids", "item_names", "item_index", "item_split", "item_class", "triplets", "triplet_kind", "triplet_split", "split_by", "item_images"}


class Dataset:
    """Read side of a dataset directory: validates it and exposes its tables as NumPy columns."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"The data directory {self.root} does not exist; build one with 'simtool build-data --format toyworld --out DIR'.")
        if not (self.root / CARD).is_file():
            raise UserError(f"{self.root} is not a simtool dataset: {CARD} is missing; build one with 'simtool build-data'.")
        try:
            self.card = json.loads((self.root / CARD).read_text(encoding="utf-8"))
            if not isinstance(self.card, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError) as exc:
            raise UserError(f"{self.root / CARD} is damaged (not a JSON object: {exc}); {rebuild_hint(self.root)}.") from None
        version = self.card.get("format_version")
        if version != FORMAT_VERSION:
            raise UserError(f"{self.root} has dataset format version {version}; this simtool reads version {FORMAT_VERSION}: rebuild it with simtool build-data.")
        kind = self.card.get("kind")
        if kind not in KINDS:
            raise UserError(f"{self.root} holds a dataset of kind {kind!r}; this simtool reads: {', '.join(KINDS)}.")
        self.kind: str = kind
        for name in list(TABLES[kind]) + [IMAGES]:
            if not (self.root / name).is_file():
                raise UserError(f"{self.root} is not a complete simtool dataset: {name} is missing; build one with 'simtool build-data'.")
        getattr(self, f"_load_{kind}")()

    # -- loading ----------------------------------------------------------------------------------
    def _table(self, name: str, required: Sequence[str], only: Sequence[str] | None = None) -> pa.Table:
        """Table ``name`` (only the columns ``only`` when given), checked for the ``required`` columns."""
        try:
            if only is not None:
                present = set(pq.read_schema(self.root / name).names)
                table = pq.read_table(self.root / name, columns=[c for c in only if c in present],
                                      read_dictionary=[c for c in ("object", "split") if c in present and c in only])
            else:
                table = pq.read_table(self.root / name)
        except (pa.ArrowException, OSError) as exc:
            raise UserError(f"{self.root / name} is damaged ({str(exc).splitlines()[0]}); {rebuild_hint(self.root)}.") from None
        missing = set(required) - set(table.column_names)
        if missing:
            raise UserError(f"{self.root / name} lacks the column(s) {', '.join(sorted(missing))}; {rebuild_hint(self.root)}.")
        return table

    def _check_splits(self, name: str, split: np.ndarray, allowed: Sequence[str] = SPLITS, values: np.ndarray | None = None) -> None:
        """``values``: the distinct values when known (the dictionary of the column), else found from ``split``."""
        bad = sorted(set((np.unique(split) if values is None else values).tolist()) - set(allowed))
        if bad:
            raise UserError(f"{self.root / name} has unknown split value {bad[0]!r} (expected {', '.join(s for s in allowed if s)}); {rebuild_hint(self.root)}.")

    def _load_video(self) -> None:
        # the columns the readers use (length, partition and path stay on disk: a 6.5 M-frame index opens faster)
        table = self._table(FRAMES, ("category", "object", "frame", "split", "index"), only=("category", "object", "frame", "split", "index"))
        self.table = table
        self.category = _ints(table.column("category"))
        self.object, self._object_values = _codes(table.column("object"))
        self.frame = _ints(table.column("frame"))
        codes, values = _codes(table.column("split"))
        self.split = values[codes] if len(codes) else np.zeros(0, dtype=str)
        self.index = _ints(table.column("index"))
        self.category_names: list[str] = list(self.card.get("category_names", []))
        self.n_categories = max(len(self.category_names), int(self.category.max()) + 1 if len(self.category) else 0)
        self._object_names: np.ndarray | None = None
        self._check_splits(FRAMES, self.split, values=values)

    @property
    def object_names(self) -> np.ndarray:
        """The object name of every frame (str array; built on first use)."""
        if self.kind != "video":
            return self.__getattr__("object_names")
        if self._object_names is None:
            self._object_names = self._object_values[self.object] if len(self.object) else np.zeros(0, dtype=str)
        return self._object_names

    def _load_classes(self) -> None:
        table = self._table(CLASS_INDEX, ("class", "split", "index"))
        self.table = table
        self.cls = _ints(table.column("class"))
        self.split = _strings(table.column("split"))
        self.index = _ints(table.column("index"))
        self.path = table.column("path").to_numpy(zero_copy_only=False).astype(str) if "path" in table.column_names else self.index.astype(str)
        self.superclass = _ints(table.column("superclass")) if "superclass" in table.column_names else None
        self.class_names: list[str] = list(self.card.get("class_names", []))
        self.n_classes = max(len(self.class_names), int(self.cls.max()) + 1 if len(self.cls) else 0)
        self._check_splits(CLASS_INDEX, self.split)

    def _load_triplets(self) -> None:
        items = self._table(ITEMS, ("item", "id", "index"))
        trip = self._table(TRIPLETS, ("a", "b", "c", "kind", "split"))
        self.table, self.triplet_table = items, trip
        n = items.num_rows
        item = _ints(items.column("item"))
        if not np.array_equal(item, np.arange(n)):
            raise UserError(f"{self.root / ITEMS} is damaged (its item column is not 0..{n - 1} in row order); {rebuild_hint(self.root)}.")
        self.item_ids = items.column("id").to_numpy(zero_copy_only=False).astype(str) if n else np.zeros(0, dtype=str)
        self.item_names = items.column("name").to_numpy(zero_copy_only=False).astype(str) if n and "name" in items.column_names else np.full(n, "", dtype=str)
        self.item_index = _ints(items.column("index"))
        self.item_split = _strings(items.column("split")) if "split" in items.column_names else np.full(n, "", dtype=str)
        self.item_class = _ints(items.column("class")) if "class" in items.column_names else None
        self.index = self.item_index
        self.split = self.item_split
        abc = [_ints(trip.column(c)) for c in ("a", "b", "c")]
        self.triplets = np.stack(abc, axis=1) if trip.num_rows else np.zeros((0, 3), dtype=np.int64)
        self.triplet_kind = _strings(trip.column("kind"))
        self.triplet_split = _strings(trip.column("split"))
        if len(self.triplets) and (self.triplets.min() < 0 or self.triplets.max() >= n):
            raise UserError(f"{self.root / TRIPLETS} names items outside 0..{n - 1}; {rebuild_hint(self.root)}.")
        bad_kind = sorted(set(np.unique(self.triplet_kind).tolist()) - set(TRIPLET_KINDS))
        if bad_kind:
            raise UserError(f"{self.root / TRIPLETS} has unknown kind {bad_kind[0]!r} (expected directed or odd-one-out); {rebuild_hint(self.root)}.")
        self._check_splits(TRIPLETS, self.triplet_split)
        self._check_splits(ITEMS, self.item_split, SPLITS + ("",))
        self.split_by = str(self.card.get("split_by", "triplet"))
        self.class_names = list(self.card.get("class_names", []))
        self.item_images = None
        if (self.root / ITEM_IMAGES).is_file():
            t = self._table(ITEM_IMAGES, ("item", "index"))
            self.item_images = (_ints(t.column("item")), _ints(t.column("index")))

    def __getattr__(self, name: str):
        # Only reached for attributes that are not set: a kind's attribute asked of another kind.
        kind = self.__dict__.get("kind")
        for attrs, needs in ((_VIDEO_ATTRS, "video"), (_CLASSES_ATTRS, "classes"), (_TRIPLET_ATTRS, "triplets")):
            if name in attrs and kind is not None and kind != needs:
                hint = {"video": "--format mvimgnet, icdl or toyworld", "classes": "--format imagefolder, cub, cars or sop", "triplets": "--format triplets"}[needs]
                raise UserError(f"{self.__dict__.get('root')} is a {kind} dataset, but this needs a {needs} dataset ({name}); build one with simtool build-data {hint}.")
        raise AttributeError(name)

    # -- common API -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.table.num_rows

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
        return {"name": self.name, "fingerprint": self.fingerprint, "path": str(self.root.resolve()), "kind": self.kind}

    @property
    def room_assignments(self) -> list[str]:
        """Names of the room assignments stored in the directory (e.g. semantic, random); video only."""
        if self.kind != "video":
            return []
        return [k for k in ROOM_FILES if (self.root / ROOM_FILES[k]).is_file()]

    def rooms(self, which: str = "semantic") -> tuple[np.ndarray, list[str], str]:
        """Room of every category for ``which`` = 'semantic' | 'random' | a JSON path.

        Returns ``(room_of_category int64 (C,) with -1 = dropped, room names, source path)``.
        """
        if self.kind != "video":
            raise UserError(f"{self.root} is a {self.kind} dataset; rooms belong to video datasets (build one with --format mvimgnet, icdl or toyworld).")
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
        """Row indices of the main table (frames / images / items) in ``split`` ('all' = every row).

        Triplets split by triplet (``split_by: triplet``): every item is in every split, so any split
        gives every item; use :meth:`triplet_rows` for the triplets of a split.
        """
        if split == "all" or (self.kind == "triplets" and self.split_by != "item"):
            return np.arange(len(self))
        return np.flatnonzero(self.split == split)

    def triplet_rows(self, split: str) -> np.ndarray:
        """Indices of the triplets in ``split`` ('all' = every triplet); triplets datasets only."""
        if self.kind != "triplets":
            return self.__getattr__("triplets")
        if split == "all":
            return np.arange(len(self.triplets))
        return np.flatnonzero(self.triplet_split == split)

    def split_of(self, rows: np.ndarray) -> np.ndarray:
        """The split of every row ("" for the items of a triplets dataset split by triplet)."""
        return self.split[np.asarray(rows, dtype=np.int64)]

    def ids(self, rows: np.ndarray) -> np.ndarray:
        """Stable string ids of ``rows``, the same in every copy of the dataset.

        video ``"<object>/<frame>"``; classes the source path relative to SRC; triplets the item id.
        """
        rows = np.asarray(rows, dtype=np.int64)
        if self.kind == "video":
            names = self._object_values[self.object[rows]] if len(rows) else np.zeros(0, dtype=str)
            return np.char.add(np.char.add(names, "/"), self.frame[rows].astype(str))
        if self.kind == "classes":
            return self.path[rows]
        return self.item_ids[rows]

    def labels(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Label levels of ``rows`` for an embeddings rows table.

        video: ``category`` (int64), ``object`` (names), ``frame`` (int64) and ``room:<assignment>``
        (int64, -1 = no room) for every stored room assignment; classes: ``class`` (and
        ``superclass``); triplets: ``item`` (and ``class`` when known).
        """
        rows = np.asarray(rows, dtype=np.int64)
        if self.kind == "video":
            cat = self.category[rows]
            out = {
                "category": cat,
                "object": self._object_values[self.object[rows]] if len(rows) else np.zeros(0, dtype=str),
                "frame": self.frame[rows],
            }
            for which in self.room_assignments:
                room_of_category, _, _ = self.rooms(which)
                out[ROOM_LABEL_PREFIX + which] = room_of_category[cat]
            return out
        if self.kind == "classes":
            out = {"class": self.cls[rows]}
            if self.superclass is not None:
                out["superclass"] = self.superclass[rows]
            return out
        out = {"item": rows.copy()}
        if self.item_class is not None and (self.item_class >= 0).any():
            out["class"] = self.item_class[rows]
        return out


def read_card(root: str | Path) -> dict | None:
    """The card of a dataset directory, or None when ``root`` holds no readable card (no error)."""
    path = Path(root) / CARD
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) else None


# -- verifying ------------------------------------------------------------------------------------


def verify_dataset(root: str | Path, workers: int = 1, progress=None) -> tuple[dict, list[str]]:
    """Re-read every index row and every image of a dataset directory; ``(summary, problems)``.

    Checks: the card and tables open and have their columns; every ``index`` points into the image
    store (-1 allowed for items); triplets name existing items; room files parse; every image
    passes its checksum and decodes completely; the counts and the fingerprint in the card match
    the content. ``workers`` processes decode in parallel.
    """
    from simtool.formats.image_store import _read_index, store_digest, verify_store_range

    root = Path(root)
    ds = Dataset(root)  # raises one UserError sentence when it cannot be opened at all
    problems: list[str] = []
    try:
        offsets, _ = _read_index(root / IMAGES)
    except UserError as exc:
        return {"kind": ds.kind, "rows": len(ds), "images": 0}, [str(exc)]
    n_images = len(offsets) - 1
    index = ds.index
    low = -1 if ds.kind == "triplets" else 0
    bad = np.flatnonzero((index < low) | (index >= n_images))
    if len(bad):
        problems.append(f"{len(bad)} index row(s) point outside the image store of {n_images} images (first: row {int(bad[0])} -> image {int(index[bad[0]])}).")
    if ds.kind == "triplets" and ds.item_images is not None:
        it, ix = ds.item_images
        if len(it) and (it.min() < 0 or it.max() >= len(ds) or ix.min() < 0 or ix.max() >= n_images):
            problems.append(f"{ITEM_IMAGES} names items or images that do not exist.")
    for which in ds.room_assignments:
        try:
            ds.rooms(which)
        except UserError as exc:
            problems.append(str(exc))
    counts = ds.card.get("counts", {})
    if "images" in counts and int(counts["images"]) != n_images:
        problems.append(f"The card counts {counts['images']} images, the store holds {n_images}.")
    # images: checksums + complete decodes, in parallel ranges
    chunk = max(1, min(2000, (n_images // max(1, workers * 4)) or 1))
    ranges = [(s, min(n_images, s + chunk)) for s in range(0, n_images, chunk)]
    image_problems: list[tuple[int, str]] = []
    done = 0
    if workers > 1 and len(ranges) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
            for (s, e), res in zip(ranges, ex.map(verify_store_range, [root / IMAGES] * len(ranges), [r[0] for r in ranges], [r[1] for r in ranges])):
                image_problems.extend(res)
                done += e - s
                if progress:
                    progress(done, n_images)
    else:
        for s, e in ranges:
            image_problems.extend(verify_store_range(root / IMAGES, s, e))
            done += e - s
            if progress:
                progress(done, n_images)
    for i, why in image_problems[:20]:
        problems.append(why if why.startswith("image") else f"image {i}: {why}")
    if len(image_problems) > 20:
        problems.append(f"... and {len(image_problems) - 20} more damaged image(s).")
    if not image_problems:
        tables = {name: pq.read_table(root / name) for name in list(TABLES[ds.kind]) + list(OPTIONAL_TABLES.get(ds.kind, {})) if (root / name).is_file()}
        fp = fingerprint_tables(ds.kind, tables, store_digest(root / IMAGES))
        if fp != ds.fingerprint:
            problems.append(f"The content fingerprint {fp[:19]} differs from the card's {ds.fingerprint[:19]}: the index or the images changed after the build.")
    summary = {"kind": ds.kind, "rows": len(ds), "images": n_images, "fingerprint": ds.fingerprint}
    if ds.kind == "triplets":
        summary["triplets"] = len(ds.triplets)
    return summary, problems
