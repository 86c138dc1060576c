"""Device and precision selection."""

from __future__ import annotations

import contextlib
import os

import torch

from simtool.errors import UserError


def resolve_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """``auto`` → CUDA (this process's local rank under torchrun), then Apple MPS, then CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device auto or cpu.")
        rank = local_rank if local_rank is not None else int(os.environ.get("LOCAL_RANK", 0))
        return torch.device("cuda", rank % torch.cuda.device_count())
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise UserError("--device mps was asked for but Apple MPS is not available; use --device auto or cpu.")
        return torch.device("mps")
    return torch.device("cpu")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` → bf16 autocast on CUDA (when supported), fp32 elsewhere."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "bf16" and device.type == "cpu":
        return "bf16"
    return precision


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
