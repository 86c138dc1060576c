"""Tables from aggregated groups: (title, header, rows) triples, rendered as Markdown, CSV or Rich."""

from __future__ import annotations

import csv
import io

from simtool.compare.aggregate import Aggregated, Difference, Group, groups_at, is_score
from simtool.errors import UserError

Table = tuple[str, list[str], list[list[str]]]


def cell(g: Group | None, digits: int = 3) -> str:
    if g is None or g.mean is None:
        return "–"
    spread = g.spread
    # counts (records of role "count", e.g. a dimension) print as integers; a score or a fraction
    # that happens to be 0 or 1 keeps its decimals
    if float(g.mean).is_integer() and not spread and g.role == "count":
        return f"{g.mean:.0f}"
    return f"{g.mean:.{digits}f} ± {spread:.{digits}f}" if spread is not None else f"{g.mean:.{digits}f}"


def diff_cell(d: Difference | None, digits: int = 3) -> str:
    """``+0.179 [+0.150, +0.205]``: the paired difference and its bootstrap 95 % interval."""
    if d is None or d.diff is None:
        return "–"
    if d.lo is None:
        return f"{d.diff:+.{digits}f}"
    return f"{d.diff:+.{digits}f} [{d.lo:+.{digits}f}, {d.hi:+.{digits}f}]"


def _row_label(label: str, condition: str | None) -> str:
    return f"{label} [{condition}]" if condition else label


def _rows(agg: Aggregated, groups: list[Group]) -> list[tuple[str, str | None]]:
    order = {lab: i for i, lab in enumerate(agg.labels)}
    keys = dict.fromkeys((g.label, g.condition) for g in groups)
    return sorted(keys, key=lambda k: (order[k[0]], str(k[1])))


def _mapped(layer: str, layer_of: dict[str, str] | None, present: set[str]) -> str:
    shown = {k: v for k, v in (layer_of or {}).items() if k in present or any(p.split(" (", 1)[0] == k for p in present)}
    return f"{layer} ({', '.join(f'{k}: {v}' for k, v in shown.items())})" if shown else layer


def diff_note(reference: str, n_boot: int) -> str:
    return (f"Δ: paired difference to {reference} over shared seeds, [bootstrap 95 % interval: {n_boot} resamples of the runs, "
            "then of the anchors or queries within each run]")


