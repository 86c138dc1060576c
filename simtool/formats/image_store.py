"""The image store ``images.h5``: every encoded image of a dataset, checksummed.

Three HDF5 datasets: ``bytes`` (uint8, every encoded JPEG/PNG back to back, contiguous layout),
``offsets`` (int64, N + 1: image ``i`` is ``bytes[offsets[i]:offsets[i + 1]]``) and ``crc32``
(uint32, N: a checksum of every image's bytes, verified on every read). A flat contiguous store
cannot send HDF5 into the endless loop that a damaged variable-length heap can, and a damaged image
is reported by its index instead of being decoded into garbage. :class:`ImageSpool` writes one
with memory flat in the number of images; :class:`ImageStore` reads it.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from simtool.errors import UserError
from simtool.formats.image_codec import crop_resize, decode_crop, decode_image, decode_jpegs, draft_scale, image_size, is_jpeg

FORMAT_VERSION = 2
H5_BYTES, H5_OFFSETS, H5_CRC = "bytes", "offsets", "crc32"
_COPY_BLOCK = 64 * 2**20


def rebuild_hint(root: Path) -> str:
    return f"rebuild it with simtool build-data (or check that {root} was copied completely)"


class ImageSpool:
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


class EncodedImages:
    """Encoded images read from a store for :meth:`ImageStore.decode_on`: the stored bytes (uint8
    arrays), each frame's (width, height) and, for crops, each image's relative box (x, y, w, h);
    ``boxes`` None means whole frames. Cheap to pickle, so DataLoader workers can hand it over."""

    def __init__(self, indices: np.ndarray, data: list, sizes: np.ndarray, boxes: np.ndarray | None):
        self.indices, self.data, self.sizes, self.boxes = indices, data, sizes, boxes

    def __len__(self) -> int:
        return len(self.data)


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
        return UserError(f"The image store {self.path} is damaged ({what}); {rebuild_hint(self.path.parent)}.")

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

    def frame_size(self, index: int) -> tuple[int, int]:
        """(width, height) of stored image ``index`` (header only)."""
        try:
            return image_size(self.encoded(index))
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._damaged(f"image {int(index)} cannot be decoded: {type(exc).__name__}") from None

    def load_crops(self, indices, box_fn, resample: str = "bilinear"):
        """uint8 (B, 3, size, size): for each image, the box ``box_fn(width, height)`` (relative
        coordinates of the stored frame) decoded at reduced size where possible and resized
        (``resample``: bilinear or bicubic)."""
        import torch

        idx = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(idx), self.size, self.size, 3), dtype=np.uint8)
        for j, i in enumerate(idx):
            data = self.encoded(i)
            try:
                w, h = image_size(data)
                out[j] = decode_crop(data, box_fn(w, h), self.size, resample)
            except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad bytes
                raise self._damaged(f"image {int(i)} cannot be decoded: {type(exc).__name__}") from None
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()

    def encoded_images(self, indices, box_fn=None) -> EncodedImages:
        """The stored bytes of ``indices`` for :meth:`decode_on`; with ``box_fn`` each image's box is
        ``box_fn(width, height)``, called in the order :meth:`load_crops` calls it (so the same
        generator draws the same boxes), else the images are whole frames."""
        idx = np.asarray(indices, dtype=np.int64)
        data, sizes, boxes = [], np.zeros((len(idx), 2), dtype=np.int64), np.zeros((len(idx), 4), dtype=np.float64)
        for j, i in enumerate(idx):
            raw = self.encoded(i)
            try:
                sizes[j] = image_size(raw)
            except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad bytes
                raise self._damaged(f"image {int(i)} cannot be decoded: {type(exc).__name__}") from None
            if box_fn is not None:
                boxes[j] = box_fn(int(sizes[j][0]), int(sizes[j][1]))
            data.append(np.frombuffer(raw, dtype=np.uint8))
        return EncodedImages(idx, data, sizes, boxes if box_fn is not None else None)

    def decode_on(self, images: EncodedImages, device):
        """uint8 (B, 3, size, size) on ``device`` of images read by :meth:`encoded_images`.

        JPEGs are decoded in one batched ``torchvision.io.decode_jpeg`` call on ``device`` (nvJPEG on
        CUDA) and cropped there, reduced and resampled as :meth:`load_crops` does on the CPU (equal
        within decoder differences); other formats, and whole frames that are not ``size`` x
        ``size``, are decoded on the CPU as :meth:`load_crops` and :meth:`load` decode them."""
        import torch

        n = len(images)
        out = torch.empty((n, 3, self.size, self.size), dtype=torch.uint8, device=device)
        sizes, boxes = images.sizes, images.boxes
        jpeg = [j for j in range(n) if is_jpeg(images.data[j][:3]) and (boxes is not None or tuple(sizes[j]) == (self.size, self.size))]
        on_cpu = sorted(set(range(n)) - set(jpeg))
        if jpeg:
            try:
                decoded = decode_jpegs([images.data[j] for j in jpeg], device)
            except RuntimeError:  # a JPEG the device decoder refuses (e.g. CMYK): Pillow decodes the batch
                decoded, on_cpu = None, list(range(n))
            if decoded is not None:
                sel = torch.as_tensor(jpeg, device=device)
                if boxes is None:
                    out[sel] = torch.stack(decoded)
                else:
                    scales = [draft_scale(int(sizes[j][0]), int(sizes[j][1]), tuple(boxes[j]), self.size) for j in jpeg]
                    out[sel] = crop_resize(decoded, boxes[jpeg], scales, self.size)
        for j in on_cpu:
            i, raw = int(images.indices[j]), images.data[j].tobytes()
            try:
                arr = decode_image(raw, self.size) if boxes is None else decode_crop(raw, tuple(boxes[j]), self.size)
            except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad bytes
                raise self._damaged(f"image {i} cannot be decoded: {type(exc).__name__}") from None
            out[j] = torch.from_numpy(arr).permute(2, 0, 1).to(device)
        return out

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


# -- building: merging part stores, verifying -------------------------------------------------------
# (added for ``build-data``: sharded/resumable builds write one store per part and merge them)

_MERGE_BLOCK = 64 * 2**20


def _read_index(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets int64 (N + 1), crc32 uint32 (N))`` of a store, validated; UserError if damaged."""
    store = ImageStore(path, 1)
    offsets, crc = store._offsets, store._crc
    store._fh.close()
    return offsets, crc


