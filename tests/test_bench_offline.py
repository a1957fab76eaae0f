"""``robot-rl bench offline --quick``: every row is a real ``robot-rl`` run; the result names each row's curve,
steps to 90% (or none), ratios where both sides reached it, and writes its JSON and plot."""

import json

import pytest


def _check(res, out, task, rows):
    got = res["rows"][task]
    for name in rows:
        row = got[name]
        assert row["exit"] == 0, row
        assert row["curve"] and row["final"] is not None and 0.0 <= row["best"] <= 1.0
        assert row["steps_to_90"] is None or row["steps_to_90"] == next(s for s, x in row["curve"] if x >= 0.9)
    assert json.loads((out / "offline.json").read_text())["rows"][task].keys() == got.keys()
    assert (out / "offline.png").stat().st_size > 0
    return got


def test_quick_offline_bench_runs_its_rows_and_reads_back_finished_ones(tmp_path, capsys):
    from robot_rl.bench.offline import run

    # the offline rows run in the slow pick_cube test below and (as train-offline) in tests/test_offline.py
    over = ["tasks=reach", "groups=prior", "demos=8", "failures=8", "noise=3", f"out={tmp_path}"]
    over += ["online_steps=200", "reuse=true"]
    res = run(quick=True, overrides=over)
    got = _check(res, tmp_path, "reach", ["no_prior", "prior"])
    assert "reused" not in capsys.readouterr().out
    # an interrupted sweep loses nothing: the finished rows are read back
    again = run(quick=True, overrides=over)["rows"]["reach"]
    assert capsys.readouterr().out.count("reused") == 2 and again["prior"] == got["prior"]
    # (a changed setting reruns its rows: finished_run compares resolved configs, tests/test_bench_hil.py)
    assert got["data_store"]["successes"] == 8 and got["data_store"]["failures"] == 8
    ratio = got["prior"]["vs_no_prior_steps_to_90"]
    both = got["prior"]["steps_to_90"] and got["no_prior"]["steps_to_90"]
    assert (ratio is None) == (not both)
    with pytest.raises(ValueError, match="groups: unknown"):
        run(quick=True, overrides=["groups=offline,typo"])


@pytest.mark.slow
def test_quick_offline_bench_runs_every_group_on_pick_cube(tmp_path):
    from robot_rl.bench.offline import run

    res = run(quick=True, overrides=["tasks=pick_cube", "demos=5", "failures=5", f"out={tmp_path}"])
    got = _check(
        res,
        tmp_path,
        "pick_cube",
        ["iql_offline", "calql_offline", "rlpd_same_data", "calql_online", "wsrl", "h2o", "sim_only", "real_offline"],
    )
    assert got["calql_online"]["dips"] in (True, False) and got["real_store"]["episodes"] == 10
