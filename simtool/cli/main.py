"""``simtool`` commands. Each parses its options into a spec, calls the library, renders with Rich."""

from __future__ import annotations

import functools
import os
import sys
import traceback
from pathlib import Path
from typing import List, Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from simtool import __version__
from simtool.errors import UserError

app = typer.Typer(
    name="simtool",
    help="Learn and measure semantic image similarity: build data, train, export embeddings, evaluate, compare.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
console = Console(stderr=True)
out_console = Console()
STATE = {"debug": False}

SetOpt = typer.Option(None, "--set", help="Override a spec value: --set a.b=value (repeatable).")
ConfigOpt = typer.Option(None, "--config", help="YAML file of spec overrides.")


def handle_errors(fn):
    """Turn UserError into one red sentence and exit code 2; --debug shows the traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except UserError as exc:
            if STATE["debug"]:
                traceback.print_exc()
            console.print(f"[bold red]Error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code)
        except KeyboardInterrupt:
            console.print("[yellow]Interrupted.[/]")
            raise typer.Exit(130)

    return wrapper


def _version(value: bool):
    if value:
        out_console.print(f"simtool {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
):
    STATE["debug"] = debug
    if int(os.environ.get("RANK", 0)) != 0:  # under torchrun only rank 0 talks
        console.quiet = out_console.quiet = True


def _print_spec(title: str, spec, written_to: str | None = None) -> None:
    """Short form of a resolved spec: the values that differ from the spec class defaults."""
    from simtool.specs.base import flatten

    flat = flatten(spec.to_dict())
    try:
        defaults = flatten(type(spec)().to_dict())
    except ValidationError:  # specs with required fields print in full
        defaults = {}
    shown = {k: v for k, v in flat.items() if k not in defaults or defaults[k] != v}
    where = f"  [dim](full spec: {written_to})[/]" if written_to else ""
    console.print(f"[bold]{title}[/] " + "  ".join(f"[cyan]{k}[/]={v}" for k, v in shown.items()) + where, highlight=False, soft_wrap=True)


@app.command("build-data")
@handle_errors
def build_data(
    format: str = typer.Option(..., "--format", help="Source format: toyworld."),
    source: Optional[Path] = typer.Argument(None, metavar="SRC", help="Raw data to read (not used by toyworld)."),
    out: Path = typer.Option(..., "--out", help="Dataset directory to create."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (default 0)."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[List[str]] = SetOpt,
):
    """Build a dataset directory from raw data.

    Writes frames.parquet (index), images.h5 (encoded images) and dataset.json (the card).
    """
    from simtool.data.builders import build_dataset
    from simtool.specs.resolve import resolve_build_spec

    spec = resolve_build_spec(format, str(out), str(source) if source else None, str(config) if config else None, set_, seed)
    _print_spec("build-data", spec)
    with console.status("Building dataset ..."):
        info = build_dataset(spec)
    console.print(f"[green]Wrote[/] {info['out']}: {info['images']} images, {info['categories']} categories in {info['seconds']} s.")


@app.command()
@handle_errors
def train(
    preset: str = typer.Option("normal", "--preset", help="Preset name (see --list-presets)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset directory; default: the built-in toy world."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default runs/<timestamp>-<preset>)."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[List[str]] = SetOpt,
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | mps."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue an interrupted run directory."),
    list_presets: bool = typer.Option(False, "--list-presets", help="List the presets and exit."),
):
    """Train a model from a preset (see --list-presets).

    Writes RUN/spec.yaml, metrics.jsonl, safetensors checkpoints and summary.json.
    """
    from simtool.engine.loop import TrainingInterrupted
    from simtool.specs.resolve import list_presets as _list, resolve_train_spec
    from simtool import train as train_lib

    if list_presets:
        table = Table("preset", "what it trains", title="simtool presets")
        for name, desc in _list().items():
            table.add_row(name, desc)
        out_console.print(table)
        return
    try:
        if resume is not None:
            if any(v is not None for v in (data, out, config, seed)) or set_:
                raise UserError("--resume continues a run with its saved spec; drop --data/--out/--config/--set/--seed (only --device may change).")
            run_dir, summary = train_lib.resume(resume, device=device, console=console)
        else:
            spec = resolve_train_spec(preset, str(config) if config else None, set_, str(data) if data else None, seed, device)
            spec = train_lib.prepare(spec, console)
            _print_spec("train (differences from the paper defaults)", spec, "RUN/spec.yaml")
            run_dir, summary = train_lib.train(spec, str(out) if out else None, console=console)
    except TrainingInterrupted as exc:
        console.print(f"[yellow]{exc}[/]", soft_wrap=True)
        raise typer.Exit(130)
    console.print(f"[green]Done.[/] Run directory: {run_dir}  ({summary['steps']} steps, final loss {summary['final_loss']:.4f})")
    out_console.print(str(run_dir))


@app.command("save-embeddings")
@handle_errors
def save_embeddings(
    runs: List[Path] = typer.Argument(..., metavar="RUN", help="Run directories."),
    out: Path = typer.Option(..., "--out", help="Output .safetensors file (row ids go beside it)."),
    split: str = typer.Option("test", "--split", help="train | val | test | all."),
    layers: Optional[List[str]] = typer.Option(None, "--layers", help="Layers to export (repeatable or comma-separated); default all."),
    device: str = typer.Option("auto", "--device"),
    batch_size: int = typer.Option(256, "--batch-size"),
):
    """Export per-layer embeddings of trained runs.

    Writes FILE.safetensors (one tensor per run and layer) and FILE.rows.parquet (row ids).
    """
    from simtool.embed import save_embeddings as _save
    from simtool.specs.base import validate
    from simtool.specs.evaluate import SaveEmbeddingsSpec

    spec = validate(SaveEmbeddingsSpec, {"runs": [str(r) for r in runs], "out": str(out), "split": split, "layers": _split_list(layers), "device": device, "batch_size": batch_size}, "save-embeddings options")
    _print_spec("save-embeddings", spec)
    info = _save(spec, console)
    console.print(f"[green]Wrote[/] {info['out']} and {info['rows']} ({info['n']} rows, {len(info['models'])} model(s)).")


def _acc(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def _split_list(values: Optional[List[str]]) -> Optional[List[str]]:
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


@app.command()
@handle_errors
def evaluate(
    target: Path = typer.Argument(..., metavar="TARGET", help="A run directory or an embeddings .safetensors file."),
    type: str = typer.Option(..., "--type", help="odd-one-out | triplets | classes."),
    out: Optional[Path] = typer.Option(None, "--out", help="Results JSON (default: next to the target)."),
    rooms: Optional[str] = typer.Option(None, "--rooms", help="semantic | random | a room JSON file (default: the training rooms)."),
    repeats: int = typer.Option(10, "--repeats", help="Triplets drawn per anchor and level."),
    seed: int = typer.Option(0, "--seed"),
    split: str = typer.Option("test", "--split"),
    layers: Optional[List[str]] = typer.Option(None, "--layers", help="Layers to evaluate; default all."),
    device: str = typer.Option("auto", "--device"),
):
    """Evaluate a run or an embeddings file.

    odd-one-out: context/category/object accuracy at every layer (triplets/classes: not yet).
    """
    from simtool.evaluate import evaluate as _evaluate
    from simtool.specs.base import validate
    from simtool.specs.evaluate import EvaluateSpec

    spec = validate(EvaluateSpec, {"target": str(target), "type": type, "out": str(out) if out else None, "rooms": rooms, "repeats": repeats, "seed": seed, "split": split, "layers": _split_list(layers), "device": device}, "evaluate options")
    _print_spec("evaluate", spec, "the results JSON")
    with console.status("Embedding and evaluating ..."):
        results, path = _evaluate(spec, console)
    for m in results["models"]:
        table = Table("layer", "dim", "context", "category", "object", "sparsity", "collapse", title=f"{m['name']} — odd-one-out accuracy (rooms: {Path(str(m['rooms'])).stem}, {m['n_items']} items)")
        for layer, r in m["layers"].items():
            table.add_row(layer, str(r["dim"]), *(_acc(r[lv]["accuracy"]) for lv in ("context", "category", "object")), f"{r['sparsity']:.2f}", f"{r['collapse']:.2f}")
        out_console.print(table)
    console.print(f"[green]Wrote[/] {path}")


@app.command()
@handle_errors
def compare(
    targets: List[Path] = typer.Argument(..., metavar="TARGET", help="Results JSON files or run directories."),
    out: Optional[Path] = typer.Option(None, "--out", help="Directory for comparison.md/.csv/.json."),
    layer: Optional[str] = typer.Option(None, "--layer", help="Compare at one layer (e.g. time.out)."),
):
    """Compare evaluation results in tables.

    --out writes comparison.md, comparison.csv and comparison.json.
    """
    from simtool.compare import compare as _compare
    from simtool.specs.base import validate
    from simtool.specs.evaluate import CompareSpec

    spec = validate(CompareSpec, {"targets": [str(t) for t in targets], "out": str(out) if out else None, "layer": layer}, "compare options")
    _print_spec("compare", spec)
    tabs, records, path = _compare(spec)
    for title, header, rows in tabs:
        table = Table(*header, title=title)
        for r in rows:
            table.add_row(*(escape(c) for c in r))
        out_console.print(table)
    if path:
        console.print(f"[green]Wrote[/] {path}/comparison.md, comparison.csv, comparison.json")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
