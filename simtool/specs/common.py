"""What every training run shares, whatever its method: the part of a train spec the engine reads.

A method's spec subclasses :class:`CommonSpec`, adds its own sections and sets
``method: Literal["<name>"]``; :func:`simtool.methods.train_spec_type` unites the registered method
specs into one discriminated union on ``method``. Fields declared with
:data:`~simtool.specs.base.RUN_ONLY` say where or how fast a run ran, not what it learned. The
engine (``simtool.engine``) reads only the fields defined here: ``seed``, ``device``, ``precision``, ``optim``, ``schedule``, ``loop``,
``checkpoint`` and ``engine`` (and ``data.path`` through :class:`BaseDataSpec`).
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import Field, model_validator

from simtool.specs.base import RUN_ONLY, Seed, Spec

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
    def _one_lr(self) -> ParamGroupSpec:
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
    batch_size_per_device: Optional[int] = Field(None, ge=1, description="filled in by the engine: batch_size / number of processes",
                                                 json_schema_extra=RUN_ONLY)
    log_every: int = Field(10, ge=1, description="steps between metrics.jsonl records", json_schema_extra=RUN_ONLY)
    eval_every: int = Field(1, ge=0, description="epochs between validation passes (0 = never)", json_schema_extra=RUN_ONLY)


class CheckpointSpec(Spec):
    every: int = Field(0, ge=0, description="steps between resumable checkpoints (0 = at epoch ends only)", json_schema_extra=RUN_ONLY)
    best: Optional[str] = Field(None, description="a validation figure the method reports (e.g. val/fstrt): keep checkpoints/best.safetensors, "
                                "the weights of the validation pass where it was best; save-embeddings and evaluate then use them")
    best_mode: Literal["max", "min"] = Field("max", description="whether a larger (max) or smaller (min) value of checkpoint.best is better")


class BaseDataSpec(Spec):
    """Every method's ``data`` section has at least ``path``."""

    path: Optional[str] = Field(None, description="dataset directory; none = the built-in toy world", json_schema_extra=RUN_ONLY)


class ImageLoadingSpec(Spec):
    """How a method's images are loaded (never what is learned): the decoded-image cache and the
    DataLoader workers. Part of every image method's ``data`` section."""

    cache: Literal["auto", "memory", "none"] = Field("auto", description="auto: decode once into memory "
                                                                         "when the frames are stored at the training size and fit in 4 GiB",
                                                     json_schema_extra=RUN_ONLY)
    num_workers: Union[int, Literal["auto"]] = Field("auto", description="DataLoader worker processes "
                                                                         "(auto: half the CPU threads, at most 8; 0 with a memory cache)",
                                                     json_schema_extra=RUN_ONLY)


class EngineSpec(Spec):
    """How the engine runs the steps on its device, never what is learned (every key is run-only).

    ``auto`` means on for a CUDA device and off elsewhere, so CPU runs are unchanged by this section.
    """

    channels_last: Union[bool, Literal["auto"]] = Field("auto", description="the model's 4-D weights in channels-last memory format "
                                                                            "(faster convolutions on tensor cores; auto: on CUDA)", json_schema_extra=RUN_ONLY)
    compile: bool = Field(False, description="torch.compile the training model (the first steps compile it, which takes minutes)", json_schema_extra=RUN_ONLY)
    tf32: Union[bool, Literal["auto"]] = Field("auto", description="TF32 tensor cores for float32 matrix products and convolutions on CUDA "
                                                                   "(auto: on; no effect elsewhere)", json_schema_extra=RUN_ONLY)
    pin_memory: Union[bool, Literal["auto"]] = Field("auto", description="page-locked host batches, so host-to-device copies overlap "
                                                                         "(auto: on CUDA)", json_schema_extra=RUN_ONLY)
    persistent_workers: Union[bool, Literal["auto"]] = Field("auto", description="keep the DataLoader workers from one epoch to the next "
                                                                                 "(auto: on CUDA)", json_schema_extra=RUN_ONLY)
    prefetch: Union[Annotated[int, Field(ge=1)], Literal["auto"]] = Field("auto", description="batches each DataLoader worker prepares ahead (auto: 4 on CUDA, "
                                                                      "torch's 2 elsewhere)", json_schema_extra=RUN_ONLY)
    decode: Literal["workers", "device"] = Field("workers", description="where frames that are cropped at every step are decoded: workers "
                                                 "(Pillow in DataLoader workers, JPEGs at reduced size) or device (JPEGs batched on the training "
                                                 "device with torchvision's decode_jpeg, nvJPEG on CUDA, crops taken there; other formats "
                                                 "stay on the CPU)", json_schema_extra=RUN_ONLY)


class CommonSpec(Spec):
    method: str
    preset: Optional[str] = None
    profile: Optional[str] = Field(None, json_schema_extra=RUN_ONLY)
    seed: Seed = Field(0, json_schema_extra=RUN_ONLY)
    device: Device = Field("auto", json_schema_extra=RUN_ONLY)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    data: BaseDataSpec = BaseDataSpec()
    optim: OptimSpec = OptimSpec()
    schedule: ScheduleSpec = ScheduleSpec()
    loop: LoopSpec = LoopSpec()
    checkpoint: CheckpointSpec = CheckpointSpec()
    engine: EngineSpec = EngineSpec()


