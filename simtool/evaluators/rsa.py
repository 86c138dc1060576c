"""``evaluate --type rsa --reference FILE``: alignment of a model's embeddings with a reference
embedding of the same items, e.g. a human similarity embedding (VICE or SPoSE of THINGS, a teacher
fitted to human triplets).

For every model, layer and repetition, on the items whose ``id`` both have (only the rows of
``split`` when given, e.g. ``test``: the items a trained model has not seen; a seeded subsample of at
most ``max_items``, :func:`simtool.metrics.similarity.subsample`):

* ``rsa``: the Spearman correlation between the upper triangles of the two cosine-distance matrices
  (:func:`simtool.metrics.similarity.rsa`);
* ``cka``: linear CKA (:func:`simtool.metrics.similarity.linear_cka`);

each with a 95 % bootstrap interval over items (``bootstrap`` resamples, seeded; percentiles 2.5 and
97.5, in the record's note; the record's ``se`` is the sd of the resamples):
:func:`simtool.metrics.probes.rsa_cka_bootstrap`.

The reference (``--reference FILE`` or ``--set reference=FILE``) is

* an embeddings file (``save-embeddings``): its rows' ids; ``reference_model`` and
  ``reference_layer`` choose among several models and layers, ``reference_repeat`` a repetition;
* a ``.npy`` ``(N, D)`` array: its ids are the row numbers ``0 .. N-1`` (the published THINGS
  embeddings are in the order of the concepts' ids, as a triplets dataset built with ``--items
  item_names.tsv`` numbers its items);
* a ``.npz`` with an ``ids`` array (N,) and one ``(N, D)`` array (``reference_layer`` names it
  when there are several).

``evaluate --type triplets`` scores the same embeddings on human triplets directly.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, Optional

import numpy as np
from pydantic import Field

from simtool.errors import UserError
from simtool.evaluators._registry import Evaluator, register_evaluator, select_layers
from simtool.metrics.probes import rsa_cka_bootstrap
from simtool.metrics.similarity import subsample
from simtool.specs.base import Seed, Spec

ROLES = {"shared_items": "count"}


class RsaOptions(Spec):
    type: Literal["rsa"] = "rsa"
    reference: Optional[str] = Field(None, description="the reference embedding: an embeddings file, a .npy (N, D) array (ids = row numbers) "
                                                       "or a .npz with ids and one (N, D) array")
    reference_model: Optional[str] = Field(None, description="model of an embeddings-file reference (default: its only one)")
    reference_layer: Optional[str] = Field(None, description="layer of an embeddings-file reference, or array of an .npz (default: its only one)")
    reference_repeat: int = Field(0, ge=0, description="repetition of an embeddings-file reference")
    split: Optional[str] = Field(None, description="only the embeddings' rows of this split (e.g. test: items a model has not learned); default all")
    max_items: int = Field(1000, ge=3, description="most shared items (a seeded subsample)")
    bootstrap: int = Field(1000, ge=0, le=100000, description="bootstrap resamples of the items for the intervals (0: none)")
    seed: Seed = Field(0, description="seed of the subsample and the bootstrap")


def _ids_of_npz(path: Path, data, layer: str | None) -> tuple[np.ndarray, np.ndarray]:
    ids_key = next((k for k in ("ids", "id") if k in data.files), None)
    if ids_key is None:
        raise UserError(f"The reference {path} has no 'ids' array; save it with numpy.savez(FILE, ids=IDS, embedding=X).")
    arrays = [k for k in data.files if k != ids_key]
    if layer is not None and layer not in arrays:
        raise UserError(f"The reference {path} has no array {layer!r}; it has: {', '.join(arrays)}.")
    if layer is None and len(arrays) != 1:
        raise UserError(f"The reference {path} holds {len(arrays)} arrays ({', '.join(arrays)}); name one with --set reference_layer=NAME.")
    return np.asarray(data[ids_key]).astype(str), np.asarray(data[layer or arrays[0]])


def read_reference(options) -> tuple[np.ndarray, np.ndarray, str]:
    """(ids (N,), float64 (N, D) embedding, short name) of the reference."""
    if not options.reference:
        raise UserError("--type rsa compares with a reference embedding: pass it with --reference FILE (an embeddings file, or a .npy/.npz array).")
    path = Path(options.reference)
    if not path.is_file():
        raise UserError(f"The reference {path} does not exist; pass an embeddings file or a .npy/.npz array.")
    if path.suffix == ".safetensors":
        from simtool.formats.embeddings import read_embeddings

        ref = read_embeddings(path)
        names = [m["name"] for m in ref.models]
        name = options.reference_model or (names[0] if len(names) == 1 else None)
        if name not in names:
            raise UserError(f"The reference {path} holds the models {', '.join(names)}; name one with --set reference_model=NAME.")
        model = next(m for m in ref.models if m["name"] == name)
        layers = list(model.get("layers", []))
        layer = options.reference_layer or (layers[0] if len(layers) == 1 else None)
        if layer not in layers:
            raise UserError(f"The reference model {name} has the layers {', '.join(layers)}; name one with --set reference_layer=NAME.")
        x = ref.tensor(name, layer)
        if options.reference_repeat >= x.shape[1]:
            raise UserError(f"The reference {name}/{layer} has {x.shape[1]} repetition(s); reference_repeat must be below that.")
        return ref.ids, x[:, options.reference_repeat].double().numpy(), f"{path.name.split('.')[0]}:{name}/{layer}"
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise UserError(f"The reference {path} cannot be read as a NumPy array without pickle ({str(exc).splitlines()[0]}).") from None
    if isinstance(data, np.ndarray):
        ids, x = np.arange(len(data)).astype(str), data
    else:
        ids, x = _ids_of_npz(path, data, options.reference_layer)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.number) or len(ids) != len(x):
        raise UserError(f"The reference {path} must be a numeric (N, D) array with N ids; it is {x.shape} with {len(ids)} ids.")
    if not np.isfinite(x).all():
        raise UserError(f"The reference {path} holds NaN or infinite values; clean it first.")
    if len(set(ids.tolist())) != len(ids):
        raise UserError(f"The reference {path} repeats ids; every item needs one row.")
    return ids, x.astype(np.float64), path.stem


@register_evaluator("rsa", RsaOptions, roles=ROLES)
class Rsa(Evaluator):
    def tag(self, options, emb) -> str:
        return Path(options.reference or "reference").name.split(".")[0] + (f"-{options.split}" if options.split else "")

    def evaluate(self, emb, options, layers=None) -> list[dict]:
        ref_ids, ref_x, ref_name = read_reference(options)
        ids = emb.ids
        where = {v: i for i, v in enumerate(ref_ids.tolist())}
        rows = range(len(ids))
        if options.split:
            split = emb.column("split").astype(str) if emb.has("split") else np.full(len(ids), "test")
            rows = np.flatnonzero(split == options.split).tolist()
            if not rows:
                raise UserError(f"These embeddings have no {options.split!r} rows (they have: {', '.join(sorted(set(split.tolist())))}); pass another split.")
        mine = np.array([i for i in rows if ids[i] in where], dtype=np.int64)
        if len(mine) < 3:
            raise UserError(f"These embeddings and the reference share {len(mine)} item id(s) (of {len(ids)} and {len(ref_ids)}); "
                            "RSA needs at least 3 (are the ids the same kind, e.g. item ids of one triplets dataset?).")
        pick = subsample(len(mine), options.max_items, options.seed)
        mine = mine[pick]
        theirs = np.array([where[v] for v in ids[mine].tolist()], dtype=np.int64)
        y = ref_x[theirs]
        condition = f"reference={ref_name}" + (f" split={options.split}" if options.split else "")
        records = []
        for model in emb.models:
            for layer in select_layers(model, layers, emb.models):
                x = emb.tensor(model["name"], layer)
                for r in range(x.shape[1]):
                    res = rsa_cka_bootstrap(x[mine, r].double().numpy(), y, options.bootstrap, options.seed)
                    base = dict(run=model["name"], method=model.get("method"), preset=model.get("preset"), seed=model.get("seed"), repeat=r,
                                layer=layer, level=None, condition=condition, dataset=emb.dataset.get("fingerprint"))
                    for metric in ("rsa", "cka"):
                        boot = res[metric + "_boot"]
                        boot = boot[np.isfinite(boot)]
                        if len(boot) > 1:
                            lo, hi = np.percentile(boot, [2.5, 97.5])
                            se, note = float(np.std(boot, ddof=1)), f"95% interval [{lo:.4f}, {hi:.4f}] over items ({len(boot)} bootstrap resamples)"
                        else:
                            se, note = None, "no bootstrap"
                        value = res[metric] if math.isfinite(res[metric]) else None
                        records.append(self.record(**base, metric=metric, value=value, n=len(mine), se=se,
                                                   note=f"{note}; {len(mine)} of {len(ids)} items shared with {ref_name}"))
                    records.append(self.record(**base, metric="shared_items", value=float(len(mine)), n=len(mine)))
        return records

    def tables(self, records):
        out = []
        for run in dict.fromkeys(r["run"] for r in records):
            mine = [r for r in records if r["run"] == run]
            rows = []
            for layer in dict.fromkeys(r["layer"] for r in mine):
                for rep in dict.fromkeys(r["repeat"] for r in mine if r["layer"] == layer):
                    cell = {r["metric"]: r for r in mine if r["layer"] == layer and r["repeat"] == rep}
                    rows.append([layer, str(rep), *(_cell(cell.get(m)) for m in ("rsa", "cka")), f"{cell['shared_items']['value']:.0f}"])
            out.append((f"{run} — alignment with the reference ({mine[0].get('condition')})", ["layer", "repeat", "RSA [95% interval]", "CKA [95% interval]",
                                                                                                  "items"], rows))
        return out


def _cell(rec: dict | None) -> str:
    if rec is None or rec.get("value") is None:
        return "–"
    note = rec.get("note") or ""
    if "[" not in note:
        return f"{rec['value']:.3f}"
    lo, hi = (float(v) for v in note[note.index("[") + 1 : note.index("]")].split(","))
    return f"{rec['value']:.3f} [{lo:.3f}, {hi:.3f}]"
