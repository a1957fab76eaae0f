"""Success classifier: labelling rule and split, metrics and threshold choice, training on a recorded store, saved
model, bad inputs, the online reward wrapper and cached relabelling."""

import json
import shutil
import warnings

import gymnasium as gym
import numpy as np
import pytest
from test_rewards_helpers import TINY_CLASSIFIER, SquareEnv, record, square_store, trained_classifier  # noqa: F401

from robot_rl.data.store import EpisodeStore
from robot_rl.rewards import RewardDataError, load_reward_model, wrap_reward
from robot_rl.rewards.classifier import ClassifierConfig, train_classifier
from robot_rl.rewards.frames import LabelRule, episode_labels, load_frames, split_episodes
from robot_rl.rewards.labelling import score_store, write_relabelled_store
from robot_rl.rewards.metrics import binary_metrics, roc_auc, threshold_for_fpr


def test_label_rule_and_episode_split():
    rule = LabelRule(positive_last_k=2, margin=1)
    assert episode_labels(5, True, None, rule).tolist() == [0, 0, 0, -1, 1, 1]
    assert episode_labels(5, False, None, rule).tolist() == [0] * 6
    marks = np.array([0, 1, 0, 0, 0], bool)  # transition 1 marks frame 2
    assert episode_labels(5, False, marks, rule).tolist() == [0, 0, 1, 0, 0, 0]
    assert episode_labels(1, True, None, LabelRule(3, 2)).tolist() == [1, 1]
    eps, succ = np.arange(20), np.arange(20) % 4 == 0
    tr, va = split_episodes(eps, succ, 0.25, seed=3)
    assert not set(tr) & set(va) and sorted([*tr, *va]) == list(range(20))
    assert succ[va].sum() >= 1 and (~succ[va]).sum() >= 1  # stratified: both classes held out
    assert split_episodes(eps, succ, 0.25, seed=3)[1].tolist() == va.tolist()


def test_frames_follow_the_store_and_marks(square_store):
    store = EpisodeStore.open(square_store)
    f = load_frames(store, rule=LabelRule(positive_last_k=1, margin=0, reward_marks=1.0))
    assert f.cameras == ["front", "wrist"] and f.image_shapes["front"] == (64, 64, 3)
    assert len(f) == store.num_steps + len(store)  # T + 1 frames per episode
    ep = store.episode(2)
    first = store.metadata(2)["first_step"]
    rows = np.flatnonzero(f.episode == 2)
    np.testing.assert_array_equal(f.images["front"][rows[-1]], ep["final_obs"]["front"])
    np.testing.assert_array_equal(f.frame_id[rows], first + 2 + np.arange(len(rows)))
    # With exact marks from the sparse reward, positives are exactly the frames after a rewarded transition.
    np.testing.assert_array_equal(f.label[rows][1:] == 1, ep["reward"] >= 1)
    with pytest.raises(RewardDataError, match=r"\['side'\] missing"):
        load_frames(store, cameras=["side", "front"])


def test_auc_threshold_and_metrics():
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.3
    s = np.round(rng.normal(y * 1.0, 1.0), 1)  # with ties
    pairwise = np.mean([(a > b) + 0.5 * (a == b) for a in s[y] for b in s[~y]])
    assert roc_auc(y, s) == pytest.approx(pairwise)
    assert np.isnan(roc_auc(np.ones(3), [1, 2, 3]))
    # The threshold picked on validation negatives holds the target FPR on fresh negatives from the same source.
    neg_val, pos_val = rng.normal(0, 1, 20000), rng.normal(3, 1, 2000)
    thr = threshold_for_fpr(neg_val, 0.01, pos_val)
    assert np.mean(neg_val >= thr) <= 0.01
    neg_test, pos_test = rng.normal(0, 1, 20000), rng.normal(3, 1, 2000)
    m = binary_metrics(np.r_[np.zeros(20000), np.ones(2000)], np.r_[neg_test, pos_test], thr)
    assert 0.0075 <= m["fpr"] <= 0.0125 and m["recall"] > 0.6
    # Separable scores: the threshold sits in the gap, admitting no false positive.
    t = threshold_for_fpr([0.1, 0.2, 0.3], 0.0, [0.8, 0.9], probabilities=True)
    assert 0.3 < t < 0.8
    with pytest.warns(UserWarning, match="needs at least 100"):
        threshold_for_fpr(np.arange(10.0), 0.01)


def test_classifier_learns_the_easy_split(trained_classifier):
    out, rep = trained_classifier
    val = rep["validation"]
    assert val["roc_auc"] >= 0.95, val
    assert val["at_threshold"]["accuracy"] >= 0.9 and val["at_threshold"]["recall"] >= 0.8, val
    assert val["at_threshold"]["fpr"] <= 0.05 + 1e-9
    assert not set(rep["train_episodes"]) & set(rep["val_episodes"])  # no frame of a validation episode trained on
    for f in ("reward_model.json", "reward_model.safetensors", "calibration.png", "roc.png"):
        assert (out / f).stat().st_size > 0, f
    meta = json.loads((out / "reward_model.json").read_text())
    assert meta["kind"] == "classifier" and meta["cameras"] == {"front": [64, 64, 3], "wrist": [64, 64, 3]}
    assert meta["threshold"] == pytest.approx(val["threshold"]) and len(meta["trunk"]["fingerprint"]) == 16
    for k in ("accuracy", "precision", "recall", "fpr"):
        assert k in meta["report"]["validation"]["at_threshold"]


