"""Dondera's protocol: staged item-disjoint splits shared by every stage, IHSJ as class triplets, and
image models scored on individual images."""

from __future__ import annotations

import h5py
import numpy as np
import pyarrow as pa
import pytest
import torch

from simtool.data.builders.triplets import class_triplets
from simtool.formats.dataset_dir import Dataset
from simtool.formats.embeddings import Embeddings
from simtool.formats.triplets import Triplets
from simtool.methods import resolve_train_spec
from simtool.methods._triplets import select_triplets
from simtool.methods.distill import split_groups
from simtool.metrics.triplets import sample_image_triplets
from tests.conftest import cli
from tests.test_builders import build, jpeg
from tests.triplet_data import build as build_triplets


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """A triplets dataset with images, split by item 0.6/0.2/0.2 (the paper's layout)."""
    path, _ = build_triplets(tmp_path_factory.mktemp("staged"), n_items=40, n_triplets=3000, split_by="item", split="0.6,0.2,0.2", images=True)
    return Dataset(path)


def _triples(arr) -> set:
    return {tuple(t) for t in np.asarray(arr).tolist()}


def test_every_stage_takes_its_part_of_one_permutation(staged):
    ds = staged
    test_items = set(np.flatnonzero(ds.item_split == "test").tolist())
    assert len(test_items) == 8
    parts = {}
    for preset in ("things_p_ste", "things_d_ste"):  # the teachers and the direct route: the train+val part
        spec = resolve_train_spec(preset, data=str(ds.root))
        sets = select_triplets(ds, spec.data, spec.seed)
        parts[preset] = sets
        used = np.concatenate([sets.train, sets.val])
        assert not set(used.ravel().tolist()) & test_items, f"{preset}: no test item trains or validates"
        assert _triples(used) == _triples(ds.triplets[ds.triplets_among(["train", "val"])]), "every triplet among train and val items"
        mixed = [t for t in used.tolist() if len({ds.item_split[x] for x in t}) > 1]
        assert mixed, "the part keeps the triplets that mix train and val items"
        assert abs(len(sets.val) - 0.2 * len(used)) <= 1 and sets.val_source.startswith("0.2 of the training")
    spec = resolve_train_spec("things_se_rkd", data=str(ds.root))  # the students: train items, val items
    rows = ds.image_table()
    train, val, source = split_groups(rows, spec.data.val_fraction, spec.seed)
    assert source == "split val"
    assert set(rows.group[train].tolist()) == set(np.flatnonzero(ds.item_split == "train").tolist())
    assert set(rows.group[val].tolist()) == set(np.flatnonzero(ds.item_split == "val").tolist())
    assert not set(rows.group[np.concatenate([train, val])].tolist()) & test_items
    # the test part: the same test items for every stage, and every triplet among them
    test = ds.triplet_rows("test")
    assert set(ds.triplets[test].ravel().tolist()) <= test_items and len(test) == int((ds.item_split[ds.triplets] == "test").all(1).sum())
    assert parts["things_p_ste"].trained_items == ["train", "val"]


def test_the_stages_refuse_the_test_part():
    from simtool.errors import UserError

    with pytest.raises(UserError, match="never train or validate"):
        resolve_train_spec("things_p_ste", data="/x", sets=["data.train_splits=[train, test]"])


def test_class_triplets_drop_same_class_repeats_contradictions_and_cycles():
    # classes A..D = 0..3, two images each (image i has class i // 2)
    image_class = np.arange(8) // 2
    trials = [(0, 2, 4), (1, 3, 5), (0, 1, 2), (2, 4, 6), (3, 7, 5), (0, 4, 6), (4, 6, 0), (6, 0, 4), (7, 2, 1)]
    got, dropped = class_triplets(np.array(trials), image_class)
    assert got.tolist() == [[0, 1, 2], [3, 1, 0]], "(A,B,C) once and (D,B,A)"
    assert dropped == {"same_class": 1, "duplicate": 1, "contradiction": 2, "cycle": 3}


def test_ihsjc_builds_class_triplets_from_a_psiz_file(tmp_path):
    ih = tmp_path / "ihsj"
    (ih / "val").mkdir(parents=True)
    (ih / "imagenet" / "validation").mkdir(parents=True)
    with h5py.File(ih / "val" / "catalog.hdf5", "w") as fh:
        fh["stimulus_id"] = np.arange(8)
        fh["stimulus_filepath"] = np.array([f"n0/ILSVRC2012_val_{i + 1:08d}.JPEG".encode() for i in range(8)])
        fh["class_id"] = np.arange(8) // 2
        fh["class_map_class_id"] = np.arange(4)
        fh["class_map_label"] = np.array([b"apple", b"bear", b"cat", b"dog"])
    for i in range(8):
        (ih / "imagenet" / "validation" / f"ILSVRC2012_val_{i + 1:08d}.JPEG").write_bytes(jpeg(seed=i))
    trials = [(0, 2, 4), (1, 3, 5), (0, 1, 2), (2, 4, 6), (3, 7, 5), (0, 4, 6), (4, 6, 0), (6, 0, 4), (7, 2, 1)]
    with h5py.File(ih / "val" / "obs.hdf5", "w") as fh:  # psiz trials: a query and two references, the first chosen
        fh["stimulus_set"] = np.array(trials)
        fh["n_select"] = np.ones(len(trials), dtype=np.int64)
    build("triplets", tmp_path / "c", ih, preset="ihsjc")
    ds = Dataset(tmp_path / "c")
    assert ds.item_names.tolist() == ["apple", "bear", "cat", "dog"] and len(ds) == 4
    assert ds.triplets.tolist() == [[0, 1, 2], [3, 1, 0]] and set(ds.triplet_kind) == {"directed"}
    assert ds.card["dropped"]["contradiction"] == 2 and ds.card["dropped"]["cycle"] == 3 and ds.card["split_by"] == "item"
    it, _ = ds.item_images
    assert np.bincount(it).tolist() == [2, 2, 2, 2], "every image of a class is an image of its item"
    assert sorted(np.unique(ds.item_split, return_counts=True)[1].tolist()) == [1, 1, 2], "the classes split 0.6/0.2/0.2"


