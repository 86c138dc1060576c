"""The comparison directory that ``compare --out DIR`` writes.

* ``comparison.md``: the tables and notes, as Markdown;
* ``comparison.csv``: every record that went into them (one row per record);
* ``comparison.json``: the spec, the groups (mean, sd, n), differences, similarity, notes, records;
* figures (PNG): ``bars-<type>.png`` (scores at one layer), ``layers-<type>.png`` (scores per
  layer), ``similarity.png`` (RSA and linear CKA between models).
"""

from __future__ import annotations

from pathlib import Path

MARKDOWN = "comparison.md"
CSV = "comparison.csv"
JSON = "comparison.json"
SIMILARITY_FIGURE = "similarity.png"


def bars_figure(out: Path, type_: str) -> Path:
    return Path(out) / f"bars-{type_}.png"


def layers_figure(out: Path, type_: str) -> Path:
    return Path(out) / f"layers-{type_}.png"
