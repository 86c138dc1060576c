"""k-means clustering and the agreement of clusters with classes: NMI and AMI.

* :func:`kmeans` - Lloyd's algorithm, seeded: the initial centroids are ``n_clusters`` distinct
  items drawn with ``numpy.random.default_rng(seed).choice(N, n_clusters, replace=False)``; each
  iteration assigns every item to its nearest centroid (squared Euclidean distance, ties to the
  lower centroid index) by chunked matrix products on the target device, never an
  ``N × n_clusters`` matrix, then moves every centroid to the mean of its items (float64 sums; a
  centroid that lost all its items stays where it is). It stops when no assignment changes or
  after ``max_iter`` iterations.
* :func:`nmi` - normalised mutual information ``MI(U, V) / mean(H(U), H(V))`` (arithmetic mean,
  natural logarithms).
* :func:`ami` - adjusted mutual information (N. X. Vinh, J. Epps, J. Bailey, "Information
  Theoretic Measures for Clusterings Comparison", JMLR 2010): ``(MI - E[MI]) / (mean(H(U), H(V))
  - E[MI])`` with ``E[MI]`` the expected mutual information of two random labellings with the same
  cluster sizes (hypergeometric model). ``E[MI]`` depends only on the pairs of sizes, so it is
  summed over distinct (class size, cluster size) pairs: fast even with 10^5 classes.

Both scores are 1 for identical partitions (up to renaming), and 1 when both labellings put
every item in one cluster (the convention of scikit-learn). AMI is 1 when ``E[MI]`` equals the
normaliser and the partitions match (e.g. every item alone in both), 0 when they equal it otherwise.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import gammaln
from torch import Tensor

__all__ = ["kmeans", "contingency", "mutual_information", "entropy", "nmi", "ami", "expected_mutual_information"]

# Assignment tiles hold about this many (item, centroid) scores.
_TILE = 1 << 22
_TILE_CUDA = 1 << 27


def _assign(x: Tensor, centroids: Tensor, tile: int) -> Tensor:
    """Nearest centroid of every row of ``x``: argmax of ``x.c - |c|^2 / 2`` (first max on ties)."""
    half = 0.5 * (centroids.double() ** 2).sum(1).float()
    rows = max(1, tile // max(1, centroids.shape[0]))
    out = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    for s in range(0, x.shape[0], rows):
        score = x[s : s + rows] @ centroids.T
        score -= half
        out[s : s + rows] = score.argmax(1)
    return out


def kmeans(
    x: Tensor,
    n_clusters: int,
    seed: int = 0,
    max_iter: int = 20,
    device: torch.device | str | None = None,
) -> tuple[np.ndarray, int]:
    """Seeded Lloyd k-means of the rows of ``x``.

    Args:
        x: ``(N, D)`` points (any float dtype and device; moved to ``device`` as float32).
        n_clusters: ``1 <= n_clusters <= N``.
        seed: seed of the initial centroids.
        max_iter: most assignment + update rounds.

    Returns:
        ``(assignment, iterations)``: ``(N,)`` int64 cluster of every point (numpy) and the number
        of rounds run.
    """
    if x.dim() != 2:
        raise ValueError(f"x must be (N, D), got shape {tuple(x.shape)}")
    n = x.shape[0]
    if not 1 <= n_clusters <= n:
        raise ValueError(f"n_clusters must be in 1..N = {n}, got {n_clusters}")
    device = torch.device(device) if device is not None else x.device
    x = x.detach().to(device=device, dtype=torch.float32)
    tile = _TILE_CUDA if device.type == "cuda" else _TILE
    init = np.random.default_rng(seed).choice(n, n_clusters, replace=False)
    centroids = x[torch.from_numpy(init).to(device)].clone()
    assign = None
    it = 0
    for _ in range(max(1, int(max_iter))):
        it += 1
        new = _assign(x, centroids, tile)
        if assign is not None and torch.equal(new, assign):
            break
        assign = new
        sums = torch.zeros(n_clusters, x.shape[1], dtype=torch.float64, device=device)
        sums.index_add_(0, assign, x.double())
        counts = torch.bincount(assign, minlength=n_clusters)
        filled = counts > 0
        centroids[filled] = (sums[filled] / counts[filled].unsqueeze(1)).float()
    return assign.cpu().numpy().astype(np.int64), it


def contingency(a, b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-zero cells of the contingency table of labellings ``a`` and ``b``: (counts, row sums, column sums)."""
    a = np.asarray(a).reshape(-1)
    b = np.asarray(b).reshape(-1)
    if len(a) != len(b):
        raise ValueError(f"labellings differ in length: {len(a)} and {len(b)}")
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    ai, bi = ai.reshape(-1).astype(np.int64), bi.reshape(-1).astype(np.int64)
    pair = ai * (int(bi.max()) + 1 if len(bi) else 1) + bi
    _, cells = np.unique(pair, return_counts=True)
    rows = np.bincount(ai)
    cols = np.bincount(bi)
    return cells, rows, cols


