"""Residual RL over a frozen base policy (ResiP, Ankile et al. 2024; Policy Decorator, Yuan et al. 2024): the base
(a ``robot-rl train-bc`` policy, chunked or not) proposes an action each step, and a SAC/RLPD actor learns a bounded
correction to it. An algorithm here is config plus its parts, not a copied agent:

* :class:`BaseActionWrapper` runs the base inside the env, so every process that makes the run's envs (the trainer,
  its evaluation, async and Ray actors, the ROS2 actor) runs it the same way: each observation gains
  ``base_action``, the base's proposal for that step (its chunk executor reset with the env). The stores keep it
  next to the observation.
* The SAC agent with ``residual: true`` appends ``base_action`` to its features (so the actor and the critic see
  the base's proposal) and acts through :class:`ResidualActor`: executed = ``clip(base + residual_scale x gain x
  a, -1, 1)`` with ``a`` the squashed Gaussian's sample in [-1, 1]^A. ``gain`` ramps from 0 to 1 over
  ``residual_phase_in`` updates (the correction is phased in while the critic learns what it does).
* The critic scores the executed action and the buffers store it, so a person's take-over (``hil=teleop``) is
  stored as what was executed, like any step, and the residual learns from it (the critic, and ``bc_weight``
  pulls the executed mean towards it).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn

BASE_KEY = "base_action"


def residual_gain(updates: int, phase_in: int) -> float:
    """The correction's share at ``updates``: rising linearly from 0 to 1 over ``phase_in`` updates (0: 1 from the
    start)."""
    return 1.0 if phase_in <= 0 else min(1.0, max(0, updates) / phase_in)


def compose(base: torch.Tensor, residual: torch.Tensor, scale: float, gain: float | torch.Tensor) -> torch.Tensor:
    """The executed action: ``clip(base + scale x gain x residual, -1, 1)``; with ``residual`` in [-1, 1] it lies
    within ``scale x gain`` of ``base`` in every dimension (and of the clipped base when the base is outside)."""
    return (base + scale * gain * residual).clamp(-1.0, 1.0)


class ResidualActor(nn.Module):
    """A :class:`~robot_rl.agents.networks.TanhGaussianActor` whose sample is a correction to the base action: the
    features' last ``action_dim`` entries are the base action (the residual agent appends them), and the output is
    :func:`compose` of it with the sample; the log-probability is the correction's (its entropy is what SAC
    regularises). ``gain`` is a buffer, so the actors' copies get the schedule with the policy weights."""

    def __init__(self, inner: nn.Module, action_dim: int, scale: float):
        super().__init__()
        self.inner, self.action_dim, self.scale = inner, int(action_dim), float(scale)
        self.register_buffer("gain", torch.ones(()))

    def forward(self, feat: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        a, logp = self.inner(feat, deterministic=deterministic)
        return compose(feat[:, -self.action_dim :], a, self.scale, self.gain), logp

    def mean_log_prob(self, feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        raise ValueError("a residual actor has no advantage-weighted regression: use loss sac or cql")


class BaseActionWrapper(gym.Wrapper):
    """Adds ``base_action`` (the base policy's action for this observation) to every observation; actions pass
    through untouched (the agent sends base + residual, a person their own)."""

    def __init__(self, env: gym.Env, base: Any):
        super().__init__(env)
        self.base = base
        shape = env.action_space.shape
        self.observation_space = spaces.Dict(
            {**env.observation_space.spaces, BASE_KEY: spaces.Box(-1.0, 1.0, shape, np.float32)}
        )

    def _with_base(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {**obs, BASE_KEY: np.asarray(self.base.act(obs, deterministic=True), np.float32)}

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self.base.reset()
        return self._with_base(obs), info

    def step(self, action: np.ndarray):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._with_base(obs), reward, terminated, truncated, info


def check_base_policy(cfg: Any) -> str | None:
    """The run's ``base_policy``, or None; raises ``ValueError`` naming what to pass when the agent is residual and
    no base policy is given, or the other way round."""
    agent, path = cfg.get("agent") or {}, cfg.get("base_policy")
    if bool(agent.get("residual", False)) != bool(path):
        if path:
            raise ValueError(f"base_policy={path} needs a residual agent: add agent=residual")
        raise ValueError("agent=residual corrects a base policy: pass base_policy=<a robot-rl train-bc run directory>")
    return str(path) if path else None


def wrap_base_policy(env: gym.Env, cfg: Any) -> gym.Env:
    """``env`` with the run's ``base_policy`` (a ``robot-rl train-bc`` run) proposing each step's action when the
    agent is residual; ``env`` itself otherwise. Raises ``ValueError`` as :func:`check_base_policy` does, and
    naming every spec mismatch between the base policy and the env."""
    path = check_base_policy(cfg)
    if path is None:
        return env
    from robot_rl.bc import load_policy

    base, _ = load_policy(path, env, device="cpu")
    return BaseActionWrapper(env, base)
