"""Adding a component is one registration in one file: a builder, a model, a loss, a method and an
evaluator defined here plug in and run through the real command line, with no change to the CLI,
the engine, the stages or the formats (the README's "Extending simtool" shows the same).

Then, for every registered evaluator and preset: the registry contract holds (a new component
cannot escape these tests).
"""

from __future__ import annotations

import json
from typing import Literal

import numpy as np
import pyarrow as pa
import pytest
import torch
from torch import nn

from simtool.data.builders import BUILDERS, register_builder
from simtool.engine.method import Method
from simtool.evaluators import EVALUATORS, Evaluator, register_evaluator, select_layers
from simtool.formats.dataset_dir import CLASS_INDEX, IMAGES, Dataset, new_dataset_dir, write_tables
from simtool.formats.image_codec import encode_image
from simtool.formats.image_store import ImageSpool
from simtool.formats.results import ROLES
from simtool.losses import LOSSES, create_loss, register_loss
from simtool.methods import METHODS, register_method
from simtool.models import MODELS, create_model, register_model
from simtool.specs.base import Spec
from simtool.specs.common import BaseDataSpec, CommonSpec
from simtool.specs.data import BuildBase
from tests.conftest import cli

# -- a builder: squares of a few colours, one class per colour ----------------------------------------


class BlobsBuildSpec(BuildBase):
    """``--format test_blobs``: coloured squares, one class per colour (a test builder)."""

    format: Literal["test_blobs"]
    classes: int = 3
    per_class: int = 8


