"""One owner per output: a run directory, a build, a file being written.

A process that writes an output holds its lock: a small JSON file, ``<output>.lock`` beside the file,
the directory being built or the run directory being trained (:func:`beside`), created atomically with ``O_CREAT |
O_EXCL`` and holding the owner's host, process id and start time. A second process finds the lock
and stops with one sentence naming the holder. A lock whose process is gone (kill -9, a crash, a
power loss) is **stale**: a process on the same host checks that the holder's pid no longer runs
(or runs another program, started later) and takes the lock over. A lock written on another host is
never taken over automatically: the sentence says how to remove it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from simtool.errors import UserError

SUFFIX = ".lock"  # beside a file or a directory


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True


def _started(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), where /proc says; None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(stat[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


class OwnerLock:
    """Hold ``path`` (a lock file) while a block runs; ``what`` names the output in the sentences
    (e.g. ``"the run directory runs/x"``) and ``busy`` ends the sentence for a live holder (what to
    do instead). Re-entrant within one process: a second acquisition of a held lock is a no-op."""

    _held: dict[str, int] = {}

    def __init__(self, path: str | Path, what: str, busy: str = "wait for it to finish or stop it, or choose another --out"):
        self.path = Path(path)
        self.what, self.busy = what, busy
        self._mine = False

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, UnicodeDecodeError):
            return {}  # half-written or damaged: treated as stale below

    def _stale(self, holder: dict) -> bool:
        if not holder:
            return time.time() - self._mtime() > 5  # unreadable: stale once its writer had time to finish
        if holder.get("host") != socket.gethostname():
            return False
        pid = int(holder.get("pid", -1))
        if pid == os.getpid() or not _alive(pid):
            return pid != os.getpid()
        started = _started(pid)
        return started is not None and holder.get("started") is not None and started > float(holder["started"]) + 1

    def _mtime(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return time.time()

    def _cannot_create(self, exc: OSError) -> UserError:
        return UserError(f"Cannot create the lock file {self.path} ({exc.strerror or exc}); choose an output on a writable disk.")

    def acquire(self) -> OwnerLock:
        key = str(self.path.resolve())
        if OwnerLock._held.get(key) == os.getpid():
            return self
        me = {"host": socket.gethostname(), "pid": os.getpid(), "started": _started(os.getpid()) or time.time(),
              "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # a file where a folder should be, a read-only file system
                raise self._cannot_create(exc) from None
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    continue  # released meanwhile: try again
                if self._stale(holder):
                    self.path.unlink(missing_ok=True)  # its process is gone: take it over
                    continue
                who = f"process {holder.get('pid')} on {holder.get('host')} (since {holder.get('since', '?')})"
                if holder.get("host") != socket.gethostname():
                    raise UserError(f"{self.what} is in use by {who}; {self.busy} (if that process is gone, delete {self.path}).") from None
                raise UserError(f"{self.what} is in use by {who}; {self.busy}.") from None
            except OSError as exc:  # a read-only or special file system, a full disk
                raise self._cannot_create(exc) from None
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(me, fh)
            self._mine = True
            OwnerLock._held[key] = os.getpid()
            return self
        raise UserError(f"{self.what} is held by another process that keeps taking it; try again.")

    def release(self) -> None:
        if self._mine:
            OwnerLock._held.pop(str(self.path.resolve()), None)
            holder = self._holder()
            if holder and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self._mine = False

    def __enter__(self) -> OwnerLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def beside(path: str | Path) -> Path:
    """The lock file of an output file or a directory being built: ``<path>.lock`` next to it."""
    path = Path(path)
    return path.parent / (path.name + SUFFIX)
