"""Mixed precision in the learner: bf16 autocast keeps float32 master weights, optimizer state, targets and losses,
and its losses stay within tolerance of float32 on a fixed batch."""

import numpy as np
import pytest
import torch
from gymnasium import spaces

from robot_rl.agents.sac import SAC, SACConfig

OBS = spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (18,), np.float32)})
ACT = spaces.Box(-1.0, 1.0, (4,), np.float32)


def _batch(seed: int = 0, n: int = 256) -> dict:
    g = torch.Generator().manual_seed(seed)
    obs = {"state": torch.randn(n, 18, generator=g)}
    return {
        "obs": obs,
        "next_obs": {"state": obs["state"] + 0.1 * torch.randn(n, 18, generator=g)},
        "action": torch.rand(n, 4, generator=g) * 2 - 1,
        "reward": (torch.rand(n, generator=g) < 0.2).float(),
        "terminated": (torch.rand(n, generator=g) < 0.05).float(),
    }


def _agent(precision: str, **over) -> SAC:
    torch.manual_seed(0)
    cfg = SACConfig(num_critics=10, num_target_critics=2, critic_layer_norm=True, actor_q_reduce="mean",
                    device="cpu", precision=precision, **over)  # fmt: skip
    agent = SAC(OBS, ACT, cfg)
    agent.fit_normalizer(_batch(1)["obs"]["state"].numpy())
    return agent


def _first_update(agent: SAC) -> dict[str, float]:
    torch.manual_seed(1)  # the same target subset and policy noise for both precisions
    batch = _batch()
    return agent.update(iter([batch] * agent.cfg.utd_ratio))


@pytest.mark.parametrize("joint", [False, True])
def test_bf16_losses_match_fp32_on_a_fixed_batch(joint):
    """The first update from the same weights on the same batch: each loss within 3% (bf16 keeps 8 bits of mantissa
    in the products; the sums and the losses are float32), in two steps or in one joint pass."""
    full, mixed = _first_update(_agent("fp32", joint_update=joint)), _first_update(_agent("bf16", joint_update=joint))
    for key in ("critic_loss", "q_mean", "target_q", "actor_loss", "entropy"):
        assert mixed[key] == pytest.approx(full[key], rel=0.03, abs=2e-3), key


def test_bf16_keeps_float32_weights_optimizer_state_and_outputs():
    agent = _agent("bf16", fused_optimizer=True)
    for _ in range(3):
        _first_update(agent)
    for module in (agent.critic, agent.actor, agent.critic_target):
        assert all(p.dtype == torch.float32 for p in module.parameters())
    for opt in (agent.critic_opt, agent.actor_opt):
        for state in opt.state.values():
            assert all(v.dtype == torch.float32 for v in state.values() if torch.is_tensor(v) and v.ndim)
    with agent.autocast():
        feat = agent.encode(_batch()["obs"])
        assert agent.critic(feat, _batch()["action"]).dtype == torch.float32  # targets and losses in float32
        assert agent.actor(feat)[1].dtype == torch.float32
    action = agent.act({"state": np.zeros(18, np.float32)})
    assert action.dtype == np.float32 and np.all(np.abs(action) <= 1)


def test_unknown_precision_is_named():
    with pytest.raises(ValueError, match="precision='fp8'"):
        SACConfig(precision="fp8")


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_the_cpu_computes_it_natively(monkeypatch, native):
    import robot_rl.utils.perf as perf

    monkeypatch.setattr(perf, "cpu_has_bf16", lambda: native)
    monkeypatch.delenv("ROBOT_RL_AUTO_PRECISION", raising=False)  # the suite fixes auto to fp32 (conftest.py)
    cpu = torch.device("cpu")
    assert perf.resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert perf.resolve_precision("fp32", cpu) == "fp32" and perf.resolve_precision("bf16", cpu) == "bf16"
    agent = _agent("auto")
    assert agent.precision == ("bf16" if native else "fp32")
    with agent.autocast():  # the update runs under autocast exactly when bf16 was picked
        assert torch.is_autocast_enabled("cpu") == native


def test_runs_default_to_auto_precision_and_compile():
    from robot_rl.cli import compose

    agent = compose("train", []).agent  # RLPD
    assert agent.precision == "auto" and agent.compile == "auto"
    assert compose("train", ["agent=sac"]).agent.compile is False  # compiled, 2 critics updated slower (README)
    assert SACConfig().precision == "fp32" and SACConfig().compile is False  # the library's own: eager float32


def test_the_environment_can_fix_what_auto_means(monkeypatch):
    import robot_rl.utils.perf as perf

    monkeypatch.setattr(perf, "cpu_has_bf16", lambda: True)
    monkeypatch.setenv("ROBOT_RL_AUTO_PRECISION", "fp32")
    assert perf.resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert perf.resolve_precision("bf16", torch.device("cpu")) == "bf16"  # an explicit choice stays
    monkeypatch.setenv("ROBOT_RL_AUTO_PRECISION", "fp16")
    with pytest.raises(ValueError, match="ROBOT_RL_AUTO_PRECISION='fp16'"):
        perf.resolve_precision("auto", torch.device("cpu"))


