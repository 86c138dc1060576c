"""Batched, device-agnostic image augmentations (SimCLR-style) as pure tensor functions.

Why batched and on-device
-------------------------
Training batches arrive as ``uint8`` tensors of shape ``(B, 3, H, W)`` that already sit on the
training device (CPU, CUDA or MPS). Running torchvision's per-image transforms over PIL images
in data-loader workers would copy every image back to the host and loop over the batch in
Python; instead every function here transforms the whole batch at once with a handful of tensor
ops (one ``grid_sample`` for all crops, one grouped convolution per axis for all blurs, ...), on
whichever device the batch lives.

Randomness
----------
All random numbers are drawn **on the CPU** from an explicit ``torch.Generator`` (which must be a
CPU generator); only the small per-sample parameter tensors (crop boxes, jitter factors, masks)
are moved to the image's device. The same generator seed therefore yields the same parameters on
every device, and the global RNG is never touched. When ``generator`` is ``None`` the functions
fall back to torch's *global* CPU RNG (``torch.rand(...)`` without a generator), i.e. they are then
seeded by ``torch.manual_seed``.

Probabilities of ``0`` are exact no-ops that skip the work (and draw no random numbers); ``p=1``
applies the transform to every sample. Work is only done on the selected samples: the selection
mask is drawn on the CPU, so picking the subset needs no device synchronisation.

Every function accepts ``uint8`` (scaled to ``[0, 1]``) or floating input and returns ``float32``;
inputs are never modified in place.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from simtool.data.images import CROP_ATTEMPTS, FIT_SLACK, fallback_crop

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "to_float",
    "normalize",
    "random_resized_crop",
    "random_hflip",
    "color_jitter",
    "random_grayscale",
    "random_gaussian_blur",
    "center_crop",
    "center_crop_resize",
    "BatchAugment",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# ITU-R 601-2 luma weights (the ones torchvision's rgb_to_grayscale uses).
_LUMA = (0.299, 0.587, 0.114)



# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def _check_batch(x: Tensor) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected an image batch of shape (B, 3, H, W), got {tuple(x.shape)}")


def _check_generator(generator: Optional[torch.Generator]) -> None:
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(
            f"augmentations draw their randomness on the CPU; pass a CPU torch.Generator, "
            f"not one on {generator.device}"
        )


def _rand(n: int, generator: Optional[torch.Generator], *extra: int) -> Tensor:
    """``U[0, 1)`` float32 of shape ``(n, *extra)`` on the CPU (global RNG when generator is None)."""
    return torch.rand((n, *extra), generator=generator, dtype=torch.float32, device="cpu")


def _uniform(n: int, lo: float, hi: float, generator: Optional[torch.Generator]) -> Tensor:
    """``U[lo, hi]`` float32 of shape ``(n,)`` on the CPU."""
    return lo + (hi - lo) * _rand(n, generator)


def _bernoulli_mask(n: int, p: float, generator: Optional[torch.Generator]) -> Tensor:
    """Boolean CPU mask of shape ``(n,)``; each entry True with probability ``p``."""
    if p >= 1.0:
        return torch.ones(n, dtype=torch.bool)
    return _rand(n, generator) < p


def _apply_subset(x: Tensor, mask: Tensor, fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """Apply ``fn(x_sub, idx)`` to the samples where the CPU ``mask`` is True.

    ``idx`` (CPU, int64) lists the selected sample indices so ``fn`` can pick its per-sample
    parameters. Unselected samples are returned untouched (bit-exact).
    """
    idx = mask.nonzero().squeeze(1)
    n = idx.numel()
    if n == 0:
        return x
    if n == x.shape[0]:
        return fn(x, idx)
    idx_dev = idx.to(x.device)
    return x.index_copy(0, idx_dev, fn(x.index_select(0, idx_dev), idx))


def _per_sample(t: Tensor, x: Tensor) -> Tensor:
    """CPU factors of shape ``(B,)`` -> ``(B, 1, 1, 1)`` float32 on ``x``'s device."""
    return t.to(device=x.device, dtype=torch.float32).view(-1, 1, 1, 1)


