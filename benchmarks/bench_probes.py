"""Offline probes at ImageNet-probe shape: simtool's linear probe and weighted kNN against scikit-learn.

    python benchmarks/bench_probes.py                          # 100,000 train + 10,000 test × 512, 1,000 classes
    python benchmarks/bench_probes.py --n 20000 --classes 200  # quicker

Data: synthetic, seeded: 1,000 class centres drawn on the unit sphere, every embedding its class
centre plus isotropic Gaussian noise (``--noise``, per dimension ``noise / sqrt(d)``; the default 5
leaves the classes overlapping, so the probe is a real fit of several iterations), then every
column standardised (what ``evaluate --type linear-probe`` does first), float32; classes uniform.
Both sides get the same arrays.

* **Linear probe**: simtool's :func:`~simtool.metrics.probes.logistic_fit` (multinomial, L2
  ``l2``, full-batch L-BFGS, float32 gradients in row chunks) + prediction, against
  ``sklearn.linear_model.LogisticRegression(C=1 / (l2 n), solver="lbfgs", max_iter, tol)`` (the same
  objective and stopping rule) + ``predict``. One fixed penalty on both sides; the evaluator's
  default choice on validation rows fits ``len(l2_grid)`` penalties with warm starts.
* **Weighted kNN** (k = 20, T = 0.07, cosine; the train rows are the memory, the test rows the
  queries): simtool's :func:`~simtool.metrics.probes.weighted_knn`, against
  ``sklearn.neighbors.KNeighborsClassifier(20, algorithm="brute", weights=w)`` on L2-normalised
  rows with the Euclidean metric (its fastest exact path, multithreaded; on unit vectors it ranks as
  cosine does, and ``w(d) = exp((1 - d^2 / 2) / T)`` is the same vote weight).

Each side runs ``--repeat`` times (3), alternated with the other, and the fastest run of each is
reported beside the spread: on a shared machine single runs vary by up to 1.5x. Each measurement
runs in its own child process; its peak memory is the child's own maximum resident
set size (``VmHWM``; see ``_memory.py``), and the rise over the resident set right after the data are loaded (imports and
data included in the first, not in the second). Threads: ``--threads`` for torch, BLAS and OpenMP
alike. Target (issue 16): simtool at most half the library's time and no more memory.
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
from _memory import peak_gb, rss_gb


def make_data(n: int, n_test: int, classes: int, d: int, noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    y = rng.integers(0, classes, n + n_test)
    x = centres[y]
    for s in range(0, len(x), 65536):
        x[s : s + 65536] += (noise / np.sqrt(d)) * rng.standard_normal((min(65536, len(x) - s), d)).astype(np.float32)
    mean, sd = x[:n].mean(0), x[:n].std(0)
    x = (x - mean) / sd
    return x[:n].astype(np.float32), y[:n].astype(np.int64), x[n:].astype(np.float32), y[n:].astype(np.int64)


def child(args) -> None:
    """Run one measurement on the saved data; print a JSON line."""
    d = Path(args.dir)
    xt, yt, xs, ys = (np.load(d / f) for f in ("xt.npy", "yt.npy", "xs.npy", "ys.npy"))
    n_classes = int(yt.max()) + 1
    out: dict = {}
    if args.child.startswith("simtool"):
        import torch

        torch.set_num_threads(args.threads)
        import scipy.optimize  # noqa: F401 - imported before the clock starts, as scikit-learn's side has it

        from simtool.metrics.probes import linear_predict, logistic_fit, weighted_knn

        xt_t, xs_t = torch.from_numpy(xt), torch.from_numpy(xs)
        base = rss_gb()
        start = time.perf_counter()
        if args.child == "simtool-linear":
            fit = logistic_fit(xt_t, torch.from_numpy(yt), n_classes, args.l2, args.max_iter, args.tol)
            pred = linear_predict(xs_t, fit.weight, fit.bias).numpy()
            out.update(iterations=fit.iterations, loss=fit.loss)
        else:
            pred = weighted_knn(xs_t, xt_t, yt, n_classes, k=20, temperature=0.07).numpy()
    else:
        from sklearn.linear_model import LogisticRegression
        from sklearn.neighbors import KNeighborsClassifier
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
        base = rss_gb()
        start = time.perf_counter()
        if args.child == "sklearn-linear":
            model = LogisticRegression(C=1.0 / (args.l2 * len(xt)), max_iter=args.max_iter, tol=args.tol).fit(xt, yt)
            pred = model.predict(xs)
            out.update(iterations=int(np.max(model.n_iter_)))
        else:
            unit_t = xt / np.linalg.norm(xt, axis=1, keepdims=True)
            unit_s = xs / np.linalg.norm(xs, axis=1, keepdims=True)
            weight = lambda dist: np.exp((1.0 - dist ** 2 / 2.0) / 0.07)  # noqa: E731 - cos = 1 - d^2/2 on unit vectors
            model = KNeighborsClassifier(n_neighbors=20, algorithm="brute", metric="euclidean", weights=weight, n_jobs=args.threads).fit(unit_t, yt)
            pred = model.predict(unit_s)
    seconds = time.perf_counter() - start
    np.save(d / f"pred-{args.child}.npy", pred)
    out.update(seconds=seconds, accuracy=float((pred == ys).mean()), base_gb=base, peak_gb=peak_gb())
    print(json.dumps(out), flush=True)


def measure(which: str, tmp: Path, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", which, "--dir", str(tmp), "--threads", str(args.threads),
           "--l2", str(args.l2), "--max-iter", str(args.max_iter), "--tol", str(args.tol)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OPENBLAS_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with tempfile.TemporaryFile("w+") as fout, tempfile.TemporaryFile("w+") as ferr:
        proc = subprocess.Popen(cmd, stdout=fout, stderr=ferr, text=True, env=env)
        _, status, _ = os.wait4(proc.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        fout.seek(0)
        ferr.seek(0)
        out, err = fout.read(), ferr.read()
    if code != 0:
        raise SystemExit(f"{which} failed (exit {code}):\n{err[-3000:]}")
    res = json.loads(out.strip().splitlines()[-1])
    res["rise_gb"] = res["peak_gb"] - res["base_gb"]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100000, help="train rows (the probe's training set, the kNN memory)")
    ap.add_argument("--n-test", type=int, default=10000, help="test rows (kNN queries)")
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--noise", type=float, default=5.0,
                    help="norm of the noise around the unit class centres (1.2: separable, both solvers stop after 2 iterations; "
                         "5: the probe reaches about 0.71 test accuracy in 13 iterations)")
    ap.add_argument("--l2", type=float, default=1e-4, help="the probe's penalty (scikit-learn C = 1 / (l2 n))")
    ap.add_argument("--max-iter", type=int, default=100)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--only", choices=("linear", "knn"), help="one of the two probes")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each side, alternated; the figures are each side's fastest run (a shared or throttled machine "
                         "slows single runs by up to 1.5x)")
    ap.add_argument("--child")
    ap.add_argument("--dir")
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    import torch

    load = os.getloadavg()
    print(f"{time.strftime('%Y-%m-%d %H:%M')}  torch {torch.__version__}, {args.threads} thread(s) (torch.get_num_threads() in the children: "
          f"{args.threads}), {os.cpu_count()} cores, load average {load[0]:.1f}; train {args.n:,} + test {args.n_test:,} × {args.dim}, "
          f"{args.classes:,} classes", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        xt, yt, xs, ys = make_data(args.n, args.n_test, args.classes, args.dim, args.noise)
        for name, a in (("xt", xt), ("yt", yt), ("xs", xs), ("ys", ys)):
            np.save(tmp / f"{name}.npy", a)
        data_gb = (xt.nbytes + xs.nbytes) / 2**30
        del xt, xs
        for probe in ("linear", "knn"):
            if args.only and probe != args.only:
                continue
            runs = {"simtool": [], "sklearn": []}
            for _ in range(args.repeat):  # alternated, so a slow spell of the machine hits both sides
                for side in runs:
                    runs[side].append(measure(f"{side}-{probe}", tmp, args))
            ours, theirs = (min(runs[side], key=lambda r: r["seconds"]) for side in ("simtool", "sklearn"))
            agree = float((np.load(tmp / f"pred-simtool-{probe}.npy") == np.load(tmp / f"pred-sklearn-{probe}.npy")).mean())
            what = (f"linear probe (l2 {args.l2:g} = C {1 / (args.l2 * args.n):.3g}, max_iter {args.max_iter}, tol {args.tol:g})" if probe == "linear"
                    else "weighted kNN (k 20, T 0.07, cosine)")
            iters = (f", iterations {ours['iterations']} / {theirs['iterations']}" if probe == "linear" else "")
            spread = "" if args.repeat == 1 else (
                f" (best of {args.repeat}; all runs: simtool {seconds(runs['simtool'])} s, scikit-learn {seconds(runs['sklearn'])} s; "
                f"ratio of medians {median(runs['simtool']) / median(runs['sklearn']):.2f})")
            print(f"{what}: simtool {ours['seconds']:.1f} s, peak {ours['peak_gb']:.2f} GB (rise {ours['rise_gb']:.2f}) | "
                  f"scikit-learn {theirs['seconds']:.1f} s, peak {theirs['peak_gb']:.2f} GB (rise {theirs['rise_gb']:.2f}) | "
                  f"time ratio {ours['seconds'] / theirs['seconds']:.2f} (target <= 0.5){spread}, peak ratio {ours['peak_gb'] / theirs['peak_gb']:.2f}, "
                  f"rise ratio {ours['rise_gb'] / max(theirs['rise_gb'], 1e-9):.2f} (target <= 1) | accuracy {ours['accuracy']:.4f} / {theirs['accuracy']:.4f}"
                  f"{iters}, same prediction for {agree:.4f} of the test rows (data {data_gb:.2f} GB)", flush=True)


def seconds(runs: list[dict]) -> str:
    return ", ".join(f"{r['seconds']:.1f}" for r in runs)


def median(runs: list[dict]) -> float:
    return float(np.median([r["seconds"] for r in runs]))


if __name__ == "__main__":
    main()