def _image_ranges(offsets: np.ndarray, block: int = _MERGE_BLOCK):
    """Consecutive image ranges ``(start, stop)`` whose bytes are at most ``block`` (at least one image)."""
    n = len(offsets) - 1
    start = 0
    while start < n:
        limit = offsets[start] + block
        stop = int(np.searchsorted(offsets, limit, side="right")) - 1
        stop = min(max(stop, start + 1), n)
        yield start, stop
        start = stop


def _image_blocks(data, offsets: np.ndarray):
    """Blocks of at most ``_MERGE_BLOCK`` bytes of the store's byte array ``data``, read in one go:
    ``(start, stop, buf, views)``, ``views`` yielding ``(i, memoryview of image i)`` for start <= i < stop."""
    for start, stop in _image_ranges(offsets):
        buf = data[offsets[start] : offsets[stop]]
        base = offsets[start]
        yield start, stop, buf, ((i, memoryview(buf[offsets[i] - base : offsets[i + 1] - base])) for i in range(start, stop))


def _digest_update(digest, offsets: np.ndarray, i: int, view: memoryview) -> None:
    """Add image ``i`` to a content digest: its length (8 bytes, little endian), then its bytes."""
    digest.update(int(offsets[i + 1] - offsets[i]).to_bytes(8, "little"))
    digest.update(view)


