"""engine.distributed.all_gather carries gradients: two gloo processes, each holding half of a batch,
gather their embeddings and compute NT-Xent on the whole batch; under DDP the loss and the parameter
gradients equal those of one process that sees the whole global batch."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from simtool.engine.distributed import DistInfo, all_gather, teardown_distributed
from simtool.losses import nt_xent

WORLD, B, D = 2, 4, 6


def _model_and_batch():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(D, 8), torch.nn.ReLU(), torch.nn.Linear(8, 5))
    a, b = torch.randn(WORLD * B, D), torch.randn(WORLD * B, D)
    return model, a, b


def _worker(rank: int, store_path: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=WORLD)
    info = DistInfo(rank=rank, world_size=WORLD, local_rank=rank)
    try:
        model, a, b = _model_and_batch()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        mine = slice(rank * B, (rank + 1) * B)
        z1, z2 = ddp(a[mine]), ddp(b[mine])
        loss = nt_xent(all_gather(z1, info), all_gather(z2, info), 0.5)
        loss.backward()
        grads = {f"g{i}": p.grad.contiguous() for i, p in enumerate(model.parameters())}
        save_file({"loss": loss.detach().reshape(1), **grads}, os.path.join(out_dir, f"rank{rank}.safetensors"))
        del ddp
    finally:
        teardown_distributed(info)  # collects the DDP wrapper first (else SIGABRT at exit, ~1 run in 5)


def test_all_gather_gradient_matches_one_process(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True)
    model, a, b = _model_and_batch()
    ref = nt_xent(model(a), model(b), 0.5)
    ref.backward()
    for rank in range(WORLD):
        got = load_file(str(tmp_path / f"rank{rank}.safetensors"))
        assert torch.allclose(got["loss"][0], ref.detach(), atol=1e-6)
        for i, p in enumerate(model.parameters()):
            assert torch.allclose(got[f"g{i}"], p.grad, atol=1e-6), (rank, i)


def test_all_gather_is_identity_in_one_process():
    x = torch.randn(3, 2, requires_grad=True)
    assert all_gather(x, DistInfo()) is x
