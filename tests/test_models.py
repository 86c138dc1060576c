"""Backbone creation, pretrained weights from files, and the time/context model's layers."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from simtool.errors import UserError
from simtool.models.backbone import create_backbone
from simtool.models.time_context import TimeContextModel


def test_pretrained_from_safetensors_and_pth(tmp_path):
    torch.manual_seed(0)
    src = create_backbone("test_resnet")
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    # a foreign checkpoint as other tools write it (the test makes one; simtool itself never writes .pth)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "w.pth")
    for f in ("w.safetensors", "w.pth"):
        torch.manual_seed(1)
        loaded = create_backbone("test_resnet", str(tmp_path / f))
        for k, v in loaded.state_dict().items():
            assert torch.equal(v, state[k]), (f, k)


def test_pretrained_errors(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="does not exist"):
        create_backbone("test_resnet", str(tmp_path / "missing.safetensors"))
    with pytest.raises(UserError, match="Unknown backbone"):
        create_backbone("resnet_five_hundred")
    save_file({"nothing.here": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(UserError, match="No tensor"):
        create_backbone("test_resnet", str(tmp_path / "other.safetensors"))
    import timm.models._builder as builder

    def offline(*args, **kwargs):
        raise ConnectionError("no internet")

    monkeypatch.setattr(builder, "load_pretrained", offline)  # as a download fails offline, without waiting on the network
    with pytest.raises(UserError, match="Could not download pretrained weights"):
        create_backbone("test_resnet", True)


def test_layers_and_per_half_batchnorm():
    torch.manual_seed(0)
    model = TimeContextModel("test_resnet", n_categories=5, n_rooms=2, modules=["classic", "labels", "linear_eval"], head_hidden=16, head_out=8)
    assert model.layer_names == ["backbone", "time.relu1", "time.relu2", "time.out", "label.relu1", "label.relu2", "label.out"]
    x = torch.randn(8, 3, 32, 32)
    cat = torch.randint(0, 5, (4,))
    model.train()
    both = model(x, halves=2, categories=cat, probes=True)
    first, second = model(x[:4]), model(x[4:])
    assert torch.allclose(both["time.out"], torch.cat([first["time.out"], second["time.out"]]), atol=1e-5)
    joint = model(x)
    assert not torch.allclose(joint["time.out"], both["time.out"], atol=1e-3), "one pass normalises over all 8 items"
    assert both["label.embed"].shape == (4, 8) and both["probe.category"].shape == (8, 5) and both["probe.context"].shape == (8, 2)
    model.eval()
    every = model(x, layers=tuple(model.layer_names))
    assert set(every) == set(model.layer_names) and every["time.relu1"].shape == (8, 16)
    assert (every["time.relu2"] >= 0).all()
    only = TimeContextModel("test_resnet", 5, 2, ["labels"], head_hidden=16, head_out=8)
    assert "time.out" not in only.layer_names and not hasattr(only, "probe_category")
