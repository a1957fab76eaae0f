"""``joint_update``: the last critic step of an update and the actor + temperature step in one forward and one
backward. Each loss must train only its own parameters, and the result must be exactly the two-step update with the
actor scored by the critic from before that critic step."""

import copy

import pytest
import torch
from test_precision import ACT, OBS, _agent, _batch

from robot_rl.agents.sac import SAC, SACConfig


def _params(agent: SAC) -> dict[str, list[torch.Tensor]]:
    return {
        "critic": [p.detach().clone() for p in agent.critic.parameters()],
        "critic_target": [p.detach().clone() for p in agent.critic_target.parameters()],
        "actor": [p.detach().clone() for p in agent.actor.parameters()],
        "log_alpha": [agent.log_alpha.detach().clone()],
    }


def _assert_same(a: list[torch.Tensor], b: list[torch.Tensor], what: str) -> None:
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=lambda m: f"{what}: {m}")


def test_each_joint_loss_reaches_only_its_own_parameters():
    agent = _agent("fp32", joint_update=True)
    batch = _batch()
    feat, next_feat, action, batch, _ = agent._critic_inputs(batch)
    td, _, _, actor_loss, temp_loss, _ = agent._joint_losses(feat, next_feat, action, batch)
    groups = {"critic": list(agent.critic.parameters()), "actor": list(agent.actor.parameters()),
              "log_alpha": [agent.log_alpha]}  # fmt: skip
    owner = {"critic": td, "actor": actor_loss, "log_alpha": temp_loss}
    for loss_of, loss in owner.items():
        for name, params in groups.items():
            grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            reached = any(g is not None and bool(g.abs().sum() > 0) for g in grads)
            assert reached == (name == loss_of), f"the {loss_of} loss {'misses' if not reached else 'reaches'} {name}"


@pytest.mark.parametrize("bc", [False, True])
def test_joint_update_is_the_two_step_update_with_the_actor_scored_before_the_critic_step(bc):
    """One update at UTD 1 from the same weights and random stream. The critic and its target move exactly as in a
    plain critic step; the actor and temperature exactly as a two-step actor step against the critic before it."""
    over = {"bc_weight": 1.0, "bc_on_demos": True} if bc else {}
    joint = _agent("fp32", joint_update=True, **over)
    plain = copy.deepcopy(joint)
    plain.cfg = SACConfig(**{**plain.cfg.__dict__, "joint_update": False})
    batch = _batch()
    if bc:
        batch["is_intervention"] = (torch.arange(256) % 7 == 0).float()
        batch["from_demo"] = (torch.arange(256) % 2 == 0).float()
    before = _params(joint)

    torch.manual_seed(3)
    metrics = joint.update(iter([batch]))
    after_joint = _params(joint)

    torch.manual_seed(3)  # the same target subset and noise at s'; then the actor's noise at s
    critic_only = copy.deepcopy(plain)
    critic_only._critic_step(batch)
    actor_rng = torch.get_rng_state()
    _assert_same(after_joint["critic"], _params(critic_only)["critic"], "critic")
    _assert_same(after_joint["critic_target"], _params(critic_only)["critic_target"], "critic target")

    torch.manual_seed(3)
    plain._td_target(plain.encode(batch["next_obs"]), batch)  # draws what the critic step draws, trains nothing
    assert torch.equal(torch.get_rng_state(), actor_rng)
    plain._actor_step(batch)  # against the critic as it was before the critic step
    _assert_same(after_joint["actor"], _params(plain)["actor"], "actor")
    _assert_same(after_joint["log_alpha"], _params(plain)["log_alpha"], "temperature")
    assert not any(torch.equal(a, b) for a, b in zip(before["actor"], after_joint["actor"], strict=True))
    assert {"critic_loss", "actor_loss", "temperature_loss", "entropy", "alpha"} <= set(metrics)
    assert ("bc_loss" in metrics) == bc


def test_at_utd_4_three_plain_critic_steps_then_one_joint_step(monkeypatch):
    agent = _agent("fp32", joint_update=True, utd_ratio=4)
    calls = []
    for name in ("_critic_step", "_joint_step", "_actor_step"):
        original = getattr(agent, name)
        monkeypatch.setattr(agent, name, lambda b, n=name, f=original: calls.append(n) or f(b))
    agent.update(iter([_batch(i) for i in range(4)]))
    assert calls == ["_critic_step"] * 3 + ["_joint_step"]


def test_joint_update_needs_the_sac_loss():
    for loss in ("cql", "iql", "h2o"):
        with pytest.raises(ValueError, match=f"joint_update=true needs loss='sac' \\(not '{loss}'\\)"):
            SACConfig(joint_update=True, loss=loss)
    SAC(OBS, ACT, SACConfig(joint_update=True))  # plain SAC takes it
