"""What corrections teach the learner: each switch (``corrections.demo_buffer``, ``corrections.takeover_reward``,
``corrections.trigger_reward``, ``agent.bc_weight``) changes the batch or the loss in the intended way, on hand-made
episodes."""

import numpy as np
import pytest
import torch
from gymnasium import spaces

from robot_rl.agents.sac import SAC, SACConfig
from robot_rl.cli import compose
from robot_rl.data.episode import (
    EpisodeBuilder,
    episode_stats,
    penalize_takeovers,
    takeover_starts,
    trigger_transitions,
)
from robot_rl.trainer import Trainer

FLAGS = np.array([0, 0, 1, 1, 0, 0, 1, 0, 1, 1], bool)  # take-overs start at steps 2, 6 and 8


def hand_made(obs_dim: int, act_dim: int, flags=FLAGS) -> dict:
    """An episode whose state observation i is i (every entry), rewards 0 but a final 1, the given flags."""
    n = len(flags)
    obs = np.repeat(np.arange(n, dtype=np.float32)[:, None], obs_dim, axis=1)
    reward = np.zeros(n, np.float32)
    reward[-1] = 1.0
    terminated = np.zeros(n, bool)
    terminated[-1] = True
    return {
        "obs": {"state": obs},
        "final_obs": {"state": np.full(obs_dim, n, np.float32)},
        "action": np.linspace(-1, 1, n * act_dim, dtype=np.float32).reshape(n, act_dim),
        "reward": reward,
        "terminated": terminated,
        "truncated": np.zeros(n, bool),
        "is_intervention": np.array(flags, bool),
        "timestamp": np.arange(n) * 0.1,
    }


def test_takeover_starts_and_the_penalty_lands_on_the_policy_step_before_each():
    np.testing.assert_array_equal(takeover_starts(FLAGS), [2, 6, 8])
    assert len(takeover_starts(np.array([1, 1, 0, 0], bool))) == 0  # from the first step: no policy step before it
    ep = hand_made(3, 2)
    out = penalize_takeovers(ep, -1.0)
    expected = ep["reward"].copy()
    expected[[1, 5, 7]] -= 1.0
    np.testing.assert_array_equal(out["reward"], expected)
    np.testing.assert_array_equal(ep["reward"][[1, 5, 7]], 0.0)  # the input is not modified
    for k in ("terminated", "truncated", "is_intervention", "action"):
        np.testing.assert_array_equal(out[k], ep[k])
    stats = episode_stats(ep, True)
    assert (stats["intervention_steps"], stats["takeovers"], stats["episode_length"]) == (5, 3, 10)
    assert stats["intervention_rate"] == 0.5 and stats["episode_return"] == 1.0


def test_trigger_transitions_hold_the_proposed_action_where_each_takeover_began():
    ep = hand_made(3, 2, flags=np.array([1, 0, 1, 1, 0, 1], bool))  # take-overs at 0 (first step), 2 and 5
    proposed = -ep["action"] - 0.5
    out = trigger_transitions(ep, proposed, -1.0)
    assert [int(t["obs"]["state"][0, 0]) for t in out] == [0, 2, 5]
    for t, step in zip(out, (0, 2, 5)):
        np.testing.assert_array_equal(t["action"][0], proposed[step])  # the policy's, not the executed one
        assert t["reward"].tolist() == [-1.0] and t["terminated"].tolist() == [True]
        assert not t["truncated"][0] and not t["is_intervention"][0]  # never cloned
    assert trigger_transitions(hand_made(3, 2, flags=np.zeros(4, bool)), np.zeros((4, 2)), -1.0) == []
    with pytest.raises(ValueError, match="policy_action has shape"):
        trigger_transitions(ep, proposed[:-1], -1.0)
    # the builder records the proposed actions next to the executed ones, outside the stored episode
    b = EpisodeBuilder()
    for i in range(3):
        b.add(
            {"state": np.zeros(3)},
            np.full(2, i),
            0.0,
            False,
            i == 2,
            {"state": np.zeros(3)},
            policy_action=np.full(2, -i),
        )
    assert "policy_action" not in b.build()
    np.testing.assert_array_equal(b.policy_actions()[:, 0], [0, -1, -2])
    b.add({"state": np.zeros(3)}, np.zeros(2), 0.0, True, False, {"state": np.zeros(3)})
    assert b.policy_actions() is None  # one step without it: none


@pytest.fixture(scope="module")
def reach_cfg():
    return [
        "task=reach",
        "obs=state",
        "agent.hidden_dims=[16,16]",
        "agent.num_critics=2",
        "demos.episodes=0",
        "threads=1",
        "device=cpu",
    ]


