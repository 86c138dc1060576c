"""``build-data --format mvimgnet SRC``: an object-video tree -> a video dataset.

SRC is the public MVImgNet tree ``SRC/<category id>/<object id>/images/<frame>.jpg`` (with
``sparse/0/*.bin`` camera reconstructions beside ``images/``), or the same unpacked per archive,
``SRC/mvi_XX/<category id>/...``; the archive folder's name becomes ``partition``. Any such tree
works (examples/coil20_to_tree.py writes one). Category folders named by integers keep those ids
(so the paper's room files apply as they are); otherwise categories are numbered in sorted name
order. Category names come from ``mvimgnet_category.txt`` (``id,name`` lines) in SRC, or
``--set mvimgnet.categories=FILE``, else the folder names.

Frames are sorted by the number in their file name; ``frame`` is the position among the frames
kept (a corrupt frame is skipped and the video closes up), ``length`` their count. Objects are
split within each category, in sorted object-id order: ``original`` puts every 10th object in
test and the one before it in val (80/10/10, as the original construct script), or seeded
fractions. ``--require-cameras`` skips objects whose ``sparse/`` is missing or holds no file
(MVImgNet's failed reconstructions). ``--rooms FILE`` stores a room assignment as the semantic
rooms, and a seeded random permutation of it with the same room sizes as the random control
(``--set mvimgnet.random_rooms=FILE`` to store a given one instead).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Literal, Optional, Union

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from simtool.data.builders._registry import register_builder
from simtool.data.builders._scan import files_in, frame_number, require_source, subdirs
from simtool.data.builders.parts import BuildContext, Scan, plan_table, run_image_build
from simtool.data.rooms import random_room_assignment
from simtool.data.splits import split_by_object
from simtool.errors import UserError
from simtool.formats.dataset_dir import FRAMES, video_counts
from simtool.formats.rooms import UNCERTAIN, parse_room_assignment, read_room_json, write_rooms
from simtool.specs.base import Spec
from simtool.specs.data import ImageBuildBase, check_fractions, parse_fractions


class MVImgNetOptions(Spec):
    require_cameras: bool = Field(False, description="skip objects whose sparse/ reconstruction is missing or empty")
    split: Union[Literal["original"], List[float]] = Field("original", description="original (every 10th object test, the one before it val) "
                                                                                   "or fractions train,val,test of objects per category (seeded)")
    rooms: Optional[str] = Field(None, description="room assignment JSON (room name -> category ids; 'Uncertain' = dropped) stored as the semantic rooms")
    random_rooms: Optional[str] = Field(None, description="room assignment JSON stored as the random control (default: a seeded permutation of --rooms)")
    only_rooms: bool = Field(False, description="build only the categories that have a room in --rooms")
    categories: Optional[str] = Field(None, description="category names file (id,name per line); default SRC/mvimgnet_category.txt when present")

    _fractions = field_validator("split", mode="before")(parse_fractions)
    _check = field_validator("split")(check_fractions)


class MVImgNetBuildSpec(ImageBuildBase):
    """``--format mvimgnet SRC``: SRC/[mvi_XX/]<category id>/<object id>/images/<frame>.jpg."""

    format: Literal["mvimgnet"]
    mvimgnet: MVImgNetOptions = MVImgNetOptions()


EXPECTED = "an object-video tree SRC/<category id>/<object id>/images/<frame>.jpg (or SRC/mvi_XX/<category id>/<object id>/images/...)"
CATEGORY_FILE = "mvimgnet_category.txt"
_FLUSH = 200_000


# -- shared by the video builders -----------------------------------------------------------------


def read_category_file(path: Path) -> dict[int, str]:
    """``id,name`` lines (comma or tab; a header row is skipped) -> {id: name}."""
    if not path.is_file():
        raise UserError(f"The category names file {path} does not exist; pass a file of 'id,name' lines.")
    names: dict[int, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        sep = "\t" if "\t" in line else ","
        first, _, rest = line.partition(sep)
        try:
            names[int(first.strip())] = rest.strip().strip('"')
        except ValueError:
            if n == 1:
                continue  # header
            raise UserError(f"Line {n} of {path} is not 'id,name' ({line[:60]!r}); fix the file.") from None
    return names


def category_name_list(ids: list[int], names: dict[int, str], fallback: dict[int, str]) -> list[str]:
    """Names indexed by category id (0..max id; ids without a category are named "")."""
    n = max([*ids, *names.keys()], default=-1) + 1
    return [names.get(i, fallback.get(i, "")) for i in range(n)]


def load_rooms(rooms: str | None, random_rooms: str | None, n_categories: int, seed: int) -> dict | None:
    """The semantic room assignment of ``rooms`` (validated) and its random control; None without rooms."""
    if rooms is None:
        if random_rooms is not None:
            raise UserError("random_rooms needs --rooms too (the semantic assignment it is the control of).")
        return None

    def read(path: str) -> dict:
        obj = read_room_json(path)
        parse_room_assignment(obj, n_categories, str(path))
        return obj

    semantic = read(rooms)
    random = read(random_rooms) if random_rooms else random_room_assignment(semantic, np.random.default_rng([seed, 2, 0]))
    return {"semantic": semantic, "random": random}


def qualify_objects(objs: list[tuple[str, str, str]]) -> list[str]:
    """Object names: the object folder's name, qualified by category (and partition) where it repeats."""
    from collections import Counter

    plain = Counter(o for _, _, o in objs)
    by_cat = Counter((c, o) for _, c, o in objs)
    out = []
    for p, c, o in objs:
        if plain[o] == 1:
            out.append(o)
        elif by_cat[(c, o)] == 1:
            out.append(f"{c}/{o}")
        else:
            out.append(f"{p}/{c}/{o}")
    return out


