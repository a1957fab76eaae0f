"""``robot-rl train-reward`` end to end through the config files: classifier, zero-shot calibration, preferences
from a local HTTP endpoint (cached on rerun), relabelled store, and the reward configs used by ``wrap_reward``."""

import json
import shutil

import numpy as np
import pytest
from omegaconf import OmegaConf
from test_rewards_helpers import SquareEnv, square_store  # noqa: F401
from test_rewards_preference import Endpoint
from test_rewards_vlm import tiny_vlm  # noqa: F401

from robot_rl.cli import compose
from robot_rl.data.store import EpisodeStore
from robot_rl.rewards import train_reward_main, wrap_reward

TINY = [
    "reward.train.steps=60",
    "reward.train.eval_every=30",
    "reward.train.batch_size=32",
    "reward.train.feature_dim=16",
    "reward.train.hidden=32",
    "reward.train.num_kernels=4",
    "threads=1",
    "device=cpu",
]


@pytest.fixture
def store_copy(square_store, tmp_path):
    shutil.copytree(square_store, tmp_path / "s.zarr")
    return tmp_path / "s.zarr"


def test_classifier_from_the_command_line_config(store_copy, tmp_path, capsys):
    out = tmp_path / "clf"
    cfg = compose(
        "train_reward",
        [
            f"data={store_copy}",
            f"out={out}",
            *TINY,
            "reward.train.min_positives=5",
            "reward.train.min_negatives=5",
            "reward.train.reward_marks=1.0",
            "reward.train.positive_last_k=1",
            "reward.train.margin=0",
            "reward.train.image_copies=0",
            "reward.train.val_fraction=0.3",
        ],
    )
    assert cfg.reward.name == "classifier"
    assert train_reward_main(cfg) == 0
    printed = capsys.readouterr().out
    assert "validation: threshold" in printed and f"reward.path={out}" in printed
    rep = json.loads((out / "report.json").read_text())
    assert (
        rep["validation"]["roc_auc"] > 0.9 and rep["relabel"]["scored_steps"] == EpisodeStore.open(store_copy).num_steps
    )
    assert (out / "roc.png").is_file() and (out / "calibration.png").is_file()
    use = compose("train_reward", ["reward=classifier", f"reward.path={out}"]).reward
    env = wrap_reward(SquareEnv(), OmegaConf.to_container(use), "cpu")
    env.reset(seed=0)
    assert "gt_success" in env.step(np.zeros(2, np.float32))[-1]


def test_preferences_from_an_http_endpoint_are_cached(store_copy, tmp_path, capsys):
    ep = Endpoint()
    try:
        args = [
            f"data={store_copy}",
            "reward=preference",
            "reward.labeller.type=http",
            f"reward.labeller.url={ep.url}",
            "reward.labeller.model=judge",
            "reward.labeller.image_size=64",
            "reward.train.pairs=40",
            "reward.train.positive_last_k=1",
            "reward.train.margin=0",
            *TINY,
        ]
        assert (
            train_reward_main(
                compose(
                    "train_reward",
                    [*args, f"out={tmp_path / 'p1'}", f"reward.train.relabel_out={tmp_path / 'relabelled.zarr'}"],
                )
            )
            == 0
        )
        assert len(ep.requests) == 40
        rep = json.loads((tmp_path / "p1" / "report.json").read_text())
        assert rep["preferences"]["asked"] == 40 and rep["answers"]["first"] + rep["answers"]["second"] == 40
        relabelled = EpisodeStore.open(tmp_path / "relabelled.zarr")
        src = EpisodeStore.open(store_copy)
        assert relabelled.num_steps == src.num_steps and len(relabelled) == len(src)
        assert not np.allclose(relabelled.read_all()["reward"], src.read_all()["reward"])
        # The rerun (another output directory) asks the endpoint nothing: every answer is in the store.
        rerun = [*args, f"out={tmp_path / 'p2'}", "reward.train.steps=5", "reward.train.relabel=false"]
        assert train_reward_main(compose("train_reward", rerun)) == 0
        assert len(ep.requests) == 40
        assert json.loads((tmp_path / "p2" / "report.json").read_text())["preferences"]["cached"] == 40
    finally:
        ep.close()


def test_zero_shot_calibration(store_copy, tiny_vlm, tmp_path):
    out = tmp_path / "zs"
    cfg = compose(
        "train_reward",
        [
            f"data={store_copy}",
            "reward=vlm_zero_shot",
            f"reward.path={tiny_vlm}",
            "reward.prompt=a red square in the top right corner",
            "reward.cameras=[front]",
            "reward.train.reward_marks=1.0",
            f"out={out}",
            "threads=1",
            "device=cpu",
        ],
    )
    assert train_reward_main(cfg) == 0
    meta = json.loads((out / "reward_model.json").read_text())
    assert meta["kind"] == "vlm_zero_shot" and meta["threshold"] is not None
    assert meta["report"]["scoring"]["model_calls"] > 0
    env = wrap_reward(SquareEnv(), {"name": "vlm_zero_shot", "path": str(out), "reward": "binary"}, "cpu")
    env.reset(seed=0)
    _, r, _, _, info = env.step(np.zeros(2, np.float32))
    assert r == float(info["success"]) and info["success"] == (info["reward_score"] >= meta["threshold"])


def test_config_errors(store_copy):
    with pytest.raises(ValueError, match="nothing to train"):
        train_reward_main(compose("train_reward", [f"data={store_copy}", "reward=ground_truth"]))
    with pytest.raises(ValueError, match="data= must name an episode store"):
        train_reward_main(compose("train_reward", []))
    with pytest.raises(ValueError, match="unknown classifier option"):
        train_reward_main(compose("train_reward", [f"data={store_copy}", "+reward.train.stepz=3"]))
    with pytest.raises(ValueError, match="needs reward.path"):
        train_reward_main(compose("train_reward", [f"data={store_copy}", "reward=vlm_zero_shot"]))
