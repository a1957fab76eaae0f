"""The task's scripted expert as a teleop device: no operator, for tests and for seeding a store."""

from __future__ import annotations

from typing import Any

import numpy as np

from robot_rl.hil.devices.base import ActionLayout, DeviceError, DeviceState, TeleopDevice


class ScriptedDevice(TeleopDevice):
    """The task's scripted expert as a device: starts at once, never marks, ends when the env does.

    For tests and for bootstrapping a store without an operator. Recordings from it are ``source="scripted"``.

    Args:
        env: the env whose expert acts (``expert_action`` on the unwrapped env).
        noise: std of Gaussian noise on the expert's motion dims (action units), 0 = deterministic.
    """

    name = "scripted"
    is_human = False

    def __init__(self, env: Any, noise: float = 0.0):
        super().__init__(ActionLayout())  # unused: the expert returns whole actions of any layout
        base = env.unwrapped
        if not hasattr(base, "expert_action"):
            raise DeviceError(f"scripted: {type(base).__name__} has no scripted expert; use a human device")
        if noise < 0:
            raise ValueError(f"scripted: noise={noise} must be >= 0")
        self._env, self.noise = env, float(noise)

    def read(self) -> DeviceState:
        base = self._env.unwrapped
        action = base.expert_action(noise=self.noise) if self.noise > 0 else base.expert_action()
        return DeviceState(np.asarray(action, np.float32), True, frozenset({"start"}))

    @property
    def help(self) -> str:
        return "scripted expert (no operator)"
