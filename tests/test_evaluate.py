"""Evaluation statistics: the Wilson interval, the failed episodes' seeds, how they ended, and their replay."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from robot_rl.envs.make import make_env
from robot_rl.evaluate import _means, evaluate, wilson_interval


def test_wilson_interval_closed_forms():
    z2 = 1.96**2
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and high == pytest.approx(z2 / (20 + z2))  # 0 of 20: not "0% exactly"
    low, high = wilson_interval(20, 20)
    assert high == 1.0 and low == pytest.approx(20 / (20 + z2))  # 20 of 20: at least 84%, not 100%
    low, high = wilson_interval(995, 1000)
    assert 0.988 < low < 0.995 < high < 0.999


@given(n=st.integers(1, 5000), data=st.data())
def test_wilson_interval_holds_the_rate_and_narrows_with_more_episodes(n, data):
    k = data.draw(st.integers(0, n))
    low, high = wilson_interval(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0
    low4, high4 = wilson_interval(4 * k, 4 * n)
    assert high4 - low4 < high - low


def test_failed_seeds_replay_the_same_episodes(toy_task):
    env = make_env(toy_task)

    def wobbly(obs):  # deterministic, and right only sometimes: heads for the goal from one side of the plane
        x, y, gx, gy = obs["state"]
        d = np.array([gx - x, gy - y], np.float32)
        return np.clip(d / 0.15, -1, 1) if x > 0 else np.array([-1.0, 0.0], np.float32)

    res = evaluate(wobbly, env, 40, seed=7)
    assert res["episodes"] == 40 and 0 < len(res["failed_seeds"]) < 40
    assert res["success_rate"] == pytest.approx(1 - len(res["failed_seeds"]) / 40)
    assert res["success_ci_low"] < res["success_rate"] < res["success_ci_high"]
    again = evaluate(wobbly, env, 0, seed=0, seeds=res["failed_seeds"])
    assert again["success_rate"] == 0.0 and again["failed_seeds"] == res["failed_seeds"]
    # how the failures ended: all at the time limit, short of the goal; the info's text entry is left out
    assert res["failure_endings"]["time_limit"] == 1.0 and set(res["failure_endings"]) == {"time_limit", "distance"}
    assert res["failure_endings"]["distance"] >= 0.2


def test_failure_endings_are_empty_without_failures(toy_task):
    env = make_env(toy_task)

    def straight(obs):
        x, y, gx, gy = obs["state"]
        return np.clip(np.array([gx - x, gy - y], np.float32) / 0.15, -1, 1)

    res = evaluate(straight, env, 5, seed=0)
    assert res["success_rate"] == 1.0 and res["failure_endings"] == {}


def test_failure_endings_average_each_entry_over_the_episodes_that_report_it():
    rows = [{"lift": 0.0, "time_limit": 1.0}, {"lift": 0.02, "time_limit": 0.0, "slipped": 1.0}]
    assert _means(rows) == pytest.approx({"lift": 0.01, "time_limit": 0.5, "slipped": 1.0})
    assert _means([]) == {}
