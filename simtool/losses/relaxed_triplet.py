"""Relaxed triplet margin loss: every batch triple weighted by the teachers (``relaxed_triplet``, Dondera 2024).

Reference: R. Dondera, "Towards Learning Image Similarity from General Triplet Labels", CVPR 2024
workshops (``*_se_rt``), a teacher-weighted version of the triplet margin loss (Schroff et al.,
"FaceNet", CVPR 2015).

Convention ``relational`` (:class:`~simtool.losses.relational.RelationalLoss`): ``student (B, E)``,
``teacher (B, R, D_t)``. With student margins ``T[a, p, n] = D_an - D_ap`` and mean-teacher margins
``Tbar``::

    W[a, p, n] = sigmoid((Tbar - m2) / tau)                       weights="triplets" (default)
               = w_ap (1 - w_an),  w = exp(-Dbar / tau), w_ii = 0   weights="pairs"
    l[a, p, n] = relu(D_ap - D_an + m) = relu(m - T)
    L = sum W l / sum W

over the triples with ``a, p, n`` distinct (``keep_degenerate=True``: all ``B^3``, the original).
Defaults ``margin = 0.5``, ``margin2 = 0``, ``tau = 0.25``. Computed chunk by chunk over anchors.
"""

from __future__ import annotations

import torch
from torch import Tensor

from simtool.errors import UserError
from simtool.losses._checks import check_chunk, finite, positive
from simtool.losses._geometry import RelationalGeometry, margins
from simtool.losses._registry import register_loss
from simtool.losses.relational import RelationalLoss, triplet_weights

__all__ = ["RelaxedTripletLoss"]


@register_loss("relaxed_triplet")
class RelaxedTripletLoss(RelationalLoss):
    """Triplet margin loss over all batch triples, each weighted by the teachers' agreement.

    Args:
        margin: student margin ``m >= 0`` (0.5).
        margin2: teacher margin offset ``m2`` of the sigmoid weights (0).
        tau: temperature ``> 0`` of the teacher weights (0.25).
        weights: ``"triplets"`` (sigmoid of the teacher margin) or ``"pairs"`` (``w_ap (1 - w_an)``).
        keep_degenerate: keep triples with repeated indices (the original's choice).
        chunk: anchors per chunk (default: about 8 MiB per ``(chunk, B, B)`` tensor).
    """

    name = "relaxed_triplet"

    def __init__(
        self, margin: float = 0.5, margin2: float = 0.0, tau: float = 0.25, weights: str = "triplets", keep_degenerate: bool = False, chunk: int | None = None
    ):
        super().__init__(keep_degenerate)
        self.margin = positive("margin", margin, "relaxed_triplet", allow_zero=True)
        self.margin2 = finite("margin2", margin2, "relaxed_triplet")
        self.tau = positive("tau", tau, "relaxed_triplet")
        if weights not in ("triplets", "pairs"):
            raise UserError(f"The relaxed_triplet option weights={weights!r} is invalid; use 'triplets' or 'pairs'.")
        self.weights = weights
        self.chunk = check_chunk(chunk, "relaxed_triplet")

    def compute(self, g: RelationalGeometry, generator: torch.Generator | None) -> Tensor:
        def weighted(a0: int, a1: int, dd: Tensor) -> tuple[Tensor, Tensor]:
            return triplet_weights(self.weights, g.dbar, a0, a1, self.tau, self.margin2), (self.margin - margins(dd, a0, a1)).relu()

        return self.weighted_triple_mean(g, weighted, factor=5)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, margin2={self.margin2}, tau={self.tau}, weights={self.weights!r}, keep_degenerate={self.keep_degenerate}"
