"""Build an env from a task config (``configs/task/*.yaml``) without importing ``sim`` or ``hw``.

The config names the env by gymnasium id, ``"module:namespace/Name-vN"``; gymnasium imports the module, which
registers its envs. Sim and real robots differ only in that id and its kwargs.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from typing import Any

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
    return FiniteGuard(make_gym_env(env_id, **kwargs))


def make_gym_env(env_id: str, **kwargs: Any) -> gym.Env:
    """``gym.make`` that hands *every* kwarg to the env, ``max_episode_steps`` included.

    ``gym.make(id, max_episode_steps=N)`` keeps that argument for itself and adds a second ``TimeLimit`` wrapper,
    so an env that counts its own time limit would silently run with two. Building from a copy of the spec with the
    kwargs merged in avoids that: the env alone decides when an episode is truncated.
    """
    module, _, name = env_id.rpartition(":")
    try:
        if module:
            importlib.import_module(module)  # registers its envs
    except ImportError as e:
        raise ValueError(f"cannot make env {env_id!r}: module {module!r} failed to import ({e})") from e
    try:
        spec = gym.spec(name)
        spec = dataclasses.replace(spec, kwargs={**spec.kwargs, **kwargs})
        return gym.make(spec, disable_env_checker=True)
    except gym.error.Error as e:
        raise ValueError(f"cannot make env {env_id!r}: {e}") from e


def expert_action(env: gym.Env):
    """The scripted expert's action for the env's current state, if the task has one."""
    base = env.unwrapped
    if not hasattr(base, "expert_action"):
        raise ValueError(f"{type(base).__name__} has no scripted expert; give demos from a store instead")
    return base.expert_action()


def control_dt(env: gym.Env) -> float:
    """Seconds per env step (0.1 at 10 Hz); 1.0 if the env does not say."""
    return float(getattr(env.unwrapped, "control_dt", 1.0))


def find_wrapper(env: Any, kind: type) -> Any:
    """The first wrapper of type ``kind`` in ``env``'s chain of wrappers (``env`` itself included), or None."""
    while env is not None:
        if isinstance(env, kind):
            return env
        env = getattr(env, "env", None)
    return None
