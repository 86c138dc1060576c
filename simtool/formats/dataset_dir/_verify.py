"""Verifying a dataset directory: every index row, every image, the counts and the fingerprint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from simtool.errors import UserError
from simtool.formats.dataset_dir._base import Dataset
from simtool.formats.dataset_dir._layout import IMAGES


def verify_dataset(root: str | Path, workers: int = 1, progress=None) -> tuple[dict, list[str]]:
    """Re-read every index row and every image of a dataset directory; ``(summary, problems)``.

    Checks: the card and tables open and have their columns; every ``index`` points into the image
    store (-1 allowed for items); triplets name existing items; room files parse; every image
    passes its checksum and decodes completely; the counts and the fingerprint in the card match
    the content. ``workers`` processes decode in parallel.
    """
    from simtool.formats.image_store import _read_index, store_digest, verify_store_range

    root = Path(root)
    ds = Dataset(root)  # raises one UserError sentence when it cannot be opened at all
    problems: list[str] = []
    try:
        offsets, _ = _read_index(root / IMAGES)
    except UserError as exc:
        return {"kind": ds.kind, "rows": len(ds), "images": 0}, [str(exc)]
    n_images = len(offsets) - 1
    index = ds.index
    bad = np.flatnonzero((index < ds.lowest_index) | (index >= n_images))
    if len(bad):
        problems.append(f"{len(bad)} index row(s) point outside the image store of {n_images} images (first: row {int(bad[0])} -> image {int(index[bad[0]])}).")
    problems += ds.verify_extra(n_images)
    counts = ds.card.get("counts", {})
    if "images" in counts and int(counts["images"]) != n_images:
        problems.append(f"The card counts {counts['images']} images, the store holds {n_images}.")
    # images: checksums + complete decodes, in parallel ranges
    chunk = max(1, min(2000, (n_images // max(1, workers * 4)) or 1))
    ranges = [(s, min(n_images, s + chunk)) for s in range(0, n_images, chunk)]
    image_problems: list[tuple[int, str]] = []
    done = 0
    if workers > 1 and len(ranges) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
            for (s, e), res in zip(ranges, ex.map(verify_store_range, [root / IMAGES] * len(ranges), [r[0] for r in ranges], [r[1] for r in ranges])):
                image_problems.extend(res)
                done += e - s
                if progress:
                    progress(done, n_images)
    else:
        for s, e in ranges:
            image_problems.extend(verify_store_range(root / IMAGES, s, e))
            done += e - s
            if progress:
                progress(done, n_images)
    for i, why in image_problems[:20]:
        problems.append(why if why.startswith("image") else f"image {i}: {why}")
    if len(image_problems) > 20:
        problems.append(f"... and {len(image_problems) - 20} more damaged image(s).")
    if not image_problems:
        tables = {name: pq.read_table(root / name) for name in list(ds.tables) + list(ds.optional_tables) if (root / name).is_file()}
        fp = ds.fingerprint_of(tables, store_digest(root / IMAGES))
        if fp != ds.fingerprint:
            a, b = distinct_prefixes(fp, ds.fingerprint)
            problems.append(f"The content fingerprint {a} differs from the card's {b}: "
                            "the index or the images changed after the build.")
    return ds.summary(n_images), problems


def distinct_prefixes(a: str, b: str, least: int = 19) -> tuple[str, str]:
    """``a`` and ``b`` cut to the same length, at least ``least`` characters and long enough that
    the two printed prefixes differ (4 characters past the first difference)."""
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    n = max(least, first + 5)
    return a[:n], b[:n]
