"""Collecting result records and aggregating replicates into groups.

Records are read from results files, run directories (their ``eval-*.json``) or directories that
hold runs. A **group** is every record that answers the same question of the same kind of model:
the same name (the run's preset, else its method; ``--name`` sets it), the same training settings
apart from the seed and where or how fast it ran (the run-only keys, :func:`run_only_keys`),
and the same evaluation type, condition, layer, metric and level. Its replicates are its runs
(seeds) and their repetitions; the group shows their mean ± sd and n. Runs that share a name but
differ in a setting (2 vs 30 epochs, another dataset) form separate groups, labelled by the
setting, and every setting that differs between groups is listed: a 2-epoch run is never
silently set beside a 30-epoch run.

Paired differences (:func:`difference`): a group against a reference group of the same question,
over the replicates they share (same seed and repetition), with a seeded two-stage bootstrap 95 %
interval (:func:`paired_bootstrap`): resample the shared runs, then the units (anchors or queries)
within every drawn run, from the per-unit values stored beside the records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simtool.errors import UserError
from simtool.formats import MISSING, RUN, kind_of
from simtool.formats.results import decode_sample, read_results, record_samples
from simtool.formats.run_dir import RunDir
from simtool.specs.base import flatten

NAME_KEYS = {"preset", "method"}  # what a run is called, not a setting
SAMPLE_KEY = "_sample"  # a collected record's per-unit values (encoded), never written out


def is_score(g: Group) -> bool:
    """Scores get differences, bars and layer curves; statistics and counts are only tabled."""
    return g.role == "score"


def record_role(r: dict) -> str:
    """A record's role: its own (``role``), or, in files written before records carried one, the
    role its evaluator declares for the metric (records with a level are always scores)."""
    if r.get("role"):
        return str(r["role"])
    if r.get("level") is not None:
        return "score"
    from simtool.evaluators import role_of

    return role_of(str(r.get("type")), str(r.get("metric")))


def base_name(label: str) -> str:
    """A group label without its settings suffix: ``normal (loop.epochs=2)`` → ``normal``."""
    return label.split(" (", 1)[0]


def results_files(target: Path) -> list[Path]:
    """Results files of a target: the file itself, a run's eval-*.json, or those of every run below a directory."""
    kind = kind_of(target)
    if kind == MISSING:
        raise UserError(f"The compare target {target} does not exist; pass results files, run directories or directories of runs.")
    if target.is_file():
        return [target]
    if kind == RUN:
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
    named: bool = False  # the groups were named by --name: their members pool, whatever settings differ


def model_identity(prov: dict, source: str, run: str) -> tuple:
    """What a model's results are results of: its weights file (their hash), else the run directory
    and which of its weights; a foreign array is its own source."""
    if prov.get("weights_sha256"):
        return ("weights", prov["weights_sha256"])
    if prov.get("run") and prov.get("method"):
        return ("run", str(Path(prov["run"]).resolve()), prov.get("weights"))
    return ("source", source, run)


