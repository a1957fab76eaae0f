import itertools
import json

import pytest
import torch

from robot_rl.agents.networks import EnsembleQ
from robot_rl.bench.common import parse_overrides
from robot_rl.bench.learner import DEFAULTS, LoopEnsembleQ, _make_agent, _random_batches, run, use_loop_critic

TINY = [
    "updates=3",
    "warmup=1",
    "repeats=1",
    "hidden=16,16",
    "batch_size=32",
    "state_dim=6",
    "action_dim=2",
    "buffer=200",
    "num_critics=4",
    "threads=1",
]


def test_run_tiny_reports_every_row_and_ratio():
    pytest.importorskip("stable_baselines3")
    threads_before = torch.get_num_threads()
    result = run(quick=True, overrides=TINY)
    assert torch.get_num_threads() == threads_before  # the benchmark restores the caller's thread count
    rows = result["rows"]
    fp32 = {"rlpd_utd1", "rlpd_utd4", "sac2", "sb3", "rlpd_utd1_sampling", "sac2_sampling", "rlpd_loop"}
    from robot_rl.utils.perf import compile_works

    fast = ("", "_bf16", "_bf16_joint") + (("_bf16_compile", "_bf16_compile_joint") if compile_works("cpu") else ())
    cpu = fp32 | {f"{k}{m}" for k in ("rlpd_utd1", "rlpd_utd4", "sac2") for m in fast}
    if torch.cuda.is_available():  # GPU rows beside the CPU's, the device named
        gpu = {f"{k}_cuda{m}" for k in ("rlpd_utd1", "rlpd_utd4", "sac2") for m in fast}
        assert set(rows) == cpu | gpu and result["machine"]["cuda_device"]
        assert all(result["machine"]["cuda_device"] in rows[k]["label"] for k in gpu)
    else:  # none, and never made up from the CPU's figures
        assert set(rows) == cpu and result["machine"]["cuda_device"] is None
        assert any("no CUDA device" in n for n in result["notes"])
    for name, row in rows.items():
        assert row["updates_per_s"] > 0, name
        assert row["ms_per_update"] == pytest.approx(1e3 / row["updates_per_s"])
    assert result["ratio"] == pytest.approx(rows["rlpd_utd1"]["updates_per_s"] / rows["sb3"]["updates_per_s"])
    assert all(v is not None and v > 0 for v in result["ratios"].values())
    per_env_step = rows["rlpd_utd4"]["updates_per_s"] / 4 / rows["sb3"]["updates_per_s"]  # 4 critic steps per env step
    assert result["ratios"]["rlpd_utd4_per_env_step/sb3"] == pytest.approx(per_env_step)
    assert sum("to compile and warm up (not timed)" in n for n in result["notes"]) == (6 if len(fast) == 5 else 0)
    assert result["machine"]["threads"] == 1 and result["machine"]["torch_threads"] == 1
    assert result["settings"]["hidden"] == [16, 16]
    json.loads(json.dumps(result))


@pytest.mark.parametrize("layer_norm", [True, False])
def test_loop_ensemble_matches_batched_ensemble(layer_norm):
    torch.manual_seed(0)
    ens = EnsembleQ(5, 7, (16, 12), layer_norm)
    with torch.no_grad():  # move LayerNorm affine params off their (1, 0) init so copying them is tested
        for p in ens.parameters():
            p.add_(0.1 * torch.randn_like(p))
    loop = LoopEnsembleQ(5, 7, (16, 12), layer_norm).load_from_ensemble(ens)
    feat, act = torch.randn(9, 5), torch.randn(9, 2)
    torch.testing.assert_close(loop(feat, act), ens(feat, act))
    idx = torch.tensor([3, 0])
    torch.testing.assert_close(loop(feat, act, idx), ens(feat, act, idx))
    # Gradients w.r.t. the action (what the actor loss uses) agree too.
    a1, a2 = act.clone().requires_grad_(), act.clone().requires_grad_()
    ens(feat, a1).mean(0).sum().backward()
    loop(feat, a2).mean(0).sum().backward()
    torch.testing.assert_close(a1.grad, a2.grad)
    frozen = loop(feat, act, frozen=True)  # the actor's pass: the same values, no gradient to the members
    torch.testing.assert_close(frozen, ens(feat, act, frozen=True))
    assert not frozen.requires_grad


def test_swapped_loop_agent_updates_like_batched_agent():
    s = parse_overrides(TINY, DEFAULTS)
    torch.manual_seed(1)
    batched = _make_agent(s, s["num_critics"], 1)
    looped = _make_agent(s, s["num_critics"], 1)
    for name in ("actor", "critic", "critic_target"):
        getattr(looped, name).load_state_dict(getattr(batched, name).state_dict())
    use_loop_critic(looped)
    batches = _random_batches(s, torch.Generator().manual_seed(0))
    for _ in range(3):  # same RNG stream for target-critic sampling and actor noise
        torch.manual_seed(2)
        m1 = batched.update(itertools.cycle(batches))
        torch.manual_seed(2)
        m2 = looped.update(itertools.cycle(batches))
        assert m1 == pytest.approx(m2, rel=1e-4, abs=1e-5)
    feat, act = batches[0]["obs"]["state"], batches[0]["action"]
    torch.testing.assert_close(looped.critic(feat, act), batched.critic(feat, act), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(looped.critic_target(feat, act), batched.critic_target(feat, act), rtol=1e-4, atol=1e-5)


def test_overrides_are_typed_and_checked():
    s = parse_overrides(["hidden=[64,32]", "seconds=0.5", "profile=true", "threads=1"], DEFAULTS)
    assert s["hidden"] == (64, 32) and s["seconds"] == 0.5 and s["profile"] is True and s["threads"] == 1
    with pytest.raises(ValueError, match="valid keys"):
        parse_overrides(["nope=1"], DEFAULTS)
    with pytest.raises(ValueError, match="cannot read"):
        parse_overrides(["threads=two"], DEFAULTS)
