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


RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def decode_crop(data: bytes, box: tuple[float, float, float, float], size: int, resample: str = "bilinear") -> np.ndarray:
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
    out = img.resize((size, size), RESAMPLE[resample], box=region, reducing_gap=None)
    return np.array(out, dtype=np.uint8)


# -- batched decoding on a torch device (``engine.decode: device``) -----------------------------------
# The same crops as :func:`decode_crop`, decoded by torchvision (nvJPEG on CUDA, libjpeg-turbo on the
# CPU) for a whole batch at once and cropped on the device: the JPEG DCT scaling of Pillow's draft
# mode becomes an average over the same s x s blocks, and Pillow's bilinear resize of a box (a
# triangle filter widened by the downscale factor, so antialiased) becomes two small matrix products
# per image, so every output pixel is the same weighted mean of the same input pixels as Pillow's.


def is_jpeg(data) -> bool:
    """Whether encoded bytes are a JPEG (its start-of-image marker)."""
    return bytes(data[:3]) == b"\xff\xd8\xff"


def draft_scale(width: int, height: int, box: tuple[float, float, float, float], size: int) -> int:
    """The DCT scale (1, 2, 4 or 8) at which :func:`decode_crop` decodes the relative ``box`` of a JPEG
    frame of ``width`` x ``height`` (Pillow's draft rule: the largest scale that keeps the box at
    least ``size`` pixels on each side); the drafted frame is ``ceil(width / s) x ceil(height / s)``."""
    _, _, bw, bh = box
    need = max(size / max(bw * width, 1e-9), size / max(bh * height, 1e-9))
    if need >= 1:
        return 1
    scale = min(width // int(np.ceil(width * need)), height // int(np.ceil(height * need)))
    return next(s for s in (8, 4, 2, 1) if scale >= s)


def decode_jpegs(datas: list, device) -> list:
    """Encoded JPEGs (each a uint8 numpy array or bytes) → uint8 ``(3, H, W)`` tensors on ``device``,
    decoded in one batched call of ``torchvision.io.decode_jpeg`` (nvJPEG on CUDA)."""
    import warnings

    import torch

    with warnings.catch_warnings():  # torchvision 0.29 announces that TorchCodec will take its decoders over
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg

        tensors = [torch.from_numpy(np.frombuffer(bytes(d), dtype=np.uint8).copy()) for d in datas]
        if not tensors:
            return []
        out = decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _box_weights(n_in: int, start, stop, size: int):
    """``(B, size, n_in)`` float32 weights of Pillow's bilinear resize of ``[start, stop)`` (``(B,)``
    float64 tensors, input pixel coordinates) to ``size`` pixels: a triangle of half-width
    max(1, scale) around each output centre, each row normalised (Pillow's ``precompute_coeffs``)."""
    import torch

    scale = ((stop - start) / size).unsqueeze(1)  # (B, 1)
    width = scale.clamp(min=1.0)
    centre = start.unsqueeze(1) + (torch.arange(size, dtype=torch.float64, device=start.device) + 0.5) * scale  # (B, size)
    pos = torch.arange(n_in, dtype=torch.float64, device=start.device) + 0.5
    w = (1.0 - ((pos.view(1, 1, -1) - centre.unsqueeze(2)) / width.unsqueeze(2)).abs()).clamp_(min=0.0)
    return (w / w.sum(2, keepdim=True).clamp_(min=1e-12)).to(torch.float32)


def crop_resize(images: list, boxes, scales, size: int, chunk: int = 128):
    """uint8 ``(B, 3, size, size)`` on the images' device: the relative box ``boxes[i]`` (x, y, w, h)
    of ``images[i]`` (uint8 ``(3, H, W)``, full resolution), reduced by ``scales[i]`` (the draft scale
    of :func:`draft_scale`, as means of s x s blocks) and resized as Pillow resizes it (bilinear,
    antialiased). Images of one reduced size are resampled together, ``chunk`` at a time."""
    import torch
    import torch.nn.functional as F

    if not images:
        raise ValueError("crop_resize needs at least one image")
    device = images[0].device
    boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float64)).to(device)
    out = torch.empty((len(images), 3, size, size), dtype=torch.uint8, device=device)
    groups: dict[tuple, list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault((int(scales[i]), int(img.shape[1]), int(img.shape[2])), []).append(i)
    for (s, h, w), members in groups.items():
        sh, sw = -(-h // s), -(-w // s)
        for c in range(0, len(members), chunk):
            idx = members[c : c + chunk]
            x = torch.stack([images[i] for i in idx]).to(torch.float32)
            if s > 1:
                x = F.avg_pool2d(x, s, ceil_mode=True)
            b = boxes[torch.as_tensor(idx, device=device)]
            wy = _box_weights(sh, b[:, 1] * sh, (b[:, 1] + b[:, 3]) * sh, size)
            wx = _box_weights(sw, b[:, 0] * sw, (b[:, 0] + b[:, 2]) * sw, size)
            y = torch.matmul(torch.matmul(wy.unsqueeze(1), x), wx.transpose(1, 2).unsqueeze(1))
            out[torch.as_tensor(idx, device=device)] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out
