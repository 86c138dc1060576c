"""The ``labelled`` convention: the base of the triplet-label losses of Dondera, 2024.

Reference: R. Dondera, "Towards Learning Image Similarity from General Triplet Labels", CVPR 2024
workshops (the direct route's and the psycho teachers' losses: ``ste``, ``triplet``,
``double_margin``, ``double_contrastive``, ``double_multisimilarity``).

:class:`LabelledLoss` is a template: its :meth:`~LabelledLoss.forward` checks the kind, computes
the triplets' :class:`~simtool.losses._geometry.TripletGeometry` (outside autocast) and reduces the
per-triplet losses that a subclass gives in :meth:`~LabelledLoss.directed` and
:meth:`~LabelledLoss.odd_one_out`. :class:`PairTermLoss` is the common case of a loss made of one
term on (labelled pair, other pair). Not a loss itself (it registers nothing).
"""

from __future__ import annotations

import torch
from torch import Tensor

from simtool.losses._checks import check_kind
from simtool.losses._geometry import TripletGeometry, triplet_geometry, zero_loss

__all__ = ["LabelledLoss", "PairTermLoss"]


class LabelledLoss(torch.nn.Module):
    """Base of the triplet-label losses (convention ``labelled``).

    ``loss(embeddings, triplets, kind) -> scalar``:

    * ``embeddings``: ``(B, D)`` L2-normalised rows, or ``(B, R, D)`` for R independent
      repetitions (the psycho model's output);
    * ``triplets``: int64 ``(T, 3)`` row indices into ``embeddings`` (or ``(R, T, 3)``, one set per
      repetition): ``(anchor, closer, farther)`` for ``kind="directed"``, ``(pair, pair, odd)`` for
      ``kind="odd-one-out"``;
    * result: the mean over the T triplets of the per-triplet loss, **summed over the R
      repetitions** (so each repetition's gradient is exactly that of its own mean loss, as if it
      were trained alone). ``T = 0`` gives a zero that keeps the graph.

    :meth:`per_triplet` gives the ``(T,)`` (or ``(R, T)``) losses themselves. Subclasses implement
    :meth:`directed` and :meth:`odd_one_out` on a :class:`~simtool.losses._geometry.TripletGeometry`
    (tensors ``(R, T)``), returning the ``(R, T)`` per-triplet losses.
    """

    convention = "labelled"
    name = "labelled"

    def directed(self, g: TripletGeometry) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def odd_one_out(self, g: TripletGeometry) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def per_triplet(self, embeddings: Tensor, triplets: Tensor, kind: str) -> Tensor:
        """Per-triplet losses: ``(T,)`` for 2-D embeddings, ``(R, T)`` for ``(B, R, D)``."""
        check_kind(kind)
        with torch.autocast(device_type=embeddings.device.type, enabled=False):  # margins need float32
            g = triplet_geometry(embeddings, triplets)
            out = self.directed(g) if kind == "directed" else self.odd_one_out(g)
        return out.squeeze(0) if embeddings.dim() == 2 else out

    def forward(self, embeddings: Tensor, triplets: Tensor, kind: str) -> Tensor:
        losses = self.per_triplet(embeddings, triplets, kind)
        if losses.shape[-1] == 0:
            return zero_loss(embeddings)
        per_rep = losses.mean(-1)
        return per_rep.sum() if per_rep.dim() else per_rep


class PairTermLoss(LabelledLoss):
    """A labelled loss made of one :meth:`term` on (labelled pair, other pair)::

        directed     l = term(x01, x02)
        odd-one-out  l = ( term(x01, x02) + term(x01, x12) ) / 2

    where ``x`` are the triplet's Euclidean distances ``d`` (``measure = "distances"``) or dot
    products ``s`` (``measure = "similarities"``): the labelled pair (0, 1) against the other pair
    of a directed triplet, and against each of the two pairs with the odd one."""

    measure = "distances"

    def term(self, x_pair: Tensor, x_other: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Elementwise loss of the labelled pair's ``x_pair`` against another pair's ``x_other``."""
        raise NotImplementedError

    def _x(self, g: TripletGeometry, pair: str) -> Tensor:
        return getattr(g, ("d" if self.measure == "distances" else "s") + pair)

    def directed(self, g: TripletGeometry) -> Tensor:
        return self.term(self._x(g, "01"), self._x(g, "02"))

    def odd_one_out(self, g: TripletGeometry) -> Tensor:
        x01 = self._x(g, "01")
        return 0.5 * (self.term(x01, self._x(g, "02")) + self.term(x01, self._x(g, "12")))