def object_splits(names: list[str], categories: list[int], rule, seed: int) -> list[str]:
    """Split of every object (within each category, in sorted name order)."""
    if rule == "original":
        out = [""] * len(names)
        by_cat: dict[int, list[int]] = {}
        for i, c in enumerate(categories):
            by_cat.setdefault(c, []).append(i)
        for members in by_cat.values():
            for j, i in enumerate(sorted(members, key=lambda i: names[i])):
                out[i] = "test" if j % 10 == 9 else "val" if j % 10 == 8 else "train"
        return out
    fr = list(rule)
    fractions = {"train": fr[0], "test": fr[1]} if len(fr) == 2 else {"train": fr[0], "val": fr[1], "test": fr[2]}
    order = np.argsort(np.asarray(names, dtype=str), kind="stable") if names else np.zeros(0, dtype=np.int64)
    rank = np.empty(len(names), dtype=np.int64)
    rank[order] = np.arange(len(names))
    split = split_by_object(rank, np.asarray(categories, dtype=np.int64), fractions, np.random.default_rng([seed, 1]))
    return [split[int(r)] for r in rank]


def split_warnings(splits: list[str], categories: list[int], rule) -> list[str]:
    """What a researcher must hear about an object split: a split that expected objects and got
    none, or categories left without test objects (too few objects for the rule)."""
    wanted = ("val", "test") if rule == "original" or len(rule) == 3 else ("test",)
    counts = {name: splits.count(name) for name in ("train", "val", "test")}
    fix = "pass --split 0.8,0.1,0.1 for a seeded split of every category"
    if rule == "original":
        how = "the original rule puts the 9th and 10th of every ten objects of a category into val and test, so smaller categories give none"
    else:
        how = "the categories have too few objects for these fractions"
    empty = [name for name in wanted if counts[name] == 0]
    if empty:
        return [f"The {' and '.join(empty)} split(s) of this dataset hold no object "
                f"({counts['train']} train, {counts['val']} val, {counts['test']} test objects): {how}; {fix}."]
    cats = sorted(set(categories))
    without = [c for c in cats if not any(s == "test" and k == c for s, k in zip(splits, categories))]
    if without:
        return [f"{len(without)} of {len(cats)} categories have no test object ({how}); their objects are evaluated nowhere; {fix}."]
    return []


