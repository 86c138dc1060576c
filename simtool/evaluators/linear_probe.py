"""``evaluate --type linear-probe``: a linear classifier on frozen embeddings, per label level.

For every model, layer, repetition and level (``context``: the room under a room assignment,
``category``, ``object``, ``class``, or any label column), a multinomial logistic regression with an
L2 penalty (:func:`simtool.metrics.probes.logistic_fit`, full-batch L-BFGS on the cached features)
is fitted on the embeddings of the ``train`` rows and scored on the ``test`` rows: top-1 accuracy
with its binomial standard error, every test item's correctness attached for ``compare``'s
bootstrap intervals. ``solver: ridge`` fits the closed-form least-squares readout of one-hot
targets instead (:func:`simtool.metrics.probes.ridge_fit`).

* **Features**: every column standardised with the train rows' mean and sd (``standardize``), so
  one grid of penalties serves every layer.
* **The penalty** ``l2`` (objective ``mean CE + l2/2 |W|^2``; scikit-learn's ``C = 1 / (l2 n)``):
  given, or chosen on the ``val`` rows among ``l2_grid`` (best validation accuracy; ties to the
  stronger penalty), fitted from the strongest to the weakest with warm starts. Without ``val``
  rows, a seeded ``val_fraction`` of the train rows serves for the choice and the probe is then
  refitted on all train rows. The chosen value is in every record's note (``l2=...``).
* **Condition**: the solver (and a given ``l2``), and the room assignment when the context level
  is probed (``solver=lbfgs rooms=semantic``), the same for every level of a model.
* **Which rows**: a level's rows with a label (a room of ``-1`` has none); test rows of a class no
  train row has cannot be right and are left out and counted. A level without test rows then (a
  video dataset split by object has no test object in the train split, so its ``object`` level has
  none) is left out, or, when ``levels`` names it, gets a record without a value and a note why.

Embeddings need train and test rows: ``save-embeddings --split all`` (a run target:
``evaluate RUN --split all``).

Differences from the original's offline probe (ICDL 2024): there a fresh linear layer was trained for
30 epochs with SGD on augmented crops passed through the frozen backbone; here the features of the
unaugmented evaluation images are computed once and the probe is fitted to convergence on them, with a
penalty chosen on validation rows, so it takes seconds on a CPU and has no learning-rate schedule.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
from pydantic import Field, field_validator

from simtool.errors import UserError
from simtool.evaluators._registry import Evaluator, register_evaluator, select_layers
from simtool.formats.results import attach_sample
from simtool.metrics.probes import accuracy_and_se, linear_predict, logistic_fit, ridge_fit, standardize
from simtool.specs.base import Seed, Spec

LEVELS = ("context", "category", "object", "class")
L2_GRID = [10.0 ** -k for k in range(-1, 7)]  # 10 ... 1e-6


def _list_of(v, cast):
    if isinstance(v, (int, float, str)) and not isinstance(v, bool):
        v = str(v).replace("[", "").replace("]", "").split(",")
        return [cast(x.strip()) for x in v if str(x).strip()]
    return v


class ProbeLevels(Spec):
    """What the offline probes share: the levels, the rooms of the context level, the splits."""

    levels: Optional[list[str]] = Field(None, description="label levels (context, category, object, class, or a label column; "
                                                          "default: every one the embeddings have)")
    rooms: Optional[str] = Field(None, description="room assignment of the context level: semantic | random | a room JSON file "
                                                   "(default: the rooms the model trained with, else the first stored)")
    train_split: str = Field("train", description="rows the probe learns from (the memory of kNN)")
    test_split: str = Field("test", description="rows it is scored on (the queries of kNN)")

    @field_validator("levels", mode="before")
    @classmethod
    def _levels(cls, v):
        return _list_of(v, str) if v is not None else v


class LinearProbeOptions(ProbeLevels):
    type: Literal["linear-probe"] = "linear-probe"
    solver: Literal["lbfgs", "ridge"] = Field("lbfgs", description="lbfgs: multinomial logistic regression; ridge: closed-form least squares")
    l2: Optional[float] = Field(None, ge=0, description="penalty strength (default: chosen on the validation rows among l2_grid)")
    l2_grid: list[float] = Field(L2_GRID, min_length=1, description="penalties tried on the validation rows")
    standardize: bool = Field(True, description="standardise every feature with the train rows' mean and sd")
    max_iter: int = Field(100, ge=1, le=100000, description="most L-BFGS iterations per fit")
    tol: float = Field(1e-4, gt=0, description="L-BFGS stops when every gradient entry is at most this")
    val_split: str = Field("val", description="rows the penalty is chosen on")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="without val rows: this fraction of the train rows chooses the penalty")
    seed: Seed = Field(0, description="seed of the validation rows taken from the train rows")

    @field_validator("l2_grid", mode="before")
    @classmethod
    def _grid(cls, v):
        return _list_of(v, float)

    @field_validator("l2_grid")
    @classmethod
    def _grid_positive(cls, v):
        if any(x < 0 for x in v):
            raise ValueError("every penalty of l2_grid must be >= 0")
        return sorted(set(v), reverse=True)


# -- levels and splits (shared with the kNN evaluator) -----------------------------------------------


def rooms_of(emb, options, model: dict) -> str | None:
    """The room assignment of the context level for ``model``, chosen as odd-one-out chooses it
    (``rooms``, else the rooms it trained with, else the first stored); None: the embeddings have none."""
    from simtool.evaluators.odd_one_out import OddOneOut

    try:
        return OddOneOut("cpu")._which(options, emb, model)
    except UserError:
        return None


def available_levels(emb, options) -> list[str]:
    """The levels to probe: ``options.levels`` (checked), else every one of :data:`LEVELS` the embeddings have."""
    def has(level: str) -> bool:
        if level == "context":
            return bool(options.rooms) or bool(emb.room_assignments)
        return emb.has(level)

    if options.levels:
        for level in options.levels:
            if not has(level):
                what = "no room assignment (pass --rooms FILE)" if level == "context" else f"no column {level!r}"
                raise UserError(f"These embeddings have {what}; {emb.labels_held()}.")
        return list(dict.fromkeys(options.levels))
    levels = [lv for lv in LEVELS if has(lv)]
    if not levels:
        raise UserError("A probe needs labels (context, category, object or class) for the embeddings; "
                        f"these have only: {', '.join(emb.rows.column_names)} (pass --set levels=COLUMN).")
    return levels


def level_labels(emb, level: str, which_rooms: str | None) -> np.ndarray:
    """int64 (N,) label code of every row at ``level``; -1 = no label (rows without a room)."""
    if level == "context":
        return emb.rooms(which_rooms).astype(np.int64)
    values = emb.column(level)
    _, codes = np.unique(values.astype(str), return_inverse=True)
    return codes.reshape(-1).astype(np.int64)


def split_rows(emb, options) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows) of the embeddings; one sentence when either is missing."""
    split = emb.column("split").astype(str) if emb.has("split") else np.full(len(emb), "test")
    train, test = np.flatnonzero(split == options.train_split), np.flatnonzero(split == options.test_split)
    if not len(train) or not len(test):
        have = ", ".join(sorted(set(split.tolist()))) or "none"
        raise UserError(f"A probe learns from the {options.train_split!r} rows and is scored on the {options.test_split!r} rows, "
                        f"and these embeddings hold only: {have}; export them with save-embeddings --split all (a run: evaluate RUN --split all).")
    return train, test


