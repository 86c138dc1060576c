"""The shipped presets are generated from one table, ``simtool/specs/presets/_table.yaml``.

Pins the set of names, a few representative presets field by field, that every preset validates,
and the table's rules (extends, matrices, lookups, templates) and its one-sentence errors.
"""

from __future__ import annotations

import pytest

from simtool.errors import UserError
from simtool.methods import list_presets, load_preset, validate_train_spec
from simtool.specs import presets as presets_module
from simtool.specs.presets import read_yaml_preset, shipped_presets

NAMES = set(
    """
    normal time_only simclr language_only random_context
    toy_p_ste toy_p_trip toy_d_ste toy_se_rkd toy_se_stmr
    cub_se_rkd cub_se_stmr cars_se_rkd cars_se_stmr sop_se_rkd sop_se_stmr
    things_p_ste things_p_trip ihsjc_p_ste ihsjc_p_trip yummly_p_ste yummly_p_trip zappos_p_ste zappos_p_trip
    things_d_cont things_d_dm things_d_ms things_d_ste things_d_trip
    ihsjc_d_cont ihsjc_d_dm ihsjc_d_ms ihsjc_d_ste ihsjc_d_trip
    yummly_d_cont yummly_d_dm yummly_d_ms yummly_d_ste yummly_d_trip
    things_se_mtt things_se_rc things_se_rf things_se_ri things_se_rkd things_se_rms things_se_rt things_se_stmr
    things_se_mtt_vit things_se_rc_vit things_se_rf_vit things_se_ri_vit things_se_rkd_vit things_se_rms_vit things_se_rt_vit things_se_stmr_vit
    ihsjc_se_mtt ihsjc_se_rc ihsjc_se_rf ihsjc_se_ri ihsjc_se_rkd ihsjc_se_rms ihsjc_se_rt ihsjc_se_stmr
    ihsjc_se_mtt_vit ihsjc_se_rc_vit ihsjc_se_rf_vit ihsjc_se_ri_vit ihsjc_se_rkd_vit ihsjc_se_rms_vit ihsjc_se_rt_vit ihsjc_se_stmr_vit
    yummly_se_mtt yummly_se_rc yummly_se_rf yummly_se_ri yummly_se_rkd yummly_se_rms yummly_se_rt yummly_se_stmr
    yummly_se_mtt_vit yummly_se_rc_vit yummly_se_rf_vit yummly_se_ri_vit yummly_se_rkd_vit yummly_se_rms_vit yummly_se_rt_vit yummly_se_stmr_vit
    zappos_se_mtt zappos_se_rc zappos_se_rf zappos_se_ri zappos_se_rkd zappos_se_rms zappos_se_rt zappos_se_stmr
    zappos_se_mtt_vit zappos_se_rc_vit zappos_se_rf_vit zappos_se_ri_vit zappos_se_rkd_vit zappos_se_rms_vit zappos_se_rt_vit zappos_se_stmr_vit
    """.split()
)

