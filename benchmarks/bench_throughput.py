"""Training throughput and its bottleneck: the model alone, the data path alone, end to end. Prints figures, asserts nothing.

    python benchmarks/bench_throughput.py --quick                  # CPU: ResNet-50 at 224 px, batch 8, a few steps (< 5 min)
    python benchmarks/bench_throughput.py --device cuda            # the preset's global batch (normal: 512 anchors + 512 positives)
    python benchmarks/bench_throughput.py --device cuda --decode workers,device --out results.json

It builds its own dataset, like ``bench_loader.py``: distinct generated 1920x1080 JPEG frames (a
colour gradient with noise, as a camera sees it), repeated through symbolic links into an
MVImgNet-shaped tree of ``--frames`` frames, built with ``build-data --format mvimgnet`` as it builds
by default (longer side 320, JPEG q90, 2 rooms of 2 categories). Then, for the preset (default
``normal``: ResNet-50 at 224 px, time contrast + labels + probes) at ``--batch`` anchors per step:

(a) **model alone**: one batch resident on the device, reused: the method's training step (its
    augmentations on the device, forward, loss) + backward + optimizer step, as the engine runs it
    (same precision, channels-last, compile). The ceiling of end-to-end training.
(b) **data path alone**: the method's batches (store -> decode -> crop in DataLoader workers, or
    decoded on the device with ``--decode device``) -> device -> its augmentations; no model.
(c) **end to end**: ``simtool train``'s engine (:func:`simtool.engine.loop.fit`) on the same spec, one
    record per step, stopped (as Ctrl-C stops it) after the measured steps; images/s over the steps
    after the warm-up and the engine's own ``data_wait`` (the fraction of step time spent waiting for
    the next batch).

and one line naming the limit: data-bound (waiting for data takes >= 10 % of step time), model-bound
(end to end within 85 % of the model alone) or otherwise the engine's own overhead.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields, is_dataclass, replace
from pathlib import Path

import numpy as np
import torch

N_CATEGORIES, FRAMES_PER_OBJECT = 4, 16


def _frame_jpeg(i: int) -> bytes:
    """Distinct frame ``i``: 1920x1080, a shifted colour gradient with sensor-like noise, JPEG q90."""
    from PIL import Image

    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[0:1080, 0:1920].astype(np.float32)
    base = np.stack([(xx / 1920 * 200 + 13 * i) % 256, yy / 1080 * 200 + 20, (xx + yy) / 3000 * 200 + (7 * i) % 50], -1)
    img = (base + rng.normal(0, 5, size=(1080, 1920, 1))).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_dataset(root: Path, n_frames: int, n_unique: int, workers: int) -> Path:
    """An MVImgNet-shaped tree of ``n_frames`` frames (``n_unique`` distinct ones, linked), built as ``build-data`` builds it."""
    from simtool.data.builders import build_dataset, resolve_build_spec

    src, unique = root / "src", root / "unique"
    unique.mkdir(parents=True)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for i, data in enumerate(pool.map(_frame_jpeg, range(n_unique))):
            (unique / f"{i:05d}.jpg").write_bytes(data)
    n_objects = -(-n_frames // FRAMES_PER_OBJECT)
    for k in range(n_frames):
        obj = k // FRAMES_PER_OBJECT
        d = src / str(obj % N_CATEGORIES) / f"obj{obj:05d}" / "images"
        d.mkdir(parents=True, exist_ok=True)
        os.symlink(unique / f"{k % n_unique:05d}.jpg", d / f"{k % FRAMES_PER_OBJECT:03d}.jpg")
    rooms = root / "rooms.json"
    rooms.write_text(json.dumps({"room0": [0, 1], "room1": [2, 3]}))
    out = root / "data"
    spec = resolve_build_spec("mvimgnet", str(out), str(src), options={"--workers": workers, "--rooms": str(rooms), "--split": "1,0,0"})
    build_dataset(spec)
    assert n_objects > 0
    return out


def _to(batch, device):
    """``batch`` with every tensor on ``device`` (tuples, lists and dataclasses walked)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if is_dataclass(batch) and not isinstance(batch, type):
        return replace(batch, **{f.name: _to(getattr(batch, f.name), device) for f in fields(batch)})
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(x, device) for x in batch)
    return batch


