"""``simtool evaluate``: odd-one-out accuracy per layer and level, plus representation statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from simtool import __version__
from simtool.embed import embed_rows, load_embeddings, load_run
from simtool.engine.device import resolve_device
from simtool.errors import NotAvailableYet, UserError
from simtool.io import atomic_write_json
from simtool.metrics.odd_one_out import LEVELS, odd_one_out_accuracy
from simtool.metrics.representation import collapse, effective_rank, sparsity
from simtool.specs.evaluate import EvaluateSpec


def _layer_results(emb: torch.Tensor, room: np.ndarray, category: np.ndarray, obj: np.ndarray, repeats: int, seed: int) -> dict:
    res = {
        "dim": int(emb.shape[1]),
        "sparsity": sparsity(emb),
        "collapse": collapse(emb, seed=seed),
        "effective_rank": effective_rank(emb),
    }
    for level in LEVELS:
        r = odd_one_out_accuracy(emb, room, category, obj, level, repeats=repeats, seed=seed)
        res[level] = {k: v for k, v in r.items() if k != "level"}
    return res


def _json_safe(x):
    """NaN (a level with no valid triplet) is written as null: JSON has no NaN."""
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return x


def _rooms_label(which: str) -> str:
    return which if which in ("semantic", "random") else Path(which).stem


def evaluate(spec: EvaluateSpec, console: Console | None = None) -> tuple[dict, Path]:
    if spec.type != "odd-one-out":
        raise NotAvailableYet(
            f"--type {spec.type} is not available yet: it arrives with the triplet-label route; use --type odd-one-out for now."
        )
    target = Path(spec.target)
    device = resolve_device(spec.device)
    models = []
    if target.is_dir():
        run = load_run(target, device, console)
        ds = run.dataset
        rows = ds.rows(spec.split)
        rooms_which = spec.rooms or run.spec.data.rooms
        sources = [(run.name, str(run.run_dir), run.spec.preset, run.spec.data.rooms, lambda r=run, rows=rows: embed_rows(r, rows, spec.layers, device, spec.batch_size))]
        default_out = target / f"eval-odd-one-out-{_rooms_label(rooms_which)}.json"
    elif target.is_file():
        ef = load_embeddings(target)
        ds, rows = ef.dataset, ef.rows
        sources = []
        for m in ef.models:
            layers = [lay for lay in m["layers"] if spec.layers is None or lay in spec.layers]
            sources.append((m["name"], m["run"], m.get("preset"), m.get("rooms", "semantic"), lambda m=m, layers=layers: {lay: ef.tensors[f"{m['name']}/{lay}"] for lay in layers}))
        rooms_which = spec.rooms
        default_out = target.with_name(target.name.removesuffix(".safetensors") + f".odd-one-out-{_rooms_label(spec.rooms or 'trained')}.json")
    else:
        raise UserError(f"The target {target} does not exist; pass a run directory or an embeddings .safetensors file.")
    if len(rows) == 0:
        raise UserError(f"The dataset has no {spec.split!r} rows to evaluate; choose another --split.")
    for name, run_path, preset, trained_rooms, get_embs in sources:
        which = rooms_which or trained_rooms
        room_of_category, room_names, room_source = ds.rooms(which)
        room = room_of_category[ds.category[rows]]
        keep = room >= 0
        embs = get_embs()
        layer_results = {}
        for layer, emb in embs.items():
            layer_results[layer] = _layer_results(emb[torch.from_numpy(keep)], room[keep], ds.category[rows][keep], ds.object[rows][keep], spec.repeats, spec.seed)
        models.append({"name": name, "run": run_path, "preset": preset, "trained_rooms": trained_rooms, "rooms": which, "rooms_file": room_source, "n_items": int(keep.sum()), "layers": layer_results})
    results = {"simtool": __version__, "kind": "evaluation", "type": spec.type, "dataset": str(ds.root), "split": spec.split, "spec": spec.to_dict(), "models": models}
    out = Path(spec.out) if spec.out else default_out
    results = _json_safe(results)
    atomic_write_json(out, results)
    return results, out
