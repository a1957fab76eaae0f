"""Residual RL over a cloned base policy: the correction's bound and schedule (property-based), the actor's use of the
base action, executed actions in the stores (the policy's and an operator's), a run that lifts a degraded base, and
the errors for a missing or mismatched base policy."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robot_rl.agents.networks import TanhGaussianActor
from robot_rl.agents.residual import ResidualActor, compose, residual_gain

unit = st.floats(-1.0, 1.0, allow_nan=False, width=32)


@settings(max_examples=300, deadline=None)
@given(
    base=st.lists(unit, min_size=1, max_size=7),
    residual=st.lists(unit, min_size=7, max_size=7),
    scale=st.floats(1e-3, 2.0),
    gain=st.floats(0.0, 1.0),
)
def test_executed_action_stays_within_the_bound_of_the_base(base, residual, scale, gain):
    b = torch.tensor(base)
    r = torch.tensor(residual[: len(base)])
    out = compose(b, r, scale, gain)
    assert bool(((out >= -1.0) & (out <= 1.0)).all())
    assert float((out - b).abs().max()) <= scale * gain + 1e-6


def test_the_correction_is_phased_in_linearly():
    assert [residual_gain(u, 100) for u in (0, 25, 100, 500)] == [0.0, 0.25, 1.0, 1.0]
    assert residual_gain(0, 0) == 1.0  # no phase-in: full from the start


def test_residual_actor_corrects_the_base_action_in_the_features():
    torch.manual_seed(0)
    actor = ResidualActor(TanhGaussianActor(5, 2, (16,)), action_dim=2, scale=0.1)
    feat = torch.cat([torch.randn(64, 3), torch.rand(64, 2) * 2 - 1], dim=-1)  # the last 2: the base action
    for deterministic in (True, False):
        with torch.no_grad():
            a, logp = actor(feat, deterministic=deterministic)
        assert a.shape == (64, 2) and logp.shape == (64,)
        assert float((a - feat[:, 3:]).abs().max()) <= 0.1 + 1e-6
    actor.gain.fill_(0.0)
    assert torch.equal(actor(feat)[0], feat[:, 3:])  # gain 0: the base action exactly
    assert "gain" in actor.state_dict()  # shipped to actors with the policy weights and kept in checkpoints


@pytest.fixture(scope="module")
def degraded_base(reach_demos, tmp_path_factory):
    """A cloned reach policy run open loop over whole 8-step chunks: it reaches the goal's neighbourhood but often
    not the goal (no feedback within a chunk)."""
    from robot_rl.cli import main

    run = tmp_path_factory.mktemp("base") / "bc"
    args = ["train-bc", "task=reach", f"data=[{reach_demos}]", "steps=400", "eval.every=400", "eval.episodes=5"]
    assert main([*args, "chunk=8", "replan=8", "threads=1", f"run_dir={run}"]) == 0
    return run


def _online(run):
    from robot_rl.data.store import EpisodeStore

    with EpisodeStore.open(run / "online.zarr") as s:
        return list(s.iter_episodes())


def test_stored_actions_are_the_executed_ones(degraded_base, tmp_path):
    """Each stored step keeps the base's proposal (obs base_action) and the executed action: within residual_scale of
    the proposal where the policy acted, the operator's own where it took over."""
    from robot_rl.cli import main

    run = tmp_path / "res"
    args = ["train", "task=reach", "agent=residual", f"base_policy={degraded_base}", "agent.residual_phase_in=0"]
    args += ["total_steps=200", "learning_starts=40", "eval.every=200", "eval.episodes=2", "demos.episodes=3"]
    args += ["agent.hidden_dims=[32,32]", "agent.num_critics=2", "agent.utd_ratio=1"]  # what is stored, not learning
    assert main([*args, "hil=sim_operator_heavy", "threads=1", f"run_dir={run}"]) == 0
    eps = _online(run)
    policy = np.concatenate([~e["is_intervention"] for e in eps])
    gap = np.concatenate([np.abs(e["action"] - e["obs"]["base_action"]).max(-1) for e in eps])
    assert policy.any() and (~policy).any(), "the heavy operator takes over some steps and leaves others"
    assert gap[policy].max() <= 0.3 + 1e-5  # agent.residual_scale
    assert gap[policy].max() > 0.01  # the correction acts
    assert gap[~policy].max() > 0.3  # the operator's actions are stored as executed, not clipped to the bound


@pytest.mark.slow
def test_residual_rl_lifts_a_degraded_base_on_reach(reach_demos, tmp_path):
    """The base: a clone stopped after 40 updates (its actions too timid to reach the goal in time, about 35%)."""
    import json

    from robot_rl.cli import main

    base_run = tmp_path / "underfit"
    args = ["train-bc", "task=reach", f"data=[{reach_demos}]", "steps=40", "eval.every=40", "chunk=1", "threads=1"]
    assert main([*args, f"run_dir={base_run}"]) == 0
    base = json.loads((base_run / "eval.jsonl").read_text().splitlines()[-1])["success_rate"]
    run = tmp_path / "res"
    args = ["train", "task=reach", "agent=residual", f"base_policy={base_run}", "total_steps=1500"]
    assert main([*args, "eval.every=500", "threads=1", f"run_dir={run}"]) == 0
    history = [json.loads(x)["success_rate"] for x in (run / "eval.jsonl").read_text().splitlines()]
    assert base <= 0.6 and max(history) >= base + 0.25, (base, history)


