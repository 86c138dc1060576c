"""Ctrl-C (SIGINT) and SIGTERM as a request to stop at the next safe point, shared by training and
builds. A cluster sends SIGTERM before it pre-empts a job: it is handled exactly as Ctrl-C.

The first signal only sets a flag (a handler that raises could be swallowed by a ``__del__`` or a
weakref callback the way a ``KeyboardInterrupt`` raised anywhere can); the work checks it where it
can stop cleanly (after the step or the batch in hand) and saves what it has. A second signal
raises :class:`KeyboardInterrupt` at once.
"""

from __future__ import annotations

import signal
import threading
from typing import Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Context manager that turns SIGINT and SIGTERM into :attr:`requested` while it is active (main
    thread only); :attr:`signal_name` says which arrived ("Ctrl-C" or "SIGTERM").

    ``on_first``: called once when the first signal arrives (e.g. to print what will happen).
    """

    def __init__(self, on_first: Callable[[], None] | None = None):
        self.requested = False
        self.signal_name: str | None = None
        self.on_first = on_first
        self._old: dict = {}

    def _handler(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        if self.on_first is not None:
            self.on_first()

    def check(self) -> None:
        """Raise :class:`KeyboardInterrupt` when a stop was requested."""
        if self.requested:
            raise KeyboardInterrupt

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._old = {sig: signal.signal(sig, self._handler) for sig in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in (self._old or {}).items():
            signal.signal(sig, old)
        self._old = {}
