"""The reward benchmark end to end at toy size: records pick_cube pixel episodes (expert and noisy), trains the
classifier, scores held-out frames against the simulator's ground truth."""

import json

import numpy as np
import pytest
import torch

from robot_rl.bench.data import _task_config
from robot_rl.bench.reward import DEFAULTS, heldout_truth, record_store, run
from robot_rl.data.store import EpisodeStore

TINY = [
    "tasks=pick_cube",
    "success_episodes=2",
    "failure_episodes=2",
    "heldout_episodes=1",
    "steps=20",
    "image_size=48",
    "threads=1",
    "image_copies=0",
    "positive_last_k=2",
    "margin=0",
    "min_examples=2",
]


@pytest.mark.filterwarnings("ignore:.*class imbalance")
def test_tiny_run_reports_heldout_metrics(capsys):
    before = torch.get_num_threads()
    result = run(quick=True, overrides=TINY)
    assert torch.get_num_threads() == before
    json.dumps(result)  # JSON-serialisable, NaN-free
    row = result["rows"]["pick_cube"]
    assert row["recorded_train"]["successes"] == 2 and row["recorded_train"]["failures"] == 2
    held = row["heldout"]
    assert held["frames"] == 2 * (30 + 1) and 0 < held["positive_frames"] < held["frames"]
    for k in ("accuracy", "fpr", "recall", "precision"):
        assert k in held["frame"]
    assert 0 <= held["roc_auc"] <= 1 and isinstance(held["meets_aim"], bool)
    assert result["rl"]["status"].startswith("not requested")
    assert row["labels"] == "operator" and set(row["by_labels"]) == {"operator", "last_k"}  # both label sources
    assert row["by_labels"]["operator"]["heldout"] == held and "roc_auc" in row["by_labels"]["last_k"]["heldout"]
    assert "held-out FPR" in capsys.readouterr().out
    with pytest.raises(ValueError, match="bad benchmark override"):
        run(quick=True, overrides=["taks=pick_cube"])
    assert set(DEFAULTS) >= {"tasks", "noise", "target_fpr", "rl"}


def test_recorded_ground_truth_lines_up_with_frames(tmp_path):
    info = record_store(tmp_path / "s.zarr", _task_config("pick_cube"), 48, 1, 1, 1.0, seed=0)
    store = EpisodeStore.open(tmp_path / "s.zarr")
    assert info["episodes"] == len(store) == 2 and store.label_names() == ["gt_success"]
    images, truth, episode = heldout_truth(store)
    assert len(truth) == store.num_steps + 2 and not truth[np.r_[0, np.flatnonzero(np.diff(episode)) + 1]].any()
    ok = np.array([store.metadata(e)["success"] for e in range(2)])
    for e in range(2):  # an episode is successful exactly when its final frame is a success
        assert truth[episode == e][-1] == ok[e]
    assert ok.sum() == 1 and images["front"].shape[1:] == (48, 48, 3)


def test_rl_rows_are_summarised_honestly():
    from robot_rl.bench.reward import RL_ROWS, summarize_rl_run

    hist = [
        {"step": 500, "episode": 20, "success_rate": 0.0, "reward_hacked_episodes": 4, "reward_vetoed_steps": 0},
        {"step": 1000, "episode": 149, "success_rate": 0.5, "reward_hacked_episodes": 129},
        {"step": 1500, "episode": 200, "success_rate": 0.95, "reward_hacked_episodes": 130, "reward_vetoed_steps": 7},
    ]
    out = summarize_rl_run(hist, warmup=1000)
    assert out["steps_to_90"] == 1500 and out["final_success"] == 0.95 and out["vetoed_steps"] == 7
    assert (out["episodes_after_warmup"], out["hacked_after_warmup"]) == (51, 1)  # counted from the 1000-step eval
    assert out["hacked_share_after_warmup"] == 1 / 51
    never = summarize_rl_run(hist[:2], warmup=5000)  # no 90%, nothing after warm-up: unknown, not zero
    assert never["steps_to_90"] is None and never["hacked_share_after_warmup"] is None
    gt = summarize_rl_run([{"step": 1500, "episode": 60, "success_rate": 1.0}], warmup=1000)
    assert gt["hacked_share_after_warmup"] is None  # the simulator's own reward cannot be hacked: not 0%
    assert all(any(o.startswith("reward=") for o in ovs) for ovs in RL_ROWS.values())
    assert "reward.refine.judge=none" in RL_ROWS["classifier"]  # the classifier alone really is alone
