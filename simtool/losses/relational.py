"""The ``relational`` convention: the base of the teacher-student losses of Dondera, 2024, and their teacher weights.

Reference: R. Dondera, "Towards Learning Image Similarity from General Triplet Labels", CVPR 2024
workshops (the student-from-teachers losses: ``rkd``, ``stmr``, ``mtt`` and the ``relaxed_*``
family).

:class:`RelationalLoss` is a template: its :meth:`~RelationalLoss.forward` validates the inputs,
computes the batch's :class:`~simtool.losses._geometry.RelationalGeometry` outside autocast, returns
a connected zero for batches below :attr:`~RelationalLoss.min_batch`, and calls the
:meth:`~RelationalLoss.compute` hook of the loss. The losses over ``B x B x B`` triples build their
hook from :meth:`~RelationalLoss.triple_sum` (chunked sum, chunk choice),
:meth:`~RelationalLoss.triple_mean` (mean over all or mined triples),
:meth:`~RelationalLoss.weighted_triple_mean` (``sum W l / sum W``) and
:meth:`~RelationalLoss.drop_degenerate`. The teacher weights :func:`pair_weights` and
:func:`triplet_weights` (the original's ``triplet_type`` 1 and 2) are shared by several losses.
Not a loss itself (it registers nothing).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from simtool.losses._geometry import RelationalGeometry, auto_chunk, chunked_sum, margins, n_triples, relational_geometry, triple_mask

__all__ = ["RelationalLoss", "pair_weights", "triplet_weights"]

ChunkFn = Callable[[int, int, Tensor], Tensor]


class RelationalLoss(torch.nn.Module):
    """Base of the teacher-student losses (convention ``relational``).

    ``loss(student, teacher, generator=None) -> scalar``:

    * ``student``: ``(B, E)`` L2-normalised student embeddings (with gradient);
    * ``teacher``: ``(B, R, D_t)`` R teacher repetitions (or ``(B, D_t)``); detached. The teacher
      signal is the mean over R of the runs' distance matrices, ``Dbar = mean_r D^r``;
    * ``generator``: a ``torch.Generator`` (CPU) for losses with a batch miner; pass one derived
      from ``(seed, step)`` for exactly reproducible runs. Without it the loss's own generator
      (seeded by its ``seed`` option) is used.

    ``keep_degenerate=False`` (default) drops index triples with ``a = p``, ``a = n`` or ``p = n``
    (and self pairs) from sums and normalisers; ``True`` keeps them, as the original code did.

    Subclasses implement :meth:`compute`; those with a ``chunk`` option set :attr:`chunk`
    (:func:`~simtool.losses._checks.check_chunk`), those with a ``miner`` option :attr:`miner`
    (:func:`~simtool.losses._registry.create_miner`).
    """

    convention = "relational"
    name = "relational"
    min_batch = 1  # smaller batches give a zero without calling compute
    chunk: int | None = None  # anchors per chunk of the triple sums; None: about 8 MiB per (chunk, B, B) tensor
    miner = None  # a batch miner (simtool.losses.miners) for triple_mean, or None: every triple

    def __init__(self, keep_degenerate: bool = False):
        super().__init__()
        self.keep_degenerate = bool(keep_degenerate)

    def forward(self, student: Tensor, teacher: Tensor, generator: torch.Generator | None = None) -> Tensor:
        with torch.autocast(device_type=student.device.type, enabled=False):
            g = relational_geometry(student, teacher)
            if g.batch < self.min_batch:
                return g.zero()
            return self.compute(g, generator)

    def compute(self, g: RelationalGeometry, generator: torch.Generator | None) -> Tensor:  # pragma: no cover - abstract
        """The scalar loss of one batch's geometry ``g`` (``generator``: for the miner, may be ``None``)."""
        raise NotImplementedError

    # -- building blocks of the losses over B x B x B triples ----------------------------------------
    def drop_degenerate(self, x: Tensor, a0: int, a1: int) -> Tensor:
        """``x (c, B, B)`` over the triples ``[a, p, n]`` of anchors ``a0..a1-1``, zero where ``a, p, n``
        are not distinct (unchanged with ``keep_degenerate``)."""
        if self.keep_degenerate:
            return x
        return x * triple_mask(a0, a1, x.shape[-1], x.device)

    def triple_sum(self, g: RelationalGeometry, fn: ChunkFn, factor: int) -> Tensor:
        """:func:`~simtool.losses._geometry.chunked_sum` of ``fn(a0, a1, d)`` over ``g.d`` in chunks of
        :attr:`chunk` anchors, or of about 8 MiB per ``(chunk, B, B)`` tensor times ``factor``."""
        return chunked_sum(fn, g.d, self.chunk or auto_chunk(g.batch, factor))

    def triple_mean(self, g: RelationalGeometry, terms: ChunkFn, mined: Callable[[Tensor, Tensor, Tensor], Tensor], generator, factor: int) -> Tensor:
        """Mean of per-triple terms: over the triples ``(a, p, n)`` drawn by :attr:`miner` when there is
        one (``mined(a, p, n) -> (M,)``; 0 if none is drawn), else over every triple
        (``terms(a0, a1, d) -> (c, B, B)`` for anchors ``a0..a1-1``; the degenerate ones only with
        ``keep_degenerate``; 0 if there are none)."""
        if self.miner is not None:
            a, p, n = self.miner(g.d, g.dbar, g.dim, generator)
            if a.numel() == 0:
                return g.zero()
            return mined(a, p, n).mean()
        count = n_triples(g.batch, self.keep_degenerate)
        if count == 0:
            return g.zero()
        return self.triple_sum(g, lambda a0, a1, d: self.drop_degenerate(terms(a0, a1, d), a0, a1).sum(), factor) / count

    def weighted_triple_mean(self, g: RelationalGeometry, weighted: Callable[[int, int, Tensor], tuple[Tensor, Tensor]], factor: int) -> Tensor:
        """``sum W l / sum W`` over the triples, ``weighted(a0, a1, d) -> (W, l)`` both ``(c, B, B)`` for
        anchors ``a0..a1-1``, ``W >= 0`` without gradient (degenerate triples get ``W = 0`` unless
        ``keep_degenerate``); 0 when ``sum W = 0``."""
        weight_sum = [0.0]

        def chunk_sum(a0: int, a1: int, d: Tensor) -> Tensor:
            w, terms = weighted(a0, a1, d)
            w = self.drop_degenerate(w, a0, a1)
            weight_sum[0] += float(w.sum())
            return (w * terms).sum()

        total = self.triple_sum(g, chunk_sum, factor)
        if weight_sum[0] <= 0:
            return g.zero()
        return total / weight_sum[0]


