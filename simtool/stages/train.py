"""``train``: a resolved train spec → a run directory (engine + the registered method)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from rich.console import Console

from simtool.data.builders.toyworld import ToyWorldBuildSpec, ToyWorldSpec
from simtool.engine.distributed import barrier, setup_distributed
from simtool.engine.loop import fit
from simtool.errors import UserError
from simtool.formats.dataset_dir import CARD, FORMAT_VERSION
from simtool.formats.run_dir import RunDir
from simtool.io import cache_dir, check_writable
from simtool.methods import build_method, validate_train_spec

TOYWORLD_VERSION = 3  # bump when the renderer's output changes (2: the toy triplets in DIR/triplets; 3: their staged split)


class AlreadyFinished(Exception):
    """``--resume`` on a run that has finished: nothing to do, nothing changed."""


def default_toyworld_path() -> Path:
    """Where the default toy world lives in the user cache (keyed by renderer, format and spec)."""
    key = json.dumps({"v": TOYWORLD_VERSION, "seed": 0, "toyworld": ToyWorldSpec().to_dict()}, sort_keys=True)
    return cache_dir() / f"toyworld-v{TOYWORLD_VERSION}.{FORMAT_VERSION}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def ensure_default_toyworld(console: Console | None = None) -> Path:
    """Build the default toy world once into the user cache and reuse it afterwards."""
    from simtool.data.builders import build_dataset

    path = default_toyworld_path()
    if (path / CARD).is_file():
        return path
    if console:
        console.print(f"Building the default toy world into {path} (once) ...", soft_wrap=True)
    try:
        build_dataset(ToyWorldBuildSpec(format="toyworld", out=str(path), seed=0))
    except UserError:
        from simtool.locks import beside

        deadline = time.time() + 3600  # another process builds it: wait for it to finish
        while not (path / CARD).is_file() and beside(path).exists() and time.time() < deadline:
            time.sleep(1.0)
        if not (path / CARD).is_file():
            raise
    return path


def default_dataset(method: str) -> Path:
    """The default data of ``method``: the toy world, or the part of it the method registered as its
    ``default_dataset`` (e.g. ``"triplets"``: the toy world's triplet judgements)."""
    from simtool.methods import get_method

    sub = get_method(method).default_dataset
    return default_toyworld_path() / sub if sub else default_toyworld_path()


def check_before_work(spec, out: str | None) -> None:
    """What can be checked in a second, before the toy world is built or a dataset opened: the
    output location is writable and the backbone is a timm model."""
    if out:
        check_writable(out, "the run directory")
    if getattr(spec.data, "path", None):
        from simtool.formats.dataset_dir import check_dataset_dir

        check_dataset_dir(spec.data.path)
    backbone = getattr(getattr(spec, "model", None), "backbone", None)
    if isinstance(backbone, str):
        from simtool.models.backbone import check_backbone

        check_backbone(backbone)


def prepare(spec, console: Console | None = None):
    """Fill in the method's default dataset (in the default toy world) when the spec names no data
    (built by rank 0 only)."""
    if spec.data.path is None:
        dist = setup_distributed()
        if dist.is_main:
            ensure_default_toyworld(console)
        barrier(dist)
        spec = spec.model_copy(update={"data": spec.data.model_copy(update={"path": str(default_dataset(spec.method))})})
    return spec


def new_run_dir(spec, out: str | None) -> RunDir:
    if out:
        run = RunDir(out)
        with run.owner():  # a run directory another process is training is named as in use, not as "interrupted"
            run.check_can_start()
        return run
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise UserError("Under torchrun every process must write to the same run directory: pass --out DIR.")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{spec.preset or spec.method}"
    path, n = Path("runs") / base, 1
    while path.exists():
        n += 1
        path = Path("runs") / f"{base}-{n}"
    return RunDir(path)


def train(spec, out: str | None = None, console: Console | None = None, stop_after_steps: int | None = None) -> tuple[Path, dict]:
    """Train a new run; its directory is created only once the spec, device and data validated,
    and one process owns it meanwhile (a second one with the same ``--out`` stops at once)."""
    check_before_work(spec, out)
    spec = prepare(spec, console)
    run = new_run_dir(spec, out)
    check_writable(run.path, "the run directory")
    with run.owner():
        run.check_can_start()
        summary = fit(spec, run, build_method, resume=False, console=console, stop_after_steps=stop_after_steps)
    return run.path, summary


def load_run_spec(run_dir: str | Path):
    run = RunDir(run_dir)
    return validate_train_spec(run.read_spec(), f"run spec {run.spec_path}")


def resume(run_dir: str | Path, device: str | None = None, console: Console | None = None, stop_after_steps: int | None = None) -> tuple[Path, dict]:
    """Continue an interrupted run (a run without a checkpoint starts again from its saved spec)."""
    run = RunDir(run_dir)
    data = run.read_spec()
    if device is not None:
        data = {**data, "device": device}
    spec = validate_train_spec(data, f"run spec {run.spec_path}")
    check_writable(run.path, "the run directory", fix="make it writable")
    with run.owner("trained"):
        if run.state() == "finished":
            raise AlreadyFinished(f"{run.path} has finished training ({run.final_weights} exists); nothing to resume, nothing changed.")
        summary = fit(spec, run, build_method, resume=True, console=console, stop_after_steps=stop_after_steps)
    return run.path, summary
