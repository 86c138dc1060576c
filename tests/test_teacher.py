"""Psycho teachers: the teacher method end to end, its repetitions, L1, resume, export and failures."""

from __future__ import annotations

import io

import pytest
import torch
import yaml
from rich.console import Console

from simtool.formats.embeddings import read_embeddings
from simtool.formats.run_dir import RunDir
from simtool.models import load_model
from tests.conftest import cli, sets
from tests.triplet_data import build

FAST = ["loop.epochs=4", "loop.batch_size=200", "model.dim=8", "optim.lr=0.02", "loop.log_every=5"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path, truth = build(tmp_path_factory.mktemp("teach"), n_items=40, n_triplets=3000)
    return path


@pytest.fixture(scope="module")
def run3(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "teach3"
    result = cli("train", "--preset", "things_p_ste", "--data", data, "--repeats", "3", "--out", out, "--device", "cpu", *sets(FAST))
    assert result.exit_code == 0, result.output
    return out


def _spec(data, *extra, repeats=1):
    from simtool.methods import resolve_train_spec

    return resolve_train_spec("things_p_ste", sets=FAST + [f"repeats={repeats}", *extra], data=str(data), device="cpu")


def _train(spec, out, **kw):
    from simtool.stages import train as stage

    return stage.train(spec, str(out), console=Console(file=io.StringIO()), **kw)


def test_teacher_run_end_to_end(run3, data):
    spec = yaml.safe_load((run3 / "spec.yaml").read_text())
    assert spec["method"] == "teacher" and spec["repeats"] == 3 and spec["model"]["dim"] == 8 and spec["select"] == "each"
    run = RunDir(run3)
    assert run.state() == "finished" and not run.best_weights.is_file(), "select: each keeps the best passes in the model itself"
    evals = [r for r in run.read_metrics() if r["type"] == "eval"]
    assert len(evals) == 4 and all({"val/accuracy", "val/accuracy_r0", "val/accuracy_r2", "val/ensemble_accuracy"} <= set(r) for r in evals)
    assert evals[-1]["val/accuracy"] > 0.6, "the planted structure is learned (chance is 1/3)"
    model = load_model(run.final_weights)
    assert model().shape == (40, 3, 8)
    # every repetition keeps the table of its own best validation pass, and exports it
    for i in range(3):
        assert model.best_value[i].item() == pytest.approx(max(r[f"val/accuracy_r{i}"] for r in evals))
    best = torch.nn.functional.normalize(model.best_weight.clamp_min(0), dim=-1).transpose(0, 1)
    assert torch.allclose(model.embed(torch.arange(40))["embedding"], best)


def test_teachers_cannot_score_items_they_never_saw(tmp_path):
    """The paper's stage layout (an item split 0.6/0.2/0.2): the teachers learn the train and val
    items; test triplets name items whose rows were never trained: one sentence, not a figure."""
    data, _ = build(tmp_path / "d", split_by="item", split="0.6,0.2,0.2")
    run = tmp_path / "t"
    assert cli("train", "--preset", "things_p_ste", "--data", data, "--out", run, "--device", "cpu", *sets(FAST)).exit_code == 0
    card = load_model(RunDir(run).final_weights).simtool_card
    assert card["context"]["trained_items"] == ["train", "val"]
    refused = cli("evaluate", run, "--type", "triplets", "--split", "all", "--set", "triplet_split=test")
    assert refused.exit_code == 2 and "never saw" in refused.output and "Traceback" not in refused.output
    fine = cli("evaluate", run, "--type", "triplets", "--split", "all", "--set", "triplet_split=train", "--out", tmp_path / "r.json")
    assert fine.exit_code == 0, fine.output


def test_select_together_keeps_one_best_epoch(tmp_path, data):
    out = tmp_path / "together"
    _train(_spec(data, "select=together", "checkpoint.best=val/accuracy", repeats=2), out)
    run = RunDir(out)
    evals = [r for r in run.read_metrics() if r["type"] == "eval"]
    assert run.best_info()["value"] == max(r["val/accuracy"] for r in evals)
    assert not load_model(run.best_weights).keep_best
    with pytest.raises(Exception, match="select: each"):
        _spec(data, "checkpoint.best=val/accuracy")


def test_repetitions_train_as_separate_runs(tmp_path, data):
    """Repetition 0 of an R=3 run is the R=1 run with the same seed: the R teachers share nothing."""
    _train(_spec(data, repeats=3), tmp_path / "r3")
    _train(_spec(data, repeats=1), tmp_path / "r1")
    w3 = load_model(tmp_path / "r3" / "checkpoints" / "final.safetensors").weight.detach()
    w1 = load_model(tmp_path / "r1" / "checkpoints" / "final.safetensors").weight.detach()
    assert torch.allclose(w3[0], w1[0], atol=1e-4), float((w3[0] - w1[0]).abs().max())
    assert not torch.allclose(w3[0], w3[1]), "other repetitions start from other seeds"


def test_l1_penalty_acts_on_the_weights(tmp_path, data):
    _train(_spec(data, "model.l1=0"), tmp_path / "none")
    _train(_spec(data, "model.l1=0.001"), tmp_path / "l1")
    plain = load_model(tmp_path / "none" / "checkpoints" / "final.safetensors").weight.detach()
    sparse = load_model(tmp_path / "l1" / "checkpoints" / "final.safetensors").weight.detach()
    assert sparse.abs().sum() < 0.8 * plain.abs().sum()
    assert (sparse <= 0).float().mean() > (plain <= 0).float().mean(), "L1 switches units off"


def test_resume_is_exact(tmp_path, data):
    from simtool.engine.loop import TrainingInterrupted
    from simtool.stages import train as stage

    spec = _spec(data, repeats=2)
    _train(spec, tmp_path / "full")
    with pytest.raises(TrainingInterrupted):
        _train(spec, tmp_path / "cut", stop_after_steps=13)  # mid-epoch (9 steps per epoch)
    stage.resume(tmp_path / "cut", console=Console(file=io.StringIO()))
    a = load_model(tmp_path / "full" / "checkpoints" / "final.safetensors").state_dict()
    b = load_model(tmp_path / "cut" / "checkpoints" / "final.safetensors").state_dict()
    assert a.keys() == b.keys() and {"weight", "best_weight", "best_value"} <= set(a)
    assert all(torch.equal(a[k], b[k]) for k in a), "weights and each repetition's best pass resume exactly"


def test_validation_without_a_val_split_holds_out_training_triplets(tmp_path):
    data, _ = build(tmp_path / "d", split="0.9,0.1")
    from simtool.formats.dataset_dir import Dataset
    from simtool.methods._triplets import TripletSplitSpec, select_triplets

    ds = Dataset(data)
    sets_ = select_triplets(ds, TripletSplitSpec(), seed=0)
    train = ds.triplets[ds.triplet_rows("train")]
    assert sets_.val_source.startswith("0.1 of the training")
    assert len(sets_.val) == round(0.1 * len(train)) and len(sets_.train) + len(sets_.val) == len(train)
    test = {tuple(t) for t in ds.triplets[ds.triplet_rows("test")]}
    assert not test & {tuple(t) for t in sets_.val}, "never the test triplets"
    assert not {tuple(t) for t in sets_.train} & {tuple(t) for t in sets_.val}
    assert select_triplets(ds, TripletSplitSpec(val_fraction=0), seed=0).val_source == "none"


def test_export_teachers(tmp_path, run3, data):
    out = tmp_path / "t.safetensors"
    assert cli("save-embeddings", run3, "--split", "all", "--out", out, "--device", "cpu").exit_code == 0
    emb = read_embeddings(out)
    assert len(emb.models) == 1
    t = emb.tensor(emb.models[0]["name"], "embedding")
    assert t.shape == (40, 3, 8)
    assert emb.ids.tolist() == [f"item{i}" for i in range(40)] or sorted(emb.ids.tolist()) == sorted(f"item{i}" for i in range(40))
    model = load_model(RunDir(run3).final_weights)
    assert torch.allclose(t, model.embed(torch.arange(40))["embedding"].detach()), "each repetition's best table, rows in item order"
    assert emb.models[0]["weights"] == "final"
    assert len(emb.triplets) > 0 and set(emb.triplets.split.tolist()) == {"train", "val", "test"}
    # another teacher run stacks along R
    one = tmp_path / "one"
    assert cli("train", "--preset", "things_p_ste", "--data", data, "--out", one, "--device", "cpu", "--seed", "7", *sets(FAST)).exit_code == 0
    both = tmp_path / "both.safetensors"
    assert cli("save-embeddings", run3, one, "--split", "test", "--out", both, "--device", "cpu").exit_code == 0
    emb2 = read_embeddings(both)
    assert emb2.tensor(emb2.models[0]["name"], "embedding").shape == (40, 4, 8)
    reps = emb2.models[0]["repetitions"]
    assert [r["seed"] for r in reps] == [0, 0, 0, 7] and [r["repeat"] for r in reps] == [0, 1, 2, 0]
    assert set(emb2.triplets.split.tolist()) == {"test"}


def test_teacher_failures(tmp_path, data, tiny_world, tiny_run):
    def fails(*args, text):
        result = cli(*args)
        assert result.exit_code == 2, result.output
        out = result.output.replace("\n", " ")
        assert "Error:" in out and "Traceback" not in out, out
        msg = out[out.index("Error:"):].strip()
        assert text in msg and msg.count(". ") <= 1, msg  # one sentence (a path may hold a dot)

    fails("train", "--preset", "normal", "--repeats", "3", "--dry-run", text="does not do; train one run per seed")
    fails("train", "--preset", "things_p_ste", "--data", tiny_world, "--out", tmp_path / "a", "--device", "cpu", text="is a video dataset")
    fails("train", "--preset", "things_p_ste", "--data", data, "--out", tmp_path / "b", "--device", "cpu", text="more than the")
    fails("train", "--preset", "things_p_ste", "--data", data, "--set", "loss.name=stmr", "--dry-run", text="is a relational loss")
    fails("train", "--preset", "things_p_ste", "--data", data, "--set", "loss.options.tau=-1", "--dry-run", text="tau=-1")
    fails("train", "--preset", "things_p_ste", "--data", data, *sets(FAST + ["select=together", "checkpoint.best=val/nope"]), "--out", tmp_path / "c",
          "--device", "cpu", text="is not a figure this method's validation reports")
    fails("train", "--preset", "things_p_ste", "--data", data, *sets(["checkpoint.best=val/accuracy"]), "--dry-run", text="set select=together")
    fails("train", "--preset", "things_p_ste", "--data", data, *sets(FAST + ["data.train_splits=[test]"]), "--dry-run", text="never train or validate")
    fails("train", "--resume", tiny_run, "--repeats", "2", text="--resume continues")
    run = tmp_path / "r"
    assert cli("train", "--preset", "things_p_ste", "--data", data, "--out", run, "--device", "cpu", *sets(FAST)).exit_code == 0
    fails("save-embeddings", run, tiny_run, "--out", tmp_path / "x.safetensors", "--device", "cpu", text="export them to separate files")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists(), "a failed start leaves nothing"
