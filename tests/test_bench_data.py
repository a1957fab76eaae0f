import json

import numpy as np
import pytest
import torch
from gymnasium import spaces

from robot_rl.bench.data import RATIO_DEFS, Float32TransitionBuffer, Pool, allocated_bytes, fill, with_sensor_noise
from robot_rl.cli import main
from robot_rl.data.replay import ReplayBuffer

TINY = [
    "pool_episodes=1",
    "write_episodes=2",
    "episode_len=5",
    "sample_buffer=40",
    "batch_size=8",
    "batches=3",
    "repeats=1",
    "load_transitions=50",
    "image_chunk=4",
    "threads=1",
]


def test_run_tiny_reports_every_row_and_ratio(tmp_path, capsys):
    threads_before = torch.get_num_threads()
    assert main(["bench", "data", "--quick", "--json", str(tmp_path / "r.json"), *TINY]) == 0
    assert torch.get_num_threads() == threads_before  # the benchmark restores the caller's thread count
    result = json.loads((tmp_path / "r.json").read_text())
    assert "write_pixels/need_10hz" in capsys.readouterr().out
    rows, ratios = result["rows"], result["ratios"]
    assert set(rows) == {
        "need_10hz",
        "write_pixels",
        "write_pixels_noisy",
        "write_state",
        "sample_pixels",
        "sample_float32",
        "sample_state",
        "memory_ours",
        "memory_float32",
        "read_state",
        "load_state",
        "read_pixels",
        "load_pixels",
    }
    for name, row in rows.items():
        assert row[row["metric"]] > 0, name
    assert set(ratios) == set(RATIO_DEFS) == set(result["ratio_defs"])
    for name, (measured, baseline, metric, _) in RATIO_DEFS.items():
        assert ratios[name] > 0, name
        assert ratios[name] == pytest.approx(rows[measured][metric] / rows[baseline][metric]), name
    assert rows["need_10hz"]["transitions_per_s"] == pytest.approx(10.0)  # pick_cube runs at 10 Hz
    assert rows["need_10hz"]["frames_per_s"] == pytest.approx(20.0)  # two cameras
    assert rows["write_pixels"]["frames_per_s"] == pytest.approx(2 * rows["write_pixels"]["transitions_per_s"])
    assert rows["write_state"]["frames_per_s"] is None
    # Sensor noise makes frames compress worse; uint8 + each observation once beats float32 obs + next_obs.
    assert rows["write_pixels_noisy"]["disk_bytes_per_transition"] > rows["write_pixels"]["disk_bytes_per_transition"]
    assert ratios["memory_ours/memory_float32"] < 0.2
    assert rows["load_state"]["transitions"] == rows["read_state"]["transitions"] == 50
    assert rows["load_pixels"]["transitions"] == rows["read_pixels"]["transitions"] == 3 * 5
    assert result["machine"]["threads"] == 1 and result["machine"]["torch_threads"] == 1


def _pool(length: int = 7) -> Pool:
    rng = np.random.default_rng(0)
    space = spaces.Dict(
        {"cam": spaces.Box(0, 255, (4, 5, 3), np.uint8), "state": spaces.Box(-np.inf, np.inf, (2,), np.float32)}
    )
    obs = {
        "cam": rng.integers(0, 256, (length, 4, 5, 3), dtype=np.uint8),
        "state": rng.standard_normal((length, 2), dtype=np.float32),
    }
    return Pool(
        obs, rng.uniform(-1, 1, (length, 3)).astype(np.float32), rng.random(length, dtype=np.float32), 0.1, space, 1
    )


def test_float32_baseline_holds_the_same_transitions_as_ours():
    pool = _pool()
    ours = ReplayBuffer(pool.observation_space, 3, capacity=9)
    naive = Float32TransitionBuffer(pool.observation_space, 3, capacity=9)
    fill(ours, pool, 9, 4)  # episodes of 4, 4, 1 steps, wrapping around the 7-row footage
    fill(naive, pool, 9, 4)
    assert naive.size == len(ours) == 9
    for i in range(9):
        nxt = ours.final_next_obs[i] if i in ours.final_next_obs else {k: v[i + 1] for k, v in ours.obs.items()}
        np.testing.assert_allclose(naive.obs["cam"][i], np.moveaxis(ours.obs["cam"][i], -1, 0) / 255.0, rtol=1e-6)
        np.testing.assert_allclose(naive.next_obs["cam"][i], np.moveaxis(nxt["cam"], -1, 0) / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(naive.next_obs["state"][i], nxt["state"])
    np.testing.assert_array_equal(naive.action, ours.action)
    batch = naive.sample(5, np.random.default_rng(1))
    assert batch["obs"]["cam"].shape == (5, 3, 4, 5) and batch["obs"]["cam"].dtype == torch.float32
    assert batch["next_obs"]["state"].shape == (5, 2) and batch["terminated"].shape == (5,)


def test_allocated_bytes_counts_each_array_once():
    class Holder:
        def __init__(self):
            self.a = np.zeros((10, 4), np.float32)
            self.view = self.a[2:5]
            self.d = {"x": np.zeros(3, np.uint8), "nested": {1: np.zeros(2, np.float64)}}
            self.n = 7

    assert allocated_bytes(Holder()) == 160 + 3 + 16
    naive = Float32TransitionBuffer(_pool().observation_space, 3, capacity=10)
    # float32 CHW image + state, twice (obs and next_obs), action, reward, three flags
    assert allocated_bytes(naive) == 10 * (2 * 4 * (60 + 2) + 4 * 3 + 4 + 3)


def test_sensor_noise_touches_only_cameras():
    pool = _pool()
    noisy = with_sensor_noise(pool, 2.0, np.random.default_rng(0))
    assert noisy.obs["cam"].dtype == np.uint8 and not np.array_equal(noisy.obs["cam"], pool.obs["cam"])
    assert np.abs(noisy.obs["cam"].astype(int) - pool.obs["cam"]).mean() < 4
    np.testing.assert_array_equal(noisy.obs["state"], pool.obs["state"])
