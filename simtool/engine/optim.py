"""Optimizer and learning-rate schedule from the common spec (``optim:``, ``schedule:``)."""

from __future__ import annotations

import fnmatch
import math
from typing import Callable

import torch

from simtool.errors import UserError


def param_groups(model: torch.nn.Module, optim) -> list[dict]:
    """Parameter groups for ``optim.param_groups`` (first matching pattern wins; frozen ones dropped).

    Without groups: one group of every trainable parameter, in ``model.parameters()`` order.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not optim.param_groups:
        return [{"params": [p for _, p in named]}]
    buckets: list[list] = [[] for _ in optim.param_groups]
    rest = []
    for name, p in named:
        for i, g in enumerate(optim.param_groups):
            if fnmatch.fnmatchcase(name, g.match):
                buckets[i].append((name, p))
                break
        else:
            rest.append(p)
    for g, members in zip(optim.param_groups, buckets):
        if not members:
            raise UserError(f"optim.param_groups pattern {g.match!r} matches no trainable parameter; parameter names look like {named[0][0]!r}.")
    groups = [{"params": rest}] if rest else []
    for g, members in zip(optim.param_groups, buckets):
        if g.freeze:
            for _, p in members:
                p.requires_grad_(False)
            continue
        group: dict = {"params": [p for _, p in members]}
        if g.lr is not None:
            group["lr"] = g.lr
        elif g.lr_scale is not None:
            group["lr"] = optim.lr * g.lr_scale
        if g.weight_decay is not None:
            group["weight_decay"] = g.weight_decay
        groups.append(group)
    if not any(grp["params"] for grp in groups):
        raise UserError("Every parameter is frozen by optim.param_groups; nothing would train.")
    return groups


def build_optimizer(model: torch.nn.Module, optim) -> torch.optim.Optimizer:
    groups = param_groups(model, optim)
    fused = {"fused": True} if optim.fused else {}
    if optim.name == "adamw":
        return torch.optim.AdamW(groups, lr=optim.lr, weight_decay=optim.weight_decay, betas=tuple(optim.betas), **fused)
    if optim.name == "adam":
        return torch.optim.Adam(groups, lr=optim.lr, weight_decay=optim.weight_decay, betas=tuple(optim.betas), **fused)
    if optim.name == "sgd":
        return torch.optim.SGD(groups, lr=optim.lr, weight_decay=optim.weight_decay, momentum=optim.momentum)
    raise UserError(f"Unknown optimizer {optim.name!r}; choose adamw, adam or sgd.")


def lr_lambda(kind: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "cosine":
            progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return f


def build_scheduler(optimizer: torch.optim.Optimizer, schedule, steps_per_epoch: int, epochs: int):
    warmup = int(round(schedule.warmup_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(schedule.name, warmup, steps_per_epoch * epochs))
