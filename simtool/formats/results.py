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
role          ``score`` | ``statistic`` | ``count`` (see :data:`ROLES`; older files have none)
chance        the value of a score at chance (odd-one-out 1/3, directed triplets 1/2), or ``null``
============  ==============================================================================

Optional per-unit values (``"samples"``), for the bootstrap intervals of ``compare``: a record
that is a mean over units (odd-one-out: anchors; classes: queries) may carry the value of every
unit, compactly::

    "samples": [{"record": 12, "unit": "anchor", "n": 512, "encoding": "u8/10", "data": "<base64>"}, ...]

``record`` is the index of the record in ``records``; ``data`` is zlib-compressed, base64-encoded
little-endian values: ``bits`` (0/1 values, ``numpy.packbits``), ``u8/<d>``, ``u16/<d>``,
``u32/<d>`` (unsigned integers ``i``, value ``i / d``: exact for fractions with a fixed
denominator, e.g. correct triplets out of ``repeats``; ``u16/65535`` is the fixed-point form of
other values in [0, 1], within 8e-6) or ``f32``. Evaluators attach them with
:func:`attach_sample`; :func:`results_doc` moves them into the section and :func:`decode_sample`
reads one back.
"""

from __future__ import annotations

import base64
import math
import zlib
from pathlib import Path

import numpy as np

from simtool import __version__
from simtool.errors import UserError
from simtool.io import atomic_write_json, read_json

FORMAT_VERSION = 2
KIND = "results"
REQUIRED = ("run", "type", "layer", "metric", "value")  # what compare needs of every record
FIELDS = ("target", "run", "method", "preset", "seed", "repeat", "type", "layer", "metric", "level",
          "condition", "value", "n", "se", "dataset", "note", "role", "chance")
# What a record's figure is (its ``role``): a ``score`` answers the evaluation's question (compare
# takes differences of scores and draws them); a ``statistic`` describes a representation (e.g.
# sparsity); a ``count`` is an integer statistic (e.g. a dimension). Evaluators declare the roles of
# their metrics when they register.
ROLES = ("score", "statistic", "count")


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


SAMPLE = "sample"  # key of a record's per-unit values until results_doc moves them into "samples"
_INT_CODES = {"u8": "<u1", "u16": "<u2", "u32": "<u4"}  # little-endian unsigned


def _pack(raw: bytes) -> str:
    return base64.b64encode(zlib.compress(raw, 6)).decode("ascii")


def encode_sample(values, denominator: int | None = None) -> dict:
    """Compact form of the per-unit values ``values`` (1-D): see the module docstring.

    ``denominator``: every value is an integer multiple of ``1 / denominator`` (``1`` for 0/1
    values); without it, values in [0, 1] are stored in 16-bit fixed point, others as float32.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    n = int(len(v))
    if denominator is not None and int(denominator) == 1 and np.all((v == 0) | (v == 1)):
        return {"n": n, "encoding": "bits", "data": _pack(np.packbits(v.astype(bool)).tobytes())}
    if denominator is not None:
        den = int(denominator)
        ints = np.rint(v * den)
        if den < 1 or np.any(ints < 0) or np.any(np.abs(ints - v * den) > 1e-6 * max(1, den)):
            raise ValueError(f"values are not non-negative multiples of 1/{den}")
        code = "u8" if ints.max(initial=0) < 2**8 else "u16" if ints.max(initial=0) < 2**16 else "u32"
        return {"n": n, "encoding": f"{code}/{den}", "data": _pack(ints.astype(_INT_CODES[code]).tobytes())}
    if n and np.all((v >= 0) & (v <= 1)):
        return {"n": n, "encoding": "u16/65535", "data": _pack(np.rint(v * 65535).astype("<u2").tobytes())}
    return {"n": n, "encoding": "f32", "data": _pack(v.astype("<f4").tobytes())}


def decode_sample(entry: dict) -> np.ndarray:
    """float64 per-unit values of a sample entry (see :func:`encode_sample`)."""
    raw = zlib.decompress(base64.b64decode(entry["data"]))
    n, enc = int(entry["n"]), entry["encoding"]
    if enc == "bits":
        return np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=n).astype(np.float64)
    if enc == "f32":
        out = np.frombuffer(raw, dtype="<f4").astype(np.float64)
    else:
        code, den = enc.split("/")
        out = np.frombuffer(raw, dtype=_INT_CODES[code]).astype(np.float64) / float(den)
    if len(out) != n:
        raise ValueError(f"sample holds {len(out)} values, expected {n}")
    return out


def attach_sample(record: dict, values, unit: str, denominator: int | None = None) -> dict:
    """Attach per-unit values (``unit``: what one value is, e.g. ``anchor``, ``query``) to a record."""
    record[SAMPLE] = {"unit": unit, **encode_sample(values, denominator)}
    return record


def results_doc(type_: str, target: str, spec: dict, dataset: dict, models: dict, records: list[dict]) -> dict:
    """The results document; per-unit values attached to records go to its ``samples`` section."""
    samples = [{"record": i, **r[SAMPLE]} for i, r in enumerate(records) if r.get(SAMPLE)]
    plain = [{k: v for k, v in r.items() if k != SAMPLE} for r in records]
    doc = _clean({"kind": KIND, "format_version": FORMAT_VERSION, "simtool": __version__, "type": type_,
                  "target": target, "spec": spec, "dataset": dataset, "models": models, "records": plain})
    if samples:
        doc["samples"] = samples
    return doc


def record_samples(doc: dict) -> dict[int, dict]:
    """Record index → its sample entry (empty when the file has none)."""
    return {int(s["record"]): s for s in doc.get("samples") or []}


def results_beside(target: str | Path, type_: str, tag: str) -> Path:
    """Where ``evaluate`` writes the results of an embeddings file when asked to write beside it:
    ``NAME.<type>-<tag>.json`` next to ``NAME.safetensors``."""
    target = Path(target)
    return target.with_name(target.name.split(".")[0] + f".{type_}-{tag}.json")


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
        raise UserError(f"{path} is a results file of format version {doc.get('format_version', 1)}; "
                        f"this simtool reads version {FORMAT_VERSION}: evaluate again to rewrite it.")
    records = doc.get("records")
    if not isinstance(records, list) or any(not isinstance(r, dict) for r in records):
        raise UserError(f"{path} is damaged (its records are malformed); evaluate again to rewrite it.")
    for k, r in enumerate(records):
        missing = [f for f in REQUIRED if f not in r]
        wrong = [f for f in ("run", "type", "layer", "metric") if f in r and not isinstance(r[f], str)]
        value = r.get("value")
        if missing or wrong or not (value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))):
            what = f"lacks {', '.join(missing)}" if missing else f"has a non-text {wrong[0]}" if wrong else f"has a non-numeric value {value!r}"
            raise UserError(f"{path} is damaged: record {k} {what} (every record needs {', '.join(REQUIRED)}); evaluate again to rewrite it.")
    samples = doc.get("samples", [])
    ok = isinstance(samples, list) and all(
        isinstance(e, dict) and isinstance(e.get("record"), int) and 0 <= e["record"] < len(records) and isinstance(e.get("data"), str)
        and isinstance(e.get("n"), int) and (e.get("encoding") in ("bits", "f32") or str(e.get("encoding", "")).split("/")[0] in _INT_CODES)
        for e in samples)
    if not ok:
        raise UserError(f"{path} is damaged (its per-unit samples are malformed); evaluate again to rewrite it.")
    return doc
