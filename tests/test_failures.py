"""Failure paths as a new user meets them: one sentence, exit code 2, nothing half-written, never a hang."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from simtool.formats.run_dir import RunDir
from tests.conftest import TINY_TRAIN, cli, sets


def _one_sentence(result, needle: str) -> None:
    assert result.exit_code == 2, result.output
    assert needle in result.output, result.output
    assert "Traceback" not in result.output and result.output.count("Error:") == 1


def _train(data, out, *extra):
    return cli("train", "--data", data, "--out", out, "--device", "cpu", *sets(TINY_TRAIN + ["loop.epochs=1"]), *extra)


def test_failed_start_leaves_nothing_and_can_be_retried(tmp_path, tiny_world):
    _one_sentence(_train(tmp_path / "missing", tmp_path / "r"), "does not exist")
    assert not (tmp_path / "r").exists(), "no stub run directory after a failed start"
    _one_sentence(cli("train", "--data", tmp_path / "missing"), "does not exist")
    assert not (tmp_path / "runs").exists()
    if not torch.cuda.is_available():
        _one_sentence(_train(tiny_world, tmp_path / "r", "--device", "cuda"), "no CUDA GPU")
        assert not (tmp_path / "r").exists()
    # a directory that a failed start of an older version left behind (spec only) can be started again
    (tmp_path / "stub").mkdir()
    (tmp_path / "stub" / "spec.yaml").write_text("method: time_ssl\n")
    assert _train(tiny_world, tmp_path / "stub").exit_code == 0
    assert RunDir(tmp_path / "stub").state() == "finished"
    # ... and --resume on such a stub starts it from its saved spec
    shutil.copytree(tmp_path / "stub", tmp_path / "stub2")
    shutil.rmtree(tmp_path / "stub2" / "checkpoints")
    (tmp_path / "stub2" / "summary.json").unlink()
    result = cli("train", "--resume", tmp_path / "stub2")
    assert result.exit_code == 0 and "no checkpoint yet" in result.output, result.output
    assert RunDir(tmp_path / "stub2").state() == "finished"


def test_resume_of_a_finished_run_changes_nothing(tmp_path, tiny_run):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = cli("train", "--resume", run)
    assert result.exit_code == 0 and "has finished training" in result.output and "nothing changed" in result.output
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before


def test_damaged_final_weights(tmp_path, tiny_run):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    final = run / "checkpoints" / "final.safetensors"
    final.write_bytes(final.read_bytes()[: final.stat().st_size // 2])
    result = cli("evaluate", run, "--type", "odd-one-out", "--device", "cpu")
    _one_sentence(result, "final.safetensors is damaged")
    assert "--resume" in result.output, "the message names the fix"
    # the fix works: without the damaged file, --resume writes the final weights again from the last checkpoint
    final.unlink()
    assert cli("train", "--resume", run).exit_code == 0
    assert cli("evaluate", run, "--type", "odd-one-out", "--device", "cpu", "--repeats", "2").exit_code == 0


def test_damaged_resume_state(tmp_path, tiny_world):
    from simtool.engine.loop import TrainingInterrupted
    from simtool.methods import resolve_train_spec
    from simtool.stages import train as stage

    spec = resolve_train_spec("normal", sets=TINY_TRAIN, data=str(tiny_world), device="cpu")
    with pytest.raises(TrainingInterrupted):
        stage.train(spec, str(tmp_path / "cut"), stop_after_steps=2)
    ckpt = RunDir(tmp_path / "cut").latest_checkpoint()
    state = ckpt / "state.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    _one_sentence(cli("train", "--resume", tmp_path / "cut"), "state.safetensors is damaged")


def _damage_h5(path, how: str) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        if how == "truncate":
            fh.truncate(size // 2)
        else:  # a zeroed block in the middle, as a bad disk sector leaves it
            fh.seek(size // 2)
            fh.write(b"\0" * 4096)


@pytest.mark.parametrize("how", ["truncate", "zero-block"])
def test_damaged_images_exit_2_within_seconds(tmp_path, tiny_world, how):
    data = tmp_path / "data"
    shutil.copytree(tiny_world, data)
    _damage_h5(data / "images.h5", how)
    cmd = [sys.executable, "-m", "simtool", "train", "--data", str(data), "--out", str(tmp_path / "r"), "--device", "cpu", *sets(TINY_TRAIN)]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "images.h5 is damaged" in proc.stderr and "Traceback" not in proc.stderr
    assert time.time() - t0 < 60
    assert not (tmp_path / "r").exists()


def test_ctrl_c_saves_and_resume_finishes(tmp_path, tiny_world):
    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "simtool", "train", "--data", str(tiny_world), "--out", str(out), "--device", "cpu",
           *sets(TINY_TRAIN + ["loop.epochs=30", "loop.log_every=1"])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "metrics.jsonl").is_file():
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "--resume" in err and "Traceback" not in err
    assert RunDir(out).state() == "interrupted"
    again = cli("train", "--data", tiny_world, "--out", out)
    _one_sentence(again, "--resume")
