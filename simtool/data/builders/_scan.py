"""Small helpers for the builders' scanners: listing folders, frame numbers, ids, the SRC argument."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

from simtool.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}


def visible(path: Path) -> bool:
    return not path.name.startswith(".")


def subdirs(path: Path) -> list[Path]:
    try:
        return sorted((p for p in path.iterdir() if p.is_dir() and visible(p)), key=lambda p: p.name)
    except OSError:
        return []


def files_in(path: Path) -> list[Path]:
    try:
        return sorted((p for p in path.iterdir() if p.is_file() and visible(p)), key=lambda p: p.name)
    except OSError:
        return []


def files_below(path: Path) -> list[Path]:
    """Every visible regular file below ``path`` (hidden folders skipped), sorted by relative path."""
    out = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / f for f in filenames if not f.startswith("."))
    return sorted(out, key=lambda p: p.relative_to(path).as_posix())


_NUMBER = re.compile(r"(\d+)")


def frame_number(name: str) -> int:
    """The frame number in a file name (the last run of digits of its stem), -1 when there is none."""
    found = _NUMBER.findall(Path(name).stem)
    return int(found[-1]) if found else -1


def natural_ids(ids: Iterable[str]) -> list[str]:
    """Unique ids, numerically sorted when every id is an integer, else lexically."""
    ids = sorted(set(ids))
    if ids and all(re.fullmatch(r"-?\d+", i) for i in ids):
        return sorted(ids, key=int)
    return ids


def require_source(spec, expected: str) -> Path:
    """``spec.source`` as an existing directory, else one sentence saying what was expected."""
    if not spec.source:
        raise UserError(f"--format {spec.format} reads SRC, {expected}; pass it as the argument after the options.")
    src = Path(spec.source)
    if not src.exists():
        raise UserError(f"The source {src} does not exist; --format {spec.format} expects {expected}.")
    if not src.is_dir():
        raise UserError(f"The source {src} is not a folder; --format {spec.format} expects {expected}.")
    return src
