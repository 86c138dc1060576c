"""The one training loop shared by every method.

A *method* (see :class:`~simtool.engine.method.Method`) owns the data and the model and computes a
loss for a batch; the engine owns everything else: device and precision, seeding, distributed data
parallelism, the optimizer and schedule, progress display, the run directory's metrics,
checkpoints and final weights (through :class:`~simtool.formats.run_dir.RunDir`), Ctrl-C and resume.

The run directory is created only after the device, the spec's data and the method have
validated, so a start that fails leaves nothing behind.

With ``checkpoint.best`` (a figure the method's validation reports, e.g. ``val/fstrt``) the weights
of the validation pass where it was best (strictly better than every earlier one; NaN never is)
are written to ``checkpoints/best.safetensors`` (see :meth:`RunDir.write_best`); the best value so
far travels in the resumable state, so a resumed run keeps the same best checkpoint.

Resume is exact: data order and augmentations come from generators keyed by
``(seed, epoch, step, rank)`` and the checkpoint holds the model, optimizer, scheduler, global RNG
states and loop position, so ``--resume`` reproduces the weights of an uninterrupted run.
"""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from simtool import __version__
from simtool.engine.checkpoint import flatten_state, model_state, unflatten_state
from simtool.engine.device import autocast, resolve_device, resolve_precision
from simtool.engine.distributed import DistInfo, all_reduce_mean, any_rank, barrier, setup_distributed, teardown_distributed
from simtool.engine.method import Method, StepInfo
from simtool.engine.optim import build_optimizer, build_scheduler
from simtool.engine.seed import seed_everything
from simtool.errors import UserError
from simtool.formats.run_dir import RunDir
from simtool.specs.base import run_only_paths


class TrainingInterrupted(Exception):
    """Raised after Ctrl-C once a checkpoint has been written."""

    def __init__(self, run_dir: Path, step: int):
        super().__init__(f"Interrupted at step {step}; a checkpoint was saved. Continue with: simtool train --resume {run_dir}")
        self.run_dir = run_dir
        self.step = step


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


def fit(
    spec,
    run: RunDir,
    build_method: Callable[..., Method],
    resume: bool = False,
    console: Console | None = None,
    stop_after_steps: int | None = None,
) -> dict:
    """Train ``spec`` into the run directory ``run``. Returns the summary (also written to it).

    ``build_method(spec, device=, dist=, console=)`` makes the method. With ``resume`` the run's
    latest checkpoint is loaded (a run without one starts from the beginning). ``stop_after_steps``
    simulates Ctrl-C after that many global steps (used by tests).
    """
    console = console or Console(stderr=True)
    dist = setup_distributed()
    try:
        return _fit(spec, run, build_method, resume, console, stop_after_steps, dist)
    finally:
        teardown_distributed(dist)


def _card(spec, method: Method, model: torch.nn.Module) -> dict:
    base = getattr(model, "simtool_card", None)
    if base is None:
        raise TypeError(f"method {spec.method!r} built its model without simtool.models.create_model, so its runs could not be reloaded")
    return {**base, "layers": list(getattr(model, "layer_names", [])), "method": spec.method, "preset": spec.preset,
            "run_only": run_only_paths(type(spec)), **method.card()}


def _update_best(spec, run: RunDir, model: torch.nn.Module, meta: dict, figures: dict, best: dict | None, epoch: int, step: int, dist: DistInfo) -> dict | None:
    """Write ``best.safetensors`` when this validation pass's ``checkpoint.best`` figure beats the best so far."""
    name, mode = spec.checkpoint.best, spec.checkpoint.best_mode
    if name not in figures:
        shown = ", ".join(sorted(figures)) or "none"
        raise UserError(f"checkpoint.best={name} is not a figure this method's validation reports (it reports: {shown}); set checkpoint.best to one of them.")
    value = float(figures[name])
    if not np.isfinite(value):
        return best
    if best is not None and not (value > best["value"] if mode == "max" else value < best["value"]):
        return best
    best = {"metric": name, "mode": mode, "value": value, "epoch": epoch, "step": step}
    if dist.is_main:
        run.write_best(model_state(model), metadata=meta, best=best)
    barrier(dist)
    return best


