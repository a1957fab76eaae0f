"""Keeping a classifier honest under RL (``reward.refine``): the judge's veto, hard-negative mining of exactly the
rejected frames, retraining that stops the classifier calling them success, and the per-episode accounting."""

import numpy as np
import pytest
from test_rewards_helpers import SquareEnv, draw, square_store, trained_classifier  # noqa: F401

from robot_rl.rewards import RewardDataError, load_reward_model
from robot_rl.rewards.refine import ClassifierRefiner, RefineConfig, record_refinements
from robot_rl.rewards.wrapper import RewardWrapper

NEAR = np.array([0.62, 0.62])  # next to the goal corner (x, y > 0.72), not in it


class ParkEnv(SquareEnv):
    """SquareEnv whose episodes start at ``NEAR``; action 0 keeps the square there (a policy parked on a hack)."""

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed)
        self.pos = NEAR.copy()
        return self._obs(), info


def gameable(path):
    """The trained tiny classifier with its threshold lowered just under its score at ``NEAR``: a false positive
    that a policy parked there farms."""
    model = load_reward_model(path, "cpu")
    model.threshold = float(model.score({c: f[None] for c, f in draw(NEAR).items()})[0]) - 1e-6
    return model


def p(model, pos):
    return float(model.score({c: f[None] for c, f in draw(np.asarray(pos)).items()})[0])


@pytest.mark.parametrize(
    "judge,veto", [("none", True), ("ground_truth", True), ("ground_truth", False), ("auto", True)]
)
def test_the_judge_vetoes_and_mines_exactly_the_false_successes(trained_classifier, judge, veto):
    out, _ = trained_classifier
    model = gameable(out)
    env = RewardWrapper(
        ParkEnv(max_episode_steps=5),
        model,
        terminate_on_success=True,
        refine=RefineConfig(judge=judge, veto=veto, every=0),
    )
    env.reset(seed=0)
    steps = 0
    while True:
        _, r, term, trunc, info = env.step(np.zeros(2, np.float32))
        steps += 1
        assert info["reward_declared"] and info["reward_hacked"] and not info["gt_success"]
        assert info["reward_vetoed"] == (judge != "none")
        if judge != "none" and veto:  # rejected: no pay, the episode goes on
            assert r == 0.0 and not info["success"] and not term
        else:  # the classifier's word stands: paid, and the episode ends as a success
            assert r == 1.0 and info["success"] and term
        if term or trunc:
            break
    stats = info["reward_stats"]
    assert stats["declared_steps"] == stats["hacked_steps"] == steps and stats["hacked_episode"] == 1.0
    assert stats["vetoed_steps"] == (steps if judge != "none" else 0)
    assert (env.refiner is None) == (judge == "none")
    if env.refiner is not None:
        assert len(env.refiner.mined) == steps  # one hard negative per rejected frame
    # a true success is never vetoed
    if env.refiner is not None:
        env.unwrapped.pos = np.array([0.9, 0.9])
        _, r, *_, info = env.step(np.zeros(2, np.float32))
        assert info["gt_success"] and not info["reward_hacked"] and not info["reward_vetoed"]
        assert len(env.refiner.mined) == steps


def test_retraining_stops_the_classifier_calling_the_mined_frames_success(trained_classifier, tmp_path):
    out, _ = trained_classifier
    model = gameable(out)
    before_near, before_goal = p(model, NEAR), p(model, [0.9, 0.9])
    env = RewardWrapper(
        ParkEnv(max_episode_steps=6),
        model,
        terminate_on_success=True,
        refine=RefineConfig(judge="ground_truth", every=6, steps=200),
    )
    identity = model.label_name()
    env.reset(seed=0)
    for _ in range(6):
        env.step(np.zeros(2, np.float32))
    assert env.refiner.due(env.env_steps)
    env.reset(seed=1)  # retrains between episodes
    rec = env.refiner.history[-1]
    assert rec["mined"] == 6 and rec["env_steps"] == 6 and not env.refiner.due(env.env_steps)
    after_near, after_goal = p(model, NEAR), p(model, [0.9, 0.9])
    assert after_near < model.threshold <= after_goal  # no longer called success; the goal still is
    assert after_near < before_near and rec["mined_still_positive"] == 0.0
    assert rec["val_recall"] >= 0.8 and before_goal >= 0.5
    assert model.label_name() != identity  # cached labels of the old weights are not reused
    assert rec["threshold"] == rec["threshold_picked"]  # no floor by default
    floored = ClassifierRefiner(model, RefineConfig(judge="ground_truth", threshold_floor=True, steps=20))
    floored.original_threshold = 0.97
    floored.add_negative(draw(NEAR))
    assert floored.retrain(1)["threshold"] == 0.97 and model.threshold == 0.97  # never below the floor
    _, r, term, _, info = env.step(np.zeros(2, np.float32))  # parked on the old hack: no longer declared
    assert not info["reward_declared"] and r == 0.0 and not term
    # filed for the run: a line per retraining and the retrained classifier, which a restarted actor loads
    assert record_refinements(env.refiner, tmp_path, 0) == 1 and record_refinements(env.refiner, tmp_path, 1) == 1
    assert len((tmp_path / "reward_refine.jsonl").read_text().splitlines()) == 1
    fresh = RewardWrapper(ParkEnv(), load_reward_model(out, "cpu"), refine=RefineConfig(judge="none"))
    fresh.load_weights(tmp_path / "reward_model")
    assert fresh.model.threshold == model.threshold and p(fresh.model, NEAR) == pytest.approx(p(model, NEAR), abs=1e-6)


