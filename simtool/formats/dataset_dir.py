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

``images.h5`` holds three datasets: ``bytes`` (uint8, every encoded image back to back, contiguous
layout), ``offsets`` (int64, N + 1: image ``i`` is ``bytes[offsets[i]:offsets[i + 1]]``) and
``crc32`` (uint32, N: a checksum of every image's bytes, checked on every read). A flat contiguous
store cannot send HDF5 into the endless loop that a damaged variable-length heap can, and a damaged
image is reported by its index instead of being decoded into garbage.

The **fingerprint** is a SHA-256 of the content (the index columns and every image's bytes, in
order), so two copies of one dataset are recognised as the same dataset wherever they live.

A directory is written under a temporary name and renamed into place when complete, so a
half-built dataset never looks like a dataset. Every reading problem is one :class:`UserError`
sentence naming the file and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from simtool import __version__
from simtool.data.images import decode_image
from simtool.data.rooms import load_room_assignment
from simtool.errors import UserError
from simtool.io import atomic_dir, atomic_write_json

FORMAT_VERSION = 2
CARD = "dataset.json"
FRAMES = "frames.parquet"
IMAGES = "images.h5"
ROOM_FILES = {"semantic": "room_assignment_balanced.json", "random": "room_assignment_random.json"}
SPLITS = ("train", "val", "test")
KINDS = ("video",)

H5_BYTES, H5_OFFSETS, H5_CRC = "bytes", "offsets", "crc32"
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
_COPY_BLOCK = 64 * 2**20


def _rebuild_hint(root: Path) -> str:
    return f"rebuild it with simtool build-data (or check that {root} was copied completely)"


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


class _ImageSpool:
    """Streams encoded images to a raw temporary file, then lays them out in ``images.h5``.

    Memory stays flat in the number of images: only offsets and checksums are kept.
    """

    def __init__(self, path: Path):
        self.path = path
        self.fh = open(path, "wb")
        self.offsets = [0]
        self.crc: list[int] = []
        self.digest = hashlib.sha256()

    def add(self, data: bytes) -> int:
        data = bytes(data)
        self.fh.write(data)
        self.offsets.append(self.offsets[-1] + len(data))
        self.crc.append(zlib.crc32(data))
        self.digest.update(len(data).to_bytes(8, "little"))
        self.digest.update(data)
        return len(self.crc) - 1

    def __len__(self) -> int:
        return len(self.crc)

    def write_h5(self, out: Path) -> str:
        import h5py

        self.fh.close()
        total = self.offsets[-1]
        with h5py.File(out, "w") as fh:
            fh.attrs["format_version"] = FORMAT_VERSION
            ds = fh.create_dataset(H5_BYTES, shape=(total,), dtype=np.uint8)  # contiguous layout
            with open(self.path, "rb") as raw:
                pos = 0
                while pos < total:
                    block = raw.read(min(_COPY_BLOCK, total - pos))
                    ds[pos : pos + len(block)] = np.frombuffer(block, dtype=np.uint8)
                    pos += len(block)
            fh.create_dataset(H5_OFFSETS, data=np.asarray(self.offsets, dtype=np.int64))
            fh.create_dataset(H5_CRC, data=np.asarray(self.crc, dtype=np.uint32))
        self.path.unlink()
        return "sha256:" + self.digest.hexdigest()

    def discard(self) -> None:
        if not self.fh.closed:
            self.fh.close()
        if self.path.exists():
            self.path.unlink()


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
        self._spool = _ImageSpool(self.tmp / ".images.raw")
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


class ImageStore:
    """Decodes images of ``images.h5`` by index to uint8 ``(B, 3, size, size)`` tensors.

    Safe in DataLoader workers: the HDF5 file is opened lazily in each process. Every image's
    checksum is verified when it is read; a damaged file or image raises :class:`UserError`.
    """

    def __init__(self, path: str | Path, size: int):
        self.path = Path(path)
        self.size = int(size)
        self._fh = None
        self._pid: int | None = None
        self._offsets: np.ndarray | None = None
        self._crc: np.ndarray | None = None
        self._cache = None
        self._file()  # validate now, not in the middle of training

    def _damaged(self, what: str) -> UserError:
        return UserError(f"The image store {self.path} is damaged ({what}); {_rebuild_hint(self.path.parent)}.")

    def _file(self):
        if self._fh is None or self._pid != os.getpid():
            import h5py

            try:
                fh = h5py.File(self.path, "r")
                if not all(k in fh for k in (H5_BYTES, H5_OFFSETS, H5_CRC)):
                    raise self._damaged(f"it lacks the datasets {H5_BYTES}/{H5_OFFSETS}/{H5_CRC}")
                offsets = np.asarray(fh[H5_OFFSETS][...], dtype=np.int64)
                crc = np.asarray(fh[H5_CRC][...], dtype=np.uint32)
                nbytes = int(fh[H5_BYTES].shape[0])
            except UserError:
                raise
            except (OSError, KeyError, ValueError, RuntimeError) as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise self._damaged(f"cannot be read: {first}") from None
            if len(offsets) != len(crc) + 1 or (len(offsets) and (offsets[0] != 0 or offsets[-1] != nbytes or np.any(np.diff(offsets) < 0))):
                raise self._damaged("its offsets do not match its bytes")
            self._fh, self._pid, self._offsets, self._crc = fh, os.getpid(), offsets, crc
        return self._fh

    def __len__(self) -> int:
        self._file()
        return len(self._crc)

    def nbytes_decoded(self, n: int) -> int:
        return n * 3 * self.size * self.size

    def encoded(self, index: int) -> bytes:
        """The stored bytes of image ``index``, checksum verified."""
        fh = self._file()
        i = int(index)
        if not 0 <= i < len(self._crc):
            raise self._damaged(f"image {i} is missing; the store holds {len(self._crc)} images")
        try:
            data = fh[H5_BYTES][self._offsets[i] : self._offsets[i + 1]].tobytes()
        except (OSError, ValueError, RuntimeError) as exc:
            raise self._damaged(f"image {i} cannot be read: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        if zlib.crc32(data) != int(self._crc[i]):
            raise self._damaged(f"image {i} fails its checksum")
        return data

    def decode(self, index: int) -> np.ndarray:
        data = self.encoded(index)
        try:
            return decode_image(data, self.size)
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad bytes
            raise self._damaged(f"image {int(index)} cannot be decoded: {type(exc).__name__}") from None

    def load(self, indices: np.ndarray | Sequence[int]):
        """uint8 (B, 3, size, size) for the given image indices."""
        import torch

        idx = np.asarray(indices, dtype=np.int64)
        if self._cache is not None:
            return self._cache[torch.from_numpy(idx)]
        out = np.empty((len(idx), self.size, self.size, 3), dtype=np.uint8)
        for j, i in enumerate(idx):
            out[j] = self.decode(i)
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()

    def cache_all(self, indices: np.ndarray, progress=None) -> None:
        """Decode ``indices`` once into memory; later :meth:`load` calls index the cache.

        The cache is indexed by image index, so it has room for every image up to ``max(indices)``.
        """
        import torch

        idx = np.unique(np.asarray(indices, dtype=np.int64))
        n = int(idx.max()) + 1 if len(idx) else 0
        cache = torch.zeros((n, 3, self.size, self.size), dtype=torch.uint8)
        for k, i in enumerate(idx):
            cache[i] = torch.from_numpy(self.decode(i)).permute(2, 0, 1)
            if progress is not None and (k % 256 == 0 or k == len(idx) - 1):
                progress(k + 1, len(idx))
        self._cache = cache

    @property
    def cached(self) -> bool:
        return self._cache is not None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fh"] = None
        state["_pid"] = None
        return state


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
            raise UserError(f"{self.root / CARD} is damaged (not a JSON object: {exc}); {_rebuild_hint(self.root)}.") from None
        version = self.card.get("format_version")
        if version != FORMAT_VERSION:
            raise UserError(f"{self.root} has dataset format version {version}; this simtool reads version {FORMAT_VERSION}: rebuild it with simtool build-data.")
        if self.card.get("kind") not in KINDS:
            raise UserError(f"{self.root} holds a dataset of kind {self.card.get('kind')!r}; this stage reads: {', '.join(KINDS)}.")
        try:
            table = pq.read_table(self.root / FRAMES)
        except (pa.ArrowException, OSError) as exc:
            raise UserError(f"{self.root / FRAMES} is damaged ({str(exc).splitlines()[0]}); {_rebuild_hint(self.root)}.") from None
        missing = {"category", "object", "frame", "split", "index"} - set(table.column_names)
        if missing:
            raise UserError(f"{self.root / FRAMES} lacks the column(s) {', '.join(sorted(missing))}; {_rebuild_hint(self.root)}.")
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
            raise UserError(f"{self.root / FRAMES} has unknown split value {bad[0]!r} (expected {', '.join(SPLITS)}); {_rebuild_hint(self.root)}.")

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

