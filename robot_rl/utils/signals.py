"""Signals as the cleanup code needs them: Ctrl+C and SIGTERM as KeyboardInterrupt, and held over a critical block."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


def ctrl_c_stops() -> None:
    """Make SIGINT and SIGTERM raise KeyboardInterrupt in this process, even if it was started with SIGINT ignored
    (as a shell does for background jobs), so Ctrl+C, ``kill``, ``timeout`` and ``stop_all`` all reach the cleanup
    code (the running episode filed, the store closed)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl+C and SIGTERM until the block ends (then raise KeyboardInterrupt), so an episode and its
    bookkeeping land together or not at all. A no-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    old = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if caught:
        raise KeyboardInterrupt
