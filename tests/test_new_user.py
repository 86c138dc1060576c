"""What a new user hit (issue 19), through the real command: every mistake is one sentence naming
the problem and the fix, exit 2, no traceback, and nothing already written changes; compare keeps
stale and repeated results apart; the help and the tables are readable."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from simtool.formats.results import make_record, results_doc, write_results
from tests.conftest import TINY_TRAIN, TINY_WORLD, cli, sets


def refused(result, *texts):
    """``result`` exited 2 with one sentence holding every one of ``texts``, and no traceback."""
    out = result.output
    assert result.exit_code == 2, out
    assert "Traceback" not in out and out.count("Error:") == 1, out
    sentence = out[out.index("Error:"):].replace("\n", " ")
    for t in texts:
        assert t in sentence, (t, sentence)
    return sentence


def snapshot(root):
    """Every file under ``root`` with its size and modification time."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def array_with_labels(tmp_path, n=30, labels="category,object\n"):
    x = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    np.save(tmp_path / "a.npy", x)
    (tmp_path / "lab.csv").write_text(labels + "\n".join(f"{i % 3},{i % 6}" for i in range(n)) + "\n")
    return tmp_path / "a.npy", tmp_path / "lab.csv"


# -- 5. negative seeds --------------------------------------------------------------------------


def test_a_negative_seed_is_one_sentence_in_every_command(tmp_path, tiny_world):
    arr, lab = array_with_labels(tmp_path)
    refused(cli("train", "--preset", "normal", "--data", tiny_world, "--seed", "-1", "--out", tmp_path / "r"), "'seed'", "greater than or equal to 0")
    refused(cli("build-data", "--format", "toyworld", "--seed", "-1", "--out", tmp_path / "w"), "'seed'", "greater than or equal to 0")
    refused(cli("evaluate", arr, "--labels", lab, "--type", "odd-one-out", "--seed", "-1"), "'seed'", "greater than or equal to 0")
    doc = results_doc("odd-one-out", "x", {}, {}, {}, [make_record(run="x", type="odd-one-out", layer="l", metric="accuracy", value=0.5)])
    res = write_results(tmp_path / "res.json", doc)
    refused(cli("compare", res, "--seed", "-1"), "'seed'", "greater than or equal to 0")
    assert not (tmp_path / "r").exists() and not (tmp_path / "w").exists()


# -- 4. unwritable outputs ----------------------------------------------------------------------


def test_unwritable_outputs_are_refused_before_any_work(tmp_path, tiny_world, tiny_run):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    before = snapshot(tiny_run)
    refused(cli("train", "--data", tiny_world, "--out", blocker / "run", "--device", "cpu"), "is a file, not a folder", "--out")
    refused(cli("build-data", "--format", "toyworld", "--out", blocker / "world", *sets(TINY_WORLD)), "is a file, not a folder")
    refused(cli("save-embeddings", tiny_run, "--out", blocker / "e.safetensors", "--device", "cpu"), "is a file, not a folder")
    refused(cli("evaluate", tiny_run, "--type", "odd-one-out", "--out", blocker / "r.json", "--device", "cpu"), "is a file, not a folder")
    assert snapshot(tiny_run) == before, "nothing in the run changed"
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_folder_is_named(tmp_path, tiny_run):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        refused(cli("save-embeddings", tiny_run, "--out", ro / "e.safetensors", "--device", "cpu"), "is not writable")
    finally:
        ro.chmod(0o755)


# -- 6. damaged results -------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["type", "layer", "run", "metric"])
def test_compare_of_records_lacking_a_field(tmp_path, field):
    rec = make_record(run="x", type="odd-one-out", layer="l", metric="accuracy", value=0.5)
    rec.pop(field)
    path = write_results(tmp_path / "res.json", results_doc("odd-one-out", "x", {}, {}, {}, [rec]))
    refused(cli("compare", path), "record 0 lacks", field, "evaluate again")


