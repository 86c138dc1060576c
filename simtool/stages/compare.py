"""``compare``: result records and embeddings of many runs → tables (Markdown, CSV, JSON) and figures.

Targets are results files, run directories, directories of runs (their records are grouped,
:mod:`simtool.compare.aggregate`) and embeddings files (``.safetensors``: RSA and CKA between
their models, :mod:`simtool.compare.similarity`). With ``reference``, every group gets its paired
difference to the reference group with a bootstrap interval. With ``out``: ``comparison.md``,
``comparison.csv`` (every record), ``comparison.json`` and the PNG figures
(:mod:`simtool.compare.plots`; the directory's names are :mod:`simtool.formats.comparison`).
Mismatched inputs are named in ``warnings`` (one line each) and the rest is still shown.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from simtool.compare.aggregate import SAMPLE_KEY, Aggregated, aggregate, collect, differences, groups_at, is_score, resolve_reference
from simtool.compare.similarity import collect_members, similarity, similarity_tables
from simtool.compare.tables import _row_label, _rows, markdown, records_csv, settings_table, tables
from simtool.errors import UserError
from simtool.formats import EMBEDDINGS, kind_of
from simtool.formats.comparison import CSV, JSON, MARKDOWN, SIMILARITY_FIGURE, bars_figure, layers_figure
from simtool.io import atomic_write_json, atomic_write_text


@dataclass
class Comparison:
    agg: Aggregated | None
    similarity: object = None
    differences: list = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)


def _default_layer(agg: Aggregated, type_: str) -> str | None:
    """The layer most groups of ``type_`` have (the later one on ties)."""
    per_label: dict[str, set] = {}
    order: list[str] = []
    for g in agg.groups:
        if g.type == type_ and is_score(g):
            per_label.setdefault(g.label, set()).add(g.layer)
            if g.layer not in order:
                order.append(g.layer)
    if not order:
        return None
    count = Counter(lay for layers in per_label.values() for lay in layers)
    best = max(count.values())
    return [lay for lay in order if count[lay] == best][-1]


def _column(metric: str, level: str | None, one_metric: bool) -> str:
    return metric if level is None else (level if one_metric else f"{metric} {level}")


def _figures(spec, agg: Aggregated | None, sim, out: Path) -> list[Path]:
    from simtool.compare import plots

    labels = list(agg.labels) if agg else []
    if sim is not None:
        labels += [lab for lab in sim.labels if lab not in labels]
    colors = plots.palette(labels)
    written: list[Path] = []
    if agg:
        for t in dict.fromkeys(g.type for g in agg.groups):
            mine = [g for g in agg.groups if g.type == t and is_score(g)]
            if not mine:
                continue
            cols = list(dict.fromkeys((g.metric, g.level) for g in mine))
            one_metric = len({m for m, _ in cols}) == 1
            ylabel = cols[0][0] if one_metric else "score"
            variants: dict[str, list] = {}
            for lab, cond in _rows(agg, mine):
                variants.setdefault(lab, []).append(cond)
            conds = {c for cs in variants.values() for c in cs}
            common = f" [{next(iter(conds))}]" if len(conds) == 1 and next(iter(conds)) else ""  # one condition: in the title, not the legend

            def series_for(groups, key, common=common, variants=variants):
                out_s = []
                for lab, cond in _rows(agg, groups):
                    s = plots.Series(lab if common else _row_label(lab, cond), colors[lab], variants[lab].index(cond))
                    for g in groups:
                        if (g.label, g.condition) == (lab, cond):
                            s.values[key(g)] = (g.mean, g.spread)
                    out_s.append(s)
                return out_s

            layer = spec.layer or _default_layer(agg, t)
            at = [g for g in groups_at(agg, layer, spec.layer_of) if g.type == t and is_score(g)]
            if at:
                mapped = {g.label: g.layer for g in at if g.layer != layer}
                where = layer + (f" ({', '.join(f'{k}: {v}' for k, v in mapped.items())})" if mapped else "")
                columns = [_column(m, lv, one_metric) for m, lv in cols if any((g.metric, g.level) == (m, lv) for g in at)]
                series = series_for(at, lambda g, one_metric=one_metric: _column(g.metric, g.level, one_metric))
                chance = {_column(g.metric, g.level, one_metric): g.chance for g in at if g.chance is not None}
                written.append(plots.bar_figure(bars_figure(out, t), f"{t}{common} at {where} (mean ± sd over runs; ± se for one run)",
                                                columns, series, ylabel, chance=chance))
            by_label: dict[str, list[str]] = {}
            for g in mine:  # the layer order of the model with most layers, then any others
                if g.layer not in by_label.setdefault(g.label, []):
                    by_label[g.label].append(g.layer)
            longest = max(by_label.values(), key=len)
            layers = list(dict.fromkeys(longest + [g.layer for g in mine]))
            if len(layers) > 1:
                panels, chance = [], {}
                for m, lv in cols:
                    sel = [g for g in mine if (g.metric, g.level) == (m, lv)]
                    panels.append((_column(m, lv, one_metric), series_for(sel, lambda g: g.layer)))
                    chances = {g.chance for g in sel if g.chance is not None}
                    if len(chances) == 1:
                        chance[panels[-1][0]] = chances.pop()
                written.append(plots.layer_figure(layers_figure(out, t), f"{t}{common}: {ylabel} per layer (mean ± sd over runs; ± se for one run)",
                                                  layers, panels, ylabel, chance=chance))
    if sim is not None and len(sim.labels) >= 2:
        where = f" at {sim.layer}" if sim.layer else ""
        written.append(plots.heatmap_figure(out / SIMILARITY_FIGURE,
                                            f"Representational similarity{where} ({sim.n_used} items; diagonal: between the runs of one model, "
                                            "– where a model has one run)", sim.labels,
                                            [("RSA (Spearman, cosine distances)", sim.rsa), ("linear CKA", sim.cka)]))
    return written


def compare(spec) -> tuple[list, Comparison, list[Path]]:
    """Returns (tables, comparison, written files)."""
    if spec.names and len(spec.names) != len(spec.targets):
        raise UserError(f"--name was given {len(spec.names)} time(s) for {len(spec.targets)} target(s); give one name per target, in order.")
    emb_idx = [i for i, t in enumerate(spec.targets) if kind_of(t) == EMBEDDINGS]
    res_idx = [i for i in range(len(spec.targets)) if i not in emb_idx]
    pick = lambda idx, xs: [xs[i] for i in idx] if xs else None  # noqa: E731
    agg = aggregate(collect(pick(res_idx, spec.targets), pick(res_idx, spec.names))) if res_idx else None
    result = Comparison(agg, warnings=list(agg.warnings) if agg else [])
    tabs: list = []
    reference = None
    if spec.reference:
        if agg is None:
            result.warnings.append("--reference needs evaluation results among the targets; no paired differences are shown.")
        else:
            reference = resolve_reference(agg.labels, spec.reference)
    if agg is not None:
        if reference:
            if spec.layer:
                result.differences, notes = differences(groups_at(agg, spec.layer, spec.layer_of), reference, spec.bootstrap, spec.seed, same_layer=False)
            else:
                result.differences, notes = differences(agg.groups, reference, spec.bootstrap, spec.seed)
            result.warnings += notes
        tabs = tables(agg, spec.layer, spec.layer_of, reference, result.differences, spec.bootstrap)
        st = settings_table(agg)
        if st is not None:
            tabs.append(st)
    if emb_idx:
        members, notes, layer = collect_members(pick(emb_idx, spec.targets), pick(emb_idx, spec.names), spec.layer, spec.layer_of)
        result.warnings += notes
        sim = similarity(members, spec.max_items, spec.seed, order=agg.labels if agg else None, layer=layer)
        if sim is None and members:
            result.warnings.append("RSA and CKA need at least two models in the embeddings files; none is shown.")
        if sim is not None:
            result.warnings += sim.warnings
            tabs += similarity_tables(sim, spec.max_items)
            result.similarity = sim
    written = []
    if spec.out:
        out = Path(spec.out)
        out.mkdir(parents=True, exist_ok=True)
        records = [{k: v for k, v in r.items() if k != SAMPLE_KEY} for r in agg.records] if agg else []
        atomic_write_text(out / MARKDOWN, markdown(tabs, result.warnings))
        written.append(out / MARKDOWN)
        if records:
            atomic_write_text(out / CSV, records_csv(records))
            written.append(out / CSV)
        if spec.figures:
            result.figures = _figures(spec, agg, result.similarity, out)
        atomic_write_json(out / JSON, {"spec": spec.to_dict(), "groups": [g.as_dict() for g in agg.groups] if agg else [],
                                       "differing_settings": agg.differing if agg else {}, "warnings": result.warnings,
                                       "differences": [d.as_dict() for d in result.differences],
                                       "similarity": result.similarity.as_dict() if result.similarity is not None else None,
                                       "figures": [p.name for p in result.figures], "records": records})
        written += [out / JSON, *result.figures]
    return tabs, result, written
