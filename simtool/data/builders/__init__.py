"""Dataset builders for ``simtool build-data``: one module per ``--format``, registered by name.

A builder is ``fn(spec, progress=None, ctx=None) -> dict`` that writes ``spec.out`` and returns a
summary with at least ``out``, ``images``, ``categories`` and ``seconds`` (and ``message``, one
line for the user). ``progress(done, total, what)`` reports progress (``total`` 0 = unknown);
``ctx`` is a :class:`simtool.data.builders.common.BuildContext` (shard, merge-only, warnings).
Image builders run on :func:`simtool.data.builders.common.run_image_build` (parallel, resumable,
sharded); the toy world is rendered in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from simtool.errors import UserError

BUILDERS: dict[str, Callable[..., dict]] = {}
IMAGE_FORMATS = ("mvimgnet", "icdl", "imagefolder", "cub", "cars", "sop", "triplets")


def register_builder(name: str):
    def deco(fn):
        BUILDERS[name] = fn
        return fn

    return deco


def load_builders() -> None:
    """Import the built-in builder modules (each registers itself)."""
    from simtool.data.builders import classes, icdl, mvimgnet, rooms, toyworld, triplets  # noqa: F401


def build_dataset(spec, progress=None, ctx=None) -> dict:
    """Run the builder of ``spec.format`` (a validated build-data spec)."""
    load_builders()
    try:
        builder = BUILDERS[spec.format]
    except KeyError:
        raise UserError(f"Unknown --format {spec.format!r}; choose one of: {', '.join(sorted(BUILDERS))}.") from None
    if ctx is not None and (ctx.shard is not None or ctx.merge_only) and spec.format not in IMAGE_FORMATS:
        raise UserError(f"--shard and --merge apply to the formats that read images ({', '.join(IMAGE_FORMATS)}), not to --format {spec.format}.")
    out = Path(spec.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        from simtool.data.builders.common import work_dir

        extra = f" (a finished build; {work_dir(out)} can be deleted)" if work_dir(out).is_dir() else ""
        raise UserError(f"The output {out} already exists{extra}; choose another --out or delete it first.")
    return builder(spec, progress=progress, ctx=ctx)
