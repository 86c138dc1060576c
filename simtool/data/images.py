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


# ---------------------------------------------------------------------------------------------
# Crops taken from the stored frame (the original's pipeline): a box in relative coordinates of
# the whole frame, decoded at reduced size when the box is much larger than the output (JPEG draft
# mode), cropped and resized in one Pillow call.
# ---------------------------------------------------------------------------------------------

_CROP_ATTEMPTS = 10


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) of encoded image bytes, from the header only."""
    with Image.open(io.BytesIO(bytes(data))) as img:
        return img.size


def sample_crop_box(width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float], rng: np.random.Generator) -> tuple[float, float, float, float]:
    """A RandomResizedCrop box ``(x0, y0, w, h)`` in relative coordinates ([0, 1]) of a frame.

    The rule of torchvision's ``RandomResizedCrop.get_params``: area fraction ~ U(scale), log aspect
    ratio ~ U(log ratio), up to 10 attempts; when none fits, the whole frame trimmed to the nearest
    allowed aspect ratio, centred. Sizes and positions are continuous (not whole pixels).
    """
    area = float(width * height)
    log_lo, log_hi = np.log(ratio[0]), np.log(ratio[1])
    for _ in range(_CROP_ATTEMPTS):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = float(np.exp(rng.uniform(log_lo, log_hi)))
        w, h = np.sqrt(target * aspect), np.sqrt(target / aspect)
        if w <= width + 1e-4 and h <= height + 1e-4:
            w, h = min(w, width), min(h, height)
            x0, y0 = rng.uniform(0, width - w), rng.uniform(0, height - h)
            return x0 / width, y0 / height, w / width, h / height
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = float(width), width / ratio[0]
    elif in_ratio > ratio[1]:
        w, h = height * ratio[1], float(height)
    else:
        w, h = float(width), float(height)
    return (width - w) / 2 / width, (height - h) / 2 / height, w / width, h / height


def center_box(frac: float) -> tuple[float, float, float, float]:
    """The central ``frac`` of each side (the original's evaluation crop: 0.875 = 224/256)."""
    return (1 - frac) / 2, (1 - frac) / 2, frac, frac


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