def test_refine_refuses_what_it_cannot_do(trained_classifier, tmp_path):
    out, _ = trained_classifier
    for bad, needle in (
        ({"judge": "human"}, "judge"),
        ({"every": -1}, "every"),
        ({"mined_share": 1.0}, "mined_share"),
        ({"judge": "ground_truth", "budget": 3}, "unknown reward.refine option"),
    ):
        with pytest.raises(ValueError, match=needle):
            RefineConfig.from_dict(bad)
    with pytest.raises(RewardDataError, match="success classifier"):
        ClassifierRefiner(object(), RefineConfig(judge="ground_truth"))
    model = load_reward_model(out, "cpu")
    model.report = {**model.report, "store": str(tmp_path / "gone.zarr")}
    refiner = ClassifierRefiner(model, RefineConfig(judge="ground_truth", every=1))
    refiner.add_negative(draw(NEAR))
    with pytest.raises(RewardDataError, match="gone.zarr"):
        refiner.retrain(1)

    class Silent(ParkEnv):  # an env that does not report its own success (a robot)
        def step(self, action):
            obs, r, term, trunc, info = super().step(action)
            return obs, r, term, trunc, {k: v for k, v in info.items() if k != "success"}

    auto = RewardWrapper(Silent(), gameable(out), refine=RefineConfig(judge="auto", every=0))
    auto.reset(seed=0)
    _, r, term, _, info = auto.step(np.zeros(2, np.float32))  # nobody to judge: the classifier's word stands
    assert info["reward_declared"] and not info["reward_hacked"] and not info["reward_vetoed"] and r == 1.0
    strict = RewardWrapper(Silent(), gameable(out), refine=RefineConfig(judge="ground_truth", every=0))
    strict.reset(seed=0)
    with pytest.raises(RewardDataError, match="judge=ground_truth needs the env's own success"):
        strict.step(np.zeros(2, np.float32))
    fixed = RewardWrapper(
        ParkEnv(), load_reward_model(out, "cpu"), threshold=0.5, refine=RefineConfig(judge="ground_truth", steps=20)
    )
    fixed.refiner.add_negative(draw(NEAR))
    assert fixed.refiner.retrain(1)["threshold"] == 0.5 and fixed.model.threshold == 0.5  # the user's threshold holds


def test_operator_marks_become_labels_through_the_intervention_wrapper(trained_classifier):
    from robot_rl.hil.devices import ActionLayout, DeviceState, TeleopDevice
    from robot_rl.hil.intervention import InterventionWrapper

    class Marker(TeleopDevice):
        """Never drives; presses the queued marks, one per read."""

        def __init__(self, marks):
            super().__init__(ActionLayout())
            self.marks = list(marks)

        def read(self):
            m = self.marks.pop(0) if self.marks else None
            return DeviceState(np.zeros(2, np.float32), False, frozenset({m} if m else ()))

    class Silent(SquareEnv):  # a robot: no success of its own, so only the operator judges
        def step(self, action):
            obs, r, term, trunc, info = super().step(action)
            return obs, r, term, trunc, {k: v for k, v in info.items() if k != "success"}

    out, _ = trained_classifier
    model = load_reward_model(out, "cpu")
    model.threshold = p(model, NEAR) - 1e-6  # NEAR (and beyond) called success
    inner = RewardWrapper(
        Silent(max_episode_steps=20), model, terminate_on_success=False, refine=RefineConfig(judge="auto", every=0)
    )
    env = InterventionWrapper(inner, Marker([None, "failure"]), success_reward=None)
    env.reset(seed=0)
    inner.unwrapped.pos = NEAR.copy()
    env.step(np.zeros(2, np.float32))  # no mark
    assert len(inner.refiner.mined) == 0
    _, _, term, trunc, info = env.step(np.zeros(2, np.float32))  # "failure" on a frame the classifier called success
    assert info["reward_declared"] and len(inner.refiner.mined) == 1 and trunc
    env2 = InterventionWrapper(inner, Marker(["success"]), success_reward=1.0)
    env2.reset(seed=0)
    inner.unwrapped.pos = np.zeros(2)  # far from the goal: the classifier says no, the operator says success
    _, r, term, _, info = env2.step(np.zeros(2, np.float32))
    assert not info["reward_declared"] and term and r == 1.0 and len(inner.refiner.mined_positives) == 1
    rec = inner.refiner.retrain(0)  # negatives and positives from marks alone
    assert (rec["mined"], rec["mined_positives"]) == (1, 1)
