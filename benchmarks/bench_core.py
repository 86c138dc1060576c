"""Speed figures for simtool's hot paths. Prints a table; asserts nothing.

    python benchmarks/bench_core.py                 # CPU, quick
    python benchmarks/bench_core.py --device cuda   # on a GPU machine
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def timeit(fn, repeats: int = 5, warmup: int = 1, sync=None) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if sync:
            sync()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backbones", default="test_resnet@64,resnet18@64,resnet50@224")
    ap.add_argument("--batch", type=int, default=64, help="anchors per step (2x images with positives)")
    args = ap.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    rows = []

    from simtool.data.builders.toyworld import ToyWorldSpec
    from simtool.data.toyworld import render_toyworld

    t = time.perf_counter()
    spec = ToyWorldSpec()
    render_toyworld(spec, seed=0)
    n_frames_world = spec.n_rooms * spec.categories_per_room * spec.objects_per_category * spec.frames_per_object
    rows.append((f"toy world render ({n_frames_world:,} frames, {spec.image_size} px)", f"{time.perf_counter() - t:.2f} s"))

    from simtool.data.stream import build_stream

    n_obj, n_frames = 10_000, 100
    objects = np.repeat(np.arange(n_obj), n_frames)
    frames = np.tile(np.arange(n_frames), n_obj)
    rooms = (objects // 10) % 10
    s = timeit(lambda: build_stream(objects, frames, rooms, 7, 0.1, 0.8, np.random.default_rng(0)), repeats=3)
    rows.append(("stream build (1e6 frames, 10 rooms)", f"{s * 1e3:.0f} ms"))

    from simtool.data.augment import BatchAugment
    from simtool.specs.augment import AugmentSpec

    x = torch.randint(0, 256, (2 * args.batch, 3, 64, 64), dtype=torch.uint8, device=device)
    for mode in ("crop", "classic"):
        aug = BatchAugment(64, mode, AugmentSpec())
        g = torch.Generator().manual_seed(0)
        s = timeit(lambda aug=aug, g=g: aug(x, g), sync=sync)
        rows.append((f"BatchAugment {mode} ({2 * args.batch}x3x64x64)", f"{s * 1e3:.1f} ms"))

    from simtool.losses import nt_xent
    from simtool.models.time_context import TimeContextModel

    for item in args.backbones.split(","):
        name, size = item.split("@")
        size = int(size)
        model = TimeContextModel(name, 16, 4, ["classic", "labels", "linear_eval"]).to(device)
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        xb = torch.randn(2 * args.batch, 3, size, size, device=device)
        cat = torch.randint(0, 16, (args.batch,), device=device)
        ctx = torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)

        def step(model=model, opt=opt, xb=xb, cat=cat, ctx=ctx):
            with ctx:
                out = model(xb, halves=2, categories=cat, probes=True)
                z = out["time.out"]
                loss = nt_xent(z[: args.batch], z[args.batch :]) + nt_xent(out["label.out"][: args.batch], out["label.embed"])
            opt.zero_grad()
            loss.backward()
            opt.step()

        s = timeit(step, repeats=3, sync=sync)
        rows.append((f"train step {name}@{size}, normal preset", f"{s * 1e3:.0f} ms = {2 * args.batch / s:.0f} img/s"))

    from simtool.metrics.odd_one_out import odd_one_out_accuracy

    n = 20_000
    emb = torch.randn(n, 512)
    room = np.random.default_rng(0).integers(0, 10, n)
    category = room * 10 + np.random.default_rng(1).integers(0, 10, n)
    obj = category * 20 + np.random.default_rng(2).integers(0, 20, n)
    s = timeit(lambda: odd_one_out_accuracy(emb, room, category, obj, "context", repeats=10), repeats=3)
    rows.append(("odd-one-out, 20k items x 10 repeats, one level", f"{s * 1e3:.0f} ms"))

    width = max(len(r[0]) for r in rows)
    print(f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