def test_a_residual_run_names_what_its_base_policy_lacks(degraded_base, tmp_path, capsys):
    from robot_rl.cli import main

    common = ["train", "total_steps=10", f"run_dir={tmp_path / 'x'}"]
    assert main([*common, "task=reach", "agent=residual"]) == 2
    assert "pass base_policy=" in capsys.readouterr().err
    assert main([*common, "task=reach", f"base_policy={degraded_base}"]) == 2
    assert "add agent=residual" in capsys.readouterr().err
    assert main([*common, "task=pick_cube", "agent=residual", f"base_policy={degraded_base}"]) == 2
    err = capsys.readouterr().err
    assert "does not match this task" in err and "observation 'state'" in err
    assert main([*common, "task=reach", "agent=residual", f"base_policy={tmp_path}"]) == 2
    assert "robot-rl train-bc run" in capsys.readouterr().err


def test_stores_recorded_without_the_base_get_its_proposals_replayed(degraded_base, reach_demos, tmp_path):
    """Teleop demos (or any store recorded without the base policy) join a residual run: the base is replayed over
    each episode's observations, proposing what it would have proposed live."""
    from robot_rl.bc import load_policy
    from robot_rl.cli import compose as compose_cfg
    from robot_rl.data.store import EpisodeStore
    from robot_rl.trainer import Trainer

    over = ["task=reach", "agent=residual", f"base_policy={degraded_base}", f"demos.path={reach_demos}", "threads=1"]
    tr = Trainer(compose_cfg("train", over), tmp_path / "run")
    loaded = tr.start_fresh()["demo_episodes"]
    with EpisodeStore.open(reach_demos) as store:
        ok = [e for e in store.iter_episodes() if e["metadata"]["success"]]  # the demos taken (only_successful)
    assert loaded == len(ok) > 1
    ep = ok[1]
    assert "base_action" not in ep["obs"]
    base, _ = load_policy(degraded_base, tr.env.env, device="cpu")  # a second copy, stepped live
    base.reset()
    live = [base.act({k: v[i] for k, v in ep["obs"].items()}, deterministic=True) for i in range(len(ep["action"]))]
    live.append(base.act(ep["final_obs"], deterministic=True))
    got = tr.env.propose_episode(ep)
    np.testing.assert_allclose(got["obs"]["base_action"], np.stack(live[:-1]), atol=1e-6)
    np.testing.assert_allclose(got["final_obs"]["base_action"], live[-1], atol=1e-6)
    ep0 = tr.env.propose_episode(ok[0])
    np.testing.assert_allclose(tr.demo.obs["base_action"][: len(ep0["action"])], ep0["obs"]["base_action"], atol=1e-6)


@pytest.fixture(scope="module")
def flow_base(reach_demos, tmp_path_factory):
    from robot_rl.cli import main

    run = tmp_path_factory.mktemp("base") / "flow"
    args = ["train-bc", "task=reach", f"data=[{reach_demos}]", "steps=200", "eval.every=200", "eval.episodes=2"]
    assert main([*args, "policy=flow", "chunk=4", "threads=1", f"run_dir={run}"]) == 0
    return run


def test_dsrl_acts_in_the_noise_of_a_flow_base(flow_base, degraded_base, reach_demos, tmp_path, capsys):
    from omegaconf import OmegaConf

    from robot_rl.agents.residual import NoiseActionWrapper
    from robot_rl.bc import load_policy
    from robot_rl.cli import main
    from robot_rl.data.store import EpisodeStore
    from robot_rl.envs.make import make_env
    from robot_rl.utils.config import config_group

    task = OmegaConf.merge({"obs": "state"}, {"task": config_group("task", "reach")}).task
    base, _ = load_policy(flow_base, make_env(task))
    env = NoiseActionWrapper(make_env(task), base, bound=1.5)
    assert env.action_space.shape == (4 * 3,)  # the latent of a whole chunk: H x A
    obs, _ = env.reset(seed=0)
    noise = np.linspace(-1, 1, 12).astype(np.float32)
    expect = base.predict_chunk(obs, noise=1.5 * noise)[0]  # the chunk's first action is what the env executes
    ref = make_env(task)
    ref.reset(seed=0)
    np.testing.assert_allclose(env.step(noise)[0]["state"], ref.step(expect)[0]["state"], atol=1e-6)
    with pytest.raises(ValueError, match="policy=flow"):
        NoiseActionWrapper(make_env(task), load_policy(degraded_base, make_env(task))[0], 1.5)

    run = tmp_path / "dsrl"
    args = ["train", "task=reach", "agent=dsrl", f"base_policy={flow_base}", "demos.episodes=0", "total_steps=120"]
    assert main([*args, "learning_starts=40", "eval.every=120", "eval.episodes=2", f"run_dir={run}"]) == 0
    with EpisodeStore.open(run / "online.zarr") as s:
        assert s.schema.action_dim == 12 and "latent noise" in s.schema.action_semantics
    capsys.readouterr()
    assert main(["train", "task=reach", "agent=dsrl", f"base_policy={flow_base}", "total_steps=10"]) == 2
    assert "demos.episodes=0" in capsys.readouterr().err  # demonstrations have no noise to learn from
