"""Running a function over tasks in worker processes, in order, with flat memory."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable, Iterator

from simtool.errors import UserError

AUTO_WORKERS_MIN_IMAGES = 512  # below this, --workers 0 (auto) decodes in the main process
MAX_AUTO_WORKERS = 16


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
        raise UserError("A decoding worker process died (out of memory, or a decoder crashed); "
                        "run the same command again to continue, with fewer --workers.") from None
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
