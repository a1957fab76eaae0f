"""Human in the loop: teleop devices (keyboard, gamepad, SpaceMouse, scripted expert) behind one interface."""

from robot_rl.hil.devices import (
    DEVICES,
    EVENTS,
    ActionLayout,
    DeviceError,
    DeviceState,
    GamepadDevice,
    KeyboardDevice,
    ScriptedDevice,
    SpaceMouseDevice,
    TeleopDevice,
    make_device,
)

__all__ = [
    "DEVICES",
    "EVENTS",
    "ActionLayout",
    "DeviceError",
    "DeviceState",
    "GamepadDevice",
    "KeyboardDevice",
    "ScriptedDevice",
    "SpaceMouseDevice",
    "TeleopDevice",
    "make_device",
]
