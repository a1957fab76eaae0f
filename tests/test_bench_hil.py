import json

from robot_rl.bench.hil import ROWS, run


def test_quick_bench_compares_with_and_without_the_sim_operator(tmp_path):
    res = run(quick=True, overrides=["task=reach", "budget=150", "eval_every=150", "eval_episodes=2", "demos=2",
                                      f"out={tmp_path}/sample_efficiency", "threads=1"])
    assert set(res["rows"]) == set(ROWS)
    base, hil = (res["rows"][r][0] for r in ROWS)
    assert base["intervention_rate"] == 0.0 and hil["intervention_rate"] > 0.0
    assert hil["interventions"] and all(0.0 <= r <= 1.0 for _, r in hil["interventions"])
    assert res["ratio"] > 0 and res["ratio_bound"] in ("exact", "lower bound", "upper bound", "unbounded")
    assert (tmp_path / "hil" / "hil.png").stat().st_size > 1000
    json.loads((tmp_path / "hil" / "hil.json").read_text())
