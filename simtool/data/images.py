"""Encoding and decoding single images (pure functions; the store lives in :mod:`simtool.formats.dataset_dir`).

Images are decoded with Pillow, resized so the short side equals ``size`` and centre-cropped to a
square, and returned as uint8 arrays (size, size, 3). Augmentation happens later, batched on the
training device.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


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
