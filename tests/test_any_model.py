"""``save-embeddings --model``: embeddings of models no run trained, on the tiny world.

The embeddings equal timm's own forward pass on the same preprocessed tensors; ``--weights`` reads
safetensors and ``.pth`` state dicts (weights only); an offline ``--pretrained`` is one sentence;
misuse is one sentence each; the files are grouped by ``compare`` like runs."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import timm
import torch
from torch import nn

from simtool.data.augment import normalize
from simtool.data.images import center_box
from simtool.embedding import models as any_model
from simtool.formats.dataset_dir import Dataset
from simtool.formats.embeddings import read_embeddings
from simtool.models import MODELS, register_model
from tests.conftest import cli

NAME = "test_resnet"


def reference_model(seed: int = 0) -> nn.Module:
    """timm's model as simtool's random initialisation makes it: the global RNG seeded, num_classes=0."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return timm.create_model(NAME, pretrained=False, num_classes=0).eval()


def preprocessed(data, rows: np.ndarray, model: nn.Module) -> torch.Tensor:
    """The dataset's images as simtool feeds them: timm's data config (size, crop_pct, mean, std)."""
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    ds = Dataset(data)
    box = center_box(cfg["crop_pct"])
    images, _ = ds.image_rows(rows)
    return normalize(ds.images(cfg["input_size"][-1]).load_crops(images, lambda w, h: box), cfg["mean"], cfg["std"])


def test_embeddings_equal_timms_forward_pass(tiny_world, tmp_path):
    out = tmp_path / "m.safetensors"
    r = cli("save-embeddings", "--model", NAME, "--data", tiny_world, "--layers", "layer2,pooled", "--out", out, "--device", "cpu")
    assert r.exit_code == 0, r.output
    emb = read_embeddings(out)
    ref = reference_model()
    x = preprocessed(tiny_world, emb.column("row"), ref)
    with torch.no_grad():
        pooled = ref(x)
        stage = timm.create_model(NAME, features_only=True, out_indices=(2,))
        stage.load_state_dict(ref.state_dict(), strict=False)
        layer2 = stage.eval()(x)[0].mean((2, 3))
    assert torch.allclose(emb.tensor(NAME, "pooled")[:, 0], pooled, atol=1e-5)
    assert torch.allclose(emb.tensor(NAME, "layer2")[:, 0], layer2, atol=1e-5)
    (model,) = emb.models
    assert model["weights"] == "random" and model["seed"] == 0 and model["method"] is None and model["preset"] == NAME
    assert model["weights_sha256"] == any_model.state_sha256(ref)
    assert model["preprocessing"]["image_size"] == 160 and model["preprocessing"]["crop_frac"] == pytest.approx(0.95)
    assert emb.split == "all" and set(emb.column("split")) == {"train", "val", "test"}


def test_the_seed_sets_the_random_initialisation():
    a, _ = any_model.build_model(NAME, seed=1)
    b, _ = any_model.build_model(NAME, seed=1)
    c, _ = any_model.build_model(NAME, seed=2)
    assert any_model.state_sha256(a) == any_model.state_sha256(b) != any_model.state_sha256(c)


def test_weights_from_safetensors_and_pth(tiny_world, tmp_path):
    from safetensors.torch import save_file

    trained = reference_model(seed=5)
    state = trained.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    # a .pth as training scripts save it: wrapped, with a DataParallel prefix and a classifier the model lacks
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()} | {"module.fc.weight": torch.zeros(10, 96)}, "epoch": 3},
               tmp_path / "w.pth")
    ref_pooled = None
    for f in ("w.safetensors", "w.pth"):
        out = tmp_path / f"{f}.safetensors"
        r = cli("save-embeddings", "--model", NAME, "--weights", tmp_path / f, "--data", tiny_world, "--split", "test",
                "--layers", "pooled", "--out", out, "--device", "cpu")
        assert r.exit_code == 0, r.output
        emb = read_embeddings(out)
        (model,) = emb.models
        assert model["weights"] == "file" and model["seed"] is None and model["weights_sha256"] == any_model.state_sha256(trained)
        if ref_pooled is None:
            with torch.no_grad():
                ref_pooled = trained(preprocessed(tiny_world, emb.column("row"), trained))
        assert torch.allclose(emb.tensor(NAME, "pooled")[:, 0], ref_pooled, atol=1e-5)
    other = timm.create_model("test_vit", num_classes=0)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "vit.safetensors"))
    r = cli("save-embeddings", "--model", NAME, "--weights", tmp_path / "vit.safetensors", "--data", tiny_world, "--out", tmp_path / "x.safetensors")
    assert r.exit_code == 2 and "same architecture" in r.output and "Traceback" not in r.output


