import json

import pytest
import torch

from robot_rl.bench.encoder import RATIO_DEFS, ROW_LABELS
from robot_rl.cli import BENCHES, main

TINY = [
    "image_size=64",
    "batch_size=8",
    "utd=1",
    "updates=2",
    "warmup=1",
    "repeats=1",
    "buffer=40",
    "episode_len=10",
    "threads=1",
]


def test_run_tiny_reports_every_row_and_ratio(tmp_path, capsys):
    threads_before = torch.get_num_threads()
    assert "encoder" in BENCHES
    assert main(["bench", "encoder", "--quick", "--json", str(tmp_path / "r.json"), *TINY]) == 0
    assert torch.get_num_threads() == threads_before  # the benchmark restores the caller's thread count
    out = capsys.readouterr().out
    assert "cache/recompute" in out and "batch 8" in out
    res = json.loads((tmp_path / "r.json").read_text())
    rows, ratios = res["rows"], res["ratios"]
    assert set(rows) == set(ROW_LABELS)
    for name, row in rows.items():
        assert row["updates_per_s"] > 0, name
        assert row["ms_per_update"] == pytest.approx(1e3 / row["updates_per_s"]), name
        assert row["critic_steps_per_s"] == pytest.approx(row["updates_per_s"]), name  # utd=1
        assert len(row["per_repeat_updates_per_s"]) == 1, name
    assert set(ratios) == set(RATIO_DEFS) == set(res["ratio_defs"])
    for name, (measured, baseline) in RATIO_DEFS.items():
        assert ratios[name] > 0
        assert ratios[name] == pytest.approx(rows[measured]["updates_per_s"] / rows[baseline]["updates_per_s"])
    assert res["ratio"] == ratios["cache_featurize/recompute"]  # the headline pays the cache's featurize
    # Both sides sampled the same batch and UTD; the recompute side runs the trunk on 2 cams x 8 rows x (2 + 1).
    assert res["settings"]["batch_size"] == 8 and res["settings"]["utd"] == 1
    assert rows["recompute"]["trunk_frames_per_update"] == 2 * 8 * 3
    assert rows["cache"]["trunk_frames_per_update"] == 0 and rows["cache_featurize"]["trunk_frames_per_update"] == 2
    # The cache holds float16 (320, 2, 2) maps per camera at 64 px instead of 64x64x3 uint8 images.
    assert res["task"]["trunk_maps"] == {"front": [320, 2, 2], "wrist": [320, 2, 2]}
    assert rows["cache"]["buffer_bytes_per_transition"] < rows["recompute"]["buffer_bytes_per_transition"]
    assert res["machine"]["threads"] == 1 and res["machine"]["torch_threads"] == 1


def test_bad_override_names_the_valid_keys():
    from robot_rl.bench.encoder import run

    with pytest.raises(ValueError, match="valid keys"):
        run(True, ["batch=8"])
