"""``build-data --format triplets``: items (optionally with images) and triplet judgements.

Generic: ``--triplets FILE`` (repeatable; files are concatenated) ``--kind odd-one-out|directed``
with items from ``--images DIR`` (one item per image, file stem = item id) and/or ``--items
FILE`` (CSV/TSV with a header row, one row per item in order; the ids are the 0-based row numbers
unless the file has an ``id`` column or ``--set triplets.id_column=NAME``; names from a ``name``
column, ``--set triplets.name_column=NAME``, else the first column). With both, an image belongs
to the item whose id is its stem. With neither, the items are the ids the triplet files use.

Triplet lines hold three ids separated by spaces, commas or semicolons; a cell like
``images/<id>.jpg`` means the item ``<id>``; a first line of column names is skipped. odd-one-out:
the first two are the pair judged most similar, the third the odd one (THINGS); directed:
anchor, closer, farther (Zappos, Yummly, IHSJ). Dropped and counted in the card's ``dropped``:
``malformed`` lines, ``unknown_item`` (an id that is no item), ``self`` (a repeated id),
``duplicate`` (the same judgement again: the same ordered triplet; for odd-one-out the pair is
unordered) and, with ``--split-by item``, ``cross_split`` (items in different splits).

Splits (seeded): ``--split-by triplet`` (default) shuffles the triplets into ``--split``
fractions (0.9,0.1 = train, test; three values = train, val, test) and every item is in every
split; ``--split-by item`` splits the items and keeps a triplet only inside one split.

Presets (``--preset NAME SRC``; explicit options win):

* ``things``: SRC as assembled for the THINGS similarity data: ``Main/things_concepts.tsv`` (the
  concepts in order; header row; the ``uniqueID`` column (else the second) names the concept and
  its image folder), ``Main/<uniqueID>/*.jpg`` (every image is stored; an item's first image is its
  ``index``, all are in ``item_images.parquet``), triplet files
  ``Revealing/triplets/data1854_baseline_train90.txt`` and ``..._test10.txt`` (odd-one-out). When
  ``Revealing/variables/sortind.mat`` exists, triplet ids are mapped through it (file id t is the
  concept at the position p with sortind[p] = t + 1). Item ids are the concept positions.
* ``yummly``: SRC = the unpacked food100 download: ``images/*.jpg`` (item id = UUID),
  ``all-triplets.csv`` (``;``-separated ``images/<uuid>.jpg`` cells, directed), names from
  ``ingredients.json`` when present.
* ``ihsj``: SRC with the psiz files of the IHSJ data, found below SRC or given with
  ``--set triplets.catalog=FILE`` and ``--triplets OBS.hdf5``: the catalogue (``stimulus_id``,
  ``stimulus_filepath``, ``class_id``, optional ``class_map_class_id``/``class_map_label``) and
  observations (``stimulus_set``: query then references, the chosen ones first, -1 = none;
  ``n_select``), read with h5py alone. Every trial gives a directed triplet (query, chosen, not
  chosen) for each chosen and each not-chosen reference: 2 x 6 = 12 for 8-choose-2 trials. Images
  from ``--images DIR`` or ``SRC/imagenet/validation`` (matched by file name); the catalogue's
  ``class_id`` becomes the items' ``class``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Literal, Optional

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from simtool.data.builders._registry import register_builder
from simtool.data.builders._scan import IMAGE_SUFFIXES, files_in, natural_ids
from simtool.data.builders.parts import BuildContext, Scan, plan_table, run_image_build
from simtool.data.splits import assign_splits
from simtool.errors import UserError
from simtool.formats.dataset_dir import ITEM_IMAGES, ITEMS, SPLITS, TRIPLETS
from simtool.specs.base import Spec
from simtool.specs.data import ImageBuildBase, check_fractions, parse_fractions

# The split layout each named collection gets by default: the paper's (Dondera, CVPR 2024 workshops,
# after ditdml): one seeded permutation of the items (THINGS concepts, Yummly images, IHSJC classes)
# or of the classes of the items (IHSJ images), 60 / 20 / 20, whose parts every stage takes.
PRESET_LAYOUT = {"things": ("item", [0.6, 0.2, 0.2]), "yummly": ("item", [0.6, 0.2, 0.2]), "ihsjc": ("item", [0.6, 0.2, 0.2]),
                 "ihsj": ("class", [0.6, 0.2, 0.2])}
GENERIC_LAYOUT = ("triplet", [0.9, 0.1])


class TripletsOptions(Spec):
    preset: Optional[Literal["things", "yummly", "ihsj", "ihsjc"]] = Field(
        None, description="a named collection read from SRC: things, yummly, ihsj (per-image triplets) or ihsjc (IHSJ as ImageNet class triplets)")
    triplets: List[str] = Field([], description="triplet files (three ids per line; ihsj: the psiz observations HDF5)")
    kind: Optional[Literal["odd-one-out", "directed"]] = Field(None, description="odd-one-out: (a, b) most similar, c odd; "
                                                                                 "directed: a anchor, b closer, c farther")
    images: Optional[str] = Field(None, description="folder of item images (file stem = item id)")
    items: Optional[str] = Field(None, description="items file with a header row: "
                                                   "one row per item id in order (ids = row numbers unless it has an 'id' column)")
    id_column: Optional[str] = Field(None, description="column of --items holding the item ids (default: 'id' if present, else the row number)")
    name_column: Optional[str] = Field(None, description="column of --items holding the names (default: 'name' if present, else the first column)")
    catalog: Optional[str] = Field(None, description="ihsj: the psiz catalogue HDF5 (default: found under SRC)")
    split_by: Optional[Literal["triplet", "item", "class"]] = Field(
        None, description="split the items (item), the classes of the items (class: every item of a class in one split), or the triplets "
                          "themselves (triplet: every item in every split, a transductive variant); default: a preset's layout (item; "
                          "ihsj: class), else triplet. An item or class split keeps every triplet and records where its items lie")
    split: Optional[List[float]] = Field(None, description="fractions train,test or train,val,test (seeded); default: a preset's 0.6,0.2,0.2, else 0.9,0.1")
    duplicates: Optional[Literal["keep", "drop"]] = Field(
        None, description="repeated judgements: keep them (a preset's default, as ditdml) or drop them (the generic default)")

    _fractions = field_validator("split", mode="before")(parse_fractions)
    _check = field_validator("split")(check_fractions)

    @field_validator("triplets", mode="before")
    @classmethod
    def _one_or_more(cls, value):
        return [value] if isinstance(value, str) else value


class TripletsBuildSpec(ImageBuildBase):
    """``--format triplets``: items (optionally with images) and triplet judgements."""

    format: Literal["triplets"]
    triplets: TripletsOptions = TripletsOptions()


HEADER_WORDS = {"a", "b", "c", "anchor", "positive", "negative", "query", "closer", "farther", "further", "odd", "odd_one_out",
                "item", "item1", "item2", "item3", "id", "id1", "id2", "id3", "i", "j", "k", "first", "second", "third", "image1", "image2", "image3"}
_CHUNK = 200_000


@dataclass
class Items:
    ids: list[str]
    names: list[str]
    images: list[list[str]]  # per item, image paths relative to images_root
    images_root: Path | None = None
    classes: list[int] | None = None
    class_names: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)


# -- reading ---------------------------------------------------------------------------------------


def _need_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise UserError(f"The {what} {path} does not exist; pass the path of an existing file.")
    return path


def read_items_file(path: Path, id_column: str | None, name_column: str | None) -> tuple[list[str], list[str]]:
    """``(ids, names)`` of an items file (CSV/TSV/semicolon-separated, header row)."""
    _need_file(path, "items file")
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    lines = text.splitlines()
    if not lines:
        raise UserError(f"The items file {path} is empty; it needs a header row and one row per item.")
    header = lines[0]
    delim = "\t" if "\t" in header else ";" if ";" in header and "," not in header else ","
    rows = list(csv.reader(lines, delimiter=delim))
    head, body = [h.strip() for h in rows[0]], [r for r in rows[1:] if any(c.strip() for c in r)]
    lower = {h.lower(): i for i, h in enumerate(head)}

    def col(name: str | None, default: str | None) -> int | None:
        if name is not None:
            if name not in head and name.lower() not in lower:
                raise UserError(f"The items file {path} has no column {name!r}; its columns are: {', '.join(head)}.")
            return head.index(name) if name in head else lower[name.lower()]
        return lower.get(default) if default else None

    id_i = col(id_column, "id")
    name_i = col(name_column, "name")
    if name_i is None:
        name_i = next((i for i in range(len(head)) if i != id_i), None)
    ids = [(r[id_i].strip() if id_i is not None and id_i < len(r) else str(n)) for n, r in enumerate(body)]
    names = [(r[name_i].strip() if name_i is not None and name_i < len(r) else "") for r in body]
    if len(set(ids)) != len(ids):
        raise UserError(f"The items file {path} repeats an item id; give every item its own id.")
    return ids, names


def images_by_stem(root: Path) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """``{stem: file name}`` of the images in ``root`` (top level), and the files skipped."""
    if not root.is_dir():
        raise UserError(f"The images folder {root} does not exist; pass a folder of images named <item id>.<ext>.")
    out, rejected = {}, []
    for f in files_in(root):
        if f.suffix.lower() not in IMAGE_SUFFIXES:
            rejected.append((f.name, "not an image file name (unknown extension)"))
        elif f.stem in out:
            rejected.append((f.name, f"a second image for item {f.stem!r}"))
        else:
            out[f.stem] = f.name
    return out, rejected


def normalise_token(tok: str) -> str:
    tok = tok.strip().strip("\"'")
    if "/" in tok or "\\" in tok or Path(tok).suffix.lower() in IMAGE_SUFFIXES:
        tok = Path(tok.replace("\\", "/")).name
        if Path(tok).suffix.lower() in IMAGE_SUFFIXES:
            tok = Path(tok).stem
    return tok


def read_triplet_text(path: Path) -> tuple[np.ndarray, int, list[int]]:
    """Raw tokens (T, 3) of a triplet file, the number of lines read and the malformed line numbers."""
    _need_file(path, "triplet file")
    chunks, rows, malformed, n_lines = [], [], [], 0
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            toks = line.replace(",", " ").replace(";", " ").split()
            if not toks or toks[0].startswith("#"):
                continue
            n_lines += 1
            if len(toks) != 3:
                malformed.append(n)
                continue
            rows.append(toks)
            if len(rows) >= _CHUNK:
                chunks.append(np.array(rows, dtype=str))
                rows = []
    if rows or not chunks:
        chunks.append(np.array(rows, dtype=str).reshape(-1, 3))
    width = max(c.dtype.itemsize for c in chunks)
    tokens = np.concatenate([c.astype(f"<U{max(1, width // 4)}") for c in chunks]) if chunks else np.zeros((0, 3), dtype=str)
    return tokens, n_lines, malformed


def map_tokens(tokens: np.ndarray, id_to_item: dict[str, int], transform=None) -> np.ndarray:
    """(T, 3) raw tokens -> item numbers (-1 = unknown), through :func:`normalise_token` (and ``transform``)."""
    if tokens.size == 0:
        return np.zeros((0, 3), dtype=np.int64)
    uniq, inverse = np.unique(tokens.ravel(), return_inverse=True)
    norm = [normalise_token(u) for u in uniq.tolist()]
    if transform is not None:
        norm = [transform(t) for t in norm]
    lookup = np.array([id_to_item.get(t, -1) for t in norm], dtype=np.int64)
    return lookup[inverse.reshape(-1)].reshape(-1, 3)


def is_header(tokens: np.ndarray, items: np.ndarray, items_known: bool) -> bool:
    if len(tokens) == 0 or (items[0] >= 0).any():
        return False
    words = [normalise_token(t).lower() for t in tokens[0]]
    return items_known or all(w in HEADER_WORDS for w in words)


# -- cleaning and splitting ---------------------------------------------------------------------------


def layout_of(opts) -> tuple[str, list[float], str]:
    """``(split_by, fractions, duplicates)``: the options given, else the preset's layout, else the generic one."""
    split_by, fractions = PRESET_LAYOUT.get(opts.preset, GENERIC_LAYOUT)
    duplicates = "keep" if opts.preset else "drop"
    return opts.split_by or split_by, list(opts.split or fractions), opts.duplicates or duplicates


