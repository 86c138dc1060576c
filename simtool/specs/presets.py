"""The presets and profiles shipped as package data (``simtool/specs/presets``, ``profiles``).

Plain YAML access only: the train spec is resolved from them by :mod:`simtool.methods` (which adds
the presets that methods register in code). A profile holds one section per method.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from simtool.errors import UserError
from simtool.specs.base import load_yaml

NO_PROFILE = "none"
TOY_PROFILE = "toyworld"


def package_yaml(folder: str) -> dict[str, Path]:
    """Name → path of every ``*.yaml`` file in the package folder ``folder``."""
    root = resources.files("simtool.specs") / folder
    return {p.name[: -len(".yaml")]: Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml")}


def yaml_presets() -> dict[str, Path]:
    """Name → file of every shipped preset."""
    return package_yaml("presets")


def read_yaml_preset(name: str) -> dict:
    """The content of the shipped preset ``name`` (KeyError when there is none)."""
    return load_yaml(yaml_presets()[name], "preset")


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
