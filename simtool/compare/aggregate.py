"""Collecting result records and aggregating replicates into groups.

Records are read from results files, run directories (their ``eval-*.json``) or directories that
hold runs. A **group** is every record that answers the same question of the same kind of model:
the same name (the run's preset, else its method; ``--name`` sets it), the same training settings
apart from the seed and where or how fast it ran (:data:`~simtool.specs.common.RUN_ONLY_KEYS`),
and the same evaluation type, condition, layer, metric and level. Its replicates are its runs
(seeds) and their repetitions; the group shows their mean ± sd and n. Runs that share a name but
differ in a setting (2 vs 30 epochs, another dataset) form separate groups, labelled by the
setting, and every setting that differs between groups is listed: a 2-epoch run is never
silently set beside a 30-epoch run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simtool.errors import UserError
from simtool.formats.results import read_results
from simtool.formats.run_dir import RunDir
from simtool.specs.base import flatten
from simtool.specs.common import RUN_ONLY_KEYS

IGNORED_SETTINGS = set(RUN_ONLY_KEYS) | {"preset", "method"}


def results_files(target: Path) -> list[Path]:
    """Results files of a target: the file itself, a run's eval-*.json, or those of every run below a directory."""
    if target.is_file():
        return [target]
    if not target.is_dir():
        raise UserError(f"The compare target {target} does not exist; pass results files, run directories or directories of runs.")
    if RunDir.is_run_dir(target):
        files = RunDir(target).results_files()
        if not files:
            raise UserError(f"{target} holds no evaluation results (eval-*.json); run simtool evaluate on it first.")
        return files
    files = [f for run in RunDir.find(target) for f in run.results_files()]
    if not files:
        raise UserError(f"{target} holds no evaluated runs (no run directory with eval-*.json below it); run simtool evaluate first.")
    return files


@dataclass
class Collected:
    records: list[dict]
    provenance: dict[tuple[str, str], dict]  # (source file, run) -> model provenance
    warnings: list[str] = field(default_factory=list)


def collect(targets: list[str], names: list[str] | None = None) -> Collected:
    if names and len(names) != len(targets):
        raise UserError(f"--name was given {len(names)} time(s) for {len(targets)} target(s); give one name per target, in order.")
    records: list[dict] = []
    provenance: dict[tuple[str, str], dict] = {}
    seen: set[tuple] = set()
    for i, t in enumerate(targets):
        for f in results_files(Path(t)):
            doc = read_results(f)
            for run, prov in (doc.get("models") or {}).items():
                provenance[(str(f), run)] = prov
            for r in doc["records"]:
                key = (str(f), r.get("run"), r.get("repeat"), r.get("layer"), r.get("metric"), r.get("level"), r.get("condition"))
                if key in seen:
                    continue
                seen.add(key)
                prov = provenance.get((str(f), r.get("run")), {})
                name = names[i] if names else (r.get("preset") or r.get("method") or prov.get("preset") or r.get("run"))
                records.append({**r, "name": name, "source": str(f)})
    if not records:
        raise UserError("No result records were found in the targets; run simtool evaluate first.")
    return Collected(records, provenance)


def settings_of(prov: dict) -> dict:
    """The training settings of a model that bear on its results (flattened spec + dataset)."""
    flat = {k: v for k, v in flatten(prov.get("spec") or {}).items() if k not in IGNORED_SETTINGS}
    fp = (prov.get("dataset") or {}).get("fingerprint")
    if fp:
        flat["dataset"] = fp[:19]
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in flat.items()}


def _short(v) -> str:
    if isinstance(v, tuple):
        return "[" + ", ".join(map(str, v)) + "]"
    return str(v)


@dataclass
class Group:
    label: str
    type: str
    condition: str | None
    layer: str
    metric: str
    level: str | None
    values: list[float]
    ses: list[float | None]
    ns: list[int]
    runs: list[str]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.values)) if self.values else None

    @property
    def sd(self) -> float | None:
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else None

    @property
    def spread(self) -> float | None:
        """sd over replicates; for a single run its own standard error."""
        if self.n > 1:
            return self.sd
        return self.ses[0] if self.ses and self.ses[0] is not None else None

    def as_dict(self) -> dict:
        return {"name": self.label, "type": self.type, "condition": self.condition, "layer": self.layer, "metric": self.metric,
                "level": self.level, "mean": self.mean, "sd": self.sd, "se": self.ses[0] if self.n == 1 else None, "n": self.n, "runs": self.runs}


@dataclass
class Aggregated:
    groups: list[Group]
    labels: list[str]
    differing: dict[str, dict[str, str]]  # label -> setting -> value, for settings that differ between labels
    records: list[dict]
    warnings: list[str]


def aggregate(col: Collected) -> Aggregated:
    """Split names by differing settings, then group records and aggregate their replicates."""
    run_settings: dict[tuple[str, str], dict] = {}
    for r in col.records:
        key = (r["source"], r["run"])
        if key not in run_settings:
            run_settings[key] = settings_of(col.provenance.get(key, {}))
    by_name: dict[str, list[tuple[str, str]]] = {}
    for r in col.records:
        members = by_name.setdefault(r["name"], [])
        if (r["source"], r["run"]) not in members:
            members.append((r["source"], r["run"]))
    label_of: dict[tuple[str, str], str] = {}
    for name, members in by_name.items():
        keys = sorted({k for m in members for k in run_settings[m]})
        varying = [k for k in keys if len({_short(run_settings[m].get(k, "–")) for m in members}) > 1]
        for m in members:
            suffix = ", ".join(f"{k}={_short(run_settings[m].get(k, '–'))}" for k in varying)
            label_of[m] = f"{name} ({suffix})" if suffix else name
    for r in col.records:
        r["name"] = label_of[(r["source"], r["run"])]
    labels = list(dict.fromkeys(r["name"] for r in col.records))

    # settings that differ between labels
    label_settings: dict[str, dict] = {}
    for m, lab in label_of.items():
        label_settings.setdefault(lab, dict(run_settings[m]))
    keys = sorted({k for s in label_settings.values() for k in s})
    differing_keys = [k for k in keys if len({_short(s.get(k, "–")) for s in label_settings.values()}) > 1]
    differing = {lab: {k: _short(label_settings[lab].get(k, "–")) for k in differing_keys} for lab in labels} if differing_keys else {}

    groups: dict[tuple, Group] = {}
    for r in col.records:
        key = (r["name"], r["type"], r.get("condition"), r["layer"], r["metric"], r.get("level"))
        g = groups.get(key)
        if g is None:
            g = groups[key] = Group(r["name"], r["type"], r.get("condition"), r["layer"], r["metric"], r.get("level"), [], [], [], [])
        v = r.get("value")
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        g.values.append(float(v))
        g.ses.append(r.get("se"))
        g.ns.append(int(r.get("n") or 0))
        g.runs.append(f"{r['run']}#{r.get('repeat', 0)}")
    warnings = list(col.warnings)
    datasets = {r.get("dataset") for r in col.records if r.get("dataset")}
    if len(datasets) > 1:
        warnings.append(f"The results come from {len(datasets)} different datasets; rows that differ in 'dataset' are not comparable.")
    return Aggregated(list(groups.values()), labels, differing, col.records, warnings)
