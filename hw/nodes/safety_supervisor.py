"""``robot-rl-safety``: the safety supervisor between every command source and the robot driver.

Inputs (any number of publishers):

* ``cmd/target_pose`` (``geometry_msgs/PoseStamped``): absolute TCP target, m, frame ``frame_id``;
* ``cmd/twist`` (``geometry_msgs/TwistStamped``): TCP velocity, m/s and rad/s, frame ``frame_id``; moves the goal
  from the current target while fresh, zero (hold) once older than ``twist_timeout`` (realtime only);
* ``cmd/gripper`` (``std_msgs/Float64``): 0 open .. 1 closed;
* ``estop`` (``std_msgs/Bool``): ``true`` engages the e-stop, from anyone (``false`` is ignored);
* ``safety/release`` (``std_msgs/String``): an authenticated e-stop release (``robot-rl-estop release``, see
  :class:`hw.safety.ReleaseAuth`: a response to the nonce on ``safety/estop_challenge`` signed with the key in
  ``estop_key_file``);
* ``robot/ee_pose`` (``PoseStamped``) and ``robot/joint_states`` (``sensor_msgs/JointState``) from the driver.

Outputs: ``robot/target_pose``, ``robot/gripper`` (to the driver); ``safety/holding`` (``std_msgs/Bool``),
``safety/status`` (``std_msgs/String``), ``safety/estopped`` (``Bool``) and ``safety/estop_challenge``
(``String``), all latched; with ``trace_commands``, ``safety/command_trace`` (``sensor_msgs/TimeReference``: the
stamp of the target that answered a pose command in ``header.stamp``, the command's stamp in ``time_ref``; a command
answered by a later output is traced to that one). Services: ``safety/estop`` (``std_srvs/SetBool``: data=true
engages; a release over this unauthenticated service is refused), ``safety/reset`` (``std_srvs/Trigger``: resets the
robot through the driver's ``robot/reset`` and re-anchors the limits at the new pose; refused while e-stopped).

All decisions are :class:`hw.safety.SupervisorCore`'s (pure Python, property-tested): one goal, one limiter, one
output stream. Realtime: a timer at ``rate_hz`` publishes one limited target per tick, its motion limited against
the time since the previous output, whatever rate or stamps the commands come with; a pose command is answered at
once with one more such target, or, when the previous output is younger than the limiter's shortest step (2 ms), by
a one-shot timer as soon as it is not (rather than at the next tick, up to ``1 / rate_hz`` later). Lockstep: one
target per command with a new stamp, computed from the state of that instant, stamped like the command (the driver
steps once per target); a re-sent command re-sends the same target. The arm is held (the target brakes to rest)
when the robot state goes silent or stale, when commands go silent, and when the measured pose strays from the
target; on e-stop the target is the measured pose. The e-stop latch is persisted in ``estop_latch_file``: a
supervisor restarted while engaged comes up engaged. A malformed message (NaN, wrong frame, wrong sizes, stale or
future stamp) is dropped with a log line (:class:`hw.ros_common.RejectLog`); no message can raise out of a callback.

``realtime_priority`` (1..99) runs the node under ``SCHED_FIFO`` at that priority
(:func:`hw.ros_common.raise_priority`), so a busy learner on the same cores cannot delay the targets; a log line says
what was applied or why it was not permitted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import JointState, TimeReference
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import SetBool, Trigger

from hw.ros_common import (
    RejectLog,
    apply_priority,
    declare,
    latched_qos,
    parse_pose,
    pose_msg,
    robot_rl_home,
    run_node,
    stamp_ns,
    state_qos,
    to_stamp,
)
from hw.safety import EStop, Output, ReleaseAuth, SafetyLimits, SupervisorCore, check_joint_state, check_vector
from robot_rl.runtime.keys import key_file


class SafetySupervisor(Node):
    """Clamps, limits and watches every command; see the module docstring for topics and services."""

    def __init__(self, parameter_overrides: Sequence[Any] | None = None, node_name: str = "safety_supervisor"):
        super().__init__(node_name, parameter_overrides=list(parameter_overrides or []))
        d = SafetyLimits()
        self.frame_id = declare(self, "frame_id", "base", "frame every pose and twist must be in (robot base)")
        lim = SafetyLimits(
            workspace_low=declare(
                self,
                "workspace_low",
                [float(v) for v in d.workspace_low],
                "workspace box lower corner (m, base frame)",
                lo=-2.0,
                hi=2.0,
            ),
            workspace_high=declare(
                self,
                "workspace_high",
                [float(v) for v in d.workspace_high],
                "workspace box upper corner (m, base frame)",
                lo=-2.0,
                hi=2.0,
            ),
            max_speed=declare(self, "max_speed", d.max_speed, "target speed limit (m/s)", lo=1e-3, hi=3.0),
            max_accel=declare(self, "max_accel", d.max_accel, "target acceleration limit (m/s^2)", lo=1e-2, hi=50.0),
            max_rot_speed=declare(
                self, "max_rot_speed", d.max_rot_speed, "target angular speed limit (rad/s)", lo=1e-3, hi=10.0
            ),
            max_rotation=declare(
                self,
                "max_rotation",
                d.max_rotation,
                "max rotation from the orientation at reset (rad per axis)",
                lo=0.0,
                hi=3.1416,
            ),
            max_lead=declare(
                self, "max_lead", d.max_lead, "max target - measured TCP distance per axis (m)", lo=1e-3, hi=1.0
            ),
            command_timeout=declare(
                self,
                "command_timeout",
                d.command_timeout,
                "command silence before holding, and max command stamp age (s)",
                lo=1e-3,
                hi=60.0,
            ),
            state_timeout=declare(
                self,
                "state_timeout",
                d.state_timeout,
                "robot state silence / stamp age before holding (s)",
                lo=1e-3,
                hi=60.0,
            ),
        )
        self.limits = lim
        control_rate = declare(
            self, "control_rate", 10.0, "lockstep: the sim's step rate (Hz); one target per step", lo=0.5, hi=1000.0
        )
        rate_hz = declare(
            self, "rate_hz", 50.0, "realtime: target output rate (Hz); also the watchdog's", lo=1.0, hi=1000.0
        )
        self.lockstep = declare(self, "lockstep", False, "robot is a lockstep sim: 'now' is its newest state stamp")
        self.service_timeout = declare(
            self, "service_timeout", 10.0, "wait for the driver's reset (s)", lo=0.1, hi=300.0
        )
        driver_reset = declare(self, "driver_reset_service", "robot/reset", "the driver's reset (std_srvs/Trigger)")
        trace = declare(
            self,
            "trace_commands",
            False,
            "publish safety/command_trace: which output answered which pose command (for latency benchmarks)",
        )
        priority = declare(
            self,
            "realtime_priority",
            0,
            "SCHED_FIFO priority of this node's threads (0: normal scheduling)",
            lo=0,
            hi=99,
        )
        home = robot_rl_home()
        latch = declare(
            self, "estop_latch_file", "", f"where the e-stop latch persists (empty: {home}/<node name>_estop.json)"
        ) or str(home / f"{node_name}_estop.json")
        key_path = declare(
            self,
            "estop_key_file",
            "",
            f"hex key that signs e-stop releases (empty: {home}/estop.key, made on first use; or a run's runtime.key)",
        ) or str(home / "estop.key")
        self.core = SupervisorCore(
            lim,
            lockstep=self.lockstep,
            output_period=1.0 / rate_hz,
            control_period=1.0 / control_rate,
            future_tolerance=declare(
                self, "future_tolerance", 0.05, "max command stamp ahead of now (s)", lo=0.0, hi=0.5
            ),
            twist_timeout=declare(
                self, "twist_timeout", 0.25, "twist age after which it counts as zero (s)", lo=1e-3, hi=10.0
            ),
            estop=EStop(latch),
        )
        self.auth = ReleaseAuth(key_file(Path(key_path)))
        self.reject = RejectLog(self.get_logger())
        self.lock = threading.Lock()
        self.forwarded = 0
        self._untraced: Any = None  # trace_commands: the stamp of an accepted pose command not answered yet
        self._deferred = False  # realtime: a pose command came too soon after an output; the answer timer answers it
        self._clamp_log_at = 0.0  # monotonic time before which "target clamped" is not logged again

        outputs = {self.resolve_topic_name(t) for t in ("robot/target_pose", "robot/gripper")}
        looped = [t for t in ("cmd/target_pose", "cmd/twist", "cmd/gripper") if self.resolve_topic_name(t) in outputs]
        if looped:
            raise ValueError(
                f"remapping makes {looped} the supervisor's own output topics {sorted(outputs)}: commands "
                "would bypass the limits; remap the driver side (robot/target_pose, robot/gripper) only"
            )
        qos = state_qos()
        self.pub_target = self.create_publisher(PoseStamped, "robot/target_pose", qos)
        self.pub_gripper = self.create_publisher(Float64, "robot/gripper", qos)
        self.pub_holding = self.create_publisher(Bool, "safety/holding", latched_qos())
        self.pub_status = self.create_publisher(String, "safety/status", latched_qos())
        self.pub_estopped = self.create_publisher(Bool, "safety/estopped", latched_qos())
        self.pub_challenge = self.create_publisher(String, "safety/estop_challenge", latched_qos())
        self.pub_trace = self.create_publisher(TimeReference, "safety/command_trace", state_qos(50)) if trace else None
        self.create_subscription(PoseStamped, "cmd/target_pose", self._guard(self._on_pose_cmd, "cmd/target_pose"), qos)
        self.create_subscription(TwistStamped, "cmd/twist", self._guard(self._on_twist, "cmd/twist"), qos)
        self.create_subscription(Float64, "cmd/gripper", self._guard(self._on_gripper, "cmd/gripper"), qos)
        self.create_subscription(Bool, "estop", self._guard(self._on_estop_topic, "estop"), qos)
        self.create_subscription(String, "safety/release", self._guard(self._on_release, "safety/release"), qos)
        self.create_subscription(PoseStamped, "robot/ee_pose", self._guard(self._on_ee_pose, "robot/ee_pose"), qos)
        self.create_subscription(
            JointState, "robot/joint_states", self._guard(self._on_joint_states, "robot/joint_states"), qos
        )
        self.create_service(SetBool, "safety/estop", self._on_estop_srv)
        # the reset coroutine, its driver call and its sleeps must not wait on each other's callback group
        self._reset_group = ReentrantCallbackGroup()
        self.create_service(Trigger, "safety/reset", self._on_reset, callback_group=self._reset_group)
        self.driver_reset = self.create_client(Trigger, driver_reset, callback_group=self._reset_group)
        self.create_timer(1.0 / rate_hz, self._guard(self._tick, "timer"))
        # realtime: answers a pose command that came < min_dt after the previous output, min_dt later (one-shot)
        self._answer_timer = self.create_timer(self.core.limiter.min_dt, self._guard(self._answer, "answer timer"))
        self._answer_timer.cancel()
        self._publish_status(self.core.hold_reason)
        self.pub_estopped.publish(Bool(data=self.core.estop.engaged))
        self.pub_challenge.publish(String(data=self.auth.challenge))
        if self.core.estop.engaged:
            self.get_logger().error(
                f"E-STOP engaged at start ({self.core.estop.reason}): release it with robot-rl-estop release"
            )
        apply_priority(self, priority)
        mode = f"lockstep at {control_rate:g} Hz" if self.lockstep else f"realtime, targets at {rate_hz:g} Hz"
        self.get_logger().info(
            f"supervising ({mode}): workspace {lim.workspace_low.tolist()}.."
            f"{lim.workspace_high.tolist()} m, {lim.max_speed} m/s, {lim.max_accel} m/s^2, "
            f"lead {lim.max_lead} m, timeouts command {lim.command_timeout} s / state "
            f"{lim.state_timeout} s; e-stop latch {latch}"
        )

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

    def _clock_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _publish(self, out: Output | None) -> None:
        if out is None:
            return
        self.pub_target.publish(pose_msg(out.pos, out.quat, self.frame_id, out.stamp_ns))
        self.forwarded += 1
        self._deferred = False
        if self._untraced is not None and out.kind != "estop":  # header: the output's stamp; time_ref: the command's
            tr = TimeReference(source="cmd/target_pose", time_ref=self._untraced)
            tr.header.stamp = to_stamp(out.stamp_ns)
            self.pub_trace.publish(tr)
            self._untraced = None
        if out.clamped - {"estop", "hold"} and time.monotonic() >= self._clamp_log_at:
            # throttled here: rclpy's own throttling inspects the caller's frame on every call (~0.5 ms)
            self._clamp_log_at = time.monotonic() + 1.0
            self.get_logger().info(f"target clamped by {sorted(out.clamped)}: sent {np.round(out.pos, 4).tolist()}")

    def _publish_status(self, reason: str) -> None:
        self.pub_holding.publish(Bool(data=bool(reason)))
        self.pub_status.publish(String(data=f"holding: {reason}" if reason else "ok"))

    # ------------------------------------------------------------------------------------------ callbacks
    def _on_ee_pose(self, msg: PoseStamped) -> None:
        if (pose := parse_pose(msg, self.frame_id, self.reject, "robot/ee_pose")) is None:
            return
        pos, quat = pose
        self._publish(self.core.on_state(pos, quat, stamp_ns(msg.header.stamp), self._clock_ns(), time.monotonic()))

    def _on_joint_states(self, msg: JointState) -> None:
        bad = check_joint_state(msg.name, msg.position, msg.velocity, msg.effort)
        if bad:
            self.reject("robot/joint_states", bad)

    def _on_pose_cmd(self, msg: PoseStamped) -> None:
        if (pose := parse_pose(msg, self.frame_id, self.reject, "cmd/target_pose")) is None:
            return
        pos, quat = pose
        why, out = self.core.on_pose(pos, quat, stamp_ns(msg.header.stamp), self._clock_ns(), time.monotonic())
        if why:
            self.reject("cmd/target_pose", why)
        else:
            if self.pub_trace is not None:  # traced by the output that answers it: this one, or a later one
                self._untraced = msg.header.stamp
            if out is None and not self.lockstep:  # too soon after the previous output: answer it min_dt later
                self._deferred = True
                self._answer_timer.reset()
        self._publish(out)

    def _answer(self) -> None:
        self._answer_timer.cancel()
        if self._deferred:  # (not answered by a tick meanwhile)
            self._publish(self.core.tick(self._clock_ns(), time.monotonic()))

    def _on_twist(self, msg: TwistStamped) -> None:
        if msg.header.frame_id != self.frame_id:
            self.reject("cmd/twist", f"frame_id {msg.header.frame_id!r} != expected {self.frame_id!r}")
            return
        lin = np.array([msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z])
        ang = np.array([msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z])
        bad = check_vector("twist", np.concatenate([lin, ang]), 6, max_abs=10.0) or self.core.on_twist(
            lin, ang, stamp_ns(msg.header.stamp), self._clock_ns(), time.monotonic()
        )
        if bad:
            self.reject("cmd/twist", bad)

    def _on_gripper(self, msg: Float64) -> None:
        v = float(msg.data)
        if not np.isfinite(v) or not (-0.5 <= v <= 1.5):
            self.reject("cmd/gripper", f"gripper command {v} outside [0, 1]")
            return
        why = self.core.may_command(time.monotonic())
        if why:
            self.reject("cmd/gripper", why)
            return
        self.pub_gripper.publish(Float64(data=float(np.clip(v, 0.0, 1.0))))

    def _on_estop_topic(self, msg: Bool) -> None:
        if msg.data:
            self._engage("estop topic")
        elif self.core.estop.engaged:
            self.get_logger().warning(
                "estop topic sent false: release the e-stop with robot-rl-estop release (it needs the key)",
                throttle_duration_sec=2.0,
            )

    def _on_estop_srv(self, req: SetBool.Request, res: SetBool.Response) -> SetBool.Response:
        with self.lock:
            if req.data:
                self._engage("safety/estop service")
                res.success, res.message = True, "e-stop engaged"
            else:
                self.get_logger().warning("e-stop release over the safety/estop service refused (unauthenticated)")
                res.success, res.message = (
                    False,
                    (
                        "refused: release with robot-rl-estop release (signs the "
                        "safety/estop_challenge with the key in estop_key_file)"
                    ),
                )
        return res

    def _on_release(self, msg: String) -> None:
        ok, source = self.auth.check(msg.data)
        self.pub_challenge.publish(String(data=self.auth.challenge))
        if not ok:
            self.get_logger().error(f"e-stop release refused: {source}")
            return
        was = self.core.release()
        self.pub_estopped.publish(Bool(data=False))
        self.get_logger().warning(
            f"e-stop released by {source}" if was else f"e-stop release by {source} (it was not engaged)"
        )

    def _engage(self, source: str) -> None:
        new, out = self.core.engage(source, self._clock_ns())
        self._untraced = None
        if new:
            self.get_logger().error(f"E-STOP engaged by {source}: holding the measured pose, refusing commands")
        self._publish(out)
        self.pub_estopped.publish(Bool(data=True))

    async def _on_reset(self, req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        """Reset through the driver (a coroutine: the executor keeps serving the other callbacks meanwhile)."""
        try:
            return await self._reset(res)
        except Exception as e:  # noqa: BLE001 - answer the caller, never leave it waiting
            self.get_logger().error(f"reset failed: {type(e).__name__}: {e}")
            res.success, res.message = False, f"reset failed: {type(e).__name__}: {e}"
            return res

    async def _reset(self, res: Trigger.Response) -> Trigger.Response:
        with self.lock:
            if self.core.estop.engaged:
                res.success, res.message = False, f"refused: e-stop engaged ({self.core.estop.reason})"
                return res
            call_ns = self.core.now(self._clock_ns())
        deadline = time.monotonic() + self.service_timeout
        while not self.driver_reset.service_is_ready():
            if time.monotonic() > deadline:
                res.success, res.message = False, f"driver reset service {self.driver_reset.srv_name} not available"
                return res
            await _sleep(self, 0.02)
        fut = self.driver_reset.call_async(Trigger.Request())
        while not fut.done() and time.monotonic() < deadline:
            await _sleep(self, 0.005)
        if not fut.done():
            fut.cancel()
            res.success, res.message = False, f"driver reset timed out after {self.service_timeout} s"
            return res
        out = fut.result()
        with self.lock:
            self.core.after_reset(call_ns)
            self._untraced = None
        res.success, res.message = bool(out.success), f"driver: {out.message}"
        return res

    def _tick(self) -> None:
        mono = time.monotonic()
        change = self.core.update_hold(mono)
        if change is not None:
            old, reason = change
            if reason:
                self._untraced = None  # a hold drops the commands in flight: no output answers them
                self.get_logger().warning(f"holding the arm: {reason}")
            else:
                self.get_logger().info("resumed: state fresh and commands arriving")
            self._publish_status(reason)
        self._publish(self.core.tick(self._clock_ns(), mono))

    def run(self) -> None:
        ex = SingleThreadedExecutor(context=self.context)
        ex.add_node(self)
        try:
            ex.spin()
        finally:
            ex.remove_node(self)


async def _sleep(node: SafetySupervisor, seconds: float) -> None:
    """Yield to the executor for about ``seconds`` (a one-shot timer's future)."""
    from rclpy.task import Future

    fut = Future()
    timer = node.create_timer(
        seconds, lambda: fut.set_result(True) if not fut.done() else None, callback_group=node._reset_group
    )
    try:
        await fut
    finally:
        node.destroy_timer(timer)


def main(argv: Sequence[str] | None = None) -> int:
    """``robot-rl-safety [--config configs/robot/sim.yaml] [--ros-args -p max_speed:=0.2 ...]``."""
    return run_node(SafetySupervisor, argv, "supervisor")


if __name__ == "__main__":
    raise SystemExit(main())