# Representative presets, exactly as the per-preset YAML files held them before the table.
PINNED = {
    "things_se_rkd_vit": {'method': 'distill',
     'data': {'image_size': 224, 'teacher': None, 'teacher_layer': 'embedding', 'val_fraction': 0.2, 'samples_per_triplet': 2},
     'augment': {'min_crop': 0.08, 'flip': 0.5, 'brightness': 0.4, 'contrast': 0.4, 'saturation': 0.4, 'hue': 0.0, 'jitter': 1.0},
     'optim': {'name': 'adam', 'lr': 1e-06, 'weight_decay': 0.0001},
     'loop': {'epochs': 100, 'batch_size': 132},
     'validation': {'triplets': 1000000, 'threshold': 0.2},
     'checkpoint': {'best': 'val/fstrt', 'best_mode': 'max'},
     'loss': {'name': 'rkd', 'options': {}},
     'model': {'backbone': 'vit_base_patch16_224.augreg_in21k_ft_in1k',
               'pretrained': True,
               'dim': 128,
               'frozen': 'none',
               'nonlinear_layers': 0,
               'head': 'linear'},
     'description': "ViT-B/16 student of the THINGS (odd-one-out) teachers, rkd (the paper's config of this name); --set data.teacher=FILE."},
    "yummly_se_rf": {'method': 'distill',
     'data': {'image_size': 224, 'teacher': None, 'teacher_layer': 'embedding', 'val_fraction': 0.2, 'samples_per_triplet': 1},
     'augment': {'min_crop': 0.08, 'flip': 0.5, 'brightness': 0.4, 'contrast': 0.4, 'saturation': 0.4, 'hue': 0.0, 'jitter': 0.0},
     'optim': {'name': 'adam', 'lr': 1e-06, 'weight_decay': 0.0001},
     'loop': {'epochs': 100, 'batch_size': 60},
     'validation': {'triplets': 1000000, 'threshold': 0.2},
     'checkpoint': {'best': 'val/fstrt', 'best_mode': 'max'},
     'loss': {'name': 'relaxed_facenet', 'options': {'weights': 'triplets', 'margin': 0.5, 'margin2': 0.0, 'tau': 0.25}},
     'model': {'backbone': 'resnet50.tv_in1k', 'pretrained': True, 'dim': 128, 'frozen': 'bn', 'nonlinear_layers': 0, 'head': 'linear'},
     'description': "ResNet-50 student of the Yummly food100 (directed) teachers, relaxed_facenet (the paper's config of this name); --set "
                    'data.teacher=FILE.'},
    "zappos_p_ste": {'method': 'teacher',
     'repeats': 1,
     'data': {'train_splits': ['train', 'val'], 'val_split': 'val', 'val_fraction': 0.2},
     'model': {'dim': 128, 'l1': 1e-06, 'init_mean': 0.5, 'init_std': 0.2},
     'optim': {'name': 'adam', 'lr': 0.001, 'weight_decay': 0.0001, 'param_groups': [{'match': 'weight', 'weight_decay': 0.0}]},
     'loop': {'epochs': 100, 'batch_size': 3333},
     'select': 'each',
     'loss': {'name': 'ste', 'options': {'tau': 0.5}},
     'description': 'Psycho teachers on Zappos shoes (directed, 85 items) triplets, ste loss (not in the paper: as its Yummly config); add --repeats 5 '
                    'for the ensemble.'},
    "ihsjc_d_ms": {'method': 'direct',
     'data': {'image_size': 224, 'train_splits': ['train', 'val'], 'val_split': 'val', 'val_fraction': 0.2, 'samples_per_triplet': 3},
     'augment': {'min_crop': 0.08, 'flip': 0.5, 'jitter': 0.0},
     'optim': {'name': 'adam', 'lr': 0.0001, 'weight_decay': 0.0001},
     'loop': {'epochs': 10, 'batch_size': 83},
     'checkpoint': {'best': 'val/accuracy', 'best_mode': 'max'},
     'model': {'backbone': 'resnet50.tv_in1k', 'pretrained': True, 'dim': 128, 'frozen': 'bn', 'nonlinear_layers': 0, 'head': 'linear'},
     'loss': {'name': 'double_multisimilarity', 'options': {'lam': 0.5, 'alpha': 2.0, 'beta': 40.0}},
     'description': "ResNet-50 trained on IHSJC (directed class triplets) triplet labels directly, double_multisimilarity (the paper's config of this "
                    'name).'},
    "cars_se_stmr": {'method': 'distill',
     'data': {'image_size': 224, 'teacher': None, 'val_fraction': 0.2, 'per_class': 2},
     'model': {'backbone': 'vit_small_patch16_224.augreg_in21k_ft_in1k',
               'pretrained': True,
               'dim': 384,
               'frozen': 'none',
               'nonlinear_layers': 0,
               'head': 'vits'},
     'loss': {'options': {'miner': 'relaxed_sampling_matters', 'tau': 5.0, 'beta': 0.5}, 'name': 'stmr'},
     'augment': {'min_crop': 0.08, 'flip': 0.5, 'jitter': 1.0, 'brightness': 0.4, 'contrast': 0.4, 'saturation': 0.4, 'hue': 0.0},
     'optim': {'name': 'adamw', 'lr': 1e-05, 'weight_decay': 0.001},
     'loop': {'epochs': 100, 'batch_size': 284},
     'checkpoint': {'best': 'val/precision_at_1', 'best_mode': 'max'},
     'description': "ViT-S/16 student of one-hot classes on Cars196, stmr with the relaxed sampling-matters miner (the paper's cars_se_stmr_ns_vits)."},
    "toy_d_ste": {'data': {'image_size': 64, 'train_splits': ['train', 'val'], 'val_split': 'val', 'val_fraction': 0.2},
     'model': {'backbone': 'test_resnet', 'pretrained': False, 'dim': 32, 'frozen': 'none', 'nonlinear_layers': 0, 'head': 'linear'},
     'augment': {'min_crop': 0.5, 'flip': 0.5, 'jitter': 0.0},
     'optim': {'name': 'adam', 'lr': 0.001, 'weight_decay': 0.0001},
     'loop': {'epochs': 15, 'log_every': 10, 'batch_size': 32},
     'description': 'An image network (timm test_resnet, 64 px) trained on the toy triplets directly (ste).',
     'method': 'direct',
     'loss': {'name': 'ste', 'options': {'tau': 0.1}},
     'checkpoint': {'best': 'val/accuracy', 'best_mode': 'max'}},
    "random_context": {'method': 'time_ssl',
     'data': {'rooms': 'random', 'image_size': 224, 'subsample': 0.3, 'subsample_mode': 'balanced_draw', 'eval_crop': 0.875},
     'stream': {'crop_number': 7, 'p_change_room': 0.1, 'chunk_ratio_limit': 0.8, 'rotation_range': 2, 'redraw': 'once'},
     'model': {'backbone': 'resnet50',
               'pretrained': False,
               'head_hidden': 1024,
               'head_out': 512,
               'per_half': True,
               'sync_bn': True,
               'zero_init_last': False},
     'probe': {'train_on': 'anchors'},
     'optim': {'name': 'adamw', 'lr': 0.001, 'weight_decay': 1e-06},
     'loop': {'epochs': 100, 'batch_size': 512},
     'description': 'Control: as normal, but trained with the random room assignment.',
     'modules': ['classic', 'labels', 'linear_eval'],
     'contrast': {'mode': 'time', 'temperature': 0.1, 'time_min_crop': 0.5, 'global_negatives': True},
     'labels': {'temperature': 0.1}},
}


