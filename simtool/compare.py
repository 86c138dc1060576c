"""``simtool compare``: tables across evaluation results (Markdown, CSV and JSON)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from simtool.errors import UserError
from simtool.io import atomic_write_json, atomic_write_text, read_json
from simtool.metrics.odd_one_out import LEVELS
from simtool.specs.evaluate import CompareSpec


def _result_files(target: Path) -> list[Path]:
    if target.is_dir():
        files = sorted(target.glob("eval-*.json"))
        if not files:
            raise UserError(f"{target} holds no evaluation results (eval-*.json); run simtool evaluate on it first.")
        return files
    if target.is_file():
        return [target]
    raise UserError(f"The compare target {target} does not exist; pass results JSON files or run directories.")


def collect(targets: list[str]) -> list[dict]:
    """Flatten results into long-format records: one per (entry, layer, level)."""
    records = []
    for t in targets:
        for f in _result_files(Path(t)):
            try:
                res = read_json(f)
            except ValueError as exc:
                raise UserError(f"{f} is not valid JSON; pass a results file written by simtool evaluate.") from exc
            if res.get("kind") != "evaluation":
                raise UserError(f"{f} is not a simtool evaluation result; pass files written by simtool evaluate.")
            for m in res["models"]:
                entry = f"{m['preset'] or m['name']} [rooms: {Path(str(m['rooms'])).stem}]"
                for layer, lr in m["layers"].items():
                    for level in LEVELS:
                        if level in lr:
                            records.append({"entry": entry, "model": m["name"], "source": str(f), "layer": layer, "level": level,
                                            "accuracy": lr[level]["accuracy"], "stderr": lr[level].get("stderr"), "n_triplets": lr[level].get("n_triplets")})
    if not records:
        raise UserError("No odd-one-out results were found in the targets; run simtool evaluate first.")
    return records


def _fmt(acc, stderr=None) -> str:
    if acc is None:
        return "–"
    return f"{acc:.3f} ± {stderr:.3f}" if stderr is not None else f"{acc:.3f}"


def tables(records: list[dict], layer: str | None) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) tables. With ``layer``: entries × levels; without: one entries × layers table per level."""
    entries = list(dict.fromkeys(r["entry"] for r in records))
    out = []
    if layer:
        sel = [r for r in records if r["layer"] == layer]
        if not sel:
            layers = sorted({r["layer"] for r in records})
            raise UserError(f"No result has layer {layer!r}; available layers: {', '.join(layers)}.")
        header = ["model"] + list(LEVELS)
        rows = []
        for e in entries:
            cells = {r["level"]: _fmt(r["accuracy"], r.get("stderr")) for r in sel if r["entry"] == e}
            if cells:
                rows.append([e] + [cells.get(level, "–") for level in LEVELS])
        out.append((f"Odd-one-out accuracy at {layer}", header, rows))
        return out
    layers = list(dict.fromkeys(r["layer"] for r in records))
    for level in LEVELS:
        header = ["model"] + layers
        rows = []
        for e in entries:
            cells = {r["layer"]: _fmt(r["accuracy"]) for r in records if r["entry"] == e and r["level"] == level}
            rows.append([e] + [cells.get(lay, "–") for lay in layers])
        out.append((f"{level} odd-one-out accuracy", header, rows))
    return out


def markdown(tabs) -> str:
    parts = []
    for title, header, rows in tabs:
        parts.append(f"### {title}\n")
        parts.append("| " + " | ".join(header) + " |")
        parts.append("|" + "|".join(["---"] * len(header)) + "|")
        parts += ["| " + " | ".join(r) + " |" for r in rows]
        parts.append("")
    return "\n".join(parts)


def compare(spec: CompareSpec) -> tuple[list, list[dict], Path | None]:
    records = collect(spec.targets)
    tabs = tables(records, spec.layer)
    out = Path(spec.out) if spec.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "comparison.md", markdown(tabs))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
        atomic_write_text(out / "comparison.csv", buf.getvalue())
        atomic_write_json(out / "comparison.json", {"spec": spec.to_dict(), "records": records})
    return tabs, records, out
