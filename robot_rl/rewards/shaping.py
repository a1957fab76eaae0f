"""Potential-based reward shaping (Ng, Harada and Russell, 1999) with a learned potential, e.g. the progress model.

Each transition's reward becomes ``r + scale * (gamma * Phi(s') - Phi(s))``. Over an episode the added terms
telescope: their discounted sum is ``gamma^T Phi(s_T) - Phi(s_0)``, so every policy's return moves by an amount that
does not depend on its actions after the first state, and the optimal policy is unchanged, however wrong ``Phi``
is. What makes that hold at the episode's end:

* **Termination** (``terminated``: the task ended, the value target does not bootstrap): ``Phi(s') = 0``. An
  absorbing state must have potential 0, otherwise a policy could gain by ending episodes where ``Phi`` is high
  (or avoid ending them where it is low), which would change the optimal policy.
* **Truncation** (``truncated``: a time limit or a cut; the target bootstraps from ``s'``): the full
  ``gamma * Phi(s')``, as for any other step: ``s'`` is not terminal, its value continues past the cut.

``gamma`` must be the learner's discount (``agent.discount``) for the invariance to hold. ``mode="raw"`` adds
``scale * Phi(s')`` instead: not potential-based, kept as the ablation that shows the trap (the policy can collect
progress without finishing).

Every step's info gets ``potential`` (``Phi(s')``) and ``shaping`` (what was added to the reward).
Demonstrations recorded without shaping get the same terms through :meth:`PotentialShaping.shape_episode` (the
trainer does this for its demo buffer), so both buffers carry one reward.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np

SHAPING_MODES = ("potential", "raw")


class PotentialShaping(gym.Wrapper):
    """Adds potential-based shaping to ``env``'s reward (module docstring). ``potential``: observation -> float, or a
    reward model (its ``score`` of the observation's cameras)."""

    def __init__(
        self,
        env: gym.Env,
        potential: Callable[[Mapping[str, Any]], float] | Any,
        gamma: float,
        mode: str = "potential",
        scale: float = 1.0,
    ):
        super().__init__(env)
        if mode not in SHAPING_MODES:
            raise ValueError(f"reward.shaping.mode={mode!r} must be one of {', '.join(SHAPING_MODES)}")
        if not 0 < float(gamma) <= 1:
            raise ValueError(f"shaping gamma={gamma} must lie in (0, 1] (the learner's agent.discount)")
        if hasattr(potential, "score"):
            model = potential
            self.potentials = lambda obs: np.asarray(model.score({c: np.asarray(obs[c]) for c in model.cameras}))
        else:  # a per-observation callable
            self.potentials = lambda obs: np.array(
                [potential({k: v[i] for k, v in obs.items()}) for i in range(len(next(iter(obs.values()))))]
            )
        self.gamma, self.mode, self.scale = float(gamma), mode, float(scale)
        self._phi = 0.0

    def potential(self, obs: Mapping[str, Any]) -> float:
        return float(self.potentials({k: np.asarray(v)[None] for k, v in obs.items()})[0])

    def bonus(self, phi: np.ndarray, next_phi: np.ndarray, terminated: np.ndarray) -> np.ndarray:
        """What shaping adds to transitions with potentials ``phi`` -> ``next_phi`` (arrays, the same rule as
        :meth:`step`)."""
        if self.mode == "potential":
            return self.scale * (self.gamma * np.where(terminated, 0.0, next_phi) - phi)
        return self.scale * np.asarray(next_phi, np.float64)

    def shape_episode(self, episode: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of a stored episode (``obs``, ``final_obs``, ``reward``, ``terminated``) with the shaping terms
        added to its rewards, as :meth:`step` would have added them: for demonstrations recorded without shaping, so
        the demo and online buffers carry the same reward."""
        obs = {k: np.asarray(v) for k, v in episode["obs"].items()}
        phi = self.potentials(obs)
        next_phi = np.r_[phi[1:], self.potential(episode["final_obs"])]
        out = dict(episode)
        out["reward"] = (
            np.asarray(episode["reward"], np.float64)
            + self.bonus(phi, next_phi, np.asarray(episode["terminated"], bool))
        ).astype(np.float32)
        return out

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._phi = self.potential(obs)
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        phi = self.potential(obs)
        bonus = float(self.bonus(np.array([self._phi]), np.array([phi]), np.array([terminated]))[0])
        self._phi = phi
        info = dict(info)
        info["potential"], info["shaping"] = phi, bonus
        return obs, float(reward) + bonus, terminated, truncated, info


__all__ = ["SHAPING_MODES", "PotentialShaping"]
