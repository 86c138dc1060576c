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

Throughput: every ``metrics.jsonl`` train record (and the progress line) carries the images (or the
method's unit) per second over all processes, ``data_wait``, the fraction of the logging window's
time spent waiting for the method's next batch (its loading, decoding and host-side work; the
host-to-device copy and the augmentations run inside the step), and on CUDA ``peak_memory_gib``, the
peak memory allocated during the window's steps (on this process's device). Waiting is measured
with the host clock around the batch iterator only (no device synchronisation on the CPU; on CUDA
one per window, so the window's time includes its queued device work).

The spec's ``engine`` section (:func:`~simtool.engine.device.resolve_engine`; ``auto`` = on for
CUDA) sets how the steps run, never what is learned: the model's weights channels-last,
``torch.compile`` of the training model, TF32 matrix products, and the options of the method's
image loaders (:class:`~simtool.data.loading.LoaderOptions`: pinned memory, persistent workers,
prefetching, JPEG decoding on the device).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from simtool import __version__
from simtool.data.loading import LoaderOptions, loader_options
from simtool.engine.checkpoint import flatten_state, model_state, unflatten_state
from simtool.engine.device import (
    EngineOptions,
    autocast,
    compile_failure,
    cuda_memory,
    cuda_total_memory,
    optimizer_state_like_params,
    resolve_device,
    resolve_engine,
    resolve_precision,
    tf32_matmuls,
    to_channels_last,
)
from simtool.engine.distributed import DistInfo, all_reduce_mean, any_rank, barrier, setup_distributed, teardown_distributed
from simtool.engine.method import Method, StepInfo
from simtool.engine.optim import build_optimizer, build_scheduler
from simtool.engine.seed import seed_everything
from simtool.errors import UserError
from simtool.formats.run_dir import RunDir
from simtool.signals import StopRequest
from simtool.specs.base import run_only_paths


class TrainingInterrupted(Exception):
    """Raised after Ctrl-C or SIGTERM once a checkpoint has been written."""

    def __init__(self, run_dir: Path, step: int, why: str | None = None):
        by = f" by {why}" if why else ""
        super().__init__(f"Interrupted{by} at step {step}; a checkpoint was saved. Continue with: simtool train --resume {run_dir}")
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


@dataclass
class _Position:
    """Where training stands: the next step's place, the last figures, the best validation pass."""

    epoch: int = 0
    step: int = 0  # within the epoch
    global_step: int = 0
    last_loss: float = float("nan")
    last_eval: dict = field(default_factory=dict)
    best: dict | None = None  # {"metric", "mode", "value", "epoch", "step"} of the best validation pass so far


def _configure(spec, dist: DistInfo):
    """The spec with ``loop.batch_size_per_device`` filled in, the device, the precision and the
    engine options (checks first)."""
    spec = spec.model_copy(deep=True)  # the engine fills in loop.batch_size_per_device
    device = resolve_device(spec.device, dist.local_rank)
    precision = resolve_precision(spec.precision, device)
    engine = resolve_engine(spec.engine, device)
    per_device, rest = divmod(spec.loop.batch_size, dist.world_size)
    if rest or per_device < 1:
        raise UserError(f"loop.batch_size={spec.loop.batch_size} is the global batch and must divide evenly over {dist.world_size} processes; "
                        f"choose a multiple of {dist.world_size}.")
    if spec.loop.batch_size_per_device not in (None, per_device):
        raise UserError(f"This run was made with {spec.loop.batch_size // spec.loop.batch_size_per_device} processes "
                        f"(batch {spec.loop.batch_size_per_device} per device); run it with that many (or leave loop.batch_size_per_device unset).")
    spec.loop.batch_size_per_device = per_device
    if spec.checkpoint.best and not spec.loop.eval_every:
        raise UserError(f"checkpoint.best={spec.checkpoint.best} keeps the best validation pass, but loop.eval_every=0 runs none; "
                        "set loop.eval_every to 1 or more, or unset checkpoint.best.")
    return spec, device, precision, engine


def engine_loader_options(engine: EngineOptions, device: torch.device) -> LoaderOptions:
    """The options of the image loaders the method builds (plain values: the data layer reads no spec)."""
    return LoaderOptions(device=str(device), pin_memory=engine.pin_memory if device.type == "cuda" else None,
                         persistent_workers=engine.persistent_workers, prefetch=engine.prefetch, decode=engine.decode)


