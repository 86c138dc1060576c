"""Triplet metrics: fraction of correct labelled triplets, and teacher agreement (FSTR / FSTRT).

Definitions of R. Dondera, "Towards Learning Image Similarity from General Triplet Labels", CVPR
2024 workshops (FCT and the student-selection metric FSTRT):

* **Directed** triplet ``(a, closer, farther)``: correct iff ``d(a, closer) < d(a, farther)``.
* **Odd-one-out** triplet ``(pair, pair, odd)``: correct iff the labelled pair is the closest of the
  three pairs, ``d01 < d02`` and ``d01 < d12``.
* Ties are wrong (strict inequalities).
* **FSTRT** (fraction of same triplet relation, thresholded): over index triples ``(i, j, k)``, the
  fraction whose student margin ``||e_i - e_k|| - ||e_i - e_j||`` has the sign of the mean teacher
  margin ``mean_r(||t^r_i - t^r_k|| - ||t^r_i - t^r_j||)``, among the triples with
  ``|teacher margin| > threshold`` (0.2). **FSTR** is the same among the triples with a non-zero
  teacher margin (a zero student margin never agrees).

Pure tensor functions on any device, computed in blocks of triplets (memory ``O(block * D)``),
float32 (float64 for float64 inputs); no gradient. Random index triples come from an explicit
``torch.Generator``, never the global RNG.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from simtool.errors import UserError
from simtool.formats.triplets import TRIPLET_KINDS

__all__ = [
    "KINDS",
    "DISTANCES",
    "triplet_distances",
    "correct_from_distances",
    "triplet_correct",
    "triplet_accuracy",
    "sample_index_triplets",
    "sample_image_triplets",
    "teacher_agreement",
    "fstrt",
]

KINDS = TRIPLET_KINDS
DISTANCES = ("euclidean", "sqeuclidean", "cosine")
_BLOCK = 65536
_CPU_BLOCK = 4096


def _check(kind: str | None = None, distance: str | None = None) -> None:
    if kind is not None and kind not in KINDS:
        raise UserError(f"Unknown triplet kind {kind!r}; use 'directed' or 'odd-one-out'.")
    if distance is not None and distance not in DISTANCES:
        raise UserError(f"Unknown distance {distance!r} for triplet metrics; use one of: {', '.join(DISTANCES)}.")


def _as_index(triplets, n: int, device) -> Tensor:
    t = torch.as_tensor(triplets, device=device)
    if t.dim() != 2 or t.shape[1] != 3:
        raise ValueError(f"triplets must be (T, 3), got shape {tuple(t.shape)}")
    t = t.long()
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n):
        raise IndexError(f"triplet indices out of range for {n} embeddings")
    return t


def _as_runs(emb: Tensor) -> Tensor:
    """``(N, D)`` or ``(N, R, D)`` -> float ``(N, R, D)``."""
    if emb.dim() == 2:
        emb = emb.unsqueeze(1)
    if emb.dim() != 3:
        raise ValueError(f"embeddings must be (N, D) or (N, R, D), got shape {tuple(emb.shape)}")
    return emb.detach().to(torch.float64 if emb.dtype == torch.float64 else torch.float32)


def _pair_distance(x: Tensor, y: Tensor, distance: str) -> Tensor:
    """Row-wise distance of ``(..., D)`` tensors -> ``(...)``."""
    if distance == "cosine":
        num = (x * y).sum(-1)
        den = x.norm(dim=-1) * y.norm(dim=-1)
        return 1.0 - torch.where(den > 0, num / den.clamp_min(1e-30), torch.zeros_like(num))
    sq = ((x - y) ** 2).sum(-1)
    return sq if distance == "sqeuclidean" else sq.sqrt()


def _block(device: torch.device, block: int | None) -> int:
    if block is not None:
        if int(block) < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        return int(block)
    return _CPU_BLOCK if device.type == "cpu" else _BLOCK


@torch.no_grad()
def triplet_distances(emb: Tensor, triplets, distance: str = "euclidean", reduce: str = "mean", block: int | None = None) -> Tensor:
    """The three pair distances ``[d01, d02, d12]`` of every triplet.

    Args:
        emb: ``(N, D)`` embeddings, or ``(N, R, D)`` for R repetitions (teacher runs).
        triplets: ``(T, 3)`` int row indices into ``emb`` (tensor, array or nested list).
        distance: ``"euclidean"`` (the paper's), ``"sqeuclidean"`` or ``"cosine"`` (``1 - cos``;
            for unit vectors it orders pairs like the Euclidean distance).
        reduce: for ``(N, R, D)``: ``"mean"`` averages the R runs' distances (the ensemble, as the
            losses' ``Dbar``); ``"none"`` keeps them.
        block: triplets per block (default 4,096 on CPU, 65,536 elsewhere).

    Returns:
        ``(T, 3)`` (``reduce="mean"`` or 2-D ``emb``) or ``(T, R, 3)`` on ``emb``'s device.
    """
    _check(distance=distance)
    if reduce not in ("mean", "none"):
        raise ValueError(f"reduce must be 'mean' or 'none', got {reduce!r}")
    runs = _as_runs(emb)
    n, r, _ = runs.shape
    idx = _as_index(triplets, n, runs.device)
    t = idx.shape[0]
    out = runs.new_empty((t, r, 3))
    step = _block(runs.device, block)
    for s in range(0, t, step):
        b = idx[s : s + step]
        e0, e1, e2 = runs[b[:, 0]], runs[b[:, 1]], runs[b[:, 2]]  # (b, R, D)
        out[s : s + step, :, 0] = _pair_distance(e0, e1, distance)
        out[s : s + step, :, 1] = _pair_distance(e0, e2, distance)
        out[s : s + step, :, 2] = _pair_distance(e1, e2, distance)
    if emb.dim() == 2 or reduce == "mean":
        return out.mean(1)
    return out


def correct_from_distances(d: Tensor, kind: str) -> Tensor:
    """``(..., 3)`` distances ``[d01, d02, d12]`` -> ``(...)`` bool correctness (ties wrong)."""
    _check(kind=kind)
    if kind == "directed":
        return d[..., 0] < d[..., 1]
    return (d[..., 0] < d[..., 1]) & (d[..., 0] < d[..., 2])


@torch.no_grad()
def triplet_correct(emb: Tensor, triplets, kind: str, distance: str = "euclidean", reduce: str = "mean", block: int | None = None) -> Tensor:
    """Per-triplet correctness (for bootstrapping over triplets).

    ``kind="directed"``: ``d(a, closer) < d(a, farther)``; ``kind="odd-one-out"``: the labelled pair
    (rows 0 and 1) is strictly the closest of the three pairs. Arguments as in
    :func:`triplet_distances`; for ``(N, R, D)`` embeddings ``reduce="mean"`` scores the ensemble
    by its mean distance, ``reduce="none"`` each run.

    Returns:
        ``(T,)`` bool, or ``(T, R)`` with ``reduce="none"``, on ``emb``'s device.
    """
    _check(kind=kind)
    return correct_from_distances(triplet_distances(emb, triplets, distance, reduce, block), kind)


def triplet_accuracy(emb: Tensor, triplets, kind: str, distance: str = "euclidean", reduce: str = "mean", block: int | None = None):
    """Fraction of correct triplets (float; a ``(R,)`` tensor with ``reduce="none"``); NaN without triplets."""
    correct = triplet_correct(emb, triplets, kind, distance, reduce, block)
    if correct.shape[0] == 0:
        return float("nan") if correct.dim() == 1 else torch.full(correct.shape[1:], float("nan"))
    acc = correct.double().mean(0)
    return float(acc) if acc.dim() == 0 else acc.cpu()


def sample_index_triplets(n: int, n_samples: int, generator: torch.Generator, distinct: bool = True, device="cpu") -> Tensor:
    """``(n_samples, 3)`` int64 index triples drawn uniformly, with replacement, from ``range(n)``.

    ``distinct=True`` (default) draws triples of three different indices (uniform over them);
    ``distinct=False`` allows coincident indices, as the original's draw (its degenerate triples
    always "agree" and so inflate FSTRT slightly). ``generator`` must be a CPU ``torch.Generator``
    (the draw is made on the CPU, then moved to ``device``), so it never touches the global RNG.
    """
    if not isinstance(generator, torch.Generator):
        raise TypeError("sample_index_triplets needs an explicit torch.Generator")
    n, m = int(n), int(n_samples)
    if distinct and n < 3:
        raise UserError(f"Teacher agreement needs at least 3 items for distinct triples, got {n}.")
    if n < 1:
        raise UserError("Teacher agreement needs at least one item.")
    if not distinct:
        return torch.randint(0, n, (m, 3), generator=generator).to(device)
    i = torch.randint(0, n, (m,), generator=generator)
    j = (i + 1 + torch.randint(0, n - 1, (m,), generator=generator)) % n  # j != i, uniform
    k = torch.randint(0, n - 2, (m,), generator=generator)  # skip past min(i, j) and max(i, j)
    lo, hi = torch.minimum(i, j), torch.maximum(i, j)
    k = k + (k >= lo).long()
    k = k + (k >= hi).long()
    return torch.stack([i, j, k], 1).to(device)


@torch.no_grad()
def sample_image_triplets(triplets: np.ndarray, owner: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """Image triplets sampled from item triplets: ``samples`` (K) passes over the ``triplets`` (T, 3)
    of item numbers, each member shown by one of its item's images drawn uniformly at random, as the
    original scores image models on class triplets (K = 2 THINGS, 3 IHSJC). Returns ``(K * T, 3)``
    int64 positions into the images, pass ``k`` at rows ``k * T .. (k + 1) * T - 1``.

    ``owner`` (M,): the item of every image; an item's images are the positions where ``owner`` is
    it. Pass ``k`` draws ``u = rng.random((T, 3))`` and picks image ``floor(u * n_item)`` of each
    member's images in position order. Every item of ``triplets`` needs at least one image.
    """
    triplets = np.asarray(triplets, dtype=np.int64).reshape(-1, 3)
    owner = np.asarray(owner, dtype=np.int64)
    order = np.argsort(owner, kind="stable")
    n_items = int(max(owner.max(initial=-1), triplets.max(initial=-1))) + 1
    count = np.bincount(owner, minlength=n_items)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    if len(triplets) and (count[triplets] == 0).any():
        raise UserError(f"Item {int(triplets[count[triplets] == 0][0])} of a triplet has no image; image triplets need an image of every item.")
    out = np.empty((int(samples) * len(triplets), 3), dtype=np.int64)
    for k in range(int(samples)):
        pick = (rng.random(triplets.shape) * count[triplets]).astype(np.int64)
        out[k * len(triplets) : (k + 1) * len(triplets)] = order[start[triplets] + pick]
    return out


def teacher_agreement(student: Tensor, teacher: Tensor, triplets, threshold: float = 0.2, block: int | None = None) -> dict:
    """FSTR and FSTRT of a student against the mean teacher on given index triples ``(i, j, k)``.

    Args:
        student: ``(N, E)`` student embeddings.
        teacher: ``(N, R, D_t)`` teacher runs (or ``(N, D_t)``), rows matching ``student``'s.
        triplets: ``(S, 3)`` index triples (e.g. from :func:`sample_index_triplets`).
        threshold: minimum ``|teacher margin|`` for FSTRT (0.2).

    Returns:
        ``{"fstr", "fstrt", "n_triplets", "n_nonzero", "n_confident"}``; a fraction is NaN when its
        denominator is 0. Margins are ``d(i, k) - d(i, j)``, Euclidean; the teacher's is the mean
        over runs of the runs' margins.
    """
    if student.dim() != 2:
        raise ValueError(f"student must be (N, E), got shape {tuple(student.shape)}")
    t_runs = _as_runs(teacher)
    if t_runs.shape[0] != student.shape[0]:
        raise ValueError(f"student has {student.shape[0]} rows but the teacher has {t_runs.shape[0]}")
    s = student.detach().to(torch.float64 if student.dtype == torch.float64 else torch.float32).unsqueeze(1)
    idx = _as_index(triplets, student.shape[0], student.device)
    t_runs = t_runs.to(student.device)
    step = _block(student.device, block)
    agree_nz = agree_conf = nonzero = confident = 0
    thr = float(threshold)
    for a in range(0, idx.shape[0], step):
        b = idx[a : a + step]
        i, j, k = b[:, 0], b[:, 1], b[:, 2]
        tm = (_pair_distance(t_runs[i], t_runs[k], "euclidean") - _pair_distance(t_runs[i], t_runs[j], "euclidean")).mean(1)
        sm = (_pair_distance(s[i], s[k], "euclidean") - _pair_distance(s[i], s[j], "euclidean")).squeeze(1)
        same = torch.sign(tm) == torch.sign(sm)
        nz = tm != 0
        conf = tm.abs() > thr
        nonzero += int(nz.sum())
        confident += int(conf.sum())
        agree_nz += int((same & nz & (sm != 0)).sum())
        agree_conf += int((same & conf).sum())
    return {
        "fstr": agree_nz / nonzero if nonzero else float("nan"),
        "fstrt": agree_conf / confident if confident else float("nan"),
        "n_triplets": int(idx.shape[0]),
        "n_nonzero": nonzero,
        "n_confident": confident,
    }


def fstrt(student: Tensor, teacher: Tensor, generator: torch.Generator, n_samples: int = 1_000_000, threshold: float = 0.2,
          distinct: bool = True, block: int | None = None) -> dict:
    """:func:`teacher_agreement` on ``n_samples`` index triples drawn with ``generator``.

    To score every epoch on the same triples (the original's practice), draw them once with
    :func:`sample_index_triplets` and call :func:`teacher_agreement` instead.
    """
    triplets = sample_index_triplets(student.shape[0], n_samples, generator, distinct, device=student.device)
    return teacher_agreement(student, teacher, triplets, threshold, block)
