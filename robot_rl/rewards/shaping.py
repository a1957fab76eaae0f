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
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import gymnasium as gym
import numpy as np

SHAPING_MODES = ("potential", "raw")


class PotentialShaping(gym.Wrapper):
    """Adds potential-based shaping to ``env``'s reward (module docstring). ``potential``: observation -> float, or a
    reward model (its ``score`` of the observation's cameras)."""

    def __init__(self, env: gym.Env, potential: Callable[[Mapping[str, Any]], float] | Any, gamma: float,
                 mode: str = "potential", scale: float = 1.0):
        super().__init__(env)
        if mode not in SHAPING_MODES:
            raise ValueError(f"reward.shaping.mode={mode!r} must be one of {', '.join(SHAPING_MODES)}")
        if not 0 < float(gamma) <= 1:
            raise ValueError(f"shaping gamma={gamma} must lie in (0, 1] (the learner's agent.discount)")
        if hasattr(potential, "score"):
            model = potential
            potential = lambda obs: float(model.score({c: np.asarray(obs[c])[None] for c in model.cameras})[0])  # noqa: E731
        self.potential, self.gamma, self.mode, self.scale = potential, float(gamma), mode, float(scale)
        self._phi = 0.0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._phi = float(self.potential(obs))
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        phi = float(self.potential(obs))
        if self.mode == "potential":
            bonus = self.scale * (self.gamma * (0.0 if terminated else phi) - self._phi)
        else:
            bonus = self.scale * phi
        self._phi = phi
        info = dict(info)
        info["potential"], info["shaping"] = phi, bonus
        return obs, float(reward) + bonus, terminated, truncated, info


__all__ = ["SHAPING_MODES", "PotentialShaping"]
