"""Spec machinery shared by every command.

A spec is a pydantic v2 model with ``extra="forbid"``. It is resolved in layers, later layers
winning: preset YAML → profile YAML → ``--config FILE`` → ``--set a.b=value`` → explicit CLI flags.
Validation errors become one :class:`~simtool.errors.UserError` sentence naming the field, the
value and what is allowed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Iterable, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from simtool.errors import UserError

S = TypeVar("S", bound="Spec")

#: A seed of numpy's and torch's generators: a whole number from 0 to 2**32 - 1 (numpy refuses
#: negative seeds, so the spec does, with the field's name, before any work starts).
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]


class Spec(BaseModel):
    """Base of every spec: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


def deep_merge(base: dict, update: dict) -> dict:
    """Recursively merge ``update`` into a copy of ``base`` (dicts merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_yaml(path: str | Path, what: str = "config file") -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"The {what} {path} does not exist; pass the path of a YAML file.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "syntax error"
        raise UserError(f"The {what} {path} is not valid YAML ({first}); fix the file.") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"The {what} {path} must hold a mapping of keys to values, not {type(data).__name__}.")
    return data


def parse_set(items: Iterable[str]) -> dict:
    """Turn ``["a.b=1", "c=[x, y]"]`` into a nested dict; values are parsed as YAML scalars/lists."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--set {item!r} is not of the form key.path=value; write e.g. --set stream.p_change_room=0.2.")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise UserError(f"--set {item!r} has an empty key; write e.g. --set stream.p_change_room=0.2.")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {item!r} conflicts with another --set for {part!r}.")
        node[parts[-1]] = value
    return out


def _field_choices(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """Valid keys at the level of ``loc`` in ``model`` (used to suggest fixes for unknown keys)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            ann = current.model_fields[part].annotation
            current = ann
        else:
            return None
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return None


def format_validation_error(exc: ValidationError, model: type[BaseModel], source: str = "spec", strip_tags: set[str] | None = None) -> str:
    """One readable sentence per problem; the first problem leads.

    ``strip_tags``: discriminator values that pydantic puts first in the location of an error
    inside a tagged union member (e.g. the method name); they are not part of the key path.
    """
    messages = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err.get("loc", ()))
        if strip_tags and loc and loc[0] in strip_tags:
            loc = loc[1:]
        field = ".".join(loc) or "(top level)"
        etype = err.get("type", "")
        if etype == "extra_forbidden":
            choices = _field_choices(model, loc)
            hint = f"; valid keys here are: {', '.join(choices)}" if choices else ""
            messages.append(f"Unknown key {field!r} in the {source}{hint}.")
            continue
        value = err.get("input")
        msg = err.get("msg", "is invalid")
        shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
        messages.append(f"Invalid value {shown} for {field!r} in the {source}: {msg}.")
    if not messages:
        return f"The {source} is invalid."
    if len(messages) == 1:
        return messages[0]
    return messages[0] + f" ({len(messages) - 1} more problem(s): " + " ".join(messages[1:]) + ")"


def validate(model: type[S], data: dict, source: str = "spec") -> S:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, model, source)) from exc


# Declares a spec field *run-only*: it says where or how fast a run ran, not what it learned
# (``Field(..., json_schema_extra=RUN_ONLY)``); ``compare`` ignores such keys when it looks for
# settings that differ between runs (:func:`run_only_paths`).
RUN_ONLY = {"run_only": True}


def run_only_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted paths of the fields of ``model`` (and of its nested specs) declared with :data:`RUN_ONLY`."""
    out: list[str] = []
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and extra.get("run_only"):
            out.append(prefix + name)
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.extend(run_only_paths(ann, prefix + name + "."))
    return out


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
