import threading

import numpy as np
import pytest
import torch
from gymnasium import spaces

from robot_rl.data.replay import ReplayBuffer, mixed_batches

SPACE = spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (2,), np.float32)})


def obs(v):
    return {"state": np.array([v, -v], np.float32)}


def fill(buf, episodes):
    """episodes: list of (length, end) with end in {"term", "trunc"}; obs value encodes (episode, t)."""
    for e, (length, end) in enumerate(episodes):
        for t in range(length):
            last = t == length - 1
            buf.add(obs(100 * e + t), np.zeros(1), float(t), last and end == "term", last and end == "trunc",
                    obs(100 * e + t + 1))


def check_all(buf, n=2000):
    b = buf.sample(n, np.random.default_rng(0))
    s, ns = b["obs"]["state"][:, 0], b["next_obs"]["state"][:, 0]
    torch.testing.assert_close(ns, s + 1)  # next obs is always the true successor, incl. the episode's last
    return b


def test_next_obs_at_termination_and_truncation():
    buf = ReplayBuffer(SPACE, 1, 100)
    fill(buf, [(3, "term"), (4, "trunc"), (2, "term")])
    b = check_all(buf)
    t = b["obs"]["state"][:, 0]
    assert torch.all(b["terminated"][t == 2] == 1) and torch.all(b["truncated"][t == 103] == 1)
    assert torch.all(b["terminated"][t == 103] == 0)  # truncation is not termination


def test_pending_slot_is_never_sampled_and_wraparound():
    buf = ReplayBuffer(SPACE, 1, 10)
    fill(buf, [(6, "trunc"), (7, "term")])  # 13 transitions through a 10-slot ring
    assert len(buf) == 10
    check_all(buf)
    buf.add(obs(500), np.zeros(1), 0.0, False, False, obs(501))  # episode still running
    assert buf.num_sampleable == 9
    b = check_all(buf)
    assert not torch.any(b["obs"]["state"][:, 0] == 500)


def test_empty_buffer_refuses_to_sample():
    buf = ReplayBuffer(SPACE, 1, 10)
    buf.add(obs(0), np.zeros(1), 0.0, False, False, obs(1))
    with pytest.raises(RuntimeError, match="no complete transition"):
        buf.sample(4, np.random.default_rng(0))


def test_mixed_batches_take_the_configured_share_from_demos():
    demo, online = ReplayBuffer(SPACE, 1, 50), ReplayBuffer(SPACE, 1, 50)
    fill(demo, [(10, "term")])
    for t in range(10):
        online.add(obs(1000 + t), np.zeros(1), 0.0, False, t == 9, obs(1001 + t))
    b = next(mixed_batches(demo, online, 64, 0.25, np.random.default_rng(0)))
    s = b["obs"]["state"][:, 0]
    assert int((s < 1000).sum()) == 16 and int((s >= 1000).sum()) == 48
    empty = ReplayBuffer(SPACE, 1, 50)
    only_demo = next(mixed_batches(demo, empty, 8, 0.5, np.random.default_rng(0)))
    assert torch.all(only_demo["obs"]["state"][:, 0] < 1000)


def test_state_dict_round_trip():
    a = ReplayBuffer(SPACE, 1, 10)
    fill(a, [(6, "trunc"), (7, "term")])
    b = ReplayBuffer(SPACE, 1, 10)
    b.load_state_dict(a.state_dict())
    x, y = a.sample(64, np.random.default_rng(3)), b.sample(64, np.random.default_rng(3))
    for k in ("action", "reward", "terminated", "truncated"):
        assert torch.equal(x[k], y[k])
    assert torch.equal(x["next_obs"]["state"], y["next_obs"]["state"])


def test_concurrent_add_and_sample():
    buf = ReplayBuffer(SPACE, 1, 64)
    fill(buf, [(5, "term")])
    errors = []

    def writer():
        try:
            fill(buf, [(7, "trunc")] * 60)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    th = threading.Thread(target=writer)
    th.start()
    rng = np.random.default_rng(0)
    while th.is_alive():
        b = buf.sample(32, rng)
        s, ns = b["obs"]["state"][:, 0], b["next_obs"]["state"][:, 0]
        assert torch.all(ns == s + 1)
    th.join()
    assert not errors
