"""``robot-rl-safety``: the safety supervisor between every command source and the robot driver.

Inputs (any number of publishers):

* ``cmd/target_pose`` (``geometry_msgs/PoseStamped``): absolute TCP target, m, frame ``frame_id``;
* ``cmd/twist`` (``geometry_msgs/TwistStamped``): TCP velocity, m/s and rad/s, frame ``frame_id``; integrated at
  ``rate_hz`` while fresh, zero (hold) once older than ``twist_timeout``;
* ``cmd/gripper`` (``std_msgs/Float64``): 0 open .. 1 closed;
* ``estop`` (``std_msgs/Bool``): ``true`` engages the e-stop (``false`` on the topic is ignored: release it with
  the ``safety/estop`` service, ``std_srvs/SetBool`` data=false); the service engages it too;
* ``robot/ee_pose`` (``PoseStamped``) and ``robot/joint_states`` (``sensor_msgs/JointState``) from the driver.

Outputs: ``robot/target_pose``, ``robot/gripper`` (to the driver); ``safety/holding`` (``std_msgs/Bool``),
``safety/status`` (``std_msgs/String``) and ``safety/estopped`` (``Bool``), all latched.
Service ``safety/reset`` (``std_srvs/Trigger``) resets the robot through the driver's ``robot/reset`` and
re-anchors the limits at the new pose (refused while e-stopped).

Every target goes through :class:`hw.safety.MotionLimiter` (workspace box, speed, acceleration, rotation, lead
over the measured pose). The arm is held (target frozen, velocity zeroed, commands refused while the state is
bad) when the robot state goes silent or stale, when commands go silent, and on e-stop (target = measured pose).
A malformed message (NaN, wrong frame, wrong sizes, stale or future stamp) is dropped with a log line
(:class:`hw.ros_common.RejectLog`); no message can raise out of a callback.

Pose commands are forwarded one per control period of their stamps (``control_rate``); faster ones are
coalesced (the newest waits for the next period). Forwarded targets keep the command's stamp, so a lockstep
driver steps exactly once per command and a re-sent hold target never steps it again.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any, Sequence

import numpy as np
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import SetBool, Trigger

from hw.ros_common import (RejectLog, declare, latched_qos, pose_from_msg, pose_msg, run_node, stamp_ns,
                           state_qos)
from hw.safety import (EStop, MotionLimiter, RateGate, SafetyLimits, Watchdog, check_joint_state, check_vector,
                       quat_mul, rotvec_to_quat)


class SafetySupervisor(Node):
    """Clamps, limits and watches every command; see the module docstring for topics and services."""

    def __init__(self, parameter_overrides: Sequence[Any] | None = None, node_name: str = "safety_supervisor"):
        super().__init__(node_name, parameter_overrides=list(parameter_overrides or []))
        d = SafetyLimits()
        self.frame_id = declare(self, "frame_id", "base", "frame every pose and twist must be in (robot base)")
        lim = SafetyLimits(
            workspace_low=declare(self, "workspace_low", [float(v) for v in d.workspace_low],
                                  "workspace box lower corner (m, base frame)", lo=-2.0, hi=2.0),
            workspace_high=declare(self, "workspace_high", [float(v) for v in d.workspace_high],
                                   "workspace box upper corner (m, base frame)", lo=-2.0, hi=2.0),
            max_speed=declare(self, "max_speed", d.max_speed, "target speed limit (m/s)", lo=1e-3, hi=3.0),
            max_accel=declare(self, "max_accel", d.max_accel, "target acceleration limit (m/s^2)", lo=1e-2, hi=50.0),
            max_rot_speed=declare(self, "max_rot_speed", d.max_rot_speed, "target angular speed limit (rad/s)",
                                  lo=1e-3, hi=10.0),
            max_rotation=declare(self, "max_rotation", d.max_rotation,
                                 "max rotation from the orientation at reset (rad per axis)", lo=0.0, hi=3.1416),
            max_lead=declare(self, "max_lead", d.max_lead, "max target - measured TCP distance per axis (m)",
                             lo=1e-3, hi=1.0),
            command_timeout=declare(self, "command_timeout", d.command_timeout,
                                    "command silence before holding, and max command stamp age (s)", lo=1e-3, hi=60.0),
            state_timeout=declare(self, "state_timeout", d.state_timeout,
                                  "robot state silence / stamp age before holding (s)", lo=1e-3, hi=60.0),
        )
        self.limits = lim
        self.dt = 1.0 / declare(self, "control_rate", 10.0, "pose command rate (Hz): one target per period",
                                lo=0.5, hi=1000.0)
        rate_hz = declare(self, "rate_hz", 50.0, "watchdog / twist integration rate (Hz)", lo=1.0, hi=1000.0)
        self.twist_timeout = declare(self, "twist_timeout", 0.25, "twist age after which it counts as zero (s)",
                                     lo=1e-3, hi=10.0)
        self.lockstep = declare(self, "lockstep", False, "robot is a lockstep sim: 'now' is its newest state stamp")
        self.future_tolerance = declare(self, "future_tolerance", 0.5, "max command stamp ahead of now (s)",
                                        lo=0.0, hi=10.0)
        self.service_timeout = declare(self, "service_timeout", 10.0, "wait for the driver's reset (s)",
                                       lo=0.1, hi=300.0)
        driver_reset = declare(self, "driver_reset_service", "robot/reset", "the driver's reset (std_srvs/Trigger)")

        self.limiter = MotionLimiter(lim)
        self.watchdog = Watchdog(lim.command_timeout, lim.state_timeout)
        self.estop = EStop()
        self.gate = RateGate(0.5 * self.dt)
        self.reject = RejectLog(self.get_logger())
        self.lock = threading.RLock()
        self.measured: tuple[np.ndarray, np.ndarray, int] | None = None  # pos, quat, stamp_ns
        self.pending: tuple[int, np.ndarray, np.ndarray] | None = None
        self.twist: tuple[np.ndarray, np.ndarray, float] | None = None  # lin, ang, arrival (monotonic s)
        self.last_cmd_ns: int | None = None
        self.last_out_ns = 0
        self.min_anchor_ns = -1  # after a reset: anchor only on state newer than this
        self.hold_reason = "starting"
        self.forwarded = 0
        self._last_tick = time.monotonic()

        qos = state_qos()
        self.pub_target = self.create_publisher(PoseStamped, "robot/target_pose", qos)
        self.pub_gripper = self.create_publisher(Float64, "robot/gripper", qos)
        self.pub_holding = self.create_publisher(Bool, "safety/holding", latched_qos())
        self.pub_status = self.create_publisher(String, "safety/status", latched_qos())
        self.pub_estopped = self.create_publisher(Bool, "safety/estopped", latched_qos())
        self.create_subscription(PoseStamped, "cmd/target_pose", self._guard(self._on_pose_cmd, "cmd/target_pose"), qos)
        self.create_subscription(TwistStamped, "cmd/twist", self._guard(self._on_twist, "cmd/twist"), qos)
        self.create_subscription(Float64, "cmd/gripper", self._guard(self._on_gripper, "cmd/gripper"), qos)
        self.create_subscription(Bool, "estop", self._guard(self._on_estop_topic, "estop"), qos)
        self.create_subscription(PoseStamped, "robot/ee_pose", self._guard(self._on_ee_pose, "robot/ee_pose"), qos)
        self.create_subscription(JointState, "robot/joint_states",
                                 self._guard(self._on_joint_states, "robot/joint_states"), qos)
        self.create_service(SetBool, "safety/estop", self._on_estop_srv)
        self._reset_group = ReentrantCallbackGroup()
        self.create_service(Trigger, "safety/reset", self._on_reset, callback_group=self._reset_group)
        self.driver_reset = self.create_client(Trigger, driver_reset, callback_group=self._reset_group)
        self.create_timer(1.0 / rate_hz, self._guard(self._tick, "timer"))
        self._publish_status(self.hold_reason)
        self.pub_estopped.publish(Bool(data=False))
        self.get_logger().info(f"supervising: workspace {lim.workspace_low.tolist()}..{lim.workspace_high.tolist()} m, "
                               f"{lim.max_speed} m/s, {lim.max_accel} m/s^2, lead {lim.max_lead} m, "
                               f"timeouts command {lim.command_timeout} s / state {lim.state_timeout} s")

    # ------------------------------------------------------------------------------------------- helpers
    def _guard(self, fn: Any, topic: str) -> Any:
        """Wrap a callback: hold the lock, and log (never raise) anything unexpected."""

        def cb(*args: Any) -> None:
            try:
                with self.lock:
                    fn(*args)
            except Exception as e:  # noqa: BLE001 - a bad message must never kill the node
                self.reject(topic, f"{type(e).__name__}: {e}")

        return cb

    def now_ns(self) -> int:
        """ROS time now; in lockstep, the newest robot state stamp (sim time)."""
        if self.lockstep:
            return self.measured[2] if self.measured is not None else 0
        return self.get_clock().now().nanoseconds

    def _check_stamp(self, topic: str, t: int) -> bool:
        now = self.now_ns()
        age = (now - t) / 1e9
        if age > self.limits.command_timeout:
            self.reject(topic, f"stale command: stamp {age:.3f} s old (> {self.limits.command_timeout} s)")
            return False
        if -age > self.future_tolerance:
            self.reject(topic, f"command stamp {-age:.3f} s in the future (> {self.future_tolerance} s)")
            return False
        return True

    def _may_command(self, topic: str) -> bool:
        if self.estop.engaged:
            self.reject(topic, f"e-stop engaged ({self.estop.reason})")
            return False
        bad = self.watchdog.state_problem(time.monotonic())
        if bad:
            self.reject(topic, f"holding: {bad}")
            return False
        return True

    def _publish_target(self, pos: np.ndarray, quat: np.ndarray, ns: int) -> None:
        self.pub_target.publish(pose_msg(pos, quat, self.frame_id, ns))

    def _publish_status(self, reason: str) -> None:
        self.pub_holding.publish(Bool(data=bool(reason)))
        self.pub_status.publish(String(data=f"holding: {reason}" if reason else "ok"))

    def _anchor_if_needed(self) -> bool:
        if self.limiter.anchored:
            return True
        if self.measured is None or self.measured[2] <= self.min_anchor_ns:
            return False
        self.limiter.anchor(self.measured[0], self.measured[1])
        return True

    # ------------------------------------------------------------------------------------------ callbacks
    def _on_ee_pose(self, msg: PoseStamped) -> None:
        try:
            pos, quat = pose_from_msg(msg, self.frame_id)
        except ValueError as e:
            self.reject("robot/ee_pose", str(e))
            return
        t = stamp_ns(msg.header.stamp)
        self.measured = (pos, quat, t)
        self.watchdog.feed_state(time.monotonic(), max(0.0, (self.now_ns() - t) / 1e9))

    def _on_joint_states(self, msg: JointState) -> None:
        bad = check_joint_state(msg.name, msg.position, msg.velocity, msg.effort)
        if bad:
            self.reject("robot/joint_states", bad)

    def _on_pose_cmd(self, msg: PoseStamped) -> None:
        try:
            pos, quat = pose_from_msg(msg, self.frame_id)
        except ValueError as e:
            self.reject("cmd/target_pose", str(e))
            return
        t = stamp_ns(msg.header.stamp)
        if not self._check_stamp("cmd/target_pose", t) or not self._may_command("cmd/target_pose"):
            return
        if self.last_cmd_ns is not None and t < self.last_cmd_ns:
            self.reject("cmd/target_pose", "command older than the previous one (out of order)")
            return
        self.last_cmd_ns = t
        self.watchdog.feed_command(time.monotonic())
        self.pending = (t, pos, quat)
        self._forward_pending(t)

    def _forward_pending(self, now_ns: int) -> None:
        if self.pending is None or not self.gate.open(now_ns / 1e9) or not self._anchor_if_needed():
            return
        t, pos, quat = self.pending
        self.pending = None
        measured = self.measured[0] if self.measured is not None else None
        res = self.limiter.step(pos, quat, self.dt, measured)
        self.gate.passed(now_ns / 1e9)
        self.last_out_ns = t
        self._publish_target(res.pos, res.quat, t)
        self.forwarded += 1
        if res.clamped:
            self.get_logger().info(f"target clamped by {sorted(res.clamped)}: asked {np.round(pos, 4).tolist()}, "
                                   f"sent {np.round(res.pos, 4).tolist()}", throttle_duration_sec=1.0)

    def _on_twist(self, msg: TwistStamped) -> None:
        if msg.header.frame_id != self.frame_id:
            self.reject("cmd/twist", f"frame_id {msg.header.frame_id!r} != expected {self.frame_id!r}")
            return
        lin = np.array([msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z])
        ang = np.array([msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z])
        bad = check_vector("twist", np.concatenate([lin, ang]), 6, max_abs=10.0)
        if bad:
            self.reject("cmd/twist", bad)
            return
        if not self._check_stamp("cmd/twist", stamp_ns(msg.header.stamp)) or not self._may_command("cmd/twist"):
            return
        self.watchdog.feed_command(time.monotonic())
        self.twist = (lin, ang, time.monotonic())

    def _on_gripper(self, msg: Float64) -> None:
        v = float(msg.data)
        if not np.isfinite(v) or not (-0.5 <= v <= 1.5):
            self.reject("cmd/gripper", f"gripper command {v} outside [0, 1]")
            return
        if not self._may_command("cmd/gripper"):
            return
        self.pub_gripper.publish(Float64(data=float(np.clip(v, 0.0, 1.0))))

    def _on_estop_topic(self, msg: Bool) -> None:
        if msg.data:
            self._engage("estop topic")
        elif self.estop.engaged:
            self.get_logger().warning("estop topic sent false: the e-stop is released only by the safety/estop "
                                      "service (data: false)", throttle_duration_sec=2.0)

    def _on_estop_srv(self, req: SetBool.Request, res: SetBool.Response) -> SetBool.Response:
        with self.lock:
            if req.data:
                self._engage("safety/estop service")
                res.success, res.message = True, "e-stop engaged"
            else:
                was = self.estop.release()
                self.limiter.unanchor()  # resume from wherever the arm is now
                self.pending, self.twist = None, None
                self.pub_estopped.publish(Bool(data=False))
                self.get_logger().warning("e-stop released" if was else "e-stop release requested (was not engaged)")
                res.success, res.message = True, "e-stop released"
        return res

    def _engage(self, source: str) -> None:
        if self.estop.engage(source):
            self.get_logger().error(f"E-STOP engaged by {source}: holding the measured pose, refusing commands")
        self.pending, self.twist = None, None
        if self.measured is not None:
            self.limiter.anchor(self.measured[0], self.measured[1])
            self._publish_target(self.measured[0], self.measured[1], self.now_ns())
        self.pub_estopped.publish(Bool(data=True))

    def _on_reset(self, req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        with self.lock:
            if self.estop.engaged:
                res.success, res.message = False, f"refused: e-stop engaged ({self.estop.reason})"
                return res
            call_ns = self.now_ns()
        if not self.driver_reset.wait_for_service(timeout_sec=self.service_timeout):
            res.success, res.message = False, f"driver reset service {self.driver_reset.srv_name} not available"
            return res
        done = threading.Event()
        fut = self.driver_reset.call_async(Trigger.Request())
        fut.add_done_callback(lambda _: done.set())
        if not done.wait(self.service_timeout):
            fut.cancel()
            res.success, res.message = False, f"driver reset timed out after {self.service_timeout} s"
            return res
        out = fut.result()
        with self.lock:
            self.limiter.unanchor()
            self.watchdog.forget_commands()
            self.gate.reset()
            self.pending, self.twist, self.last_cmd_ns = None, None, None
            self.min_anchor_ns = call_ns
        res.success, res.message = bool(out.success), f"driver: {out.message}"
        return res

    def _tick(self) -> None:
        mono = time.monotonic()
        dt = min(mono - self._last_tick, 2.0 * self.dt)
        self._last_tick = mono
        reason = (f"e-stop ({self.estop.reason})" if self.estop.engaged else
                  self.watchdog.state_problem(mono) or self.watchdog.command_problem(mono) or "")
        if _kind(reason) != _kind(self.hold_reason):
            if reason and not self.hold_reason:
                self._enter_hold(reason)
            elif reason:
                self.get_logger().warning(f"holding the arm: {reason}")
            else:
                self.get_logger().info("resumed: state fresh and commands arriving")
            self.hold_reason = reason
            self._publish_status(reason)
        if reason:
            return
        if self.twist is not None:
            lin, ang, arrived = self.twist
            if mono - arrived > self.twist_timeout:
                self.twist = None  # zero twist: the target stays where it is
            elif dt > 0 and self._anchor_if_needed():
                measured = self.measured[0] if self.measured is not None else None
                quat = quat_mul(rotvec_to_quat(ang * dt), self.limiter.quat)
                res = self.limiter.step(self.limiter.pos + lin * dt, quat, dt, measured)
                self.last_out_ns = self.now_ns()
                self._publish_target(res.pos, res.quat, self.last_out_ns)
        if self.pending is not None:
            self._forward_pending(self.now_ns())

    def _enter_hold(self, reason: str) -> None:
        self.get_logger().warning(f"holding the arm: {reason}")
        self.limiter.stop()
        self.pending, self.twist = None, None
        if self.limiter.anchored and not self.estop.engaged:
            # re-send the held target with its original stamp: a lockstep driver does not step on it again
            self._publish_target(self.limiter.pos, self.limiter.quat, self.last_out_ns)

    def run(self) -> None:
        ex = MultiThreadedExecutor(num_threads=2, context=self.context)
        ex.add_node(self)
        try:
            ex.spin()
        finally:
            ex.remove_node(self)


def _kind(reason: str) -> str:
    """A hold reason without its numbers, so a growing silence does not count as a new reason."""
    return re.sub(r"[-+]?\d[\d.e+-]*", "#", reason)


def main(argv: Sequence[str] | None = None) -> int:
    """``robot-rl-safety [--config configs/robot/sim.yaml] [--ros-args -p max_speed:=0.2 ...]``."""
    return run_node(SafetySupervisor, argv, "supervisor")


if __name__ == "__main__":
    raise SystemExit(main())
