"""Spec resolution and the one-sentence errors users see."""

from __future__ import annotations

import pytest

from simtool.errors import UserError
from simtool.specs.base import parse_set
from simtool.specs.resolve import list_presets, load_preset, resolve_build_spec, resolve_train_spec
from simtool.specs.train import validate_train_spec

PRESETS = {"normal", "language_only", "time_only", "simclr", "random_context"}


def test_all_presets_listed_and_valid():
    presets = list_presets()
    assert PRESETS <= set(presets)
    assert all(presets[p] for p in PRESETS), "every preset has a one-line description"
    for name in PRESETS:
        spec = resolve_train_spec(name, data="/some/data")
        assert spec.preset == name and spec.profile is None
        assert spec.model.backbone == "resnet50" and spec.loop.epochs == 100 and spec.loop.batch_size == 64
        assert spec.optim.lr == 1e-3 and spec.optim.weight_decay == 1e-6
        assert spec.stream.crop_number == 7 and spec.stream.p_change_room == 0.1


def test_preset_contents_match_the_paper():
    assert resolve_train_spec("normal", data="d").modules == ["classic", "labels", "linear_eval"]
    lo = resolve_train_spec("language_only", data="d")
    assert lo.modules == ["labels", "linear_eval"] and lo.contrast.mode == "classic"
    to = resolve_train_spec("time_only", data="d")
    assert to.modules == ["classic", "linear_eval"] and to.contrast.mode == "time"
    sc = resolve_train_spec("simclr", data="d")
    assert sc.contrast.mode == "classic" and sc.contrast.augment.jitter == 0.8 and sc.contrast.augment.grayscale == 0.2
    rc = resolve_train_spec("random_context", data="d")
    assert rc.data.rooms == "random" and rc.modules == ["classic", "labels", "linear_eval"]


def test_toy_profile_applies_only_without_data():
    spec = resolve_train_spec("normal")
    assert spec.profile == "toyworld" and spec.data.image_size == 64 and spec.model.backbone == "test_resnet"
    assert spec.stream.p_change_room == 0.1, "the profile changes size, backbone and epochs, not the method"
    spec = resolve_train_spec("normal", sets=["data.path=/x"])
    assert spec.profile is None and spec.data.image_size == 224


def test_layer_order_config_then_set_then_flags(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("stream: {p_change_room: 0.3}\nseed: 5\nloop: {epochs: 3}\n")
    spec = resolve_train_spec("normal", config=str(cfg), sets=["stream.p_change_room=0.4", "seed=6"], seed=7, data="d")
    assert spec.stream.p_change_room == 0.4 and spec.seed == 7 and spec.loop.epochs == 3


def test_parse_set_types():
    assert parse_set(["a.b=1", "a.c=0.5", "d=true", "e=[x, y]", "f=resnet50"]) == {
        "a": {"b": 1, "c": 0.5}, "d": True, "e": ["x", "y"], "f": "resnet50"}
    with pytest.raises(UserError, match="key.path=value"):
        parse_set(["novalue"])


@pytest.mark.parametrize(
    "sets, words",
    [
        (["stream.p_change_room=1.5"], ["stream.p_change_room", "1.5", "less than or equal to 1"]),
        (["stream.p_chnge_room=0.2"], ["Unknown key", "stream.p_chnge_room", "p_change_room"]),
        (["loop.epochs=many"], ["loop.epochs", "many"]),
        (["contrast.mode=sideways"], ["contrast.mode", "time", "classic", "combined"]),
        (["modules=[]"], ["modules"]),
    ],
)
def test_bad_values_name_the_field(sets, words):
    with pytest.raises(UserError) as err:
        resolve_train_spec("normal", sets=sets, data="d")
    msg = str(err.value)
    for w in words:
        assert w in msg, (w, msg)
    assert "\n" not in msg


def test_unknown_preset_lists_choices():
    with pytest.raises(UserError) as err:
        load_preset("nromal")
    assert "nromal" in str(err.value) and "normal" in str(err.value) and "simclr" in str(err.value)


def test_missing_and_bad_config(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        resolve_train_spec("normal", config=str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        resolve_train_spec("normal", config=str(bad))
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="mapping"):
        resolve_train_spec("normal", config=str(lst))


def test_build_spec_split_must_sum_to_one():
    with pytest.raises(UserError, match="sum to 1"):
        resolve_build_spec("toyworld", "out", sets=["toyworld.split.train=0.9"])
    with pytest.raises(UserError, match="format"):
        resolve_build_spec("mvimgnet-typo", "out")


def test_spec_round_trips_through_dict():
    spec = resolve_train_spec("simclr", data="d")
    assert validate_train_spec(spec.to_dict()) == spec
