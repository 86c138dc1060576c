"""The prologue every method shares: its dataset, its per-device batch and steps, its rank's share.

* :class:`DatasetMethod`: the constructor the engine calls, ``(spec, device=, dist=, console=)``:
  it keeps them, opens the dataset (:func:`open_training_data`; ``needs`` says what kind, for the
  error) and hands over to the method's :meth:`~DatasetMethod.setup`;
* :func:`open_training_data`: the dataset of ``spec.data.path`` (one sentence when there is none:
  the built-in toy world is filled in by ``train`` only);
* :class:`StepPlan`: the per-device batch of ``loop.batch_size`` (the global batch) and the steps
  per epoch over ``n`` training units, refused in one sentence when not one full global batch fits;
* :func:`rank_share`: this rank's ``(steps, per_device)`` part of an epoch's order, every step's
  global batch being the concatenation of the ranks' batches in rank order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simtool.engine.method import Method
from simtool.errors import UserError
from simtool.formats.dataset_dir import Dataset


def open_training_data(spec, what: str) -> Dataset:
    """The dataset directory of ``spec.data.path``; ``what`` says in the error what kind is expected."""
    if spec.data.path is None:
        raise UserError(f"No dataset: pass --data DIR ({what}).")
    return Dataset(spec.data.path)


class DatasetMethod(Method):
    """A method that trains on the dataset directory of ``spec.data.path`` (see the module docstring)."""

    needs = "a dataset directory"

    def __init__(self, spec, device, dist, console):
        self.spec, self.device, self.dist, self.console = spec, device, dist, console
        self.ds = open_training_data(spec, self.needs)
        self.setup()

    def setup(self) -> None:  # pragma: no cover - every method sets itself up
        """Everything the method builds from ``self.spec`` and ``self.ds`` (its model among them);
        raise :class:`~simtool.errors.UserError` for bad data before anything is written."""
        raise NotImplementedError


@dataclass(frozen=True)
class StepPlan:
    """``per_device`` units per step on each of ``world`` processes, ``steps`` full steps per epoch."""

    per_device: int
    world: int
    steps: int

    @classmethod
    def of(cls, spec, dist, n: int | None = None, unit: str = "images", pool: str | None = None) -> StepPlan:
        """The plan over ``n`` training units (``unit``: what a batch holds, for the error; ``pool``:
        what ``n`` counts, default ``training <unit>``). ``n=None``: the steps are set later."""
        per_device = spec.loop.batch_size_per_device or spec.loop.batch_size
        steps = -1 if n is None else n // (per_device * dist.world_size)
        if n is not None and steps < 1:
            what = f" {unit} per step" if unit != "images" else ""
            raise UserError(f"loop.batch_size={spec.loop.batch_size}{what} is more than the {n} {pool or 'training ' + unit}; lower loop.batch_size.")
        return cls(per_device, dist.world_size, steps)

    @property
    def global_batch(self) -> int:
        return self.per_device * self.world

    @property
    def needed(self) -> int:
        """Units one epoch takes over all processes."""
        return self.steps * self.global_batch


def rank_share(order: np.ndarray, plan: StepPlan, rank: int) -> np.ndarray:
    """This rank's ``(steps, per_device)`` part of ``order`` (at least ``plan.needed`` long; the rest is dropped)."""
    return np.asarray(order)[: plan.needed].reshape(plan.steps, plan.world, plan.per_device)[:, rank]
