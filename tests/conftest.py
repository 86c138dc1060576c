"""Shared fixtures: a tiny toy world built once per session, and an isolated cache directory."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

TINY_WORLD = [
    "toyworld.n_rooms=2",
    "toyworld.categories_per_room=2",
    "toyworld.objects_per_category=6",
    "toyworld.frames_per_object=6",
    "toyworld.image_size=32",
    "toyworld.split.train=0.5",
    "toyworld.split.val=0.166667",
    "toyworld.split.test=0.333333",
]

# A train spec small enough for a CPU test: 32 px, tiny timm model, small heads.
TINY_TRAIN = [
    "data.image_size=32",
    "data.subsample=1.0",
    "model.backbone=test_resnet",
    "model.head_hidden=32",
    "model.head_out=16",
    "loop.epochs=2",
    "loop.batch_size=8",
    "loop.log_every=1",
    "stream.crop_number=2",
]


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, tmp_path, monkeypatch):
    """Every test runs in its own temporary directory with its own cache: nothing lands in the checkout."""
    monkeypatch.setenv("SIMTOOL_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    from simtool.data.builders import build_dataset, resolve_build_spec

    out = tmp_path_factory.mktemp("data") / "tiny"
    build_dataset(resolve_build_spec("toyworld", str(out), sets=TINY_WORLD, seed=3))
    return out


def cli(*args):
    """Run the simtool CLI in-process (click's CliRunner, the command with its registry help) with string arguments."""
    from click.testing import CliRunner

    from simtool.cli.main import command

    return CliRunner().invoke(command(), [str(a) for a in args], prog_name="simtool")


def sets(items):
    """["a=1", "b=2"] -> ["--set", "a=1", "--set", "b=2"]."""
    return [x for item in items for x in ("--set", item)]


@pytest.fixture(scope="session")
def tiny_run(tiny_world, tmp_path_factory):
    """One finished `normal` run on the tiny world (1 epoch), shared read-only by tests."""
    from simtool.methods import resolve_train_spec
    from simtool.stages import train as stage

    out = tmp_path_factory.mktemp("runs") / "normal"
    spec = resolve_train_spec("normal", sets=TINY_TRAIN + ["loop.epochs=1"], data=str(tiny_world), device="cpu")
    stage.train(spec, str(out))
    return out
