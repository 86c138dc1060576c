"""Checkpoint state without pickle: tensors go to safetensors, everything else to JSON.

Arbitrary state (optimizer and scheduler state dicts, RNG states, loop position) is *flattened*:
every tensor or NumPy array is moved to a flat dict under a generated key and replaced in the JSON
skeleton by ``{"__tensor__": key}``; dicts keep their key types, tuples stay tuples. Where the
files go is the run directory's business (:mod:`simtool.formats.run_dir`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def flatten_state(obj: Any, tensors: dict[str, torch.Tensor] | None = None, prefix: str = "t") -> tuple[Any, dict[str, torch.Tensor]]:
    """Split ``obj`` into a JSON-able skeleton and a dict of tensors."""
    tensors = {} if tensors is None else tensors

    def walk(x: Any, path: str) -> Any:
        if isinstance(x, torch.Tensor):
            key = f"{path}#{len(tensors)}"
            tensors[key] = x.detach().cpu().contiguous()
            return {"__tensor__": key}
        if isinstance(x, np.ndarray):
            key = f"{path}#{len(tensors)}"
            tensors[key] = torch.from_numpy(np.ascontiguousarray(x))
            return {"__tensor__": key, "numpy": True}
        if isinstance(x, dict):
            return {"__dict__": [[walk_key(k), walk(v, f"{path}.{k}")] for k, v in x.items()]}
        if isinstance(x, tuple):
            return {"__tuple__": [walk(v, f"{path}.{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(x)]
        if isinstance(x, (np.integer,)):
            return int(x)
        if isinstance(x, (np.floating,)):
            return float(x)
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise TypeError(f"cannot checkpoint a value of type {type(x).__name__} at {path}")

    def walk_key(k: Any) -> Any:
        if isinstance(k, (int, str)):
            return k
        raise TypeError(f"cannot checkpoint a dict key of type {type(k).__name__}")

    return walk(obj, prefix), tensors


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            t = tensors[skeleton["__tensor__"]]
            return t.numpy() if skeleton.get("numpy") else t
        if "__dict__" in skeleton:
            return {k: unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
        if "__tuple__" in skeleton:
            return tuple(unflatten_state(v, tensors) for v in skeleton["__tuple__"])
    return skeleton


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    model = getattr(model, "module", model)
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
