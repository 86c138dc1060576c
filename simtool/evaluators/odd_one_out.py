"""``evaluate --type odd-one-out``: context / category / object odd-one-out accuracy at every layer.

Protocol of Aubret et al. (ICDL 2024), see :mod:`simtool.metrics.odd_one_out`. Each layer also
gets representation statistics (dimension, sparsity, collapse, effective rank). The same triplets
are drawn for every layer and model: they depend only on the labels and ``seed``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
from pydantic import Field

from simtool.errors import UserError
from simtool.evaluators._registry import Evaluator, register_evaluator, select_layers
from simtool.formats.results import attach_sample
from simtool.metrics.odd_one_out import LEVELS, odd_one_out_accuracy
from simtool.metrics.representation import collapse, effective_rank, sparsity
from simtool.specs.base import Seed, Spec

ROLES = {"dim": "count", "sparsity": "statistic", "collapse": "statistic", "effective_rank": "statistic"}


class OddOneOutOptions(Spec):
    type: Literal["odd-one-out"] = "odd-one-out"
    rooms: Optional[str] = Field(None, description="semantic | random | a room JSON file; default: the rooms each model trained with")
    repeats: int = Field(10, ge=1, le=1000, description="triplets drawn per anchor and level")
    seed: Seed = 0
    exclude_same_object: bool = Field(False, description="context/category 'same' items never come from the anchor's own object")


def _rooms_tag(which: str) -> str:
    return which if "/" not in which and not which.endswith(".json") else Path(which).stem


@register_evaluator("odd-one-out", OddOneOutOptions, roles=ROLES)
class OddOneOut(Evaluator):
    def _which(self, options, emb, model: dict) -> str:
        if options.rooms:
            return options.rooms
        trained = (model.get("context") or {}).get("rooms")
        stored = emb.room_assignments
        if trained in stored or (trained and Path(trained).is_file()):
            return trained
        if stored:
            return stored[0]
        raise UserError("These embeddings carry no room (context) labels; pass --rooms FILE, or labels with a context column.")

    def tag(self, options, emb) -> str:
        used = {_rooms_tag(self._which(options, emb, m)) for m in emb.models}
        tag = used.pop() if len(used) == 1 else "trained"
        return tag + ("-exclude-same-object" if options.exclude_same_object else "")

    def evaluate(self, emb, options, layers=None) -> list[dict]:
        for needed in ("category", "object"):
            if not emb.has(needed):
                raise UserError(f"Odd-one-out needs a {needed!r} label for every embedding; {emb.labels_held()}.")
        category_all = emb.column("category").astype(np.int64)
        obj_all = emb.column("object")
        _, obj_all = np.unique(obj_all.astype(str), return_inverse=True)
        obj_all = obj_all.reshape(-1)
        records = []
        for model in emb.models:
            which = self._which(options, emb, model)
            room = emb.rooms(which)
            keep = room >= 0
            room, category, obj = room[keep], category_all[keep], obj_all[keep]
            keep_t = torch.from_numpy(keep)
            condition = f"rooms={_rooms_tag(which)}" + (" exclude-same-object" if options.exclude_same_object else "")
            for layer in select_layers(model, layers, emb.models):
                x = emb.tensor(model["name"], layer)[keep_t]
                for r in range(x.shape[1]):
                    e = x[:, r]
                    base = dict(run=model["name"], method=model.get("method"), preset=model.get("preset"), seed=model.get("seed"),
                                repeat=r, layer=layer, condition=condition, dataset=emb.dataset.get("fingerprint"))
                    stats = {"dim": float(e.shape[1]), "sparsity": sparsity(e), "collapse": collapse(e, seed=options.seed), "effective_rank": effective_rank(e)}
                    for metric, value in stats.items():
                        records.append(self.record(**base, metric=metric, level=None, value=value, n=int(e.shape[0])))
                    for level in LEVELS:
                        res = odd_one_out_accuracy(e, room, category, obj, level, repeats=options.repeats, seed=options.seed,
                                                   exclude_same_object=options.exclude_same_object, per_anchor=True)
                        rec = self.record(**base, metric="accuracy", level=level, value=res["accuracy"], n=res["n_triplets"], se=res["stderr"], chance=1 / 3,
                                          note=f"anchors={res['n_anchors']} skipped={res['skipped']}")
                        if res["n_anchors"]:  # per-anchor accuracies, for compare's bootstrap intervals
                            attach_sample(rec, res["correct_per_anchor"] / options.repeats, "anchor", denominator=options.repeats)
                        records.append(rec)
        return records

    def tables(self, records):
        out = []
        for run in dict.fromkeys(r["run"] for r in records):
            mine = [r for r in records if r["run"] == run]
            for rep in dict.fromkeys(r["repeat"] for r in mine):
                sel = [r for r in mine if r["repeat"] == rep]
                cond = sel[0]["condition"]
                header = ["layer", "dim", *LEVELS, "sparsity", "collapse"]
                rows = []
                for layer in dict.fromkeys(r["layer"] for r in sel):
                    cell = {(r["metric"], r["level"]): r["value"] for r in sel if r["layer"] == layer}
                    rows.append([layer, f"{cell[('dim', None)]:.0f}", *(_fmt(cell.get(("accuracy", lv))) for lv in LEVELS),
                                 _fmt(cell.get(("sparsity", None)), 2), _fmt(cell.get(("collapse", None)), 2)])
                n = next((r["n"] for r in sel if r["metric"] == "dim"), 0)
                rep_s = f", repetition {rep}" if len({r['repeat'] for r in mine}) > 1 else ""
                out.append((f"{run}{rep_s} — odd-one-out accuracy ({cond}, {n} items)", header, rows))
        return out


def _fmt(v, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"
