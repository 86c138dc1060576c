"""Training-reader speed: frames decoded and cropped to 224 per second per core. Prints figures, asserts nothing.

    python benchmarks/bench_loader.py                  # 400 generated 1920x1080 frames
    python benchmarks/bench_loader.py --frames 2000

(a) simtool: a store built as `build-data` does by default (longer side resized to --max-side 320,
    re-encoded as JPEG quality 90) read by ImageStore.load_crops: RandomResizedCrop(scale 0.5-1,
    ratio 3/4-4/3) of the stored frame, decoded at reduced size (JPEG draft mode) and resized to 224.
(b) the original design: the full-size JPEG bytes in an HDF5 variable-length dataset, a full
    decode, then torchvision's RandomResizedCrop(224, scale 0.5-1) on the PIL image.

Both run in one process with one thread (per core). Peak memory is read from the process's own
maximum resident set after each part, so a store that held every frame in memory would show.
"""

from __future__ import annotations

import argparse
import io
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def _frames(n: int, seed: int = 0):
    """n synthetic 1920x1080 frames with some structure (smooth gradients + noise), as JPEG bytes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:1080, 0:1920].astype(np.float32)
    for i in range(n):
        base = np.stack([(xx / 1920 * 255 + 40 * i) % 255, (yy / 1080 * 255) % 255, ((xx + yy) / 3000 * 255 + 17 * i) % 255], -1)
        img = (base + rng.normal(0, 4, size=(1080, 1920, 1))).clip(0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        yield buf.getvalue()


def _resize_jpeg(data: bytes, max_side: int, quality: int = 90) -> bytes:
    img = Image.open(io.BytesIO(data))
    img.draft("RGB", (max_side, max_side))
    img = img.convert("RGB")
    scale = max_side / max(img.size)
    if scale < 1:
        img = img.resize((round(img.size[0] * scale), round(img.size[1] * scale)), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--max-side", type=int, default=320)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()

    import h5py
    import torch
    import torchvision.transforms as T

    torch.set_num_threads(1)
    from simtool.data.images import sample_crop_box
    from simtool.formats.image_store import ImageSpool, ImageStore

    tmp = Path(tempfile.mkdtemp(prefix="bench_loader."))
    t0 = time.perf_counter()
    spool = ImageSpool(tmp / "spool.raw")
    full_sizes = []
    with h5py.File(tmp / "original.h5", "w") as fh:
        ds = fh.create_dataset("frames", shape=(args.frames,), dtype=h5py.vlen_dtype(np.dtype("uint8")))
        for i, data in enumerate(_frames(args.frames)):
            ds[i] = np.frombuffer(data, dtype=np.uint8)
            full_sizes.append(len(data))
            spool.add(_resize_jpeg(data, args.max_side))
    spool.write_h5(tmp / "images.h5")
    print(f"generated {args.frames} frames of 1920x1080 (mean {np.mean(full_sizes) / 1024:.0f} KiB as JPEG q90) in {time.perf_counter() - t0:.1f} s; "
          f"stored at max side {args.max_side}: {(tmp / 'images.h5').stat().st_size / args.frames / 1024:.0f} KiB per frame")
    rss0 = _maxrss_mb()

    # (a) simtool's reader
    store = ImageStore(tmp / "images.h5", args.size)
    rng = np.random.default_rng(0)
    idx = np.arange(args.frames)
    t = time.perf_counter()
    for start in range(0, args.frames, 64):
        store.load_crops(idx[start : start + 64], lambda w, h: sample_crop_box(w, h, (0.5, 1.0), (3 / 4, 4 / 3), rng))
    a = args.frames / (time.perf_counter() - t)
    rss_a = _maxrss_mb()

    # (b) the original design
    crop = T.RandomResizedCrop(args.size, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3))
    torch.manual_seed(0)
    t = time.perf_counter()
    with h5py.File(tmp / "original.h5", "r") as fh:
        ds = fh["frames"]
        for i in range(args.frames):
            img = Image.open(io.BytesIO(ds[i].tobytes())).convert("RGB")
            np.asarray(crop(img))
    b = args.frames / (time.perf_counter() - t)
    rss_b = _maxrss_mb()

    print(f"(a) simtool reader, store at max side {args.max_side}, crop decoded at reduced size: {a:8.1f} frames/s per core")
    print(f"(b) original design, full 1920x1080 JPEG decode + RandomResizedCrop:           {b:8.1f} frames/s per core")
    print(f"speed-up (a)/(b): {a / b:.1f}x   peak resident memory: {rss0:.0f} MB after generating, {rss_a:.0f} MB after (a), {rss_b:.0f} MB after (b)")


if __name__ == "__main__":
    main()
