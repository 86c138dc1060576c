"""RSA against scipy.stats.spearmanr on explicit distance matrices; linear CKA against the HSIC formula."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import pdist
from scipy.stats import rankdata, spearmanr

from simtool.metrics.similarity import average_ranks, cka_matrix, cosine_distance_triangle, linear_cka, rsa, rsa_matrix, subsample


def ref_cka(x: np.ndarray, y: np.ndarray) -> float:
    """HSIC form in sample space: tr(K H L H) / sqrt(tr(K H K H) tr(L H L H)), K = X X^T, L = Y Y^T."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, m = x @ x.T, y @ y.T
    hsic = lambda a, b: np.trace(a @ h @ b @ h)  # noqa: E731
    return hsic(k, m) / np.sqrt(hsic(k, k) * hsic(m, m))


def test_triangle_is_scipy_cosine_pdist():
    x = np.random.default_rng(0).standard_normal((30, 5))
    np.testing.assert_allclose(cosine_distance_triangle(x), pdist(x, "cosine"), atol=1e-12)


def test_average_ranks_with_ties():
    v = np.array([3.0, 1.0, 3.0, 2.0, 1.0, 3.0])
    np.testing.assert_array_equal(average_ranks(v), rankdata(v))
    w = np.random.default_rng(1).integers(0, 5, 200).astype(float)
    np.testing.assert_array_equal(average_ranks(w), rankdata(w))


def test_rsa_matches_spearmanr_including_ties():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((40, 8))
    y = x @ rng.standard_normal((8, 6)) + 0.5 * rng.standard_normal((40, 6))
    ref = spearmanr(pdist(x, "cosine"), pdist(y, "cosine")).statistic
    assert rsa(x, y) == pytest.approx(ref, abs=1e-12)
    def ties(seed):  # ±1 on four of six coordinates: cosines are multiples of 1/4, exactly, so distances tie
        r = np.random.default_rng(seed)
        out = np.zeros((30, 6))
        for row in out:
            row[r.choice(6, 4, replace=False)] = r.choice([-1.0, 1.0], 4)
        return out

    xt, yt = ties(5), ties(6)
    assert len(np.unique(pdist(xt, "cosine"))) < 10, "the data are tie-heavy"
    assert rsa(xt, yt) == pytest.approx(spearmanr(pdist(xt, "cosine"), pdist(yt, "cosine")).statistic, abs=1e-12)
    assert rsa(x, 3 * x) == pytest.approx(1.0)


def test_cka_matches_hsic_formula_and_invariances():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, 7))
    y = np.tanh(x @ rng.standard_normal((7, 4))) + 0.3 * rng.standard_normal((50, 4))
    assert linear_cka(x, y) == pytest.approx(ref_cka(x, y), abs=1e-12)
    q, _ = np.linalg.qr(rng.standard_normal((7, 7)))
    assert linear_cka(x, 2.5 * x @ q + 1.0) == pytest.approx(1.0), "invariant to rotation, scale and shift"
    assert np.isnan(linear_cka(np.ones((10, 3)), x[:10]))


def test_matrices_agree_with_pairwise_functions():
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal((25, d)) for d in (3, 5, 4)]
    r, c = rsa_matrix(xs), cka_matrix(xs)
    for i in range(3):
        for j in range(3):
            assert r[i, j] == pytest.approx(1.0 if i == j else rsa(xs[i], xs[j]), abs=1e-12)
            assert c[i, j] == pytest.approx(1.0 if i == j else linear_cka(xs[i], xs[j]), abs=1e-12)


def test_subsample_is_seeded_sorted_and_bounded():
    a, b = subsample(1000, 100, seed=3), subsample(1000, 100, seed=3)
    assert np.array_equal(a, b) and len(a) == 100 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, subsample(1000, 100, seed=4))
    assert np.array_equal(subsample(50, 100), np.arange(50))
