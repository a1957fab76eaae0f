"""``robot-rl-sim-driver``: a MuJoCo Panda task (:mod:`sim.tasks`) served as a ROS2 robot.

Publishes (every control step, all with the same header stamp, in this order):

* ``robot/success`` (``std_msgs/Bool``): the task's success test;
* ``robot/task_state`` (``sensor_msgs/JointState``, names ``goal_pos.0`` ...): the task's privileged state
  (state mode only; a stamped float vector), when ``publish_task_state``;
* ``robot/camera/<name>/image_raw`` (``sensor_msgs/Image``, rgb8): one per camera, pixels mode only;
* ``robot/ee_twist`` (``geometry_msgs/TwistStamped``): TCP linear (m/s) and angular (rad/s) velocity;
* ``robot/ee_pose`` (``geometry_msgs/PoseStamped``, frame ``frame_id``): TCP pose;
* ``robot/joint_states`` (``sensor_msgs/JointState``): 7 arm joints and the 2 fingers (rad, m; rad/s, m/s; N m, N);
* ``/clock`` (``rosgraph_msgs/Clock``) in lockstep mode.

Takes ``robot/target_pose`` (``PoseStamped``: absolute TCP target, m, base frame) and ``robot/gripper``
(``std_msgs/Float64``: > 0.5 close, otherwise open), normally from the safety supervisor; serves ``robot/reset``
(``std_srvs/Trigger``; the ``reset_seed`` parameter, if >= 0, seeds it once). ``realtime_priority`` (1..99) runs it
under ``SCHED_FIFO`` as a real arm's driver runs (:func:`hw.ros_common.raise_priority`).

Two clocks:

* realtime (default): physics advances ``control_dt`` (0.1 s) per tick, ticks every ``control_dt /
  real_time_factor`` wall seconds, applying the newest target; stamps are the ROS clock.
* ``lockstep``: sim time starts at ``start_time`` and advances ``control_dt`` per step; the driver steps once per
  target whose stamp is at least the current sim time (so each env step of a client is exactly one physics step,
  and the same seed and actions reproduce the same observations); stamps are sim time. A heartbeat republishes
  the newest state (same stamps) every ``1 / heartbeat_hz`` wall seconds so watchdogs see a live, paused robot.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

if not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")

from geometry_msgs.msg import PoseStamped, TwistStamped  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Bool, Float64  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from hw.ros_common import (  # noqa: E402
    RejectLog,
    apply_priority,
    declare,
    image_msg,
    parse_pose,
    pose_msg,
    run_node,
    stamp_ns,
    state_qos,
    to_stamp,
)
from hw.safety import quat_conj, quat_mul, quat_to_rotvec  # noqa: E402

TASKS = {
    "reach": "sim:robot_rl/Reach-v0",
    "pick_cube": "sim:robot_rl/PickCube-v0",
    "peg_insert": "sim:robot_rl/PegInsert-v0",
}
LOCKSTEP_SETTLE_S = 0.002  # wall s between a step-triggering target and the step, so a gripper command sent just
#                            before it on another topic is applied in the same step


def load_env_kwargs(task_config: str, env_kwargs: str, obs_mode: str, image_size: int) -> dict[str, Any]:
    """Env kwargs: ``env_kwargs`` of a task YAML (``configs/task/*.yaml``, ``${obs}`` -> ``obs_mode``), updated by
    the ``env_kwargs`` YAML mapping string, then ``obs_mode`` / ``image_size`` and a driver's episode settings."""
    import yaml

    kwargs: dict[str, Any] = {}
    if task_config:
        with open(task_config) as f:
            kwargs.update((yaml.safe_load(f) or {}).get("env_kwargs") or {})
    if env_kwargs:
        extra = yaml.safe_load(env_kwargs)
        if not isinstance(extra, dict):
            raise ValueError(f"env_kwargs={env_kwargs!r} must be a YAML mapping, e.g. '{{success_threshold: 0.02}}'")
        kwargs.update(extra)
    kwargs = {k: (obs_mode if v == "${obs}" else v) for k, v in kwargs.items()}
    kwargs.update(obs_mode=obs_mode, image_size=image_size, max_episode_steps=100_000, terminate_on_success=False)
    return kwargs


class SimDriver(Node):
    """The sim-as-robot node; ``run()`` is its loop (spins callbacks and steps physics on time)."""

    def __init__(self, parameter_overrides: Sequence[Any] | None = None, node_name: str = "sim_driver"):
        super().__init__(node_name, parameter_overrides=list(parameter_overrides or []))
        task = declare(self, "task", "reach", "sim task served as the robot", choices=tuple(TASKS))
        task_config = declare(
            self,
            "task_config",
            "",
            "task YAML whose env_kwargs to use (configs/task/*.yaml); empty: the task's defaults",
        )
        env_kwargs = declare(
            self, "env_kwargs", "", "YAML mapping of env kwargs over task_config's, e.g. '{success_threshold: 0.03}'"
        )
        obs_mode = declare(
            self,
            "obs_mode",
            "state",
            "state: publish privileged task state; pixels: cameras",
            choices=("state", "pixels"),
        )
        image_size = declare(self, "image_size", 128, "camera image side (px)", lo=16, hi=512)
        self.lockstep = declare(self, "lockstep", False, "step once per fresh target on sim time (deterministic)")
        rtf = declare(self, "real_time_factor", 1.0, "realtime mode: sim seconds per wall second", lo=0.1, hi=20.0)
        seed = declare(self, "seed", 0, "seed of the first reset", lo=0, hi=2**31 - 1)
        declare(
            self,
            "reset_seed",
            -1,
            "seed for the next reset only (-1: continue the RNG); clients set it before calling reset",
            lo=-1,
            hi=2**31 - 1,
            read_only=False,
        )
        self.frame_id = declare(self, "frame_id", "base", "frame of poses and targets (robot base)")
        max_step = declare(self, "max_step", 0.05, "max TCP target change per control step (m)", lo=0.001, hi=0.1)
        self.publish_task_state = declare(self, "publish_task_state", True, "publish robot/task_state")
        hb = declare(
            self, "heartbeat_hz", 2.0, "lockstep: republish rate of the newest state (Hz, 0: off)", lo=0.0, hi=50.0
        )
        start_time = declare(self, "start_time", 1000.0, "lockstep: sim time of the first state (s)", lo=0.0, hi=1e9)
        priority = declare(
            self,
            "realtime_priority",
            0,
            "SCHED_FIFO priority of this node's threads, as a real arm's driver runs (0: normal scheduling)",
            lo=0,
            hi=99,
        )

        from robot_rl.envs.make import make_gym_env

        kwargs = load_env_kwargs(task_config, env_kwargs, obs_mode, image_size)
        kwargs["action_scale"] = max_step
        self.env = make_gym_env(TASKS[task], **kwargs)
        u = self.env.unwrapped
        self.control_dt = float(u.control_dt)
        self.period = self.control_dt / rtf
        self.heartbeat = 1.0 / hb if hb > 0 else None
        self.sim_ns = int(round(start_time * 1e9))
        self.dt_ns = int(round(self.control_dt * 1e9))
        m = u.model
        self._tcp = m.site("tcp").id
        from sim.model import ARM_JOINTS, FINGER_JOINTS

        self.joint_names = [j for j in (*ARM_JOINTS, *FINGER_JOINTS) if _has_joint(m, j)]
        self._qadr = [m.joint(j).qposadr[0] for j in self.joint_names]
        self._dadr = [m.joint(j).dofadr[0] for j in self.joint_names]
        self.cameras = [k for k in self.env.observation_space.spaces if k != "state"]
        layout, off = [], 0
        for name, n in u.state_layout:
            if name in dict(getattr(u, "task_state_layout", ())):
                layout.append((name, n, off))
            off += n
        self.task_layout = layout

        qos = state_qos()
        self.pub_success = self.create_publisher(Bool, "robot/success", qos)
        self.pub_task = self.create_publisher(JointState, "robot/task_state", qos)
        self.pub_images = {
            c: self.create_publisher(Image, f"robot/camera/{c}/image_raw", state_qos(2)) for c in self.cameras
        }
        self.pub_twist = self.create_publisher(TwistStamped, "robot/ee_twist", qos)
        self.pub_pose = self.create_publisher(PoseStamped, "robot/ee_pose", qos)
        self.pub_joints = self.create_publisher(JointState, "robot/joint_states", qos)
        self.pub_clock = self.create_publisher(Clock, "/clock", qos) if self.lockstep else None
        self.create_subscription(PoseStamped, "robot/target_pose", self._on_target, qos)
        self.create_subscription(Float64, "robot/gripper", self._on_gripper, qos)
        self.create_service(Trigger, "robot/reset", self._on_reset)
        self.reject = RejectLog(self.get_logger())

        self.target_pos: np.ndarray | None = None
        self.target_quat: np.ndarray | None = None
        self.gripper: float | None = None
        self.reset_ns = 0
        self.stepped_at = -1  # lockstep: sim time of the last step (one step per sim time)
        self.step_due: float | None = None
        self.steps = 0
        self._last_msgs: list[tuple[Any, Any]] = []
        self.obs, info = self.env.reset(seed=seed)
        self._publish(self.obs, info, self._stamp())
        apply_priority(self, priority)
        mode = "lockstep" if self.lockstep else f"realtime x{rtf:g}"
        self.get_logger().info(
            f"serving {task} ({obs_mode}, cameras {self.cameras or 'none'}) at "
            f"{1 / self.control_dt:g} Hz control, {mode}"
        )

    # ----------------------------------------------------------------------------------------- callbacks
    def _stamp(self) -> int:
        return self.sim_ns if self.lockstep else self.get_clock().now().nanoseconds

    def _on_target(self, msg: PoseStamped) -> None:
        if (pose := parse_pose(msg, self.frame_id, self.reject, "robot/target_pose")) is None:
            return
        pos, quat = pose
        t = stamp_ns(msg.header.stamp)
        if t < self.reset_ns:
            return  # sent before the last reset: belongs to the previous episode
        self.target_pos, self.target_quat = pos, quat
        if self.lockstep and t >= self.sim_ns and self.stepped_at != self.sim_ns and self.step_due is None:
            self.step_due = time.monotonic() + LOCKSTEP_SETTLE_S

    def _on_gripper(self, msg: Float64) -> None:
        v = float(msg.data)
        if not np.isfinite(v):
            self.reject("robot/gripper", f"non-finite gripper command {v}")
            return
        self.gripper = v

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        seed = int(self.get_parameter("reset_seed").value)
        if seed >= 0:
            self.set_parameters([Parameter("reset_seed", value=-1)])
        try:
            self.obs, info = self.env.reset(seed=seed if seed >= 0 else None)
        except Exception as e:  # noqa: BLE001 - report, never die in a service
            response.success, response.message = False, f"reset failed: {type(e).__name__}: {e}"
            self.get_logger().error(response.message)
            return response
        if self.lockstep:
            self.sim_ns += self.dt_ns
        self.target_pos = self.target_quat = self.gripper = None
        self.step_due = None
        ns = self._stamp()
        self.reset_ns = ns
        self._publish(self.obs, info, ns)
        response.success = True
        response.message = f"reset (seed={seed if seed >= 0 else 'continued'}, stamp={ns / 1e9:.3f})"
        return response

    # ------------------------------------------------------------------------------------------- physics
    def action_for_target(self) -> np.ndarray:
        """The env action (in [-1, 1]) that moves the env's TCP target to the commanded one in one step."""
        u = self.env.unwrapped
        a = np.zeros(self.env.action_space.shape, np.float64)
        rot = getattr(u, "_frame_rot", np.eye(3))
        if self.target_pos is not None:
            a[:3] = rot.T @ (self.target_pos - u._target_pos) / u.action_scale  # sim internals: the env's target
        if u.rotation and self.target_quat is not None:
            rv = quat_to_rotvec(quat_mul(self.target_quat, quat_conj(u._target_quat)))
            a[3:6] = rot.T @ rv / u.rotation_scale
        if u.use_gripper and self.gripper is not None:
            a[-1] = 1.0 if self.gripper > 0.5 else -1.0
        return np.clip(a, -1.0, 1.0).astype(np.float32)

    def control_step(self) -> None:
        """Advance physics one control period toward the newest target and publish the result."""
        self.obs, _, _, _, info = self.env.step(self.action_for_target())
        self.steps += 1
        if self.lockstep:
            self.stepped_at = self.sim_ns
            self.sim_ns += self.dt_ns
        self._publish(self.obs, info, self._stamp())

    def _publish(self, obs: dict[str, np.ndarray], info: dict[str, Any], ns: int) -> None:
        u = self.env.unwrapped
        d, m = u.data, u.model
        stamp = to_stamp(ns)
        msgs: list[tuple[Any, Any]] = []
        if self.pub_clock is not None:
            msgs.append((self.pub_clock, Clock(clock=stamp)))
        msgs.append((self.pub_success, Bool(data=bool(info.get("success", False)))))
        if self.publish_task_state and self.task_layout and "state" in obs:
            js = JointState()
            js.header.stamp, js.header.frame_id = stamp, self.frame_id
            js.name = [f"{name}.{i}" for name, n, _ in self.task_layout for i in range(n)]
            js.position = [float(v) for _, n, off in self.task_layout for v in obs["state"][off : off + n]]
            msgs.append((self.pub_task, js))
        for cam in self.cameras:
            msgs.append((self.pub_images[cam], image_msg(obs[cam], f"{cam}_camera", ns)))
        import mujoco

        vel = np.zeros(6)
        mujoco.mj_objectVelocity(m, d, mujoco.mjtObj.mjOBJ_SITE, self._tcp, vel, 0)
        tw = TwistStamped()
        tw.header.stamp, tw.header.frame_id = stamp, self.frame_id
        tw.twist.linear.x, tw.twist.linear.y, tw.twist.linear.z = (float(v) for v in vel[3:])
        tw.twist.angular.x, tw.twist.angular.y, tw.twist.angular.z = (float(v) for v in vel[:3])
        msgs.append((self.pub_twist, tw))
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, d.site_xmat[self._tcp])
        msgs.append((self.pub_pose, pose_msg(d.site_xpos[self._tcp], quat, self.frame_id, ns)))
        js = JointState()
        js.header.stamp, js.header.frame_id = stamp, self.frame_id
        js.name = list(self.joint_names)
        js.position = [float(d.qpos[i]) for i in self._qadr]
        js.velocity = [float(d.qvel[i]) for i in self._dadr]
        js.effort = [float(d.qfrc_actuator[i]) for i in self._dadr]
        msgs.append((self.pub_joints, js))
        for pub, msg in msgs:
            pub.publish(msg)
        self._last_msgs = msgs

    # ---------------------------------------------------------------------------------------------- loop
    def run(self) -> None:
        """Spin callbacks and step physics: on time (realtime) or once per fresh target (lockstep)."""
        ex = SingleThreadedExecutor(context=self.context)
        ex.add_node(self)
        next_tick = time.monotonic() + self.period
        next_beat = time.monotonic() + (self.heartbeat or 0.0)
        try:
            while self.context.ok():
                now = time.monotonic()
                if self.lockstep:
                    wake = min(self.step_due or np.inf, next_beat if self.heartbeat else np.inf)
                else:
                    wake = next_tick
                ex.spin_once(timeout_sec=float(np.clip(wake - now, 0.0, 0.05)))
                if not self.context.ok():  # Ctrl-C: rclpy shut the context down
                    break
                now = time.monotonic()
                if self.lockstep:
                    if self.step_due is not None and now >= self.step_due:
                        self.step_due = None
                        self.control_step()
                    if self.heartbeat and now >= next_beat:
                        next_beat = now + self.heartbeat
                        for pub, msg in self._last_msgs:
                            pub.publish(msg)
                elif now >= next_tick:
                    self.control_step()
                    next_tick += self.period
                    if time.monotonic() - next_tick > self.period:
                        self.get_logger().warning(
                            f"control step overran its {self.period * 1e3:.0f} ms period; resynchronising",
                            throttle_duration_sec=5.0,
                        )
                        next_tick = time.monotonic() + self.period
        finally:
            ex.remove_node(self)

    def close(self) -> None:
        self.env.close()


def _has_joint(model: Any, name: str) -> bool:
    try:
        model.joint(name)
        return True
    except KeyError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """``robot-rl-sim-driver [--config configs/robot/sim.yaml] [--ros-args -p task:=pick_cube ...]``."""
    return run_node(SimDriver, argv, "driver")


if __name__ == "__main__":
    raise SystemExit(main())
