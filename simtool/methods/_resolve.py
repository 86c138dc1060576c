"""Resolving a train spec from presets, profiles, ``--config``, ``--set`` and flags.

Train specs resolve in layers, later winning: **preset → profile → --config FILE → --set a.b=v →
flags**. The profile is the one named by ``--profile``; else the one the dataset's card names
(``build-data --format toyworld`` writes ``profile: toyworld``); else, when no dataset is given at
all (the built-in toy world), ``toyworld``. Without a dataset only the toy presets and the
self-supervised presets run (on the built-in toy world); the others need ``--data`` or an explicit
``--profile toyworld`` (:func:`falls_back_to_toy_world`). ``--profile none`` applies none. The resolved spec
records the profile in ``profile``. Presets are those of the table shipped in
``simtool/specs/presets/_table.yaml`` (:mod:`simtool.specs.presets`) and those methods register in
code (:func:`~simtool.methods.register_method`).
"""

from __future__ import annotations

from simtool.errors import UserError
from simtool.methods._registry import METHODS, validate_train_spec
from simtool.registry import close_matches
from simtool.specs.base import deep_merge, load_yaml, parse_set
from simtool.specs.presets import NO_PROFILE, TOY_PROFILE, load_profile, profile_names, read_yaml_preset, shipped_presets


def _registered_presets() -> dict[str, dict]:
    return {name: data for entry in METHODS.entries() for name, data in entry.presets.items()}


def list_presets() -> dict[str, str]:
    """Preset name → one-line description (shipped YAML presets and presets registered by methods)."""
    out = {name: str(data.get("description", "")) for name, data in shipped_presets().items()}
    out.update({name: str(data.get("description", "")) for name, data in _registered_presets().items()})
    return dict(sorted(out.items()))


def load_preset(name: str) -> dict:
    registered = _registered_presets()
    if name in registered:
        data = dict(registered[name])
    else:
        presets = shipped_presets()
        if name not in presets:
            choices = sorted(set(presets) | set(registered))
            close = close_matches(name, choices)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            see = f"{'S' if hint else 's'}ee simtool train --list-presets (--filter TEXT narrows the {len(choices)} presets)"
            raise UserError(f"Unknown preset {name!r}; {hint}{see}.")
        data = read_yaml_preset(name)
    data.pop("description", None)
    return data


def falls_back_to_toy_world(preset: str, method: str) -> bool:
    """Whether ``preset`` trains on the built-in toy world when no data is given: the toy presets
    (``toy_*``), and the presets of methods whose default data is the toy world's videos (the
    self-supervised ones, with the toy profile). A preset made for a real dataset (``things_p_ste``)
    needs ``--data`` or an explicit ``--profile toyworld``: it never lands on toy data silently."""
    if preset.startswith("toy_"):
        return True
    return method in METHODS and METHODS.get(method).default_dataset == ""


def _card_profile(data_path: str) -> str | None:
    from simtool.formats.dataset_dir import read_card

    card = read_card(data_path)
    name = (card or {}).get("profile")
    return name if name in profile_names() else None


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
    if data_path is None and profile != TOY_PROFILE and not falls_back_to_toy_world(preset, str(base.get("method"))):
        raise UserError(f"The preset {preset} is made for a real dataset: pass --data DIR (built with simtool build-data), "
                        f"or --profile {TOY_PROFILE} to try it on the built-in toy world.")
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
