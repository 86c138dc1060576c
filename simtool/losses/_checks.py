"""Option and argument checks of the losses and miners: one clear :class:`~simtool.errors.UserError` each.

Infrastructure, not a loss (the registry's package scan skips ``_`` modules):

* :func:`check_kind`: the triplet kind of the ``labelled`` convention, one of :data:`KINDS`;
* :func:`positive`, :func:`finite`: a numeric option as a float (``> 0`` / ``>= 0``, or finite);
* :func:`check_chunk`: the ``chunk`` option of the losses over ``B x B x B`` triples (anchors per chunk).
"""

from __future__ import annotations

import math

from simtool.errors import UserError
from simtool.formats.triplets import TRIPLET_KINDS

__all__ = ["KINDS", "check_kind", "positive", "finite", "check_chunk"]

KINDS = TRIPLET_KINDS


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise UserError(f"Unknown triplet kind {kind!r}; use 'directed' (anchor, closer, farther) or 'odd-one-out' (pair, pair, odd).")
    return kind


def positive(name: str, value, loss: str, allow_zero: bool = False) -> float:
    """``value`` as a finite float > 0 (>= 0 with ``allow_zero``), else one clear UserError."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise UserError(f"The {loss} option {name}={value!r} is invalid; use a number {bound}.")
    return v


def finite(name: str, value, loss: str) -> float:
    """``value`` as a finite float, else one clear UserError."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not math.isfinite(v):
        raise UserError(f"The {loss} option {name}={value!r} is invalid; use a finite number.")
    return v


def check_chunk(chunk, loss: str) -> int | None:
    """``chunk`` (anchors per chunk) as an int >= 1, or ``None`` (the loss picks one)."""
    if chunk is None:
        return None
    if isinstance(chunk, bool) or int(chunk) < 1:
        raise UserError(f"The {loss} option chunk={chunk!r} is invalid; use an integer >= 1 (anchors per chunk) or leave it unset.")
    return int(chunk)
