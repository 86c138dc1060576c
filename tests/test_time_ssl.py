"""The time/context method: its epoch plan and every contrast mode trains."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from rich.console import Console

from simtool.engine.distributed import DistInfo
from simtool.errors import UserError
from simtool.methods import resolve_train_spec
from simtool.methods.time_ssl import TimeSSL, balanced_draw, subsample_objects
from simtool.stages import train as train_lib
from tests.conftest import TINY_TRAIN


def _method(tiny_world, preset="normal", extra=()):
    spec = resolve_train_spec(preset, sets=TINY_TRAIN + list(extra), data=str(tiny_world), device="cpu")
    return TimeSSL(spec, torch.device("cpu"), DistInfo(), Console(quiet=True))


def test_epoch_plan_is_deterministic_and_uses_stream_neighbours(tiny_world):
    m = _method(tiny_world)
    plan0, again, plan1 = m.epoch_plan(0), m.epoch_plan(0), m.epoch_plan(1)
    assert len(plan0) == m.steps_per_epoch() > 0
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(plan0, again))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(plan0, plan1)), "each epoch shuffles the anchors anew"
    assert m._stream(0) is m._stream(5), "one stream per run, as the original"
    stream_frames = set(m.train_rows[m._stream(0).rows])
    assert all(set(np.concatenate([p[0] for p in plan])) <= stream_frames for plan in (plan0, plan1)), "every epoch draws from the same stream"
    assert len(stream_frames) < len(m.train_rows), "the clips past chunk_ratio_limit are never seen"
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


def test_stream_redraw_per_epoch(tiny_world):
    m = _method(tiny_world, extra=["stream.redraw=per_epoch"])
    s0, s1 = m._stream(0), m._stream(1)
    assert not np.array_equal(s0.rows, s1.rows), "a new stream every epoch"
    assert np.array_equal(m._stream(0).rows, s0.rows), "still deterministic"


def test_subsample_matches_the_originals_weighting_on_unequal_categories():
    """int(0.3 N) draws with replacement, p(object) = 1 / (C * objects of its category); duplicates
    collapse, so category c keeps n_c (1 - (1 - 1/(C n_c))^k) objects on average."""
    sizes = [40, 10, 10]
    categories = np.repeat(np.arange(3), sizes)
    objects = np.arange(60)
    k = int(0.3 * 60)
    kept = np.array([np.bincount(categories[balanced_draw(categories, 0.3, np.random.default_rng(seed))], minlength=3) for seed in range(1500)])
    expected = [n * (1 - (1 - 1 / (3 * n)) ** k) for n in sizes]
    np.testing.assert_allclose(kept.mean(0), expected, rtol=0.03)
    assert kept.sum(1).max() <= k, "never more than int(0.3 N) objects"
    with pytest.raises(UserError, match="without a training object"):
        subsample_objects(np.arange(300), np.repeat(np.arange(100), 3), 0.01, np.random.default_rng(0))
    keep = subsample_objects(objects, categories, 0.3, np.random.default_rng(0), mode="per_category")
    assert [int(keep[categories == c].sum()) for c in range(3)] == [math.ceil(0.3 * n) for n in sizes]


def test_subsample_is_drawn_among_training_objects_only(tiny_world):
    m = _method(tiny_world, extra=["data.subsample=0.5", "data.subsample_mode=per_category"])
    train_objects = np.unique(m.ds.object[m.ds.split == "train"])
    kept = np.unique(m.ds.object[m.train_rows])
    assert set(kept) <= set(train_objects) and len(kept) == 4 * math.ceil(0.5 * len(train_objects) / 4)


@pytest.mark.parametrize(
    "extra",
    [["contrast.mode=combined"], ["model.per_half=false"], ["contrast.augment.blur=0.5"], ["data.cache=none", "data.num_workers=2"],
     ["probe.train_on=both"], ["data.image_size=24", "data.num_workers=2"], ["data.image_size=24", "contrast.mode=classic"]],
)
def test_variants_train(tmp_path, tiny_world, extra):
    spec = resolve_train_spec("normal", sets=TINY_TRAIN + ["loop.epochs=1"] + extra, data=str(tiny_world), device="cpu")
    _, summary = train_lib.train(spec, str(tmp_path / "run"))
    assert summary["steps"] > 0 and math.isfinite(summary["final_loss"])
