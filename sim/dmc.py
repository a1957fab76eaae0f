"""dm_control suite tasks behind the robot_rl env contract (``robot_rl/DMC-v0``).

Observation: ``{"state": float32 (D,)}``, the suite's observation dict flattened in its own key order; with
``obs_mode="pixels"`` also ``"front"``: uint8 (image_size, image_size, 3) from camera ``camera_id``.
Action: float32 Box [-1, 1]^A, rescaled linearly to the suite's action bounds. Each env step repeats the action
``action_repeat`` times and sums the rewards. The suite's time limit (and the optional ``max_episode_steps``) end an
episode with ``truncated=True``; ``terminated`` is True only if the suite reports a terminal state (discount 0).
``info["success"]`` is always False (suite tasks have no success notion).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from robot_rl.envs.contract import assert_finite, check_choice, check_range


class DMCEnv(gym.Env):
    """A dm_control suite task as a gymnasium env.

    Args:
        domain / task: a suite pair, e.g. ``("cartpole", "swingup")``; see ``dm_control.suite.ALL_TASKS``.
        action_repeat: physics control steps per env step (1..16).
        obs_mode: "state" or "pixels" (state + one "front" image).
        image_size: side of the pixel observation (px), 16..512.
        camera_id: suite camera used for pixels and ``render()``.
        render_mode: None or "rgb_array".
        render_size: side of the ``render()`` frame (px).
        max_episode_steps: optional extra time limit in env steps (None = the suite's own limit only).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(
        self,
        domain: str = "cartpole",
        task: str = "swingup",
        action_repeat: int = 1,
        obs_mode: str = "state",
        image_size: int = 84,
        camera_id: int = 0,
        render_mode: str | None = None,
        render_size: int = 256,
        max_episode_steps: int | None = None,
    ) -> None:
        from dm_control import suite  # imported lazily: it is slow and pulls in its own GL setup

        if (domain, task) not in suite.ALL_TASKS:
            raise ValueError(
                f"(domain, task)=({domain!r}, {task!r}) is not a dm_control suite task; valid: "
                f"{sorted(f'{d}/{t}' for d, t in suite.ALL_TASKS)}"
            )
        check_choice("obs_mode", obs_mode, ("state", "pixels"))
        check_choice("render_mode", render_mode, (None, "rgb_array"))
        self.action_repeat = int(check_range("action_repeat", action_repeat, 1, 16))
        self.image_size = int(check_range("image_size", image_size, 16, 512))
        self.render_size = int(check_range("render_size", render_size, 16, 1024))
        self.max_episode_steps = (
            None
            if max_episode_steps is None
            else int(check_range("max_episode_steps", max_episode_steps, 1, 1_000_000))
        )
        self.domain, self.task, self.obs_mode, self.render_mode = domain, task, obs_mode, render_mode
        self.camera_id = int(camera_id)
        self._env = suite.load(domain, task, task_kwargs={"random": 0})
        # Software rendering: shadows and reflections cost ~9x per frame; visuals only, dynamics unaffected.
        self._env.physics.model.light_castshadow[:] = 0
        self._env.physics.model.mat_reflectance[:] = 0
        spec = self._env.action_spec()
        self._act_low, self._act_high = spec.minimum.astype(np.float64), spec.maximum.astype(np.float64)
        self.action_space = spaces.Box(-1.0, 1.0, spec.shape, np.float32)
        dim = sum(int(np.prod(s.shape)) for s in self._env.observation_spec().values())
        obs_spaces: dict[str, spaces.Space] = {"state": spaces.Box(-np.inf, np.inf, (dim,), np.float32)}
        if obs_mode == "pixels":
            obs_spaces["front"] = spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8)
        self.observation_space = spaces.Dict(obs_spaces)
        self.control_dt = float(self._env.control_timestep()) * self.action_repeat  # s per env step
        self._steps = 0

    def _obs(self, time_step: Any) -> dict[str, np.ndarray]:
        state = np.concatenate([np.asarray(v, dtype=np.float64).reshape(-1) for v in time_step.observation.values()])
        obs = {"state": state.astype(np.float32)}
        if self.obs_mode == "pixels":
            obs["front"] = self._render(self.image_size)
        return obs

    def _render(self, size: int) -> np.ndarray:
        return np.ascontiguousarray(self._env.physics.render(size, size, camera_id=self.camera_id), dtype=np.uint8)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode; ``seed`` reseeds the suite's initial-state randomness. Returns ``(obs, info)``."""
        super().reset(seed=seed)
        if seed is not None:
            self._env.task.random.seed(seed)
        self._steps = 0
        return self._obs(self._env.reset()), {"success": False, "is_intervention": False}

    def step(self, action: np.ndarray):
        """Apply ``action`` (in [-1, 1]) for ``action_repeat`` control steps; returns the gymnasium 5-tuple."""
        a = np.asarray(action, dtype=np.float32).reshape(self.action_space.shape)
        assert_finite("action", a)
        a = self._act_low + (np.clip(a, -1.0, 1.0) + 1.0) * 0.5 * (self._act_high - self._act_low)
        reward, time_step = 0.0, None
        for _ in range(self.action_repeat):
            time_step = self._env.step(a)
            reward += float(time_step.reward or 0.0)
            if time_step.last():
                break
        self._steps += 1
        terminated = bool(time_step.last() and time_step.discount == 0.0)
        truncated = bool(
            not terminated
            and (time_step.last() or (self.max_episode_steps is not None and self._steps >= self.max_episode_steps))
        )
        return self._obs(time_step), reward, terminated, truncated, {"success": False, "is_intervention": False}

    def render(self) -> np.ndarray | None:
        """uint8 (render_size, render_size, 3) frame when ``render_mode="rgb_array"``."""
        return self._render(self.render_size) if self.render_mode == "rgb_array" else None

    def close(self) -> None:
        """Release the suite env (and its GL context, if any)."""
        self._env.close()