def _fit(spec, run: RunDir, build_method, resume, console, stop_after_steps, dist: DistInfo) -> dict:
    spec = spec.model_copy(deep=True)  # the engine fills in loop.batch_size_per_device
    device = resolve_device(spec.device, dist.local_rank)
    precision = resolve_precision(spec.precision, device)
    per_device, rest = divmod(spec.loop.batch_size, dist.world_size)
    if rest or per_device < 1:
        raise UserError(f"loop.batch_size={spec.loop.batch_size} is the global batch and must divide evenly over {dist.world_size} processes; choose a multiple of {dist.world_size}.")
    if spec.loop.batch_size_per_device not in (None, per_device):
        raise UserError(f"This run was made with {spec.loop.batch_size // spec.loop.batch_size_per_device} processes "
                        f"(batch {spec.loop.batch_size_per_device} per device); run it with that many (or leave loop.batch_size_per_device unset).")
    spec.loop.batch_size_per_device = per_device
    if spec.checkpoint.best and not spec.loop.eval_every:
        raise UserError(f"checkpoint.best={spec.checkpoint.best} keeps the best validation pass, but loop.eval_every=0 runs none; set loop.eval_every to 1 or more, or unset checkpoint.best.")
    seed_everything(spec.seed + dist.rank)
    method = build_method(spec, device=device, dist=dist, console=console)
    steps_per_epoch = method.steps_per_epoch()
    if steps_per_epoch < 1:
        raise UserError("The training data gives no full batch per epoch; lower loop.batch_size or use more data.")
    ckpt = run.latest_checkpoint() if resume else None
    if ckpt is None:
        run.check_can_start()  # on every rank, so no rank waits for one that refused
    if ckpt is None and dist.is_main:
        if resume:
            console.print(f"[yellow]{run.path} has no checkpoint yet; starting it from the beginning with its saved spec.[/]", soft_wrap=True)
        run.create(spec.to_dict())  # only now: the spec, the device and the data have validated
    barrier(dist)
    model = method.model.to(device)
    optimizer = build_optimizer(model, spec.optim)
    scheduler = build_scheduler(optimizer, spec.schedule, steps_per_epoch, spec.loop.epochs)
    total_steps = steps_per_epoch * spec.loop.epochs
    meta = {"simtool": __version__, "card": json.dumps(_card(spec, method, model)), "spec": json.dumps(spec.to_dict())}
    epoch, start_step, global_step = 0, 0, 0
    last_eval: dict[str, float] = {}
    last_loss = float("nan")
    best: dict | None = None  # {"metric", "mode", "value", "epoch", "step"} of the best validation pass so far

    if ckpt is not None:
        weights, skeleton, tensors = run.load_checkpoint(ckpt)
        state = unflatten_state(skeleton, tensors)
        try:
            model.load_state_dict(weights)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            _set_rng_state(state["rng"], device)
            pos = state["position"]
            epoch, start_step, global_step = pos["epoch"], pos["step"], pos["global_step"]
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            raise UserError(f"The checkpoint {ckpt} does not fit this run ({type(exc).__name__}); delete {run.path} and train it again.") from None
        last_loss = float(pos.get("last_loss", float("nan")))
        last_eval = dict(pos.get("last_eval", {}))
        best = pos.get("best")
        if dist.is_main:
            run.truncate_metrics(global_step)
            console.print(f"[bold]Resuming[/] {run.path} at epoch {epoch + 1}, step {start_step} (global step {global_step}).", soft_wrap=True)

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
                "position": {"epoch": ep, "step": st, "global_step": gs, "last_loss": last_loss, "last_eval": last_eval, "best": best},
            }
            skeleton, tensors = flatten_state(state)
            run.save_checkpoint(gs, model_state(model), skeleton, tensors, metadata=meta)
        barrier(dist)

    t_start = time.time()
    unit = getattr(method, "throughput_unit", "img")
    rate_key = "images_per_s" if unit == "img" else f"{unit}_per_s"
    progress = Progress(
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[ips]:.0f} " + unit + "/s"),
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
                        record = {"type": "train", "epoch": epoch, "step": global_step, "lr": scheduler.get_last_lr()[0], rate_key: round(ips, 1)}
                        record.update({k: all_reduce_mean(float(np.mean(v)), dist, device) for k, v in window.items()})
                        if dist.is_main:
                            run.append_metrics(record)
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
                        raise TrainingInterrupted(run.path, global_step)
                    if spec.checkpoint.every and global_step % spec.checkpoint.every == 0 and next_step != 0:
                        checkpoint(next_epoch, next_step, global_step)
                epoch += 1
                start_step = 0
                if spec.loop.eval_every and (epoch % spec.loop.eval_every == 0 or epoch == spec.loop.epochs):
                    last_eval = method.evaluate(model, epoch, device)
                    model.train()
                    if dist.is_main and last_eval:
                        run.append_metrics({"type": "eval", "epoch": epoch - 1, "step": global_step, **last_eval})
                    if spec.checkpoint.best:
                        best = _update_best(spec, run, model, meta, last_eval, best, epoch, global_step, dist)
                if dist.is_main:
                    shown = "  ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in last_eval.items()) if last_eval else ""
                    progress.console.print(f"epoch {epoch}/{spec.loop.epochs}  loss {last_loss:.4f}  {shown}")
                checkpoint(epoch, 0, global_step)
                if stop["flag"]:
                    raise TrainingInterrupted(run.path, global_step)
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
        "batch_size": spec.loop.batch_size,
        "batch_size_per_device": per_device,
        "weights": str(run.final_weights.relative_to(run.path)),
        "best": best,
        "torch": torch.__version__,
        "simtool": __version__,
    }
    if dist.is_main:
        run.write_final(model_state(model), metadata=meta)
        run.write_summary(summary)
    barrier(dist)
    return summary
