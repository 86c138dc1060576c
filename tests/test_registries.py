"""Registries: a model loads back through its card; a method defined here trains through the CLI
with no change to the engine or the CLI; losses and evaluators register by name; optimizer groups."""

from __future__ import annotations

import json
from typing import Literal

import pytest
import torch
from torch import nn

from simtool.engine.method import Method
from simtool.errors import UserError
from simtool.formats.run_dir import RunDir
from simtool.formats.weights import write_weights
from simtool.methods import register_method, unregister_method
from simtool.models import MODELS, create_model, load_model, register_model
from simtool.specs.common import CommonSpec
from tests.conftest import cli


@register_model("test_tiny_mlp")
class TinyMLP(nn.Module):
    layer_names = ["hidden", "out"]

    def __init__(self, width: int = 4, out: int = 2, pretrained: bool = False):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, 8), nn.Linear(8, out)

    def embed(self, x, layers):
        h = self.fc1(x).relu()
        return {k: v for k, v in {"hidden": h, "out": self.fc2(h)}.items() if k in layers}

    def forward(self, x):
        return self.embed(x, ("out",))["out"]


def test_model_card_round_trip(tmp_path):
    torch.manual_seed(0)
    model = create_model("test_tiny_mlp", width=5, out=3, pretrained=True)
    assert model.simtool_card["model"] == "test_tiny_mlp" and model.simtool_card["kwargs"] == {"width": 5, "out": 3}, "build-only args stay out of the card"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    write_weights(tmp_path / "w.safetensors", state, {"card": json.dumps(model.simtool_card)})
    torch.manual_seed(1)
    loaded = load_model(tmp_path / "w.safetensors")
    x = torch.randn(4, 5)
    assert torch.equal(loaded(x), model(x)) and not loaded.training
    with pytest.raises(UserError, match="Unknown model 'nope'"):
        create_model("nope")
    with pytest.raises(UserError, match="does not accept"):
        create_model("test_tiny_mlp", depth=3)


class TinySpec(CommonSpec):
    method: Literal["test_tiny"] = "test_tiny"
    width: int = 4


class TinyMethod(Method):
    """Regress a fixed random batch onto ones: enough to exercise the engine end to end."""

    def __init__(self, spec, device, dist, console):
        self.spec = spec
        self.model = create_model("test_tiny_mlp", width=spec.width)
        self.x = torch.randn(32, spec.width, generator=torch.Generator().manual_seed(spec.seed))

    def steps_per_epoch(self):
        return 32 // self.spec.loop.batch_size

    def batches(self, epoch, start_step):
        b = self.spec.loop.batch_size
        for i in range(start_step, self.steps_per_epoch()):
            yield self.x[i * b : (i + 1) * b]

    def training_step(self, model, batch, info):
        return ((model(batch.to(info.device)) - 1.0) ** 2).mean(), {}


@pytest.fixture
def tiny_method():
    register_method("test_tiny", TinySpec,
                    presets={"test_tiny_default": {"description": "a method defined in a test", "loop": {"epochs": 3, "batch_size": 8}}})(TinyMethod)
    yield
    unregister_method("test_tiny")


def test_a_method_registered_in_one_place_trains_through_the_cli(tmp_path, tiny_method, tiny_world):
    listed = cli("train", "--list-presets")
    assert "test_tiny_default" in listed.output and "normal" in listed.output
    dry = cli("train", "--preset", "test_tiny_default", "--data", tiny_world, "--dry-run")
    assert dry.exit_code == 0 and "method: test_tiny" in dry.output and "width: 4" in dry.output
    bad = cli("train", "--preset", "test_tiny_default", "--data", tiny_world, "--set", "stream.p_change_room=0.2")
    assert bad.exit_code == 2 and "Unknown key 'stream'" in bad.output, "another method's keys are not this method's"
    result = cli("train", "--preset", "test_tiny_default", "--data", tiny_world, "--out", tmp_path / "run", "--device", "cpu",
                 "--set", "optim.name=sgd", "--set", "optim.lr=0.1", "--set", "loop.log_every=1")
    assert result.exit_code == 0, result.output
    run = RunDir(tmp_path / "run")
    assert run.state() == "finished" and run.read_spec()["method"] == "test_tiny"
    losses = [r["loss"] for r in run.read_metrics() if r["type"] == "train"]
    assert len(losses) == 3 * 4 and losses[-1] < losses[0], "SGD (optim.name) trained it"
    model = load_model(run.final_weights)
    assert isinstance(model, TinyMLP) and model.simtool_card["method"] == "test_tiny"


def test_train_spec_union_names_the_method():
    from simtool.methods import validate_train_spec

    with pytest.raises(UserError, match="Unknown method 'nope'"):
        validate_train_spec({"method": "nope"})
    with pytest.raises(UserError, match="names no method"):
        validate_train_spec({"seed": 1})
    spec = validate_train_spec({"method": "time_ssl", "stream": {"p_change_room": 0.5}})
    assert type(spec).__name__ == "TimeSSLSpec" and spec.stream.p_change_room == 0.5


def test_param_groups_scale_and_freeze():
    from simtool.engine.optim import build_optimizer
    from simtool.specs.common import OptimSpec

    model = TinyMLP()
    opt = build_optimizer(model, OptimSpec(lr=0.1, param_groups=[{"match": "fc1.*", "lr_scale": 0.5}, {"match": "fc2.bias", "freeze": True}]))
    assert isinstance(opt, torch.optim.AdamW)
    lrs = sorted(g["lr"] for g in opt.param_groups)
    assert lrs == [0.05, 0.1] and not model.fc2.bias.requires_grad
    assert sum(len(g["params"]) for g in opt.param_groups) == 3
    with pytest.raises(UserError, match="matches no trainable parameter"):
        build_optimizer(TinyMLP(), OptimSpec(param_groups=[{"match": "backbone.*"}]))


def test_loss_registry_conventions():
    from simtool.losses import CONVENTIONS, LOSSES, create_loss, register_loss

    assert LOSSES and all(cls.convention in CONVENTIONS for cls in LOSSES.values())
    assert create_loss("ntxent", temperature=0.2).temperature == 0.2
    with pytest.raises(TypeError, match="convention"):
        register_loss("bad")(type("Bad", (nn.Module,), {}))
    with pytest.raises(UserError, match="Unknown loss"):
        create_loss("nope")


def test_evaluator_registry_and_options():
    from simtool.evaluators import validate_evaluate_spec

    spec = validate_evaluate_spec({"target": "x", "options": {"type": "odd-one-out", "repeats": 4}})
    assert spec.options.repeats == 4 and spec.to_dict()["options"]["type"] == "odd-one-out"
    with pytest.raises(UserError, match="Unknown evaluation --type 'vibes'"):
        validate_evaluate_spec({"target": "x", "options": {"type": "vibes"}})
    with pytest.raises(UserError, match="'window' does not apply to --type odd-one-out"):
        validate_evaluate_spec({"target": "x", "options": {"type": "odd-one-out", "window": 3}})
    with pytest.raises(UserError, match="repeats"):
        validate_evaluate_spec({"target": "x", "options": {"type": "odd-one-out", "repeats": 0}})
    assert "test_tiny_mlp" in MODELS
