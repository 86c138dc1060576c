"""Representation statistics against brute-force numpy references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import simtool.metrics.representation as rep
from simtool.metrics import collapse, effective_rank, sparsity


def brute_sparsity(x: np.ndarray, eps: float) -> float:
    return sum(1 for v in x.ravel() if abs(v) <= eps) / x.size


def brute_collapse(x: np.ndarray) -> float:
    """Mean cosine over all unordered pairs of distinct rows, looping over pairs."""
    x = np.asarray(x, dtype=np.float64)
    total, count = 0.0, 0
    for i, j in itertools.combinations(range(len(x)), 2):
        ni, nj = np.linalg.norm(x[i]), np.linalg.norm(x[j])
        total += 0.0 if ni == 0 or nj == 0 else float(x[i] @ x[j]) / (ni * nj)
        count += 1
    return total / count


def brute_effective_rank(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    s = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    s = s[s > 1e-10 * s.max()]
    p = s / s.sum()
    return math.exp(-sum(pk * math.log(pk) for pk in p))


def test_sparsity_matches_brute_force():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 7))
    x[rng.random(x.shape) < 0.3] = 0.0
    x[0, 0] = 1e-7  # counts as zero at eps=1e-6
    x[0, 1] = -1e-6  # boundary: |x| <= eps counts
    for eps in (1e-6, 0.1, 0.5):
        assert sparsity(torch.from_numpy(x), eps) == pytest.approx(brute_sparsity(x, eps), abs=1e-12)
    assert sparsity(torch.zeros(3, 4)) == 1.0
    assert sparsity(torch.ones(3, 4)) == 0.0
    assert sparsity(torch.relu(torch.from_numpy(x)).float()) == pytest.approx(brute_sparsity(np.maximum(x, 0), 1e-6))


@pytest.mark.parametrize("n,d", [(2, 3), (5, 4), (30, 8), (45, 16)])
def test_collapse_exact_matches_all_pairs(n, d):
    x = np.random.default_rng(n).normal(size=(n, d)) + 0.5
    x[1] = 0.0  # a zero row has cosine 0 with everything
    assert collapse(torch.from_numpy(x)) == pytest.approx(brute_collapse(x), abs=1e-12)
    assert collapse(torch.from_numpy(x).float()) == pytest.approx(brute_collapse(x), abs=1e-6)


def test_collapse_sampled_estimates_all_pairs():
    x = np.random.default_rng(1).normal(size=(200, 6)) + 0.3
    exact = brute_collapse(x)
    t = torch.from_numpy(x)
    sampled = collapse(t, max_pairs=5000, seed=0)  # 19900 pairs > 5000: sampled
    assert sampled != exact
    assert sampled == pytest.approx(exact, abs=0.03)
    assert collapse(t, max_pairs=5000, seed=0) == sampled  # deterministic
    assert collapse(t, max_pairs=19900) == pytest.approx(exact, abs=1e-12)  # boundary is exact


def test_collapse_extremes():
    assert collapse(torch.ones(50, 8) * torch.arange(1, 51).unsqueeze(1)) == pytest.approx(1.0, abs=1e-12)
    assert collapse(torch.ones(600, 8), max_pairs=1000) == pytest.approx(1.0, abs=1e-12)
    assert collapse(torch.eye(10)) == pytest.approx(0.0, abs=1e-12)
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert collapse(x) == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        collapse(torch.ones(1, 3))


@pytest.mark.parametrize("n,d", [(20, 5), (6, 12), (50, 50), (200, 7)])
def test_effective_rank_matches_numpy_svd(n, d):
    x = np.random.default_rng(n + d).normal(size=(n, d)) * np.linspace(0.1, 3.0, d)
    assert effective_rank(torch.from_numpy(x)) == pytest.approx(brute_effective_rank(x), rel=1e-9)
    assert effective_rank(torch.from_numpy(x).float()) == pytest.approx(brute_effective_rank(x), rel=1e-4)


def test_effective_rank_chunked_qr_path(monkeypatch):
    # Force many row chunks so the tall-skinny QR reduction is exercised.
    monkeypatch.setattr(rep, "_CHUNK_ELEMENTS", 64)
    x = np.random.default_rng(3).normal(size=(300, 6)) + 10.0
    assert effective_rank(torch.from_numpy(x)) == pytest.approx(brute_effective_rank(x), rel=1e-9)
    x = np.random.default_rng(4).normal(size=(5, 40))
    assert effective_rank(torch.from_numpy(x)) == pytest.approx(brute_effective_rank(x), rel=1e-9)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_effective_rank_of_rank_k_is_at_most_k(k):
    rng = np.random.default_rng(k)
    x = rng.normal(size=(100, k)) @ rng.normal(size=(k, 20)) + rng.normal(size=20)  # rank k after centring
    er = effective_rank(torch.from_numpy(x))
    assert 1.0 <= er <= k
    assert er == pytest.approx(brute_effective_rank(x), rel=1e-8)
    er32 = effective_rank(torch.from_numpy(x).float())
    assert er32 <= k + 1e-3


def test_effective_rank_extremes():
    # equal singular values -> effective rank equals the rank
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(16, 16)))
    x = np.concatenate([q[:, :4], -q[:, :4]])  # centred already, 4 equal singular values
    assert effective_rank(torch.from_numpy(x)) == pytest.approx(4.0, rel=1e-10)
    assert effective_rank(torch.ones(10, 4) * 3.7) == 0.0  # identical rows: nothing left after centring
    assert effective_rank(torch.tensor([[0.1, 0.2, 0.3]]).repeat(7, 1)) == 0.0
