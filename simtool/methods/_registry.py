"""The method registry and the train spec union built from it.

A method registers itself, in its own file, with its spec, its presets and its default data::

    class MySpec(CommonSpec):                 # the method's part of the train spec
        method: Literal["mine"] = "mine"
        ...

    @register_method("mine", MySpec, presets={"mine_default": {"description": "...", "loop": {...}}},
                     default_dataset="")      # without --data: the toy world ("" = its videos,
    class Mine(Method): ...                   # "triplets" = its triplets dataset, DIR/triplets)

The spec joins the discriminated union of train specs (on ``method``, :func:`train_spec_type`), the
presets join ``simtool train --list-presets`` and ``simtool train --preset mine_default`` trains it.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field, TypeAdapter, ValidationError

from simtool.errors import UserError
from simtool.registry import Registry


def _check(name: str, factory, meta: dict) -> None:
    spec = meta.get("spec")
    method_field = getattr(spec, "model_fields", {}).get("method")
    if method_field is None or method_field.default != name:
        raise ValueError(f"the spec of method {name!r} needs method: Literal[{name!r}] = {name!r}")
    meta["presets"] = {k: dict(v, method=name) for k, v in (meta.get("presets") or {}).items()}


METHODS = Registry("method", "simtool.methods", unknown="Unknown method {name!r}; choose one of: {choices}.", check=_check,
                   defaults={"presets": {}, "default_dataset": ""})


def register_method(name: str, spec: type, presets: dict[str, dict] | None = None, default_dataset: str = ""):
    """Class decorator registering a :class:`~simtool.engine.method.Method` with its spec, presets and
    default dataset (the part of the default toy world it trains on without ``--data``)."""
    return METHODS.register(name, spec=spec, presets=dict(presets or {}), default_dataset=default_dataset)


def unregister_method(name: str) -> None:
    """Remove a method (tests register temporary ones)."""
    METHODS.unregister(name)


def get_method(name: str):
    return METHODS.get(name)


def build_method(spec, device, dist, console):
    """The engine's factory: the registered Method for ``spec.method``."""
    return get_method(spec.method).obj(spec, device=device, dist=dist, console=console)


# -- the train spec union ------------------------------------------------------------------------

_CACHE: dict = {"version": None, "adapter": None}


def train_spec_type():
    """The union type of every registered method's spec (the class itself when only one is registered)."""
    classes = tuple(entry.spec for entry in METHODS.entries())
    if len(classes) == 1:
        return classes[0]
    return Annotated[Union[classes], Field(discriminator="method")]


def _adapter() -> TypeAdapter:
    METHODS.load_builtin()
    if _CACHE["version"] != METHODS.version:
        _CACHE["adapter"] = TypeAdapter(train_spec_type())
        _CACHE["version"] = METHODS.version
    return _CACHE["adapter"]


def validate_train_spec(data: dict, source: str = "train spec"):
    """Validate a resolved train spec dict; one :class:`UserError` sentence on any problem."""
    from simtool.specs.base import format_validation_error

    if not isinstance(data, dict):
        raise UserError(f"The {source} must be a mapping of keys to values.")
    method = data.get("method")
    names = METHODS.names()
    if method is None:
        raise UserError(f"The {source} names no method; set method: to one of {', '.join(names)} (presets do this for you).")
    if method not in METHODS:
        raise UserError(f"Unknown method {method!r} in the {source}; choose one of: {', '.join(names)}.")
    try:
        return _adapter().validate_python(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, METHODS.get(method).spec, source, strip_tags=set(names))) from None
