"""Tests for the procedural toy-world renderer (simtool.data.toyworld)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simtool.data.builders.toyworld import ToyWorldSpec
from simtool.data.toyworld import FAMILIES, ToyWorld, render_toyworld
from simtool.errors import UserError

ROOMS, CPR, OPC, FPO, SIZE = 2, 2, 3, 4, 32
C = ROOMS * CPR


def small_spec(**kw) -> ToyWorldSpec:
    base = dict(n_rooms=ROOMS, categories_per_room=CPR, objects_per_category=OPC,
                frames_per_object=FPO, image_size=SIZE)
    base.update(kw)
    return ToyWorldSpec(**base)


@pytest.fixture(scope="module")
def world() -> ToyWorld:
    return render_toyworld(small_spec(), seed=0)


@pytest.fixture(scope="module")
def world_rooms() -> ToyWorld:
    return render_toyworld(small_spec(room_backgrounds=True), seed=0)


def foreground(images: np.ndarray, thresh: int = 24) -> np.ndarray:
    """Boolean (N, S, S) mask of pixels that differ from the background. The background is a
    vertical gradient and objects never reach the left image column, so column 0 gives the
    background colour of each row."""
    im = images.astype(np.int16)
    return np.abs(im - im[:, :, :1, :]).sum(-1) > thresh


def test_families_list():
    assert len(FAMILIES) >= 24
    assert len(set(FAMILIES)) == len(FAMILIES)
    assert all(isinstance(name, str) and name for name in FAMILIES)


def test_shapes_and_dtypes(world):
    n = C * OPC * FPO
    assert world.images.shape == (n, SIZE, SIZE, 3)
    assert world.images.dtype == np.uint8
    for arr in (world.category, world.object, world.frame):
        assert arr.shape == (n,)
        assert arr.dtype == np.int64
    assert world.room_of_category.shape == (C,)
    assert world.room_of_category.dtype == np.int64
    assert len(world.category_names) == C


def test_ordering_and_ids(world):
    n = C * OPC * FPO
    rows = np.arange(n)
    np.testing.assert_array_equal(world.category, rows // (OPC * FPO))
    np.testing.assert_array_equal(world.object, rows // FPO)
    np.testing.assert_array_equal(world.frame, rows % FPO)
    np.testing.assert_array_equal(world.object // OPC, world.category)
    np.testing.assert_array_equal(world.room_of_category, np.arange(C) // CPR)
    assert len(set(world.category_names)) == C
    assert set(world.category_names) <= set(FAMILIES)


def test_deterministic_and_seed_dependent(world):
    again = render_toyworld(small_spec(), seed=0)
    assert np.array_equal(again.images, world.images)
    assert again.category_names == world.category_names
    other = render_toyworld(small_spec(), seed=1)
    assert not np.array_equal(other.images, world.images)


def test_independent_of_torch_threads(world):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = render_toyworld(small_spec(), seed=0)
        assert torch.get_num_threads() == 1  # restored to the caller's setting
    finally:
        torch.set_num_threads(before)
    assert np.array_equal(single.images, world.images)


def test_rotation_visible_but_coherent(world):
    x = world.images.reshape(C, OPC, FPO, -1).astype(np.float64)
    # every pair of frames of an object differs
    for c in range(C):
        for o in range(OPC):
            for i in range(FPO):
                for j in range(i + 1, FPO):
                    assert np.abs(x[c, o, i] - x[c, o, j]).mean() > 0.5
    consecutive = np.abs(x - np.roll(x, 1, axis=2)).mean()
    cross = np.mean([np.abs(x[c] - x[(c + 1) % C]).mean() for c in range(C)])
    assert consecutive < cross


def test_objects_not_blank(world):
    frac = foreground(world.images).mean(axis=(1, 2))
    assert frac.min() > 0.03
    assert 0.15 < frac.mean() < 0.85


def test_every_family_renders_inside_the_frame():
    """All families: visible, not touching the border, extent ~50–80 % of the frame."""
    n_fam = len(FAMILIES)
    rooms = next(r for r in range(2, 9) if n_fam % r == 0 and n_fam // r <= 8)
    spec = ToyWorldSpec(n_rooms=rooms, categories_per_room=n_fam // rooms,
                        objects_per_category=3, frames_per_object=2, image_size=32)
    w = render_toyworld(spec, seed=3)
    assert sorted(w.category_names) == sorted(FAMILIES)
    fg = foreground(w.images)
    border = np.concatenate([fg[:, 0], fg[:, -1], fg[:, :, 0], fg[:, :, -1]], axis=1)
    assert not border.any()
    for i, mask in enumerate(fg):
        ys, xs = np.nonzero(mask)
        assert ys.size > 0.03 * mask.size, w.category_names[w.category[i]]
        extent = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) / mask.shape[0]
        assert 0.4 < extent < 0.9, (w.category_names[w.category[i]], extent)


def test_room_backgrounds(world, world_rooms):
    def corners(w: ToyWorld, room: int) -> np.ndarray:
        cats = np.nonzero(w.room_of_category == room)[0]
        rows = np.nonzero(np.isin(w.category, cats))[0]
        im = w.images[rows]
        return np.stack([im[:, 0, 0], im[:, 0, -1], im[:, -1, 0], im[:, -1, -1]], 1)

    shared = [corners(world, r) for r in range(ROOMS)]
    assert np.array_equal(shared[0][:1].repeat(len(shared[0]), 0), shared[0])
    assert np.array_equal(shared[0][0], shared[1][0])
    own = [corners(world_rooms, r) for r in range(ROOMS)]
    assert np.array_equal(own[0][:1].repeat(len(own[0]), 0), own[0])  # one background per room
    assert np.abs(own[0][0].astype(int) - own[1][0].astype(int)).sum() > 30
    # the backgrounds option changes nothing else about the world
    assert world_rooms.category_names == world.category_names


def test_progress_reports_objects():
    calls = []
    render_toyworld(small_spec(image_size=16, frames_per_object=2), seed=0,
                    progress=lambda done, total: calls.append((done, total)))
    assert calls
    assert all(total == C * OPC for _, total in calls)
    done = [d for d, _ in calls]
    assert done == sorted(done)
    assert done[-1] == C * OPC


def test_too_many_categories():
    spec = ToyWorldSpec(n_rooms=8, categories_per_room=8)
    assert 64 > len(FAMILIES)
    with pytest.raises(UserError, match="lower n_rooms or categories_per_room"):
        render_toyworld(spec, seed=0)


def test_hue_spread_keeps_objects_near_their_family_hue():
    import colorsys

    from simtool.data.toyworld import _FAMILY_TABLE, _sample_objects

    objs = _sample_objects(np.random.default_rng(0), _FAMILY_TABLE["sphere"], 60, family_hue=0.3, hue_spread=0.1)
    hues = np.array([colorsys.rgb_to_hsv(*b)[0] for b in objs["base"]])
    assert np.all(np.abs(hues - 0.3) <= 0.05 + 1e-6)
    free = _sample_objects(np.random.default_rng(0), _FAMILY_TABLE["sphere"], 60, family_hue=0.3, hue_spread=1.0)
    free_hues = np.array([colorsys.rgb_to_hsv(*b)[0] for b in free["base"]])
    assert np.ptp(free_hues) > 0.5, "hue_spread=1 allows any hue"


# ----------------------------------------------------------------------------- the background-removed twin


def test_background_none_renders_the_same_world_on_one_plain_grey(world, world_rooms):
    """``background: none`` changes no random draw: the same objects, views and rooms; only the pixels
    the object does not fully cover differ, and they are one grey in every room."""
    from simtool.data.toyworld import PLAIN_BACKGROUND

    twin = render_toyworld(small_spec(room_backgrounds=True, background="none"), seed=0)
    for key in ("category", "object", "frame", "room_of_category"):
        np.testing.assert_array_equal(getattr(twin, key), getattr(world_rooms, key))
    assert twin.category_names == world_rooms.category_names
    assert twin.objects.keys() == world_rooms.objects.keys()
    assert all(np.array_equal(twin.objects[k], world_rooms.objects[k], equal_nan=True) for k in twin.objects)
    grey = np.round(np.asarray(PLAIN_BACKGROUND) * 255).astype(np.uint8)
    corners = np.concatenate([twin.images[:, 0, 0], twin.images[:, 0, -1], twin.images[:, -1, 0], twin.images[:, -1, -1]])
    assert np.all(corners == grey), "one plain grey, whatever the room"
    # Pixels that two different backgrounds (the shared grey scene, the room hues) leave alike are the
    # ones the object covers fully: the twin has them too; the rest (background and silhouette
    # blends) takes the twin's own background.
    covered = np.all(world.images == world_rooms.images, axis=-1)
    assert covered.sum() > 0.5 * foreground(world_rooms.images).sum()
    np.testing.assert_array_equal(twin.images[covered], world_rooms.images[covered])
    exposed = np.any(twin.images != world_rooms.images, axis=-1)
    assert exposed[~foreground(world_rooms.images)].all(), "every background pixel changed"
    # the default (scene) world is what it was: the option only adds the plain one
    assert np.array_equal(render_toyworld(small_spec(background="scene"), seed=0).images, world.images)


def _build(out, *extra):
    from simtool.data.builders import build_dataset, resolve_build_spec

    world = ["toyworld.n_rooms=2", "toyworld.categories_per_room=2", "toyworld.objects_per_category=6", "toyworld.frames_per_object=3",
             "toyworld.image_size=24", "toyworld.room_backgrounds=true"]
    build_dataset(resolve_build_spec("toyworld", str(out), sets=world + list(extra), seed=5))
    return out


def test_background_free_twin_has_the_same_index_splits_rooms_and_triplets(tmp_path):
    import json

    import pyarrow.parquet as pq

    from simtool.formats.dataset_dir import Dataset

    a = _build(tmp_path / "world")
    b = _build(tmp_path / "twin", "toyworld.background=none")
    for rel in ("frames.parquet", "triplets/items.parquet", "triplets/triplets.parquet", "triplets/item_images.parquet"):
        assert pq.read_table(a / rel).equals(pq.read_table(b / rel)), rel
    for rel in ("room_assignment_balanced.json", "room_assignment_random.json"):
        assert json.loads((a / rel).read_text()) == json.loads((b / rel).read_text()), rel
    da, db = Dataset(a), Dataset(b)
    assert da.name == "toyworld-seed5" and db.name == "toyworld-seed5-nobackground", "conditions name the twin apart from its world"
    assert da.fingerprint != db.fingerprint, "the pixels differ"
    rows = np.flatnonzero(da.split == "test")
    np.testing.assert_array_equal(da.twin_images(db, rows), da.index[rows])  # every test frame found, at the same place


def test_a_run_evaluates_on_its_worlds_twin_without_retraining(tmp_path, tiny_run):
    """The tiny run's world rebuilt with ``background: none`` is a second image set of the same frames:
    evaluated without retraining, under its own condition, with other figures (the pixels differ)."""
    import hashlib
    import json

    from tests.conftest import TINY_WORLD, cli, sets

    twin = tmp_path / "twin"
    assert cli("build-data", "--format", "toyworld", "--out", twin, "--seed", "3", *sets(TINY_WORLD + ["toyworld.background=none"])).exit_code == 0
    weights = tiny_run / "checkpoints" / "final.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert cli("evaluate", tiny_run, "--type", "odd-one-out", "--repeats", "2", "--out", a, "--device", "cpu").exit_code == 0
    r = cli("evaluate", tiny_run, "--type", "odd-one-out", "--repeats", "2", "--images", twin, "--out", b, "--device", "cpu")
    assert r.exit_code == 0, r.output
    ra, rb = json.loads(a.read_text())["records"], json.loads(b.read_text())["records"]
    assert len(ra) == len(rb) and all(x["condition"].endswith("images=toyworld-seed3-nobackground") for x in rb)
    acc = [(x["value"], y["value"]) for x, y in zip(ra, rb) if x["metric"] == "accuracy"]
    assert acc and any(u != v for u, v in acc), "the network saw other pixels"
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == digest, "no retraining: the run's weights are untouched"
