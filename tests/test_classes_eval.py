"""``evaluate --type classes`` end to end: a .npy with a labels file, and an embeddings file with R > 1."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from simtool.formats.embeddings import Embeddings, write_embeddings
from simtool.formats.results import decode_sample
from simtool.metrics.clustering import ami, kmeans, nmi
from simtool.metrics.retrieval import retrieval_metrics
from tests.conftest import cli


def _data(seed=0, n_classes=25, per=4, d=12):
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.repeat(np.arange(n_classes), per), [n_classes, n_classes + 1]])  # two singleton classes
    centres = rng.standard_normal((n_classes + 2, d)) * 1.2
    x = (centres[labels] + rng.standard_normal((len(labels), d))).astype(np.float32)
    return x, labels


def test_npy_with_labels_file(tmp_path):
    x, labels = _data()
    np.save(tmp_path / "feats.npy", x)
    (tmp_path / "labels.csv").write_text("class\n" + "\n".join(f"bird_{v}" for v in labels) + "\n")
    r = cli("evaluate", tmp_path / "feats.npy", "--labels", tmp_path / "labels.csv", "--type", "classes", "--set", "k=1,3", "--seed", "2",
            "--device", "cpu", "--out", tmp_path / "res.json")
    assert r.exit_code == 0, r.output
    assert "2 with one item left out" in " ".join(r.output.split())  # the title may wrap
    doc = json.loads((tmp_path / "res.json").read_text())
    recs = {rec["metric"]: rec for rec in doc["records"]}
    assert list(recs) == ["P@1", "Recall@1", "Recall@3", "R-Precision", "MAP@R", "NMI", "AMI"]
    ref = retrieval_metrics(torch.from_numpy(x), labels, (1, 3))
    for metric, key in (("P@1", "precision_at_1"), ("Recall@3", "recall_at_3"), ("R-Precision", "r_precision"), ("MAP@R", "map_at_r")):
        assert recs[metric]["value"] == pytest.approx(ref[key].mean(), abs=1e-12)
        assert recs[metric]["n"] == 100 and recs[metric]["type"] == "classes" and recs[metric]["condition"] is None
    assert "singleton_classes=2" in recs["P@1"]["note"]
    unit = torch.nn.functional.normalize(torch.from_numpy(x), dim=1)
    assign, _ = kmeans(unit, 27, seed=2, max_iter=20)
    assert recs["NMI"]["value"] == pytest.approx(nmi(labels, assign)) and recs["AMI"]["value"] == pytest.approx(ami(labels, assign))
    samples = {s["record"]: s for s in doc["samples"]}
    metrics = [rec["metric"] for rec in doc["records"]]
    p1 = samples[metrics.index("P@1")]
    assert p1["encoding"] == "bits" and p1["unit"] == "query"
    np.testing.assert_array_equal(decode_sample(p1), ref["precision_at_1"].astype(float))
    mapr = decode_sample(samples[metrics.index("MAP@R")])
    np.testing.assert_allclose(mapr, ref["map_at_r"], atol=1e-5)
    assert metrics.index("NMI") not in samples
    # the same file through compare: a method × metric table and its bar figure
    out = tmp_path / "cmp"
    r = cli("compare", tmp_path / "res.json", "--out", out)
    assert r.exit_code == 0, r.output
    md = (out / "comparison.md").read_text()
    assert "| model | layer | P@1 | Recall@1 | Recall@3 | R-Precision | MAP@R | NMI | AMI | n |" in md
    assert f"| feats | embedding | {recs['P@1']['value']:.3f} ± {recs['P@1']['se']:.3f} |" in md
    assert (out / "bars-classes.png").stat().st_size > 5000


def test_embeddings_file_with_repetitions_and_layers(tmp_path):
    x, labels = _data(seed=1)
    x2 = x[:, ::-1].copy() * 2
    tensors = {"m/feat": torch.from_numpy(np.stack([x, x2], 1)), "m/head": torch.from_numpy(x[:, :4].copy()).unsqueeze(1)}
    rows = pa.table({"id": pa.array([str(i) for i in range(len(x))]), "split": pa.array(["test"] * len(x)), "class": pa.array(labels)})
    model = {"name": "m", "run": "runs/m", "method": "direct", "preset": None, "seed": 3, "spec": {}, "layers": ["feat", "head"]}
    path = tmp_path / "e.safetensors"
    write_embeddings(path, Embeddings(rows=rows, models=[model], tensors=tensors, dataset={"fingerprint": "sha256:cc"}))
    r = cli("evaluate", path, "--type", "classes", "--set", "clustering=false", "--set", "distance=euclidean", "--device", "cpu")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "e.classes-default.json").read_text())
    keys = {(rec["layer"], rec["repeat"]) for rec in doc["records"]}
    assert keys == {("feat", 0), ("feat", 1), ("head", 0)}, "one record set per repetition and layer"
    assert not any(rec["metric"] in ("NMI", "AMI") for rec in doc["records"])
    got = {(rec["layer"], rec["repeat"], rec["metric"]): rec["value"] for rec in doc["records"]}
    for rep, arr in ((0, x), (1, x2)):
        ref = retrieval_metrics(torch.from_numpy(arr), labels, distance="euclidean")
        assert got[("feat", rep, "MAP@R")] == pytest.approx(ref["map_at_r"].mean(), abs=1e-12)
        assert got[("feat", rep, "Recall@8")] == pytest.approx(ref["recall_at_8"].mean(), abs=1e-12)
    assert all(rec["seed"] == 3 and rec["dataset"] == "sha256:cc" for rec in doc["records"])


def test_class_column_fallbacks_and_errors(tmp_path):
    x, labels = _data(seed=2)
    np.save(tmp_path / "f.npy", x)
    (tmp_path / "cat.csv").write_text("category\n" + "\n".join(str(v) for v in labels) + "\n")
    r = cli("evaluate", tmp_path / "f.npy", "--labels", tmp_path / "cat.csv", "--type", "classes", "--set", "clustering=false", "--device", "cpu")
    assert r.exit_code == 0 and "Not written" in r.output, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.csv", "f.npy"], "nothing is written beside an input array"
    r = cli("evaluate", tmp_path / "f.npy", "--labels", tmp_path / "cat.csv", "--type", "classes", "--set", "clustering=false", "--device", "cpu",
            "--out", tmp_path / "res" / "f.json")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "res" / "f.json").read_text())
    assert {rec["condition"] for rec in doc["records"]} == {"labels=category"}
    r = cli("evaluate", tmp_path / "f.npy", "--labels", tmp_path / "cat.csv", "--type", "classes", "--set", "column=object")
    assert r.exit_code == 2 and "no label 'object'" in r.output and "has the columns: category" in r.output
    r = cli("evaluate", tmp_path / "f.npy", "--labels", tmp_path / "cat.csv", "--type", "classes", "--set", "k=0")
    assert r.exit_code == 2 and "at least 1" in r.output
    r = cli("evaluate", tmp_path / "f.npy", "--labels", tmp_path / "cat.csv", "--type", "classes", "--repeats", "3")
    assert r.exit_code == 2 and "does not apply to --type classes" in r.output
    (tmp_path / "none.csv").write_text("colour\n" + "\n".join("red" for _ in labels) + "\n")
    r = cli("evaluate", tmp_path / "f.npy", "--labels", tmp_path / "none.csv", "--type", "classes")
    assert r.exit_code == 2 and "class" in r.output
