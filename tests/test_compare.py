"""compare: replicates grouped by name and settings, mean ± sd against numpy, differing settings shown."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from simtool.compare.aggregate import aggregate, collect
from simtool.compare.tables import settings_table, tables
from simtool.formats.results import make_record, results_doc, write_results
from tests.conftest import TINY_TRAIN, cli, sets


def _results(path, run, preset, seed, values, epochs=30, dataset="sha256:aaaa", condition="rooms=semantic"):
    spec = {"method": "time_ssl", "preset": preset, "seed": seed, "device": "cpu",
            "loop": {"epochs": epochs, "log_every": 5}, "data": {"path": f"/somewhere/{seed}"}}
    recs = []
    for layer, by_level in values.items():
        for level, v in by_level.items():
            recs.append(make_record(run=run, method="time_ssl", preset=preset, seed=seed, repeat=0, type="odd-one-out", layer=layer,
                                    metric="accuracy", level=level, value=v, n=100, se=0.01, condition=condition, dataset=dataset))
    models = {run: {"run": run, "preset": preset, "seed": seed, "spec": spec, "dataset": {"fingerprint": dataset}}}
    write_results(path, results_doc("odd-one-out", run, {}, {"fingerprint": dataset}, models, recs))
    return path


def test_replicates_form_one_group_with_mean_and_sd(tmp_path):
    a = _results(tmp_path / "a.json", "n0", "normal", 0, {"time.out": {"context": 0.6, "category": 0.7}})
    b = _results(tmp_path / "b.json", "n1", "normal", 1, {"time.out": {"context": 0.5, "category": 0.9}})
    c = _results(tmp_path / "c.json", "s0", "simclr", 0, {"time.out": {"context": 0.4, "category": 0.8}})
    agg = aggregate(collect([str(a), str(b), str(c)]))
    groups = {(g.label, g.level): g for g in agg.groups}
    g = groups[("normal", "context")]
    assert g.n == 2 and g.mean == pytest.approx(0.55) and g.sd == pytest.approx(np.std([0.6, 0.5], ddof=1))
    single = groups[("simclr", "context")]
    assert single.n == 1 and single.sd is None and single.spread == 0.01, "a single run shows its standard error"
    (title, header, rows), = tables(agg, "time.out")
    assert header == ["model", "context", "category", "n"]
    assert rows[0] == ["normal [rooms=semantic]", "0.550 ± 0.071", "0.800 ± 0.141", "2"]
    assert rows[1][0] == "simclr [rooms=semantic]" and rows[1][-1] == "1"
    assert settings_table(agg) is None, "seed and paths are not settings"


def test_runs_that_differ_in_a_setting_are_never_averaged(tmp_path):
    a = _results(tmp_path / "a.json", "n0", "normal", 0, {"time.out": {"context": 0.6}}, epochs=30)
    b = _results(tmp_path / "b.json", "n1", "normal", 1, {"time.out": {"context": 0.4}}, epochs=2)
    c = _results(tmp_path / "c.json", "s0", "simclr", 0, {"time.out": {"context": 0.4}}, epochs=30, dataset="sha256:bbbb")
    agg = aggregate(collect([str(a), str(b), str(c)]))
    labels = sorted({g.label for g in agg.groups})
    assert labels == ["normal (loop.epochs=2)", "normal (loop.epochs=30)", "simclr"]
    assert all(g.n == 1 for g in agg.groups)
    title, header, rows = settings_table(agg)
    assert header == ["model", "dataset", "loop.epochs"]
    assert any("different datasets" in w for w in agg.warnings)


def test_one_name_pools_targets_that_differ_in_settings_and_says_so(tmp_path):
    """Seeds of an experiment whose split changes with the seed (examples/zappos.sh) differ in their
    dataset and teacher file: without --name they are told apart, with one --name they are one group."""
    a = _results(tmp_path / "a.json", "n0", "normal", 0, {"time.out": {"context": 0.6}}, dataset="sha256:aaaa")
    b = _results(tmp_path / "b.json", "n1", "normal", 1, {"time.out": {"context": 0.4}}, dataset="sha256:bbbb")
    assert all(g.n == 1 for g in aggregate(collect([str(a), str(b)])).groups)
    agg = aggregate(collect([str(a), str(b)], names=["student", "student"]))
    (g,) = agg.groups
    assert g.label == "student" and g.n == 2 and g.mean == pytest.approx(0.5)
    assert any("'student' pools targets that differ in dataset, as --name asked" in w for w in agg.warnings)


def test_names_and_errors(tmp_path):
    a = _results(tmp_path / "a.json", "n0", "normal", 0, {"time.out": {"context": 0.6}})
    agg = aggregate(collect([str(a)], names=["mine"]))
    assert {g.label for g in agg.groups} == {"mine"}
    result = cli("compare", a, a, "--name", "only-one")
    assert result.exit_code == 2 and "one name per target" in result.output
    result = cli("compare", tmp_path / "nothing")
    assert result.exit_code == 2 and "does not exist" in result.output
    result = cli("compare", a, "--layer", "nope")
    assert result.exit_code == 2 and "available layers: time.out" in result.output


def test_two_presets_two_seeds_end_to_end(tmp_path, tiny_world):
    """The acceptance shape: normal and simclr, two seeds each → two rows with n = 2; CSV one row per record."""
    for preset in ("normal", "simclr"):
        for seed in (0, 1):
            out = tmp_path / "runs" / f"{preset}-{seed}"
            r = cli("train", "--preset", preset, "--seed", seed, "--data", tiny_world, "--out", out, "--device", "cpu", *sets(TINY_TRAIN + ["loop.epochs=1"]))
            assert r.exit_code == 0, r.output
            r = cli("evaluate", out, "--type", "odd-one-out", "--repeats", "2", "--device", "cpu")
            assert r.exit_code == 0, r.output
    result = cli("compare", tmp_path / "runs", "--layer", "time.out", "--out", tmp_path / "cmp", "--reference", "simclr", "--bootstrap", "100")
    assert result.exit_code == 0, result.output
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    table = md.split("### ")[1]
    assert "| Δ context |" in table and "| ref |" in table
    for fig in ("bars-odd-one-out.png", "layers-odd-one-out.png"):
        assert (tmp_path / "cmp" / fig).stat().st_size > 5000
    rows = [line for line in table.splitlines() if line.startswith("| normal") or line.startswith("| simclr")]
    assert len(rows) == 2 and all(line.rstrip(" |").endswith("2") and "±" in line for line in rows)
    with open(tmp_path / "cmp" / "comparison.csv") as fh:
        recs = list(csv.DictReader(fh))
    keys = [(r["source"], r["run"], r["layer"], r["metric"], r["level"]) for r in recs]
    assert len(keys) == len(set(keys)) and len({r["run"] for r in recs}) == 4
    n_layers = {"normal": 7, "simclr": 4}
    assert len(recs) == sum(2 * n * (3 + 4) for n in n_layers.values()), "3 levels + 4 statistics per layer and run"
    doc = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert {g["n"] for g in doc["groups"]} == {2}


# --- paired differences, bootstrap, figures, RSA/CKA, mismatches ------------------------------------

def _sampled(path, run, preset, seed, per_level, layer="time.out", dataset="sha256:aaaa", repeats=10, type_="odd-one-out"):
    """A results file whose accuracy records carry per-anchor values (counts / repeats)."""
    from simtool.formats.results import attach_sample

    recs = []
    for level, counts in per_level.items():
        counts = np.asarray(counts)
        rec = make_record(run=run, method="time_ssl", preset=preset, seed=seed, repeat=0, type=type_, layer=layer, metric="accuracy",
                          level=level, value=float(counts.mean() / repeats), n=len(counts) * repeats, se=0.01, condition="rooms=semantic", dataset=dataset)
        attach_sample(rec, counts / repeats, "anchor", repeats)
        recs.append(rec)
    spec = {"method": "time_ssl", "preset": preset, "seed": seed, "loop": {"epochs": 30}}
    models = {run: {"run": run, "preset": preset, "seed": seed, "spec": spec, "dataset": {"fingerprint": dataset}}}
    write_results(path, results_doc(type_, run, {}, {"fingerprint": dataset}, models, recs))
    return path


def brute_force_interval(a_runs, r_runs, n_boot, seed):
    """Two-stage resampling written out: draw runs, then every drawn run's anchors, materialised as lists."""
    rng = np.random.default_rng(seed)
    s = len(a_runs)
    chosen = rng.integers(0, s, size=(n_boot, s))
    boot = []
    for b in range(n_boot):
        per_run = []
        for k in chosen[b]:
            a, r = a_runs[k], r_runs[k]
            if len(a) == len(r):
                idx = rng.integers(0, len(a), size=len(a))
                resampled_a = [a[i] for i in idx]
                resampled_r = [r[i] for i in idx]
            else:
                resampled_a = [a[i] for i in rng.integers(0, len(a), size=len(a))]
                resampled_r = [r[i] for i in rng.integers(0, len(r), size=len(r))]
            per_run.append(sum(resampled_a) / len(resampled_a) - sum(resampled_r) / len(resampled_r))
        boot.append(sum(per_run) / len(per_run))
    return np.quantile(boot, 0.025), np.quantile(boot, 0.975)


