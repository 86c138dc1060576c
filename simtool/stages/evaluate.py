"""``evaluate``: a run, an embeddings file or a plain array → result records.

Reads embeddings (embedding a run's test split in memory first when the target is a run
directory, :mod:`simtool.embedding.runs`), hands them to the evaluator registered for ``--type``
and writes a results file: into the run directory for a run, beside the file for an embeddings
file, and to ``--out``. Evaluating an embeddings file or an array opens no dataset; no target
imports training code.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from simtool.errors import UserError
from simtool.evaluators import EVALUATORS, get_evaluator
from simtool.formats import ARRAY, DATASET, EMBEDDINGS, MISSING, RUN, RUNS, kind_of
from simtool.formats.results import results_beside, results_doc, write_results

WHAT = "pass a run directory, an embeddings .safetensors file or a .npy/.npz array"


def load_target(spec, console: Console | None = None):
    """``(embeddings, run directory or None)`` for the evaluate spec's target."""
    target = Path(spec.target)
    kind = kind_of(target)
    if kind == RUN:
        from simtool.embedding.runs import embed_runs
        from simtool.formats.run_dir import RunDir

        return embed_runs([str(target)], spec.split, spec.layers, spec.device, spec.batch_size, spec.data, console, images=spec.images), RunDir(target)
    if spec.images:
        raise UserError(f"--images embeds a run's rows from a second image set, so it goes with a run directory target, not {target}.")
    if kind in (RUNS, DATASET):
        raise UserError(f"{target} is not a run directory (it has no spec.yaml); {WHAT}.")
    if kind == MISSING:
        raise UserError(f"The target {target} does not exist; {WHAT}.")
    if kind == ARRAY:
        from simtool.formats.embeddings import read_array

        reader = EVALUATORS.get(spec.options.type).array_reader  # an evaluator may read its own labels (triplets)
        if reader is not None:
            return reader(target, spec.labels, spec.options), None
        return read_array(target, spec.labels), None
    from simtool.formats.embeddings import read_embeddings

    if spec.labels:
        raise UserError("--labels goes with a plain .npy/.npz array; an embeddings file carries its own labels.")
    return read_embeddings(target), None


def evaluate(spec, console: Console | None = None) -> tuple[dict, list[Path]]:
    evaluator = get_evaluator(spec.options.type, spec.device)
    emb, run = load_target(spec, console)
    if len(emb) == 0:
        raise UserError(f"There are no {spec.split!r} rows to evaluate; choose another --split.")
    records = evaluator.evaluate(emb, spec.options, spec.layers)
    images = (emb.info.get("images") or {}).get("name")
    for r in records:
        r["target"] = str(spec.target)
        if images:  # the second image set is part of the question
            r["condition"] = " ".join(c for c in (r.get("condition"), f"images={images}") if c)
    models = {m["name"]: {k: v for k, v in m.items() if k != "name"} for m in emb.models}
    doc = results_doc(evaluator.name, str(spec.target), spec.to_dict(), emb.dataset, models, records)
    tag = evaluator.tag(spec.options, emb) + (f"-images-{images}" if images else "")
    written = []
    if run is not None:
        written.append(write_results(run.results_path(evaluator.name, tag), doc))
    elif spec.out is None and kind_of(spec.target) in (EMBEDDINGS, ARRAY):
        written.append(write_results(results_beside(spec.target, evaluator.name, tag), doc))
    if spec.out:
        written.append(write_results(spec.out, doc))
    return doc, written
