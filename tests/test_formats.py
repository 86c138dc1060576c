"""The four on-disk formats: round trips, content fingerprints, and one clear error for damaged input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pytest
import torch

from simtool.errors import UserError
from simtool.formats.dataset_dir import Dataset, DatasetWriter, ImageStore
from simtool.formats.embeddings import Embeddings, read_array, read_embeddings, rows_path, write_embeddings
from simtool.formats.results import make_record, read_results, results_doc, write_results
from simtool.formats.run_dir import RunDir
from simtool.formats.weights import read_card, read_state, write_weights


def _png(value: int) -> bytes:
    from simtool.formats.image_codec import encode_image

    return encode_image(np.full((8, 8, 3), value, dtype=np.uint8))


def _write_tiny(out, values=(10, 20, 30, 40)) -> None:
    with DatasetWriter(out, name="tiny") as w:
        for i, v in enumerate(values):
            w.add(_png(v), category=i % 2, obj=f"o{i // 2}", frame=i % 2, length=2, split="train" if i < 2 else "test")
        w.write(["a", "b"], rooms={"semantic": {"r0": [0], "r1": [1]}})


# -- dataset directory ----------------------------------------------------------------------------


def test_dataset_round_trip_and_fingerprint(tmp_path):
    _write_tiny(tmp_path / "d")
    ds = Dataset(tmp_path / "d")
    assert len(ds) == 4 and ds.category_names == ["a", "b"] and ds.card["counts"]["test_images"] == 2
    assert ds.fingerprint.startswith("sha256:") and ds.room_assignments == ["semantic"]
    img = ds.images(8).load(ds.index)
    assert img.shape == (4, 3, 8, 8) and img[2, 0, 0, 0] == 30
    assert list(ds.ids(np.arange(4))) == ["o0/0", "o0/1", "o1/0", "o1/1"]
    # the same content elsewhere is the same dataset; different content is not
    shutil.copytree(tmp_path / "d", tmp_path / "copy")
    _write_tiny(tmp_path / "again")
    _write_tiny(tmp_path / "other", values=(10, 20, 30, 41))
    assert Dataset(tmp_path / "copy").fingerprint == Dataset(tmp_path / "again").fingerprint == ds.fingerprint
    assert Dataset(tmp_path / "other").fingerprint != ds.fingerprint


def test_dataset_writer_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with DatasetWriter(tmp_path / "d", name="x") as w:
            w.add(_png(1), 0, "o", 0, 1, "train")
            raise RuntimeError("crash while building")
    assert list(tmp_path.iterdir()) == [], "no half-built directory, no temporaries"


def _corrupt(path, offset: int, n: int = 4096) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\0" * n)


@pytest.mark.parametrize("damage", ["truncate", "zero-header", "zero-data", "zero-offsets"])
def test_damaged_image_store_is_one_sentence(tmp_path, damage):
    _write_tiny(tmp_path / "d", values=tuple(range(0, 250, 2)))
    h5 = tmp_path / "d" / "images.h5"
    size = h5.stat().st_size
    if damage == "truncate":
        with open(h5, "r+b") as fh:
            fh.truncate(size // 2)
    elif damage == "zero-header":
        _corrupt(h5, 0, 1024)
    elif damage == "zero-data":
        _corrupt(h5, 2048 + 100, 64)  # inside the image bytes
    else:
        _corrupt(h5, size - 1200, 1200)  # offsets and checksums
    with pytest.raises(UserError) as err:
        store = ImageStore(h5, 8)
        store.load(np.arange(len(store)))
    msg = str(err.value)
    assert "images.h5 is damaged" in msg and "rebuild" in msg and "\n" not in msg


def test_damaged_index_and_card(tmp_path):
    _write_tiny(tmp_path / "d")
    (tmp_path / "d" / "frames.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(UserError, match="frames.parquet is damaged"):
        Dataset(tmp_path / "d")
    _write_tiny(tmp_path / "e")
    (tmp_path / "e" / "dataset.json").write_text("{ broken")
    with pytest.raises(UserError, match="dataset.json is damaged"):
        Dataset(tmp_path / "e")
    _write_tiny(tmp_path / "f")
    card = json.loads((tmp_path / "f" / "dataset.json").read_text())
    (tmp_path / "f" / "dataset.json").write_text(json.dumps({**card, "format_version": 1}))
    with pytest.raises(UserError, match="version 1.*rebuild"):
        Dataset(tmp_path / "f")


# -- weights and run directory ---------------------------------------------------------------------


def test_weights_card_round_trip_and_damage(tmp_path):
    state = {"w": torch.arange(6.0).reshape(2, 3)}
    card = {"model": "m", "kwargs": {"width": 3}}
    write_weights(tmp_path / "w.safetensors", state, {"card": json.dumps(card)})
    assert read_card(tmp_path / "w.safetensors") == card
    assert torch.equal(read_state(tmp_path / "w.safetensors")["w"], state["w"])
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 8])
    with pytest.raises(UserError, match="cut.safetensors is damaged"):
        read_state(tmp_path / "cut.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(UserError, match="damaged or not a safetensors file"):
        read_card(tmp_path / "junk.safetensors")


def test_run_dir_states(tmp_path):
    run = RunDir(tmp_path / "r")
    assert run.state() == "new"
    run.create({"method": "x"})
    assert run.state() == "started" and run.read_spec() == {"method": "x"}
    run.append_metrics({"type": "train", "step": 1})
    run.create({"method": "y"})  # a failed start may be started again; what it left is cleared
    assert run.read_spec() == {"method": "y"} and run.read_metrics() == []
    run.save_checkpoint(3, {"w": torch.zeros(1)}, {"position": 3}, {}, metadata={})
    assert run.state() == "interrupted"
    with pytest.raises(UserError, match="--resume"):
        run.check_can_start()
    run.write_final({"w": torch.zeros(1)}, {})
    run.write_summary({"status": "completed"})
    assert run.state() == "finished"
    with pytest.raises(UserError, match="finished run"):
        run.create({"method": "z"})
    for i in (1, 2, 3):
        run.append_metrics({"type": "train", "step": i})
    run.truncate_metrics(2)
    assert [r["step"] for r in run.read_metrics()] == [1, 2]
    with pytest.raises(UserError, match="not a simtool run directory"):
        RunDir(tmp_path).read_spec()


# -- embeddings --------------------------------------------------------------------------------------


def _emb(n=6, r=2, d=3, prefix="i") -> Embeddings:
    rows = pa.table({"id": [f"{prefix}{k}" for k in range(n)], "split": ["test"] * n, "category": list(range(n)), "object": [f"o{k}" for k in range(n)],
                     "room:semantic": [k % 2 for k in range(n)]})
    tensors = {"m/layer": torch.randn(n, r, d)}
    return Embeddings(rows=rows, models=[{"name": "m", "layers": ["layer"]}], tensors=tensors,
                      dataset={"fingerprint": "sha256:x"}, info={"rooms": {"semantic": ["a", "b"]}})


def test_embeddings_round_trip_and_damage(tmp_path):
    emb = _emb()
    path = tmp_path / "e.safetensors"
    write_embeddings(path, emb, {"k": 1})
    back = read_embeddings(path)
    assert torch.equal(back.tensor("m", "layer"), emb.tensors["m/layer"]) and back.tensor("m", "layer").shape == (6, 2, 3)
    assert back.rows.equals(emb.rows) and back.models == emb.models and back.info == emb.info
    assert back.rooms("semantic").tolist() == [0, 1, 0, 1, 0, 1]
    with pytest.raises(UserError, match="must end in .safetensors"):
        write_embeddings(tmp_path / "e.npy", emb)
    # a rows file from another export is caught
    write_embeddings(tmp_path / "f.safetensors", _emb(prefix="j"))
    shutil.copy(rows_path(tmp_path / "f.safetensors"), rows_path(path))
    with pytest.raises(UserError, match="does not belong"):
        read_embeddings(path)
    rows_path(path).unlink()
    with pytest.raises(UserError, match="rows file .* is missing"):
        read_embeddings(path)
    data = (tmp_path / "f.safetensors").read_bytes()
    (tmp_path / "f.safetensors").write_bytes(data[:40])
    with pytest.raises(UserError, match="damaged or not a safetensors file"):
        read_embeddings(tmp_path / "f.safetensors")


def test_plain_array_with_labels(tmp_path):
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "labels.csv").write_text("context,category,object\nk,a,o1\nk,a,o2\ng,b,o3\ng,b,o3\nk,c,o4\n")
    emb = read_array(tmp_path / "x.npy", tmp_path / "labels.csv")
    assert emb.tensor("x", "embedding").shape == (5, 1, 4) and torch.equal(emb.tensor("x", "embedding")[:, 0], torch.from_numpy(x))
    assert emb.rooms("labels").tolist() == [1, 1, 0, 0, 1] and emb.column("category").tolist() == [0, 0, 1, 1, 2]
    with pytest.raises(UserError, match="needs --labels"):
        read_array(tmp_path / "x.npy", None)
    (tmp_path / "short.csv").write_text("category\na\n")
    with pytest.raises(UserError, match="1 rows for 5 embeddings"):
        read_array(tmp_path / "x.npy", tmp_path / "short.csv")
    np.save(tmp_path / "bad.npy", np.zeros((2, 2, 2)))
    with pytest.raises(UserError, match=r"\(N, D\)"):
        read_array(tmp_path / "bad.npy", tmp_path / "labels.csv")


# -- results -------------------------------------------------------------------------------------------


def test_results_round_trip_and_damage(tmp_path):
    recs = [make_record(run="m", type="odd-one-out", layer="embedding", metric="accuracy", level="context", value=0.5, n=10, se=float("nan"))]
    assert recs[0]["se"] is None, "NaN is written as null"
    with pytest.raises(ValueError, match="unknown record field"):
        make_record(vibe=1)
    doc = results_doc("odd-one-out", "t", {}, {}, {"m": {}}, recs)
    write_results(tmp_path / "r.json", doc)
    assert read_results(tmp_path / "r.json")["records"] == recs
    # the schema: a record without a type (or layer, run, metric) is damage, named in one sentence
    write_results(tmp_path / "untyped.json", results_doc("odd-one-out", "t", {}, {}, {"m": {}}, [make_record(run="m", metric="accuracy", value=0.5)]))
    with pytest.raises(UserError, match="record 0 has a non-text type"):
        read_results(tmp_path / "untyped.json")
    (tmp_path / "bad.json").write_text('{"kind": "results", ')
    with pytest.raises(UserError, match="not valid JSON"):
        read_results(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"kind": "something"}')
    with pytest.raises(UserError, match="not a simtool results file"):
        read_results(tmp_path / "other.json")
