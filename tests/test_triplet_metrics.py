"""Triplet accuracy (directed, odd-one-out) and teacher agreement (FSTR / FSTRT) against loops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from simtool.errors import UserError
from simtool.metrics.triplets import fstrt, sample_index_triplets, teacher_agreement, triplet_accuracy, triplet_correct, triplet_distances


def dist(x, y, distance="euclidean"):
    if distance == "cosine":
        dot = sum(a * b for a, b in zip(x, y))
        nx, ny = math.sqrt(sum(a * a for a in x)), math.sqrt(sum(b * b for b in y))
        return 1 - dot / (nx * ny)
    sq = sum((a - b) ** 2 for a, b in zip(x, y))
    return sq if distance == "sqeuclidean" else math.sqrt(sq)


def ref_correct(emb, triplets, kind, distance="euclidean"):
    """Loop reference; (N, R, D) embeddings use the mean over R of each run's distance."""
    e = emb.tolist() if emb.dim() == 3 else [[row] for row in emb.tolist()]
    out = []
    for a, b, c in triplets.tolist():
        r = len(e[a])
        d01 = sum(dist(e[a][k], e[b][k], distance) for k in range(r)) / r
        d02 = sum(dist(e[a][k], e[c][k], distance) for k in range(r)) / r
        d12 = sum(dist(e[b][k], e[c][k], distance) for k in range(r)) / r
        out.append(d01 < d02 if kind == "directed" else (d01 < d02 and d01 < d12))
    return out


def random_triplets(n, t, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, n, (t, 3), generator=g)


@pytest.mark.parametrize("kind", ["directed", "odd-one-out"])
@pytest.mark.parametrize("distance", ["euclidean", "sqeuclidean", "cosine"])
def test_correct_matches_loops(kind, distance):
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(30, 6, generator=g, dtype=torch.float64)
    trip = random_triplets(30, 500, 1)
    got = triplet_correct(emb, trip, kind, distance=distance)
    assert got.dtype == torch.bool and got.tolist() == ref_correct(emb, trip, kind, distance)
    assert triplet_accuracy(emb, trip, kind, distance=distance) == pytest.approx(sum(ref_correct(emb, trip, kind, distance)) / 500)
    assert torch.equal(triplet_correct(emb, trip, kind, distance=distance, block=7), got), "blocks change nothing"


@pytest.mark.parametrize("kind", ["directed", "odd-one-out"])
def test_repetitions_mean_distance_and_per_run(kind):
    g = torch.Generator().manual_seed(2)
    emb = F.normalize(torch.rand(20, 3, 5, generator=g), dim=-1)
    trip = random_triplets(20, 300, 3)
    assert triplet_correct(emb, trip, kind).tolist() == ref_correct(emb.double(), trip, kind)
    per_run = triplet_correct(emb, trip, kind, reduce="none")
    assert per_run.shape == (300, 3)
    for r in range(3):
        assert per_run[:, r].tolist() == ref_correct(emb[:, r].double(), trip, kind)
    acc = triplet_accuracy(emb, trip, kind, reduce="none")
    assert acc.shape == (3,) and torch.allclose(acc, per_run.double().mean(0))
    assert triplet_distances(emb, trip, reduce="none").shape == (300, 3, 3)


def test_ties_are_wrong():
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # d(0,1) = d(0,2) = d(0,3) = 1: every comparison ties
    trip = torch.tensor([[0, 1, 2], [0, 1, 3], [0, 3, 2]])
    assert triplet_correct(emb, trip, "directed").tolist() == [False, False, False]
    assert triplet_correct(emb, trip, "odd-one-out").tolist() == [False, False, False]
    assert triplet_correct(emb.double(), trip, "odd-one-out", distance="sqeuclidean").tolist() == [False, False, False]
    # row 2: d(1,0)=1 < d(1,2)=sqrt2, but the odd-one-out needs d(1,0) < d(0,2) = 1 as well
    assert triplet_correct(emb, torch.tensor([[1, 0, 2]]), "directed").tolist() == [True]
    assert triplet_correct(emb, torch.tensor([[1, 0, 2]]), "odd-one-out").tolist() == [False]
    assert math.isnan(triplet_accuracy(emb, torch.zeros(0, 3, dtype=torch.int64), "directed"))


