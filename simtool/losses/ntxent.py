"""NT-Xent: SimCLR's normalized-temperature-scaled cross-entropy loss.

Reference: T. Chen, S. Kornblith, M. Norouzi, G. Hinton, "A Simple Framework for Contrastive
Learning of Visual Representations", ICML 2020 (arXiv:2002.05709), Eq. 1.

Given two views ``z1`` and ``z2`` of shape ``(B, D)`` where row ``i`` of ``z1`` and row ``i`` of
``z2`` form the positive pair, the ``2B`` rows are stacked and L2-normalised, every pair is scored by
``cos(z_a, z_b) / temperature`` and, for each of the ``2B`` items ``a`` with positive ``p(a)``::

    l(a) = -log( exp(s[a, p(a)]) / sum_{b != a} exp(s[a, b]) )

The denominator runs over the other ``2B - 1`` items (positive included, self excluded). The loss is
the mean of ``l(a)`` over the ``2B`` items. With ``B = 1`` the only other item is the positive, so
the loss is exactly 0 (there is no negative to contrast against).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simtool.errors import UserError
from simtool.losses._registry import register_loss

__all__ = ["nt_xent", "NTXentLoss"]


def _check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not math.isfinite(t) or t <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return t


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.1) -> Tensor:
    """SimCLR NT-Xent loss of two batches of paired embeddings (Chen et al., 2020).

    Args:
        z1: ``(B, D)`` embeddings of the first view; any float dtype, need not be normalised.
        z2: ``(B, D)`` embeddings of the second view; ``z2[i]`` is the positive of ``z1[i]``.
        temperature: softmax temperature ``tau > 0`` dividing the cosine similarities.

    Returns:
        Scalar tensor: the mean over the ``2B`` items of the cross-entropy of each item's positive
        against the other ``2B - 1`` items. Computed in float32 (float64 if the inputs are
        float64), also under bf16/fp16 autocast, so the result dtype is float32 or float64.
    """
    t = _check_temperature(temperature)
    if z1.dim() != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"nt_xent expects two (B, D) tensors of the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    batch = z1.shape[0]
    if batch < 1:
        raise ValueError("nt_xent needs at least one pair (B >= 1)")
    dtype = torch.promote_types(torch.promote_types(z1.dtype, z2.dtype), torch.float32)
    # Half-precision logits lose the temperature-scaled differences that drive the loss: compute the
    # similarity matrix and the log-softmax in float32 whatever autocast would pick.
    with torch.autocast(device_type=z1.device.type, enabled=False):
        z = torch.cat([z1, z2], dim=0).to(dtype)  # (2B, D)
        z = F.normalize(z, p=2, dim=1)
        logits = (z @ z.t()) / t  # (2B, 2B)
        self_mask = torch.eye(2 * batch, dtype=torch.bool, device=z.device)
        logits = logits.masked_fill(self_mask, float("-inf"))
        idx = torch.arange(batch, device=z.device)
        targets = torch.cat([idx + batch, idx])  # positive of item a is a +/- B
        return F.cross_entropy(logits, targets)


@register_loss("ntxent")
class NTXentLoss(nn.Module):
    """Module form of :func:`nt_xent` (SimCLR, Chen et al., 2020).

    Convention ``pair`` (see :mod:`simtool.losses`): ``loss(z1, z2) -> scalar``, with ``z1``, ``z2``
    of shape ``(B, D)`` and row ``i`` of each forming a positive pair.

    Args:
        temperature: softmax temperature ``tau > 0`` (SimCLR uses 0.1-0.5).
    """

    convention = "pair"

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        try:
            self.temperature = _check_temperature(temperature)
        except ValueError as exc:
            raise UserError(f"The NT-Xent temperature {temperature!r} is invalid; use a number > 0, e.g. 0.1.") from exc

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        """``z1``, ``z2``: ``(B, D)``; returns the scalar loss."""
        return nt_xent(z1, z2, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
