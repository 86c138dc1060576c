"""Embedding trained runs: a run directory (its weights and model card) + its dataset → embeddings.

A run is loaded through its model card (:func:`simtool.models.load_model`), so this never imports
training code. The images come from the dataset directory the card names (or ``data`` when it
moved), which must have the same content fingerprint. A run with ``best.safetensors`` (the best
validation pass, ``checkpoint.best``) is embedded with those weights.

Index models (the psycho teachers, card ``input.kind: items``) embed the items of a ``triplets``
dataset, no pixels: ``(N, R, D)`` with R the run's repetitions. Several teacher runs export as one
ensemble: their repetitions are stacked along R (one model in the file, every repetition's run and
seed in its provenance). Image models of a ``triplets`` dataset embed one row per item (the items
with an image): the mean of the item's images' embeddings (``item_images``), or its one image. The
embeddings of a ``triplets`` dataset carry the dataset's labelled triplets of the split whose three
items are all exported (all triplets with ``split="all"``), as row numbers, so they evaluate on
their own (``evaluate --type triplets``). Which rows and images a dataset exports is the dataset
kind's business (:class:`~simtool.formats.dataset_dir.Dataset`); this module is the glue.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import torch
from rich.console import Console

from simtool.data.augment import IMAGENET_MEAN, IMAGENET_STD, normalize
from simtool.data.images import eval_box_fn
from simtool.engine.device import resolve_device
from simtool.errors import UserError
from simtool.formats.dataset_dir import Dataset, TripletsDataset
from simtool.formats.embeddings import Embeddings
from simtool.formats.run_dir import RunDir
from simtool.formats.weights import SPEC_KEY, read_metadata
from simtool.io import canonical_hash, file_sha256
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
    best: dict | None = None  # what best.safetensors records when those are the weights used

    @property
    def is_index_model(self) -> bool:
        """True for models that embed item indices (teachers), not images."""
        return (self.card.get("input") or {}).get("kind") == "items"


def load_run(run_dir: str | Path, console: Console | None = None) -> LoadedRun:
    run = RunDir(run_dir)
    weights, finished = run.weights()
    best = run.best_info() if weights == run.best_weights else None
    if not finished and console:
        what = "its best validation pass so far" if best is not None else f"its latest checkpoint {weights.parent.name}"
        console.print(f"[yellow]{run.path} has not finished; using {what}.[/]", soft_wrap=True)
    hint = run.weights_hint(weights)
    model = load_model(weights, hint)
    try:
        spec = json.loads(read_metadata(weights, hint).get(SPEC_KEY, "{}"))
    except ValueError:
        spec = {}
    return LoadedRun(run, run.name, model, model.simtool_card, spec, weights, finished, best)


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
    """The rows table of dataset ``rows`` (id, row, split, every label level of the kind) and its info.

    The levels come from :meth:`Dataset.labels` (video: category, object, frame, ``room:<name>``;
    classes: class; triplets: item, class when known); the info (:meth:`Dataset.label_info`) holds
    the category (or class) names and the room names of every stored room assignment.
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = {
        "id": pa.array(ds.ids(rows), pa.string()),
        "row": pa.array(rows, pa.int64()),
        "split": pa.array(ds.split_of(rows), pa.string()),
    }
    for name, values in ds.labels(rows).items():
        values = np.asarray(values)
        cols[name] = pa.array(values, pa.string() if values.dtype.kind in "US" else pa.int64())
    return pa.table(cols), ds.label_info()