def _compiles() -> bool:
    from robot_rl.utils.perf import compile_works

    return compile_works("cpu")


@pytest.mark.skipif(not _compiles(), reason="torch.compile does not work on this machine (no C++ compiler?)")
@pytest.mark.parametrize("joint", [False, True])
def test_compiled_update_matches_eager_keeps_parameter_names_and_act_stays_eager(joint):
    """``compile=True``: three updates from the same weights on the same batches give the same losses as eager
    (float32: within 1e-4), the checkpoint's parameter names are unchanged, and act() never compiles; in two steps
    or in one joint pass (``joint_update``, compiled as one graph)."""
    import torch._inductor.config

    eager, compiled = _agent("fp32", joint_update=joint), _agent("fp32", compile=True, joint_update=joint)
    assert compiled.compiled is None and compiled.prepare_update() and not eager.prepare_update()
    with torch._inductor.config.patch(fallback_random=True):  # eager's random stream: the same noise
        for _ in range(3):
            a, b = _first_update(eager), _first_update(compiled)
            for key in ("critic_loss", "q_mean", "target_q", "actor_loss", "entropy"):
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
    assert list(compiled.state_dict()["critic"]) == list(eager.state_dict()["critic"])
    obs = {"state": np.full(18, 0.3, np.float32)}
    frames = dict(torch._dynamo.utils.counters["frames"])
    np.testing.assert_allclose(compiled.act(obs, deterministic=True), eager.act(obs, deterministic=True), atol=1e-5)
    compiled.act(obs)
    assert dict(torch._dynamo.utils.counters["frames"]) == frames  # nothing compiled for act()


def test_auto_compile_follows_the_probe_and_the_environment(monkeypatch):
    import robot_rl.utils.perf as perf

    cpu = torch.device("cpu")
    monkeypatch.delenv("ROBOT_RL_AUTO_COMPILE", raising=False)  # the suite fixes auto to off (conftest.py)
    for works in (True, False):
        monkeypatch.setattr(perf, "compile_works", lambda device_type, works=works: works)
        assert perf.resolve_compile("auto", cpu) is works
    assert perf.resolve_compile(True, cpu) is True and perf.resolve_compile(False, cpu) is False
    monkeypatch.setenv("ROBOT_RL_AUTO_COMPILE", "0")
    assert perf.resolve_compile("auto", cpu) is False
    monkeypatch.setenv("ROBOT_RL_AUTO_COMPILE", "yes")
    with pytest.raises(ValueError, match="ROBOT_RL_AUTO_COMPILE='yes'"):
        perf.resolve_compile("auto", cpu)
    with pytest.raises(ValueError, match="compile='sometimes'"):
        SACConfig(compile="sometimes")


@pytest.mark.slow
@pytest.mark.skipif(not _compiles(), reason="torch.compile does not work on this machine (no C++ compiler?)")
@pytest.mark.parametrize("variant", ["discrete_gripper", "cal_ql", "iql", "n_step_bc"])
def test_compiled_updates_run_for_every_loss_and_head(variant):
    """Each loss and head the update serves, compiled, from the same replay data: finite metrics, weights that moved
    (about 20 s of compiling each)."""
    from robot_rl.data.replay import ReplayBuffer, mixed_batches

    over = {
        "discrete_gripper": {"gripper": "discrete"},
        "cal_ql": {"loss": "cql", "cql_calibrated": True, "cql_samples": 4},
        "iql": {"loss": "iql"},
        "n_step_bc": {"n_step": 3, "bc_on_demos": True},
    }[variant]
    agent = SAC(OBS, ACT, SACConfig(hidden_dims=(32, 32), batch_size=32, device="cpu", compile=True, **over))
    rng = np.random.default_rng(0)
    buf = ReplayBuffer(OBS, 4, 256, mc_discount=agent.mc_discount, n_step=agent.cfg.n_step, discount=0.99)
    for _ in range(8):
        n = 20
        buf.add_episode({
            "obs": {"state": rng.standard_normal((n, 18), dtype=np.float32)},
            "final_obs": {"state": rng.standard_normal(18, dtype=np.float32)},
            "action": rng.uniform(-1, 1, (n, 4)).astype(np.float32),
            "reward": (rng.random(n) < 0.2).astype(np.float32),
            "terminated": np.arange(n) == n - 1,
            "truncated": np.zeros(n, bool),
            "is_intervention": np.zeros(n, bool),
        })  # fmt: skip
    before = [p.detach().clone() for p in agent.critic.parameters()]
    batches = mixed_batches(buf, buf, 32, 0.5, rng)
    for _ in range(3):
        metrics = agent.update(batches)
    assert agent.compiled
    assert all(np.isfinite(v) for v in metrics.values() if isinstance(v, float)), metrics
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.critic.parameters(), strict=True))