def collect(targets: list[str], names: list[str] | None = None) -> Collected:
    """Every record of the targets, once: the same question of the same weights (a run's own
    results and those of its exported embeddings) counts once; results of a run evaluated before it
    finished are left out when the run has results of its finished weights, else kept apart (their
    group is labelled ``[unfinished]``). ``warnings`` say what was left out and why."""
    if names and len(names) != len(targets):
        raise UserError(f"--name was given {len(names)} time(s) for {len(targets)} target(s); give one name per target, in order.")
    records: list[dict] = []
    provenance: dict[tuple[str, str], dict] = {}
    seen: dict[tuple, str] = {}
    repeated: dict[str, int] = {}
    for i, t in enumerate(targets):
        for f in results_files(Path(t)):
            doc = read_results(f)
            samples = record_samples(doc)
            for run, prov in (doc.get("models") or {}).items():
                provenance[(str(f), run)] = prov
            for j, r in enumerate(doc["records"]):
                prov = provenance.get((str(f), r.get("run")), {})
                name = names[i] if names else (r.get("preset") or r.get("method") or prov.get("preset") or r.get("run"))
                # the same question of the same weights counts once per group (two --name values are two groups)
                key = (model_identity(prov, str(f), r.get("run")), name, r.get("type"), r.get("repeat"), r.get("layer"), r.get("metric"),
                       r.get("level"), r.get("condition"))
                if key in seen:
                    if seen[key] != str(f):
                        repeated[str(f)] = repeated.get(str(f), 0) + 1
                    continue
                seen[key] = str(f)
                rec = {**r, "role": record_role(r), "name": name, "source": str(f), "_finished": prov.get("finished", True) is not False,
                       "_run_path": str(Path(prov["run"]).resolve()) if prov.get("run") and prov.get("method") else None}
                if j in samples:
                    rec[SAMPLE_KEY] = samples[j]
                records.append(rec)
    if not records:
        raise UserError("No result records were found in the targets; run simtool evaluate first.")
    warnings = [f"{f}: its {n} record(s) repeat results of the same weights found in another target; each is counted once." for f, n in repeated.items()]
    finished_runs = {r["_run_path"] for r in records if r["_finished"] and r["_run_path"]}
    left_out: dict[str, int] = {}
    kept: list[dict] = []
    for r in records:
        if not r["_finished"]:
            if r["_run_path"] in finished_runs:
                left_out[r["source"]] = left_out.get(r["source"], 0) + 1
                continue
            r["name"] = f"{r['name']} [unfinished]"
        kept.append(r)
    warnings += [f"{f}: left out its {n} record(s) of a run evaluated before it finished; the run has results of its finished weights."
                 for f, n in left_out.items()]
    unfinished = sorted({r["source"] for r in kept if not r["_finished"]})
    if unfinished:
        warnings.append(f"{', '.join(unfinished)}: results of a run that had not finished (an intermediate checkpoint), shown apart as "
                        "[unfinished]; evaluate the run again when it has finished.")
    for r in kept:
        r.pop("_finished"), r.pop("_run_path")
    return Collected(kept, provenance, warnings, named=bool(names))


def run_only_keys(prov: dict) -> set[str]:
    """The spec keys of a model that say where or how fast it ran (its card records them; for runs
    trained before cards did, the keys its method's spec declares run-only)."""
    keys = prov.get("run_only")
    if keys is None:
        from simtool.methods import METHODS
        from simtool.specs.base import run_only_paths

        method = prov.get("method") or (prov.get("spec") or {}).get("method")
        keys = run_only_paths(METHODS.get(method).spec) if method in METHODS else []
    return set(keys)


def settings_of(prov: dict) -> dict:
    """The training settings of a model that bear on its results (flattened spec + dataset)."""
    ignored = run_only_keys(prov) | NAME_KEYS
    flat = {k: v for k, v in flatten(prov.get("spec") or {}).items() if k not in ignored}
    fp = (prov.get("dataset") or {}).get("fingerprint")
    if fp:
        flat["dataset"] = fp[:19]
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in flat.items()}


def _short(v) -> str:
    if isinstance(v, tuple):
        return "[" + ", ".join(map(str, v)) + "]"
    return str(v)


def varying_settings(members: dict[tuple, tuple[str, dict]]) -> dict[str, list[str]]:
    """Name → the settings that vary among the members sharing that name."""
    by_name: dict[str, list[tuple]] = {}
    for key, (name, _) in members.items():
        by_name.setdefault(name, []).append(key)
    out = {}
    for name, keys_ in by_name.items():
        settings = {m: members[m][1] for m in keys_}
        keys = sorted({k for m in keys_ for k in settings[m]})
        out[name] = [k for k in keys if len({_short(settings[m].get(k, "–")) for m in keys_}) > 1]
    return out


