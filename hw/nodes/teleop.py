"""``robot-rl-teleop``: a teleop device (:mod:`robot_rl.hil.devices`: keyboard, gamepad, SpaceMouse) as a ROS2
intervention topic.

Publishes at ``rate_hz``:

* ``teleop/joy`` (``sensor_msgs/Joy``): ``axes`` = the device's action (float32 in [-1, 1], the env's action
  layout: x, y, z, [roll, pitch, yaw], [gripper]); ``buttons`` = :data:`JOY_BUTTONS`: ``active`` (the operator is
  intervening now), then one per mark (start, success, failure, discard, quit), 1 on the poll where it was pressed;
* ``teleop/event`` (``std_msgs/String``): each mark by name, once, when pressed (success / failure marks etc.).

Service ``teleop/reset`` (``std_srvs/Trigger``): the device's episode start (gripper belief back to open).
:func:`parse_joy` turns a received Joy back into a :class:`~robot_rl.hil.devices.DeviceState`, validated.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from rclpy.node import Node
from sensor_msgs.msg import Joy
from std_msgs.msg import String
from std_srvs.srv import Trigger

from hw.ros_common import declare, run_node, state_qos
from robot_rl.hil.devices import DEVICE_CLASSES, EVENTS, ActionLayout, DeviceState, TeleopDevice, make_device

HUMAN_DEVICES = tuple(name for name, cls in DEVICE_CLASSES.items() if cls.is_human)  # what a person holds

JOY_BUTTONS = ("active", *EVENTS)


def joy_fields(state: DeviceState) -> tuple[list[float], list[int]]:
    """``(axes, buttons)`` of a ``sensor_msgs/Joy`` for one device poll (layout: :data:`JOY_BUTTONS`)."""
    axes = [float(v) for v in np.asarray(state.action, np.float32)]
    buttons = [int(bool(state.active))] + [int(e in state.events) for e in EVENTS]
    return axes, buttons


def parse_joy(axes: Sequence[float], buttons: Sequence[int], action_dim: int) -> DeviceState:
    """Inverse of :func:`joy_fields`; raises ValueError for a Joy of the wrong size or with non-finite or
    out-of-range axes (so a malformed intervention never reaches the env)."""
    a = np.asarray(axes, np.float64)
    if a.shape != (action_dim,):
        raise ValueError(f"joy has {a.size} axes, expected the action's {action_dim}")
    if not np.all(np.isfinite(a)) or np.any(np.abs(a) > 1.0 + 1e-6):
        raise ValueError(f"joy axes {a.tolist()} must be finite and in [-1, 1]")
    if len(buttons) != len(JOY_BUTTONS):
        raise ValueError(f"joy has {len(buttons)} buttons, expected {len(JOY_BUTTONS)} {list(JOY_BUTTONS)}")
    events = frozenset(e for e, b in zip(EVENTS, buttons[1:]) if b)
    return DeviceState(np.clip(a, -1, 1).astype(np.float32), bool(buttons[0]), events)


class TeleopNode(Node):
    """Polls a teleop device at ``rate_hz`` and publishes what the operator does. ``device``: an already built
    :class:`~robot_rl.hil.devices.TeleopDevice` (tests), else built from the ``device`` / ``device_config``
    parameters."""

    def __init__(
        self,
        parameter_overrides: Sequence[Any] | None = None,
        device: TeleopDevice | None = None,
        node_name: str = "teleop",
    ):
        super().__init__(node_name, parameter_overrides=list(parameter_overrides or []))
        name = declare(self, "device", "keyboard", "teleop device", choices=HUMAN_DEVICES)
        cfg_path = declare(
            self, "device_config", "", "device settings YAML (configs/teleop/<device>.yaml); empty: defaults"
        )
        dim = declare(self, "action_dim", 3, "env action size: 3 xyz, 4 +gripper, 6 +rotation, 7 both", lo=3, hi=7)
        rate = declare(self, "rate_hz", 10.0, "poll / publish rate (Hz), normally the control rate", lo=1.0, hi=500.0)
        self.frame_id = declare(self, "frame_id", "teleop", "header frame of the Joy messages")
        if device is None:
            ActionLayout.from_dim(dim)  # validates 3/4/6/7 with a clear error
            cfg: dict[str, Any] = {}
            if cfg_path:
                import yaml

                with open(cfg_path) as f:
                    cfg = {k: v for k, v in (yaml.safe_load(f) or {}).items() if k != "name"}
            env = types.SimpleNamespace(action_space=spaces.Box(-1.0, 1.0, (dim,), np.float32))
            device = make_device(name, env, **cfg)
        self.device = device
        self.pub_joy = self.create_publisher(Joy, "teleop/joy", state_qos(10))
        self.pub_event = self.create_publisher(String, "teleop/event", state_qos(10))
        self.create_service(Trigger, "teleop/reset", self._on_reset)
        self.create_timer(1.0 / rate, self.poll)
        self.get_logger().info(
            f"teleop {getattr(device, 'name', type(device).__name__)} at {rate:g} Hz\n{getattr(device, 'help', '')}"
        )

    def poll(self) -> DeviceState | None:
        """Read the device once and publish; a device error is logged, not raised."""
        try:
            state = self.device.read()
        except Exception as e:  # noqa: BLE001 - a flaky device must not kill the node
            self.get_logger().error(f"teleop device read failed: {type(e).__name__}: {e}", throttle_duration_sec=2.0)
            return None
        msg = Joy()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.frame_id
        msg.axes, msg.buttons = joy_fields(state)
        self.pub_joy.publish(msg)
        for e in EVENTS:
            if e in state.events:
                self.pub_event.publish(String(data=e))
        return state

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.device.reset()
        response.success, response.message = True, "teleop device reset"
        return response

    def close(self) -> None:
        self.device.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``robot-rl-teleop [--config configs/robot/sim.yaml] [--ros-args -p device:=spacemouse -p action_dim:=4]``."""
    return run_node(TeleopNode, argv, "teleop")


if __name__ == "__main__":
    raise SystemExit(main())