def finalize_video(spec, scan: Scan, ok: np.ndarray, index: np.ndarray, tmp: Path):
    """Video index from the plan: kept frames renumbered 0..length-1 per object, sorted by (category, object, frame)."""
    t = scan.plan.filter(pa.array(ok))
    g = t.column("group").to_numpy().astype(np.int64) if t.num_rows else np.zeros(0, dtype=np.int64)
    n = len(g)
    if n == 0:
        raise UserError(f"No frame of {spec.source} could be read ({int((~ok).sum())} rejected); see the warnings above.")
    starts = np.flatnonzero(np.concatenate([[True], g[1:] != g[:-1]]))
    sizes = np.diff(np.concatenate([starts, [n]]))
    frame = np.arange(n, dtype=np.int64) - np.repeat(starts, sizes)
    length = np.repeat(sizes, sizes)
    table = pa.table({
        "category": t.column("category"),
        "object": t.column("object"),
        "frame": pa.array(frame, pa.int32()),
        "length": pa.array(length, pa.int32()),
        "partition": t.column("partition"),
        "split": t.column("split"),
        "index": pa.array(index[ok], pa.int64()),
        "path": t.column("path") if "path" in t.column_names else t.column("key"),  # the source file, relative to SRC
    }).sort_by([("category", "ascending"), ("object", "ascending"), ("frame", "ascending")])
    n_present = len(np.unique(table.column("category").to_numpy()))
    counts = video_counts(table, n, n_present)
    card = {
        "name": scan.name,
        "profile": None,
        "counts": counts,
        "category_names": list(scan.info["category_names"]),
        "rooms": write_rooms(tmp, scan.info.get("rooms")),
        "partitions": scan.info.get("partitions", []),
    }
    msg = (f"video dataset, {n} frames of {counts['objects']} objects in {n_present} categories "
           f"(objects train/val/test {counts['train_objects']}/{counts['val_objects']}/{counts['test_objects']})")
    return {FRAMES: table}, card, {"images": n, "categories": n_present, "message": msg}


# -- the tree ------------------------------------------------------------------------------------


def _has_objects(folder: Path) -> bool:
    """Does ``folder`` look like a category folder (some child holds an images/ folder)?"""
    return any((child / "images").is_dir() for child in subdirs(folder))


def _has_cameras(obj: Path) -> bool:
    sparse = obj / "sparse"
    if not sparse.is_dir():
        return False
    for path in sparse.rglob("*"):
        if path.is_file() and path.stat().st_size > 0:
            return True
    return False


