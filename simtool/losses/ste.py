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

``floor``: the original code takes ``-log(max(p, floor))`` with ``floor = 1e-12`` (the paper's
direct presets set it): a triplet whose probability ``p`` falls below the floor contributes the
constant ``-log(floor)`` and **no gradient** (at ``tau = 0.005`` a directed triplet violated by more
than about 0.138 in cosine). ``floor: null`` (the default) keeps the stable form, whose gradient
stays of order ``1 / tau`` however badly a triplet is violated.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from simtool.errors import UserError
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
        floor: ``None`` (the stable form) or a probability floor in (0, 1) below which a triplet has
            no gradient (the original's 1e-12; see the module docstring).
    """

    name = "ste"

    def __init__(self, tau: float = 0.005, floor: float | None = None):
        super().__init__()
        self.tau = positive("tau", tau, "ste")
        self.floor = None if floor is None else positive("floor", floor, "ste")
        if self.floor is not None and self.floor >= 1:
            raise UserError(f"The ste option floor={floor!r} is invalid; use a probability in (0, 1), e.g. 1e-12, or leave it unset.")

    def _floored(self, loss: Tensor) -> Tensor:
        """``-log(max(p, floor))`` from ``loss = -log p``: the constant ``-log(floor)``, without gradient, above it."""
        if self.floor is None:
            return loss
        cap = -math.log(self.floor)
        return torch.where(loss > cap, loss.detach().clamp(max=cap), loss)

    def directed(self, g: TripletGeometry) -> Tensor:
        return self._floored(F.softplus((g.s02 - g.s01) / self.tau))

    def odd_one_out(self, g: TripletGeometry) -> Tensor:
        logits = torch.stack([g.s01, g.s02, g.s12], -1) / self.tau
        return self._floored(torch.logsumexp(logits, -1) - logits[..., 0])

    def extra_repr(self) -> str:
        return f"tau={self.tau}" + (f", floor={self.floor:g}" if self.floor is not None else "")
