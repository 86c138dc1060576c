"""What every ``simtool build-data`` spec shares: the base classes of the formats' specs and split helpers.

Each format's own spec lives with its builder and is registered with it
(``@register_builder("name", spec=...)`` in ``simtool/data/builders``); the union of them,
discriminated by ``format``, is built next to that registry, so this module imports nothing above it.
"""

from __future__ import annotations

from typing import Optional

from pydantic import Field, model_validator

from simtool.specs.base import Seed, Spec


class SplitSpec(Spec):
    """Fractions of objects per category that go to each split (split by object, never by frame)."""

    train: float = Field(0.8, ge=0, le=1)
    val: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitSpec:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1 (train+val+test = {total:g})")
        return self


def parse_fractions(value):
    """``"0.9,0.1"`` -> ``[0.9, 0.1]`` (lists pass through); used by every ``split`` option."""
    if isinstance(value, str) and value.strip() != "original":
        parts = [p for p in value.replace(";", ",").replace(" ", ",").split(",") if p]
        try:
            return [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"expected fractions like 0.9,0.1 or 0.8,0.1,0.1, got {value!r}") from None
    return value


def check_fractions(value):
    if isinstance(value, list):
        if len(value) not in (2, 3):
            raise ValueError("give 2 fractions (train, test) or 3 (train, val, test)")
        if any(v < 0 for v in value):
            raise ValueError("fractions must not be negative")
        if abs(sum(value) - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1 (they sum to {sum(value):g})")
    return value


class BuildBase(Spec):
    format: str  # each format's class narrows this to its Literal (kept first in the printed spec)
    source: Optional[str] = None
    out: str
    seed: Seed = 0


class ImageBuildBase(BuildBase):
    """Options of every format that reads image files: resizing, workers, resumable parts."""

    max_side: int = Field(320, ge=0, le=65535, description="resize so the longer side is at most this and re-encode as JPEG; 0 keeps the original bytes")
    quality: int = Field(90, ge=1, le=100, description="JPEG quality of re-encoded images")
    workers: int = Field(0, ge=0, le=256, description="decoding processes; 0 = one per CPU core (at most 16)")
    part_size: int = Field(20000, ge=1, description="images per resumable part (whole objects stay in one part)")
