"""Room (context) assignments: which categories live in which room.

The on-disk form follows the original MVImgNet release's ``room_assignment_balanced.json``: a JSON
object mapping a room name to a list of category ids, with an optional ``"Uncertain"`` list of
categories that belong to no room and are dropped from training and evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from simtool.errors import UserError

UNCERTAIN = "Uncertain"


def parse_room_assignment(obj: dict, n_categories: int, source: str) -> tuple[np.ndarray, list[str]]:
    """Turn a room-assignment mapping into ``room_of_category`` (int64 (C,), -1 = dropped) and room names."""
    if not isinstance(obj, dict) or not obj:
        raise UserError(f"The room assignment {source} must be a JSON object mapping room names to category ids.")
    room_of_category = np.full(n_categories, -1, dtype=np.int64)
    names: list[str] = []
    for name, cats in obj.items():
        if not isinstance(cats, list) or not all(isinstance(c, int) for c in cats):
            raise UserError(f"Room {name!r} in {source} must list integer category ids.")
        bad = [c for c in cats if not 0 <= c < n_categories]
        if bad:
            raise UserError(
                f"Room {name!r} in {source} names category id {bad[0]}, but the dataset has categories 0..{n_categories - 1}."
            )
        if name == UNCERTAIN:
            continue
        room_id = len(names)
        names.append(name)
        for c in cats:
            if room_of_category[c] != -1:
                raise UserError(f"Category {c} is in two rooms in {source}; each category may live in one room only.")
            room_of_category[c] = room_id
    if len(names) < 2:
        raise UserError(f"The room assignment {source} has fewer than two rooms; context needs at least two.")
    return room_of_category, names


def read_room_json(path: str | Path, instead: str = "a JSON file mapping room names to category ids") -> dict:
    """The raw JSON object of a room assignment file (validate it with :func:`parse_room_assignment`);
    a missing file or bad JSON is one sentence, suggesting ``instead``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"The room assignment file {path} does not exist; pass {instead}.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"The room assignment file {path} is not valid JSON ({exc.msg} at line {exc.lineno}).") from None


def load_room_assignment(path: str | Path, n_categories: int) -> tuple[np.ndarray, list[str]]:
    obj = read_room_json(path, "'semantic', 'random' or a JSON file")
    return parse_room_assignment(obj, n_categories, str(path))


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