def test_offline_pretrained_is_one_sentence(tiny_world, tmp_path, monkeypatch):
    monkeypatch.setattr(any_model, "_weights_source", lambda bare: ("huggingface.co", "timm/" + bare, None))  # nothing cached
    monkeypatch.setattr(any_model, "reachable", lambda host, timeout=3.0: False)  # and no connection
    r = cli("save-embeddings", "--model", NAME, "--pretrained", "--data", tiny_world, "--out", tmp_path / "p.safetensors")
    assert r.exit_code == 2, r.output
    text = " ".join(r.output.split())
    text = text[text.index("Error:"):]
    assert text.startswith("Error: Could not download the pretrained weights of test_resnet") and "--weights FILE" in text
    assert text.count(". ") == 0 and "Traceback" not in r.output, "one sentence"


@pytest.mark.parametrize("args, message", [
    (["RUNDIR", "--model", NAME, "--data", "DATA"], "not both"),
    (["RUNDIR", "--weights", "w.safetensors"], "--weights goes with --model"),
    (["RUNDIR", "--pretrained"], "--pretrained goes with --model"),
    (["--model", NAME], "--data DIR"),
    (["--model", NAME, "--data", "DATA", "--pretrained", "--weights", "w.pth"], "pass one of them"),
    (["--model", "no_such_net_xyz", "--data", "DATA"], "Unknown model 'no_such_net_xyz'"),
    (["--model", NAME, "--data", "DATA", "--layers", "layer9"], "Layer 'layer9' is not in test_resnet"),
    (["--model", NAME, "--data", "DATA", "--weights", "missing.pth"], "does not exist"),
    ([], "needs run directories"),
])
def test_misuse_is_one_sentence(args, message, tiny_world, tmp_path):
    subst = {"RUNDIR": str(tmp_path / "run"), "DATA": str(tiny_world)}  # the arguments are checked before any run is opened
    r = cli("save-embeddings", *[subst.get(a, a) for a in args], "--out", tmp_path / "o.safetensors", "--device", "cpu")
    assert r.exit_code == 2, r.output
    assert message in " ".join(r.output.split()) and "Traceback" not in r.output
    assert not (tmp_path / "o.safetensors").exists()


def test_list_layers():
    r = cli("save-embeddings", "--model", "timm:" + NAME, "--list-layers")
    assert r.exit_code == 0, r.output
    for layer, dim in (("act1", "32"), ("layer1", "32"), ("layer3", "192"), ("layer4", "96"), ("pooled", "96")):
        assert re.search(rf"│ {layer}\s+│ {dim}\s+│", r.output), r.output


class TinyNet(nn.Module):
    layer_names = ["mean", "out"]
    input_config = {"image_size": 16, "mean": [0.5] * 3, "std": [0.5] * 3, "crop_pct": 1.0}

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def embed(self, x, layers):
        mean = x.mean((2, 3))
        return {k: v for k, v in {"mean": mean, "out": self.fc(mean)}.items() if k in layers}


def test_a_registered_simtool_model_and_a_triplets_dataset(tiny_world, tmp_path):
    register_model("test_tiny_any")(TinyNet)
    try:
        out = tmp_path / "t.safetensors"
        r = cli("save-embeddings", "--model", "test_tiny_any", "--data", tiny_world / "triplets", "--out", out, "--device", "cpu")
        assert r.exit_code == 0, r.output
        emb = read_embeddings(out)
        assert emb.models[0]["layers"] == ["mean", "out"] and emb.models[0]["preprocessing"]["image_size"] == 16
        assert emb.triplets is not None and len(emb.triplets)
        r = cli("evaluate", out, "--type", "triplets", "--out", tmp_path / "t.json")
        assert r.exit_code == 0, r.output
        assert {rec["level"] for rec in json.loads((tmp_path / "t.json").read_text())["records"]} <= {"directed", "odd-one-out"}
    finally:
        MODELS.unregister("test_tiny_any")


def test_compare_groups_models_like_runs(tiny_world, tmp_path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in reference_model(seed=9).state_dict().items()}, str(tmp_path / "w.safetensors"))
    files = []
    for name, extra in (("s0", ["--seed", "0"]), ("s1", ["--seed", "1"]), ("from_file", ["--weights", tmp_path / "w.safetensors"])):
        out = tmp_path / f"{name}.safetensors"
        r = cli("save-embeddings", "--model", NAME, "--data", tiny_world, "--layers", "pooled", "--out", out, "--device", "cpu", *extra)
        assert r.exit_code == 0, r.output
        r = cli("evaluate", out, "--type", "knn", "--set", "k=5", "--out", tmp_path / f"{name}.json")
        assert r.exit_code == 0, r.output
        files.append(tmp_path / f"{name}.json")
    r = cli("compare", *files, "--out", tmp_path / "cmp", "--no-figures")
    assert r.exit_code == 0, r.output
    groups = json.loads((tmp_path / "cmp" / "comparison.json").read_text())["groups"]
    by_label = {}
    for g in groups:
        by_label.setdefault(g["name"], set()).add(g["n"])
    assert by_label.get("test_resnet (weights=random)") == {2}, by_label  # the two seeds are replicates
    assert any(label.startswith("test_resnet (weights=file sha256:") for label in by_label), by_label