def tables(agg: Aggregated, layer: str | None, layer_of: dict[str, str] | None = None, reference: str | None = None,
           diffs: list[Difference] | None = None, n_boot: int = 1000) -> list[Table]:
    """With ``layer``: per type, groups × score columns (levels, or metrics) with n, and groups ×
    representation statistics. Without: per type, metric and level, groups × layers.

    ``layer_of`` gives some groups (label or name → layer) their own layer in the ``layer`` view;
    with ``reference`` and ``diffs`` (:func:`~simtool.compare.aggregate.differences`) every score
    column is followed by its paired difference to the reference (``Δ``), or (per-layer view) a
    Δ table follows every per-layer table."""
    out: list[Table] = []
    types = list(dict.fromkeys(g.type for g in agg.groups))
    diffs = diffs or []
    if layer:
        sel = groups_at(agg, layer, layer_of)
        if not sel:
            layers = sorted({g.layer for g in agg.groups})
            raise UserError(f"No result has layer {layer!r}; available layers: {', '.join(layers)}.")
        dindex = {(d.label, d.condition, d.metric, d.level): d for d in diffs}
        for t in types:
            mine = [g for g in sel if g.type == t]
            if not mine:
                continue
            where = _mapped(layer, layer_of, {g.label for g in mine})
            scores = list(dict.fromkeys((g.metric, g.level) for g in mine if is_score(g)))
            plain = list(dict.fromkeys(g.metric for g in mine if not is_score(g)))
            index = {(g.label, g.condition, g.metric, g.level): g for g in mine}
            rows_keys = _rows(agg, mine)
            if scores:
                leveled = {m for m, lv in scores if lv is not None}
                one_metric = len({m for m, _ in scores}) == 1

                def head(m, lv, one_metric=one_metric):
                    return m if lv is None else (lv if one_metric else f"{m} {lv}")

                header = ["model"]
                for m, lv in scores:
                    header.append(head(m, lv))
                    if reference:
                        header.append(f"Δ {head(m, lv)}")
                header.append("n")
                rows = []
                for lab, cond in rows_keys:
                    cells = [index.get((lab, cond, m, lv)) for m, lv in scores]
                    if all(c is None for c in cells):
                        continue
                    n = max((c.n for c in cells if c is not None), default=0)
                    row = [_row_label(lab, cond)]
                    for (m, lv), c in zip(scores, cells):
                        row.append(cell(c))
                        if reference:
                            row.append("ref" if lab == reference else diff_cell(dindex.get((lab, cond, m, lv))))
                    rows.append(row + [str(n)])
                metrics = {m for m, _ in scores}
                title_metric = next(iter(metrics)) if len(metrics) == 1 and leveled else "metrics"
                title = f"{t} {title_metric} at {where} (mean ± sd over runs; ± se for a single run)"
                if reference:
                    title += "; " + diff_note(reference, n_boot)
                out.append((title, header, rows))
            if plain:
                header = ["model"] + plain
                rows = [[_row_label(lab, cond)] + [cell(index.get((lab, cond, m, None)), 2) for m in plain] for lab, cond in rows_keys
                        if any(index.get((lab, cond, m, None)) for m in plain)]
                out.append((f"{t} representation at {where}", header, rows))
        return out
    dindex = {(d.label, d.condition, d.metric, d.level, d.layer): d for d in diffs}
    for t in types:
        mine = [g for g in agg.groups if g.type == t and is_score(g)]
        layers = list(dict.fromkeys(g.layer for g in mine))
        index = {(g.label, g.condition, g.metric, g.level, g.layer): g for g in mine}
        if mine and all(g.level is None for g in mine):  # metrics without levels (classes): one model × metric table, a row per layer
            metrics = list(dict.fromkeys(g.metric for g in mine))
            keys = _rows(agg, mine)
            rows, drows = [], []
            for lab, cond in keys:
                for lay in layers:
                    cells = [index.get((lab, cond, m, None, lay)) for m in metrics]
                    if all(c is None for c in cells):
                        continue
                    rows.append([_row_label(lab, cond), lay] + [cell(c) for c in cells] + [str(max(c.n for c in cells if c is not None))])
                    if reference and lab != reference:
                        drows.append([_row_label(lab, cond), lay] + [diff_cell(dindex.get((lab, cond, m, None, lay))) for m in metrics])
            out.append((f"{t} per layer (mean ± sd over runs; ± se for a single run)", ["model", "layer", *metrics, "n"], rows))
            if drows:
                out.append((f"{t}: Δ per layer; {diff_note(reference, n_boot)}", ["model", "layer", *metrics], drows))
            continue
        for metric, level in dict.fromkeys((g.metric, g.level) for g in mine):
            keys = _rows(agg, [g for g in mine if g.metric == metric and g.level == level])
            rows = [[_row_label(lab, cond)] + [cell(index.get((lab, cond, metric, level, lay))) for lay in layers] for lab, cond in keys]
            what = f"{level} {metric}" if level else metric
            out.append((f"{t}: {what} per layer", ["model"] + layers, rows))
            if reference:
                drows = [[_row_label(lab, cond)] + [diff_cell(dindex.get((lab, cond, metric, level, lay))) for lay in layers]
                         for lab, cond in keys if lab != reference]
                if drows:
                    out.append((f"{t}: Δ {what} per layer; {diff_note(reference, n_boot)}", ["model"] + layers, drows))
    return out


def settings_table(agg: Aggregated) -> Table | None:
    if not agg.differing:
        return None
    keys = list(next(iter(agg.differing.values())))
    rows = [[lab] + [agg.differing[lab][k] for k in keys] for lab in agg.labels]
    return ("Settings that differ between groups", ["model"] + keys, rows)


def markdown(tabs: list[Table], warnings: list[str] = ()) -> str:
    parts = []
    for w in warnings:
        parts.append(f"> **Note:** {w}\n")
    for title, header, rows in tabs:
        parts.append(f"### {title}\n")
        parts.append("| " + " | ".join(h.replace("|", "\\|") for h in header) + " |")
        parts.append("|" + "|".join(["---"] * len(header)) + "|")
        parts += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
        parts.append("")
    return "\n".join(parts)


def records_csv(records: list[dict]) -> str:
    fields = list(dict.fromkeys(k for r in records for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue()
