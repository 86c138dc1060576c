"""Dataset builders for ``simtool build-data``, declared as data: format name → builder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from simtool.data.dataset_dir import DatasetWriter, split_by_object
from simtool.data.images import encode_image
from simtool.data.rooms import random_room_assignment
from simtool.errors import UserError
from simtool.specs.data import BuildDataSpec

ROOM_NAMES = ["kitchen", "garage", "garden", "bathroom", "office", "bedroom", "attic", "workshop"]


def build_toyworld(spec: BuildDataSpec, progress: Callable[[int, int], None] | None = None) -> dict:
    """Render the procedural toy world and write it as a dataset directory."""
    from simtool.data.toyworld import render_toyworld

    if spec.source:
        raise UserError("The toyworld format is generated, not read: drop the SRC argument.")
    tw = spec.toyworld
    t0 = time.time()
    world = render_toyworld(tw, seed=spec.seed, progress=progress)
    render_s = time.time() - t0
    rng = np.random.default_rng([spec.seed, 1])
    split_of = split_by_object(world.object, world.category, tw.split.model_dump(), rng)
    writer = DatasetWriter(Path(spec.out), name=f"toyworld-seed{spec.seed}")
    for i in range(len(world.images)):
        obj = int(world.object[i])
        writer.add(
            encode_image(world.images[i], tw.image_format),
            category=int(world.category[i]),
            obj=f"obj{obj:05d}",
            frame=int(world.frame[i]),
            length=tw.frames_per_object,
            split=split_of[obj],
            partition="toyworld",
        )
    semantic = {
        ROOM_NAMES[r]: [int(c) for c in np.flatnonzero(world.room_of_category == r)] for r in range(tw.n_rooms)
    }
    random = random_room_assignment(semantic, np.random.default_rng([spec.seed, 2]))
    writer.write(
        world.category_names,
        rooms={"semantic": semantic, "random": random},
        card_extra={"command": "build-data", "format": "toyworld", "spec": spec.to_dict(), "render_seconds": round(render_s, 2)},
    )
    return {"out": str(spec.out), "images": len(world.images), "categories": len(world.category_names), "seconds": round(time.time() - t0, 2)}


BUILDERS: dict[str, Callable[..., dict]] = {"toyworld": build_toyworld}


def build_dataset(spec: BuildDataSpec, progress=None) -> dict:
    try:
        builder = BUILDERS[spec.format]
    except KeyError:
        raise UserError(f"Unknown --format {spec.format!r}; choose one of: {', '.join(BUILDERS)}.") from None
    out = Path(spec.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"The output {out} already exists; choose another --out or delete it first.")
    return builder(spec, progress=progress)