def scan_mvimgnet(spec, ctx: BuildContext, progress=None) -> Scan:
    src = require_source(spec, EXPECTED)
    opts = spec.mvimgnet
    top = subdirs(src)
    if any(_has_objects(d) for d in top):
        partitions = [("", src)]
    else:
        partitions = [(d.name, d) for d in top if any(_has_objects(c) for c in subdirs(d))]
    if not partitions:
        raise UserError(f"{src} does not look like an MVImgNet tree: found no <object>/images/ folder; --format mvimgnet expects {EXPECTED}.")
    # categories
    cats = [(pname, cdir) for pname, pdir in partitions for cdir in subdirs(pdir)]
    cat_names = sorted({c.name for _, c in cats})
    numeric = all(n.isdigit() for n in cat_names)
    cat_id = {n: int(n) for n in cat_names} if numeric else {n: i for i, n in enumerate(cat_names)}
    names_file = Path(opts.categories) if opts.categories else (src / CATEGORY_FILE)
    names = read_category_file(names_file) if (opts.categories or names_file.is_file()) else {}
    category_names = category_name_list(sorted(cat_id.values()), names, {i: n for n, i in cat_id.items()})
    rooms = load_rooms(opts.rooms, opts.random_rooms, len(category_names), spec.seed)
    skipped: dict[str, int] = {}
    rejected: list[tuple[str, str]] = []
    if rooms and opts.only_rooms:
        room_of, _ = parse_room_assignment(rooms["semantic"], len(category_names), opts.rooms)
        before = len({c.name for _, c in cats})
        cats = [(p, c) for p, c in cats if room_of[cat_id[c.name]] >= 0]
        skipped["categories_without_room"] = before - len({c.name for _, c in cats})
    elif opts.only_rooms:
        raise UserError("only_rooms needs --rooms FILE (the rooms whose categories to keep).")
    cats.sort(key=lambda pc: (pc[0], cat_id[pc[1].name]))
    # objects
    objects: list[tuple[str, str, str, Path]] = []
    no_cam = no_frames = 0
    for pname, cdir in cats:
        for obj in subdirs(cdir):
            rel = obj.relative_to(src).as_posix()
            if not (obj / "images").is_dir():
                rejected.append((rel, "no images/ folder"))
                no_frames += 1
                continue
            if opts.require_cameras and not _has_cameras(obj):
                rejected.append((rel, "no camera reconstruction (sparse/ is missing or empty)"))
                no_cam += 1
                continue
            objects.append((pname, cdir.name, obj.name, obj))
        if progress:
            progress(len(objects), 0, "scanning objects")
    if opts.require_cameras:
        skipped["objects_without_cameras"] = no_cam
    qualified = qualify_objects([(p, c, o) for p, c, o, _ in objects])
    # frames (in store order: partition, category, object, frame number)
    frames_of = []
    for (pname, cname, _oname, obj), q in zip(objects, qualified):
        frames = sorted(files_in(obj / "images"), key=lambda f: (frame_number(f.name), f.name))
        if not frames:
            rejected.append((obj.relative_to(src).as_posix(), "no frames in images/"))
            no_frames += 1
            continue
        frames_of.append((pname, cat_id[cname], q, obj, frames))
    skipped["objects_without_frames"] = no_frames
    if not frames_of:
        raise UserError(f"{src} has no object with frames; --format mvimgnet expects {EXPECTED}.")
    splits = object_splits([q for _, _, q, _, _ in frames_of], [c for _, c, _, _, _ in frames_of], opts.split, spec.seed)
    for line in split_warnings(splits, [c for _, c, _, _, _ in frames_of], opts.split):
        ctx.say(line)
    batches: list[pa.Table] = []
    cols: dict[str, list] = {k: [] for k in ("key", "member", "group", "partition", "category", "object", "split")}

    def flush():
        if cols["key"]:
            batches.append(plan_table(cols, {"category": pa.int64(), "object": pa.string(), "split": pa.string()}))
            for v in cols.values():
                v.clear()

    for g, ((pname, cid, q, _obj, frames), split) in enumerate(zip(frames_of, splits)):
        for f in frames:
            rel = f.relative_to(src).as_posix()
            cols["key"].append(rel)
            cols["member"].append(-1)
            cols["group"].append(g)
            cols["partition"].append(pname)
            cols["category"].append(cid)
            cols["object"].append(q)
            cols["split"].append(split)
        if len(cols["key"]) >= _FLUSH:
            flush()
    flush()
    plan = pa.concat_tables(batches)
    info = {"category_names": category_names, "rooms": rooms, "partitions": [p for p, _ in partitions if p]}
    if rooms:
        present = {c for _, c, _, _, _ in frames_of}
        named = {c for k, v in rooms["semantic"].items() if k != UNCERTAIN for c in v}
        absent = sorted(named - present)
        if absent:
            ctx.say(f"{len(absent)} categories of the rooms in {opts.rooms} have no frames here (first: {absent[0]}).")
    return Scan(kind="video", name=f"mvimgnet-{src.resolve().name}", reader=("files", str(src.resolve())), plan=plan, info=info,
                rejected=rejected, skipped=skipped)


@register_builder("mvimgnet", spec=MVImgNetBuildSpec)
def build_mvimgnet(spec, progress=None, ctx: BuildContext | None = None) -> dict:
    return run_image_build(spec, scan_mvimgnet, finalize_video, progress, ctx)
