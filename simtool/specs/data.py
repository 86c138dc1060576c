"""Specs for ``simtool build-data``."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from simtool.specs.base import Spec


class SplitSpec(Spec):
    """Fractions of objects per category that go to each split (split by object, never by frame)."""

    train: float = Field(0.8, ge=0, le=1)
    val: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> "SplitSpec":
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1 (train+val+test = {total:g})")
        return self


class ToyWorldSpec(Spec):
    """A procedurally rendered world: rooms × categories × objects × turntable frames.

    Category = a 3-D shape family, object = a variation within it (colour, texture,
    proportions), frame = turntable viewpoint. With ``room_backgrounds: false`` every room shares
    one background, so rooms (contexts) can only be learned from co-occurrence in time.
    """

    n_rooms: int = Field(4, ge=2, le=8)
    categories_per_room: int = Field(4, ge=1, le=8)
    objects_per_category: int = Field(20, ge=3, le=200)
    frames_per_object: int = Field(8, ge=2, le=360)
    image_size: int = Field(64, ge=16, le=512)
    room_backgrounds: bool = False
    hue_spread: float = Field(0.15, ge=0, le=1, description="object hues vary within ±spread/2 turn of their family's typical hue (1 = any hue)")
    image_format: Literal["png", "jpeg"] = "png"
    split: SplitSpec = SplitSpec(train=0.7, val=0.1, test=0.2)


class BuildDataSpec(Spec):
    format: Literal["toyworld"]
    source: Optional[str] = None
    out: str
    seed: int = 0
    toyworld: ToyWorldSpec = ToyWorldSpec()
