"""Batch miners: pick (anchor, positive, negative) index triples of a batch for a relational loss.

A miner is a separate object (pytorch-metric-learning style), built by name with
:func:`create_miner` and selected by the losses that use one (``rkd``'s angle term and ``stmr``)
with ``miner: relaxed_sampling_matters`` (options in ``miner_options``). Call::

    a, p, n = miner(student_dist, teacher_dist, dim, generator=None)

``student_dist``, ``teacher_dist``: ``(B, B)`` distance matrices (the student's, detached inside, and
the mean teacher's); ``dim``: the student's embedding dimension; ``generator``: a CPU
``torch.Generator`` (the miner's own, seeded by ``seed``, when omitted). Returns three ``(M,)``
int64 tensors on the student's device, ``M <= B * per_anchor``. Sampling runs on the CPU in float64
(the matrices are only ``B x B``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from simtool.errors import UserError
from simtool.losses._checks import positive
from simtool.losses._registry import register_miner

__all__ = ["RelaxedSamplingMattersMiner", "log_sphere_density"]


def log_sphere_density(d: Tensor, dim: int) -> Tensor:
    """``log q(d)`` up to a constant: the density of the distance between two uniform points on the
    unit sphere in ``R^dim``, ``q(d) = d^(dim-2) (1 - d^2/4)^((dim-3)/2)`` (Wu et al., ICCV 2017)."""
    return (dim - 2) * torch.log(d) + 0.5 * (dim - 3) * torch.log1p(-(d * d) / 4.0)


@register_miner("relaxed_sampling_matters")
class RelaxedSamplingMattersMiner:
    """Relaxed distance-weighted sampling (Dondera, 2024, after Wu et al., "Sampling Matters in Deep
    Embedding Learning", ICCV 2017), re-centred on the teacher's distances.

    For each anchor ``i`` (one or ``per_anchor`` triples each):

    * pair weights ``w_ij = exp(-Dbar_ij^2 / tau)`` for ``j != i`` (``w_ii = 0``); anchors whose
      largest weight is below ``min_positive_weight`` have no teacher-positive and are skipped;
    * positive ``j ~ w_ij / sum_j w_ij``;
    * negative ``k ~ q(t_ik) / q(d_ik)`` where ``q`` is :func:`log_sphere_density` in the student's
      dimension, ``d_ik`` the student distance clamped to ``[lower_cutoff, 2 - 1e-6]`` and ``t_ik``
      the teacher distance clamped to ``[lower_cutoff, upper_cutoff]``. With
      ``exclude_degenerate`` (default) ``k`` is never ``i`` or ``j``; anchors with no such ``k``
      (``B < 3``) are skipped.

    Differences from the original miner: it uses the *mean* teacher distance (the original used
    teacher run 0 only); negatives never coincide with the anchor or the positive (the original's
    could); the "no valid negative" case is handled (the original's test could never fire and its
    fallback referenced an undefined variable); ``tau`` and the cutoffs are options (hard-coded
    there); sampling takes an explicit generator (the original used the global NumPy RNG).

    Args:
        tau: temperature ``> 0`` of the teacher pair weights (0.4).
        lower_cutoff: distances below it are clamped (0.5).
        upper_cutoff: teacher distances above it are clamped (sqrt 2).
        min_positive_weight: anchors whose best pair weight is below it are skipped (0.01).
        exclude_degenerate: never draw ``k = i`` or ``k = j``.
        per_anchor: triples drawn per anchor, with replacement (1, as in the original).
        seed: seed of the miner's own generator, used when none is passed.
    """

    name = "relaxed_sampling_matters"

    def __init__(
        self,
        tau: float = 0.4,
        lower_cutoff: float = 0.5,
        upper_cutoff: float = math.sqrt(2.0),
        min_positive_weight: float = 0.01,
        exclude_degenerate: bool = True,
        per_anchor: int = 1,
        seed: int = 0,
    ):
        what = "relaxed_sampling_matters miner"
        self.tau = positive("tau", tau, what)
        self.lower_cutoff = positive("lower_cutoff", lower_cutoff, what)
        self.upper_cutoff = positive("upper_cutoff", upper_cutoff, what)
        if not self.lower_cutoff < self.upper_cutoff < 2.0:
            raise UserError(f"The {what} needs 0 < lower_cutoff < upper_cutoff < 2, got {lower_cutoff} and {upper_cutoff}.")
        self.min_positive_weight = positive("min_positive_weight", min_positive_weight, what, allow_zero=True)
        self.exclude_degenerate = bool(exclude_degenerate)
        if int(per_anchor) < 1:
            raise UserError(f"The {what} option per_anchor={per_anchor!r} is invalid; use an integer >= 1.")
        self.per_anchor = int(per_anchor)
        self.generator = torch.Generator().manual_seed(int(seed))

    def probabilities(self, student_dist: Tensor, teacher_dist: Tensor, dim: int) -> tuple[Tensor, Tensor, Tensor]:
        """``(valid (B,) bool, positive weights (B, B), negative log-weights (B, B))`` in float64 on the CPU.

        ``P(j | i) = pos[i, j] / sum_j pos[i, j]`` and ``P(k | i, j) ∝ exp(neg[i, k])`` over the
        allowed ``k`` (all, or ``k not in {i, j}`` with ``exclude_degenerate``)."""
        s = student_dist.detach().to("cpu", torch.float64)
        t = teacher_dist.detach().to("cpu", torch.float64)
        b = s.shape[0]
        eye = torch.eye(b, dtype=torch.bool)
        pos = torch.exp(-(t * t) / self.tau).masked_fill(eye, 0.0)
        valid = pos.max(dim=1).values >= self.min_positive_weight if b > 1 else torch.zeros(b, dtype=torch.bool)
        if self.min_positive_weight == 0:
            valid &= pos.sum(dim=1) > 0
        if self.exclude_degenerate and b < 3:
            valid = torch.zeros_like(valid)
        d = s.clamp(self.lower_cutoff, 2.0 - 1e-6)
        tc = t.clamp(self.lower_cutoff, self.upper_cutoff)
        neg = log_sphere_density(tc, dim) - log_sphere_density(d, dim)
        return valid, pos, neg

    def __call__(self, student_dist: Tensor, teacher_dist: Tensor, dim: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        if student_dist.dim() != 2 or student_dist.shape[0] != student_dist.shape[1] or teacher_dist.shape != student_dist.shape:
            raise ValueError(f"the miner needs two (B, B) distance matrices, got {tuple(student_dist.shape)} and {tuple(teacher_dist.shape)}")
        gen = generator if generator is not None else self.generator
        device = student_dist.device
        valid, pos, neg = self.probabilities(student_dist, teacher_dist, int(dim))
        anchors = torch.nonzero(valid).flatten()
        if anchors.numel() == 0:
            empty = torch.zeros(0, dtype=torch.int64, device=device)
            return empty, empty.clone(), empty.clone()
        k = self.per_anchor
        p = torch.multinomial(pos[anchors], k, replacement=True, generator=gen)  # (V, K)
        logits = neg[anchors].unsqueeze(1).expand(-1, k, -1).clone()  # (V, K, B)
        if self.exclude_degenerate:
            logits.scatter_(2, anchors.view(-1, 1, 1).expand(-1, k, 1), float("-inf"))
            logits.scatter_(2, p.unsqueeze(-1), float("-inf"))
        probs = torch.softmax(logits, dim=-1).reshape(-1, logits.shape[-1])
        n = torch.multinomial(probs, 1, generator=gen).view(-1)
        a = anchors.repeat_interleave(k)
        return a.to(device), p.reshape(-1).to(device), n.to(device)

    def __repr__(self) -> str:
        return (
            f"RelaxedSamplingMattersMiner(tau={self.tau}, lower_cutoff={self.lower_cutoff}, upper_cutoff={self.upper_cutoff:.4f}, "
            f"min_positive_weight={self.min_positive_weight}, exclude_degenerate={self.exclude_degenerate}, per_anchor={self.per_anchor})"
        )
