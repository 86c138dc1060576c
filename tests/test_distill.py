"""Teacher-student distillation and the direct route: image students of teachers or one-hot classes,
the best checkpoint, teacher files matched by id, and every failure one sentence."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pytest
import torch
from rich.console import Console

from simtool.formats.embeddings import Embeddings, read_embeddings, write_embeddings
from simtool.formats.run_dir import RunDir
from tests.conftest import cli, sets
from tests.triplet_data import build

STUDENT = ["model.backbone=test_resnet", "model.pretrained=false", "model.dim=8", "data.image_size=16", "loop.epochs=2",
           "loop.batch_size=8", "validation.triplets=2000", "optim.lr=0.001", "loop.log_every=2"]
TEACH = ["loop.epochs=3", "loop.batch_size=200", "model.dim=6", "optim.lr=0.02"]


def fails(*args, text):
    result = cli(*args)
    out = result.output.replace("\n", " ")
    assert result.exit_code == 2 and "Error:" in out and "Traceback" not in out, out
    assert text in out[out.index("Error:"):], out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A triplets dataset with one image per item, split by item, its teachers (R = 2) and their export."""
    root = tmp_path_factory.mktemp("distill")
    data, _ = build(root, n_items=48, n_triplets=8000, kind="directed", split="0.6,0.2,0.2", split_by="item", images=True)
    teach = root / "teach"
    result = cli("train", "--preset", "zappos_p_ste", "--data", data, "--repeats", "2", "--out", teach, "--device", "cpu", *sets(TEACH))
    assert result.exit_code == 0, result.output
    emb = root / "teachers.safetensors"
    assert cli("save-embeddings", teach, "--split", "all", "--out", emb, "--device", "cpu").exit_code == 0
    return data, teach, emb


def test_student_end_to_end_keeps_the_best_checkpoint(tmp_path, world):
    data, _, emb = world
    out = tmp_path / "student"
    result = cli("train", "--preset", "zappos_se_stmr", "--data", data, "--out", out, "--device", "cpu", *sets(STUDENT + [f"data.teacher={emb}"]))
    assert result.exit_code == 0, result.output
    run = RunDir(out)
    evals = [r for r in run.read_metrics() if r["type"] == "eval"]
    assert all("val/fstrt" in r and "val/fstr" in r for r in evals) and len(evals) == 2
    best = run.best_info()
    assert best["metric"] == "val/fstrt" and best["value"] == max(r["val/fstrt"] for r in evals)
    card = json.loads(__import__("simtool.formats.weights", fromlist=["read_metadata"]).read_metadata(run.best_weights)["card"])
    assert card["input"]["mean"] == [0.5, 0.5, 0.5] and card["input"]["crop_frac"] == 0.95, "test_resnet's own normalisation"
    file = tmp_path / "s.safetensors"
    assert cli("save-embeddings", out, "--out", file, "--device", "cpu").exit_code == 0
    e = read_embeddings(file)
    assert e.models[0]["weights"] == "best" and e.models[0]["best"]["epoch"] == best["epoch"]
    assert set(e.column("split").tolist()) == {"test"} and len(e.triplets) and set(e.triplets.split.tolist()) == {"test"}
    from simtool.models import load_model

    # save-embeddings used the best weights, not the final ones
    model = load_model(run.best_weights)
    from simtool.embedding.runs import load_run

    assert torch.equal(load_run(out).model.head[0].weight, model.head[0].weight)
    r = cli("evaluate", file, "--type", "triplets")
    assert r.exit_code == 0 and "directed" in r.output


def test_teacher_rows_are_matched_by_id_and_broadcast_to_images(tmp_path, world, tiny_world):
    from simtool.formats.dataset_dir import Dataset
    from simtool.methods.distill import load_teachers

    data, _, emb = world
    rows = Dataset(data).image_table()
    t = load_teachers([str(emb)], None, "embedding", rows.key)
    e = read_embeddings(emb)
    pos = {k: i for i, k in enumerate(e.ids)}
    want = e.tensor(e.models[0]["name"], "embedding")[[pos[k] for k in rows.key]]
    assert torch.equal(t, want), "row i of the student's images gets the teacher row of its item's id"
    # items with several images (the toy world's objects): every image of an item has its item's vector
    toy = Dataset(tiny_world / "triplets")
    rows = toy.image_table()
    assert len(rows.image) == len(toy.item_images[0]) > len(toy)
    fake = torch.randn(len(toy), 2, 3)
    file = tmp_path / "toy.safetensors"
    table = pa.table({"id": toy.item_ids.tolist(), "split": [""] * len(toy)})
    write_embeddings(file, Embeddings(rows=table, models=[{"name": "t", "layers": ["embedding"]}], tensors={"t/embedding": fake}))
    got = load_teachers([str(file)], None, "embedding", rows.key)
    for item in (0, 5, len(toy) - 1):
        sel = rows.group == item
        assert sel.sum() == 6 and torch.equal(got[sel], fake[item].expand(6, 2, 3))


