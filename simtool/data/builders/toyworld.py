"""``build-data --format toyworld``: render the procedural toy world into a dataset directory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from simtool.data.builders import register_builder
from simtool.data.images import encode_image
from simtool.data.rooms import random_room_assignment
from simtool.data.splits import split_by_object
from simtool.errors import UserError
from simtool.formats.dataset_dir import DatasetWriter

ROOM_NAMES = ["kitchen", "garage", "garden", "bathroom", "office", "bedroom", "attic", "workshop"]
PROFILE = "toyworld"


@register_builder("toyworld")
def build_toyworld(spec, progress: Callable[[int, int], None] | None = None) -> dict:
    """Render the toy world of ``spec.toyworld`` (seed ``spec.seed``) and write it to ``spec.out``."""
    from simtool.data.toyworld import render_toyworld

    if spec.source:
        raise UserError("The toyworld format is generated, not read: drop the SRC argument.")
    tw = spec.toyworld
    t0 = time.time()
    world = render_toyworld(tw, seed=spec.seed, progress=progress)
    render_s = time.time() - t0
    rng = np.random.default_rng([spec.seed, 1])
    split_of = split_by_object(world.object, world.category, tw.split.model_dump(), rng)
    semantic = {ROOM_NAMES[r]: [int(c) for c in np.flatnonzero(world.room_of_category == r)] for r in range(tw.n_rooms)}
    random = random_room_assignment(semantic, np.random.default_rng([spec.seed, 2]))
    with DatasetWriter(Path(spec.out), name=f"toyworld-seed{spec.seed}", profile=PROFILE) as writer:
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
        writer.write(
            world.category_names,
            rooms={"semantic": semantic, "random": random},
            card_extra={"command": "build-data", "format": "toyworld", "spec": spec.to_dict(), "render_seconds": round(render_s, 2)},
        )
    return {"out": str(spec.out), "images": len(world.images), "categories": len(world.category_names), "seconds": round(time.time() - t0, 2)}
