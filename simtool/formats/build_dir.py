"""The build work directory ``OUT.build``: what an unfinished ``build-data`` of image files keeps.

Layout (written by :mod:`simtool.data.builders.parts`, read back to resume or merge)::

    OUT.build/
      build.json               the manifest: the build key (what must match to reuse the parts),
                               the resolved spec, the simtool version, when it started
      scan.json                what the scan found besides the plan: kind, name, reader, info,
                               extras, rejected source files, skipped counts
      plan.parquet             one row per image to read, in store order (key, member, group,
                               partition and the builder's own columns)
      extra-<name>.parquet     further tables of the scan (e.g. the triplets)
      parts/part-NNNNNN/       a finished part: images.h5 (its images) and status.parquet (row,
                               ok, local index, reason); written under a temporary name and
                               renamed when complete

The work directory is deleted when the dataset directory ``OUT`` is complete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from simtool import __version__
from simtool.formats.dataset_dir import IMAGES
from simtool.io import atomic_path, atomic_write_json, canonical_hash

WORK_SUFFIX = ".build"
MANIFEST = "build.json"
SCAN = "scan.json"
PLAN = "plan.parquet"
PARTS = "parts"
STATUS = "status.parquet"


@dataclass
class Scan:
    """What a scanner found: the plan (one row per image to read, in store order) and the rest.

    ``plan`` needs the columns ``key`` (string: file path relative to the reader's root, or an
    HDF5 dataset path), ``member`` (int64: element of that HDF5 dataset, -1 for files), ``group``
    (int64: rows of one group, e.g. an object's frames, stay in one part; groups are contiguous)
    and ``partition`` (string); builders add their own columns. ``path`` (string), when present,
    names a row in ``rejected.txt`` (else ``key``).
    """

    kind: str
    name: str
    reader: tuple[str, str]
    plan: pa.Table
    info: dict = field(default_factory=dict)
    extras: dict[str, pa.Table] = field(default_factory=dict)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)


def work_dir(out: Path) -> Path:
    """The work directory of the dataset directory ``out``."""
    out = Path(out)
    return out.parent / (out.name + WORK_SUFFIX)


def build_key(spec) -> str:
    """What must match for a re-run to reuse a build's finished parts (everything but how it runs)."""
    d = spec.to_dict()
    d.pop("workers", None)
    d["source"] = str(Path(d["source"]).resolve()) if d.get("source") else None
    d["out"] = str(Path(d["out"]).resolve())
    return canonical_hash({"spec": d, "simtool": __version__}, 32)


def build_lock(out: Path, shard: tuple[int, int] | None = None):
    """The lock of a build of ``out``: ``OUT.lock`` (one process builds or merges it); a shard
    ``--shard i/n`` takes ``OUT.build/shard-i-of-n.lock`` instead, so the shards of one build run at
    once (each part is renamed into place when complete)."""
    from simtool.locks import OwnerLock, beside

    if shard is not None:
        return OwnerLock(work_dir(out) / f"shard-{shard[0]}-of-{shard[1]}.lock", f"Shard {shard[0]}/{shard[1]} of the build of {out}",
                         busy="wait for it to finish or stop it (Ctrl-C)")
    return OwnerLock(beside(out), f"The dataset directory {out}", busy="it is being built: wait for it to finish or stop it (Ctrl-C), or choose another --out")


def read_manifest_key(work: Path) -> tuple[bool, str | None]:
    """``(whether a manifest exists, its build key or None when unreadable)``."""
    path = work / MANIFEST
    if not path.is_file():
        return False, None
    try:
        return True, json.loads(path.read_text(encoding="utf-8")).get("key")
    except ValueError:
        return True, None


def write_manifest(work: Path, key: str, spec: dict, started: str) -> None:
    atomic_write_json(work / MANIFEST, {"key": key, "spec": spec, "simtool": __version__, "started": started})


def save_scan(work: Path, scan: Scan) -> None:
    for name, table in scan.extras.items():
        write_parquet(work / f"extra-{name}.parquet", table)
    write_parquet(work / PLAN, scan.plan)
    atomic_write_json(work / SCAN, {"kind": scan.kind, "name": scan.name, "reader": list(scan.reader), "info": scan.info,
                                    "extras": sorted(scan.extras), "rejected": scan.rejected, "skipped": scan.skipped})


def load_scan(work: Path) -> Scan | None:
    """The saved scan, or None when there is none (or it cannot be read)."""
    try:
        meta = json.loads((work / SCAN).read_text(encoding="utf-8"))
        plan = pq.read_table(work / PLAN)
        extras = {name: pq.read_table(work / f"extra-{name}.parquet") for name in meta["extras"]}
    except (OSError, ValueError, KeyError, pa.ArrowException):
        return None
    return Scan(kind=meta["kind"], name=meta["name"], reader=tuple(meta["reader"]), plan=plan, info=meta["info"], extras=extras,
                rejected=[tuple(r) for r in meta["rejected"]], skipped=meta["skipped"])


def write_parquet(path: Path, table: pa.Table) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def parts_dir(work: Path) -> Path:
    return work / PARTS


def part_dir(work: Path, k: int) -> Path:
    return work / PARTS / f"part-{k:06d}"


def part_done(work: Path, k: int) -> bool:
    d = part_dir(work, k)
    return (d / STATUS).is_file() and (d / IMAGES).is_file()


def finished_parts(work: Path) -> int:
    """How many parts are finished (temporary folders of parts in progress are not counted)."""
    parts = work / PARTS
    return len([p for p in parts.iterdir() if not p.name.startswith(".")]) if parts.is_dir() else 0
