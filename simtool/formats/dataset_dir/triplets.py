"""``kind: triplets``: items (``items.parquet``), triplet judgements over them (``triplets.parquet``)
and, optionally, every image of every item (``item_images.parquet``)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from simtool.errors import UserError
from simtool.formats.dataset_dir._base import Dataset, ImageRows
from simtool.formats.dataset_dir._layout import SPLITS, ints, rebuild_hint, strings
from simtool.formats.dataset_dir._registry import register_kind
from simtool.formats.triplets import TRIPLET_KINDS, Triplets

ITEMS = "items.parquet"
TRIPLETS = "triplets.parquet"
ITEM_IMAGES = "item_images.parquet"
ITEMS_COLUMNS = {"item": pa.int64(), "id": pa.string(), "name": pa.string(), "index": pa.int64(), "split": pa.string()}
ITEMS_OPTIONAL = {"class": pa.int64()}
TRIPLETS_COLUMNS = {"a": pa.int64(), "b": pa.int64(), "c": pa.int64(), "kind": pa.string(), "split": pa.string()}
ITEM_IMAGES_COLUMNS = {"item": pa.int64(), "index": pa.int64(), "path": pa.string()}


@register_kind("triplets")
class TripletsDataset(Dataset):
    """Items and triplet judgements: ``item_ids``, ``item_names``, ``item_index``, ``item_split``,
    ``item_class`` (or None) per item; ``triplets`` (T, 3), ``triplet_kind``, ``triplet_split``;
    ``split_by``; ``item_images`` ((item, index) arrays, or None); ``class_names``."""

    tables = {ITEMS: (ITEMS_COLUMNS, ITEMS_OPTIONAL), TRIPLETS: (TRIPLETS_COLUMNS, {})}
    optional_tables = {ITEM_IMAGES: (ITEM_IMAGES_COLUMNS, {})}
    fingerprint_columns = {
        ITEMS: ("item", "id", "name", "index", "split", "class"),
        TRIPLETS: ("a", "b", "c", "kind", "split"),
        ITEM_IMAGES: ("item", "index", "path"),
    }
    built_by = "--format triplets"
    lowest_index = -1  # an item may have no image

    item_ids: np.ndarray
    item_names: np.ndarray
    item_index: np.ndarray
    item_split: np.ndarray
    item_class: np.ndarray | None
    triplets: np.ndarray
    triplet_kind: np.ndarray
    triplet_split: np.ndarray
    split_by: str
    item_images: tuple | None
    class_names: list

    def _load(self) -> None:
        items = self._table(ITEMS, ("item", "id", "index"))
        trip = self._table(TRIPLETS, ("a", "b", "c", "kind", "split"))
        self.table, self.triplet_table = items, trip
        n = items.num_rows
        item = ints(items.column("item"))
        if not np.array_equal(item, np.arange(n)):
            raise UserError(f"{self.root / ITEMS} is damaged (its item column is not 0..{n - 1} in row order); {rebuild_hint(self.root)}.")
        self.item_ids = items.column("id").to_numpy(zero_copy_only=False).astype(str) if n else np.zeros(0, dtype=str)
        self.item_names = items.column("name").to_numpy(zero_copy_only=False).astype(str) if n and "name" in items.column_names else np.full(n, "", dtype=str)
        self.item_index = ints(items.column("index"))
        self.item_split = strings(items.column("split")) if "split" in items.column_names else np.full(n, "", dtype=str)
        self.item_class = ints(items.column("class")) if "class" in items.column_names else None
        self.index = self.item_index
        self.split = self.item_split
        abc = [ints(trip.column(c)) for c in ("a", "b", "c")]
        self.triplets = np.stack(abc, axis=1) if trip.num_rows else np.zeros((0, 3), dtype=np.int64)
        self.triplet_kind = strings(trip.column("kind"))
        self.triplet_split = strings(trip.column("split"))
        if len(self.triplets) and (self.triplets.min() < 0 or self.triplets.max() >= n):
            raise UserError(f"{self.root / TRIPLETS} names items outside 0..{n - 1}; {rebuild_hint(self.root)}.")
        bad_kind = sorted(set(np.unique(self.triplet_kind).tolist()) - set(TRIPLET_KINDS))
        if bad_kind:
            raise UserError(f"{self.root / TRIPLETS} has unknown kind {bad_kind[0]!r} (expected directed or odd-one-out); {rebuild_hint(self.root)}.")
        self.split_by = str(self.card.get("split_by", "triplet"))
        # with an item or class split, a triplet whose items lie in different splits has split ""
        self._check_splits(TRIPLETS, self.triplet_split, SPLITS if self.split_by == "triplet" else SPLITS + ("",))
        self._check_splits(ITEMS, self.item_split, SPLITS + ("",))
        self.class_names = list(self.card.get("class_names", []))
        self.item_images = None
        if (self.root / ITEM_IMAGES).is_file():
            t = self._table(ITEM_IMAGES, ("item", "index"))
            self.item_images = (ints(t.column("item")), ints(t.column("index")))

    # -- the protocol ---------------------------------------------------------------------------------
    @property
    def items_split(self) -> bool:
        """Whether the items are split (``split_by`` item or class: the staged layout), not the triplets."""
        return self.split_by in ("item", "class")

    def rows(self, split: str) -> np.ndarray:
        """Items in ``split``. Split by triplet (``split_by: triplet``), every item is in every
        split: any split gives every item; :meth:`triplet_rows` gives the triplets of a split."""
        if split == "all" or not self.items_split:
            return np.arange(len(self))
        return np.flatnonzero(self.split == split)

    def triplet_rows(self, split: str) -> np.ndarray:
        """Indices of the triplets in ``split`` ('all' = every triplet): with an item or class split,
        those whose three items all lie in ``split``."""
        if split == "all":
            return np.arange(len(self.triplets))
        return np.flatnonzero(self.triplet_split == split)

    def triplets_among(self, splits) -> np.ndarray:
        """Indices of the triplets of the part ``splits``: with an item or class split, every triplet
        whose three items lie in these splits (those that mix them included: the teachers' part
        ``[train, val]``); with a triplet split, the triplets of these splits."""
        splits = list(dict.fromkeys(splits))
        if not self.items_split:
            return np.flatnonzero(np.isin(self.triplet_split, splits))
        if not len(self.triplets):
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(np.isin(self.item_split[self.triplets], splits).all(1))

    def ids(self, rows: np.ndarray) -> np.ndarray:
        """The item id of every row."""
        return self.item_ids[np.asarray(rows, dtype=np.int64)]

    def labels(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """``item`` (and ``class`` when known)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = {"item": rows.copy()}
        if self.item_class is not None and (self.item_class >= 0).any():
            out["class"] = self.item_class[rows]
        return out

    def has_image(self, rows: np.ndarray) -> np.ndarray:
        """Whether each item of ``rows`` has at least one image."""
        rows = np.asarray(rows, dtype=np.int64)
        has = self.item_index[rows] >= 0
        if self.item_images is not None:
            has |= np.isin(rows, self.item_images[0])
        return has

    def export_rows(self, split: str, index_models: bool) -> np.ndarray:
        """For image models only the items that have an image; every item for index models (teachers)."""
        rows = self.rows(split)
        return rows if index_models else rows[self.has_image(rows)]

    def image_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        rows = np.asarray(rows, dtype=np.int64)
        if self.item_images is None:
            return self.index[rows], None
        item, image = self.item_images
        pos = np.full(len(self), -1, dtype=np.int64)
        pos[rows] = np.arange(len(rows))
        keep = pos[item] >= 0
        order = np.argsort(pos[item][keep], kind="stable")
        return image[keep][order], pos[item][keep][order]

    def triplets_of(self, rows: np.ndarray, split: str) -> Triplets:
        """The labelled triplets of ``split`` (every one for 'all') whose items are all among
        ``rows``, as row positions."""
        sel = self.triplet_rows(split)
        pos = np.full(len(self), -1, dtype=np.int64)
        pos[np.asarray(rows, dtype=np.int64)] = np.arange(len(rows))
        idx = pos[self.triplets[sel]]
        inside = (idx >= 0).all(1)
        return Triplets(idx[inside], self.triplet_kind[sel][inside], self.triplet_split[sel][inside])

    def image_table(self) -> ImageRows:
        if self.item_images is not None:
            item, image = self.item_images
        else:
            item = np.flatnonzero(self.item_index >= 0)
            image = self.item_index[item]
        if not len(item):
            raise UserError(f"The triplets dataset {self.root} has no item images; an image student needs them (build it with --images DIR).")
        order = np.lexsort((image, item))
        group, image = item[order].astype(np.int64), image[order].astype(np.int64)
        split = self.item_split[group] if self.items_split else np.full(len(group), "", dtype="<U5")
        return ImageRows(image=image, key=self.item_ids[group], group=group, split=split, what="items")

    # -- checking ---------------------------------------------------------------------------------------
    def verify_extra(self, n_images: int) -> list[str]:
        if self.item_images is None:
            return []
        it, ix = self.item_images
        if len(it) and (it.min() < 0 or it.max() >= len(self) or ix.min() < 0 or ix.max() >= n_images):
            return [f"{ITEM_IMAGES} names items or images that do not exist."]
        return []

    def summary(self, n_images: int) -> dict:
        return {**super().summary(n_images), "triplets": len(self.triplets)}