def clean_triplets(trip: np.ndarray, kind: str, duplicates: str) -> tuple[np.ndarray, dict]:
    """Drop unknown items, repeated ids and (``duplicates: drop``) repeated judgements."""
    dropped = {}
    unknown = (trip < 0).any(axis=1)
    dropped["unknown_item"] = int(unknown.sum())
    trip = trip[~unknown]
    selfish = (trip[:, 0] == trip[:, 1]) | (trip[:, 1] == trip[:, 2]) | (trip[:, 0] == trip[:, 2])
    dropped["self"] = int(selfish.sum())
    trip = trip[~selfish]
    keep = np.ones(len(trip), dtype=bool)
    if duplicates == "drop" and len(trip):
        if kind == "odd-one-out":
            canon = np.stack([np.minimum(trip[:, 0], trip[:, 1]), np.maximum(trip[:, 0], trip[:, 1]), trip[:, 2]], axis=1)
        else:
            canon = trip
        keep[:] = False
        _, first = np.unique(canon, axis=0, return_index=True)
        keep[first] = True
    dropped["duplicate"] = int((~keep).sum())
    return trip[keep], dropped


def split_items(n_items: int, split_by: str, fractions, seed: int, classes=None) -> np.ndarray:
    """The split of every item (one seeded permutation of the items, or of their classes); "" for a triplet split."""
    if split_by == "triplet":
        return np.full(n_items, "", dtype="<U5")
    if split_by == "item":
        return assign_splits(n_items, fractions, np.random.default_rng([seed, 12]))
    classes = None if classes is None else np.asarray(classes, dtype=np.int64)
    if classes is None or (classes < 0).any():
        raise UserError("--split-by class needs a class for every item; this collection has none (or not for every item): use --split-by item.")
    uniq, inverse = np.unique(classes, return_inverse=True)
    return assign_splits(len(uniq), fractions, np.random.default_rng([seed, 13]))[inverse.reshape(-1)]


