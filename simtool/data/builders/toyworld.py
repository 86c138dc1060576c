"""``build-data --format toyworld``: render the procedural toy world into a dataset directory.

Besides the video dataset (the frames, rooms and splits), the directory holds ``triplets/``, a
complete ``triplets`` dataset over the same objects: one item per object (id = the video's object
name, class = its category, split = its split), every frame of the object as the item's images
(``item_images.parquet``, the same encoded bytes), and simulated odd-one-out and directed judgements
drawn by a noisy observer from a documented latent similarity of the objects' generating parameters
(:mod:`simtool.data.toy_triplets`). Its card names the ``toyworld`` profile. The video dataset's rows,
images and fingerprint are what they were without it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from pydantic import Field

from simtool.data.builders._registry import register_builder
from simtool.data.builders.triplets import layout_counts
from simtool.data.rooms import random_room_assignment
from simtool.data.splits import split_by_object
from simtool.errors import UserError
from simtool.formats.dataset_dir import IMAGES, ITEM_IMAGES, ITEMS, TRIPLETS, DatasetWriter, write_tables
from simtool.formats.image_codec import encode_image
from simtool.formats.image_store import ImageSpool
from simtool.specs.base import Spec
from simtool.specs.data import BuildBase, SplitSpec


class ToyWorldSpec(Spec):
    """A procedurally rendered world: rooms × categories × objects × turntable frames.

    Category = a 3-D shape family, object = a variation within it (colour, texture,
    proportions), frame = turntable viewpoint. With ``room_backgrounds: false`` every room shares
    one background, so rooms (contexts) can only be learned from co-occurrence in time.
    ``background: none`` renders the same world (objects, views, splits, rooms, triplets: the same
    index) on one plain grey: the background-removed twin of a world, for ``evaluate --images``.
    """

    n_rooms: int = Field(4, ge=2, le=8)
    categories_per_room: int = Field(4, ge=1, le=8)
    objects_per_category: int = Field(60, ge=3, le=200)
    frames_per_object: int = Field(4, ge=2, le=360)
    image_size: int = Field(64, ge=16, le=512)
    room_backgrounds: bool = False
    background: Literal["scene", "none"] = Field(
        "scene", description="scene: a wall and floor (one hue per room with room_backgrounds); none: one plain grey (the background-removed twin)")
    hue_spread: float = Field(0.15, ge=0, le=1, description="object hues vary within ±spread/2 turn of their family's typical hue (1 = any hue)")
    image_format: Literal["png", "jpeg"] = "png"
    split: SplitSpec = SplitSpec(train=0.7, val=0.1, test=0.2)




class ToyWorldBuildSpec(BuildBase):
    """``--format toyworld``: the procedural toy world (no SRC)."""

    format: Literal["toyworld"]
    toyworld: ToyWorldSpec = ToyWorldSpec()


ROOM_NAMES = ["kitchen", "garage", "garden", "bathroom", "office", "bedroom", "attic", "workshop"]
PROFILE = "toyworld"
TRIPLETS_DIR = "triplets"  # the toy triplets dataset inside a toy world's directory


def _world_name(spec) -> str:
    """The dataset's name: ``toyworld-seed<S>``, ``-nobackground`` for a background-removed twin (so
    ``evaluate --images`` conditions name it apart from its world)."""
    return f"toyworld-seed{spec.seed}" + ("-nobackground" if spec.toyworld.background == "none" else "")


def _write_triplets(root: Path, world, spec, split_of: dict, encoded: ImageSpool) -> dict:
    """Write the toy triplets dataset into ``root`` (see the module docstring); returns its card."""
    import pyarrow as pa

    from simtool.data import toy_triplets

    n_obj = len(world.objects["category"])
    obj_split = np.array([split_of[o] for o in range(n_obj)])
    trip, kind, split = toy_triplets.simulate(world.objects, obj_split, spec.seed)
    first = np.flatnonzero(world.frame == 0)
    items = {"item": np.arange(n_obj), "id": [f"obj{o:05d}" for o in range(n_obj)],
             "name": [world.category_names[int(c)] for c in world.objects["category"]], "index": first[np.argsort(world.object[first])],
             "split": obj_split.tolist(), "class": world.objects["category"]}
    tables = {
        ITEMS: pa.table(items),
        TRIPLETS: pa.table({"a": trip[:, 0], "b": trip[:, 1], "c": trip[:, 2], "kind": kind.tolist(), "split": split.tolist()}),
        ITEM_IMAGES: pa.table({"item": world.object, "index": np.arange(len(world.object)), "path": [""] * len(world.object)}),
    }
    digest = encoded.write_h5(root / IMAGES)
    counts = {"items": n_obj, "items_with_image": n_obj, "images": len(world.object), "triplets": int(len(trip))}
    counts.update(layout_counts(trip, split, obj_split, "item"))
    counts.update({f"{k}_triplets": int((kind == k).sum()) for k in ("odd-one-out", "directed")})
    card = {"name": f"{_world_name(spec)}-triplets", "profile": PROFILE, "counts": counts, "split_by": "item", "triplet_kind": "mixed",
            "layout": {"split_by": "item", "fractions": spec.toyworld.split.model_dump(), "seed": spec.seed, "duplicates": "keep",
                       "parts": layout_counts(trip, split, obj_split, "item")},
            "class_names": list(world.category_names),
            "latent": {"weights": toy_triplets.WEIGHTS, "hue_width": toy_triplets.HUE_WIDTH, "proportion_width": toy_triplets.PROPORTION_WIDTH,
                       "observer_tau": toy_triplets.OBSERVER_TAU, "per_object": toy_triplets.PER_OBJECT, "definition": "simtool.data.toy_triplets"},
            "built_by": {"command": "build-data", "format": "toyworld", "spec": spec.to_dict(), "part": TRIPLETS_DIR}}
    return write_tables(root, "triplets", tables, digest, card)


@register_builder("toyworld", spec=ToyWorldBuildSpec)
def build_toyworld(spec, progress: Callable[..., None] | None = None, ctx=None) -> dict:
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
    with DatasetWriter(Path(spec.out), name=_world_name(spec), profile=PROFILE) as writer:
        (writer.tmp / TRIPLETS_DIR).mkdir()
        spool = ImageSpool(writer.tmp / TRIPLETS_DIR / ".images.raw")
        for i in range(len(world.images)):
            obj = int(world.object[i])
            data = encode_image(world.images[i], tw.image_format)
            spool.add(data)
            writer.add(
                data,
                category=int(world.category[i]),
                obj=f"obj{obj:05d}",
                frame=int(world.frame[i]),
                length=tw.frames_per_object,
                split=split_of[obj],
                partition="toyworld",
            )
        _write_triplets(writer.tmp / TRIPLETS_DIR, world, spec, split_of, spool)
        writer.write(
            world.category_names,
            rooms={"semantic": semantic, "random": random},
            card_extra={"command": "build-data", "format": "toyworld", "spec": spec.to_dict(), "render_seconds": round(render_s, 2)},
        )
    return {"out": str(spec.out), "images": len(world.images), "categories": len(world.category_names), "seconds": round(time.time() - t0, 2)}
