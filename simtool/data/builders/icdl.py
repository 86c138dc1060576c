"""``build-data --format icdl SRC``: import the files of the original ICDL code.

SRC holds ``data_all.h5`` (groups ``/<partition>/<category>/<object>``, each a variable-length
uint8 dataset with one encoded JPEG per frame; the ``/<category>/<object>`` layout of the AASSL
code is read too) and ``dataset_train_all3.parquet`` / ``dataset_test_all3.parquet`` (and
``dataset_val_all3.parquet`` when present) with the columns ``category``, ``object``, ``frame``
(the element of the object's dataset), ``partition`` (and ``length``, recomputed). Every listed
frame is read from the HDF5 file, resized like any other source (``--max-side 0`` keeps the bytes)
and stored; frames missing from the HDF5 file or undecodable are skipped and listed in
``rejected.txt``. Category names: ``mvimgnet_category.txt`` in SRC or ``--set
icdl.categories=FILE``; rooms: ``--rooms FILE`` as for ``--format mvimgnet``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from simtool.data.builders._registry import register_builder
from simtool.data.builders._scan import require_source
from simtool.data.builders.mvimgnet import CATEGORY_FILE, category_name_list, finalize_video, load_rooms, read_category_file
from simtool.data.builders.parts import BuildContext, Scan, run_image_build
from simtool.errors import UserError
from simtool.specs.base import Spec
from simtool.specs.data import ImageBuildBase


class ICDLOptions(Spec):
    rooms: Optional[str] = Field(None, description="room assignment JSON stored as the semantic rooms")
    random_rooms: Optional[str] = Field(None, description="room assignment JSON stored as the random control (default: a seeded permutation of --rooms)")
    categories: Optional[str] = Field(None, description="category names file (id,name per line); default SRC/mvimgnet_category.txt when present")


class ICDLBuildSpec(ImageBuildBase):
    """``--format icdl SRC``: the original code's data_all.h5 + dataset_{train,val,test}_all3.parquet."""

    format: Literal["icdl"]
    icdl: ICDLOptions = ICDLOptions()


H5_NAME = "data_all.h5"
PARQUETS = {"train": "dataset_train_all3.parquet", "val": "dataset_val_all3.parquet", "test": "dataset_test_all3.parquet"}
EXPECTED = f"the ICDL files {H5_NAME} with {PARQUETS['train']} and {PARQUETS['test']} ({PARQUETS['val']} optional)"
NEEDED = ("category", "object", "frame", "partition")


def scan_icdl(spec, ctx: BuildContext, progress=None) -> Scan:
    import h5py

    src = require_source(spec, EXPECTED)
    h5 = src / H5_NAME
    missing = [n for n in (H5_NAME, PARQUETS["train"], PARQUETS["test"]) if not (src / n).is_file()]
    if missing:
        raise UserError(f"{src} does not look like the ICDL files ({missing[0]} is missing); --format icdl expects {EXPECTED}.")
    tables = []
    for split, name in PARQUETS.items():
        path = src / name
        if not path.is_file():
            continue
        try:
            t = pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise UserError(f"{path} cannot be read ({str(exc).splitlines()[0]}); --format icdl expects the parquet files the ICDL code reads.") from None
        lack = [c for c in NEEDED if c not in t.column_names]
        if lack:
            raise UserError(f"{path} lacks the column(s) {', '.join(lack)}; --format icdl expects the columns {', '.join(NEEDED)}.")
        tables.append(pa.table({
            "category": t.column("category").cast(pa.int64()),
            "object": pc.cast(t.column("object"), pa.string()),
            "frame": t.column("frame").cast(pa.int64()),
            "partition": pc.cast(t.column("partition"), pa.string()),
            "split": pa.array([split] * t.num_rows, pa.string()),
        }))
    rows = pa.concat_tables(tables).sort_by([("partition", "ascending"), ("category", "ascending"), ("object", "ascending"), ("frame", "ascending")])
    if rows.num_rows == 0:
        raise UserError(f"The parquet files in {src} list no frame; --format icdl expects {EXPECTED}.")
    # one row per (partition, category, object, frame): a frame listed twice is read once
    part_cat_obj = pc.binary_join_element_wise(rows.column("partition"), pc.cast(rows.column("category"), pa.string()), rows.column("object"), "/")
    full = pc.binary_join_element_wise(part_cat_obj, pc.cast(rows.column("frame"), pa.string()), "#")
    full_np = full.to_numpy(zero_copy_only=False).astype(str)
    dup = np.concatenate([[False], full_np[1:] == full_np[:-1]])
    skipped = {"duplicate_rows": int(dup.sum())}
    if dup.any():
        rows = rows.filter(pa.array(~dup))
        part_cat_obj = part_cat_obj.filter(pa.array(~dup))
    # which HDF5 layout: /<partition>/<category>/<object> or /<category>/<object>
    first = rows.slice(0, 1).to_pylist()[0]
    try:
        with h5py.File(h5, "r") as fh:
            if f"{first['partition']}/{first['category']}/{first['object']}" in fh:
                with_partition = True
            elif f"{first['category']}/{first['object']}" in fh:
                with_partition = False
            else:
                raise UserError(f"{h5} has neither /{first['partition']}/{first['category']}/{first['object']} nor "
                                f"/{first['category']}/{first['object']} (the first frame of the parquet files); "
                                f"--format icdl expects {EXPECTED}.")
    except OSError as exc:
        raise UserError(f"{h5} cannot be read as HDF5 ({str(exc).splitlines()[0]}); --format icdl expects {EXPECTED}.") from None
    keys = part_cat_obj if with_partition else pc.binary_join_element_wise(pc.cast(rows.column("category"), pa.string()), rows.column("object"), "/")
    keys_np = keys.to_numpy(zero_copy_only=False).astype(str) if not isinstance(keys, np.ndarray) else keys
    group = np.cumsum(np.concatenate([[0], (keys_np[1:] != keys_np[:-1]).astype(np.int64)])) if len(keys_np) else np.zeros(0, dtype=np.int64)
    frame = rows.column("frame")
    path = pc.binary_join_element_wise(pc.binary_join_element_wise(pa.scalar(H5_NAME), keys, ":/"), pc.cast(frame, pa.string()), "#")
    plan = pa.table({
        "key": keys,
        "member": frame,
        "group": pa.array(group, pa.int64()),
        "partition": rows.column("partition"),
        "category": rows.column("category"),
        "object": rows.column("object"),
        "split": rows.column("split"),
        "path": path,
    })
    opts = spec.icdl
    ids = sorted(set(rows.column("category").to_numpy().tolist()))
    names_file = Path(opts.categories) if opts.categories else (src / CATEGORY_FILE)
    names = read_category_file(names_file) if (opts.categories or names_file.is_file()) else {}
    category_names = category_name_list(ids, names, {i: str(i) for i in ids})
    rooms = load_rooms(opts.rooms, opts.random_rooms, len(category_names), spec.seed)
    info = {"category_names": category_names, "rooms": rooms, "partitions": sorted(set(rows.column("partition").to_pylist()) - {""})}
    return Scan(kind="video", name=f"icdl-{src.resolve().name}", reader=("h5", str(h5.resolve())), plan=plan, info=info, skipped=skipped)


@register_builder("icdl", spec=ICDLBuildSpec)
def build_icdl(spec, progress=None, ctx: BuildContext | None = None) -> dict:
    return run_image_build(spec, scan_icdl, finalize_video, progress, ctx)
