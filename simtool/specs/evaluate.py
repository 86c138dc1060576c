"""Specs for ``save-embeddings``, ``evaluate`` and ``compare``.

``EvaluateSpec.options`` holds the options of the evaluator named by ``options.type``: the union of
the option specs the registered evaluators declare is built next to their registry
(:func:`simtool.evaluators.validate_evaluate_spec`), so this module imports nothing above it.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field

from simtool.specs.base import Seed, Spec

Split = Literal["train", "val", "test", "all"]
Device = Literal["auto", "cpu", "cuda", "mps"]


class SaveEmbeddingsSpec(Spec):
    runs: list[str] = Field(default_factory=list, description="run directories to embed (none with model)")
    out: str
    split: Optional[Split] = Field(None, description="rows to export; default: every item for teacher runs (a student needs them all), "
                                                     "the test split for image models, every row for a model (model)")
    layers: Optional[list[str]] = None
    data: Optional[str] = Field(None, description="dataset directory to embed: the runs' when it moved since training (same content); "
                                                  "required with model")
    batch_size: int = Field(256, ge=1)
    device: Device = "auto"
    model: Optional[str] = Field(None, description="embed with a model no run trained: a registered simtool model or a timm model "
                                                   "(NAME or timm:NAME), instead of runs")
    pretrained: bool = Field(False, description="model: timm's pretrained weights (a download unless cached)")
    weights: Optional[str] = Field(None, description="model: weights file (.safetensors, or a .pth state dict read with weights_only=True)")
    seed: Seed = Field(0, description="model: seed of the random initialisation (without pretrained or weights)")


class EvaluateSpec(Spec):
    target: str
    out: Optional[str] = None
    labels: Optional[str] = Field(None, description="labels file (CSV or parquet) for a plain .npy/.npz target")
    data: Optional[str] = Field(None, description="dataset directory of a run target, when it moved since training")
    images: Optional[str] = Field(None, description="a run target: embed the images of this dataset directory instead, a second image set of the same "
                                  "frames (same category, object, frame keys), e.g. with the backgrounds removed")
    split: Split = "test"
    layers: Optional[list[str]] = None
    batch_size: int = Field(256, ge=1)
    device: Device = "auto"
    options: Any  # validated by validate_evaluate_spec against the registered evaluators' option specs


class CompareSpec(Spec):
    targets: list[str] = Field(min_length=1)
    out: Optional[str] = None
    layer: Optional[str] = None
    names: Optional[list[str]] = Field(None, description="group names, one per target, in target order")
    layer_of: dict[str, str] = Field(default_factory=dict, description="group (label or name) -> its own layer in the --layer view")
    reference: Optional[str] = Field(None, description="group to take paired differences against")
    bootstrap: int = Field(1000, ge=0, le=100000, description="bootstrap resamples of the paired differences (0: none)")
    seed: Seed = Field(0, description="seed of the bootstrap and of the RSA/CKA subsample")
    max_items: int = Field(2000, ge=3, description="most items (shared ids) for RSA and CKA")
    figures: bool = Field(True, description="write PNG figures with --out")