def code_of(labels: np.ndarray, rows: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Codes 0..C-1 of the labels of ``rows``, all of which are among the sorted ``classes``."""
    return np.searchsorted(classes, labels[rows]).astype(np.int64)


class ProbeEvaluator(Evaluator):
    """The loop both probes share: model × layer × repetition × level → records; a subclass scores one case."""

    title = "probe"

    def condition(self, options) -> str:  # pragma: no cover - every probe says what it is
        raise NotImplementedError

    def score(self, x_train: torch.Tensor, y_train: np.ndarray, n_classes: int, x_test: torch.Tensor, options,
              x_val: torch.Tensor | None, y_val: np.ndarray | None) -> tuple[np.ndarray, str]:  # pragma: no cover
        """(predicted class code of every test row, a note on how)."""
        raise NotImplementedError

    def tag(self, options, emb) -> str:
        return "-".join(part.split("=", 1)[1] for part in self.condition(options).split())

    def evaluate(self, emb, options, layers=None) -> list[dict]:
        levels = available_levels(emb, options)
        train_all, test_all = split_rows(emb, options)
        val_all = np.flatnonzero(emb.column("split").astype(str) == getattr(options, "val_split", "")) if emb.has("split") else np.zeros(0, np.int64)
        records = []
        for model in emb.models:
            which = rooms_of(emb, options, model)
            cond = self.condition(options) + (f" rooms={Path(which).stem if which.endswith('.json') else which}" if "context" in levels and which else "")
            for level in levels:
                labels = level_labels(emb, level, which)
                tr, te, va = (r[labels[r] >= 0] for r in (train_all, test_all, val_all))
                classes = np.unique(labels[tr])
                te_keep, va_keep = np.isin(labels[te], classes), np.isin(labels[va], classes)
                te, va = te[te_keep], va[va_keep]
                dropped = int((~te_keep).sum())
                y_tr, y_te, y_va = (code_of(labels, r, classes) for r in (tr, te, va))
                if (len(classes) < 2 or not len(te)) and not options.levels:
                    continue  # e.g. objects of a dataset split by object: no test object is in the train rows
                for layer in select_layers(model, layers, emb.models):
                    x = emb.tensor(model["name"], layer)
                    for r in range(x.shape[1]):
                        base = dict(run=model["name"], method=model.get("method"), preset=model.get("preset"), seed=model.get("seed"), repeat=r,
                                    layer=layer, level=level, condition=cond, dataset=emb.dataset.get("fingerprint"))
                        what = f"train={len(tr)} test={len(te)} classes={len(classes)} test_left_out={dropped}"
                        if len(classes) < 2 or not len(te):
                            why = "fewer than two classes in the train rows" if len(classes) < 2 else "no test row of a class the train rows have"
                            records.append(self.record(**base, metric="accuracy", value=None, n=0, note=f"{what}; {why}"))
                            continue
                        e = x[:, r]
                        pred, how = self.score(e[tr], y_tr, len(classes), e[te], options, e[va] if len(va) else None, y_va if len(va) else None)
                        correct = (np.asarray(pred) == y_te).astype(np.float64)
                        p, se = accuracy_and_se(correct)
                        rec = self.record(**base, metric="accuracy", value=p, n=len(correct), se=se, note=f"{what} {how}".strip())
                        attach_sample(rec, correct, "query", denominator=1)
                        records.append(rec)
        return records

    def tables(self, records):
        out = []
        for run in dict.fromkeys(r["run"] for r in records):
            mine = [r for r in records if r["run"] == run and r["metric"] == "accuracy"]
            for rep in dict.fromkeys(r["repeat"] for r in mine):
                sel = [r for r in mine if r["repeat"] == rep]
                levels = list(dict.fromkeys(r["level"] for r in sel))
                rows = []
                for layer in dict.fromkeys(r["layer"] for r in sel):
                    cell = {r["level"]: r for r in sel if r["layer"] == layer}
                    rows.append([layer, *(_cell(cell.get(lv)) for lv in levels)])
                rep_s = f", repetition {rep}" if len({r['repeat'] for r in mine}) > 1 else ""
                cond = self.condition_of(sel)
                out.append((f"{run}{rep_s} — {self.title} top-1 accuracy ± se ({cond})", ["layer", *levels], rows))
        return out

    @staticmethod
    def condition_of(records: list[dict]) -> str:
        conds = list(dict.fromkeys(r.get("condition") or "" for r in records))
        return max(conds, key=len) if conds else ""


def _cell(rec: dict | None) -> str:
    if rec is None or rec.get("value") is None:
        return "–"
    return f"{rec['value']:.3f} ± {rec['se']:.3f}" if rec.get("se") is not None else f"{rec['value']:.3f}"


@register_evaluator("linear-probe", LinearProbeOptions)
class LinearProbe(ProbeEvaluator):
    title = "linear probe"

    def condition(self, options) -> str:
        return f"solver={options.solver}" + (f" l2={options.l2:g}" if options.l2 is not None else "")

    def score(self, x_train, y_train, n_classes, x_test, options, x_val, y_val):
        if options.standardize:
            parts = standardize(x_train, x_test, *([x_val] if x_val is not None else []))
            x_train, x_test = parts[0], parts[1]
            x_val = parts[2] if x_val is not None else None
        grid = [options.l2] if options.l2 is not None else list(options.l2_grid)
        carved = False
        fit_x, fit_y = x_train, y_train
        if len(grid) > 1 and x_val is None:  # no val rows: a seeded part of the train rows chooses the penalty
            perm = np.random.default_rng(options.seed).permutation(len(y_train))
            n_val = max(1, int(round(options.val_fraction * len(y_train))))
            vi, ti = np.sort(perm[:n_val]), np.sort(perm[n_val:])
            if len(np.unique(y_train[ti])) >= 2:
                x_val, y_val, fit_x, fit_y, carved = x_train[vi], y_train[vi], x_train[ti], y_train[ti], True
        best = None
        if options.solver == "ridge":
            fits = ridge_fit(fit_x, fit_y, n_classes, grid)
            for l2, (w, b) in zip(grid, fits):
                acc = float((linear_predict(x_val.double(), w, b).numpy() == y_val).mean()) if len(grid) > 1 else math.nan
                if best is None or acc > best[0]:
                    best = (acc, l2, (w, b))
            w, b = best[2] if not carved else ridge_fit(x_train, y_train, n_classes, [best[1]])[0]
            pred = linear_predict(x_test.double(), w, b).numpy()
            info = f"l2={best[1]:g}"
        else:
            prev = None
            for l2 in grid:
                fit = logistic_fit(fit_x, torch.from_numpy(fit_y), n_classes, l2, options.max_iter, options.tol, init=prev)
                prev = fit
                acc = float((linear_predict(x_val, fit.weight, fit.bias).numpy() == y_val).mean()) if len(grid) > 1 else math.nan
                if best is None or acc > best[0]:
                    best = (acc, l2, fit)
            fit = best[2]
            if carved:
                fit = logistic_fit(x_train, torch.from_numpy(y_train), n_classes, best[1], options.max_iter, options.tol, init=fit)
            pred = linear_predict(x_test, fit.weight, fit.bias).numpy()
            info = f"l2={best[1]:g} iterations={fit.iterations} converged={fit.converged}"
        if len(grid) > 1:
            info += f" chosen on {'a part of the train rows' if carved else 'the val rows'} (val accuracy {best[0]:.3f})"
        return pred, info
