"""Base gymnasium env for the simulated Franka Panda (see :mod:`sim.model` and :mod:`sim.controller`).

Control: the policy runs at 10 Hz (``control_dt = 0.1`` s); each env step runs 50 physics substeps of 2 ms, and the
operational-space controller recomputes joint torques at every substep.

Action (float32 Box in [-1, 1]): ``[dx, dy, dz, (drx, dry, drz if rotation), (gripper if use_gripper)]``.

* ``dx, dy, dz`` move the EE target by ``action_scale`` metres per step at most, along the axes of the **action
  frame**: the EE (tcp) orientation commanded at reset. With the gripper pointing down (every task's reset pose)
  that frame's axes coincide with the robot base axes: +x away from the base, +y to the robot's left, +z up.
* ``drx, dry, drz``: axis-angle rotation of the EE target about the action-frame axes, ``rotation_scale`` rad per
  step at most; the orientation stays within ``rotation_limit`` rad (per axis of the rotation vector) of reset.
* ``gripper``: > 0.5 closes, < -0.5 opens, anything in between keeps the current command.

The target position is clamped into ``[workspace_low, workspace_high]`` (m, base frame) on every step and is kept
within ``2 * action_scale`` of the measured EE position per axis, so pushing against an obstacle cannot wind up
unbounded forces.

State observation layout (float32), in order: ``ee_pos`` (3, m, base frame), ``ee_vel`` (3, m/s), then
``ee_rotvec`` (3, rad, EE orientation relative to reset, action frame) if ``rotation``, then ``gripper_opening``
(1, m, distance between the pads) and ``gripper_cmd`` (1, 1 = closed, 0 = open) if ``use_gripper``; in state mode
the task's privileged state follows (see each task's docstring and :attr:`PandaEnv.state_layout`).
"""

from __future__ import annotations

import atexit
import copy
import functools
import os
import weakref
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from robot_rl.envs.contract import assert_finite, check_choice, check_range, check_vec
from sim.controller import OpSpaceController
from sim.model import ARM_ACTUATORS, ARM_JOINTS, FINGER_ACTUATORS, FINGER_JOINTS, FINGER_MAX, HOME_QPOS
from sim.randomize import RandomizeConfig, VisualRandomizer, geom_groups

OBS_MODES = ("state", "pixels")
REWARD_TYPES = ("sparse", "shaped")
CAMERAS = ("front", "wrist")
N_SUBSTEPS = 50  # 50 x 2 ms = 0.1 s per env step


@functools.lru_cache(maxsize=16)
def _compiled_model(cls: type, build_key: tuple) -> mujoco.MjModel:
    """Compile (once per task class and build parameters) the task's model; compilation takes ~1 s."""
    return cls.build_spec(**dict(build_key)).compile()


def quat_to_rotvec(quat: np.ndarray) -> np.ndarray:
    """Unit quaternion (4,) wxyz -> rotation vector (3,) in rad (angle <= pi)."""
    res = np.zeros(3)
    q = quat if quat[0] >= 0 else -quat
    mujoco.mju_quat2Vel(res, q, 1.0)
    return res


def rotvec_to_quat(rotvec: np.ndarray) -> np.ndarray:
    """Rotation vector (3,) in rad -> unit quaternion (4,) wxyz."""
    res = np.zeros(4)
    angle = float(np.linalg.norm(rotvec))
    mujoco.mju_axisAngle2Quat(res, rotvec / angle if angle > 1e-12 else np.array([1.0, 0, 0]), angle)
    return res


_LIVE_ENVS: weakref.WeakSet = weakref.WeakSet()


def _close_renderers() -> None:
    """Free GL contexts before interpreter teardown (else the EGL display is gone when they are collected).

    Registered with atexit after the first context exists, so it runs before mujoco's own ``eglTerminate``.
    """
    for env in list(_LIVE_ENVS):
        env.close()


