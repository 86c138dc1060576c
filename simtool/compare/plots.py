"""Figures of a comparison (PNG, matplotlib's Agg canvas; no display, no pyplot state).

* :func:`bar_figure` - per evaluation type, bars with error bars (sd over runs; se for one run):
  groups of bars per level (odd-one-out) or per metric (classes), one bar per model.
* :func:`layer_figure` - one panel per level or metric, the score against the layer, one line
  per model (error bars as above).
* :func:`heatmap_figure` - the RSA and CKA matrices of the compared embeddings, annotated.

A model keeps its colour in every figure of one comparison (:func:`palette`, by the order of the
groups); evaluation conditions of one model (e.g. two room assignments) share its colour and
differ by hatch (bars) or line style (curves).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simtool.io import atomic_path

HATCHES = ("", "//", "..", "xx", "\\\\", "++")
STYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


@dataclass
class Series:
    label: str  # what the legend shows
    color: tuple
    variant: int = 0  # condition index within the model: hatch / line style
    values: dict = field(default_factory=dict)  # column (or layer) -> (mean, error or None)


def palette(labels: list[str]) -> dict[str, tuple]:
    """A fixed colour per group label, in order (tab10, then tab20 for more than ten)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {lab: tuple(cmap(i % cmap.N)) for i, lab in enumerate(labels)}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=150)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight", dpi=150)
    return path


def _unit_range(values) -> bool:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return bool(finite) and min(finite) >= 0 and max(finite) <= 1


def bar_figure(path: Path, title: str, columns: list[str], series: list[Series], ylabel: str = "score",
               chance: dict[str, float] | None = None) -> Path:
    """Grouped bars, one group per column; ``chance``: column -> the score at chance (a dashed line over its group)."""
    n_s, n_c = max(1, len(series)), max(1, len(columns))
    width = max(6.0, 1.5 + n_c * (0.35 * n_s + 0.5))
    fig = _figure(width, 4.6)
    ax = fig.add_subplot(1, 1, 1)
    bw = 0.8 / n_s
    x = np.arange(n_c)
    tops = []
    for i, s in enumerate(series):
        means = [s.values.get(c, (None, None))[0] for c in columns]
        errs = [s.values.get(c, (None, None))[1] for c in columns]
        m = np.array([np.nan if v is None else v for v in means], dtype=float)
        e = np.array([0.0 if v is None else v for v in errs], dtype=float)
        pos = x - 0.4 + bw * (i + 0.5)
        ax.bar(pos, np.nan_to_num(m), bw * 0.92, yerr=np.where(np.isnan(m), 0, e), capsize=2.5, color=s.color,
               hatch=HATCHES[s.variant % len(HATCHES)], edgecolor="white" if s.variant == 0 else "black", linewidth=0.6,
               label=s.label, error_kw={"elinewidth": 0.9, "ecolor": "0.2"})
        tops += [v + (0.0 if math.isnan(err) else err) for v, err in zip(m, e) if not math.isnan(v)]
    drawn = False
    for c, value in (chance or {}).items():
        if c in columns:
            k = columns.index(c)
            ax.hlines(value, k - 0.46, k + 0.46, colors="0.35", linestyles="--", linewidth=1, label=None if drawn else "chance")
            drawn = True
    ax.set_xticks(x)
    ax.set_xticklabels(columns, rotation=0 if max((len(c) for c in columns), default=0) * n_c < 60 else 25,
                       ha="center" if max((len(c) for c in columns), default=0) * n_c < 60 else "right")
    ax.set_ylabel(ylabel)
    values = [v for s in series for v, _ in s.values.values()]
    if _unit_range(values):
        ax.set_ylim(0, min(1.0, max(tops + list((chance or {}).values()) + [0]) * 1.08 + 0.02))
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _save(fig, path)


def layer_figure(path: Path, title: str, layers: list[str], panels: list[tuple[str, list[Series]]], ylabel: str = "score",
                 chance: dict[str, float] | None = None) -> Path:
    """One panel per (metric, level) with a curve per series over the layers; ``chance``: panel name ->
    the score at chance (a dashed line). Panels of scores in [0, 1] share one y-range, at most 1."""
    n = max(1, len(panels))
    cols = min(3, n)
    rows = math.ceil(n / cols)
    longest = max((len(x) for x in layers), default=4)
    fig = _figure(0.6 + 4.3 * cols, 0.9 + (3.0 + 0.05 * longest) * rows)
    xpos = {lay: i for i, lay in enumerate(layers)}
    handles = {}
    everything = [v[0] for _, series in panels for s in series for v in s.values.values()]
    unit = _unit_range(everything)
    low = min([v for v in everything if v is not None] + list((chance or {}).values()) + [1.0]) if unit else None
    for k, (name, series) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, k + 1)
        for i, s in enumerate(series):
            pts = [(xpos[lay], v[0], v[1]) for lay, v in s.values.items() if lay in xpos and v[0] is not None]
            if not pts:
                continue
            pts.sort()
            xs, ys, es = zip(*pts)
            h = ax.errorbar(xs, ys, yerr=[0.0 if e is None else e for e in es], color=s.color, linestyle=STYLES[s.variant % len(STYLES)],
                            marker=MARKERS[i % len(MARKERS)], markersize=4, capsize=2.5, linewidth=1.4, label=s.label, clip_on=False)
            handles.setdefault(s.label, h)
        if (chance or {}).get(name) is not None:
            handles.setdefault("chance", ax.axhline(chance[name], color="0.35", linestyle="--", linewidth=1, label="chance"))
        ax.set_xticks(range(len(layers)))
        ax.set_xticklabels(layers, rotation=35, ha="right", fontsize=8)
        ax.set_title(name, fontsize=10)
        ax.set_ylabel(ylabel if k % cols == 0 else "")
        ax.grid(alpha=0.3)
        if unit:  # the same range in every panel, never above 1
            ax.set_ylim(max(0.0, low - 0.05), 1.0)
    fig.suptitle(title, fontsize=11)
    fig.legend(list(handles.values()), list(handles), loc="upper left", bbox_to_anchor=(1.0, 0.93), fontsize=8, frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def heatmap_figure(path: Path, title: str, labels: list[str], matrices: list[tuple[str, np.ndarray]]) -> Path:
    g = len(labels)
    side = max(3.2, 0.75 * g + 1.6)
    fig = _figure(side * len(matrices) + 0.8, side + 0.6)
    for k, (name, mat) in enumerate(matrices):
        ax = fig.add_subplot(1, len(matrices), k + 1)
        finite = mat[np.isfinite(mat)]
        vmin = min(0.0, float(finite.min())) if finite.size else 0.0
        im = ax.imshow(np.where(np.isfinite(mat), mat, np.nan), vmin=vmin, vmax=1.0, cmap="viridis")
        for a in range(g):
            for b in range(g):
                v = mat[a, b]
                text = "–" if not np.isfinite(v) else f"{v:.2f}"
                shade = (v - vmin) / (1.0 - vmin) if np.isfinite(v) and vmin < 1.0 else 0.0
                ax.text(b, a, text, ha="center", va="center", fontsize=8, color="black" if shade > 0.6 else "white")
        ax.set_xticks(range(g))
        ax.set_yticks(range(g))
        ax.set_xticklabels(labels, rotation=40, ha="right", fontsize=8)
        ax.set_yticklabels(labels if k == 0 else [""] * g, fontsize=8)
        ax.set_title(name, fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)
