"""Progress model and potential-based shaping: progress labels from episodes, two-hot targets, a progress model that
ranks held-out frames, one-shot adaptation to a changed variant, shaping that telescopes and leaves the optimal
policy unchanged (termination and truncation), and bad input."""

import itertools

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from test_rewards_helpers import SquareEnv, record, square_store  # noqa: F401

from robot_rl.data.episode import EpisodeBuilder
from robot_rl.data.store import EpisodeStore, StoreSchema
from robot_rl.rewards import RewardDataError, load_reward_model, wrap_reward
from robot_rl.rewards.frames import LabelRule, load_frames
from robot_rl.rewards.progress import (
    ProgressConfig,
    adapt_progress,
    expected_progress,
    progress_labels,
    progress_metrics,
    train_progress,
    two_hot,
)
from robot_rl.rewards.shaping import PotentialShaping

TINY = {
    "steps": 250,
    "eval_every": 125,
    "batch_size": 32,
    "feature_dim": 16,
    "hidden": 32,
    "num_kernels": 4,
    "bins": 6,
    "reward_marks": 1.0,
    "val_fraction": 0.3,
    "adapt_steps": 250,
}


def test_progress_labels_run_from_0_to_1_at_the_first_success(square_store):
    store = EpisodeStore.open(square_store)
    f = load_frames(store, rule=LabelRule(positive_last_k=1, margin=0, reward_marks=1.0))
    prog = progress_labels(f)
    for e, ok in zip(f.episodes, f.episode_success):
        rows = np.flatnonzero(f.episode == e)
        if not ok:
            assert np.isnan(prog[rows]).all()  # failures carry no progress label
            continue
        p = prog[rows]
        first = int(np.flatnonzero(store.episode(int(e))["reward"] >= 1)[0]) + 1  # frame after the first success
        np.testing.assert_allclose(p[: first + 1], np.arange(first + 1) / first, rtol=1e-6)
        assert (p[first:] == 1).all() and (np.diff(p) >= 0).all()


def test_two_hot_targets_decode_exactly():
    x = torch.tensor([0.0, 0.13, 0.5, 0.99, 1.0])
    t = two_hot(x, 6)
    assert torch.allclose(t.sum(-1), torch.ones(5)) and (t >= 0).all() and ((t > 0).sum(-1) <= 2).all()
    assert torch.allclose((t * torch.linspace(0, 1, 6)).sum(-1), x, atol=1e-6)
    assert torch.allclose(expected_progress(torch.log(t.clamp_min(1e-12))), x, atol=1e-5)


class CornerEnv(SquareEnv):
    """A changed variant: the goal is the top-left corner (the frames look the same; what counts as progress
    differs)."""

    def _success(self):
        return bool(self.pos[0] < 0.28 and self.pos[1] > 0.72)

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed)
        self.pos = self.np_random.uniform([0.6, 0.0], [1.0, 0.4])
        return self._obs(), info

    def expert_action(self, noise=0.0):
        return np.clip((np.array([0.14, 0.86]) - self.pos) / 0.12, -1, 1).astype(np.float32)


def record_corner(path, episodes, seed):
    env = CornerEnv(max_episode_steps=10)
    store = EpisodeStore.create(path, StoreSchema.from_spaces(env.observation_space, env.action_space, 10.0))
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        ep = EpisodeBuilder()
        while True:
            a = env.expert_action()
            nxt, r, term, trunc, info = env.step(a)
            ep.add(obs, a, r, term, trunc, nxt, timestamp=0.1 * len(ep))
            obs = nxt
            if term or trunc:
                break
        store.append_episode(**ep.build(), success=True, source="scripted", task="corner")
    return store


def corner_rank(model, store):
    f = load_frames(store, rule=LabelRule(1, 0, reward_marks=1.0))
    truth = progress_labels(f)
    return progress_metrics(model.score({c: f.images[c] for c in model.cameras}), truth, f.episode)["rank_correlation"]