def _restore(run: RunDir, ckpt: Path, model, optimizer, scheduler, device, dist: DistInfo, console) -> _Position:
    """Load a resumable checkpoint into the model, optimizer, scheduler and global RNGs; its position."""
    weights, skeleton, tensors = run.load_checkpoint(ckpt)
    state = unflatten_state(skeleton, tensors)
    try:
        model.load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"], device)
        pos = state["position"]
        position = _Position(pos["epoch"], pos["step"], pos["global_step"])
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise UserError(f"The checkpoint {ckpt} does not fit this run ({type(exc).__name__}); delete {run.path} and train it again.") from None
    position.last_loss = float(pos.get("last_loss", float("nan")))
    position.last_eval = dict(pos.get("last_eval", {}))
    position.best = pos.get("best")
    if dist.is_main:
        run.truncate_metrics(position.global_step)
        console.print(f"[bold]Resuming[/] {run.path} at epoch {position.epoch + 1}, step {position.step} (global step {position.global_step}).", soft_wrap=True)
    return position


def _progress(console, dist: DistInfo, unit: str) -> Progress:
    return Progress(
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[ips]:.0f} " + unit + "/s"),
        TextColumn("data wait {task.fields[wait]:.0%}"),
        TextColumn("{task.fields[mem]}"),
        TimeRemainingColumn(),
        console=console,
        disable=not dist.is_main,
        transient=False,
    )


