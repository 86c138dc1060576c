"""Resolving a command's spec from presets, profiles, ``--config``, ``--set`` and flags."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from simtool.errors import UserError
from simtool.specs.base import deep_merge, load_yaml, parse_set, validate
from simtool.specs.data import BuildDataSpec
from simtool.specs.train import TrainSpec


def _package_yaml(folder: str) -> dict[str, Path]:
    root = resources.files("simtool.specs") / folder
    return {p.name[: -len(".yaml")]: Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml")}


def list_presets() -> dict[str, str]:
    """Preset name → one-line description."""
    return {name: str(load_yaml(path, "preset").get("description", "")) for name, path in sorted(_package_yaml("presets").items())}


def load_preset(name: str) -> dict:
    presets = _package_yaml("presets")
    if name not in presets:
        raise UserError(f"Unknown preset {name!r}; choose one of: {', '.join(sorted(presets))} (see simtool train --list-presets).")
    data = load_yaml(presets[name], "preset")
    data.pop("description", None)
    return data


def load_profile(name: str) -> dict:
    data = load_yaml(_package_yaml("profiles")[name], "profile")
    data.pop("description", None)
    return data


def resolve_train_spec(
    preset: str = "normal",
    config: str | None = None,
    sets: list[str] | None = None,
    data: str | None = None,
    seed: int | None = None,
    device: str | None = None,
) -> TrainSpec:
    """preset → (toy-world profile when no data is named) → config file → --set → flags."""
    layers = [load_preset(preset), {"preset": preset}]
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
    merged = deep_merge(deep_merge(deep_merge(layers[0], layers[1]), user), flags)
    if (merged.get("data") or {}).get("path") is None:
        merged = deep_merge(deep_merge(deep_merge(deep_merge(layers[0], layers[1]), load_profile("toyworld")), user), flags)
        merged["profile"] = "toyworld"
    return validate(TrainSpec, merged, "train spec")


def resolve_build_spec(fmt: str, out: str, source: str | None = None, config: str | None = None, sets: list[str] | None = None, seed: int | None = None) -> BuildDataSpec:
    merged: dict = {}
    if config:
        merged = deep_merge(merged, load_yaml(config))
    merged = deep_merge(merged, parse_set(sets or []))
    merged.update({"format": fmt, "out": str(out)})
    if source is not None:
        merged["source"] = str(source)
    if seed is not None:
        merged["seed"] = seed
    return validate(BuildDataSpec, merged, "build-data spec")
