"""A person's teleop device over ROS2: reads what ``robot-rl-teleop`` (:mod:`hw.nodes.teleop`) publishes.

:class:`RosTeleopDevice` is a :class:`~robot_rl.hil.devices.TeleopDevice`, so ``robot-rl train hil=teleop
teleop=ros2`` (``configs/teleop/ros2.yaml``: ``make_device("hw.ros_teleop:RosTeleopDevice", ...)``) and ``robot-rl
record device=ros2`` take the person's actions, marks and start/stop exactly as from a local keyboard, gamepad or
SpaceMouse, with the same ``is_intervention`` flags and store routing (:mod:`robot_rl.hil.intervention`).

* subscribes ``teleop/joy`` (``sensor_msgs/Joy``, layout :data:`hw.nodes.teleop.JOY_BUTTONS`), each message checked
  by :func:`hw.nodes.teleop.parse_joy` (right size, finite axes in [-1, 1]); a malformed one is logged and dropped;
* ``active``: the newest Joy says active and arrived at most ``stale_after`` s ago, or a Joy received since the last
  :meth:`~RosTeleopDevice.read` did (a tap between two reads still counts, as with the keyboard); the action is that
  Joy's. Ages are taken on this machine's monotonic clock at arrival (the two machines' clocks may differ), so a
  teleop node that dies or is cut off hands control back to the policy within ``stale_after``;
* marks: a mark counts on its button's rising edge (0 in the previous Joy, or the previous one stale, then 1); marks
  accumulate between two reads and each is reported once (``teleop/event`` carries the same marks and is not read);
* gripper: the device keeps its own belief, synced by the intervention wrapper (:meth:`sync_gripper`, :meth:`reset`)
  like every device, so a take-over never undoes the policy's grasp. The node's gripper entry is its own device's
  belief; when it changes in an active Joy (the person pressed a gripper input) the belief follows (> 0.5 closed,
  < -0.5 open). A toggle acts on the node's belief, so a toggle right after a take-over may need a second press;
  open / close inputs act at once;
* :meth:`reset` calls the node's ``teleop/reset`` (``std_srvs/Trigger``) without waiting, when the service is up;
  an answer that takes over ``service_timeout`` s is dropped with a warning;
* one rclpy context of its own, spun in a background thread; :meth:`close` stops it (safe twice).

With ``connect=False`` no ROS2 is touched: :meth:`feed` takes Joy fields directly (tests).
"""

from __future__ import annotations

import atexit
import itertools
import logging
import math
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from hw.nodes.teleop import parse_joy
from hw.ros_common import RejectLog, state_qos
from robot_rl.hil.devices import ActionLayout, DeviceState, TeleopDevice

CLOSED_THRESHOLD = 0.5  # gripper entry > 0.5 closes, < -0.5 opens (robot_rl/envs/contract.py)
_NODE_IDS = itertools.count()


