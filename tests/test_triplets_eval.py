"""``evaluate --type triplets``: against a brute-force loop, on files, runs and plain arrays; compare."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from simtool.evaluators.triplets import TripletsEvaluator, TripletsOptions
from simtool.formats.embeddings import Embeddings, Triplets, read_embeddings, write_embeddings
from simtool.formats.results import decode_sample, read_results
from tests.conftest import cli, sets
from tests.triplet_data import build


def brute_correct(e: np.ndarray, t, kind: str) -> list[bool]:
    out = []
    for a, b, c in t:
        d = lambda i, j: float(np.sqrt(((e[i] - e[j]) ** 2).sum()))  # noqa: E731
        if kind == "directed":
            out.append(d(a, b) < d(a, c))
        else:
            out.append(d(a, b) < d(a, c) and d(a, b) < d(b, c))
    return out


def brute_ensemble(x: np.ndarray, t, kind: str) -> list[bool]:
    out = []
    for a, b, c in t:
        s = lambda i, j: np.mean([x[i, r] @ x[j, r] / (np.linalg.norm(x[i, r]) * np.linalg.norm(x[j, r])) for r in range(x.shape[1])])  # noqa: E731
        out.append(s(a, b) > s(a, c) if kind == "directed" else s(a, b) > s(a, c) and s(a, b) > s(b, c))
    return out


def make_embeddings(x: np.ndarray, trip: np.ndarray, kinds: np.ndarray, splits: np.ndarray, reps=None) -> Embeddings:
    n = x.shape[0]
    rows = pa.table({"id": [f"i{k}" for k in range(n)], "split": [""] * n})
    model = {"name": "m", "layers": ["embedding"], "method": "teacher", "preset": "p", "seed": 3}
    if reps:
        model["repetitions"] = reps
    return Embeddings(rows=rows, models=[model], tensors={"m/embedding": torch.from_numpy(x).float()}, split="all",
                      triplets=Triplets(trip, kinds, splits))


def test_matches_a_brute_force_loop_with_ties_wrong():
    rng = np.random.default_rng(0)
    n, r = 30, 3
    x = rng.normal(size=(n, r, 5)).astype(np.float32)
    x[5] = x[6]  # exact ties: a tied pair is never correct
    trip = np.stack([rng.permutation(n)[:3] for _ in range(400)])
    trip[:5] = [[5, 6, 7], [7, 5, 6], [5, 7, 6], [6, 5, 7], [1, 5, 6]]
    kinds = np.where(np.arange(400) % 2 == 0, "directed", "odd-one-out")
    splits = np.where(np.arange(400) < 300, "test", "val")
    emb = make_embeddings(x, trip, kinds, splits)
    records = TripletsEvaluator().evaluate(emb, TripletsOptions())
    test = splits == "test"
    for kind in ("directed", "odd-one-out"):
        sel = test & (kinds == kind)
        for rep in range(r):
            rec = next(q for q in records if q["metric"] == "accuracy" and q["level"] == kind and q["repeat"] == rep)
            want = brute_correct(x[:, rep], trip[sel], kind)
            assert rec["value"] == pytest.approx(np.mean(want)) and rec["n"] == sel.sum()
            assert rec["sample"]["unit"] == "triplet" and decode_sample(rec["sample"]).tolist() == [float(v) for v in want]
        ens = next(q for q in records if q["metric"] == "ensemble_accuracy" and q["level"] == kind)
        assert ens["value"] == pytest.approx(np.mean(brute_ensemble(x, trip[sel], kind)))
    # the ties: (5, 6) tied with (5, 7)? no: d(5,6) = 0 < others, so [5,6,7] is correct; a pair tied with
    # the labelled one is wrong: [1, 5, 6] directed asks d(1,5) < d(1,6), equal -> wrong
    one = make_embeddings(x, trip[4:5], np.array(["directed"]), np.array(["test"]))
    assert TripletsEvaluator().evaluate(one, TripletsOptions())[0]["value"] == 0.0
    val = TripletsEvaluator().evaluate(emb, TripletsOptions(triplet_split="val"))
    assert {q["n"] for q in val if q["metric"] == "accuracy"} == {50}


def test_embeddings_file_keeps_its_triplets(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 2, 4)).astype(np.float32)
    trip = np.stack([rng.permutation(12)[:3] for _ in range(20)])
    emb = make_embeddings(x, trip, np.array(["odd-one-out"] * 20), np.array(["test"] * 10 + ["train"] * 10))
    path, _ = write_embeddings(tmp_path / "e.safetensors", emb)
    back = read_embeddings(path)
    assert np.array_equal(back.triplets.index, trip) and back.triplets.split.tolist() == ["test"] * 10 + ["train"] * 10
    assert list(back.tensors) == ["m/embedding"], "the triplets are not an embedding"


def test_plain_array_with_a_triplets_file(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    trip = np.stack([rng.permutation(20)[:3] for _ in range(50)])
    (tmp_path / "t.csv").write_text("a,b,c,kind\n" + "".join(f"{a},{b},{c},directed\n" for a, b, c in trip))
    out = tmp_path / "r.json"
    result = cli("evaluate", tmp_path / "x.npy", "--labels", tmp_path / "t.csv", "--type", "triplets", "--out", out)
    assert result.exit_code == 0, result.output
    rec = [r for r in json.loads(out.read_text())["records"] if r["metric"] == "accuracy"]
    assert len(rec) == 1 and rec[0]["value"] == pytest.approx(np.mean(brute_correct(x, trip, "directed")))
    (tmp_path / "nokind.csv").write_text("a,b,c\n" + "".join(f"{a},{b},{c}\n" for a, b, c in trip))
    assert cli("evaluate", tmp_path / "x.npy", "--labels", tmp_path / "nokind.csv", "--type", "triplets", "--set", "kind=odd-one-out").exit_code == 0

    def fails(*args, text):
        result = cli(*args)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert text in result.output.replace("\n", " "), result.output

    fails("evaluate", tmp_path / "x.npy", "--labels", tmp_path / "nokind.csv", "--type", "triplets", text="has no kind column")
    fails("evaluate", tmp_path / "x.npy", "--type", "triplets", text="needs --labels FILE")
    (tmp_path / "far.csv").write_text("a,b,c,kind\n0,1,99,directed\n")
    fails("evaluate", tmp_path / "x.npy", "--labels", tmp_path / "far.csv", "--type", "triplets", text="outside the array's rows")
    (tmp_path / "bad.csv").write_text("a,b,kind\n0,1,directed\n")
    fails("evaluate", tmp_path / "x.npy", "--labels", tmp_path / "bad.csv", "--type", "triplets", text="lacks the column(s) c")
    fails("evaluate", tmp_path / "x.npy", "--labels", tmp_path / "t.csv", "--type", "triplets", "--repeats", "3", text="does not apply to --type triplets")


def test_video_embeddings_have_no_triplets(tmp_path, tiny_run):
    emb = tmp_path / "v.safetensors"
    assert cli("save-embeddings", tiny_run, "--out", emb, "--device", "cpu", "--layers", "time.out").exit_code == 0
    result = cli("evaluate", emb, "--type", "triplets")
    assert result.exit_code == 2 and "carry no labelled triplets" in result.output


def test_teacher_run_to_compare_mean_and_sd(tmp_path):
    data, _ = build(tmp_path / "d", n_triplets=2000)
    run = tmp_path / "run"
    extra = ["loop.epochs=2", "loop.batch_size=200", "model.dim=8", "optim.lr=0.02"]
    assert cli("train", "--preset", "things_p_ste", "--data", data, "--repeats", "3", "--out", run, "--device", "cpu", *sets(extra)).exit_code == 0
    result = cli("evaluate", run, "--type", "triplets", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "ensemble" in result.output
    doc = read_results(run / "eval-triplets-test.json")
    per = [r for r in doc["records"] if r["metric"] == "accuracy"]
    assert [r["repeat"] for r in per] == [0, 1, 2] and all(r["level"] == "odd-one-out" for r in per)
    assert len(doc["samples"]) == 4, "every record carries its per-triplet correctness"
    cmp = tmp_path / "cmp"
    result = cli("compare", run, "--out", cmp, "--no-figures")
    assert result.exit_code == 0, result.output
    groups = json.loads((cmp / "comparison.json").read_text())["groups"]
    g = next(g for g in groups if g["metric"] == "accuracy")
    assert g["n"] == 3 and g["sd"] is not None and g["mean"] == pytest.approx(np.mean([r["value"] for r in per]))
