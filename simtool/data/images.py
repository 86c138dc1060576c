"""Crop geometry: where a crop of a frame lies, in relative coordinates of the frame.

The boxes are decoded by :func:`simtool.formats.image_codec.decode_crop` (in data-loader workers)
or applied to decoded frames on the device (:mod:`simtool.data.augment`); both follow the rule of
torchvision's ``RandomResizedCrop``, with the same fallback (:func:`fallback_crop`).
"""

from __future__ import annotations

import numpy as np

CROP_ATTEMPTS = 10  # candidate boxes per crop before the fallback (torchvision's rule)
FIT_SLACK = 1e-4  # a candidate fits when w <= width + slack (so scale=(1, 1), ratio=(1, 1) is accepted despite rounding)


def fallback_crop(width: float, height: float, ratio: tuple[float, float]) -> tuple[float, float]:
    """Size ``(w, h)`` of the crop when no candidate fits: the whole frame trimmed to the nearest
    allowed aspect ratio (continuous, not rounded to whole pixels), to be centred."""
    in_ratio = width / height
    if in_ratio < ratio[0]:
        return float(width), width / ratio[0]
    if in_ratio > ratio[1]:
        return height * ratio[1], float(height)
    return float(width), float(height)


def sample_crop_box(width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float],
                    rng: np.random.Generator) -> tuple[float, float, float, float]:
    """A RandomResizedCrop box ``(x0, y0, w, h)`` in relative coordinates ([0, 1]) of a frame.

    The rule of torchvision's ``RandomResizedCrop.get_params``: area fraction ~ U(scale), log aspect
    ratio ~ U(log ratio), up to :data:`CROP_ATTEMPTS` attempts; when none fits (:func:`fallback_crop`), the whole frame trimmed to the nearest
    allowed aspect ratio, centred. Sizes and positions are continuous (not whole pixels).
    """
    area = float(width * height)
    log_lo, log_hi = np.log(ratio[0]), np.log(ratio[1])
    for _ in range(CROP_ATTEMPTS):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = float(np.exp(rng.uniform(log_lo, log_hi)))
        w, h = np.sqrt(target * aspect), np.sqrt(target / aspect)
        if w <= width + FIT_SLACK and h <= height + FIT_SLACK:
            w, h = min(w, width), min(h, height)
            x0, y0 = rng.uniform(0, width - w), rng.uniform(0, height - h)
            return x0 / width, y0 / height, w / width, h / height
    w, h = fallback_crop(width, height, ratio)
    return (width - w) / 2 / width, (height - h) / 2 / height, w / width, h / height


def center_box(frac: float) -> tuple[float, float, float, float]:
    """The central ``frac`` of each side, whatever the aspect ratio (resized to a square, this
    distorts a non-square frame): the time/context route's evaluation crop."""
    return (1 - frac) / 2, (1 - frac) / 2, frac, frac


def center_square_box(width: int, height: int, frac: float) -> tuple[float, float, float, float]:
    """The centred square of side ``frac * min(width, height)``, in relative coordinates: resized to
    ``S`` it is torchvision's ``Resize(S / frac)`` (short side) then ``CenterCrop(S)``, the
    evaluation transform of timm and of the triplet route's original (aspect ratio kept)."""
    side = frac * min(width, height)
    return (width - side) / 2 / width, (height - side) / 2 / height, side / width, side / height


def eval_box_fn(transform: str, frac: float):
    """``box_fn(width, height)`` of an evaluation ``transform`` recorded in a model card's ``input``:
    ``center_crop`` (:func:`center_box`) or ``resize_crop`` (:func:`center_square_box`)."""
    if transform == "resize_crop":
        return lambda w, h: center_square_box(w, h, frac)
    box = center_box(frac)
    return lambda w, h: box


