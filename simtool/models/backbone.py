"""Backbones: any timm model by name, with pretrained weights from timm or a local file."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from simtool.errors import UserError


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a foreign ``.pth``/``.pt`` (weights only, never pickle)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"The weights file {path} does not exist; set model.pretrained to false, true or an existing file.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling refusal is the user's file
        raise UserError(f"Could not read {path} as plain tensors ({type(exc).__name__}); convert it to .safetensors.") from exc
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise UserError(f"{path} does not hold a state dict of tensors; convert it to .safetensors.")
    return {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def similar_timm_names(name: str, n: int = 6) -> list[str]:
    """Up to ``n`` timm architectures whose names look like ``name`` (its pretrained tag dropped)."""
    import timm

    from simtool.registry import close_matches

    return close_matches(name.split(".")[0], timm.list_models(), n=n)


def check_backbone(name: str) -> None:
    """One sentence, naming the closest timm architectures, when ``name`` is no timm model; called
    before any data is read so that a typo costs a second, not a dataset scan."""
    import timm

    if not timm.is_model(name):
        close = similar_timm_names(name)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"Unknown backbone {name!r} for model.backbone; use any timm model name (see timm.list_models()).{hint}")


def create_backbone(name: str, pretrained: bool | str = False, zero_init_last: bool | None = None) -> nn.Module:
    """A timm model without its classifier (``num_classes=0``); ``.num_features`` is its output width.

    ``pretrained``: ``False`` (random init), ``True`` (timm's weights, needs a download) or a path to
    a ``.safetensors``/``.pth`` file whose keys match the timm model. ``zero_init_last`` (ResNet
    family only; ``None`` = timm's default, True): zero-initialise the last BatchNorm of every
    residual block. The torchvision-style ResNet of the ICDL code does not (``False``).
    """
    import timm
    from timm.models import is_model_in_modules

    check_backbone(name)
    use_timm = pretrained is True or (isinstance(pretrained, str) and pretrained.lower() == "true")
    extra = {"zero_init_last": bool(zero_init_last)} if zero_init_last is not None and is_model_in_modules(name, ["resnet"]) else {}
    try:
        model = timm.create_model(name, pretrained=use_timm, num_classes=0, **extra)
    except Exception as exc:  # noqa: BLE001 - download failures come in many types
        if use_timm:
            raise UserError(
                f"Could not download pretrained weights for {name} ({type(exc).__name__}); without internet, "
                "set model.pretrained to a local .safetensors/.pth file or to false."
            ) from exc
        raise
    if isinstance(pretrained, str) and pretrained.lower() not in ("true", "false"):
        state = load_weights_file(pretrained)
        own = model.state_dict()
        state = {k: v for k, v in state.items() if k in own}
        if not state:
            raise UserError(f"No tensor in {pretrained} matches the parameters of {name}; check the architecture.")
        missing, _ = model.load_state_dict(state, strict=False)
        if len(missing) > len(own) // 2:
            raise UserError(f"{pretrained} covers only {len(own) - len(missing)} of {len(own)} tensors of {name}; check the architecture.")
    return model