@pytest.mark.parametrize("demo_buffer", [True, False])
@pytest.mark.parametrize("reward", [0.0, -1.0])
def test_trainer_routes_corrections_as_configured(tmp_path, reach_cfg, demo_buffer, reward):
    cfg = compose(
        "train",
        reach_cfg + [f"corrections.demo_buffer={str(demo_buffer).lower()}", f"corrections.takeover_reward={reward}"],
    )
    tr = Trainer(cfg, tmp_path)
    try:
        dim = tr.env.observation_space["state"].shape[0]
        ep = hand_made(dim, tr.agent.action_dim)
        tr.add_collected(ep)
        tr.count_collected(ep)
        # the online buffer holds the whole episode, the policy step before each take-over penalised
        assert len(tr.online) == 10 and tr.online.is_intervention[:10].tolist() == FLAGS.tolist()
        expected = ep["reward"].copy()
        expected[[1, 5, 7]] += reward
        np.testing.assert_array_equal(tr.online.reward[:10], expected)
        # the demo buffer holds the corrected segments (steps 2-3, 6, 8-9) only with demo_buffer
        if demo_buffer:
            assert len(tr.demo) == 5 and tr.demo.is_intervention[:5].all()
            np.testing.assert_array_equal(tr.demo.obs["state"][:5, 0], [2, 3, 6, 8, 9])
            np.testing.assert_array_equal(tr.demo.reward[:5], [0, 0, 0, 0, 1])  # never penalised there
            # segments that stop before the episode does are cut (they bootstrap); the last keeps its end
            np.testing.assert_array_equal(tr.demo.truncated[:5], [0, 1, 1, 0, 0])
            np.testing.assert_array_equal(tr.demo.terminated[:5], [0, 0, 0, 0, 1])
        else:
            assert len(tr.demo) == 0
        assert (tr.episode, tr.step, tr.intervention_steps) == (1, 10, 5)
    finally:
        tr.env.close()
        tr.eval_env.close()


@pytest.mark.parametrize("trigger", [None, -1.0])
def test_trainer_adds_trigger_transitions_only_when_asked(tmp_path, reach_cfg, trigger):
    cfg = compose(
        "train",
        reach_cfg
        + [
            "corrections.trigger_reward=" + ("null" if trigger is None else str(trigger)),
            "corrections.takeover_reward=0",
        ],
    )
    tr = Trainer(cfg, tmp_path)
    try:
        dim = tr.env.observation_space["state"].shape[0]
        ep = hand_made(dim, tr.agent.action_dim)
        proposed = np.full_like(ep["action"], 0.25)
        tr.add_collected(ep, proposed)
        if trigger is None:
            assert len(tr.online) == 10
        else:  # the episode, then one terminal transition per take-over (steps 2, 6, 8) with the proposed action
            assert len(tr.online) == 13
            np.testing.assert_array_equal(tr.online.obs["state"][10:13, 0], [2, 6, 8])
            np.testing.assert_array_equal(tr.online.action[10:13], proposed[[2, 6, 8]])
            np.testing.assert_array_equal(tr.online.reward[10:13], [trigger] * 3)
            assert tr.online.terminated[10:13].all() and not tr.online.is_intervention[10:13].any()
        tr.add_collected(ep)  # no proposed actions (an episode rebuilt from a store): the episode only
        assert len(tr.online) == (20 if trigger is None else 23)
    finally:
        tr.env.close()
        tr.eval_env.close()


def test_bad_corrections_config_is_refused(tmp_path):
    from robot_rl.cli import UsageError, _validate_train

    for bad, needle in (
        (["corrections.takeover_reward=nan"], "takeover_reward"),
        (["corrections.demo_buffer=3"], "demo_buffer"),
        (["corrections.trigger_reward=inf"], "trigger_reward"),
        (["+corrections.bc=1"], "unknown corrections option"),
    ):
        with pytest.raises(UsageError, match=needle):
            _validate_train(compose("train", bad))
    with pytest.raises(ValueError, match="bc_weight"):
        SACConfig(bc_weight=-1)


OBS = spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (4,), np.float32)})
ACT = spaces.Box(-1, 1, (2,), np.float32)
TARGET = torch.tensor([0.6, -0.4])


def bc_batches(intervening: bool, from_demo: bool = False, b: int = 64):
    g = torch.Generator().manual_seed(0)
    while True:
        yield {
            "obs": {"state": torch.randn(b, 4, generator=g)},
            "next_obs": {"state": torch.randn(b, 4, generator=g)},
            "action": TARGET.expand(b, 2).clone(),
            "reward": torch.zeros(b),
            "terminated": torch.zeros(b),
            "is_intervention": torch.full((b,), float(intervening)),
            "from_demo": torch.full((b,), float(from_demo)),
        }


