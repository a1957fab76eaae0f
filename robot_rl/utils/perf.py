"""Process-level performance settings."""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def tune_malloc() -> bool:
    """Keep freed tensor memory in the heap instead of returning it to the OS after every step.

    glibc serves blocks above its mmap threshold with fresh mappings and unmaps them on free, so every update
    re-faults its multi-megabyte temporaries page by page; measured here (``robot-rl bench learner malloc_tune=1``)
    that cost the RLPD update ~40%. Raising the thresholds lets the allocator reuse those pages. Returns True if
    applied (glibc Linux only; elsewhere a no-op).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)) and bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20))
    except (OSError, AttributeError):
        return False


def set_threads(threads: int) -> None:
    """Give this process ``threads`` torch threads (0: one per core). On a small machine, processes that share
    the cores (an actor and a learner, parallel runs) each want their own few threads: more threads than cores
    slow every one of them down."""
    import os

    import torch

    torch.set_num_threads(threads if threads > 0 else max(1, os.cpu_count() or 1))