def build_blobs(spec, progress=None, ctx=None) -> dict:
    rng = np.random.default_rng(spec.seed)
    colours = rng.integers(0, 255, (spec.classes, 3))
    with new_dataset_dir(spec.out) as tmp:
        spool = ImageSpool(tmp / ".images.raw")
        rows = {"class": [], "split": [], "index": [], "path": []}
        for c in range(spec.classes):
            for i in range(spec.per_class):
                img = np.clip(colours[c] + rng.normal(0, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
                rows["index"].append(spool.add(encode_image(img)))
                rows["class"].append(c)
                rows["split"].append("train" if i < spec.per_class // 2 else "test")
                rows["path"].append(f"c{c}/{i}.png")
        digest = spool.write_h5(tmp / IMAGES)
        write_tables(tmp, "classes", {CLASS_INDEX: pa.table(rows)}, digest, {"name": "blobs", "class_names": [f"c{c}" for c in range(spec.classes)]})
    return {"out": spec.out, "images": spec.classes * spec.per_class, "categories": spec.classes, "seconds": 0.0}


# -- a model: a small convolutional net with two layers ------------------------------------------------


class BlobNet(nn.Module):
    layer_names = ["pool", "out"]

    def __init__(self, dim: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, dim)

    def embed(self, x, layers):
        pool = self.conv(x).relu().mean((2, 3))
        out = nn.functional.normalize(self.fc(pool), dim=1)
        return {k: v for k, v in {"pool": pool, "out": out}.items() if k in layers}

    def forward(self, x):
        return self.embed(x, ("out",))["out"]


# -- a loss: pull the two views of an image together ---------------------------------------------------


class PullLoss(nn.Module):
    """``loss(z1, z2) = mean ||z1 - z2||^2`` (convention ``pair``; (B, D) each)."""

    convention = "pair"

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = weight

    def forward(self, z1, z2):
        return self.weight * ((z1 - z2) ** 2).sum(1).mean()


# -- a method: two flipped views of every image, the pull loss ------------------------------------------


class BlobsSpec(CommonSpec):
    method: Literal["test_blobs_method"] = "test_blobs_method"
    data: BaseDataSpec = BaseDataSpec()
    dim: int = 4


class BlobsMethod(Method):
    def __init__(self, spec, device, dist, console):
        self.spec = spec
        self.ds = Dataset(spec.data.path)
        self.images = self.ds.images(16).load(self.ds.index).float() / 255
        self.model = create_model("test_blob_net", dim=spec.dim)
        self.loss = create_loss("test_pull", weight=2.0)

    def steps_per_epoch(self):
        return len(self.images) // self.spec.loop.batch_size

    def batches(self, epoch, start_step):
        order = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(self.spec.seed * 100 + epoch))
        b = self.spec.loop.batch_size
        for s in range(start_step, self.steps_per_epoch()):
            yield self.images[order[s * b : (s + 1) * b]]

    def training_step(self, model, batch, info):
        x = batch.to(info.device)
        return self.loss(model(x), model(x.flip(3))), {}

    def card(self):
        return {"input": {"image_size": 16, "transform": "center_crop", "crop_frac": 1.0, "mean": [0.0] * 3, "std": [1.0] * 3},
                "dataset": self.ds.ref()}


# -- an evaluator: the mean norm of every layer ----------------------------------------------------------


class NormsOptions(Spec):
    type: Literal["test_norms"] = "test_norms"


class Norms(Evaluator):
    def evaluate(self, emb, options, layers=None):
        records = []
        for model in emb.models:
            for layer in select_layers(model, layers):
                x = emb.tensor(model["name"], layer)[:, 0]
                records.append(self.record(run=model["name"], method=model.get("method"), preset=model.get("preset"), seed=model.get("seed"),
                                           repeat=0, layer=layer, metric="mean_norm", value=float(x.norm(dim=1).mean()), n=len(x)))
                records.append(self.record(run=model["name"], layer=layer, metric="dim", value=float(x.shape[1]), n=len(x), repeat=0))
        return records


@pytest.fixture
def one_of_each():
    """The five registrations a new research line would write, each one line in its own file."""
    register_builder("test_blobs", spec=BlobsBuildSpec)(build_blobs)
    register_model("test_blob_net")(BlobNet)
    register_loss("test_pull")(PullLoss)
    register_method("test_blobs_method", BlobsSpec, presets={"test_blobs_default": {"description": "a method defined in a test",
                                                                                    "loop": {"epochs": 2, "batch_size": 4}}})(BlobsMethod)
    register_evaluator("test_norms", NormsOptions, roles={"dim": "count"})(Norms)
    yield
    for registry, name in ((BUILDERS, "test_blobs"), (MODELS, "test_blob_net"), (LOSSES, "test_pull"),
                           (METHODS, "test_blobs_method"), (EVALUATORS, "test_norms")):
        registry.unregister(name)


def test_one_registration_each_runs_through_the_command_line(tmp_path, one_of_each):
    data, run, res = tmp_path / "blobs", tmp_path / "run", tmp_path / "res.json"
    r = cli("build-data", "--format", "test_blobs", "--out", data, "--set", "classes=2")
    assert r.exit_code == 0, r.output
    assert Dataset(data).kind == "classes" and len(Dataset(data)) == 16
    assert "test_blobs_default" in cli("train", "--list-presets").output
    assert "--format test_blobs: coloured squares" in cli("build-data", "--help").output, "the help lists the registered formats"
    assert "test_norms" in cli("evaluate", "--help").output
    r = cli("train", "--preset", "test_blobs_default", "--data", data, "--out", run, "--device", "cpu")
    assert r.exit_code == 0, r.output
    r = cli("evaluate", run, "--type", "test_norms", "--split", "all", "--out", res, "--device", "cpu")
    assert r.exit_code == 0, r.output
    records = json.loads(res.read_text())["records"]
    assert {(r["layer"], r["metric"], r["role"]) for r in records} == {("pool", "mean_norm", "score"), ("out", "mean_norm", "score"),
                                                                        ("pool", "dim", "count"), ("out", "dim", "count")}
    assert next(r["value"] for r in records if r["layer"] == "out" and r["metric"] == "mean_norm") == pytest.approx(1.0, abs=1e-5)
    r = cli("compare", run, "--out", tmp_path / "cmp", "--no-figures")
    assert r.exit_code == 0, r.output
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "mean_norm" in table and "test_blobs_default" in table
    bad = cli("evaluate", run, "--type", "test_norms", "--set", "bogus=1")
    assert bad.exit_code == 2 and "does not apply to --type test_norms" in bad.output


# -- the registry contract, for every registered evaluator and preset ------------------------------------


def _embeddings_for(type_: str, tiny_run, tiny_world, tmp_path):
    """Embeddings an evaluator of ``type_`` can score (the tiny world's run and triplets)."""
    from simtool.embedding.runs import embed_runs

    if type_ in ("odd-one-out", "classes"):
        return embed_runs([str(tiny_run)], "test", None, "cpu", 256)
    if type_ in ("linear-probe", "knn"):  # the probes learn from the train rows and score the test rows
        return embed_runs([str(tiny_run)], "all", None, "cpu", 256)
    if type_ == "rsa":  # and a reference embedding of the same items
        emb = embed_runs([str(tiny_run)], "test", None, "cpu", 256)
        np.savez(tmp_path / "reference.npz", ids=emb.ids, embedding=np.random.default_rng(0).standard_normal((len(emb), 3)))
        return emb
    if type_ == "triplets":
        from simtool.formats.embeddings import Embeddings

        ds = Dataset(tiny_world / "triplets")
        rows = ds.export_rows("all", True)
        x = torch.randn(len(rows), 2, 5, generator=torch.Generator().manual_seed(0))
        table = pa.table({"id": ds.ids(rows).tolist(), "split": ds.split_of(rows).tolist()})
        model = {"name": "random", "layers": ["embedding"], "seed": 0}
        return Embeddings(rows=table, models=[model], tensors={"random/embedding": x}, split="all", triplets=ds.triplets_of(rows, "all"))
    return None


def test_every_registered_evaluator_has_an_input_here():
    missing = [t for t in EVALUATORS.names() if t not in ("odd-one-out", "classes", "triplets", "linear-probe", "knn", "rsa")]
    assert not missing, f"evaluators without an input in tests/test_extension.py _embeddings_for: {missing}"


@pytest.mark.parametrize("type_", ["odd-one-out", "classes", "triplets", "linear-probe", "knn", "rsa"])
def test_every_registered_evaluator_writes_valid_records(type_, tiny_run, tiny_world, tmp_path):
    from simtool.compare.aggregate import aggregate, collect
    from simtool.formats.results import FIELDS, read_results, results_doc, write_results

    entry = EVALUATORS.get(type_)
    evaluator = entry.obj("cpu")
    special = {"classes": {"column": "category"}, "rsa": {"reference": str(tmp_path / "reference.npz"), "bootstrap": 20}}
    options = entry.options.model_validate(special.get(type_, {}))
    emb = _embeddings_for(type_, tiny_run, tiny_world, tmp_path)
    records = evaluator.evaluate(emb, options)
    assert records and all(set(r) >= set(FIELDS) and r["type"] == type_ and r["role"] in ROLES for r in records)
    assert {r["role"] for r in records if r["metric"] in entry.roles} <= set(entry.roles.values())
    doc = results_doc(type_, "t", {}, {}, {m["name"]: m for m in emb.models}, records)
    path = write_results(tmp_path / "r.json", doc)
    assert read_results(path)["records"] and aggregate(collect([str(path)])).groups
    assert evaluator.tables(records), "every evaluator prints a table"


def test_every_preset_resolves_and_validates():
    from simtool.methods import list_presets, resolve_train_spec

    for name in list_presets():
        spec = resolve_train_spec(name, data="/no/such/data")
        assert spec.preset == name and spec.method in METHODS
