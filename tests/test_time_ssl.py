"""The time/context method: its epoch plan and every contrast mode trains."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from rich.console import Console

from simtool.stages import train as train_lib
from simtool.engine.distributed import DistInfo
from simtool.methods.time_ssl import TimeSSL, subsample_objects
from simtool.specs.resolve import resolve_train_spec
from tests.conftest import TINY_TRAIN


def _method(tiny_world, preset="normal", extra=()):
    spec = resolve_train_spec(preset, sets=TINY_TRAIN + list(extra), data=str(tiny_world), device="cpu")
    return TimeSSL(spec, torch.device("cpu"), DistInfo(), Console(quiet=True))


def test_epoch_plan_is_deterministic_and_uses_stream_neighbours(tiny_world):
    m = _method(tiny_world)
    plan0, again, plan1 = m.epoch_plan(0), m.epoch_plan(0), m.epoch_plan(1)
    assert len(plan0) == m.steps_per_epoch() > 0
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(plan0, again))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(plan0, plan1)), "each epoch draws a new stream"
    anchors = np.concatenate([p[0] for p in plan0])
    positives = np.concatenate([p[1] for p in plan0])
    assert set(m.ds.split[anchors]) == {"train"} and set(m.ds.split[positives]) == {"train"}
    same_object = m.ds.object[anchors] == m.ds.object[positives]
    assert 0.3 < same_object.mean() < 1.0, "most positives are nearby frames of the same object, some cross to the next"
    stream = m._stream(0)
    position = {int(row): i for i, row in enumerate(m.train_rows[stream.rows])}  # rows are used once per stream
    gaps = np.array([abs(position[int(a)] - position[int(p)]) for a, p in zip(anchors, positives)])
    assert gaps.max() <= m.spec.stream.rotation_range, "positives are within rotation_range stream positions"


def test_classic_mode_positive_is_the_anchor_frame(tiny_world):
    m = _method(tiny_world, "simclr")
    for a, p in m.epoch_plan(0):
        assert np.array_equal(a, p)
    lo = _method(tiny_world, "language_only")
    assert all(p is None for _, p in lo.epoch_plan(0)), "no SSL head: no positives are loaded"


def test_subsample_objects_is_category_balanced():
    categories = np.repeat(np.arange(3), 20)
    objects = np.arange(60)
    keep = subsample_objects(objects, categories, 0.3, np.random.default_rng(0))
    assert [int(keep[categories == c].sum()) for c in range(3)] == [math.ceil(0.3 * 20)] * 3


@pytest.mark.parametrize(
    "extra",
    [["contrast.mode=combined"], ["model.per_half=false"], ["contrast.augment.blur=0.5"], ["data.cache=none", "data.num_workers=2"]],
)
def test_variants_train(tmp_path, tiny_world, extra):
    spec = resolve_train_spec("normal", sets=TINY_TRAIN + ["loop.epochs=1"] + extra, data=str(tiny_world), device="cpu")
    _, summary = train_lib.train(spec, str(tmp_path / "run"))
    assert summary["steps"] > 0 and math.isfinite(summary["final_loss"])
