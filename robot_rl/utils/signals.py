"""Signals as the cleanup code needs them: Ctrl+C and SIGTERM as KeyboardInterrupt, and held over a critical block."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any


def ctrl_c_stops() -> None:
    """Make SIGINT and SIGTERM raise KeyboardInterrupt in this process, even if it was started with SIGINT ignored
    (as a shell does for background jobs), so Ctrl+C, ``kill``, ``timeout`` and ``stop_all`` all reach the cleanup
    code (the running episode filed, the store closed)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)


@contextlib.contextmanager
def _routed(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """Route SIGINT and SIGTERM to ``handler`` for the block, then restore the handlers before it. Signals reach only
    the main thread, so elsewhere this changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, previous in old.items():
            signal.signal(s, previous)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl+C and SIGTERM until the block ends (then raise KeyboardInterrupt), so an episode and its
    bookkeeping land together or not at all. A no-op outside the main thread."""
    caught: list[int] = []
    with _routed(lambda signum, frame: caught.append(signum)):
        yield
    if caught:
        raise KeyboardInterrupt


class StopRequest:
    """Ctrl+C and SIGTERM recorded rather than raised, for a loop whose blocking calls run in native code (rclpy
    spinning, DDS reads). A KeyboardInterrupt raised by a signal handler in the middle of such a call comes out as an
    unrelated error (pybind11's "Unable to convert call argument"), which skipped the clean exit. The loop calls
    :meth:`check` between steps and in its waits; it raises KeyboardInterrupt once a stop was asked. A second Ctrl+C
    raises at once, for a loop stuck where it never checks."""

    def __init__(self) -> None:
        self.asked = threading.Event()

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Route SIGINT and SIGTERM here for the block, then restore the handlers before it (main thread only;
        elsewhere :meth:`check` still works)."""
        with _routed(self._handle):
            yield self

    def _handle(self, signum: int, frame: object) -> None:
        if self.asked.is_set():
            raise KeyboardInterrupt
        self.asked.set()

    def check(self) -> None:
        if self.asked.is_set():
            raise KeyboardInterrupt
