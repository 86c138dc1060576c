"""One owner per output, and SIGTERM handled as Ctrl-C: real processes racing for one --out, a
stale lock taken over, --resume of a run that is still training, two builds of one dataset, and a
SIGTERM mid-epoch that leaves a checkpoint resuming to the uninterrupted weights."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from simtool.formats.weights import read_state
from simtool.locks import OwnerLock, beside
from tests.conftest import TINY_TRAIN, TINY_WORLD, cli, sets

SLOW = [x for x in TINY_TRAIN if not x.startswith(("loop.epochs", "loop.batch_size"))] + ["loop.epochs=3", "loop.batch_size=2"]


def simtool(*args, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "simtool", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, **kw)


def train_args(world, out, seed=0, extra=()):
    return ["train", "--preset", "normal", "--data", world, "--out", out, "--device", "cpu", "--seed", seed, *sets(SLOW), *extra]


def wait_for(path: Path, timeout: float = 120) -> None:
    t0 = time.time()
    while not path.exists():
        if time.time() - t0 > timeout:
            raise TimeoutError(path)
        time.sleep(0.05)


def one_sentence(text: str) -> str:
    msg = text.replace("\n", " ")
    assert "Error:" in msg and "Traceback" not in msg, msg
    return msg[msg.index("Error:"):]


def test_two_trainings_race_for_one_out_and_exactly_one_trains(tmp_path, tiny_world):
    run = tmp_path / "run"
    long = ["--set", "loop.epochs=500"]  # still training when the second one has started (stopped below)
    first = simtool(*train_args(tiny_world, run, seed=1, extra=long))
    wait_for(run / "metrics.jsonl")
    second = cli(*train_args(tiny_world, run, seed=2))  # this test's process is the second one (already imported: no startup delay)
    assert second.exit_code == 2
    msg = one_sentence(second.output)
    assert f"process {first.pid}" in msg and "in use" in msg, msg
    # --resume of the run that is still training names the holder too, instead of "delete it"
    resume = cli("train", "--resume", run, "--device", "cpu")
    assert resume.exit_code == 2 and f"process {first.pid}" in resume.output and "delete" not in resume.output
    assert first.poll() is None, "the first training is still running"
    first.send_signal(signal.SIGTERM)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 130, err[-2000:]
    spec = (run / "spec.yaml").read_text()
    assert "seed: 1" in spec, "the run holds the winner's spec only"
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    assert len(steps) == len(set(steps)), "every metrics record once"
    assert not beside(run).exists(), "the lock is released"


def test_a_stale_lock_is_taken_over(tmp_path, tiny_world):
    run = tmp_path / "run"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process that held the lock and died (kill -9, power loss): its pid runs no more
    beside(run).write_text(json.dumps({"host": socket.gethostname(), "pid": gone.pid, "started": time.time() - 60, "since": "earlier"}))
    r = cli(*train_args(tiny_world, run, extra=sets(["loop.epochs=1"])))
    assert r.exit_code == 0, r.output
    assert (run / "checkpoints" / "final.safetensors").is_file() and not beside(run).exists()


def test_a_live_lock_of_this_host_is_respected(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        path = tmp_path / "x.lock"
        path.write_text(json.dumps({"host": socket.gethostname(), "pid": holder.pid, "started": time.time(), "since": "now"}))
        from simtool.errors import UserError

        with pytest.raises(UserError, match=f"in use by process {holder.pid}"):
            OwnerLock(path, "The output x").acquire()
    finally:
        holder.kill()
        holder.wait()
    with OwnerLock(path, "The output x"):  # its process is gone now: taken over
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not path.exists()


def test_a_lock_that_cannot_be_created_is_one_sentence(tmp_path):
    """Where no file can be created (a file in the way of its folder; /proc for root, who passes
    every permission check), the lock says so in one sentence instead of an OSError traceback."""
    from simtool.errors import UserError

    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="Cannot create the lock file .*afile/out.lock"):
        OwnerLock(tmp_path / "afile" / "out.lock", "The output out").acquire()
    if Path("/proc/self").is_dir():
        r = cli("build-data", "--format", "toyworld", "--out", "/proc/simtool-test-out")
        assert r.exit_code == 2 and "Cannot create the lock file /proc/simtool-test-out.lock" in r.output, r.output
        assert "Traceback" not in r.output


def test_two_builds_of_one_dataset(tmp_path):
    out = tmp_path / "world"
    args = ["build-data", "--format", "toyworld", "--out", out, *sets(TINY_WORLD[:-3] + ["toyworld.objects_per_category=40", "toyworld.frames_per_object=8"])]
    first = simtool(*args)
    wait_for(beside(out))
    second = cli(*args)  # in this test's process, at once, while the first one builds
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert second.exit_code == 2 and f"in use by process {first.pid}" in one_sentence(second.output)
    assert (out / "dataset.json").is_file() and not beside(out).exists()


def test_sigterm_mid_epoch_checkpoints_and_resumes_to_the_uninterrupted_weights(tmp_path, tiny_world):
    full, cut = tmp_path / "full", tmp_path / "cut"
    # every run in a child with one thread: the thread count changes the order of float sums
    out, err = simtool(*train_args(tiny_world, full)).communicate(timeout=600)
    assert "Traceback" not in err and (full / "checkpoints" / "final.safetensors").is_file(), err[-2000:]
    proc = simtool(*train_args(tiny_world, cut))
    metrics = cut / "metrics.jsonl"
    wait_for(metrics)  # the first records of epoch 1 are written: SIGTERM mid-epoch
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert "SIGTERM" in err and "checkpoint was saved" in err and "Traceback" not in err, err[-2000:]
    assert (cut / "checkpoints" / "latest.json").is_file() and not (cut / "checkpoints" / "final.safetensors").exists()
    resumed = simtool("train", "--resume", cut, "--device", "cpu")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-2000:]
    a = read_state(full / "checkpoints" / "final.safetensors")
    b = read_state(cut / "checkpoints" / "final.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "bit-identical to the uninterrupted run"


def test_sigterm_during_a_build_leaves_parts_to_resume(tmp_path):
    """A build of image files stopped by SIGTERM keeps its finished parts; the rerun finishes it."""
    from tests.test_builders import make_mvimgnet

    src = tmp_path / "src"
    make_mvimgnet(src)
    out = tmp_path / "d"
    args = ["build-data", "--format", "mvimgnet", src, "--out", out, "--set", "part_size=4", "--workers", "1", "--set", "mvimgnet.split=[0.5,0.25,0.25]"]
    proc = simtool(*args)
    wait_for(out.parent / (out.name + ".build") / "parts", timeout=120)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:  # it finished before the signal arrived: nothing to resume
        assert (out / "dataset.json").is_file()
        return
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    again = subprocess.run([sys.executable, "-m", "simtool", *map(str, args)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / "dataset.json").is_file()
