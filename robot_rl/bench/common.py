"""The benchmark harness: ``key=value`` overrides, torch threads, the busy-core check, machine description, timing,
latency figures, tables and result JSON.

A timing benchmark's ``run`` parses its settings (:func:`parse_overrides`) and measures in
:meth:`Bench.run`: with its torch threads, after warning (and noting) when other processes load the machine;
:meth:`Bench.result` returns the figures with the machine, the settings and the notes, which the CLI writes with
``--json``; a benchmark that keeps its own result file writes it with :func:`write_json`. Tables go through
:func:`print_table`.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


def parse_overrides(
    overrides: Sequence[str],
    defaults: Mapping[str, Any],
    quick: bool = False,
    auto: Mapping[str, tuple[Any, Any]] | None = None,
) -> dict[str, Any]:
    """Apply ``key=value`` strings to ``defaults``, coercing each value to the default's type.

    Tuples take comma-separated values (``hidden=64,64`` or ``hidden=[64,64]``). Unknown keys or a missing ``=``
    raise ``ValueError`` naming the valid keys. ``auto`` maps the settings whose default means "chosen by the mode"
    to their ``(quick, full)`` values: such a setting left unset (0 or empty, or negative where the default is
    negative) takes the one ``quick`` picks.
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
    for key, (quick_value, full_value) in (auto or {}).items():
        negative = isinstance(defaults[key], (int, float)) and defaults[key] < 0
        if (out[key] < 0) if negative else not out[key]:
            out[key] = quick_value if quick else full_value
    return out


# ----------------------------------------------------------------------------- threads and load
@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run the block with ``max(1, threads)`` torch threads (``None``: the current count, for a block that may change
    it), restoring the caller's count afterwards."""
    prev = torch.get_num_threads()
    n = prev if threads is None else max(1, int(threads))
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(prev)


def cpu_times() -> tuple[int, int] | None:
    """(total, idle + iowait) jiffies of the whole machine so far, from ``/proc/stat``; ``None`` where unreadable."""
    try:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        return sum(vals), vals[3] + (vals[4] if len(vals) > 4 else 0)
    except (OSError, ValueError, IndexError):
        return None


def busy_between(a: tuple[int, int] | None, b: tuple[int, int] | None) -> float | None:
    """Cores kept busy (by anything) between two :func:`cpu_times` readings; ``None`` if either is missing."""
    if a is None or b is None or b[0] <= a[0]:
        return None
    return (os.cpu_count() or 1) * (1.0 - (b[1] - a[1]) / (b[0] - a[0]))


def busy_cores(interval: float = 0.5) -> float | None:
    """Cores kept busy (by anything, this process included) over ``interval`` seconds, from ``/proc/stat``.

    Call before starting work to see what other processes take; ``None`` where ``/proc/stat`` is missing.
    """
    a = cpu_times()
    if a is None:
        return None
    time.sleep(interval)
    return busy_between(a, cpu_times())