def _types(value):
    """The value with every leaf replaced by its type (1 and 1.0 must not pass for each other)."""
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_types(v) for v in value]
    return type(value)


def test_the_table_makes_exactly_the_shipped_names():
    assert len(NAMES) == 103
    assert set(shipped_presets()) == NAMES
    assert NAMES <= set(list_presets())


@pytest.mark.parametrize("name", sorted(PINNED))
def test_pinned_presets(name):
    got = read_yaml_preset(name)
    assert got == PINNED[name]
    assert _types(got) == _types(PINNED[name])


@pytest.mark.parametrize("name", sorted(NAMES))
def test_every_preset_has_a_description_and_validates(name):
    preset = shipped_presets()[name]
    assert isinstance(preset["description"], str) and preset["description"].strip()
    assert list_presets()[name] == preset["description"]
    spec = validate_train_spec({**load_preset(name), "preset": name})
    assert spec.method == preset["method"]


def test_students_share_one_recipe_and_differ_only_where_the_table_says():
    shipped = shipped_presets()
    students = [n for n in NAMES if "_se_" in n and n.split("_")[0] in {"things", "ihsjc", "yummly", "zappos"}]
    assert len(students) == 64
    for key in ("method", "optim", "validation", "checkpoint"):
        assert len({repr(shipped[n][key]) for n in students}) == 1, key
    # data differs only in the image triplets sampled per item triplet when scored (the paper's K per dataset)
    assert len({repr({k: v for k, v in shipped[n]["data"].items() if k != "samples_per_triplet"}) for n in students}) == 1
    assert {n.split("_")[0]: shipped[n]["data"]["samples_per_triplet"] for n in students} == {"things": 2, "ihsjc": 3, "yummly": 1, "zappos": 1}
    assert {shipped[n]["loop"]["batch_size"] for n in students if n.startswith("zappos")} == {48}
    assert shipped["things_se_rkd"]["loop"]["batch_size"] == shipped["yummly_se_rkd"]["loop"]["batch_size"] == 172
    assert shipped["yummly_se_mtt_vit"]["loop"]["batch_size"] == 60 and shipped["ihsjc_se_mtt_vit"]["loop"]["batch_size"] == 146


