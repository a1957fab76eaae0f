"""The keyboard as a teleop device (pynput): the key map, key-name folding and the global key listener."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping
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
    _command_map,
)

KEYBOARD_KEYS: dict[str, str] = {
    "x+": "w",
    "x-": "s",
    "y+": "a",
    "y-": "d",
    "z+": "r",
    "z-": "f",
    "roll+": "u",
    "roll-": "o",
    "pitch+": "i",
    "pitch-": "k",
    "yaw+": "j",
    "yaw-": "l",
    "gripper_toggle": "space",
    "precision": "shift",
    "start": "enter",
    "success": "y",
    "failure": "n",
    "discard": "backspace",
    "quit": "esc",
}
_KEY_ALIASES = {
    "return": "enter",
    "escape": "esc",
    "shift_l": "shift",
    "shift_r": "shift",
    " ": "space",
    "ctrl_l": "ctrl",
    "ctrl_r": "ctrl",
    "alt_l": "alt",
    "alt_r": "alt",
    "alt_gr": "alt",
}
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

    def __init__(
        self,
        layout: ActionLayout,
        speed: float = 1.0,
        precision: float = 0.3,
        keys: Mapping[str, str] | None = None,
        listen: bool = True,
    ):
        super().__init__(layout)
        if not (0 < speed <= 1 and 0 < precision <= 1):
            raise ValueError(f"keyboard: speed={speed} and precision={precision} must lie in (0, 1]")
        keys = _command_map(KEYBOARD_KEYS, keys, _KEYBOARD_COMMANDS, "keyboard keys")
        self.keys = {c: normalize_key(k) for c, k in keys.items()}
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
        return (
            f"keyboard: {move}{grip}, hold {k['precision']} for precision | {k['start']} start, "
            f"{k['success']} success, {k['failure']} failure, {k['discard']} discard, {k['quit']} quit"
        )

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
        raise DeviceError(
            "keyboard: no display (DISPLAY is unset), so pynput cannot listen to the keyboard: run in "
            "the desktop session or set DISPLAY (e.g. DISPLAY=:0; over ssh use ssh -X), or as root use "
            "PYNPUT_BACKEND=uinput; headless alternatives: device=gamepad, device=spacemouse "
            "device.keyboard_events=false, device=scripted"
        )
    try:
        from pynput import keyboard
    except ModuleNotFoundError:
        raise DeviceError(f"keyboard: the pynput package is missing: {INSTALL_HINT}") from None
    except ImportError as e:  # pynput raises ImportError when its backend finds no display
        raise DeviceError(
            f"keyboard: pynput cannot reach the keyboard ({str(e).splitlines()[0]}): set DISPLAY to "
            "a running X server, or as root use PYNPUT_BACKEND=uinput"
        ) from None

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