def mean_action(agent: SAC) -> torch.Tensor:
    with torch.no_grad():
        a, _ = agent.actor(agent.encode({"state": torch.randn(256, 4)}), deterministic=True)
    return a.mean(0)


@pytest.mark.parametrize(
    "intervening,from_demo,on_demos",
    [(True, False, False), (False, False, False), (False, True, False), (False, True, True)],
)
def test_bc_weight_pulls_the_policy_to_corrected_actions_only(intervening, from_demo, on_demos):
    """BC rows: the corrected ones, and the demo buffer's with ``bc_on_demos``; other rows learn as plain SAC."""

    def trained(bc_weight: float) -> tuple[SAC, dict]:
        torch.manual_seed(0)
        agent = SAC(
            OBS,
            ACT,
            SACConfig(
                hidden_dims=(32, 32),
                num_critics=2,
                bc_weight=bc_weight,
                actor_lr=3e-3,
                init_temperature=1e-3,
                bc_on_demos=on_demos,
                device="cpu",
            ),
        )
        agent.encoder.fit(np.random.default_rng(0).normal(size=(256, 4)).astype(np.float32))
        it = bc_batches(intervening, from_demo)
        for _ in range(150):
            m = agent.update(it)
        return agent, m

    with_bc, m = trained(10.0)
    without, m0 = trained(0.0)
    if intervening or on_demos:  # the cloned rows pull the mean action to theirs; plain SAC's Q alone does not
        assert m["bc_rows"] == 64 and m["bc_loss"] < 0.02
        assert torch.allclose(mean_action(with_bc), TARGET, atol=0.1)
        assert not torch.allclose(mean_action(without), TARGET, atol=0.1)
    else:  # no row to clone in the batch: the loss and the learning are exactly plain SAC's
        assert m["bc_rows"] == 0
        for a, b in zip(with_bc.actor.parameters(), without.actor.parameters()):
            torch.testing.assert_close(a, b)
    assert "bc_loss" not in m0


@pytest.mark.parametrize("q_filter", [False, True])
def test_q_filter_clones_only_rows_whose_action_the_critic_rates_above_the_policys(q_filter):
    """With ``bc_q_filter`` a corrected row is cloned only where Q(s, a_data) > Q(s, pi(s)); without it, every one.
    The critic is replaced by a known one, Q = -|a - TARGET|^2, so which rows pass is known from the actions."""
    torch.manual_seed(0)
    agent = SAC(OBS, ACT, SACConfig(hidden_dims=(32, 32), num_critics=2, bc_weight=1.0, bc_q_filter=q_filter))
    agent.critic = lambda feat, action, frozen=False: -(action - TARGET).square().sum(-1).expand(2, -1)
    b = 64
    obs = {"state": torch.randn(b, 4)}
    feat = agent.encode(obs)
    with torch.no_grad():
        policy_mean, _ = agent.actor(feat, deterministic=True)
    # Half the rows carry the critic's best action (above any policy sample), half one far off it (below).
    action = torch.where(torch.arange(b)[:, None] < b // 2, TARGET, torch.tensor([-1.0, 1.0]))
    batch = {"obs": obs, "action": action, "is_intervention": torch.ones(b)}
    _, _, m = agent._actor_losses(feat, batch)
    kept = torch.arange(b) < b // 2 if q_filter else torch.ones(b, dtype=torch.bool)
    assert m["bc_rows"] == kept.sum()
    expected = ((policy_mean - action).square().mean(-1) * kept).sum() / kept.sum()
    torch.testing.assert_close(m["bc_loss"], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("residual", [False, True])
def test_one_actor_pass_gives_the_sample_and_the_mean_that_two_passes_give(residual):
    """The actor loss clones ``tanh(mu)`` from the pass that draws the sample (``with_mean``): the same values as a
    sampling pass and a deterministic pass, for the plain and the residual actor."""
    from robot_rl.agents.networks import TanhGaussianActor
    from robot_rl.agents.residual import ResidualActor

    torch.manual_seed(0)
    actor = TanhGaussianActor(6, 2, (32, 32))
    if residual:
        actor = ResidualActor(actor, 2, scale=0.3)
    feat = torch.randn(16, 6)
    torch.manual_seed(1)
    action, logp, mean = actor(feat, with_mean=True)
    torch.manual_seed(1)
    action2, logp2 = actor(feat)
    mean2, _ = actor(feat, deterministic=True)
    for got, want in ((action, action2), (logp, logp2), (mean, mean2)):
        torch.testing.assert_close(got, want)