def store_digest(path: str | Path) -> str:
    """The content digest of a store (the same ``"sha256:<hex>"`` :meth:`ImageSpool.write_h5` returns)."""
    import h5py

    path = Path(path)
    offsets, crc = _read_index(path)
    digest = hashlib.sha256()
    with h5py.File(path, "r") as fh:
        for _, _, _, views in _image_blocks(fh[H5_BYTES], offsets):
            for i, view in views:
                _digest_update(digest, offsets, i, view)
    return "sha256:" + digest.hexdigest()


def merge_stores(parts: Sequence[str | Path], out: str | Path, progress=None) -> tuple[str, list[int]]:
    """Concatenate the image stores ``parts`` (in order) into one new store ``out``.

    Every image's checksum is verified on the way; memory stays flat in the number of bytes (one
    block of at most 64 MiB at a time). Returns the content digest of the merged store (equal to the
    one an :class:`ImageSpool` fed with the same images gives) and the index of every part's first
    image in ``out``.
    """
    import h5py

    out = Path(out)
    indexes = [_read_index(Path(p)) for p in parts]
    total = int(sum(int(o[-1]) for o, _ in indexes))
    n_images = int(sum(len(c) for _, c in indexes))
    starts: list[int] = []
    digest = hashlib.sha256()
    all_offsets = np.empty(n_images + 1, dtype=np.int64)
    all_offsets[0] = 0
    all_crc = np.empty(n_images, dtype=np.uint32)
    done = 0
    with h5py.File(out, "w") as dst:
        dst.attrs["format_version"] = FORMAT_VERSION
        target = dst.create_dataset(H5_BYTES, shape=(total,), dtype=np.uint8)
        pos, k = 0, 0
        for part, (offsets, crc) in zip(parts, indexes):
            starts.append(k)
            with h5py.File(part, "r") as src:
                for start, stop, buf, views in _image_blocks(src[H5_BYTES], offsets):
                    for i, view in views:
                        if zlib.crc32(view) != int(crc[i]):
                            raise UserError(f"The image store {part} is damaged (image {i} fails its checksum); delete that part and build it again.")
                        _digest_update(digest, offsets, i, view)
                    if len(buf):
                        target[pos : pos + len(buf)] = buf
                    pos += len(buf)
                    done += stop - start
                    if progress is not None:
                        progress(done, n_images)
            m = len(crc)
            all_offsets[k + 1 : k + m + 1] = offsets[1:] - offsets[0] + all_offsets[k]
            all_crc[k : k + m] = crc
            k += m
        dst.create_dataset(H5_OFFSETS, data=all_offsets)
        dst.create_dataset(H5_CRC, data=all_crc)
    return "sha256:" + digest.hexdigest(), starts


def check_image_bytes(data: bytes | memoryview) -> str | None:
    """None when ``data`` decodes completely as an image, else the reason it does not.

    JPEGs are decoded in Pillow's draft mode at 1/8 scale: every entropy-coded block is still read,
    so truncated and damaged files are caught, at a fraction of the cost of a full decode.
    """
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(bytes(data))) as img:
            if img.format == "JPEG":
                img.draft(img.mode, (max(1, img.size[0] // 8), max(1, img.size[1] // 8)))
            img.load()
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad bytes
        first = str(exc).splitlines()[0] if str(exc) else ""
        return f"cannot be decoded ({type(exc).__name__}{': ' + first if first else ''})"
    return None


def verify_store_range(path: str | Path, start: int, stop: int) -> list[tuple[int, str]]:
    """Check images ``start:stop`` of a store (checksum and a complete decode): ``[(index, problem)]``."""
    store = ImageStore(path, 1)
    problems = []
    for i in range(int(start), int(stop)):
        try:
            data = store.encoded(i)
        except UserError as exc:
            problems.append((i, str(exc)))
            continue
        why = check_image_bytes(data)
        if why:
            problems.append((i, f"image {i} {why}"))
    return problems