def test_teacher_file_failures(tmp_path, world, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # fail at once, without network retries
    data, teach, emb = world
    base = ["train", "--preset", "zappos_se_rkd", "--data", data, "--device", "cpu", *sets(STUDENT)]
    fails(*base, "--out", tmp_path / "a", text="The student needs teachers")
    other, _ = build(tmp_path / "other", n_items=10, n_triplets=300, kind="directed")
    o_run = tmp_path / "o_run"
    assert cli("train", "--preset", "zappos_p_ste", "--data", other, "--out", o_run, "--device", "cpu", *sets(TEACH + ["loop.batch_size=50"])).exit_code == 0
    o_emb = tmp_path / "o.safetensors"
    assert cli("save-embeddings", o_run, "--split", "all", "--out", o_emb, "--device", "cpu").exit_code == 0
    fails(*base, "--out", tmp_path / "b", "--set", f"data.teacher={o_emb}", text="has no row for id 'item10'")
    e = read_embeddings(emb)
    name = e.models[0]["name"]
    bad = e.tensor(name, "embedding").clone()
    bad[3, 1, 2] = float("nan")
    nan_file = tmp_path / "nan.safetensors"
    write_embeddings(nan_file, Embeddings(rows=e.rows, models=e.models, tensors={f"{name}/embedding": bad}))
    fails(*base, "--out", tmp_path / "c", "--set", f"data.teacher={nan_file}", text="hold NaN or infinite values")
    wide = tmp_path / "wide.safetensors"
    write_embeddings(wide, Embeddings(rows=e.rows, models=[{**e.models[0], "name": "w"}], tensors={"w/embedding": torch.rand(len(e), 1, 9)}))
    fails(*base, "--out", tmp_path / "d", "--set", f"data.teacher=[{emb}, {wide}]", text="different dimensions")
    fails(*base, "--out", tmp_path / "e", "--set", f"data.teacher={emb}", "--set", "data.teacher_layer=backbone", text="has no layer 'backbone'")
    fails(*base, "--out", tmp_path / "f", "--set", f"data.teacher={tmp_path / 'missing.safetensors'}", text="does not exist")
    fails(*base, "--out", tmp_path / "g", "--set", f"data.teacher={emb}", "--set", "loop.batch_size=500", "--set", "data.last_batch=drop",
          text="more than the")
    fails("train", "--preset", "zappos_se_rkd", "--data", data, "--set", "loss.name=ste", "--dry-run", text="is a labelled loss")
    fails("train", "--preset", "things_se_rkd", "--data", data, "--out", tmp_path / "h", "--device", "cpu",
          "--set", f"data.teacher={emb}", "--set", "loop.batch_size=8",
          text="Could not download pretrained weights")
    assert not any((tmp_path / x).exists() for x in "abcdefgh"), "a failed start leaves no run directory"


def test_one_hot_class_teachers(tmp_path):
    from PIL import Image

    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    for c in range(8):
        (src / f"class{c}").mkdir(parents=True)
        colour = rng.integers(0, 255, 3)
        for i in range(6):
            img = np.clip(colour + rng.integers(-30, 30, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(src / f"class{c}" / f"{i}.png")
    data = tmp_path / "classes"
    assert cli("build-data", "--format", "imagefolder", src, "--out", data, "--split", "0.75,0.25").exit_code == 0
    out = tmp_path / "run"
    result = cli("train", "--preset", "cub_se_stmr", "--data", data, "--out", out, "--device", "cpu",
                 *sets(STUDENT + ["model.head=linear", "loop.batch_size=12", "data.val_fraction=0.34"]))
    assert result.exit_code == 0, result.output
    evals = [r for r in RunDir(out).read_metrics() if r["type"] == "eval"]
    assert evals and all(0 <= r["val/precision_at_1"] <= 1 for r in evals) and "val/fstrt" not in evals[0]
    assert RunDir(out).best_info()["metric"] == "val/precision_at_1"
    assert cli("evaluate", out, "--type", "classes", "--device", "cpu").exit_code == 0


def test_one_hot_batches_and_sampler():
    from simtool.methods.distill import per_class_batches

    groups = np.repeat(np.arange(10), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    out = per_class_batches(groups, 12, 2, 20, np.random.default_rng(0))
    for batch in out:
        g = groups[batch]
        assert len(batch) == 12 and len(set(batch.tolist())) == 12, "no image twice in a batch"
        _, counts = np.unique(g[:10], return_counts=True)
        assert counts.max() <= 2, "at most per_class images of a class in a pass over the classes"


def test_direct_route(tmp_path, world):
    data, _, _ = world
    out = tmp_path / "direct"
    extra = ["model.backbone=test_resnet", "model.pretrained=false", "model.dim=8", "data.image_size=16", "loop.epochs=2", "loop.batch_size=64",
             "data.train_splits=[train, val]", "data.val_fraction=0.1"]
    result = cli("train", "--preset", "yummly_d_trip", "--data", data, "--out", out, "--device", "cpu", *sets(extra))
    assert result.exit_code == 0, result.output
    evals = [r for r in RunDir(out).read_metrics() if r["type"] == "eval"]
    assert len(evals) == 2 and all(0 <= r["val/accuracy"] <= 1 for r in evals)
    assert RunDir(out).best_weights.is_file()
    assert cli("evaluate", out, "--type", "triplets", "--device", "cpu").exit_code == 0


def test_best_checkpoint_in_the_engine(tmp_path):
    """The engine keeps the weights of the best validation pass and survives a resume with it."""
    from typing import Literal

    from simtool.engine.loop import TrainingInterrupted, fit
    from simtool.engine.method import Method
    from simtool.models import create_model
    from simtool.specs.common import CheckpointSpec, CommonSpec, LoopSpec

    class S(CommonSpec):
        method: Literal["bestdemo"] = "bestdemo"

    scores = [0.3, 0.7, 0.5, 0.7, 0.2]

    class M(Method):
        def __init__(self, spec, device, dist, console):
            torch.manual_seed(0)
            self.model = create_model("psycho", n_items=3, dim=2)

        def steps_per_epoch(self):
            return 2

        def batches(self, epoch, start_step):
            yield from range(start_step, 2)

        def training_step(self, model, batch, info):
            return model().sum(), {}

        def evaluate(self, model, epoch, device):
            return {"val/score": scores[epoch - 1]}

    def make(spec, device, dist, console):
        return M(spec, device, dist, console)

    spec = S(device="cpu", loop=LoopSpec(epochs=5, batch_size=2), checkpoint=CheckpointSpec(best="val/score"))
    quiet = Console(file=io.StringIO())
    full = RunDir(tmp_path / "full")
    summary = fit(spec, full, make, console=quiet)
    assert summary["best"]["epoch"] == 2 and summary["best"]["value"] == 0.7, "strictly better only: the later 0.7 does not replace it"
    ckpt2 = RunDir(tmp_path / "cut")
    with pytest.raises(TrainingInterrupted):
        fit(spec, ckpt2, make, console=quiet, stop_after_steps=7)
    fit(spec, ckpt2, make, resume=True, console=quiet)
    from simtool.formats.weights import read_state

    assert torch.equal(read_state(full.best_weights)["weight"], read_state(ckpt2.best_weights)["weight"])
    assert full.weights()[0] == full.best_weights and full.weights(prefer_best=False)[0] == full.final_weights
    low = S(device="cpu", loop=LoopSpec(epochs=5, batch_size=2), checkpoint=CheckpointSpec(best="val/score", best_mode="min"))
    assert fit(low, RunDir(tmp_path / "low"), make, console=quiet)["best"]["epoch"] == 5
    from simtool.errors import UserError

    with pytest.raises(UserError, match="loop.eval_every=0 runs none"):
        fit(S(device="cpu", loop=LoopSpec(epochs=1, batch_size=2, eval_every=0), checkpoint=CheckpointSpec(best="val/score")),
            RunDir(tmp_path / "x"), make, console=quiet)