def test_progress_model_ranks_frames_and_adapts_from_one_demo(tmp_path):
    store = record(tmp_path / "square.zarr", 8, 3, seed=1, steps=10)
    model, rep = train_progress(store, ProgressConfig.from_dict(TINY), seed=0, device="cpu", out=tmp_path / "pm")
    assert rep["validation"]["rank_correlation"] > 0.8 and rep["failed_episodes_left_out"] == 3, rep["validation"]
    assert (tmp_path / "pm" / "progress.png").stat().st_size > 0
    loaded = load_reward_model(tmp_path / "pm", "cpu")
    frames = {c: store.episode(0)["obs"][c] for c in model.cameras}
    np.testing.assert_allclose(loaded.score(frames), model.score(frames), atol=1e-6)
    assert loaded.threshold is None and not loaded.success(loaded.score(frames)).any()
    # a changed variant: the same frames mean different progress; one demonstration adapts the model
    held = record_corner(tmp_path / "corner_held.zarr", 4, seed=500)
    demo = record_corner(tmp_path / "corner_demo.zarr", 1, seed=900)
    before = corner_rank(loaded, held)
    adapt_progress(loaded, demo, seed=0)
    after = corner_rank(loaded, held)
    assert after > before + 0.3 and after > 0.5, (before, after)
    assert corner_rank(loaded, store) > 0.0  # replaying the original frames keeps some of the old variant


def test_progress_bad_input_is_named(tmp_path):
    failures = record(tmp_path / "fail.zarr", 0, 4, steps=6)
    with pytest.raises(RewardDataError, match="0 successful episode"):
        train_progress(failures, ProgressConfig.from_dict(TINY), device="cpu")
    ok = record(tmp_path / "ok.zarr", 3, 0, steps=6)
    with pytest.raises(RewardDataError, match=r"\['side'\] missing"):
        train_progress(ok, ProgressConfig.from_dict({**TINY, "cameras": ["side"]}), device="cpu")
    with pytest.raises(ValueError, match="unknown progress option"):
        ProgressConfig.from_dict({"bin": 3})


class Chain(gym.Env):
    """Deterministic chain 0..4: action 1 moves right, 0 stays; reaching 4 terminates with reward 1; time limit 6."""

    observation_space = spaces.Dict({"state": spaces.Box(0, 4, (1,), np.float32)})
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        self.s, self.t = 0, 0
        return {"state": np.array([self.s], np.float32)}, {}

    def step(self, a):
        self.s, self.t = min(4, self.s + int(a)), self.t + 1
        done = self.s == 4
        return {"state": np.array([self.s], np.float32)}, float(done), done, self.t >= 6 and not done, {}


def rollout(env, actions, gamma):
    env.reset()
    terms = []
    for a in actions:
        _, r, term, trunc, info = env.step(a)
        terms.append(info["shaping"])
        if term or trunc:
            return term, trunc, terms
    return False, False, terms


def step_from(env, s, a):
    """Reward, next state and termination of action ``a`` in chain state ``s``, through ``env``'s wrappers."""
    env.reset()
    for _ in range(s):
        env.step(1)
    obs, r, term, _, _ = env.step(a)
    return r, int(obs["state"][0]), term


def greedy(env, gamma, sweeps=200):
    """Value iteration on the chain with the rewards ``env`` pays: (Q (4, 2), greedy action per state)."""
    model = {(s, a): step_from(env, s, a) for s in range(4) for a in (0, 1)}
    v = np.zeros(5)
    for _ in range(sweeps):
        q = np.array(
            [[model[s, a][0] + gamma * (0 if model[s, a][2] else v[model[s, a][1]]) for a in (0, 1)] for s in range(4)]
        )
        v[:4] = q.max(1)
    return q, q.argmax(1)