@torch.no_grad()
def embed_rows(loaded: LoadedRun, ds: Dataset, rows: np.ndarray, layers: list[str] | None,
               device: torch.device, batch_size: int = 256, twin: Dataset | None = None, image_store: dict | None = None,
               progress: Callable[[int, int], None] | None = None) -> dict[str, torch.Tensor]:
    """Embed dataset ``rows`` with the run's evaluation transform → layer → float32 (N, 1, D) on the CPU.

    A row with several images (an item of a triplets dataset) gets the mean of its images'
    embeddings, renormalised where they are unit vectors; ``image_store`` (a dict) then receives
    every image's ``(M, D)`` per layer and, under ``"__row__"``, the row of every image.
    ``twin``: take the images of the same rows from this dataset directory instead (a second image
    set of the same frames, :meth:`Dataset.twin_images`). ``progress(done, total)``: called after
    every batch with the images embedded so far."""
    available = list(loaded.card.get("layers", []))
    layers = list(layers or available)
    unknown = [x for x in layers if x not in available]
    if unknown:
        raise UserError(f"Layer {unknown[0]!r} is not in {loaded.name}; its layers are: {', '.join(available)}.")
    model = loaded.model.to(device)
    if loaded.is_index_model:  # teachers: item indices in, (N, R, D) out
        n_items = int((loaded.card.get("input") or {}).get("n_items", len(ds)))
        if not isinstance(ds, TripletsDataset) or n_items != len(ds):
            raise UserError(f"{loaded.name} embeds the {n_items} items of the triplets dataset it was trained on, "
                            f"and {ds.root} is not it; pass that dataset with --data.")
        out = model.embed(torch.as_tensor(np.asarray(rows, dtype=np.int64), device=device), tuple(layers))
        return {layer: out[layer].float().cpu().contiguous() for layer in layers}
    spec_in = loaded.card.get("input", {})
    size = int(spec_in.get("image_size", 224))
    box_fn = eval_box_fn(str(spec_in.get("transform", "center_crop")), float(spec_in.get("crop_frac", 1.0)))
    resample = str(spec_in.get("interpolation", "bilinear")) if spec_in.get("transform") == "resize_crop" else "bilinear"
    mean, std = spec_in.get("mean", IMAGENET_MEAN), spec_in.get("std", IMAGENET_STD)
    if twin is None:
        store = ds.images(size)
        images, owner = ds.image_rows(rows)
    else:
        store, images, owner = twin.images(size), ds.twin_images(twin, rows), None
    chunks: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    for start in range(0, len(images), batch_size):
        idx = images[start : start + batch_size]
        x = normalize(store.load_crops(idx, box_fn, resample).to(device), mean, std)
        out = model.embed(x, tuple(layers))
        for layer in layers:
            chunks[layer].append(out[layer].float().cpu())
        if progress is not None:
            progress(min(start + batch_size, len(images)), len(images))
    result, per_image = {}, {}
    for layer in layers:
        emb = torch.cat(chunks[layer])
        if owner is not None:  # several images per row: their mean, renormalised when the images' embeddings are unit vectors
            per_image[layer] = emb
            total = torch.zeros(len(rows), emb.shape[1])
            total.index_add_(0, torch.from_numpy(owner), emb)
            mean = total / torch.from_numpy(np.bincount(owner, minlength=len(rows))).float().unsqueeze(1)
            unit = bool(len(emb)) and bool(torch.allclose(emb.norm(dim=1), torch.ones(len(emb)), atol=1e-3))
            emb = torch.nn.functional.normalize(mean, dim=1) if unit else mean
        result[layer] = emb.unsqueeze(1)
    if image_store is not None:
        image_store.update(per_image)
        image_store["__row__"] = owner
    return result


def _provenance(loaded: LoadedRun, name: str, layers: list[str]) -> dict:
    spec = loaded.spec
    return {
        "name": name,
        "run": str(loaded.run.path.resolve()),
        "weights_sha256": file_sha256(loaded.weights),
        "method": loaded.card.get("method"),
        "preset": loaded.card.get("preset"),
        "seed": spec.get("seed"),
        "spec": spec,
        "spec_hash": canonical_hash(spec),
        "model": loaded.card.get("model"),
        "layers": layers,
        "finished": loaded.finished,
        "weights": "best" if loaded.best is not None else ("final" if loaded.finished else "checkpoint"),
        "best": loaded.best,
        "context": loaded.card.get("context", {}),
        "dataset": loaded.card.get("dataset", {}),
        **({"run_only": loaded.card["run_only"]} if "run_only" in loaded.card else {}),
    }


def _ensemble_provenance(parts: list[tuple[LoadedRun, int]], name: str, layers: list[str]) -> dict:
    """Provenance of teacher runs stacked along R: the first run's, plus every repetition's run and seed."""
    first = _provenance(parts[0][0], name, layers)
    reps = []
    for loaded, r in parts:
        seed = loaded.spec.get("seed")
        reps += [{"run": str(loaded.run.path), "seed": seed, "repeat": i} for i in range(r)]
    first["runs"] = [str(loaded.run.path) for loaded, _ in parts]
    first["repetitions"] = reps
    first["finished"] = all(loaded.finished for loaded, _ in parts)
    if len(parts) > 1:  # the ensemble is the weights of all its runs
        first["weights_sha256"] = canonical_hash([file_sha256(loaded.weights) for loaded, _ in parts])
    return first


