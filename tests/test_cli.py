"""The CLI end to end on a tiny generated world, and its error behaviour."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from simtool.cli.main import app
from tests.conftest import TINY_TRAIN, TINY_WORLD, sets
from tests.conftest import cli as run

runner = CliRunner()

PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def test_help_lists_the_five_commands():
    result = run("--help")
    assert result.exit_code == 0
    for cmd in ("build-data", "train", "save-embeddings", "evaluate", "compare"):
        assert cmd in result.output


def test_list_presets():
    result = run("train", "--list-presets")
    assert result.exit_code == 0
    for p in ("normal", "language_only", "time_only", "simclr", "random_context"):
        assert p in result.output
    narrowed = run("train", "--list-presets", "--filter", "toy_")
    assert narrowed.exit_code == 0 and "toy_p_ste" in narrowed.output and "things_p_ste" not in narrowed.output
    none = run("train", "--list-presets", "--filter", "no-such-preset")
    assert none.exit_code == 2 and "No preset matches" in none.output


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "--preset", "nope"], "Unknown preset 'nope'"),
        (["train", "--set", "stream.p_change_room=1.5", "--data", "x"], "stream.p_change_room"),
        (["train", "--set", "model.wat=1", "--data", "x"], "Unknown key 'model.wat'"),
        (["train", "--data", "/definitely/missing"], "does not exist"),
        (["evaluate", "/definitely/missing", "--type", "odd-one-out"], "does not exist"),
        (["evaluate", "x", "--type", "vibes"], "type"),
        (["train", "--resume", "/definitely/missing"], "does not exist"),
        (["build-data", "--format", "nope", "--out", "x"], "format"),
    ],
)
def test_bad_input_is_one_sentence_exit_2(args, needle, tmp_path):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output


def test_debug_shows_traceback():
    result = runner.invoke(app, ["--debug", "train", "--preset", "nope"])
    assert result.exit_code == 2
    assert "Traceback" in result.output or "Traceback" in str(result.stderr if result.stderr_bytes else "")


def _no_pickle(root):
    for f in root.rglob("*"):
        if f.is_file():
            assert f.suffix not in (".pt", ".pth", ".pkl", ".pickle"), f
            assert f.read_bytes()[:2] not in PICKLE_MAGIC, f


def test_end_to_end(tmp_path, tiny_world):
    data = tmp_path / "world"
    result = run("build-data", "--format", "toyworld", "--out", data, "--seed", "1", *sets(TINY_WORLD))
    assert result.exit_code == 0, result.output
    card = json.loads((data / "dataset.json").read_text())
    assert card["counts"]["images"] == 2 * 2 * 6 * 6 and card["kind"] == "video"
    frames = pq.read_table(data / "frames.parquet").to_pydict()
    assert {"category", "object", "frame", "length", "partition", "split", "index"} <= set(frames)
    rooms = json.loads((data / "room_assignment_balanced.json").read_text())
    assert sorted(c for v in rooms.values() for c in v) == [0, 1, 2, 3]
    # building again into the same place must not destroy it
    again = run("build-data", "--format", "toyworld", "--out", data)
    assert again.exit_code == 2 and "already exists" in again.output

    run_dir = tmp_path / "run"
    result = run("train", "--preset", "normal", "--data", data, "--out", run_dir, "--device", "cpu", *sets(TINY_TRAIN))
    assert result.exit_code == 0, result.output
    spec = yaml.safe_load((run_dir / "spec.yaml").read_text())
    assert spec["preset"] == "normal" and spec["data"]["path"] == str(data) and spec["model"]["backbone"] == "test_resnet"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(r["type"] == "train" and "loss/time" in r and "loss/labels" in r for r in records)
    assert any(r["type"] == "eval" and "val/probe_category_acc" in r for r in records)
    assert (run_dir / "checkpoints" / "final.safetensors").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs"] == 2

    again = run("train", "--preset", "normal", "--data", data, "--out", run_dir)
    assert again.exit_code == 2 and "finished run" in again.output

    result = run("evaluate", run_dir, "--type", "odd-one-out", "--repeats", "3", "--device", "cpu")
    assert result.exit_code == 0, result.output
    res = json.loads((run_dir / "eval-odd-one-out-semantic.json").read_text())
    assert res["kind"] == "results" and res["spec"]["options"]["type"] == "odd-one-out", "results carry their resolved spec"
    acc = [r for r in res["records"] if r["metric"] == "accuracy"]
    assert {r["layer"] for r in acc} == {"backbone", "time.relu1", "time.relu2", "time.out", "label.relu1", "label.relu2", "label.out"}
    assert len(acc) == 7 * 3 and all(0.0 <= r["value"] <= 1.0 and r["n"] > 0 for r in acc)
    assert all(r["preset"] == "normal" and r["seed"] == 0 and r["condition"] == "rooms=semantic" for r in acc)
    assert all(0.0 <= r["value"] <= 1.0 for r in res["records"] if r["metric"] == "sparsity")

    result = run("evaluate", run_dir, "--type", "odd-one-out", "--rooms", "random", "--repeats", "3", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert (run_dir / "eval-odd-one-out-random.json").is_file()

    emb = tmp_path / "emb.safetensors"
    result = run("save-embeddings", run_dir, "--out", emb, "--layers", "backbone,time.out", "--device", "cpu")
    assert result.exit_code == 0, result.output
    rows = pq.read_table(tmp_path / "emb.rows.parquet").to_pydict()
    assert set(rows["split"]) == {"test"} and {"id", "category", "object", "room:semantic", "room:random"} <= set(rows)
    result = run("evaluate", emb, "--type", "odd-one-out", "--repeats", "3", "--out", tmp_path / "emb-eval.json")
    assert result.exit_code == 0, result.output
    res_emb = json.loads((tmp_path / "emb-eval.json").read_text())

    def context_at(doc, layer):
        return next(r["value"] for r in doc["records"] if r["layer"] == layer and r["level"] == "context")

    # the same embeddings, labels and seed give the same numbers whether evaluated from the run or the file
    assert context_at(res_emb, "time.out") == context_at(res, "time.out")

    result = run("compare", run_dir, "--out", tmp_path / "cmp", "--layer", "time.out")
    assert result.exit_code == 0, result.output
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "time.out" in md and "normal [rooms=semantic]" in md and "normal [rooms=random]" in md

    result = run("evaluate", run_dir, "--type", "vibes")
    assert result.exit_code == 2 and "Unknown evaluation --type 'vibes'" in result.output
    _no_pickle(tmp_path)


def test_presets_without_time_head_train(tmp_path, tiny_world):
    run_dir = tmp_path / "lo"
    result = run("train", "--preset", "language_only", "--data", tiny_world, "--out", run_dir, "--device", "cpu", *sets(TINY_TRAIN), "--set", "loop.epochs=1")
    assert result.exit_code == 0, result.output
    result = run("evaluate", run_dir, "--type", "odd-one-out", "--repeats", "2", "--device", "cpu")
    assert result.exit_code == 0, result.output
    records = json.loads((run_dir / "eval-odd-one-out-semantic.json").read_text())["records"]
    layers = {r["layer"] for r in records}
    assert "time.out" not in layers and "label.out" in layers
