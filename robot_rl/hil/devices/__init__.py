"""Teleop devices: keyboard, gamepad, 3Dconnexion SpaceMouse and the scripted expert, behind one interface.

:mod:`.base` holds the interface (:class:`TeleopDevice`, :class:`DeviceState`, :class:`ActionLayout`), each device has
its own module, and :mod:`.registry` maps device names to classes (:func:`make_device`). Real devices import their
library lazily and raise :class:`DeviceError` naming the fix; their raw-input -> action mapping is a pure method, so
tests drive it with synthetic input and no library or hardware.
"""

from robot_rl.hil.devices.base import (
    EVENTS,
    GRIPPER_COMMANDS,
    INSTALL_HINT,
    MOTION_AXES,
    ActionLayout,
    DeviceError,
    DeviceState,
    TeleopDevice,
    _check_commands,
    _Gripper,
    apply_deadzone,
    parse_source,
)
from robot_rl.hil.devices.combined import CombinedDevice
from robot_rl.hil.devices.gamepad import (
    _GAMEPAD_BUTTON_COMMANDS,
    GAMEPAD_AXES,
    GAMEPAD_BUTTONS,
    GamepadDevice,
    _parse_pad_source,
)
from robot_rl.hil.devices.keyboard import (
    _KEY_ALIASES,
    _KEYBOARD_COMMANDS,
    KEYBOARD_KEYS,
    KeyboardDevice,
    _pynput_name,
    _start_pynput,
    normalize_key,
)
from robot_rl.hil.devices.registry import DEVICE_CLASSES, DEVICES, _import_device, make_device
from robot_rl.hil.devices.scripted import ScriptedDevice
from robot_rl.hil.devices.spacemouse import (
    _SPACEMOUSE_BUTTON_COMMANDS,
    SPACEMOUSE_AXES,
    SPACEMOUSE_BUTTONS,
    SPACEMOUSE_LOGITECH_PIDS,
    SPACEMOUSE_RAW,
    SPACEMOUSE_VENDORS,
    SpaceMouseDevice,
    _open_spacemouse,
    is_spacemouse,
    parse_spacemouse_report,
)

__all__ = [
    "DEVICES",
    "DEVICE_CLASSES",
    "EVENTS",
    "GAMEPAD_AXES",
    "GAMEPAD_BUTTONS",
    "GRIPPER_COMMANDS",
    "INSTALL_HINT",
    "KEYBOARD_KEYS",
    "MOTION_AXES",
    "SPACEMOUSE_AXES",
    "SPACEMOUSE_BUTTONS",
    "SPACEMOUSE_LOGITECH_PIDS",
    "SPACEMOUSE_RAW",
    "SPACEMOUSE_VENDORS",
    "ActionLayout",
    "CombinedDevice",
    "DeviceError",
    "DeviceState",
    "GamepadDevice",
    "KeyboardDevice",
    "ScriptedDevice",
    "SpaceMouseDevice",
    "TeleopDevice",
    "apply_deadzone",
    "is_spacemouse",
    "make_device",
    "normalize_key",
    "parse_source",
    "parse_spacemouse_report",
]
