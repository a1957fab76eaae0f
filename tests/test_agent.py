import math

import numpy as np
import pytest
import torch
from gymnasium import spaces

from robot_rl.agents.base import Agent
from robot_rl.agents.networks import EnsembleLinear, EnsembleQ, TanhGaussianActor
from robot_rl.agents.sac import SAC, SACConfig
from robot_rl.utils.checkpoint import load_state, save_state

OBS = spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (5,), np.float32)})
ACT = spaces.Box(-1, 1, (3,), np.float32)


def batches(b=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    while True:
        yield {
            "obs": {"state": torch.randn(b, 5, generator=g)},
            "next_obs": {"state": torch.randn(b, 5, generator=g)},
            "action": torch.rand(b, 3, generator=g) * 2 - 1,
            "reward": torch.rand(b, generator=g),
            "terminated": (torch.rand(b, generator=g) < 0.1).float(),
        }


def test_ensemble_linear_matches_per_member_matmul():
    layer = EnsembleLinear(4, 6, 3)
    x = torch.randn(7, 6)
    y = layer(x)
    assert y.shape == (4, 7, 3)
    for i in range(4):
        torch.testing.assert_close(y[i], x @ layer.weight[i] + layer.bias[i])
    idx = torch.tensor([2, 0])
    torch.testing.assert_close(layer(x, idx), y[idx])


def test_ensemble_members_are_independent():
    q = EnsembleQ(5, 4, (16, 16), layer_norm=True)
    feat, act = torch.randn(8, 2), torch.randn(8, 2)
    q(feat, act)[3].sum().backward()
    for p in q.parameters():
        grads = p.grad.flatten(1).abs().sum(1)
        assert grads[3] > 0 and torch.all(grads[[0, 1, 2, 4]] == 0)


def test_tanh_gaussian_log_prob_matches_change_of_variables():
    torch.manual_seed(0)
    actor = TanhGaussianActor(4, 2, (32,))
    feat = torch.randn(1000, 4)
    torch.manual_seed(1)
    a, logp = actor(feat)
    assert a.abs().max() < 1
    mu, raw = actor.net(feat).chunk(2, -1)
    log_std = actor.log_std_min + 0.5 * (actor.log_std_max - actor.log_std_min) * (torch.tanh(raw) + 1)
    u = torch.atanh(a.clamp(-1 + 1e-6, 1 - 1e-6))
    base = torch.distributions.Normal(mu, log_std.exp()).log_prob(u).sum(-1)
    expected = base - torch.log(1 - a.pow(2) + 1e-12).sum(-1)
    ok = a.abs().max(-1).values < 0.999  # atanh is ill-conditioned at saturation
    torch.testing.assert_close(logp[ok], expected[ok], atol=2e-3, rtol=1e-3)
    det, _ = actor(feat, deterministic=True)
    torch.testing.assert_close(det, torch.tanh(mu))


def test_config_validation_names_bad_values():
    with pytest.raises(ValueError, match="num_target_critics"):
        SACConfig(num_critics=2, num_target_critics=3)
    with pytest.raises(ValueError, match="unknown agent option"):
        SACConfig.from_dict({"hiden_dims": [4]})
    with pytest.raises(ValueError, match="actor_q_reduce"):
        SACConfig(actor_q_reduce="max")
    with pytest.raises(ValueError, match="n_step=0 must be >= 1"):
        SACConfig(n_step=0)
    with pytest.raises(ValueError, match="set n_step=1 .not 3. with it"):
        SACConfig(n_step=3, optimistic_prior=True)


def test_update_trains_critics_moves_targets_by_tau_and_reports_metrics():
    torch.manual_seed(0)
    cfg = SACConfig(
        hidden_dims=(32, 32),
        num_critics=6,
        num_target_critics=2,
        critic_layer_norm=True,
        actor_q_reduce="mean",
        utd_ratio=3,
        batch_size=32,
        tau=0.1,
        device="cpu",
    )
    agent = SAC(OBS, ACT, cfg)
    before_target = [p.clone() for p in agent.critic_target.parameters()]
    before_critic = [p.clone() for p in agent.critic.parameters()]
    before_actor = [p.clone() for p in agent.actor.parameters()]
    m = agent.update(batches())
    assert set(m) >= {"critic_loss", "q_mean", "actor_loss", "entropy", "alpha"}
    assert all(math.isfinite(v) for v in m.values())
    assert agent.num_updates == 1
    assert all(not torch.equal(a, b) for a, b in zip(before_critic, agent.critic.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before_actor, agent.actor.parameters()))
    # After one critic step target = (1-tau) * target + tau * critic; three steps compound that.
    for t0, t1, c in zip(before_target, agent.critic_target.parameters(), agent.critic.parameters()):
        assert not torch.equal(t0, t1)
        assert (t1 - t0).abs().max() <= (c - t0).abs().max() + 1e-6


def test_temperature_moves_toward_target_entropy():
    torch.manual_seed(0)
    agent = SAC(OBS, ACT, SACConfig(hidden_dims=(16,), batch_size=16, device="cpu", target_entropy=-100.0))
    a0 = float(agent.alpha)
    for _ in range(20):
        agent.update(batches(16))
    assert float(agent.alpha) < a0  # entropy far above target -> temperature falls


def test_fits_q_to_known_values():
    """One-step problem (all terminal): Q(s, a) must converge to the reward r = s0 + a0."""
    torch.manual_seed(0)
    agent = SAC(
        OBS,
        ACT,
        SACConfig(
            hidden_dims=(64, 64), num_critics=4, num_target_critics=2, batch_size=128, critic_lr=3e-3, device="cpu"
        ),
    )

    def gen():
        while True:
            s, a = torch.randn(128, 5), torch.rand(128, 3) * 2 - 1
            yield {
                "obs": {"state": s},
                "next_obs": {"state": s},
                "action": a,
                "reward": s[:, 0] + a[:, 0],
                "terminated": torch.ones(128),
            }

    it = gen()
    for _ in range(400):
        agent.update(it)
    b = next(it)
    with torch.no_grad():
        q = agent.critic(b["obs"]["state"], b["action"])
    assert (q - b["reward"]).abs().mean() < 0.1


@pytest.mark.parametrize("gripper", ["continuous", "discrete"])
def test_n_step_rows_bootstrap_with_their_own_discount(gripper):
    """A batch's per-row ``discount`` (n-step rows: gamma ** k) replaces the config's in every critic target: with
    0 the target is the reward alone, with the config's own it equals the plain target."""

    def target(batch: dict) -> float:
        torch.manual_seed(0)
        agent = SAC(OBS, ACT, SACConfig(hidden_dims=(16,), batch_size=32, device="cpu", gripper=gripper))
        agent.fit_normalizer(np.zeros((2, 5), np.float32))
        if gripper == "discrete":
            return float(agent.gripper_td_target(batch)[2].mean())
        return float(agent._critic_step(batch)["target_q"])

    b = next(batches())
    b["terminated"] = torch.zeros(32)
    reward = b["reward"]
    if gripper == "discrete":  # the gripper critic's reward: the env's less the penalty on each toggle
        reward = reward - 0.1 * (b["action"][:, -1].abs() > 0.5).float()  # no gripper state: each command toggles
    assert target({**b, "discount": torch.zeros(32)}) == pytest.approx(float(reward.mean()), abs=1e-6)
    assert target({**b, "discount": torch.full((32,), 0.99)}) == pytest.approx(target(b), abs=1e-6)
    assert target({**b, "discount": torch.full((32,), 0.5)}) != pytest.approx(target(b), abs=1e-4)


def test_checkpoint_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    cfg = SACConfig(hidden_dims=(32,), num_critics=4, num_target_critics=2, batch_size=16, device="cpu")
    a = SAC(OBS, ACT, cfg)
    for _ in range(3):
        a.update(batches(16))
    save_state(a.state_dict(), tmp_path / "agent")
    b = SAC(OBS, ACT, cfg)
    b.load_state_dict(load_state(tmp_path / "agent"))
    assert b.num_updates == 3 and torch.equal(a.log_alpha, b.log_alpha)
    for (_n, p), q in zip(a.critic_opt.state_dict()["state"].items(), b.critic_opt.state_dict()["state"].values()):
        assert torch.equal(p["exp_avg_sq"], q["exp_avg_sq"]) and torch.equal(p["step"], q["step"])
    # Same RNG + same data -> bit-identical next update on both.
    torch.manual_seed(5)
    ma = a.update(batches(16, seed=9))
    torch.manual_seed(5)
    mb = b.update(batches(16, seed=9))
    assert ma == mb
    for p, q in zip(a.critic.parameters(), b.critic.parameters()):
        assert torch.equal(p, q)
    obs = {"state": np.ones(5, np.float32)}
    assert np.array_equal(a.act(obs, deterministic=True), b.act(obs, deterministic=True))


def test_policy_weights_ship_the_actor_only():
    a = SAC(OBS, ACT, SACConfig(hidden_dims=(8,), device="cpu"))
    w = a.policy_weights()
    assert w and all(k.startswith(("actor.", "encoder.")) for k in w)
    b = SAC(OBS, ACT, SACConfig(hidden_dims=(8,), device="cpu"))
    b.load_policy_weights(w)
    obs = {"state": np.arange(5, dtype=np.float32)}
    assert np.array_equal(a.act(obs, deterministic=True), b.act(obs, deterministic=True))


def test_sac_meets_the_agent_interface():
    assert issubclass(SAC, Agent) and not SAC.__abstractmethods__
    with pytest.raises(TypeError):
        Agent()  # abstract: act, update, state_dict, load_state_dict, policy_weights, load_policy_weights
    a = SAC(OBS, ACT, SACConfig(hidden_dims=(8,), batch_size=16, device="cpu"))
    assert all(hasattr(a, name) for name in Agent.__annotations__)
    assert a.action_dim == 3 and a.num_updates == 0 and a.cfg.batch_size == 16
    # A state-only agent caches no camera: buffer form is the env's form.
    assert a.cached_cameras == [] and a.buffer_observation_space == OBS
    obs = {"state": np.arange(5, dtype=np.float32)}
    assert a.featurize(obs) == obs and a.featurize(obs) is not obs
    episode = {"obs": {"state": np.zeros((4, 5), np.float32)}, "final_obs": obs, "reward": np.zeros(4)}
    assert a.featurize_episode(episode) == episode
    assert a.encode({"state": torch.ones(2, 5)}).shape == (2, a.encoder.out_dim)
    assert a.act(obs).shape == (3,) and set(a.update(batches(16))) >= {"critic_loss", "actor_loss"}
    assert a.num_updates == 1


def test_ensemble_q_keeps_its_checkpoint_names():
    q = EnsembleQ(3, 6, (8, 4), layer_norm=True)
    assert list(q.state_dict()) == [
        "linears.0.weight",
        "linears.0.bias",
        "linears.1.weight",
        "linears.1.bias",
        "norms.0.weight",
        "norms.0.bias",
        "norms.1.weight",
        "norms.1.bias",
        "head.weight",
        "head.bias",
    ]
    assert q.head.weight.shape == (3, 4, 1) and q(torch.randn(5, 4), torch.randn(5, 2)).shape == (3, 5)
