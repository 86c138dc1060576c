"""Class retrieval metrics: exact neighbours and every metric against brute-force references.

References sort a float64 similarity matrix per query by (similarity descending, index ascending)
and compute P@1, Recall@K, R-Precision and MAP@R from their definitions with Python loops. The
tie-heavy data are exactly representable (entries ±1 on four of six coordinates, so normalised
entries are ±0.5 and every dot product is exact in float32), with duplicate and zero rows, and
labels with singleton classes; small tiles force partial tiles and the exact fallback path.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simtool.metrics.retrieval import knn, retrieval_metrics

BLOCKS = [dict(query_block=7, ref_block=16), dict(query_block=64, ref_block=64), dict(query_block=300, ref_block=32), {}]


def ref_similarity(x: np.ndarray, distance: str) -> np.ndarray:
    x = x.astype(np.float64)
    if distance == "cosine":
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        unit = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
        return unit @ unit.T
    return -((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)


def ref_neighbours(x: np.ndarray, distance: str = "cosine") -> np.ndarray:
    """Every other item of each query, most similar first, ties → lower index."""
    s = ref_similarity(x, distance)
    n = len(x)
    return np.array([[j for j in np.lexsort((np.arange(n), -s[i])) if j != i] for i in range(n)])


def ref_metrics(x: np.ndarray, labels: np.ndarray, ks, distance: str = "cosine") -> dict:
    order = ref_neighbours(x, distance)
    out = {"precision_at_1": [], "r_precision": [], "map_at_r": [], **{f"recall_at_{k}": [] for k in ks}}
    for i in range(len(x)):
        rel = [labels[j] == labels[i] for j in order[i]]
        r = int(np.sum(labels == labels[i])) - 1
        if r == 0:
            continue
        out["precision_at_1"].append(float(rel[0]))
        for k in ks:
            out[f"recall_at_{k}"].append(float(any(rel[:k])))
        out["r_precision"].append(sum(rel[:r]) / r)
        ap = 0.0
        for pos in range(r):
            if rel[pos]:
                ap += sum(rel[: pos + 1]) / (pos + 1)
        out["map_at_r"].append(ap / r)
    return {k: np.array(v) for k, v in out.items()}


def tie_data(n: int = 240, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 6), dtype=np.float32)
    for i in range(n):
        cols = rng.choice(6, 4, replace=False)
        x[i, cols] = rng.choice([-1.0, 1.0], 4)
    x[5] = 0.0  # a zero row: similarity 0 with everything
    x[7] = x[3]  # duplicates
    x[9] = x[3]
    return x


def tie_labels(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n // 6, n)
    labels[:4] = [1000, 1001, 1002, 1003]  # singleton classes
    return labels


@pytest.mark.parametrize("screen", [False, True])
@pytest.mark.parametrize("blocks", BLOCKS)
def test_knn_is_exact_with_ties_duplicates_and_zero_rows(blocks, screen):
    x = tie_data()
    got = knn(torch.from_numpy(x), 9, screen=screen, **blocks).numpy()
    assert np.array_equal(got, ref_neighbours(x)[:, :9])


@pytest.mark.parametrize("blocks", BLOCKS[:2])
def test_knn_euclidean_on_integer_data_with_ties(blocks):
    rng = np.random.default_rng(2)
    x = rng.integers(-2, 3, (200, 5)).astype(np.float32)
    got = knn(torch.from_numpy(x), 7, distance="euclidean", **blocks).numpy()
    assert np.array_equal(got, ref_neighbours(x, "euclidean")[:, :7])


def test_knn_on_continuous_data_and_small_n():
    x = np.random.default_rng(3).standard_normal((500, 12)).astype(np.float32)
    for blocks in BLOCKS:
        for screen in (False, True):
            assert np.array_equal(knn(torch.from_numpy(x), 12, screen=screen, **blocks).numpy(), ref_neighbours(x)[:, :12])
    tiny = x[:3]
    assert np.array_equal(knn(torch.from_numpy(tiny), 2).numpy(), ref_neighbours(tiny))
    with pytest.raises(ValueError, match="k must be"):
        knn(torch.from_numpy(tiny), 3)


@pytest.mark.parametrize("screen", [False, True])
@pytest.mark.parametrize("blocks", BLOCKS[:3])
def test_metrics_match_brute_force_with_ties_and_singletons(blocks, screen):
    x = tie_data()
    labels = tie_labels(len(x))
    ks = (1, 2, 4, 8, 16)
    got = retrieval_metrics(torch.from_numpy(x), labels, ks, screen=screen, **blocks)
    ref = ref_metrics(x, labels, ks)
    for key, values in ref.items():
        assert got[key].shape == values.shape
        np.testing.assert_allclose(got[key].astype(np.float64), values, rtol=0, atol=1e-12, err_msg=key)
    counts = np.bincount(np.unique(labels, return_inverse=True)[1])
    assert got["singleton_classes"] == int((counts == 1).sum()) >= 4
    assert got["n_queries"] == len(x) - got["singleton_classes"] == len(ref["precision_at_1"])
    assert got["k"] == max(int(counts.max()) - 1, 16)
    assert np.array_equal(got["queries"], np.flatnonzero(counts[np.unique(labels, return_inverse=True)[1]] > 1))


def test_metrics_euclidean_and_string_labels():
    rng = np.random.default_rng(4)
    x = rng.integers(-2, 3, (150, 4)).astype(np.float32)
    labels = np.array([f"c{v}" for v in rng.integers(0, 20, 150)])
    got = retrieval_metrics(torch.from_numpy(x), labels, (1, 3), distance="euclidean", query_block=16, ref_block=32)
    ref = ref_metrics(x, labels, (1, 3), "euclidean")
    for key, values in ref.items():
        np.testing.assert_allclose(got[key].astype(np.float64), values, atol=1e-12, err_msg=key)


def test_every_class_a_singleton_gives_no_queries():
    x = torch.randn(6, 3)
    got = retrieval_metrics(x, np.arange(6))
    assert got["n_queries"] == 0 and got["singleton_classes"] == 6 and len(got["map_at_r"]) == 0


def test_perfect_embedding_scores_one():
    labels = np.repeat(np.arange(5), 4)
    x = torch.eye(5)[labels] + 0.01 * torch.randn(20, 5)
    got = retrieval_metrics(x, labels)
    for key in ("precision_at_1", "recall_at_1", "recall_at_8", "r_precision", "map_at_r"):
        assert got[key].mean() == 1.0


def test_matches_pytorch_metric_learning():
    """P@1, R-Precision and MAP@R equal AccuracyCalculator(k="max_bin_count") to 1e-6 (Euclidean, as its default)."""
    pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    rng = np.random.default_rng(5)
    labels = rng.integers(0, 150, 900)
    x = (rng.standard_normal((900, 16)) + 0.8 * rng.standard_normal((150, 16))[labels]).astype(np.float32)
    calc = AccuracyCalculator(include=("precision_at_1", "r_precision", "mean_average_precision_at_r"), k="max_bin_count",
                              device=torch.device("cpu"), knn_func=CustomKNN(LpDistance(normalize_embeddings=False)))
    theirs = calc.get_accuracy(torch.from_numpy(x), torch.from_numpy(labels))
    ours = retrieval_metrics(torch.from_numpy(x), labels, distance="euclidean", query_block=128, ref_block=256)
    assert abs(ours["precision_at_1"].mean() - theirs["precision_at_1"]) < 1e-6
    assert abs(ours["r_precision"].mean() - theirs["r_precision"]) < 1e-6
    assert abs(ours["map_at_r"].mean() - theirs["mean_average_precision_at_r"]) < 1e-6
    assert 0.1 < theirs["precision_at_1"] < 0.99, "a test where the metrics are neither trivial nor perfect"


def test_tie_heavy_rows_take_the_exact_fallback_and_agree(monkeypatch):
    """Ties at the k-th place make the group shortcut unsure: those queries are redone exactly."""
    import simtool.metrics.retrieval as mod

    calls = []
    real = mod._exact_rows
    monkeypatch.setattr(mod, "_exact_rows", lambda q, *a, **kw: calls.append(len(q)) or real(q, *a, **kw))
    x = tie_data(400, seed=3)
    got = knn(torch.from_numpy(x), 5, query_block=50, ref_block=64, screen=False).numpy()
    assert calls and sum(calls) < len(x), "some, not all, queries needed the exact path"
    assert np.array_equal(got, ref_neighbours(x)[:, :5])
    calls.clear()
    knn(torch.randn(400, 16), 5, query_block=50, ref_block=64, screen=False)
    assert not calls, "continuous data never need it"


def test_bfloat16_screen_of_class_retrieval_on_continuous_data_with_duplicates():
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((60, 32)) * 0.6)[rng.integers(0, 60, 1500)] + rng.standard_normal((1500, 32))
    x = x.astype(np.float32)
    x[100:130] = x[99]  # 31 equal rows: ties at every cut of their queries
    labels = rng.integers(0, 60, 1500)
    sim = ref_similarity(x, "cosine")
    ref = ref_neighbours(x)[:, :20]
    got = knn(torch.from_numpy(x), 20, screen=True).numpy()
    rows = np.arange(len(x))[:, None]
    # the same neighbours in the same order, except items whose similarities differ by less than
    # float32 rounding (their order is float32's, as in the plain path)
    np.testing.assert_allclose(sim[rows, got], sim[rows, ref], rtol=0, atol=1e-6)
    assert (got == ref).mean() > 0.999
    assert np.array_equal(got[99:131], ref[99:131]), "exact ties go to the lower index"
    ours, plain = (retrieval_metrics(torch.from_numpy(x), labels, (1, 4), screen=s) for s in (True, False))
    for key in ("precision_at_1", "recall_at_4", "r_precision", "map_at_r"):
        assert abs(ours[key].mean() - plain[key].mean()) < 1e-3, key
