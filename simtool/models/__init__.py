"""Models, created by name from one registry (timm style), and the model card that reloads them.

``create_model(name, **kwargs)`` is the single front door. The model it returns remembers its
*card*: the registered name, the constructor arguments (minus those that only matter when a model
is first built, such as ``pretrained``) and the simtool version. The engine writes the card into the
metadata of every weights file, so :func:`load_model` rebuilds any run's model from its weights
alone, without knowing which method trained it.

A registered model is an ``nn.Module`` with ``layer_names`` (the layers it can expose) and
``embed(x, layers) -> {layer: (B, D)}`` (evaluation-mode features of normalised images).
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from torch import nn

from simtool import __version__
from simtool.errors import UserError
from simtool.models._registry import MODELS, register_model


def load_builtin() -> None:
    """Import the built-in models (every public module of this package registers its own)."""
    MODELS.load_builtin()


def _entry(name: str):
    return MODELS.get(name)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name``; it carries its card as ``model.simtool_card``."""
    entry = _entry(name)
    try:
        inspect.signature(entry.obj).bind(**kwargs)
    except TypeError as exc:
        raise UserError(f"Model {name!r} does not accept these arguments ({exc}).") from None
    model = entry.obj(**kwargs)
    card_kwargs = {k: v for k, v in kwargs.items() if k not in entry.build_only}
    json.dumps(card_kwargs)  # a card must be plain JSON
    model.simtool_card = {"model": name, "kwargs": card_kwargs, "simtool": __version__}
    return model


def model_from_card(card: dict) -> nn.Module:
    """Rebuild an (untrained) model from a card written by :func:`create_model`."""
    if not isinstance(card, dict) or "model" not in card or not isinstance(card.get("kwargs"), dict):
        raise UserError("The model card is incomplete (it needs 'model' and 'kwargs'); the weights were not written by simtool train.")
    return create_model(card["model"], **card["kwargs"])


def load_model(path, hint: str = "train the run again or resume it") -> nn.Module:
    """Rebuild a model from a weights file written by the engine (card + state), in eval mode on the CPU."""
    from simtool.formats.weights import read_card, read_state

    card = read_card(path, hint)
    model = model_from_card(card)
    state = read_state(path, hint)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"The weights in {path} do not fit the model its card describes ({str(exc).splitlines()[0]}); {hint}.") from None
    model.simtool_card = card
    return model.eval()

__all__ = ["MODELS", "register_model"]
