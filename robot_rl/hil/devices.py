"""Teleop devices: keyboard, gamepad, 3Dconnexion SpaceMouse and the scripted expert, behind one interface.

A :class:`TeleopDevice` turns what an operator does into the env's action and into operator marks. It knows nothing
about stores, transports or ROS2: ``robot-rl record`` polls it once per control step, the intervention wrapper
polls it the same way during training, and a ROS2 teleop node can publish what it returns.

``read() -> DeviceState``:

* ``action``: float32 (A,) in [-1, 1] in the env's action layout (contract in ``robot_rl/envs/contract.py``):
  end-effector deltas x, y, z (+ roll, pitch, yaw when the task has rotation) in the frame fixed to the reset pose,
  then the gripper command (> 0.5 close, < -0.5 open, otherwise hold). The gripper entry is the device's belief of
  the commanded state, +1 closed / -1 open, or 0 (hold) until the device knows it; :meth:`TeleopDevice.reset`
  (episode start, the env opens the gripper) and :meth:`TeleopDevice.sync_gripper` (e.g. from the observed gripper
  command before a human takes over from the policy) set that belief.
* ``active``: the operator is touching the controls now (a motion input outside the deadzone, or a gripper or mark
  input since the last read); an intervention is exactly the steps where this is true.
* ``events``: marks pressed since the last read, a subset of :data:`EVENTS` (start, success, failure, discard,
  quit). Marks are edge-triggered: one press, one event, however long the key is held.

Axes of the action frame, for the default key and axis maps: the operator stands behind the robot looking along the
base +x axis, so +x = away from the operator, +y = to the operator's left, +z = up. Every map is configurable
(``configs/teleop/*.yaml``).

Real devices import their library lazily and raise :class:`DeviceError` naming the device and the fix when the
library, the hardware or the display is missing. The raw-input -> action mapping of each device is a pure method
(:meth:`KeyboardDevice.press` / ``release``, :meth:`GamepadDevice.update`, :meth:`SpaceMouseDevice.feed`,
:func:`parse_spacemouse_report`), so tests drive it with synthetic input and no library or hardware.
"""

from __future__ import annotations

import inspect
import os
import sys
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

EVENTS = ("start", "success", "failure", "discard", "quit")
MOTION_AXES = ("x", "y", "z", "roll", "pitch", "yaw")
GRIPPER_COMMANDS = ("gripper_close", "gripper_open", "gripper_toggle")
INSTALL_HINT = "pip install 'robot-rl[teleop]'"
DEVICES = ("keyboard", "gamepad", "spacemouse", "scripted")


class DeviceError(RuntimeError):
    """A teleop device cannot be used here (library, hardware, display or permission missing); says the fix."""


@dataclass(frozen=True)
class DeviceState:
    """One poll of a device: ``action`` float32 (A,) in [-1, 1], ``active`` (operator touching the controls),
    ``events`` (marks since the last poll, a subset of :data:`EVENTS`)."""

    action: np.ndarray
    active: bool = False
    events: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class ActionLayout:
    """Which parts the env's action has: 3 translation dims, then 3 rotation dims if ``rotation``, then 1 gripper
    dim if ``gripper``. ``dim`` = 3 + 3 * rotation + gripper."""

    rotation: bool = False
    gripper: bool = False

    @property
    def dim(self) -> int:
        return 3 + 3 * self.rotation + int(self.gripper)

    @classmethod
    def from_dim(cls, dim: int) -> ActionLayout:
        """The layout of an A-dim action: 3 xyz, 4 xyz+gripper, 6 xyz+rot, 7 xyz+rot+gripper."""
        table = {3: cls(False, False), 4: cls(False, True), 6: cls(True, False), 7: cls(True, True)}
        if dim not in table:
            raise DeviceError(f"a teleop device drives end-effector actions of 3, 4, 6 or 7 dims "
                              f"(xyz [+rot] [+gripper]); this env's action has {dim}")
        return table[dim]

    @classmethod
    def from_env(cls, env: Any) -> ActionLayout:
        """Layout of ``env.action_space``; the env's ``rotation`` / ``use_gripper`` attributes decide when present."""
        dim = int(np.prod(env.action_space.shape))
        base = getattr(env, "unwrapped", env)
        if hasattr(base, "rotation") and hasattr(base, "use_gripper"):
            layout = cls(bool(base.rotation), bool(base.use_gripper))
            if layout.dim != dim:
                raise DeviceError(f"env says rotation={base.rotation} use_gripper={base.use_gripper} "
                                  f"({layout.dim} action dims) but its action space has {dim}")
            return layout
        return cls.from_dim(dim)

    def assemble(self, motion: np.ndarray, gripper: float) -> np.ndarray:
        """Full action (dim,) float32 in [-1, 1] from ``motion`` (6,) = x, y, z, roll, pitch, yaw (rotation is
        dropped when the layout has none) and a gripper command (dropped when there is no gripper)."""
        parts = [np.asarray(motion, np.float64)[: 6 if self.rotation else 3]]
        if self.gripper:
            parts.append(np.array([gripper]))
        return np.clip(np.concatenate(parts), -1.0, 1.0).astype(np.float32)


