"""MuJoCo tasks for robot_rl: a Franka Panda with an operational-space controller, scripted experts, and a
dm_control adapter. Importing this package registers the gymnasium ids ``robot_rl/Reach-v0``,
``robot_rl/PickCube-v0``, ``robot_rl/PegInsert-v0`` and ``robot_rl/DMC-v0``, so
``gymnasium.make("sim:robot_rl/PickCube-v0", **kwargs)`` works.
"""

from __future__ import annotations

import os

if not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must happen before mujoco makes a context

from gymnasium.envs.registration import register, registry  # noqa: E402

ENV_IDS = {
    "robot_rl/Reach-v0": "sim.tasks:ReachEnv",
    "robot_rl/PickCube-v0": "sim.tasks:PickCubeEnv",
    "robot_rl/PegInsert-v0": "sim.tasks:PegInsertEnv",
    "robot_rl/DMC-v0": "sim.dmc:DMCEnv",
}

for _env_id, _entry in ENV_IDS.items():
    if _env_id not in registry:
        # No max_episode_steps here: the envs count their own time limit and report it as truncated.
        register(id=_env_id, entry_point=_entry)

__all__ = ["ENV_IDS"]
