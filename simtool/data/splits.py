"""Splitting a collection into train / val / test without sharing an object between splits."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def split_by_object(objects: np.ndarray, categories: np.ndarray, fractions: dict[str, float], rng: np.random.Generator) -> dict[int, str]:
    """Assign every object to a split, per category, so splits never share an object.

    ``objects``/``categories``: (N,) per-row ids. In each category the objects are shuffled and the
    first ``round(test*n)`` go to test, the next ``round(val*n)`` to val, the rest to train (at least
    one object stays in train).
    """
    out: dict[int, str] = {}
    pairs = np.unique(np.stack([categories, objects], 1), axis=0)
    for cat in np.unique(pairs[:, 0]):
        objs = rng.permutation(pairs[pairs[:, 0] == cat, 1])
        n = len(objs)
        n_test = int(round(fractions.get("test", 0) * n))
        n_val = int(round(fractions.get("val", 0) * n))
        while n_test + n_val > n - 1 and (n_test or n_val):
            if n_val >= n_test and n_val:
                n_val -= 1
            else:
                n_test -= 1
        for i, o in enumerate(objs):
            out[int(o)] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return out


def split_names(n_fractions: int) -> tuple[str, ...]:
    return ("train", "test") if n_fractions == 2 else ("train", "val", "test")


def split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Sizes of the splits of ``n`` things: round(f * n) for val and test, the rest to train."""
    names = split_names(len(fractions))
    sizes = {name: int(round(f * n)) for name, f in zip(names, fractions)}
    sizes["train"] = n - sum(v for k, v in sizes.items() if k != "train")
    while sizes["train"] < 0:
        k = max((k for k in sizes if k != "train"), key=lambda k: sizes[k])
        sizes[k] -= 1
        sizes["train"] += 1
    return [sizes[name] for name in names]


def assign_splits(n: int, fractions: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """A seeded split label (str array (n,)) for ``n`` things in the given fractions."""
    names = split_names(len(fractions))
    labels = np.repeat(np.array(names), split_counts(n, fractions))
    out = np.empty(n, dtype=labels.dtype if n else "<U5")
    out[rng.permutation(n)] = labels
    return out
