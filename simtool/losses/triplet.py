"""Triplet margin loss on labelled triplets (the ``triplet`` loss of Dondera, 2024).

Reference: F. Schroff, D. Kalenichenko, J. Philbin, "FaceNet", CVPR 2015 (the margin loss);
R. Dondera, "Towards Learning Image Similarity from General Triplet Labels", CVPR 2024 workshops
(``*_d_trip``, ``*_p_trip``).

Per triplet, with Euclidean distances ``d01, d02, d12`` (convention ``labelled``, see
:class:`~simtool.losses.labelled.LabelledLoss` for shapes)::

    directed     l = relu(d01 - d02 + m)
    odd-one-out  l = ( relu(d01 - d02 + m) + relu(d01 - d12 + m) ) / 2

Mean over the triplets (summed over repetitions). Default ``margin = 0.2`` (image models); the
paper's teachers use 0.5.
"""

from __future__ import annotations

from torch import Tensor

from simtool.losses._checks import positive
from simtool.losses._registry import register_loss
from simtool.losses.labelled import PairTermLoss

__all__ = ["TripletMarginLoss"]


@register_loss("triplet")
class TripletMarginLoss(PairTermLoss):
    """``relu(d(closer) - d(farther) + margin)``; odd-one-out averages the two pair-vs-odd terms.

    Args:
        margin: ``m >= 0`` (0.2 for image models, 0.5 for psycho teachers).
    """

    name = "triplet"

    def __init__(self, margin: float = 0.2):
        super().__init__()
        self.margin = positive("margin", margin, "triplet", allow_zero=True)

    def term(self, d_pair: Tensor, d_other: Tensor) -> Tensor:
        return (d_pair - d_other + self.margin).relu()

    def extra_repr(self) -> str:
        return f"margin={self.margin}"
