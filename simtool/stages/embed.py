"""``save-embeddings``: trained runs (:mod:`simtool.embedding.runs`) or a model simtool did not
train (``--model``, :mod:`simtool.embedding.models`) → an embeddings file."""

from __future__ import annotations

from rich.console import Console

from simtool.errors import UserError
from simtool.formats.embeddings import check_out_path, write_embeddings


def save_embeddings(spec, console: Console | None = None) -> dict:
    """Embed, then write the file; its location is checked writable before any work and owned by
    this process until written (a second export to the same ``--out`` stops at once)."""
    from simtool.io import check_writable
    from simtool.locks import OwnerLock, beside

    out = check_out_path(spec.out)
    if not spec.model and not spec.runs:
        raise UserError("save-embeddings needs run directories (RUN ...) or a model to embed a dataset with (--model NAME --data DIR).")
    check_writable(out, "the embeddings file")
    with OwnerLock(beside(out), f"The embeddings file {out}", "wait for that export to finish, or choose another --out"):
        return _embed_and_write(spec, out, console)


def _embed_and_write(spec, out, console: Console | None) -> dict:
    if spec.model:
        from simtool.embedding.models import embed_model

        emb = embed_model(spec.model, spec.data, spec.split, spec.layers, spec.device, spec.batch_size, spec.pretrained, spec.weights, spec.seed, console)
    else:
        from simtool.embedding.runs import embed_runs

        emb = embed_runs(spec.runs, spec.split, spec.layers, spec.device, spec.batch_size, spec.data, console)
    path, rp = write_embeddings(out, emb, spec.to_dict())
    return {"out": str(path), "rows": str(rp), "n": len(emb), "models": emb.models}


def list_layers(model: str, pretrained: bool = False, weights: str | None = None, seed: int = 0) -> list[tuple[str, int]]:
    """(layer, dimension) of every layer of ``--model`` (``save-embeddings --list-layers``)."""
    from simtool.embedding.models import list_layers as _list

    return _list(model, pretrained, weights, seed)
