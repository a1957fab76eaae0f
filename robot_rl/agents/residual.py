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

DSRL (Wagenmaker et al. 2025) is the other way to steer a frozen base: :class:`NoiseActionWrapper` makes the base's
latent noise the action. The agent is plain SAC/RLPD whose actions ``w`` in [-1, 1]^(H x A) give the noise
``dsrl_noise_bound x w`` of a flow-matching base's chunk, of which the env executes the first action (one env step
per agent step, so env-step counts compare with every other run). The stores then hold the noise as the action;
a person's take-over has no noise to store, so DSRL runs without ``hil``.
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

    def forward(
        self, feat: torch.Tensor, deterministic: bool = False, with_mean: bool = False
    ) -> tuple[torch.Tensor, ...]:
        a, logp, *mean = self.inner(feat, deterministic=deterministic, with_mean=with_mean)
        base = feat[:, -self.action_dim :]
        return compose(base, a, self.scale, self.gain), logp, *[compose(base, m, self.scale, self.gain) for m in mean]

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

    def propose_episode(self, episode: dict[str, Any]) -> dict[str, Any]:
        """A stored episode recorded without the base (teleop demos, a plain run's store) with the base's proposals
        added as this wrapper would have: the base replayed over its observations from a reset, the final one
        included. Leaves the base reset for the next episode."""
        obs, final, t = episode["obs"], episode["final_obs"], len(episode["action"])
        self.base.reset()
        proposed = np.stack([self._with_base({k: v[i] for k, v in obs.items()})[BASE_KEY] for i in range(t)])
        last = self._with_base(final)[BASE_KEY]
        self.base.reset()
        return {**episode, "obs": {**obs, BASE_KEY: proposed}, "final_obs": {**final, BASE_KEY: last}}


class NoiseActionWrapper(gym.Wrapper):
    """The agent's action is the latent noise of a flow-matching base's next chunk (see the module docstring); the
    env executes the chunk's first action. ``info["executed_action"]`` is not passed on: the stores keep the noise,
    the agent's action."""

    action_semantics = "latent noise of a flow-matching base policy's action chunk / dsrl_noise_bound, in [-1, 1]"

    def __init__(self, env: gym.Env, base: Any, bound: float):
        from robot_rl.agents.bc import FlowHead

        super().__init__(env)
        if not isinstance(base.head, FlowHead):
            raise ValueError("agent=dsrl steers a flow-matching base: train it with robot-rl train-bc policy=flow")
        self.base, self.bound = base, float(bound)
        self.action_space = spaces.Box(-1.0, 1.0, (base.head.dim,), np.float32)

    def step(self, action: np.ndarray):
        noise = self.bound * np.clip(np.asarray(action, np.float32), -1.0, 1.0)
        chunk = self.base.predict_chunk(self._obs, noise=noise)
        obs, reward, terminated, truncated, info = self.env.step(chunk[0])
        self._obs = obs
        info = {k: v for k, v in info.items() if k != "executed_action"}
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs: Any):
        self._obs, info = self.env.reset(**kwargs)
        return self._obs, info


def check_base_policy(cfg: Any) -> str | None:
    """The run's ``base_policy``, or None; raises ``ValueError`` naming what to pass when the agent steers a base
    (``residual``, or DSRL's ``dsrl_noise_bound``) and no base policy is given, or the other way round, and for what
    DSRL cannot take (demonstrations and take-overs in the env's action space)."""
    agent, path = cfg.get("agent") or {}, cfg.get("base_policy")
    residual, dsrl = bool(agent.get("residual", False)), float(agent.get("dsrl_noise_bound", 0.0) or 0.0) > 0
    if residual and dsrl:
        raise ValueError("an agent is residual or DSRL (dsrl_noise_bound > 0), not both")
    if (residual or dsrl) != bool(path):
        if path:
            raise ValueError(f"base_policy={path} needs an agent that steers it: add agent=residual (or agent=dsrl)")
        raise ValueError(
            f"agent={agent.get('name', '?')} steers a base policy: pass base_policy=<a robot-rl train-bc run directory>"
        )
    if dsrl:
        demos = cfg.get("demos") or {}
        hil = (cfg.get("hil") or {}).get("name", "none")
        if int(demos.get("episodes", 0) or 0) > 0 or demos.get("path") or hil != "none" or cfg.get("prefill"):
            raise ValueError(
                "agent=dsrl acts in the base policy's noise space, which demonstrations and take-overs have no value "
                "in: set demos.episodes=0, no demos.path or prefill, and hil=none (agent=residual takes them)"
            )
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
    bound = float(cfg.agent.get("dsrl_noise_bound", 0.0) or 0.0)
    return NoiseActionWrapper(env, base, bound) if bound > 0 else BaseActionWrapper(env, base)
