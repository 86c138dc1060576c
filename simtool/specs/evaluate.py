"""Specs for ``save-embeddings``, ``evaluate`` and ``compare``."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from simtool.specs.base import Spec

Split = Literal["train", "val", "test", "all"]


class SaveEmbeddingsSpec(Spec):
    runs: list[str] = Field(min_length=1)
    out: str
    split: Split = "test"
    layers: Optional[list[str]] = None
    batch_size: int = Field(256, ge=1)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"


class EvaluateSpec(Spec):
    target: str
    type: Literal["odd-one-out", "triplets", "classes"]
    out: Optional[str] = None
    rooms: Optional[str] = None
    repeats: int = Field(10, ge=1, le=1000)
    seed: int = 0
    split: Split = "test"
    layers: Optional[list[str]] = None
    batch_size: int = Field(256, ge=1)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"


class CompareSpec(Spec):
    targets: list[str] = Field(min_length=1)
    out: Optional[str] = None
    layer: Optional[str] = None