def entropy(counts: np.ndarray) -> float:
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum()
    if n == 0:
        return 0.0
    p = counts[counts > 0] / n
    return float(-(p * np.log(p)).sum())


def mutual_information(a, b) -> float:
    a = np.asarray(a).reshape(-1)
    b = np.asarray(b).reshape(-1)
    n = len(a)
    if n == 0:
        return 0.0
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    ai, bi = ai.reshape(-1).astype(np.int64), bi.reshape(-1).astype(np.int64)
    nb = int(bi.max()) + 1
    pair = ai * nb + bi
    keys, cells = np.unique(pair, return_counts=True)
    rows = np.bincount(ai).astype(np.float64)
    cols = np.bincount(bi).astype(np.float64)
    nij = cells.astype(np.float64)
    mi = (nij / n) * (np.log(nij * n) - np.log(rows[keys // nb] * cols[keys % nb]))
    return float(max(mi.sum(), 0.0))


def expected_mutual_information(rows: np.ndarray, cols: np.ndarray) -> float:
    """E[MI] of two labellings with class sizes ``rows`` and cluster sizes ``cols`` (hypergeometric model)."""
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    n = int(rows.sum())
    if n <= 1:
        return 0.0
    a_vals, a_mult = np.unique(rows[rows > 0], return_counts=True)
    b_vals, b_mult = np.unique(cols[cols > 0], return_counts=True)
    lg = gammaln(np.arange(n + 2, dtype=np.float64))  # lg[m] = log((m-1)!) -> use lg[m + 1] = log(m!)

    def lfact(m):
        return lg[m + 1]

    total = 0.0
    b = b_vals.astype(np.int64)
    for a, am in zip(a_vals.astype(np.int64), a_mult):
        lo = np.maximum(1, a + b - n)  # (B,)
        hi = np.minimum(a, b)
        span = int((hi - lo).max()) + 1 if len(b) else 0
        if span <= 0:
            continue
        nij = lo[:, None] + np.arange(span)[None, :]  # (B, span)
        ok = nij <= hi[:, None]
        nij = np.where(ok, nij, 1)
        bb = b[:, None]
        term = (nij / n) * (np.log(n * nij) - np.log(a * bb))
        logp = (lfact(a) + lfact(bb) + lfact(n - a) + lfact(n - bb) - lfact(n) - lfact(nij) - lfact(a - nij)
                - lfact(bb - nij) - lfact(np.clip(n - a - bb + nij, 0, None)))
        contrib = np.where(ok, term * np.exp(logp), 0.0).sum(1)  # (B,)
        total += float(am * (contrib * b_mult).sum())
    return total


def _both_trivial(rows: np.ndarray, cols: np.ndarray) -> bool:
    return (len(rows) == len(cols) == 1) or (len(rows) == len(cols) == 0)


def nmi(a, b) -> float:
    """Normalised mutual information (arithmetic mean of the entropies)."""
    _, rows, cols = contingency(a, b)
    if _both_trivial(rows, cols):
        return 1.0
    hu, hv = entropy(rows), entropy(cols)
    mi = mutual_information(a, b)
    norm = 0.5 * (hu + hv)
    return float(mi / norm) if norm > 0 else 1.0


def ami(a, b) -> float:
    """Adjusted mutual information (arithmetic mean of the entropies)."""
    _, rows, cols = contingency(a, b)
    if _both_trivial(rows, cols):
        return 1.0
    mi = mutual_information(a, b)
    emi = expected_mutual_information(rows, cols)
    norm = 0.5 * (entropy(rows) + entropy(cols))
    denom = norm - emi
    if abs(denom) <= 1e-12 * max(1.0, norm):  # chance already explains everything: a perfect match or nothing to adjust
        return 1.0 if abs(mi - norm) <= 1e-12 * max(1.0, norm) else 0.0
    return float((mi - emi) / denom)
