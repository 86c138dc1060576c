"""STE: a softmax choice model over a triplet's similarities (the "ste" loss of Dondera, 2024).

Reference: R. Dondera, "Towards Learning Image Similarity from General Triplet Labels", CVPR 2024
workshops (FGVC11), the ``ste`` loss of the teachers (``*_p_ste``) and of the direct route
(``*_d_ste``). Despite the name (after Stochastic Triplet Embedding, van der Maaten & Weinberger
2012) it scores pairs by ``exp(s / tau)`` with cosine similarities ``s``, not by a Student-t kernel;
for odd-one-out triplets it is the choice model of the THINGS odd-one-out task (Hebart et al. 2020).

Per triplet, with dot products ``s01, s02, s12`` of the rows (convention ``labelled``, see
:class:`~simtool.losses.labelled.LabelledLoss` for shapes)::

    directed     l = -log( e^{s01/tau} / (e^{s01/tau} + e^{s02/tau}) )      = softplus((s02 - s01) / tau)
    odd-one-out  l = -log( e^{s01/tau} / (e^{s01/tau} + e^{s02/tau} + e^{s12/tau}) )

(for odd-one-out the labelled pair (0, 1) must be the most similar of the three pairs). The loss is
the mean over the triplets (summed over repetitions). Computed with log-sum-exp, so small ``tau``
is stable. Defaults: ``tau = 0.005`` (the paper's image models); its teachers use ``tau = 0.5``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from simtool.losses._checks import positive
from simtool.losses._geometry import TripletGeometry
from simtool.losses._registry import register_loss
from simtool.losses.labelled import LabelledLoss

__all__ = ["STELoss"]


@register_loss("ste")
class STELoss(LabelledLoss):
    """Softmax over a triplet's similarities / ``tau``, picking the labelled pair.

    Args:
        tau: temperature ``> 0`` (0.005 for image models, 0.5 for psycho teachers).
    """

    name = "ste"

    def __init__(self, tau: float = 0.005):
        super().__init__()
        self.tau = positive("tau", tau, "ste")

    def directed(self, g: TripletGeometry) -> Tensor:
        return F.softplus((g.s02 - g.s01) / self.tau)

    def odd_one_out(self, g: TripletGeometry) -> Tensor:
        logits = torch.stack([g.s01, g.s02, g.s12], -1) / self.tau
        return torch.logsumexp(logits, -1) - logits[..., 0]

    def extra_repr(self) -> str:
        return f"tau={self.tau}"
