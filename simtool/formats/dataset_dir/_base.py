"""The read side of a dataset directory: one protocol, one class per kind.

``Dataset(root)`` validates the card and returns an instance of the class registered for the
card's ``kind``. Every kind offers:

* ``kind``, ``card``, ``name``, ``fingerprint``, ``profile``, ``ref()``, ``len()``;
* ``images(size)`` (the image store), ``index`` (image of every row, -1 = none);
* ``rows(split)`` (rows of the main table: frames, images or items), ``split_of(rows)``,
  ``ids(rows)`` (stable string ids), ``labels(rows)`` (label levels for an embeddings rows table),
  ``label_info()`` (the names behind those labels);
* for embedding rows: ``export_rows(split, index_models)`` (which rows an export of ``split``
  holds), ``image_rows(rows)`` (the images to embed for them and, when a row has several, the row
  of every image) and ``triplets_of(rows, split)`` (labelled triplets among them, or None);
* ``image_table()``: every image with what supervises it (:class:`ImageRows`), for image students;
* ``room_assignments`` / ``rooms(which)`` (video datasets; the others have none).

A kind's own attributes asked of another kind are one sentence naming the kind that has them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from simtool.errors import UserError
from simtool.formats.dataset_dir._layout import CARD, FORMAT_VERSION, IMAGES, SPLITS, hash_columns, new_hash, rebuild_hint
from simtool.formats.dataset_dir._registry import DATASET_KINDS
from simtool.formats.image_store import ImageStore


@dataclass
class ImageRows:
    """Every stored image of a dataset with what supervises it (an image student's rows).

    ``image`` (M,) image-store indices; ``key`` (M,) the id a teacher file matches (item id /
    image id); ``group`` (M,) the item (triplets) or class (classes) of the image; ``split`` (M,)
    of the group (triplets split by item, classes) or "" (every item in every split); ``what``:
    what a group is ("items" | "classes")."""

    image: np.ndarray
    key: np.ndarray
    group: np.ndarray
    split: np.ndarray
    what: str


class Dataset:
    """Base of the dataset kinds (see the module docstring); ``Dataset(root)`` opens any kind."""

    kind: str = ""
    #: file -> (required columns, optional columns); the first is the main table
    tables: dict = {}
    #: tables a directory of this kind may have
    optional_tables: dict = {}
    #: file -> the columns of it that define the content (the fingerprint)
    fingerprint_columns: dict = {}
    #: the ``build-data`` formats that write this kind (for messages)
    built_by: str = "simtool build-data"
    #: the lowest image index a row may have (-1: rows without an image are allowed)
    lowest_index: int = 0

    def __new__(cls, root: str | Path):
        if cls is not Dataset:
            return super().__new__(cls)
        card = _read_valid_card(Path(root))
        return super().__new__(DATASET_KINDS.get(card["kind"]).obj)

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.card = _read_valid_card(self.root)
        for name in list(self.tables) + [IMAGES]:
            if not (self.root / name).is_file():
                raise UserError(f"{self.root} is not a complete simtool dataset: {name} is missing; build one with 'simtool build-data'.")
        self._load()

    def _load(self) -> None:  # pragma: no cover - every kind loads its tables
        raise NotImplementedError

    # -- reading helpers ----------------------------------------------------------------------------
    def _table(self, name: str, required: Sequence[str], only: Sequence[str] | None = None) -> pa.Table:
        """Table ``name`` (only the columns ``only`` when given), checked for the ``required`` columns."""
        try:
            if only is not None:
                present = set(pq.read_schema(self.root / name).names)
                table = pq.read_table(self.root / name, columns=[c for c in only if c in present],
                                      read_dictionary=[c for c in ("object", "split") if c in present and c in only])
            else:
                table = pq.read_table(self.root / name)
        except (pa.ArrowException, OSError) as exc:
            raise UserError(f"{self.root / name} is damaged ({str(exc).splitlines()[0]}); {rebuild_hint(self.root)}.") from None
        missing = set(required) - set(table.column_names)
        if missing:
            raise UserError(f"{self.root / name} lacks the column(s) {', '.join(sorted(missing))}; {rebuild_hint(self.root)}.")
        return table

    def _check_splits(self, name: str, split: np.ndarray, allowed: Sequence[str] = SPLITS, values: np.ndarray | None = None) -> None:
        """``values``: the distinct values when known (the dictionary of the column), else found from ``split``."""
        bad = sorted(set((np.unique(split) if values is None else values).tolist()) - set(allowed))
        if bad:
            raise UserError(f"{self.root / name} has unknown split value {bad[0]!r} (expected {', '.join(s for s in allowed if s)}); "
                            f"{rebuild_hint(self.root)}.")

    def __getattr__(self, name: str):
        # Only reached for attributes that are not set: another kind's attribute, asked of this one.
        kind = self.__dict__.get("kind", type(self).kind)
        for other in DATASET_KINDS.values():
            if other.kind != kind and name in other.own_attributes():
                raise UserError(f"{self.__dict__.get('root')} is a {kind} dataset, but this needs a {other.kind} dataset ({name}); "
                                f"build one with simtool build-data {other.built_by}.")
        raise AttributeError(name)

    @classmethod
    def own_attributes(cls) -> set[str]:
        """The attributes this kind has and the base class has not (its annotations and members)."""
        names = set(vars(cls).get("__annotations__", {})) | {k for k in vars(cls) if not k.startswith("_")}
        return names - set(vars(Dataset)) - set(vars(Dataset).get("__annotations__", {}))

    # -- the protocol ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def name(self) -> str:
        return str(self.card.get("name", self.root.name))

    @property
    def fingerprint(self) -> str:
        return str(self.card.get("fingerprint", ""))

    @property
    def profile(self) -> str | None:
        return self.card.get("profile")

    def ref(self) -> dict:
        """What a run or an embeddings file records about its dataset."""
        return {"name": self.name, "fingerprint": self.fingerprint, "path": str(self.root.resolve()), "kind": self.kind}

    def images(self, size: int) -> ImageStore:
        return ImageStore(self.root / IMAGES, size)

    def rows(self, split: str) -> np.ndarray:
        """Row indices of the main table in ``split`` ('all' = every row)."""
        if split == "all":
            return np.arange(len(self))
        return np.flatnonzero(self.split == split)

    def split_of(self, rows: np.ndarray) -> np.ndarray:
        """The split of every row."""
        return self.split[np.asarray(rows, dtype=np.int64)]

    def ids(self, rows: np.ndarray) -> np.ndarray:  # pragma: no cover - every kind has ids
        raise NotImplementedError

    def labels(self, rows: np.ndarray) -> dict[str, np.ndarray]:  # pragma: no cover - every kind has labels
        raise NotImplementedError

    def label_info(self) -> dict:
        """The names behind the labels of an embeddings rows table: category names, the room names
        of every stored room assignment, and class names for the kinds that have classes."""
        info: dict = {"category_names": [], "rooms": {}}
        if self.__dict__.get("class_names"):
            info["class_names"] = list(self.class_names)
        return info

    @property
    def room_assignments(self) -> list[str]:
        """Names of the room assignments stored in the directory (video datasets)."""
        return []

    def rooms(self, which: str = "semantic") -> tuple[np.ndarray, list[str], str]:
        raise UserError(f"{self.root} is a {self.kind} dataset; rooms belong to video datasets (build one with --format mvimgnet, icdl or toyworld).")

    def export_rows(self, split: str, index_models: bool) -> np.ndarray:
        """The rows an export of ``split`` holds (``index_models``: for models that embed rows, not images)."""
        return self.rows(split)

    def image_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Image-store indices to embed for ``rows`` and, when a row has several images, the
        position in ``rows`` of every image (None: one image per row, in order)."""
        return self.index[np.asarray(rows, dtype=np.int64)], None

    def triplets_of(self, rows: np.ndarray, split: str):
        """Labelled triplets of ``split`` among ``rows`` (datasets with triplets), else None."""
        return None

    def twin_images(self, twin: Dataset, rows: np.ndarray) -> np.ndarray:
        """Image-store indices, in ``twin``'s store, of the same images as ``rows`` (a second image
        set of the same rows, e.g. with the backgrounds removed); video datasets only."""
        raise UserError(f"{self.root} is a {self.kind} dataset; a second image set (--images) applies to video datasets, matched by (category, object, frame).")

    def image_table(self) -> ImageRows:
        raise UserError(f"{self.root} is a {self.kind} dataset; the teacher-student method needs a triplets dataset with images or a classes dataset "
                        "(simtool build-data --format triplets|cub|cars|sop|imagefolder).")

    # -- writing and checking -------------------------------------------------------------------------
    @classmethod
    def fingerprint_of(cls, tables: dict[str, pa.Table], images_digest: str) -> str:
        """Content fingerprint of the tables of a directory of this kind and the digest of its images."""
        h = new_hash(cls.kind.encode() + b"\0")
        for name in list(cls.tables) + list(cls.optional_tables):
            if name in tables:
                h.update(name.encode() + b"\0")
                hash_columns(h, tables[name], cls.fingerprint_columns[name])
        h.update(images_digest.encode())
        return "sha256:" + h.hexdigest()

    def verify_extra(self, n_images: int) -> list[str]:
        """Problems beyond the common checks (kind-specific references into the store)."""
        return []

    def summary(self, n_images: int) -> dict:
        return {"kind": self.kind, "rows": len(self), "images": n_images, "fingerprint": self.fingerprint}


def check_dataset_dir(root: str | Path) -> dict:
    """The card of the dataset directory ``root``, checked (exists, readable, a known kind and
    version) without opening its tables; one sentence otherwise."""
    return _read_valid_card(Path(root))


def _read_valid_card(root: Path) -> dict:
    if not root.is_dir():
        raise UserError(f"The data directory {root} does not exist; build one with 'simtool build-data --format toyworld --out DIR'.")
    if not (root / CARD).is_file():
        raise UserError(f"{root} is not a simtool dataset: {CARD} is missing; build one with 'simtool build-data'.")
    try:
        card = json.loads((root / CARD).read_text(encoding="utf-8"))
        if not isinstance(card, dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{root / CARD} is damaged (not a JSON object: {exc}); {rebuild_hint(root)}.") from None
    version = card.get("format_version")
    if version != FORMAT_VERSION:
        raise UserError(f"{root} has dataset format version {version}; this simtool reads version {FORMAT_VERSION}: rebuild it with simtool build-data.")
    kind = card.get("kind")
    if kind not in DATASET_KINDS:
        raise UserError(f"{root} holds a dataset of kind {kind!r}; this simtool reads: {', '.join(DATASET_KINDS.names())}.")
    return card
