"""Summary statistics of a representation matrix ``x`` of shape ``(N, D)`` (N items, D units).

* :func:`sparsity` - fraction of (near-)zero activations.
* :func:`collapse` - mean pairwise cosine similarity between items (1.0 = complete collapse onto one
  direction, ~0 for isotropic random codes).
* :func:`effective_rank` - O. Roy, M. Vetterli, "The effective rank: a measure of effective
  dimensionality", EUSIPCO 2007: ``exp(H(p))`` with ``p`` the singular values of the centred matrix
  normalised to sum 1, between 1 and ``rank(x)``.

All three return Python floats and accept tensors of any float dtype on any device; computation is
done in float32 (sparsity), float64 (collapse, effective rank).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["sparsity", "collapse", "effective_rank"]

# Rows processed per chunk are chosen so a chunk holds about this many elements.
_CHUNK_ELEMENTS = 1 << 22
# Pairs scored per block by the sampled collapse: small enough for the gathered rows to stay in cache.
_PAIR_BLOCK = 2048


def _check_matrix(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} expects an (N, D) matrix, got shape {tuple(x.shape)}")


def _chunk_rows(d: int) -> int:
    return max(1, _CHUNK_ELEMENTS // max(d, 1))


def sparsity(x: Tensor, eps: float = 1e-6) -> float:
    """Fraction of entries of ``x`` with ``|x| <= eps``.

    Args:
        x: ``(N, D)`` activations.
        eps: magnitude at or below which an activation counts as zero.

    Returns:
        A float in ``[0, 1]``; NaN for an empty matrix.
    """
    _check_matrix(x, "sparsity")
    total = x.numel()
    if total == 0:
        return float("nan")
    zeros = 0
    step = _chunk_rows(x.shape[1])
    with torch.no_grad():
        for i in range(0, x.shape[0], step):
            zeros += int((x[i : i + step].abs() <= eps).sum().item())
    return zeros / total


def collapse(x: Tensor, max_pairs: int = 100000, seed: int = 0) -> float:
    """Mean cosine similarity between pairs of distinct rows of ``x``.

    Exact (all ``N(N-1)/2`` unordered pairs) when ``N(N-1)/2 <= max_pairs``; otherwise the mean over
    ``max_pairs`` pairs ``(i, j), i != j`` drawn uniformly with replacement using
    ``np.random.default_rng(seed)``. A zero row has cosine 0 with every row.

    Args:
        x: ``(N, D)`` representations, ``N >= 2``.
        max_pairs: largest number of pairs scored.
        seed: seed of the pair sampler (ignored in the exact case).

    Returns:
        A float in ``[-1, 1]``: 1.0 when every row points in the same direction.
    """
    _check_matrix(x, "collapse")
    n, d = x.shape
    if n < 2:
        raise ValueError(f"collapse needs at least 2 rows, got {n}")
    if max_pairs < 1:
        raise ValueError(f"max_pairs must be >= 1, got {max_pairs}")
    step = _chunk_rows(d)
    with torch.no_grad():
        if n * (n - 1) // 2 <= max_pairs:
            # sum_{i<j} u_i.u_j = (|sum_i u_i|^2 - sum_i |u_i|^2) / 2 for unit rows u_i: O(N D).
            total = torch.zeros(d, dtype=torch.float64, device=x.device)
            sq = 0.0
            for i in range(0, n, step):
                u = F.normalize(x[i : i + step].double(), p=2, dim=1)
                total += u.sum(dim=0)
                sq += float((u * u).sum().item())
            pair_sum = (float(total.dot(total).item()) - sq) / 2.0
            return pair_sum / (n * (n - 1) / 2.0)
        rng = np.random.default_rng(seed)
        i = rng.integers(0, n, size=max_pairs)
        j = rng.integers(0, n - 1, size=max_pairs)
        j += j >= i  # uniform over the n - 1 rows other than i
        ii = torch.as_tensor(i, device=x.device)
        jj = torch.as_tensor(j, device=x.device)
        acc = 0.0
        block = min(step, _PAIR_BLOCK)
        for k in range(0, max_pairs, block):
            a = F.normalize(x[ii[k : k + block]].double(), p=2, dim=1)
            b = F.normalize(x[jj[k : k + block]].double(), p=2, dim=1)
            acc += float((a * b).sum().item())
        return acc / max_pairs


def effective_rank(x: Tensor) -> float:
    """Effective rank of the column-centred ``x`` (Roy & Vetterli, EUSIPCO 2007).

    With ``s_1..s_K`` the singular values of ``x - mean(x, 0)``, ``p_k = s_k / sum(s)`` and
    ``H = -sum_k p_k log p_k`` (``0 log 0 = 0``), the effective rank is ``exp(H)``. Singular values
    below ``max(N, D) * eps_float64 * ||x||_F`` (round-off of the centring) count as 0, so a rank-k
    matrix scores at most k. Rows are reduced chunk by chunk with a QR factorisation (a "tall-skinny
    QR"), so memory stays ``O(D^2)`` plus one chunk whatever ``N``.

    Args:
        x: ``(N, D)`` representations.

    Returns:
        A float in ``[1, min(N - 1, D)]``, or 0.0 when the centred matrix is zero (e.g. identical rows).
    """
    _check_matrix(x, "effective_rank")
    n, d = x.shape
    if n == 0 or d == 0:
        return 0.0
    step = max(_chunk_rows(d), d)
    with torch.no_grad():
        mean = torch.zeros(d, dtype=torch.float64, device=x.device)
        sq_norm = 0.0
        for i in range(0, n, step):
            c = x[i : i + step].double()
            mean += c.sum(dim=0)
            sq_norm += float((c * c).sum().item())
        mean /= n
        r = None
        for i in range(0, n, step):
            c = x[i : i + step].double() - mean
            block = c if r is None else torch.cat([r, c], dim=0)
            r = torch.linalg.qr(block, mode="r").R  # same singular values as all rows so far
        s = torch.linalg.svdvals(r).cpu().numpy()
    tol = max(n, d) * np.finfo(np.float64).eps * math.sqrt(sq_norm)
    s = s[s > tol]
    if s.size == 0:
        return 0.0
    p = s / s.sum()
    entropy = float(-(p * np.log(p)).sum())
    return math.exp(entropy)
