"""Checkpoints without pickle: tensors in safetensors, everything else in JSON.

Arbitrary state (optimizer and scheduler state dicts, RNG states, loop position) is *flattened*:
every tensor or NumPy array is moved to a safetensors file under a generated key and replaced in
the JSON skeleton by ``{"__tensor__": key}``; dicts keep their key types, tuples stay tuples.

A resumable checkpoint is a directory ``checkpoints/step-XXXXXXXX/`` with ``model.safetensors``,
``state.safetensors`` and ``state.json``. It is written under a temporary name and renamed into
place; ``checkpoints/latest.json`` then points to it (also replaced atomically), and older step
directories are removed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from simtool.errors import UserError
from simtool.io import atomic_path, atomic_write_json

LATEST = "latest.json"


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


def save_weights(path: str | Path, model: torch.nn.Module, metadata: dict[str, str] | None = None) -> None:
    with atomic_path(path) as tmp:
        save_file(model_state(model), str(tmp), metadata=metadata or {})


def load_weights(path: str | Path, model: torch.nn.Module) -> None:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"The checkpoint {path} does not exist; is the run directory complete?")
    state = load_file(str(path), device="cpu")
    getattr(model, "module", model).load_state_dict(state)


def save_checkpoint(ckpt_dir: str | Path, step: int, model: torch.nn.Module, state: dict, metadata: dict[str, str] | None = None, keep: int = 1) -> Path:
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    final = ckpt_dir / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=ckpt_dir))
    try:
        save_file(model_state(model), str(tmp / "model.safetensors"), metadata=metadata or {})
        skeleton, tensors = flatten_state(state)
        save_file(tensors, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(json.dumps(skeleton) + "\n", encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_json(ckpt_dir / LATEST, {"step": step, "dir": name})
    old = sorted(p for p in ckpt_dir.glob("step-*") if p.is_dir() and p.name != name)
    for p in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    ckpt_dir = Path(ckpt_dir)
    pointer = ckpt_dir / LATEST
    if not pointer.is_file():
        return None
    path = ckpt_dir / json.loads(pointer.read_text(encoding="utf-8"))["dir"]
    return path if (path / "state.json").is_file() else None


def load_checkpoint(path: str | Path, model: torch.nn.Module) -> dict:
    path = Path(path)
    load_weights(path / "model.safetensors", model)
    tensors = load_file(str(path / "state.safetensors"), device="cpu")
    skeleton = json.loads((path / "state.json").read_text(encoding="utf-8"))
    return unflatten_state(skeleton, tensors)
