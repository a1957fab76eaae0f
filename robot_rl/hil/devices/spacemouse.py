"""The 3Dconnexion SpaceMouse as a teleop device (raw HID through hidapi): HID report decoding, device discovery
and the cap -> action mapping."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from robot_rl.hil.devices.base import (
    EVENTS,
    GRIPPER_COMMANDS,
    INSTALL_HINT,
    MOTION_AXES,
    ActionLayout,
    DeviceError,
    DeviceState,
    TeleopDevice,
    _axis_sources,
    _command_map,
    apply_deadzone,
    parse_source,
)

SPACEMOUSE_VENDORS = (0x256F, 0x046D)  # 3Dconnexion; older models carry Logitech's vendor id
# 3Dconnexion products under Logitech's vendor id (every other 0x046d product is a Logitech mouse or keyboard).
SPACEMOUSE_LOGITECH_PIDS = (
    0xC603,
    0xC605,
    0xC606,
    0xC621,
    0xC623,
    0xC625,
    0xC626,
    0xC627,
    0xC628,
    0xC629,
    0xC62B,
    0xC640,
)
SPACEMOUSE_RAW = ("x", "y", "z", "rx", "ry", "rz")
# Raw frame: x = cap pushed right, y = pulled toward the operator, z = pushed down; rotations about those axes.
# With the operator behind the robot: +x (away) = -y, +y (left) = -x, +z (up) = -z, rotations alike.
SPACEMOUSE_AXES: dict[str, str] = {"x": "-y", "y": "-x", "z": "-z", "roll": "-ry", "pitch": "-rx", "yaw": "-rz"}
SPACEMOUSE_BUTTONS: dict[str, int] = {"gripper_close": 0, "gripper_open": 1}
_SPACEMOUSE_BUTTON_COMMANDS = GRIPPER_COMMANDS + EVENTS


def parse_spacemouse_report(data: bytes | Sequence[int]) -> dict[str, Any]:
    """Decode one SpaceMouse HID input report (first byte = report id).

    Report 1: translation x, y, z as little-endian int16 (6 bytes); newer models append rotation rx, ry, rz in the
    same report (12 bytes). Report 2: rotation (6 bytes). Report 3: button bitmask (little-endian, bit i = button i).
    Returns a dict with the parts present: "translation" / "rotation" int (3,) raw counts, "buttons" int mask; empty
    for other or short reports.
    """
    b = bytes(bytearray(data))
    if not b:
        return {}
    rid, body = b[0], b[1:]
    out: dict[str, Any] = {}
    if rid == 1 and len(body) >= 6:
        out["translation"] = np.frombuffer(body[:6], "<i2").astype(np.int64)
        if len(body) >= 12:
            out["rotation"] = np.frombuffer(body[6:12], "<i2").astype(np.int64)
    elif rid == 2 and len(body) >= 6:
        out["rotation"] = np.frombuffer(body[:6], "<i2").astype(np.int64)
    elif rid == 3 and len(body) >= 1:
        out["buttons"] = int.from_bytes(body, "little")
    return out


class SpaceMouseDevice(TeleopDevice):
    """3Dconnexion SpaceMouse through hidapi (raw HID; no 3Dconnexion driver or spacenavd needed).

    Default map (``SPACEMOUSE_AXES`` / ``SPACEMOUSE_BUTTONS``): push the cap away from you = +x, left = +y, lift =
    +z; tilt/twist the cap for roll, pitch, yaw on rotation tasks; left button closes the gripper, right button
    opens it. Marks (start, success, ...) come from the keyboard by default (``make_device(...,
    keyboard_events=True)``), or map them to buttons of models that have more.

    Args:
        layout: the env's action layout.
        deadzone: fraction of ``full_scale`` below which an axis reads 0; the rest is rescaled to [0, 1].
        full_scale: raw counts at full deflection (about 350 on current models).
        translation_scale / rotation_scale: gain on the normalised translation / rotation, > 0 (clipped to
            [-1, 1] after it).
        axes: motion axis -> signed raw axis (x, y, z, rx, ry, rz), e.g. {"x": "-y"}; flip signs to suit where the
            operator stands.
        buttons: command (gripper_close/open/toggle, start, success, failure, discard, quit) -> button index.
        path: hidraw path to open (default: the first SpaceMouse found).
        connect: open the device now (False: feed :meth:`feed` yourself, e.g. in tests).
    """

    name = "spacemouse"

    def __init__(
        self,
        layout: ActionLayout,
        deadzone: float = 0.1,
        full_scale: float = 350.0,
        translation_scale: float = 1.0,
        rotation_scale: float = 1.0,
        axes: Mapping[str, str | None] | None = None,
        buttons: Mapping[str, int | None] | None = None,
        path: str | None = None,
        connect: bool = True,
    ):
        super().__init__(layout)
        if not (0 <= deadzone < 1 and full_scale > 0 and translation_scale > 0 and rotation_scale > 0):
            raise ValueError("spacemouse: need 0 <= deadzone < 1 and full_scale, translation_scale, rotation_scale > 0")
        self.axes = _axis_sources(SPACEMOUSE_AXES, axes, partial(parse_source, valid=SPACEMOUSE_RAW), "spacemouse")
        buttons = _command_map(SPACEMOUSE_BUTTONS, buttons, _SPACEMOUSE_BUTTON_COMMANDS, "spacemouse buttons")
        self.buttons = {c: int(i) for c, i in buttons.items() if i is not None}
        self.deadzone, self.full_scale = float(deadzone), float(full_scale)
        self.gains = np.array([translation_scale] * 3 + [rotation_scale] * 3, np.float64)
        self._raw = np.zeros(6, np.int64)  # last reported counts; the device reports only changes
        self._mask = 0
        self._pressed_mask = 0
        self._events: set[str] = set()
        self._touched = False
        self._hid = _open_spacemouse(path) if connect else None

    def feed(self, report: bytes | Sequence[int]) -> None:
        """Take one raw HID report (see :func:`parse_spacemouse_report`)."""
        parts = parse_spacemouse_report(report)
        if "translation" in parts:
            self._raw[:3] = parts["translation"]
        if "rotation" in parts:
            self._raw[3:] = parts["rotation"]
        if "buttons" in parts:
            mask = parts["buttons"]
            down = mask & ~self._mask
            self._mask = mask
            for command, i in self.buttons.items():
                if down >> i & 1:
                    self._touched = True
                    if command in GRIPPER_COMMANDS:
                        self._gripper.apply(command)
                    else:
                        self._events.add(command)

    def state(self) -> DeviceState:
        """Map the reports fed so far to a state and clear the marks (what :meth:`read` returns)."""
        norm = apply_deadzone(self._raw / self.full_scale, self.deadzone) * self.gains
        values = dict(zip(SPACEMOUSE_RAW, norm))
        motion = np.zeros(6)
        for i, axis in enumerate(MOTION_AXES):
            if axis in self.axes:
                sign, src = self.axes[axis]
                motion[i] = sign * values[src]
        held = any(self._mask >> i & 1 for c, i in self.buttons.items() if c in GRIPPER_COMMANDS)
        active = self._touched or held or bool(np.any(motion[: 6 if self.layout.rotation else 3]))
        events, self._events, self._touched = self._events, set(), False
        return self._state(motion, active, events)

    def read(self) -> DeviceState:
        if self._hid is None:
            raise DeviceError("spacemouse: not connected (built with connect=False; call feed() and state())")
        for _ in range(1024):  # drain what arrived since the last control step
            try:
                report = self._hid.read(64)
            except OSError as e:
                raise DeviceError(f"spacemouse: read failed ({e}): was it unplugged?") from None
            if not report:
                break
            self.feed(report)
        return self.state()

    @property
    def help(self) -> str:
        names = {0: "left", 1: "right"}
        grip = ", ".join(
            f"{names.get(i, f'button {i}')} button {c.removeprefix('gripper_')}"
            for c, i in self.buttons.items()
            if c in GRIPPER_COMMANDS
        )
        marks = ", ".join(f"{names.get(i, f'button {i}')} button {c}" for c, i in self.buttons.items() if c in EVENTS)
        return (
            "spacemouse: move/tilt the cap"
            + (f", {grip}" if grip and self.layout.gripper else "")
            + (f" | {marks}" if marks else "")
        )

    def close(self) -> None:
        if self._hid is not None:
            self._hid.close()
            self._hid = None


def is_spacemouse(info: Mapping[str, Any]) -> bool:
    """True for an ``hid.enumerate()`` entry that is a 3Dconnexion device."""
    vid, pid = int(info.get("vendor_id", 0)), int(info.get("product_id", 0))
    name = str(info.get("product_string") or "") + str(info.get("manufacturer_string") or "")
    if vid == 0x256F:
        return True
    return vid == 0x046D and (
        pid in SPACEMOUSE_LOGITECH_PIDS or "3dconnexion" in name.lower() or "space" in name.lower()
    )


def _open_spacemouse(path: str | None) -> Any:
    try:
        import hid
    except ModuleNotFoundError:
        raise DeviceError(
            f"spacemouse: the hidapi package is missing: {INSTALL_HINT} (provides the hid module)"
        ) from None
    except ImportError as e:
        raise DeviceError(
            f"spacemouse: hidapi failed to load ({e}); on Linux install libhidapi-hidraw0 or reinstall: {INSTALL_HINT}"
        ) from None
    if not hasattr(hid, "device"):
        raise DeviceError(f"spacemouse: the imported hid module is not hidapi's (pip uninstall hid; {INSTALL_HINT})")
    if path is None:
        found = [d for d in hid.enumerate() if is_spacemouse(d)]
        if not found:
            raise DeviceError(
                "spacemouse: no 3Dconnexion SpaceMouse found (USB vendor 0x256f or 0x046d): plug it in "
                "(wireless: plug in the receiver and switch the mouse on); on Linux the hidraw node "
                'must be readable: add a udev rule, e.g. KERNEL=="hidraw*", ATTRS{idVendor}=="256f", '
                'MODE="0666"'
            )
        # The multi-axis controller interface (usage page 1, usage 8) when the device lists several.
        found.sort(key=lambda d: (d.get("usage_page"), d.get("usage")) != (1, 8))
        path = found[0]["path"]
    dev = hid.device()
    try:
        dev.open_path(path if isinstance(path, bytes) else str(path).encode())
    except OSError as e:
        raise DeviceError(
            f"spacemouse: cannot open {path!r} ({e}): check /dev/hidraw* permissions (udev rule, "
            "see above) and that spacenavd or another program is not holding it"
        ) from None
    dev.set_nonblocking(1)
    return dev
