"""Device names -> device classes, and :func:`make_device`, which builds the device a config names (a
registered name, or ``"module:Class"`` of a :class:`TeleopDevice` defined elsewhere, e.g. over ROS2)."""

from __future__ import annotations

import inspect
from typing import Any

from robot_rl.hil.devices.base import ActionLayout, DeviceError, TeleopDevice
from robot_rl.hil.devices.combined import CombinedDevice
from robot_rl.hil.devices.gamepad import GamepadDevice
from robot_rl.hil.devices.keyboard import KeyboardDevice
from robot_rl.hil.devices.scripted import ScriptedDevice
from robot_rl.hil.devices.spacemouse import SpaceMouseDevice

DEVICE_CLASSES: dict[str, type[TeleopDevice]] = {
    "keyboard": KeyboardDevice,
    "gamepad": GamepadDevice,
    "spacemouse": SpaceMouseDevice,
    "scripted": ScriptedDevice,
}
DEVICES = tuple(DEVICE_CLASSES)


def make_device(name: str, env: Any, **cfg: Any) -> TeleopDevice:
    """Build teleop device ``name`` (keyboard, gamepad, spacemouse, scripted) for ``env``'s action layout.

    ``name`` may also be ``"module:Class"``: a :class:`TeleopDevice` subclass defined outside the learning core and
    built as ``Class(layout, **cfg)``, e.g. ``hw.ros_teleop:RosTeleopDevice`` (a person's device over ROS2,
    ``configs/teleop/ros2.yaml``), so this module names no ROS code.

    ``cfg``: the device's settings (its constructor's keyword arguments; ``configs/teleop/<name>.yaml``). The
    SpaceMouse also takes ``keyboard_events`` (default True): marks from the keyboard, its own buttons stay on the
    gripper. Raises ValueError for an unknown device or setting, :class:`DeviceError` when it cannot be used here.
    """
    if ":" in name:
        cls = _import_device(name)
    elif name in DEVICE_CLASSES:
        cls = DEVICE_CLASSES[name]
    else:
        raise ValueError(
            f"unknown teleop device {name!r}; valid choices: {', '.join(DEVICES)} (or module:Class of a TeleopDevice)"
        )
    keyboard_events = bool(cfg.pop("keyboard_events", True)) if name == "spacemouse" else False
    valid = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "layout", "env")]
    if bad := sorted(set(cfg) - set(valid)):
        extra = ", keyboard_events" if name == "spacemouse" else ""
        raise ValueError(f"device {name} has no setting {', '.join(bad)}; valid: {', '.join(valid)}{extra}")
    if name == "scripted":
        return ScriptedDevice(env, **cfg)
    layout = ActionLayout.from_env(env)
    dev = cls(layout, **cfg)
    if keyboard_events:
        try:
            keyboard = KeyboardDevice(layout)
        except DeviceError as e:
            dev.close()
            raise DeviceError(
                f"spacemouse: marks come from the keyboard, which is unavailable ({e}); or set "
                "device.keyboard_events=false and map marks to buttons in device.buttons"
            ) from None
        return CombinedDevice(dev, [keyboard])
    return dev


def _import_device(spec: str) -> type[TeleopDevice]:
    """The :class:`TeleopDevice` subclass ``"module:Class"`` names; ValueError when there is none."""
    import importlib

    module, _, attr = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"teleop device {spec!r}: cannot import it ({type(e).__name__}: {e})") from None
    if not (isinstance(cls, type) and issubclass(cls, TeleopDevice)):
        raise ValueError(f"teleop device {spec!r} is not a TeleopDevice subclass")
    return cls