# -- 7. messages that point the right way --------------------------------------------------------


def test_teacher_messages_point_to_save_embeddings(tmp_path, tiny_world, tiny_run):
    data = tiny_world / "triplets"
    np.save(tmp_path / "t.npy", np.zeros((4, 3), np.float32))
    base = ["train", "--preset", "toy_se_rkd", "--data", data, "--device", "cpu", "--out", tmp_path / "s"]
    refused(cli(*base, "--set", f"data.teacher={tiny_run}"), "is a directory, not an embeddings file", "simtool save-embeddings")
    refused(cli(*base, "--set", f"data.teacher={tmp_path / 't.npy'}"), "is a NumPy array, not an embeddings file", "save-embeddings")
    assert not (tmp_path / "s" / "checkpoints").exists()


def test_a_dataset_given_to_evaluate_is_told_to_be_embedded_first(tiny_world):
    refused(cli("evaluate", tiny_world, "--type", "knn"), "is a dataset directory, not a model", f"save-embeddings --model NAME --data {tiny_world}")


def test_array_messages(tmp_path):
    arr, lab = array_with_labels(tmp_path)
    (tmp_path / "text.npy").write_text("hello")
    refused(cli("evaluate", tmp_path / "text.npy", "--labels", lab, "--type", "classes"), "is not a NumPy file", "numpy.save")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    msg = refused(cli("evaluate", tmp_path / "objects.npy", "--labels", lab, "--type", "classes"), "holds Python objects", "never unpickles")
    assert "allow_pickle" not in msg
    np.save(tmp_path / "empty.npy", np.zeros((0, 8), np.float32))
    msg = refused(cli("evaluate", tmp_path / "empty.npy", "--labels", lab, "--type", "classes"), "(0, 8)", "no embeddings")
    assert "--split" not in msg and "0..-1" not in msg
    (tmp_path / "cat.csv").write_text("Cat,Colour\n" + "\n".join(f"{i % 3},red" for i in range(30)) + "\n")
    refused(cli("evaluate", arr, "--labels", tmp_path / "cat.csv", "--type", "odd-one-out"), "it has: Cat, Colour")
    (tmp_path / "cat2.csv").write_text("category,Colour\n" + "\n".join(f"{i % 3},red" for i in range(30)) + "\n")
    msg = refused(cli("evaluate", arr, "--labels", tmp_path / "cat2.csv", "--type", "odd-one-out"), "no room (context) labels", "--rooms")
    assert "split" not in msg and " id" not in msg, "the file's columns, not internal ones"


def test_preset_typo_names_the_closest_presets_only():
    msg = refused(cli("train", "--preset", "nromal", "--dry-run"), "did you mean normal?", "--list-presets")
    assert "zappos_se_rkd" not in msg, "not all 103 presets"


def test_unknown_backbone_names_close_timm_names_before_reading_data(tmp_path, tiny_world):
    msg = refused(cli("train", "--data", tiny_world, "--set", "model.backbone=resnt50", "--out", tmp_path / "r", "--device", "cpu"),
                  "Unknown backbone 'resnt50'", "resnet50")
    assert "Building" not in msg and not (tmp_path / "r").exists()


def test_missing_rooms_name_the_options(tmp_path, tiny_world):
    from simtool.errors import UserError
    from simtool.formats.dataset_dir import Dataset

    copy = tmp_path / "world"
    shutil.copytree(tiny_world, copy)
    for f in copy.glob("room_assignment_*.json"):
        f.unlink()
    with pytest.raises(UserError, match=r"--set data.rooms=FILE.json \(train\) or --rooms FILE.json \(evaluate\)"):
        Dataset(copy).rooms("semantic")


def test_fingerprints_are_printed_until_they_differ():
    from simtool.formats.dataset_dir._verify import distinct_prefixes

    a, b = "sha256:b1a2e4dc1748" + "0" * 40, "sha256:b1a2e4dc1748" + "1" * 40
    x, y = distinct_prefixes(a, b)
    assert x != y and len(x) == len(y) and a.startswith(x) and b.startswith(y)
    assert distinct_prefixes("sha256:" + "a" * 64, "sha256:" + "b" * 64) == ("sha256:" + "a" * 12, "sha256:" + "b" * 12)