def triplet_splits(trip: np.ndarray, item_split: np.ndarray, split_by: str, fractions, seed: int) -> np.ndarray:
    """The split of every triplet: a seeded split of the triplets (``triplet``), else the split its
    three items share, or "" when they lie in different splits (kept: the teachers' part, all
    triplets among train and val items, includes those that mix the two)."""
    if split_by == "triplet":
        return assign_splits(len(trip), fractions, np.random.default_rng([seed, 11]))
    if not len(trip):
        return np.zeros(0, dtype="<U5")
    s = item_split[trip]
    same = (s[:, 0] == s[:, 1]) & (s[:, 1] == s[:, 2])
    return np.where(same, s[:, 0], "").astype("<U5")


def layout_counts(trip: np.ndarray, split: np.ndarray, item_split: np.ndarray, split_by: str) -> dict:
    """Triplets and items per part of the layout (the card's ``layout.parts``)."""
    out: dict = {f"{s}_triplets": int((split == s).sum()) for s in SPLITS}
    if split_by == "triplet":
        return out
    s = item_split[trip] if len(trip) else np.zeros((0, 3), dtype="<U5")
    learn = np.isin(s, ["train", "val"]).all(1) if len(trip) else np.zeros(0, dtype=bool)
    out["train+val_triplets"] = int(learn.sum())  # the teachers' and the direct route's part
    out["mixed_train_val_triplets"] = int((learn & (split == "")).sum())
    out["touching_test_triplets"] = int((~learn & (split != "test")).sum())  # never used by any stage
    out.update({f"{p}_items": int((item_split == p).sum()) for p in SPLITS})
    return out


