"""Class retrieval at Stanford-Online-Products size: simtool against pytorch-metric-learning + faiss-cpu.

    python benchmarks/bench_retrieval.py                       # 60,502 × {128, 512}, then 500,000 × 128
    python benchmarks/bench_retrieval.py --dims 128 --big-n 0  # quicker
    python benchmarks/bench_retrieval.py --clustering          # also k-means + NMI/AMI in both

Data: synthetic, SOP-shaped: 60,502 embeddings in 11,316 classes (sizes 2..12, mean 5.35, as the
SOP test split), unit-norm class centres plus Gaussian noise, L2-normalised (P@1 about 0.77, near
a ResNet-50 on SOP).
Each measurement runs in its own child process; its peak memory is the child's own maximum resident
set size (``VmHWM``; see ``_memory.py``), so the two libraries never share an allocator. Both compute P@1,
R-Precision and MAP@R with the query removed and singleton classes left out: simtool's
``retrieval_metrics`` (what ``evaluate --type classes`` runs; cosine, exact, chunked) and
``AccuracyCalculator(k="max_bin_count")`` with its default faiss ``IndexFlatL2`` search (on unit
vectors L2 and cosine rank alike). The big run (``--big-n``) measures simtool alone.
Targets (issue 9): simtool at most 0.8 × the library's time, at most a quarter of its peak memory,
and 500,000 × 128 within 24 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _memory import peak_gb

RETRIEVAL = ("precision_at_1", "r_precision", "map_at_r")
PML_NAMES = {"precision_at_1": "precision_at_1", "r_precision": "r_precision", "map_at_r": "mean_average_precision_at_r", "NMI": "NMI", "AMI": "AMI"}


def sop_like(n: int, n_classes: int, d: int, seed: int = 0, noise: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm embeddings (n, d) float32 and int64 labels with SOP-like class sizes (2..12).

    ``noise``: norm of the Gaussian noise added to the unit class centre; by default
    ``1.4 * (d / 128) ** 0.326`` (1.4 at d = 128, 2.2 at d = 512: calibrated so that P@1 is about the
    same at both, 0.77 at SOP size).
    """
    if noise is None:
        noise = 1.4 * (d / 128) ** 0.326
    rng = np.random.default_rng(seed)
    sizes = 2 + rng.binomial(10, 0.335, n_classes)
    while sizes.sum() != n:  # nudge random classes to the exact total, staying within 2..12
        i = rng.integers(0, n_classes)
        if sizes.sum() > n and sizes[i] > 2:
            sizes[i] -= 1
        elif sizes.sum() < n and sizes[i] < 12:
            sizes[i] += 1
    labels = rng.permutation(np.repeat(np.arange(n_classes), sizes))
    centres = rng.standard_normal((n_classes, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[labels]
    for s in range(0, n, 65536):  # noise in chunks: bounded memory for the big run
        x[s : s + 65536] += noise * rng.standard_normal((min(65536, n - s), d)).astype(np.float32) / np.sqrt(d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, labels.astype(np.int64)


def child(args) -> None:
    """Run one library on the saved data; print a JSON line with seconds and metrics."""
    import torch

    torch.set_num_threads(args.threads)
    x = np.load(args.data)
    labels = np.load(args.labels)
    out = {}
    if args.child == "simtool":
        from simtool.metrics.clustering import ami, kmeans, nmi
        from simtool.metrics.retrieval import retrieval_metrics

        t = torch.from_numpy(x)
        start = time.perf_counter()
        res = retrieval_metrics(t, labels, (1, 2, 4, 8), "cosine", args.device)
        out = {k: float(res[k].mean()) for k in RETRIEVAL}
        if args.clustering:
            assign, _ = kmeans(t, int(labels.max()) + 1, seed=0, max_iter=20, device=args.device)
            out.update(NMI=nmi(labels, assign), AMI=ami(labels, assign))
        seconds = time.perf_counter() - start
    else:
        import faiss
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        faiss.omp_set_num_threads(args.threads)
        include = ["precision_at_1", "r_precision", "mean_average_precision_at_r"] + (["NMI", "AMI"] if args.clustering else [])
        calc = AccuracyCalculator(include=tuple(include), k="max_bin_count", device=torch.device("cpu"))
        t, lt = torch.from_numpy(x), torch.from_numpy(labels)
        start = time.perf_counter()
        res = calc.get_accuracy(t, lt)
        seconds = time.perf_counter() - start
        out = {k: float(res[v]) for k, v in PML_NAMES.items() if v in res}
    print(json.dumps({"seconds": seconds, "metrics": out, "peak_gb": peak_gb()}), flush=True)


def measure(which: str, data: Path, labels: Path, args) -> dict:
    """Run one child, which reports its own peak resident set size (``_memory.peak_gb``)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", which, "--data", str(data), "--labels", str(labels),
           "--threads", str(args.threads), "--device", args.device] + (["--clustering"] if args.clustering else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with tempfile.TemporaryFile("w+") as fout, tempfile.TemporaryFile("w+") as ferr:
        proc = subprocess.Popen(cmd, stdout=fout, stderr=ferr, text=True, env=env)
        _, status, _ = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        fout.seek(0)
        ferr.seek(0)
        out, err = fout.read(), ferr.read()
    if proc.returncode != 0:
        raise SystemExit(f"{which} failed (exit {proc.returncode}):\n{err[-3000:]}")
    res = json.loads(out.strip().splitlines()[-1])
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60502)
    ap.add_argument("--classes", type=int, default=11316)
    ap.add_argument("--dims", default="128,512")
    ap.add_argument("--big-n", type=int, default=500000, help="size of the simtool-only run at d=128 (0: skip)")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--device", default="cpu", help="simtool's device (cpu, cuda, auto)")
    ap.add_argument("--clustering", action="store_true", help="also k-means (20 iterations) + NMI/AMI in both")
    ap.add_argument("--skip-pml", action="store_true")
    ap.add_argument("--child", choices=("simtool", "pml"))
    ap.add_argument("--data")
    ap.add_argument("--labels")
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    print(f"{args.threads} thread(s), simtool device {args.device}; metrics: P@1, R-Precision, MAP@R" + (" + NMI, AMI" if args.clustering else ""))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for d in [int(v) for v in args.dims.split(",") if v]:
            x, labels = sop_like(args.n, args.classes, d)
            np.save(tmp / "x.npy", x)
            np.save(tmp / "y.npy", labels)
            del x
            ours = measure("simtool", tmp / "x.npy", tmp / "y.npy", args)
            line = f"N={args.n:,} d={d}: simtool {ours['seconds']:.1f} s, peak {ours['peak_gb']:.2f} GB"
            if not args.skip_pml:
                theirs = measure("pml", tmp / "x.npy", tmp / "y.npy", args)
                diff = max(abs(ours["metrics"][k] - theirs["metrics"][k]) for k in RETRIEVAL)
                line += (f" | pytorch-metric-learning + faiss {theirs['seconds']:.1f} s, peak {theirs['peak_gb']:.2f} GB"
                         f" | time ratio {ours['seconds'] / theirs['seconds']:.2f} (target <= 0.8), memory ratio {ours['peak_gb'] / theirs['peak_gb']:.2f}"
                         f" (target <= 0.25) | largest metric difference {diff:.2e}")
                if args.clustering:
                    line += (f" | NMI {ours['metrics']['NMI']:.4f} vs {theirs['metrics']['NMI']:.4f},"
                             f" AMI {ours['metrics']['AMI']:.4f} vs {theirs['metrics']['AMI']:.4f}")
            print(line, "|", json.dumps(ours["metrics"]), flush=True)
        if args.big_n:
            classes = int(round(args.big_n / 5.35))
            x, labels = sop_like(args.big_n, classes, 128, seed=1)
            np.save(tmp / "x.npy", x)
            np.save(tmp / "y.npy", labels)
            del x
            big = measure("simtool", tmp / "x.npy", tmp / "y.npy", args)
            print(f"N={args.big_n:,} d=128 ({classes:,} classes): simtool {big['seconds']:.1f} s, peak {big['peak_gb']:.2f} GB (target <= 24 GB)",
                  "|", json.dumps(big["metrics"]), flush=True)


if __name__ == "__main__":
    main()
