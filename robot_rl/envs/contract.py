"""The env contract shared by simulated and real (ROS2) robots.

Every env robot_rl trains on is a gymnasium ``Env`` with

* ``observation_space``: a ``spaces.Dict`` holding ``"state"`` (float32, shape ``(D,)``, proprioception and,
  in sim state mode, privileged object state) and zero or more camera images (uint8, ``(H, W, 3)``),
  one per camera name;
* ``action_space``: a float32 ``Box`` in ``[-1, 1]``: end-effector deltas in a frame fixed to the reset pose,
  then the gripper command (if the task has one);
* ``info`` from ``reset`` and ``step`` carrying ``"success"`` (bool) and ``"is_intervention"`` (bool), plus
  ``"executed_action"`` when something other than the policy chose the action;
* time limits reported as ``truncated``, task completion or failure as ``terminated``.

:func:`check_env_contract` verifies all of this on a live env; tests run it on every sim task and on the
ROS2 env client, so both sides provably speak the same language.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

STATE_KEY = "state"
ACTION_SEMANTICS = "end-effector deltas in the reset-pose frame, then the gripper; all in [-1, 1] (envs/contract.py)"


# Validation of env settings, shared by the sim tasks and the robot client: a bad value is named with its range.
def check_choice(name: str, value: Any, choices: tuple) -> None:
    """Raise ValueError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is invalid; choose one of {list(choices)}")


def check_range(name: str, value: float, low: float, high: float) -> float:
    """Return ``float(value)``; raise ValueError unless ``low <= value <= high``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} must be a number in [{low}, {high}]") from None
    if not (low <= v <= high):
        raise ValueError(f"{name}={value!r} is out of range; valid range is [{low}, {high}]")
    return v


def check_vec(name: str, value: Any, low: float, high: float, n: int = 3) -> np.ndarray:
    """Return ``value`` as a float64 (n,) array; raise ValueError unless every entry lies in ``[low, high]``."""
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}={value!r} must be {n} finite numbers")
    if np.any(arr < low) or np.any(arr > high):
        raise ValueError(f"{name}={list(value)} is out of range; each entry must lie in [{low}, {high}]")
    return arr


class NonFiniteError(ValueError):
    """An observation or action held NaN or inf."""


def is_image_space(space: gym.Space) -> bool:
    """True for a uint8 ``(H, W, 3)`` Box, the contract's camera image."""
    return isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3 and space.shape[-1] == 3


def image_keys(observation_space: spaces.Dict) -> list[str]:
    """Camera names of an observation space, in a stable order."""
    return sorted(k for k, s in observation_space.spaces.items() if is_image_space(s))


def assert_finite(where: str, value: Any) -> None:
    """Raise :class:`NonFiniteError` naming ``where`` and the key if ``value`` holds NaN or inf.

    ``value`` is an array or a dict of arrays (an observation). Integer arrays (images) are always finite and skipped.
    """
    items = value.items() if isinstance(value, dict) else [("", value)]
    for key, arr in items:
        arr = np.asarray(arr)
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            bad = np.flatnonzero(~np.isfinite(arr.reshape(-1)))
            name = f"{where}[{key!r}]" if key else where
            raise NonFiniteError(
                f"{name} holds {len(bad)} non-finite value(s) (first at flat index {int(bad[0])}: "
                f"{arr.reshape(-1)[bad[0]]}); refusing to continue. Check the sensor, the policy or the teleop "
                "device that produced it."
            )


class FiniteGuard(gym.Wrapper):
    """Refuses NaN/inf at the env boundary: in actions going in, in observations and rewards coming out."""

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        assert_finite("observation", obs)
        return obs, info

    def step(self, action):
        assert_finite("action", action)
        obs, reward, terminated, truncated, info = self.env.step(action)
        assert_finite("observation", obs)
        assert_finite("reward", np.float64(reward))
        return obs, reward, terminated, truncated, info


def check_env_contract(env: gym.Env, steps: int = 5, seed: int = 0) -> None:
    """Assert that ``env`` satisfies the contract above. Raises ``AssertionError`` naming what is wrong.

    Checks the spaces, that observations lie in their space with the right dtypes, the ``info`` keys, the types of
    ``terminated``/``truncated``, and that ``reset(seed=s)`` followed by the same actions gives the same observations.
    """
    obs_space, act_space = env.observation_space, env.action_space
    assert isinstance(obs_space, spaces.Dict), f"observation_space must be spaces.Dict, got {type(obs_space)}"
    assert STATE_KEY in obs_space.spaces, f"observation_space lacks {STATE_KEY!r}: {list(obs_space.spaces)}"
    st = obs_space[STATE_KEY]
    assert isinstance(st, spaces.Box) and st.dtype == np.float32 and len(st.shape) == 1, f"bad state space {st}"
    for key, sp in obs_space.spaces.items():
        assert key == STATE_KEY or is_image_space(sp), f"observation {key!r} is neither state nor uint8 HxWx3: {sp}"
    assert isinstance(act_space, spaces.Box) and act_space.dtype == np.float32, f"bad action space {act_space}"
    assert np.all(act_space.low == -1.0) and np.all(act_space.high == 1.0), "actions must be normalised to [-1, 1]"

    def rollout() -> list[dict[str, np.ndarray]]:
        obs, info = env.reset(seed=seed)
        _check_obs(obs_space, obs)
        _check_info(info)
        act_rng = np.random.default_rng(seed)
        seen = [obs]
        for _ in range(steps):
            action = act_rng.uniform(-1, 1, size=act_space.shape).astype(np.float32)
            obs, reward, terminated, truncated, info = env.step(action)
            _check_obs(obs_space, obs)
            _check_info(info)
            assert np.isscalar(reward) or np.ndim(reward) == 0, f"reward must be a scalar, got {reward!r}"
            assert isinstance(terminated, (bool, np.bool_)), f"terminated must be bool, got {type(terminated)}"
            assert isinstance(truncated, (bool, np.bool_)), f"truncated must be bool, got {type(truncated)}"
            seen.append(obs)
            if terminated or truncated:
                break
        return seen

    first, second = rollout(), rollout()
    assert len(first) == len(second), "same seed and actions gave episodes of different lengths"
    for t, (a, b) in enumerate(zip(first, second)):
        for key in a:
            assert np.array_equal(a[key], b[key]), (
                f"reset(seed={seed}) is not deterministic: {key!r} differs at step {t}"
            )


def _check_obs(space: spaces.Dict, obs: dict[str, np.ndarray]) -> None:
    assert isinstance(obs, dict), f"observation must be a dict, got {type(obs)}"
    assert set(obs) == set(space.spaces), f"observation keys {sorted(obs)} != space keys {sorted(space.spaces)}"
    for key, sp in space.spaces.items():
        val = obs[key]
        assert isinstance(val, np.ndarray), f"{key!r} must be np.ndarray, got {type(val)}"
        assert val.dtype == sp.dtype, f"{key!r} dtype {val.dtype} != {sp.dtype}"
        assert val.shape == sp.shape, f"{key!r} shape {val.shape} != {sp.shape}"
    assert_finite("observation", obs)


def _check_info(info: dict[str, Any]) -> None:
    for key in ("success", "is_intervention"):
        assert key in info, f"info lacks {key!r}: {sorted(info)}"
        assert isinstance(info[key], (bool, np.bool_)), f"info[{key!r}] must be bool, got {type(info[key])}"