def test_bootstrap_interval_matches_brute_force_resampling(tmp_path):
    from simtool.compare.aggregate import differences

    rng = np.random.default_rng(0)
    a_runs = [rng.binomial(10, 0.7, 60) for _ in range(3)]
    r_runs = [rng.binomial(10, 0.6, 60) for _ in range(3)]
    r_runs[2] = rng.binomial(10, 0.6, 45)  # another test set size: resampled independently
    files = [_sampled(tmp_path / f"n{s}.json", f"n{s}", "normal", s, {"context": a_runs[s]}) for s in range(3)]
    files += [_sampled(tmp_path / f"s{s}.json", f"s{s}", "simclr", s, {"context": r_runs[s]}) for s in range(3)]
    files.append(_sampled(tmp_path / "s9.json", "s9", "simclr", 9, {"context": r_runs[0]}))  # an unshared seed is ignored
    agg = aggregate(collect([str(f) for f in files]))
    (d,), notes = differences(agg.groups, "simclr", n_boot=300, seed=7)
    assert not notes and d.pairs == 3 and d.units == "anchor"
    assert d.diff == pytest.approx(np.mean([a.mean() / 10 - r.mean() / 10 for a, r in zip(a_runs, r_runs)]))
    lo, hi = brute_force_interval([a / 10 for a in a_runs], [r / 10 for r in r_runs], 300, 7)
    assert d.lo == pytest.approx(lo, abs=1e-12) and d.hi == pytest.approx(hi, abs=1e-12)
    assert d.lo < d.diff < d.hi
    (again,), _ = differences(agg.groups, "simclr", n_boot=300, seed=7)
    assert (again.lo, again.hi) == (d.lo, d.hi), "seeded"


