"""Checkpoints hold no pickle and round-trip every kind of state the engine saves."""

from __future__ import annotations

import json
import random

import numpy as np
import torch

from simtool.engine.checkpoint import flatten_state, model_state, unflatten_state
from simtool.formats.run_dir import RunDir


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_flatten_round_trip_optimizer_and_rng():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    state = {
        "optimizer": opt.state_dict(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "position": {"epoch": 2, "step": 7},
    }
    skeleton, tensors = flatten_state(state)
    json.dumps(skeleton)  # the skeleton is plain JSON
    restored = unflatten_state(json.loads(json.dumps(skeleton)), tensors)
    assert _equal(restored["optimizer"]["state"], state["optimizer"]["state"])
    assert list(restored["optimizer"]["state"]) == [0, 1, 2, 3], "integer keys survive JSON"
    assert restored["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert _equal(restored["numpy"], state["numpy"]) and _equal(restored["python"], state["python"])
    opt2 = torch.optim.AdamW(model.parameters(), lr=1e-2)
    opt2.load_state_dict(restored["optimizer"])


def test_checkpoint_directory_is_atomic_and_pickle_free(tmp_path):
    run = RunDir(tmp_path)
    model = torch.nn.Linear(3, 2)
    for step in (5, 10):
        skeleton, tensors = flatten_state({"position": {"step": step}, "w": torch.ones(2)})
        run.save_checkpoint(step, model_state(model), skeleton, tensors, metadata={})
    latest = run.latest_checkpoint()
    assert latest is not None and latest.name == "step-00000010"
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["latest.json", "step-00000010"], "old checkpoints and temporaries are gone"
    for f in latest.iterdir():
        head = f.read_bytes()[:2]
        assert head != b"\x80\x04" and head != b"\x80\x02" and not f.name.endswith((".pt", ".pth", ".pkl"))
    weights, skeleton, tensors = run.load_checkpoint(latest)
    state = unflatten_state(skeleton, tensors)
    other = torch.nn.Linear(3, 2)
    other.load_state_dict(weights)
    assert state["position"]["step"] == 10 and torch.equal(other.weight, model.weight)
