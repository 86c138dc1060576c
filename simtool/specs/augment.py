"""The batched image augmentation every image method shares (:class:`simtool.data.augment.BatchAugment`).

:class:`CropColourSpec` (RandomResizedCrop, flip, colour jitter) and :class:`AugmentSpec`, which adds
grayscale and blur (the SimCLR pipeline, with the SimCLR defaults of the time/context route). A
method whose recipe has other defaults derives its own with :func:`augment_spec`: the fields, their
bounds and their meaning stay declared once, here.
"""

from __future__ import annotations

import copy

from pydantic import Field, create_model

from simtool.specs.base import Spec


class CropColourSpec(Spec):
    """RandomResizedCrop, flip and colour jitter, in this order; probabilities in [0, 1] (0 skips a
    step and draws nothing)."""

    min_crop: float = Field(0.5, gt=0, le=1, description="RandomResizedCrop scale (area) lower bound")
    flip: float = Field(0.5, ge=0, le=1, description="probability of a horizontal flip")
    jitter: float = Field(0.8, ge=0, le=1, description="probability of colour jitter")
    brightness: float = Field(0.4, ge=0)
    contrast: float = Field(0.4, ge=0)
    saturation: float = Field(0.4, ge=0)
    hue: float = Field(0.1, ge=0, le=0.5)


class AugmentSpec(CropColourSpec):
    """Classic (SimCLR) augmentations, in this order: RandomResizedCrop, flip, colour jitter, grayscale,
    blur; probabilities in [0, 1] (0 skips a step and draws nothing)."""

    grayscale: float = Field(0.2, ge=0, le=1, description="probability of converting to grayscale")
    blur: float = Field(0.0, ge=0, le=1, description="probability of a Gaussian blur")


def augment_spec(name: str, doc: str, base: type[CropColourSpec] = AugmentSpec, **defaults) -> type[CropColourSpec]:
    """A subclass of ``base`` named ``name`` whose fields default to ``defaults``."""
    fields = {}
    for key, value in defaults.items():
        info = copy.deepcopy(base.model_fields[key])
        info.default = value
        fields[key] = (base.model_fields[key].annotation, info)
    return create_model(name, __base__=base, __doc__=doc, __module__=__name__, **fields)
