"""``robot-rl bench ros2``: a tiny quick run inside a loopback-only network namespace, and the refusal to run DDS on
a network that is not isolated."""

import json

import pytest
import torch

from robot_rl.cli import BENCHES, main

TINY = ["steps=4", "warmup=1", "image_size=64", "threads=1"]


def _netns_missing():
    from hw.netns import netns_unavailable

    try:
        import rclpy  # noqa: F401
    except ImportError:
        return "rclpy is not installed (pip install 'robot-rl[ros2]')"
    return netns_unavailable()


def test_bad_override_names_the_valid_keys():
    from hw.bench_ros2 import run

    with pytest.raises(ValueError, match="valid keys"):
        run(True, ["nope=1"])
    with pytest.raises(ValueError, match="obs="):
        run(True, ["obs=lidar"])


def test_refuses_a_network_that_is_not_isolated(monkeypatch):
    import hw.netns
    import hw.bench_ros2 as ros2

    monkeypatch.setattr(hw.netns, "network_isolated", lambda: False)
    monkeypatch.setattr(hw.netns, "netns_unavailable", lambda: "no namespaces on this machine")
    started = []
    monkeypatch.setattr(ros2, "_measure", lambda *a: started.append(a))
    with pytest.raises(RuntimeError, match="refusing to run DDS on a network that is not isolated.*allow_network"):
        ros2.run(True, TINY)
    assert not started  # nothing was started before the refusal


@pytest.mark.skipif(bool(_netns_missing()), reason=_netns_missing() or "")
def test_quick_run_reports_latency_rows_and_ratios(tmp_path, capfd):
    assert "ros2" in BENCHES
    threads = torch.get_num_threads()
    assert main(["bench", "ros2", "--quick", "--json", str(tmp_path / "r.json"), *TINY]) == 0
    assert torch.get_num_threads() == threads
    out = capfd.readouterr().out  # printed by the benchmark re-executed in the namespace
    assert "budget/p99" in out
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["network"].startswith("fresh loopback-only network namespace")
    assert res["budget_ms"] == pytest.approx(100.0) and res["task"]["modes"] == ["state", "pixels"]
    rows = res["rows"]
    for mode in ("state", "pixels"):
        for key in (f"ros2_{mode}", f"ros2_{mode}_transport", f"ros2_{mode}_act", f"inproc_{mode}"):
            r = rows[key]
            assert r["n"] == 4, key
            assert 0 < r["min_ms"] <= r["p50_ms"] <= r["p99_ms"] <= r["max_ms"], key
            assert res["ratios"][f"budget/p99 {key}"] == pytest.approx(100.0 / r["p99_ms"])
        # a command is published after its observation arrived and the policy acted on it
        assert rows[f"ros2_{mode}"]["min_ms"] >= rows[f"ros2_{mode}_act"]["min_ms"]
        assert rows[f"ros2_{mode}_robot"]["n"] >= 1  # forwarded by the supervisor to the driver
        assert res["ratios"][f"ros2/inproc {mode} p50"] == pytest.approx(
            rows[f"ros2_{mode}"]["p50_ms"] / rows[f"inproc_{mode}"]["p50_ms"])
        assert 2 < res["loops"][f"ros2_{mode}"]["steps_per_s"] < 15  # paced by the driver's 10 Hz clock (or slower)
    assert res["ratio"] == res["ratios"]["ros2/inproc state p50"]