def make_labels(members: dict[tuple, tuple[str, dict]], split: bool = True) -> dict[tuple, str]:
    """Member key → label: its name, plus ``(key=value, ...)`` for the settings that vary among the
    members sharing that name (``members``: key → (name, settings)); with ``split=False`` (names
    given by ``--name``) the name alone: the user said these members are one group."""
    vary = varying_settings(members) if split else {}
    label_of: dict[tuple, str] = {}
    for m, (name, settings) in members.items():
        suffix = ", ".join(f"{k}={_short(settings.get(k, '–'))}" for k in vary.get(name, []))
        label_of[m] = f"{name} ({suffix})" if suffix else name
    return label_of


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
    seeds: list = field(default_factory=list)  # per value: the run's seed
    repeats: list = field(default_factory=list)  # per value: the repetition
    samples: list = field(default_factory=list)  # per value: encoded per-unit values or None
    datasets: list = field(default_factory=list)  # per value: dataset fingerprint
    role: str = "score"  # score | statistic | count (see simtool.formats.results.ROLES)
    chance: float | None = None  # the value at chance its records give (None: unknown)

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
    members: dict[tuple[str, str], tuple[str, dict]] = {}
    for r in col.records:
        members.setdefault((r["source"], r["run"]), (r["name"], run_settings[(r["source"], r["run"])]))
    label_of = make_labels(members, split=not col.named)
    pooled = {name: keys for name, keys in varying_settings(members).items() if keys} if col.named else {}
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
            g = groups[key] = Group(r["name"], r["type"], r.get("condition"), r["layer"], r["metric"], r.get("level"), [], [], [], [], role=r["role"],
                                    chance=r.get("chance"))
        v = r.get("value")
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        g.values.append(float(v))
        g.ses.append(r.get("se"))
        g.ns.append(int(r.get("n") or 0))
        g.runs.append(f"{r['run']}#{r.get('repeat', 0)}")
        g.seeds.append(r.get("seed"))
        g.repeats.append(r.get("repeat") or 0)
        g.samples.append(r.get(SAMPLE_KEY))
        g.datasets.append(r.get("dataset"))
    warnings = list(col.warnings)
    for name, keys in pooled.items():
        shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
        warnings.append(f"'{name}' pools targets that differ in {shown}, as --name asked (without --name they would be told apart).")
    datasets: dict[str, list[str]] = {}
    for r in col.records:
        if r.get("dataset"):
            users = datasets.setdefault(r["dataset"], [])
            if r["name"] not in users:
                users.append(r["name"])
    if len(datasets) > 1:
        which = "; ".join(f"{fp[:19]}: {', '.join(users)}" for fp, users in datasets.items())
        warnings.append(f"The results come from {len(datasets)} different datasets ({which}); rows that differ in 'dataset' are not comparable.")
    warnings += missing_metrics(list(groups.values()), labels)
    return Aggregated(list(groups.values()), labels, differing, col.records, warnings)


def missing_metrics(groups: list[Group], labels: list[str]) -> list[str]:
    """One line per (type, metric, level) that some groups of that type have and others lack."""
    out = []
    for t in dict.fromkeys(g.type for g in groups):
        mine = [g for g in groups if g.type == t]
        have: dict[tuple, set] = {}
        for g in mine:
            have.setdefault((g.metric, g.level), set()).add(g.label)
        present = [lab for lab in labels if any(g.label == lab for g in mine)]
        for (metric, level), who in have.items():
            lacking = [lab for lab in present if lab not in who]
            if lacking:
                what = f"{metric} ({level})" if level else metric
                out.append(f"{t}: {what} is missing for {', '.join(lacking)}; those cells are left empty.")
    return out


def resolve_reference(labels: list[str], reference: str) -> str:
    """The group label ``--reference`` names: an exact label, or the one label with that name."""
    if reference in labels:
        return reference
    hits = [lab for lab in labels if base_name(lab) == reference]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise UserError(f"--reference {reference!r} matches {len(hits)} groups ({'; '.join(hits)}); pass one of them exactly.")
    raise UserError(f"--reference {reference!r} is not a group of these results; the groups are: {', '.join(labels)}.")


@dataclass
class Difference:
    """``label`` minus ``reference`` for one question, paired by (seed, repetition)."""

    label: str
    reference: str
    type: str
    condition: str | None
    layer: str
    reference_layer: str
    metric: str
    level: str | None
    diff: float | None
    lo: float | None
    hi: float | None
    pairs: int
    units: str | None  # what the bootstrap resampled within runs (anchor, query), None: runs only

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def paired_bootstrap(diffs: list[np.ndarray | None], values: list[float], n_boot: int, seed: int,
                     units_a: list[np.ndarray | None] | None = None, units_r: list[np.ndarray | None] | None = None) -> tuple[float, float] | None:
    """Seeded two-stage bootstrap 95 % interval (percentiles 2.5, 97.5) of a mean paired difference.

    ``values[s]``: the difference of pair ``s`` (S pairs). ``diffs[s]``: the per-unit differences
    of pair ``s`` when both runs were scored on the same units, else None; then ``units_a[s]`` and
    ``units_r[s]`` (the two runs' own per-unit values) are resampled independently when present,
    else the pair counts with its fixed value. With ``rng = numpy.random.default_rng(seed)``:
    first ``rng.integers(0, S, size=(n_boot, S))`` draws the runs of every replicate; then, for
    replicate ``b`` and each drawn pair ``s`` in order, ``rng.integers(0, n, size=n)`` draws its
    ``n`` units (twice, a then reference, for unpaired units); the replicate is the mean of the
    drawn pairs' mean differences. None when nothing varies (one pair without units, or n_boot 0).
    """
    S = len(values)
    units_a = units_a or [None] * S
    units_r = units_r or [None] * S
    if n_boot <= 0 or S == 0 or (S == 1 and diffs[0] is None and (units_a[0] is None or units_r[0] is None)):
        return None
    rng = np.random.default_rng(seed)
    runs = rng.integers(0, S, size=(n_boot, S))
    boot = np.empty(n_boot)
    for b in range(n_boot):
        total = 0.0
        for s in runs[b]:
            d = diffs[s]
            if d is not None:
                total += float(d[rng.integers(0, len(d), size=len(d))].mean())
            elif units_a[s] is not None and units_r[s] is not None:
                ua, ur = units_a[s], units_r[s]
                total += float(ua[rng.integers(0, len(ua), size=len(ua))].mean() - ur[rng.integers(0, len(ur), size=len(ur))].mean())
            else:
                total += values[s]
        boot[b] = total / S
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(lo), float(hi)