def _ensure_headless_gl() -> None:
    """Switch mujoco's renderer to EGL when it picked GLFW with no display (mujoco imported before ``sim``)."""
    from mujoco.rendering.classic import gl_context

    ctx = getattr(gl_context, "GLContext", None)
    if not os.environ.get("DISPLAY") and (ctx is None or ctx.__module__.startswith("mujoco.glfw")):
        try:
            from mujoco.egl import GLContext
        except ImportError as exc:  # e.g. PYOPENGL_PLATFORM set to something else
            raise RuntimeError(
                "no display and EGL is unavailable: export MUJOCO_GL=egl (or osmesa) before "
                f"anything imports mujoco ({exc})"
            ) from exc
        gl_context.GLContext = GLContext


class PandaEnv(gym.Env):
    """Shared machinery of the Panda tasks: model, controller, actions, observations, rendering, time limit.

    Subclasses implement :meth:`build_spec`, :meth:`_reset_task`, :meth:`_task_state`, :meth:`_evaluate` and
    :meth:`expert_action`, and set the class defaults below.

    Args:
        obs_mode: "state" (proprioception + privileged task state) or "pixels" (proprioception + camera images).
        image_size: side of the square camera images in pixels mode (px), 16..512.
        render_mode: None or "rgb_array" (``render()`` returns the front camera).
        render_size: side of the ``render()`` frame (px), 16..1024.
        max_episode_steps: time limit (env steps, 0.1 s each); reached -> ``truncated=True``.
        reward_type: "sparse" (1.0 on a success step, else 0.0) or "shaped" (dense, in [0, 1]).
        terminate_on_success: end the episode (``terminated=True``) on the first success step.
        action_scale: max EE translation per step (m), 0.001..0.1.
        rotation: add 3 rotation dims to the action (and the EE orientation to the state).
        rotation_scale: max EE rotation per step (rad), 0.01..0.5.
        rotation_limit: max |rotation vector| component of the EE target relative to reset (rad), 0..pi/2.
        use_gripper: add the 3-way gripper dim to the action (and the gripper state to the observation).
        workspace_low / workspace_high: EE target bounds (m, base frame), (3,) each.
        ee_start: nominal EE position at reset (m, base frame), (3,).
        ee_start_noise: half-width of the uniform jitter added to ``ee_start`` per axis (m), (3,), each 0..0.15.
        kp_pos / kp_rot: controller stiffness (1/s^2) for translation / rotation.
        visual_meshes: "coarse" (arm drawn with its ~2k-triangle convex hulls: fast pixels) or "fine" (Menagerie
            visual meshes, ~126k triangles: nicer videos, ~15x slower to render). Physics is identical.
        randomize: visual domain randomisation resampled at every reset (lighting, colours and table texture,
            camera pose and field of view; see :mod:`sim.randomize` for keys, units and defaults). None / False:
            off (nominal images); True: on with the defaults; a mapping: on (unless ``enabled: false``) with those
            values over the defaults. Drawn from a generator derived from ``np_random`` without advancing it, so
            ``reset(seed=s)`` reproduces the look and states/dynamics are bit-identical to randomisation off.
        dynamics: a deliberate dynamics gap, for a variant that stands in for the real robot (sim-to-real and H2O
            experiments): ``action_delay`` (env steps an action waits before it acts, 0..5; zero actions fill the
            first ones), ``action_gain`` (multiplies the commanded EE displacement, 0.2..3), ``object_mass`` and
            ``object_friction`` (multiply the mass and sliding friction of every free body, e.g. the cube, 0.1..10).
            None: nominal.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    control_dt = N_SUBSTEPS * 0.002  # s per env step
    # Class defaults overridden by tasks.
    default_max_episode_steps = 50
    default_use_gripper = True
    default_workspace_low = (0.3, -0.25, 0.015)
    default_workspace_high = (0.7, 0.25, 0.4)
    default_ee_start = (0.5, 0.0, 0.2)
    default_ee_start_noise = (0.05, 0.05, 0.03)
    visual_object_geoms: tuple[str, ...] = ()  # geoms attached to the robot that randomisation colours as objects

    def __init__(
        self,
        obs_mode: str = "state",
        image_size: int = 128,
        render_mode: str | None = None,
        render_size: int = 256,
        max_episode_steps: int | None = None,
        reward_type: str = "sparse",
        terminate_on_success: bool = True,
        action_scale: float = 0.025,
        rotation: bool = False,
        rotation_scale: float = 0.1,
        rotation_limit: float = 0.8,
        use_gripper: bool | None = None,
        workspace_low: Any = None,
        workspace_high: Any = None,
        ee_start: Any = None,
        ee_start_noise: Any = None,
        kp_pos: float = 600.0,
        kp_rot: float = 300.0,
        visual_meshes: str = "coarse",
        randomize: Any = None,
        dynamics: Any = None,
        **build_kwargs: Any,
    ):
        check_choice("obs_mode", obs_mode, OBS_MODES)
        check_choice("reward_type", reward_type, REWARD_TYPES)
        check_choice("render_mode", render_mode, (None, "rgb_array"))
        self.obs_mode, self.reward_type, self.render_mode = obs_mode, reward_type, render_mode
        self.image_size = int(check_range("image_size", image_size, 16, 512))
        self.render_size = int(check_range("render_size", render_size, 16, 1024))
        steps = self.default_max_episode_steps if max_episode_steps is None else max_episode_steps
        self.max_episode_steps = int(check_range("max_episode_steps", steps, 1, 100_000))
        self.terminate_on_success = bool(terminate_on_success)
        self.action_scale = check_range("action_scale", action_scale, 0.001, 0.1)
        self.rotation = bool(rotation)
        self.rotation_scale = check_range("rotation_scale", rotation_scale, 0.01, 0.5)
        self.rotation_limit = check_range("rotation_limit", rotation_limit, 0.0, np.pi / 2)
        self.use_gripper = self.default_use_gripper if use_gripper is None else bool(use_gripper)
        pick = lambda v, d: d if v is None else v  # noqa: E731
        self.ws_low = check_vec("workspace_low", pick(workspace_low, self.default_workspace_low), -1.0, 1.2)
        self.ws_high = check_vec("workspace_high", pick(workspace_high, self.default_workspace_high), -1.0, 1.2)
        if np.any(self.ws_high <= self.ws_low):
            raise ValueError(
                f"workspace_high={list(self.ws_high)} must exceed workspace_low={list(self.ws_low)} on every axis"
            )
        if self.ws_low[2] < 0.0 or self.ws_high[0] > 0.85 or np.hypot(*self.ws_high[:2]) > 0.9:
            raise ValueError(
                f"workspace [{list(self.ws_low)}, {list(self.ws_high)}] leaves the Panda's reach; "
                "valid: z >= 0, x <= 0.85 m, horizontal radius <= 0.9 m"
            )
        self.ee_start = check_vec("ee_start", pick(ee_start, self.default_ee_start), -1.0, 1.2)
        if np.any(self.ee_start < self.ws_low) or np.any(self.ee_start > self.ws_high):
            raise ValueError(
                f"ee_start={list(self.ee_start)} must lie inside the workspace "
                f"[{list(self.ws_low)}, {list(self.ws_high)}]"
            )
        self.ee_start_noise = check_vec("ee_start_noise", pick(ee_start_noise, self.default_ee_start_noise), 0, 0.15)
        check_choice("visual_meshes", visual_meshes, ("coarse", "fine"))
        randomize_cfg = RandomizeConfig.parse(randomize)
        self._validate_task(build_kwargs)
        self._build_kwargs["visual_meshes"] = visual_meshes

        self.model = _compiled_model(type(self), tuple(sorted(self._build_kwargs.items())))
        self.visual_randomizer: VisualRandomizer | None = None
        if randomize_cfg.enabled:
            # Randomisation edits visual fields of the model in place: work on a private copy (~0.5 ms), never on
            # the compiled model that other envs of this task share.
            self.model = copy.copy(self.model)
            groups = geom_groups(self.model, object_geoms=self.visual_object_geoms)
            self.visual_randomizer = VisualRandomizer(self.model, randomize_cfg, groups)
        gap = dict(dynamics or {})
        unknown = sorted(set(gap) - {"action_delay", "action_gain", "object_mass", "object_friction"})
        if unknown:
            raise ValueError(
                f"unknown dynamics key(s) {unknown}; valid: action_delay, action_gain, object_mass, object_friction"
            )
        self.action_delay = int(check_range("dynamics.action_delay", gap.get("action_delay", 0), 0, 5))
        self.action_gain = check_range("dynamics.action_gain", gap.get("action_gain", 1.0), 0.2, 3.0)
        mass = check_range("dynamics.object_mass", gap.get("object_mass", 1.0), 0.1, 10.0)
        friction = check_range("dynamics.object_friction", gap.get("object_friction", 1.0), 0.1, 10.0)
        if mass != 1.0 or friction != 1.0:
            self.model = copy.copy(self.model)  # a private copy: other envs of this task share the compiled one
            free = {int(self.model.jnt_bodyid[j]) for j in range(self.model.njnt) if self.model.jnt_type[j] == 0}
            for b in free:
                self.model.body_mass[b] *= mass
                self.model.body_inertia[b] *= mass
            for g in range(self.model.ngeom):
                if int(self.model.geom_bodyid[g]) in free:
                    self.model.geom_friction[g, 0] *= friction
        self._pending_actions: list[np.ndarray] = []
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._arm_dofs = np.array([m.joint(j).dofadr[0] for j in ARM_JOINTS])
        self._arm_qpos = np.array([m.joint(j).qposadr[0] for j in ARM_JOINTS])
        self._arm_act = np.array([m.actuator(a).id for a in ARM_ACTUATORS])
        self._finger_qpos = np.array([m.joint(j).qposadr[0] for j in FINGER_JOINTS])
        self._finger_act = np.array([m.actuator(a).id for a in FINGER_ACTUATORS])
        self._tcp = m.site("tcp").id
        self._bind_model()
        self._frame_quat = np.array([1.0, 0.0, 0.0, 0.0])  # action frame = reset orientation (gripper down)
        self._frame_rot = np.eye(3)
        self._home = self._solve_ik(self.ee_start, self._frame_quat, HOME_QPOS)
        self.controller = OpSpaceController(
            m, "tcp", self._arm_dofs, self._arm_act, self._home, kp_pos=kp_pos, kp_rot=kp_rot
        )

        n_act = 3 + 3 * self.rotation + int(self.use_gripper)
        self.action_space = spaces.Box(-1.0, 1.0, (n_act,), np.float32)
        self.state_layout = self._state_layout()
        dim = sum(n for _, n in self.state_layout)
        obs_spaces: dict[str, spaces.Space] = {"state": spaces.Box(-np.inf, np.inf, (dim,), np.float32)}
        if obs_mode == "pixels":
            for cam in CAMERAS:
                obs_spaces[cam] = spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8)
        self.observation_space = spaces.Dict(obs_spaces)
        self._renderers: dict[int, mujoco.Renderer] = {}
        self._target_pos = np.zeros(3)
        self._target_quat = self._frame_quat.copy()
        self._gripper_cmd = 0.0
        self._steps = 0
        self._expert_rng = np.random.default_rng(0)

    # ----------------------------------------------------------------------------------------------- task hooks
    _build_kwargs: dict[str, Any] = {}
    task_state_layout: tuple[tuple[str, int], ...] = ()

    def _validate_task(self, kwargs: dict[str, Any]) -> None:
        """Validate and store task kwargs; set ``self._build_kwargs`` (hashable values that shape the model)."""
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected keyword arguments {sorted(kwargs)}")
        self._build_kwargs = {}

    def _bind_model(self) -> None:
        """Look up the task's ids in ``self.model`` (called once, after compilation)."""

    @classmethod
    def build_spec(cls, **kwargs: Any) -> mujoco.MjSpec:
        """The task's :class:`mujoco.MjSpec` (robot + objects)."""
        raise NotImplementedError

    def _reset_task(self, rng: np.random.Generator) -> None:
        """Place objects (and set finger positions / gripper command) for a new episode."""

    def _task_state(self) -> list[np.ndarray]:
        """Privileged task state arrays, matching :attr:`task_state_layout`."""
        return []

    def _evaluate(self) -> tuple[bool, float, dict[str, Any]]:
        """Return ``(success, shaped_reward in [0, 1], extra info)`` for the current state."""
        raise NotImplementedError

    def expert_action(self, noise: float = 0.0) -> np.ndarray:
        """Scripted expert action (float32, in [-1, 1], shape of the action space) from privileged state.

        Args:
            noise: std of Gaussian noise added to the motion dims (action units); 0 = deterministic.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------- helpers
    def _state_layout(self) -> list[tuple[str, int]]:
        layout = [("ee_pos", 3), ("ee_vel", 3)]
        if self.rotation:
            layout.append(("ee_rotvec", 3))
        if self.use_gripper:
            layout += [("gripper_opening", 1), ("gripper_cmd", 1)]
        if self.obs_mode == "state":
            layout += list(self.task_state_layout)
        return layout

    @property
    def ee_pos(self) -> np.ndarray:
        """Measured TCP position (3,), m, base frame."""
        return self.data.site_xpos[self._tcp].copy()

    @property
    def gripper_opening(self) -> float:
        """Distance between the finger pads (m)."""
        return float(self.data.qpos[self._finger_qpos].sum())

    def _solve_ik(self, pos: np.ndarray, quat: np.ndarray, seed_q: np.ndarray, iters: int = 100) -> np.ndarray:
        """Arm joint angles (7,) placing the tcp at ``pos`` (m) with orientation ``quat`` (damped least squares)."""
        m = self.model
        d = self._ik_data = getattr(self, "_ik_data", None) or mujoco.MjData(m)  # scratch: never stepped
        q = seed_q.copy()
        jac, err, cur, rot = np.zeros((6, m.nv)), np.zeros(6), np.zeros(4), np.zeros(3)
        lo, hi = m.jnt_range[[m.joint(j).id for j in ARM_JOINTS]].T
        for _ in range(iters):
            d.qpos[self._arm_qpos] = q
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)
            err[:3] = pos - d.site_xpos[self._tcp]
            mujoco.mju_mat2Quat(cur, d.site_xmat[self._tcp])
            mujoco.mju_subQuat(rot, quat, cur)
            mujoco.mju_rotVecQuat(err[3:], rot, cur)
            if np.linalg.norm(err) < 1e-7:
                break
            mujoco.mj_jacSite(m, d, jac[:3], jac[3:], self._tcp)
            j = jac[:, self._arm_dofs]
            dq = j.T @ np.linalg.solve(j @ j.T + 1e-4 * np.eye(6), err)
            null = np.eye(7) - np.linalg.pinv(j) @ j
            q = np.clip(q + dq + 0.1 * null @ (seed_q - q), lo, hi)
        if np.linalg.norm(err[:3]) > 1e-3:
            raise ValueError(f"EE position {pos.tolist()} is unreachable with the gripper pointing down")
        return q

    def _move_action(self, goal: np.ndarray, gain: float = 1.0) -> np.ndarray:
        """Translation action (3,) in [-1, 1] moving the EE target toward ``goal`` (m, base frame)."""
        delta = self._frame_rot.T @ (goal - self._target_pos)
        return np.clip(gain * delta / self.action_scale, -1.0, 1.0)

    def _expert_out(self, move: np.ndarray, gripper: float, noise: float) -> np.ndarray:
        """Assemble a full action from a translation part, a gripper command and optional noise."""
        parts = [move]
        if self.rotation:  # hold the reset orientation
            parts.append(np.clip(-quat_to_rotvec(self._ee_rel_quat()) / self.rotation_scale, -1, 1))
        motion = np.concatenate(parts)
        if noise > 0:
            motion = motion + self._expert_rng.normal(0.0, noise, motion.shape)
        if self.use_gripper:
            motion = np.append(motion, gripper)
        return np.clip(motion, -1.0, 1.0).astype(np.float32)

    def _ee_rel_quat(self) -> np.ndarray:
        """Measured EE orientation relative to the action frame, quaternion (4,)."""
        cur, inv, rel = np.zeros(4), np.zeros(4), np.zeros(4)
        mujoco.mju_mat2Quat(cur, self.data.site_xmat[self._tcp])
        mujoco.mju_negQuat(inv, self._frame_quat)
        mujoco.mju_mulQuat(rel, inv, cur)
        return rel

    def _set_fingers(self, opening: float) -> None:
        """Set finger positions and servo targets to a pad distance ``opening`` (m)."""
        half = np.clip(opening / 2, 0.0, FINGER_MAX)
        self.data.qpos[self._finger_qpos] = half
        self.data.ctrl[self._finger_act] = half

    # ----------------------------------------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset arm (jittered EE start) and task; returns ``(obs, info)``."""
        super().reset(seed=seed)
        rng = self.np_random
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        start = np.clip(self.ee_start + rng.uniform(-1, 1, 3) * self.ee_start_noise, self.ws_low, self.ws_high)
        d.qpos[self._arm_qpos] = self._solve_ik(start, self._frame_quat, self._home)
        self._gripper_cmd = 0.0
        self._set_fingers(2 * FINGER_MAX)
        self._reset_task(rng)
        self._expert_rng = np.random.default_rng(int(rng.integers(2**63)))
        if self.visual_randomizer is not None:
            self.visual_randomizer.randomize(rng)  # before mj_forward: it places the cameras and lights
        mujoco.mj_forward(m, d)
        self._target_pos = self.ee_pos
        self._target_quat = self._frame_quat.copy()
        self._steps = 0
        self._pending_actions = [np.zeros(self.action_space.shape)] * self.action_delay
        success, _, extra = self._evaluate()
        return self._observation(), {"success": bool(success), "is_intervention": False, **extra}

    def step(self, action: np.ndarray):
        """Apply one 0.1 s action; returns ``(obs, reward, terminated, truncated, info)``."""
        a = np.asarray(action, dtype=np.float32).reshape(-1)
        if a.shape != self.action_space.shape:
            raise ValueError(f"action has shape {a.shape}, expected {self.action_space.shape}")
        assert_finite("action", a)
        a = np.clip(a, -1.0, 1.0).astype(np.float64)
        if self.action_delay:  # the dynamics gap: this action acts action_delay steps from now
            self._pending_actions.append(a)
            a = self._pending_actions.pop(0)
        self._apply_action(a)
        m, d = self.model, self.data
        ctrl, target_pos, target_quat = self.controller, self._target_pos, self._target_quat
        act = self._arm_act
        if np.array_equal(act, np.arange(act[0], act[0] + len(act))):
            act = slice(int(act[0]), int(act[0]) + len(act))  # cheaper than fancy indexing at 500 Hz
        for _ in range(N_SUBSTEPS):
            mujoco.mj_step1(m, d)
            d.ctrl[act] = ctrl.compute(d, target_pos, target_quat)
            mujoco.mj_step2(m, d)
        mujoco.mj_forward(m, d)
        self._steps += 1
        success, shaped, extra = self._evaluate()
        reward = float(success) if self.reward_type == "sparse" else (1.0 if success else float(shaped))
        terminated = bool(success and self.terminate_on_success)
        truncated = bool(not terminated and self._steps >= self.max_episode_steps)
        info = {"success": bool(success), "is_intervention": False, **extra}
        return self._observation(), reward, terminated, truncated, info

    def _apply_action(self, a: np.ndarray) -> None:
        """Update the EE target (clamped to the workspace and near the EE) and the gripper command."""
        ee = self.data.site_xpos[self._tcp]
        lead = 2.0 * self.action_scale
        step = a[:3] * self.action_scale * self.action_gain
        target = np.clip(self._target_pos + self._frame_rot @ step, self.ws_low, self.ws_high)
        self._target_pos = np.clip(np.clip(target, ee - lead, ee + lead), self.ws_low, self.ws_high)
        if self.rotation:
            dq = rotvec_to_quat(self._frame_rot @ (a[3:6] * self.rotation_scale))
            new = np.zeros(4)
            mujoco.mju_mulQuat(new, dq, self._target_quat)
            inv, rel = np.zeros(4), np.zeros(4)
            mujoco.mju_negQuat(inv, self._frame_quat)
            mujoco.mju_mulQuat(rel, inv, new)
            rv = np.clip(quat_to_rotvec(rel), -self.rotation_limit, self.rotation_limit)
            mujoco.mju_mulQuat(self._target_quat, self._frame_quat, rotvec_to_quat(rv))
        if self.use_gripper:
            g = a[-1]
            if g > 0.5:
                self._gripper_cmd = 1.0
            elif g < -0.5:
                self._gripper_cmd = 0.0
            self.data.ctrl[self._finger_act] = 0.0 if self._gripper_cmd else FINGER_MAX

    def _observation(self) -> dict[str, np.ndarray]:
        d = self.data
        vel = np.zeros(6)
        mujoco.mj_objectVelocity(self.model, d, mujoco.mjtObj.mjOBJ_SITE, self._tcp, vel, 0)
        parts = [d.site_xpos[self._tcp], vel[3:]]
        if self.rotation:
            parts.append(quat_to_rotvec(self._ee_rel_quat()))
        if self.use_gripper:
            parts.append([self.gripper_opening, self._gripper_cmd])
        if self.obs_mode == "state":
            parts += self._task_state()
        obs = {"state": np.concatenate(parts).astype(np.float32)}
        if self.obs_mode == "pixels":
            for cam in CAMERAS:
                obs[cam] = self._render_camera(cam, self.image_size)
        return obs

    def _render_camera(self, camera: str, size: int) -> np.ndarray:
        """uint8 (size, size, 3) image from ``camera``; the GL context is created on first use only."""
        r = self._renderers.get(size)
        if r is None:
            _ensure_headless_gl()
            vis = self.model.vis.global_
            vis.offwidth, vis.offheight = max(vis.offwidth, size), max(vis.offheight, size)
            r = mujoco.Renderer(self.model, size, size)
            for flag in (
                mujoco.mjtRndFlag.mjRND_SHADOW,
                mujoco.mjtRndFlag.mjRND_REFLECTION,
                mujoco.mjtRndFlag.mjRND_SKYBOX,
            ):
                r.scene.flags[flag] = False
            self._renderers[size] = r
            if not _LIVE_ENVS:
                atexit.unregister(_close_renderers)
                atexit.register(_close_renderers)
            _LIVE_ENVS.add(self)
        r.update_scene(self.data, camera=camera)
        return r.render()

    def render(self) -> np.ndarray | None:
        """Front camera frame, uint8 (render_size, render_size, 3), when ``render_mode="rgb_array"``."""
        if self.render_mode != "rgb_array":
            return None
        return self._render_camera("front", self.render_size)

    def close(self) -> None:
        """Free the renderers' GL resources."""
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()
