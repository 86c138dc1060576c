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

:data:`LOSSES` maps the names used in specs to classes; :func:`create_loss` builds one from a name
and keyword options and gives one clear sentence for an unknown name or option.
"""

from __future__ import annotations

import inspect

from torch import nn

from simtool.errors import UserError

CONVENTIONS = ("pair", "labelled", "relational")
LOSSES: dict[str, type[nn.Module]] = {}


def register_loss(name: str):
    """Class decorator: register a loss module under ``name`` (it must declare ``convention``)."""

    def deco(cls):
        if getattr(cls, "convention", None) not in CONVENTIONS:
            raise TypeError(f"loss {name!r} must declare convention = one of {CONVENTIONS}")
        LOSSES[name] = cls
        return cls

    return deco


def create_loss(name: str, **kwargs) -> nn.Module:
    """Instantiate the loss registered as ``name`` with keyword options ``kwargs``.

    Raises:
        UserError: ``name`` is not in :data:`LOSSES`, or an option is not accepted by that loss.
    """
    try:
        cls = LOSSES[name]
    except (KeyError, TypeError):
        valid = ", ".join(sorted(LOSSES))
        raise UserError(f"Unknown loss {name!r}; choose one of: {valid}.") from None
    signature = inspect.signature(cls)
    params = [p for p in signature.parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    try:
        signature.bind(**kwargs)
    except TypeError:
        unknown = sorted(set(kwargs) - {p.name for p in params})
        options = ", ".join(p.name for p in params) or "none"
        what = f"option(s) {', '.join(map(repr, unknown))}" if unknown else "options"
        raise UserError(f"Loss {name!r} does not accept {what}; its options are: {options}.") from None
    return cls(**kwargs)


# The built-in losses register themselves on import.
from simtool.losses.ntxent import NTXentLoss, nt_xent  # noqa: E402
from simtool.losses import (  # noqa: E402, F401 - triplet-label (labelled) and teacher-student (relational) losses
    double_contrastive,
    double_margin,
    double_multisimilarity,
    mtt,
    relaxed_contrastive,
    relaxed_facenet,
    relaxed_infonce,
    relaxed_multisimilarity,
    relaxed_triplet,
    rkd,
    ste,
    stmr,
    triplet,
)

__all__ = ["CONVENTIONS", "LOSSES", "register_loss", "create_loss", "NTXentLoss", "nt_xent"]
