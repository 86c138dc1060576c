"""RKD: relational knowledge distillation of distances and angles (the ``rkd`` loss of Dondera, 2024).

Reference: W. Park, D. Kim, Y. Lu, M. Cho, "Relational Knowledge Distillation", CVPR 2019, as
modified by R. Dondera, "Towards Learning Image Similarity from General Triplet Labels", CVPR 2024
workshops (per-row distance normalisation; teacher = R teacher runs).

Convention ``relational`` (:class:`~simtool.losses.relational.RelationalLoss`): ``student (B, E)``,
``teacher (B, R, D_t)``. With student distances ``D``, teacher run distances ``D^r`` and their mean
``Dbar`` (all ``(B, B)``), Huber ``h`` with ``delta``::

    mu_i = sum_j D_ij / (B - 1),     mubar_i = sum_j Dbar_ij / (B - 1)
    L_dist  = mean_{i != j} h( D_ij / mu_i - Dbar_ij / mubar_i )
    A[i, j, k] = cos of the angle at i of (i, j, k) = (D_ij^2 + D_ik^2 - D_jk^2) / (2 D_ij D_ik)
    Abar = mean_r A^r                       (mean of the runs' angle tensors, (B, B, B))
    L_angle = mean_{(i, j, k) distinct} h( A[i, j, k] - Abar[i, j, k] )
    L = distance_weight * L_dist + angle_weight * L_angle            (1 and 2)

``keep_degenerate=True`` averages over all ``B^2`` pairs and ``B^3`` triples, as the original. With
``miner: relaxed_sampling_matters`` (:mod:`simtool.losses.miners`) ``L_angle`` is the mean over the
mined triples only (0 if none). The angle tensor is computed from distances (law of cosines), chunk
by chunk over anchors, so neither ``B^3 x D`` nor a whole ``B^3`` graph is ever held; a one-hot
teacher (class labels) needs no special case, and the student's angle term has gradients with it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from simtool.losses._checks import check_chunk, positive
from simtool.losses._geometry import EPS, RelationalGeometry, angles, pair_mask
from simtool.losses._registry import create_miner, register_loss
from simtool.losses.relational import RelationalLoss

__all__ = ["RKDLoss", "huber", "mined_angles"]


def huber(x: Tensor, delta: float = 1.0) -> Tensor:
    """Elementwise Huber: ``x^2 / 2`` for ``|x| < delta``, else ``delta * (|x| - delta / 2)``."""
    return F.huber_loss(x, torch.zeros_like(x), reduction="none", delta=delta)


def mined_angles(d: Tensor, a: Tensor, p: Tensor, n: Tensor) -> Tensor:
    """Angle cosines at ``a`` of the triangles ``(a, p, n)`` from a ``(..., B, B)`` distance matrix -> ``(..., M)``."""
    d_ap, d_an, d_pn = d[..., a, p], d[..., a, n], d[..., p, n]
    floor = EPS**0.5
    return (d_ap * d_ap + d_an * d_an - d_pn * d_pn) / (2.0 * d_ap.clamp_min(floor) * d_an.clamp_min(floor))


@register_loss("rkd")
class RKDLoss(RelationalLoss):
    """Distance (row-normalised) + angle relational distillation from R teachers.

    Args:
        distance_weight: weight ``>= 0`` of ``L_dist`` (1).
        angle_weight: weight ``>= 0`` of ``L_angle`` (2).
        delta: Huber threshold ``> 0`` (1).
        miner: ``None`` (all triples) or ``"relaxed_sampling_matters"`` for the angle term.
        miner_options: options of the miner (see :class:`~simtool.losses.miners.RelaxedSamplingMattersMiner`).
        keep_degenerate: keep self pairs and degenerate triples in the means (the original's choice). With a miner,
            the miner's ``exclude_degenerate`` decides which triples can be drawn.
        chunk: anchors per chunk of the angle tensor (default: about 8 MiB per ``(chunk, B, B)`` tensor).
    """

    name = "rkd"
    min_batch = 2

    def __init__(
        self,
        distance_weight: float = 1.0,
        angle_weight: float = 2.0,
        delta: float = 1.0,
        miner: str | None = None,
        miner_options: dict | None = None,
        keep_degenerate: bool = False,
        chunk: int | None = None,
    ):
        super().__init__(keep_degenerate)
        self.distance_weight = positive("distance_weight", distance_weight, "rkd", allow_zero=True)
        self.angle_weight = positive("angle_weight", angle_weight, "rkd", allow_zero=True)
        self.delta = positive("delta", delta, "rkd")
        self.miner = create_miner(miner, miner_options)
        self.chunk = check_chunk(chunk, "rkd")

    def distance_term(self, d: Tensor, dbar: Tensor) -> Tensor:
        b = d.shape[0]
        mu = d.sum(1, keepdim=True) / (b - 1)
        mubar = dbar.sum(1, keepdim=True) / (b - 1)
        terms = huber(d / mu.clamp_min(EPS) - dbar / mubar.clamp_min(EPS), self.delta)
        if self.keep_degenerate:
            return terms.mean()
        return terms[pair_mask(b, d.device)].mean()

    def angle_term(self, g: RelationalGeometry, generator: torch.Generator | None = None) -> Tensor:
        def mined(a: Tensor, p: Tensor, n: Tensor) -> Tensor:
            return huber(mined_angles(g.d, a, p, n) - mined_angles(g.d_runs, a, p, n).mean(0), self.delta)

        def terms(a0: int, a1: int, dd: Tensor) -> Tensor:
            with torch.no_grad():
                abar = angles(g.d_runs, a0, a1).mean(0)
            return huber(angles(dd, a0, a1) - abar, self.delta)

        return self.triple_mean(g, terms, mined, generator, factor=4 + g.runs)

    def compute(self, g: RelationalGeometry, generator: torch.Generator | None) -> Tensor:
        loss = g.zero()
        if self.distance_weight:
            loss = loss + self.distance_weight * self.distance_term(g.d, g.dbar)
        if self.angle_weight:
            loss = loss + self.angle_weight * self.angle_term(g, generator)
        return loss

    def extra_repr(self) -> str:
        return (
            f"distance_weight={self.distance_weight}, angle_weight={self.angle_weight}, delta={self.delta}, "
            f"miner={self.miner}, keep_degenerate={self.keep_degenerate}"
        )
