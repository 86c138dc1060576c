"""``simtool`` commands. Each parses its options into a spec, calls a stage, renders with Rich.

No logic lives here: stages (``simtool.stages``) do the work, registries (methods, evaluators,
builders) decide what a name means. Stages are imported inside each command, so a command loads
only what it needs (evaluating an embeddings file never imports training code).
"""

from __future__ import annotations

import functools
import os
import re
import sys
import traceback
from pathlib import Path
from typing import List, Optional

import typer
import yaml
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

SetOpt = typer.Option(None, "--set", metavar="KEY=VALUE", help="Override a spec value: --set a.b=value (repeatable).")
ConfigOpt = typer.Option(None, "--config", help="YAML file of spec overrides.")
DryRunOpt = typer.Option(False, "--dry-run", help="Print the resolved spec as YAML and exit.")


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
            console.print(f"[bold red]Error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            console.print("[yellow]Interrupted.[/]")
            raise typer.Exit(130) from None

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


def _existing(*paths) -> set[str]:
    """The given output paths (and, for a folder, the files in it) that exist before a stage writes."""
    out: set[str] = set()
    for p in paths:
        if not p:
            continue
        p = Path(p)
        if p.is_dir():
            out.update(str(f) for f in p.rglob("*") if f.is_file())
        elif p.exists():
            out.add(str(p))
    return out


def _wrote(written, existed: set[str]) -> str:
    """``Wrote a, b (replaced the previous file)``: a retry that replaces an earlier output says so."""
    written = [str(w) for w in written]
    if len(written) > 1 and all(w in existed for w in written):
        return "[green]Wrote[/] " + ", ".join(map(escape, written)) + " (replaced the previous files)"
    return "[green]Wrote[/] " + ", ".join(escape(w) + (" (replaced the previous file)" if w in existed else "") for w in written)


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
    console.print(f"[bold]{title}[/] " + "  ".join(f"[cyan]{k}[/]={escape(str(v))}" for k, v in shown.items()) + where, highlight=False, soft_wrap=True)


def _dry_run(spec) -> None:
    """``--dry-run``: the resolved spec as YAML on stdout, then exit 0."""
    print(yaml.safe_dump(spec.to_dict(), sort_keys=False), end="")
    raise typer.Exit(0)


def _split_list(values: Optional[List[str]]) -> Optional[List[str]]:
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


_NUMBER = re.compile(r"^\s*([-+]?[\d.]|—|-$|nan|$)")


def _key_columns(header, rows) -> int:
    """How many leading columns name a row (text, not figures): repeated in every part of a split table."""
    for j in range(len(header)):
        if rows and all(_NUMBER.match(str(r[j])) for r in rows if j < len(r)):
            return max(j, 1)
    return 1


def _render(tables) -> None:
    """Print result tables whole: a table wider than the terminal is cut into parts by columns, each
    repeating the row names, rather than shrinking its cells to "0.9…"."""
    from rich.measure import Measurement

    def make(title, cols, rows):
        table = Table(title=escape(title))
        for h in cols:
            table.add_column(escape(header[h]), overflow="fold")
        for r in rows:
            table.add_row(*(escape(r[h]) if h < len(r) else "" for h in cols))
        return table

    width, wide = out_console.width, out_console.options.update_width(10**6)
    for title, header, rows in tables:
        keys = list(range(_key_columns(header, rows)))
        rest = list(range(len(keys), len(header)))
        parts, current = [], []
        for j in rest:
            trial = make(title, keys + current + [j], rows)
            if current and Measurement.get(out_console, wide, trial).maximum > width:
                parts.append(current)
                current = [j]
            else:
                current.append(j)
        parts.append(current)
        for i, cols in enumerate(parts):
            name = title if len(parts) == 1 else f"{title} (part {i + 1} of {len(parts)})"
            out_console.print(make(name, keys + cols, rows))


class _BuildProgress:
    """Rich progress bars for build-data: one bar per phase (scanning, images, merging), items/s and ETA."""

    def __init__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.text import Text

        class _Rate(ProgressColumn):
            def render(self, task):
                speed = task.finished_speed or task.speed
                return Text(f"{speed:,.0f} items/s" if speed else "", style="progress.data.speed")

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(), TimeElapsedColumn(),
                                 TextColumn("ETA"), TimeRemainingColumn(), console=console)
        self.tasks: dict = {}

    def __call__(self, done: int, total: int = 0, what: str = "rendering") -> None:
        if what not in self.tasks:
            self.tasks[what] = self.progress.add_task(what, total=total or None)
        self.progress.update(self.tasks[what], completed=done, total=total or None)

    def warn(self, text: str) -> None:
        self.progress.console.print(f"[yellow]{escape(text)}[/]", soft_wrap=True, highlight=False)

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r} is not of the form i/n (e.g. --shard 0/4 builds the first of four shards).") from None
    if not (n >= 1 and 0 <= i < n):
        raise UserError(f"--shard {text}: i must be in 0..n-1 (e.g. --shard 0/4 ... --shard 3/4).")
    return i, n


