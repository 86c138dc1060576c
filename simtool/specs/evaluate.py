"""Specs for ``save-embeddings``, ``evaluate`` and ``compare``.

``EvaluateSpec.options`` is a discriminated union on ``type`` of the option specs that the
registered evaluators declare (``simtool.evaluators``): adding an evaluator adds its options here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Field, TypeAdapter, ValidationError

from simtool.errors import UserError
from simtool.specs.base import Spec, format_validation_error

Split = Literal["train", "val", "test", "all"]
Device = Literal["auto", "cpu", "cuda", "mps"]


class SaveEmbeddingsSpec(Spec):
    runs: list[str] = Field(min_length=1)
    out: str
    split: Optional[Split] = Field(None, description="rows to export; default: every item for teacher runs (a student needs them all), the test split for image models")
    layers: Optional[list[str]] = None
    data: Optional[str] = Field(None, description="dataset directory to embed, when it moved since training (same content)")
    batch_size: int = Field(256, ge=1)
    device: Device = "auto"


class EvaluateSpec(Spec):
    target: str
    out: Optional[str] = None
    labels: Optional[str] = Field(None, description="labels file (CSV or parquet) for a plain .npy/.npz target")
    data: Optional[str] = Field(None, description="dataset directory of a run target, when it moved since training")
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
    seed: int = Field(0, description="seed of the bootstrap and of the RSA/CKA subsample")
    max_items: int = Field(2000, ge=3, description="most items (shared ids) for RSA and CKA")
    figures: bool = Field(True, description="write PNG figures with --out")


def options_type():
    from simtool.evaluators import EVALUATORS, load_builtin

    load_builtin()
    classes = tuple(e.options for e in EVALUATORS.values())
    return classes[0] if len(classes) == 1 else Annotated[Union[classes], Field(discriminator="type")]


def validate_evaluate_spec(data: dict, source: str = "evaluate options") -> EvaluateSpec:
    """Validate the common part, then ``options`` against the evaluator named by ``options.type``."""
    from simtool.evaluators import EVALUATORS, load_builtin

    load_builtin()
    options = dict(data.get("options") or {})
    kind = options.get("type")
    if kind not in EVALUATORS:
        raise UserError(f"Unknown evaluation --type {kind!r}; choose one of: {', '.join(sorted(EVALUATORS))}.")
    cls = EVALUATORS[kind].options
    unknown = sorted(k for k, v in options.items() if k not in cls.model_fields and v is not None)
    if unknown:
        raise UserError(f"Option {unknown[0]!r} does not apply to --type {kind}; its options are: {', '.join(k for k in cls.model_fields if k != 'type')}.")
    options = {k: v for k, v in options.items() if k in cls.model_fields and v is not None}
    try:
        parsed = TypeAdapter(options_type()).validate_python(options)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, cls, source, strip_tags=set(EVALUATORS))) from None
    common = {k: v for k, v in data.items() if k != "options"}
    try:
        spec = EvaluateSpec.model_validate({**common, "options": None})
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, EvaluateSpec, source)) from None
    spec.options = parsed
    return spec
