"""Build an env from a task config (``configs/task/*.yaml``) without importing ``sim`` or ``hw``.

The config names the env by gymnasium id, ``"module:namespace/Name-vN"``; gymnasium imports the module, which
registers its envs. Sim and real robots differ only in that id and its kwargs.
"""

from __future__ import annotations

from typing import Any, Mapping

import gymnasium as gym

from robot_rl.envs.contract import FiniteGuard


def make_env(task: Mapping[str, Any], render_mode: str | None = None, **overrides: Any) -> gym.Env:
    """``task`` holds ``env_id`` and ``env_kwargs``; returns the env wrapped in :class:`FiniteGuard`."""
    env_id = task.get("env_id")
    if not env_id:
        raise ValueError(f"task config {task.get('name', '?')!r} has no env_id")
    kwargs = dict(task.get("env_kwargs") or {})
    kwargs.update(overrides)
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    try:
        env = gym.make(env_id, disable_env_checker=True, **kwargs)
    except gym.error.Error as e:
        raise ValueError(f"cannot make env {env_id!r}: {e}") from e
    return FiniteGuard(env)


def expert_action(env: gym.Env):
    """The scripted expert's action for the env's current state, if the task has one."""
    base = env.unwrapped
    if not hasattr(base, "expert_action"):
        raise ValueError(f"{type(base).__name__} has no scripted expert; give demos from a store instead")
    return base.expert_action()


def control_dt(env: gym.Env) -> float:
    """Seconds per env step (0.1 at 10 Hz); 1.0 if the env does not say."""
    return float(getattr(env.unwrapped, "control_dt", 1.0))
