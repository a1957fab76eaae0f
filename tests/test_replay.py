import threading

import numpy as np
import pytest
import torch
from gymnasium import spaces
from hypothesis import given, settings
from hypothesis import strategies as st

from robot_rl.data.replay import ReplayBuffer, mixed_batches

SPACE = spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (2,), np.float32)})


def obs(v):
    return {"state": np.array([v, -v], np.float32)}


def fill(buf, episodes):
    """episodes: list of (length, end) with end in {"term", "trunc"}; obs value encodes (episode, t)."""
    for e, (length, end) in enumerate(episodes):
        for t in range(length):
            last = t == length - 1
            buf.add(
                obs(100 * e + t),
                np.zeros(1),
                float(t),
                last and end == "term",
                last and end == "trunc",
                obs(100 * e + t + 1),
            )


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


def _episode(e, length, end):
    states = np.stack([obs(100 * e + t)["state"] for t in range(length)])
    flags = np.zeros(length, bool)
    term, trunc = flags.copy(), flags.copy()
    (term if end == "term" else trunc)[-1] = True
    return {
        "obs": {"state": states},
        "final_obs": obs(100 * e + length),
        "action": np.arange(length)[:, None] * 1.0,
        "reward": np.arange(length, dtype=np.float32),
        "terminated": term,
        "truncated": trunc,
        "is_intervention": flags,
    }


@pytest.mark.parametrize("capacity", [7, 10, 64])
def test_bulk_episode_add_equals_step_by_step_adds(capacity):
    episodes = [(6, "trunc"), (3, "term"), (9, "trunc"), (4, "term")]  # wraps; one episode longer than capacity 7
    bulk, steps = ReplayBuffer(SPACE, 1, capacity), ReplayBuffer(SPACE, 1, capacity)
    for e, (length, end) in enumerate(episodes):
        bulk.add_episode(_episode(e, length, end))
        ep = _episode(e, length, end)
        for t in range(length):
            nxt = ep["final_obs"] if t == length - 1 else {"state": ep["obs"]["state"][t + 1]}
            steps.add(
                {"state": ep["obs"]["state"][t]},
                ep["action"][t],
                ep["reward"][t],
                ep["terminated"][t],
                ep["truncated"][t],
                nxt,
            )
    a, b = bulk.state_dict(), steps.state_dict()
    assert (a["pos"], a["size"]) == (b["pos"], b["size"])
    for k in ("action", "reward", "terminated", "truncated"):
        np.testing.assert_array_equal(a[k], b[k])
    np.testing.assert_array_equal(a["obs"]["state"], b["obs"]["state"])
    np.testing.assert_array_equal(a["final_slots"], b["final_slots"])
    np.testing.assert_array_equal(a["final_next_obs"]["state"], b["final_next_obs"]["state"])
    check_all(bulk)


def test_images_stay_uint8_from_buffer_to_batch():
    space = spaces.Dict(
        {"state": spaces.Box(-1, 1, (2,), np.float32), "front": spaces.Box(0, 255, (8, 8, 3), np.uint8)}
    )
    buf = ReplayBuffer(space, 1, 16)
    assert buf.obs["front"].dtype == np.uint8 and buf.obs["front"].nbytes == 16 * 8 * 8 * 3
    img = lambda v: np.full((8, 8, 3), v, np.uint8)  # noqa: E731
    for t in range(5):
        buf.add(
            {"state": np.zeros(2, np.float32), "front": img(t)},
            np.zeros(1),
            0.0,
            False,
            t == 4,
            {"state": np.zeros(2, np.float32), "front": img(t + 1)},
        )
    b = buf.sample(32, np.random.default_rng(0))
    assert b["obs"]["front"].dtype == torch.uint8 and b["obs"]["front"].shape == (32, 8, 8, 3)
    torch.testing.assert_close(b["next_obs"]["front"].int(), b["obs"]["front"].int() + 1)


def test_intervention_segments_become_episodes_that_bootstrap_at_their_cut():
    from robot_rl.data.episode import intervention_segments

    ep = _episode(0, 8, "term")
    ep["is_intervention"] = np.array([0, 1, 1, 0, 0, 1, 1, 1], bool)
    first, second = intervention_segments(ep)
    np.testing.assert_array_equal(first["obs"]["state"][:, 0], [1, 2])
    assert first["truncated"][-1] and not first["terminated"][-1] and first["final_obs"]["state"][0] == 3
    np.testing.assert_array_equal(second["obs"]["state"][:, 0], [5, 6, 7])
    assert second["terminated"][-1] and not second["truncated"][-1] and second["final_obs"]["state"][0] == 8
    buf = ReplayBuffer(SPACE, 1, 20)
    for seg in (first, second):
        buf.add_episode(seg)
    check_all(buf)  # every next observation is the true successor
    assert intervention_segments(_episode(1, 4, "trunc")) == []


@settings(max_examples=200, deadline=None)
@given(
    episodes=st.lists(st.tuples(st.integers(1, 8), st.sampled_from(["term", "trunc"])), min_size=1, max_size=6),
    running=st.integers(0, 4),
    capacity=st.integers(4, 40),
    n_step=st.integers(1, 4),
)
def test_n_step_rows_sum_the_rewards_up_to_n_steps_ahead_within_their_episode(episodes, running, capacity, n_step):
    """Against a reference walk over every transition ever added (g: its global index, the observation's value;
    an episode's final observation g + 0.5), through ring wrap-around and a running episode at the end."""
    gamma = 0.9
    buf = ReplayBuffer(SPACE, 1, capacity, n_step=n_step, discount=gamma)
    steps = [(length, end) for length, end in episodes] + ([(running, None)] if running else [])
    trans = []  # (reward, terminated, truncated) per global index
    for length, end in steps:
        for t in range(length):
            g, last = len(trans), t == length - 1
            term, trunc = last and end == "term", last and end == "trunc"
            buf.add(obs(g), np.zeros(1), float(g % 7) + 0.5, term, trunc, obs(g + (0.5 if last else 1)))
            trans.append((float(g % 7) + 0.5, term, trunc))
    if buf.num_sampleable == 0:
        return
    b = buf.sample(256, np.random.default_rng(0))
    assert ("discount" in b) == (n_step > 1)
    pending = len(trans) - 1 if running else None
    for i, g in enumerate(b["obs"]["state"][:, 0].int().tolist()):
        ret, k, ended = 0.0, 0, False
        while k < n_step and not ended and g + k != pending:
            r, term, trunc = trans[g + k]
            ret, k, ended = ret + gamma**k * r, k + 1, term or trunc
        end = g + k - 1
        assert b["reward"][i] == pytest.approx(ret, rel=1e-5)
        assert b["next_obs"]["state"][i, 0] == end + (0.5 if ended else 1)
        assert b["terminated"][i] == trans[end][1] and b["truncated"][i] == trans[end][2]
        if n_step > 1:
            assert b["discount"][i] == pytest.approx(gamma**k, rel=1e-5)
