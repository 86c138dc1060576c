"""The train spec: :class:`~simtool.specs.common.CommonSpec` plus the part of the method named by ``method:``.

Every registered method contributes a subclass of ``CommonSpec`` with ``method: Literal[name]``;
:func:`train_spec_type` unites them in a pydantic discriminated union on ``method`` and
:func:`validate_train_spec` validates a resolved dict against it.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter, ValidationError

from simtool.errors import UserError
from simtool.specs.base import format_validation_error
from simtool.specs.common import CommonSpec

_CACHE: dict[str, Any] = {"version": None, "adapter": None}


def train_spec_type():
    """The union type of every registered method's spec (the class itself when only one is registered)."""
    from simtool.methods import METHODS, load_builtin

    load_builtin()
    classes = tuple(entry.spec for entry in METHODS.values())
    if len(classes) == 1:
        return classes[0]
    return Annotated[Union[classes], Field(discriminator="method")]


def _adapter() -> TypeAdapter:
    from simtool.methods import registry_version

    version = registry_version()
    if _CACHE["version"] != version:
        _CACHE["adapter"] = TypeAdapter(train_spec_type())
        _CACHE["version"] = version
    return _CACHE["adapter"]


def validate_train_spec(data: dict, source: str = "train spec") -> CommonSpec:
    """Validate a resolved train spec dict; one :class:`UserError` sentence on any problem."""
    from simtool.methods import METHODS, load_builtin

    load_builtin()
    if not isinstance(data, dict):
        raise UserError(f"The {source} must be a mapping of keys to values.")
    method = data.get("method")
    if method is None:
        raise UserError(f"The {source} names no method; set method: to one of {', '.join(sorted(METHODS))} (presets do this for you).")
    if method not in METHODS:
        raise UserError(f"Unknown method {method!r} in the {source}; choose one of: {', '.join(sorted(METHODS))}.")
    try:
        return _adapter().validate_python(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, METHODS[method].spec, source, strip_tags=set(METHODS))) from None
