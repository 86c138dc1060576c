"""The resumable, parallel, sharded build of a dataset from image files (every image builder runs on it).

A builder supplies two functions. ``scan(spec, ctx) -> Scan`` lists what to read (the *plan*: one
row per image, in the order the images will be stored) and everything else the dataset needs
(labels, splits, triplets), without decoding any image. ``finalize(spec, scan, ok, index, tmp)``
turns the plan, which images survived (``ok``) and where they landed in ``images.h5`` (``index``)
into the index tables and card fields. :func:`run_image_build` does the rest:

* The plan is cut into **parts** of about ``part_size`` images (a group -- an object's video --
  never straddles two parts, nor does a partition). Each part is decoded, resized and re-encoded
  by ``workers`` processes and written to ``OUT.build/parts/part-NNNNNN/`` (its own image store
  and a status table) under a temporary name, renamed when complete. Memory stays flat: the main
  process appends each finished image to the part's spool as it arrives, in plan order, so the
  bytes are the same whatever the number of workers.
* **Resumable**: a re-run with the same options finds the scan and the finished parts in
  ``OUT.build`` and skips them; a part interrupted half-way left only a temporary folder.
* **Sharded**: ``--shard i/n`` builds only the parts of shard ``i`` (by partition when there are
  at least ``n`` partitions, else by part number) and stops; ``--merge`` (or a plain run, which
  first builds whatever is missing) merges every part into ``OUT`` and deletes ``OUT.build``.
* Files that cannot be read or decoded are skipped, counted and listed in ``rejected.txt``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from simtool import __version__
from simtool.data.builders._parallel import ordered_map, resolve_workers
from simtool.data.builders._prepare import process_batch
from simtool.errors import UserError
from simtool.formats.build_dir import (
    STATUS,
    Scan,
    build_key,
    finished_parts,
    load_scan,
    part_dir,
    part_done,
    read_manifest_key,
    save_scan,
    work_dir,
    write_manifest,
)
from simtool.formats.dataset_dir import IMAGES, REJECTED, codes, new_dataset_dir, write_rejected, write_tables
from simtool.formats.image_store import ImageSpool, merge_stores
from simtool.signals import StopRequest

BATCH = 16  # images per task sent to a worker

__all__ = ["BuildContext", "Scan", "cut_parts", "plan_table", "run_image_build", "work_dir"]


@dataclass
class BuildContext:
    """How to run a build (not part of its content): shard, merge-only, where messages go."""

    shard: tuple[int, int] | None = None
    merge_only: bool = False
    warn: Callable[[str], None] | None = None

    def say(self, text: str) -> None:
        if self.warn is not None:
            self.warn(text)


def cut_parts(group: np.ndarray, partition_codes: np.ndarray, part_size: int) -> list[tuple[int, int]]:
    """Contiguous row ranges of about ``part_size`` rows that never split a group or a partition."""
    n = len(group)
    if n == 0:
        return []
    change = np.flatnonzero((group[1:] != group[:-1]) | (partition_codes[1:] != partition_codes[:-1])) + 1
    starts = np.concatenate([[0], change])
    part_change = set((np.flatnonzero(partition_codes[1:] != partition_codes[:-1]) + 1).tolist())
    parts, begin = [], 0
    for s in starts[1:]:
        s = int(s)
        if s in part_change or s - begin >= part_size:
            parts.append((begin, s))
            begin = s
    parts.append((begin, n))
    return parts


class _PartWriter:
    """One part being built: a temporary folder with a spool; renamed into place when complete."""

    def __init__(self, work: Path, k: int, start: int, stop: int):
        self.k, self.start, self.stop = k, start, stop
        self.final = part_dir(work, k)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.", suffix=".tmp", dir=self.final.parent))
        self.spool = ImageSpool(self.tmp / ".images.raw")
        n = stop - start
        self.ok = np.zeros(n, dtype=bool)
        self.local = np.full(n, -1, dtype=np.int64)
        self.reasons = [""] * n
        self.filled = 0

    def add(self, data: bytes | None, reason: str | None) -> None:
        i = self.filled
        if data is not None:
            self.local[i] = self.spool.add(data)
            self.ok[i] = True
        else:
            self.reasons[i] = reason or "rejected"
        self.filled += 1

    def finish(self) -> None:
        self.spool.write_h5(self.tmp / IMAGES)
        status = pa.table({"row": pa.array(np.arange(self.start, self.stop, dtype=np.int64)), "ok": pa.array(self.ok),
                           "local": pa.array(self.local), "reason": pa.array(self.reasons, pa.string())})
        pq.write_table(status, self.tmp / STATUS)
        for name in (IMAGES, STATUS):
            with open(self.tmp / name, "rb+") as fh:
                os.fsync(fh.fileno())
        os.chmod(self.tmp, 0o755)
        try:
            self.tmp.rename(self.final)
        except OSError:  # another process finished the same part first: theirs is as good
            shutil.rmtree(self.tmp, ignore_errors=True)

    def abort(self) -> None:
        self.spool.discard()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _build_parts(work: Path, scan: Scan, parts: list[tuple[int, int, int]], spec,
                 ctx: BuildContext, progress, done0: int, total: int, stop_flag: StopRequest) -> int:
    """Build the parts ``[(k, start, stop)]``; returns the number of rejected files."""
    n_todo = sum(stop - start for _, start, stop in parts)
    workers = resolve_workers(spec.workers, n_todo)
    plan = scan.plan
    max_side, quality = int(spec.max_side), int(spec.quality)

    def tasks():
        for k, start, stop in parts:
            sl = plan.slice(start, stop - start)
            keys = sl.column("key").to_pylist()
            members = sl.column("member").to_pylist()
            for b in range(0, stop - start, BATCH):
                yield (k, start, stop, b), (scan.reader, keys[b : b + BATCH], members[b : b + BATCH], max_side, quality)

    writer: _PartWriter | None = None
    done, rejected, shown = done0, 0, 0
    names = plan.column("path") if "path" in plan.column_names else plan.column("key")
    try:
        for (k, start, stop, b), results in ordered_map(process_batch, tasks(), workers):
            if writer is None or writer.k != k:
                writer = _PartWriter(work, k, start, stop)
            for j, (data, reason) in enumerate(results):
                writer.add(data, reason)
                if data is None:
                    rejected += 1
                    if shown < 10:
                        ctx.say(f"Skipped {names[start + b + j].as_py()}: {reason}.")
                        shown += 1
            done += len(results)
            if writer.filled == stop - start:
                writer.finish()
                writer = None
            if progress:
                progress(done, total, "images")
            stop_flag.check()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if rejected > shown:
        ctx.say(f"Skipped {rejected - shown} more unreadable file(s); all are listed in rejected.txt.")
    return rejected


def run_image_build(spec, scan_fn: Callable, finalize_fn: Callable, progress=None, ctx: BuildContext | None = None) -> dict:
    """Scan (or reuse the saved scan), build the missing parts of this shard, and merge (see the module docstring)."""
    ctx = ctx or BuildContext()
    with StopRequest() as stop:
        if progress is not None:
            report = progress

            def progress(*args, report=report):  # every progress report is a safe point to stop
                report(*args)
                stop.check()
        else:
            def progress(*args):
                stop.check()
        try:
            return _run(spec, scan_fn, finalize_fn, progress, ctx, stop)
        except KeyboardInterrupt:
            work = work_dir(Path(spec.out))
            finished = finished_parts(work)
            ctx.say(f"Interrupted: {finished} part(s) are finished in {work}; run the same command again to continue." if work.is_dir()
                    else "Interrupted before the scan was saved; nothing was written.")
            raise


def _run(spec, scan_fn: Callable, finalize_fn: Callable, progress, ctx: BuildContext, stop: StopRequest) -> dict:
    t0 = time.time()
    out = Path(spec.out)
    work = work_dir(out)
    key = build_key(spec)
    has_manifest, old = read_manifest_key(work)
    if has_manifest and old != key:
        raise UserError(f"{work} holds an unfinished build with other options (or from another simtool version); "
                        f"run the same command as before to continue it, or delete {work} to start over.")
    scan = load_scan(work) if has_manifest else None
    resumed = scan is not None
    if scan is None:
        if ctx.merge_only:
            raise UserError(f"There is no build to merge in {work}; build the parts first (with --shard i/n, or without --shard).")
        scan = scan_fn(spec, ctx, progress)
        work.mkdir(parents=True, exist_ok=True)
        save_scan(work, scan)
        write_manifest(work, key, spec.to_dict(), time.strftime("%Y-%m-%d %H:%M:%S"))
    plan = scan.plan
    group = plan.column("group").to_numpy().astype(np.int64) if plan.num_rows else np.zeros(0, dtype=np.int64)
    pcodes, pnames = codes(plan.column("partition"))
    parts = cut_parts(group, pcodes, int(spec.part_size))
    numbered = [(k, s, e) for k, (s, e) in enumerate(parts)]
    mine = numbered
    if ctx.shard is not None:
        i, n = ctx.shard
        if len(pnames) >= n:
            mine = [p for p in numbered if int(pcodes[p[1]]) % n == i]
        else:
            mine = [p for p in numbered if p[0] % n == i]
    todo = [] if ctx.merge_only else [p for p in mine if not part_done(work, p[0])]
    total = sum(e - s for _, s, e in mine)
    done0 = total - sum(e - s for _, s, e in todo)
    if resumed and done0 and todo:
        ctx.say(f"Resuming the build in {work}: {len(mine) - len(todo)} of {len(mine)} parts are finished.")
    _build_parts(work, scan, todo, spec, ctx, progress, done0, total, stop)
    if ctx.shard is not None and not ctx.merge_only:
        finished = sum(part_done(work, k) for k, _, _ in numbered)
        return {"out": str(work), "kind": scan.kind, "images": total, "seconds": round(time.time() - t0, 2), "categories": 0,
                "message": f"shard {ctx.shard[0]}/{ctx.shard[1]}: {len(mine)} parts ({total} images) built in {work}; "
                           f"{finished} of {len(numbered)} parts finished. "
                           f"When every shard is done, run the same command with --merge instead of --shard."}
    missing = [k for k, _, _ in numbered if not part_done(work, k)]
    if missing:
        raise UserError(f"{len(missing)} of {len(numbered)} parts are not built yet in {work} (first: part {missing[0]}); "
                        "run the missing shards, or the command without --merge to build them here.")
    summary = _merge(work, out, scan, numbered, spec, finalize_fn, progress)
    shutil.rmtree(work, ignore_errors=True)
    summary["seconds"] = round(time.time() - t0, 2)
    return summary


def _merge(work: Path, out: Path, scan: Scan, parts: list[tuple[int, int, int]], spec, finalize_fn: Callable, progress) -> dict:
    n = scan.plan.num_rows
    ok = np.zeros(n, dtype=bool)
    local = np.full(n, -1, dtype=np.int64)
    reasons: dict[int, str] = {}
    for k, start, stop in parts:
        st = pq.read_table(part_dir(work, k) / STATUS)
        rows = st.column("row").to_numpy()
        if len(rows) != stop - start or (len(rows) and (rows[0] != start or rows[-1] != stop - 1)):
            raise UserError(f"Part {k} in {work} does not match the scan; delete {work} and build again.")
        ok[rows] = st.column("ok").to_numpy(zero_copy_only=False)
        local[rows] = st.column("local").to_numpy()
        bad = np.flatnonzero(~ok[rows])
        if len(bad):
            why = st.column("reason").take(pa.array(bad)).to_pylist()
            reasons.update(zip((int(r) for r in rows[bad]), why))
    names = scan.plan.column("path") if "path" in scan.plan.column_names else scan.plan.column("key")
    rejected = list(scan.rejected) + [(names[int(i)].as_py(), reasons.get(int(i), "rejected")) for i in np.flatnonzero(~ok)]
    with new_dataset_dir(out) as tmp:
        merge_progress = (lambda d, t: progress(d, t, "merging")) if progress else None
        digest, starts = merge_stores([part_dir(work, k) / IMAGES for k, _, _ in parts], tmp / IMAGES, merge_progress)
        index = np.full(n, -1, dtype=np.int64)
        for (_k, start, stop), first in zip(parts, starts):
            sel = np.arange(start, stop)
            good = ok[sel]
            index[sel[good]] = first + local[sel[good]]
        tables, card, summary = finalize_fn(spec, scan, ok, index, tmp)
        counts = dict(card.get("counts", {}))
        counts["rejected_files"] = int((~ok).sum())
        counts.update({k: int(v) for k, v in scan.skipped.items()})
        card["counts"] = counts
        card.setdefault("name", scan.name)
        card["source"] = {"format": spec.format, "path": str(Path(spec.source).resolve()) if spec.source else None}
        card["spec"] = spec.to_dict()
        card["rejected"] = {"file": REJECTED, "count": len(rejected)}
        card["built_by"] = {"tool": f"simtool {__version__}", "command": "build-data", "format": spec.format,
                            "built": time.strftime("%Y-%m-%d %H:%M:%S")}
        write_rejected(tmp, rejected)
        write_tables(tmp, scan.kind, tables, digest, card)
    summary.setdefault("out", str(out))
    summary.setdefault("kind", scan.kind)
    summary["rejected"] = len(rejected)
    return summary


def plan_table(columns: dict[str, list | np.ndarray | pa.Array], types: dict[str, pa.DataType] | None = None) -> pa.Table:
    """A plan table from columns (lists or arrays), with the engine's columns typed."""
    types = {"key": pa.string(), "member": pa.int64(), "group": pa.int64(), "partition": pa.string(), **(types or {})}
    return pa.table({k: (v if isinstance(v, (pa.Array, pa.ChunkedArray)) else pa.array(v, types.get(k))) for k, v in columns.items()})
