"""``evaluate --type triplets``: the fraction of correct labelled test triplets (FCT).

Definitions of Dondera, "Towards Learning Image Similarity from General Triplet Labels" (CVPR 2024
workshops), :mod:`simtool.metrics.triplets`: a **directed** triplet ``(a, closer, farther)`` is
correct when ``d(a, closer) < d(a, farther)``; an **odd-one-out** triplet ``(pair, pair, odd)``
when the labelled pair is the closest of the three pairs. Ties are wrong. Distances are Euclidean
(``distance: cosine`` uses ``1 - cos``).

The triplets come with the embeddings: an embeddings file of a ``triplets`` dataset carries its
labelled triplets as row numbers (``save-embeddings``), a run is embedded in memory with them, and a
plain ``.npy``/``.npz`` array takes them from ``--labels FILE``: a CSV or parquet file with one row per
triplet and the columns ``a``, ``b``, ``c`` (0-based row numbers into the array: anchor or pair
member, closer or pair member, farther or odd one), ``kind`` (``directed`` | ``odd-one-out``; or
give ``--set kind=...`` for every row) and optionally ``split`` (without it every row is a test
triplet). The array is ``(N, D)``, or ``(N, R, D)`` for R repetitions.

Every model is scored per repetition (R teacher runs one by one: ``accuracy``, one record per
repetition, so ``compare`` shows their mean ± sd) and, when R > 1, as an ensemble by the mean of the
repetitions' cosine similarities (``ensemble_accuracy``; ``--set ensemble=distance``: by the mean
Euclidean distance, the losses' teacher signal). Records have ``level`` = the triplet kind and carry
every triplet's correctness (0/1) for ``compare``'s bootstrap intervals. Which triplets:
``triplet_split`` (default: the embeddings' split, ``test`` when they cover all splits).

**Image models of items with several images** (THINGS concepts, IHSJC classes, the toy world's
objects) are scored on individual images, as the original: every item triplet is sampled K times
(``samples``; default the model's ``samples_per_triplet``: the paper's 2 for THINGS, 3 for IHSJC),
each member shown by one of its item's images at random (seeded by ``sample_seed``, the same draw
for every model and layer; :func:`~simtool.metrics.triplets.sample_image_triplets`), and every
sampled image triplet is one unit of the record (condition ``images=sample K=...``).
``images: mean`` scores the items' renormalised mean embeddings instead (condition ``images=mean``).

**Teachers** (index models) have a learned row only for the items they trained on: in the paper's
staged layout the test items are never seen, so scoring test triplets on teachers is one sentence,
not a figure at chance (their validation accuracy is in the run's ``metrics.jsonl``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
from pydantic import Field

from simtool.errors import UserError
from simtool.evaluators._registry import Evaluator, register_evaluator, select_layers
from simtool.formats.results import attach_sample
from simtool.formats.triplets import TRIPLET_KINDS
from simtool.metrics.triplets import correct_from_distances, sample_image_triplets, triplet_distances
from simtool.specs.base import Seed, Spec

KINDS = TRIPLET_KINDS


class TripletsOptions(Spec):
    type: Literal["triplets"] = "triplets"
    distance: Literal["euclidean", "cosine"] = Field("euclidean", description="distance of one repetition's embeddings")
    ensemble: Literal["similarity", "distance"] = Field("similarity", description="R repetitions together by their mean cosine similarity "
                                                                                  "or mean Euclidean distance")
    triplet_split: Optional[Literal["train", "val", "test", "all"]] = Field(None, description="triplets of this split (default: the embeddings' split; "
                                                                                              "test when they hold all)")
    kind: Optional[Literal["directed", "odd-one-out"]] = Field(None, description="kind of every triplet of a --labels file without a kind column")
    images: Literal["sample", "mean"] = Field("sample", description="image models of items with several images: score individual images, "
                                                                   "K image triplets sampled per item triplet (the original's), or the items' "
                                                                   "renormalised mean embeddings")
    samples: Optional[int] = Field(None, ge=1, le=1000, description="K image triplets per item triplet (default: the model's samples_per_triplet, "
                                                                    "the paper's 2 THINGS, 3 IHSJC; else 1)")
    sample_seed: Seed = Field(0, description="seed of the image samples (the same for every model and layer)")


def _split(options, emb) -> str:
    if options.triplet_split:
        return options.triplet_split
    return emb.split if emb.split in ("train", "val", "test") else "test"


def read_triplet_labels(path: str | Path, n: int, kind: str | None):
    """The triplets of a ``--labels`` file for a plain array of ``n`` rows (see the module docstring)."""
    from simtool.formats.embeddings import read_labels_table
    from simtool.formats.triplets import Triplets

    path = Path(path)
    table = read_labels_table(path, "for --type triplets pass a CSV or parquet file with columns a, b, c (row numbers) and kind")
    cols = {c.lower(): c for c in table.column_names}
    missing = [c for c in ("a", "b", "c") if c not in cols]
    if missing:
        raise UserError(f"The triplets file {path} lacks the column(s) {', '.join(missing)}; "
                        f"it needs a, b, c (0-based row numbers of the array) and kind (it has: {', '.join(table.column_names)}).")
    try:
        index = np.stack([np.asarray(table.column(cols[c]).to_numpy(zero_copy_only=False), dtype=np.int64) for c in ("a", "b", "c")], 1)
    except (ValueError, TypeError):
        raise UserError(f"The columns a, b, c of {path} must hold integer row numbers.") from None
    if len(index) and (index.min() < 0 or index.max() >= n):
        raise UserError(f"The triplets file {path} names row {int(index.max()) if index.max() >= n else int(index.min())}, "
                        f"outside the array's rows 0..{n - 1}.")
    if "kind" in cols:
        kinds = table.column(cols["kind"]).to_numpy(zero_copy_only=False).astype(str)
        bad = sorted(set(kinds.tolist()) - set(KINDS))
        if bad:
            raise UserError(f"The kind column of {path} holds {bad[0]!r}; use directed or odd-one-out.")
    elif kind:
        kinds = np.full(len(index), kind)
    else:
        raise UserError(f"The triplets file {path} has no kind column; add one (directed | odd-one-out) or pass --set kind=directed|odd-one-out.")
    split = table.column(cols["split"]).to_numpy(zero_copy_only=False).astype(str) if "split" in cols else np.full(len(index), "test")
    return Triplets(index, kinds, split)


def read_triplet_array(path, labels, options):
    """A plain array target of ``--type triplets``: ``.npy`` (N, D) or (N, R, D), or ``.npz`` with
    one per layer, and its triplets from ``labels``."""
    import pyarrow as pa

    from simtool.formats.embeddings import Embeddings, load_arrays

    path = Path(path)
    tensors, n = load_arrays(path, labels, "for --type triplets a CSV or parquet file with columns a, b, c (row numbers) and kind", repetitions=True)
    layers = [k.split("/", 1)[1] for k in tensors]
    triplets = read_triplet_labels(labels, n, options.kind)
    rows = pa.table({"id": pa.array([str(i) for i in range(n)]), "split": pa.array(["test"] * n)})
    model = {"name": path.stem, "run": str(path), "method": None, "preset": None, "seed": None,
             "spec": {}, "layers": list(layers), "finished": True, "context": {}}
    return Embeddings(rows=rows, models=[model], tensors=tensors, dataset={"name": Path(labels).stem, "fingerprint": "", "kind": "labels"},
                      split="all", info={}, path=path, triplets=triplets)


IMAGE_SAMPLES = 912  # the stream tag of the image samples (with the option sample_seed)


def check_trained_items(emb, model: dict, trip, which: str) -> None:
    """A teacher (an index model) has a learned row only for the items it trained on (its card's
    ``trained_items``: the item splits of an item or class layout); scoring triplets on other items
    would score its random initialisation, so that is one sentence instead of a figure near chance."""
    trained = (model.get("context") or {}).get("trained_items")
    if not trained or not emb.has("split") or not len(trip):
        return
    item_split = emb.column("split").astype(str)
    outside = ~np.isin(item_split[trip.index], trained).all(1)
    if outside.any():
        raise UserError(f"{model['name']} holds teachers that learned only the items of the {'/'.join(trained)} split(s); "
                        f"{int(outside.sum())} of these {len(trip)} {which!r} triplets name items they never saw, whose rows are untrained. "
                        "Their validation accuracy is in the run's metrics.jsonl (val/accuracy); to score held-out items, score a student "
                        "trained from them (or evaluate the teachers with --set triplet_split=train).")


@register_evaluator("triplets", TripletsOptions, array_reader=read_triplet_array)
class TripletsEvaluator(Evaluator):

    def tag(self, options, emb) -> str:
        tag = _split(options, emb)
        if options.ensemble != "similarity":
            tag += "-ensemble-" + options.ensemble
        if emb.images and options.images == "mean":
            tag += "-images-mean"
        return tag + ("-cosine" if options.distance == "cosine" else "")

    def evaluate(self, emb, options, layers=None) -> list[dict]:
        trip = getattr(emb, "triplets", None)
        if trip is None:
            raise UserError("These embeddings carry no labelled triplets: export a triplets dataset with simtool save-embeddings, "
                            "or pass a plain array with --labels FILE (columns a, b, c, kind).")
        which = _split(options, emb)
        if which != "all":
            trip = trip.select(trip.split == which)
        if len(trip) == 0:
            have = ", ".join(sorted(set(emb.triplets.split.tolist()))) or "none"
            raise UserError(f"These embeddings carry no {which!r} triplets (they carry: {have}); "
                            "pass --set triplet_split=... or export the split that holds them.")
        condition = (f"triplets={which}" + (f" ensemble={options.ensemble}" if options.ensemble != "similarity" else "")
                     + (" cosine" if options.distance == "cosine" else ""))
        records = []
        for model in emb.models:
            reps = model.get("repetitions") or []
            check_trained_items(emb, model, trip, which)
            for layer in select_layers(model, layers, emb.models):
                x = emb.tensor(model["name"], layer)
                per_image = emb.images.get(f"{model['name']}/{layer}") if options.images == "sample" else None
                k_samples = int(options.samples or (model.get("context") or {}).get("samples_per_triplet") or 1)
                cond = condition + (f" images=sample K={k_samples}" if per_image is not None else " images=mean" if emb.images else "")
                r = x.shape[1]
                for kind in [k for k in KINDS if (trip.kind == k).any()]:
                    idx = trip.index[trip.kind == kind]
                    if per_image is not None:  # K image triplets per item triplet, one random image of each item
                        images = sample_image_triplets(idx, emb.image_row, k_samples, np.random.default_rng([options.sample_seed, IMAGE_SAMPLES]))
                        x_scored, idx = per_image.unsqueeze(1), torch.from_numpy(images)
                    else:
                        x_scored, idx = x, torch.from_numpy(idx)
                    d = triplet_distances(x_scored, idx, options.distance, reduce="none")  # (T, R, 3)
                    correct = correct_from_distances(d, kind)  # (T, R)
                    base = dict(run=model["name"], method=model.get("method"), preset=model.get("preset"), layer=layer,
                                level=kind, condition=cond, dataset=emb.dataset.get("fingerprint"))
                    for i in range(r):
                        seed, repeat = (reps[i]["seed"], reps[i]["repeat"]) if i < len(reps) else (model.get("seed"), i)
                        records.append(self._record(base, "accuracy", correct[:, i], seed, repeat, f"repetition {i} of {r}"))
                    if r > 1:
                        if options.ensemble == "similarity":
                            dm = triplet_distances(x_scored, idx, "cosine", reduce="mean")
                        else:
                            dm = d.mean(1)
                        records.append(self._record(base, "ensemble_accuracy", correct_from_distances(dm, kind), model.get("seed"), 0,
                                                    f"{r} repetitions by their mean {'cosine similarity' if options.ensemble == 'similarity' else 'distance'}"))
        return records

    def _record(self, base: dict, metric: str, correct: torch.Tensor, seed, repeat, note: str) -> dict:
        c = correct.numpy().astype(np.float64)
        n = len(c)
        p = float(c.mean()) if n else None
        se = math.sqrt(p * (1 - p) / n) if n else None
        chance = 0.5 if base.get("level") == "directed" else 1 / 3
        rec = self.record(**base, metric=metric, seed=seed, repeat=repeat, value=p, n=n, se=se, note=note, chance=chance)
        if n:
            attach_sample(rec, c, "triplet", denominator=1)
        return rec

    def tables(self, records):
        out = []
        for run in dict.fromkeys(r["run"] for r in records):
            mine = [r for r in records if r["run"] == run]
            rows = []
            for layer in dict.fromkeys(r["layer"] for r in mine):
                for kind in dict.fromkeys(r["level"] for r in mine if r["layer"] == layer):
                    sel = [r for r in mine if r["layer"] == layer and r["level"] == kind]
                    per = [r["value"] for r in sel if r["metric"] == "accuracy" and r["value"] is not None]
                    ens = next((r["value"] for r in sel if r["metric"] == "ensemble_accuracy"), None)
                    n = sel[0]["n"]
                    if len(per) > 1:
                        one = f"{np.mean(per):.4f} ± {np.std(per, ddof=1):.4f} ({len(per)})"
                    else:
                        one = f"{per[0]:.4f} ± {sel[0]['se']:.4f} (se)" if per and sel[0]["se"] is not None else "–"
                    rows.append([layer, kind, one, "–" if ens is None else f"{ens:.4f}", str(n)])
            cond = mine[0].get("condition") or ""
            out.append((f"{run} — fraction of correct triplets ({cond})", ["layer", "kind", "per repetition (mean ± sd, n)", "ensemble", "triplets"], rows))
        return out
