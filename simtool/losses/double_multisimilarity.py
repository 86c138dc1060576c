"""Multi-similarity loss on labelled triplets (the ``double_multisimilarity`` loss of Dondera, 2024).

Reference: X. Wang, X. Han, W. Huang, D. Dong, M. R. Scott, "Multi-Similarity Loss with General
Pair Weighting for Deep Metric Learning", CVPR 2019 (Eq. 11 with one positive and one negative);
R. Dondera, "Towards Learning Image Similarity from General Triplet Labels", CVPR 2024 workshops
(``*_d_ms``, where ``lam`` is the config's ``margin``).

With ``f(s_p, s_n) = (1/alpha) log(1 + e^{alpha (lam - s_p)}) + (1/beta) log(1 + e^{beta (s_n - lam)})``
and dot products ``s01, s02, s12`` (convention ``labelled``, see
:class:`~simtool.losses.labelled.LabelledLoss` for shapes)::

    directed     l = f(s01, s02)
    odd-one-out  l = ( f(s01, s02) + f(s01, s12) ) / 2

Mean over the triplets (summed over repetitions); ``log(1 + e^x)`` is a stable softplus. Defaults
``lam = 0.5``, ``alpha = 2``, ``beta = 40``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from simtool.losses._checks import finite, positive
from simtool.losses._registry import register_loss
from simtool.losses.labelled import PairTermLoss

__all__ = ["DoubleMultiSimilarityLoss"]


@register_loss("double_multisimilarity")
class DoubleMultiSimilarityLoss(PairTermLoss):
    """Soft-plus pull of the labelled pair above ``lam`` and push of the other pair(s) below it.

    Args:
        lam: similarity threshold ``lambda``.
        alpha: sharpness ``> 0`` of the positive term.
        beta: sharpness ``> 0`` of the negative term.
    """

    name = "double_multisimilarity"
    measure = "similarities"

    def __init__(self, lam: float = 0.5, alpha: float = 2.0, beta: float = 40.0):
        super().__init__()
        self.lam = finite("lam", lam, "double_multisimilarity")
        self.alpha = positive("alpha", alpha, "double_multisimilarity")
        self.beta = positive("beta", beta, "double_multisimilarity")

    def term(self, s_pos: Tensor, s_neg: Tensor) -> Tensor:
        return F.softplus(self.alpha * (self.lam - s_pos)) / self.alpha + F.softplus(self.beta * (s_neg - self.lam)) / self.beta

    def extra_repr(self) -> str:
        return f"lam={self.lam}, alpha={self.alpha}, beta={self.beta}"
