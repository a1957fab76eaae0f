import json

import pytest

from robot_rl.bench.common import finished_run
from robot_rl.bench.hil import DEFAULT_ROWS, run, settings, train_overrides


def test_quick_bench_compares_with_and_without_corrections_and_reuses_finished_runs(tmp_path, capsys):
    ov = [
        "task=reach",
        "budget=100",
        "eval_every=100",
        "eval_episodes=2",
        "demos=2",
        f"out={tmp_path}/hil",
        "threads=1",
        "agent.num_critics=2",  # passed on to every run: the bench's mechanics, not learning
        "agent.utd_ratio=1",
    ]
    res = run(quick=True, overrides=ov)
    assert list(res["rows"]) == list(DEFAULT_ROWS)
    base, sync, asyn = (res["rows"][r] for r in DEFAULT_ROWS)
    assert base["intervention_share"] == 0.0 and "ratio" not in base
    for row in (sync, asyn):
        (seed,) = row["per_seed"]
        assert 0.0 < row["intervention_share"] <= 1.0 and seed["intervention_steps"] > 0
        assert seed["interventions"] and all(0.0 <= r <= 1.0 for _, r in seed["interventions"])
        for suffix in ("", "_50"):  # at 90% and at 50%
            unknown = row["ratio_bound" + suffix].startswith("unknown")  # neither reached the mark: no figure
            assert (row["ratio" + suffix] is None) == unknown and (unknown or row["ratio" + suffix] > 0)
        assert isinstance(row["aim_met"], bool)
    assert (tmp_path / "hil" / "hil.png").stat().st_size > 1000
    json.loads((tmp_path / "hil" / "hil.json").read_text())
    out = capsys.readouterr().out
    assert "aim" in out and "no_corrections" in out

    again = run(quick=True, overrides=ov + ["reuse=true"])  # nothing to train: every run is reused as it was
    assert "0 run(s) to train (3 reused)" in capsys.readouterr().out
    assert again["rows"]["corrections"]["per_seed"] == sync["per_seed"]


def test_reuse_only_when_the_config_is_the_same(tmp_path):
    s, rows, _ = settings(True, ["task=reach", "budget=150", "eval_every=150", "eval_episodes=2", "demos=2"])
    run_dir = tmp_path / "corrections" / "s0"
    ov = train_overrides(s, rows["corrections"], 0, run_dir, True)
    assert finished_run(run_dir, "train", ov) is None  # nothing there
    from omegaconf import OmegaConf

    from robot_rl.cli import compose

    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(compose("train", ov)))
    (run_dir / "bench_done.json").write_text('{"final": 0.5}')
    assert finished_run(run_dir, "train", ov) == {"final": 0.5}
    assert finished_run(run_dir, "train", [o if not o.startswith("threads=") else "threads=2" for o in ov]) is not None
    assert finished_run(run_dir, "train", ov + ["agent.bc_weight=3"]) is None
    # A switch added since, off by default, trains the same run; one the earlier run had set differently does not.
    cfg = compose("train", ov)
    del cfg.agent["bc_q_filter"]
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    assert finished_run(run_dir, "train", ov) == {"final": 0.5}
    assert finished_run(run_dir, "train", ov + ["agent.bc_q_filter=true"]) is None
    cfg.agent.bc_q_filter = True
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    assert finished_run(run_dir, "train", ov) is None


def test_bad_rows_are_named():
    with pytest.raises(ValueError, match="unknown bench hil row 'nope'"):
        settings(False, ["rows=nope"])
    with pytest.raises(ValueError, match="row=NAME:override"):
        settings(False, ["row=oops"])
    s, rows, rest = settings(False, ["row=mine:hil=sim_operator;agent.bc_weight=2", "agent.utd_ratio=4"])
    assert rows["mine"] == ["hil=sim_operator", "agent.bc_weight=2"] and rest == ["agent.utd_ratio=4"]


def test_a_failing_run_is_named_and_the_others_finish(tmp_path):
    ov = [
        "task=reach",
        "budget=100",
        "eval_every=100",
        "eval_episodes=1",
        "demos=1",
        f"out={tmp_path}/hil",
        "threads=1",
        "rows=no_corrections",
        "row=broken:agent.utd_ratio=0",
        "jobs=2",
    ]
    with pytest.raises(RuntimeError, match="broken seed 0"):
        run(quick=True, overrides=ov)
    assert (tmp_path / "hil" / "no_corrections" / "s0" / "bench_done.json").exists()  # kept for reuse=true


def test_ratios_at_90_and_50_percent_from_scripted_runs(tmp_path, monkeypatch):
    import robot_rl.bench.hil as hil

    def summary(to90, to50, share=0.1):
        curve = [[500, 0.5], [1000, 0.9]]
        return {"steps_to_90": to90, "steps_to_50": to50, "reached": to90 is not None, "final_success": 0.9,
                "curve": curve, "intervention_share": share, "intervention_steps": 1, "interventions": [[500, share]],
                "utd_ratio": 2}  # fmt: skip

    scripted = {
        "no_corrections": {0: summary(3000, 2000, 0.0), 1: summary(None, 3000, 0.0)},  # 90% missed: 6,000
        "corrections": {0: summary(1500, 500), 1: summary(3000, 1500)},
    }
    monkeypatch.setattr(hil, "run_all", lambda s, rows, extra, quick: scripted)
    res = hil.run(overrides=["seeds=0,1", "rows=no_corrections,corrections", f"out={tmp_path}"])
    r = res["rows"]["corrections"]
    assert r["ratio"] == pytest.approx(4500 / 2250) and r["ratio_bound"] == "lower bound"
    assert r["ratio_50"] == pytest.approx(2500 / 1000) and r["ratio_bound_50"] == "exact"
    assert r["aim_met"] and res["rows"]["no_corrections"]["reached"] == 1