def _images(batch) -> list:
    """The uint8 image tensors of a batch (a method's batch type, walked)."""
    if isinstance(batch, torch.Tensor):
        return [batch] if batch.dtype == torch.uint8 and batch.dim() == 4 else []
    if is_dataclass(batch) and not isinstance(batch, type):
        return [x for f in fields(batch) for x in _images(getattr(batch, f.name))]
    if isinstance(batch, (tuple, list)):
        return [x for b in batch for x in _images(b)]
    return []


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _build(spec, device):
    """The method, its model on the device as the engine prepares it, and the resolved engine options."""
    from simtool.data.loading import loader_options
    from simtool.engine.device import resolve_engine, resolve_precision, to_channels_last
    from simtool.engine.distributed import DistInfo
    from simtool.engine.loop import engine_loader_options
    from simtool.methods import build_method

    engine = resolve_engine(spec.engine, device)
    with loader_options(engine_loader_options(engine, device)):
        method = build_method(spec, device=device, dist=DistInfo(), console=None)
    model = method.model.to(device)
    if engine.channels_last:
        to_channels_last(model)
    return method, model, engine, resolve_precision(spec.precision, device)


def model_alone(spec, device, warmup: int, steps: int) -> dict:
    from simtool.engine.device import autocast, cuda_memory, tf32_matmuls
    from simtool.engine.distributed import DistInfo
    from simtool.engine.method import StepInfo
    from simtool.engine.optim import build_optimizer

    method, model, engine, precision = _build(spec, device)
    optimizer = build_optimizer(model, spec.optim)
    train_model = torch.compile(model) if engine.compile else model
    batch = _to(next(iter(method.batches(0, 0))), device)
    model.train()
    with tf32_matmuls(engine.tf32 if device.type == "cuda" else None):
        for k in range(warmup + steps):
            if k == warmup:
                _sync(device)
                cuda_memory(device)  # reset the peak: the measured steps' own
                t = time.perf_counter()
            with autocast(device, precision):
                loss, _ = method.training_step(train_model, batch, StepInfo(0, k, k, device, DistInfo()))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            float(loss.detach())  # the engine reads the loss every step too
        _sync(device)
    seconds = time.perf_counter() - t
    return {"images_per_s": method.images_per_step * steps / seconds, "step_s": seconds / steps, "peak_memory_gib": cuda_memory(device),
            "images_per_step": method.images_per_step, "workers": method_workers(method), "engine": engine.to_dict(), "precision": precision}


def method_workers(method) -> int | None:
    loader = getattr(method, "loader", None) or getattr(getattr(method, "pipe", None), "loader", None)
    return getattr(loader, "num_workers", None)


def data_alone(spec, device, warmup: int, steps: int) -> dict:
    from simtool.rng import torch_generator

    method, _, _, _ = _build(spec, device)
    aug = getattr(method, "aug", None) or getattr(getattr(method, "pipe", None), "aug", None)
    n, t = 0, None
    for k, batch in enumerate(method.batches(0, 0)):
        if k == warmup:
            _sync(device)
            t = time.perf_counter()
        on_device = _to(batch, device)
        if aug is not None:
            gen = torch_generator(spec.seed, 0, k, 0)
            for x in _images(on_device):
                aug(x, gen)
        if k >= warmup:
            n += 1
        if n >= steps:
            break
    _sync(device)
    seconds = time.perf_counter() - t
    return {"images_per_s": method.images_per_step * n / seconds, "step_s": seconds / n, "steps": n}


