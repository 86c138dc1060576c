"""Class-labelled image collections -> ``classes`` datasets.

* ``--format imagefolder SRC``: ``SRC/<class>/<image>`` (images may sit in sub-folders of a class),
  split over **classes** (class-disjoint, as in metric learning) by ``--split`` fractions
  (default 0.5,0.5 = train, test; three values = train, val, test), seeded; or, with a split
  level ``SRC/train/<class>/...``, ``SRC/test/<class>/...`` (and ``val``/``validation``), the
  given splits. Classes are numbered in sorted name order.
* ``--format cub SRC``: CUB-200-2011 as downloaded (``CUB_200_2011/`` or its parent):
  ``images/<NNN.Name>/*.jpg`` (with ``images.txt``, ``image_class_labels.txt`` and ``classes.txt``
  when present). Classes 1-100 train, 101-200 test.
* ``--format cars SRC``: Cars196 with ``cars_annos.mat`` (read with ``scipy.io.loadmat``:
  ``annotations.relative_im_path``, ``annotations.class``, ``class_names``) and ``car_ims/``.
  Classes 1-98 train, 99-196 test.
* ``--format sop SRC``: Stanford Online Products (``Stanford_Online_Products/`` or its parent):
  ``Ebay_train.txt`` / ``Ebay_test.txt`` (``image_id class_id super_class_id path``, header row)
  give the standard split (classes 1-11,318 train, the rest test); ``superclass`` is kept.

Class ids are 0-based in the dataset (the standard 1-based ids minus one).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from simtool.data.builders._registry import register_builder
from simtool.data.builders._scan import files_below, require_source, subdirs
from simtool.data.builders.parts import BuildContext, Scan, plan_table, run_image_build
from simtool.data.splits import assign_splits, split_names
from simtool.errors import UserError
from simtool.formats.dataset_dir import CLASS_INDEX, SPLITS
from simtool.specs.base import Spec
from simtool.specs.data import ImageBuildBase, check_fractions, parse_fractions


class ImageFolderOptions(Spec):
    split: List[float] = Field([0.5, 0.5], description="fractions of classes: train,test or train,val,test (seeded); "
                                                       "ignored with a SRC/train, SRC/test split level")

    _fractions = field_validator("split", mode="before")(parse_fractions)
    _check = field_validator("split")(check_fractions)


class ImageFolderBuildSpec(ImageBuildBase):
    """``--format imagefolder SRC``: SRC/<class>/<image>, or SRC/{train,val,test}/<class>/<image>."""

    format: Literal["imagefolder"]
    imagefolder: ImageFolderOptions = ImageFolderOptions()


class CUBBuildSpec(ImageBuildBase):
    """``--format cub SRC``: CUB-200-2011, classes 1-100 train, 101-200 test."""

    format: Literal["cub"]


class CarsBuildSpec(ImageBuildBase):
    """``--format cars SRC``: Cars196 (cars_annos.mat), classes 1-98 train, 99-196 test."""

    format: Literal["cars"]


class SOPBuildSpec(ImageBuildBase):
    """``--format sop SRC``: Stanford Online Products, Ebay_train.txt / Ebay_test.txt."""

    format: Literal["sop"]


SPLIT_DIRS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def _plan(src: Path, rels: list[str], classes: list[int], splits: list[str], superclass: list[int] | None = None) -> pa.Table:
    n = len(rels)
    cols = {"key": rels, "member": [-1] * n, "group": list(range(n)), "partition": [""] * n, "class": classes, "split": splits, "path": rels}
    types = {"class": pa.int64(), "split": pa.string(), "path": pa.string()}
    if superclass is not None:
        cols["superclass"] = superclass
        types["superclass"] = pa.int64()
    return plan_table(cols, types)


def finalize_classes(spec, scan: Scan, ok: np.ndarray, index: np.ndarray, tmp: Path):
    t = scan.plan.filter(pa.array(ok))
    if t.num_rows == 0:
        raise UserError(f"No image of {spec.source} could be read ({int((~ok).sum())} rejected); see the warnings above.")
    cols = {"class": t.column("class"), "split": t.column("split"), "index": pa.array(index[ok], pa.int64()), "path": t.column("path")}
    if "superclass" in t.column_names:
        cols["superclass"] = t.column("superclass")
    table = pa.table(cols)
    cls = table.column("class").to_numpy()
    split = table.column("split").to_numpy(zero_copy_only=False).astype(str)
    counts = {"images": int(t.num_rows), "classes": int(len(np.unique(cls)))}
    for s in SPLITS:
        counts[f"{s}_images"] = int((split == s).sum())
        counts[f"{s}_classes"] = int(len(np.unique(cls[split == s])))
    card = {"name": scan.name, "profile": None, "counts": counts, "class_names": list(scan.info["class_names"])}
    if scan.info.get("superclass_names"):
        card["superclass_names"] = list(scan.info["superclass_names"])
    msg = (f"classes dataset, {counts['images']} images of {counts['classes']} classes "
           f"(train/val/test images {counts['train_images']}/{counts['val_images']}/{counts['test_images']})")
    return {CLASS_INDEX: table}, card, {"images": counts["images"], "categories": counts["classes"], "message": msg}


# -- imagefolder -----------------------------------------------------------------------------------

IMAGEFOLDER_EXPECTED = "SRC/<class>/<image> (or SRC/train/<class>/..., SRC/test/<class>/...)"


def scan_imagefolder(spec, ctx: BuildContext, progress=None) -> Scan:
    src = require_source(spec, IMAGEFOLDER_EXPECTED)
    top = subdirs(src)
    entries: list[tuple[str, str, Path]] = []  # (split, class name, file)
    split_level = bool(top) and all(d.name.lower() in SPLIT_DIRS for d in top)
    if split_level:
        for d in top:
            for cdir in subdirs(d):
                entries.extend((SPLIT_DIRS[d.name.lower()], cdir.name, f) for f in files_below(cdir))
    else:
        for cdir in top:
            entries.extend(("", cdir.name, f) for f in files_below(cdir))
    if not entries:
        raise UserError(f"{src} has no class folder with files; --format imagefolder expects {IMAGEFOLDER_EXPECTED}.")
    class_names = sorted({c for _, c, _ in entries})
    cid = {c: i for i, c in enumerate(class_names)}
    if split_level:
        split_of_class = None
    else:
        labels = assign_splits(len(class_names), spec.imagefolder.split, np.random.default_rng([spec.seed, 7]))
        split_of_class = dict(zip(class_names, labels.tolist()))
        if progress:
            progress(len(entries), 0, "scanning files")
    rels = [f.relative_to(src).as_posix() for _, _, f in entries]
    classes = [cid[c] for _, c, _ in entries]
    splits = [s if split_level else split_of_class[c] for s, c, _ in entries]
    info = {"class_names": class_names, "split": "folders" if split_level else list(split_names(len(spec.imagefolder.split)))}
    return Scan(kind="classes", name=f"imagefolder-{src.resolve().name}", reader=("files", str(src.resolve())),
                plan=_plan(src, rels, classes, splits), info=info)


# -- CUB-200-2011 ------------------------------------------------------------------------------------

CUB_EXPECTED = "CUB-200-2011 as downloaded: CUB_200_2011/images/<NNN.Name>/*.jpg (with images.txt, image_class_labels.txt, classes.txt)"


def _numbered_lines(path: Path) -> dict[int, str]:
    out = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        first, _, rest = line.strip().partition(" ")
        if first.isdigit():
            out[int(first)] = rest.strip()
    return out


def scan_cub(spec, ctx: BuildContext, progress=None) -> Scan:
    src = require_source(spec, CUB_EXPECTED)
    root = src if (src / "images").is_dir() else src / "CUB_200_2011"
    if not (root / "images").is_dir():
        raise UserError(f"{src} does not look like CUB-200-2011 (no images/ folder); --format cub expects {CUB_EXPECTED}.")
    if (root / "images.txt").is_file() and (root / "image_class_labels.txt").is_file():
        paths = _numbered_lines(root / "images.txt")
        labels = {k: int(v) for k, v in _numbered_lines(root / "image_class_labels.txt").items()}
        ids = sorted(paths)
        rels = [f"images/{paths[i]}" for i in ids]
        cls1 = [labels.get(i, 0) for i in ids]
        if any(c < 1 for c in cls1):
            raise UserError(f"{root / 'image_class_labels.txt'} does not give a class for every image of images.txt; --format cub expects {CUB_EXPECTED}.")
    else:
        rels, cls1 = [], []
        for cdir in subdirs(root / "images"):
            number = cdir.name.split(".", 1)[0]
            if not number.isdigit():
                raise UserError(f"The class folder {cdir} is not named NNN.Name; --format cub expects {CUB_EXPECTED}.")
            for f in files_below(cdir):
                rels.append(f.relative_to(root).as_posix())
                cls1.append(int(number))
    if not rels:
        raise UserError(f"{root / 'images'} holds no image; --format cub expects {CUB_EXPECTED}.")
    names = _numbered_lines(root / "classes.txt") if (root / "classes.txt").is_file() else {}
    n_cls = max(max(cls1), 200)
    if not names:
        for r, c in zip(rels, cls1):
            names.setdefault(c, r.split("/")[1])
    class_names = [names.get(c, str(c)).split(".", 1)[-1] for c in range(1, n_cls + 1)]
    splits = ["train" if c <= 100 else "test" for c in cls1]
    plan = _plan(root, rels, [c - 1 for c in cls1], splits)
    return Scan(kind="classes", name="cub-200-2011", reader=("files", str(root.resolve())),
                plan=plan, info={"class_names": class_names, "split": "classes 1-100 train, 101-200 test"})


# -- Cars196 ---------------------------------------------------------------------------------------

CARS_EXPECTED = "Cars196 as downloaded: cars_annos.mat and car_ims/"


def _mat_strings(values) -> list[str]:
    arr = np.atleast_1d(values)
    out = []
    for v in arr.ravel():
        while isinstance(v, np.ndarray) and v.size == 1 and v.dtype == object:
            v = v.item()
        out.append(str(v.item() if isinstance(v, np.ndarray) and v.size == 1 else v))
    return out


def scan_cars(spec, ctx: BuildContext, progress=None) -> Scan:
    from scipy.io import loadmat

    src = require_source(spec, CARS_EXPECTED)
    mat = src / "cars_annos.mat"
    if not mat.is_file():
        raise UserError(f"{src} does not look like Cars196 (cars_annos.mat is missing); --format cars expects {CARS_EXPECTED}.")
    try:
        m = loadmat(mat, squeeze_me=True)
        ann = np.atleast_1d(m["annotations"])
        rels = _mat_strings(ann["relative_im_path"])
        cls1 = [int(c) for c in np.atleast_1d(ann["class"]).ravel()]
    except (KeyError, ValueError, TypeError, IndexError, NotImplementedError, OSError) as exc:
        raise UserError(f"{mat} is not the Cars196 annotation file ({type(exc).__name__}: {exc}); "
                        "--format cars expects annotations with relative_im_path and class.") from None
    names = _mat_strings(m["class_names"]) if "class_names" in m else []
    n_cls = max(max(cls1, default=0), len(names), 196)
    class_names = [names[c] if c < len(names) else str(c + 1) for c in range(n_cls)]
    splits = ["train" if c <= 98 else "test" for c in cls1]
    plan = _plan(src, rels, [c - 1 for c in cls1], splits)
    return Scan(kind="classes", name="cars196", reader=("files", str(src.resolve())),
                plan=plan, info={"class_names": class_names, "split": "classes 1-98 train, 99-196 test"})


# -- Stanford Online Products ---------------------------------------------------------------------------

SOP_EXPECTED = "Stanford Online Products as downloaded: Stanford_Online_Products/ with Ebay_train.txt and Ebay_test.txt"


def scan_sop(spec, ctx: BuildContext, progress=None) -> Scan:
    src = require_source(spec, SOP_EXPECTED)
    root = src if (src / "Ebay_train.txt").is_file() else src / "Stanford_Online_Products"
    if not ((root / "Ebay_train.txt").is_file() and (root / "Ebay_test.txt").is_file()):
        raise UserError(f"{src} does not look like Stanford Online Products (Ebay_train.txt / Ebay_test.txt missing); --format sop expects {SOP_EXPECTED}.")
    rels, cls1, sup1, splits = [], [], [], []
    super_names: dict[int, str] = {}
    class_names: dict[int, str] = {}
    for split, name in (("train", "Ebay_train.txt"), ("test", "Ebay_test.txt")):
        for n, line in enumerate((root / name).read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            parts = line.split()
            if not parts or (n == 1 and not parts[0].isdigit()):
                continue
            if len(parts) < 4 or not (parts[1].isdigit() and parts[2].isdigit()):
                raise UserError(f"Line {n} of {root / name} is not 'image_id class_id super_class_id path'; --format sop expects {SOP_EXPECTED}.")
            c, s, rel = int(parts[1]), int(parts[2]), parts[3]
            rels.append(rel)
            cls1.append(c)
            sup1.append(s)
            splits.append(split)
            folder = rel.split("/", 1)[0]
            super_names.setdefault(s, folder.removesuffix("_final"))
            class_names.setdefault(c, f"{folder}/{Path(rel).stem.rsplit('_', 1)[0]}")
    if not rels:
        raise UserError(f"{root} lists no image; --format sop expects {SOP_EXPECTED}.")
    n_cls, n_sup = max(cls1), max(sup1)
    info = {"class_names": [class_names.get(c, str(c)) for c in range(1, n_cls + 1)],
            "superclass_names": [super_names.get(s, str(s)) for s in range(1, n_sup + 1)], "split": "Ebay_train.txt / Ebay_test.txt"}
    plan = _plan(root, rels, [c - 1 for c in cls1], splits, [s - 1 for s in sup1])
    return Scan(kind="classes", name="stanford-online-products", reader=("files", str(root.resolve())), plan=plan, info=info)


@register_builder("imagefolder", spec=ImageFolderBuildSpec)
def build_imagefolder(spec, progress=None, ctx: BuildContext | None = None) -> dict:
    return run_image_build(spec, scan_imagefolder, finalize_classes, progress, ctx)


@register_builder("cub", spec=CUBBuildSpec)
def build_cub(spec, progress=None, ctx: BuildContext | None = None) -> dict:
    return run_image_build(spec, scan_cub, finalize_classes, progress, ctx)


@register_builder("cars", spec=CarsBuildSpec)
def build_cars(spec, progress=None, ctx: BuildContext | None = None) -> dict:
    return run_image_build(spec, scan_cars, finalize_classes, progress, ctx)


@register_builder("sop", spec=SOPBuildSpec)
def build_sop(spec, progress=None, ctx: BuildContext | None = None) -> dict:
    return run_image_build(spec, scan_sop, finalize_classes, progress, ctx)
