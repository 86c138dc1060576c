"""The loss and miner registries (see :mod:`simtool.losses` for the three calling conventions).

A loss is one file in ``simtool/losses/`` whose class is decorated with ``@register_loss("name")``
and declares ``convention``; a miner is a class decorated with ``@register_miner("name")``.
"""

from __future__ import annotations

import inspect

from torch import nn

from simtool.errors import UserError
from simtool.registry import Registry

CONVENTIONS = ("pair", "labelled", "relational")


def _check_loss(name: str, cls, meta: dict) -> None:
    if getattr(cls, "convention", None) not in CONVENTIONS:
        raise TypeError(f"loss {name!r} must declare convention = one of {CONVENTIONS}")


LOSSES = Registry("loss", "simtool.losses", unknown="Unknown loss {name!r}; choose one of: {choices}.", check=_check_loss)
MINERS = Registry("batch miner", "simtool.losses", unknown="Unknown batch miner {name!r}; choose one of: {choices} (or none).")


def register_loss(name: str):
    """Class decorator: register a loss module under ``name`` (it must declare ``convention``)."""
    return LOSSES.register(name)


def register_miner(name: str):
    """Class decorator: register a batch miner under ``name``."""
    return MINERS.register(name)


def create_loss(name: str, **kwargs) -> nn.Module:
    """Instantiate the loss registered as ``name`` with keyword options ``kwargs``.

    Raises:
        UserError: ``name`` is not in :data:`LOSSES`, or an option is not accepted by that loss.
    """
    cls = LOSSES.get(name).obj
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


def create_miner(name: str | None, options: dict | None = None):
    """The miner registered as ``name`` built with ``options``; ``None`` (or ``"none"``) gives ``None``."""
    if name is None or (isinstance(name, str) and name.lower() in ("none", "")):
        if options:
            raise UserError("miner_options were given but no miner; set miner: relaxed_sampling_matters or drop miner_options.")
        return None
    cls = MINERS.get(name).obj
    try:
        return cls(**(options or {}))
    except TypeError:
        allowed = ", ".join(p for p in inspect.signature(cls).parameters)
        raise UserError(f"The {name} miner does not accept miner_options {sorted(options or {})}; its options are: {allowed}.") from None
