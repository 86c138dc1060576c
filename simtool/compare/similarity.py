"""Representational similarity between the models of embeddings files: RSA and linear CKA matrices.

Every model (and repetition) of every embeddings file is a *member*; members are grouped by name
(the preset, else the method, else the model's name; ``--name`` per file) and training settings,
exactly as result records are (:func:`simtool.compare.aggregate.make_labels`). Rows are matched by
``id`` across all members; a seeded subsample of at most ``max_items`` shared ids (sorted, then
drawn with :func:`simtool.metrics.similarity.subsample`) is used for both RSA and CKA. The group
matrix holds, for groups A and B, the mean over member pairs (a in A, b in B, a ≠ b): its diagonal
is the agreement between the seeds of one group (1 for a group of one member).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from simtool.compare.aggregate import base_name, make_labels, settings_of
from simtool.formats.embeddings import read_embeddings
from simtool.metrics.similarity import cka_matrix, rsa_matrix, subsample


@dataclass
class Member:
    label: str
    model: str
    repeat: int
    source: str
    layer: str
    ids: np.ndarray
    x: object  # float32 tensor (N, D)
    dataset: str | None


@dataclass
class Similarity:
    labels: list[str]
    rsa: np.ndarray  # (G, G) group means
    cka: np.ndarray
    members: list[str]  # "label: model#repeat @layer (file)"
    member_rsa: np.ndarray
    member_cka: np.ndarray
    n_shared: int
    n_used: int
    layer: str | None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        def clean(m):
            return [[None if not np.isfinite(v) else float(v) for v in row] for row in m]

        return {"labels": self.labels, "rsa": clean(self.rsa), "cka": clean(self.cka), "members": self.members,
                "member_rsa": clean(self.member_rsa), "member_cka": clean(self.member_cka),
                "n_shared_ids": self.n_shared, "n_items_used": self.n_used, "layer": self.layer}


def _layer_for(label: str, layer: str | None, layer_of: dict[str, str]) -> str | None:
    return layer_of.get(label, layer_of.get(base_name(label), layer))


def collect_members(targets: list[str], names: list[str] | None, layer: str | None,
                    layer_of: dict[str, str] | None = None) -> tuple[list[Member], list[str], str | None]:
    """Members of the embeddings files ``targets`` at their layer; (members, warnings, layer used)."""
    layer_of = layer_of or {}
    warnings: list[str] = []
    loaded = []
    for i, t in enumerate(targets):
        emb = read_embeddings(t)
        loaded.append((t, emb, names[i] if names else None))
    entries: dict[tuple, tuple[str, dict]] = {}
    for t, emb, name in loaded:
        for m in emb.models:
            prov = {**m, "dataset": m.get("dataset") or emb.dataset}
            entries[(t, m["name"])] = (name or m.get("preset") or m.get("method") or m["name"], settings_of(prov))
    labels = make_labels(entries)
    if layer is None:
        lists = [list(m.get("layers", [])) for _, emb, _ in loaded for m in emb.models]
        common = [x for x in lists[0] if all(x in other for other in lists[1:])] if lists else []
        if not common:
            warnings.append("The embeddings share no layer; pass --layer to choose one for RSA and CKA.")
            return [], warnings, None
        layer = common[-1]
        if any(len(x) > 1 for x in lists):
            warnings.append(f"RSA and CKA compare the layer {layer!r} (the last one all embeddings have); pass --layer to choose another.")
    members: list[Member] = []
    for t, emb, _ in loaded:
        ids = emb.ids
        for m in emb.models:
            label = labels[(t, m["name"])]
            want = _layer_for(label, layer, layer_of)
            if want not in m.get("layers", []):
                warnings.append(f"{m['name']} in {t} has no layer {want!r} (it has: {', '.join(m.get('layers', []))}); it is left out of RSA and CKA.")
                continue
            x = emb.tensor(m["name"], want)
            for r in range(x.shape[1]):
                members.append(Member(label, m["name"], r, str(t), want, ids, x[:, r], emb.dataset.get("fingerprint")))
    return members, warnings, layer


def similarity(members: list[Member], max_items: int = 2000, seed: int = 0, order: list[str] | None = None, layer: str | None = None) -> Similarity | None:
    """RSA and CKA between the members (and their groups) on shared ids; None with fewer than 2 members."""
    warnings: list[str] = []
    if len(members) < 2:
        return None
    fps: dict[str, list[str]] = {}
    for m in members:
        if m.dataset:
            fps.setdefault(m.dataset, [])
            if m.source not in fps[m.dataset]:
                fps[m.dataset].append(m.source)
    if len(fps) > 1:
        which = "; ".join(f"{fp[:19]}: {', '.join(src)}" for fp, src in fps.items())
        warnings.append(f"The embeddings come from {len(fps)} different datasets ({which}); RSA and CKA match their rows by id only.")
    shared = set(members[0].ids.tolist())
    for m in members[1:]:
        shared &= set(m.ids.tolist())
    seen_sources = set()
    for m in members:
        if m.source in seen_sources:
            continue
        seen_sources.add(m.source)
        if len(shared) < len(m.ids):
            warnings.append(f"{m.source}: {len(shared)} of its {len(m.ids)} ids are shared by all embeddings; RSA and CKA use the shared rows only.")
    if len(shared) < 3:
        warnings.append(f"The embeddings share {len(shared)} ids (at least 3 are needed); no RSA or CKA.")
        return Similarity([], np.zeros((0, 0)), np.zeros((0, 0)), [], np.zeros((0, 0)), np.zeros((0, 0)), len(shared), 0, layer, warnings)
    ids = np.array(sorted(shared))
    pick = ids[subsample(len(ids), max_items, seed)]
    xs = []
    for m in members:
        pos = {v: i for i, v in enumerate(m.ids.tolist())}
        rows = np.fromiter((pos[v] for v in pick), dtype=np.int64, count=len(pick))
        xs.append(m.x[rows].double().numpy())
    mr, mc = rsa_matrix(xs), cka_matrix(xs)
    labels = list(dict.fromkeys(m.label for m in members))
    if order:
        rank = {lab: i for i, lab in enumerate(order)}
        labels.sort(key=lambda lab: rank.get(lab, len(rank)))
    member_of = [labels.index(m.label) for m in members]
    g = len(labels)
    gr, gc = np.full((g, g), np.nan), np.full((g, g), np.nan)
    for a in range(g):
        for b in range(g):
            pairs = [(i, j) for i in range(len(members)) for j in range(len(members)) if member_of[i] == a and member_of[j] == b and i != j]
            if pairs:
                gr[a, b] = np.nanmean([mr[i, j] for i, j in pairs]) if any(np.isfinite(mr[i, j]) for i, j in pairs) else np.nan
                gc[a, b] = np.nanmean([mc[i, j] for i, j in pairs]) if any(np.isfinite(mc[i, j]) for i, j in pairs) else np.nan
            # a group of one member has no pair of runs: its diagonal stays empty, not a trivial 1
    names = [f"{m.label}: {m.model}#{m.repeat} @{m.layer} ({m.source})" for m in members]
    return Similarity(labels, gr, gc, names, mr, mc, len(shared), len(pick), layer, warnings)


def similarity_tables(sim: Similarity, max_items: int) -> list[tuple[str, list[str], list[list[str]]]]:
    if sim is None or not sim.labels:
        return []
    where = f" at {sim.layer}" if sim.layer else ""
    basis = f"{sim.n_used} of {sim.n_shared} shared items" + (f" (a seeded subsample, --max-items {max_items})" if sim.n_used < sim.n_shared else "")

    def fmt(v):
        return "–" if not np.isfinite(v) else f"{v:.3f}"

    g = len(sim.labels)
    if g <= 2:
        rows = []
        for a in range(g):
            for b in range(a, g):
                if a == b and g == 2:
                    continue
                what = f"{sim.labels[a]} vs {sim.labels[b]}" if a != b else f"{sim.labels[a]} (between its runs)"
                rows.append([what, fmt(sim.rsa[a, b]), fmt(sim.cka[a, b])])
        return [(f"Representational similarity{where} ({basis})", ["models", "RSA", "CKA"], rows)]
    out = []
    for name, mat in (("RSA (Spearman of cosine distances)", sim.rsa), ("linear CKA", sim.cka)):
        rows = [[sim.labels[a]] + [fmt(mat[a, b]) for b in range(g)] for a in range(g)]
        out.append((f"{name}{where} ({basis}; diagonal: between the runs of one group)", ["model"] + sim.labels, rows))
    return out

