"""Losses: one per file, registered by name, built with :func:`create_loss`.

Every loss declares one of three calling conventions (its class attribute ``convention``):

``pair``
    ``loss(z1, z2) -> scalar`` with ``z1``, ``z2`` of shape ``(B, D)``; row ``i`` of both is a
    positive pair and the other rows are negatives (NT-Xent).
``labelled``
    ``loss(embeddings, triplets, kind) -> scalar`` with ``embeddings`` ``(B, D)`` and ``triplets``
    an int64 index tensor ``(T, 3)`` into its rows: ``(anchor, closer, farther)`` for
    ``kind="directed"``, ``(pair member, pair member, odd one)`` for ``kind="odd-one-out"``.
    Class-labelled metric losses take ``(embeddings, labels (B,))`` under the same convention.
``relational``
    ``loss(student, teacher) -> scalar`` with ``student`` ``(B, E)`` and ``teacher``
    ``(B, R, D_t)``: R teacher repetitions whose distance matrices are averaged over R.

:data:`LOSSES` (a :class:`~simtool.registry.Registry`, in ``_registry.py``) maps the names used in
specs to classes; :func:`create_loss` builds one from a name and keyword options and gives one
clear sentence for an unknown name or option. Adding a loss is one file here with
``@register_loss("name")``: the package is scanned for its members, there is no list to extend.

The conventions' bases are templates: :class:`~simtool.losses.labelled.LabelledLoss` (a loss gives
``directed`` / ``odd_one_out`` per-triplet losses) and :class:`~simtool.losses.relational.RelationalLoss`
(a loss gives ``compute(geometry, generator)``). Modules starting with ``_`` are infrastructure and are
not scanned: ``_registry`` (the registries), ``_checks`` (option checks) and ``_geometry`` (distances,
teacher distances, margins, angles, masks, chunked sums, triplet-geometry kernels); every public module
only defines (and registers) losses, miners or their bases.
"""

from __future__ import annotations

from simtool.losses._registry import CONVENTIONS, LOSSES, MINERS, create_loss, create_miner, register_loss, register_miner
from simtool.losses.ntxent import NTXentLoss, nt_xent

__all__ = ["CONVENTIONS", "LOSSES", "MINERS", "register_loss", "register_miner", "create_loss", "create_miner", "NTXentLoss", "nt_xent"]
