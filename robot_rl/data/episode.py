"""Accumulate one episode's transitions as they happen, in the form the store and the replay buffer take."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np


class EpisodeBuilder:
    """Collects transitions of the running episode; :meth:`build` returns the episode dict of
    :meth:`EpisodeStore.append_episode <robot_rl.data.store.EpisodeStore.append_episode>` and
    :meth:`ReplayBuffer.add_episode <robot_rl.data.replay.ReplayBuffer.add_episode>`."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self._obs: list[Mapping[str, np.ndarray]] = []
        self._rows: list[tuple[np.ndarray, float, bool, bool, bool, float]] = []
        self.final_obs: Mapping[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, obs: Mapping[str, np.ndarray], action: np.ndarray, reward: float, terminated: bool,
            truncated: bool, next_obs: Mapping[str, np.ndarray], is_intervention: bool = False,
            timestamp: float = 0.0) -> None:
        """One transition; ``action`` is the executed one (the human's when intervening), ``timestamp`` seconds."""
        self._obs.append(obs)
        self._rows.append((np.asarray(action, np.float32), float(reward), bool(terminated), bool(truncated),
                           bool(is_intervention), float(timestamp)))
        self.final_obs = next_obs

    def build(self, cut: bool = False) -> dict[str, Any]:
        """The episode so far. ``cut=True`` marks its last step truncated (an episode stopped early, e.g. by
        Ctrl+C, is a time-limit cut: its last transition bootstraps)."""
        if not self._rows:
            raise ValueError("no transition recorded in this episode")
        action, reward, term, trunc, interv, stamp = (np.asarray(col) for col in zip(*self._rows))
        term, trunc = term.astype(bool), trunc.astype(bool)
        if cut and not (term[-1] or trunc[-1]):
            trunc[-1] = True
        return {"obs": {k: np.stack([o[k] for o in self._obs]) for k in self._obs[0]},
                "final_obs": {k: np.asarray(v) for k, v in self.final_obs.items()},
                "action": np.stack(action).astype(np.float32), "reward": reward.astype(np.float32),
                "terminated": term, "truncated": trunc, "is_intervention": interv.astype(bool),
                "timestamp": stamp.astype(np.float64)}
