"""Tables from aggregated groups: (title, header, rows) triples, rendered as Markdown, CSV or Rich."""

from __future__ import annotations

import csv
import io

from simtool.compare.aggregate import Aggregated, Group
from simtool.errors import UserError

Table = tuple[str, list[str], list[list[str]]]


def cell(g: Group | None, digits: int = 3) -> str:
    if g is None or g.mean is None:
        return "–"
    spread = g.spread
    if float(g.mean).is_integer() and not spread:
        return f"{g.mean:.0f}"
    return f"{g.mean:.{digits}f} ± {spread:.{digits}f}" if spread is not None else f"{g.mean:.{digits}f}"


def _row_label(label: str, condition: str | None) -> str:
    return f"{label} [{condition}]" if condition else label


def _rows(agg: Aggregated, groups: list[Group]) -> list[tuple[str, str | None]]:
    order = {lab: i for i, lab in enumerate(agg.labels)}
    keys = dict.fromkeys((g.label, g.condition) for g in groups)
    return sorted(keys, key=lambda k: (order[k[0]], str(k[1])))


def tables(agg: Aggregated, layer: str | None) -> list[Table]:
    """With ``layer``: per type, groups × levels (with n) and groups × level-less metrics.
    Without: per type, metric and level, groups × layers."""
    out: list[Table] = []
    types = list(dict.fromkeys(g.type for g in agg.groups))
    if layer:
        sel = [g for g in agg.groups if g.layer == layer]
        if not sel:
            layers = sorted({g.layer for g in agg.groups})
            raise UserError(f"No result has layer {layer!r}; available layers: {', '.join(layers)}.")
        for t in types:
            mine = [g for g in sel if g.type == t]
            leveled = list(dict.fromkeys((g.metric, g.level) for g in mine if g.level is not None))
            plain = list(dict.fromkeys(g.metric for g in mine if g.level is None))
            index = {(g.label, g.condition, g.metric, g.level): g for g in mine}
            rows_keys = _rows(agg, mine)
            if leveled:
                metrics = {m for m, _ in leveled}
                header = ["model"] + [lv if len(metrics) == 1 else f"{m} {lv}" for m, lv in leveled] + ["n"]
                rows = []
                for lab, cond in rows_keys:
                    cells = [index.get((lab, cond, m, lv)) for m, lv in leveled]
                    if all(c is None for c in cells):
                        continue
                    n = max((c.n for c in cells if c is not None), default=0)
                    rows.append([_row_label(lab, cond)] + [cell(c) for c in cells] + [str(n)])
                title_metric = next(iter(metrics)) if len(metrics) == 1 else "metrics"
                out.append((f"{t} {title_metric} at {layer} (mean ± sd over runs; ± se for a single run)", header, rows))
            if plain:
                header = ["model"] + plain
                rows = [[_row_label(lab, cond)] + [cell(index.get((lab, cond, m, None)), 2) for m in plain] for lab, cond in rows_keys]
                out.append((f"{t} representation at {layer}", header, rows))
        return out
    for t in types:
        mine = [g for g in agg.groups if g.type == t and g.level is not None]
        layers = list(dict.fromkeys(g.layer for g in mine))
        index = {(g.label, g.condition, g.metric, g.level, g.layer): g for g in mine}
        for metric, level in dict.fromkeys((g.metric, g.level) for g in mine):
            rows = []
            for lab, cond in _rows(agg, [g for g in mine if g.metric == metric and g.level == level]):
                rows.append([_row_label(lab, cond)] + [cell(index.get((lab, cond, metric, level, lay))) for lay in layers])
            out.append((f"{t}: {level} {metric} per layer", ["model"] + layers, rows))
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
