"""The contract between the engine and a method (a research line)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from simtool.engine.distributed import DistInfo


@dataclass
class StepInfo:
    epoch: int
    step: int  # step within the epoch
    global_step: int
    device: torch.device
    dist: DistInfo


class Method(ABC):
    """What a research line plugs into the engine.

    A method owns its data and its model (built with :func:`simtool.models.create_model`, so the
    engine can write the model card) and computes a loss for a batch. The engine owns everything
    else: device and precision, seeding, distributed data parallelism, optimizer and schedule,
    progress, ``metrics.jsonl``, checkpoints, Ctrl-C and resume. Constructor:
    ``Method(spec, device=, dist=, console=)``; it must raise :class:`~simtool.errors.UserError` for
    bad data before anything is written.
    """

    model: torch.nn.Module

    @abstractmethod
    def steps_per_epoch(self) -> int: ...

    @abstractmethod
    def batches(self, epoch: int, start_step: int) -> Iterator[Any]:
        """Host-side batches for steps ``start_step..steps_per_epoch-1`` of ``epoch`` (this rank's share)."""

    @abstractmethod
    def training_step(self, model: torch.nn.Module, batch: Any, info: StepInfo) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss (scalar) and floats to log. ``model`` may be DDP-wrapped: call it, don't reach inside."""

    def evaluate(self, model: torch.nn.Module, epoch: int, device: torch.device) -> dict[str, float]:
        """Validation figures after an epoch (logged as ``"type": "eval"``)."""
        return {}

    #: what :attr:`images_per_step` counts, for the progress bar ("img", "triplets", ...)
    throughput_unit = "img"

    @property
    def images_per_step(self) -> int:
        return 0

    def card(self) -> dict:
        """What the model card needs beyond the model's own name and arguments: ``input`` (how to
        prepare images for :meth:`embed`), ``dataset`` (its reference) and anything the method's
        evaluations need (e.g. the rooms it trained with)."""
        return {}
