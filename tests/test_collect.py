"""The one collection loop (robot_rl/collect.py): what it keeps of each step, and how it files episodes."""

import os
import signal

import gymnasium as gym
import numpy as np
import pytest
from toy_env import PointReach

from robot_rl.collect import Collector, episode_metrics, episode_seed, open_online_store
from robot_rl.data.store import EpisodeStore


class TakesOver(gym.Wrapper):
    """A person drives steps 2 and 3 of every episode with their own action, as the intervention wrapper reports."""

    def reset(self, **kw):
        self.t = 0
        return self.env.reset(**kw)

    def step(self, action):
        human = self.t in (2, 3)
        executed = np.full(2, 0.5, np.float32) if human else action
        obs, r, term, trunc, info = self.env.step(executed)
        self.t += 1
        if human:
            info = {**info, "is_intervention": True, "executed_action": executed, "policy_action": action}
        return obs, r, term, trunc, info


def test_steps_keep_the_executed_action_and_episodes_carry_their_source(tmp_path):
    env = TakesOver(PointReach(max_episode_steps=6))
    with open_online_store(tmp_path, env) as store:
        c = Collector(
            env, task="toy", store=store, featurize=lambda o: {"state": o["state"] * 2}, keep_buffer_form=True
        )
        c.reset(seed=0)
        proposed = np.full(2, -1.0, np.float32)
        steps = [c.step(proposed) for _ in range(6)]
        assert [s.is_intervention for s in steps] == [False, False, True, True, False, False]
        np.testing.assert_array_equal(steps[2].action, np.full(2, 0.5))
        np.testing.assert_array_equal(steps[2].policy_action, proposed)
        np.testing.assert_array_equal(steps[0].fobs["state"], steps[0].obs["state"] * 2)  # featurized once per frame
        assert steps[-1].done and [s.timestamp for s in steps] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
        done = c.finish()
        assert len(c) == 0 and done.source == "intervention" and not done.success and not done.cut
        np.testing.assert_array_equal(done.episode["action"][2:4], np.full((2, 2), 0.5))
        np.testing.assert_array_equal(done.policy_action, np.full((6, 2), -1.0))
        np.testing.assert_array_equal(done.buffer_form["obs"]["state"], done.episode["obs"]["state"] * 2)
        # a cut episode: its last step bootstraps, and it is filed as the collector's own source when nobody drove
        c.reset(seed=1)
        c.step(proposed)
        cut = c.close("stopped")
        assert cut.cut and cut.episode["truncated"][-1] and cut.source == "policy"
        assert c.close("again") is None  # nothing running: nothing filed
    with EpisodeStore.open(tmp_path / "online.zarr") as store:
        assert len(store) == 2 and store.metadata(1)["notes"] == "stopped"
        assert [store.metadata(i)["source"] for i in range(2)] == ["intervention", "policy"]


def test_an_episode_is_filed_whole_even_when_a_signal_lands_while_it_is_filed(tmp_path):
    env = PointReach(max_episode_steps=3)

    class Interrupting:  # the store append raises SIGTERM at itself halfway, as a `kill` could
        def __init__(self):
            self.episodes = []

        def append_episode(self, **episode):
            os.kill(os.getpid(), signal.SIGTERM)
            self.episodes.append(episode)

    store = Interrupting()
    old = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        c = Collector(env, task="toy", store=store)
        c.reset(seed=0)
        while not c.step(np.zeros(2, np.float32)).done:
            pass
        with pytest.raises(KeyboardInterrupt):  # raised once the episode is filed and the collector cleared
            c.finish()
    finally:
        signal.signal(signal.SIGTERM, old)
    assert len(store.episodes) == 1 and len(c) == 0 and c.close("after") is None


def test_episode_metrics_name_what_sync_and_async_runs_log():
    ep = {"is_intervention": np.array([0, 1, 1, 0, 1], bool), "reward": np.ones(5, np.float32)}
    m = episode_metrics(ep, True, {"declared_steps": 2}, weight_lag_steps=7)
    assert m["takeovers"] == 2 and m["intervention_rate"] == pytest.approx(0.6) and m["episode_return"] == 5
    assert m["weight_lag_steps"] == 7 and m["reward_declared_steps"] == 2 and m["episode_success"] == 1


def test_episode_seeds_of_neighbouring_runs_share_no_start_state():
    """Each (run seed, episode) its own reset seed: run 1 does not replay run 0's episodes one episode later (as
    ``seed + episode`` did), and the seeds are stable, so a restarted actor picks up where the store ends."""
    seeds = {(run, ep): episode_seed(run, ep) for run in range(8) for ep in range(500)}
    assert len(set(seeds.values())) == len(seeds)
    assert episode_seed(3, 7) == seeds[3, 7] and all(0 <= v < 2**63 for v in seeds.values())
    env = PointReach()
    starts = {run: [env.reset(seed=episode_seed(run, ep))[0]["state"] for ep in range(6)] for run in (0, 1)}
    assert not any(np.allclose(a, b) for a in starts[0] for b in starts[1])
