"""SimOperator: the scripted expert takes over a stalled or drifting policy within the configured window, leaves the
expert policy alone, respects its budgets, is seeded, and rescues a do-nothing policy on reach end to end."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from robot_rl.envs.make import expert_action, make_env
from robot_rl.hil.intervention import InterventionWrapper, make_intervention_env
from robot_rl.hil.sim_operator import SimOperator

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def task(name: str) -> dict:
    cfg = yaml.safe_load((CONFIGS / "task" / f"{name}.yaml").read_text())
    cfg["env_kwargs"]["obs_mode"] = "state"
    return cfg


@pytest.fixture(scope="module")
def reach():
    env = make_env(task("reach"))
    yield env
    env.close()


def zero(env):
    return np.zeros(env.action_space.shape, np.float32)


def away(env):
    return -expert_action(env)


def sideways(env):
    e = expert_action(env)
    return np.array([-e[1], e[0], 0.0], np.float32)  # across the expert's horizontal heading


def rollout(env, op, policy, seed):
    """One episode of ``policy(env) -> action`` under ``op``; returns the step infos (the last one also gets the
    step's ``terminated`` and ``truncated``)."""
    wrapped = InterventionWrapper(env, op)
    wrapped.reset(seed=seed)
    infos, done = [], False
    while not done:
        _, _, terminated, truncated, info = wrapped.step(policy(env))
        infos.append(info)
        done = terminated or truncated
    info.update(terminated=terminated, truncated=truncated)
    return infos


def flags(infos):
    return [i["is_intervention"] for i in infos]


@pytest.mark.parametrize("stall_steps", [2, 4])
def test_takes_over_a_stalled_policy(reach, stall_steps):
    op = SimOperator(reach, stall_steps=stall_steps, takeover_steps=3, drift_steps=None, max_fraction=1.0)
    infos = rollout(reach, op, zero, seed=0)
    f = flags(infos)
    assert f.index(True) == stall_steps and op.last_trigger == "stall"  # the first full window
    assert f[stall_steps : stall_steps + 3] == [True] * 3  # holds for takeover_steps, then hands back
    if len(f) > stall_steps + 3:
        assert f[stall_steps + 3] is False
    for i in infos:
        if i["is_intervention"]:  # the expert's action ran, not the policy's zeros
            assert np.any(i["executed_action"] != 0) and not np.any(i["policy_action"])


@pytest.mark.parametrize("policy", [away, sideways])
def test_takes_over_a_drifting_policy(reach, policy):
    op = SimOperator(reach, drift_steps=3, stall_steps=None, takeover_steps=2)
    infos = rollout(reach, op, policy, seed=1)
    assert flags(infos).index(True) == 3 and op.last_trigger == "drift"
    assert infos[-1]["operator_stats"]["takeovers_drift"] >= 1
    # without a corridor only motion away from the expert's heading is drift: another path is left alone (until
    # it turns into moving away from where the expert now heads)
    op = SimOperator(reach, drift_steps=3, stall_steps=None, takeover_steps=2, corridor=None)
    f = flags(rollout(reach, op, policy, seed=1))
    assert f.index(True) == 3 if policy is away else True not in f[:6]


def test_leaves_the_expert_alone_and_rescues_pick_cube():
    env = make_env(task("pick_cube"))
    op = SimOperator(env)
    infos = rollout(env, op, expert_action, seed=0)
    assert infos[-1]["success"] and not any(flags(infos))
    infos = rollout(env, op, zero, seed=0)  # do nothing: stalls at once; the expert drives (gripper dim included)
    f = flags(infos)
    assert f.index(True) == op.stall_steps and infos[-1]["operator_stats"]["takeovers_stall"] >= 1
    assert infos[f.index(True)]["executed_action"][-1] == -1.0  # the expert keeps the gripper open on approach
    assert sum(f) == op.episode_cap == 15
    env.close()


def test_leaves_the_expert_alone_on_reach(reach):
    for seed in range(3):
        infos = rollout(reach, SimOperator(reach), expert_action, seed=seed)
        assert infos[-1]["success"] and not any(flags(infos))


def test_budgets(reach):
    op = SimOperator(reach, takeover_steps=2, max_fraction=0.25, budget_steps=7)
    assert op.episode_cap == 5  # 0.25 x reach's 20-step limit
    per_episode = [sum(flags(rollout(reach, op, zero, seed=s))) for s in range(3)]
    assert all(n <= 5 for n in per_episode) and sum(per_episode) == op.run_intervention_steps <= 7
    assert per_episode[-1] == 0  # the run's budget is spent
    never = SimOperator(reach, probability=0.0)
    assert not any(flags(rollout(reach, never, zero, seed=0)))
    fail = SimOperator(reach, budget_steps=0, fail_when_exhausted=True)  # hopeless and no budget: end it
    infos = rollout(reach, fail, zero, seed=0)
    assert len(infos) == fail.stall_steps + 1 and infos[-1]["operator_mark"] == "failure"
    assert infos[-1]["truncated"] and not infos[-1]["terminated"] and not any(flags(infos))


def test_seeded(reach):
    def run(seed):
        op = SimOperator(reach, noise=0.3, probability=0.5, takeover_steps=2, max_fraction=1.0, seed=seed)
        infos = [i for s in (0, 1) for i in rollout(reach, op, zero, seed=s)]
        return np.array([i["executed_action"] for i in infos]), flags(infos)

    a, b, c = run(5), run(5), run(6)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1] and any(a[1])
    assert a[1] != c[1] or not np.array_equal(a[0], c[0])