def difference(g: Group, ref: Group, n_boot: int = 1000, seed: int = 0) -> Difference:
    """Paired difference ``g - ref`` over their shared (seed, repetition) replicates, with its interval."""
    mine = {(s, r): i for i, (s, r) in reversed(list(enumerate(zip(g.seeds, g.repeats))))}
    theirs = {(s, r): i for i, (s, r) in reversed(list(enumerate(zip(ref.seeds, ref.repeats))))}
    shared = [k for k in dict.fromkeys(zip(g.seeds, g.repeats)) if k in theirs]
    out = Difference(g.label, ref.label, g.type, g.condition, g.layer, ref.layer, g.metric, g.level, None, None, None, len(shared), None)
    if not shared:
        return out
    values, diffs, ua, ur = [], [], [], []
    unit_kind = None
    for key in shared:
        i, j = mine[key], theirs[key]
        values.append(g.values[i] - ref.values[j])
        sa, sr = g.samples[i], ref.samples[j]
        a = decode_sample(sa) if sa else None
        r = decode_sample(sr) if sr else None
        if a is not None and r is not None:
            unit_kind = sa.get("unit")
        same_units = a is not None and r is not None and len(a) == len(r) and g.datasets[i] == ref.datasets[j] and sa.get("unit") == sr.get("unit")
        diffs.append(a - r if same_units else None)
        ua.append(a)
        ur.append(r)
    out.diff = float(np.mean(values))
    out.units = unit_kind
    ci = paired_bootstrap(diffs, values, n_boot, seed, ua, ur)
    if ci is not None:
        out.lo, out.hi = ci
    return out


def groups_at(agg: Aggregated, layer: str, layer_of: dict[str, str] | None = None) -> list[Group]:
    """The groups at ``layer``, where a group named in ``layer_of`` (label or name → layer) uses its own layer."""
    layer_of = layer_of or {}
    out = []
    for g in agg.groups:
        want = layer_of.get(g.label, layer_of.get(base_name(g.label), layer))
        if g.layer == want:
            out.append(g)
    return out


def differences(groups: list[Group], reference: str, n_boot: int = 1000, seed: int = 0, same_layer: bool = True) -> tuple[list[Difference], list[str]]:
    """Paired differences of every score group against the reference group of the same question.

    ``same_layer``: pair groups of the same layer (per-layer tables); False pairs the groups given
    (already one layer per label, as :func:`groups_at` selects) regardless of layer name.
    """
    ref_index = {}
    for g in groups:
        if g.label == reference:
            ref_index[(g.type, g.condition, g.layer if same_layer else None, g.metric, g.level)] = g
    out, no_pairs = [], []
    for g in groups:
        if g.label == reference or not is_score(g):
            continue
        ref = ref_index.get((g.type, g.condition, g.layer if same_layer else None, g.metric, g.level))
        if ref is None:
            continue
        d = difference(g, ref, n_boot, seed)
        if d.pairs == 0 and g.label not in no_pairs:
            no_pairs.append(g.label)
        out.append(d)
    notes = [f"{lab} and {reference} share no seed, so they have no paired difference (pairs need the same seed and repetition)." for lab in no_pairs]
    return out, notes
