"""Embedding extraction: a trained run → per-layer embeddings of a split (``save-embeddings``).

Embeddings file format: ``FILE.safetensors`` holds one float32 tensor (N, D) per model and layer,
named ``"<model>/<layer>"``; its metadata holds the dataset path, split and per-model provenance
(JSON). Row ids live beside it in ``FILE.rows.parquet`` (columns ``row`` (row of
``frames.parquet``), ``index``, ``category``, ``object``, ``frame``, ``split``), in tensor row order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from rich.console import Console
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from simtool import __version__
from simtool.data.augment import BatchAugment
from simtool.data.dataset_dir import VideoDataset
from simtool.engine.checkpoint import latest_checkpoint
from simtool.engine.device import resolve_device
from simtool.engine.loop import FINAL_WEIGHTS
from simtool.errors import UserError
from simtool.io import atomic_path
from simtool.models.time_context import TimeContextModel
from simtool.specs.evaluate import SaveEmbeddingsSpec
from simtool.specs.train import TrainSpec
from simtool.train import load_run_spec


@dataclass
class LoadedRun:
    run_dir: Path
    name: str
    spec: TrainSpec
    model: TimeContextModel
    dataset: VideoDataset
    weights: Path
    finished: bool


def load_run(run_dir: str | Path, device: torch.device, console: Console | None = None) -> LoadedRun:
    run_dir = Path(run_dir)
    spec = load_run_spec(run_dir)
    weights = run_dir / FINAL_WEIGHTS
    finished = weights.is_file()
    if not finished:
        ckpt = latest_checkpoint(run_dir / "checkpoints")
        if ckpt is None:
            raise UserError(f"{run_dir} has no weights yet (no final or intermediate checkpoint); train it first.")
        weights = ckpt / "model.safetensors"
        if console:
            console.print(f"[yellow]{run_dir} has not finished; using its latest checkpoint {ckpt.name}.[/]")
    with safe_open(str(weights), "pt") as fh:
        meta = fh.metadata() or {}
    dataset = VideoDataset(spec.data.path)
    model = TimeContextModel(
        spec.model.backbone,
        n_categories=int(meta.get("n_categories", dataset.n_categories)),
        n_rooms=int(meta.get("n_rooms", 2)),
        modules=spec.modules,
        pretrained=False,
        head_hidden=spec.model.head_hidden,
        head_out=spec.model.head_out,
    )
    model.load_state_dict(load_file(str(weights), device="cpu"))
    model.to(device).eval()
    return LoadedRun(run_dir, run_dir.name, spec, model, dataset, weights, finished)


@torch.no_grad()
def embed_rows(run: LoadedRun, rows: np.ndarray, layers: list[str] | None, device: torch.device, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Embed dataset rows (eval mode, centre crop) → layer → float32 (N, D) on the CPU."""
    available = run.model.layer_names
    layers = layers or available
    unknown = [layer for layer in layers if layer not in available]
    if unknown:
        raise UserError(f"Layer {unknown[0]!r} is not in {run.name}; its layers are: {', '.join(available)}.")
    store = run.dataset.images(run.spec.data.image_size)
    eval_aug = BatchAugment(run.spec.data.image_size, "eval")
    chunks: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    for start in range(0, len(rows), batch_size):
        idx = run.dataset.index[rows[start : start + batch_size]]
        x = eval_aug(store.load(idx).to(device))
        out = run.model(x, layers=tuple(layers))
        for layer in layers:
            chunks[layer].append(out[layer].float().cpu())
    return {layer: torch.cat(chunks[layer]) if chunks[layer] else torch.zeros(0) for layer in layers}


def rows_table(ds: VideoDataset, rows: np.ndarray) -> pa.Table:
    return pa.table(
        {
            "row": pa.array(rows, pa.int64()),
            "index": pa.array(ds.index[rows], pa.int64()),
            "category": pa.array(ds.category[rows], pa.int64()),
            "object": pa.array([str(o) for o in ds.object_names[rows]], pa.string()),
            "frame": pa.array(ds.frame[rows], pa.int64()),
            "split": pa.array(ds.split[rows], pa.string()),
        }
    )


def rows_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name.removesuffix(".safetensors") + ".rows.parquet")


def save_embeddings(spec: SaveEmbeddingsSpec, console: Console | None = None) -> dict:
    out = Path(spec.out)
    if out.suffix != ".safetensors":
        raise UserError(f"--out {out} must end in .safetensors (row ids are written beside it as .rows.parquet).")
    device = resolve_device(spec.device)
    tensors: dict[str, torch.Tensor] = {}
    models = []
    dataset_root = None
    rows = None
    names: set[str] = set()
    for run_path in spec.runs:
        run = load_run(run_path, device, console)
        root = str(run.dataset.root.resolve())
        if dataset_root is None:
            dataset_root, ds = root, run.dataset
            rows = ds.rows(spec.split)
            if len(rows) == 0:
                raise UserError(f"The dataset {root} has no {spec.split!r} rows; choose another --split.")
        elif root != dataset_root:
            raise UserError(f"{run_path} was trained on {root}, the first run on {dataset_root}; save embeddings of one dataset per file.")
        name, n = run.name, 1
        while name in names:
            n += 1
            name = f"{run.name}-{n}"
        names.add(name)
        embs = embed_rows(run, rows, spec.layers, device, spec.batch_size)
        for layer, t in embs.items():
            tensors[f"{name}/{layer}"] = t.contiguous()
        models.append({"name": name, "run": str(run.run_dir), "preset": run.spec.preset, "rooms": run.spec.data.rooms, "layers": list(embs), "finished": run.finished})
    meta = {
        "simtool": __version__,
        "kind": "embeddings",
        "dataset": dataset_root,
        "split": spec.split,
        "models": json.dumps(models),
        "spec": json.dumps(spec.to_dict()),
    }
    with atomic_path(rows_path(out)) as tmp:
        pq.write_table(rows_table(ds, rows), str(tmp))
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return {"out": str(out), "rows": str(rows_path(out)), "n": int(len(rows)), "models": models}


@dataclass
class EmbeddingsFile:
    path: Path
    dataset: VideoDataset
    rows: np.ndarray
    models: list[dict]
    tensors: dict[str, torch.Tensor]


def load_embeddings(path: str | Path) -> EmbeddingsFile:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"The embeddings file {path} does not exist; write one with simtool save-embeddings.")
    try:
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata() or {}
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{path} is not a safetensors file; pass a run directory or a file written by simtool save-embeddings.") from exc
    if meta.get("kind") != "embeddings":
        raise UserError(f"{path} is not a simtool embeddings file; write one with simtool save-embeddings.")
    rp = rows_path(path)
    if not rp.is_file():
        raise UserError(f"The row ids {rp} of {path} are missing; write the file again with simtool save-embeddings.")
    rows = pq.read_table(rp).column("row").to_numpy().astype(np.int64)
    return EmbeddingsFile(path, VideoDataset(meta["dataset"]), rows, json.loads(meta["models"]), load_file(str(path), device="cpu"))
