"""Weights files: a safetensors state dict whose metadata carries the model card.

Metadata keys (all strings, as safetensors requires): ``simtool`` (version), ``card`` (JSON: the
registered model name, its constructor arguments, the layers it exposes, the input it expects, the
dataset it was trained on, and what the method adds), ``spec`` (JSON: the resolved train spec).
Nothing here is a pickle. Any damage (a truncated or overwritten file) is one :class:`UserError`
naming the file and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

from simtool.errors import UserError
from simtool.io import atomic_path

CARD_KEY = "card"
SPEC_KEY = "spec"


def _damaged(path: Path, hint: str, exc: BaseException | None = None) -> UserError:
    why = f" ({str(exc).splitlines()[0]})" if exc is not None and str(exc) else ""
    return UserError(f"The weights file {path} is damaged or not a safetensors file{why}; {hint}.")


def write_weights(path: str | Path, state: dict, metadata: dict[str, str]) -> None:
    """Write ``state`` (name → CPU tensor) with string ``metadata``, atomically."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)


def read_metadata(path: str | Path, hint: str = "train the run again or resume it") -> dict[str, str]:
    """The metadata of a safetensors file (validates its header)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError(f"The weights file {path} does not exist; {hint}.")
    try:
        with safe_open(str(path), "pt") as fh:
            return dict(fh.metadata() or {})
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise _damaged(path, hint, exc) from None


def read_card(path: str | Path, hint: str = "train the run again or resume it") -> dict:
    meta = read_metadata(path, hint)
    try:
        card = json.loads(meta[CARD_KEY])
    except (KeyError, ValueError):
        raise UserError(f"The weights file {path} has no model card; it was not written by this simtool ({hint}).") from None
    return card


def read_state(path: str | Path, hint: str = "train the run again or resume it") -> dict:
    """All tensors of a safetensors file on the CPU."""
    from safetensors.torch import load_file

    path = Path(path)
    read_metadata(path, hint)
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001
        raise _damaged(path, hint, exc) from None
