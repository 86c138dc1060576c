"""Double-margin loss on labelled triplets (the ``double_margin`` loss of Dondera, 2024).

Reference: C.-Y. Wu, R. Manmatha, A. Smola, P. Krähenbühl, "Sampling Matters in Deep Embedding
Learning", ICCV 2017 (the margin loss with a boundary ``beta``); R. Dondera, "Towards Learning Image
Similarity from General Triplet Labels", CVPR 2024 workshops (``*_d_dm``).

With ``g(d_p, d_n) = relu(d_p - (beta - m)) + relu((beta + m) - d_n)`` (similar pairs pulled inside
``beta - m``, dissimilar ones pushed beyond ``beta + m``) and Euclidean distances ``d01, d02, d12``
(convention ``labelled``, see :class:`~simtool.losses.labelled.LabelledLoss` for shapes)::

    directed     l = g(d01, d02)
    odd-one-out  l = ( g(d01, d02) + g(d01, d12) ) / 2

Mean over the triplets (summed over repetitions). Defaults ``beta = 1.2``, ``margin = 0.2``
(bands at 1.0 and 1.4).
"""

from __future__ import annotations

from torch import Tensor

from simtool.losses._checks import finite, positive
from simtool.losses._registry import register_loss
from simtool.losses.labelled import PairTermLoss

__all__ = ["DoubleMarginLoss"]


@register_loss("double_margin")
class DoubleMarginLoss(PairTermLoss):
    """Pull the labelled pair inside ``beta - margin``, push the other pair(s) beyond ``beta + margin``.

    Args:
        beta: boundary between similar and dissimilar distances.
        margin: half-width ``>= 0`` of the band around ``beta``.
    """

    name = "double_margin"

    def __init__(self, beta: float = 1.2, margin: float = 0.2):
        super().__init__()
        self.beta = finite("beta", beta, "double_margin")
        self.margin = positive("margin", margin, "double_margin", allow_zero=True)

    def term(self, d_pos: Tensor, d_neg: Tensor) -> Tensor:
        return (d_pos - (self.beta - self.margin)).relu() + ((self.beta + self.margin) - d_neg).relu()

    def extra_repr(self) -> str:
        return f"beta={self.beta}, margin={self.margin}"
