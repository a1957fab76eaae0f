"""A tiny contract-compliant env for fast learner tests: move a point to a goal in the plane."""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class PointReach(gym.Env):
    """State ``[x, y, gx, gy]``; action ``(dx, dy)`` in [-1, 1] scaled by 0.15; success within 0.2 of the goal
    (fixed at (0.5, 0.5) unless ``random_goal``).

    Sparse reward 1 on success (terminated); time limit ``max_episode_steps`` (truncated). ``nan_at_step`` injects
    a NaN observation for boundary tests.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        max_episode_steps: int = 25,
        nan_at_step: int = -1,
        render_mode: str | None = None,
        obs_mode: str = "state",
        random_goal: bool = False,
        crash_flag: str = "",
        crash_at_step: int = 3,
    ):
        self.observation_space = spaces.Dict({"state": spaces.Box(-2, 2, (4,), np.float32)})
        self.action_space = spaces.Box(-1, 1, (2,), np.float32)
        self.max_episode_steps, self.nan_at_step, self.render_mode = max_episode_steps, nan_at_step, render_mode
        self.random_goal = random_goal
        self.crash_flag, self.crash_at_step = crash_flag, crash_at_step  # a process that dies once (fleet tests)
        self.control_dt = 0.1

    def _obs(self):
        return {"state": np.concatenate([self.pos, self.goal]).astype(np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-1, 1, 2)
        self.goal = self.np_random.uniform(-1, 1, 2) if self.random_goal else np.array([0.5, 0.5])
        self.t = 0
        return self._obs(), {"success": False, "is_intervention": False}

    def step(self, action):
        self.pos = np.clip(self.pos + 0.15 * np.clip(action, -1, 1), -1.5, 1.5)
        self.t += 1
        if self.crash_flag and self.t == self.crash_at_step and os.path.exists(self.crash_flag):
            os.remove(self.crash_flag)  # the first process to get here dies, mid-episode, without cleaning up
            os._exit(3)
        distance = float(np.linalg.norm(self.pos - self.goal))
        success = distance < 0.2
        obs = self._obs()
        if self.t == self.nan_at_step:
            obs["state"][0] = np.nan
        return (
            obs,
            float(success),
            success,
            (not success) and self.t >= self.max_episode_steps,
            {"success": success, "is_intervention": False, "distance": distance, "note": "toy"},
        )

    def expert_action(self):
        d = (self.goal - self.pos) / 0.15
        return np.clip(d, -1, 1).astype(np.float32)

    def render(self):
        img = np.zeros((32, 32, 3), np.uint8)
        x, y = ((np.clip(self.pos, -1, 1) + 1) * 15.5).astype(int)
        img[y, x] = 255
        return img


gym.register("toy/PointReach-v0", entry_point=PointReach)
