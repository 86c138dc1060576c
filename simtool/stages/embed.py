"""``save-embeddings``: trained runs → an embeddings file (:mod:`simtool.embedding.runs` does the work)."""

from __future__ import annotations

from rich.console import Console

from simtool.embedding.runs import embed_runs
from simtool.formats.embeddings import check_out_path, write_embeddings


def save_embeddings(spec, console: Console | None = None) -> dict:
    out = check_out_path(spec.out)
    emb = embed_runs(spec.runs, spec.split, spec.layers, spec.device, spec.batch_size, spec.data, console)
    path, rp = write_embeddings(out, emb, spec.to_dict())
    return {"out": str(path), "rows": str(rp), "n": len(emb), "models": emb.models}
