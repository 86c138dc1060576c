"""``compare``: result records of many runs → tables (Markdown, CSV of every record, JSON)."""

from __future__ import annotations

from pathlib import Path

from simtool.compare.aggregate import aggregate, collect
from simtool.compare.tables import markdown, records_csv, settings_table, tables
from simtool.io import atomic_write_json, atomic_write_text

MARKDOWN, CSV, JSON = "comparison.md", "comparison.csv", "comparison.json"


def compare(spec) -> tuple[list, object, list[Path]]:
    """Returns (tables, aggregated, written files)."""
    agg = aggregate(collect(spec.targets, spec.names))
    tabs = tables(agg, spec.layer)
    st = settings_table(agg)
    if st is not None:
        tabs.append(st)
    written = []
    if spec.out:
        out = Path(spec.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / MARKDOWN, markdown(tabs, agg.warnings))
        atomic_write_text(out / CSV, records_csv(agg.records))
        atomic_write_json(out / JSON, {"spec": spec.to_dict(), "groups": [g.as_dict() for g in agg.groups],
                                       "differing_settings": agg.differing, "warnings": agg.warnings, "records": agg.records})
        written = [out / MARKDOWN, out / CSV, out / JSON]
    return tabs, agg, written
