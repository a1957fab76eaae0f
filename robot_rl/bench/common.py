"""Helpers shared by the benchmarks: ``key=value`` overrides, machine description, timing, tables."""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import statistics
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch


def parse_overrides(overrides: Sequence[str], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Apply ``key=value`` strings to ``defaults``, coercing each value to the default's type.

    Tuples take comma-separated values (``hidden=64,64`` or ``hidden=[64,64]``). Unknown keys or a missing ``=``
    raise ``ValueError`` naming the valid keys.
    """
    out = dict(defaults)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.lstrip("+")
        if not sep or key not in defaults:
            raise ValueError(f"bad benchmark override {item!r}; valid keys: {', '.join(sorted(defaults))}")
        default = defaults[key]
        try:
            if isinstance(default, bool):
                if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(raw)
                out[key] = raw.lower() in ("1", "true", "yes")
            elif isinstance(default, tuple):
                out[key] = tuple(int(x) for x in raw.strip("[]()").split(",") if x.strip())
            elif default is None:
                out[key] = raw
            else:
                out[key] = type(default)(raw)
        except ValueError:
            raise ValueError(f"override {item!r}: cannot read {raw!r} as {type(default).__name__}") from None
    return out


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[int]:
    """Run the block with ``max(1, threads)`` torch threads, restoring the caller's count afterwards."""
    n, prev = max(1, int(threads)), torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(prev)


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (or ``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def busy_cores(interval: float = 0.5) -> float | None:
    """Cores kept busy (by anything, this process included) over ``interval`` seconds, from ``/proc/stat``.

    Call before starting work to see what other processes take; ``None`` where ``/proc/stat`` is missing.
    """

    def read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        return sum(vals), vals[3] + (vals[4] if len(vals) > 4 else 0)  # total, idle + iowait

    try:
        t0, i0 = read()
        time.sleep(interval)
        t1, i1 = read()
    except (OSError, ValueError, IndexError):
        return None
    return (os.cpu_count() or 1) * (1.0 - (i1 - i0) / max(1, t1 - t0))


def minor_faults() -> int:
    """Minor page faults of this process so far (each first touch of freshly mapped memory costs one)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def machine_info(threads: int) -> dict[str, Any]:
    """What a figure was measured on: CPU model, cores, torch threads, library versions, load average."""
    info: dict[str, Any] = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "threads": threads, "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(),
    }
    try:
        info["loadavg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    return info


def time_steps(step: Callable[[], int], seconds: float, max_units: int = 0) -> tuple[int, float]:
    """Call ``step()`` (which returns how many units it did) until ``seconds`` elapse or ``max_units`` are done.

    ``max_units > 0`` means a fixed amount of work instead of a wall budget. Returns ``(units, elapsed_s)``.
    """
    units, t0 = 0, time.perf_counter()
    while True:
        units += step()
        elapsed = time.perf_counter() - t0
        if (max_units > 0 and units >= max_units) or (max_units <= 0 and elapsed >= seconds):
            return units, elapsed


def median(xs: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    return float(statistics.median(xs))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print an aligned plain-text table; floats get 1 decimal place, first column left-aligned."""
    cells = [[f"{c:.1f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(parts: Sequence[str]) -> str:
        return "  ".join(p.ljust(w) if i == 0 else p.rjust(w) for i, (p, w) in enumerate(zip(parts, widths)))

    print(line([str(h) for h in headers]))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print(line(r))
