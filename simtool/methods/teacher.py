"""Psychological-embedding teachers fitted to triplet labels alone (the ``*_p_*`` configs).

Reference: R. Dondera, "Towards Learning Image Similarity from General Triplet Labels", CVPR 2024
workshops: one learned vector per item (no pixels), trained on the triplets of a ``triplets``
dataset with the ``ste`` (softmax choice) or ``triplet`` (margin) loss; several independent teachers
are later exported together and distilled into an image student.

``repeats: R`` trains R teachers in one run directory as one vectorised model
(:class:`~simtool.models.psycho.PsychoModel`, an ``(R, N, D)`` table): repetition ``r`` has its own
initialisation (seed ``(seed, r)``) and, unless ``shared_order``, its own shuffle of the training
triplets every epoch, so the R teachers are what R separate runs with different seeds would be.
A step takes ``loop.batch_size`` **triplets** per repetition (the paper's batch 9,999 = 3,333
triplets), as whole index tensors (no per-item dataset calls): every item is embedded once
(``model()``, or only the items the step touches when that is fewer) and the labelled loss gathers
the triplets. The remainder of each epoch's shuffle is dropped, as the original's sampler did.

Data (:func:`~simtool.methods._triplets.select_triplets`): the paper's presets train on the part
``[train, val]`` of an item or class split (every triplet among 80 % of the items, those that mix
train and val items included) and validate on 20 % of those triplets, held out once; the test items
are never seen, so a teacher cannot score them (``evaluate`` says so). Validation after every epoch
(``loop.eval_every``): ``val/accuracy`` (mean over the R teachers), ``val/accuracy_r<i>`` and
``val/ensemble_accuracy`` (the R teachers' mean similarity). ``select: each`` (the original's,
which selects per run) keeps, per repetition, the table of its own best validation pass in the model
(:meth:`~simtool.models.psycho.PsychoModel.keep_if_better`; ``val/best_accuracy``), so the exported
teachers are each at their best epoch; ``select: together`` with ``checkpoint.best: val/accuracy``
keeps the weights of one best epoch for all R. The triplet route trains in fp32 (``precision``).
``model.l1`` adds ``l1 * sum |w|`` to the loss with its gradient (the original's penalty had none).
"""

from __future__ import annotations

from typing import Iterator, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from simtool.engine.method import StepInfo
from simtool.errors import UserError
from simtool.methods._common import DatasetMethod, StepPlan
from simtool.methods._registry import register_method
from simtool.methods._triplets import LabelledLossSpec, TripletSplitSpec, labelled_loss, select_triplets, single_kind, triplet_scores
from simtool.models import create_model
from simtool.rng import Streams, torch_generator
from simtool.specs.base import Spec
from simtool.specs.common import BaseDataSpec, CommonSpec


class TeacherDataSpec(BaseDataSpec, TripletSplitSpec):
    """A ``triplets`` dataset and which of its triplets train and validate."""


class PsychoSpec(Spec):
    dim: int = Field(128, ge=1, description="embedding dimension E")
    l1: float = Field(1e-6, ge=0, description="weight of the L1 penalty l1 * sum |w| (with gradient)")
    init_mean: float = 0.5
    init_std: float = Field(0.2, ge=0)


class TeacherSpec(CommonSpec):
    """Train spec of psychological-embedding teachers (Dondera, CVPR 2024 workshops)."""

    method: Literal["teacher"] = "teacher"
    repeats: int = Field(1, ge=1, le=1000, description="teachers trained side by side in this run (different seeds)")
    shared_order: bool = Field(False, description="every repetition sees the same batches (default: each its own shuffle)")
    select: Literal["each", "together"] = Field(
        "each", description="each: every repetition keeps the weights of its own best validation pass (the original's, per run); "
                            "together: checkpoint.best picks one epoch for all R")
    precision: Literal["auto", "fp32", "bf16"] = Field("fp32", description="the triplet route trains in fp32 as the original (bf16: autocast on CUDA)")
    data: TeacherDataSpec = TeacherDataSpec()
    model: PsychoSpec = PsychoSpec()
    loss: LabelledLossSpec = LabelledLossSpec(name="ste", options={"tau": 0.5})

    @model_validator(mode="after")
    def _one_selection(self) -> TeacherSpec:
        if self.select == "each" and self.checkpoint.best:
            raise UserError("select: each keeps every repetition's best validation pass in the model itself, so checkpoint.best does not apply; "
                            "unset it, or set select=together to pick one epoch for all repetitions with checkpoint.best.")
        return self