def end_to_end(spec, run_dir: Path, warmup: int, steps: int, images_per_step: int) -> dict:
    from rich.console import Console

    from simtool.engine.loop import TrainingInterrupted, fit
    from simtool.formats.run_dir import RunDir
    from simtool.methods import build_method

    try:  # stopped as Ctrl-C stops a run: after the measured steps (the checkpoint it writes is in no step's time)
        fit(spec, RunDir(run_dir), build_method, console=Console(file=io.StringIO()), stop_after_steps=warmup + steps)
    except TrainingInterrupted:
        pass
    records = [r for r in RunDir(run_dir).read_metrics() if r["type"] == "train"][warmup:]
    seconds = [images_per_step / r["images_per_s"] for r in records]  # one record per step (loop.log_every=1)
    wait = sum(r["data_wait"] * s for r, s in zip(records, seconds)) / sum(seconds)
    peaks = [r["peak_memory_gib"] for r in records if "peak_memory_gib" in r]
    return {"images_per_s": images_per_step * len(records) / sum(seconds), "step_s": sum(seconds) / len(records), "data_wait": wait,
            "steps": len(records), "peak_memory_gib": max(peaks) if peaks else None}


def verdict(model: dict, e2e: dict) -> str:
    ratio = e2e["images_per_s"] / model["images_per_s"]
    wait = e2e["data_wait"]
    if wait >= 0.10:
        return f"data-bound: {wait:.0%} of step time waiting for data; end to end at {ratio:.0%} of the model alone"
    if ratio >= 0.85:
        return f"model-bound: end to end at {ratio:.0%} of the model alone; {wait:.0%} of step time waiting for data"
    return f"engine-bound: end to end at {ratio:.0%} of the model alone with only {wait:.0%} of step time waiting for data (the loop's own work)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="normal")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--batch", type=int, default=None, help="global batch (loop.batch_size); default: the preset's (--quick: 8)")
    ap.add_argument("--backbone", default=None, help="model.backbone (default: the preset's, ResNet-50 for normal)")
    ap.add_argument("--size", type=int, default=224, help="data.image_size")
    ap.add_argument("--quick", action="store_true", help="CPU-sized: batch 8, 3 measured model steps, 6 end-to-end steps")
    ap.add_argument("--steps", type=int, default=None, help="measured steps of each part (default 12; --quick: 3 model, 6 data and end to end)")
    ap.add_argument("--warmup", type=int, default=None, help="steps before measuring (default 3; --quick: 1)")
    ap.add_argument("--frames", type=int, default=None, help="frames of the generated dataset (default: enough for the steps)")
    ap.add_argument("--unique", type=int, default=None, help="distinct generated 1080p frames (default 256; --quick: 32)")
    ap.add_argument("--workers", default="auto", help="data.num_workers")
    ap.add_argument("--decode", default="workers", help="engine.decode values to run (c) and (b) with, comma-separated: workers,device")
    ap.add_argument("--compile", action="store_true", help="engine.compile=true (the warm-up steps compile)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="more train spec settings, key=value")
    ap.add_argument("--out", default=None, help="also write the figures as JSON here")
    ap.add_argument("--keep", default=None, help="build the dataset here and keep it (reused when it exists)")
    args = ap.parse_args()

    from simtool.engine.device import resolve_device
    from simtool.methods import resolve_train_spec

    device = resolve_device(args.device)
    batch = args.batch or (8 if args.quick else None)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    steps = args.steps or (3 if args.quick else 12)
    e2e_steps = args.steps or (6 if args.quick else 12)
    decodes = [d.strip() for d in args.decode.split(",") if d.strip()]

    base = ["data.subsample=1.0", f"data.image_size={args.size}", "loop.log_every=1", "loop.eval_every=0", f"data.num_workers={args.workers}"]
    if batch:
        base.append(f"loop.batch_size={batch}")
    if args.backbone:
        base.append(f"model.backbone={args.backbone}")
    if args.compile:
        base.append("engine.compile=true")
    probe = resolve_train_spec(args.preset, sets=base + args.sets, device=args.device, profile="none")
    global_batch = probe.loop.batch_size
    # one epoch holds every measured end-to-end step: the stream keeps about 80 % of the frames
    n_frames = args.frames or int((warmup + e2e_steps + 1) * global_batch / 0.75) + FRAMES_PER_OBJECT * N_CATEGORIES
    n_unique = min(args.unique or (32 if args.quick else 256), n_frames)

    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_throughput."))
    t0 = time.perf_counter()
    data = tmp / "data"
    if not (data / "dataset.json").is_file():
        shutil.rmtree(tmp / "src", ignore_errors=True)
        shutil.rmtree(tmp / "unique", ignore_errors=True)
        data = make_dataset(tmp, n_frames, n_unique, workers=min(16, os.cpu_count() or 1))
    built_s = time.perf_counter() - t0

    def spec_for(decode: str, extra=()):
        sets = base + args.sets + [f"engine.decode={decode}", "loop.epochs=1", *extra]
        spec = resolve_train_spec(args.preset, sets=sets, data=str(data), device=args.device, profile="none")
        return spec.model_copy(update={"loop": spec.loop.model_copy(update={"batch_size_per_device": spec.loop.batch_size})})

    spec = spec_for(decodes[0])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"device: {device} ({name}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    print(f"preset {args.preset}: {spec.model.backbone} at {spec.data.image_size} px, global batch {spec.loop.batch_size}, precision {spec.precision}; "
          f"dataset: {n_frames} frames ({n_unique} distinct 1920x1080 JPEGs) built at max side 320 in {built_s:.0f} s")
    results = {"device": str(device), "device_name": name,
               "torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "load": os.getloadavg()[0],
               "preset": args.preset, "backbone": spec.model.backbone, "image_size": spec.data.image_size, "batch": spec.loop.batch_size,
               "date": time.strftime("%Y-%m-%d"), "parts": {}}

    rows = []
    t = time.perf_counter()
    a = model_alone(spec, device, warmup, steps)
    results["parts"]["model"] = a
    mem = f", peak memory {a['peak_memory_gib']:.1f} GiB per step" if a["peak_memory_gib"] is not None else ""
    rows.append(("(a) model alone (batch resident on the device)", a["images_per_s"], f"{a['step_s'] * 1e3:.0f} ms/step{mem}"))
    print(f"  (a) done in {time.perf_counter() - t:.0f} s; engine options {a['engine']}, {a['workers']} DataLoader workers", flush=True)
    for decode in decodes:
        spec = spec_for(decode)
        t = time.perf_counter()
        b = data_alone(spec, device, warmup, e2e_steps)
        results["parts"][f"data/{decode}"] = b
        rows.append((f"(b) data path alone, decode={decode}", b["images_per_s"], f"{b['step_s'] * 1e3:.0f} ms/step"))
        print(f"  (b) decode={decode} done in {time.perf_counter() - t:.0f} s", flush=True)
        t = time.perf_counter()
        c = end_to_end(spec, tmp / f"run-{decode}-{time.time_ns()}", warmup, e2e_steps, a["images_per_step"])
        results["parts"][f"end_to_end/{decode}"] = c
        c["verdict"] = verdict(a, c)
        rows.append((f"(c) end to end (simtool train's engine), decode={decode}", c["images_per_s"],
                     f"{c['step_s'] * 1e3:.0f} ms/step, data wait {c['data_wait']:.0%}"))
        print(f"  (c) decode={decode} done in {time.perf_counter() - t:.0f} s", flush=True)

    width = max(len(r[0]) for r in rows)
    print(f"\n{'part'.ljust(width)}  {'images/s':>9}  {'/ (a)':>6}  detail")
    for what, ips, detail in rows:
        print(f"{what.ljust(width)}  {ips:9.1f}  {ips / a['images_per_s']:6.2f}  {detail}")
    for decode in decodes:
        print(f"bottleneck (decode={decode}): {results['parts'][f'end_to_end/{decode}']['verdict']}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