def _grayscale(x: Tensor) -> Tensor:
    """Luma of a float ``(B, 3, H, W)`` batch -> ``(B, 1, H, W)``."""
    r, g, b = x.unbind(1)
    return (r * _LUMA[0]).add_(g, alpha=_LUMA[1]).add_(b, alpha=_LUMA[2]).unsqueeze(1)


# ----------------------------------------------------------------------------------------------
# conversion / normalisation
# ----------------------------------------------------------------------------------------------


def to_float(x: Tensor) -> Tensor:
    """``uint8`` images in ``[0, 255]`` -> ``float32`` in ``[0, 1]``; floating input is cast to float32.

    Shape is preserved (typically ``(B, 3, H, W)``). Mirrors torchvision's ``ConvertImageDtype``
    / ``ToDtype(torch.float32, scale=True)``. A float32 input is returned as is (no copy).
    """
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    if x.is_floating_point():
        return x.to(torch.float32)
    raise TypeError(f"expected uint8 or floating images, got {x.dtype}")


def normalize(x: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """Normalisation ``(x - mean) / std`` of a ``(B, 3, H, W)`` batch in ``[0, 1]`` (ImageNet's by default).

    ``uint8`` input is first scaled to ``[0, 1]``. Returns float32 ``(B, 3, H, W)``. Mirrors
    ``torchvision.transforms.Normalize(mean, std)``.
    """
    _check_batch(x)
    x = to_float(x)
    mean_t = torch.tensor(tuple(mean), dtype=torch.float32).view(1, 3, 1, 1).to(x.device)
    std_t = torch.tensor(tuple(std), dtype=torch.float32).view(1, 3, 1, 1).to(x.device)
    return (x - mean_t).div_(std_t)


# ----------------------------------------------------------------------------------------------
# geometry
# ----------------------------------------------------------------------------------------------


def _sample_crop_boxes(
    batch: int,
    height: int,
    width: int,
    scale: Sequence[float],
    ratio: Sequence[float],
    generator: Optional[torch.Generator],
) -> Tensor:
    """Crop boxes ``(B, 4)`` as ``(x0, y0, w, h)`` in pixel-edge coordinates (CPU, float32).

    Same acceptance rule as torchvision's ``RandomResizedCrop.get_params`` but vectorised and
    with continuous (sub-pixel) box sizes and positions: ``CROP_ATTEMPTS`` candidates per image,
    the first that fits is kept; images where none fits get torchvision's fallback (the whole
    image, trimmed to the nearest allowed aspect ratio, centred: :func:`~simtool.data.images.fallback_crop`,
    the same rule as the worker-side :func:`~simtool.data.images.sample_crop_box`).
    """
    lo_s, hi_s = float(scale[0]), float(scale[1])
    lo_r, hi_r = float(ratio[0]), float(ratio[1])
    if not (0 < lo_s <= hi_s) or not (0 < lo_r <= hi_r):
        raise ValueError(f"need 0 < scale[0] <= scale[1] and 0 < ratio[0] <= ratio[1], got {scale}, {ratio}")
    area = float(height * width)
    k = CROP_ATTEMPTS
    target = area * (lo_s + (hi_s - lo_s) * _rand(batch, generator, k))
    log_lo, log_hi = math.log(lo_r), math.log(hi_r)
    aspect = torch.exp(log_lo + (log_hi - log_lo) * _rand(batch, generator, k))
    pos = _rand(batch, generator, 2)

    w = torch.sqrt(target * aspect)
    h = torch.sqrt(target / aspect)
    fits = (w <= width + FIT_SLACK) & (h <= height + FIT_SLACK)
    first = fits.to(torch.int8).argmax(dim=1, keepdim=True)  # index of the first True (0 if none)
    w = w.gather(1, first).squeeze(1).clamp(max=float(width))
    h = h.gather(1, first).squeeze(1).clamp(max=float(height))
    found = fits.any(dim=1)

    if not bool(found.all()):
        fw, fh = fallback_crop(width, height, (lo_r, hi_r))
        w = torch.where(found, w, torch.full_like(w, fw))
        h = torch.where(found, h, torch.full_like(h, fh))
        pos = torch.where(found.unsqueeze(1), pos, torch.full_like(pos, 0.5))

    x0 = pos[:, 0] * (width - w)
    y0 = pos[:, 1] * (height - h)
    return torch.stack([x0, y0, w, h], dim=1)


def _crop_grid(boxes: Tensor, height: int, width: int, size: int) -> Tensor:
    """Sampling grid ``(B, size, size, 2)`` (CPU) for crop boxes ``(B, 4)`` = (x0, y0, w, h) in pixels.

    Equal to ``F.affine_grid(_crop_theta(boxes, H, W), (B, C, size, size), align_corners=False)``
    for these axis-aligned matrices, but built directly by broadcasting one coordinate vector per
    axis: the CPU ``affine_grid`` kernel (a batched matmul over every output pixel) costs more than
    the resampling itself.
    """
    b = boxes.shape[0]
    theta = _crop_theta(boxes, height, width)
    base = (torch.arange(size, dtype=torch.float32) * 2.0 + 1.0) / size - 1.0  # output pixel centres
    gx = theta[:, 0, 0:1] * base + theta[:, 0, 2:3]  # (B, size)
    gy = theta[:, 1, 1:2] * base + theta[:, 1, 2:3]
    return torch.stack([gx.unsqueeze(1).expand(b, size, size), gy.unsqueeze(2).expand(b, size, size)], dim=-1)


def _crop_resize(x: Tensor, boxes: Tensor, size: int) -> Tensor:
    """Resample boxes ``(B, 4)`` (x0, y0, w, h in pixels) of float ``x`` to ``(B, C, size, size)``."""
    _, _, height, width = x.shape
    grid = _crop_grid(boxes, height, width, size).to(device=x.device, dtype=x.dtype)
    # "border" replicates edge pixels like F.interpolate does (zeros would darken the borders)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _crop_theta(boxes: Tensor, height: int, width: int) -> Tensor:
    """Affine matrices ``(B, 2, 3)`` mapping output to input coordinates (``align_corners=False``)."""
    x0, y0, w, h = boxes.unbind(1)
    theta = torch.zeros(boxes.shape[0], 2, 3, dtype=torch.float32)
    theta[:, 0, 0] = w / width
    theta[:, 0, 2] = (2.0 * x0 + w) / width - 1.0
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2.0 * y0 + h) / height - 1.0
    return theta


