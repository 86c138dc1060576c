"""The run directory: the format ``train`` writes and ``save-embeddings`` / ``evaluate`` read.

Layout::

    RUN/
      spec.yaml                     the resolved train spec (written once the spec and data validated)
      metrics.jsonl                 one JSON object per logged step ("type": "train") and validation pass ("eval")
      summary.json                  written when training completes ("status": "completed")
      checkpoints/
        final.safetensors           the trained weights; metadata: model card + spec
        best.safetensors            (runs with checkpoint.best) the weights of the validation pass with the
                                    best value of that figure; metadata also holds "best" (JSON: metric,
                                    mode, value, epoch, step). save-embeddings and evaluate use it when present
        latest.json                 {"step": N, "dir": "step-XXXXXXXX"}: the resumable checkpoint
        step-XXXXXXXX/              model.safetensors, state.safetensors + state.json (optimizer,
                                    scheduler, RNG and loop position; tensors in safetensors)
      eval-<type>-<tag>.json        results written by simtool evaluate

A run is *new* (no spec), *started* (spec but no checkpoint yet: a start that failed or was stopped
at once; it may be started again), *interrupted* (a resumable checkpoint, no final weights) or
*finished* (final weights and a completed summary).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from simtool.errors import UserError
from simtool.formats.weights import read_state, write_weights
from simtool.io import append_jsonl, atomic_write_json, atomic_write_text, atomic_write_yaml, read_json

SPEC = "spec.yaml"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
FINAL = "final.safetensors"
BEST = "best.safetensors"
BEST_KEY = "best"
LATEST = "latest.json"
STEP_MODEL = "model.safetensors"
STEP_STATE = "state.safetensors"
STEP_JSON = "state.json"
RESULTS_PREFIX = "eval-"


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.resolve().name if str(self.path) in ("", ".") else self.path.name

    # -- names ----------------------------------------------------------------------------------
    @property
    def spec_path(self) -> Path:
        return self.path / SPEC

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def final_weights(self) -> Path:
        return self.checkpoints / FINAL

    @property
    def best_weights(self) -> Path:
        return self.checkpoints / BEST

    def results_path(self, type_: str, tag: str) -> Path:
        return self.path / f"{RESULTS_PREFIX}{type_}-{tag}.json"

    def results_files(self) -> list[Path]:
        return sorted(self.path.glob(f"{RESULTS_PREFIX}*.json"))

    def owner(self, doing: str = "trained"):
        """The lock that makes one process the owner of this run directory while it trains
        (``RUN.lock`` beside it; see :mod:`simtool.locks`). Under torchrun only rank 0 takes it."""
        import os

        from simtool.locks import OwnerLock, beside

        if int(os.environ.get("RANK", 0)) != 0:
            return contextlib.nullcontext()
        return OwnerLock(beside(self.path), f"The run directory {self.path}",
                         busy=f"it is being {doing}: wait for it to finish or stop it (Ctrl-C), or choose another --out")

    @staticmethod
    def is_run_dir(path: str | Path) -> bool:
        return (Path(path) / SPEC).is_file()

    @staticmethod
    def find(root: str | Path) -> list[RunDir]:
        """Every run directory at or below ``root``, sorted by path."""
        return [RunDir(p.parent) for p in sorted(Path(root).rglob(SPEC)) if p.is_file()]

    # -- state ----------------------------------------------------------------------------------
    def state(self) -> str:
        """``new`` | ``started`` | ``interrupted`` | ``finished`` (see the module docstring)."""
        if not self.spec_path.is_file():
            return "new"
        if self.final_weights.is_file() and (self.read_summary() or {}).get("status") == "completed":
            return "finished"
        if self.latest_checkpoint() is not None:
            return "interrupted"
        return "started"

    def check_can_start(self) -> None:
        """Raise unless a new run may be started here (a stale *started* directory may)."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--out {self.path} is a file; pass a directory path.")
        state = self.state()
        if state == "interrupted":
            raise UserError(f"The run directory {self.path} already holds an interrupted run; continue it with --resume {self.path} or choose another --out.")
        if state == "finished":
            raise UserError(f"The run directory {self.path} already holds a finished run; choose another --out (or delete it to train it again).")

    def create(self, spec: dict) -> None:
        """Make the directory (clearing what a failed start left) and write the resolved spec."""
        self.check_can_start()
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in (self.metrics_path, self.summary_path):
            stale.unlink(missing_ok=True)
        if self.checkpoints.exists():
            shutil.rmtree(self.checkpoints)
        atomic_write_yaml(self.spec_path, spec)

    # -- spec, metrics, summary -----------------------------------------------------------------
    def read_spec(self) -> dict:
        if not self.path.is_dir():
            raise UserError(f"The run directory {self.path} does not exist; pass a directory written by simtool train.")
        if not self.spec_path.is_file():
            raise UserError(f"{self.path} is not a simtool run directory ({SPEC} is missing); pass a directory written by simtool train.")
        try:
            data = yaml.safe_load(self.spec_path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError):
            raise UserError(f"{self.spec_path} is damaged (not valid YAML); the run cannot be used, train it again.") from None
        if not isinstance(data, dict):
            raise UserError(f"{self.spec_path} is damaged (not a mapping); the run cannot be used, train it again.")
        return data

    def append_metrics(self, record: dict) -> None:
        append_jsonl(self.metrics_path, record)

    def read_metrics(self) -> list[dict]:
        if not self.metrics_path.is_file():
            return []
        out = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a crash
        return out

    def truncate_metrics(self, step: int) -> None:
        """Drop records logged after ``step`` (written after the checkpoint a resume starts from)."""
        if not self.metrics_path.is_file():
            return
        keep = [json.dumps(r) for r in self.read_metrics() if r.get("step", 0) <= step]
        atomic_write_text(self.metrics_path, "".join(k + "\n" for k in keep))

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.summary_path, summary)

    def read_summary(self) -> dict | None:
        if not self.summary_path.is_file():
            return None
        try:
            data = read_json(self.summary_path)
        except (ValueError, UnicodeDecodeError):
            return None
        return data if isinstance(data, dict) else None

    # -- checkpoints ----------------------------------------------------------------------------
    def save_checkpoint(self, step: int, model_state: dict, state_skeleton: Any, state_tensors: dict, metadata: dict[str, str], keep: int = 1) -> Path:
        """Write ``checkpoints/step-XXXXXXXX/`` atomically, point ``latest.json`` at it, drop older ones."""
        from safetensors.torch import save_file

        ckpt = self.checkpoints
        ckpt.mkdir(parents=True, exist_ok=True)
        name = f"step-{step:08d}"
        final = ckpt / name
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=ckpt))
        try:
            save_file(model_state, str(tmp / STEP_MODEL), metadata=metadata)
            save_file(state_tensors, str(tmp / STEP_STATE))
            (tmp / STEP_JSON).write_text(json.dumps(state_skeleton) + "\n", encoding="utf-8")
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        atomic_write_json(ckpt / LATEST, {"step": step, "dir": name})
        old = sorted(p for p in ckpt.glob("step-*") if p.is_dir() and p.name != name)
        for p in old[: max(0, len(old) - (keep - 1))]:
            shutil.rmtree(p, ignore_errors=True)
        return final

    def latest_checkpoint(self) -> Path | None:
        pointer = self.checkpoints / LATEST
        if not pointer.is_file():
            return None
        try:
            path = self.checkpoints / json.loads(pointer.read_text(encoding="utf-8"))["dir"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise UserError(f"{pointer} is damaged; delete it and the run's checkpoints to start the run again.") from None
        return path if (path / STEP_JSON).is_file() else None

    def load_checkpoint(self, path: Path) -> tuple[dict, Any, dict]:
        """``(model state, state skeleton, state tensors)`` of a step directory."""
        hint = f"the checkpoint {path.name} cannot be resumed; delete {self.path} and train it again"
        model_state = read_state(path / STEP_MODEL, hint)
        state_tensors = read_state(path / STEP_STATE, hint)
        try:
            skeleton = json.loads((path / STEP_JSON).read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            raise UserError(f"{path / STEP_JSON} is damaged; {hint}.") from None
        return model_state, skeleton, state_tensors

    def write_final(self, model_state: dict, metadata: dict[str, str]) -> None:
        write_weights(self.final_weights, model_state, metadata)

    def write_best(self, model_state: dict, metadata: dict[str, str], best: dict) -> None:
        """``best.safetensors``: the weights of the best validation pass; ``best`` (metric, mode,
        value, epoch, step) goes into its metadata."""
        write_weights(self.best_weights, model_state, {**metadata, BEST_KEY: json.dumps(best)})

    def best_info(self) -> dict | None:
        """What ``best.safetensors`` records about its validation pass (None when the run has none)."""
        if not self.best_weights.is_file():
            return None
        from simtool.formats.weights import read_metadata

        try:
            return json.loads(read_metadata(self.best_weights, self.weights_hint(self.best_weights)).get(BEST_KEY, "{}"))
        except ValueError:
            return {}

    def weights(self, prefer_best: bool = True) -> tuple[Path, bool]:
        """The weights to use: the best validation pass's (``best.safetensors``) when the run has
        one and ``prefer_best``, else the final weights, else the latest checkpoint's model; and
        whether training has finished."""
        self.read_spec()
        finished = self.final_weights.is_file()
        if prefer_best and self.best_weights.is_file():
            return self.best_weights, finished
        if finished:
            return self.final_weights, True
        ckpt = self.latest_checkpoint()
        if ckpt is None:
            raise UserError(f"{self.path} has no weights yet (no final or intermediate checkpoint); train it first.")
        return ckpt / STEP_MODEL, False

    def weights_hint(self, path: Path) -> str:
        if path == self.best_weights:
            return f"delete it and train the run again (or pass the final weights by removing {path.name})"
        if path == self.final_weights:
            return f"delete it and run simtool train --resume {self.path} to write it again from the last checkpoint, or train the run again"
        return f"delete {path.parent} and resume from an earlier checkpoint, or train the run again"
