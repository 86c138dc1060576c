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
    spec = {"method": "time_ssl", "preset": preset, "seed": seed, "device": "cpu", "loop": {"epochs": epochs, "log_every": 5}, "data": {"path": f"/somewhere/{seed}"}}
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
    result = cli("compare", tmp_path / "runs", "--layer", "time.out", "--out", tmp_path / "cmp")
    assert result.exit_code == 0, result.output
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    table = md.split("### ")[1]
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
