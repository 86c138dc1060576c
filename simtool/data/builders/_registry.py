"""The builder registry of ``simtool build-data`` and the build spec union built from it.

A builder registers itself, in its own file, with the spec of its ``--format``::

    class MineBuildSpec(ImageBuildBase):          # simtool.specs.data; ImageBuildBase: it reads image files
        \"\"\"``--format mine SRC``: one line for the CLI help.\"\"\"
        format: Literal["mine"]
        mine: MineOptions = MineOptions()          # its own section (optional)

    @register_builder("mine", spec=MineBuildSpec)
    def build_mine(spec, progress=None, ctx=None) -> dict: ...

``build-data --help`` lists the formats from here (the first line of each spec's docstring), the
build spec union (:func:`build_spec_type`) is made of the registered specs, and a format whose spec
derives from :class:`~simtool.specs.data.ImageBuildBase` reads image files (resumable parts,
``--shard``/``--merge``, ``--max-side``).
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from simtool.errors import UserError
from simtool.registry import Registry
from simtool.specs.base import deep_merge, load_yaml, parse_set, validate
from simtool.specs.data import BuildBase, ImageBuildBase


def _check(name: str, fn, meta: dict) -> None:
    spec = meta.get("spec")
    if not (isinstance(spec, type) and issubclass(spec, BuildBase)) or spec.model_fields["format"].annotation is str:
        raise ValueError(f"builder {name!r} needs spec=<a BuildBase subclass with format: Literal[{name!r}]>")
    meta["reads_images"] = issubclass(spec, ImageBuildBase)


BUILDERS = Registry("format", "simtool.data.builders", unknown="Unknown --format {name!r}; choose one of: {choices}.", check=_check)


def register_builder(name: str, spec: type):
    """Decorator registering ``fn(spec, progress=None, ctx=None) -> summary dict`` as ``--format name``."""
    return BUILDERS.register(name, spec=spec)


def image_formats() -> list[str]:
    """The formats that read image files."""
    return [e.name for e in BUILDERS.entries() if e.reads_images]


def format_lines() -> list[str]:
    """One line per format for ``build-data --help``: the first line of its spec's docstring."""
    lines = []
    for e in BUILDERS.entries():
        doc = (e.spec.__doc__ or "").strip().splitlines()
        lines.append(doc[0].replace("``", "") if doc else f"--format {e.name}")
    return lines


def build_spec_type():
    """The build-data spec: a union of the registered formats' specs, discriminated by ``format``."""
    classes = tuple(e.spec for e in BUILDERS.entries())
    return classes[0] if len(classes) == 1 else Annotated[Union[classes], Field(discriminator="format")]


def resolve_build_spec(
    fmt: str,
    out: str,
    source: str | None = None,
    config: str | None = None,
    sets: list[str] | None = None,
    seed: int | None = None,
    options: dict | None = None,
):
    """The build-data spec of ``--format fmt``: config file -> --set -> flags (later wins).

    ``options`` maps CLI flags (``"--max-side"``, ``"--kind"``, ...) to values (None = not given):
    a flag names a top-level key of the format's spec (``max_side``) or a key of its options
    section (``triplets.kind``); a flag the format does not have is one error sentence.
    """
    if fmt not in BUILDERS:
        raise UserError(f"Unknown --format {fmt!r}; choose one of: {', '.join(BUILDERS.names())}.")
    cls = BUILDERS.get(fmt).spec
    merged: dict = {}
    if config:
        merged = deep_merge(merged, load_yaml(config))
    merged = deep_merge(merged, parse_set(sets or []))
    merged.update({"format": fmt, "out": str(out)})
    if source is not None:
        merged["source"] = str(source)
    if seed is not None:
        merged["seed"] = seed
    section = cls.model_fields.get(fmt)
    section_cls = section.annotation if section is not None else None
    for flag, value in (options or {}).items():
        if value is None:
            continue
        key = flag.lstrip("-").replace("-", "_")
        if key in cls.model_fields and key not in ("format", "out", fmt):
            merged[key] = value
        elif section_cls is not None and key in section_cls.model_fields:
            merged.setdefault(fmt, {})
            if not isinstance(merged[fmt], dict):
                raise UserError(f"The {fmt!r} section of the build-data spec must be a mapping.")
            merged[fmt][key] = value
        else:
            owners = [e.name for e in BUILDERS.entries() if key in e.spec.model_fields
                      or (e.name in e.spec.model_fields and key in e.spec.model_fields[e.name].annotation.model_fields)]
            where = f"it is an option of --format {', '.join(owners)}" if owners else "see simtool build-data --help"
            raise UserError(f"{flag} does not apply to --format {fmt}; {where}.")
    return validate(cls, merged, "build-data spec")


def build_dataset(spec, progress=None, ctx=None) -> dict:
    """Run the builder of ``spec.format`` (a validated build-data spec)."""
    entry = BUILDERS.get(spec.format)
    if ctx is not None and (ctx.shard is not None or ctx.merge_only) and not entry.reads_images:
        raise UserError(f"--shard and --merge apply to the formats that read images ({', '.join(image_formats())}), not to --format {spec.format}.")
    from simtool.formats.build_dir import build_lock, work_dir
    from simtool.io import check_writable

    out = check_writable(spec.out, "the dataset directory")
    with build_lock(out, ctx.shard if ctx is not None else None):
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            extra = f" (a finished build; {work_dir(out)} can be deleted)" if work_dir(out).is_dir() else ""
            raise UserError(f"The output {out} already exists{extra}; choose another --out or delete it first.")
        return entry.obj(spec, progress=progress, ctx=ctx)
