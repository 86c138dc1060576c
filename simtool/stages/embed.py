"""``save-embeddings``: trained runs → an embeddings file; and in-memory embedding for ``evaluate``.

A run is loaded through its model card (:func:`simtool.models.load_model`), so this stage never
imports training code. The images come from the dataset directory the card names (or ``--data``
when it moved), which must have the same content fingerprint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from rich.console import Console

from simtool.data.augment import BatchAugment
from simtool.engine.device import resolve_device
from simtool.errors import UserError
from simtool.formats.dataset_dir import Dataset
from simtool.formats.embeddings import ROOM_PREFIX, Embeddings, check_out_path, write_embeddings
from simtool.formats.run_dir import RunDir
from simtool.formats.weights import SPEC_KEY, read_metadata
from simtool.io import canonical_hash
from simtool.models import load_model


@dataclass
class LoadedRun:
    run: RunDir
    name: str
    model: torch.nn.Module
    card: dict
    spec: dict
    weights: Path
    finished: bool


def load_run(run_dir: str | Path, console: Console | None = None) -> LoadedRun:
    run = RunDir(run_dir)
    weights, finished = run.weights()
    if not finished and console:
        console.print(f"[yellow]{run.path} has not finished; using its latest checkpoint {weights.parent.name}.[/]", soft_wrap=True)
    hint = run.weights_hint(weights)
    model = load_model(weights, hint)
    try:
        spec = json.loads(read_metadata(weights, hint).get(SPEC_KEY, "{}"))
    except ValueError:
        spec = {}
    return LoadedRun(run, run.name, model, model.simtool_card, spec, weights, finished)


def open_dataset(card: dict, data: str | None) -> Dataset:
    """The dataset a run was trained on: ``data`` if given, else the path its card recorded."""
    ref = card.get("dataset") or {}
    path = data or ref.get("path")
    if not path:
        raise UserError("The run's card names no dataset; pass --data DIR.")
    if data is None and not Path(path).is_dir():
        raise UserError(f"The dataset this run was trained on is no longer at {path}; pass its new location with --data DIR.")
    ds = Dataset(path)
    want = ref.get("fingerprint")
    if want and ds.fingerprint != want:
        raise UserError(f"{ds.root} is not the dataset the run was trained on (fingerprint {ds.fingerprint[:19]} vs {want[:19]}); pass the right --data DIR.")
    return ds


def rows_table(ds: Dataset, rows: np.ndarray) -> tuple[pa.Table, dict]:
    """The rows table of dataset ``rows`` (ids, split, every label level) and its info."""
    cols = {
        "id": pa.array(ds.ids(rows), pa.string()),
        "row": pa.array(rows, pa.int64()),
        "split": pa.array(ds.split[rows], pa.string()),
        "category": pa.array(ds.category[rows], pa.int64()),
        "object": pa.array(ds.object_names[rows], pa.string()),
        "frame": pa.array(ds.frame[rows], pa.int64()),
    }
    rooms = {}
    for which in ds.room_assignments:
        room_of_category, names, _ = ds.rooms(which)
        cols[ROOM_PREFIX + which] = pa.array(room_of_category[ds.category[rows]], pa.int64())
        rooms[which] = names
    return pa.table(cols), {"category_names": ds.category_names, "rooms": rooms}


@torch.no_grad()
def embed_rows(loaded: LoadedRun, ds: Dataset, rows: np.ndarray, layers: list[str] | None, device: torch.device, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Embed dataset ``rows`` with the run's evaluation transform → layer → float32 (N, 1, D) on the CPU."""
    available = list(loaded.card.get("layers", []))
    layers = list(layers or available)
    unknown = [x for x in layers if x not in available]
    if unknown:
        raise UserError(f"Layer {unknown[0]!r} is not in {loaded.name}; its layers are: {', '.join(available)}.")
    size = int(loaded.card.get("input", {}).get("image_size", 224))
    store = ds.images(size)
    eval_aug = BatchAugment(size, "eval")
    model = loaded.model.to(device)
    chunks: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    for start in range(0, len(rows), batch_size):
        idx = ds.index[rows[start : start + batch_size]]
        x = eval_aug(store.load(idx).to(device))
        out = model.embed(x, tuple(layers))
        for layer in layers:
            chunks[layer].append(out[layer].float().cpu())
    return {layer: torch.cat(chunks[layer]).unsqueeze(1) for layer in layers}


def _provenance(loaded: LoadedRun, name: str, layers: list[str]) -> dict:
    spec = loaded.spec
    return {
        "name": name,
        "run": str(loaded.run.path),
        "method": loaded.card.get("method"),
        "preset": loaded.card.get("preset"),
        "seed": spec.get("seed"),
        "spec": spec,
        "spec_hash": canonical_hash(spec),
        "model": loaded.card.get("model"),
        "layers": layers,
        "finished": loaded.finished,
        "context": loaded.card.get("context", {}),
        "dataset": loaded.card.get("dataset", {}),
    }


def embed_runs(runs: list[str], split: str, layers: list[str] | None, device_name: str, batch_size: int, data: str | None = None, console: Console | None = None) -> Embeddings:
    """Embed ``split`` of the dataset of ``runs`` (which must share one dataset, by content)."""
    device = resolve_device(device_name)
    tensors: dict[str, torch.Tensor] = {}
    models: list[dict] = []
    ds = rows = None
    names: set[str] = set()
    for run_path in runs:
        loaded = load_run(run_path, console)
        fp = (loaded.card.get("dataset") or {}).get("fingerprint")
        if ds is None:
            ds = open_dataset(loaded.card, data)
            rows = ds.rows(split)
            if len(rows) == 0:
                raise UserError(f"The dataset {ds.root} has no {split!r} rows; choose another --split.")
        elif fp and fp != ds.fingerprint:
            raise UserError(f"{run_path} was trained on another dataset than the first run ({fp[:19]} vs {ds.fingerprint[:19]}); save embeddings of one dataset per file.")
        name, n = loaded.name, 1
        while name in names:
            n += 1
            name = f"{loaded.name}-{n}"
        names.add(name)
        embs = embed_rows(loaded, ds, rows, layers, device)
        for layer, t in embs.items():
            tensors[f"{name}/{layer}"] = t.contiguous()
        models.append(_provenance(loaded, name, list(embs)))
    table, info = rows_table(ds, rows)
    return Embeddings(rows=table, models=models, tensors=tensors, dataset=ds.ref(), split=split, info=info)


def save_embeddings(spec, console: Console | None = None) -> dict:
    out = check_out_path(spec.out)
    emb = embed_runs(spec.runs, spec.split, spec.layers, spec.device, spec.batch_size, spec.data, console)
    path, rp = write_embeddings(out, emb, spec.to_dict())
    return {"out": str(path), "rows": str(rp), "n": len(emb), "models": emb.models}