def apply_deadzone(x: np.ndarray | float, deadzone: float) -> np.ndarray:
    """Zero inside ``|x| < deadzone`` and rescale the rest so the output still spans [-1, 1] continuously.

    ``x``: normalised input(s) (any shape); ``deadzone`` in [0, 1). Returns float64 of ``x``'s shape, clipped.
    """
    x = np.clip(np.asarray(x, np.float64), -1.0, 1.0)
    if deadzone <= 0:
        return x
    return np.sign(x) * np.maximum(np.abs(x) - deadzone, 0.0) / (1.0 - deadzone)


def parse_source(spec: str | int, valid: Iterable[str]) -> tuple[float, str]:
    """``"-y"`` -> (-1.0, "y"): a signed name of a raw input; ``valid`` lists the names allowed."""
    s = str(spec).strip()
    sign = -1.0 if s.startswith("-") else 1.0
    name = s.lstrip("+-")
    valid = list(valid)
    if name not in valid:
        raise ValueError(f"axis source {spec!r}: {name!r} is not one of {', '.join(valid)} (prefix '-' to invert)")
    return sign, name


class _Gripper:
    """The device's belief of the commanded gripper state: None (unknown: hold), True closed, False open."""

    def __init__(self) -> None:
        self.closed: bool | None = None

    def apply(self, command: str) -> None:
        if command == "gripper_close":
            self.closed = True
        elif command == "gripper_open":
            self.closed = False
        elif command == "gripper_toggle":
            self.closed = not self.closed  # unknown -> close: the env starts every episode open

    @property
    def value(self) -> float:
        return 0.0 if self.closed is None else (1.0 if self.closed else -1.0)