def test_sampled_image_triplets_pick_an_image_of_each_member():
    owner = np.array([2, 0, 1, 0, 2, 2, 1])  # images of items 0: {1, 3}, 1: {2, 6}, 2: {0, 4, 5}
    trip = np.array([[0, 1, 2], [2, 0, 1]])
    got = sample_image_triplets(trip, owner, 3, np.random.default_rng(0))
    assert got.shape == (6, 3) and (owner[got] == np.tile(trip, (3, 1))).all()
    rng = np.random.default_rng(0)  # brute force: pass k draws u (T, 3), member m gets image floor(u * n) of its item's images
    images_of = {i: np.flatnonzero(owner == i) for i in range(3)}
    for k in range(3):
        u = rng.random(trip.shape)
        for t in range(2):
            for m in range(3):
                item = trip[t, m]
                assert got[k * 2 + t, m] == images_of[item][int(u[t, m] * len(images_of[item]))]


def test_image_level_scoring_equals_a_brute_force_loop():
    from simtool.evaluators import EVALUATORS

    rng = np.random.default_rng(1)
    n_items, per = 6, 3
    image_row = np.repeat(np.arange(n_items), per)
    images = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(len(image_row), 4))).float(), dim=1)
    means = torch.nn.functional.normalize(torch.stack([images[image_row == i].mean(0) for i in range(n_items)]), dim=1)
    trip = np.array([[0, 1, 2], [3, 4, 5], [1, 3, 5], [2, 0, 4], [5, 1, 0]])
    kinds = np.array(["directed", "directed", "odd-one-out", "odd-one-out", "directed"])
    emb = Embeddings(rows=pa.table({"id": [str(i) for i in range(n_items)], "split": ["test"] * n_items}),
                     models=[{"name": "m", "layers": ["e"], "seed": 0, "context": {"samples_per_triplet": 4}}],
                     tensors={"m/e": means.unsqueeze(1)}, split="test", triplets=Triplets(trip, kinds, np.full(5, "test")),
                     images={"m/e": images}, image_row=image_row)
    entry = EVALUATORS.get("triplets")
    records = entry.obj("cpu").evaluate(emb, entry.options())
    for kind in ("directed", "odd-one-out"):
        rec = next(r for r in records if r["level"] == kind)
        assert "images=sample K=4" in rec["condition"]
        sel = trip[kinds == kind]
        sampled = sample_image_triplets(sel, image_row, 4, np.random.default_rng([0, 912]))
        correct = []
        for a, b, c in sampled.tolist():
            d = lambda i, j: float(torch.linalg.vector_norm(images[i] - images[j]))  # noqa: E731
            if kind == "directed":
                correct.append(d(a, b) < d(a, c))
            else:
                correct.append(d(a, b) < d(a, c) and d(a, b) < d(b, c))
        assert rec["n"] == 4 * len(sel) and rec["value"] == pytest.approx(np.mean(correct))
    mean_records = entry.obj("cpu").evaluate(emb, entry.options(images="mean"))
    assert all("images=mean" in r["condition"] and r["n"] == int((kinds == r["level"]).sum()) for r in mean_records)


def test_yummly_presets_run_on_a_yummly_sized_dataset(tmp_path):
    """Every yummly_* preset trains one epoch on 100 items with one image each, split 0.6/0.2/0.2
    (the paper's batch sizes; a tiny backbone at 32 px so the test runs in seconds): a student batch
    of 172 > the 60 training images is one partial batch, as in the original. The teachers get
    10,000 triplets (their batch is 3,333 of the train+val part); the direct route a tenth of them."""
    from simtool.methods import list_presets

    big, _ = build_triplets(tmp_path / "big", n_items=100, n_triplets=10000, kind="directed", split_by="item", split="0.6,0.2,0.2", images=True)
    small, _ = build_triplets(tmp_path / "small", n_items=100, n_triplets=1000, kind="directed", split_by="item", split="0.6,0.2,0.2", images=True)
    names = [n for n in list_presets() if n.startswith("yummly_")]
    assert len(names) == 23
    teacher = tmp_path / "t.safetensors"
    tiny = ["loop.epochs=1", "model.backbone=test_resnet", "model.pretrained=false", "data.image_size=32"]
    for name in names:  # sorted: yummly_d_*, yummly_p_* (the teachers the students need), yummly_se_*
        family = name.split("_")[1]
        data, sets = {"d": (small, tiny), "p": (big, ["loop.epochs=1"]), "se": (big, tiny + ["validation.triplets=1000", f"data.teacher={teacher}"])}[family]
        r = cli("train", "--preset", name, "--data", data, "--out", tmp_path / name, "--device", "cpu", *[x for s in sets for x in ("--set", s)])
        assert r.exit_code == 0, (name, r.output[-2000:])
        if name == "yummly_se_rkd":
            assert "1 steps per epoch (the last of 60+ per device)" in r.output.replace("\n", " ")
        if name == "yummly_p_ste":
            assert cli("save-embeddings", tmp_path / name, "--out", teacher, "--device", "cpu").exit_code == 0
