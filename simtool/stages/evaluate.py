"""``evaluate``: a run, an embeddings file or a plain array → result records.

Reads embeddings (embedding a run's test split in memory first when the target is a run
directory, :mod:`simtool.embedding.runs`), hands them to the evaluator registered for ``--type``
and writes a results file: into the run directory for a run, beside the file for an embeddings
file (without ``--out``), and to ``--out``; a plain array's results only to ``--out`` (nothing is
written beside an input simtool did not write: without ``--out`` they are printed only). Outputs are checked writable before any work and each results
file is owned by one process while it is written (:mod:`simtool.locks`). Evaluating an embeddings file or an array opens no dataset; no target
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
    if kind == DATASET:
        raise UserError(f"{target} is a dataset directory, not a model; embed it first (simtool save-embeddings --model NAME --data {target} "
                        f"--out FILE.safetensors, or train a run on it) and evaluate that.")
    if kind == RUNS:
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


def plan_outputs(spec) -> None:
    """Before any work: the outputs ``evaluate`` will write must be writable."""
    from simtool.io import check_writable

    kind = kind_of(spec.target)
    if spec.out:
        check_writable(spec.out, "the results file")
    if kind == RUN:
        check_writable(Path(spec.target), "the results in the run directory", fix="make it writable or copy the run")
    elif kind == EMBEDDINGS and not spec.out:
        check_writable(Path(spec.target).parent, "the results beside the embeddings file", fix="pass --out FILE.json")


def evaluate(spec, console: Console | None = None) -> tuple[dict, list[Path]]:
    from contextlib import ExitStack

    from simtool.locks import OwnerLock, beside

    evaluator = get_evaluator(spec.options.type, spec.device)
    plan_outputs(spec)
    with ExitStack() as held:
        def own(path: Path) -> Path:
            held.enter_context(OwnerLock(beside(path), f"The results file {path}", "wait for that evaluation to finish, or choose another --out"))
            return path

        if spec.out:
            own(Path(spec.out))
        emb, run = load_target(spec, console)
        if len(emb) == 0:
            if run is not None:
                raise UserError(f"There are no {spec.split!r} rows to evaluate; choose another --split.")
            raise UserError(f"{spec.target} holds no embeddings (0 rows); export them again with simtool save-embeddings.")
        images = (emb.info.get("images") or {}).get("name")
        tag = evaluator.tag(spec.options, emb) + (f"-images-{images}" if images else "")
        paths = []
        if run is not None:
            paths.append(own(run.results_path(evaluator.name, tag)))
        elif spec.out is None and kind_of(spec.target) == EMBEDDINGS:
            paths.append(own(results_beside(spec.target, evaluator.name, tag)))
        if spec.out:
            paths.append(Path(spec.out))
        records = evaluator.evaluate(emb, spec.options, spec.layers)
        for r in records:
            r["target"] = str(spec.target)
            if images:  # the second image set is part of the question
                r["condition"] = " ".join(c for c in (r.get("condition"), f"images={images}") if c)
        models = {m["name"]: {k: v for k, v in m.items() if k != "name"} for m in emb.models}
        doc = results_doc(evaluator.name, str(spec.target), spec.to_dict(), emb.dataset, models, records)
        if console is not None:
            for line in few_samples(records):
                console.print(f"[yellow]Warning[/]: {line}", soft_wrap=True)
        return doc, [write_results(p, doc) for p in paths]


#: below this many samples (triplets, queries) an estimate with a standard error gets a warning
FEW = 100


def few_samples(records: list[dict]) -> list[str]:
    """One warning per metric estimated from fewer than :data:`FEW` samples (its standard error
    is then large): what was scored, how many, and the error."""
    seen, lines = set(), []
    for r in records:
        n, se = r.get("n"), r.get("se")
        if se is None or not isinstance(n, (int, float)) or n >= FEW:
            continue
        key = (r.get("metric"), r.get("level"), r.get("condition"), int(n))
        if key in seen:
            continue
        seen.add(key)
        what = " ".join(str(x) for x in (r.get("metric"), r.get("level"), r.get("condition")) if x)
        lines.append(f"{what} rests on {int(n)} sample(s) only (standard error about {se:.2f}); "
                     "evaluate a larger split or more labels before reading it.")
    return lines
