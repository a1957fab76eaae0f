"""Shared fixtures of the reward tests: a tiny pixel env with an obvious success state, and stores recorded from it.

``SquareEnv``: a square moves in the unit box; success when it sits in the top-right goal corner. Two 64x64 cameras
draw it differently ("front": red square on grey; "wrist": the mirror image in green on dark blue), so the success
state is easy to see from frames: a sensible classifier separates it almost perfectly.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from robot_rl.data.episode import EpisodeBuilder
from robot_rl.data.store import EpisodeStore, StoreSchema

SIZE = 64
GOAL = 0.72  # success when x > GOAL and y > GOAL


def draw(pos: np.ndarray, size: int = SIZE) -> dict[str, np.ndarray]:
    """The two camera frames of square position ``pos`` (2,) in [0, 1]."""
    front = np.full((size, size, 3), 110, np.uint8)
    wrist = np.zeros((size, size, 3), np.uint8)
    wrist[..., 2] = 70
    c = (np.clip(pos, 0, 1) * (size - 12)).astype(int)
    front[size - 12 - c[1] : size - c[1], c[0] : c[0] + 12] = (220, 30, 30)
    wrist[c[1] : c[1] + 12, size - 12 - c[0] : size - c[0]] = (30, 220, 60)
    return {"front": front, "wrist": wrist}


class SquareEnv(gym.Env):
    """Contract env: state ``[x, y]``, action ``(dx, dy)`` in [-1, 1] (0.12 per step), cameras ``front`` and
    ``wrist`` (uint8 64x64x3). Sparse reward 1 on success; ``terminate_on_success`` ends the episode there."""

    metadata = {"render_modes": []}

    def __init__(self, max_episode_steps: int = 12, terminate_on_success: bool = False, size: int = SIZE):
        self.size = size
        self.observation_space = spaces.Dict(
            {
                "state": spaces.Box(-1, 2, (2,), np.float32),
                "front": spaces.Box(0, 255, (size, size, 3), np.uint8),
                "wrist": spaces.Box(0, 255, (size, size, 3), np.uint8),
            }
        )
        self.action_space = spaces.Box(-1, 1, (2,), np.float32)
        self.max_episode_steps, self.terminate_on_success = max_episode_steps, terminate_on_success
        self.control_dt = 0.1

    def _obs(self) -> dict[str, np.ndarray]:
        return {"state": self.pos.astype(np.float32), **draw(self.pos, self.size)}

    def _success(self) -> bool:
        return bool(self.pos[0] > GOAL and self.pos[1] > GOAL)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(0.0, 0.4, 2)
        self.t = 0
        return self._obs(), {"success": False, "is_intervention": False}

    def step(self, action):
        self.pos = np.clip(self.pos + 0.12 * np.clip(action, -1, 1), 0, 1)
        self.t += 1
        ok = self._success()
        return (
            self._obs(),
            float(ok),
            ok and self.terminate_on_success,
            self.t >= self.max_episode_steps and not (ok and self.terminate_on_success),
            {"success": ok, "is_intervention": False},
        )

    def expert_action(self, noise: float = 0.0) -> np.ndarray:
        a = np.clip((np.array([0.86, 0.86]) - self.pos) / 0.12, -1, 1)
        if noise:
            a = a + self.np_random.normal(0, noise, 2)
        return np.clip(a, -1, 1).astype(np.float32)


def record(path: Path, successes: int, failures: int, seed: int = 0, steps: int = 12) -> EpisodeStore:
    """A store with ``successes`` expert episodes and ``failures`` episodes that wander away from the goal."""
    env = SquareEnv(max_episode_steps=steps)
    schema = StoreSchema.from_spaces(env.observation_space, env.action_space, 10.0)
    store = EpisodeStore.create(path, schema)
    plan = [True] * successes + [False] * failures
    np.random.default_rng(seed).shuffle(plan)
    for i, good in enumerate(plan):
        obs, _ = env.reset(seed=seed * 1000 + i)
        ep, ok = EpisodeBuilder(), False
        while True:
            a = env.expert_action() if good else np.array([-0.3, 0.6], np.float32) * (1 if i % 2 else -1)
            nxt, r, term, trunc, info = env.step(a)
            ep.add(obs, a, r, term, trunc, nxt, timestamp=0.1 * len(ep))
            ok = ok or info["success"]
            obs = nxt
            if term or trunc:
                break
        store.append_episode(**ep.build(), success=bool(ok), source="scripted", task="square")
    return store


# Positives from the sparse reward's marks (exact), so the split is easy; small everything.
TINY_CLASSIFIER = {
    "steps": 150,
    "eval_every": 50,
    "batch_size": 32,
    "feature_dim": 16,
    "hidden": 32,
    "num_kernels": 4,
    "min_positives": 5,
    "min_negatives": 5,
    "val_fraction": 0.3,
    "image_copies": 0,
    "pad": 2,
    "target_fpr": 0.05,
    "reward_marks": 1.0,
    "positive_last_k": 1,
    "margin": 0,
}


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def square_store(tmp_path_factory) -> Path:
    """Path of a store with 6 successful and 4 failed SquareEnv episodes of 10 steps (read it, do not write it)."""
    path = tmp_path_factory.mktemp("rewards") / "square.zarr"
    record(path, 6, 4, seed=0, steps=10).close()
    return path


@pytest.fixture(scope="session")
def trained_classifier(square_store, tmp_path_factory):
    """(model directory, report) of the tiny classifier trained on ``square_store``."""
    from robot_rl.rewards.classifier import ClassifierConfig, train_classifier

    out = tmp_path_factory.mktemp("clf") / "model"
    store = EpisodeStore.open(square_store)
    _, report = train_classifier(store, ClassifierConfig.from_dict(TINY_CLASSIFIER), seed=0, device="cpu", out=out)
    return out, report
