"""Losses: small modules sharing one calling convention, ``loss(z1, z2) -> scalar``.

``z1`` and ``z2`` are ``(B, D)`` embeddings of two views of the same ``B`` items (row ``i`` of each
is a positive pair). The registry :data:`LOSSES` maps the names used in specs to classes;
:func:`create_loss` builds one from a name and keyword options.
"""

from __future__ import annotations

import inspect

from torch import nn

from simtool.errors import UserError
from simtool.losses.ntxent import NTXentLoss, nt_xent

__all__ = ["LOSSES", "create_loss", "NTXentLoss", "nt_xent"]

LOSSES: dict[str, type[nn.Module]] = {
    "ntxent": NTXentLoss,
}


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
