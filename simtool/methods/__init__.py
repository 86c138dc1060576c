"""Training methods (research lines), registered by name.

Adding a method takes one registration and no change to the engine or the CLI::

    class MySpec(CommonSpec):                 # the method's part of the train spec
        method: Literal["mine"] = "mine"
        ...

    @register_method("mine", MySpec, presets={"mine_default": {"description": "...", "loop": {...}}})
    class Mine(Method):                       # simtool.engine.method.Method
        ...

The spec joins the discriminated union of train specs (on ``method``), the presets join
``simtool train --list-presets`` (YAML presets shipped in ``simtool/specs/presets`` name their
method the same way) and ``simtool train --preset mine_default`` trains it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from simtool.errors import UserError


@dataclass
class MethodEntry:
    name: str
    spec: type
    factory: Callable  # (spec, device=, dist=, console=) -> Method
    presets: dict[str, dict] = field(default_factory=dict)


METHODS: dict[str, MethodEntry] = {}
_VERSION = [0]  # bumped on every registration (invalidates cached spec unions)


def register_method(name: str, spec: type, presets: dict[str, dict] | None = None):
    """Class decorator registering a :class:`~simtool.engine.method.Method` with its spec and presets."""
    method_field = spec.model_fields.get("method")
    if method_field is None or method_field.default != name:
        raise ValueError(f"the spec of method {name!r} needs method: Literal[{name!r}] = {name!r}")

    def deco(cls):
        METHODS[name] = MethodEntry(name, spec, cls, {k: dict(v, method=name) for k, v in (presets or {}).items()})
        _VERSION[0] += 1
        return cls

    return deco


def unregister_method(name: str) -> None:
    """Remove a method (tests register temporary ones)."""
    if METHODS.pop(name, None) is not None:
        _VERSION[0] += 1


def registry_version() -> int:
    load_builtin()
    return _VERSION[0]


def load_builtin() -> None:
    """Import the built-in methods so they register themselves."""
    from simtool.methods import time_ssl  # noqa: F401
    from simtool.methods import direct, distill, teacher  # noqa: F401 - the triplet-label route


def get_method(name: str) -> MethodEntry:
    load_builtin()
    try:
        return METHODS[name]
    except KeyError:
        raise UserError(f"Unknown method {name!r}; choose one of: {', '.join(sorted(METHODS))}.") from None


def build_method(spec, device, dist, console):
    """The engine's factory: the registered Method for ``spec.method``."""
    return get_method(spec.method).factory(spec, device=device, dist=dist, console=console)
