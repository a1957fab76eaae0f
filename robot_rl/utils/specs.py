"""Observation/action specs saved with checkpoints, so a policy is never run on an env it was not trained for."""

from __future__ import annotations

from typing import Any

import gymnasium as gym


def env_spec(env: gym.Env) -> dict[str, Any]:
    """JSON-able description of an env's observation keys/shapes/dtypes and action shape."""
    obs = {k: {"shape": list(s.shape), "dtype": str(s.dtype)} for k, s in env.observation_space.spaces.items()}
    return {"observation": obs, "action": {"shape": list(env.action_space.shape)}}


def check_spec(saved: dict[str, Any], current: dict[str, Any], where: str) -> None:
    """Raise ``ValueError`` naming every mismatch between a checkpoint's spec and the env's."""
    problems = []
    s_obs, c_obs = saved["observation"], current["observation"]
    for key in sorted(set(s_obs) | set(c_obs)):
        if key not in c_obs:
            problems.append(f"observation {key!r} is in the checkpoint but not in the env")
        elif key not in s_obs:
            problems.append(f"observation {key!r} is in the env but not in the checkpoint")
        elif s_obs[key] != c_obs[key]:
            problems.append(f"observation {key!r}: checkpoint {s_obs[key]} vs env {c_obs[key]}")
    if saved["action"]["shape"] != current["action"]["shape"]:
        problems.append(f"action shape: checkpoint {saved['action']['shape']} vs env {current['action']['shape']}")
    if problems:
        raise ValueError(f"checkpoint {where} does not match this task: " + "; ".join(problems))
