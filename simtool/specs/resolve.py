"""Resolving a command's spec from presets, profiles, ``--config``, ``--set`` and flags.

Train specs resolve in layers, later winning: **preset → profile → --config FILE → --set a.b=v →
flags**. The profile is the one named by ``--profile``; else the one the dataset's card names
(``build-data --format toyworld`` writes ``profile: toyworld``); else, when no dataset is given at
all (the built-in toy world), ``toyworld``. ``--profile none`` applies none. The resolved spec
records the profile in ``profile``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from simtool.errors import UserError
from simtool.specs.base import deep_merge, load_yaml, parse_set, validate

NO_PROFILE = "none"
TOY_PROFILE = "toyworld"


def _package_yaml(folder: str) -> dict[str, Path]:
    root = resources.files("simtool.specs") / folder
    return {p.name[: -len(".yaml")]: Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml")}


def _registered_presets() -> dict[str, dict]:
    from simtool.methods import METHODS, load_builtin

    load_builtin()
    return {name: data for entry in METHODS.values() for name, data in entry.presets.items()}


def list_presets() -> dict[str, str]:
    """Preset name → one-line description (shipped YAML presets and presets registered by methods)."""
    out = {name: str(load_yaml(path, "preset").get("description", "")) for name, path in _package_yaml("presets").items()}
    out.update({name: str(data.get("description", "")) for name, data in _registered_presets().items()})
    return dict(sorted(out.items()))


def load_preset(name: str) -> dict:
    registered = _registered_presets()
    if name in registered:
        data = dict(registered[name])
    else:
        presets = _package_yaml("presets")
        if name not in presets:
            choices = sorted(set(presets) | set(registered))
            raise UserError(f"Unknown preset {name!r}; choose one of: {', '.join(choices)} (see simtool train --list-presets).")
        data = load_yaml(presets[name], "preset")
    data.pop("description", None)
    return data


def list_profiles() -> dict[str, str]:
    return {name: str(load_yaml(path, "profile").get("description", "")) for name, path in sorted(_package_yaml("profiles").items())}


def load_profile(name: str, method: str) -> dict:
    """The part of profile ``name`` for ``method`` (profiles hold one section per method)."""
    profiles = _package_yaml("profiles")
    if name not in profiles:
        raise UserError(f"Unknown profile {name!r}; choose one of: {', '.join(sorted(profiles))} or none.")
    data = load_yaml(profiles[name], "profile")
    section = (data.get("methods") or {}).get(method) or {}
    if not isinstance(section, dict):
        raise UserError(f"The profile {name!r} has a malformed section for method {method!r}; it must be a mapping.")
    return section


def _card_profile(data_path: str) -> str | None:
    from simtool.formats.dataset_dir import read_card

    card = read_card(data_path)
    name = (card or {}).get("profile")
    return name if name in _package_yaml("profiles") else None


def resolve_train_spec(
    preset: str = "normal",
    config: str | None = None,
    sets: list[str] | None = None,
    data: str | None = None,
    seed: int | None = None,
    device: str | None = None,
    profile: str | None = None,
):
    """preset → profile → config file → --set → flags (see the module docstring)."""
    from simtool.specs.train import validate_train_spec

    base = deep_merge(load_preset(preset), {"preset": preset})
    user: dict = {}
    if config:
        user = deep_merge(user, load_yaml(config))
    user = deep_merge(user, parse_set(sets or []))
    flags: dict = {}
    if data is not None:
        flags.setdefault("data", {})["path"] = str(data)
    if seed is not None:
        flags["seed"] = seed
    if device is not None:
        flags["device"] = device
    data_path = (deep_merge(deep_merge(base, user), flags).get("data") or {}).get("path")
    if profile == NO_PROFILE:
        chosen = None
    elif profile:
        chosen = profile
    elif data_path is None:
        chosen = TOY_PROFILE
    else:
        chosen = _card_profile(str(data_path))
    layers = [base, load_profile(chosen, str(base.get("method"))) if chosen else {}, user, flags]
    merged: dict = {}
    for layer in layers:
        merged = deep_merge(merged, layer)
    merged["profile"] = chosen
    return validate_train_spec(merged, "train spec")


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
    from simtool.specs.data import BUILD_SPECS

    cls = BUILD_SPECS.get(fmt)
    if cls is None:
        raise UserError(f"Unknown --format {fmt!r}; choose one of: {', '.join(BUILD_SPECS)}.")
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
            owners = [name for name, c in BUILD_SPECS.items() if key in c.model_fields or (name in c.model_fields and key in c.model_fields[name].annotation.model_fields)]
            where = f"it is an option of --format {', '.join(owners)}" if owners else "see simtool build-data --help"
            raise UserError(f"{flag} does not apply to --format {fmt}; {where}.")
    return validate(cls, merged, "build-data spec")