def class_triplets(trip: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, dict]:
    """IHSJ image triplets → ImageNet class triplets, as ditdml turns IHSJ into IHSJC (directed).

    1. each image triplet becomes the triplet of its three classes, kept when they are distinct;
    2. exact repeats of an (anchor, closer, farther) class triplet are dropped;
    3. contradicting pairs, (a, p, n) and (a, n, p) both present, are dropped (both, every copy; the
       original meant to and, by a bug, mostly did not);
    4. 3-cycles are dropped: the three rotations (a, b, c), (b, c, a), (c, a, b) together say
       d(a, b) < d(a, c) = d(c, a) < d(c, b) = d(b, c) < d(b, a), which no distance satisfies.
    Returns ``(class triplets (T, 3), dropped counts)``.
    """
    dropped = {}
    c = np.asarray(classes, dtype=np.int64)[trip] if len(trip) else np.zeros((0, 3), dtype=np.int64)
    distinct = (c[:, 0] != c[:, 1]) & (c[:, 1] != c[:, 2]) & (c[:, 0] != c[:, 2])
    dropped["same_class"] = int((~distinct).sum())
    c = c[distinct]
    c, first = (np.unique(c, axis=0, return_index=True) if len(c) else (c, np.zeros(0, dtype=np.int64)))
    c = c[np.argsort(first, kind="stable")]  # first-seen order
    dropped["duplicate"] = int(distinct.sum() - len(c))
    present = {tuple(t) for t in c.tolist()}
    contradicted = np.array([(a, n, p) in present for a, p, n in c.tolist()], dtype=bool) if len(c) else np.zeros(0, dtype=bool)
    dropped["contradiction"] = int(contradicted.sum())
    c = c[~contradicted]
    present = {tuple(t) for t in c.tolist()}
    cyclic = np.array([(b, cc, a) in present and (cc, a, b) in present for a, b, cc in c.tolist()], dtype=bool) if len(c) else np.zeros(0, dtype=bool)
    dropped["cycle"] = int(cyclic.sum())
    return c[~cyclic], dropped


# -- item sources -----------------------------------------------------------------------------------


def _generic_items(opts, token_files: list[np.ndarray]) -> Items:
    items_path = Path(opts.items) if opts.items else None
    images_root = Path(opts.images) if opts.images else None
    stems, rejected = images_by_stem(images_root) if images_root else ({}, [])
    if items_path is not None:
        ids, names = read_items_file(items_path, opts.id_column, opts.name_column)
    elif images_root is not None:
        ids = natural_ids(stems)
        names = [""] * len(ids)
        if not ids:
            raise UserError(f"The images folder {images_root} holds no image; pass a folder of images named <item id>.<ext>.")
    else:
        ids = natural_ids(t for toks in token_files for t in (normalise_token(u) for u in np.unique(toks).tolist()) if t.lower() not in HEADER_WORDS)
        names = [""] * len(ids)
    known = set(ids)
    if images_root is not None:
        rejected += [(stems[s], "no item with this id in the items file") for s in sorted(set(stems) - known)]
    images = [[stems[i]] if i in stems else [] for i in ids]
    return Items(ids=ids, names=names, images=images, images_root=images_root, rejected=rejected)


