"""Hold the learner to its update-to-data ratio."""

from __future__ import annotations

import math


class RateLimiter:
    """How many learner updates the data received so far allows.

    After ``learning_starts`` env steps the learner may run ``updates_per_step`` updates per env step received
    (each update is ``utd_ratio`` critic steps: the same schedule as the one-process loop). It never runs ahead of
    that; when it is behind (the actor sped up), it catches up. The actor never waits for it.
    """

    def __init__(self, updates_per_step: float = 1.0, learning_starts: int = 0):
        if updates_per_step <= 0:
            raise ValueError(f"updates_per_step={updates_per_step} must be > 0")
        if learning_starts < 0:
            raise ValueError(f"learning_starts={learning_starts} must be >= 0")
        self.updates_per_step, self.learning_starts = float(updates_per_step), int(learning_starts)

    def budget(self, env_steps: int) -> int:
        """Total updates allowed after ``env_steps`` env steps."""
        if env_steps < self.learning_starts:
            return 0
        return math.floor(self.updates_per_step * (env_steps - self.learning_starts + 1) + 1e-9)

    def allowed(self, env_steps: int, updates_done: int) -> int:
        """Updates that may run now."""
        return max(0, self.budget(env_steps) - updates_done)
