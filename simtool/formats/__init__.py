"""The on-disk formats, one module each: dataset directory (``dataset_dir``, with its build work
directory ``build_dir``, room files ``rooms`` and image store ``image_store`` / ``image_codec``),
run directory (``run_dir``, with ``weights``), embeddings file (``embeddings``), results
(``results``) and the comparison directory (``comparison``).

:func:`kind_of` is the one place that says what a path handed to a command is.
"""

from __future__ import annotations

from pathlib import Path

RUN = "run"  # a run directory (spec.yaml)
RUNS = "runs"  # a directory holding run directories
DATASET = "dataset"  # a dataset directory (dataset.json)
EMBEDDINGS = "embeddings"  # an embeddings file (NAME.safetensors + NAME.rows.parquet)
ARRAY = "array"  # a plain NumPy array (.npy / .npz) made by another tool
RESULTS = "results"  # a results file (JSON) written by evaluate
MISSING = "missing"  # nothing there
OTHER = "other"  # anything else

ARRAY_SUFFIXES = (".npy", ".npz")


def kind_of(path: str | Path) -> str:
    """What ``path`` is, by its names alone (cheap; the readers validate the content)."""
    from simtool.formats.dataset_dir import CARD
    from simtool.formats.embeddings import SUFFIX
    from simtool.formats.run_dir import SPEC

    path = Path(path)
    if path.is_dir():
        if (path / SPEC).is_file():
            return RUN
        if (path / CARD).is_file():
            return DATASET
        return RUNS
    if not path.exists():
        return MISSING
    if path.suffix in ARRAY_SUFFIXES:
        return ARRAY
    if path.suffix == SUFFIX:
        return EMBEDDINGS
    if path.suffix == ".json":
        return RESULTS
    return OTHER