def test_bootstrap_without_samples_resamples_runs_only():
    from simtool.compare.aggregate import paired_bootstrap

    values = [0.1, 0.3, 0.2, 0.25]
    lo, hi = paired_bootstrap([None] * 4, values, 500, 3)
    rng = np.random.default_rng(3)
    boot = [np.mean([values[k] for k in row]) for row in rng.integers(0, 4, size=(500, 4))]
    assert (lo, hi) == pytest.approx((np.quantile(boot, 0.025), np.quantile(boot, 0.975)))
    assert paired_bootstrap([None], [0.1], 500, 3) is None, "one run without units: no interval"


def test_reference_table_figures_and_missing_metric(tmp_path):
    rng = np.random.default_rng(1)
    files = []
    for preset, p in (("normal", 0.75), ("simclr", 0.6), ("time_only", 0.7)):
        for s in range(2):
            levels = {"context": rng.binomial(10, p, 40), "category": rng.binomial(10, p, 40)}
            if preset == "time_only":
                del levels["category"]  # a metric missing in some targets
            files.append(_sampled(tmp_path / f"{preset}{s}.json", f"{preset}{s}", preset, s, levels))
    out = tmp_path / "cmp"
    result = cli("compare", *files, "--layer", "time.out", "--reference", "simclr", "--bootstrap", "200", "--out", out)
    assert result.exit_code == 0, result.output
    assert "category) is missing for time_only" in result.output
    md = (out / "comparison.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| model"))
    assert header == "| model | context | Δ context | category | Δ category | n |"
    normal = next(line for line in md.splitlines() if line.startswith("| normal"))
    doc = json.loads((out / "comparison.json").read_text())
    d = next(x for x in doc["differences"] if x["label"] == "normal" and x["level"] == "context")
    assert f"{d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]" in normal
    assert "| simclr [rooms=semantic] |" in md and "| ref |" in md
    assert "time_only [rooms=semantic]" in md
    import matplotlib.image as mpimg

    for name in ("bars-odd-one-out.png",):
        path = out / name
        assert path.stat().st_size > 5000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert mpimg.imread(path).shape[0] > 200
    assert not (out / "layers-odd-one-out.png").exists(), "one layer: no layer curves"
    result = cli("compare", *files, "--reference", "nobody")
    assert result.exit_code == 2 and "not a group" in result.output


