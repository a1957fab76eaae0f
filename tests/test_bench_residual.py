"""``robot-rl bench residual``: every row runs from the command line and the ratios are computed from the curves."""

import json

import pytest


@pytest.mark.slow
def test_quick_residual_bench_rows_and_ratio(tmp_path):
    """Three rows on reach: a cloned base, the residual over it and RLPD with the same demos."""
    from robot_rl.bench.residual import run

    over = ["tasks=reach", "rows=bc,residual,rlpd", "demos=4", "bc_steps=50", "online_steps=60", "eval_every=60"]
    got = run(quick=True, overrides=[*over, "eval_episodes=1", "bc_episodes=1", f"out={tmp_path}"])["rows"]["reach"]
    assert set(got) == {"data", "bc", "residual", "rlpd"}
    assert all(got[k]["exit"] == 0 for k in ("bc", "residual", "rlpd"))
    a, b = got["residual"]["steps_to_target"], got["rlpd"]["steps_to_target"]
    assert got["residual"]["vs_rlpd_steps"] == (a / b if a and b else None)
    with pytest.raises(ValueError, match="rows: unknown"):
        run(quick=True, overrides=["rows=bc,typo"])


@pytest.mark.slow
def test_quick_residual_bench_on_reach(tmp_path):
    from robot_rl.bench.residual import run

    over = ["tasks=reach", "demos=6", "noise=0.5", "bc_steps=100", "online_steps=100", "eval_every=100"]
    res = run(quick=True, overrides=[*over, "eval_episodes=2", "bc_episodes=2", f"out={tmp_path}"])
    got = res["rows"]["reach"]
    for name in ("bc", "bc_noisy", "flow", "flow_noisy", "residual", "residual_noisy", "dsrl", "dsrl_noisy", "rlpd"):
        assert got[name]["exit"] == 0, (name, got[name].get("error"))
        assert got[name]["curve"] and got[name]["curve"][-1][0] >= 100  # online runs evaluate at an episode's end
    assert got["data"]["successes"] == 6 and got["data_noisy"]["successes"] == 6
    for name, baseline in (("residual", "rlpd"), ("dsrl", "rlpd"), ("residual_noisy", "rlpd_noisy")):
        a, b = got[name]["steps_to_target"], got[baseline]["steps_to_target"]
        assert got[name]["vs_rlpd_steps"] == (a / b if a and b else None)  # None (unknown) unless both reached it
    assert json.loads((tmp_path / "residual.json").read_text())["rows"]["reach"].keys() == got.keys()
    assert (tmp_path / "residual.png").stat().st_size > 0
