"""The one training loop shared by every method.

A *method* (see :class:`Method`) owns the data and the model and computes a loss for a batch;
the engine owns everything else: device and precision, seeding, distributed data parallelism,
the optimizer and schedule, progress display, ``metrics.jsonl``, checkpoints, Ctrl-C and resume.

Resume is exact: data order and augmentations come from generators keyed by
``(seed, epoch, step, rank)`` and the checkpoint holds the model, optimizer, scheduler, global RNG
states and loop position, so ``--resume`` reproduces the weights of an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import random
import signal
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from simtool import __version__
from simtool.engine.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, save_weights
from simtool.engine.device import autocast, resolve_device, resolve_precision
from simtool.engine.distributed import DistInfo, all_reduce_mean, any_rank, barrier, setup_distributed, teardown_distributed
from simtool.engine.seed import seed_everything
from simtool.errors import UserError
from simtool.io import append_jsonl, atomic_write_json, atomic_write_text

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
FINAL_WEIGHTS = "checkpoints/final.safetensors"


class TrainingInterrupted(Exception):
    """Raised after Ctrl-C once a checkpoint has been written."""

    def __init__(self, run_dir: Path, step: int):
        super().__init__(f"Interrupted at step {step}; a checkpoint was saved. Continue with: simtool train --resume {run_dir}")
        self.run_dir = run_dir
        self.step = step


@dataclass
class StepInfo:
    epoch: int
    step: int  # step within the epoch
    global_step: int
    device: torch.device
    dist: DistInfo


class Method(ABC):
    """What a research line plugs into the engine."""

    model: torch.nn.Module

    @abstractmethod
    def steps_per_epoch(self) -> int: ...

    @abstractmethod
    def batches(self, epoch: int, start_step: int) -> Iterator[Any]:
        """Host-side batches for steps ``start_step..steps_per_epoch-1`` of ``epoch`` (this rank's share)."""

    @abstractmethod
    def training_step(self, model: torch.nn.Module, batch: Any, info: StepInfo) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss (scalar) and floats to log. ``model`` may be DDP-wrapped: call it, don't reach inside."""

    def evaluate(self, model: torch.nn.Module, epoch: int, device: torch.device) -> dict[str, float]:
        return {}

    @property
    def images_per_step(self) -> int:
        return 0

    def weights_metadata(self) -> dict[str, str]:
        return {}


def lr_lambda(kind: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "cosine":
            progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return f


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records logged after ``step`` (written after the checkpoint a resume starts from)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("step", 0) <= step:
            keep.append(line)
    atomic_write_text(path, "".join(k + "\n" for k in keep))


def fit(
    spec,
    run_dir: str | Path,
    build_method: Callable[..., Method],
    resume: bool = False,
    console: Console | None = None,
    stop_after_steps: int | None = None,
) -> dict:
    """Train ``spec`` into ``run_dir``. Returns the summary dict (also written to ``summary.json``).

    ``stop_after_steps`` simulates Ctrl-C after that many global steps (used by tests).
    """
    run_dir = Path(run_dir)
    console = console or Console(stderr=True)
    dist = setup_distributed()
    try:
        return _fit(spec, run_dir, build_method, resume, console, stop_after_steps, dist)
    finally:
        teardown_distributed(dist)


def _fit(spec, run_dir, build_method, resume, console, stop_after_steps, dist: DistInfo) -> dict:
    device = resolve_device(spec.device, dist.local_rank)
    precision = resolve_precision(spec.precision, device)
    seed_everything(spec.seed + dist.rank)
    method = build_method(spec, device=device, dist=dist, console=console)
    model = method.model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.optim.lr, weight_decay=spec.optim.weight_decay)
    steps_per_epoch = method.steps_per_epoch()
    if steps_per_epoch < 1:
        raise UserError("The training data gives no full batch per epoch; lower loop.batch_size or use more data.")
    total_steps = steps_per_epoch * spec.loop.epochs
    warmup = int(round(spec.optim.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(spec.optim.scheduler, warmup, total_steps))
    ckpt_dir = run_dir / "checkpoints"
    metrics_path = run_dir / METRICS
    epoch, start_step, global_step = 0, 0, 0
    meta = {"simtool": __version__, "spec": json.dumps(spec.to_dict()), **method.weights_metadata()}

    if resume:
        ckpt = latest_checkpoint(ckpt_dir)
        if ckpt is None:
            raise UserError(f"{run_dir} has no checkpoint to resume from; start a new run instead.")
        state = load_checkpoint(ckpt, model)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"], device)
        epoch, start_step, global_step = state["position"]["epoch"], state["position"]["step"], state["position"]["global_step"]
        if dist.is_main:
            _truncate_metrics(metrics_path, global_step)
            console.print(f"[bold]Resuming[/] {run_dir} at epoch {epoch + 1}, step {start_step} (global step {global_step}).")

    train_model: torch.nn.Module = model
    if dist.enabled:
        train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    stop = {"flag": False}

    def on_sigint(signum, frame):  # first Ctrl-C: finish the step, checkpoint, stop
        if stop["flag"]:
            raise KeyboardInterrupt
        stop["flag"] = True
        console.print("\n[yellow]Ctrl-C: finishing this step and saving a checkpoint (press again to abort).[/]")

    try:
        previous_handler = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not in the main thread
        previous_handler = None

    def checkpoint(ep: int, st: int, gs: int) -> None:
        if dist.is_main:
            state = {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": _rng_state(device),
                "position": {"epoch": ep, "step": st, "global_step": gs},
            }
            save_checkpoint(ckpt_dir, gs, model, state, metadata=meta)
        barrier(dist)

    t_start = time.time()
    last_eval: dict[str, float] = {}
    last_loss = float("nan")
    progress = Progress(
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[ips]:.0f} img/s"),
        TimeRemainingColumn(),
        console=console,
        disable=not dist.is_main,
        transient=False,
    )
    try:
        with progress:
            task = progress.add_task("train", total=total_steps, completed=global_step, epoch=f"{epoch + 1}/{spec.loop.epochs}", loss=float("nan"), ips=0.0)
            while epoch < spec.loop.epochs:
                model.train()
                window: dict[str, list[float]] = {}
                t_window, n_window = time.time(), 0
                for step, batch in enumerate(method.batches(epoch, start_step), start=start_step):
                    info = StepInfo(epoch, step, global_step, device, dist)
                    with autocast(device, precision):
                        loss, logs = method.training_step(train_model, batch, info)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                    global_step += 1
                    n_window += 1
                    last_loss = float(loss.detach())
                    for k, v in {"loss": last_loss, **logs}.items():
                        window.setdefault(k, []).append(float(v))
                    if global_step % spec.loop.log_every == 0 or step == steps_per_epoch - 1:
                        elapsed = max(time.time() - t_window, 1e-9)
                        ips = method.images_per_step * n_window * dist.world_size / elapsed
                        record = {"type": "train", "epoch": epoch, "step": global_step, "lr": scheduler.get_last_lr()[0], "images_per_s": round(ips, 1)}
                        record.update({k: all_reduce_mean(float(np.mean(v)), dist, device) for k, v in window.items()})
                        if dist.is_main:
                            append_jsonl(metrics_path, record)
                        progress.update(task, loss=record["loss"], ips=ips)
                        window, t_window, n_window = {}, time.time(), 0
                    progress.update(task, completed=global_step, epoch=f"{epoch + 1}/{spec.loop.epochs}")
                    if stop_after_steps is not None and global_step >= stop_after_steps:
                        stop["flag"] = True
                    stop["flag"] = any_rank(stop["flag"], dist, device)
                    next_epoch, next_step = (epoch + 1, 0) if step + 1 >= steps_per_epoch else (epoch, step + 1)
                    if stop["flag"]:
                        if next_step == 0:
                            break  # the epoch is complete: evaluate and checkpoint below, then stop
                        checkpoint(next_epoch, next_step, global_step)
                        raise TrainingInterrupted(run_dir, global_step)
                    if spec.loop.checkpoint_every and global_step % spec.loop.checkpoint_every == 0 and next_step != 0:
                        checkpoint(next_epoch, next_step, global_step)
                epoch += 1
                start_step = 0
                if spec.loop.eval_every and (epoch % spec.loop.eval_every == 0 or epoch == spec.loop.epochs):
                    last_eval = method.evaluate(model, epoch, device)
                    model.train()
                    if dist.is_main and last_eval:
                        append_jsonl(metrics_path, {"type": "eval", "epoch": epoch - 1, "step": global_step, **last_eval})
                if dist.is_main:
                    shown = "  ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in last_eval.items()) if last_eval else ""
                    progress.console.print(f"epoch {epoch}/{spec.loop.epochs}  loss {last_loss:.4f}  {shown}")
                checkpoint(epoch, 0, global_step)
                if stop["flag"]:
                    raise TrainingInterrupted(run_dir, global_step)
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)

    summary = {
        "status": "completed",
        "epochs": spec.loop.epochs,
        "steps": global_step,
        "final_loss": last_loss,
        "last_eval": last_eval,
        "seconds_this_session": round(time.time() - t_start, 1),
        "device": str(device),
        "precision": precision,
        "world_size": dist.world_size,
        "weights": FINAL_WEIGHTS,
        "torch": torch.__version__,
        "simtool": __version__,
    }
    if dist.is_main:
        save_weights(run_dir / FINAL_WEIGHTS, model, metadata=meta)
        atomic_write_json(run_dir / SUMMARY, summary)
    barrier(dist)
    return summary
