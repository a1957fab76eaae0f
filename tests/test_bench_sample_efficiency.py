import json

import pytest

from robot_rl.bench.sample_efficiency import run, steps_to_target
from robot_rl.cli import main


def test_steps_to_target_reads_the_first_eval_at_or_above_90():
    hist = [{"step": 100, "success_rate": 0.5}, {"step": 200, "success_rate": 0.9}, {"step": 300, "success_rate": 1}]
    assert steps_to_target(hist) == 200
    assert steps_to_target(hist[:1]) is None


def test_confirmed_steps_to_target_read_the_score_where_an_evaluation_has_one():
    hist = [
        {"step": 100, "success_rate": 0.85, "score": 0.91},  # the larger evaluation bore it out: counts
        {"step": 200, "success_rate": 0.95},
    ]
    assert steps_to_target(hist, confirmed=True) == 100 and steps_to_target(hist) == 200
    hist = [{"step": 100, "success_rate": 0.95, "score": 0.83}, {"step": 200, "success_rate": 0.9, "score": 0.9}]
    assert steps_to_target(hist, confirmed=True) == 200 and steps_to_target(hist) == 100


def test_tiny_run_of_every_row_writes_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "se"
    code = main(
        [
            "bench",
            "sample-efficiency",
            "--quick",
            "--json",
            str(tmp_path / "r.json"),
            "budget=120",
            "eval_every=60",
            "eval_episodes=2",
            "demos=2",
            f"out={out}",
            "threads=1",
            "task=reach",
        ]
    )
    assert code == 0
    res = json.loads((tmp_path / "r.json").read_text())
    assert set(res["rows"]) == {"rlpd+demos", "sac", "sb3_sac", "sb3_sac_std"}
    assert "ratio" in res and res["budget_env_steps"] == 120
    for row in res["rows"].values():
        seed = row["per_seed"][0]
        step, score = seed["score_curve"][-1]
        assert step >= 120 or score >= 0.9  # each run goes to the budget or stops at the (confirmed) target
        assert [s for s, _ in seed["score_curve"]] == [s for s, _ in seed["curve"]]
        assert seed["steps_to_90"] == next((s for s, v in seed["score_curve"] if v >= 0.9), None)
    assert (out / "curves.png").stat().st_size > 1000
    assert "ratio SB3 / ours" in capsys.readouterr().out


def test_pixels_row_is_opt_in_and_trains_from_images(tmp_path, capsys):
    from robot_rl.bench.sample_efficiency import PIXEL_ROW, _settings

    assert PIXEL_ROW not in _settings(True, [])[0]["rows"]  # off by default: the state rows are unchanged
    assert _settings(True, ["pixels=false"])[0]["rows"] == ["rlpd+demos", "sac", "sb3_sac", "sb3_sac_std"]
    out = tmp_path / "se"
    # learning_starts and image_size pass through to the training configs, so the tiny pixel run still updates.
    res = run(
        quick=True,
        overrides=[
            "pixels=true",
            "rows=rlpd+demos",
            "budget=60",
            "eval_every=60",
            "eval_episodes=1",
            "demos=1",
            f"out={out}",
            "threads=1",
            "task=reach",
            "learning_starts=20",
            "task.env_kwargs.image_size=64",
        ],
    )
    assert list(res["rows"]) == ["rlpd+demos", PIXEL_ROW]
    for name, row in res["rows"].items():
        step, success = row["per_seed"][0]["curve"][-1]
        assert step >= 60 or success >= 0.9, name
        assert row["wall_s_mean"] > 0 and 0 <= row["final_success_mean"] <= 1, name
    state, px = res["rows"]["rlpd+demos"], res["rows"][PIXEL_ROW]
    if res["pixels_over_state_bound"].startswith("unknown"):
        assert res["pixels_over_state"] is None
    else:
        assert res["pixels_over_state"] == px["median_steps_to_90"] / max(state["median_steps_to_90"], 1.0)
    assert "ratio_pixels" not in res  # no SB3 row asked for
    config = (out / f"{PIXEL_ROW}_s0" / "checkpoints" / "latest" / "config.yaml").read_text()
    assert "obs_mode: pixels" in config and "image_size: 64" in config
    evals = [json.loads(line) for line in (out / f"{PIXEL_ROW}_s0" / "eval.jsonl").read_text().splitlines()]
    assert evals[-1]["updates"] > 0  # the pixel learner ran, not only the demos and the evaluation
    assert "front + wrist images" in capsys.readouterr().out
    json.loads(json.dumps(res))


def test_a_ratio_is_unknown_when_neither_row_reached_the_target():
    from robot_rl.bench.sample_efficiency import _ratio

    def row(steps, reached):
        return {"median_steps_to_90": steps, "reached": reached, "median_steps_to_50": steps, "reached_50": reached}

    for ours, theirs, expect, bound in (
        (row(5000, 1), row(15000, 0), 3.0, "lower bound"),  # SB3 missed: it needs at least 3x
        (row(15000, 0), row(5000, 1), 1 / 3, "upper bound"),
        (row(15000, 0), row(15000, 0), None, "unknown (neither row reached 90%)"),  # not "1.00x, a lower bound"
        (row(4000, 1), row(8000, 1), 2.0, "exact"),
    ):
        res = {"seeds": [0], "rows": {"rlpd+demos": ours, "sb3_sac": theirs}}
        _ratio(res)
        assert res["ratio_bound"] == bound
        assert res["ratio"] == pytest.approx(expect) if expect else res["ratio"] is None


def test_sb3_rows_confirm_their_claims_as_our_trainer_does(tmp_path, monkeypatch):
    """SB3's evaluations follow our trainer's rule: a 20-episode claim is confirmed on eval.confirm x more episodes,
    and only a confirmed 90% stops the run and counts as reached (scripted rates, no learning needed)."""
    import robot_rl.evaluate as evaluate_module
    from robot_rl.bench.sample_efficiency import _settings, _train_sb3

    rates = iter([0.3, 0.95, 0.8, 0.6, 0.9, 0.92])  # evaluations, each claim followed by its confirmation
    asked = []

    def scripted(policy, env, episodes, seed, **kw):
        asked.append(episodes)
        rate = next(rates)
        return {"success_rate": rate, "success_ci_low": rate, "success_ci_high": rate, "episodes": episodes,
                "failed_seeds": []}  # fmt: skip

    monkeypatch.setattr(evaluate_module, "evaluate", scripted)
    s, extra = _settings(True, ["task=reach", "budget=400", "eval_every=50", "eval_episodes=4", "threads=1"])
    history = _train_sb3(0, s, extra + ["eval.confirm=5", "eval.confirm_from=0.5"], quick=True)
    # 0.3: below confirm_from; 0.95 claims, confirmed at 0.8: goes on; 0.6 is no new best (0.8); 0.9 claims the
    # target, confirmed at 0.92: stops there.
    assert asked == [4, 4, 20, 4, 4, 20]
    assert [h["score"] for h in history] == [0.3, 0.8, 0.6, 0.92]
    assert steps_to_target(history, confirmed=True) == history[-1]["step"]
    assert steps_to_target(history) == history[1]["step"]
