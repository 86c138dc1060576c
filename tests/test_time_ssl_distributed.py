"""Global negatives and synchronised BatchNorm: two gloo processes that each hold half of a global
batch compute the time/context loss with exactly the loss and gradients of one process that sees
the whole global batch (NT-Xent over all 2 x 8 embeddings, per-half BatchNorm over the global half)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from rich.console import Console
from safetensors.torch import load_file, save_file

from simtool.engine.distributed import DistInfo, SyncBatchNorm, teardown_distributed
from simtool.engine.method import StepInfo
from tests.conftest import TINY_TRAIN

WORLD, B = 2, 8  # global batch 8: 4 anchors + 4 positives per process


def _method(world_path: str, info: DistInfo, extra=()):
    from simtool.methods import resolve_train_spec
    from simtool.methods.time_ssl import TimeSSL

    spec = resolve_train_spec("normal", sets=TINY_TRAIN + [f"loop.batch_size={B}", *extra], data=world_path, device="cpu")
    spec.loop.batch_size_per_device = B // info.world_size
    torch.manual_seed(0)
    return TimeSSL(spec, torch.device("cpu"), info, Console(quiet=True))


def _batch():
    g = torch.Generator().manual_seed(1)
    xa, xp = torch.randn(B, 3, 32, 32, generator=g), torch.randn(B, 3, 32, 32, generator=g)
    cat, room = torch.randint(0, 4, (B,), generator=g), torch.randint(0, 2, (B,), generator=g)
    return xa, xp, cat, room


def _worker(rank: int, world_path: str, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    info = DistInfo(rank=rank, world_size=WORLD, local_rank=rank)
    try:
        xa, xp, cat, room = _batch()
        mine = slice(rank * B // WORLD, (rank + 1) * B // WORLD)
        for tag, extra in (("", ()), ("local-", ("model.sync_bn=false", "contrast.global_negatives=false"))):
            m = _method(world_path, info, extra)
            assert any(isinstance(mod, SyncBatchNorm) for mod in m.model.modules()) == (tag == "")
            model = torch.nn.parallel.DistributedDataParallel(m.model)
            loss, _ = m.loss(model, xa[mine], xp[mine], cat[mine], room[mine], cat[mine], room[mine], StepInfo(0, 0, 0, torch.device("cpu"), info))
            loss.backward()
            grads = {n: p.grad.contiguous() for n, p in m.model.named_parameters() if p.grad is not None}
            save_file({"loss": loss.detach().reshape(1), **grads}, f"{out}/{tag}rank{rank}.safetensors")
            del model
    finally:
        teardown_distributed(info)  # collects the DDP wrappers first (else SIGABRT at exit, ~1 run in 5)


def test_two_processes_equal_one_with_the_global_batch(tmp_path, tiny_world):
    mp.spawn(_worker, args=(str(tiny_world), str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True)
    m = _method(str(tiny_world), DistInfo())
    xa, xp, cat, room = _batch()
    loss, _ = m.loss(m.model, xa, xp, cat, room, cat, room, StepInfo(0, 0, 0, torch.device("cpu"), DistInfo()))
    loss.backward()
    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(WORLD)]
    # the NT-Xent terms are global; the probes' cross-entropy is a per-process mean of equal halves
    assert torch.allclose(sum(r["loss"][0] for r in ranks) / WORLD, loss.detach(), atol=1e-5)
    checked = 0
    for name, p in m.model.named_parameters():
        if p.grad is None:
            continue
        for r in ranks:  # DDP averaged the gradients: every process holds the single-process gradient
            diff, ref = float((r[name] - p.grad).norm()), float(p.grad.norm())
            # float32 sums in another order (biases before BatchNorm have a zero gradient up to noise);
            # a missing all-gather or BatchNorm sync is off by more than 10 %
            assert diff <= 1e-4 * ref + 1e-5, (name, diff, ref)
        checked += 1
    assert checked > 20
    # the control: per-process negatives and BatchNorm give other gradients (so the test can fail)
    local = load_file(str(tmp_path / "local-rank0.safetensors"))
    off = [float((local[n] - p.grad).norm() / p.grad.norm()) for n, p in m.model.named_parameters() if p.grad is not None and p.grad.norm() > 1e-3]
    assert max(off) > 0.1


def test_sync_batchnorm_is_batchnorm_in_one_process():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(3)
    from simtool.engine.distributed import convert_sync_batchnorm

    sync = convert_sync_batchnorm(torch.nn.Sequential(bn))[0]
    assert isinstance(sync, SyncBatchNorm)
    x = torch.randn(5, 3, 4, 4)
    assert torch.allclose(sync(x), torch.nn.BatchNorm2d(3)(x), atol=1e-6)