BUILD_DATA_HELP = ("Build a dataset directory from raw data (or --verify one).\n\n"
                   "Writes dataset.json (the card), the parquet index (frames / images / items + triplets), "
                   "images.h5 (encoded images) and rejected.txt. Interrupted builds continue when run again.")


def _registry_help(command) -> None:
    """Fill the help texts that list registered components (formats, evaluation types), read from
    the registries only when help is shown, so that other commands start without importing them."""
    from simtool.data.builders import BUILDERS, format_lines
    from simtool.evaluators import EVALUATORS

    build = command.commands["build-data"]
    build.help = BUILD_DATA_HELP + "\n\n\b\nFormats:\n" + "\n".join("  " + line for line in format_lines())
    texts = {("build-data", "format"): " | ".join(BUILDERS.names()) + " (see the list above).",
             ("evaluate", "type"): " | ".join(EVALUATORS.names()) + "."}
    for (name, param), text in texts.items():
        for p in command.commands[name].params:
            if p.name == param:
                p.help = text


@app.command("build-data", help=BUILD_DATA_HELP)
@handle_errors
def build_data(
    format: Optional[str] = typer.Option(None, "--format", help="The dataset format (simtool build-data --help lists them)."),
    source: Optional[Path] = typer.Argument(None, metavar="SRC", help="Raw data to read: a folder, a preset's download, "
                                                                      "or the room table (not used by toyworld)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Dataset directory to create."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed for splits and random rooms (default 0)."),
    max_side: Optional[int] = typer.Option(None, "--max-side", help="Resize so the longer side is at most N and re-encode (default 320); "
                                                                    "0 keeps the original bytes."),
    quality: Optional[int] = typer.Option(None, "--quality", help="JPEG quality of re-encoded images (default 90)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Decoding processes (default 0 = one per CPU core)."),
    split: Optional[str] = typer.Option(None, "--split", help="Split fractions, e.g. 0.9,0.1 or 0.8,0.1,0.1 (mvimgnet: or 'original')."),
    split_by: Optional[str] = typer.Option(None, "--split-by", help="triplets: split by triplet or by item."),
    require_cameras: bool = typer.Option(False, "--require-cameras", help="mvimgnet: skip objects whose sparse/ reconstruction is missing or empty."),
    rooms: Optional[Path] = typer.Option(None, "--rooms", help="mvimgnet, icdl: room assignment JSON (room -> category ids) to attach."),
    categories: Optional[Path] = typer.Option(None, "--categories", help="Category names file (id,name lines); default SRC/mvimgnet_category.txt."),
    preset: Optional[str] = typer.Option(None, "--preset", help="triplets: a named collection read from SRC: things | yummly | ihsj."),
    triplets: Optional[List[Path]] = typer.Option(None, "--triplets", metavar="<file>",
                                                  help="triplets: triplet file (repeatable; ihsj: psiz observations HDF5)."),
    kind: Optional[str] = typer.Option(None, "--kind", help="triplets: odd-one-out | directed."),
    images: Optional[Path] = typer.Option(None, "--images", help="triplets: folder of item images (file stem = item id)."),
    items: Optional[Path] = typer.Option(None, "--items", help="triplets: items file with a header row, one row per item in order."),
    random: Optional[int] = typer.Option(None, "--random", help="rooms: number of random room assignments to write (default 2)."),
    shard: Optional[str] = typer.Option(None, "--shard", help="Build only shard i of n (i/n) into OUT.build; merge later with --merge."),
    merge: bool = typer.Option(False, "--merge", help="Merge the finished shards in OUT.build into OUT."),
    verify: Optional[Path] = typer.Option(None, "--verify", help="Re-read every index row and image of a dataset directory and report problems."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[List[str]] = SetOpt,
    dry_run: bool = DryRunOpt,
):
    if verify is not None:
        given = [f for f, v in (("--format", format), ("SRC", source), ("--out", out), ("--shard", shard), ("--config", config)) if v is not None]
        if given or merge or set_:
            raise UserError(f"--verify DIR checks an existing dataset; drop {', '.join(given) or '--merge/--set'} (only --workers may go with it).")
        from simtool.formats.dataset_dir import verify_dataset

        n = workers if workers is not None else 1
        n = n or max(1, min(16, os.cpu_count() or 1))
        with _BuildProgress() as bar:
            summary, problems = verify_dataset(verify, workers=n, progress=lambda d, t: bar(d, t, "verifying images"))
        what = (f"{summary['kind']} dataset, {summary['rows']} rows, {summary['images']} images"
                + (f", {summary['triplets']} triplets" if "triplets" in summary else ""))
        if problems:
            for p in problems:
                console.print(f"[red]Problem:[/] {escape(p)}", soft_wrap=True, highlight=False)
            console.print(f"[bold red]{len(problems)} problem(s)[/] in {escape(str(verify))} ({what}).")
            raise typer.Exit(1)
        console.print(f"[green]OK[/] {escape(str(verify))}: {what}; every image decodes and the fingerprint matches.")
        return
    if format is None or out is None:
        raise UserError("build-data needs --format F and --out DIR (or --verify DIR); see simtool build-data --help.")
    from simtool.data.builders import resolve_build_spec
    from simtool.data.builders.parts import BuildContext

    options = {
        "--max-side": max_side, "--quality": quality, "--workers": workers, "--split": split, "--split-by": split_by,
        "--require-cameras": True if require_cameras else None, "--rooms": str(rooms) if rooms else None,
        "--categories": str(categories) if categories else None, "--preset": preset,
        "--triplets": [str(t) for t in triplets] if triplets else None, "--kind": kind,
        "--images": str(images) if images else None, "--items": str(items) if items else None, "--random": random,
    }
    spec = resolve_build_spec(format, str(out), str(source) if source else None, str(config) if config else None, set_, seed, options)
    if dry_run:
        _dry_run(spec)
    from simtool.data.builders import build_dataset

    _print_spec("build-data", spec)
    with _BuildProgress() as bar:
        ctx = BuildContext(shard=_parse_shard(shard) if shard else None, merge_only=merge, warn=bar.warn)
        info = build_dataset(spec, progress=bar, ctx=ctx)
    if info.get("message"):
        console.print(f"[green]Wrote[/] {escape(info['out'])}: {escape(info['message'])} in {info['seconds']} s.", soft_wrap=True)
    else:
        console.print(f"[green]Wrote[/] {escape(info['out'])}: {info['images']} images, {info['categories']} categories in {info['seconds']} s.")
    if info.get("rejected"):
        from simtool.formats.dataset_dir import REJECTED

        console.print(f"[yellow]{info['rejected']} file(s) or object(s) skipped: see {escape(str(Path(info['out']) / REJECTED))}.[/]", soft_wrap=True)


@app.command()
@handle_errors
def train(
    preset: str = typer.Option("normal", "--preset", help="Preset name (see --list-presets)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset directory; default: the built-in toy world."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default runs/<timestamp>-<preset>)."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Settings profile (see --list-presets); 'none' for none. Default: the dataset's own."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[List[str]] = SetOpt,
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | mps."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed."),
    repeats: Optional[int] = typer.Option(None, "--repeats", help="Repetitions trained side by side in one run "
                                                                  "(teacher presets: R teachers with different seeds)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue an interrupted run directory."),
    list_presets: bool = typer.Option(False, "--list-presets", help="List the presets and profiles, and exit."),
    filter_: Optional[str] = typer.Option(None, "--filter", help="With --list-presets: only presets whose name or description contains this text "
                                                                 "(e.g. things, toy_, stmr)."),
    dry_run: bool = DryRunOpt,
):
    """Train a model from a preset (see --list-presets).

    Writes RUN/spec.yaml, metrics.jsonl, safetensors checkpoints and summary.json.
    """
    from simtool.methods import list_presets as _list
    from simtool.methods import resolve_train_spec
    from simtool.specs.presets import list_profiles

    if list_presets:
        presets = _list()
        if filter_:
            needle = filter_.lower()
            presets = {n: d for n, d in presets.items() if needle in n.lower() or needle in d.lower()}
            if not presets:
                raise UserError(f"No preset matches --filter {filter_!r}; run simtool train --list-presets to see them all.")
        title = f"simtool presets matching {filter_!r} ({len(presets)})" if filter_ else f"simtool presets ({len(presets)}; --filter TEXT to narrow)"
        table = Table("preset", "what it trains", title=title)
        for name, desc in presets.items():
            table.add_row(name, desc)
        out_console.print(table)
        table = Table("profile", "what it changes", title="profiles (--profile NAME)")
        for name, desc in list_profiles().items():
            table.add_row(name, desc)
        table.add_row("none", "no profile: the preset's own (paper) settings")
        out_console.print(table)
        return
    from simtool.engine.loop import TrainingInterrupted
    from simtool.stages import train as stage

    try:
        if resume is not None:
            if any(v is not None for v in (data, out, config, seed, profile, repeats)) or set_:
                raise UserError("--resume continues a run with its saved spec; "
                                "drop --data/--out/--profile/--config/--set/--seed/--repeats (only --device may change).")
            if dry_run:
                _dry_run(stage.load_run_spec(resume))
            try:
                run_dir, summary = stage.resume(resume, device=device, console=console)
            except stage.AlreadyFinished as done:
                console.print(f"[green]{escape(str(done))}[/]", soft_wrap=True)
                return
        else:
            if repeats is not None:
                from simtool.methods import get_method, load_preset

                method = str(load_preset(preset).get("method"))
                if "repeats" not in get_method(method).spec.model_fields:
                    raise UserError(f"--repeats trains several repetitions in one run, which method {method!r} (preset {preset}) does not do; "
                                    "train one run per seed with --seed instead.")
                set_ = [*(set_ or []), f"repeats={repeats}"]
            spec = resolve_train_spec(preset, str(config) if config else None, set_, str(data) if data else None, seed, device, profile)
            if dry_run:
                _dry_run(spec)
            stage.check_before_work(spec, str(out) if out else None)
            spec = stage.prepare(spec, console)
            note = f" profile {spec.profile}" if spec.profile else " no profile"
            _print_spec(f"train ({note.strip()}; differences from the method defaults)", spec, "RUN/spec.yaml")
            run_dir, summary = stage.train(spec, str(out) if out else None, console=console)
    except TrainingInterrupted as exc:
        console.print(f"[yellow]{escape(str(exc))}[/]", soft_wrap=True)
        raise typer.Exit(130) from None
    console.print(f"[green]Done.[/] Run directory: {escape(str(run_dir))}  ({summary['steps']} steps, final loss {summary['final_loss']:.4f})")
    out_console.print(str(run_dir))


@app.command("save-embeddings")
@handle_errors
def save_embeddings(
    runs: Optional[List[Path]] = typer.Argument(None, metavar="RUN", help="Run directories (or --model NAME --data DIR instead)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output .safetensors file (row ids go beside it)."),
    split: Optional[str] = typer.Option(None, "--split", help="train | val | test | all (default: all for teacher runs and --model, test for image models)."),
    layers: Optional[List[str]] = typer.Option(None, "--layers", metavar="LAYER,...", help="Layers to export (repeatable or comma-separated); default all."),
    data: Optional[Path] = typer.Option(None, "--data", help="The runs' dataset directory, if it moved since training; with --model, the dataset to embed."),
    model: Optional[str] = typer.Option(None, "--model", help="Embed DATA with a model no run trained: a timm model (resnet50, timm:vit_small_patch16_224) "
                                                              "or a registered simtool model; randomly initialised unless --pretrained or --weights."),
    pretrained: bool = typer.Option(False, "--pretrained", help="--model: timm's pretrained weights (downloaded unless cached)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="--model: weights file, .safetensors or a .pth state dict (read with weights_only=True)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="--model: seed of the random initialisation (0)."),
    list_layers: bool = typer.Option(False, "--list-layers", help="--model: list the model's layers and their dimensions, and exit."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | mps."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Images per forward pass."),
    dry_run: bool = DryRunOpt,
):
    """Export per-layer embeddings of trained runs, or of any model (--model) on a dataset directory.

    Writes FILE.safetensors (one (N, R, D) tensor per run and layer) and FILE.rows.parquet (ids, labels).
    """
    from simtool.specs.base import validate
    from simtool.specs.evaluate import SaveEmbeddingsSpec

    runs = runs or []
    if model is None:
        given = [f for f, v in (("--pretrained", pretrained), ("--weights", weights), ("--seed", seed is not None), ("--list-layers", list_layers)) if v]
        if given:
            raise UserError(f"{given[0]} goes with --model NAME (a model no run trained); runs carry their own weights.")
        if not runs:
            raise UserError("save-embeddings needs run directories (RUN ...) or --model NAME --data DIR; see simtool save-embeddings --help.")
    elif runs:
        raise UserError(f"Pass either run directories or --model {model}, not both; export them to separate files (compare reads several).")
    if pretrained and weights:
        raise UserError("--pretrained (timm's weights) and --weights FILE both choose the weights; pass one of them.")
    if list_layers:
        from simtool.stages.embed import list_layers as _layers

        table = Table("layer", "dimension", title=f"layers of {escape(model)}")
        for name, dim in _layers(model, pretrained, str(weights) if weights else None, seed or 0):
            table.add_row(escape(name), str(dim))
        out_console.print(table)
        return
    if out is None:
        raise UserError("save-embeddings needs --out FILE.safetensors (where the embeddings go).")
    if model is not None and data is None:
        raise UserError(f"--model {model} embeds a dataset directory: pass it with --data DIR.")
    spec = validate(SaveEmbeddingsSpec, {"runs": [str(r) for r in runs], "out": str(out), "split": split, "layers": _split_list(layers),
                                         "data": str(data) if data else None, "device": device, "batch_size": batch_size, "model": model,
                                         "pretrained": pretrained, "weights": str(weights) if weights else None, "seed": seed or 0}, "save-embeddings options")
    if dry_run:
        _dry_run(spec)
    from simtool.stages.embed import save_embeddings as _save

    _print_spec("save-embeddings", spec)
    existed = _existing(spec.out)
    info = _save(spec, console)
    console.print(f"{_wrote([info['out']], existed)} and {escape(info['rows'])} ({info['n']} rows, {len(info['models'])} model(s)).")


@app.command()
@handle_errors
def evaluate(
    target: Path = typer.Argument(..., metavar="TARGET", help="A run directory, an embeddings .safetensors file, or a .npy/.npz array (with --labels)."),
    type: str = typer.Option(..., "--type", help="The evaluation (simtool evaluate --help lists them)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the results JSON here."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Labels of a .npy/.npz target: "
                                                                 "CSV or parquet, one row per embedding, columns named after levels."),
    data: Optional[Path] = typer.Option(None, "--data", help="A run target's dataset directory, if it moved since training."),
    images: Optional[Path] = typer.Option(None, "--images", help="A run target: embed the same frames from this dataset directory "
                                          "(e.g. the backgrounds removed), matched by category, object and frame."),
    rooms: Optional[str] = typer.Option(None, "--rooms", help="odd-one-out: semantic | random | a room JSON file (default: the training rooms)."),
    repeats: Optional[int] = typer.Option(None, "--repeats", help="odd-one-out: triplets drawn per anchor and level (10)."),
    exclude_same_object: bool = typer.Option(False, "--exclude-same-object",
                                             help="odd-one-out: context/category 'same' items never from the anchor's own object."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the evaluation's random draws (0)."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="rsa: the reference embedding (an embeddings file, or a .npy/.npz array with ids)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", metavar="KEY=VALUE", help="Evaluator option: --set key=value (repeatable)."),
    split: str = typer.Option("test", "--split", help="A run target: the split of its dataset to embed (train | val | test | all)."),
    layers: Optional[List[str]] = typer.Option(None, "--layers", metavar="LAYER,...", help="Layers to evaluate (repeatable or comma-separated); default all."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | mps."),
    dry_run: bool = DryRunOpt,
):
    """Evaluate a run, an embeddings file or a plain array.

    odd-one-out: context/category/object accuracy at every layer. classes: P@1, Recall@K
    (--set k=1,2,4,8), R-Precision, MAP@R, NMI and AMI. Writes long-format result records.
    """
    from simtool.evaluators import validate_evaluate_spec
    from simtool.specs.base import parse_set

    options = {"type": type, "rooms": rooms, "repeats": repeats, "seed": seed, "exclude_same_object": exclude_same_object or None,
               "reference": str(reference) if reference else None, **parse_set(set_ or [])}
    spec = validate_evaluate_spec({"target": str(target), "out": str(out) if out else None, "labels": str(labels) if labels else None,
                                   "data": str(data) if data else None, "images": str(images) if images else None, "split": split,
                                   "layers": _split_list(layers), "device": device, "options": options})
    if dry_run:
        _dry_run(spec)
    from simtool.stages.evaluate import evaluate as _evaluate

    _print_spec("evaluate", spec)
    existed = _existing(spec.out)
    with console.status("Evaluating ..."):
        doc, written = _evaluate(spec, console)
    from simtool.evaluators import get_evaluator

    _render(get_evaluator(spec.options.type).tables(doc["records"]))
    if written:
        console.print(_wrote(written, existed))
    else:
        console.print("[yellow]Not written[/]: the results of a plain array go only where --out says; pass --out FILE.json to keep them.")


@app.command()
@handle_errors
def compare(
    targets: List[Path] = typer.Argument(..., metavar="TARGET",
                                         help="Results JSON files, run directories, directories of runs, or embeddings .safetensors files."),
    out: Optional[Path] = typer.Option(None, "--out", help="Directory for comparison.md/.csv/.json and the PNG figures."),
    layer: Optional[List[str]] = typer.Option(None, "--layer", metavar="[NAME=]LAYER", help="Compare at one layer (e.g. time.out); "
                                                                    "NAME=LAYER gives one group its own layer (repeatable)."),
    name: Optional[List[str]] = typer.Option(None, "--name", metavar="NAME", help="Group name of each target, in order (repeat once per target)."),
    reference: Optional[str] = typer.Option(None, "--reference", help="Show every group's paired difference to this group (e.g. simclr), "
                                                                      "with bootstrap 95 % intervals."),
    bootstrap: Optional[int] = typer.Option(None, "--bootstrap", help="Bootstrap resamples of the paired differences (1000; 0 = none)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the bootstrap and of the RSA/CKA subsample (0)."),
    max_items: Optional[int] = typer.Option(None, "--max-items", help="Most items for RSA and CKA between embeddings files (2000)."),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="Write PNG figures with --out."),
    dry_run: bool = DryRunOpt,
):
    """Compare evaluation results: replicates grouped, mean ± sd and n per group.

    --reference adds paired differences with bootstrap intervals; embeddings files add RSA and CKA
    between their models. --out writes comparison.md, comparison.csv (every record),
    comparison.json and figures: bars-<type>.png, layers-<type>.png, similarity.png.
    """
    from simtool.specs.base import validate
    from simtool.specs.evaluate import CompareSpec

    plain = [v for v in layer or [] if "=" not in v]
    if len(plain) > 1:
        raise UserError(f"--layer was given {len(plain)} layers ({', '.join(plain)}); give one, and NAME=LAYER for groups that use another.")
    layer_of = dict(v.split("=", 1) for v in layer or [] if "=" in v)
    data = {"targets": [str(t) for t in targets], "out": str(out) if out else None, "layer": plain[0] if plain else None, "names": name or None,
            "layer_of": layer_of, "reference": reference, "bootstrap": bootstrap, "seed": seed, "max_items": max_items, "figures": figures}
    spec = validate(CompareSpec, {k: v for k, v in data.items() if v is not None}, "compare options")
    if dry_run:
        _dry_run(spec)
    from simtool.stages.compare import compare as _compare

    _print_spec("compare", spec)
    existed = _existing(spec.out)
    with console.status("Comparing ..."):
        tabs, result, written = _compare(spec)
    for w in result.warnings:
        console.print(f"[yellow]Note:[/] {escape(w)}", soft_wrap=True)
    _render(tabs)
    if written:
        console.print(_wrote(written, existed))


def command():
    """The click command of the app, with the registries' help texts filled in."""
    cmd = typer.main.get_command(app)
    _registry_help(cmd)
    _list_metavars(cmd)
    return cmd


def _list_metavars(cmd) -> None:
    """Arguments that take several values show their metavar alone ("[RUN]...", "TARGET...") rather
    than typer's type name ("<list[Path]>")."""
    for sub in getattr(cmd, "commands", {}).values():
        for p in sub.params:
            if getattr(p, "param_type_name", "") == "argument" and p.nargs != 1:
                p.display_type_rich = lambda ctx: None


def main() -> None:
    if any(arg in ("--help", "-h") for arg in sys.argv[1:]):
        command()(prog_name="simtool")
    else:
        app()


if __name__ == "__main__":
    main()
