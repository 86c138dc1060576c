"""Ctrl-C as a request to stop at the next safe point, shared by training and builds.

The first SIGINT only sets a flag (a handler that raises could be swallowed by a ``__del__`` or a
weakref callback the way a ``KeyboardInterrupt`` raised anywhere can); the work checks it where it
can stop cleanly (after the step or the batch in hand) and saves what it has. A second SIGINT
raises :class:`KeyboardInterrupt` at once.
"""

from __future__ import annotations

import signal
import threading
from typing import Callable


class StopRequest:
    """Context manager that turns SIGINT into :attr:`requested` while it is active (main thread only).

    ``on_first``: called once when the first signal arrives (e.g. to print what will happen).
    """

    def __init__(self, on_first: Callable[[], None] | None = None):
        self.requested = False
        self.on_first = on_first
        self._old = None

    def _handler(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self.on_first is not None:
            self.on_first()

    def check(self) -> None:
        """Raise :class:`KeyboardInterrupt` when a stop was requested."""
        if self.requested:
            raise KeyboardInterrupt

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None
