"""Relaxed FaceNet loss: teacher-weighted semi-hard triplets (``relaxed_facenet``, Dondera 2024).

Reference: F. Schroff, D. Kalenichenko, J. Philbin, "FaceNet", CVPR 2015 (semi-hard negatives);
R. Dondera, "Towards Learning Image Similarity from General Triplet Labels", CVPR 2024 workshops
(``*_se_rf``).

Convention ``relational`` (:class:`~simtool.losses.relational.RelationalLoss`): ``student (B, E)``,
``teacher (B, R, D_t)``. With ``l[a, p, n] = relu(D_ap - D_an + m)``, teacher pair weights ``w`` and
triplet weights ``W`` (both from ``Dbar = mean_r D^r``)::

    weights="triplets":  w = exp(-Dbar / tau),   W = sigmoid((Tbar - m2) / tau)     (default)
    weights="triplets2": w = exp(-Dbar^2 / tau), W = sigmoid((Tbar - m2) / tau)
    weights="pairs":     w = exp(-Dbar / tau),   W[a, p, n] = w_ap (1 - w_an)
    weights="pairs2":    w = exp(-Dbar^2 / tau), W[a, p, n] = w_ap (1 - w_an)       (w_ii = 0)

    L_ap = max_n  l[a, p, n] * [0 < l[a, p, n] <= m] * W[a, p, n]    (soft semi-hard negative)
    L = sum_{a != p} w_ap L_ap / sum_{a != p} w_ap

The max runs over ``n`` distinct from ``a`` and ``p`` (``keep_degenerate=True``: over all ``n``, the
original, where ``n = p`` always qualifies with a constant ``m W``). Defaults ``margin = 0.5``,
``margin2 = 0``, ``tau = 0.25``. The original's optional hard-negative fallback
(``semihard_loss_threshold > 0``) is not implemented: every configuration used 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from simtool.errors import UserError
from simtool.losses._checks import check_chunk, finite, positive
from simtool.losses._geometry import RelationalGeometry, margins
from simtool.losses._registry import register_loss
from simtool.losses.relational import RelationalLoss, pair_weights, triplet_weights

__all__ = ["RelaxedFacenetLoss"]

_WEIGHTS = {"triplets": ("triplets", False), "triplets2": ("triplets", True), "pairs": ("pairs", False), "pairs2": ("pairs", True)}


@register_loss("relaxed_facenet")
class RelaxedFacenetLoss(RelationalLoss):
    """Teacher-weighted semi-hard triplet loss, each (anchor, positive) pair weighted by the teachers.

    Args:
        margin: student margin ``m > 0`` (0.5).
        margin2: teacher margin offset of the sigmoid weights (0).
        tau: temperature ``> 0`` of the teacher weights (0.25).
        weights: ``"triplets"``, ``"triplets2"``, ``"pairs"`` or ``"pairs2"`` (see the module docstring).
        keep_degenerate: let the negative coincide with the anchor or the positive (the original's choice).
        chunk: anchors per chunk (default: about 8 MiB per ``(chunk, B, B)`` tensor).
    """

    name = "relaxed_facenet"

    def __init__(
        self, margin: float = 0.5, margin2: float = 0.0, tau: float = 0.25, weights: str = "triplets", keep_degenerate: bool = False, chunk: int | None = None
    ):
        super().__init__(keep_degenerate)
        self.margin = positive("margin", margin, "relaxed_facenet")
        self.margin2 = finite("margin2", margin2, "relaxed_facenet")
        self.tau = positive("tau", tau, "relaxed_facenet")
        if weights not in _WEIGHTS:
            raise UserError(f"The relaxed_facenet option weights={weights!r} is invalid; use one of: {', '.join(_WEIGHTS)}.")
        self.weights = weights
        self.chunk = check_chunk(chunk, "relaxed_facenet")

    def compute(self, g: RelationalGeometry, generator: torch.Generator | None) -> Tensor:
        kind, squared = _WEIGHTS[self.weights]
        w_pair, _ = pair_weights(g.dbar, self.tau, squared)  # zero diagonal: a = p never counts
        denom = float(w_pair.sum())
        if denom <= 0:
            return g.zero()

        def chunk_sum(a0: int, a1: int, dd: Tensor) -> Tensor:
            w = self.drop_degenerate(triplet_weights(kind, g.dbar, a0, a1, self.tau, self.margin2, squared), a0, a1)
            loss = (self.margin - margins(dd, a0, a1)).relu()  # (c, B, B) = relu(D_ap - D_an + m)
            with torch.no_grad():
                semihard = (loss > 0) & (loss <= self.margin)
            best = (loss * (semihard * w)).amax(dim=-1)  # (c, B): per (a, p)
            return (w_pair[a0:a1] * best).sum()

        return self.triple_sum(g, chunk_sum, factor=5) / denom

    def extra_repr(self) -> str:
        return f"margin={self.margin}, margin2={self.margin2}, tau={self.tau}, weights={self.weights!r}, keep_degenerate={self.keep_degenerate}"
