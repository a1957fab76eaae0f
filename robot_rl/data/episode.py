"""Accumulate one episode's transitions as they happen, in the form the store and the replay buffer take."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
        self._proposed: list[np.ndarray | None] = []
        self.final_obs: Mapping[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def add(
        self,
        obs: Mapping[str, np.ndarray],
        action: np.ndarray,
        reward: float,
        terminated: bool,
        truncated: bool,
        next_obs: Mapping[str, np.ndarray],
        is_intervention: bool = False,
        timestamp: float = 0.0,
        policy_action: np.ndarray | None = None,
    ) -> None:
        """One transition; ``action`` is the executed one (the human's when intervening), ``timestamp`` seconds,
        ``policy_action`` the one the policy proposed (differs from ``action`` where a person took over)."""
        self._obs.append(obs)
        self._proposed.append(None if policy_action is None else np.asarray(policy_action, np.float32))
        self._rows.append(
            (
                np.asarray(action, np.float32),
                float(reward),
                bool(terminated),
                bool(truncated),
                bool(is_intervention),
                float(timestamp),
            )
        )
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
        return {
            "obs": {k: np.stack([o[k] for o in self._obs]) for k in self._obs[0]},
            "final_obs": {k: np.asarray(v) for k, v in self.final_obs.items()},
            "action": np.stack(action).astype(np.float32),
            "reward": reward.astype(np.float32),
            "terminated": term,
            "truncated": trunc,
            "is_intervention": interv.astype(bool),
            "timestamp": stamp.astype(np.float64),
        }

    def policy_actions(self) -> np.ndarray | None:
        """(T, A) float32: the action the policy proposed at each step so far, or None when a step was added without
        one. Not part of :meth:`build`: the store keeps executed actions only."""
        if not self._proposed or any(a is None for a in self._proposed):
            return None
        return np.stack(self._proposed)


def intervention_segments(episode: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The runs of consecutive ``is_intervention`` steps of an episode, each as an episode of its own.

    A segment that stops before the episode does ends in a cut (``truncated`` on its last step, bootstrapping from
    the observation that followed, kept as its ``final_obs``); one that reaches the episode's end keeps its flags.
    These go into the demo buffer so human corrections are replayed like demonstrations (HIL-SERL).
    """
    flags = np.asarray(episode["is_intervention"], bool)
    steps = len(flags)
    edges = np.flatnonzero(np.diff(np.r_[0, flags.astype(np.int8), 0]))
    out = []
    for a, b in zip(edges[::2], edges[1::2]):
        seg = {k: episode[k][a:b] for k in ("action", "reward", "terminated", "truncated", "is_intervention")}
        seg = {k: np.array(v, copy=True) for k, v in seg.items()}
        seg["obs"] = {k: v[a:b] for k, v in episode["obs"].items()}
        if b < steps:
            seg["final_obs"] = {k: v[b] for k, v in episode["obs"].items()}
            seg["truncated"][-1] = not seg["terminated"][-1]
        else:
            seg["final_obs"] = episode["final_obs"]
        if "timestamp" in episode:
            seg["timestamp"] = np.asarray(episode["timestamp"][a:b])
        out.append(seg)
    return out


def takeover_starts(is_intervention: np.ndarray) -> np.ndarray:
    """Indices ``t`` where a take-over begins after a step the policy drove: step ``t`` is an intervention, ``t - 1``
    is not (a take-over from the first step of an episode has no policy step before it and is not listed)."""
    flags = np.asarray(is_intervention, bool)
    return np.flatnonzero(flags[1:] & ~flags[:-1]) + 1


def penalize_takeovers(episode: Mapping[str, Any], reward: float) -> dict[str, Any]:
    """A copy of ``episode`` whose policy step right before each take-over (:func:`takeover_starts` minus one) has
    ``reward`` added: the take-over as a learning signal on the action that led to it (RLIF, Luo et al. 2023, use
    -1). The step keeps its end flags, so the value still bootstraps through the corrected states."""
    out = dict(episode)
    out["reward"] = np.array(episode["reward"], np.float32, copy=True)
    out["reward"][takeover_starts(episode["is_intervention"]) - 1] += np.float32(reward)
    return out


def trigger_transitions(episode: Mapping[str, Any], policy_action: np.ndarray, reward: float) -> list[dict[str, Any]]:
    """One terminal transition per take-over: at the state where the person took over (the first step of each run
    of intervention steps, the episode's first step included), the action the *policy* proposed there, with
    ``reward`` and ``terminated`` set, so its value is pushed to ``reward`` without bootstrapping. The proposed action
    was never executed; the take-over says it should not have been. Each is a one-step episode for
    :meth:`~robot_rl.data.replay.ReplayBuffer.add_episode` (``is_intervention`` False: it is the policy's action and
    must not be cloned). ``policy_action`` (T, A) as :meth:`EpisodeBuilder.policy_actions` gives it."""
    flags = np.asarray(episode["is_intervention"], bool)
    proposed = np.asarray(policy_action, np.float32)
    if proposed.shape != np.shape(episode["action"]):
        raise ValueError(
            f"policy_action has shape {proposed.shape}; the episode's actions are {np.shape(episode['action'])}"
        )
    starts = np.flatnonzero(flags & ~np.r_[False, flags[:-1]])
    out = []
    for t in starts:
        obs = {k: v[t : t + 1] for k, v in episode["obs"].items()}
        out.append(
            {
                "obs": obs,
                "final_obs": {k: v[0] for k, v in obs.items()},
                "action": proposed[t : t + 1],
                "reward": np.array([reward], np.float32),
                "terminated": np.ones(1, bool),
                "truncated": np.zeros(1, bool),
                "is_intervention": np.zeros(1, bool),
            }
        )
    return out


def episode_stats(episode: Mapping[str, Any], success: bool) -> dict[str, float]:
    """What a collected episode logs (``train/<name>``, the same in sync and async runs): success, length (steps),
    return, intervention steps, their share of the episode and the number of take-overs (runs of them)."""
    flags = np.asarray(episode["is_intervention"], bool)
    return {
        "episode_success": float(success),
        "episode_length": float(len(flags)),
        "episode_return": float(np.sum(episode["reward"])),
        "intervention_steps": float(flags.sum()),
        "intervention_rate": float(flags.mean()) if len(flags) else 0.0,
        "takeovers": float(np.count_nonzero(np.diff(np.r_[0, flags.astype(np.int8)]) == 1)),
    }
