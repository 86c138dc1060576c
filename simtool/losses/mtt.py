"""MTT: triplet margin loss on the strict-majority triplets of several teachers (``mtt``, Dondera 2024).

Reference: R. Dondera, "Towards Learning Image Similarity from General Triplet Labels", CVPR 2024
workshops (``*_se_mtt``, "multiple triplet teachers").

Convention ``relational`` (:class:`~simtool.losses.relational.RelationalLoss`): ``student (B, E)``,
``teacher (B, R, D_t)``. Each teacher run ``r`` votes for the triple ``(a, p, n)`` when
``D^r_an - D^r_ap > teacher_margin``; a triple is a training triplet when more than half of the R
runs vote for it (strict majority)::

    W[a, p, n] = [ #{r : D^r_an - D^r_ap > m_t} > R / 2 ]
    l[a, p, n] = relu(D_ap - D_an + m)
    L = sum W l / sum W                    (0 when no triple wins the vote)

over the triples with ``a, p, n`` distinct (``keep_degenerate=True``: all of them, as the original,
where every ``(a, a, n)`` with a distinct teacher vector wins). Defaults ``teacher_margin = 0``,
``margin = 0.2``. Computed chunk by chunk over anchors (memory ``O(chunk * R * B^2)``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from simtool.losses._checks import check_chunk, positive
from simtool.losses._geometry import RelationalGeometry, margins
from simtool.losses._registry import register_loss
from simtool.losses.relational import RelationalLoss

__all__ = ["MTTLoss"]


@register_loss("mtt")
class MTTLoss(RelationalLoss):
    """Triplet margin loss on the triples that a strict majority of the teacher runs agree on.

    Args:
        teacher_margin: a run votes for ``(a, p, n)`` when its margin exceeds this (0).
        margin: student triplet margin ``>= 0`` (0.2).
        keep_degenerate: keep triples with repeated indices (the original's choice).
        chunk: anchors per chunk (default: about 8 MiB per ``(chunk, B, B)`` tensor, times R).
    """

    name = "mtt"

    def __init__(self, teacher_margin: float = 0.0, margin: float = 0.2, keep_degenerate: bool = False, chunk: int | None = None):
        super().__init__(keep_degenerate)
        self.teacher_margin = positive("teacher_margin", teacher_margin, "mtt", allow_zero=True)
        self.margin = positive("margin", margin, "mtt", allow_zero=True)
        self.chunk = check_chunk(chunk, "mtt")

    def compute(self, g: RelationalGeometry, generator: torch.Generator | None) -> Tensor:
        def weighted(a0: int, a1: int, dd: Tensor) -> tuple[Tensor, Tensor]:
            with torch.no_grad():
                votes = (margins(g.d_runs, a0, a1) > self.teacher_margin).sum(0)  # (c, B, B)
            return votes * 2 > g.runs, (self.margin - margins(dd, a0, a1)).relu()

        return self.weighted_triple_mean(g, weighted, factor=4 + g.runs)

    def extra_repr(self) -> str:
        return f"teacher_margin={self.teacher_margin}, margin={self.margin}, keep_degenerate={self.keep_degenerate}"
