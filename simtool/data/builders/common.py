"""The machinery every image builder shares: preparing images, parallel decoding, resumable parts.

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

import io
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import tempfile
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from simtool import __version__
from simtool.errors import UserError
from simtool.formats.dataset_dir import IMAGES, REJECTED, new_dataset_dir, write_rejected, write_tables
from simtool.formats.image_store import ImageSpool, merge_stores
from simtool.io import atomic_write_json, canonical_hash

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
KEPT_FORMATS = ("JPEG", "PNG")
BATCH = 16  # images per task sent to a worker
STATUS = "status.parquet"
WORK_SUFFIX = ".build"
AUTO_WORKERS_MIN_IMAGES = 512  # below this, --workers 0 (auto) decodes in the main process
MAX_AUTO_WORKERS = 16


# -- images -----------------------------------------------------------------------------------


_ADDRESS = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


def _first_line(exc: BaseException) -> str:
    """``Type: first line of the message``, without object addresses (rejected.txt must be reproducible)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    text = _ADDRESS.sub("the data", text)
    return f"{type(exc).__name__}{': ' + text if text else ''}"


def prepare_image(data: bytes, max_side: int, quality: int = 90) -> tuple[bytes | None, str | None]:
    """Encoded image bytes -> ``(bytes to store, None)``, or ``(None, reason)`` for a bad file.

    ``max_side`` 0 keeps the original bytes (after checking that they decode completely). Otherwise
    a JPEG or PNG whose longer side is at most ``max_side`` is kept as it is, and anything else is
    resized (aspect ratio kept, longer side = ``max_side``, Lanczos) and re-encoded as JPEG of
    ``quality``. Large JPEGs are decoded in Pillow's draft mode (DCT scaling) straight to about the
    target size. Greyscale stays greyscale; other modes become RGB. EXIF orientation is not applied
    (the stored pixels are the file's, as with ``max_side`` 0).
    """
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data))
        w, h = img.size
        fmt = img.format
        if max_side <= 0 or (max(w, h) <= max_side and fmt in KEPT_FORMATS):
            if fmt == "JPEG":
                img.draft(img.mode, (max(1, w // 8), max(1, h // 8)))  # still reads every block
            img.load()
            return bytes(data), None
        scale = min(1.0, max_side / max(w, h))
        tw, th = max(1, round(w * scale)), max(1, round(h * scale))
        if fmt == "JPEG" and scale < 1:
            img.draft("L" if img.mode == "L" else "RGB", (tw, th))
        img.load()
        if img.mode not in ("RGB", "L"):
            img = img.convert("RGB")
        if img.size != (tw, th):
            img = img.resize((tw, th), Image.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(quality))
        return buf.getvalue(), None
    except Image.UnidentifiedImageError:
        return None, "not an image (Pillow cannot identify the file)"
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad bytes
        return None, f"not a readable image ({_first_line(exc)})"


_H5_FILES: dict[str, object] = {}


def read_source(reader: tuple[str, str], key: str, member: int) -> bytes:
    """The encoded bytes of one plan row: a file under a root, or element ``member`` of an HDF5 dataset."""
    kind, root = reader
    if kind == "files":
        with open(os.path.join(root, key), "rb") as fh:
            return fh.read()
    if kind == "h5":
        import h5py

        fh = _H5_FILES.get(root)
        if fh is None:
            fh = _H5_FILES[root] = h5py.File(root, "r")
        return np.asarray(fh[key][int(member)], dtype=np.uint8).tobytes()
    raise ValueError(f"unknown reader {kind!r}")


def process_batch(reader: tuple[str, str], keys: Sequence[str], members: Sequence[int], max_side: int, quality: int) -> list[tuple[bytes | None, str | None]]:
    """Read and prepare a batch of plan rows (runs in a worker process)."""
    out = []
    for key, member in zip(keys, members):
        try:
            data = read_source(reader, key, member)
        except KeyError:
            out.append((None, "missing from the source file"))
            continue
        except Exception as exc:  # noqa: BLE001 - OSError, h5py errors, ...
            out.append((None, f"cannot be read ({_first_line(exc)})"))
            continue
        out.append(prepare_image(data, max_side, quality))
    return out


def _init_worker() -> None:
    # Ctrl-C is for the main process: it stops handing out work and cleans up; workers finish their batch.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def ordered_map(fn: Callable, tasks: Iterable[tuple[object, tuple]], workers: int, window: int | None = None) -> Iterator[tuple[object, object]]:
    """``(meta, fn(*args))`` for every ``(meta, args)`` of ``tasks``, in order, over ``workers`` processes.

    At most ``window`` tasks are in flight, so memory stays flat however many tasks there are.
    ``workers <= 1`` runs in this process.
    """
    if workers <= 1:
        for meta, args in tasks:
            yield meta, fn(*args)
        return
    window = window or 4 * workers
    ex = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker)
    pending: deque = deque()
    try:
        for meta, args in tasks:
            pending.append((meta, ex.submit(fn, *args)))
            if len(pending) >= window:
                meta0, fut = pending.popleft()
                yield meta0, fut.result()
        while pending:
            meta0, fut = pending.popleft()
            yield meta0, fut.result()
    except BrokenProcessPool:
        raise UserError("A decoding worker process died (out of memory, or a decoder crashed); run the same command again to continue, with fewer --workers.") from None
    finally:
        for _, fut in pending:
            fut.cancel()
        ex.shutdown(wait=True, cancel_futures=True)


def resolve_workers(requested: int, n_images: int) -> int:
    if requested > 0:
        return int(requested)
    if n_images < AUTO_WORKERS_MIN_IMAGES:
        return 1
    return max(1, min(MAX_AUTO_WORKERS, os.cpu_count() or 1))


# -- small helpers for scanners ------------------------------------------------------------------


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


def split_names(n_fractions: int) -> tuple[str, ...]:
    return ("train", "test") if n_fractions == 2 else ("train", "val", "test")


def split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Sizes of the splits of ``n`` things: round(f * n) for val and test, the rest to train."""
    names = split_names(len(fractions))
    sizes = {name: int(round(f * n)) for name, f in zip(names, fractions)}
    sizes["train"] = n - sum(v for k, v in sizes.items() if k != "train")
    while sizes["train"] < 0:
        k = max((k for k in sizes if k != "train"), key=lambda k: sizes[k])
        sizes[k] -= 1
        sizes["train"] += 1
    return [sizes[name] for name in names]


def assign_splits(n: int, fractions: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """A seeded split label (str array (n,)) for ``n`` things in the given fractions."""
    names = split_names(len(fractions))
    labels = np.repeat(np.array(names), split_counts(n, fractions))
    out = np.empty(n, dtype=labels.dtype if n else "<U5")
    out[rng.permutation(n)] = labels
    return out


# -- scans, parts and the build ------------------------------------------------------------------


class _StopFlag:
    """Ctrl-C during a build: the first SIGINT asks the build to stop at the next safe point (after
    the batch in hand; a handler that only sets a flag cannot be swallowed by a ``__del__`` or a
    weakref callback the way a ``KeyboardInterrupt`` raised anywhere can); a second one stops at once."""

    def __init__(self):
        self.requested = False
        self._old = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


@dataclass
class BuildContext:
    """How to run a build (not part of its content): shard, merge-only, where messages go."""

    shard: tuple[int, int] | None = None
    merge_only: bool = False
    warn: Callable[[str], None] | None = None

    def say(self, text: str) -> None:
        if self.warn is not None:
            self.warn(text)


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
    return out.parent / (out.name + WORK_SUFFIX)


def build_key(spec) -> str:
    """What must match for a re-run to reuse a build's finished parts (everything but how it runs)."""
    d = spec.to_dict()
    d.pop("workers", None)
    d["source"] = str(Path(d["source"]).resolve()) if d.get("source") else None
    d["out"] = str(Path(d["out"]).resolve())
    return canonical_hash({"spec": d, "simtool": __version__}, 32)


def _save_scan(work: Path, scan: Scan) -> None:
    for name, table in scan.extras.items():
        _write_parquet(work / f"extra-{name}.parquet", table)
    _write_parquet(work / "plan.parquet", scan.plan)
    atomic_write_json(work / "scan.json", {"kind": scan.kind, "name": scan.name, "reader": list(scan.reader), "info": scan.info,
                                           "extras": sorted(scan.extras), "rejected": scan.rejected, "skipped": scan.skipped})


def _load_scan(work: Path) -> Scan | None:
    try:
        meta = json.loads((work / "scan.json").read_text(encoding="utf-8"))
        plan = pq.read_table(work / "plan.parquet")
        extras = {name: pq.read_table(work / f"extra-{name}.parquet") for name in meta["extras"]}
    except (OSError, ValueError, KeyError, pa.ArrowException):
        return None
    return Scan(kind=meta["kind"], name=meta["name"], reader=tuple(meta["reader"]), plan=plan, info=meta["info"], extras=extras,
                rejected=[tuple(r) for r in meta["rejected"]], skipped=meta["skipped"])


def _write_parquet(path: Path, table: pa.Table) -> None:
    from simtool.io import atomic_path

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


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


def _part_dir(work: Path, k: int) -> Path:
    return work / "parts" / f"part-{k:06d}"


def _part_done(work: Path, k: int) -> bool:
    d = _part_dir(work, k)
    return (d / STATUS).is_file() and (d / IMAGES).is_file()


class _PartWriter:
    """One part being built: a temporary folder with a spool; renamed into place when complete."""

    def __init__(self, work: Path, k: int, start: int, stop: int):
        self.k, self.start, self.stop = k, start, stop
        self.final = _part_dir(work, k)
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


def _build_parts(work: Path, scan: Scan, parts: list[tuple[int, int, int]], spec, ctx: BuildContext, progress, done0: int, total: int, stop_flag: _StopFlag) -> int:
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
    with _StopFlag() as stop:
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
            parts = work / "parts"
            finished = len([p for p in parts.iterdir() if not p.name.startswith(".")]) if parts.is_dir() else 0
            ctx.say(f"Interrupted: {finished} part(s) are finished in {work}; run the same command again to continue." if work.is_dir()
                    else "Interrupted before the scan was saved; nothing was written.")
            raise


def _run(spec, scan_fn: Callable, finalize_fn: Callable, progress, ctx: BuildContext, stop: _StopFlag) -> dict:
    t0 = time.time()
    out = Path(spec.out)
    work = work_dir(out)
    key = build_key(spec)
    manifest = work / "build.json"
    if manifest.is_file():
        try:
            old = json.loads(manifest.read_text(encoding="utf-8")).get("key")
        except ValueError:
            old = None
        if old != key:
            raise UserError(f"{work} holds an unfinished build with other options (or from another simtool version); run the same command as before to continue it, or delete {work} to start over.")
    scan = _load_scan(work) if manifest.is_file() else None
    resumed = scan is not None
    if scan is None:
        if ctx.merge_only:
            raise UserError(f"There is no build to merge in {work}; build the parts first (with --shard i/n, or without --shard).")
        scan = scan_fn(spec, ctx, progress)
        work.mkdir(parents=True, exist_ok=True)
        _save_scan(work, scan)
        atomic_write_json(manifest, {"key": key, "spec": spec.to_dict(), "simtool": __version__, "started": time.strftime("%Y-%m-%d %H:%M:%S")})
    plan = scan.plan
    group = plan.column("group").to_numpy().astype(np.int64) if plan.num_rows else np.zeros(0, dtype=np.int64)
    from simtool.formats.dataset_dir import _codes

    pcodes, pnames = _codes(plan.column("partition"))
    parts = cut_parts(group, pcodes, int(spec.part_size))
    numbered = [(k, s, e) for k, (s, e) in enumerate(parts)]
    mine = numbered
    if ctx.shard is not None:
        i, n = ctx.shard
        if len(pnames) >= n:
            mine = [p for p in numbered if int(pcodes[p[1]]) % n == i]
        else:
            mine = [p for p in numbered if p[0] % n == i]
    todo = [] if ctx.merge_only else [p for p in mine if not _part_done(work, p[0])]
    total = sum(e - s for _, s, e in mine)
    done0 = total - sum(e - s for _, s, e in todo)
    if resumed and done0 and todo:
        ctx.say(f"Resuming the build in {work}: {len(mine) - len(todo)} of {len(mine)} parts are finished.")
    _build_parts(work, scan, todo, spec, ctx, progress, done0, total, stop)
    if ctx.shard is not None and not ctx.merge_only:
        finished = sum(_part_done(work, k) for k, _, _ in numbered)
        return {"out": str(work), "kind": scan.kind, "images": total, "seconds": round(time.time() - t0, 2), "categories": 0,
                "message": f"shard {ctx.shard[0]}/{ctx.shard[1]}: {len(mine)} parts ({total} images) built in {work}; {finished} of {len(numbered)} parts finished. "
                           f"When every shard is done, run the same command with --merge instead of --shard."}
    missing = [k for k, _, _ in numbered if not _part_done(work, k)]
    if missing:
        raise UserError(f"{len(missing)} of {len(numbered)} parts are not built yet in {work} (first: part {missing[0]}); run the missing shards, or the command without --merge to build them here.")
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
        st = pq.read_table(_part_dir(work, k) / STATUS)
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
        digest, starts = merge_stores([_part_dir(work, k) / IMAGES for k, _, _ in parts], tmp / IMAGES, merge_progress)
        index = np.full(n, -1, dtype=np.int64)
        for (k, start, stop), first in zip(parts, starts):
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
