"""The presets and profiles shipped as package data (``simtool/specs/presets``, ``profiles``).

Plain YAML access only: the train spec is resolved from them by :mod:`simtool.methods` (which adds
the presets that methods register in code). A profile holds one section per method.

The presets are generated from one table, ``presets/_table.yaml`` (its header says how to read it):
named ``bases`` that presets ``extends``, shared ``axes`` of choices (datasets, losses, backbones)
and ``matrices`` that make one preset per combination of choices, plus presets written out in full.
"""

from __future__ import annotations

import copy
import functools
import itertools
import re
from importlib import resources
from pathlib import Path

from simtool.errors import UserError
from simtool.specs.base import deep_merge, load_yaml

NO_PROFILE = "none"
TOY_PROFILE = "toyworld"
PRESET_TABLE = "_table.yaml"

_SECTIONS = ("bases", "axes", "matrices", "presets")
_MATRIX_KEYS = {"name", "description", "extends", "axes", "lookup"}
_CHOICE_KEYS = ("name", "label", "source")  # a choice's text in preset names and descriptions; not part of the preset
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def package_yaml(folder: str) -> dict[str, Path]:
    """Name → path of every ``*.yaml`` file in the package folder ``folder``."""
    root = resources.files("simtool.specs") / folder
    return {p.name[: -len(".yaml")]: Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml")}


class _TableError(Exception):
    """A problem of the preset table (becomes one UserError sentence naming the file)."""


def _mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _TableError(f"{where} must be a mapping, not {type(value).__name__}")
    return value


def _name_list(value, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _TableError(f"{where} must be a list of names")
    return value


class _Table:
    """The parsed table: resolves ``extends`` and expands the matrices."""

    def __init__(self, data: dict):
        unknown = sorted(set(data) - set(_SECTIONS))
        if unknown:
            raise _TableError(f"it has the unknown section(s) {', '.join(unknown)} (allowed: {', '.join(_SECTIONS)})")
        self.bases = _mapping(data.get("bases"), "bases")
        self.written = _mapping(data.get("presets"), "presets")
        self.axes = _mapping(data.get("axes"), "axes")
        self.matrices = _mapping(data.get("matrices"), "matrices")
        both = sorted(set(self.bases) & set(self.written))
        if both:
            raise _TableError(f"{', '.join(both)} is both a base and a preset")
        self._resolved: dict[str, dict] = {}

    def _named(self, name: str, chain: tuple[str, ...]) -> dict:
        """The base or written-out preset ``name`` with its ``extends`` applied."""
        if name in chain:
            raise _TableError(f"extends loops: {' -> '.join(chain + (name,))}")
        if name not in self._resolved:
            if name in self.bases:
                entry, where = self.bases[name], f"base {name}"
            elif name in self.written:
                entry, where = self.written[name], f"preset {name}"
            else:
                raise _TableError(f"{chain[-1] if chain else 'an entry'} extends {name!r}, which is neither a base nor a preset")
            self._resolved[name] = self._fragment(entry, where, chain + (name,))
        return self._resolved[name]

    def _fragment(self, entry, where: str, chain: tuple[str, ...] = ()) -> dict:
        """``entry`` (a partial preset) on top of what it extends; ``extends`` itself removed."""
        entry = _mapping(entry, where)
        out: dict = {}
        for parent in _name_list(entry.get("extends", []), f"the extends of {where}"):
            out = deep_merge(out, self._named(parent, chain or (where,)))
        return deep_merge(out, {k: v for k, v in entry.items() if k != "extends"})

    def _choices(self, matrix: str, axis: str, spec) -> dict[str, dict]:
        """Key → choice of ``axis`` in ``matrix``: a list picks from the shared axis, a mapping defines them."""
        where = f"the axis {axis} of matrix {matrix}"
        if axis == "name":
            raise _TableError(f"{where} may not be called name ({{name}} is the preset's name)")
        if isinstance(spec, list):
            shared = _mapping(self.axes.get(axis), f"axes.{axis}")
            if not shared:
                raise _TableError(f"{where} picks from the shared axis {axis}, which the axes section does not define")
            missing = [str(k) for k in spec if k not in shared]
            if missing:
                raise _TableError(f"{where} picks {', '.join(missing)}, which axes.{axis} does not hold")
            spec = {k: shared[k] for k in spec}
        spec = _mapping(spec, where)
        if not spec:
            raise _TableError(f"{where} has no choices")
        out = {}
        for key, choice in spec.items():
            choice = _mapping(choice, f"the choice {key} of {where}")
            for reserved in _CHOICE_KEYS:
                if reserved in choice and not isinstance(choice[reserved], str):
                    raise _TableError(f"the {reserved} of the choice {key} of {where} must be a string")
            out[str(key)] = choice
        return out

    @staticmethod
    def _fill(template, chosen: dict[str, tuple[str, dict]], where: str, name: str | None = None) -> str:
        if not isinstance(template, str):
            raise _TableError(f"{where} must be a string")

        def field(match: re.Match) -> str:
            axis, _, path = match.group(1).partition(".")
            if axis == "name" and not path and name is not None:
                return name
            if axis not in chosen:
                raise _TableError(f"{where} uses {{{match.group(1)}}}, but the matrix has no axis {axis}")
            key, choice = chosen[axis]
            if not path:
                return choice.get("name", key)
            node = {"name": key, "label": key, **choice}
            for part in path.split("."):
                if not isinstance(node, dict) or part not in node:
                    raise _TableError(f"{where} uses {{{match.group(1)}}}, but the choice {key} has no {path}")
                node = node[part]
            if isinstance(node, (dict, list)):
                raise _TableError(f"{where} uses {{{match.group(1)}}}, which is not a single value")
            return str(node)

        return _PLACEHOLDER.sub(field, template)

    @staticmethod
    def _lookup(field: str, spec, chosen: dict[str, tuple[str, dict]], where: str) -> dict:
        """``{a: {b: value}}`` for the lookup of the dotted ``field``."""
        spec = _mapping(spec, where)
        if set(spec) != {"by", "table"}:
            raise _TableError(f"{where} must hold exactly by (a list of axes) and table")
        node = spec["table"]
        for axis in _name_list(spec["by"], f"the by of {where}"):
            if not isinstance(node, dict):
                break
            if axis not in chosen:
                raise _TableError(f"{where} looks up by {axis}, which is not an axis of the matrix")
            key = chosen[axis][0]
            if key in node:
                node = node[key]
            elif "*" in node:
                node = node["*"]
            else:
                raise _TableError(f"{where} has no entry for {axis} {key} and no '*' entry")
        value: dict = {}
        target = value
        parts = field.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = copy.deepcopy(node)
        return value

    def _expand(self, matrix: str, entry) -> dict[str, dict]:
        entry = _mapping(entry, f"matrix {matrix}")
        where = f"matrix {matrix}"
        unknown = sorted(set(entry) - _MATRIX_KEYS)
        if unknown:
            raise _TableError(f"{where} has the unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(_MATRIX_KEYS))})")
        for required in ("name", "description", "axes"):
            if required not in entry:
                raise _TableError(f"{where} has no {required}")
        base = self._fragment({"extends": entry.get("extends", [])}, where)
        axes = {axis: self._choices(matrix, axis, spec) for axis, spec in _mapping(entry["axes"], f"the axes of {where}").items()}
        lookups = _mapping(entry.get("lookup"), f"the lookup of {where}")
        out: dict[str, dict] = {}
        for combo in itertools.product(*(list(choices.items()) for choices in axes.values())):
            chosen = dict(zip(axes, combo))
            name = self._fill(entry["name"], chosen, f"the name of {where}")
            preset = base
            for axis, (key, choice) in chosen.items():
                fragment = {k: v for k, v in choice.items() if k not in _CHOICE_KEYS}
                preset = deep_merge(preset, self._fragment(fragment, f"the choice {key} of the axis {axis} of {where}"))
            for field, spec in lookups.items():
                preset = deep_merge(preset, self._lookup(str(field), spec, chosen, f"the lookup {field} of {where}"))
            preset["description"] = self._fill(entry["description"], chosen, f"the description of {where}", name)
            if name in out:
                raise _TableError(f"{where} makes the name {name} twice")
            out[name] = preset
        return out

    def presets(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        origin: dict[str, str] = {}
        made = [(f"preset {name}", {str(name): self._named(str(name), ())}) for name in self.written]
        made += [(f"matrix {matrix}", self._expand(str(matrix), entry)) for matrix, entry in self.matrices.items()]
        for source, presets in made:
            for name, preset in presets.items():
                if name in out:
                    raise _TableError(f"the preset {name} is made by both {origin[name]} and {source}")
                if not isinstance(preset.get("description"), str) or not preset["description"].strip():
                    made_by = "" if source == f"preset {name}" else f" made by {source}"
                    raise _TableError(f"the preset {name}{made_by} has no description")
                out[name], origin[name] = preset, source
        return dict(sorted(out.items()))


def _table_path() -> Path:
    return Path(str(resources.files("simtool.specs") / "presets" / PRESET_TABLE))


@functools.cache
def _load_presets(path: Path) -> dict[str, dict]:
    data = load_yaml(path, "preset table")
    try:
        return _Table(data).presets()
    except _TableError as exc:
        raise UserError(f"The preset table {path} is malformed: {exc}.") from None


def shipped_presets() -> dict[str, dict]:
    """Name → full preset (with its ``description``) of every shipped preset, expanded from the table once.

    The dicts are shared by every caller: read them, or take a copy with :func:`read_yaml_preset`.
    """
    return dict(_load_presets(_table_path()))


def read_yaml_preset(name: str) -> dict:
    """A copy of the shipped preset ``name`` (KeyError when there is none)."""
    return copy.deepcopy(shipped_presets()[name])


def profile_names() -> list[str]:
    return sorted(package_yaml("profiles"))


def list_profiles() -> dict[str, str]:
    return {name: str(load_yaml(path, "profile").get("description", "")) for name, path in sorted(package_yaml("profiles").items())}


def load_profile(name: str, method: str) -> dict:
    """The part of profile ``name`` for ``method`` (profiles hold one section per method)."""
    profiles = package_yaml("profiles")
    if name not in profiles:
        raise UserError(f"Unknown profile {name!r}; choose one of: {', '.join(sorted(profiles))} or none.")
    data = load_yaml(profiles[name], "profile")
    section = (data.get("methods") or {}).get(method) or {}
    if not isinstance(section, dict):
        raise UserError(f"The profile {name!r} has a malformed section for method {method!r}; it must be a mapping.")
    return section