class RosTeleopDevice(TeleopDevice):
    """Operator input from ``robot-rl-teleop`` over ROS2 (module docstring for the behaviour).

    Args:
        layout: the env's action layout; the Joy's axes must have ``layout.dim`` entries (the node's ``action_dim``).
        topic: the ``sensor_msgs/Joy`` topic.
        stale_after: s after its arrival that a Joy stops counting (> 0).
        reset_service: the node's ``std_srvs/Trigger`` reset service, called at each episode start ("" : none).
        service_timeout: s a reset call may stay unanswered before it is dropped with a warning (> 0).
        node_name: this device's ROS2 node name (a counter is appended after the first).
        connect: start ROS2 (False: no ROS2, feed :meth:`feed` yourself, e.g. in tests).

    Counters: ``received`` (valid Joys), ``rejected`` (malformed Joys dropped).
    """

    name = "ros2"

    def __init__(
        self,
        layout: ActionLayout,
        topic: str = "teleop/joy",
        stale_after: float = 0.3,
        reset_service: str = "teleop/reset",
        service_timeout: float = 1.0,
        node_name: str = "robot_rl_teleop_device",
        connect: bool = True,
    ):
        super().__init__(layout)
        if not str(topic).strip():
            raise ValueError("ros2 teleop: topic must be a topic name, e.g. teleop/joy")
        for key, value in (("stale_after", stale_after), ("service_timeout", service_timeout)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"ros2 teleop: {key}={value!r} must be a number of seconds > 0")
        self.topic, self.reset_service = str(topic), str(reset_service or "")
        self.stale_after, self.service_timeout = float(stale_after), float(service_timeout)
        self.received = self.rejected = 0
        self._lock = threading.Lock()
        self._newest: tuple[DeviceState, float] | None = None  # newest valid Joy and its arrival (monotonic s)
        self._latched: tuple[DeviceState, float] | None = None  # newest active Joy since the last read
        self._events: set[str] = set()
        self._remote_gripper: float | None = None  # the node's gripper entry in the previous Joy
        self._log: Any = logging.getLogger(__name__)
        self._reject = RejectLog(self._log)
        self._node = self._ctx = self._ex = self._client = self._thread = None
        self._pending: tuple[Any, float] | None = None  # reset call in flight and when it was sent (monotonic s)
        self._running = False
        self._warned_no_service = False
        self._atexit: Any = None
        if connect:
            self._start_ros(node_name)

    # ------------------------------------------------------------------------------------------------ input
    def feed(self, axes: Sequence[float], buttons: Sequence[int], t: float | None = None) -> DeviceState | None:
        """One received Joy (thread-safe; the subscription calls it). ``t``: its arrival time (``time.monotonic``
        s; None: now). Returns the parsed state, or None when the Joy is malformed (logged, counted, dropped)."""
        try:
            state = parse_joy(axes, buttons, self.layout.dim)
        except ValueError as e:
            with self._lock:
                self.rejected += 1
                self._reject(self.topic, str(e))
            return None
        t = time.monotonic() if t is None else float(t)
        with self._lock:
            self.received += 1
            prev = self._newest
            held = prev[0].events if prev is not None and t - prev[1] <= self.stale_after else frozenset()
            self._events |= state.events - held
            if self.layout.gripper:
                g = float(state.action[-1])
                if state.active and self._remote_gripper is not None and g != self._remote_gripper:
                    if g > CLOSED_THRESHOLD:
                        self._gripper.closed = True
                    elif g < -CLOSED_THRESHOLD:
                        self._gripper.closed = False
                self._remote_gripper = g
            self._newest = (state, t)
            if state.active:
                self._latched = (state, t)
        return state

    def read(self) -> DeviceState:
        now = time.monotonic()
        self._check_reset_call(now)
        with self._lock:
            drive = None
            for got in (self._newest, self._latched):
                if got is not None and got[0].active and now - got[1] <= self.stale_after:
                    drive = got[0]
                    break
            self._latched = None
            events, self._events = self._events, set()
            motion = np.zeros(6)
            if drive is not None:
                n = 6 if self.layout.rotation else 3
                motion[:n] = drive.action[:n]
            return self._state(motion, drive is not None, events)

    def reset(self) -> None:
        """Episode start: gripper belief open, a tap from before forgotten, and the node's ``teleop/reset`` called."""
        with self._lock:
            super().reset()
            self._latched = None
        self._call_reset()

    def sync_gripper(self, closed: bool | None) -> None:
        with self._lock:
            super().sync_gripper(closed)

    @property
    def help(self) -> str:
        return (
            f"ros2: the person's device on robot-rl-teleop via {self.topic} (sensor_msgs/Joy, idle after "
            f"{self.stale_after:g} s without one)"
        )

    # -------------------------------------------------------------------------------------------------- ROS
    def _start_ros(self, node_name: str) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions
        from sensor_msgs.msg import Joy
        from std_srvs.srv import Trigger

        self._trigger = Trigger
        self._ctx = rclpy.Context()
        # no signal handlers: Ctrl+C stays the trainer's / recorder's to handle
        rclpy.init(args=[], context=self._ctx, signal_handler_options=SignalHandlerOptions.NO)
        try:
            n = next(_NODE_IDS)
            self._node = rclpy.create_node(node_name if n == 0 else f"{node_name}_{n}", context=self._ctx)
            self._log = self._node.get_logger()
            self._reject = RejectLog(self._log)
            self._node.create_subscription(Joy, self.topic, lambda msg: self.feed(msg.axes, msg.buttons), state_qos(50))
            if self.reset_service:
                self._client = self._node.create_client(Trigger, self.reset_service)
            self._ex = SingleThreadedExecutor(context=self._ctx)
            self._ex.add_node(self._node)
        except Exception:
            self._shutdown_ros()
            raise
        self._running = True
        self._thread = threading.Thread(target=self._spin, daemon=True, name="ros_teleop_device")
        self._thread.start()
        # an owner that never closes the device (robot-rl train leaves its env open) must not leave the spinning
        # thread inside rclpy at interpreter exit: that aborts the process
        ref = weakref.ref(self)
        self._atexit = lambda: (dev := ref()) is not None and dev.close()
        atexit.register(self._atexit)
        self._log.info(f"teleop over ROS2: listening on {self._node.resolve_topic_name(self.topic)}")

    def _spin(self) -> None:
        ctx, ex = self._ctx, self._ex
        while self._running and ctx.ok():
            try:
                ex.spin_once(timeout_sec=0.05)
            except Exception as e:  # noqa: BLE001 - shutdown races end the loop; a callback error is logged
                if not self._running or not ctx.ok():
                    return
                self._log.error(f"teleop device: {type(e).__name__}: {e}", throttle_duration_sec=2.0)

    def _call_reset(self) -> None:
        """Ask the node to reset its device, without waiting for the answer (:meth:`_check_reset_call` reads it)."""
        if self._client is None or not self._running:
            return
        self._check_reset_call(time.monotonic())
        if self._pending is not None:
            return  # the previous call is still within service_timeout
        if not self._client.service_is_ready():
            if not self._warned_no_service:
                self._warned_no_service = True
                self._log.info(
                    f"teleop over ROS2: no {self.reset_service} service (yet); the teleop node's gripper "
                    "belief is not reset at episode start"
                )
            return
        self._pending = (self._client.call_async(self._trigger.Request()), time.monotonic())

    def _check_reset_call(self, now: float) -> None:
        if self._pending is None:
            return
        fut, sent = self._pending
        if fut.done():
            self._pending = None
            result = fut.result()
            if result is not None and not result.success:
                self._log.warning(f"teleop over ROS2: {self.reset_service} failed: {result.message}")
        elif now - sent > self.service_timeout:
            self._pending = None
            fut.cancel()
            self._log.warning(
                f"teleop over ROS2: {self.reset_service} did not answer within {self.service_timeout:g} s; dropped"
            )

    def _shutdown_ros(self) -> None:
        if self._ex is not None:
            try:
                self._ex.shutdown(timeout_sec=1.0)
            except Exception:  # noqa: BLE001 - already shut down
                pass
        if self._node is not None:
            self._node.destroy_node()
        if self._ctx is not None and self._ctx.ok():
            import rclpy

            rclpy.shutdown(context=self._ctx)
        self._node = self._ex = self._client = self._ctx = None

    def close(self) -> None:
        """Stop the spinning thread and the ROS2 context. Safe to call twice."""
        self._running = False
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        if self._atexit is not None:
            atexit.unregister(self._atexit)
            self._atexit = None
        self._shutdown_ros()