def test_read_yaml_preset_is_a_copy_and_the_expansion_is_cached():
    first = read_yaml_preset("things_se_rkd_vit")
    first["loop"]["batch_size"] = 1
    first["loss"]["options"]["x"] = 1
    assert read_yaml_preset("things_se_rkd_vit") == PINNED["things_se_rkd_vit"]
    assert shipped_presets()["normal"] is shipped_presets()["normal"]
    with pytest.raises(KeyError):
        read_yaml_preset("nromal")


SMALL_TABLE = """
bases:
  root: {method: direct, loop: {epochs: 2}}
  child: {extends: [root], loop: {batch_size: 4}}
axes:
  size:
    small: {label: Small one, name: s, model: {dim: 8}}
    large: {label: Large one, model: {dim: 64}}
matrices:
  m:
    name: "x_{size}_{colour}"
    description: "{size.label} in {colour.label}, dim {size.model.dim} ({name})."
    extends: [child]
    axes:
      size: [small, large]
      colour: {red: {label: red}, blue: {model: {frozen: none}}}
    lookup:
      loop.epochs:
        by: [size, colour]
        table: {small: {red: 5, "*": 6}, "*": 7}
presets:
  one: {description: One., extends: [child], loop: {epochs: 3}}
  two: {description: Two., extends: [one]}
"""


def _expand(tmp_path, monkeypatch, text: str) -> dict:
    path = tmp_path / "_table.yaml"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setattr(presets_module, "_table_path", lambda: path)
    return shipped_presets()


def test_the_table_rules(tmp_path, monkeypatch):
    got = _expand(tmp_path, monkeypatch, SMALL_TABLE)
    assert set(got) == {"x_s_red", "x_s_blue", "x_large_red", "x_large_blue", "one", "two"}
    assert got["x_s_red"] == {"method": "direct", "loop": {"epochs": 5, "batch_size": 4}, "model": {"dim": 8},
                              "description": "Small one in red, dim 8 (x_s_red)."}
    assert got["x_s_blue"]["loop"]["epochs"] == 6 and got["x_s_blue"]["model"] == {"dim": 8, "frozen": "none"}
    assert got["x_s_blue"]["description"] == "Small one in blue, dim 8 (x_s_blue)."  # the label defaults to the key
    assert got["x_large_red"]["loop"]["epochs"] == 7 and got["x_large_blue"]["loop"]["epochs"] == 7
    assert got["one"] == {"description": "One.", "method": "direct", "loop": {"epochs": 3, "batch_size": 4}}
    assert got["two"] == {**got["one"], "description": "Two."}


@pytest.mark.parametrize(
    "change, problem",
    [
        (("extends: [child], loop: {epochs: 3}", "extends: [nobody]"), "extends 'nobody', which is neither a base nor a preset"),
        (("extends: [root], loop", "extends: [child], loop"), "extends loops"),
        (('"*": 7}', "medium: 7}"), "no entry for size large and no '*' entry"),
        (("dim {size.model.dim}", "dim {size.model.width}"), "has no model.width"),
        (("({name})", "({shade})"), "no axis shade"),
        (("size: [small, large]", "size: [small, huge]"), "picks huge"),
        (('name: "x_{size}_{colour}"', 'name: "one"'), "makes the name one twice"),
        (("description: One., ", ""), "the preset one has no description"),
        (("presets:", "extra: {}\npresets:"), "unknown section(s) extra"),
    ],
)
def test_a_malformed_table_is_one_sentence_naming_the_file(tmp_path, monkeypatch, change, problem):
    old, new = change
    assert old in SMALL_TABLE
    with pytest.raises(UserError) as err:
        _expand(tmp_path, monkeypatch, SMALL_TABLE.replace(old, new, 1))
    message = str(err.value)
    assert message.startswith(f"The preset table {tmp_path / '_table.yaml'} is malformed: ") and problem in message, message
    assert "\n" not in message and message.endswith(".")


def test_a_table_that_is_not_yaml_is_a_user_error(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="preset table .* is not valid YAML"):
        _expand(tmp_path, monkeypatch, "bases: [unclosed\n")
