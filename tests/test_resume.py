"""An interrupted and resumed run ends with exactly the weights of an uninterrupted one."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from simtool.engine.loop import TrainingInterrupted
from simtool.methods import resolve_train_spec
from simtool.stages import train as train_lib
from tests.conftest import TINY_TRAIN


@pytest.mark.parametrize("preset", ["normal", "simclr"])
def test_resume_gives_identical_weights(tmp_path, tiny_world, preset):
    spec = resolve_train_spec(preset, sets=TINY_TRAIN + ["loop.epochs=3", "loop.log_every=2"], data=str(tiny_world), device="cpu", seed=11)
    full, _ = train_lib.train(spec, str(tmp_path / "full"))
    # interrupt mid-epoch (as Ctrl-C does), resume, interrupt again at an epoch boundary, resume to the end
    with pytest.raises(TrainingInterrupted):
        train_lib.train(spec, str(tmp_path / "cut"), stop_after_steps=3)
    steps_per_epoch = json.loads((tmp_path / "full" / "summary.json").read_text())["steps"] // 3
    with pytest.raises(TrainingInterrupted):
        train_lib.resume(tmp_path / "cut", stop_after_steps=steps_per_epoch * 2)
    train_lib.resume(tmp_path / "cut")
    a = load_file(str(full / "checkpoints" / "final.safetensors"))
    b = load_file(str(tmp_path / "cut" / "checkpoints" / "final.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the metrics log of the resumed run has each training step once
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    assert steps == sorted(set(steps))
