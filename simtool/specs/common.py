"""What every training run shares, whatever its method: the part of a train spec the engine reads.

A method's spec subclasses :class:`CommonSpec`, adds its own sections and sets
``method: Literal["<name>"]``; :mod:`simtool.specs.train` unites the registered method specs into
one discriminated union on ``method``. The engine (``simtool.engine``) reads only the fields
defined here: ``seed``, ``device``, ``precision``, ``optim``, ``schedule``, ``loop`` and
``checkpoint`` (and ``data.path`` through :class:`BaseDataSpec`).
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from simtool.specs.base import Spec

Device = Literal["auto", "cpu", "cuda", "mps"]


class ParamGroupSpec(Spec):
    """Settings for the parameters whose name matches ``match`` (``fnmatch`` pattern, e.g. ``backbone.*``).

    The first matching group wins; unmatched parameters use the optimizer's own settings.
    ``lr`` replaces the learning rate, ``lr_scale`` multiplies it; ``freeze: true`` excludes the
    parameters from training.
    """

    match: str
    lr: Optional[float] = Field(None, gt=0)
    lr_scale: Optional[float] = Field(None, ge=0)
    weight_decay: Optional[float] = Field(None, ge=0)
    freeze: bool = False

    @model_validator(mode="after")
    def _one_lr(self) -> "ParamGroupSpec":
        if self.lr is not None and self.lr_scale is not None:
            raise ValueError("give lr or lr_scale, not both")
        return self


class OptimSpec(Spec):
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-6, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only")
    fused: bool = Field(False, description="adam/adamw: torch's fused implementation (faster for many small steps)")
    param_groups: list[ParamGroupSpec] = []


class ScheduleSpec(Spec):
    name: Literal["constant", "cosine"] = "constant"
    warmup_epochs: float = Field(0.0, ge=0)


class LoopSpec(Spec):
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(64, ge=2, description="items per step over all processes (the global batch)")
    batch_size_per_device: Optional[int] = Field(None, ge=1, description="filled in by the engine: batch_size / number of processes")
    log_every: int = Field(10, ge=1, description="steps between metrics.jsonl records")
    eval_every: int = Field(1, ge=0, description="epochs between validation passes (0 = never)")


class CheckpointSpec(Spec):
    every: int = Field(0, ge=0, description="steps between resumable checkpoints (0 = at epoch ends only)")
    best: Optional[str] = Field(None, description="a validation figure the method reports (e.g. val/fstrt): keep checkpoints/best.safetensors, "
                                "the weights of the validation pass where it was best; save-embeddings and evaluate then use them")
    best_mode: Literal["max", "min"] = Field("max", description="whether a larger (max) or smaller (min) value of checkpoint.best is better")


class BaseDataSpec(Spec):
    """Every method's ``data`` section has at least ``path``."""

    path: Optional[str] = Field(None, description="dataset directory; none = the built-in toy world")


class CommonSpec(Spec):
    method: str
    preset: Optional[str] = None
    profile: Optional[str] = None
    seed: int = 0
    device: Device = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    data: BaseDataSpec = BaseDataSpec()
    optim: OptimSpec = OptimSpec()
    schedule: ScheduleSpec = ScheduleSpec()
    loop: LoopSpec = LoopSpec()
    checkpoint: CheckpointSpec = CheckpointSpec()


# Keys of a resolved train spec that say where or how fast a run ran, not what it learned:
# ``compare`` ignores them when it looks for settings that differ between runs.
RUN_ONLY_KEYS = ("seed", "device", "profile", "data.path", "data.cache", "data.num_workers",
                 "loop.log_every", "loop.eval_every", "loop.batch_size_per_device", "checkpoint.every")
