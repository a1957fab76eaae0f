"""Panda tasks: reach, pick a cube, insert a held peg. Each adds objects, privileged state, success and an expert.

All positions are in metres in the robot base frame (table top at z = 0). Privileged task state is appended to
the proprioceptive state in ``obs_mode="state"`` only; its layout is each class's ``task_state_layout``.
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np

from robot_rl.envs.contract import check_range, check_vec
from sim.model import FINGER_JOINTS, TCP_IN_HAND_Z, add_box_body, build_panda_spec
from sim.panda_env import PandaEnv


def _check_interval(name: str, value: Any, low: float, high: float) -> tuple[float, float]:
    """Validate a ``[lo, hi]`` interval inside ``[low, high]``."""
    lo, hi = check_vec(name, value, low, high, n=2)
    if lo > hi:
        raise ValueError(f"{name}={list(value)} must be [low, high] with low <= high")
    return float(lo), float(hi)


class ReachEnv(PandaEnv):
    """Move the TCP to within ``success_threshold`` of a random goal point (green sphere).

    Task kwargs: ``goal_low`` / ``goal_high`` (3,) goal sampling box (m, must lie in the workspace),
    ``success_threshold`` (m, 0.005..0.1). Task state: ``goal_pos`` (3), ``goal_rel`` = goal - ee (3).
    """

    default_use_gripper = False
    default_max_episode_steps = 20
    default_workspace_low = (0.3, -0.25, 0.05)
    default_workspace_high = (0.7, 0.25, 0.4)
    task_state_layout = (("goal_pos", 3), ("goal_rel", 3))

    def _validate_task(self, kw: dict[str, Any]) -> None:
        self.goal_low = check_vec("goal_low", kw.pop("goal_low", (0.35, -0.2, 0.08)), -1.0, 1.2)
        self.goal_high = check_vec("goal_high", kw.pop("goal_high", (0.65, 0.2, 0.35)), -1.0, 1.2)
        if (
            np.any(self.goal_low > self.goal_high)
            or np.any(self.goal_low < self.ws_low)
            or np.any(self.goal_high > self.ws_high)
        ):
            raise ValueError(
                f"goal box [{list(self.goal_low)}, {list(self.goal_high)}] must be ordered and lie "
                f"inside the workspace [{list(self.ws_low)}, {list(self.ws_high)}]"
            )
        self.success_threshold = check_range("success_threshold", kw.pop("success_threshold", 0.02), 0.005, 0.1)
        super()._validate_task(kw)

    @classmethod
    def build_spec(cls, visual_meshes: str = "coarse") -> mujoco.MjSpec:
        spec = build_panda_spec(visual_meshes=visual_meshes)
        goal = spec.worldbody.add_body(name="goal", mocap=True, pos=[0.5, 0, 0.2])
        goal.add_geom(
            type=mujoco.mjtGeom.mjGEOM_SPHERE,
            size=[0.02, 0, 0],
            rgba=[0.1, 0.9, 0.1, 0.6],
            contype=0,
            conaffinity=0,
            group=1,
        )
        return spec

    def _bind_model(self) -> None:
        self._goal_mocap = self.model.body("goal").mocapid[0]
        self.goal = (self.goal_low + self.goal_high) / 2

    def _reset_task(self, rng: np.random.Generator) -> None:
        self.goal = rng.uniform(self.goal_low, self.goal_high)
        self.data.mocap_pos[self._goal_mocap] = self.goal

    def _task_state(self) -> list[np.ndarray]:
        return [self.goal, self.goal - self.data.site_xpos[self._tcp]]

    def _evaluate(self) -> tuple[bool, float, dict[str, Any]]:
        dist = float(np.linalg.norm(self.goal - self.data.site_xpos[self._tcp]))
        return dist < self.success_threshold, 1.0 - np.tanh(10.0 * dist), {"distance": dist}

    def expert_action(self, noise: float = 0.0) -> np.ndarray:
        return self._expert_out(self._move_action(self.goal), 0.0, noise)


class PickCubeEnv(PandaEnv):
    """Grasp a cube lying at a random pose on the table and lift it ``lift_height`` above its resting height.

    Task kwargs: ``cube_size`` (edge, m, 0.03..0.05), ``cube_mass`` (kg, 0.01..0.5), ``object_x_range`` /
    ``object_y_range`` ([lo, hi] of the cube centre, m), ``object_yaw_range`` (max |yaw|, rad, 0..pi/4),
    ``lift_height`` (m, 0.02..0.2). Task state: ``cube_pos`` (3), ``cube_quat`` (4, wxyz, w >= 0),
    ``cube_rel`` = cube - ee (3). ``info["is_grasped"]``: both finger pads touch the cube.
    """

    default_max_episode_steps = 30
    task_state_layout = (("cube_pos", 3), ("cube_quat", 4), ("cube_rel", 3))

    def _validate_task(self, kw: dict[str, Any]) -> None:
        self.cube_size = check_range("cube_size", kw.pop("cube_size", 0.04), 0.03, 0.05)
        cube_mass = check_range("cube_mass", kw.pop("cube_mass", 0.05), 0.01, 0.5)
        self.x_range = _check_interval("object_x_range", kw.pop("object_x_range", (0.4, 0.6)), 0.3, 0.75)
        self.y_range = _check_interval("object_y_range", kw.pop("object_y_range", (-0.15, 0.15)), -0.3, 0.3)
        self.yaw_range = check_range("object_yaw_range", kw.pop("object_yaw_range", 0.6), 0.0, np.pi / 4)
        self.lift_height = check_range("lift_height", kw.pop("lift_height", 0.1), 0.02, 0.2)
        if not self.use_gripper:
            raise ValueError("use_gripper=False is invalid for pick_cube: the cube can only be lifted by grasping it")
        if self.ws_high[2] < self.cube_size / 2 + self.lift_height + 0.02:
            raise ValueError(f"workspace_high z={self.ws_high[2]} is too low to lift the cube by {self.lift_height} m")
        super()._validate_task(kw)
        self._build_kwargs = {"cube_size": self.cube_size, "cube_mass": cube_mass}

    @classmethod
    def build_spec(
        cls, cube_size: float = 0.04, cube_mass: float = 0.05, visual_meshes: str = "coarse"
    ) -> mujoco.MjSpec:
        spec = build_panda_spec(visual_meshes=visual_meshes)
        cube = add_box_body(spec.worldbody, "cube", cube_size / 2, (0.85, 0.15, 0.15, 1), free=True, mass=cube_mass)
        cube.pos = [0.5, 0, cube_size / 2]
        return spec

    def _bind_model(self) -> None:
        m = self.model
        self._cube_qpos = m.joint("cube").qposadr[0]
        self._cube_geom = m.geom("cube").id
        self._finger_geoms = {m.geom(f"{f}_geom").id for f in FINGER_JOINTS}

    def _reset_task(self, rng: np.random.Generator) -> None:
        xy = rng.uniform((self.x_range[0], self.y_range[0]), (self.x_range[1], self.y_range[1]))
        yaw = rng.uniform(-self.yaw_range, self.yaw_range)
        self.rest_z = self.cube_size / 2
        self.data.qpos[self._cube_qpos : self._cube_qpos + 7] = [
            *xy,
            self.rest_z,
            np.cos(yaw / 2),
            0,
            0,
            np.sin(yaw / 2),
        ]

    @property
    def cube_pos(self) -> np.ndarray:
        """Cube centre (3,), m."""
        return self.data.qpos[self._cube_qpos : self._cube_qpos + 3].copy()

    def is_grasped(self) -> bool:
        """True when both finger pads are in contact with the cube."""
        con = self.data.contact
        pairs = con.geom[: self.data.ncon]
        touching = {int(g) for g1, g2 in pairs for g, other in ((g1, g2), (g2, g1)) if other == self._cube_geom}
        return self._finger_geoms <= touching

    def _task_state(self) -> list[np.ndarray]:
        quat = self.data.qpos[self._cube_qpos + 3 : self._cube_qpos + 7]
        return [self.cube_pos, quat if quat[0] >= 0 else -quat, self.cube_pos - self.data.site_xpos[self._tcp]]

    def _evaluate(self) -> tuple[bool, float, dict[str, Any]]:
        cube = self.cube_pos
        grasped = self.is_grasped()
        lift = float(cube[2] - self.rest_z)
        success = lift >= self.lift_height
        reach = 1.0 - np.tanh(10.0 * np.linalg.norm(cube - self.data.site_xpos[self._tcp]))
        shaped = 0.25 * reach + 0.25 * grasped + 0.5 * grasped * min(max(lift / self.lift_height, 0.0), 1.0)
        return success, float(shaped), {"is_grasped": grasped, "lift": lift}

    def expert_action(self, noise: float = 0.0) -> np.ndarray:
        cube, ee, opening = self.cube_pos, self.ee_pos, self.gripper_opening
        size = self.cube_size
        grasp_z = max(cube[2], self.ws_low[2])
        hover_z = cube[2] + size / 2 + 0.05
        xy_err = float(np.max(np.abs(cube[:2] - ee[:2])))
        if self._gripper_cmd:  # closed or closing
            if self.is_grasped():
                goal, grip = np.array([*ee[:2], self.rest_z + self.lift_height + 0.04]), 1.0
            elif opening > size - 0.006 and xy_err < 0.02:  # still closing around the cube
                goal, grip = self._target_pos, 1.0
            else:  # missed: open and back off upward
                goal, grip = np.array([*ee[:2], hover_z]), -1.0
        elif xy_err > 0.008 or opening < 1.45 * size:  # align above the cube (and wait until fully open)
            # Far: travel at or above hover height. Near: come down to hover height, or align in place if lower.
            z = max(hover_z, ee[2]) if xy_err > 0.03 else min(hover_z, ee[2])
            goal, grip = np.array([*cube[:2], z]), -1.0
        elif ee[2] - grasp_z > 0.006:
            goal, grip = np.array([*cube[:2], grasp_z]), -1.0
        else:
            goal, grip = np.array([*cube[:2], grasp_z]), 1.0
        return self._expert_out(self._move_action(goal), grip, noise)


class PegInsertEnv(PandaEnv):
    """Insert a square peg, held rigidly in the closed gripper (as in SERL), into a hole in a fixed block.

    The peg (width ``peg_width``) is attached to the hand; the block (10 x 10 cm, ``block_height`` tall) has a
    square through-hole of width ``peg_width + hole_clearance`` (total clearance <= 5 mm). Success: the peg tip is
    at least ``insert_depth`` below the block top while inside the hole.

    Task kwargs: ``peg_width`` (m, 0.01..0.04), ``peg_length`` (m, 0.05..0.12), ``hole_clearance`` (m,
    0.0005..0.005), ``block_height`` (m, 0.03..0.08), ``insert_depth`` (m, 0.005..block_height - 0.005),
    ``block_x_range`` / ``block_y_range`` ([lo, hi] of the hole centre, m). Task state: ``hole_pos`` (3, top
    centre of the hole), ``peg_tip`` (3, bottom centre of the peg), ``tip_rel_hole`` = peg_tip - hole_pos (3).
    """

    default_use_gripper = False
    default_max_episode_steps = 30
    default_workspace_low = (0.35, -0.2, 0.05)
    default_workspace_high = (0.65, 0.2, 0.3)
    default_ee_start = (0.5, 0.0, 0.2)
    default_ee_start_noise = (0.04, 0.04, 0.03)
    task_state_layout = (("hole_pos", 3), ("peg_tip", 3), ("tip_rel_hole", 3))
    visual_object_geoms = ("peg",)
    PEG_TOP_IN_HAND_Z = 0.07  # m from the flange to the top of the peg (inside the grip)

    def _validate_task(self, kw: dict[str, Any]) -> None:
        self.peg_width = check_range("peg_width", kw.pop("peg_width", 0.024), 0.01, 0.04)
        self.peg_length = check_range("peg_length", kw.pop("peg_length", 0.08), 0.05, 0.12)
        self.hole_clearance = check_range("hole_clearance", kw.pop("hole_clearance", 0.004), 0.0005, 0.005)
        self.block_height = check_range("block_height", kw.pop("block_height", 0.05), 0.03, 0.08)
        self.insert_depth = check_range("insert_depth", kw.pop("insert_depth", 0.025), 0.005, self.block_height - 0.005)
        self.x_range = _check_interval("block_x_range", kw.pop("block_x_range", (0.45, 0.55)), 0.35, 0.7)
        self.y_range = _check_interval("block_y_range", kw.pop("block_y_range", (-0.1, 0.1)), -0.25, 0.25)
        self.tip_below_tcp = self.PEG_TOP_IN_HAND_Z + self.peg_length - TCP_IN_HAND_Z
        deepest_tip = self.ws_low[2] - self.tip_below_tcp
        if deepest_tip > self.block_height - self.insert_depth - 0.005:
            raise ValueError(
                f"workspace_low z={self.ws_low[2]} does not let the peg tip reach "
                f"insert_depth={self.insert_depth} (lowest tip z {deepest_tip:.3f} m)"
            )
        super()._validate_task(kw)
        self._build_kwargs = {
            "peg_width": self.peg_width,
            "peg_length": self.peg_length,
            "hole_clearance": self.hole_clearance,
            "block_height": self.block_height,
        }

    @classmethod
    def build_spec(
        cls,
        peg_width: float = 0.024,
        peg_length: float = 0.08,
        hole_clearance: float = 0.004,
        block_height: float = 0.05,
        visual_meshes: str = "coarse",
    ) -> mujoco.MjSpec:
        spec = build_panda_spec(visual_meshes=visual_meshes)
        hand = spec.body("hand")
        hand.add_geom(
            name="peg",
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=[peg_width / 2, peg_width / 2, peg_length / 2],
            pos=[0, 0, cls.PEG_TOP_IN_HAND_Z + peg_length / 2],
            rgba=[0.95, 0.6, 0.1, 1],
            mass=0.05,
            solref=[0.005, 1],
            friction=[0.3, 0.005, 0.0001],
        )
        block = spec.worldbody.add_body(name="block", mocap=True, pos=[0.5, 0, 0])
        h, outer, hz = (peg_width + hole_clearance) / 2, 0.05, block_height / 2
        walls = [
            ((+(h + outer) / 2, 0), ((outer - h) / 2, outer)),
            ((-(h + outer) / 2, 0), ((outer - h) / 2, outer)),
            ((0, +(h + outer) / 2), (h, (outer - h) / 2)),
            ((0, -(h + outer) / 2), (h, (outer - h) / 2)),
        ]
        for i, ((x, y), (sx, sy)) in enumerate(walls):
            block.add_geom(
                name=f"block_wall{i}",
                type=mujoco.mjtGeom.mjGEOM_BOX,
                size=[sx, sy, hz],
                pos=[x, y, hz],
                rgba=[0.2, 0.35, 0.8, 1],
                friction=[0.3, 0.005, 0.0001],
            )
        return spec

    def _bind_model(self) -> None:
        self._block_mocap = self.model.body("block").mocapid[0]
        self.hole = np.array([np.mean(self.x_range), np.mean(self.y_range), self.block_height])

    def _reset_task(self, rng: np.random.Generator) -> None:
        self.hole = np.array([rng.uniform(*self.x_range), rng.uniform(*self.y_range), self.block_height])
        self.data.mocap_pos[self._block_mocap] = [*self.hole[:2], 0.0]
        self._set_fingers(self.peg_width)  # pads resting on the peg
        self._gripper_cmd = 1.0

    def _apply_action(self, a: np.ndarray) -> None:
        super()._apply_action(a)
        self.data.ctrl[self._finger_act] = self.peg_width / 2  # the peg is held whatever the gripper command

    @property
    def peg_tip(self) -> np.ndarray:
        """Bottom centre of the peg (3,), m."""
        d = self.data
        return d.site_xpos[self._tcp] - d.site_xmat[self._tcp].reshape(3, 3)[:, 2] * self.tip_below_tcp

    def _task_state(self) -> list[np.ndarray]:
        tip = self.peg_tip
        return [self.hole, tip, tip - self.hole]

    def _evaluate(self) -> tuple[bool, float, dict[str, Any]]:
        rel = self.peg_tip - self.hole
        depth = float(-rel[2])
        inside = bool(np.max(np.abs(rel[:2])) < (self.peg_width + self.hole_clearance) / 2)
        success = inside and depth >= self.insert_depth
        xy = float(np.linalg.norm(rel[:2]))
        shaped = 0.5 * (1.0 - np.tanh(20.0 * xy)) + 0.5 * inside * min(max(depth / self.insert_depth, 0.0), 1.0)
        return success, float(shaped), {"insert_depth": depth, "xy_error": xy}

    def expert_action(self, noise: float = 0.0) -> np.ndarray:
        tip, ee = self.peg_tip, self.ee_pos
        xy_err = float(np.max(np.abs(self.hole[:2] - tip[:2])))
        in_hole = tip[2] < self.hole[2] - 0.002
        if xy_err > 0.0015 and not in_hole:
            goal_tip = np.array([*self.hole[:2], self.hole[2] + (0.015 if xy_err > 0.003 else 0.005)])
            if tip[2] < goal_tip[2] and xy_err > 0.003:
                goal_tip[:2] = tip[:2]  # too low and misaligned: rise first
        else:
            goal_tip = np.array([*self.hole[:2], self.hole[2] - self.insert_depth - 0.01])
        return self._expert_out(self._move_action(goal_tip + (ee - tip)), 0.0, noise)


__all__ = ["ReachEnv", "PickCubeEnv", "PegInsertEnv"]
