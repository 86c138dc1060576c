"""``build-data --format rooms TABLE --out DIR``: room assignment files from a category -> room table.

TABLE is a CSV/TSV file with a ``category`` and a ``room`` column (header row), or two columns
without a header. A category is an integer id, or a name resolved through ``--categories FILE``
(``id,name`` lines, e.g. MVImgNet's ``mvimgnet_category.txt``). An empty room or ``Uncertain``
puts the category in ``"Uncertain"`` (dropped from training and evaluation).

Writes into DIR (atomically):

* ``room_assignment_balanced.json`` -- every room keeps its first ``per_room`` categories in table
  order (default: as many as the smallest room has), so all rooms are the same size; the rest go to
  ``"Uncertain"``. Room order = order of first appearance in the table.
* ``room_assignment_balanced_random_<i>.json`` for i < ``--random N`` -- the same categories dealt
  at random into rooms of the same sizes (seed ``--seed``, draw i; a draw that keeps more than half of
  a semantic room together is redrawn), the paper's control. ``random_0`` equals the random control
  ``--format mvimgnet --rooms`` stores with the same seed.

The JSON shape is the MVImgNet release's: room name -> list of category ids, ``"Uncertain"`` last.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Literal, Optional

import numpy as np
from pydantic import Field

from simtool.data.builders._registry import register_builder
from simtool.data.builders.mvimgnet import read_category_file
from simtool.data.rooms import random_room_assignment
from simtool.errors import UserError
from simtool.formats.dataset_dir import new_dataset_dir
from simtool.formats.rooms import UNCERTAIN, parse_room_assignment
from simtool.io import atomic_write_json
from simtool.specs.base import Spec
from simtool.specs.data import BuildBase


class RoomsOptions(Spec):
    random: int = Field(2, ge=0, le=1000, description="number of seeded random assignments with the same room sizes")
    per_room: Optional[int] = Field(None, ge=1, description="categories per room (default: the smallest room's size); the rest go to 'Uncertain'")
    categories: Optional[str] = Field(None, description="category names file (id,name per line) to resolve category names in the table")


class RoomsBuildSpec(BuildBase):
    """``--format rooms TABLE``: room assignment JSONs from a category -> room table."""

    format: Literal["rooms"]
    rooms: RoomsOptions = RoomsOptions()


BALANCED = "room_assignment_balanced.json"
EXPECTED = "a CSV/TSV table with the columns category and room (one row per category)"


def read_room_table(path: Path, names_file: str | None) -> list[tuple[int, str]]:
    if not path.is_file():
        raise UserError(f"The room table {path} does not exist; --format rooms expects {EXPECTED}.")
    lines = [line for line in path.read_text(encoding="utf-8-sig", errors="replace").splitlines() if line.strip()]
    if not lines:
        raise UserError(f"The room table {path} is empty; --format rooms expects {EXPECTED}.")
    delim = "\t" if "\t" in lines[0] else ";" if ";" in lines[0] and "," not in lines[0] else ","
    rows = [[c.strip() for c in r] for r in csv.reader(lines, delimiter=delim)]
    head = [c.lower() for c in rows[0]]
    if "category" in head and "room" in head:
        ci, ri, body = head.index("category"), head.index("room"), rows[1:]
    else:
        ci, ri, body = 0, 1, rows
        if body and len(body[0]) >= 2 and not body[0][0].lstrip("-").isdigit() and names_file is None:
            body = body[1:]  # a header with other names
    by_name = {}
    if names_file:
        by_name = {v.lower(): k for k, v in read_category_file(Path(names_file)).items()}
    out, seen = [], set()
    for n, r in enumerate(body, 2 if body is not rows else 1):
        if len(r) <= max(ci, ri):
            raise UserError(f"Row {n} of {path} has no room column; --format rooms expects {EXPECTED}.")
        cat, room = r[ci], r[ri]
        if cat.lstrip("-").isdigit():
            cid = int(cat)
        elif cat.lower() in by_name:
            cid = by_name[cat.lower()]
        else:
            hint = "it is not in the --categories file" if names_file else "pass --categories FILE (id,name lines) to use category names"
            raise UserError(f"Row {n} of {path} names the category {cat!r}, which is not an integer id; {hint}.")
        if cid < 0:
            raise UserError(f"Row {n} of {path} has the negative category id {cid}; ids start at 0.")
        if cid in seen:
            raise UserError(f"Category {cid} appears twice in {path}; each category lives in one room.")
        seen.add(cid)
        out.append((cid, room))
    return out


def balanced_rooms(rows: list[tuple[int, str]], per_room: int | None) -> dict[str, list[int]]:
    rooms: dict[str, list[int]] = {}
    uncertain: list[int] = []
    for cid, room in rows:
        if not room or room.lower() == UNCERTAIN.lower():
            uncertain.append(cid)
        else:
            rooms.setdefault(room, []).append(cid)
    if len(rooms) < 2:
        raise UserError(f"The room table names {len(rooms)} room(s); a room assignment needs at least two.")
    k = per_room or min(len(v) for v in rooms.values())
    small = [r for r, v in rooms.items() if len(v) < k]
    if small:
        raise UserError(f"Room {small[0]!r} has {len(rooms[small[0]])} categories, fewer than --set rooms.per_room={k}; lower it or add categories.")
    out = {}
    for room, cats in rooms.items():
        out[room] = cats[:k]
        uncertain.extend(cats[k:])
    if uncertain:
        out[UNCERTAIN] = sorted(uncertain)
    return out


@register_builder("rooms", spec=RoomsBuildSpec)
def build_rooms(spec, progress=None, ctx=None) -> dict:
    t0 = time.time()
    if not spec.source:
        raise UserError(f"--format rooms reads SRC, {EXPECTED}; pass it as the argument after the options.")
    opts = spec.rooms
    rows = read_room_table(Path(spec.source), opts.categories)
    semantic = balanced_rooms(rows, opts.per_room)
    n_cat = max(cid for cid, _ in rows) + 1
    parse_room_assignment(semantic, n_cat, spec.source)
    randoms = [random_room_assignment(semantic, np.random.default_rng([spec.seed, 2, i])) for i in range(opts.random)]
    with new_dataset_dir(spec.out) as tmp:
        atomic_write_json(tmp / BALANCED, semantic)
        for i, r in enumerate(randoms):
            atomic_write_json(tmp / f"room_assignment_balanced_random_{i}.json", r)
    sizes = [len(v) for k, v in semantic.items() if k != UNCERTAIN]
    msg = (f"{len(sizes)} rooms of {sizes[0]} categories ({len(semantic.get(UNCERTAIN, []))} uncertain) in {BALANCED}"
           + (f" and {opts.random} random assignment(s)" if opts.random else ""))
    return {"out": str(spec.out), "images": 0, "categories": sum(sizes), "seconds": round(time.time() - t0, 2), "message": msg, "kind": "rooms"}