def minor_faults() -> int:
    """Minor page faults of this process so far (each first touch of freshly mapped memory costs one)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


# ----------------------------------------------------------------------------- machine
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


def machine_info(threads: int) -> dict[str, Any]:
    """What a figure was measured on: CPU model, cores, the CUDA device (None without one: whole-run benches train
    on it with ``device=auto``), torch threads, library versions, load average."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cores": os.cpu_count(),
        "threads": threads,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    try:
        info["loadavg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    return info


# ----------------------------------------------------------------------------- timing
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


def device_sync(device: torch.device) -> Callable[[], None]:
    """A call that waits for ``device``'s queued work (CUDA), or does nothing (CPU), to put around timed calls."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def median(xs: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    return float(statistics.median(xs))


def latency_stats(ms: Sequence[float] | np.ndarray, budget_ms: float) -> dict[str, Any]:
    """Latencies ``ms`` (n,) in milliseconds -> p50 / p99 / mean / max / min (ms), ``n`` and the margins
    ``budget_over_p99`` (x) and ``headroom_ms`` (budget - p99, ms)."""
    x = np.asarray(ms, dtype=np.float64)
    p50, p99 = (float(v) for v in np.percentile(x, [50, 99]))
    return {
        "p50_ms": p50,
        "p99_ms": p99,
        "mean_ms": float(x.mean()),
        "max_ms": float(x.max()),
        "min_ms": float(x.min()),
        "n": int(x.size),
        "budget_over_p99": budget_ms / p99,
        "headroom_ms": budget_ms - p99,
    }


# ----------------------------------------------------------------------------- output
def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> None:
    """Print an aligned plain-text table; floats get 1 decimal place. ``align`` holds one ``l`` or ``r`` per column
    (default: the first column left-aligned, the others right-aligned)."""
    cells = [[f"{c:.1f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    align = align or "l" + "r" * (len(headers) - 1)

    def line(parts: Sequence[str]) -> str:
        return "  ".join(p.ljust(w) if a == "l" else p.rjust(w) for p, w, a in zip(parts, widths, align)).rstrip()

    print(line([str(h) for h in headers]))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print(line(r))


def write_json(path: str | Path, result: Mapping[str, Any], indent: int = 2) -> Path:
    """Write a benchmark's result to ``path`` (parent folders created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=indent))
    return path


# ----------------------------------------------------------------------------- one run
# what other processes' load does to a benchmark's figures (:class:`Bench`'s ``busy_effect``)
NOISY_RATES = "figures are depressed and noisy"
NOISY_LATENCIES = "latencies (p99 and max above all) are inflated and noisy"


class Bench:
    """One timing benchmark's run: its name, mode and settings, the torch threads it measures with
    (``settings["threads"]``), the notes it collects (printed at the end and returned), and the load it found on the
    machine before starting. ``busy_effect`` says what other processes' load does to its figures."""

    def __init__(self, name: str, quick: bool, settings: dict[str, Any], busy_effect: str = NOISY_RATES):
        self.name, self.quick, self.settings, self.busy_effect = name, quick, settings, busy_effect
        self.threads = max(1, int(settings["threads"]))
        self.notes: list[str] = []
        self.busy: float | None = None

    def run(self, body: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
        """Check the machine for load (:meth:`warn_if_busy`), then return ``body(self, *args)`` run with the run's
        torch threads; the caller's thread count comes back afterwards."""
        with torch_threads(self.threads):
            info = machine_info(self.threads)
            gpu = f"CUDA device {info['gpu']}" if info["gpu"] else "no CUDA device"
            print(f"{self.name} bench on {info['cpu']} ({info['cores']} cores), {gpu}", flush=True)
            self.warn_if_busy()
            return body(self, *args)

    def keep_threads(self, where: str) -> None:
        """Put the run's thread count back if something (a library, a build) changed it, with a note."""
        if torch.get_num_threads() != self.threads:
            self.notes.append(f"torch threads were {torch.get_num_threads()} {where}; reset to {self.threads}")
            torch.set_num_threads(self.threads)

    def warn_if_busy(self) -> float | None:
        """Measure the cores other processes keep busy (:func:`busy_cores`); over half a core, warn of the
        ``busy_effect``. Returns the measurement, kept for the machine description."""
        self.busy = busy_cores()
        if self.busy is not None and self.busy > 0.5:
            self.notes.append(
                f"other processes kept {self.busy:.1f} of {os.cpu_count()} cores busy before the run: "
                f"{self.busy_effect}"
            )
            print(f"WARNING: {self.notes[-1]}")
        return self.busy

    def print_notes(self) -> None:
        """Print the notes collected so far, one ``note:`` line each."""
        for note in self.notes:
            print(f"note: {note}")

    def round_robin(
        self, steps: Mapping[str, Callable[[], int]], repeats: int, seconds: float, max_units: int = 0, show: str = ""
    ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
        """Time every ``steps`` row (:func:`time_steps`) ``repeats`` times, round-robin so drift in background load
        hits every row alike, at the run's thread count. Returns per row its units/s and minor page faults per unit,
        one per repeat; ``show`` (a format spec such as ``.3g``) prints each repeat's rates when there are several."""
        rates: dict[str, list[float]] = {k: [] for k in steps}
        faults: dict[str, list[float]] = {k: [] for k in steps}
        for r in range(repeats):
            for key, step in steps.items():
                self.keep_threads(f"before row {key}")
                f0 = minor_faults()
                units, elapsed = time_steps(step, seconds, max_units)
                rates[key].append(units / elapsed)
                faults[key].append((minor_faults() - f0) / units)
            if show and repeats > 1:
                print(f"  repeat {r + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]:{show}}/s" for k, v in rates.items()))
        return rates, faults

    def machine(self, **extra: Any) -> dict[str, Any]:
        """:func:`machine_info` at the run's thread count, ``extra`` facts (device, library versions) and the busy
        cores found before the run."""
        info = {**machine_info(self.threads), **extra}
        info["busy_cores_before_run"] = None if self.busy is None else round(self.busy, 2)
        return info

    def result(
        self,
        rows: Mapping[str, Any],
        *,
        settings: Mapping[str, Any] | None = None,
        machine: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """The run's JSON-serialisable result: ``benchmark``, ``quick``, ``settings`` (the run's unless given),
        ``machine`` (:meth:`machine` with ``machine`` facts), ``rows``, then ``fields``, and ``notes`` last."""
        return {
            "benchmark": self.name,
            "quick": self.quick,
            "settings": self.settings if settings is None else settings,
            "machine": self.machine(**(machine or {})),
            "rows": rows,
            **fields,
            "notes": self.notes,
        }


# ----------------------------------------------------------------------------- reusing finished runs
DONE_FILE = "bench_done.json"


def finished_run(run_dir: Path, config_name: str, overrides: Sequence[str]) -> dict[str, Any] | None:
    """The summary a bench left in ``run_dir`` (:data:`DONE_FILE`) when that run finished with the config that
    ``configs/<config_name>.yaml`` and ``overrides`` give now, the code's defaults included; else None.

    Torch threads aside (they change speed and rounding, not what is trained), and keys whose value is null, or that
    the earlier run's config lacks and that are off now (null or false): a switch added later whose default is off
    does not change what an earlier run trained. An interrupted sweep loses nothing this way, and a changed default
    reruns what it changes."""
    from omegaconf import OmegaConf

    from robot_rl.cli import compose

    if not (run_dir / DONE_FILE).exists() or not (run_dir / "config.yaml").exists():
        return None
    now, then = compose(config_name, list(overrides)), OmegaConf.load(run_dir / "config.yaml")
    for cfg in (now, then):
        cfg.threads = 0
    if not _same_run(OmegaConf.to_container(now), OmegaConf.to_container(then)):
        return None
    return json.loads((run_dir / DONE_FILE).read_text())


def _same_run(now: Any, then: Any) -> bool:
    """Whether configs ``now`` and ``then`` train the same run: equal but for null keys and for keys only ``now``
    has that are off (false)."""
    if not (isinstance(now, dict) and isinstance(then, dict)):
        return now == then
    now = {k: v for k, v in now.items() if v is not None and not (k not in then and v is False)}
    then = {k: v for k, v in then.items() if v is not None}
    return now.keys() == then.keys() and all(_same_run(v, then[k]) for k, v in now.items())


# ----------------------------------------------------------------------------- benches of whole runs
def split_list(text: str) -> list[str]:
    """A comma-separated setting (``tasks=pick_cube,peg_insert``) as a list."""
    return [x.strip() for x in str(text).split(",") if x.strip()]


def cli_run(run_dir: Path, *args: str, reuse: bool = False) -> dict[str, Any]:
    """One ``robot-rl`` command (its output in ``<run_dir>.log``) -> its exit status and evaluation history; with
    ``reuse``, a run that finished with the same resolved config is read back instead of rerun."""
    config_name, overrides = args[0].replace("-", "_"), [*args[1:], f"run_dir={run_dir}"]
    if reuse and (done := finished_run(run_dir, config_name, overrides)) is not None:
        print(f"  reused {run_dir}", flush=True)
        return done
    shutil.rmtree(run_dir, ignore_errors=True)  # no stale evaluations from an interrupted run
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(run_dir.with_suffix(".log"), "w") as log:
        cmd = [sys.executable, "-m", "robot_rl.cli", *args, f"run_dir={run_dir}"]
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    lines = (run_dir / "eval.jsonl").read_text().splitlines() if (run_dir / "eval.jsonl").exists() else []
    history = [json.loads(x) for x in lines if x.strip()]
    curve = [[int(h["step"]), float(h["success_rate"])] for h in history]
    out = {
        "exit": code,
        "curve": curve,
        "final": curve[-1][1] if curve else None,
        "best": max((c[1] for c in curve), default=None),
        "steps_to_90": steps_to(curve, 0.9),
        "seconds": time.perf_counter() - t0,
        "log": str(run_dir.with_suffix(".log")),
    }
    if code != 0:
        out["error"] = f"exit {code}; see {out['log']}"
    else:
        (run_dir / DONE_FILE).write_text(json.dumps(out))
    return out


def steps_to(curve: Sequence[Sequence[float]], target: float) -> int | None:
    """The first step of a ``[[step, success], ...]`` curve at or above ``target``; None: not reached."""
    return next((int(c[0]) for c in curve if c[1] >= target), None)


def ratio(a: Any, b: Any) -> float | None:
    """``a / b``, or None (unknown) when either is missing or zero."""
    return a / b if a and b else None
