"""STMR: soft triplet margin regression (the ``stmr`` loss of Dondera, 2024).

Reference: R. Dondera, "Towards Learning Image Similarity from General Triplet Labels", CVPR 2024
workshops (``*_se_stmr``; most likely the paper's own proposal).

Convention ``relational`` (:class:`~simtool.losses.relational.RelationalLoss`): ``student (B, E)``,
``teacher (B, R, D_t)``. With student margins ``T[a, p, n] = D_an - D_ap`` and mean-teacher margins
``Tbar`` (from ``Dbar = mean_r D^r``), for every triple::

    alpha = sigmoid(Tbar / beta)                       teacher confidence that n is farther than p
    x     = tau (Tbar - T) - Tbar / beta               (= tau (Tbar - T + gamma), gamma = log(1/alpha - 1) / tau)
    l     = ( alpha softplus(x) + (1 - alpha) softplus(-x) ) / tau = ( softplus(x) - (1 - alpha) x ) / tau
    L     = mean of l over the (a, p, n) with a, p, n distinct

``dl/dT = 0`` exactly at ``T = Tbar``: the student's margin is regressed onto the teachers' mean
margin, under-shooting a confident margin costing more than over-shooting it. Defaults
``tau = 5``, ``beta = 0.5``. ``keep_degenerate=True`` averages over all ``B^3`` triples (the
original); ``miner: relaxed_sampling_matters`` averages over the mined triples instead (0 if none).
``softplus`` is the stable one: the original's ``log(clip(1 + e^x, 1e-12, 1e12))`` saturated (zero
gradient) for ``x > 27.6``. Computed chunk by chunk over anchors (memory ``O(chunk * B^2)``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from simtool.losses._checks import check_chunk, positive
from simtool.losses._geometry import RelationalGeometry, margins
from simtool.losses._registry import create_miner, register_loss
from simtool.losses.relational import RelationalLoss

__all__ = ["STMRLoss", "stmr_terms"]


def stmr_terms(t_student: Tensor, t_teacher: Tensor, tau: float, beta: float) -> Tensor:
    """Elementwise STMR loss of student margins ``t_student`` given teacher margins ``t_teacher``."""
    alpha = torch.sigmoid(t_teacher / beta)
    x = tau * (t_teacher - t_student) - t_teacher / beta
    return (F.softplus(x) - (1.0 - alpha) * x) / tau


@register_loss("stmr")
class STMRLoss(RelationalLoss):
    """Regress every student triplet margin onto the teachers' mean margin (asymmetric soft hinge).

    Args:
        tau: sharpness ``> 0`` (5).
        beta: teacher-confidence scale ``> 0`` (0.5).
        miner: ``None`` (all triples) or ``"relaxed_sampling_matters"``.
        miner_options: options of the miner.
        keep_degenerate: keep triples with repeated indices (the original's choice). With a miner,
            the miner's ``exclude_degenerate`` decides which triples can be drawn.
        chunk: anchors per chunk (default: about 8 MiB per ``(chunk, B, B)`` tensor).
    """

    name = "stmr"

    def __init__(
        self,
        tau: float = 5.0,
        beta: float = 0.5,
        miner: str | None = None,
        miner_options: dict | None = None,
        keep_degenerate: bool = False,
        chunk: int | None = None,
    ):
        super().__init__(keep_degenerate)
        self.tau = positive("tau", tau, "stmr")
        self.beta = positive("beta", beta, "stmr")
        self.miner = create_miner(miner, miner_options)
        self.chunk = check_chunk(chunk, "stmr")

    def compute(self, g: RelationalGeometry, generator: torch.Generator | None) -> Tensor:
        d, dbar = g.d, g.dbar

        def mined(a: Tensor, p: Tensor, n: Tensor) -> Tensor:
            return stmr_terms(d[a, n] - d[a, p], dbar[a, n] - dbar[a, p], self.tau, self.beta)

        def terms(a0: int, a1: int, dd: Tensor) -> Tensor:
            return stmr_terms(margins(dd, a0, a1), margins(dbar, a0, a1), self.tau, self.beta)

        return self.triple_mean(g, terms, mined, generator, factor=6)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, beta={self.beta}, miner={self.miner}, keep_degenerate={self.keep_degenerate}"