# ---------------------------------------------------------------------------- teacher weights
def pair_weights(dbar: Tensor, tau: float, squared: bool) -> tuple[Tensor, Tensor]:
    """Teacher pair weights ``w = exp(-Dbar / tau)`` (``squared``: ``exp(-Dbar^2 / tau)``) and
    ``wbar = 1 - w``, both with a zero diagonal (the original's ``calculate_weights_from_distances``)."""
    x = dbar * dbar if squared else dbar
    w = torch.exp(-x / tau)
    eye = torch.eye(dbar.shape[0], dtype=torch.bool, device=dbar.device)
    return w.masked_fill(eye, 0.0), (1.0 - w).masked_fill(eye, 0.0)


def triplet_weights(kind: str, dbar: Tensor, a0: int, a1: int, tau: float, margin2: float, squared_pairs: bool = False) -> Tensor:
    """Teacher triplet weights of anchors ``a0..a1-1``, ``(c, B, B)``, without gradient.

    ``"triplets"``: ``sigmoid((Tbar - margin2) / tau)`` (the original's triplet_type 2);
    ``"pairs"``: ``w_ap * wbar_an`` with :func:`pair_weights` (triplet_type 1)."""
    with torch.no_grad():
        if kind == "triplets":
            return torch.sigmoid((margins(dbar, a0, a1) - margin2) / tau)
        w, wbar = pair_weights(dbar, tau, squared_pairs)
        return w[a0:a1].unsqueeze(-1) * wbar[a0:a1].unsqueeze(-2)