def test_errors():
    emb = torch.randn(4, 2)
    with pytest.raises(UserError, match="Unknown triplet kind"):
        triplet_correct(emb, torch.tensor([[0, 1, 2]]), "closer")
    with pytest.raises(UserError, match="Unknown distance"):
        triplet_correct(emb, torch.tensor([[0, 1, 2]]), "directed", distance="manhattan")
    with pytest.raises(IndexError):
        triplet_correct(emb, torch.tensor([[0, 1, 4]]), "directed")


def ref_agreement(student, teacher, triplets, threshold):
    s = student.tolist()
    t = teacher.tolist()
    r = len(t[0])
    agree_nz = agree_conf = nz = conf = 0
    for i, j, k in triplets.tolist():
        tm = sum(dist(t[i][q], t[k][q]) - dist(t[i][q], t[j][q]) for q in range(r)) / r
        sm = dist(s[i], s[k]) - dist(s[i], s[j])
        sign = lambda x: (x > 0) - (x < 0)
        if tm != 0:
            nz += 1
            agree_nz += sign(tm) == sign(sm) and sm != 0
        if abs(tm) > threshold:
            conf += 1
            agree_conf += sign(tm) == sign(sm)
    return agree_nz / nz, agree_conf / conf, nz, conf


def test_teacher_agreement_matches_loops():
    g = torch.Generator().manual_seed(4)
    teacher = F.normalize(torch.rand(25, 4, 6, generator=g, dtype=torch.float64), dim=-1)
    student = F.normalize(teacher.mean(1)[:, :5] + 0.3 * torch.randn(25, 5, generator=g, dtype=torch.float64), dim=1)
    teacher[3] = teacher[4]  # identical teacher rows: zero teacher margins for some triples
    trip = sample_index_triplets(25, 2000, torch.Generator().manual_seed(5))
    trip = torch.cat([trip, torch.tensor([[3, 4, 3], [0, 3, 4]])])
    for threshold in (0.2, 0.05):
        got = teacher_agreement(student, teacher, trip, threshold=threshold, block=333)
        fstr, fst, nz, conf = ref_agreement(student, teacher, trip, threshold)
        assert got["fstr"] == pytest.approx(fstr) and got["fstrt"] == pytest.approx(fst)
        assert (got["n_nonzero"], got["n_confident"], got["n_triplets"]) == (nz, conf, len(trip))
    assert teacher_agreement(teacher[:, 0], teacher[:, :1], trip)["fstrt"] == 1.0, "a teacher agrees with itself"


def test_sampling_is_seeded_distinct_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    a = sample_index_triplets(6, 60000, torch.Generator().manual_seed(7))
    b = sample_index_triplets(6, 60000, torch.Generator().manual_seed(7))
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(a, b) and a.dtype == torch.int64 and a.shape == (60000, 3)
    assert not ((a[:, 0] == a[:, 1]) | (a[:, 0] == a[:, 2]) | (a[:, 1] == a[:, 2])).any()
    # uniform over the 6 * 5 * 4 ordered triples of distinct indices
    code = (a[:, 0] * 36 + a[:, 1] * 6 + a[:, 2]).bincount(minlength=216)
    counts = code[code > 0]
    assert len(counts) == 120 and (counts - 500).abs().max() < 500 * 0.25
    loose = sample_index_triplets(3, 3000, torch.Generator().manual_seed(8), distinct=False)
    assert ((loose[:, 0] == loose[:, 1]).float().mean() - 1 / 3).abs() < 0.05
    with pytest.raises(TypeError):
        sample_index_triplets(6, 10, None)
    s = F.normalize(torch.randn(10, 3), dim=1)
    t = F.normalize(torch.rand(10, 2, 3), dim=-1)
    r1 = fstrt(s, t, torch.Generator().manual_seed(1), n_samples=5000)
    r2 = fstrt(s, t, torch.Generator().manual_seed(1), n_samples=5000)
    assert r1 == r2 and 0 <= r1["fstrt"] <= 1 and r1["n_triplets"] == 5000