@contextlib.contextmanager
def embedding_progress(console: Console | None, name: str):
    """A ``progress(done, total)`` callback showing a bar for embedding ``name`` (images/s, time
    left) while the block runs; a no-op without a console. Where another live display is already
    shown (``evaluate``'s status line) one line at the start and one at the end instead."""
    if console is None:
        yield None
        return
    from rich.errors import LiveError
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("embedding {task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("images"),
                   TimeRemainingColumn(), console=console, transient=True)
    t0 = time.perf_counter()
    seen = {"n": 0}
    try:
        bar.start()
    except LiveError:
        bar = None
        console.print(f"Embedding {name} ...", soft_wrap=True)
    task = bar.add_task(name, total=None) if bar is not None else None

    def progress(done: int, total: int) -> None:
        seen["n"] = total
        if bar is not None:
            bar.update(task, completed=done, total=total)

    try:
        yield progress
    finally:
        if bar is not None:
            bar.stop()
    seconds = time.perf_counter() - t0
    if seen["n"]:
        console.print(f"Embedded {name}: {seen['n']} images in {seconds:.1f} s ({seen['n'] / max(seconds, 1e-9):.0f} images/s).", soft_wrap=True)


def embed_runs(runs: list[str], split: str | None, layers: list[str] | None, device_name: str, batch_size: int,
               data: str | None = None, console: Console | None = None, images: str | None = None) -> Embeddings:
    """Embed ``split`` of the dataset of ``runs`` (which must share one dataset, by content);
    ``images``: a dataset directory with a second image set of the same rows to embed instead."""
    device = resolve_device(device_name)
    tensors: dict[str, torch.Tensor] = {}
    models: list[dict] = []
    ds = rows = None
    names: set[str] = set()
    loaded_runs = [load_run(run_path, console) for run_path in runs]
    index_models = [lr.is_index_model for lr in loaded_runs]
    if any(index_models) and not all(index_models):
        teachers = ", ".join(lr.name for lr in loaded_runs if lr.is_index_model)
        raise UserError(f"Teacher runs ({teachers}) embed items and image models embed images; export them to separate files (one save-embeddings per kind).")
    if split is None:  # teachers: every item (students look rows up by id); image models: the test split
        split = "all" if all(index_models) else "test"
    ensemble: list[tuple[LoadedRun, int]] = []
    twin = Dataset(images) if images else None
    image_embs, image_row = {}, None  # every image's embedding, for rows with several images
    for run_path, loaded in zip(runs, loaded_runs):
        fp = (loaded.card.get("dataset") or {}).get("fingerprint")
        if ds is None:
            ds = open_dataset(loaded.card, data)
            rows = ds.export_rows(split, loaded.is_index_model)
            if len(rows) == 0:
                with_image = "" if loaded.is_index_model or not isinstance(ds, TripletsDataset) else " with an image"
                raise UserError(f"The dataset {ds.root} has no {split!r} rows{with_image}; choose another --split.")
        elif fp and fp != ds.fingerprint:
            raise UserError(f"{run_path} was trained on another dataset than the first run ({fp[:19]} vs {ds.fingerprint[:19]}); "
                            "save embeddings of one dataset per file.")
        per_image: dict = {}
        with embedding_progress(console, loaded.name) as progress:
            embs = embed_rows(loaded, ds, rows, layers, device, twin=twin, image_store=per_image, progress=progress)
        if loaded.is_index_model:  # teachers: one ensemble, repetitions stacked along R
            for layer, t in embs.items():
                key = layer
                if key in tensors and tensors[key].shape[2] != t.shape[2]:
                    raise UserError(f"The teacher runs have different dimensions ({tensors[key].shape[2]} and {t.shape[2]} in {loaded.name}); "
                                    "export teachers of one dimension together.")
                tensors[key] = torch.cat([tensors[key], t], 1) if key in tensors else t
            ensemble.append((loaded, next(iter(embs.values())).shape[1] if embs else 0))
            continue
        name, n = loaded.name, 1
        while name in names:
            n += 1
            name = f"{loaded.name}-{n}"
        names.add(name)
        for layer, t in embs.items():
            tensors[f"{name}/{layer}"] = t.contiguous()
        image_row = per_image.pop("__row__", image_row)
        image_embs.update({f"{name}/{layer}": t.contiguous() for layer, t in per_image.items()})
        models.append(_provenance(loaded, name, list(embs)))
    if ensemble:
        name = "+".join(dict.fromkeys(lr.name for lr, _ in ensemble)) if len(ensemble) > 1 else ensemble[0][0].name
        tensors = {f"{name}/{layer}": t.contiguous() for layer, t in tensors.items()}
        models = [_ensemble_provenance(ensemble, name, [k.split("/", 1)[1] for k in tensors])]
    table, info = rows_table(ds, rows)
    if twin is not None:
        info["images"] = {"name": twin.name, "fingerprint": twin.fingerprint, "path": str(twin.root.resolve())}
    return Embeddings(rows=table, models=models, tensors=tensors, dataset=ds.ref(), split=split, info=info, triplets=ds.triplets_of(rows, split),
                      images=image_embs, image_row=image_row)
