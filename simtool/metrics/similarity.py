"""Representational similarity between two embeddings of the same items: RSA and linear CKA.

* RSA (N. Kriegeskorte, M. Mur, P. Bandettini, "Representational similarity analysis",
  Front. Syst. Neurosci. 2008): the Spearman correlation between the upper triangles (``i < j``)
  of the two cosine-distance matrices ``1 - cos(x_i, x_j)``. Ranks of tied distances are averaged
  (as :func:`scipy.stats.rankdata`); computed in float64. Distance matrices are ``m × m``, so the
  callers pass a subsample of at most a few thousand items (:func:`subsample`).
* Linear CKA (S. Kornblith, M. Norouzi, H. Lee, G. Hinton, "Similarity of Neural Network
  Representations Revisited", ICML 2019): with column-centred ``X`` (m × p) and ``Y`` (m × q),
  ``|Y^T X|_F^2 / (|X^T X|_F |Y^T Y|_F)``, computed in float64 in feature space (never m × m).

Both are symmetric, 1 for identical representations; RSA lies in [-1, 1], CKA in [0, 1]. A
representation with no variation (every distance equal, or all-constant features) gives NaN.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

__all__ = ["subsample", "cosine_distance_triangle", "average_ranks", "rsa", "linear_cka", "rsa_matrix", "cka_matrix"]


def _np64(x) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"a representation must be (m, D), got shape {x.shape}")
    return x


def subsample(n: int, max_items: int, seed: int = 0) -> np.ndarray:
    """Sorted row indices of a seeded subsample of at most ``max_items`` of ``n`` rows (all when ``n <= max_items``)."""
    if n <= max_items:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, int(max_items), replace=False))


def cosine_distance_triangle(x) -> np.ndarray:
    """Upper triangle (``i < j``, row-major) of the cosine-distance matrix of the rows of ``x`` (float64)."""
    x = _np64(x)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    unit = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
    iu = np.triu_indices(len(x), k=1)
    return 1.0 - (unit @ unit.T)[iu]


def average_ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``v`` with ties given their average rank."""
    v = np.asarray(v)
    order = np.argsort(v, kind="stable")
    sv = v[order]
    change = np.empty(len(v), dtype=bool)
    if len(v):
        change[0] = True
        change[1:] = sv[1:] != sv[:-1]
    starts = np.flatnonzero(change)
    ends = np.append(starts[1:], len(v))
    avg = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(len(v), dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def rsa(x, y) -> float:
    """Spearman correlation of the upper triangles of the cosine-distance matrices of ``x`` and ``y`` (same rows)."""
    x, y = _np64(x), _np64(y)
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same rows, got {len(x)} and {len(y)}")
    if len(x) < 3:
        return float("nan")
    return _pearson(average_ranks(cosine_distance_triangle(x)), average_ranks(cosine_distance_triangle(y)))


def _centred_gram_terms(x: np.ndarray) -> np.ndarray:
    return x - x.mean(0, keepdims=True)


def linear_cka(x, y) -> float:
    """Linear CKA of ``x`` (m × p) and ``y`` (m × q), same rows."""
    x, y = _np64(x), _np64(y)
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same rows, got {len(x)} and {len(y)}")
    xc, yc = _centred_gram_terms(x), _centred_gram_terms(y)
    cross = np.linalg.norm(yc.T @ xc) ** 2
    den = np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    return float(cross / den) if den > 0 else float("nan")


def rsa_matrix(xs: list) -> np.ndarray:
    """RSA between every pair of representations (same rows): ranks are computed once per representation."""
    ranks = []
    for x in xs:
        r = average_ranks(cosine_distance_triangle(x))
        r -= r.mean()
        ranks.append(r)
    m = len(xs)
    out = np.eye(m)
    norms = [np.sqrt((r * r).sum()) for r in ranks]
    for i in range(m):
        if norms[i] == 0:
            out[i, :] = out[:, i] = np.nan
            continue
        for j in range(i + 1, m):
            v = float((ranks[i] * ranks[j]).sum() / (norms[i] * norms[j])) if norms[j] > 0 else float("nan")
            out[i, j] = out[j, i] = v
    return out


def cka_matrix(xs: list) -> np.ndarray:
    """Linear CKA between every pair of representations (same rows)."""
    cs = [_centred_gram_terms(_np64(x)) for x in xs]
    self_norm = [np.linalg.norm(c.T @ c) for c in cs]
    m = len(cs)
    out = np.eye(m)
    for i in range(m):
        if self_norm[i] == 0:
            out[i, :] = out[:, i] = np.nan
            continue
        for j in range(i + 1, m):
            den = self_norm[i] * self_norm[j]
            out[i, j] = out[j, i] = float(np.linalg.norm(cs[j].T @ cs[i]) ** 2 / den) if den > 0 else float("nan")
    return out
