"""Relaxed multi-similarity loss (``relaxed_multisimilarity``, Dondera 2024).

Reference: X. Wang, X. Han, W. Huang, D. Dong, M. R. Scott, "Multi-Similarity Loss with General
Pair Weighting for Deep Metric Learning", CVPR 2019; R. Dondera, "Towards Learning Image Similarity
from General Triplet Labels", CVPR 2024 workshops (``*_se_rms``, where ``lam`` is the config's
``margin``).

Convention ``relational`` (:class:`~simtool.losses.relational.RelationalLoss`): ``student (B, E)``,
``teacher (B, R, D_t)``. With teacher pair weights ``w_ij = exp(-Dbar_ij^2 / tau)`` (``w_ii = 0``)
and student similarities ``S_ij = e_i . e_j``, per anchor ``a``::

    L_a = (1/alpha) log(1 + sum_{p != a} w_ap e^{alpha (lam - S_ap)})
        + (1/beta)  log(1 + sum_{n != a} (1 - w_an) e^{beta (S_an - lam)})
    L = mean_a L_a

``keep_degenerate=True`` lets ``n = a`` into the negative sum with weight 1 (a constant term, the
original's behaviour). Defaults ``lam = 1``, ``tau = 1``, ``alpha = 1``, ``beta = 2``. ``O(B^2)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from simtool.losses._checks import finite, positive
from simtool.losses._geometry import RelationalGeometry
from simtool.losses._registry import register_loss
from simtool.losses.relational import RelationalLoss, pair_weights

__all__ = ["RelaxedMultiSimilarityLoss"]


@register_loss("relaxed_multisimilarity")
class RelaxedMultiSimilarityLoss(RelationalLoss):
    """Multi-similarity loss with teacher-weighted positives (``w``) and negatives (``1 - w``).

    Args:
        lam: similarity threshold ``lambda`` (1).
        tau: temperature ``> 0`` of the teacher weights (1).
        alpha: sharpness ``> 0`` of the positive term (1).
        beta: sharpness ``> 0`` of the negative term (2).
        keep_degenerate: count the anchor itself as a negative of weight 1 (the original's choice).
    """

    name = "relaxed_multisimilarity"

    def __init__(self, lam: float = 1.0, tau: float = 1.0, alpha: float = 1.0, beta: float = 2.0, keep_degenerate: bool = False):
        super().__init__(keep_degenerate)
        self.lam = finite("lam", lam, "relaxed_multisimilarity")
        self.tau = positive("tau", tau, "relaxed_multisimilarity")
        self.alpha = positive("alpha", alpha, "relaxed_multisimilarity")
        self.beta = positive("beta", beta, "relaxed_multisimilarity")

    def compute(self, g: RelationalGeometry, generator: torch.Generator | None) -> Tensor:
        w, _ = pair_weights(g.dbar, self.tau, squared=True)
        wneg = 1.0 - w  # diagonal 1: the self pair
        if not self.keep_degenerate:
            wneg = wneg.masked_fill(torch.eye(w.shape[0], dtype=torch.bool, device=w.device), 0.0)
        s = g.student @ g.student.t()
        pos = torch.log1p((w * torch.exp(self.alpha * (self.lam - s))).sum(1)) / self.alpha
        neg = torch.log1p((wneg * torch.exp(self.beta * (s - self.lam))).sum(1)) / self.beta
        return (pos + neg).mean()

    def extra_repr(self) -> str:
        return f"lam={self.lam}, tau={self.tau}, alpha={self.alpha}, beta={self.beta}, keep_degenerate={self.keep_degenerate}"