def _emb_file(path, models: dict, ids, dataset="sha256:aaaa"):
    """An embeddings file of several models (name -> (preset, seed, layer -> (N, D) array))."""
    import pyarrow as pa
    import torch

    from simtool.formats.embeddings import Embeddings, write_embeddings

    tensors, provs = {}, []
    for name, (preset, seed, layers) in models.items():
        for layer, x in layers.items():
            tensors[f"{name}/{layer}"] = torch.tensor(x, dtype=torch.float32).unsqueeze(1)
        provs.append({"name": name, "run": name, "method": "time_ssl", "preset": preset, "seed": seed, "spec": {"loop": {"epochs": 30}},
                      "layers": list(layers), "dataset": {"fingerprint": dataset}})
    rows = pa.table({"id": pa.array([str(i) for i in ids]), "split": pa.array(["test"] * len(ids))})
    write_embeddings(path, Embeddings(rows=rows, models=provs, tensors=tensors, dataset={"fingerprint": dataset}))
    return path


def test_rsa_and_cka_between_embeddings_files(tmp_path):
    from scipy.spatial.distance import pdist
    from scipy.stats import spearmanr

    rng = np.random.default_rng(2)
    base = rng.standard_normal((60, 6))
    xs = {p: base @ rng.standard_normal((6, 5)) + 0.5 * rng.standard_normal((60, 5)) for p in ("normal", "simclr", "time_only", "language_only")}
    a = _emb_file(tmp_path / "a.safetensors", {"n0": ("normal", 0, {"time.out": xs["normal"]}), "s0": ("simclr", 0, {"time.out": xs["simclr"]}),
                                                 "l0": ("language_only", 0, {"label.out": xs["language_only"]})}, range(60))
    b = _emb_file(tmp_path / "b.safetensors", {"t0": ("time_only", 0, {"time.out": xs["time_only"][10:]})}, range(10, 60), dataset="sha256:bbbb")
    out = tmp_path / "sim"
    result = cli("compare", a, b, "--layer", "time.out", "--layer", "language_only=label.out", "--out", out)
    assert result.exit_code == 0, result.output
    assert "50 of its 60 ids are shared" in result.output and "different datasets" in result.output
    sim = json.loads((out / "comparison.json").read_text())["similarity"]
    assert sim["labels"] == ["normal", "simclr", "language_only", "time_only"] and sim["n_items_used"] == 50
    rows = slice(10, 60)
    i, j = sim["labels"].index("normal"), sim["labels"].index("time_only")
    ref = spearmanr(pdist(xs["normal"][rows], "cosine"), pdist(xs["time_only"][10:], "cosine")).statistic
    assert sim["rsa"][i][j] == pytest.approx(ref, abs=1e-9)
    x, y = xs["normal"][rows] - xs["normal"][rows].mean(0), xs["time_only"][10:] - xs["time_only"][10:].mean(0)
    cka = np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))
    assert sim["cka"][i][j] == pytest.approx(cka, abs=1e-9)
    assert (out / "similarity.png").stat().st_size > 5000
    assert all(sim["rsa"][k][k] is None or np.isnan(sim["rsa"][k][k]) for k in range(4)), \
        "a model with one run has no pair of runs: its diagonal is empty, not a trivial 1"
    result = cli("compare", a, b, "--max-items", "20", "--layer", "time.out")
    assert result.exit_code == 0 and "no layer 'time.out'" in result.output, "language_only without --layer NAME=LAYER is named and left out"
    assert "20 of 50 shared items" in result.output


def test_reference_differences_and_layer_curves_from_real_evaluations(tmp_path, tiny_run):
    """Evaluator records carry per-anchor samples; two copies of a run give a zero difference whose interval holds 0."""
    r = cli("evaluate", tiny_run, "--type", "odd-one-out", "--repeats", "2", "--device", "cpu", "--out", tmp_path / "a.json")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "a.json").read_text())
    acc = [i for i, rec in enumerate(doc["records"]) if rec["metric"] == "accuracy"]
    assert sorted(s["record"] for s in doc["samples"]) == acc and all(s["encoding"] == "u8/2" for s in doc["samples"])
    (tmp_path / "b.json").write_text((tmp_path / "a.json").read_text())
    out = tmp_path / "cmp"
    result = cli("compare", tmp_path / "a.json", tmp_path / "b.json", "--name", "x", "--name", "y", "--reference", "y", "--bootstrap", "50", "--out", out)
    assert result.exit_code == 0, result.output
    diffs = json.loads((out / "comparison.json").read_text())["differences"]
    assert diffs and all(d["diff"] == 0 and d["lo"] <= 0 <= d["hi"] for d in diffs)
    assert (out / "layers-odd-one-out.png").stat().st_size > 5000 and (out / "bars-odd-one-out.png").stat().st_size > 5000
