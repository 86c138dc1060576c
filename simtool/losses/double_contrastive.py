"""Double contrastive loss on labelled triplets (the ``double_contrastive`` loss of Dondera, 2024).

Reference: R. Hadsell, S. Chopra, Y. LeCun, "Dimensionality Reduction by Learning an Invariant
Mapping", CVPR 2006 (the contrastive loss); R. Dondera, "Towards Learning Image Similarity from
General Triplet Labels", CVPR 2024 workshops (``*_d_cont``).

The labelled pair is a positive pair, the other pair(s) are negative pairs. With Euclidean
distances ``d01, d02, d12`` (convention ``labelled``, see
:class:`~simtool.losses.labelled.LabelledLoss` for shapes)::

    directed     l = ( relu(d01 - m+) + relu(m- - d02) ) / 2
    odd-one-out  l = ( relu(d01 - m+) + relu(m- - d02) + relu(m- - d12) ) / 3

Mean over the triplets (summed over repetitions). Defaults ``margin_positive = 0.0``,
``margin_negative = 1.0``.
"""

from __future__ import annotations

from torch import Tensor

from simtool.losses._checks import positive
from simtool.losses._geometry import TripletGeometry
from simtool.losses._registry import register_loss
from simtool.losses.labelled import LabelledLoss

__all__ = ["DoubleContrastiveLoss"]


@register_loss("double_contrastive")
class DoubleContrastiveLoss(LabelledLoss):
    """Contrastive loss on the positive pair and the negative pair(s) of each triplet.

    Args:
        margin_positive: ``m+ >= 0``, positive pairs closer than this cost nothing.
        margin_negative: ``m- >= 0``, negative pairs farther than this cost nothing.
    """

    name = "double_contrastive"

    def __init__(self, margin_positive: float = 0.0, margin_negative: float = 1.0):
        super().__init__()
        self.margin_positive = positive("margin_positive", margin_positive, "double_contrastive", allow_zero=True)
        self.margin_negative = positive("margin_negative", margin_negative, "double_contrastive", allow_zero=True)

    def directed(self, g: TripletGeometry) -> Tensor:
        return 0.5 * ((g.d01 - self.margin_positive).relu() + (self.margin_negative - g.d02).relu())

    def odd_one_out(self, g: TripletGeometry) -> Tensor:
        neg = (self.margin_negative - g.d02).relu() + (self.margin_negative - g.d12).relu()
        return ((g.d01 - self.margin_positive).relu() + neg) / 3.0

    def extra_repr(self) -> str:
        return f"margin_positive={self.margin_positive}, margin_negative={self.margin_negative}"
