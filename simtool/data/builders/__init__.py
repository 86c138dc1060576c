"""Dataset builders for ``simtool build-data``: one module per ``--format``, registered by name.

A builder is ``fn(spec, progress=None) -> dict`` that writes ``spec.out`` (through
:class:`simtool.formats.dataset_dir.DatasetWriter`) and returns a summary with at least
``out``, ``images``, ``categories`` and ``seconds``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from simtool.errors import UserError

BUILDERS: dict[str, Callable[..., dict]] = {}


def register_builder(name: str):
    def deco(fn):
        BUILDERS[name] = fn
        return fn

    return deco


def build_dataset(spec, progress=None) -> dict:
    """Run the builder of ``spec.format`` (a validated build-data spec)."""
    from simtool.data.builders import toyworld  # noqa: F401 - registers the built-in builders

    try:
        builder = BUILDERS[spec.format]
    except KeyError:
        raise UserError(f"Unknown --format {spec.format!r}; choose one of: {', '.join(sorted(BUILDERS))}.") from None
    out = Path(spec.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"The output {out} already exists; choose another --out or delete it first.")
    return builder(spec, progress=progress)
