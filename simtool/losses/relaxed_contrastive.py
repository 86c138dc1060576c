"""Relaxed contrastive loss: teacher-weighted pull and push of every pair (``relaxed_contrastive``, Dondera 2024).

Reference: S. Kim, D. Kim, M. Cho, S. Kwak, "Embedding Transfer with Label Relaxation for Improved
Metric Learning", CVPR 2021 (the relaxed contrastive loss); R. Dondera, "Towards Learning Image
Similarity from General Triplet Labels", CVPR 2024 workshops (``*_se_rc``).

Convention ``relational`` (:class:`~simtool.losses.relational.RelationalLoss`): ``student (B, E)``,
``teacher (B, R, D_t)``. With teacher pair weights ``w_ij = exp(-Dbar_ij^2 / tau)`` and student
distances normalised by their row mean::

    mu_i  = sum_{j != i} D_ij / (B - 1)             (keep_degenerate: sum_j D_ij / B, the original)
    Dh_ij = D_ij / mu_i
    L = sum_{i != j} [ w_ij Dh_ij^2 + (1 - w_ij) relu(m - Dh_ij)^2 ] / (B (B - 1))

Defaults ``margin = 1.0``, ``tau = 1.0``. ``O(B^2)``: no chunking needed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from simtool.losses._checks import positive
from simtool.losses._geometry import EPS, RelationalGeometry, pair_mask
from simtool.losses._registry import register_loss
from simtool.losses.relational import RelationalLoss

__all__ = ["RelaxedContrastiveLoss"]


@register_loss("relaxed_contrastive")
class RelaxedContrastiveLoss(RelationalLoss):
    """Pull teacher-similar pairs together, push teacher-dissimilar pairs beyond ``margin`` (row-normalised).

    Args:
        margin: ``m > 0`` on normalised distances (1).
        tau: temperature ``> 0`` of the teacher weights (1).
        keep_degenerate: normalise rows by the mean over all ``B`` columns, self included (the original).
    """

    name = "relaxed_contrastive"
    min_batch = 2

    def __init__(self, margin: float = 1.0, tau: float = 1.0, keep_degenerate: bool = False):
        super().__init__(keep_degenerate)
        self.margin = positive("margin", margin, "relaxed_contrastive")
        self.tau = positive("tau", tau, "relaxed_contrastive")

    def compute(self, g: RelationalGeometry, generator: torch.Generator | None) -> Tensor:
        b, d = g.batch, g.d
        w = torch.exp(-(g.dbar * g.dbar) / self.tau)
        mu = d.sum(1, keepdim=True) / (b if self.keep_degenerate else b - 1)
        dh = d / mu.clamp_min(EPS)
        terms = w * dh * dh + (1.0 - w) * (self.margin - dh).relu() ** 2
        return terms[pair_mask(b, d.device)].sum() / (b * (b - 1))

    def extra_repr(self) -> str:
        return f"margin={self.margin}, tau={self.tau}, keep_degenerate={self.keep_degenerate}"
