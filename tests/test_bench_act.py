import json

import pytest
import torch

from robot_rl.bench.act import LOOP_OF, ROW_LABELS, latency_stats
from robot_rl.cli import BENCHES, main

TINY = ["image_size=64", "calls=6", "warmup=1", "block=4", "threads=1"]


def test_run_tiny_reports_every_row_and_margin(tmp_path, capsys):
    threads_before = torch.get_num_threads()
    assert "act" in BENCHES
    assert main(["bench", "act", "--quick", "--json", str(tmp_path / "r.json"), *TINY]) == 0
    assert torch.get_num_threads() == threads_before  # the benchmark restores the caller's thread count
    out = capsys.readouterr().out
    assert "budget/p99" in out and "pixel actor" in out
    res = json.loads((tmp_path / "r.json").read_text())
    rows, budget = res["rows"], res["budget_ms"]
    assert budget == pytest.approx(100.0)  # pick_cube runs at 10 Hz
    assert set(rows) == set(ROW_LABELS) == set(LOOP_OF)
    for name, r in rows.items():
        assert r["n"] == 6, name
        assert 0 < r["min_ms"] <= r["p50_ms"] <= r["p99_ms"] <= r["max_ms"], name
        assert r["min_ms"] <= r["mean_ms"] <= r["max_ms"], name
        assert r["budget_over_p99"] == pytest.approx(budget / r["p99_ms"]), name
        assert r["headroom_ms"] == pytest.approx(budget - r["p99_ms"]), name
        assert res["ratios"][f"budget/p99 {name}"] == pytest.approx(r["budget_over_p99"])
    assert res["ratio"] == pytest.approx(rows["act_pixels"]["budget_over_p99"])
    # A control step contains its parts: each step's mean is at least the sum of its parts' means.
    assert rows["step_state"]["mean_ms"] >= rows["act_state"]["mean_ms"] + rows["env_step_state"]["mean_ms"] - 1e-6
    assert (
        rows["step_pixels_actor"]["mean_ms"]
        >= rows["act_pixels"]["mean_ms"] + rows["env_step_pixels"]["mean_ms"] - 1e-6
    )
    assert (
        rows["step_pixels_trainer"]["mean_ms"]
        >= rows["act_pixels_maps"]["mean_ms"] + rows["featurize_pixels"]["mean_ms"] - 1e-6
    )
    assert rows["act_residual"]["mean_ms"] >= rows["act_base"]["mean_ms"] - 1e-6  # base + residual holds the base
    assert rows["step_residual"]["mean_ms"] >= rows["act_residual"]["mean_ms"] - 1e-6
    assert "residual actor: base + residual" in out
    assert res["task"]["cameras"] == ["front", "wrist"] and res["task"]["pixel_obs"]["front"] == [64, 64, 3]
    assert res["agent"]["cached_cameras"] == ["front", "wrist"]
    assert res["machine"]["threads"] == 1 and res["machine"]["torch_threads"] == 1


def test_latency_stats():
    s = latency_stats([1.0] * 99 + [50.0], budget_ms=100.0)
    assert s["p50_ms"] == 1.0 and s["max_ms"] == 50.0 and s["n"] == 100
    assert 1.0 < s["p99_ms"] <= 50.0
    assert s["budget_over_p99"] == pytest.approx(100.0 / s["p99_ms"])
    assert s["mean_ms"] == pytest.approx(1.49)


def test_bad_override_names_the_valid_keys():
    with pytest.raises(ValueError, match="valid keys"):
        from robot_rl.bench.act import run

        run(True, ["nope=1"])
