"""The dataset directory: the format ``build-data`` writes and every training stage reads.

Layout (format version 2). Every kind has::

    DIR/
      dataset.json      the card: name, kind, counts, splits, source, the resolved build spec, the
                        content fingerprint, the profile it is meant for (optional), how it was built
      images.h5         the checksummed image store (:mod:`simtool.formats.image_store`); may hold
                        zero images (a triplets dataset without pictures)
      rejected.txt      (datasets built from files) every skipped source file or object, one per
                        line: ``<path relative to SRC><TAB><reason>``; may be empty

and, by ``kind`` (the card's ``kind``):

``video`` -- ``frames.parquet``, one row per frame: ``category`` (int64), ``object`` (string),
``frame`` (int32, 0-based position in the video), ``length`` (int32, frames in the video),
``partition`` (string, e.g. the MVImgNet archive), ``split`` ("train" | "val" | "test"), ``index``
(int64 into ``images.h5``), ``path`` (string, source file relative to SRC, may be empty). The first
five mirror the columns of the original MVImgNet loader. Card: ``category_names`` (list, index =
category id; ids may have gaps, named ""), ``rooms`` (which room files exist). Room files:
``room_assignment_balanced.json`` ("semantic") and ``room_assignment_random.json`` ("random"), room
name -> category ids, ``"Uncertain"`` = dropped.

``classes`` -- ``images.parquet``, one row per image: ``class`` (int64, 0-based), ``split``,
``index`` (int64 into ``images.h5``), ``path`` (string, source path relative to SRC) and, where the
source has one, ``superclass`` (int64). Card: ``class_names`` (list, index = class id) and
``superclass_names`` when there is a ``superclass`` column.

``triplets`` -- ``items.parquet``, one row per item: ``item`` (int64 0..N-1, row order), ``id``
(string, the item id as given: a file stem, a catalogue id, or the 0-based row number of an items
file), ``name`` (string, may be ""), ``index`` (int64 into ``images.h5``, -1 = the item has no
image), ``split`` (the item's split with ``split_by: item``, else ""), and ``class`` (int64, -1 =
unknown) where the source knows classes (card ``class_names``). ``triplets.parquet``: ``a``, ``b``,
``c`` (int64 item numbers), ``kind`` ("directed": a anchor, b closer, c farther; "odd-one-out":
(a, b) the pair judged most similar, c the odd one) and ``split``. Optional
``item_images.parquet`` (``item``, ``index``, ``path``) lists every image of every item when an item
has several (THINGS concepts); ``items.index`` is then the item's first image. Card: ``split_by``
("triplet" | "item") and ``dropped`` (triplets dropped while building, by reason).

The **fingerprint** is a SHA-256 of the content (the index columns and every image's bytes, in
order), so two copies of one dataset are recognised as the same dataset wherever they live.

A directory is written under a temporary name and renamed into place when complete, so a
half-built dataset never looks like a dataset. Every reading problem is one :class:`UserError`
sentence naming the file and the fix.

Reading: ``Dataset(root)`` opens a directory as the class of its kind (:class:`VideoDataset`,
:class:`ClassesDataset`, :class:`TripletsDataset`, registered in ``_registry.py``), which all offer
one protocol (:class:`~simtool.formats.dataset_dir._base.Dataset`): ``rows(split)``, ``ids(rows)``,
``labels(rows)``, ``split_of(rows)``, ``images(size)``, ``ref()`` and what a stage needs to embed
rows (``image_rows``, ``export_rows``, ``triplets_of``, ``label_info``), so no stage asks which kind
it has. Columns are read with columnar pyarrow -> NumPy conversions (dictionary encoding for
strings), never per-row Python lists: a generated 6.5-million-frame video index opens in about 1.3 s
on a 2-core machine (``benchmarks/bench_build.py``).
"""

from simtool.formats.dataset_dir._base import Dataset, ImageRows, check_dataset_dir
from simtool.formats.dataset_dir._layout import CARD, FORMAT_VERSION, IMAGES, REJECTED, SPLIT_BY, SPLITS, codes, conform_table, read_card, rebuild_hint
from simtool.formats.dataset_dir._registry import DATASET_KINDS, register_kind
from simtool.formats.dataset_dir._verify import verify_dataset
from simtool.formats.dataset_dir._write import DatasetWriter, new_dataset_dir, video_counts, write_rejected, write_tables
from simtool.formats.dataset_dir.classes import CLASS_INDEX, ClassesDataset
from simtool.formats.dataset_dir.triplets import ITEM_IMAGES, ITEMS, TRIPLETS, TripletsDataset
from simtool.formats.dataset_dir.video import FRAMES, VideoDataset
from simtool.formats.image_store import ImageStore

__all__ = [
    "CARD", "CLASS_INDEX", "DATASET_KINDS", "FORMAT_VERSION", "FRAMES", "IMAGES", "ITEMS", "ITEM_IMAGES", "REJECTED", "SPLITS", "SPLIT_BY",
    "TRIPLETS", "ClassesDataset", "Dataset", "check_dataset_dir", "DatasetWriter", "ImageRows", "ImageStore", "TripletsDataset", "VideoDataset", "codes",
    "conform_table", "new_dataset_dir", "read_card", "rebuild_hint", "register_kind", "verify_dataset", "video_counts", "write_rejected",
    "write_tables",
]