def test_shaping_telescopes_and_keeps_the_optimal_policy():
    gamma = 0.9
    phi = {0: 0.3, 1: -2.0, 2: 5.0, 3: 0.7, 4: 9.0}  # arbitrary and misleading: state 2 looks best

    def potential(obs):
        return phi[int(obs["state"][0])]

    shaped = PotentialShaping(Chain(), potential, gamma)
    for actions in itertools.product([0, 1], repeat=6):
        term, trunc, terms = rollout(shaped, actions, gamma)
        n, s_end = len(terms), min(4, sum(actions[: len(terms)]))
        # the discounted sum of the added terms telescopes: -Phi(s0) after termination (Phi(terminal) = 0),
        # gamma^T Phi(s_T) - Phi(s0) after a time-limit truncation (s_T bootstraps)
        tele = sum(gamma**t * x for t, x in enumerate(terms))
        assert tele == pytest.approx(-phi[0] if term else gamma**n * phi[s_end] - phi[0])
    q_plain, pi_plain = greedy(Chain(), gamma)
    q_shaped, pi_shaped = greedy(PotentialShaping(Chain(), potential, gamma), gamma)
    assert pi_plain.tolist() == pi_shaped.tolist() == [1, 1, 1, 1]  # the same optimal policy
    np.testing.assert_allclose(q_shaped, q_plain - np.array([phi[s] for s in range(4)])[:, None], atol=1e-6)
    # raw progress as reward is the trap: parking at the state that looks most advanced beats finishing
    _, pi_raw = greedy(PotentialShaping(Chain(), potential, gamma, mode="raw"), gamma)
    assert pi_raw[2] == 0
    raw = PotentialShaping(Chain(), potential, gamma, mode="raw")
    raw.reset()
    _, r, *_, info = raw.step(1)
    assert r == phi[1] and info["potential"] == phi[1]
    with pytest.raises(ValueError, match="mode"):
        PotentialShaping(Chain(), potential, gamma, mode="dense")


def test_wrap_reward_shapes_on_top_of_ground_truth(tmp_path):
    store = record(tmp_path / "square.zarr", 4, 0, seed=2, steps=10)
    train_progress(store, ProgressConfig.from_dict({**TINY, "val_fraction": 0.25}), device="cpu", out=tmp_path / "pm")
    env = wrap_reward(
        SquareEnv(max_episode_steps=10),
        {"name": "ground_truth", "shaping": {"path": str(tmp_path / "pm")}},
        "cpu",
        gamma=0.99,
    )
    env.reset(seed=0)
    total = 0.0
    for _ in range(10):
        _, r, term, trunc, info = env.step(env.unwrapped.expert_action())
        assert r == pytest.approx(float(info["success"]) + info["shaping"])
        total += info["shaping"]
        if term or trunc:
            break
    assert total > 0  # the expert makes progress: shaping pays along the way
    # a demonstration recorded without shaping gets exactly the terms the env would have added
    demo = store.episode(0)
    shaped = env.shape_episode(demo)
    env.reset(seed=0)
    phis = [env.potential({k: v[t] for k, v in demo["obs"].items()}) for t in range(len(demo["action"]))]
    phis.append(env.potential(demo["final_obs"]))
    for t in range(len(demo["action"])):
        nxt = 0.0 if demo["terminated"][t] else phis[t + 1]
        assert shaped["reward"][t] == pytest.approx(demo["reward"][t] + 0.99 * nxt - phis[t], abs=1e-5)


def test_shaping_outermost_shapes_an_operators_success_mark(tmp_path):
    """An operator's success mark sets the step's reward and ends the episode; shaping sits outside it, so the
    terminal step still carries -Phi(s) (and no gamma * Phi(s')), as potential-based shaping needs."""
    from robot_rl.hil.devices import ActionLayout, DeviceState, TeleopDevice
    from robot_rl.hil.intervention import InterventionWrapper
    from robot_rl.rewards.wrapper import wrap_shaping

    class Marker(TeleopDevice):
        def __init__(self, marks):
            super().__init__(ActionLayout())
            self.marks = list(marks)

        def read(self):
            m = self.marks.pop(0) if self.marks else None
            return DeviceState(np.zeros(2, np.float32), False, frozenset({m} if m else ()))

    store = record(tmp_path / "square.zarr", 4, 0, seed=2, steps=10)
    train_progress(store, ProgressConfig.from_dict({**TINY, "val_fraction": 0.25}), device="cpu", out=tmp_path / "pm")
    cfg = {"name": "ground_truth", "shaping": {"path": str(tmp_path / "pm")}}
    env = wrap_shaping(InterventionWrapper(SquareEnv(max_episode_steps=10), Marker([None, "success"]), 1.0), cfg, "cpu")
    obs, _ = env.reset(seed=0)
    obs, r, term, _, info = env.step(np.zeros(2, np.float32))  # no mark: an ordinary shaped step
    assert not term and r == pytest.approx(info["shaping"])
    phi = env.potential(obs)
    _, r, term, _, info = env.step(np.zeros(2, np.float32))  # the operator marks success
    assert phi > 0.05  # so the missing term would show
    assert term and r == pytest.approx(1.0 - phi, abs=1e-5) and info["shaping"] == pytest.approx(-phi, abs=1e-5)
