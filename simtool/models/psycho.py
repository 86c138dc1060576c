"""The psychological-embedding teacher: one learned vector per item, R repetitions in one module.

Reference: R. Dondera, "Towards Learning Image Similarity from General Triplet Labels", CVPR 2024
workshops (the ``Psycho`` teacher, trained on triplet labels alone, no pixels).

Each repetition ``r`` is a table ``w[r]`` of ``n_items x dim`` weights, initialised i.i.d.
``N(init_mean, init_std)`` (0.5, 0.2) from its own seed; an item's embedding is
``normalize(relu(w[r, item]))``, a point of the non-negative orthant of the unit sphere (distances
at most sqrt 2). The R tables are one parameter of shape ``(R, N, D)``, so R teacher runs train in
one vectorised model: the repetitions share nothing but the batches they are shown (a loss summed
over repetitions gives each one exactly its own gradient; Adam's update is per element).

* ``forward(items)``: ``items (B,)`` int64 -> ``(B, R, D)``; ``forward()`` embeds every item
  (``(N, R, D)``), which is cheaper when a batch's triplets touch more than N rows (then index the
  triplets into that, as :mod:`simtool.losses`' labelled losses do).
* ``regularization()``: the L1 penalty ``l1 * sum |w|`` as a tensor *with* gradient (the original's
  had none); add it to the loss. ``no_weight_decay()`` names the table: the paper's teachers
  exclude it from weight decay (a method can give it ``weight_decay: 0`` with an optimizer
  parameter group matching ``weight``).
* Evaluation: an index model "embeds" item indices: ``embed(items (B,), layers=("embedding",))``
  returns ``{"embedding": (B, R, D)}``: the embeddings file's ``(N, R, D)`` with
  ``items = arange(N)``. ``layer_names = ["embedding"]``.

Repetition ``r`` of a model built with ``seed`` is initialised from ``SeedSequence([seed, r])``, so it
is the same whatever R is, and no two (seed, r) pairs share an initialisation.

``keep_best=True``: the model also holds, per repetition, the table of its best validation pass so
far (buffers ``best_weight`` (R, N, D) and ``best_value`` (R,), updated by :meth:`keep_if_better`),
and :meth:`embed` returns those: every teacher keeps its own best epoch (the original selects per
run), in the weights file and across a resume, whatever the others did.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from simtool.errors import UserError
from simtool.models._registry import register_model

__all__ = ["PsychoModel", "repetition_seed"]


def repetition_seed(seed: int, repetition: int) -> int:
    """The torch seed of repetition ``repetition`` of a psycho model built with ``seed``."""
    state = np.random.SeedSequence([int(seed) % (1 << 64), int(repetition)]).generate_state(1, dtype=np.uint64)
    return int(state[0]) & ((1 << 63) - 1)


class _ReluNormalize(torch.autograd.Function):
    """``normalize(relu(w), dim=-1)`` with a fused backward (half the passes of the composite):
    ``dw = [w > 0] * (g - y (y . g)) / max(|relu(w)|, 1e-12)``."""

    @staticmethod
    def forward(ctx, w):
        r = w.clamp_min(0.0)
        n = torch.linalg.vector_norm(r, dim=-1, keepdim=True).clamp_min_(1e-12)
        y = r.div_(n)
        ctx.save_for_backward(y, n)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        y, n = ctx.saved_tensors
        dot = torch.linalg.vecdot(y, g).unsqueeze(-1)
        # [w > 0] = sign(y) as y >= 0 (cheaper than a boolean mask); y (y . g) is 0 where y is
        return torch.addcmul(g * torch.sign(y), y, dot, value=-1.0).div_(n)


class _L1(torch.autograd.Function):
    """``weight * sum |w|`` with gradient ``weight * sign(w)`` (one pass each way)."""

    @staticmethod
    def forward(ctx, w, weight):
        ctx.save_for_backward(w)
        ctx.weight = weight
        return w.abs().sum() * weight

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (w,) = ctx.saved_tensors
        return torch.sign(w).mul_(g * ctx.weight), None


@register_model("psycho", build_only=())
class PsychoModel(nn.Module):
    """Learned item embeddings ``normalize(relu(w[r, item]))`` for R repetitions at once.

    Args:
        n_items: number of items N (rows of each table).
        dim: embedding dimension D (128 in the paper).
        repeats: number of repetitions R trained side by side.
        seed: base seed of the initialisation (see :func:`repetition_seed`).
        l1: weight ``beta >= 0`` of the L1 penalty returned by :meth:`regularization` (paper: 1e-6).
        init_mean, init_std: the normal initialisation (0.5, 0.2).
    """

    layer_names = ["embedding"]

    def __init__(self, n_items: int, dim: int = 128, repeats: int = 1, seed: int = 0, l1: float = 0.0, init_mean: float = 0.5, init_std: float = 0.2,
                 keep_best: bool = False):
        super().__init__()
        if int(n_items) < 1 or int(dim) < 1 or int(repeats) < 1:
            raise UserError(f"The psycho model needs n_items, dim and repeats >= 1, got {n_items}, {dim}, {repeats}.")
        if not float(l1) >= 0 or not float(init_std) >= 0:
            raise UserError(f"The psycho model's l1 and init_std must be >= 0, got {l1} and {init_std}.")
        self.n_items, self.dim, self.repeats = int(n_items), int(dim), int(repeats)
        self.l1 = float(l1)
        weight = torch.empty(self.repeats, self.n_items, self.dim)
        for r in range(self.repeats):
            gen = torch.Generator().manual_seed(repetition_seed(seed, r))
            weight[r].normal_(float(init_mean), float(init_std), generator=gen)
        self.weight = nn.Parameter(weight)
        self.keep_best = bool(keep_best)
        if self.keep_best:
            self.register_buffer("best_weight", weight.clone())
            self.register_buffer("best_value", torch.full((self.repeats,), float("-inf")))

    @torch.no_grad()
    def keep_if_better(self, values: Tensor) -> Tensor:
        """Keep the current table of every repetition whose validation figure ``values[r]`` (larger is
        better) beats its best so far (NaN never does); returns which did, bool ``(R,)``."""
        values = torch.as_tensor(values, dtype=self.best_value.dtype, device=self.best_value.device).reshape(-1)
        if values.shape[0] != self.repeats:
            raise ValueError(f"one figure per repetition: expected {self.repeats}, got {values.shape[0]}")
        better = torch.isfinite(values) & (values > self.best_value)
        self.best_weight[better] = self.weight.detach()[better]
        self.best_value[better] = values[better]
        return better

    def forward(self, items: Tensor | None = None) -> Tensor:
        """``items (B,)`` int64 -> ``(B, R, D)`` unit vectors; ``None`` -> all ``(N, R, D)``.

        The result is a transposed view of an ``(R, B, D)`` tensor (the labelled losses use that
        layout without a copy). An item whose weights are all <= 0 embeds to the zero vector."""
        if items is None:
            w = self.weight
        else:
            items = torch.as_tensor(items, device=self.weight.device)
            if items.dim() != 1:
                raise ValueError(f"items must be (B,), got shape {tuple(items.shape)}")
            w = self.weight.index_select(1, items.long())
        return _ReluNormalize.apply(w).transpose(0, 1)

    def regularization(self) -> Tensor:
        """``l1 * sum |w|`` over every repetition (a scalar with gradient ``l1 * sign(w)``)."""
        if self.l1 == 0:
            return self.weight.sum() * 0.0
        return _L1.apply(self.weight, self.l1)

    def no_weight_decay(self) -> set[str]:
        return {"weight"}

    def embed(self, items: Tensor, layers: tuple[str, ...] = ("embedding",)) -> dict[str, Tensor]:
        """Evaluation embeddings of item indices ``items (B,)``: ``{"embedding": (B, R, D)}``."""
        unknown = [x for x in layers if x not in self.layer_names]
        if unknown:
            raise UserError(f"Layer {unknown[0]!r} is not in the psycho model; its only layer is 'embedding'.")
        if not layers:
            return {}
        if not self.keep_best or not bool(torch.isfinite(self.best_value).any()):
            return {"embedding": self.forward(items)}
        kept = torch.isfinite(self.best_value).view(-1, 1, 1)
        table = torch.where(kept, self.best_weight, self.weight)  # a repetition never validated keeps its live table
        w = table if items is None else table.index_select(1, torch.as_tensor(items, device=table.device).long())
        return {"embedding": _ReluNormalize.apply(w).transpose(0, 1)}

    def extra_repr(self) -> str:
        return f"n_items={self.n_items}, dim={self.dim}, repeats={self.repeats}, l1={self.l1}" + (", keep_best=True" if self.keep_best else "")
