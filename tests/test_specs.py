"""Spec resolution and the one-sentence errors users see."""

from __future__ import annotations

import pytest

from simtool.data.builders import resolve_build_spec
from simtool.errors import UserError
from simtool.methods import list_presets, load_preset, resolve_train_spec, validate_train_spec
from simtool.specs.base import parse_set

PRESETS = {"normal", "language_only", "time_only", "simclr", "random_context"}


# The original's settings, written from the README commands of neuroai-arena/ObjectSemanticSimilarity
# and its argument defaults (see the README's "Differences from the original code"): every preset
# trains ResNet-50 (torchvision init, no zero-init residuals) at 224 px for 100 epochs with AdamW
# 1e-3 / 1e-6, 8 GPUs x 64 = 512 images per step with negatives from all GPUs and synchronised
# BatchNorm, per-half BatchNorm, heads 1024-1024-512, NT-Xent tau 0.1, one stream per run
# (crop_number 7, p_change_room 0.1, chunk_ratio_limit 0.8, +-2 frames), 30 % of the training
# objects drawn with category-balanced weights, linear probes on the anchors, test crop 87.5 %.
COMMON = {
    "model.backbone": "resnet50", "model.pretrained": False, "model.zero_init_last": False, "model.head_hidden": 1024,
    "model.head_out": 512, "model.per_half": True, "model.sync_bn": True, "data.image_size": 224, "data.subsample": 0.3,
    "data.subsample_mode": "balanced_draw", "data.eval_crop": 0.875, "stream.crop_number": 7, "stream.p_change_room": 0.1,
    "stream.chunk_ratio_limit": 0.8, "stream.rotation_range": 2, "stream.redraw": "once", "optim.name": "adamw", "optim.lr": 1e-3,
    "optim.weight_decay": 1e-6, "loop.epochs": 100, "loop.batch_size": 512, "contrast.global_negatives": True, "probe.train_on": "anchors",
    "contrast.temperature": 0.1, "labels.temperature": 0.1, "schedule.name": "constant",
}
NO_AUG = {"contrast.augment.flip": 0.0, "contrast.augment.jitter": 0.0, "contrast.augment.grayscale": 0.0, "contrast.augment.blur": 0.0}
PAPER = {
    "normal": {"modules": ["classic", "labels", "linear_eval"], "contrast.mode": "time", "contrast.time_min_crop": 0.5, "data.rooms": "semantic"},
    "time_only": {"modules": ["classic", "linear_eval"], "contrast.mode": "time", "contrast.time_min_crop": 0.5, "data.rooms": "semantic"},
    "random_context": {"modules": ["classic", "labels", "linear_eval"], "contrast.mode": "time", "contrast.time_min_crop": 0.5, "data.rooms": "random"},
    "language_only": {"modules": ["labels", "linear_eval"], "contrast.mode": "classic", "contrast.augment.min_crop": 0.5, "data.rooms": "semantic", **NO_AUG},
    "simclr": {"modules": ["classic", "linear_eval"], "contrast.mode": "classic", "data.rooms": "semantic", "contrast.augment.min_crop": 0.5,
               "contrast.augment.flip": 0.5, "contrast.augment.jitter": 0.8, "contrast.augment.brightness": 0.8, "contrast.augment.contrast": 0.8,
               "contrast.augment.saturation": 0.8, "contrast.augment.hue": 0.2, "contrast.augment.grayscale": 0.2, "contrast.augment.blur": 0.0},
}


def test_all_presets_listed_and_valid():
    presets = list_presets()
    assert PRESETS <= set(presets)
    assert all(presets[p] for p in PRESETS), "every preset has a one-line description"


@pytest.mark.parametrize("name", sorted(PAPER))
def test_presets_resolve_to_the_originals_settings(name):
    from simtool.specs.base import flatten

    spec = resolve_train_spec(name, data="/some/data")
    assert spec.preset == name and spec.profile is None
    flat = flatten(spec.to_dict())
    for key, want in {**COMMON, **PAPER[name]}.items():
        assert flat[key] == want, (name, key, flat[key], want)


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


def test_unknown_preset_suggests_the_closest_and_where_to_list_them():
    with pytest.raises(UserError) as err:
        load_preset("nromal")
    msg = str(err.value)
    assert "'nromal'" in msg and "did you mean normal?" in msg and "--list-presets" in msg
    assert "simclr" not in msg, "103 presets are not pasted into one sentence"


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
