"""The discrete gripper critic of SAC(gripper="discrete"): discretisation, toggles, double-DQN targets, acting,
exploration schedule, checkpoints, config errors and a small learning problem."""

import math

import numpy as np
import pytest
import torch
from gymnasium import spaces

from robot_rl.agents.gripper import (
    CLOSE,
    OPEN,
    STAY,
    GripperQ,
    discretize_gripper,
    double_dqn_target,
    epsilon_at,
    gripper_toggles,
)
from robot_rl.agents.sac import SAC, SACConfig
from robot_rl.utils.checkpoint import load_state, save_state

# State: [x0, x1, x2, gripper closed flag]; action: two arm deltas, then the gripper.
OBS = spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (4,), np.float32)})
ACT = spaces.Box(-1, 1, (3,), np.float32)
FLAG = 3


def cfg(**kw):
    base = dict(
        hidden_dims=(16,), num_critics=2, batch_size=16, device="cpu", gripper="discrete", gripper_state_index=FLAG
    )
    return SACConfig(**{**base, **kw})


def random_batches(b=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    while True:
        s, s2 = torch.randn(b, 4, generator=g), torch.randn(b, 4, generator=g)
        s[:, FLAG] = (s[:, FLAG] > 0).float()
        s2[:, FLAG] = (s2[:, FLAG] > 0).float()
        yield {
            "obs": {"state": s},
            "next_obs": {"state": s2},
            "action": torch.rand(b, 3, generator=g) * 2 - 1,
            "reward": torch.rand(b, generator=g),
            "terminated": (torch.rand(b, generator=g) < 0.1).float(),
            "truncated": torch.zeros(b),
        }


def test_discretisation_uses_the_env_thresholds():
    cmd = torch.tensor([-1.0, -0.51, -0.5, -0.2, 0.0, 0.5, 0.5001, 1.0])
    assert discretize_gripper(cmd).tolist() == [OPEN, OPEN, STAY, STAY, STAY, STAY, CLOSE, CLOSE]
    assert discretize_gripper(cmd).dtype == torch.long


def test_toggles_need_a_state_change():
    a = torch.tensor([OPEN, STAY, CLOSE, OPEN, STAY, CLOSE])
    closed = torch.tensor([False, False, False, True, True, True])
    assert gripper_toggles(a, closed).tolist() == [False, False, True, True, False, False]
    # Without a known state every open/close command counts.
    assert gripper_toggles(a, None).tolist() == [True, False, True, True, False, True]


def test_double_dqn_target_selects_with_online_and_evaluates_with_target():
    # Two members, two samples. Online min over members: [[1, 2.5, 2], [0, 1, 3]] -> a* = [stay, close].
    online = torch.tensor([[[1.0, 3.0, 2.0], [0.0, 1.0, 5.0]], [[2.0, 2.5, 5.0], [0.0, 2.0, 3.0]]])
    # Target min over members: [[9, 4, 0], [1, 1, -2]]; its own argmax would pick open for sample 0.
    target = torch.tensor([[[10.0, 4.0, 0.0], [1.0, 1.0, 7.0]], [[9.0, 6.0, 20.0], [1.0, 1.0, -2.0]]])
    y, a_star = double_dqn_target(torch.tensor([1.0, 0.5]), torch.tensor([0.0, 0.0]), online, target, 0.9)
    assert a_star.tolist() == [STAY, CLOSE]
    torch.testing.assert_close(y, torch.tensor([1.0 + 0.9 * 4.0, 0.5 + 0.9 * -2.0]))
    y, _ = double_dqn_target(torch.tensor([1.0, 0.5]), torch.tensor([1.0, 0.0]), online, target, 0.9)
    torch.testing.assert_close(y, torch.tensor([1.0, 0.5 + 0.9 * -2.0]))  # terminated: no bootstrap


def _hand_set(agent: SAC) -> None:
    """With no hidden layers and an unfitted (identity) encoder, Q_e(s) = s @ W_e: set W by hand."""
    w_online = torch.zeros(2, 4, 3)
    w_online[0, 0], w_online[1, 0] = torch.tensor([1.0, 3.0, 2.0]), torch.tensor([2.0, 2.5, 5.0])
    w_online[0, 1], w_online[1, 1] = torch.tensor([0.0, 1.0, 5.0]), torch.tensor([0.0, 2.0, 3.0])
    w_online[:, 2] = torch.tensor([0.5, -1.0, 0.25])  # only the batch's obs use x2: gives Q(s, a) for the loss
    w_target = torch.zeros(2, 4, 3)
    w_target[0, 0], w_target[1, 0] = torch.tensor([10.0, 4.0, 0.0]), torch.tensor([9.0, 6.0, 20.0])
    w_target[0, 1], w_target[1, 1] = torch.tensor([1.0, 1.0, 7.0]), torch.tensor([1.0, 1.0, -2.0])
    with torch.no_grad():
        for net, w in ((agent.gripper_critic, w_online), (agent.gripper_target, w_target)):
            net.head.weight.copy_(w)
            net.head.bias.zero_()


def _hand_batch() -> dict:
    next_a, next_b = [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]  # next-state features pick a row of W
    return {
        "obs": {
            "state": torch.tensor(
                [
                    [0.0, 0.0, 1.0, 0.0],  # open,   commands close -> toggle
                    [0.0, 0.0, 2.0, 1.0],  # closed, commands open  -> toggle
                    [0.0, 0.0, -1.0, 1.0],  # closed, commands close -> no toggle
                    [0.0, 0.0, 0.5, 0.0],
                ]
            )
        },  # open,   0.3 = stay     -> no toggle
        "next_obs": {"state": torch.tensor([next_a, next_b, next_b, next_a])},
        "action": torch.tensor([[0.1, 0.2, 0.9], [0.0, 0.0, -1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.3]]),
        "reward": torch.tensor([1.0, 0.5, 0.0, 0.2]),
        "terminated": torch.tensor([0.0, 1.0, 0.0, 0.0]),
        "truncated": torch.tensor([0.0, 0.0, 1.0, 0.0]),  # a time-limit cut still bootstraps
    }


def test_agent_gripper_target_on_a_hand_set_network():
    agent = SAC(OBS, ACT, cfg(hidden_dims=(), gripper_num_critics=2, gripper_penalty=0.1, discount=0.9))
    _hand_set(agent)
    batch = _hand_batch()
    # Online min picks a* = stay for next_a and close for next_b; target min scores them 4 and -2.
    taken, toggled, y = agent.gripper_td_target(batch)
    assert taken.tolist() == [CLOSE, OPEN, CLOSE, STAY]
    assert toggled.tolist() == [True, True, False, False]
    torch.testing.assert_close(y, torch.tensor([1.0 - 0.1 + 0.9 * 4, 0.5 - 0.1, 0.0 + 0.9 * -2, 0.2 + 0.9 * 4]))
    # A gripper_state batch key overrides the state index: all closed -> the first close is redundant, no penalty.
    _, toggled, y = agent.gripper_td_target({**batch, "gripper_state": torch.ones(4)})
    assert toggled.tolist() == [False, True, False, False]
    assert math.isclose(float(y[0]), 1.0 + 0.9 * 4, rel_tol=1e-6)
    # Without any gripper state every open/close command pays.
    blind = SAC(OBS, ACT, cfg(hidden_dims=(), gripper_state_index=None, discount=0.9))
    _hand_set(blind)
    _, toggled, y = blind.gripper_td_target(batch)
    assert toggled.tolist() == [True, True, True, False]
    torch.testing.assert_close(y[2], torch.tensor(-0.1 + 0.9 * -2))


def test_gripper_loss_uses_the_executed_action_and_target_moves_by_tau():
    torch.manual_seed(0)
    agent = SAC(OBS, ACT, cfg(hidden_dims=(), gripper_penalty=0.1, discount=0.9, tau=0.25, utd_ratio=1))
    _hand_set(agent)
    batch = _hand_batch()
    _, _, y = agent.gripper_td_target(batch)
    with torch.no_grad():
        q = agent.gripper_critic(batch["obs"]["state"])  # (2, 4, 3); Q(s, a) = x2 * [0.5, -1, 0.25]
    q_taken = q[:, torch.arange(4), torch.tensor([CLOSE, OPEN, CLOSE, STAY])]
    expected_loss = float(((q_taken - y) ** 2).mean())
    online0 = agent.gripper_critic.head.weight.clone()
    target0 = agent.gripper_target.head.weight.clone()
    m = agent.update(iter([batch]))
    assert math.isclose(m["gripper_loss"], expected_loss, rel_tol=1e-5)
    assert math.isclose(m["gripper_toggle_rate"], 0.5)
    # Greedy actions at the batch obs (before the step): x2 = 1, 2, -1, 0.5 -> open, open, stay, open.
    assert (m["gripper_frac_open"], m["gripper_frac_stay"], m["gripper_frac_close"]) == (0.75, 0.25, 0.0)
    online1 = agent.gripper_critic.head.weight
    assert not torch.equal(online0, online1)
    torch.testing.assert_close(agent.gripper_target.head.weight, 0.75 * target0 + 0.25 * online1)


def test_update_runs_the_gripper_step_at_every_critic_step_and_reports_metrics():
    torch.manual_seed(0)
    agent = SAC(OBS, ACT, cfg(utd_ratio=3))
    m = agent.update(random_batches())
    assert set(m) >= {
        "critic_loss",
        "actor_loss",
        "gripper_loss",
        "gripper_q_mean",
        "gripper_target_q",
        "gripper_frac_open",
        "gripper_frac_stay",
        "gripper_frac_close",
        "gripper_toggle_rate",
        "gripper_epsilon",
    }
    assert all(math.isfinite(v) for v in m.values())
    assert math.isclose(m["gripper_frac_open"] + m["gripper_frac_stay"] + m["gripper_frac_close"], 1.0)
    step = next(iter(agent.gripper_opt.state_dict()["state"].values()))["step"]
    assert int(step) == 3
    # The arm networks see the arm dims only.
    assert agent.arm_dim == 2 and agent.action_dim == 3 and agent.target_entropy == -1.0
    assert agent.actor.net[-1].out_features == 2 * 2


def test_act_returns_the_full_action_with_a_discrete_gripper():
    torch.manual_seed(0)
    agent = SAC(OBS, ACT, cfg(gripper_epsilon_start=1.0, gripper_epsilon_end=1.0))
    obs = {"state": np.array([0.3, -0.2, 1.0, 0.0], np.float32)}
    seen = set()
    for _ in range(60):
        a = agent.act(obs)
        assert a.shape == (3,) and a.dtype == np.float32
        assert np.all(np.abs(a[:2]) <= 1.0)
        seen.add(float(a[2]))
    assert seen == {-1.0, 0.0, 1.0}  # epsilon = 1: uniformly random gripper
    assert agent.gripper_act_steps == 60
    det = agent.act(obs, deterministic=True)
    with torch.no_grad():
        greedy = agent.gripper_critic(torch.as_tensor(obs["state"])[None]).min(0).values.argmax()
    assert det[2] == [-1.0, 0.0, 1.0][int(greedy)]
    assert np.array_equal(det, agent.act(obs, deterministic=True))
    assert agent.gripper_act_steps == 60  # evaluation does not advance the schedule


def test_epsilon_schedule_decays_linearly_with_exploratory_steps():
    assert epsilon_at(0, 1.0, 0.1, 10) == 1.0
    assert math.isclose(epsilon_at(5, 1.0, 0.1, 10), 0.55)
    assert epsilon_at(10, 1.0, 0.1, 10) == epsilon_at(1000, 1.0, 0.1, 10) == 0.1
    assert epsilon_at(0, 1.0, 0.1, 0) == 0.1
    agent = SAC(OBS, ACT, cfg(gripper_epsilon_start=0.5, gripper_epsilon_end=0.1, gripper_epsilon_decay_steps=4))
    obs = {"state": np.zeros(4, np.float32)}
    eps = []
    for _ in range(6):
        eps.append(agent.gripper_epsilon)
        agent.act(obs)
    np.testing.assert_allclose(eps, [0.5, 0.4, 0.3, 0.2, 0.1, 0.1])
    assert SAC(OBS, ACT, SACConfig(hidden_dims=(8,), device="cpu")).gripper_epsilon == 0.0


def test_state_dict_round_trip_and_policy_weights(tmp_path):
    torch.manual_seed(0)
    c = cfg(gripper_epsilon_decay_steps=100)
    a = SAC(OBS, ACT, c)
    for _ in range(3):
        a.update(random_batches())
    obs = {"state": np.array([1.0, 0.5, -0.5, 1.0], np.float32)}
    for _ in range(7):
        a.act(obs)
    save_state(a.state_dict(), tmp_path / "agent")
    b = SAC(OBS, ACT, c)
    b.load_state_dict(load_state(tmp_path / "agent"))
    assert b.gripper_act_steps == 7 and b.gripper_epsilon == a.gripper_epsilon
    for n in ("gripper_critic", "gripper_target"):
        for p, q in zip(getattr(a, n).parameters(), getattr(b, n).parameters()):
            assert torch.equal(p, q)
    torch.manual_seed(5)
    ma = a.update(random_batches(seed=9))
    torch.manual_seed(5)
    mb = b.update(random_batches(seed=9))
    assert ma == mb
    torch.manual_seed(3)
    act_a = a.act(obs)
    torch.manual_seed(3)
    assert np.array_equal(act_a, b.act(obs))
    # Policy weights: flat CPU tensors (safetensors-ready) with the gripper critic an actor needs.
    w = a.policy_weights()
    assert any(k.startswith("gripper_critic.") for k in w)
    assert all(k.startswith(("actor.", "encoder.", "gripper_critic.")) and v.device.type == "cpu" for k, v in w.items())
    fresh = SAC(OBS, ACT, c)
    fresh.load_policy_weights(w)
    assert np.array_equal(fresh.act(obs, deterministic=True), a.act(obs, deterministic=True))
    # A checkpoint of the other gripper kind is refused with a clear message.
    with pytest.raises(ValueError, match="gripper"):
        SAC(OBS, ACT, SACConfig(hidden_dims=(16,), device="cpu")).load_state_dict(a.state_dict())


def test_config_validation():
    with pytest.raises(ValueError, match="gripper='discrete' needs"):
        SAC(OBS, spaces.Box(-1, 1, (1,), np.float32), cfg())
    with pytest.raises(ValueError, match="gripper="):
        SACConfig(gripper="binary")
    with pytest.raises(ValueError, match="gripper_penalty"):
        SACConfig(gripper_penalty=-0.1)
    with pytest.raises(ValueError, match="gripper_epsilon"):
        SACConfig(gripper_epsilon_start=0.1, gripper_epsilon_end=0.5)
    with pytest.raises(ValueError, match="gripper_num_critics"):
        SACConfig(gripper_num_critics=0)
    with pytest.raises(ValueError, match="gripper_state_index=4 is outside"):
        SAC(OBS, ACT, cfg(gripper_state_index=4))
    # A continuous gripper ignores the gripper options and keeps the full action for the actor.
    agent = SAC(OBS, spaces.Box(-1, 1, (1,), np.float32), SACConfig(hidden_dims=(8,), device="cpu"))
    assert agent.arm_dim == agent.action_dim == 1 and not hasattr(agent, "gripper_critic")


def test_gripper_q_ensemble_shapes():
    q = GripperQ(3, 5, (8, 8), layer_norm=True)
    assert q(torch.randn(7, 5)).shape == (3, 7, 3)
    assert q(torch.randn(7, 5), torch.tensor([2, 0])).shape == (2, 7, 3)


def test_learns_to_close_when_closing_pays():
    """One-step bandit: closing the (open) gripper earns 1 when x0 > 0 and nothing otherwise. With the toggle
    penalty, the greedy gripper must close for x0 > 0 and not close for x0 < 0; Q(close) -> 1 - penalty."""
    torch.manual_seed(0)
    agent = SAC(OBS, ACT, cfg(hidden_dims=(32,), batch_size=64, critic_lr=3e-3, gripper_penalty=0.1))
    g = torch.Generator().manual_seed(1)

    def gen():
        while True:
            s = torch.randn(64, 4, generator=g)
            s[:, FLAG] = 0.0  # open before every action
            grip = torch.tensor([-1.0, 0.0, 1.0])[torch.randint(0, 3, (64,), generator=g)]
            grip = grip + 0.3 * (torch.rand(64, generator=g) - 0.5)  # executed commands are continuous
            action = torch.cat([torch.rand(64, 2, generator=g) * 2 - 1, grip.clamp(-1, 1)[:, None]], dim=1)
            reward = ((grip > 0.5) & (s[:, 0] > 0)).float()
            yield {
                "obs": {"state": s},
                "next_obs": {"state": s},
                "action": action,
                "reward": reward,
                "terminated": torch.ones(64),
                "truncated": torch.zeros(64),
            }

    it = gen()
    for _ in range(450):
        agent.update(it)
    for x0 in (1.0, 1.5, 2.0):
        for other in (-1.0, 0.5):
            obs = {"state": np.array([x0, other, -other, 0.0], np.float32)}
            assert agent.act(obs, deterministic=True)[2] == 1.0
            assert agent.act({"state": np.array([-x0, other, -other, 0.0], np.float32)}, deterministic=True)[2] != 1.0
    with torch.no_grad():
        q = agent.gripper_critic(torch.tensor([[1.5, 0.0, 0.0, 0.0]])).mean(0)[0]
    assert abs(float(q[CLOSE]) - 0.9) < 0.15 and float(q[CLOSE]) > float(q[[OPEN, STAY]].max()) + 0.5


def test_gripper_q_keeps_its_checkpoint_names():
    q = GripperQ(2, 5, (8,), layer_norm=True)
    assert list(q.state_dict()) == [
        "linears.0.weight",
        "linears.0.bias",
        "norms.0.weight",
        "norms.0.bias",
        "head.weight",
        "head.bias",
    ]
    assert q.head.weight.shape == (2, 8, 3)
    assert list(GripperQ(2, 5, (8,), layer_norm=False).state_dict()) == [
        "linears.0.weight",
        "linears.0.bias",
        "head.weight",
        "head.bias",
    ]