def random_resized_crop(
    x: Tensor,
    size: int,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Per-sample random crop resampled to ``size x size``: ``(B, 3, H, W)`` -> float32 ``(B, 3, size, size)``.

    Mirrors ``torchvision.transforms.RandomResizedCrop(size, scale, ratio)`` (bilinear, no
    antialiasing): the crop area fraction is ``U(scale)``, the log aspect ratio ``U(log ratio)``,
    the position uniform inside the image; ``10`` candidates are tried per image (vectorised) and
    images where none fits fall back to a centred crop of the full image. Box sizes/positions are
    continuous rather than rounded to whole pixels. All crops are resampled with one batched
    ``F.grid_sample`` (bilinear, ``align_corners=False``, border padding) on the
    ``F.affine_grid`` grid of each box (built directly, see :func:`_crop_grid`), so a full-image
    box equals ``F.interpolate(x, (size, size), mode="bilinear", align_corners=False)``.

    Randomness is drawn on the CPU from ``generator`` (global RNG when ``None``).
    """
    _check_batch(x)
    _check_generator(generator)
    x = to_float(x)
    b, _, height, width = x.shape
    boxes = _sample_crop_boxes(b, height, width, scale, ratio, generator)
    return _crop_resize(x, boxes, int(size))


def _randomly_apply(x: Tensor, p: float, generator, fn) -> Tensor:
    """Apply ``fn(subset, indices)`` to each sample with probability ``p`` (p = 0: exact no-op)."""
    _check_batch(x)
    _check_generator(generator)
    x = to_float(x)
    if p <= 0:
        return x
    return _apply_subset(x, _bernoulli_mask(x.shape[0], p, generator), fn)


def random_hflip(x: Tensor, p: float, generator: Optional[torch.Generator] = None) -> Tensor:
    """Flip each sample left-right with probability ``p``: ``(B, 3, H, W)`` -> float32 ``(B, 3, H, W)``.

    Mirrors ``torchvision.transforms.RandomHorizontalFlip(p)``, decided per sample.
    """
    return _randomly_apply(x, p, generator, lambda sub, idx: sub.flip(3))


def center_crop(x: Tensor, size: int, crop_frac: float = 1.0) -> Tensor:
    """Deterministic eval transform: ``(B, 3, H, W)`` -> float32 ``(B, 3, size, size)``.

    Mirrors ``Compose([Resize(round(size / crop_frac), antialias=True), CenterCrop(size)])``:
    the short side is resized to ``round(size / crop_frac)`` (aspect kept, antialiased bilinear
    via ``F.interpolate(..., antialias=True)``), then the central ``size x size`` window is cut.
    """
    _check_batch(x)
    if not 0 < crop_frac <= 1:
        raise ValueError(f"crop_frac must be in (0, 1], got {crop_frac}")
    x = to_float(x)
    size = int(size)
    _, _, height, width = x.shape
    short_target = int(round(size / crop_frac))
    if height <= width:
        new_h, new_w = short_target, int(short_target * width / height)
    else:
        new_h, new_w = int(short_target * height / width), short_target
    if (new_h, new_w) != (height, width):
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    if top < 0 or left < 0:
        raise ValueError(f"crop size {size} is larger than the resized image {new_h}x{new_w}")
    return x[:, :, top : top + size, left : left + size]


def center_crop_resize(x: Tensor, size: int, crop_frac: float = 0.875) -> Tensor:
    """The original's test transform: the central ``crop_frac`` of each side, resized to ``size x size``.

    ``(B, 3, H, W)`` -> float32 ``(B, 3, size, size)`` (bilinear; the aspect ratio of a non-square
    frame is not kept, as in the original). :func:`simtool.formats.image_codec.decode_crop` with
    :func:`simtool.data.images.center_box` is the same transform on encoded frames.
    """
    _check_batch(x)
    if not 0 < crop_frac <= 1:
        raise ValueError(f"crop_frac must be in (0, 1], got {crop_frac}")
    x = to_float(x)
    b, _, height, width = x.shape
    box = torch.tensor([(1 - crop_frac) / 2 * width, (1 - crop_frac) / 2 * height, crop_frac * width, crop_frac * height])
    return _crop_resize(x, box.expand(b, 4).contiguous(), int(size))


# ----------------------------------------------------------------------------------------------
# colour
# ----------------------------------------------------------------------------------------------


def _adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """``clamp(f * x, 0, 1)`` per sample; ``x`` float ``(B, 3, H, W)``, ``factor`` ``(B,)``.

    Mirrors ``torchvision.transforms.functional.adjust_brightness``.
    """
    return (x * _per_sample(factor, x)).clamp_(0.0, 1.0)


def _adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Blend each image with the mean of its grayscale: ``clamp(f * x + (1 - f) * mean, 0, 1)``.

    ``x`` float ``(B, 3, H, W)``, ``factor`` ``(B,)``. Mirrors
    ``torchvision.transforms.functional.adjust_contrast``.
    """
    mean = _grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    # lerp(mean, x, f) = mean + f * (x - mean) = f * x + (1 - f) * mean, in one fused kernel
    return torch.lerp(mean.expand_as(x), x, _per_sample(factor, x)).clamp_(0.0, 1.0)


def _adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Blend each image with its grayscale: ``clamp(f * x + (1 - f) * gray, 0, 1)``.

    ``x`` float ``(B, 3, H, W)``, ``factor`` ``(B,)``. Mirrors
    ``torchvision.transforms.functional.adjust_saturation``.
    """
    return torch.lerp(_grayscale(x).expand_as(x), x, _per_sample(factor, x)).clamp_(0.0, 1.0)


def _adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the HSV hue of each image by ``shift`` (fraction of a full turn, ``(B,)``).

    ``x`` float ``(B, 3, H, W)`` in ``[0, 1]``. Vectorised RGB -> HSV -> RGB; saturation and value
    are preserved. Mirrors ``torchvision.transforms.functional.adjust_hue``.

    Written with arithmetic masks and in-place ops instead of ``torch.where`` / ``remainder`` /
    ``max(dim)`` with indices, which are several times slower on the CPU.
    """
    r, g, b = x.unbind(1)
    v = x.amax(dim=1)
    chroma = v - x.amin(dim=1)
    # which channel holds the maximum (ties resolved r, then g; the hue is continuous there)
    is_r = (r == v).to(x.dtype)
    is_g = (g == v).to(x.dtype).mul_(1.0 - is_r)
    is_b = (1.0 - is_r).sub_(is_g)
    # hue in sextants times the chroma: r max -> g - b, g max -> b - r + 2c, b max -> r - g + 4c.
    # Grey pixels (chroma 0) have a numerator of exactly 0, so clamping the divisor is safe.
    num = (g - b).mul_(is_r)
    num.addcmul_(torch.add(b - r, chroma, alpha=2.0), is_g)
    num.addcmul_(torch.add(r - g, chroma, alpha=4.0), is_b)
    h6 = num.div_(chroma.clamp(min=1e-12)).add_(_per_sample(shift, x).squeeze(1), alpha=6.0)
    # HSV -> RGB: channel_n = v - chroma * clamp(2 - |k_n|, 0, 1) with
    # k_n = ((n + h6) mod 6) - 2 for n = 5, 3, 1 (R, G, B)
    n = torch.tensor([5.0, 3.0, 1.0], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    k = h6.unsqueeze(1) + n
    k.sub_(torch.floor(k * (1.0 / 6.0)), alpha=6.0).sub_(2.0).abs_()
    w = torch.rsub(k, 2.0).clamp_(0.0, 1.0)
    return torch.addcmul(v.unsqueeze(1), chroma.unsqueeze(1), w, value=-1.0).clamp_(0.0, 1.0)


def color_jitter(
    x: Tensor,
    p: float,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """With probability ``p`` per sample, jitter brightness, contrast, saturation and hue.

    ``(B, 3, H, W)`` -> float32 ``(B, 3, H, W)`` in ``[0, 1]``. Mirrors
    ``torchvision.transforms.RandomApply([ColorJitter(brightness, contrast, saturation, hue)], p)``
    except that the four adjustments are applied in a **fixed order** (brightness, contrast,
    saturation, hue) instead of a random permutation. Factors are drawn per sample:
    brightness ``U[max(0, 1-b), 1+b]`` (multiply), contrast ``U[max(0, 1-c), 1+c]`` (blend with the
    image's mean grayscale), saturation ``U[max(0, 1-s), 1+s]`` (blend with grayscale), hue shift
    ``U[-h, h]`` (fraction of a full turn); the result is clamped to ``[0, 1]`` after each step.
    A zero strength skips that adjustment. Samples not selected are returned unchanged.
    """
    _check_batch(x)
    _check_generator(generator)
    x = to_float(x)
    if p <= 0 or (brightness <= 0 and contrast <= 0 and saturation <= 0 and hue <= 0):
        return x
    if not 0 <= hue <= 0.5:
        raise ValueError(f"hue must be in [0, 0.5], got {hue}")
    bsz = x.shape[0]
    mask = _bernoulli_mask(bsz, p, generator)
    steps: list[tuple[Callable[[Tensor, Tensor], Tensor], Tensor]] = []
    for strength, fn in ((brightness, _adjust_brightness), (contrast, _adjust_contrast), (saturation, _adjust_saturation)):
        if strength > 0:
            steps.append((fn, _uniform(bsz, max(0.0, 1.0 - strength), 1.0 + strength, generator)))
    if hue > 0:
        steps.append((_adjust_hue, _uniform(bsz, -hue, hue, generator)))

    def jitter(sub: Tensor, idx: Tensor) -> Tensor:
        for fn, factors in steps:
            sub = fn(sub, factors[idx])
        return sub

    return _apply_subset(x, mask, jitter)


def random_grayscale(x: Tensor, p: float, generator: Optional[torch.Generator] = None) -> Tensor:
    """With probability ``p`` per sample, replace the image by its luma replicated to 3 channels.

    ``(B, 3, H, W)`` -> float32 ``(B, 3, H, W)``; luma = ``0.299 R + 0.587 G + 0.114 B`` (ITU-R 601).
    Mirrors ``torchvision.transforms.RandomGrayscale(p)``.
    """
    return _randomly_apply(x, p, generator, lambda sub, idx: _grayscale(sub).expand(-1, 3, -1, -1).contiguous())


# ----------------------------------------------------------------------------------------------
# blur
# ----------------------------------------------------------------------------------------------


def _gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Blur each sample with its own Gaussian: ``x`` float ``(B, C, H, W)``, ``sigma`` ``(B,)``.

    Separable: a horizontal then a vertical pass, each one grouped ``conv2d`` over all ``B * C``
    planes, after reflect padding by ``kernel_size // 2``. Same kernel as
    ``torchvision.transforms.functional.gaussian_blur(img, [k, k], [sigma, sigma])``.
    """
    k = int(kernel_size)
    if k < 1 or k % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive, got {k}")
    b, c, height, width = x.shape
    half = k // 2
    if half >= min(height, width):
        raise ValueError(f"kernel_size {k} too large for reflect padding of a {height}x{width} image")
    t = torch.arange(k, dtype=torch.float32) - half
    s = sigma.to(torch.float32).view(-1, 1)
    kern = torch.exp(-0.5 * (t / s) ** 2)
    kern = kern / kern.sum(dim=1, keepdim=True)  # (B, k)
    kern = kern.repeat_interleave(c, dim=0).to(device=x.device, dtype=x.dtype)  # (B*C, k)
    planes = F.pad(x.reshape(1, b * c, height, width), (half, half, half, half), mode="reflect")
    planes = F.conv2d(planes, kern.view(b * c, 1, 1, k), groups=b * c)
    planes = F.conv2d(planes, kern.view(b * c, 1, k, 1), groups=b * c)
    return planes.view(b, c, height, width)


def _blur_kernel_size(height: int, width: int, kernel_frac: float) -> int:
    k = max(3, int(round(kernel_frac * height)))
    if k % 2 == 0:
        k += 1
    limit = 2 * min(height, width) - 1  # reflect padding needs k // 2 < the image side
    return max(1, min(k, limit))


def random_gaussian_blur(
    x: Tensor,
    p: float,
    sigma: Sequence[float] = (0.1, 2.0),
    kernel_frac: float = 0.1,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """With probability ``p`` per sample, Gaussian-blur with ``sigma ~ U(sigma)``.

    ``(B, 3, H, W)`` -> float32 ``(B, 3, H, W)``. The odd kernel size is about ``kernel_frac * H``
    (at least 3), as in SimCLR. Mirrors
    ``RandomApply([torchvision.transforms.GaussianBlur(k, sigma)], p)`` with reflect padding.
    """
    _check_batch(x)
    _check_generator(generator)
    x = to_float(x)
    if p <= 0:
        return x
    if not 0 < float(sigma[0]) <= float(sigma[1]):
        raise ValueError(f"need 0 < sigma[0] <= sigma[1], got {sigma}")
    bsz, _, height, width = x.shape
    mask = _bernoulli_mask(bsz, p, generator)
    sig = _uniform(bsz, float(sigma[0]), float(sigma[1]), generator)
    k = _blur_kernel_size(height, width, kernel_frac)
    return _apply_subset(x, mask, lambda sub, idx: _gaussian_blur(sub, sig[idx], k))


# ----------------------------------------------------------------------------------------------
# pipeline
# ----------------------------------------------------------------------------------------------


class BatchAugment:
    """Callable pipeline: uint8 (B,3,H,W) on any device -> normalised float32 (B,3,size,size).

    Modes:

    * ``"crop"``: ``random_resized_crop(scale=(min_crop, 1))`` only (temporal positives);
    * ``"classic"``: SimCLR — ``random_resized_crop(scale=(spec.min_crop, 1))`` ->
      ``random_hflip(spec.flip)`` -> ``color_jitter(spec.jitter, ...)`` ->
      ``random_grayscale(spec.grayscale)`` -> ``random_gaussian_blur(spec.blur)`` (skipped when 0);
    * ``"eval"``: :func:`center_crop_resize` with ``eval_crop`` (1.0 = the whole frame).

    ``crop=False`` skips the random crop of ``"crop"`` and ``"classic"``: the images arrive
    already cropped (taken from the stored frame in the data loader) at ``size``. Each mode ends
    with :func:`normalize` by ``mean`` and ``std`` (ImageNet's by default). ``spec`` (a
    :class:`simtool.specs.augment.AugmentSpec`, or any object with its fields; one without
    ``grayscale`` and ``blur``, a :class:`~simtool.specs.augment.CropColourSpec`, skips those)
    defaults to ``AugmentSpec()`` (SimCLR) and is only used by ``"classic"``; ``min_crop`` only by
    ``"crop"``.
    """

    MODES = ("crop", "classic", "eval")

    def __init__(self, size: int, mode: str, spec=None, min_crop: float = 0.5, crop: bool = True, eval_crop: float = 1.0,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        if mode not in self.MODES:
            raise ValueError(f"unknown augmentation mode {mode!r}; expected one of {self.MODES}")
        if int(size) < 1:
            raise ValueError(f"size must be positive, got {size}")
        if not 0 < min_crop <= 1:
            raise ValueError(f"min_crop must be in (0, 1], got {min_crop}")
        self.size = int(size)
        self.mode = mode
        if spec is None:
            from simtool.specs.augment import AugmentSpec

            spec = AugmentSpec()
        self.spec = spec
        self.min_crop = float(min_crop)
        self.crop = bool(crop)
        self.eval_crop = float(eval_crop)
        self.mean, self.std = tuple(mean), tuple(std)

    def __repr__(self) -> str:
        extra = f", spec={self.spec!r}" if self.mode == "classic" else (
            f", min_crop={self.min_crop}" if self.mode == "crop" else f", eval_crop={self.eval_crop}"
        )
        return f"BatchAugment(size={self.size}, mode={self.mode!r}{extra}, crop={self.crop})"

    def _crop(self, x: Tensor, min_crop: float, generator) -> Tensor:
        if not self.crop:
            if x.shape[-2:] != (self.size, self.size):
                raise ValueError(f"crop=False expects images of {self.size}x{self.size}, got {tuple(x.shape[-2:])}")
            return to_float(x)
        return random_resized_crop(x, self.size, scale=(min_crop, 1.0), generator=generator)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment a ``(B, 3, H, W)`` uint8/float batch; randomness from the CPU ``generator``
        (torch's global RNG when ``None``). Returns float32 ``(B, 3, size, size)`` on ``x``'s device."""
        _check_batch(x)
        _check_generator(generator)
        if self.mode == "eval":
            return normalize(center_crop_resize(x, self.size, self.eval_crop), self.mean, self.std)
        if self.mode == "crop":
            return normalize(self._crop(x, self.min_crop, generator), self.mean, self.std)
        s = self.spec
        x = self._crop(x, s.min_crop, generator)
        x = random_hflip(x, s.flip, generator=generator)
        x = color_jitter(x, s.jitter, s.brightness, s.contrast, s.saturation, s.hue, generator=generator)
        x = random_grayscale(x, getattr(s, "grayscale", 0.0), generator=generator)
        blur = getattr(s, "blur", 0.0)
        if blur > 0:
            x = random_gaussian_blur(x, blur, generator=generator)
        return normalize(x, self.mean, self.std)