class TeleopDevice(ABC):
    """What every teleop source provides. Subclasses set ``name`` and ``is_human`` and implement :meth:`read`."""

    name = "device"
    is_human = True  # False for the scripted expert: recordings are then "scripted" and run as fast as possible

    def __init__(self, layout: ActionLayout):
        self.layout = layout
        self._gripper = _Gripper()

    @abstractmethod
    def read(self) -> DeviceState:
        """Poll the device: the action to execute now, whether the operator is touching it, marks since last poll."""

    def reset(self) -> None:
        """Start of an episode: the env has just opened the gripper, so the device's gripper belief becomes open."""
        self._gripper.closed = False

    def sync_gripper(self, closed: bool | None) -> None:
        """Tell the device the gripper's actual commanded state (None: unknown, hold until the operator acts)."""
        self._gripper.closed = None if closed is None else bool(closed)

    def observe(self, obs: Mapping[str, np.ndarray] | None, proposed_action: np.ndarray | None) -> None:
        """Called by the intervention wrapper before each :meth:`read` during training: the observation the policy
        acted on and the policy's proposed action, float32 (A,). Human devices ignore it; the simulated operator
        (``robot_rl/hil/sim_operator.py``) decides from it whether to take over."""

    def state_dict(self) -> dict[str, Any]:
        """The run-long state that decides its future actions, for an exact resume from a checkpoint taken between
        episodes (numbers, strings, lists and dicts: :func:`robot_rl.utils.checkpoint.save_state`). A person's device
        has none; the simulated operator keeps its generator and budget."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    @property
    def help(self) -> str:
        """One line naming the inputs (shown to the operator)."""
        return self.name

    def close(self) -> None:
        """Release the hardware or the listener thread. Safe to call twice."""

    def __enter__(self) -> TeleopDevice:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _state(self, motion: np.ndarray, active: bool, events: Iterable[str]) -> DeviceState:
        return DeviceState(self.layout.assemble(motion, self._gripper.value), bool(active),
                           frozenset(e for e in events if e in EVENTS))


def _check_commands(mapping: Mapping[str, Any], allowed: Sequence[str], device: str) -> None:
    bad = sorted(set(mapping) - set(allowed))
    if bad:
        raise ValueError(f"{device}: unknown command(s) {bad}; valid: {', '.join(allowed)}")


# ------------------------------------------------------------------------------------------------------ keyboard
KEYBOARD_KEYS: dict[str, str] = {
    "x+": "w", "x-": "s", "y+": "a", "y-": "d", "z+": "r", "z-": "f",
    "roll+": "u", "roll-": "o", "pitch+": "i", "pitch-": "k", "yaw+": "j", "yaw-": "l",
    "gripper_toggle": "space", "precision": "shift",
    "start": "enter", "success": "y", "failure": "n", "discard": "backspace", "quit": "esc",
}
_KEY_ALIASES = {"return": "enter", "escape": "esc", "shift_l": "shift", "shift_r": "shift", " ": "space",
                "ctrl_l": "ctrl", "ctrl_r": "ctrl", "alt_l": "alt", "alt_r": "alt", "alt_gr": "alt"}
_KEYBOARD_COMMANDS = tuple(f"{a}{s}" for a in MOTION_AXES for s in "+-") + GRIPPER_COMMANDS + ("precision",) + EVENTS


def normalize_key(name: str) -> str:
    """Canonical key name: letters lower-cased, aliases folded ("Return" -> "enter", "shift_r" -> "shift")."""
    n = str(name)
    n = n if n == " " else n.strip().lower()
    return _KEY_ALIASES.get(n, n)


class KeyboardDevice(TeleopDevice):
    """Keyboard teleop through pynput (a global listener: keys count whichever window has the focus).

    Default keys (``KEYBOARD_KEYS``): W/S +x/-x (away from / toward the operator), A/D +y/-y (left / right), R/F
    up / down, U/O roll, I/K pitch, J/L yaw (rotation tasks only), Space toggles the gripper, hold Shift for
    precision (``precision`` x speed), Enter starts an episode, Y marks success, N failure, Backspace discards the
    episode, Esc quits. A held motion key gives ``speed`` on its axis; a key tapped between two reads still moves
    one step.

    Args:
        layout: the env's action layout.
        speed: action magnitude of a held motion key, in (0, 1].
        precision: factor on ``speed`` while the precision key is held, in (0, 1].
        keys: command -> key name overrides of ``KEYBOARD_KEYS`` (names like "w", "space", "enter", "f1").
        listen: start the pynput listener (False: feed :meth:`press` / :meth:`release` yourself, e.g. in tests).
    """

    name = "keyboard"

    def __init__(self, layout: ActionLayout, speed: float = 1.0, precision: float = 0.3,
                 keys: Mapping[str, str] | None = None, listen: bool = True):
        super().__init__(layout)
        if not (0 < speed <= 1 and 0 < precision <= 1):
            raise ValueError(f"keyboard: speed={speed} and precision={precision} must lie in (0, 1]")
        keys = dict(keys or {})
        _check_commands(keys, _KEYBOARD_COMMANDS, "keyboard keys")
        self.keys = {c: normalize_key(k) for c, k in {**KEYBOARD_KEYS, **keys}.items()}
        self.speed, self.precision = float(speed), float(precision)
        self._by_key: dict[str, list[str]] = {}
        for command, key in self.keys.items():
            self._by_key.setdefault(key, []).append(command)
        self._lock = threading.Lock()
        self._held: set[str] = set()
        self._tapped: set[str] = set()
        self._events: set[str] = set()
        self._touched = False
        self._listener = None
        if listen:
            self._listener = _start_pynput(self)

    def press(self, key: str) -> None:
        """A key went down (auto-repeat of a held key is ignored). Thread-safe; called by the listener."""
        key = normalize_key(key)
        with self._lock:
            if key in self._held:
                return
            self._held.add(key)
            self._tapped.add(key)
            for command in self._by_key.get(key, ()):
                if command in GRIPPER_COMMANDS:
                    self._gripper.apply(command)
                    self._touched = True
                elif command in EVENTS:
                    self._events.add(command)

    def release(self, key: str) -> None:
        """A key went up. Thread-safe."""
        with self._lock:
            self._held.discard(normalize_key(key))

    def read(self) -> DeviceState:
        with self._lock:
            down = self._held | self._tapped
            self._tapped.clear()
            events, self._events = self._events, set()
            touched, self._touched = self._touched, False
            scale = self.speed * (self.precision if self.keys["precision"] in self._held else 1.0)
            motion = np.zeros(6)
            for i, axis in enumerate(MOTION_AXES):
                motion[i] = scale * ((self.keys[f"{axis}+"] in down) - (self.keys[f"{axis}-"] in down))
            return self._state(motion, touched or bool(np.any(motion[: 6 if self.layout.rotation else 3])), events)

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self._tapped.clear()

    @property
    def help(self) -> str:
        k = {c: (n.upper() if len(n) == 1 else n) for c, n in self.keys.items()}
        axes = MOTION_AXES if self.layout.rotation else MOTION_AXES[:3]
        move = ", ".join(f"{k[a + '+']}/{k[a + '-']} {a}" for a in axes)
        grip = f", {k['gripper_toggle']} gripper" if self.layout.gripper else ""
        return (f"keyboard: {move}{grip}, hold {k['precision']} for precision | {k['start']} start, "
                f"{k['success']} success, {k['failure']} failure, {k['discard']} discard, {k['quit']} quit")

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener = None


def _pynput_name(key: Any) -> str | None:
    """pynput key object -> key name ("w", "space", "enter", ...); None for keys without a usable name."""
    char = getattr(key, "char", None)
    if char:
        return char
    name = getattr(key, "name", None)
    return name or None


def _start_pynput(device: KeyboardDevice) -> Any:
    backend_set = any(os.environ.get(v) for v in ("PYNPUT_BACKEND", "PYNPUT_BACKEND_KEYBOARD"))
    if sys.platform.startswith("linux") and not backend_set and not os.environ.get("DISPLAY"):
        raise DeviceError("keyboard: no display (DISPLAY is unset), so pynput cannot listen to the keyboard: run in "
                          "the desktop session or set DISPLAY (e.g. DISPLAY=:0; over ssh use ssh -X), or as root use "
                          "PYNPUT_BACKEND=uinput; headless alternatives: device=gamepad, device=spacemouse "
                          "device.keyboard_events=false, device=scripted")
    try:
        from pynput import keyboard
    except ModuleNotFoundError:
        raise DeviceError(f"keyboard: the pynput package is missing: {INSTALL_HINT}") from None
    except ImportError as e:  # pynput raises ImportError when its backend finds no display
        raise DeviceError(f"keyboard: pynput cannot reach the keyboard ({str(e).splitlines()[0]}): set DISPLAY to "
                          "a running X server, or as root use PYNPUT_BACKEND=uinput") from None

    def on_press(key: Any) -> None:
        if (name := _pynput_name(key)) is not None:
            device.press(name)

    def on_release(key: Any) -> None:
        if (name := _pynput_name(key)) is not None:
            device.release(name)

    listener = keyboard.Listener(on_press=on_press, on_release=on_release)
    listener.daemon = True
    listener.start()
    listener.wait()  # until the backend is connected
    return listener


# ------------------------------------------------------------------------------------------------------- gamepad
# Xbox-style pad as the Linux xpad / SDL joystick API numbers it: axes 0 LX, 1 LY, 2 LT, 3 RX, 4 RY, 5 RT (sticks
# -1 left/up .. +1 right/down); buttons 0 A, 1 B, 2 X, 3 Y, 4 LB, 5 RB, 6 Back, 7 Start; hat 0 = D-pad (+y up).
GAMEPAD_AXES: dict[str, str] = {"x": "-a1", "y": "-a0", "z": "-a4", "roll": "h0x", "pitch": "h0y", "yaw": "-a3"}
GAMEPAD_BUTTONS: dict[str, int] = {"gripper_toggle": 0, "gripper_open": 4, "gripper_close": 5, "start": 7,
                                   "success": 3, "failure": 2, "discard": 1, "quit": 6}
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

    def __init__(self, layout: ActionLayout, index: int = 0, deadzone: float = 0.15, speed: float = 1.0,
                 precision: float = 0.3, axes: Mapping[str, str | None] | None = None,
                 buttons: Mapping[str, int | Sequence[int] | None] | None = None, connect: bool = True):
        super().__init__(layout)
        if not (0 <= deadzone < 1 and 0 < speed <= 1 and 0 < precision <= 1):
            raise ValueError(f"gamepad: need 0 <= deadzone < 1, 0 < speed, precision <= 1; got {deadzone}, "
                             f"{speed}, {precision}")
        axes = {**GAMEPAD_AXES, **dict(axes or {})}
        _check_commands(axes, MOTION_AXES, "gamepad axes")
        self.axes = {a: _parse_pad_source(s) for a, s in axes.items() if s is not None and str(s) != ""}
        buttons = {**GAMEPAD_BUTTONS, **dict(buttons or {})}
        _check_commands(buttons, _GAMEPAD_BUTTON_COMMANDS, "gamepad buttons")
        self.buttons: dict[str, tuple[int, ...]] = {}
        for command, idx in buttons.items():
            if idx is None:
                continue
            self.buttons[command] = (int(idx),) if isinstance(idx, (int, np.integer, str)) else tuple(
                int(i) for i in idx)
        self.deadzone, self.speed, self.precision = float(deadzone), float(speed), float(precision)
        self._prev_buttons: set[int] = set()
        self._events: set[str] = set()
        self._joystick = None
        self._pygame = None
        if connect:
            self._connect(int(index))

    def update(self, axes: Sequence[float], buttons: Sequence[bool | int], hats: Sequence[Sequence[int]] = (),
               pressed: Iterable[int] | None = None) -> DeviceState:
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
        grip = (f", button {b.get('gripper_toggle', '-')} gripper toggle ({b.get('gripper_close', '-')} close, "
                f"{b.get('gripper_open', '-')} open)") if self.layout.gripper else ""
        return (f"gamepad: sticks move (axes {', '.join(f'{a}={self._src_str(a)}' for a in self.axes)}){grip} | "
                f"button {b.get('start', '-')} start, {b.get('success', '-')} success, {b.get('failure', '-')} "
                f"failure, {b.get('discard', '-')} discard, {b.get('quit', '-')} quit")

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
            raise DeviceError("gamepad: no game controller found: plug it in (or pair it over Bluetooth); on Linux "
                              "check that /dev/input/js* or /dev/input/event* exists and is readable")
        if not 0 <= index < count:
            pygame.quit()
            raise DeviceError(f"gamepad: device.index={index} but only {count} controller(s) are connected")
        js = pygame.joystick.Joystick(index)
        js.init()
        self._pygame, self._joystick = pygame, js
        need = max([s[2] + 1 for s in self.axes.values() if s[1] == "a"] + [0])
        if js.get_numaxes() < need:
            print(f"gamepad: warning: {js.get_name()!r} has {js.get_numaxes()} axes, the axis map uses {need}; "
                  "missing axes read 0 (set device.axes)", file=sys.stderr)

    def close(self) -> None:
        if self._pygame is not None:
            self._pygame.joystick.quit()
            self._pygame.display.quit()
            self._pygame, self._joystick = None, None


def _parse_pad_source(spec: str) -> tuple[float, str, int, int]:
    """"-a1" -> (-1, "a", 1, 0); "h0y" -> (1, "h", 0, 1)."""
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


# ---------------------------------------------------------------------------------------------------- spacemouse
SPACEMOUSE_VENDORS = (0x256F, 0x046D)  # 3Dconnexion; older models carry Logitech's vendor id
# 3Dconnexion products under Logitech's vendor id (every other 0x046d product is a Logitech mouse or keyboard).
SPACEMOUSE_LOGITECH_PIDS = (0xC603, 0xC605, 0xC606, 0xC621, 0xC623, 0xC625, 0xC626, 0xC627, 0xC628, 0xC629,
                            0xC62B, 0xC640)
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

    def __init__(self, layout: ActionLayout, deadzone: float = 0.1, full_scale: float = 350.0,
                 translation_scale: float = 1.0, rotation_scale: float = 1.0,
                 axes: Mapping[str, str | None] | None = None, buttons: Mapping[str, int | None] | None = None,
                 path: str | None = None, connect: bool = True):
        super().__init__(layout)
        if not (0 <= deadzone < 1 and full_scale > 0 and translation_scale > 0 and rotation_scale > 0):
            raise ValueError("spacemouse: need 0 <= deadzone < 1 and full_scale, translation_scale, rotation_scale > 0")
        axes = {**SPACEMOUSE_AXES, **dict(axes or {})}
        _check_commands(axes, MOTION_AXES, "spacemouse axes")
        self.axes = {a: parse_source(s, SPACEMOUSE_RAW) for a, s in axes.items() if s is not None and str(s) != ""}
        buttons = {**SPACEMOUSE_BUTTONS, **dict(buttons or {})}
        _check_commands(buttons, _SPACEMOUSE_BUTTON_COMMANDS, "spacemouse buttons")
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
        grip = ", ".join(f"{names.get(i, f'button {i}')} button {c.removeprefix('gripper_')}"
                         for c, i in self.buttons.items() if c in GRIPPER_COMMANDS)
        marks = ", ".join(f"{names.get(i, f'button {i}')} button {c}" for c, i in self.buttons.items()
                          if c in EVENTS)
        return "spacemouse: move/tilt the cap" + (f", {grip}" if grip and self.layout.gripper else "") + \
            (f" | {marks}" if marks else "")

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
    return vid == 0x046D and (pid in SPACEMOUSE_LOGITECH_PIDS or "3dconnexion" in name.lower()
                              or "space" in name.lower())


def _open_spacemouse(path: str | None) -> Any:
    try:
        import hid
    except ModuleNotFoundError:
        raise DeviceError(f"spacemouse: the hidapi package is missing: {INSTALL_HINT} (provides the hid module)") \
            from None
    except ImportError as e:
        raise DeviceError(f"spacemouse: hidapi failed to load ({e}); on Linux install libhidapi-hidraw0 or "
                          f"reinstall: {INSTALL_HINT}") from None
    if not hasattr(hid, "device"):
        raise DeviceError("spacemouse: the imported hid module is not hidapi's (pip uninstall hid; "
                          f"{INSTALL_HINT})")
    if path is None:
        found = [d for d in hid.enumerate() if is_spacemouse(d)]
        if not found:
            raise DeviceError("spacemouse: no 3Dconnexion SpaceMouse found (USB vendor 0x256f or 0x046d): plug it in "
                              "(wireless: plug in the receiver and switch the mouse on); on Linux the hidraw node "
                              "must be readable: add a udev rule, e.g. KERNEL==\"hidraw*\", ATTRS{idVendor}==\"256f\", "
                              "MODE=\"0666\"")
        # The multi-axis controller interface (usage page 1, usage 8) when the device lists several.
        found.sort(key=lambda d: (d.get("usage_page"), d.get("usage")) != (1, 8))
        path = found[0]["path"]
    dev = hid.device()
    try:
        dev.open_path(path if isinstance(path, bytes) else str(path).encode())
    except OSError as e:
        raise DeviceError(f"spacemouse: cannot open {path!r} ({e}): check /dev/hidraw* permissions (udev rule, "
                          "see above) and that spacenavd or another program is not holding it") from None
    dev.set_nonblocking(1)
    return dev


# ------------------------------------------------------------------------------------------------------ scripted
class ScriptedDevice(TeleopDevice):
    """The task's scripted expert as a device: starts at once, never marks, ends when the env does.

    For tests and for bootstrapping a store without an operator. Recordings from it are ``source="scripted"``.

    Args:
        env: the env whose expert acts (``expert_action`` on the unwrapped env).
        noise: std of Gaussian noise on the expert's motion dims (action units), 0 = deterministic.
    """

    name = "scripted"
    is_human = False

    def __init__(self, env: Any, noise: float = 0.0):
        super().__init__(ActionLayout())  # unused: the expert returns whole actions of any layout
        base = env.unwrapped
        if not hasattr(base, "expert_action"):
            raise DeviceError(f"scripted: {type(base).__name__} has no scripted expert; use a human device")
        if noise < 0:
            raise ValueError(f"scripted: noise={noise} must be >= 0")
        self._env, self.noise = env, float(noise)

    def read(self) -> DeviceState:
        base = self._env.unwrapped
        action = base.expert_action(noise=self.noise) if self.noise > 0 else base.expert_action()
        return DeviceState(np.asarray(action, np.float32), True, frozenset({"start"}))

    @property
    def help(self) -> str:
        return "scripted expert (no operator)"


# ------------------------------------------------------------------------------------------------------ combined
class CombinedDevice(TeleopDevice):
    """Motion (action, active, gripper) from one device, marks from it and from others.

    E.g. a SpaceMouse (two buttons, both used for the gripper) with start/success/... from the keyboard.
    """

    def __init__(self, motion: TeleopDevice, marks: Sequence[TeleopDevice]):
        super().__init__(motion.layout)
        self.motion, self.marks = motion, list(marks)
        self.name, self.is_human = motion.name, motion.is_human

    def read(self) -> DeviceState:
        st = self.motion.read()
        events = set(st.events)
        for dev in self.marks:
            events |= dev.read().events
        return DeviceState(st.action, st.active, frozenset(events))

    def reset(self) -> None:
        self.motion.reset()
        for dev in self.marks:
            dev.reset()

    def sync_gripper(self, closed: bool | None) -> None:
        self.motion.sync_gripper(closed)

    def observe(self, obs: Mapping[str, np.ndarray] | None, proposed_action: np.ndarray | None) -> None:
        self.motion.observe(obs, proposed_action)

    @property
    def help(self) -> str:
        marks = "; ".join(d.help.split(" | ")[-1] for d in self.marks)
        return f"{self.motion.help} | marks from {'/'.join(d.name for d in self.marks)}: {marks}"

    def close(self) -> None:
        for dev in [self.motion, *self.marks]:
            dev.close()


# --------------------------------------------------------------------------------------------------------- build
def make_device(name: str, env: Any, **cfg: Any) -> TeleopDevice:
    """Build teleop device ``name`` (keyboard, gamepad, spacemouse, scripted) for ``env``'s action layout.

    ``name`` may also be ``"module:Class"``: a :class:`TeleopDevice` subclass defined outside the learning core and
    built as ``Class(layout, **cfg)``, e.g. ``hw.ros_teleop:RosTeleopDevice`` (a person's device over ROS2,
    ``configs/teleop/ros2.yaml``), so this module names no ROS code.

    ``cfg``: the device's settings (its constructor's keyword arguments; ``configs/teleop/<name>.yaml``). The
    SpaceMouse also takes ``keyboard_events`` (default True): marks from the keyboard, its own buttons stay on the
    gripper. Raises ValueError for an unknown device or setting, :class:`DeviceError` when it cannot be used here.
    """
    classes = {"keyboard": KeyboardDevice, "gamepad": GamepadDevice, "spacemouse": SpaceMouseDevice,
               "scripted": ScriptedDevice}
    if ":" in name:
        cls = _import_device(name)
    elif name in classes:
        cls = classes[name]
    else:
        raise ValueError(f"unknown teleop device {name!r}; valid choices: {', '.join(DEVICES)} "
                         "(or module:Class of a TeleopDevice)")
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
            raise DeviceError(f"spacemouse: marks come from the keyboard, which is unavailable ({e}); or set "
                              "device.keyboard_events=false and map marks to buttons in device.buttons") from None
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