def _things(spec, src: Path) -> tuple[Items, list[Path], dict]:
    from scipy.io import loadmat

    opts = spec.triplets
    main = src / "Main" if (src / "Main").is_dir() else src
    candidates = [main / "things_concepts.tsv", src / "things_concepts.tsv", src / "item_names.tsv"]
    items_path = Path(opts.items) if opts.items else next((p for p in candidates if p.is_file()), None)
    if items_path is None:
        raise UserError(f"{src} does not look like THINGS: Main/things_concepts.tsv is missing; "
                        "--preset things expects SRC/Main/things_concepts.tsv, SRC/Main/<concept>/*.jpg "
                        "and SRC/Revealing/triplets/*.txt (or pass --items and --triplets).")
    text = items_path.read_text(encoding="utf-8-sig", errors="replace").splitlines()
    rows = list(csv.reader(text, delimiter="\t"))
    head, body = rows[0], [r for r in rows[1:] if any(c.strip() for c in r)]
    if opts.name_column:
        if opts.name_column not in head:
            raise UserError(f"The items file {items_path} has no column {opts.name_column!r}; its columns are: {', '.join(head)}.")
        name_i = head.index(opts.name_column)
    else:
        name_i = head.index("uniqueID") if "uniqueID" in head else (1 if len(head) > 1 else 0)
    names = [r[name_i].strip() if name_i < len(r) else "" for r in body]
    ids = [str(i) for i in range(len(body))]
    images_root = Path(opts.images) if opts.images else main
    images = []
    for name in names:
        folder = images_root / name
        images.append([f.relative_to(images_root).as_posix() for f in files_in(folder) if f.suffix.lower() == ".jpg"] if name and folder.is_dir() else [])
    trip_dir = src / "Revealing" / "triplets"
    if opts.triplets:
        files = [Path(p) for p in opts.triplets]
    else:
        standard = [trip_dir / "data1854_baseline_train90.txt", trip_dir / "data1854_baseline_test10.txt"]
        files = [p for p in standard if p.is_file()] or sorted(trip_dir.glob("*.txt"))
    if not files:
        raise UserError(f"{src} has no THINGS triplet files (Revealing/triplets/data1854_baseline_*.txt); pass them with --triplets FILE.")
    extra = {"items_file": str(items_path)}
    sortind = src / "Revealing" / "variables" / "sortind.mat"
    if sortind.is_file():
        order = np.asarray(loadmat(sortind, squeeze_me=True)["sortind"]).astype(np.int64).ravel()
        position = np.full(order.max() + 1, -1, dtype=np.int64)
        position[order - 1] = np.arange(len(order))
        extra["remap"] = (str(sortind), position.tolist())
    return Items(ids=ids, names=names, images=images, images_root=images_root), files, extra


def _yummly(spec, src: Path) -> tuple[Items, list[Path], dict]:
    opts = spec.triplets
    images_root = Path(opts.images) if opts.images else src / "images"
    if not images_root.is_dir():
        raise UserError(f"{src} does not look like Yummly food100 (no images/ folder); --preset yummly expects SRC/images/*.jpg and SRC/all-triplets.csv.")
    stems, rejected = images_by_stem(images_root)
    ids = sorted(stems)
    names = [""] * len(ids)
    ingredients = src / "ingredients.json"
    if ingredients.is_file():
        try:
            meta = json.loads(ingredients.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{ingredients} is not valid JSON ({exc.msg} at line {exc.lineno}); fix or remove it.") from None
        for k, i in enumerate(ids):
            entry = meta.get(stems[i]) if isinstance(meta, dict) else None
            if isinstance(entry, dict) and entry.get("name"):
                names[k] = str(entry["name"])
    files = [Path(p) for p in opts.triplets] or [src / "all-triplets.csv"]
    if not files[0].is_file():
        raise UserError(f"{files[0]} does not exist; --preset yummly expects SRC/images/*.jpg and SRC/all-triplets.csv.")
    return Items(ids=ids, names=names, images=[[stems[i]] for i in ids], images_root=images_root, rejected=rejected), files, {}


def _h5_strings(values) -> list[str]:
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in np.asarray(values).ravel().tolist()]


