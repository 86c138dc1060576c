"""``kind: video``: frames of object videos (``frames.parquet``), with room assignments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from simtool.errors import UserError
from simtool.formats.dataset_dir._base import Dataset
from simtool.formats.dataset_dir._layout import codes, hash_columns, ints, new_hash
from simtool.formats.dataset_dir._registry import register_kind
from simtool.formats.rooms import ROOM_FILES, ROOM_LABEL_PREFIX, load_room_assignment

FRAMES = "frames.parquet"
VIDEO_COLUMNS = {
    "category": pa.int64(),
    "object": pa.string(),
    "frame": pa.int32(),
    "length": pa.int32(),
    "partition": pa.string(),
    "split": pa.string(),
    "index": pa.int64(),
    "path": pa.string(),
}
# Columns that define a video dataset's content (a frame's ``path`` says where a file came from,
# not what it is).
FINGERPRINT_COLUMNS = ("category", "object", "frame", "length", "partition", "split", "index")


@register_kind("video")
class VideoDataset(Dataset):
    """Frames of object videos. ``category``, ``object`` (codes in sorted name order), ``frame``,
    ``split``, ``index``: one per frame; ``category_names``, ``n_categories``; rooms."""

    tables = {FRAMES: (VIDEO_COLUMNS, {})}
    fingerprint_columns = {FRAMES: FINGERPRINT_COLUMNS}
    built_by = "--format mvimgnet, icdl or toyworld"

    category: np.ndarray
    object: np.ndarray
    frame: np.ndarray
    split: np.ndarray
    index: np.ndarray
    category_names: list
    n_categories: int
    length: np.ndarray
    partition: np.ndarray

    def _load(self) -> None:
        # the columns the readers use (length, partition and path stay on disk: a 6.5 M-frame index opens faster)
        table = self._table(FRAMES, ("category", "object", "frame", "split", "index"), only=("category", "object", "frame", "split", "index"))
        self.table = table
        self.category = ints(table.column("category"))
        self.object, self._object_values = codes(table.column("object"))
        self.frame = ints(table.column("frame"))
        split_codes, values = codes(table.column("split"))
        self.split = values[split_codes] if len(split_codes) else np.zeros(0, dtype=str)
        self.index = ints(table.column("index"))
        self.category_names = list(self.card.get("category_names", []))
        self.n_categories = max(len(self.category_names), int(self.category.max()) + 1 if len(self.category) else 0)
        self._object_names: np.ndarray | None = None
        self._check_splits(FRAMES, self.split, values=values)

    @classmethod
    def fingerprint_of(cls, tables: dict[str, pa.Table], images_digest: str) -> str:
        h = new_hash()
        hash_columns(h, tables[FRAMES], FINGERPRINT_COLUMNS)
        h.update(images_digest.encode())
        return "sha256:" + h.hexdigest()

    @property
    def object_names(self) -> np.ndarray:
        """The object name of every frame (str array; built on first use)."""
        if self._object_names is None:
            self._object_names = self._object_values[self.object] if len(self.object) else np.zeros(0, dtype=str)
        return self._object_names

    @property
    def room_assignments(self) -> list[str]:
        """Names of the room assignments stored in the directory (e.g. semantic, random)."""
        return [k for k in ROOM_FILES if (self.root / ROOM_FILES[k]).is_file()]

    def rooms(self, which: str = "semantic") -> tuple[np.ndarray, list[str], str]:
        """Room of every category for ``which`` = 'semantic' | 'random' | a JSON path.

        Returns ``(room_of_category int64 (C,) with -1 = dropped, room names, source path)``.
        """
        if which in ROOM_FILES:
            path = self.root / ROOM_FILES[which]
            if not path.is_file():
                stored = ", ".join(self.room_assignments) or "none"
                raise UserError(f"The dataset {self.root} has no {which} room assignment ({ROOM_FILES[which]}; stored: {stored}); "
                                "give a room JSON file with --set data.rooms=FILE.json (train) or --rooms FILE.json (evaluate), "
                                "or rebuild the dataset with --rooms FILE.json (simtool build-data --format rooms writes one from a table).")
        else:
            path = Path(which)
        room_of_category, names = load_room_assignment(path, self.n_categories)
        return room_of_category, names, str(path)

    def ids(self, rows: np.ndarray) -> np.ndarray:
        """``"<object>/<frame>"`` of every row."""
        rows = np.asarray(rows, dtype=np.int64)
        names = self._object_values[self.object[rows]] if len(rows) else np.zeros(0, dtype=str)
        return np.char.add(np.char.add(names, "/"), self.frame[rows].astype(str))

    def labels(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """``category`` (int64), ``object`` (names), ``frame`` (int64) and ``room:<assignment>``
        (int64, -1 = no room) for every stored room assignment."""
        rows = np.asarray(rows, dtype=np.int64)
        cat = self.category[rows]
        out = {
            "category": cat,
            "object": self._object_values[self.object[rows]] if len(rows) else np.zeros(0, dtype=str),
            "frame": self.frame[rows],
        }
        for which in self.room_assignments:
            room_of_category, _, _ = self.rooms(which)
            out[ROOM_LABEL_PREFIX + which] = room_of_category[cat]
        return out

    def label_info(self) -> dict:
        return {"category_names": self.category_names, "rooms": {which: self.rooms(which)[1] for which in self.room_assignments}}

    def frame_keys(self, rows: np.ndarray | None = None) -> np.ndarray:
        """``"<category>/<object>/<frame>"`` of every row (of ``rows``): what identifies a frame across
        two builds of the same frames."""
        rows = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)
        names = self._object_values[self.object[rows]] if len(rows) else np.zeros(0, dtype=str)
        return np.char.add(np.char.add(np.char.add(self.category[rows].astype(str), "/"), np.char.add(names, "/")), self.frame[rows].astype(str))

    def twin_images(self, twin: Dataset, rows: np.ndarray) -> np.ndarray:
        if not isinstance(twin, VideoDataset):
            raise UserError(f"--images {twin.root} is a {twin.kind} dataset; it must be a video dataset of the same frames as {self.root}.")
        want = self.frame_keys(rows)
        have = twin.frame_keys()
        order = np.argsort(have, kind="stable")
        pos = np.searchsorted(have[order], want)
        pos = np.clip(pos, 0, max(0, len(have) - 1))
        found = (have[order][pos] == want) if len(have) else np.zeros(len(want), dtype=bool)
        if not found.all():
            c, o, f = want[np.flatnonzero(~found)[0]].split("/", 2)
            raise UserError(f"--images {twin.root} has no frame {f} of object {o} (category {c}), which {self.root} has; "
                            "it must hold the same (category, object, frame) keys (build it from the same frames, e.g. with the backgrounds removed).")
        return twin.index[order[pos]]

    def verify_extra(self, n_images: int) -> list[str]:
        problems = []
        for which in self.room_assignments:
            try:
                self.rooms(which)
            except UserError as exc:
                problems.append(str(exc))
        return problems