def test_saved_classifier_scores_and_wraps_the_env(trained_classifier, square_store):
    out, _ = trained_classifier
    model = load_reward_model(out, "cpu")
    store = EpisodeStore.open(square_store)
    f = load_frames(store, rule=LabelRule(1, 0, reward_marks=1.0))
    p = model.score({c: f.images[c] for c in model.cameras})
    assert p.shape == (len(f),) and ((p >= 0) & (p <= 1)).all()
    assert roc_auc(f.label == 1, p) > 0.95

    env = SquareEnv(max_episode_steps=10)
    assert wrap_reward(env, {"name": "ground_truth"}, "cpu") is env
    assert wrap_reward(env, None) is env
    wrapped = wrap_reward(env, {"name": "classifier", "path": str(out), "terminate_on_success": False}, "cpu")
    obs, info = wrapped.reset(seed=5)
    assert info["success"] is False and "gt_success" in info
    agree = 0
    for _ in range(10):
        obs, r, term, trunc, info = wrapped.step(env.expert_action())
        assert r == float(info["success"]) and isinstance(info["reward_score"], float)
        agree += info["success"] == info["gt_success"]
    assert info["gt_success"] and info["success"] and agree >= 9
    strict = wrap_reward(SquareEnv(), {"name": "classifier", "path": str(out), "consecutive": 3, "reward": "score"})
    strict.reset(seed=5)
    first = None
    for t in range(12):
        _, r, term, _, info = strict.step(strict.unwrapped.expert_action())
        assert 0 <= r <= 1  # the probability as a dense reward
        if info["gt_success"] and first is None:
            first = t
        if term:
            break
    assert term and first is not None and t >= first + 2  # success declared after 3 frames in a row above threshold

    venv = gym.vector.SyncVectorEnv([lambda: SquareEnv(max_episode_steps=4)] * 2)
    vw = wrap_reward(venv, {"name": "classifier", "path": str(out)}, "cpu")
    vw.reset(seed=0)
    for _ in range(6):
        _, r, term, trunc, info = vw.step(np.ones((2, 2), np.float32))
        assert r.shape == (2,) and info["success"].shape == (2,) and info["gt_success"].dtype == bool


def test_bad_inputs_name_counts_and_cameras(tmp_path, trained_classifier):
    few = record(tmp_path / "few.zarr", 1, 3, steps=6)
    with pytest.raises(
        RewardDataError,
        match=r"too few examples: 2 positive and 26 negative frames from 4 episodes "
        r"\(1 successful, 3 failed; 0 frames left out\); need at least 5",
    ):
        train_classifier(few, ClassifierConfig.from_dict({**TINY_CLASSIFIER, "min_positives": 5}), device="cpu")
    with pytest.warns(UserWarning, match="heavy class imbalance"), pytest.raises(RewardDataError, match="split"):
        train_classifier(
            few,
            ClassifierConfig.from_dict({**TINY_CLASSIFIER, "min_positives": 1, "imbalance_warn": 5.0}),
            device="cpu",
        )
    with pytest.raises(RewardDataError, match=r"\['top'\] missing; it has \['front', 'wrist'\]"):
        train_classifier(few, ClassifierConfig.from_dict({**TINY_CLASSIFIER, "cameras": ["top"]}), device="cpu")
    with pytest.raises(ValueError, match="unknown classifier option"):
        ClassifierConfig.from_dict({"stepz": 3})
    out, _ = trained_classifier
    with pytest.raises(
        RewardDataError,
        match=r"wrong image size for camera\(s\) front: \(48, 48, 3\) instead of "
        r"\(64, 64, 3\); wrist",
    ):
        wrap_reward(SquareEnv(size=48), {"name": "classifier", "path": str(out)}, "cpu")
    with pytest.raises(ValueError, match="needs reward.path"):
        wrap_reward(SquareEnv(), {"name": "classifier"}, "cpu")


def test_relabelling_is_cached_in_the_store(tmp_path, square_store, trained_classifier):
    shutil.copytree(square_store, tmp_path / "s.zarr")
    store = EpisodeStore.open(tmp_path / "s.zarr")
    model = load_reward_model(trained_classifier[0], "cpu")
    calls = []
    real = model.score
    model.score = lambda frames: calls.append(1) or real(frames)
    s1, st1 = score_store(store, model)
    n1 = len(calls)
    s2, st2 = score_store(EpisodeStore.open(tmp_path / "s.zarr"), model)
    assert n1 > 0 and len(calls) == n1 and st2["model_calls"] == 0 and st2["cached_steps"] == store.num_steps
    np.testing.assert_allclose(s1, s2, atol=1e-6)
    assert store.label_info(st1["label_set"])["meta"] == model.identity()
    # A grown store costs only its new episodes.
    with EpisodeStore.open(tmp_path / "s.zarr", "a") as w:
        ep = store.episode(0)
        w.append_episode(
            ep["obs"],
            ep["final_obs"],
            ep["action"],
            ep["reward"],
            ep["terminated"],
            ep["truncated"],
            ep["is_intervention"],
            ep["timestamp"],
            success=True,
            source="scripted",
        )
    s3, st3 = score_store(EpisodeStore.open(tmp_path / "s.zarr"), model)
    assert st3["scored_steps"] == len(ep["reward"]) and st3["cached_steps"] == store.num_steps
    np.testing.assert_allclose(s3[-len(ep["reward"]) :], s3[: len(ep["reward"])], atol=1e-6)
    # Offline relabelling writes a copy; the source's episodes stay as they were.
    copy = write_relabelled_store(store, tmp_path / "relabelled.zarr", (s1 >= model.threshold).astype(np.float32))
    np.testing.assert_array_equal(copy.read_all()["reward"], (s1 >= model.threshold).astype(np.float32))
    np.testing.assert_array_equal(copy.read_all()["obs"]["front"], store.read_all()["obs"]["front"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.validate() == []
