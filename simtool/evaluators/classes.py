"""``evaluate --type classes``: class retrieval and clustering metrics at every layer.

For every model, layer and repetition: P@1, Recall@K for each K of ``k``, R-Precision and MAP@R
with exact nearest neighbours (:mod:`simtool.metrics.retrieval`; the query is never its own
neighbour, classes with one item are left out and counted), and NMI and AMI of seeded k-means with
as many clusters as classes (:mod:`simtool.metrics.clustering`). Retrieval records carry every
query's value (compact samples in the results file) for the bootstrap intervals of ``compare``.

The class of an item is the rows' ``class`` column (a ``classes`` dataset, or a labels file with a
``class`` column); ``column`` names another (e.g. ``category`` of a toy world).
"""

from __future__ import annotations

import math
from typing import Literal, Optional

import numpy as np
import torch
from pydantic import Field, field_validator

from simtool.errors import UserError
from simtool.evaluators._registry import Evaluator, register_evaluator, select_layers
from simtool.formats.results import attach_sample
from simtool.metrics.clustering import ami, kmeans, nmi
from simtool.metrics.retrieval import recall_name, retrieval_metrics
from simtool.specs.base import Seed, Spec

METRIC_NAMES = {"precision_at_1": "P@1", "r_precision": "R-Precision", "map_at_r": "MAP@R"}


def metric_name(key: str) -> str:
    """Record metric name of a :func:`retrieval_metrics` key: P@1, Recall@K, R-Precision, MAP@R."""
    if key.startswith("recall_at_"):
        return "Recall@" + key[len("recall_at_"):]
    return METRIC_NAMES[key]


class ClassesOptions(Spec):
    type: Literal["classes"] = "classes"
    k: list[int] = Field([1, 2, 4, 8], min_length=1, description="the K of Recall@K (a list, or comma-separated)")
    distance: Literal["cosine", "euclidean"] = Field("cosine", description="similarity of the neighbour search and of k-means (cosine: on L2-normalised rows)")
    clustering: bool = Field(True, description="also run k-means for NMI and AMI")
    kmeans_iters: int = Field(20, ge=1, le=1000, description="most k-means iterations")
    seed: Seed = Field(0, description="seed of the k-means initialisation")
    column: Optional[str] = Field(None, description="label column to use as class (default: class, else category)")

    @field_validator("k", mode="before")
    @classmethod
    def _k_list(cls, v):
        if isinstance(v, int):
            return [v]
        if isinstance(v, str):
            try:
                return [int(x) for x in v.replace("[", "").replace("]", "").split(",") if x.strip()]
            except ValueError:
                raise ValueError("k must be a list of integers, e.g. 1,2,4,8") from None
        return v

    @field_validator("k")
    @classmethod
    def _k_positive(cls, v):
        if any(x < 1 for x in v):
            raise ValueError("every K of Recall@K must be at least 1")
        return sorted(set(v))


def class_column(emb, column: str | None) -> str:
    if column:
        if not emb.has(column):
            raise UserError(f"These embeddings have no label {column!r}; {emb.labels_held()}.")
        return column
    for name in ("class", "category"):
        if emb.has(name):
            return name
    raise UserError("Class retrieval needs a 'class' label for every embedding; "
                    f"{emb.labels_held()} (pass --set column=NAME to use another).")


@register_evaluator("classes", ClassesOptions)
class Classes(Evaluator):
    def tag(self, options, emb) -> str:
        col = class_column(emb, options.column)
        return "default" if col == "class" else col

    def _device(self):
        from simtool.engine.device import resolve_device

        device = resolve_device(self.device or "auto")
        return device if device.type == "cuda" else torch.device("cpu")  # MPS lacks some int64 ops: CPU there

    def evaluate(self, emb, options, layers=None) -> list[dict]:
        col = class_column(emb, options.column)
        _, labels = np.unique(emb.column(col).astype(str), return_inverse=True)
        labels = labels.reshape(-1)
        if len(labels) < 2:
            raise UserError("Class retrieval needs at least two embeddings.")
        device = self._device()
        condition = None if col == "class" else f"labels={col}"
        n_classes = int(labels.max()) + 1
        records = []
        for model in emb.models:
            for layer in select_layers(model, layers, emb.models):
                x = emb.tensor(model["name"], layer)
                for r in range(x.shape[1]):
                    e = x[:, r]
                    base = dict(run=model["name"], method=model.get("method"), preset=model.get("preset"), seed=model.get("seed"),
                                repeat=r, layer=layer, condition=condition, dataset=emb.dataset.get("fingerprint"))
                    res = retrieval_metrics(e, labels, options.k, options.distance, device)
                    note = f"queries={res['n_queries']} items={res['n_items']} classes={res['n_classes']} singleton_classes={res['singleton_classes']}"
                    keys = ["precision_at_1", *(recall_name(v) for v in options.k), "r_precision", "map_at_r"]
                    for key in keys:
                        vals = res[key]
                        nq = len(vals)
                        value = float(vals.mean()) if nq else None
                        se = float(vals.std(ddof=1) / math.sqrt(nq)) if nq > 1 else None
                        rec = self.record(**base, metric=metric_name(key), level=None, value=value, n=nq, se=se, note=note)
                        if nq:
                            attach_sample(rec, vals, "query", denominator=1 if vals.dtype == bool else None)
                        records.append(rec)
                    if options.clustering:
                        unit = torch.nn.functional.normalize(e.float(), dim=1) if options.distance == "cosine" else e
                        assign, iters = kmeans(unit, n_classes, seed=options.seed, max_iter=options.kmeans_iters, device=device)
                        cnote = f"k-means: {n_classes} clusters, {iters} iterations, seed {options.seed}"
                        records.append(self.record(**base, metric="NMI", level=None, value=nmi(labels, assign), n=len(labels), note=cnote))
                        records.append(self.record(**base, metric="AMI", level=None, value=ami(labels, assign), n=len(labels), note=cnote))
        return records

    def tables(self, records):
        out = []
        for run in dict.fromkeys(r["run"] for r in records):
            mine = [r for r in records if r["run"] == run]
            reps = list(dict.fromkeys(r["repeat"] for r in mine))
            for rep in reps:
                sel = [r for r in mine if r["repeat"] == rep]
                metrics = list(dict.fromkeys(r["metric"] for r in sel))
                rows = []
                for layer in dict.fromkeys(r["layer"] for r in sel):
                    cell = {r["metric"]: r["value"] for r in sel if r["layer"] == layer}
                    rows.append([layer, *("–" if cell.get(m) is None else f"{cell[m]:.3f}" for m in metrics)])
                note = next((r["note"] for r in sel if r["metric"] == "P@1"), "") or ""
                info = dict(part.split("=", 1) for part in note.split() if "=" in part)
                rep_s = f", repetition {rep}" if len(reps) > 1 else ""
                cond = sel[0].get("condition")
                what = f"{info.get('queries', '?')} queries, {info.get('classes', '?')} classes, {info.get('singleton_classes', '0')} with one item left out"
                out.append((f"{run}{rep_s} — class retrieval ({cond + ', ' if cond else ''}{what})", ["layer", *metrics], rows))
        return out