def test_heavy_preset_rescues_a_do_nothing_policy_on_reach(reach):
    hil = yaml.safe_load((CONFIGS / "hil" / "sim_operator_heavy.yaml").read_text())
    env = make_intervention_env(reach, hil, seed=0)
    successes = 0
    for seed in range(6):
        env.reset(seed=100 + seed)
        done = False
        while not done:
            _, _, terminated, truncated, info = env.step(zero(reach))
            done = terminated or truncated
        successes += info["success"]
        assert info["intervention_segments"] >= 1 and 0 < info["intervention_rate"] < 1
        assert 0 < info["intervention_steps"] <= 10  # max_fraction 0.5 of the 20-step limit
    assert successes >= 5, successes
    # without the operator the same policy never succeeds
    reach.reset(seed=100)
    done = False
    while not done:
        _, _, terminated, truncated, info = reach.step(zero(reach))
        done = terminated or truncated
    assert not info["success"]


def test_state_survives_a_checkpoint_and_decides_the_same_take_overs(reach, tmp_path):
    from robot_rl.utils.checkpoint import load_state, save_state

    def make():
        return SimOperator(
            reach, noise=0.3, probability=0.5, takeover_steps=2, max_fraction=1.0, budget_steps=12, seed=5
        )

    def episodes(op):
        infos = [i for s in (1, 2, 3) for i in rollout(reach, op, zero, seed=s)]
        return np.array([i["executed_action"] for i in infos]), flags(infos)

    op = make()
    rollout(reach, op, zero, seed=0)  # uses part of the stream and of the run's budget
    assert 0 < op.run_intervention_steps < 12
    save_state(op.state_dict(), tmp_path / "op")  # safetensors + JSON, as in checkpoints/latest
    restored = make()
    restored.load_state_dict(load_state(tmp_path / "op"))
    a, b, fresh = episodes(op), episodes(restored), episodes(make())
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1] and any(a[1])
    assert op.run_intervention_steps == restored.run_intervention_steps == 12  # the budget ran out on both
    assert op.run_takeovers == restored.run_takeovers
    assert a[1] != fresh[1] or not np.array_equal(a[0], fresh[0])  # without the state it would not be the same


def test_person_like_operator_intervenes_less_as_the_policy_improves():
    """The default (person-like) operator on pick_cube, watching a policy that follows the expert but freezes for
    ``k`` steps early in each episode: as ``k`` shrinks (the policy improves) the operator drives fewer steps per
    episode, none for a policy that no longer fails, and never more than its per-episode budget."""
    hil = yaml.safe_load((CONFIGS / "hil" / "sim_operator.yaml").read_text())
    env = make_intervention_env(make_env(task("pick_cube")), hil, seed=0)
    cap = hil["settings"]["max_fraction"]
    rates = []
    try:
        for k in (20, 12, 6, 0):
            share = []
            for seed in range(6):
                env.reset(seed=200 + seed)
                t, done = 0, False
                while not done:
                    frozen = 3 <= t < 3 + k
                    a = zero(env.unwrapped) if frozen else expert_action(env.unwrapped)
                    _, _, terminated, truncated, info = env.step(a)
                    t, done = t + 1, terminated or truncated
                assert info["intervention_steps"] <= int(cap * 30)  # pick_cube: 30-step time limit
                share.append(info["intervention_steps"])
            rates.append(float(np.mean(share)))
    finally:
        env.close()
    assert rates[0] > 0 and rates[-1] == 0, rates
    assert all(a >= b for a, b in zip(rates, rates[1:])), rates
    assert rates[0] > rates[2], rates
