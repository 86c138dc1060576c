"""The torchrun path: two CPU processes (gloo) train one run together."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import TINY_TRAIN


def test_torchrun_two_cpu_processes(tmp_path, tiny_world):
    out = tmp_path / "ddp"
    sets = [x for item in TINY_TRAIN + ["loop.epochs=1"] for x in ("--set", item)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "simtool", "train", "--data", str(tiny_world), "--out", str(out), "--device", "cpu", *sets]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and (out / "checkpoints" / "final.safetensors").is_file()
    assert summary["batch_size"] == 8 and summary["batch_size_per_device"] == 4, "loop.batch_size is the global batch"
    import yaml

    assert yaml.safe_load((out / "spec.yaml").read_text())["loop"]["batch_size_per_device"] == 4, "the resolved spec records it"
    single = tmp_path / "single"
    from simtool.methods import resolve_train_spec
    from simtool.stages import train as train_lib

    spec = resolve_train_spec("normal", sets=TINY_TRAIN + ["loop.epochs=1"], data=str(tiny_world), device="cpu")
    _, s1 = train_lib.train(spec, str(single))
    assert summary["steps"] == s1["steps"], "the same global batches, each rank taking its share of every one"
    assert s1["batch_size_per_device"] == 8
