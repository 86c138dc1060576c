"""Odd-one-out sampler and scorer against brute-force loop references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from simtool.errors import UserError
from simtool.metrics import LEVELS, TripletSet, odd_one_out_accuracy, sample_odd_one_out_triplets, triplet_correct


def random_labels(n: int, seed: int, n_rooms: int = 4, n_cats: int = 6, n_objs: int = 30):
    """Frames of objects; each object has one category; rooms vary per frame (categories span rooms)."""
    rng = np.random.default_rng(seed)
    obj = rng.integers(0, n_objs, size=n)
    obj_category = rng.integers(0, n_cats, size=n_objs)
    category = obj_category[obj]
    room = rng.integers(0, n_rooms, size=n)
    return room, category, obj


def hierarchical_labels(n_rooms=3, cats_per_room=3, objs_per_cat=3, frames_per_obj=4):
    """Rooms contain categories contain objects contain frames; every level has valid triplets."""
    room, category, obj = [], [], []
    for r in range(n_rooms):
        for c in range(cats_per_room):
            for o in range(objs_per_cat):
                for _ in range(frames_per_obj):
                    room.append(r)
                    category.append(r * cats_per_room + c)
                    obj.append((r * cats_per_room + c) * objs_per_cat + o)
    return np.array(room), np.array(category), np.array(obj)


def brute_candidates(i, level, room, category, obj, exclude_same_object=False):
    """(same candidates, different candidates) of anchor i, by looping over every item."""
    same, diff = [], []
    for j in range(len(room)):
        if exclude_same_object and level != "object" and obj[j] == obj[i]:
            if level == "context" and room[j] != room[i]:
                diff.append(j)
            continue
        if level == "context":
            if j != i and room[j] == room[i]:
                same.append(j)
            if room[j] != room[i]:
                diff.append(j)
        elif level == "category":
            if j != i and category[j] == category[i]:
                same.append(j)
            if room[j] == room[i] and category[j] != category[i]:
                diff.append(j)
        else:
            if j != i and obj[j] == obj[i]:
                same.append(j)
            if category[j] == category[i] and obj[j] != obj[i]:
                diff.append(j)
    return same, diff


def brute_correct(emb: np.ndarray, triplets: TripletSet) -> np.ndarray:
    """Loop over triplets; the anchor-same pair must be strictly the most similar of the three pairs."""
    emb = np.asarray(emb, dtype=np.float64)

    def cos(i, j):
        a, b = emb[i], emb[j]
        return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))

    out = []
    for a, s, d in zip(triplets.anchor, triplets.same, triplets.different):
        as_, ad, sd = cos(a, s), cos(a, d), cos(s, d)
        out.append(as_ > ad and as_ > sd)
    return np.array(out, dtype=bool)


@pytest.mark.parametrize("exclude", [False, True])
@pytest.mark.parametrize("level", LEVELS)
def test_sampler_invariants_match_brute_force(level, exclude):
    room, category, obj = random_labels(150, seed=1)
    repeats = 3
    trip, skipped = sample_odd_one_out_triplets(room, category, obj, level, repeats, np.random.default_rng(0), exclude)
    cands = [brute_candidates(i, level, room, category, obj, exclude) for i in range(len(room))]
    valid = [i for i, (s, d) in enumerate(cands) if s and d]
    assert skipped == len(room) - len(valid)
    assert len(trip) == len(valid) * repeats
    assert trip.anchor.dtype == trip.same.dtype == trip.different.dtype == np.int64
    np.testing.assert_array_equal(trip.anchor, np.repeat(valid, repeats))
    for a, s, d in zip(trip.anchor, trip.same, trip.different):
        same, diff = cands[a]
        assert s != a
        assert s in same and d in diff


def test_sampler_level_constraints_explicit():
    room, category, obj = random_labels(200, seed=2)
    rng = np.random.default_rng(5)
    t, _ = sample_odd_one_out_triplets(room, category, obj, "context", 2, rng)
    assert np.all(room[t.same] == room[t.anchor]) and np.all(room[t.different] != room[t.anchor])
    t, _ = sample_odd_one_out_triplets(room, category, obj, "category", 2, rng)
    assert np.all(category[t.same] == category[t.anchor])
    assert np.all(category[t.different] != category[t.anchor]) and np.all(room[t.different] == room[t.anchor])
    t, _ = sample_odd_one_out_triplets(room, category, obj, "object", 2, rng)
    assert np.all(obj[t.same] == obj[t.anchor])
    assert np.all(obj[t.different] != obj[t.anchor]) and np.all(category[t.different] == category[t.anchor])
    for level in LEVELS:
        t, _ = sample_odd_one_out_triplets(room, category, obj, level, 2, rng)
        assert np.all(t.same != t.anchor)


@pytest.mark.parametrize("exclude", [False, True])
@pytest.mark.parametrize("level", LEVELS)
def test_draws_are_uniform_among_candidates(level, exclude):
    # Small groups whose excluded blocks sit in the middle of their parent group, so both the
    # "skip the anchor" and the "skip the anchor's subgroup" shifts are exercised.
    room = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 1])
    category = np.array([0, 0, 1, 1, 1, 2, 2, 1, 3, 3])
    obj = np.array([0, 1, 2, 2, 3, 4, 4, 5, 6, 7])
    repeats = 3000
    t, _ = sample_odd_one_out_triplets(room, category, obj, level, repeats, np.random.default_rng(123), exclude)
    worst = 0.0
    for a in np.unique(t.anchor):
        same, diff = brute_candidates(a, level, room, category, obj, exclude)
        rows = t.anchor == a
        for drawn, cands in ((t.same[rows], same), (t.different[rows], diff)):
            counts = np.array([np.sum(drawn == c) for c in cands])
            assert counts.sum() == repeats  # never outside the candidates
            expected = repeats / len(cands)
            worst = max(worst, float(((counts - expected) ** 2 / expected).sum()))
    # chi-square with <= 6 degrees of freedom; 30 is far in the tail (p < 1e-4)
    assert worst < 30.0


def test_anchors_without_candidates_are_skipped():
    # object 0 has a single frame -> no "same" at object level; category 1 has a single object
    # (obj 2) -> no "different" at object level.
    room = np.array([0, 0, 0, 0, 0, 0])
    category = np.array([0, 0, 0, 1, 1, 1])
    obj = np.array([0, 1, 1, 2, 2, 2])
    t, skipped = sample_odd_one_out_triplets(room, category, obj, "object", 2, np.random.default_rng(0))
    assert skipped == 4
    np.testing.assert_array_equal(np.unique(t.anchor), [1, 2])
    np.testing.assert_array_equal(t.different, [0, 0, 0, 0])
    # a single room: nothing is "different" at context level
    t, skipped = sample_odd_one_out_triplets(room, category, obj, "context", 2, np.random.default_rng(0))
    assert skipped == 6 and len(t) == 0
    res = odd_one_out_accuracy(torch.randn(6, 4), room, category, obj, "context")
    assert res["n_anchors"] == 0 and res["skipped"] == 6 and math.isnan(res["accuracy"])


def test_triplet_correct_matches_brute_force():
    room, category, obj = random_labels(120, seed=3)
    emb = np.random.default_rng(4).normal(size=(120, 16))
    for level in LEVELS:
        t, _ = sample_odd_one_out_triplets(room, category, obj, level, 4, np.random.default_rng(1))
        expected = brute_correct(emb, t)
        got = triplet_correct(torch.from_numpy(emb), t, batch_size=37)
        assert got.dtype == torch.bool and got.shape == (len(t),)
        np.testing.assert_array_equal(got.numpy(), expected)
        assert 0 < expected.sum() < len(expected)


def test_triplet_correct_ties_are_wrong():
    t = TripletSet(np.array([0, 0, 1]), np.array([1, 2, 2]), np.array([2, 1, 0]))
    same_dir = torch.ones(3, 5)
    assert not triplet_correct(same_dir, t).any()
    # different identical to same: cos(a,s) == cos(a,d) < cos(s,d)
    emb = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    assert not triplet_correct(emb, TripletSet([0], [1], [2])).any()
    # cos(a,s) == cos(a,d) > cos(s,d): only the anchor-different tie decides
    emb = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, -1.0]])
    assert not triplet_correct(emb, TripletSet([0], [1], [2])).any()
    # cos(a,s) == cos(s,d) > cos(a,d): only the same-different tie decides
    emb = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    assert not triplet_correct(emb, TripletSet([0], [1], [2])).any()
    # a clear win, scaled inputs
    emb = torch.tensor([[1.0, 0.0], [5.0, 0.5], [0.0, -0.1]])
    assert triplet_correct(emb, TripletSet([0], [1], [2])).all()


@pytest.mark.parametrize("level", LEVELS)
def test_one_hot_of_level_label_is_perfect(level):
    room, category, obj = hierarchical_labels()
    label = {"context": room, "category": category, "object": obj}[level]
    emb = torch.nn.functional.one_hot(torch.as_tensor(label)).float()
    res = odd_one_out_accuracy(emb, room, category, obj, level, repeats=5)
    assert res["accuracy"] == 1.0 and res["stderr"] == 0.0
    assert res["skipped"] == 0 and res["n_anchors"] == len(room) and res["n_triplets"] == 5 * len(room)
    assert res["level"] == level


def test_random_gaussian_is_near_chance():
    room, category, obj = hierarchical_labels(n_rooms=4, cats_per_room=3, objs_per_cat=3, frames_per_obj=6)
    emb = torch.from_numpy(np.random.default_rng(0).normal(size=(len(room), 512)))
    for level in LEVELS:
        res = odd_one_out_accuracy(emb, room, category, obj, level, repeats=10)
        assert abs(res["accuracy"] - 1 / 3) < 0.06, res
        assert 0 < res["stderr"] < 0.05


def test_deterministic_and_independent_of_embeddings():
    room, category, obj = random_labels(200, seed=6)
    e1 = torch.randn(200, 8)
    e2 = torch.randn(200, 32, dtype=torch.float64)
    for level in LEVELS:
        assert odd_one_out_accuracy(e1, room, category, obj, level, seed=3) == odd_one_out_accuracy(
            e1, room, category, obj, level, seed=3
        )
        t, skipped = sample_odd_one_out_triplets(room, category, obj, level, 10, np.random.default_rng(3))
        for emb in (e1, e2):
            res = odd_one_out_accuracy(emb, room, category, obj, level, repeats=10, seed=3)
            per_anchor = triplet_correct(emb, t).numpy().reshape(-1, 10).mean(axis=1)
            assert res["accuracy"] == pytest.approx(per_anchor.mean())
            assert res["stderr"] == pytest.approx(per_anchor.std(ddof=1) / math.sqrt(len(per_anchor)))
            assert res["skipped"] == skipped
    a, _ = sample_odd_one_out_triplets(room, category, obj, "object", 2, np.random.default_rng(0))
    b, _ = sample_odd_one_out_triplets(room, category, obj, "object", 2, np.random.default_rng(1))
    assert not np.array_equal(a.same, b.same)


def test_bad_arguments():
    room, category, obj = random_labels(20, seed=0)
    with pytest.raises(UserError, match="context"):
        odd_one_out_accuracy(torch.randn(20, 3), room, category, obj, "scene")
    with pytest.raises(ValueError):
        odd_one_out_accuracy(torch.randn(19, 3), room, category, obj, "context")
    with pytest.raises(ValueError):
        sample_odd_one_out_triplets(room, category[:-1], obj, "context", 1, np.random.default_rng(0))
    with pytest.raises(ValueError):
        sample_odd_one_out_triplets(room, category, obj, "context", 0, np.random.default_rng(0))
    with pytest.raises(IndexError):
        triplet_correct(torch.randn(3, 2), TripletSet([0], [1], [3]))
