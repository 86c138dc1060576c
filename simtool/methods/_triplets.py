"""Pieces shared by the triplet-label methods (``teacher``, ``direct``, ``distill``).

Reference: R. Dondera, "Towards Learning Image Similarity from General Triplet Labels", CVPR 2024
workshops. Not a method itself.

* :class:`LossSpec`: a loss by registered name with its options (``{name: ste, options: {tau: 0.5}}``),
  checked against :func:`simtool.losses.create_loss` and, in :class:`LabelledLossSpec` and
  :class:`RelationalLossSpec`, the calling convention the method needs.
* :func:`select_triplets`: the training and validation triplets of a ``triplets`` dataset. Training
  = the part ``train_splits``: with an item or class split (the paper's staged layout) every triplet
  whose three items lie in those item splits, so ``[train, val]`` is the teachers' and the direct
  route's part (the triplets that mix train and val items included) and ``[train]`` the students';
  with a triplet split, the triplets of those splits. Validation = the part ``val_split`` when it is
  not a training split and holds triplets, else a seeded ``val_fraction`` of the training triplets
  held out once (the paper: 0.2 of the train+val part). No triplet touching a test item ever trains
  or validates.
* :func:`labelled_loss`: a labelled loss over triplets whose kind may differ from row to row (the toy
  world's triplets mix odd-one-out and directed judgements): one call per kind present.
* :func:`triplet_scores`: accuracy of every repetition and of the ensemble, per kind and overall.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import numpy as np
import torch
from pydantic import Field, model_validator

from simtool.errors import UserError
from simtool.formats.dataset_dir import TripletsDataset
from simtool.formats.triplets import KIND_CODE, TRIPLET_KINDS, kind_codes
from simtool.rng import Streams, numpy_rng
from simtool.specs.base import Spec

KINDS = TRIPLET_KINDS


class LossSpec(Spec):
    """A registered loss and its options (see ``simtool/losses``); a subclass that names a
    ``convention`` accepts only the losses of that convention (checked when the spec validates)."""

    convention: ClassVar[str | None] = None
    name: str = "ste"
    options: dict[str, Any] = Field(default_factory=dict, description="keyword options of the loss, e.g. {tau: 0.5}")

    @model_validator(mode="after")
    def _fits(self) -> LossSpec:
        if self.convention is not None:
            self.build(self.convention)
        return self

    def build(self, convention: str | None = None):
        from simtool.losses import LOSSES, create_loss

        loss = create_loss(self.name, **self.options)
        if convention is not None and loss.convention != convention:
            fits = sorted(n for n, c in LOSSES.items() if c.convention == convention)
            raise UserError(f"Loss {self.name!r} is a {loss.convention} loss, but this method needs a {convention} loss; choose one of: {', '.join(fits)}.")
        return loss


class LabelledLossSpec(LossSpec):
    """A ``labelled`` loss (embeddings and labelled triplets) and its options."""

    convention: ClassVar[str | None] = "labelled"


class RelationalLossSpec(LossSpec):
    """A ``relational`` loss (student and teacher embeddings) and its options."""

    convention: ClassVar[str | None] = "relational"


class TripletSplitSpec(Spec):
    """Which triplets train and which validate (a ``triplets`` dataset)."""

    train_splits: list[str] = Field(["train"], min_length=1, description="triplet splits that train")
    val_split: str = Field("val", description="triplet split that validates, when the dataset has triplets in it")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="without val_split triplets: this fraction of the training triplets "
                                                             "is held out once (seeded) to validate; 0 = no validation")

    @model_validator(mode="after")
    def _splits(self) -> TripletSplitSpec:
        bad = [s for s in [*self.train_splits, self.val_split] if s not in ("train", "val", "test")]
        if bad:
            raise ValueError(f"triplet splits are train, val and test, not {bad[0]!r}")
        if "test" in self.train_splits or self.val_split == "test":
            raise ValueError("the test triplets never train or validate; use train and val")
        return self


@dataclass
class TripletSets:
    train: np.ndarray  # (T, 3) int64 item numbers
    train_kind: np.ndarray  # (T,) uint8 codes (KIND_CODE)
    val: np.ndarray  # (V, 3)
    val_kind: np.ndarray  # (V,)
    val_source: str  # "split val" | "10% of the training triplets" | "none"
    trained_items: list[str] | None = None  # the item splits whose items train (item or class split), None: every item


def select_triplets(ds, splits: TripletSplitSpec, seed: int) -> TripletSets:
    """Training and validation triplets of the triplets dataset ``ds`` (see the module docstring)."""
    if not isinstance(ds, TripletsDataset):
        raise UserError(f"{ds.root} is a {ds.kind} dataset; this method trains on triplet labels: "
                        "build one with simtool build-data --format triplets (or --format toyworld, whose triplets are in DIR/triplets).")
    train_rows = ds.triplets_among(splits.train_splits)
    val_rows = np.zeros(0, dtype=np.int64)
    source = "none"
    if splits.val_split not in splits.train_splits:
        val_rows = ds.triplets_among([splits.val_split])
        if len(val_rows):
            source = f"split {splits.val_split}"
    if not len(val_rows) and splits.val_fraction > 0 and len(train_rows) > 1:
        rng = numpy_rng(seed, Streams.VAL_TRIPLETS)
        n_val = max(1, int(round(splits.val_fraction * len(train_rows))))
        perm = rng.permutation(len(train_rows))
        val_rows = np.sort(train_rows[perm[:n_val]])
        train_rows = np.sort(train_rows[perm[n_val:]])
        source = f"{splits.val_fraction:g} of the training triplets"
    if not len(train_rows):
        have = ", ".join(f"{s} {int((ds.triplet_split == s).sum())}" for s in ("train", "val", "test"))
        raise UserError(f"The dataset {ds.root} has no triplets in {', '.join(splits.train_splits)} (it has: {have}); set data.train_splits.")
    kinds = kind_codes(ds.triplet_kind)
    trained = list(dict.fromkeys(splits.train_splits)) if ds.items_split else None
    return TripletSets(ds.triplets[train_rows], kinds[train_rows], ds.triplets[val_rows], kinds[val_rows], source, trained)


def labelled_loss(loss_fn, emb: torch.Tensor, trip: torch.Tensor, kind: torch.Tensor | None, single: str | None) -> torch.Tensor:
    """Mean labelled loss over the triplets (summed over repetitions for ``(B, R, D)`` embeddings).

    ``single``: the one kind of every triplet (the common case, one call); else ``kind`` holds each
    triplet's code (shape of ``trip`` without its last axis) and each kind present gets its own call,
    the per-triplet losses then averaged together."""
    if single is not None:
        return loss_fn(emb, trip, single)
    total = None
    for name, code in KIND_CODE.items():
        mask = kind == code
        if not bool(mask.any()):
            continue
        per = loss_fn.per_triplet(emb, trip, name)  # (T,) or (R, T)
        part = (per * mask.to(per.dtype)).sum(-1)
        total = part if total is None else total + part
    per_rep = total / trip.shape[-2]
    return per_rep.sum() if per_rep.dim() else per_rep


def single_kind(codes: np.ndarray) -> str | None:
    """The kind name when every code is the same (or there are none), else None."""
    u = np.unique(codes)
    if len(u) > 1:
        return None
    return KINDS[int(u[0])] if len(u) else "odd-one-out"


@torch.no_grad()
def triplet_scores(emb: torch.Tensor, trip: np.ndarray, kinds: np.ndarray, prefix: str = "val/") -> dict[str, float]:
    """Accuracies on labelled triplets: ``accuracy`` (mean over repetitions), ``accuracy_r<i>`` per
    repetition and ``ensemble_accuracy`` (mean similarity over repetitions) when R > 1, and
    ``accuracy_<kind>`` / ``ensemble_accuracy_<kind>`` when the triplets mix kinds."""
    from simtool.metrics.triplets import correct_from_distances, triplet_distances

    if len(trip) == 0:
        return {}
    runs = emb if emb.dim() == 3 else emb.unsqueeze(1)
    r = runs.shape[1]
    idx = torch.as_tensor(trip, dtype=torch.int64)
    per = torch.zeros((len(trip), r), dtype=torch.bool)
    ens = torch.zeros(len(trip), dtype=torch.bool)
    present = [k for k in KINDS if (kinds == KIND_CODE[k]).any()]
    for k in present:
        sel = torch.from_numpy(np.flatnonzero(kinds == KIND_CODE[k]))
        d = triplet_distances(runs, idx[sel], reduce="none")  # (n, R, 3)
        per[sel] = correct_from_distances(d, k).cpu()
        if r > 1:
            ens[sel] = correct_from_distances(triplet_distances(runs, idx[sel], distance="cosine"), k).cpu()
    out: dict[str, float] = {}

    def put(suffix: str, rows, each: bool):
        acc = per[rows].double().mean(0)
        out[f"{prefix}accuracy{suffix}"] = float(acc.mean())
        if r > 1:
            if each:
                for i in range(r):
                    out[f"{prefix}accuracy{suffix}_r{i}"] = float(acc[i])
            out[f"{prefix}ensemble_accuracy{suffix}"] = float(ens[rows].double().mean())

    put("", slice(None), True)
    if len(present) > 1:
        for k in present:
            put("_" + k.replace("-", "_"), torch.from_numpy(np.flatnonzero(kinds == KIND_CODE[k])), False)
    return out


def optional_int(v: Optional[int]) -> Optional[int]:
    return None if v is None else int(v)
