"""Aligning robot state and camera messages by header stamp (pure Python, no ROS import).

Each topic keeps a short buffer of ``(stamp_ns, value)``; an observation is the newest message of the trigger
topic (joint states) newer than a given stamp, together with the message of every other topic whose stamp is
closest to it and within a tolerance. Stamps are integer nanoseconds on the ROS clock (sim time in lockstep).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from typing import Any


class StampedBuffer:
    """The last ``maxlen`` messages of one topic, as ``(stamp_ns, value)`` in arrival order."""

    def __init__(self, name: str, maxlen: int = 16):
        self.name = name
        self.items: deque[tuple[int, Any]] = deque(maxlen=maxlen)
        self.received = 0
        self.rejected = 0
        self.arrived: float | None = None  # time.monotonic() of the newest valid message

    def add(self, stamp_ns: int, value: Any) -> None:
        self.items.append((int(stamp_ns), value))
        self.received += 1
        self.arrived = time.monotonic()

    def clear(self) -> None:
        self.items.clear()

    def latest(self) -> tuple[int, Any] | None:
        return self.items[-1] if self.items else None

    def closest(self, stamp_ns: int, tol_ns: int) -> tuple[int, Any] | None:
        """The message whose stamp is nearest ``stamp_ns`` (ties: the newer), if within ``tol_ns``."""
        best = None
        for t, v in self.items:
            d = abs(t - stamp_ns)
            if d <= tol_ns and (best is None or d <= abs(best[0] - stamp_ns)):
                best = (t, v)
        return best


def align(
    trigger: StampedBuffer,
    others: Mapping[str, StampedBuffer],
    after_ns: int,
    tol_ns: int,
    trigger_key: str | None = None,
) -> tuple[int, dict[str, Any]] | None:
    """Newest complete observation with trigger stamp > ``after_ns``.

    Returns ``(stamp_ns, {key: value})`` holding the trigger's value under ``trigger_key`` (default: its name) and,
    for each other
    buffer, its message closest in stamp (within ``tol_ns``); ``None`` when no trigger message newer than
    ``after_ns`` has a full set yet.
    """
    for t, v in reversed(trigger.items):
        if t <= after_ns:
            break
        out = {trigger_key or trigger.name: v}
        for name, buf in others.items():
            hit = buf.closest(t, tol_ns)
            if hit is None:
                break
            out[name] = hit[1]
        else:
            return t, out
    return None


def staleness_report(buffers: Mapping[str, StampedBuffer], now_ns: int, after_ns: int | None = None) -> str:
    """One line per topic (by topic name): its newest stamp's age on the ROS clock and when it last arrived (wall
    clock), or that nothing valid arrived; for error messages."""
    lines = []
    for buf in buffers.values():
        last = buf.latest()
        rej = f", {buf.rejected} rejected" if buf.rejected else ""
        if last is None:
            lines.append(f"  {buf.name}: nothing received{rej}")
            continue
        newer = "" if after_ns is None or last[0] > after_ns else ", none newer than the command"
        wall = "" if buf.arrived is None else f", last arrived {time.monotonic() - buf.arrived:.2f} s ago"
        lines.append(f"  {buf.name}: newest stamp {(now_ns - last[0]) / 1e9:.3f} s old{wall}{newer}{rej}")
    return "\n".join(lines)
