"""Figures for ``build-data`` and the dataset reader. Prints a table; asserts nothing.

    python benchmarks/bench_build.py                       # 6.5 M-frame index, 2 x 300 frames built
    python benchmarks/bench_build.py --frames 1000000 --images 100 --workers 1,2

1. Opening a video index of MVImgNet's size (``--frames``, default 6.5 M rows: 219,188 objects of
   ~30 frames in 238 categories, 42 partitions): ``Dataset(root)`` and its ``labels``/``ids`` for
   the test split. The index is generated (no images needed: the reader does not open them).
2. Building ``--format mvimgnet`` from generated 1280x720 JPEG frames with the default
   ``--max-side 320``: frames per second for each ``--workers`` value, and the peak memory of the
   build process for N and 2N frames (flat = streaming: no encoded bytes are held in memory).
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def bench_index(n_frames: int, tmp: Path) -> list[tuple[str, str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from simtool.formats.dataset_dir import CARD, FORMAT_VERSION, FRAMES, IMAGES, Dataset
    from simtool.formats.image_store import ImageSpool

    rng = np.random.default_rng(0)
    per_obj = 30
    n_obj = -(-n_frames // per_obj)
    root = tmp / "index"
    root.mkdir()
    t0 = time.perf_counter()
    import pyarrow.compute as pc

    obj_id = np.repeat(np.arange(n_obj), per_obj)[:n_frames]
    names = pa.array([f"{(i * 2654435761) % 2**32:08x}" for i in range(n_obj)])  # distinct hex ids (odd multiplier mod 2^32)
    cat = rng.integers(0, 268, n_obj)[obj_id]
    frame = (np.arange(n_frames) - obj_id * per_obj).astype(np.int32)
    split = pa.array(["train", "val", "test"]).take(pa.array(np.where(obj_id % 10 == 9, 2, np.where(obj_id % 10 == 8, 1, 0))))
    part = pa.array([f"mvi_{p:02d}" for p in range(42)]).take(pa.array(obj_id % 42))
    objects = names.take(pa.array(obj_id))
    frame_names = pa.array([f"{f:03d}.jpg" for f in range(per_obj)]).take(pa.array(frame))
    table = pa.table({
        "category": pa.array(cat, pa.int64()),
        "object": objects,
        "frame": pa.array(frame),
        "length": pa.array(np.full(n_frames, per_obj, np.int32)),
        "partition": part,
        "split": split,
        "index": pa.array(np.arange(n_frames, dtype=np.int64)),
        "path": pc.binary_join_element_wise(objects, pa.scalar("images"), frame_names, "/"),
    })
    pq.write_table(table, root / FRAMES)
    spool = ImageSpool(root / ".raw")
    spool.write_h5(root / IMAGES)
    (root / CARD).write_text(json.dumps({"name": "gen", "kind": "video", "format_version": FORMAT_VERSION, "category_names": [str(i) for i in range(268)]}))
    gen_s = time.perf_counter() - t0
    del table
    t0 = time.perf_counter()
    ds = Dataset(root)
    open_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = ds.rows("test")
    labels = ds.labels(rows)
    ids = ds.ids(rows)
    label_s = time.perf_counter() - t0
    assert len(ids) == len(rows) == len(labels["category"])
    size = (root / FRAMES).stat().st_size / 2**20
    return [
        (f"generate + write a {n_frames:,}-frame index ({size:.0f} MiB parquet)", f"{gen_s:.1f} s"),
        (f"Dataset(root): open + validate the {n_frames:,}-frame index", f"{open_s:.2f} s"),
        (f"rows('test') + labels + ids ({len(rows):,} rows)", f"{label_s:.2f} s"),
    ]


def make_tree(root: Path, n_images: int, per_obj: int = 10) -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    base = rng.integers(0, 255, (90, 160, 3), dtype=np.uint8)
    frame = np.asarray(Image.fromarray(base).resize((1280, 720), Image.BILINEAR))
    for i in range(n_images):
        d = root / str(i % 7) / f"obj{i // per_obj:05d}" / "images"
        d.mkdir(parents=True, exist_ok=True)
        shifted = np.roll(frame, 7 * i, axis=1)
        buf = io.BytesIO()
        Image.fromarray(shifted).save(buf, "JPEG", quality=90)
        (d / f"{i % per_obj:03d}.jpg").write_bytes(buf.getvalue())


_CHILD = """
import resource, sys, time
from simtool.data.builders import build_dataset
from simtool.data.builders import resolve_build_spec
spec = resolve_build_spec("mvimgnet", sys.argv[2], sys.argv[1], options={"--workers": int(sys.argv[3])})
t0 = time.perf_counter()
build_dataset(spec)
print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def run_build(src: Path, out: Path, workers: int) -> tuple[float, float, float]:
    """(seconds of the build, peak RSS of the main process and of the largest worker in MiB), in a fresh process."""
    res = subprocess.run([sys.executable, "-c", _CHILD, str(src), str(out), str(workers)], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"build failed: {res.stderr[-2000:]}")
    seconds, main_kib, child_kib = res.stdout.split()[-3:]
    return float(seconds), int(main_kib) / 1024, int(child_kib) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=6_500_000, help="rows of the generated video index")
    ap.add_argument("--images", type=int, default=400, help="frames of the smaller generated tree (the larger has twice as many)")
    ap.add_argument("--workers", default="1,2", help="comma-separated --workers values to time")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        # builds first: a child's peak RSS counts from what it inherits at fork time
        for n in (args.images, 2 * args.images):
            src = tmp / f"tree{n}"
            make_tree(src, n)
            for w in (int(x) for x in args.workers.split(",")):
                seconds, rss, worker_rss = run_build(src, tmp / f"out{n}-{w}", w)
                extra = f", largest worker {worker_rss:.0f} MiB" if w > 1 else ""
                rows.append((f"build-data --format mvimgnet, {n} frames 1280x720 -> max-side 320, --workers {w}",
                             f"{n / seconds:.0f} frames/s ({seconds:.1f} s incl. worker start-up), peak RSS main process {rss:.0f} MiB{extra}"))
        rows += bench_index(args.frames, tmp)
    width = max(len(r[0]) for r in rows)
    print(f"{'what'.ljust(width)}  figure")
    for what, fig in rows:
        print(f"{what.ljust(width)}  {fig}")


if __name__ == "__main__":
    main()
