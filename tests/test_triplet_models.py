"""The psycho teacher (R repetitions in one module) and the image student (timm backbone + head)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from simtool.errors import UserError
from simtool.losses import create_loss
from simtool.metrics.triplets import triplet_accuracy
from simtool.models import MODELS, create_model, load_builtin, load_model


# ------------------------------------------------------------------------------------ psycho
def test_registered_and_card():
    load_builtin()
    assert "psycho" in MODELS and "student" in MODELS
    m = create_model("psycho", n_items=7, dim=4, repeats=2, seed=3, l1=1e-6)
    assert m.simtool_card["kwargs"] == {"n_items": 7, "dim": 4, "repeats": 2, "seed": 3, "l1": 1e-6}
    assert m.layer_names == ["embedding"] and m.no_weight_decay() == {"weight"}


def test_psycho_output_init_and_seeds():
    m = create_model("psycho", n_items=500, dim=64, repeats=3, seed=11)
    assert m.weight.shape == (3, 500, 64)
    w = m.weight.detach()
    assert abs(float(w.mean()) - 0.5) < 0.01 and abs(float(w.std()) - 0.2) < 0.01
    items = torch.tensor([4, 0, 4, 499])
    out = m(items)
    assert out.shape == (4, 3, 64)
    assert torch.allclose(out.norm(dim=-1), torch.ones(4, 3)) and (out >= 0).all()
    assert torch.equal(out[0], out[2])
    assert torch.equal(m()[items], out), "forward() embeds every item"
    assert torch.equal(m.embed(items)["embedding"], out)
    # repetition r depends only on (seed, r): the same in a model with fewer repetitions
    one = create_model("psycho", n_items=500, dim=64, repeats=1, seed=11)
    assert torch.equal(one.weight[0], m.weight[0])
    assert not torch.allclose(m.weight[0], m.weight[1])
    other = create_model("psycho", n_items=500, dim=64, repeats=2, seed=12)
    assert not any(torch.allclose(other.weight[i], m.weight[j]) for i in range(2) for j in range(3))
    with pytest.raises(UserError):
        create_model("psycho", n_items=0)
    with pytest.raises(UserError, match="Layer"):
        m.embed(items, ("backbone",))


def test_repetitions_are_independent():
    m = create_model("psycho", n_items=10, dim=5, repeats=3, seed=0)
    out = m(torch.arange(10))
    trip = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    loss = create_loss("ste", tau=0.5).per_triplet(out[:, 1], trip, "odd-one-out").mean()
    loss.backward()
    g = m.weight.grad
    assert g[1].abs().sum() > 0 and g[0].abs().sum() == 0 and g[2].abs().sum() == 0
    # the summed loss gives each repetition exactly the gradient of its own loss
    m.weight.grad = None
    create_loss("triplet", margin=0.5)(m(), trip, "directed").backward()
    both = m.weight.grad.clone()
    for r in range(3):
        single = create_model("psycho", n_items=10, dim=5, repeats=1)
        with torch.no_grad():
            single.weight.copy_(m.weight[r : r + 1])
        create_loss("triplet", margin=0.5)(single(), trip, "directed").backward()
        assert torch.allclose(single.weight.grad[0], both[r], atol=1e-7)


def test_l1_penalty_has_a_gradient():
    m = create_model("psycho", n_items=6, dim=3, repeats=2, l1=0.01)
    with torch.no_grad():
        m.weight[0, 0, 0] = -0.3
    reg = m.regularization()
    assert reg.item() == pytest.approx(0.01 * m.weight.detach().abs().sum().item())
    reg.backward()
    assert torch.equal(m.weight.grad, 0.01 * m.weight.detach().sign())
    off = create_model("psycho", n_items=6, dim=3, l1=0.0).regularization()
    assert off.item() == 0.0 and off.requires_grad


def test_psycho_fits_a_planted_embedding():
    """Odd-one-out triplets from a planted 3-d embedding: a fitted teacher solves most of them."""
    g = torch.Generator().manual_seed(0)
    n = 40
    truth = torch.nn.functional.normalize(torch.rand(n, 3, generator=g), dim=1)
    trip = torch.stack([torch.randperm(n, generator=g)[:3] for _ in range(3000)])
    d = torch.cdist(truth, truth)
    d01, d02, d12 = d[trip[:, 0], trip[:, 1]], d[trip[:, 0], trip[:, 2]], d[trip[:, 1], trip[:, 2]]
    # reorder each triplet so that its closest pair comes first (a noiseless observer)
    best = torch.stack([d01, d02, d12], 1).argmin(1)
    order = torch.tensor([[0, 1, 2], [0, 2, 1], [1, 2, 0]])[best]
    trip = trip.gather(1, order)
    model = create_model("psycho", n_items=n, dim=8, repeats=2, seed=1)
    loss_fn = create_loss("ste", tau=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    before = triplet_accuracy(model().detach(), trip, "odd-one-out", reduce="none")
    for _ in range(150):
        loss = loss_fn(model(), trip, "odd-one-out") + model.regularization()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = triplet_accuracy(model().detach(), trip, "odd-one-out", reduce="none")
    assert (after > 0.9).all() and (after > before + 0.3).all(), (before, after)


# ----------------------------------------------------------------------------------- student
def _bn_stats(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}


def test_student_output_layers_and_card():
    torch.manual_seed(0)
    m = create_model("student", backbone="test_resnet", dim=16, pretrained=False)
    assert m.simtool_card["kwargs"] == {"backbone": "test_resnet", "dim": 16}, "pretrained is build-only"
    x = torch.randn(4, 3, 32, 32)
    out = m(x)
    assert out.shape == (4, 16) and torch.allclose(out.norm(dim=1), torch.ones(4), atol=1e-6)
    m.eval()
    layers = m.embed(x, ("backbone", "embedding"))
    assert layers["backbone"].shape == (4, m.backbone.num_features)
    assert torch.allclose(layers["embedding"], m(x))
    cfg = m.input_config
    pc = m.backbone.pretrained_cfg
    assert cfg["mean"] == list(pc["mean"]) and cfg["std"] == list(pc["std"]) and cfg["image_size"] == pc["input_size"][-1]
    assert cfg["interpolation"] == pc["interpolation"] and cfg["crop_pct"] == pc["crop_pct"]
    json.dumps(cfg)


def test_frozen_bn_keeps_running_statistics():
    torch.manual_seed(0)
    x = torch.randn(6, 3, 32, 32) * 3 + 1
    free = create_model("student", backbone="test_resnet", dim=8)
    before = _bn_stats(free)
    free.train()(x)
    assert any(not torch.equal(before[k], v) for k, v in _bn_stats(free).items()), "control: stats move"
    bn = create_model("student", backbone="test_resnet", dim=8, frozen="bn")
    before = _bn_stats(bn)
    bn.train()
    assert bn.training and bn.head.training
    bn(x).sum().backward()
    assert all(torch.equal(before[k], v) for k, v in _bn_stats(bn).items())
    bn_weights = [p for n, p in bn.backbone.named_parameters() if "bn" in n]
    assert bn_weights and all(p.requires_grad and p.grad is not None for p in bn_weights), "BN affine weights still train"


def test_frozen_all_trains_only_the_head():
    torch.manual_seed(0)
    m = create_model("student", backbone="test_resnet", dim=8, frozen="all", nonlinear_layers=2)
    before = _bn_stats(m)
    m.train()
    out = m(torch.randn(4, 3, 32, 32))
    out.sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in m.backbone.parameters())
    assert all(p.grad is not None for p in m.head.parameters())
    assert all(torch.equal(before[k], v) for k, v in _bn_stats(m).items())
    assert sum(isinstance(x, torch.nn.Linear) for x in m.head) == 3 and sum(isinstance(x, torch.nn.ReLU) for x in m.head) == 2
    assert (out >= 0).all(), "the last layer is a ReLU"


def test_vits_head():
    torch.manual_seed(0)
    m = create_model("student", backbone="test_vit", dim=24, head="vits")
    norm, linear = m.head[0], m.head[1]
    assert isinstance(norm, torch.nn.LayerNorm) and not norm.elementwise_affine
    w = linear.weight.detach()
    assert torch.allclose(w @ w.t(), torch.eye(24), atol=1e-5) and torch.equal(linear.bias.detach(), torch.zeros(24))
    assert all(not p.requires_grad for p in m.backbone.patch_embed.parameters())
    assert m.backbone.cls_token.requires_grad and all(p.requires_grad for p in m.backbone.blocks.parameters())
    out = m(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 24) and torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-6)
    with pytest.raises(UserError, match="ViT backbone"):
        create_model("student", backbone="test_resnet", head="vits")
    with pytest.raises(UserError, match="frozen"):
        create_model("student", backbone="test_resnet", frozen="some")


def test_student_weights_file_offline_error_and_round_trip(tmp_path, monkeypatch):
    torch.manual_seed(0)
    src = create_model("student", backbone="test_resnet", dim=8)
    save_file({k: v.contiguous() for k, v in src.backbone.state_dict().items()}, str(tmp_path / "bb.safetensors"))
    torch.manual_seed(1)
    loaded = create_model("student", backbone="test_resnet", dim=8, pretrained=str(tmp_path / "bb.safetensors"))
    for k, v in loaded.backbone.state_dict().items():
        assert torch.equal(v, src.backbone.state_dict()[k])
    import timm.models._builder as builder

    def offline(*args, **kwargs):
        raise ConnectionError("no internet")

    monkeypatch.setattr(builder, "load_pretrained", offline)
    with pytest.raises(UserError, match="Could not download pretrained weights"):
        create_model("student", backbone="test_resnet", pretrained=True)
    # a weights file written with the card rebuilds the same model
    from simtool.formats.weights import write_weights

    write_weights(tmp_path / "w.safetensors", {k: v.contiguous() for k, v in src.state_dict().items()}, {"card": json.dumps(src.simtool_card)})
    again = load_model(tmp_path / "w.safetensors")
    x = torch.randn(2, 3, 32, 32)
    src.eval()
    assert torch.allclose(again(x), src(x), atol=1e-6)
