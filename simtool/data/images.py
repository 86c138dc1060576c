"""Encoded-image store (``images.h5``) and decoding to fixed-size uint8 tensors.

``images.h5`` holds one variable-length uint8 dataset ``images``: entry ``i`` is the encoded
JPEG/PNG bytes of the image whose ``index`` column in ``frames.parquet`` is ``i``. Images are
decoded with Pillow, resized so the short side equals ``size`` and centre-cropped to a square, and
returned as uint8 tensors (3, size, size). Augmentation happens later, batched on the device.

For small datasets (the toy world, COIL-20) the whole decoded set fits in memory and is decoded
once (``cache: memory``); large datasets are decoded per batch in DataLoader workers.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import torch
from PIL import Image

H5_DATASET = "images"


def encode_image(array: np.ndarray, fmt: str = "png", quality: int = 95) -> bytes:
    """uint8 (H, W, 3) → encoded bytes."""
    buf = io.BytesIO()
    img = Image.fromarray(array)
    if fmt == "jpeg":
        img.save(buf, format="JPEG", quality=quality)
    else:
        img.save(buf, format="PNG", optimize=False, compress_level=3)
    return buf.getvalue()


def decode_image(data: bytes | np.ndarray, size: int) -> np.ndarray:
    """Encoded bytes → uint8 (size, size, 3): short side resized to ``size``, centre crop."""
    img = Image.open(io.BytesIO(bytes(data))).convert("RGB")
    w, h = img.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((nw, nh), Image.BILINEAR, reducing_gap=None)
        left, top = (nw - size) // 2, (nh - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return np.array(img, dtype=np.uint8)  # a writable copy


def write_images_h5(path: str | Path, encoded: Sequence[bytes]) -> None:
    """Write encoded images as a variable-length uint8 dataset (the caller handles atomicity)."""
    with h5py.File(path, "w") as fh:
        dt = h5py.vlen_dtype(np.dtype("uint8"))
        ds = fh.create_dataset(H5_DATASET, shape=(len(encoded),), dtype=dt)
        for i, data in enumerate(encoded):
            ds[i] = np.frombuffer(data, dtype=np.uint8)


class ImageStore:
    """Decodes images from ``images.h5`` by index. Safe to use from DataLoader workers: the HDF5
    file is opened lazily in each process."""

    def __init__(self, path: str | Path, size: int):
        self.path = Path(path)
        self.size = int(size)
        self._fh: h5py.File | None = None
        self._pid: int | None = None
        self._cache: torch.Tensor | None = None

    def _file(self) -> h5py.File:
        if self._fh is None or self._pid != os.getpid():
            self._fh = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._fh

    def __len__(self) -> int:
        return len(self._file()[H5_DATASET])

    def nbytes_decoded(self, n: int) -> int:
        return n * 3 * self.size * self.size

    def decode(self, index: int) -> np.ndarray:
        return decode_image(self._file()[H5_DATASET][int(index)], self.size)

    def load(self, indices: np.ndarray | Sequence[int]) -> torch.Tensor:
        """uint8 (B, 3, size, size) for the given image indices."""
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
        idx = np.unique(np.asarray(indices, dtype=np.int64))
        n = int(idx.max()) + 1 if len(idx) else 0
        cache = torch.zeros((n, 3, self.size, self.size), dtype=torch.uint8)
        ds = self._file()[H5_DATASET]
        for k, i in enumerate(idx):
            cache[i] = torch.from_numpy(decode_image(ds[int(i)], self.size)).permute(2, 0, 1)
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
