"""Result records: what ``evaluate`` writes and ``compare`` reads.

A results file is JSON::

    {"kind": "results", "format_version": 2, "simtool": "...", "type": "odd-one-out",
     "target": "...", "spec": {...evaluate spec...}, "dataset": {...},
     "models": {"<run name>": {run, method, preset, seed, spec, spec_hash, finished, ...}},
     "records": [record, ...]}

Records are long format, one per (model, repetition, layer, metric, level):

============  ==============================================================================
field         meaning
============  ==============================================================================
target        what was evaluated (a run directory, an embeddings file, an array)
run           the model's name in the target (a key of ``models``)
method        the training method (``null`` for foreign arrays)
preset        the preset it was trained from (``null`` when none)
seed          the training seed
repeat        repetition index within the model (0 for a single image model)
type          evaluation type (``odd-one-out``, ...)
layer         the layer
metric        e.g. ``accuracy``, ``sparsity``
level         e.g. ``context``; ``null`` for metrics without levels
condition     evaluator settings that change the question, e.g. ``rooms=semantic``
value         the figure (``null`` when it could not be computed)
n             how many items / triplets it is computed over
se            its standard error (``null`` when unknown)
dataset       the content fingerprint of the dataset
note          anything else worth a look (e.g. how many anchors were skipped)
============  ==============================================================================
"""

from __future__ import annotations

import math
from pathlib import Path

from simtool import __version__
from simtool.errors import UserError
from simtool.io import atomic_write_json, read_json

FORMAT_VERSION = 2
KIND = "results"
FIELDS = ("target", "run", "method", "preset", "seed", "repeat", "type", "layer", "metric", "level",
          "condition", "value", "n", "se", "dataset", "note")


def _clean(x):
    """NaN and infinities become null: JSON has none."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def make_record(**fields) -> dict:
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown record field(s): {', '.join(sorted(unknown))}")
    return _clean({k: fields.get(k) for k in FIELDS})


def results_doc(type_: str, target: str, spec: dict, dataset: dict, models: dict, records: list[dict]) -> dict:
    return _clean({"kind": KIND, "format_version": FORMAT_VERSION, "simtool": __version__, "type": type_,
                   "target": target, "spec": spec, "dataset": dataset, "models": models, "records": records})


def write_results(path: str | Path, doc: dict) -> Path:
    path = Path(path)
    atomic_write_json(path, doc)
    return path


def read_results(path: str | Path) -> dict:
    """Read and validate a results file; one sentence for anything that is not one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"The results file {path} does not exist; write one with simtool evaluate.")
    try:
        doc = read_json(path)
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{path} is not valid JSON (damaged?); evaluate again to rewrite it.") from None
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise UserError(f"{path} is not a simtool results file; pass files written by simtool evaluate.")
    if doc.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path} is a results file of format version {doc.get('format_version', 1)}; this simtool reads version {FORMAT_VERSION}: evaluate again to rewrite it.")
    records = doc.get("records")
    if not isinstance(records, list) or any(not isinstance(r, dict) or "value" not in r for r in records):
        raise UserError(f"{path} is damaged (its records are malformed); evaluate again to rewrite it.")
    return doc
