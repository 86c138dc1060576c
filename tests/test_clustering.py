"""k-means, NMI and AMI against brute-force references (and scikit-learn when installed)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from simtool.metrics.clustering import ami, contingency, expected_mutual_information, kmeans, mutual_information, nmi


def ref_mi(a, b) -> float:
    """Mutual information from the joint distribution, by loops."""
    n = len(a)
    mi = 0.0
    for u in set(a):
        for v in set(b):
            nij = sum(1 for x, y in zip(a, b) if x == u and y == v)
            if nij:
                pu, pv = sum(1 for x in a if x == u) / n, sum(1 for y in b if y == v) / n
                mi += nij / n * math.log(nij / n / (pu * pv))
    return mi


def ref_entropy(a) -> float:
    n = len(a)
    return -sum((c / n) * math.log(c / n) for c in np.unique(a, return_counts=True)[1])


def ref_emi_by_permutations(a, b) -> float:
    """E[MI] under random relabelling with fixed sizes: the mean MI over every permutation of ``b``."""
    b = list(b)
    values = [ref_mi(list(a), [b[i] for i in p]) for p in itertools.permutations(range(len(b)))]
    return float(np.mean(values))


def ref_kmeans(x: np.ndarray, k: int, seed: int, max_iter: int) -> np.ndarray:
    init = np.random.default_rng(seed).choice(len(x), k, replace=False)
    c = x[init].astype(np.float64)
    assign = None
    for _ in range(max_iter):
        d = ((x[:, None, :] - c[None]) ** 2).sum(-1)
        new = d.argmin(1)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            if np.any(assign == j):
                c[j] = x[assign == j].mean(0)
    return assign


def test_mutual_information_and_entropies_match_loops():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(5, 40))
        a, b = rng.integers(0, 4, n), rng.integers(0, 5, n)
        assert mutual_information(a, b) == pytest.approx(ref_mi(a, b), abs=1e-12)
        mi, ha, hb = ref_mi(a, b), ref_entropy(a), ref_entropy(b)
        assert nmi(a, b) == pytest.approx(mi / (0.5 * (ha + hb)) if ha + hb else 1.0, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_expected_mi_and_ami_match_exhaustive_permutations(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 3, 7)
    b = rng.integers(0, 3, 7)
    _, rows, cols = contingency(a, b)
    emi = ref_emi_by_permutations(a, b)
    assert expected_mutual_information(rows, cols) == pytest.approx(emi, abs=1e-12)
    mi, norm = ref_mi(a, b), 0.5 * (ref_entropy(a) + ref_entropy(b))
    if abs(norm - emi) > 1e-9:
        assert ami(a, b) == pytest.approx((mi - emi) / (norm - emi), abs=1e-10)


def test_limit_cases():
    assert nmi([0, 0, 0], [1, 1, 1]) == 1.0 and ami([0, 0, 0], [1, 1, 1]) == 1.0
    assert ami([0, 0, 1, 1], [0, 0, 0, 0]) == 0.0 and nmi([0, 0, 1, 1], [0, 0, 0, 0]) == 0.0
    assert ami([0, 1, 2], [5, 6, 7]) == 1.0, "every item alone in both: a perfect match"
    labels = np.repeat(np.arange(6), 5)
    assert nmi(labels, labels[::-1] + 10) == pytest.approx(1.0) and ami(labels, 9 - labels) == pytest.approx(1.0)


def test_against_scikit_learn_when_installed():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    for _ in range(30):
        n = int(rng.integers(10, 200))
        a = rng.integers(0, int(rng.integers(2, 12)), n)
        b = rng.integers(0, int(rng.integers(2, 12)), n)
        assert nmi(a, b) == pytest.approx(metrics.normalized_mutual_info_score(a, b), abs=1e-10)
        assert ami(a, b) == pytest.approx(metrics.adjusted_mutual_info_score(a, b), abs=1e-8)
    a = np.concatenate([np.arange(2000), rng.integers(0, 2000, 8000)])  # many classes: sizes grouped
    b = rng.integers(0, 2000, 10000)
    assert ami(a, b) == pytest.approx(metrics.adjusted_mutual_info_score(a, b), abs=1e-8)


def test_kmeans_matches_reference_lloyd_and_is_seeded():
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((6, 4)) * 4
    x = (centres[rng.integers(0, 6, 300)] + rng.standard_normal((300, 4))).astype(np.float32)
    for seed in (0, 1):
        got, iters = kmeans(torch.from_numpy(x), 6, seed=seed, max_iter=50)
        assert np.array_equal(got, ref_kmeans(x, 6, seed, 50)) and 1 <= iters <= 50
    again, _ = kmeans(torch.from_numpy(x), 6, seed=1, max_iter=50)
    assert np.array_equal(again, got)
    few, iters = kmeans(torch.from_numpy(x), 6, seed=0, max_iter=1)
    assert iters == 1 and np.array_equal(few, ref_kmeans(x, 6, 0, 1))


def test_kmeans_recovers_separated_clusters_in_small_tiles(monkeypatch):
    import simtool.metrics.clustering as mod

    monkeypatch.setattr(mod, "_TILE", 64)  # many assignment chunks
    labels = np.repeat(np.arange(8), 25)
    x = torch.from_numpy((np.eye(8)[labels] * 10 + 0.1 * np.random.default_rng(3).standard_normal((200, 8))).astype(np.float32))
    assign, _ = kmeans(x, 8, seed=4, max_iter=100)
    assert np.array_equal(assign, ref_kmeans(x.numpy(), 8, 4, 100))
    with pytest.raises(ValueError):
        kmeans(x, 0)
