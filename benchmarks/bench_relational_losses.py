"""Time and peak memory of the teacher-student (relational) losses at batch 256 on the CPU.

Each loss runs forward + backward in a fresh subprocess; the figure is the growth of the process's
peak resident memory (``ru_maxrss``) over the inputs, so it is the loss's own peak. ``chunk`` is
the number of anchors per chunk of the ``B^3`` losses (default: automatic, about 8 MiB per
``(chunk, B, B)`` tensor; ``--chunk 256`` = one chunk, the unchunked peak).

    python benchmarks/bench_relational_losses.py                       # B = 256, E = 128, R = 5
    python benchmarks/bench_relational_losses.py --batch 284 --dim 384 --teacher-dim 142 --repeats 1 --one-hot
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

LOSSES = ["rkd", "relaxed_contrastive", "relaxed_triplet", "relaxed_facenet", "relaxed_infonce", "relaxed_multisimilarity", "stmr", "mtt"]
CHUNKED = {"rkd", "relaxed_triplet", "relaxed_facenet", "stmr", "mtt"}

CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(int(sys.argv[8]))
from simtool.losses import create_loss
name, b, e, r, dt, chunk, one_hot = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7] == "1"
g = torch.Generator().manual_seed(0)
student = torch.nn.functional.normalize(torch.randn(b, e, generator=g), dim=1).requires_grad_(True)
if one_hot:
    teacher = torch.nn.functional.one_hot(torch.arange(b) // 2 % dt, dt).float().unsqueeze(1)
else:
    teacher = torch.nn.functional.normalize(torch.rand(b, r, dt, generator=g), dim=-1)
opts = {} if chunk == "auto" or name not in __CHUNKED__ else {"chunk": int(chunk)}
loss = create_loss(name, **opts)
loss(student[:4], teacher[:4]).backward()  # warm up allocator and kernels on a tiny batch
student.grad = None
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
value = loss(student, teacher)
value.backward()
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"loss": name, "seconds": seconds, "peak_mib": (peak - base) / 1024, "value": float(value)}))
""".replace("__CHUNKED__", repr(sorted(CHUNKED)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--teacher-dim", type=int, default=128)
    ap.add_argument("--chunk", default="auto", help="anchors per chunk for the B^3 losses, or auto")
    ap.add_argument("--one-hot", action="store_true", help="a one-hot class teacher (class datasets)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--losses", default=",".join(LOSSES))
    args = ap.parse_args()
    print(f"B = {args.batch}, E = {args.dim}, teacher (B, {1 if args.one_hot else args.repeats}, {args.teacher_dim}){' one-hot' if args.one_hot else ''}, "
          f"chunk {args.chunk}, {args.threads} threads")
    print(f"{'loss':26s} {'forward+backward':>17s} {'peak memory':>12s}")
    for name in args.losses.split(","):
        out = subprocess.run(
            [sys.executable, "-c", CHILD, name, str(args.batch), str(args.dim), str(args.repeats), str(args.teacher_dim), args.chunk,
             "1" if args.one_hot else "0", str(args.threads)],
            capture_output=True, text=True, check=False,
        )
        if out.returncode != 0:
            print(f"{name:26s} failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
            continue
        rec = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name:26s} {rec['seconds']:15.3f} s {rec['peak_mib']:9.1f} MiB")


if __name__ == "__main__":
    main()
