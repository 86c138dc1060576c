"""``kind: classes``: class-labelled images (``images.parquet``), e.g. CUB, Cars, SOP."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from simtool.formats.dataset_dir._base import Dataset, ImageRows
from simtool.formats.dataset_dir._layout import ints, strings
from simtool.formats.dataset_dir._registry import register_kind

CLASS_INDEX = "images.parquet"
CLASSES_COLUMNS = {"class": pa.int64(), "split": pa.string(), "index": pa.int64(), "path": pa.string()}
CLASSES_OPTIONAL = {"superclass": pa.int64()}


@register_kind("classes")
class ClassesDataset(Dataset):
    """Class-labelled images: ``cls``, ``split``, ``index``, ``path`` (the image's id), ``superclass``
    (or None) per image; ``class_names``, ``n_classes``."""

    tables = {CLASS_INDEX: (CLASSES_COLUMNS, CLASSES_OPTIONAL)}
    # a class image's path is its id, so it counts
    fingerprint_columns = {CLASS_INDEX: ("class", "superclass", "split", "index", "path")}
    built_by = "--format imagefolder, cub, cars or sop"

    cls: np.ndarray
    split: np.ndarray
    index: np.ndarray
    path: np.ndarray
    superclass: np.ndarray | None
    class_names: list
    n_classes: int

    def _load(self) -> None:
        table = self._table(CLASS_INDEX, ("class", "split", "index"))
        self.table = table
        self.cls = ints(table.column("class"))
        self.split = strings(table.column("split"))
        self.index = ints(table.column("index"))
        self.path = table.column("path").to_numpy(zero_copy_only=False).astype(str) if "path" in table.column_names else self.index.astype(str)
        self.superclass = ints(table.column("superclass")) if "superclass" in table.column_names else None
        self.class_names = list(self.card.get("class_names", []))
        self.n_classes = max(len(self.class_names), int(self.cls.max()) + 1 if len(self.cls) else 0)
        self._check_splits(CLASS_INDEX, self.split)

    def ids(self, rows: np.ndarray) -> np.ndarray:
        """The source path of every row, relative to SRC."""
        return self.path[np.asarray(rows, dtype=np.int64)]

    def labels(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """``class`` (and ``superclass``)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = {"class": self.cls[rows]}
        if self.superclass is not None:
            out["superclass"] = self.superclass[rows]
        return out

    def image_table(self) -> ImageRows:
        return ImageRows(image=self.index.astype(np.int64), key=self.ids(np.arange(len(self))), group=self.cls.astype(np.int64),
                         split=self.split.astype(str), what="classes")
