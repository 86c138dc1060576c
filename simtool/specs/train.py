"""Spec for ``simtool train`` (the self-supervised time/context route of Aubret et al., ICDL 2024)."""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from simtool.specs.base import Spec

Module = Literal["classic", "labels", "linear_eval"]


class DataSpec(Spec):
    path: Optional[str] = Field(None, description="dataset directory; none = the built-in toy world")
    rooms: str = Field("semantic", description="'semantic', 'random', or a room-assignment JSON file")
    image_size: int = Field(224, ge=16, le=1024)
    subsample: float = Field(0.3, gt=0, le=1, description="fraction of training objects, category-balanced")
    cache: Literal["auto", "memory", "none"] = "auto"
    num_workers: Union[int, Literal["auto"]] = "auto"


class StreamSpec(Spec):
    crop_number: float = Field(7.0, ge=0, description="clip length is 1 + Poisson(crop_number)")
    p_change_room: float = Field(0.1, ge=0, le=1)
    chunk_ratio_limit: float = Field(0.8, gt=0, le=1, description="stop the stream after this fraction of clips")
    rotation_range: int = Field(2, ge=0, description="positive = stream position i+s, |s| <= rotation_range")


class AugmentSpec(Spec):
    """Classic (SimCLR) augmentations; probabilities in [0, 1]."""

    min_crop: float = Field(0.5, gt=0, le=1, description="RandomResizedCrop scale lower bound")
    flip: float = Field(0.5, ge=0, le=1)
    jitter: float = Field(0.8, ge=0, le=1)
    brightness: float = Field(0.4, ge=0)
    contrast: float = Field(0.4, ge=0)
    saturation: float = Field(0.4, ge=0)
    hue: float = Field(0.1, ge=0, le=0.5)
    grayscale: float = Field(0.2, ge=0, le=1)
    blur: float = Field(0.0, ge=0, le=1)


class ContrastSpec(Spec):
    mode: Literal["time", "classic", "combined"] = "time"
    temperature: float = Field(0.1, gt=0)
    time_min_crop: float = Field(0.5, gt=0, le=1, description="RandomResizedCrop scale lower bound in time mode")
    augment: AugmentSpec = AugmentSpec()


class LabelsSpec(Spec):
    temperature: float = Field(0.1, gt=0)


class ModelSpec(Spec):
    backbone: str = "resnet50"
    pretrained: Union[bool, str] = False
    head_hidden: int = Field(1024, ge=1)
    head_out: int = Field(512, ge=1)
    per_half: bool = Field(True, description="anchors and positives through BatchNorm separately")


class OptimSpec(Spec):
    name: Literal["adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-6, ge=0)
    scheduler: Literal["constant", "cosine"] = "constant"
    warmup_epochs: float = Field(0.0, ge=0)


class LoopSpec(Spec):
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(64, ge=2, description="anchors per device per step")
    log_every: int = Field(10, ge=1, description="steps between metrics.jsonl records")
    checkpoint_every: int = Field(0, ge=0, description="steps between checkpoints (0 = at epoch ends only)")
    eval_every: int = Field(1, ge=0, description="epochs between validation passes (0 = never)")


class TrainSpec(Spec):
    method: Literal["time_ssl"] = "time_ssl"
    preset: Optional[str] = None
    profile: Optional[str] = None
    seed: int = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    modules: list[Module] = ["classic", "labels", "linear_eval"]
    data: DataSpec = DataSpec()
    stream: StreamSpec = StreamSpec()
    contrast: ContrastSpec = ContrastSpec()
    labels: LabelsSpec = LabelsSpec()
    model: ModelSpec = ModelSpec()
    optim: OptimSpec = OptimSpec()
    loop: LoopSpec = LoopSpec()

    @field_validator("modules")
    @classmethod
    def _modules(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one of 'classic', 'labels', 'linear_eval' is needed")
        if len(set(v)) != len(v):
            raise ValueError("modules are listed more than once")
        return v

    @model_validator(mode="after")
    def _trainable(self) -> "TrainSpec":
        if not ({"classic", "labels"} & set(self.modules)):
            raise ValueError("modules need 'classic' or 'labels': linear probes alone train no representation")
        return self
