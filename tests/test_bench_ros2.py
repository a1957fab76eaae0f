"""``robot-rl bench ros2``: a tiny quick run inside a loopback-only network namespace, and the refusal to run DDS on
a network that is not isolated."""

import json
import os

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


def test_load_and_priority_settings():
    from hw.bench_ros2 import _settings

    assert _settings(True, [])["load"] == "none" and _settings(False, [])["load"] == "both"
    assert _settings(True, ["load=learner"])["load"] == "learner"
    with pytest.raises(ValueError, match="load="):
        _settings(True, ["load=gpu"])
    with pytest.raises(ValueError, match="realtime_priority"):
        _settings(True, ["realtime_priority=100"])


def test_raise_priority_off_and_out_of_range():
    pytest.importorskip("rclpy")
    from hw.ros_common import raise_priority

    before = os.sched_getscheduler(0)
    assert raise_priority(0) == (False, "normal scheduling (realtime_priority 0)")
    assert os.sched_getscheduler(0) == before
    with pytest.raises(ValueError, match="0..99"):
        raise_priority(100)


def test_raise_priority_says_when_it_is_not_permitted(monkeypatch):
    pytest.importorskip("rclpy")
    from hw.ros_common import raise_priority

    def deny(*args):
        raise PermissionError(1, "Operation not permitted")

    reniced = []
    monkeypatch.setattr(os, "sched_setscheduler", deny)
    monkeypatch.setattr(os, "setpriority", lambda *args: reniced.append(args))
    raised, how = raise_priority(10)
    assert raised and "nice -10 instead" in how and "ulimit -r" in how and reniced
    monkeypatch.setattr(os, "setpriority", deny)
    raised, how = raise_priority(10)
    assert not raised and how.startswith("NOT raised") and "CAP_SYS_NICE" in how


def test_refuses_a_network_that_is_not_isolated(monkeypatch):
    import hw.bench_ros2 as ros2
    import hw.netns

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
        assert rows[f"ros2_{mode}_robot"]["n"] >= 1  # the supervisor's answer, traced to the driver's input
        for part in ("_sup_in", "_sup_out"):  # the supervisor hop, split at the answer's stamp
            assert rows[f"ros2_{mode}{part}"]["n"] == rows[f"ros2_{mode}_robot"]["n"]
        assert rows[f"ros2_{mode}_robot"]["min_ms"] >= rows[f"ros2_{mode}"]["min_ms"]
        assert not any(k.endswith("_load") for k in rows)  # quick: load=none
        assert res["ratios"][f"ros2/inproc {mode} p50"] == pytest.approx(
            rows[f"ros2_{mode}"]["p50_ms"] / rows[f"inproc_{mode}"]["p50_ms"]
        )
        assert 2 < res["loops"][f"ros2_{mode}"]["steps_per_s"] < 15  # paced by the driver's 10 Hz clock (or slower)
    assert res["ratio"] == res["ratios"]["ros2/inproc state p50"]
    assert [t["met"] for t in res["targets"]] == [None, None] and "not measured (load=none)" in out


@pytest.mark.skipif(bool(_netns_missing()), reason=_netns_missing() or "")
def test_quick_run_under_load_puts_idle_and_loaded_side_by_side(tmp_path, capfd):
    assert main(["bench", "ros2", "--quick", "--json", str(tmp_path / "r.json"), "obs=state", "load=both", *TINY]) == 0
    out = capfd.readouterr().out
    res = json.loads((tmp_path / "r.json").read_text())
    rows = res["rows"]
    for key in ("ros2_state", "ros2_state_transport", "ros2_state_act", "inproc_state"):
        assert rows[key]["n"] == rows[f"{key}_load"]["n"] == 4, key
    assert rows["ros2_state_robot_load"]["n"] >= 1
    cmp = res["comparison"]["ros2_state_robot"]
    assert cmp["load/idle p99"] == pytest.approx(
        rows["ros2_state_robot_load"]["p99_ms"] / rows["ros2_state_robot"]["p99_ms"]
    )
    loaded = res["load"]["loaded"]["state"]
    assert 0.3 < loaded["busy_cores"] <= os.cpu_count() + 0.1  # the learner kept (most of) a core busy
    assert loaded["learner_cores"] > 0.3 and loaded["learner_updates_per_s"] > 0
    assert "nice 10" in res["load"]["learner"] and "nice 10" in out
    (target,) = res["targets"]
    assert target["row"] == "ros2_state_robot_load" and target["target_p99_ms"] == 20.0
    assert target["met"] == (target["p99_ms"] <= 20.0)
    assert f"<= 20 ms (state): {target['p99_ms']:.1f} ms: {'met' if target['met'] else 'not met'}" in out
    assert "load/idle p99" in out and set(res["scheduling"]) >= {"supervisor", "driver_state", "ros2 loop"}
