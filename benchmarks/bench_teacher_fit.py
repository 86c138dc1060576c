"""Teacher-fit benchmark (issue 8): psycho teachers on synthetic odd-one-out triplets.

1,854 items, 1.32 million triplets, E = 128, 100 epochs, 3,333 triplets per step (39,600 steps),
the ste loss (tau = 0.5), Adam lr 1e-3 with no weight decay on the table (the paper's teachers
exclude it from their 1e-4), L1 1e-6 (acting on the weights). Prints the time and the final training
accuracy for R = 1 and for R = 5 repetitions trained at once in one vectorised model. Target on 2
CPU cores: under 60 s for R = 1 (a plain per-batch PyTorch loop takes about 4.5 minutes).

    OMP_NUM_THREADS=2 python benchmarks/bench_teacher_fit.py                 # full size
    python benchmarks/bench_teacher_fit.py --epochs 10 --repeats 1           # quicker
    python benchmarks/bench_teacher_fit.py --baseline-steps 300              # + plain per-batch / DataLoader loops
    python benchmarks/bench_teacher_fit.py --engine-steps 39600 --epochs 0   # simtool.engine.loop.fit overhead

The triplets come from a planted embedding (``--true-dim`` non-negative dimensions) and a noisy
observer who picks the most similar pair with probability ``softmax(similarity / observer_tau)``;
the planted embedding's own accuracy on the triplets (the ceiling) is printed too. The loop is the
hot path a teacher method should use: embed every item once per step (``model()``, cheaper than
``model(items)`` when a batch touches more than N rows) and let the loss gather the triplets.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from typing import Literal

import torch


def planted_triplets(n_items: int, n_triplets: int, true_dim: int, observer_tau: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(truth (N, d), triplets (T, 3))`` with the observer's chosen pair first."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.rand(n_items, true_dim, generator=g) ** 3  # sparse-ish, non-negative (SPoSE-like)
    truth = torch.nn.functional.normalize(truth, dim=1)
    i = torch.randint(0, n_items, (n_triplets,), generator=g)
    j = (i + 1 + torch.randint(0, n_items - 1, (n_triplets,), generator=g)) % n_items
    k = torch.randint(0, n_items - 2, (n_triplets,), generator=g)
    lo, hi = torch.minimum(i, j), torch.maximum(i, j)
    k = k + (k >= lo).long()
    k = k + (k >= hi).long()
    trip = torch.stack([i, j, k], 1)
    e = truth[trip]  # (T, 3, d)
    sims = torch.stack([(e[:, 0] * e[:, 1]).sum(1), (e[:, 0] * e[:, 2]).sum(1), (e[:, 1] * e[:, 2]).sum(1)], 1)
    choice = torch.multinomial(torch.softmax(sims / observer_tau, 1), 1, generator=g).squeeze(1)
    order = torch.tensor([[0, 1, 2], [0, 2, 1], [1, 2, 0]])[choice]
    return truth, trip.gather(1, order)


def fit_teachers(triplets: torch.Tensor, n_items: int, dim: int, repeats: int, epochs: int, batch: int, tau: float, lr: float, l1: float,
                 seed: int, optimizer: str, shared_order: bool):
    """The tight vectorised loop: returns ``(model, wall seconds, CPU seconds, steps, last loss)``."""
    from simtool.losses import create_loss
    from simtool.models import create_model

    model = create_model("psycho", n_items=n_items, dim=dim, repeats=repeats, seed=seed, l1=l1)
    loss_fn = create_loss("ste", tau=tau)
    kw = {"foreach": True} if optimizer == "foreach" else {"fused": True} if optimizer == "fused" else {"foreach": False}
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=0.0, **kw)
    n = triplets.shape[0]
    steps = n // batch  # the remainder of each epoch's shuffle is dropped, as the original's sampler
    g = torch.Generator().manual_seed(seed)
    last = float("nan")
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(epochs):
        # one gather per epoch, so each step's batch is a contiguous slice
        if repeats == 1 or shared_order:
            shuffled = triplets[torch.randperm(n, generator=g)]  # (n, 3)
        else:  # every repetition sees its own shuffle
            shuffled = triplets[torch.stack([torch.randperm(n, generator=g) for _ in range(repeats)])]  # (R, n, 3)
        for s in range(steps):
            trip = shuffled[..., s * batch : (s + 1) * batch, :]  # (T, 3) or (R, T, 3)
            loss = loss_fn(model(), trip, "odd-one-out") + model.regularization()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        last = float(loss.detach()) / repeats
    return model, time.perf_counter() - t0, time.process_time() - c0, steps * epochs, last


def plain_loop_seconds(triplets: torch.Tensor, n_items: int, dim: int, batch: int, tau: float, lr: float, steps: int, seed: int, dataloader: bool) -> float:
    """Seconds per step of a plain per-batch loop: nn.Embedding, composite autograd ops, default
    Adam; the batch's triplets indexed from a tensor, or (``dataloader``) collated item by item by a
    DataLoader over a TensorDataset (the original's per-item Dataset calls)."""
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(seed)
    emb = torch.nn.Embedding(n_items, dim)
    torch.nn.init.normal_(emb.weight, 0.5, 0.2)
    opt = torch.optim.Adam(emb.parameters(), lr=lr)
    if dataloader:
        batches = (items for (items,) in DataLoader(TensorDataset(triplets.reshape(-1)), batch_size=3 * batch, shuffle=True, drop_last=True))
    else:
        perm = torch.randperm(len(triplets))
        batches = (triplets[perm[s * batch : (s + 1) * batch]].reshape(-1) for s in range(len(triplets) // batch))
    t0, done = time.perf_counter(), 0
    for items in batches:
        e = torch.nn.functional.normalize(emb(items).relu(), dim=1).view(-1, 3, dim)
        s01, s02, s12 = (e[:, 0] * e[:, 1]).sum(1), (e[:, 0] * e[:, 2]).sum(1), (e[:, 1] * e[:, 2]).sum(1)
        logits = torch.stack([s01, s02, s12], 1) / tau
        loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long))
        opt.zero_grad()
        loss.backward()
        opt.step()
        done += 1
        if done >= steps:
            break
    return (time.perf_counter() - t0) / done


def engine_overhead(steps_per_epoch: int, epochs: int) -> tuple[float, float]:
    """``(seconds through simtool.engine.loop.fit, seconds of the same trivial steps in a bare loop)``."""
    from rich.console import Console

    from simtool.engine.loop import fit
    from simtool.engine.method import Method
    from simtool.formats.run_dir import RunDir
    from simtool.models import create_model
    from simtool.specs.common import CommonSpec, LoopSpec

    class TrivialSpec(CommonSpec):
        method: Literal["bench_trivial"] = "bench_trivial"

    class Trivial(Method):
        def __init__(self, spec, device, dist, console):
            self.model = create_model("psycho", n_items=2, dim=2)

        def steps_per_epoch(self):
            return steps_per_epoch

        def batches(self, epoch, start_step):
            for _ in range(start_step, steps_per_epoch):
                yield None

        def training_step(self, model, batch, info):
            return model().sum(), {}

    spec = TrivialSpec(device="cpu", loop=LoopSpec(epochs=epochs, batch_size=2, eval_every=0))
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir(os.path.join(tmp, "run"))
        t0 = time.perf_counter()
        fit(spec, run, lambda spec, device, dist, console: Trivial(spec, device, dist, console), console=Console(file=io.StringIO()))
        through_engine = time.perf_counter() - t0
    model = create_model("psycho", n_items=2, dim=2)
    opt = torch.optim.AdamW(model.parameters())
    t0 = time.perf_counter()
    for _ in range(steps_per_epoch * epochs):
        loss = model().sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return through_engine, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=1854)
    ap.add_argument("--triplets", type=int, default=1_320_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--batch", type=int, default=3333, help="triplets per step")
    ap.add_argument("--repeats", default="1,5", help="comma-separated R values to time")
    ap.add_argument("--tau", type=float, default=0.5)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--l1", type=float, default=1e-6)
    ap.add_argument("--optimizer", choices=["foreach", "fused", "for-loop"], default="fused",
                    help="Adam implementation (fused: one kernel, 2-3x faster than foreach)")
    ap.add_argument("--shared-order", action="store_true", help="all repetitions see the same batches")
    ap.add_argument("--true-dim", type=int, default=16)
    ap.add_argument("--observer-tau", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline-steps", type=int, default=0, help="also time this many steps of a plain DataLoader loop")
    ap.add_argument("--engine-steps", type=int, default=0, help="also time this many trivial steps through simtool.engine.loop.fit")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from simtool.metrics.triplets import triplet_accuracy

    t0 = time.perf_counter()
    truth, triplets = planted_triplets(args.items, args.triplets, args.true_dim, args.observer_tau, args.seed)
    print(f"data: {args.items} items, {len(triplets):,} odd-one-out triplets ({time.perf_counter() - t0:.1f} s to draw); "
          f"planted embedding's accuracy (ceiling) {triplet_accuracy(truth, triplets, 'odd-one-out'):.4f}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    steps_per_epoch = args.triplets // args.batch
    if args.epochs > 0:
        for r in [int(x) for x in args.repeats.split(",") if x]:
            model, seconds, cpu, steps, last = fit_teachers(triplets, args.items, args.dim, r, args.epochs,
                                                            args.batch, args.tau, args.lr, args.l1, args.seed, args.optimizer, args.shared_order)
            with torch.no_grad():
                emb = model()
            per_rep = triplet_accuracy(emb, triplets, "odd-one-out", reduce="none")
            ensemble = triplet_accuracy(emb, triplets, "odd-one-out") if r > 1 else float(per_rep[0])
            print(f"R={r}: {seconds:.1f} s for {steps:,} steps ({1e3 * seconds / steps:.2f} ms/step, {args.epochs} epochs x {steps_per_epoch} steps, "
                  f"{cpu:.1f} CPU s); "
                  f"final training accuracy {', '.join(f'{a:.4f}' for a in per_rep.tolist())}"
                  + (f" (ensemble by mean distance {ensemble:.4f})" if r > 1 else "") + f"; last loss {last:.4f}")
    if args.baseline_steps:
        for dataloader in (False, True):
            steps = args.baseline_steps if not dataloader else max(1, args.baseline_steps // 10)
            per_step = plain_loop_seconds(triplets, args.items, args.dim, args.batch, args.tau, args.lr, steps, args.seed, dataloader)
            what = "plain DataLoader loop (items collated one by one)" if dataloader else "plain per-batch PyTorch loop"
            print(f"{what}: {1e3 * per_step:.2f} ms/step over {steps} steps -> {per_step * steps_per_epoch * 100:.0f} s for 100 epochs")
    if args.engine_steps:
        epochs = max(1, args.engine_steps // steps_per_epoch)
        through, bare = engine_overhead(steps_per_epoch, epochs)
        n = steps_per_epoch * epochs
        print(f"engine: {n:,} trivial steps through simtool.engine.loop.fit in {through:.1f} s vs {bare:.1f} s in a bare loop: "
              f"{1e3 * (through - bare) / n:.3f} ms/step of engine overhead ({epochs} epochs, a checkpoint per epoch)")


if __name__ == "__main__":
    main()
