"""Simulated triplet judgements over the toy world's objects, from a known latent similarity.

The toy world (:mod:`simtool.data.toyworld`) knows how every object was generated. A simulated
observer judges triplets of objects from a **latent similarity** of those parameters, so a method
fitted to the judgements can be checked against the truth.

Latent similarity of objects ``i`` and ``j`` (a number in [0, 2.2])::

    s_ij = 1.0 * [family_i == family_j]                                   shape family (category)
         + 0.6 * exp(-(dhue_ij / 0.1)^2)                                  hue, dhue = circular distance in turns (<= 0.5)
         + 0.3 * [texture_i == texture_j]                                 surface texture (plain, stripes, checker, dots, gradient)
         + 0.3 * [family_i == family_j] * exp(-(dprop_ij / 0.2)^2)        proportions, within a family

where ``dprop_ij`` is the root mean square difference of the logarithms of the object's proportion
factors (the family's parameters, then the three stretch factors). Proportions only compare within
a family (a torus's and a chair's parameters mean different things). The **latent distance** is
``2.2 - s_ij``.

The noisy observer (temperature ``tau = 0.1``):

* odd-one-out: shown three objects, it names the pair ``(a, b)`` as most similar with probability
  ``softmax(s_ab / tau, s_ac / tau, s_bc / tau)``; the triplet is ``(a, b, odd)``;
* directed: shown an anchor ``a`` and ``b``, ``c``, it calls ``b`` closer with probability
  ``sigmoid((s_ab - s_ac) / tau)``; the triplet is ``(a, closer, farther)``.

Triplets are three distinct objects drawn uniformly. The split is the toy world's object split, in
the paper's staged layout: triplets are drawn among the training and validation objects together
(the teachers' part) and among the test objects alone (never seen before the test); a triplet's
split is the split its three objects share, "" when it mixes training and validation objects. By
default ``per_object = 40`` triplets of each kind per object of the region.
"""

from __future__ import annotations

import numpy as np

WEIGHTS = {"family": 1.0, "hue": 0.6, "texture": 0.3, "proportions": 0.3}
HUE_WIDTH = 0.1
PROPORTION_WIDTH = 0.2
OBSERVER_TAU = 0.1
PER_OBJECT = 40
MAX_SIMILARITY = float(sum(WEIGHTS.values()))


def latent_similarity(objects: dict) -> np.ndarray:
    """``(O, O)`` float64 latent similarity of the objects (``ToyWorld.objects``), see the module docstring."""
    fam = np.asarray(objects["category"])
    same = fam[:, None] == fam[None, :]
    hue = np.asarray(objects["hue"], dtype=np.float64)
    dh = np.abs(hue[:, None] - hue[None, :]) % 1.0
    dh = np.minimum(dh, 1.0 - dh)
    tex = np.asarray(objects["texture"])
    logs = np.log(np.concatenate([np.asarray(objects["proportions"], dtype=np.float64), np.asarray(objects["stretch"], dtype=np.float64)], axis=1))
    diff = logs[:, None, :] - logs[None, :, :]
    valid = np.isfinite(diff)
    msq = np.where(valid, diff * diff, 0.0).sum(-1) / np.maximum(valid.sum(-1), 1)
    prop = np.exp(-msq / PROPORTION_WIDTH**2)
    return (WEIGHTS["family"] * same + WEIGHTS["hue"] * np.exp(-((dh / HUE_WIDTH) ** 2))
            + WEIGHTS["texture"] * (tex[:, None] == tex[None, :]) + WEIGHTS["proportions"] * same * prop)


def latent_distance(objects: dict) -> np.ndarray:
    return MAX_SIMILARITY - latent_similarity(objects)


def _distinct_triples(pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    m = len(pool)
    i = rng.integers(0, m, n)
    j = (i + 1 + rng.integers(0, m - 1, n)) % m
    k = rng.integers(0, m - 2, n)
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    k = k + (k >= lo)
    k = k + (k >= hi)
    return pool[np.stack([i, j, k], 1)]


def judge(sim: np.ndarray, triples: np.ndarray, kind: str, rng: np.random.Generator, tau: float = OBSERVER_TAU) -> np.ndarray:
    """The observer's judgement of ``triples`` (T, 3) as labelled triplets of ``kind``."""
    a, b, c = triples.T
    if kind == "directed":
        from scipy.special import expit

        p_b = expit((sim[a, b] - sim[a, c]) / tau)
        b_closer = rng.random(len(a)) < p_b
        return np.stack([a, np.where(b_closer, b, c), np.where(b_closer, c, b)], 1)
    logits = np.stack([sim[a, b], sim[a, c], sim[b, c]], 1) / tau
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    choice = (rng.random(len(a))[:, None] > np.cumsum(p, 1)).sum(1)
    choice = np.minimum(choice, 2)
    order = np.array([[0, 1, 2], [0, 2, 1], [1, 2, 0]])[choice]
    return np.take_along_axis(triples, order, 1)


def simulate(objects: dict, object_split: np.ndarray, seed: int, per_object: int = PER_OBJECT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(triplets (T, 3), kind (T,), split (T,))`` of both kinds over the objects (see the module docstring).

    ``object_split``: (O,) "train" | "val" | "test" of every object."""
    sim = latent_similarity(objects)
    rng = np.random.default_rng([int(seed), 31])
    trips, kinds, splits = [], [], []
    regions = [("learn", np.flatnonzero(np.isin(object_split, ["train", "val"]))), ("test", np.flatnonzero(object_split == "test"))]
    for region, pool in regions:
        if len(pool) < 3:
            continue
        n = per_object * len(pool)
        for kind in ("odd-one-out", "directed"):
            t = judge(sim, _distinct_triples(pool, n, rng), kind, rng)
            if region == "learn":
                rng.random(n)  # the draw of the earlier per-triplet split: kept, so the judgements stay the same
            s = object_split[t]
            split = np.where((s[:, 0] == s[:, 1]) & (s[:, 1] == s[:, 2]), s[:, 0], "").astype("<U5")
            trips.append(t)
            kinds.append(np.full(n, kind, dtype="<U11"))
            splits.append(split)
    return np.concatenate(trips), np.concatenate(kinds), np.concatenate(splits)
