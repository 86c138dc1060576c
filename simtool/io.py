"""Atomic file writing and small I/O helpers shared by every stage.

Every file simtool writes goes through :func:`atomic_path` (or :func:`atomic_dir` for a
directory): the content is written under a temporary name in the same directory, flushed,
fsynced and renamed over the target, so a crash or Ctrl-C never leaves a half-written file
where a finished one is expected. Written files get the usual permissions (``0666 & ~umask``),
not the private ones of ``mkstemp``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish_mode(path: Path, directory: bool = False) -> None:
    """Give a temporary file or directory the permissions a plain ``open``/``mkdir`` would."""
    try:
        os.chmod(path, (0o777 if directory else 0o666) & ~_umask())
    except OSError:
        pass


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        _publish_mode(tmp_path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; rename it to ``path`` if the block succeeds.

    ``path`` must not exist, or be an empty directory (which is replaced).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _publish_mode(tmp, directory=True)
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_write_yaml(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False))


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON object as a line; the line is written with one ``write`` call and flushed."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()


def canonical_hash(obj: Any, length: int = 16) -> str:
    """Short SHA-256 of the canonical JSON form of ``obj`` (sorted keys), e.g. a spec hash."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def file_sha256(path: str | os.PathLike, length: int = 16) -> str:
    """Short SHA-256 of a file's bytes (read in blocks): what identifies a weights file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]


def check_writable(path: str | os.PathLike, what: str, fix: str = "choose another --out") -> Path:
    """``path`` (a file or directory to create or replace) as a Path, if this process can write it:
    its nearest existing ancestor must be a writable directory. Else one sentence, before any work."""
    from simtool.errors import UserError

    path = Path(path)
    if path.exists() and not path.is_dir() and not os.access(path, os.W_OK):
        raise UserError(f"Cannot write {what} {path}: the file is read-only; {fix}.")
    # an existing folder is written into; anything else is written (atomically) beside its siblings
    target = path if path.is_dir() else path.parent
    while not target.exists() and target != target.parent:
        target = target.parent
    if not target.is_dir():
        raise UserError(f"Cannot write {what} {path}: {target} is a file, not a folder; {fix}.")
    if not os.access(target, os.W_OK | os.X_OK):
        raise UserError(f"Cannot write {what} {path}: {target} is not writable; {fix}.")
    return path


def cache_dir() -> Path:
    """The user cache directory: ``$SIMTOOL_CACHE``, else ``$XDG_CACHE_HOME/simtool``, else ``~/.cache/simtool``."""
    if os.environ.get("SIMTOOL_CACHE"):
        return Path(os.environ["SIMTOOL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "simtool"
