"""The toy world's simulated triplets: a triplets dataset over its objects with a known latent truth.

A teacher fitted to the judgements recovers the latent similarity, and a student distilled from the
teachers beats an untrained network on the held-out objects' triplets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from simtool.data import toy_triplets
from simtool.formats.dataset_dir import Dataset
from tests.conftest import cli, sets

# big enough for a student to learn something in seconds: 6 families x 12 objects x 4 frames of 32 px
MEDIUM_WORLD = ["toyworld.n_rooms=2", "toyworld.categories_per_room=3", "toyworld.objects_per_category=12",
                "toyworld.frames_per_object=4", "toyworld.image_size=32"]


def world_objects(root):
    """Re-render the world a dataset was built from and return its objects' generating parameters."""
    from simtool.data.builders.toyworld import ToyWorldBuildSpec
    from simtool.data.toyworld import render_toyworld

    spec = ToyWorldBuildSpec.model_validate(json.loads((root / "dataset.json").read_text())["built_by"]["spec"])
    return render_toyworld(spec.toyworld, seed=spec.seed).objects


@pytest.fixture(scope="module")
def medium_world(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "medium"
    assert cli("build-data", "--format", "toyworld", "--out", out, "--seed", "1", *sets(MEDIUM_WORLD)).exit_code == 0
    return out


def test_triplets_dataset_mirrors_the_objects(tiny_world):
    video = Dataset(tiny_world)
    t = Dataset(tiny_world / "triplets")
    assert t.kind == "triplets" and t.split_by == "item" and t.profile == "toyworld"
    objs = np.unique(video.object_names)
    assert sorted(t.item_ids.tolist()) == objs.tolist(), "one item per object, named as the video's objects"
    split_of = dict(zip(video.object_names.tolist(), video.split.tolist()))
    assert [split_of[i] for i in t.item_ids] == t.item_split.tolist(), "items keep their object's split"
    cat_of = dict(zip(video.object_names.tolist(), video.category.tolist()))
    assert [cat_of[i] for i in t.item_ids] == t.item_class.tolist()
    item, index = t.item_images
    assert len(index) == len(video), "every frame is an image of its object"
    store_v, store_t = video.images(32), t.images(32)
    for k in (0, len(index) // 2, len(index) - 1):  # the same bytes as the video's frame
        row = int(np.flatnonzero((video.object_names == t.item_ids[item[k]]) & (video.index == index[k]))[0])
        assert store_t.encoded(int(index[k])) == store_v.encoded(int(video.index[row]))
    assert set(t.triplet_kind.tolist()) == {"odd-one-out", "directed"}
    test_items = set(np.flatnonzero(t.item_split == "test").tolist())
    for split in ("train", "val", "test"):
        rows = t.triplet_rows(split)
        assert len(rows), split
        inside = np.isin(t.triplets[rows], list(test_items)).all(1)
        assert inside.all() if split == "test" else not np.isin(t.triplets[rows], list(test_items)).any(), split
    assert (t.triplets[:, 0] != t.triplets[:, 1]).all() and (t.triplets[:, 1] != t.triplets[:, 2]).all() and (t.triplets[:, 0] != t.triplets[:, 2]).all()
    assert cli("build-data", "--verify", tiny_world).exit_code == 0, "the video dataset is untouched"
    assert cli("build-data", "--verify", tiny_world / "triplets").exit_code == 0


def test_latent_similarity_and_observer():
    rng = np.random.default_rng(0)
    n = 30
    objects = {"category": rng.integers(0, 3, n), "hue": rng.random(n), "texture": rng.integers(0, 5, n),
               "proportions": np.where(np.arange(4) < 2, rng.uniform(0.7, 1.3, (n, 4)), np.nan), "stretch": rng.uniform(0.85, 1.15, (n, 3)),
               "saturation": rng.random(n), "value": rng.random(n), "n_params": np.full(n, 2)}
    s = toy_triplets.latent_similarity(objects)
    # brute force of the documented formula for one pair
    i, j = 3, 7
    dh = abs(objects["hue"][i] - objects["hue"][j]) % 1.0
    dh = min(dh, 1 - dh)
    same = objects["category"][i] == objects["category"][j]
    logs = np.log(np.r_[objects["proportions"][i, :2], objects["stretch"][i]]) - np.log(np.r_[objects["proportions"][j, :2], objects["stretch"][j]])
    want = 1.0 * same + 0.6 * np.exp(-(dh / 0.1) ** 2) + 0.3 * (objects["texture"][i] == objects["texture"][j]) + 0.3 * same * np.exp(-np.mean(logs**2) / 0.04)
    assert s[i, j] == pytest.approx(want) and np.allclose(s, s.T)
    triples = np.stack([rng.permutation(n)[:3] for _ in range(500)])
    for kind in ("directed", "odd-one-out"):  # a noiseless observer always follows the latent similarity
        t = toy_triplets.judge(s, triples, kind, rng, tau=1e-6)
        a, b, c = t.T
        ok = s[a, b] > s[a, c] if kind == "directed" else (s[a, b] > s[a, c]) & (s[a, b] > s[b, c])
        assert ok.mean() > 0.99, (kind, ok.mean())
        assert (np.sort(t, 1) == np.sort(triples, 1)).all(), "the judged triplet has the shown objects"


def test_teacher_recovers_the_latent_similarity(tmp_path, tiny_world, monkeypatch):
    """Fitted on the toy triplets (here: with no --data, the default world being the tiny one), a
    teacher's pairwise distances rank like the latent distances (Spearman >= 0.8)."""
    from scipy.stats import spearmanr

    import simtool.stages.train as train_stage
    from simtool.models import load_model

    monkeypatch.setattr(train_stage, "default_toyworld_path", lambda: tiny_world)
    out = tmp_path / "teach"
    result = cli("train", "--preset", "toy_p_ste", "--repeats", "2", "--out", out, "--device", "cpu", "--set", "loop.batch_size=200")
    assert result.exit_code == 0, result.output
    spec = json.loads(json.dumps(__import__("yaml").safe_load((out / "spec.yaml").read_text())))
    assert spec["data"]["path"] == str(tiny_world / "triplets") and spec["profile"] == "toyworld"
    model = load_model(out / "checkpoints" / "final.safetensors")  # each repetition at its own best validation pass
    ds = Dataset(tiny_world / "triplets")
    truth = toy_triplets.latent_distance(world_objects(tiny_world))
    learn = np.flatnonzero(np.isin(ds.item_split, ["train", "val"]))
    iu = np.triu_indices(len(learn), 1)
    with torch.no_grad():
        emb = model.embed(torch.arange(len(ds)))["embedding"]
    for r in range(2):
        e = emb[learn, r]
        rho = spearmanr(torch.cdist(e, e).numpy()[iu], truth[np.ix_(learn, learn)][iu]).statistic
        assert rho >= 0.8, (r, rho)


def test_student_beats_an_untrained_network_on_held_out_objects(tmp_path, medium_world):
    from simtool.embedding.runs import LoadedRun, embed_rows
    from simtool.formats.weights import read_card
    from simtool.metrics.triplets import triplet_accuracy
    from simtool.models import create_model

    data = medium_world / "triplets"
    teach, student = tmp_path / "teach", tmp_path / "student"
    assert cli("train", "--preset", "toy_p_ste", "--data", data, "--out", teach, "--device", "cpu", "--set", "loop.batch_size=500").exit_code == 0
    emb = tmp_path / "teachers.safetensors"
    assert cli("save-embeddings", teach, "--split", "all", "--out", emb, "--device", "cpu").exit_code == 0
    result = cli("train", "--preset", "toy_se_stmr", "--data", data, "--out", student, "--device", "cpu",
                 *sets([f"data.teacher={emb}", "data.image_size=32", "loop.epochs=10", "loop.batch_size=16"]))
    assert result.exit_code == 0, result.output
    out = tmp_path / "r.json"
    assert cli("evaluate", student, "--type", "triplets", "--layers", "embedding", "--out", out, "--device", "cpu").exit_code == 0
    trained = {r["level"]: r["value"] for r in json.loads(out.read_text())["records"] if r["metric"] == "accuracy"}
    ds = Dataset(data)
    card = read_card(student / "checkpoints" / "best.safetensors")
    torch.manual_seed(0)
    untrained = create_model("student", **card["kwargs"]).eval()
    rows = ds.export_rows("test", False)
    e = embed_rows(LoadedRun(None, "untrained", untrained, card, {}, None, True), ds, rows, ["embedding"], torch.device("cpu"))["embedding"][:, 0]
    trip = ds.triplets_of(rows, "test")
    assert set(np.unique(ds.item_split[rows])) == {"test"}, "scored on held-out objects only"
    for kind in ("directed", "odd-one-out"):
        base = triplet_accuracy(e, trip.index[trip.kind == kind], kind)
        assert trained[kind] > base + 0.05, (kind, trained[kind], base)
