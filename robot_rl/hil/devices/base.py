"""The interface every teleop device implements (:class:`TeleopDevice`, polled into a :class:`DeviceState`), the env's
:class:`ActionLayout`, the mark and axis names, and the input helpers the devices share (deadzone, signed axis
sources, the gripper belief). What a device returns, and in which frame, is documented on :class:`TeleopDevice`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

EVENTS = ("start", "success", "failure", "discard", "quit")
MOTION_AXES = ("x", "y", "z", "roll", "pitch", "yaw")
GRIPPER_COMMANDS = ("gripper_close", "gripper_open", "gripper_toggle")
INSTALL_HINT = "pip install 'robot-rl[teleop]'"


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
            raise DeviceError(
                f"a teleop device drives end-effector actions of 3, 4, 6 or 7 dims "
                f"(xyz [+rot] [+gripper]); this env's action has {dim}"
            )
        return table[dim]

    @classmethod
    def from_env(cls, env: Any) -> ActionLayout:
        """Layout of ``env.action_space``; the env's ``rotation`` / ``use_gripper`` attributes decide when present."""
        dim = int(np.prod(env.action_space.shape))
        base = getattr(env, "unwrapped", env)
        if hasattr(base, "rotation") and hasattr(base, "use_gripper"):
            layout = cls(bool(base.rotation), bool(base.use_gripper))
            if layout.dim != dim:
                raise DeviceError(
                    f"env says rotation={base.rotation} use_gripper={base.use_gripper} "
                    f"({layout.dim} action dims) but its action space has {dim}"
                )
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
    """What every teleop source provides. Subclasses set ``name`` and ``is_human`` and implement :meth:`read`.

    A device turns what an operator does into the env's action and into operator marks. It knows nothing about
    stores, transports or ROS2: ``robot-rl record`` polls it once per control step, the intervention wrapper polls it
    the same way during training, and a ROS2 teleop node can publish what it returns.

    ``read() -> DeviceState``:

    * ``action``: float32 (A,) in [-1, 1] in the env's action layout (contract in ``robot_rl/envs/contract.py``):
      end-effector deltas x, y, z (+ roll, pitch, yaw when the task has rotation) in the frame fixed to the reset
      pose, then the gripper command (> 0.5 close, < -0.5 open, otherwise hold). The gripper entry is the device's
      belief of the commanded state, +1 closed / -1 open, or 0 (hold) until the device knows it; :meth:`reset`
      (episode start, the env opens the gripper) and :meth:`sync_gripper` (e.g. from the observed gripper command
      before a human takes over from the policy) set that belief.
    * ``active``: the operator is touching the controls now (a motion input outside the deadzone, or a gripper or
      mark input since the last read); an intervention is exactly the steps where this is true.
    * ``events``: marks pressed since the last read, a subset of :data:`EVENTS` (start, success, failure, discard,
      quit). Marks are edge-triggered: one press, one event, however long the key is held.

    Axes of the action frame, for the default key and axis maps: the operator stands behind the robot looking along
    the base +x axis, so +x = away from the operator, +y = to the operator's left, +z = up. Every map is configurable
    (``configs/teleop/*.yaml``).
    """

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
        return DeviceState(
            self.layout.assemble(motion, self._gripper.value), bool(active), frozenset(e for e in events if e in EVENTS)
        )


def _check_commands(mapping: Mapping[str, Any], allowed: Sequence[str], device: str) -> None:
    bad = sorted(set(mapping) - set(allowed))
    if bad:
        raise ValueError(f"{device}: unknown command(s) {bad}; valid: {', '.join(allowed)}")


def _command_map(
    defaults: Mapping[str, Any], overrides: Mapping[str, Any] | None, allowed: Sequence[str], what: str
) -> dict[str, Any]:
    """A device's map (command -> key, button, axis source): ``defaults`` updated with a config's ``overrides``,
    whose commands must be among ``allowed`` (``what`` names the map in the error)."""
    merged = {**defaults, **dict(overrides or {})}
    _check_commands(merged, allowed, what)
    return merged


def _axis_sources(
    defaults: Mapping[str, Any], overrides: Mapping[str, Any] | None, parse: Callable[[Any], Any], device: str
) -> dict[str, Any]:
    """Motion axis -> its source parsed by ``parse``, from ``defaults`` updated with ``overrides``; an axis whose
    source is null or empty is left out (it stays 0)."""
    axes = _command_map(defaults, overrides, MOTION_AXES, f"{device} axes")
    return {a: parse(s) for a, s in axes.items() if s is not None and str(s) != ""}
