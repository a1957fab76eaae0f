"""Tests of the dm_control adapter ``robot_rl/DMC-v0``."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import sim  # noqa: F401  (registers the env ids)
from robot_rl.envs.contract import NonFiniteError, check_env_contract

ENV_ID = "sim:robot_rl/DMC-v0"


def test_contract_state():
    env = gym.make(ENV_ID, domain="cartpole", task="swingup")
    check_env_contract(env, steps=10)
    assert env.observation_space["state"].shape == (5,)
    assert env.action_space.shape == (1,)
    assert env.unwrapped.control_dt == pytest.approx(0.01)
    env.close()


def test_contract_pixels():
    env = gym.make(ENV_ID, obs_mode="pixels", image_size=32, action_repeat=2)
    check_env_contract(env, steps=3)
    obs, _ = env.reset(seed=0)
    assert obs["front"].shape == (32, 32, 3) and obs["front"].dtype == np.uint8 and obs["front"].std() > 5
    env.close()


def test_suite_time_limit_truncates_never_terminates():
    env = gym.make(ENV_ID, action_repeat=16)  # 1000 control steps / 16 -> 63 env steps
    env.reset(seed=0)
    for t in range(1, 100):  # noqa: B007 (the count is checked after the loop)
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert not terminated and info["success"] is False and info["is_intervention"] is False
        assert 0.0 <= reward <= 16.0
        if truncated:
            break
    assert truncated and t == 63


def test_own_time_limit_and_seeding():
    env = gym.make(ENV_ID, domain="cheetah", task="run", max_episode_steps=3)
    first, _ = env.reset(seed=4)
    again, _ = env.reset(seed=4)
    other, _ = env.reset(seed=5)
    assert np.array_equal(first["state"], again["state"]) and not np.array_equal(first["state"], other["state"])
    flags = [env.step(np.zeros(6, np.float32))[3] for _ in range(3)]
    assert flags == [False, False, True]


def test_action_rescaling_and_nan():
    env = gym.make(ENV_ID, domain="cartpole", task="swingup").unwrapped
    env.reset(seed=0)
    env.step(np.array([1.0], np.float32))
    assert env._env.physics.data.ctrl[0] == pytest.approx(1.0)
    env.step(np.array([-0.5], np.float32))
    assert env._env.physics.data.ctrl[0] == pytest.approx(-0.5)
    with pytest.raises(NonFiniteError):
        env.step(np.array([np.nan], np.float32))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"domain": "cartpole", "task": "fly"}, "not a dm_control suite task"),
        ({"action_repeat": 0}, r"action_repeat=0.*\[1, 16\]"),
        ({"obs_mode": "rgb"}, "obs_mode"),
    ],
)
def test_invalid_kwargs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gym.make(ENV_ID, **kwargs)
