"""Dataset directory format, object splits and room assignments."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from simtool.data.rooms import random_room_assignment
from simtool.data.splits import split_by_object
from simtool.errors import UserError
from simtool.formats.dataset_dir import Dataset
from simtool.formats.rooms import parse_room_assignment


def test_split_by_object_is_per_category_and_disjoint():
    rng = np.random.default_rng(0)
    categories = np.repeat(np.arange(5), 10 * 3)  # 5 categories x 10 objects x 3 frames
    objects = np.repeat(np.arange(50), 3)
    split = split_by_object(objects, categories, {"train": 0.7, "val": 0.1, "test": 0.2}, rng)
    assert set(split) == set(range(50))
    for c in range(5):
        objs = range(c * 10, c * 10 + 10)
        counts = {s: sum(split[o] == s for o in objs) for s in ("train", "val", "test")}
        assert counts == {"train": 7, "val": 1, "test": 2}
    tiny = split_by_object(np.arange(2), np.zeros(2, int), {"train": 0.0, "val": 0.5, "test": 0.5}, rng)
    assert "train" in tiny.values(), "at least one object of every category stays in train"


def test_dataset_reader(tiny_world):
    ds = Dataset(tiny_world)
    assert len(ds) == 2 * 2 * 6 * 6 and ds.n_categories == 4
    # objects never straddle splits
    for o in np.unique(ds.object):
        assert len(set(ds.split[ds.object == o])) == 1
    room_of_category, names, _ = ds.rooms("semantic")
    assert sorted(names) == sorted(json.loads((tiny_world / "room_assignment_balanced.json").read_text()))
    assert (room_of_category >= 0).all()
    img = ds.images(32).load(ds.index[:3])
    assert img.shape == (3, 3, 32, 32) and img.dtype == torch.uint8
    resized = ds.images(20).load(ds.index[:2])
    assert resized.shape == (2, 3, 20, 20)


def test_reader_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        Dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="dataset.json is missing"):
        Dataset(tmp_path / "empty")


def test_room_assignment_parsing():
    room, names = parse_room_assignment({"a": [0, 2], "b": [1], "Uncertain": [3]}, 4, "x.json")
    assert names == ["a", "b"] and room.tolist() == [0, 1, 0, -1]
    with pytest.raises(UserError, match="two rooms"):
        parse_room_assignment({"a": [0, 1]}, 2, "x.json")
    with pytest.raises(UserError, match="category id 7"):
        parse_room_assignment({"a": [0], "b": [7]}, 2, "x.json")
    with pytest.raises(UserError, match="two rooms in"):
        parse_room_assignment({"a": [0], "b": [0, 1]}, 2, "x.json")


def test_random_assignment_keeps_sizes_and_mixes_rooms():
    semantic = {f"r{r}": list(range(4 * r, 4 * r + 4)) for r in range(4)}
    for seed in range(20):
        rnd = random_room_assignment(semantic, np.random.default_rng(seed))
        assert sorted(len(v) for v in rnd.values()) == [4, 4, 4, 4]
        assert sorted(c for v in rnd.values() for c in v) == list(range(16))
        for part in rnd.values():
            counts = np.bincount([c // 4 for c in part], minlength=4)
            assert counts.max() <= 2, "no random room keeps more than half of a semantic room"