class _Loop:
    """One training session of a run: the pieces of :func:`fit`."""

    def __init__(self, spec, run: RunDir, method: Method, model, device, precision, dist: DistInfo, console, stop_after_steps,
                 engine: EngineOptions | None = None):
        self.spec, self.run, self.method, self.model = spec, run, method, model
        self.device, self.precision, self.dist, self.console = device, precision, dist, console
        self.stop_after_steps = stop_after_steps
        self.engine = engine or EngineOptions()
        self.compiling = self.engine.compile  # until the first step has run through the compiled model
        self.peak_memory: float | None = None  # GiB, the largest window peak (CUDA)
        self.waited = 0.0  # seconds spent waiting for batches since the last train record
        self.optimizer = build_optimizer(model, spec.optim)
        self.steps_per_epoch = method.steps_per_epoch()
        self.scheduler = build_scheduler(self.optimizer, spec.schedule, self.steps_per_epoch, spec.loop.epochs)
        self.meta = {"simtool": __version__, "card": json.dumps(_card(spec, method, model)), "spec": json.dumps(spec.to_dict())}
        self.pos = _Position()
        self.train_model: torch.nn.Module = model
        unit = getattr(method, "throughput_unit", "img")
        self.unit, self.rate_key = unit, ("images_per_s" if unit == "img" else f"{unit}_per_s")
        self.stop = StopRequest(on_first=lambda: console.print(f"\n[yellow]{self.stop.signal_name}: finishing this step and saving a checkpoint "
                                                              "(a second Ctrl-C or SIGTERM aborts).[/]"))

    def checkpoint(self, epoch: int, step: int) -> None:
        """A resumable checkpoint whose next step is ``step`` of ``epoch``."""
        p = self.pos
        if self.dist.is_main:
            state = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": _rng_state(self.device),
                "position": {"epoch": epoch, "step": step, "global_step": p.global_step, "last_loss": p.last_loss, "last_eval": p.last_eval, "best": p.best},
            }
            skeleton, tensors = flatten_state(state)
            self.run.save_checkpoint(p.global_step, model_state(self.model), skeleton, tensors, metadata=self.meta)
        barrier(self.dist)

    def train_step(self, batch, step: int) -> dict[str, float]:
        """One optimizer step on ``batch``; the floats to log."""
        try:
            return self._train_step(batch, step)
        except torch.cuda.OutOfMemoryError:
            raise self._out_of_memory() from None
        except Exception as exc:
            failure = compile_failure(exc) if self.compiling else None
            if failure is None:
                raise
            raise failure from None

    def _train_step(self, batch, step: int) -> dict[str, float]:
        info = StepInfo(self.pos.epoch, step, self.pos.global_step, self.device, self.dist)
        with autocast(self.device, self.precision):
            loss, logs = self.method.training_step(self.train_model, batch, info)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.pos.global_step += 1
        self.pos.last_loss = float(loss.detach())
        self.compiling = False
        return {"loss": self.pos.last_loss, **logs}

    def _out_of_memory(self) -> UserError:
        per = self.spec.loop.batch_size_per_device
        seen = f"; the steps before peaked at {self.peak_memory:.1f} GiB" if self.peak_memory else ""
        total = cuda_total_memory(self.device)
        size = f" of {total:.0f} GiB" if total else ""
        return UserError(f"{self.device}{size} ran out of memory in a step of {per} {self.unit} per device (loop.batch_size={self.spec.loop.batch_size}"
                         f"{seen}); lower loop.batch_size (e.g. --set loop.batch_size={max(2, self.spec.loop.batch_size // 2)}).")

    def log(self, window: dict, n_window: int, t_window: float, wait: float, progress, task) -> None:
        """One train record of the window's ``n_window`` steps that began at ``t_window`` and waited
        ``wait`` seconds for their batches."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the window's time includes its queued device work
        elapsed = max(time.perf_counter() - t_window, 1e-9)
        ips = self.method.images_per_step * n_window * self.dist.world_size / elapsed
        record = {"type": "train", "epoch": self.pos.epoch, "step": self.pos.global_step, "lr": self.scheduler.get_last_lr()[0],
                  self.rate_key: float(f"{ips:.4g}")}  # 4 significant digits: a CPU's 0.4 img/s and a GPU's 3,000
        record["data_wait"] = round(all_reduce_mean(min(wait / elapsed, 1.0), self.dist, self.device), 4)
        peak = cuda_memory(self.device)
        if peak is not None:
            record["peak_memory_gib"] = round(peak, 2)
            self.peak_memory = max(self.peak_memory or 0.0, peak)
        record.update({k: all_reduce_mean(float(np.mean(v)), self.dist, self.device) for k, v in window.items()})
        if self.dist.is_main:
            self.run.append_metrics(record)
        progress.update(task, loss=record["loss"], ips=ips, wait=record["data_wait"], mem=f"peak {peak:.1f} GiB" if peak is not None else "")

    def run_epoch(self, progress, task) -> bool:
        """The remaining steps of the current epoch; True when a stop was requested before its end
        (a checkpoint of the next step is written then). A stop requested at its last step lets the
        epoch end as usual (validation and checkpoint) first."""
        spec, pos = self.spec, self.pos
        window: dict[str, list[float]] = {}
        t_window, n_window = time.perf_counter(), 0
        for step, batch in _timed(enumerate(self.method.batches(pos.epoch, pos.step), start=pos.step), self):
            for k, v in self.train_step(batch, step).items():
                window.setdefault(k, []).append(float(v))
            n_window += 1
            if pos.global_step % spec.loop.log_every == 0 or step == self.steps_per_epoch - 1:
                wait, self.waited = self.waited, 0.0
                self.log(window, n_window, t_window, wait, progress, task)
                window, t_window, n_window = {}, time.perf_counter(), 0
            progress.update(task, completed=pos.global_step, epoch=f"{pos.epoch + 1}/{spec.loop.epochs}")
            if self.stop_after_steps is not None and pos.global_step >= self.stop_after_steps:
                self.stop.requested = True
            self.stop.requested = any_rank(self.stop.requested, self.dist, self.device)
            next_epoch, next_step = (pos.epoch + 1, 0) if step + 1 >= self.steps_per_epoch else (pos.epoch, step + 1)
            if self.stop.requested:
                if next_step == 0:
                    return False  # the epoch is complete: it ends as usual, then training stops
                self.checkpoint(next_epoch, next_step)
                return True
            if spec.checkpoint.every and pos.global_step % spec.checkpoint.every == 0 and next_step != 0:
                self.checkpoint(next_epoch, next_step)
        return False

    def end_epoch(self, progress) -> None:
        """After the last step of an epoch: validation, the best checkpoint, a line, a checkpoint."""
        spec, pos = self.spec, self.pos
        pos.epoch += 1
        pos.step = 0
        if spec.loop.eval_every and (pos.epoch % spec.loop.eval_every == 0 or pos.epoch == spec.loop.epochs):
            pos.last_eval = self.method.evaluate(self.model, pos.epoch, self.device)
            self.model.train()
            if self.dist.is_main and pos.last_eval:
                self.run.append_metrics({"type": "eval", "epoch": pos.epoch - 1, "step": pos.global_step, **pos.last_eval})
            if spec.checkpoint.best:
                pos.best = _update_best(spec, self.run, self.model, self.meta, pos.last_eval, pos.best, pos.epoch, pos.global_step, self.dist)
        if self.dist.is_main:
            shown = "  ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in pos.last_eval.items()) if pos.last_eval else ""
            progress.console.print(f"epoch {pos.epoch}/{spec.loop.epochs}  loss {pos.last_loss:.4f}  {shown}", soft_wrap=True)
        self.checkpoint(pos.epoch, 0)

    def train(self) -> None:
        """Every remaining epoch; :class:`TrainingInterrupted` after a requested stop (checkpoint written)."""
        spec, pos = self.spec, self.pos
        total_steps = self.steps_per_epoch * spec.loop.epochs
        progress = _progress(self.console, self.dist, self.unit)
        with self.stop, progress:
            task = progress.add_task("train", total=total_steps, completed=pos.global_step,
                                     epoch=f"{pos.epoch + 1}/{spec.loop.epochs}", loss=float("nan"), ips=0.0, wait=0.0, mem="")
            while pos.epoch < spec.loop.epochs:
                self.model.train()
                if self.run_epoch(progress, task):
                    raise TrainingInterrupted(self.run.path, pos.global_step, self.stop.signal_name)
                self.end_epoch(progress)
                if self.stop.requested:
                    raise TrainingInterrupted(self.run.path, pos.global_step, self.stop.signal_name)

    def summary(self, t_start: float) -> dict:
        spec = self.spec
        extra = {"peak_memory_gib": round(self.peak_memory, 2)} if self.peak_memory is not None else {}
        return {
            "status": "completed",
            "epochs": spec.loop.epochs,
            "steps": self.pos.global_step,
            "final_loss": self.pos.last_loss,
            "last_eval": self.pos.last_eval,
            "seconds_this_session": round(time.time() - t_start, 1),
            "device": str(self.device),
            "precision": self.precision,
            "world_size": self.dist.world_size,
            "batch_size": spec.loop.batch_size,
            "batch_size_per_device": spec.loop.batch_size_per_device,
            "weights": str(self.run.final_weights.relative_to(self.run.path)),
            "best": self.pos.best,
            "engine": self.engine.to_dict(),
            **extra,
            "torch": torch.__version__,
            "simtool": __version__,
        }


def _timed(batches, loop: _Loop):
    """``batches`` (an iterator), adding the seconds each ``next`` takes to ``loop.waited``."""
    loop.waited = 0.0
    it = iter(batches)
    while True:
        t = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            return
        loop.waited += time.perf_counter() - t
        yield item


def _fit(spec, run: RunDir, build_method, resume, console, stop_after_steps, dist: DistInfo) -> dict:
    spec, device, precision, engine = _configure(spec, dist)
    seed_everything(spec.seed + dist.rank)
    with loader_options(engine_loader_options(engine, device)):
        method = build_method(spec, device=device, dist=dist, console=console)
    if method.steps_per_epoch() < 1:
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
    if engine.channels_last:
        to_channels_last(model)
    loop = _Loop(spec, run, method, model, device, precision, dist, console, stop_after_steps, engine)
    if ckpt is not None:
        loop.pos = _restore(run, ckpt, model, loop.optimizer, loop.scheduler, device, dist, console)
        if engine.channels_last:
            optimizer_state_like_params(loop.optimizer)
    if dist.enabled:
        loop.train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if engine.compile:
        loop.train_model = torch.compile(loop.train_model)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t_start = time.time()
    with tf32_matmuls(engine.tf32 if device.type == "cuda" else None):
        loop.train()
    summary = loop.summary(t_start)
    if dist.is_main:
        run.write_final(model_state(model), metadata=loop.meta)
        run.write_summary(summary)
    barrier(dist)
    return summary