@register_method("teacher", TeacherSpec, default_dataset="triplets")  # without --data: the default toy world's triplets
class Teacher(DatasetMethod):
    """See the module docstring."""

    needs = "a triplets dataset"

    def setup(self) -> None:
        spec, dist, console, ds = self.spec, self.dist, self.console, self.ds
        sets = self.sets = select_triplets(ds, spec.data, spec.seed)
        self.n_items = len(ds)
        self.kind = single_kind(np.concatenate([sets.train_kind, sets.val_kind]))
        self.n_train = len(sets.train)
        self.plan = StepPlan.of(spec, dist, self.n_train, unit="triplets")
        self.per_step, self._steps = self.plan.per_device, self.plan.steps
        self.train_trip = torch.from_numpy(np.ascontiguousarray(sets.train, dtype=np.int64))
        self.train_kind = torch.from_numpy(sets.train_kind.astype(np.int64))
        self.model = create_model("psycho", n_items=self.n_items, dim=spec.model.dim, repeats=spec.repeats, seed=spec.seed,
                                  l1=spec.model.l1, init_mean=spec.model.init_mean, init_std=spec.model.init_std,
                                  **({"keep_best": True} if spec.select == "each" and len(sets.val) else {}))
        self.loss_fn = spec.loss.build("labelled")
        self._epoch_cache: tuple[int, torch.Tensor, torch.Tensor] | None = None
        if console is not None and dist.is_main:
            console.print(f"teacher: {self.n_items} items, {self.n_train} training triplets ({self.kind or 'mixed kinds'}), "
                          f"validation: {len(sets.val)} triplets ({sets.val_source}); {spec.repeats} repetition(s), {self._steps} steps per epoch.",
                          soft_wrap=True, highlight=False)

    # -- data ---------------------------------------------------------------------------------
    def steps_per_epoch(self) -> int:
        return self._steps

    throughput_unit = "triplets"

    @property
    def images_per_step(self) -> int:
        return self.per_step

    def _epoch(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This epoch's shuffled triplets ``(R or 1, T, 3)`` and kind codes ``(R or 1, T)``, from
        generators keyed by (seed, epoch, repetition): a resumed run draws the same order."""
        if self._epoch_cache is not None and self._epoch_cache[0] == epoch:
            return self._epoch_cache[1], self._epoch_cache[2]
        reps = 1 if self.spec.shared_order else self.spec.repeats
        perms = torch.stack([torch.randperm(self.n_train, generator=torch_generator(self.spec.seed, epoch, r, Streams.TEACHER_ORDER)) for r in range(reps)])
        trip, kind = self.train_trip[perms], self.train_kind[perms]
        self._epoch_cache = (epoch, trip, kind)
        return trip, kind

    def batches(self, epoch: int, start_step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        trip, kind = self._epoch(epoch)
        width = self.per_step * self.dist.world_size
        off = self.dist.rank * self.per_step
        for step in range(start_step, self._steps):
            s = step * width + off
            yield trip[:, s : s + self.per_step], kind[:, s : s + self.per_step]

    # -- training -----------------------------------------------------------------------------
    def training_step(self, model, batch, info: StepInfo):
        trip, kind = batch
        trip = trip.to(info.device, non_blocking=True)
        if trip.shape[0] == 1:
            trip, kind = trip[0], kind[0]
        if 3 * trip[..., 0].numel() >= self.n_items:
            emb = model()  # (N, R, D): every item once, the loss gathers the triplets
        else:
            items, inverse = torch.unique(trip, return_inverse=True)
            emb, trip = model(items), inverse
        loss = labelled_loss(self.loss_fn, emb, trip, kind.to(info.device), self.kind)
        reg = self.model.regularization()
        logs = {"loss/triplets": float(loss.detach()) / self.spec.repeats}
        if self.spec.model.l1:
            logs["loss/l1"] = float(reg.detach())
        return loss + reg, logs

    @torch.no_grad()
    def evaluate(self, model, epoch: int, device: torch.device) -> dict[str, float]:
        if not len(self.sets.val):
            return {}
        model.eval()
        figures = triplet_scores(model().float().cpu(), self.sets.val, self.sets.val_kind)
        if getattr(model, "keep_best", False):  # every repetition keeps its own best pass (select: each)
            r = self.spec.repeats
            per = [figures[f"val/accuracy_r{i}"] for i in range(r)] if r > 1 else [figures["val/accuracy"]]
            model.keep_if_better(torch.tensor(per, dtype=torch.float64))
            figures["val/best_accuracy"] = float(model.best_value.mean())
        return figures

    def card(self) -> dict:
        context = {"repeats": self.spec.repeats, "seed": self.spec.seed, "select": self.spec.select}
        if self.sets.trained_items is not None:  # the items the teachers learned (an item or class split)
            context["trained_items"] = self.sets.trained_items
        return {"input": {"kind": "items", "n_items": self.n_items}, "dataset": self.ds.ref(), "context": context}
