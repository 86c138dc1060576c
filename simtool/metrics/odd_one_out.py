"""Odd-one-out accuracy at the context, category and object levels.

Evaluation protocol of A. Aubret, T. Schaumlöffel, G. Roig, J. Triesch, "Learning Object Semantic
Similarity with Self-Supervision", IEEE ICDL 2024 (arXiv:2405.05143): for each anchor frame draw a
frame that shares the level's label ("same") and one that does not ("different"); the triplet is
solved when the anchor-same pair is the most similar of the three pairs under cosine similarity, i.e.
the "different" frame is the odd one out. Chance is 1/3.

Levels, for an anchor ``a`` with labels ``room[a]``, ``category[a]``, ``obj[a]``:

==========  ===========================================  ============================================
level       same (never ``a`` itself)                    different
==========  ===========================================  ============================================
context     ``room == room[a]``                          ``room != room[a]``
category    ``category == category[a]``                  ``room == room[a]`` and
                                                         ``category != category[a]``
object      ``obj == obj[a]``                            ``category == category[a]`` and
                                                         ``obj != obj[a]``
==========  ===========================================  ============================================

``obj`` labels must identify objects globally (not only within a category). Anchors without a
valid "same" or "different" candidate are skipped for that level and counted.

Sampling depends only on the labels, the level, ``repeats`` and the seed, never on the embeddings,
so every layer and model evaluated with the same labels and seed sees exactly the same triplets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from simtool.errors import UserError

__all__ = [
    "LEVELS",
    "TripletSet",
    "sample_odd_one_out_triplets",
    "triplet_correct",
    "odd_one_out_accuracy",
]

LEVELS = ("context", "category", "object")

# Largest block of triplets scored at once on CPU: 3 * 1024 gathered rows of D=512 float32 = 6 MiB.
_CPU_BLOCK = 1024


@dataclass
class TripletSet:
    """Row indices of ``T`` triplets into an ``(N, D)`` embedding matrix.

    Attributes:
        anchor: ``(T,)`` int64 anchor rows.
        same: ``(T,)`` int64 rows sharing the level's label with the anchor (never the anchor).
        different: ``(T,)`` int64 rows that do not share it (within the level's parent group).

    Triplets produced by :func:`sample_odd_one_out_triplets` are anchor-major: the ``repeats``
    triplets of one anchor are consecutive.
    """

    anchor: np.ndarray
    same: np.ndarray
    different: np.ndarray

    def __post_init__(self) -> None:
        self.anchor = np.asarray(self.anchor, dtype=np.int64).reshape(-1)
        self.same = np.asarray(self.same, dtype=np.int64).reshape(-1)
        self.different = np.asarray(self.different, dtype=np.int64).reshape(-1)
        if not (len(self.anchor) == len(self.same) == len(self.different)):
            raise ValueError(
                f"TripletSet arrays differ in length: {len(self.anchor)}, {len(self.same)}, {len(self.different)}"
            )

    def __len__(self) -> int:
        return len(self.anchor)


def _as_labels(x, name: str) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} labels must be a 1-D array, got shape {arr.shape}")
    return arr


def _check_level(level: str) -> None:
    if level not in LEVELS:
        raise UserError(f"Unknown odd-one-out level {level!r}; choose one of: {', '.join(LEVELS)}.")


def _group_bounds(order: np.ndarray, keys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per item, the ``[start, end)`` positions in ``order`` of the group of items equal on all ``keys``.

    ``order`` must sort the items so that each such group is contiguous (e.g. a lexicographic sort
    whose leading keys are ``keys``). With no keys every item is in one group ``[0, N)``.
    """
    n = len(order)
    change = np.zeros(n, dtype=bool)
    if n:
        change[0] = True
    for key in keys:
        ks = key[order]
        change[1:] |= ks[1:] != ks[:-1]
    first = np.flatnonzero(change)
    last = np.append(first[1:], n)
    gid = np.cumsum(change) - 1  # group id of each sorted position
    start = np.empty(n, dtype=np.int64)
    end = np.empty(n, dtype=np.int64)
    start[order] = first[gid]
    end[order] = last[gid]
    return start, end


def _level_keys(level: str, room, category, obj) -> tuple[np.ndarray, list[np.ndarray]]:
    """(key of "same", parent keys of "different") for ``level``; different = parent group minus same group."""
    if level == "context":
        return room, []
    if level == "category":
        return category, [room]
    return obj, [category]


def sample_odd_one_out_triplets(
    room: np.ndarray,
    category: np.ndarray,
    obj: np.ndarray,
    level: str,
    repeats: int,
    rng: np.random.Generator,
    exclude_same_object: bool = False,
) -> tuple[TripletSet, int]:
    """Draw odd-one-out triplets for every anchor of ``level`` (Aubret et al., ICDL 2024).

    For every item with at least one valid "same" and one valid "different" candidate (see the
    module docstring), ``repeats`` independent ``(same, different)`` pairs are drawn, each uniformly
    among that anchor's candidates. Items are grouped once with sorts, so the cost is
    ``O(N log N + N * repeats)``: the "same" draw picks one of the ``size - 1`` other members of the
    anchor's group and skips past the anchor's own position; the "different" draw picks one of the
    parent group's members outside the anchor's (contiguous) subgroup and skips past that subgroup.

    Args:
        room, category, obj: ``(N,)`` labels of the ``N`` items (ints, or any sortable dtype).
        level: one of :data:`LEVELS`.
        repeats: number of triplets per anchor (``>= 1``).
        rng: numpy generator; the draws depend only on the labels, ``level``, ``repeats`` and its state.
        exclude_same_object: at the context and category levels, never draw the "same" item from
            the anchor's own object (by default, as in the original protocol, another frame of the
            anchor's object may be drawn, which makes those levels easier). Ignored at ``object``.

    Returns:
        ``(triplets, skipped)``: an anchor-major :class:`TripletSet` of ``T = n_anchors * repeats``
        triplets, and the number of items skipped for lack of candidates.
    """
    _check_level(level)
    room = _as_labels(room, "room")
    category = _as_labels(category, "category")
    obj = _as_labels(obj, "obj")
    n = len(room)
    if not (len(category) == n and len(obj) == n):
        raise ValueError(f"room, category and obj must have the same length, got {n}, {len(category)}, {len(obj)}")
    repeats = int(repeats)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")

    same_key, parent_keys = _level_keys(level, room, category, obj)

    # "same": group by the level's own label.
    exclude = bool(exclude_same_object) and level != "object"
    if exclude:  # the anchor's object is a contiguous subgroup of its group in a (label, object) sort
        order_s = np.lexsort([obj, same_key])
        s_start, s_end = _group_bounds(order_s, [same_key])
        o_start, o_end = _group_bounds(order_s, [same_key, obj])
        n_same = (s_end - s_start) - (o_end - o_start)
    else:
        order_s = np.argsort(same_key, kind="stable")
        pos_s = np.empty(n, dtype=np.int64)
        pos_s[order_s] = np.arange(n)
        s_start, s_end = _group_bounds(order_s, [same_key])
        n_same = s_end - s_start - 1

    # "different": parent group minus the anchor's (parent, label) subgroup, which is contiguous in a
    # lexicographic (parent..., label) sort.
    order_d = np.lexsort([same_key, *parent_keys[::-1]]) if parent_keys else order_s
    p_start, p_end = _group_bounds(order_d, parent_keys)
    c_start, c_end = _group_bounds(order_d, [*parent_keys, same_key])
    c_size = c_end - c_start
    n_diff = (p_end - p_start) - c_size

    valid = (n_same >= 1) & (n_diff >= 1)
    anchors = np.flatnonzero(valid)
    skipped = int(n - len(anchors))
    a = np.repeat(anchors, repeats)
    if len(a) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return TripletSet(empty, empty.copy(), empty.copy()), skipped

    k = rng.integers(0, n_same[a])
    p = s_start[a] + k
    if exclude:
        p += np.where(p >= o_start[a], (o_end - o_start)[a], 0)
    else:
        p += p >= pos_s[a]
    same = order_s[p]

    k = rng.integers(0, n_diff[a])
    q = p_start[a] + k
    q += np.where(q >= c_start[a], c_size[a], 0)
    different = order_d[q]

    return TripletSet(a.astype(np.int64), same.astype(np.int64), different.astype(np.int64)), skipped


def triplet_correct(emb: Tensor, triplets: TripletSet, batch_size: int = 65536) -> Tensor:
    """Which triplets are solved: ``cos(a, s) > cos(a, d)`` and ``cos(a, s) > cos(s, d)`` (strict).

    Args:
        emb: ``(N, D)`` float embeddings (any float dtype and device; not modified, no grad).
        triplets: ``T`` triplets of row indices into ``emb``.
        batch_size: most rows normalised / triplets scored at once, bounding temporary memory to
            about ``3 * batch_size * D`` floats. On CPU, triplets are further processed in blocks
            of at most ``1024`` so the gathered rows stay in cache (5-10x faster than large blocks).

    Returns:
        ``(T,)`` bool tensor on ``emb``'s device. Cosines are computed in float32 from L2-normalised
        rows (a zero row has cosine 0 with everything). Ties count as wrong.
    """
    if emb.dim() != 2:
        raise ValueError(f"emb must be (N, D), got shape {tuple(emb.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n, d = emb.shape
    t = len(triplets)
    device = emb.device
    out = torch.zeros(t, dtype=torch.bool, device=device)
    if t == 0:
        return out
    for name in ("anchor", "same", "different"):
        idx = getattr(triplets, name)
        if idx.min() < 0 or idx.max() >= n:
            raise IndexError(f"triplet {name} indices out of range for {n} embeddings")
    block = min(batch_size, _CPU_BLOCK) if device.type == "cpu" else batch_size
    with torch.no_grad():
        unit = torch.empty((n, d), dtype=torch.float32, device=device)
        for i in range(0, n, batch_size):
            unit[i : i + batch_size] = F.normalize(emb[i : i + batch_size].float(), p=2, dim=1)
        rows = torch.as_tensor(np.stack([triplets.anchor, triplets.same, triplets.different], axis=1), device=device)
        for i in range(0, t, block):
            g = unit.index_select(0, rows[i : i + block].reshape(-1)).view(-1, 3, d)  # (b, 3, D)
            gram = torch.bmm(g, g.transpose(1, 2))  # (b, 3, 3) cosines
            cos_as, cos_ad, cos_sd = gram[:, 0, 1], gram[:, 0, 2], gram[:, 1, 2]
            out[i : i + block] = (cos_as > cos_ad) & (cos_as > cos_sd)
    return out


def odd_one_out_accuracy(
    emb: Tensor,
    room,
    category,
    obj,
    level: str,
    repeats: int = 10,
    seed: int = 0,
    exclude_same_object: bool = False,
    per_anchor: bool = False,
) -> dict:
    """Odd-one-out accuracy of embeddings ``emb`` at ``level`` (Aubret et al., ICDL 2024).

    Triplets come from :func:`sample_odd_one_out_triplets` with ``np.random.default_rng(seed)``, so
    they depend only on the labels, ``level``, ``repeats`` and ``seed``; scoring uses
    :func:`triplet_correct`.

    Args:
        emb: ``(N, D)`` embeddings of the ``N`` test items.
        room, category, obj: ``(N,)`` labels (numpy arrays, sequences or CPU/GPU tensors).
        level: one of :data:`LEVELS`.
        repeats: triplets drawn per anchor.
        seed: seed of the triplet sampler.
        exclude_same_object: see :func:`sample_odd_one_out_triplets`.
        per_anchor: also return ``"correct_per_anchor"``: ``(n_anchors,)`` int64 number of solved
            triplets (out of ``repeats``) of every anchor, in anchor order (the draws are the same).

    Returns:
        ``{"level", "accuracy", "n_triplets", "n_anchors", "skipped", "stderr"}``: ``accuracy`` is
        the fraction of solved triplets (equal to the mean of per-anchor accuracies), ``stderr`` the
        standard error of that mean over anchors (sample std of per-anchor accuracies / sqrt(n)).
        Both are NaN when there are no anchors; ``stderr`` is NaN with a single anchor.
    """
    _check_level(level)
    if emb.dim() != 2:
        raise ValueError(f"emb must be (N, D), got shape {tuple(emb.shape)}")
    room = _as_labels(room, "room")
    if emb.shape[0] != len(room):
        raise ValueError(f"emb has {emb.shape[0]} rows but there are {len(room)} labels")
    rng = np.random.default_rng(seed)
    triplets, skipped = sample_odd_one_out_triplets(room, category, obj, level, repeats, rng, exclude_same_object)
    n_anchors = len(triplets) // int(repeats)
    accuracy = stderr = float("nan")
    counts = np.zeros(0, dtype=np.int64)
    if n_anchors:
        correct = triplet_correct(emb, triplets).cpu().numpy()
        counts = correct.reshape(n_anchors, int(repeats)).sum(axis=1).astype(np.int64)
        anchor_acc = correct.reshape(n_anchors, int(repeats)).mean(axis=1)
        accuracy = float(anchor_acc.mean())
        if n_anchors > 1:
            stderr = float(anchor_acc.std(ddof=1) / math.sqrt(n_anchors))
    out = {
        "level": level,
        "accuracy": accuracy,
        "n_triplets": int(len(triplets)),
        "n_anchors": int(n_anchors),
        "skipped": int(skipped),
        "stderr": stderr,
    }
    if per_anchor:
        out["correct_per_anchor"] = counts
    return out
