"""Making room assignments: the random control of a semantic assignment (the file format is
:mod:`simtool.formats.rooms`)."""

from __future__ import annotations

import numpy as np

from simtool.formats.rooms import UNCERTAIN


def random_room_assignment(semantic: dict[str, list[int]], rng: np.random.Generator, tries: int = 1000) -> dict[str, list[int]]:
    """A random control assignment with the same room sizes as ``semantic``.

    Categories are permuted uniformly at random and dealt into rooms of the original sizes. A
    draw is rejected (up to ``tries`` times) when some random room keeps more than half of one
    semantic room's categories, so that the control carries no semantic room by accident.
    """
    rooms = {k: list(v) for k, v in semantic.items() if k != UNCERTAIN}
    cats = np.array([c for v in rooms.values() for c in v], dtype=np.int64)
    sizes = [len(v) for v in rooms.values()]
    sem_room = {c: i for i, v in enumerate(rooms.values()) for c in v}
    best = None
    for _ in range(tries):
        perm = rng.permutation(cats)
        parts, start = [], 0
        for size in sizes:
            parts.append(sorted(int(c) for c in perm[start : start + size]))
            start += size
        worst = 0
        for part in parts:
            counts = np.bincount([sem_room[c] for c in part], minlength=len(sizes))
            frac = (counts / np.maximum(np.array(sizes), 1)).max()
            worst = max(worst, frac)
        best = parts
        if worst <= 0.5:
            break
    out = {f"random_{i}": part for i, part in enumerate(best)}
    if UNCERTAIN in semantic:
        out[UNCERTAIN] = list(semantic[UNCERTAIN])
    return out
