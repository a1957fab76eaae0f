"""A gamepad as a teleop device (pygame's joystick API, no window): the Xbox-layout default map, stick and hat
sources, and the snapshot -> action mapping."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence

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
)

# Xbox-style pad as the Linux xpad / SDL joystick API numbers it: axes 0 LX, 1 LY, 2 LT, 3 RX, 4 RY, 5 RT (sticks
# -1 left/up .. +1 right/down); buttons 0 A, 1 B, 2 X, 3 Y, 4 LB, 5 RB, 6 Back, 7 Start; hat 0 = D-pad (+y up).
GAMEPAD_AXES: dict[str, str] = {"x": "-a1", "y": "-a0", "z": "-a4", "roll": "h0x", "pitch": "h0y", "yaw": "-a3"}
GAMEPAD_BUTTONS: dict[str, int] = {
    "gripper_toggle": 0,
    "gripper_open": 4,
    "gripper_close": 5,
    "start": 7,
    "success": 3,
    "failure": 2,
    "discard": 1,
    "quit": 6,
}
_GAMEPAD_BUTTON_COMMANDS = GRIPPER_COMMANDS + EVENTS + ("precision",)


class GamepadDevice(TeleopDevice):
    """Gamepad teleop through pygame's joystick API (SDL, no window: ``SDL_VIDEODRIVER=dummy``).

    Default map (Xbox layout, ``GAMEPAD_AXES`` / ``GAMEPAD_BUTTONS``): left stick x/y (push up = +x away from the
    operator, left = +y), right stick up/down = z, right stick left/right = yaw, D-pad = roll (left/right) and pitch
    (up/down) on rotation tasks; A toggles the gripper, RB closes, LB opens; Start starts an episode, Y marks
    success, X failure, B discards, Back quits.

    Args:
        layout: the env's action layout.
        index: which joystick (pygame index) to use.
        deadzone: stick deadzone, fraction of full deflection in [0, 1); the rest is rescaled to [0, 1].
        speed: action magnitude at full deflection, in (0, 1].
        precision: factor on ``speed`` while the ``precision`` button (if mapped) is held.
        axes: motion axis (x, y, z, roll, pitch, yaw) -> source: "a<i>" stick/trigger axis i, "h<i>x" / "h<i>y" hat
            i; a leading "-" inverts. Omitted or null axes stay 0.
        buttons: command (gripper_close/open/toggle, start, success, failure, discard, quit, precision) -> button
            index (or a list of indices).
        connect: open the joystick now (False: feed :meth:`update` yourself, e.g. in tests).
    """

    name = "gamepad"

    def __init__(
        self,
        layout: ActionLayout,
        index: int = 0,
        deadzone: float = 0.15,
        speed: float = 1.0,
        precision: float = 0.3,
        axes: Mapping[str, str | None] | None = None,
        buttons: Mapping[str, int | Sequence[int] | None] | None = None,
        connect: bool = True,
    ):
        super().__init__(layout)
        if not (0 <= deadzone < 1 and 0 < speed <= 1 and 0 < precision <= 1):
            raise ValueError(
                f"gamepad: need 0 <= deadzone < 1, 0 < speed, precision <= 1; got {deadzone}, {speed}, {precision}"
            )
        self.axes = _axis_sources(GAMEPAD_AXES, axes, _parse_pad_source, "gamepad")
        buttons = _command_map(GAMEPAD_BUTTONS, buttons, _GAMEPAD_BUTTON_COMMANDS, "gamepad buttons")
        self.buttons: dict[str, tuple[int, ...]] = {}
        for command, idx in buttons.items():
            if idx is None:
                continue
            self.buttons[command] = (
                (int(idx),) if isinstance(idx, (int, np.integer, str)) else tuple(int(i) for i in idx)
            )
        self.deadzone, self.speed, self.precision = float(deadzone), float(speed), float(precision)
        self._prev_buttons: set[int] = set()
        self._events: set[str] = set()
        self._joystick = None
        self._pygame = None
        if connect:
            self._connect(int(index))

    def update(
        self,
        axes: Sequence[float],
        buttons: Sequence[bool | int],
        hats: Sequence[Sequence[int]] = (),
        pressed: Iterable[int] | None = None,
    ) -> DeviceState:
        """Map one snapshot of the pad to a state (pure apart from edge tracking and the gripper belief).

        ``axes``: stick/trigger values in [-1, 1] by index; ``buttons``: held flags by index; ``hats``: (x, y) in
        {-1, 0, 1} by index (+y up); ``pressed``: button indices that went down since the previous snapshot (None:
        derived from the change in ``buttons``, which misses a press shorter than the poll period).
        """
        held = {i for i, b in enumerate(buttons) if b}
        down = (held - self._prev_buttons) if pressed is None else set(pressed)
        self._prev_buttons = held
        events = set(self._events)
        self._events.clear()
        touched = False
        for command, ids in self.buttons.items():
            if command == "precision":
                continue
            if any(i in down for i in ids):
                touched = True
                if command in GRIPPER_COMMANDS:
                    self._gripper.apply(command)
                else:
                    events.add(command)
            elif command in GRIPPER_COMMANDS and any(i in held for i in ids):
                touched = True
        motion = np.zeros(6)
        for i, axis in enumerate(MOTION_AXES):
            if axis not in self.axes:
                continue
            sign, kind, idx, comp = self.axes[axis]
            if kind == "a":
                raw = float(axes[idx]) if idx < len(axes) else 0.0
                motion[i] = sign * float(apply_deadzone(raw, self.deadzone))
            else:
                hat = hats[idx] if idx < len(hats) else (0, 0)
                motion[i] = sign * float(np.clip(hat[comp], -1, 1))
        slow = any(i in held for i in self.buttons.get("precision", ()))
        motion *= self.speed * (self.precision if slow else 1.0)
        used = motion[: 6 if self.layout.rotation else 3]
        return self._state(motion, touched or bool(np.any(used)), events)

    def read(self) -> DeviceState:
        pg, js = self._pygame, self._joystick
        if js is None:
            raise DeviceError("gamepad: not connected (built with connect=False; call update() instead)")
        pressed = set()
        for ev in pg.event.get():
            if ev.type == pg.JOYBUTTONDOWN and getattr(ev, "instance_id", js.get_instance_id()) == js.get_instance_id():
                pressed.add(ev.button)
            elif ev.type == pg.JOYDEVICEREMOVED:
                raise DeviceError("gamepad: the controller was unplugged")
        axes = [js.get_axis(i) for i in range(js.get_numaxes())]
        buttons = [js.get_button(i) for i in range(js.get_numbuttons())]
        hats = [js.get_hat(i) for i in range(js.get_numhats())]
        held_now = {i for i, b in enumerate(buttons) if b}
        return self.update(axes, buttons, hats, pressed | (held_now - self._prev_buttons))

    @property
    def help(self) -> str:
        b = {c: "/".join(str(i) for i in ids) for c, ids in self.buttons.items()}
        grip = (
            (
                f", button {b.get('gripper_toggle', '-')} gripper toggle ({b.get('gripper_close', '-')} close, "
                f"{b.get('gripper_open', '-')} open)"
            )
            if self.layout.gripper
            else ""
        )
        return (
            f"gamepad: sticks move (axes {', '.join(f'{a}={self._src_str(a)}' for a in self.axes)}){grip} | "
            f"button {b.get('start', '-')} start, {b.get('success', '-')} success, {b.get('failure', '-')} "
            f"failure, {b.get('discard', '-')} discard, {b.get('quit', '-')} quit"
        )

    def _src_str(self, axis: str) -> str:
        sign, kind, idx, comp = self.axes[axis]
        return ("-" if sign < 0 else "") + (f"a{idx}" if kind == "a" else f"h{idx}{'xy'[comp]}")

    def _connect(self, index: int) -> None:
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # no window needed
        os.environ.setdefault("SDL_JOYSTICK_ALLOW_BACKGROUND_EVENTS", "1")  # read the pad whichever window has focus
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        try:
            import pygame
        except ModuleNotFoundError:
            raise DeviceError(f"gamepad: the pygame package is missing: {INSTALL_HINT}") from None
        pygame.display.init()  # the event queue needs the (dummy) video subsystem
        pygame.joystick.init()
        count = pygame.joystick.get_count()
        if count == 0:
            pygame.quit()
            raise DeviceError(
                "gamepad: no game controller found: plug it in (or pair it over Bluetooth); on Linux "
                "check that /dev/input/js* or /dev/input/event* exists and is readable"
            )
        if not 0 <= index < count:
            pygame.quit()
            raise DeviceError(f"gamepad: device.index={index} but only {count} controller(s) are connected")
        js = pygame.joystick.Joystick(index)
        js.init()
        self._pygame, self._joystick = pygame, js
        need = max([s[2] + 1 for s in self.axes.values() if s[1] == "a"] + [0])
        if js.get_numaxes() < need:
            print(
                f"gamepad: warning: {js.get_name()!r} has {js.get_numaxes()} axes, the axis map uses {need}; "
                "missing axes read 0 (set device.axes)",
                file=sys.stderr,
            )

    def close(self) -> None:
        if self._pygame is not None:
            self._pygame.joystick.quit()
            self._pygame.display.quit()
            self._pygame, self._joystick = None, None


def _parse_pad_source(spec: str) -> tuple[float, str, int, int]:
    """ "-a1" -> (-1, "a", 1, 0); "h0y" -> (1, "h", 0, 1)."""
    s = str(spec).strip()
    sign = -1.0 if s.startswith("-") else 1.0
    body = s.lstrip("+-")
    try:
        if body.startswith("a"):
            return sign, "a", int(body[1:]), 0
        if body.startswith("h") and body[-1] in "xy":
            return sign, "h", int(body[1:-1]), "xy".index(body[-1])
    except ValueError:
        pass
    raise ValueError(f"gamepad axis source {spec!r}: expected 'a<index>' or 'h<index>x|y', optionally prefixed '-'")
