"""Process-level performance settings."""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

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
    import torch

    torch.set_num_threads(threads if threads > 0 else max(1, os.cpu_count() or 1))


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"``: ``"bf16"`` where ``device`` has native bfloat16 arithmetic (a CUDA device that supports it, or a
    CPU with AVX-512 BF16 or AMX), else ``"fp32"``; any other value as given. The environment variable
    ``ROBOT_RL_AUTO_PRECISION`` (fp32 | bf16) fixes what ``"auto"`` means, so runs compare across machines (the test
    suite sets fp32)."""
    import torch

    if precision != "auto":
        return precision
    forced = _fixed_auto("ROBOT_RL_AUTO_PRECISION", ("fp32", "bf16"))
    if forced:
        return forced
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_bf16() else "fp32"


def _fixed_auto(var: str, valid: tuple[str, ...]) -> str:
    """What the environment variable ``var`` fixes ``"auto"`` to ("" when unset); a value outside ``valid`` is
    refused, naming it."""
    value = os.environ.get(var, "")
    if value and value not in valid:
        raise ValueError(f"{var}={value!r}; valid: {', '.join(map(repr, valid))} (or unset: decided by the device)")
    return value


def cpu_has_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (``avx512_bf16`` or ``amx_bf16`` in /proc/cpuinfo; False where
    that file is missing)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_compile(setting: bool | str, device: torch.device) -> bool:
    """``"auto"``: whether ``torch.compile`` works on ``device`` here (a tiny function compiles and runs: inductor
    needs a C++ compiler for the CPU and Triton for CUDA), probed once per process and device type; True/False as
    given. The environment variable ``ROBOT_RL_AUTO_COMPILE`` (0 | 1) fixes what ``"auto"`` means (the test suite
    sets 0: every agent it builds would compile)."""
    if setting != "auto":
        return bool(setting)
    forced = _fixed_auto("ROBOT_RL_AUTO_COMPILE", ("0", "1"))
    if forced:
        return forced == "1"
    return compile_works(device.type)


@functools.cache
def compile_works(device_type: str) -> bool:
    """Whether a tiny function compiles and runs on ``device_type`` (``"cpu"`` | ``"cuda"``) here."""
    import torch

    try:
        fn = torch.compile(lambda x: torch.relu(x) * 2.0 + 1.0, dynamic=False)
        ok = bool(fn(torch.ones(4, device=device_type)).sum().item() == 12.0)
    except Exception as e:  # noqa: BLE001 - any failure means: run eager
        print(f"torch.compile unavailable on {device_type} ({type(e).__name__}: {str(e)[:200]}); updates run eager")
        return False
    return ok
