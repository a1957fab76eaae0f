import json

from robot_rl.bench.sample_efficiency import run, steps_to_target
from robot_rl.cli import main


def test_steps_to_target_reads_the_first_eval_at_or_above_90():
    hist = [{"step": 100, "success_rate": 0.5}, {"step": 200, "success_rate": 0.9}, {"step": 300, "success_rate": 1}]
    assert steps_to_target(hist) == 200
    assert steps_to_target(hist[:1]) is None


def test_tiny_run_of_every_row_writes_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "se"
    code = main(["bench", "sample-efficiency", "--quick", "--json", str(tmp_path / "r.json"), "budget=120",
                 "eval_every=60", "eval_episodes=2", "demos=2", f"out={out}", "threads=1", "task=reach"])
    assert code == 0
    res = json.loads((tmp_path / "r.json").read_text())
    assert set(res["rows"]) == {"rlpd+demos", "sac", "sb3_sac"}
    assert "ratio" in res and res["budget_env_steps"] == 120
    for row in res["rows"].values():
        step, success = row["per_seed"][0]["curve"][-1]
        assert step >= 120 or success >= 0.9  # each run goes to the budget or stops at the target
    assert (out / "curves.png").stat().st_size > 1000
    assert "ratio SB3 / ours" in capsys.readouterr().out
