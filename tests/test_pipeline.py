"""The stages talk only through their formats: embeddings evaluate without the dataset or training
code, datasets are known by content, profiles follow the dataset, every command has --dry-run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import yaml

from simtool.formats.embeddings import read_embeddings
from tests.conftest import TINY_TRAIN, TINY_WORLD, cli, sets


def test_embeddings_evaluate_without_dataset_or_training_code(tmp_path, tiny_world, tiny_run):
    data = tmp_path / "data"
    shutil.copytree(tiny_world, data)
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    emb = tmp_path / "emb.safetensors"
    assert cli("save-embeddings", run, "--out", emb, "--data", data, "--device", "cpu").exit_code == 0
    e = read_embeddings(emb)
    assert e.models[0]["preset"] == "normal" and e.models[0]["spec_hash"] and e.dataset["fingerprint"].startswith("sha256:")
    assert e.tensor(e.models[0]["name"], "time.out").shape[1] == 1, "(N, R, D) with R = 1"
    shutil.rmtree(data)
    cmd = [sys.executable, "-X", "importtime", "-m", "simtool", "evaluate", str(emb),
           "--type", "odd-one-out", "--repeats", "2", "--out", str(tmp_path / "r.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "simtool.evaluators.odd_one_out" in imported
    assert not any(m.startswith(("simtool.methods", "simtool.engine.loop", "simtool.stages.train")) for m in imported)
    doc = json.loads((tmp_path / "r.json").read_text())
    assert {r["level"] for r in doc["records"] if r["metric"] == "accuracy"} == {"context", "category", "object"}
    # a run whose dataset is gone says so, and how to point to it
    result = cli("evaluate", run, "--type", "odd-one-out", "--data", tmp_path / "gone")
    assert result.exit_code == 2 and "does not exist" in result.output


def test_plain_array_with_labels_evaluates(tmp_path):
    rng = np.random.default_rng(0)
    n = 60
    category = np.repeat(np.arange(4), 15)
    obj = np.repeat(np.arange(12), 5)
    x = rng.normal(size=(n, 8)) + 3 * np.eye(8)[category]
    np.save(tmp_path / "emb.npy", x.astype(np.float32))
    lines = ["context,category,object"] + [f"room{c // 2},cat{c},obj{o}" for c, o in zip(category, obj)]
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    result = cli("evaluate", tmp_path / "emb.npy", "--labels", tmp_path / "labels.csv", "--type", "odd-one-out", "--out", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "r.json").read_text())
    acc = {r["level"]: r["value"] for r in doc["records"] if r["metric"] == "accuracy"}
    assert acc["category"] > 0.8, "the categories were planted in the embedding"
    result = cli("evaluate", tmp_path / "emb.npy", "--type", "odd-one-out")
    assert result.exit_code == 2 and "needs --labels" in result.output


def test_datasets_are_identified_by_content(tmp_path):
    runs = []
    for name in ("a", "b"):  # two builds of the same world in two places
        data = tmp_path / f"world-{name}"
        assert cli("build-data", "--format", "toyworld", "--out", data, "--seed", "3", *sets(TINY_WORLD)).exit_code == 0
        out = tmp_path / f"run-{name}"
        r = cli("train", "--data", data, "--out", out, "--device", "cpu", *sets(TINY_TRAIN + ["loop.epochs=1"]))
        assert r.exit_code == 0, r.output
        runs.append(out)
    result = cli("save-embeddings", *runs, "--out", tmp_path / "both.safetensors", "--device", "cpu", "--layers", "time.out")
    assert result.exit_code == 0, result.output
    assert len(read_embeddings(tmp_path / "both.safetensors").models) == 2


def test_profile_follows_the_dataset(tmp_path, tiny_world):
    spec = yaml.safe_load(cli("train", "--data", tiny_world, "--dry-run").output)
    assert spec["profile"] == "toyworld" and spec["model"]["backbone"] == "test_resnet" and spec["data"]["image_size"] == 64
    spec = yaml.safe_load(cli("train", "--data", tiny_world, "--profile", "none", "--dry-run").output)
    assert spec["profile"] is None and spec["model"]["backbone"] == "resnet50" and spec["data"]["image_size"] == 224
    spec = yaml.safe_load(cli("train", "--dry-run").output)
    assert spec["profile"] == "toyworld" and spec["data"]["path"] is None
    spec = yaml.safe_load(cli("train", "--data", tiny_world, "--set", "loop.epochs=3", "--dry-run").output)
    assert spec["loop"]["epochs"] == 3, "the user's settings win over the profile"
    result = cli("train", "--profile", "laptop", "--dry-run")
    assert result.exit_code == 2 and "Unknown profile 'laptop'" in result.output
    listed = cli("train", "--list-presets").output
    assert "toyworld" in listed and "profile" in listed


def test_every_command_has_dry_run(tmp_path, tiny_run):
    commands = [
        ["build-data", "--format", "toyworld", "--out", tmp_path / "d"],
        ["train", "--preset", "simclr", "--out", tmp_path / "r"],
        ["train", "--resume", tiny_run],
        ["save-embeddings", tiny_run, "--out", tmp_path / "e.safetensors"],
        ["evaluate", tiny_run, "--type", "odd-one-out", "--rooms", "random"],
        ["compare", tiny_run, "--layer", "time.out"],
    ]
    for args in commands:
        result = cli(*args, "--dry-run")
        assert result.exit_code == 0, (args, result.output)
        assert isinstance(yaml.safe_load(result.output), dict), args
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a dry run writes nothing"


def test_evaluate_on_a_second_image_set_of_the_same_frames(tmp_path, tiny_world, tiny_run):
    """--images: the same frames from another dataset directory, matched by (category, object, frame);
    here the same world rebuilt, so the figures equal the plain evaluation, under their own condition."""
    twin = tmp_path / "twin"
    assert cli("build-data", "--format", "toyworld", "--out", twin, "--seed", "3", *sets(TINY_WORLD)).exit_code == 0
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert cli("evaluate", tiny_run, "--type", "odd-one-out", "--repeats", "2", "--out", a, "--device", "cpu").exit_code == 0
    r = cli("evaluate", tiny_run, "--type", "odd-one-out", "--repeats", "2", "--images", twin, "--out", b, "--device", "cpu")
    assert r.exit_code == 0, r.output
    ra, rb = json.loads(a.read_text())["records"], json.loads(b.read_text())["records"]
    assert [x["value"] for x in ra] == [x["value"] for x in rb]
    assert all(x["condition"].endswith("images=" + json.loads((twin / "dataset.json").read_text())["name"]) for x in rb)
    other = tmp_path / "other"  # another world: its frames have other keys
    assert cli("build-data", "--format", "toyworld", "--out", other, *sets(TINY_WORLD[:-3] + ["toyworld.objects_per_category=3"])).exit_code == 0
    bad = cli("evaluate", tiny_run, "--type", "odd-one-out", "--images", other, "--device", "cpu")
    assert bad.exit_code == 2 and "has no frame" in bad.output and "Traceback" not in bad.output