def _ihsj(spec, src: Path) -> tuple[Items, np.ndarray, dict]:
    import h5py

    opts = spec.triplets
    catalog = Path(opts.catalog) if opts.catalog else next(iter(sorted(src.rglob("catalog*.hdf5"))), None)
    if catalog is None or not catalog.is_file():
        raise UserError(f"{src} has no psiz catalogue (catalog*.hdf5); "
                        "--preset ihsj expects the IHSJ psiz files below SRC (or --set triplets.catalog=FILE --triplets OBS.hdf5).")
    obs_files = [Path(p) for p in opts.triplets] or [p for p in sorted(src.rglob("obs*.hdf5"))]
    if not obs_files:
        raise UserError(f"{src} has no psiz observations file (obs*.hdf5); pass it with --triplets OBS.hdf5.")
    try:
        with h5py.File(catalog, "r") as fh:
            stim = np.asarray(fh["stimulus_id"][()]).astype(np.int64).ravel()
            paths = _h5_strings(fh["stimulus_filepath"][()])
            cls = np.asarray(fh["class_id"][()]).astype(np.int64).ravel() if "class_id" in fh else None
            class_map = None
            if "class_map_class_id" in fh and "class_map_label" in fh:
                class_map = dict(zip(np.asarray(fh["class_map_class_id"][()]).astype(np.int64).tolist(), _h5_strings(fh["class_map_label"][()])))
    except (OSError, KeyError) as exc:
        raise UserError(f"{catalog} is not a psiz catalogue ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                        "it needs the datasets stimulus_id and stimulus_filepath.") from None
    order = np.argsort(stim, kind="stable")
    stim, paths = stim[order], [paths[i] for i in order]
    if cls is not None:
        cls = cls[order]
    position = {int(s): i for i, s in enumerate(stim)}
    triplets, n_trials = [], 0
    for obs in obs_files:
        _need_file(obs, "psiz observations file")
        try:
            with h5py.File(obs, "r") as fh:
                sets = np.asarray(fh["stimulus_set"][()]).astype(np.int64)
                n_select = np.asarray(fh["n_select"][()]).astype(np.int64).ravel() if "n_select" in fh else np.ones(len(sets), dtype=np.int64)
        except (OSError, KeyError) as exc:
            raise UserError(f"{obs} is not a psiz observations file ({type(exc).__name__}); it needs the datasets stimulus_set and n_select.") from None
        n_trials += len(sets)
        lut = np.full(int(max(sets.max(initial=0), stim.max(initial=0))) + 2, -1, dtype=np.int64)
        for s, p in position.items():
            lut[s] = p
        mapped = np.where(sets >= 0, lut[np.clip(sets, 0, len(lut) - 1)], -2)  # -2 = no stimulus (padding)
        n_ref = (sets[:, 1:] >= 0).sum(axis=1)
        chunks, trial_of = [], []
        for nr, ns in sorted(set(zip(n_ref.tolist(), n_select.tolist()))):
            rows = np.flatnonzero((n_ref == nr) & (n_select == ns))
            if ns < 1 or ns >= nr:
                continue
            q = mapped[rows, 0]
            chosen, rest = mapped[rows, 1 : 1 + ns], mapped[rows, 1 + ns : 1 + nr]
            t = np.stack(np.broadcast_arrays(q[:, None, None], chosen[:, :, None], rest[:, None, :]), axis=-1).reshape(len(rows), -1, 3)
            chunks.append(t.reshape(-1, 3))
            trial_of.append(np.repeat(rows, ns * (nr - ns)))
        if chunks:
            t, tr = np.concatenate(chunks), np.concatenate(trial_of)
            triplets.append(t[np.argsort(tr, kind="stable")])
    trip = np.concatenate(triplets) if triplets else np.zeros((0, 3), dtype=np.int64)
    trip = np.where(trip < 0, -1, trip)
    images_root = Path(opts.images) if opts.images else (src / "imagenet" / "validation")
    images = []
    for p in paths:
        found = []
        if images_root.is_dir():
            for cand in (images_root / Path(p).name, images_root / p):
                if cand.is_file():
                    found = [cand.relative_to(images_root).as_posix()]
                    break
        images.append(found)
    class_names = []
    if class_map:
        class_names = [class_map.get(i, "") for i in range(max(class_map) + 1)]
    items = Items(ids=[str(int(s)) for s in stim], names=[Path(p).stem for p in paths], images=images,
                  images_root=images_root if images_root.is_dir() else None,
                  classes=cls.tolist() if cls is not None else None, class_names=class_names)
    return items, trip, {"catalog": str(catalog), "observations": [str(o) for o in obs_files], "trials": int(n_trials)}


def _to_classes(items: Items, trip: np.ndarray) -> tuple[Items, np.ndarray, dict]:
    """IHSJ's per-image items and triplets → IHSJC: one item per ImageNet class (every image of the
    class is an image of the item), class triplets (:func:`class_triplets`)."""
    if items.classes is None:
        raise UserError("--preset ihsjc needs the catalogue's class_id (the ImageNet class of every image); this catalogue has none.")
    image_class = np.asarray(items.classes, dtype=np.int64)
    ok = (trip >= 0).all(1)
    ctrip, dropped = class_triplets(trip[ok], image_class)
    dropped["unknown_image"] = int((~ok).sum())
    uniq = np.unique(image_class)
    item_of_class = {int(c): k for k, c in enumerate(uniq)}
    images = [[] for _ in uniq]
    for k, c in enumerate(image_class.tolist()):
        images[item_of_class[c]].extend(items.images[k])
    names = [items.class_names[c] if 0 <= c < len(items.class_names) and items.class_names[c] else str(c) for c in uniq.tolist()]
    lut = np.full(int(uniq.max()) + 1 if len(uniq) else 1, -1, dtype=np.int64)
    lut[uniq] = np.arange(len(uniq))
    classes = Items(ids=[str(int(c)) for c in uniq], names=names, images=images, images_root=items.images_root,
                    classes=list(range(len(uniq))), class_names=names, rejected=items.rejected)
    return classes, lut[ctrip] if len(ctrip) else np.zeros((0, 3), dtype=np.int64), dropped


# -- the builder ------------------------------------------------------------------------------------


def scan_triplets(spec, ctx: BuildContext, progress=None) -> Scan:
    opts = spec.triplets
    preset = opts.preset
    extra: dict = {}
    dropped: dict = {}
    n_read = 0
    if preset is not None:
        if not spec.source:
            raise UserError(f"--preset {preset} reads SRC, the folder of the downloaded collection; pass it as the argument after the options.")
        src = Path(spec.source)
        if not src.is_dir():
            raise UserError(f"The source {src} does not exist or is not a folder; --preset {preset} expects the folder of the downloaded collection.")
        want = "odd-one-out" if preset == "things" else "directed"
        if opts.kind is not None and opts.kind != want:
            raise UserError(f"--preset {preset} holds {want} triplets; drop --kind {opts.kind}.")
        kind = want
    else:
        if spec.source:
            raise UserError("Generic --format triplets reads --triplets, --images and --items, not SRC; "
                            "drop SRC or choose a --preset (things, yummly, ihsj, ihsjc).")
        if not opts.triplets:
            raise UserError("--format triplets needs --triplets FILE and --kind odd-one-out|directed "
                            "(items from --images DIR and/or --items FILE), or --preset things|yummly|ihsj|ihsjc SRC.")
        if opts.kind is None:
            raise UserError("--format triplets needs --kind: odd-one-out (the first two are the most similar pair) or directed (anchor, closer, farther).")
        kind = opts.kind
    if preset in ("ihsj", "ihsjc"):
        items, trip, extra = _ihsj(spec, Path(spec.source))
        n_read = len(trip)
        dropped["malformed"] = 0
        files = extra["observations"]
        if preset == "ihsjc":
            items, trip, converted = _to_classes(items, trip)
            dropped.update(converted)
    else:
        if preset == "things":
            items, paths, extra = _things(spec, Path(spec.source))
        elif preset == "yummly":
            items, paths, extra = _yummly(spec, Path(spec.source))
        else:
            paths = [Path(p) for p in opts.triplets]
        raw = []
        malformed = 0
        for p in paths:
            tokens, n_lines, bad = read_triplet_text(p)
            raw.append(tokens)
            n_read += n_lines
            malformed += len(bad)
            if progress:
                progress(n_read, 0, "reading triplets")
        if preset is None:
            items = _generic_items(opts, raw)
        id_to_item = {i: k for k, i in enumerate(items.ids)}
        transform = None
        if "remap" in extra:
            remap = np.asarray(extra.pop("remap")[1], dtype=np.int64)
            extra["sortind"] = str(Path(spec.source) / "Revealing" / "variables" / "sortind.mat")

            def transform(t: str, remap=remap) -> str:
                return str(int(remap[int(t)])) if t.isdigit() and int(t) < len(remap) and remap[int(t)] >= 0 else t
        mapped, header = [], 0
        items_known = bool(opts.items or opts.images or preset)
        for tokens in raw:
            m = map_tokens(tokens, id_to_item, transform)
            if is_header(tokens, m, items_known):
                m, header = m[1:], header + 1
            mapped.append(m)
        trip = np.concatenate(mapped) if mapped else np.zeros((0, 3), dtype=np.int64)
        dropped["malformed"] = malformed
        dropped["header"] = header
        files = [str(p) for p in paths]
    n_items = len(items.ids)
    if n_items == 0:
        raise UserError("The triplets dataset has no items; check --items / --images.")
    split_by, fractions, duplicates = layout_of(opts)
    trip, more = clean_triplets(trip, kind, duplicates)
    for key, value in more.items():
        dropped[key] = dropped.get(key, 0) + value
    item_split = split_items(n_items, split_by, fractions, spec.seed, items.classes)
    split = triplet_splits(trip, item_split, split_by, fractions, spec.seed)
    if len(trip) == 0:
        raise UserError(f"No triplet survives ({n_read} read; dropped: " + ", ".join(f"{k} {v}" for k, v in dropped.items() if v) +
                        "); check that the triplet ids match the items.")
    if dropped.get("unknown_item", 0) > 0.5 * max(1, n_read):
        ctx.say(f"{dropped['unknown_item']} of {n_read} triplets name ids that are no item; check that --items / --images match the triplet files.")
    items_cols = {"item": pa.array(np.arange(n_items), pa.int64()), "id": pa.array(items.ids, pa.string()),
                  "name": pa.array(items.names, pa.string()), "split": pa.array(item_split.tolist() if n_items else [], pa.string())}
    if items.classes is not None:
        items_cols["class"] = pa.array(items.classes, pa.int64())
    trip_table = pa.table({"a": pa.array(trip[:, 0]), "b": pa.array(trip[:, 1]), "c": pa.array(trip[:, 2]),
                           "kind": pa.array([kind] * len(trip), pa.string()), "split": pa.array(split.tolist(), pa.string())})
    rels, item_of = [], []
    for k, imgs in enumerate(items.images):
        for r in imgs:
            rels.append(r)
            item_of.append(k)
    n = len(rels)
    plan = plan_table({"key": rels, "member": [-1] * n, "group": list(range(n)), "partition": [""] * n,
                       "item": item_of, "path": rels}, {"item": pa.int64(), "path": pa.string()})
    name = f"{preset}-triplets" if preset else f"triplets-{Path(files[0]).stem}"
    layout = {"split_by": split_by, "fractions": fractions, "seed": spec.seed, "duplicates": duplicates,
              "parts": layout_counts(trip, split, item_split, split_by)}
    info = {"triplet_kind": kind, "split_by": split_by, "layout": layout, "dropped": dropped, "read": int(n_read), "files": files,
            "class_names": items.class_names, "multi_image": any(len(i) > 1 for i in items.images), "preset": preset, **extra}
    root = str(items.images_root.resolve()) if items.images_root is not None else "."
    return Scan(kind="triplets", name=name, reader=("files", root), plan=plan, info=info,
                extras={"items": pa.table(items_cols), "triplets": trip_table}, rejected=items.rejected)


def finalize_triplets(spec, scan: Scan, ok: np.ndarray, index: np.ndarray, tmp: Path):
    items = scan.extras["items"]
    trip = scan.extras["triplets"]
    n_items = items.num_rows
    item_of = scan.plan.column("item").to_numpy().astype(np.int64) if scan.plan.num_rows else np.zeros(0, dtype=np.int64)
    item_index = np.full(n_items, -1, dtype=np.int64)
    kept_items, kept_index = item_of[ok], index[ok]
    if len(kept_items):
        u, first = np.unique(kept_items, return_index=True)
        item_index[u] = kept_index[first]
    cols = {"item": items.column("item"), "id": items.column("id"), "name": items.column("name"),
            "index": pa.array(item_index, pa.int64()), "split": items.column("split")}
    if "class" in items.column_names:
        cols["class"] = items.column("class")
    tables = {ITEMS: pa.table(cols), TRIPLETS: trip}
    if scan.info.get("multi_image"):
        tables[ITEM_IMAGES] = pa.table({"item": pa.array(kept_items, pa.int64()), "index": pa.array(kept_index, pa.int64()),
                                        "path": scan.plan.column("path").filter(pa.array(ok))})
    tsplit = trip.column("split").to_numpy(zero_copy_only=False).astype(str)
    isplit = items.column("split").to_numpy(zero_copy_only=False).astype(str)
    counts = {"items": n_items, "items_with_image": int((item_index >= 0).sum()), "images": int(ok.sum()), "triplets": trip.num_rows}
    counts.update({f"{s}_triplets": int((tsplit == s).sum()) for s in SPLITS})
    if scan.info["split_by"] != "triplet":
        counts.update({f"{s}_items": int((isplit == s).sum()) for s in SPLITS})
    card = {"name": scan.name, "profile": None, "counts": counts, "split_by": scan.info["split_by"], "layout": scan.info.get("layout"),
            "triplet_kind": scan.info["triplet_kind"],
            "dropped": scan.info["dropped"], "triplets_read": scan.info["read"], "triplet_files": scan.info["files"]}
    if scan.info.get("class_names"):
        card["class_names"] = scan.info["class_names"]
    for key in ("preset", "sortind", "catalog", "trials", "items_file"):
        if scan.info.get(key) is not None:
            card[key] = scan.info[key]
    d = ", ".join(f"{k} {v}" for k, v in scan.info["dropped"].items() if v) or "none"
    msg = (f"triplets dataset, {n_items} items ({counts['items_with_image']} with an image), {trip.num_rows} {scan.info['triplet_kind']} triplets "
           f"(train/val/test {counts['train_triplets']}/{counts['val_triplets']}/{counts['test_triplets']}) of {scan.info['read']} read; dropped: {d}")
    return tables, card, {"images": counts["images"], "categories": 0, "message": msg}


@register_builder("triplets", spec=TripletsBuildSpec)
def build_triplets(spec, progress=None, ctx: BuildContext | None = None) -> dict:
    return run_image_build(spec, scan_triplets, finalize_triplets, progress, ctx)