# -- 8. silent traps ----------------------------------------------------------------------------


def test_a_paper_preset_without_data_never_trains_on_the_toy_world(tmp_path):
    refused(cli("train", "--preset", "things_p_ste", "--out", tmp_path / "r"), "made for a real dataset", "--data DIR", "--profile toyworld")
    assert not (tmp_path / "r").exists()
    r = cli("train", "--preset", "things_p_ste", "--profile", "toyworld", "--dry-run")
    assert r.exit_code == 0 and "profile: toyworld" in r.output
    assert cli("train", "--preset", "toy_p_ste", "--dry-run").exit_code == 0
    assert cli("train", "--preset", "simclr", "--dry-run").exit_code == 0


def test_a_score_from_a_handful_of_triplets_is_flagged(tmp_path):
    x = np.random.default_rng(1).normal(size=(10, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "t.csv").write_text("a,b,c,kind\n" + "\n".join(f"{i},{i + 1},{i + 2},directed" for i in range(7)) + "\n")
    r = cli("evaluate", tmp_path / "x.npy", "--labels", tmp_path / "t.csv", "--type", "triplets", "--out", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    assert "rests on 7 sample(s) only" in r.output.replace("\n", " ")


def test_the_original_split_of_a_small_tree_warns(tmp_path):
    from tests.test_builders import jpeg

    src = tmp_path / "src"
    for c in (1, 2):
        for o in range(4):
            d = src / str(c) / f"o{c}{o}" / "images"
            d.mkdir(parents=True)
            for f in range(2):
                (d / f"{f}.jpg").write_bytes(jpeg(24, 24, seed=c * 100 + o * 10 + f))
    r = cli("build-data", "--format", "mvimgnet", src, "--out", tmp_path / "d", "--workers", "1")
    assert r.exit_code == 0, r.output
    text = r.output.replace("\n", " ")
    assert "hold no object (8 train, 0 val, 0 test objects)" in text and "--split 0.8,0.1,0.1" in text


# -- 2. stale and repeated results in compare -----------------------------------------------------


def test_compare_counts_a_run_and_its_export_once_and_drops_results_of_its_unfinished_weights(tmp_path, tiny_world):
    from simtool.engine.loop import TrainingInterrupted
    from simtool.methods import resolve_train_spec
    from simtool.stages import train as stage

    run = tmp_path / "run"
    spec = resolve_train_spec("normal", sets=TINY_TRAIN, data=str(tiny_world), device="cpu")
    with pytest.raises(TrainingInterrupted):
        stage.train(spec, str(run), stop_after_steps=2)
    early = tmp_path / "early.json"
    assert cli("evaluate", run, "--type", "odd-one-out", "--device", "cpu", "--out", early).exit_code == 0
    assert json.loads(early.read_text())["models"]["run"]["finished"] is False
    alone = cli("compare", early)
    assert alone.exit_code == 0 and "[unfinished]" in alone.output and "had not finished" in alone.output.replace("\n", " ")
    assert cli("train", "--resume", run, "--device", "cpu").exit_code == 0
    assert cli("evaluate", run, "--type", "odd-one-out", "--device", "cpu").exit_code == 0
    assert cli("save-embeddings", run, "--out", tmp_path / "e.safetensors", "--device", "cpu").exit_code == 0
    assert cli("evaluate", tmp_path / "e.safetensors", "--type", "odd-one-out").exit_code == 0
    exported, = tmp_path.glob("e.odd-one-out-*.json")  # the results of the run's exported embeddings, beside them
    r = cli("compare", run, early, exported, "--out", tmp_path / "cmp")
    assert r.exit_code == 0, r.output
    text = r.output.replace("\n", " ")
    assert "left out its" in text and "before it finished" in text
    assert "repeat results of the same weights" in text
    rows = list(json.loads((tmp_path / "cmp" / "comparison.json").read_text())["groups"])
    accuracy = [g for g in rows if g["metric"] == "accuracy"]
    assert accuracy and all(g["n"] == 1 for g in accuracy), "one run: n = 1, not 2 or 3"
    assert not any("[unfinished]" in g["name"] for g in rows)


# -- 9. presentation ------------------------------------------------------------------------------


def test_every_option_has_help_and_a_readable_metavar():
    from simtool.cli.main import command

    cmd = command()
    for name in cmd.commands:
        r = cli(name, "--help")
        assert r.exit_code == 0 and "<list[" not in r.output, (name, r.output)
        for p in cmd.commands[name].params:
            if p.param_type_name == "option" and p.name != "help":
                assert p.help, f"{name} {p.opts[0]} has no help text"


def test_wide_tables_are_split_by_columns_not_cut(monkeypatch):
    from rich.console import Console

    from simtool.cli import main

    console = Console(width=80, record=True, force_terminal=False)
    monkeypatch.setattr(main, "out_console", console)
    header = ["model", "layer"] + [f"context_accuracy_{i}" for i in range(8)]
    rows = [["normal [rooms=semantic]", "time.out"] + [f"0.{600 + i} ± 0.011" for i in range(8)]]
    main._render([("odd-one-out", header, rows)])
    text = console.export_text()
    assert "…" not in text
    assert all(f"0.{600 + i} ± 0.011" in text for i in range(8)), "every cell whole"
    assert text.count("normal [rooms=semantic]") > 1, "row names repeated in every part"
    assert max(len(line) for line in text.splitlines()) <= 80


def test_training_lines_do_not_wrap_when_redirected(tmp_path, tiny_world):
    r = cli("train", "--preset", "toy_p_ste", "--data", tiny_world / "triplets", "--repeats", "5", "--set", "loop.epochs=1",
            "--out", tmp_path / "t", "--device", "cpu")
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if x.startswith("epoch 1/1"))
    assert "accuracy_r4" in line and len(line) > 80, line


def test_figures_have_chance_lines_and_unit_axes(tmp_path, monkeypatch):
    from simtool.compare import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    s = [plots.Series(label="a", color=(0.2, 0.4, 0.6), values={"context": (0.6, 0.01), "directed": (0.7, 0.02)})]
    plots.bar_figure(tmp_path / "b.png", "t", ["context", "directed"], s, chance={"context": 1 / 3, "directed": 0.5})
    ax = figures[-1].axes[0]
    lines = [seg for c in ax.collections for seg in getattr(c, "get_segments", lambda: [])()]
    assert {round(float(seg[0][1]), 4) for seg in lines} >= {0.3333, 0.5}
    assert ax.get_ylim()[1] <= 1.0


def flat(text: str) -> str:
    """The output with its line wrapping undone."""
    return " ".join(text.split())


def test_a_retry_with_the_same_out_says_it_replaced_the_previous_file(tmp_path, tiny_run):
    out = tmp_path / "emb.safetensors"
    first = cli("save-embeddings", tiny_run, "--out", out)
    assert first.exit_code == 0, first.output
    assert "replaced" not in first.output
    again = cli("save-embeddings", tiny_run, "--out", out)
    assert again.exit_code == 0 and "(replaced the previous file)" in flat(again.output), again.output
    res = tmp_path / "r.json"
    outputs = [flat(cli("evaluate", out, "--type", "odd-one-out", "--out", res).output) for _ in range(2)]
    assert "replaced" not in outputs[0] and "r.json (replaced the previous file)" in outputs[1], outputs
    first, again = (flat(cli("compare", res, "--out", tmp_path / "cmp", "--no-figures").output) for _ in range(2))
    assert "replaced" not in first and "(replaced the previous files)" in again, (first, again)
