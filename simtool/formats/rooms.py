"""Room files: which categories live in which room (context), as stored in a dataset directory.

A video dataset directory holds up to two room files (:data:`ROOM_FILES`): the semantic rooms
(``room_assignment_balanced.json``) and a random control (``room_assignment_random.json``). The
on-disk form follows the original MVImgNet release's ``room_assignment_balanced.json``: a JSON
object mapping a room name to a list of category ids, with an optional ``"Uncertain"`` list of
categories that belong to no room and are dropped from training and evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from simtool.errors import UserError

UNCERTAIN = "Uncertain"
ROOM_FILES = {"semantic": "room_assignment_balanced.json", "random": "room_assignment_random.json"}
ROOM_LABEL_PREFIX = "room:"  # rows-table column of an assignment's room of every row


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


def write_rooms(root: Path, rooms: dict[str, dict] | None) -> dict[str, str]:
    """Write room assignments (``"semantic"`` / ``"random"`` -> MVImgNet-shaped JSON) into the
    dataset directory ``root``; returns the card's ``rooms`` (which files exist)."""
    from simtool.io import atomic_write_json

    room_files = {}
    for key, assignment in (rooms or {}).items():
        atomic_write_json(Path(root) / ROOM_FILES[key], assignment)
        room_files[key] = ROOM_FILES[key]
    return room_files
