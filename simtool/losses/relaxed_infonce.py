"""Relaxed InfoNCE: teacher-weighted positives and negatives of every anchor (``relaxed_infonce``, Dondera 2024).

Reference: A. van den Oord, Y. Li, O. Vinyals, "Representation Learning with Contrastive
Predictive Coding", 2018 (InfoNCE); R. Dondera, "Towards Learning Image Similarity from General
Triplet Labels", CVPR 2024 workshops (``*_se_ri``).

Convention ``relational`` (:class:`~simtool.losses.relational.RelationalLoss`): ``student (B, E)``,
``teacher (B, R, D_t)``. With teacher pair weights ``w = exp(-Dbar / tau)``, ``wbar = 1 - w`` (both
0 on the diagonal) and student similarities ``z = S / tau`` (``S_ij = e_i . e_j``)::

    l_ap = -log( e^{z_ap} / (e^{z_ap} + sum_n wbar_an e^{z_an}) )
    L = sum_{a != p} w_ap l_ap / sum_{a != p} w_ap

The same ``tau`` scales the teacher weights and the student logits (default 0.5). No term involves a
self pair, so ``keep_degenerate`` changes nothing here (the original's ``-rho I`` shift only moved
the row maximum, which cancels). Computed with a row-max shift; ``O(B^2)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from simtool.losses._checks import positive
from simtool.losses._geometry import RelationalGeometry
from simtool.losses._registry import register_loss
from simtool.losses.relational import RelationalLoss, pair_weights

__all__ = ["RelaxedInfoNCELoss"]


@register_loss("relaxed_infonce")
class RelaxedInfoNCELoss(RelationalLoss):
    """InfoNCE where the teachers say how positive (``w``) and how negative (``1 - w``) each pair is.

    Args:
        tau: temperature ``> 0`` of the teacher weights and of the student logits (0.5).
        keep_degenerate: accepted for a uniform interface; there are no degenerate terms.
    """

    name = "relaxed_infonce"

    def __init__(self, tau: float = 0.5, keep_degenerate: bool = False):
        super().__init__(keep_degenerate)
        self.tau = positive("tau", tau, "relaxed_infonce")

    def compute(self, g: RelationalGeometry, generator: torch.Generator | None) -> Tensor:
        w, wbar = pair_weights(g.dbar, self.tau, squared=False)
        denom = w.sum()
        if float(denom) <= 0:
            return g.zero()
        z = (g.student @ g.student.t()) / self.tau
        z = z - z.max(dim=1, keepdim=True).values.detach()
        ez = torch.exp(z)
        neg = (wbar * ez).sum(1, keepdim=True)  # (B, 1)
        loss = torch.log(ez + neg) - z  # (B, B): l_ap
        return (w * loss).sum() / denom

    def extra_repr(self) -> str:
        return f"tau={self.tau}"
