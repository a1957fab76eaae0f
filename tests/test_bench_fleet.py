"""``robot-rl bench fleet --quick`` runs a fleet on Ray and reports measured figures, a ratio and a projection."""

import pytest

pytest.importorskip("ray")


def test_quick_fleet_bench_reports_its_rows_and_an_honest_projection(tmp_path):
    from robot_rl.bench.fleet import run

    res = run(quick=True, overrides=["actors=1", "steps=200", "task=reach", f"out={tmp_path}"])
    row = res["rows"]["1"]
    assert row["env_steps_per_s"] > 0 and row["actor_env_steps_per_s"] > 0 and row["scaling_efficiency"] == 1.0
    proj = res["projection"]
    assert proj["gpu_learner_updates_per_s"] is None and "unknown" in proj["text"]
    assert proj["actors_env_steps_per_s"] == pytest.approx(64 * row["actor_env_steps_per_s"])
    assert (tmp_path / "throughput_1" / "fleet.json").exists()
