"""The image codec of the image store: encoding and decoding single images (pure functions).

Images are stored encoded (PNG or JPEG, :mod:`simtool.formats.image_store`) and decoded with
Pillow: whole frames resized so the short side equals ``size`` and centre-cropped to a square, or a
box in relative coordinates of the frame (a crop), decoded at reduced size when the box is much
larger than the output (JPEG draft mode), cropped and resized in one Pillow call. Both return uint8
arrays (size, size, 3); augmentation happens later, batched on the training device.
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


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) of encoded image bytes, from the header only."""
    with Image.open(io.BytesIO(bytes(data))) as img:
        return img.size


def decode_crop(data: bytes, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """Encoded bytes → uint8 (size, size, 3): the relative ``box`` of the frame, resized (bilinear).

    JPEGs are decoded at the smallest DCT scale that still gives the box at least ``size`` pixels
    on each side (Pillow's draft mode), so a crop of a large frame costs a fraction of a full decode.
    The aspect ratio of the box is not kept (as in RandomResizedCrop and the original's test crop).
    """
    img = Image.open(io.BytesIO(bytes(data)))
    w, h = img.size
    bx, by, bw, bh = box
    if img.format == "JPEG":
        need = max(size / max(bw * w, 1e-9), size / max(bh * h, 1e-9))
        if need < 1:
            img.draft("RGB", (int(np.ceil(w * need)), int(np.ceil(h * need))))
    img = img.convert("RGB")
    sw, sh = img.size
    region = (bx * sw, by * sh, (bx + bw) * sw, (by + bh) * sh)
    out = img.resize((size, size), Image.BILINEAR, box=region, reducing_gap=None)
    return np.array(out, dtype=np.uint8)
