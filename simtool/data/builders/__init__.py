"""Dataset builders for ``simtool build-data``: one module per ``--format``, registered by name.

A builder is ``fn(spec, progress=None, ctx=None) -> dict`` that writes ``spec.out`` and returns a
summary with at least ``out``, ``images``, ``categories`` and ``seconds`` (and ``message``, one
line for the user). ``progress(done, total, what)`` reports progress (``total`` 0 = unknown);
``ctx`` is a :class:`simtool.data.builders.parts.BuildContext` (shard, merge-only, warnings).
Image builders run on :func:`simtool.data.builders.parts.run_image_build` (parallel, resumable,
sharded); the toy world is rendered in memory. Each registers itself with its spec
(``_registry.py``); the package is scanned for them.
"""

from simtool.data.builders._registry import BUILDERS, build_dataset, build_spec_type, format_lines, image_formats, register_builder, resolve_build_spec


def load_builders() -> None:
    BUILDERS.load_builtin()


__all__ = ["BUILDERS", "build_dataset", "build_spec_type", "format_lines", "image_formats", "register_builder", "resolve_build_spec"]
