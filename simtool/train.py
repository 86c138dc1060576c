"""Library entry points behind ``simtool train``."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import yaml
from rich.console import Console

from simtool.data.builders import build_dataset
from simtool.engine.distributed import barrier, setup_distributed
from simtool.engine.loop import fit
from simtool.errors import UserError
from simtool.io import atomic_write_yaml, cache_dir
from simtool.methods.time_ssl import build_method
from simtool.specs.base import validate
from simtool.specs.data import BuildDataSpec, ToyWorldSpec
from simtool.specs.train import TrainSpec

SPEC_FILE = "spec.yaml"
TOYWORLD_VERSION = 1


def default_toyworld_path() -> Path:
    """Where the default toy world lives in the user cache (keyed by its spec and renderer version)."""
    key = json.dumps({"v": TOYWORLD_VERSION, "seed": 0, "toyworld": ToyWorldSpec().to_dict()}, sort_keys=True)
    return cache_dir() / f"toyworld-v{TOYWORLD_VERSION}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def ensure_default_toyworld(console: Console | None = None) -> Path:
    """Build the default toy world once into the user cache and reuse it afterwards."""
    path = default_toyworld_path()
    if (path / "dataset.json").is_file():
        return path
    if console:
        console.print(f"Building the default toy world into {path} (once) ...")
    spec = BuildDataSpec(format="toyworld", out=str(path), seed=0)
    try:
        build_dataset(spec)
    except UserError:
        if not (path / "dataset.json").is_file():  # lost a race with another process: fine if it finished
            raise
    return path


def new_run_dir(spec: TrainSpec, out: str | None) -> Path:
    if out:
        run_dir = Path(out)
        if (run_dir / SPEC_FILE).exists():
            raise UserError(f"The run directory {run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out.")
        if run_dir.exists() and not run_dir.is_dir():
            raise UserError(f"--out {run_dir} is a file; pass a directory path.")
    else:
        if int(os.environ.get("WORLD_SIZE", 1)) > 1:
            raise UserError("Under torchrun every process must write to the same run directory: pass --out DIR.")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / f"{stamp}-{spec.preset or spec.method}"
        n = 1
        while run_dir.exists():
            n += 1
            run_dir = Path("runs") / f"{stamp}-{spec.preset or spec.method}-{n}"
    return run_dir


def load_run_spec(run_dir: str | Path) -> TrainSpec:
    run_dir = Path(run_dir)
    path = run_dir / SPEC_FILE
    if not run_dir.is_dir():
        raise UserError(f"The run directory {run_dir} does not exist; pass a directory written by simtool train.")
    if not path.is_file():
        raise UserError(f"{run_dir} is not a simtool run directory ({SPEC_FILE} is missing); pass a directory written by simtool train.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML; the run directory is damaged.") from exc
    return validate(TrainSpec, data or {}, f"run spec {path}")


def prepare(spec: TrainSpec, console: Console | None = None) -> TrainSpec:
    """Fill in the default toy world when the spec names no data (built by rank 0 only)."""
    if spec.data.path is None:
        dist = setup_distributed()
        if dist.is_main:
            ensure_default_toyworld(console)
        barrier(dist)
        path = default_toyworld_path()
        spec = spec.model_copy(update={"data": spec.data.model_copy(update={"path": str(path)})})
    return spec


def train(spec: TrainSpec, out: str | None = None, console: Console | None = None, stop_after_steps: int | None = None) -> tuple[Path, dict]:
    spec = prepare(spec, console)
    dist = setup_distributed()
    if dist.is_main:
        run_dir = new_run_dir(spec, out)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_yaml(run_dir / SPEC_FILE, spec.to_dict())
    else:
        run_dir = Path(out)  # new_run_dir on rank 0 insists on --out under torchrun
    barrier(dist)
    summary = fit(spec, run_dir, build_method, resume=False, console=console, stop_after_steps=stop_after_steps)
    return run_dir, summary


def resume(run_dir: str | Path, device: str | None = None, console: Console | None = None, stop_after_steps: int | None = None) -> tuple[Path, dict]:
    run_dir = Path(run_dir)
    spec = load_run_spec(run_dir)
    if device is not None:
        spec = spec.model_copy(update={"device": device})
    summary = fit(spec, run_dir, build_method, resume=True, console=console, stop_after_steps=stop_after_steps)
    return run_dir, summary
