"""Offline RL (robot_rl/agents/offline.py, robot_rl/offline.py): the IQL and CQL/Cal-QL losses on hand-made
tensors, Monte-Carlo returns in the replay buffer, relabelling a store with a reward model, the bad-input errors, and
from the command line an offline run on reach that learns from scripted demos alone and continues online."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces

from robot_rl.agents.offline import (
    awr_weights,
    calibrate,
    cql_penalty,
    dynamics_log_ratio,
    expectile_loss,
    h2o_penalty,
    h2o_td_weights,
    optimistic_labels,
    uniform_log_density,
)
from robot_rl.agents.sac import SAC, SACConfig
from robot_rl.data.replay import ReplayBuffer, mixed_batches, returns_to_go
from robot_rl.data.store import EpisodeStore

OBS = spaces.Dict({"state": spaces.Box(-1, 1, (4,), np.float32)})
ACT = spaces.Box(-1, 1, (2,), np.float32)


def episode(t: int, reward_at_end: float = 1.0, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "obs": {"state": rng.uniform(-1, 1, (t, 4)).astype(np.float32)},
        "final_obs": {"state": np.zeros(4, np.float32)},
        "action": rng.uniform(-1, 1, (t, 2)).astype(np.float32),
        "reward": np.r_[np.zeros(t - 1), reward_at_end].astype(np.float32),
        "terminated": np.r_[np.zeros(t - 1), 1].astype(bool),
        "truncated": np.zeros(t, bool),
        "is_intervention": np.zeros(t, bool),
    }


# ------------------------------------------------------------------------------------------- the losses
def test_expectile_loss_weighs_under_and_over_estimates_asymmetrically():
    diff = torch.tensor([2.0, -2.0])  # target above the prediction, then below
    assert expectile_loss(diff, 0.9).item() == pytest.approx((0.9 * 4 + 0.1 * 4) / 2)
    assert expectile_loss(torch.tensor([2.0]), 0.9).item() == pytest.approx(0.9 * 4)
    assert expectile_loss(torch.tensor([-2.0]), 0.9).item() == pytest.approx(0.1 * 4)
    # minimising it over a constant gives the expectile: the mean at 0.5, towards the maximum as it nears 1
    targets = torch.tensor([0.0, 1.0, 2.0, 3.0, 10.0])
    fitted = {}
    for tau in (0.5, 0.9, 0.99):
        v = torch.zeros((), requires_grad=True)
        opt = torch.optim.Adam([v], lr=0.05)
        for _ in range(3000):
            opt.zero_grad()
            expectile_loss(targets - v, tau).backward()
            opt.step()
        fitted[tau] = v.item()
    assert fitted[0.5] == pytest.approx(float(targets.mean()), abs=0.02)
    assert fitted[0.5] < fitted[0.9] < fitted[0.99] < 10.0 and fitted[0.99] > 8.0


def test_advantage_weights_are_exp_beta_advantage_clipped_and_carry_no_gradient():
    adv = torch.tensor([-1.0, 0.0, 0.5, 10.0], requires_grad=True)
    w = awr_weights(adv, beta=2.0, max_weight=100.0)
    np.testing.assert_allclose(w.numpy(), [np.exp(-2.0), 1.0, np.e, 100.0], rtol=1e-6)
    assert not w.requires_grad


def test_cql_penalty_is_the_soft_maximum_over_sampled_actions_minus_the_datas_q():
    q_data = torch.tensor([[1.0, 0.0]])  # (E=1, B=2)
    q_sampled = torch.tensor([[[0.0, 0.0, 0.0], [2.0, -1.0, 0.5]]])  # (1, 2, 3)
    expect = ((np.log(3.0) - 1.0) + (np.log(np.exp(2.0) + np.exp(-1.0) + np.exp(0.5)) - 0.0)) / 2
    assert cql_penalty(q_data, q_sampled).item() == pytest.approx(expect, rel=1e-6)
    # a low temperature makes it the hard maximum
    assert cql_penalty(q_data, q_sampled, temperature=1e-3).item() == pytest.approx(((0 - 1) + (2 - 0)) / 2, abs=1e-2)
    assert uniform_log_density(3) == pytest.approx(np.log(1 / 8))


def test_cal_ql_bounds_sampled_q_below_by_the_monte_carlo_return_and_leaves_unknown_returns_alone():
    q = torch.tensor([[[0.1, 0.9], [-3.0, 0.2]]])  # (1, B=2, N=2)
    out = calibrate(q, torch.tensor([0.5, -np.inf]))
    np.testing.assert_allclose(out.numpy(), [[[0.5, 0.9], [-3.0, 0.2]]])
    # in the agent: with returns far above every Q, the policy actions' Q in the penalty is the return
    agent = SAC(OBS, ACT, SACConfig(loss="cql", cql_calibrated=True, hidden_dims=(16,), batch_size=8, device="cpu"))
    buf = ReplayBuffer(OBS, 2, 64, mc_discount=agent.mc_discount)
    buf.add_episode({**episode(10), "reward": np.full(10, 50.0, np.float32)})
    batch = next(mixed_batches(None, buf, 8, 0.0, np.random.default_rng(0)))
    feat = agent.encode(batch["obs"])
    q_data = agent.critic(feat, batch["action"])
    _, metrics = agent._cql_penalty(feat, agent.encode(batch["next_obs"]), q_data, batch)
    assert metrics["cql_q_policy"].item() == pytest.approx(batch["mc_return"].mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match="mc_return"):  # Cal-QL without returns in its batches
        agent._cql_penalty(feat, feat, q_data, {k: v for k, v in batch.items() if k != "mc_return"})


def test_h2o_weights_and_penalty_follow_the_discriminators_dynamics_ratio():
    # the (s, a, s') classifier says "real" with log odds 2, 0 and -3; the (s, a) one is unsure (0) everywhere
    log_ratio = dynamics_log_ratio(torch.tensor([2.0, 0.0, -3.0, -1.0]), torch.zeros(4))
    np.testing.assert_allclose(log_ratio.numpy(), [2.0, 0.0, -3.0, -1.0])
    real = torch.tensor([0.0, 0.0, 0.0, 1.0])
    w = h2o_td_weights(log_ratio, real, clip=1.0)
    # simulated rows: exp(ratio) clipped at 1 (a transition the real dynamics would make is a full one); real: 1
    np.testing.assert_allclose(w.numpy(), [1.0, 1.0, np.exp(-3.0), 1.0], rtol=1e-6)
    q = torch.tensor([[1.0, 1.0, 1.0, 0.5]])
    # equal Q: the weights go by the gap u = max(-log ratio, 1e-6): nearly all on row 2 (u = 3)
    expect = 1.0 - 0.5
    assert h2o_penalty(q, log_ratio, real).item() == pytest.approx(expect, rel=1e-5)
    q = torch.tensor([[0.0, 0.0, 2.0, 0.0]])
    gap = np.array([1e-6, 1e-6, 3.0])
    soft = np.exp(np.log(gap) + np.array([0.0, 0.0, 2.0]))
    assert h2o_penalty(q, log_ratio, real).item() == pytest.approx(float((soft / soft.sum()) @ [0, 0, 2.0]), rel=1e-5)
    # a batch of one kind only: no penalty
    assert h2o_penalty(q, log_ratio, torch.zeros(4)).item() == 0.0


def test_h2o_agent_learns_to_tell_simulated_transitions_from_real_ones():
    # "real": s' = s + 0.3 a on the first three dims; "sim": s' = s - 0.3 a. Only (s, a, s') tells them apart.
    def transitions(sign: float, seed: int) -> dict:
        rng = np.random.default_rng(seed)
        t = 20
        o = rng.uniform(-1, 1, (t + 1, 4)).astype(np.float32)
        a = rng.uniform(-1, 1, (t, 2)).astype(np.float32)
        for k in range(t):
            o[k + 1, :2] = o[k, :2] + 0.3 * sign * a[k]
        return {**episode(t, 0.0, seed), "obs": {"state": o[:-1]}, "final_obs": {"state": o[-1]}, "action": a}

    torch.manual_seed(0)
    agent = SAC(OBS, ACT, SACConfig(loss="h2o", hidden_dims=(32, 32), batch_size=64, critic_lr=1e-3, device="cpu"))
    real, sim = ReplayBuffer(OBS, 2, 2000), ReplayBuffer(OBS, 2, 2000)
    for i in range(30):
        real.add_episode(transitions(1.0, i))
        sim.add_episode(transitions(-1.0, 100 + i))
    agent.fit_normalizer(real.obs["state"][:600])
    batches = mixed_batches(real, sim, 64, 0.5, np.random.default_rng(0))
    first = agent.update(batches)
    for _ in range(600):
        last = agent.update(batches)
    assert last["h2o_disc_loss"] < first["h2o_disc_loss"] - 0.2, (first, last)
    assert last["h2o_sim_weight"] < 0.7 < first["h2o_sim_weight"], (first, last)


def test_prior_rows_get_an_optimistic_reward_and_online_rows_keep_theirs():
    label = optimistic_labels(torch.tensor([0.2, 0.0]), torch.tensor([3.0, 0.5]), torch.tensor(0.5), bonus=2.0)
    np.testing.assert_allclose(label.numpy(), [0.2 + 2 * 6.0, 0.0 + 2 * 1.0])
    # in the agent: online rows near the origin train the reward model and RND; prior rows far away look novel
    torch.manual_seed(0)
    agent = SAC(OBS, ACT, SACConfig(optimistic_prior=True, hidden_dims=(32,), batch_size=64, device="cpu"))
    agent.fit_normalizer(np.random.default_rng(0).uniform(-0.1, 0.1, (100, 4)).astype(np.float32))
    rng = np.random.default_rng(1)
    for _ in range(300):
        online = torch.from_numpy(rng.uniform(-0.1, 0.1, (32, 4)).astype(np.float32))
        far = torch.from_numpy(rng.uniform(0.9, 1.0, (32, 4)).astype(np.float32))
        batch = {
            "obs": {"state": torch.cat([online, far])},
            "action": torch.zeros(64, 2),
            "reward": torch.cat([torch.full((32,), 0.5), torch.full((32,), -7.0)]),  # the prior's are ignored
            "from_demo": torch.cat([torch.zeros(32), torch.ones(32)]),
        }
        reward, metrics = agent._optimistic_reward(agent.encode(batch["obs"]), batch["action"], batch)
    np.testing.assert_array_equal(reward[:32].numpy(), batch["reward"][:32].numpy())
    assert metrics["prior_reward_loss"] < 0.05  # the reward model fits the online rewards (0.5 each; 0.25 at the start)
    assert (reward[32:] > 1.0).all(), reward[32:]  # estimate ~0.5 plus a bonus: far rows are novel
    with pytest.raises(ValueError, match="from_demo"):
        agent._optimistic_reward(agent.encode(batch["obs"]), batch["action"], {"reward": batch["reward"]})


def test_prior_stores_and_optimistic_labels_go_together(tmp_path, reach_demos):
    from robot_rl.cli import compose
    from robot_rl.trainer import check_prior

    base = compose("train", ["task=reach", "demos.episodes=0"])
    with pytest.raises(ValueError, match="agent=explore"):
        check_prior(compose("train", ["task=reach", "demos.episodes=0", f"prior=[{reach_demos}]"]), False)
    with pytest.raises(ValueError, match="prior=\\[...\\]"):
        check_prior(base, True)
    with pytest.raises(ValueError, match="demos.episodes=0"):
        check_prior(compose("train", ["task=reach", f"prior=[{reach_demos}]"]), True)
    check_prior(compose("train", ["task=reach", "demos.episodes=0", f"prior=[{reach_demos}]"]), True)


def test_returns_to_go_and_the_buffer_carries_them_for_whole_episodes_only():
    np.testing.assert_allclose(returns_to_go(np.array([0.0, 0.0, 1.0]), 0.9), [0.81, 0.9, 1.0], rtol=1e-6)
    buf = ReplayBuffer(OBS, 2, 64, mc_discount=0.5)
    buf.add_episode({**episode(3), "reward": np.array([1.0, 0.0, 4.0], np.float32)})
    np.testing.assert_allclose(buf.mc_return[:3], [2.0, 2.0, 4.0])
    e = episode(2)
    buf.add(
        {"state": e["obs"]["state"][0]}, e["action"][0], 0.0, False, False, {"state": e["obs"]["state"][1]}
    )  # a single row: no return known
    assert buf.mc_return[3] == -np.inf
    assert "mc_return" in buf.sample(4, np.random.default_rng(0))
    plain = ReplayBuffer(OBS, 2, 8)
    plain.add_episode(episode(3))
    assert "mc_return" not in plain.sample(2, np.random.default_rng(0))


@pytest.mark.parametrize("loss", ["iql", "cql", "h2o"])
def test_offline_agents_update_checkpoint_and_restore_exactly(loss):
    cfg = SACConfig(loss=loss, cql_calibrated=loss == "cql", hidden_dims=(16, 16), batch_size=8, device="cpu")
    torch.manual_seed(0)
    agent = SAC(OBS, ACT, cfg)
    buf = ReplayBuffer(OBS, 2, 64, mc_discount=agent.mc_discount)
    buf.add_episode(episode(20))
    agent.fit_normalizer(buf.obs["state"][:20])
    batches = mixed_batches(None, buf, 8, 0.0, np.random.default_rng(0))
    if loss == "h2o":  # real rows (the demo buffer) beside simulated ones
        demo = ReplayBuffer(OBS, 2, 64)
        demo.add_episode(episode(20, seed=1))
        batches = mixed_batches(demo, buf, 8, 0.5, np.random.default_rng(0))
    metrics = [agent.update(batches) for _ in range(5)][-1]
    assert all(np.isfinite(v) for v in metrics.values())
    assert ("value_loss" in metrics) == (loss == "iql") and ("cql_penalty" in metrics) == (loss == "cql")
    twin = SAC(OBS, ACT, cfg)
    twin.load_state_dict(agent.state_dict())
    obs = {"state": np.zeros(4, np.float32)}
    np.testing.assert_array_equal(agent.act(obs, deterministic=True), twin.act(obs, deterministic=True))
    if loss == "iql":
        for a, b in zip(agent.value.parameters(), twin.value.parameters()):
            assert torch.equal(a, b)
    with pytest.raises(ValueError, match="loss='bc'"):
        SACConfig(loss="bc")


@pytest.mark.parametrize("extraction", ["regression", "likelihood"])
def test_iql_policy_extraction_prefers_the_higher_advantage_action(extraction):
    # one state, two actions in the data, +0.8 and -0.8; the critic says the first is better (Q = sum(a), V = 0)
    def extracted(beta: float) -> np.ndarray:
        torch.manual_seed(0)
        cfg = SACConfig(loss="iql", iql_beta=beta, hidden_dims=(32,), batch_size=64, actor_lr=1e-2, device="cpu",
                        iql_extraction=extraction)  # fmt: skip
        agent = SAC(OBS, ACT, cfg)
        agent.fit_normalizer(np.zeros((2, 4), np.float32))
        agent.critic_target.forward = lambda feat, action, idx=None: action.sum(-1).expand(2, -1)  # type: ignore
        agent.value = lambda feat: torch.zeros(feat.shape[0], 1)  # type: ignore
        act = torch.cat([torch.full((32, 2), 0.8), torch.full((32, 2), -0.8)])
        batch = {"obs": {"state": torch.zeros(64, 4)}, "action": act}
        for _ in range(500):
            agent._awr_step(batch)
        return agent.act({"state": np.zeros(4, np.float32)}, deterministic=True)

    assert (extracted(5.0) > 0.4).all()  # weighted towards the better action (measured: 0.56, 0.71)
    assert (np.abs(extracted(0.0)) < 0.2).all()  # beta 0: behaviour cloning, the mean of the two


@pytest.mark.parametrize("max_backup", [True, False])
def test_cql_max_target_backup_takes_the_best_of_the_sampled_next_actions(max_backup):
    # the target critic says Q(s', a) = sum(a): the max backup's value is the best of cql_samples policy actions
    cfg = SACConfig(loss="cql", cql_samples=16, cql_max_target_backup=max_backup, hidden_dims=(16,), device="cpu")
    torch.manual_seed(0)
    agent = SAC(OBS, ACT, cfg)
    agent.critic_target.forward = lambda feat, action, idx=None: action.sum(-1).expand(2, -1)  # type: ignore
    sampled = []
    actor = agent.actor

    def recording_actor(f, deterministic=False):
        a, logp = actor(f, deterministic)
        sampled.append((a, logp))
        return a, logp

    agent.actor = recording_actor  # type: ignore
    value, logp = agent._next_value(agent.encode({"state": torch.rand(64, 4)}))
    (a, all_logp), n = sampled[0], (16 if max_backup else 1)
    assert a.shape[0] == 64 * n and value.shape == logp.shape == (64,)
    best = a.sum(-1).view(64, n).argmax(-1)
    torch.testing.assert_close(value, a.sum(-1).view(64, n).max(-1).values)
    torch.testing.assert_close(logp, all_logp.view(64, n).gather(-1, best[:, None]).squeeze(-1))


# ----------------------------------------------------------------------------------------- data and CLI
def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "robot_rl.cli", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def reach_demos(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("offline") / "demos.zarr"
    proc = _run("record", "task=reach", "device=scripted", "episodes=100", f"out={out}", "seed=3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_an_offline_run_on_reach_learns_from_scripted_demos_alone_and_continues_online(reach_demos, tmp_path):
    run = tmp_path / "iql"
    common = ["task=reach", "threads=1", "device=cpu", "eval.episodes=10"]  # (64-unit layers: 0% at 2k)
    proc = _run("train-offline", f"data=[{reach_demos}]", "steps=500", "eval.every=250", f"run_dir={run}", *common)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    history = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines()]
    assert [h["updates"] for h in history] == [250, 500]
    assert history[-1]["success_rate"] >= 0.6, history  # measured: 100% at 500 (untrained: 0%)
    assert (run / "checkpoints/best/agent.safetensors").exists()
    # an offline run is not resumed as an online one ...
    proc = _run("train", f"resume={run}")
    assert proc.returncode != 0 and "init_from" in proc.stderr, proc.stderr[-1500:]
    # ... it is continued from: the online run starts from its weights, with online data only (WSRL-style)
    online = tmp_path / "online"
    proc = _run(
        "train", f"init_from={run}", "agent=iql", "demos.episodes=0", "learning_starts=100", "total_steps=200",
        "eval.every=100", f"run_dir={online}", *common,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert '"init_from"' in proc.stdout
    first = json.loads((online / "eval.jsonl").read_text().splitlines()[0])
    assert first["success_rate"] >= 0.5, first  # no collapse at the switch (from scratch with no demos: 0%)


def _store(path: Path, rewards: list[list[float]], success: list[bool], task: str = "reach") -> Path:
    """A store of ``task`` with hand-made episodes: the env's first observation repeated, zero actions, these
    rewards and success flags."""
    from robot_rl.cli import compose
    from robot_rl.collect import store_schema
    from robot_rl.envs.make import make_env

    env = make_env(compose("train", [f"task={task}"]).task)
    try:
        obs, _ = env.reset(seed=0)
        with EpisodeStore.create(path, store_schema(env, None)) as store:
            for r, ok in zip(rewards, success):
                t = len(r)
                store.append_episode(
                    {k: np.stack([v] * t) for k, v in obs.items()},
                    obs,
                    np.zeros((t, env.action_space.shape[0]), np.float32),
                    np.asarray(r, np.float32),
                    np.r_[np.zeros(t - 1), ok].astype(bool),
                    np.r_[np.zeros(t - 1), not ok].astype(bool),
                    np.zeros(t, bool),
                    np.arange(t, dtype=np.float64) * 0.1,
                    success=ok,
                    source="scripted",
                    task=task,
                )
    finally:
        env.close()
    return path


def test_bad_data_gets_one_clear_error_naming_the_store(tmp_path, reach_demos):
    base = ["train-offline", "task=reach", "steps=10", f"run_dir={tmp_path / 'run'}"]
    cases = {
        "does not exist": f"data=[{tmp_path / 'nowhere.zarr'}]",
        "no reward signal": f"data=[{_store(tmp_path / 'unlabelled.zarr', [[0, 0, 0]] * 3, [False] * 3)}]",
        "does not match task pick_cube": f"data=[{reach_demos}]",
        "no data": "data=[]",
    }
    for expect, data in cases.items():
        extra = ["task=pick_cube"] if "pick_cube" in expect else []
        proc = _run(*base, data, *extra, timeout=300)
        assert proc.returncode != 0 and expect in proc.stderr, (expect, proc.stderr[-1500:])
        assert "Traceback" not in proc.stderr, proc.stderr[-1500:]


def test_a_reward_model_relabels_the_store_frame_by_frame_with_its_rule(tmp_path):
    from robot_rl.offline import offline_episodes
    from robot_rl.rewards.base import RewardModel

    class Scripted(RewardModel):
        """Scores given in advance, one episode per call (no camera needed)."""

        kind, cameras, image_shapes, threshold = "scripted", [], {}, 0.5

        def __init__(self, episodes):
            self.episodes = [np.asarray(e, np.float64) for e in episodes]

        def score(self, frames):
            return self.episodes.pop(0)

        def identity(self):
            return {"kind": "scripted"}

    path = _store(tmp_path / "s.zarr", [[0, 0, 0, 0], [0, 0, 0]], [False, False])
    model = Scripted([[0.9, 0.1, 0.9, 0.9], [0.2, 0.2, 0.7]])
    cfg = {"reward": "binary", "consecutive": 2, "success_reward": 1.0, "terminate_on_success": True}
    eps = list(offline_episodes(path, cfg, model))
    np.testing.assert_array_equal(eps[0]["reward"], [0, 0, 0, 1])  # two frames in a row above 0.5: at t = 3
    np.testing.assert_array_equal(eps[0]["terminated"], [0, 0, 0, 1])
    np.testing.assert_array_equal(eps[1]["reward"], [0, 0, 0])  # the streak starts again with each episode
