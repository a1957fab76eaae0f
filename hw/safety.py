"""Pure-Python safety logic of the ROS2 robot path: workspace clamp, speed / acceleration / rotation limits, the
watchdog, the e-stop latch and message validation. No ROS import: the supervisor node
(:mod:`hw.nodes.safety_supervisor`) wraps these, and tests drive them with plain numbers.

Units: positions m (robot base frame), time s, speed m/s, acceleration m/s^2, angles rad, angular speed rad/s.
Quaternions are ``(w, x, y, z)`` numpy arrays here (MuJoCo's order); ROS messages carry ``(x, y, z, w)`` and are
converted at the boundary (:func:`quat_from_xyzw`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

# ----------------------------------------------------------------------------------------------- quaternions


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a * b`` of two (4,) wxyz quaternions."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw])


def quat_conj(q: np.ndarray) -> np.ndarray:
    """Conjugate (= inverse for a unit quaternion) of a (4,) wxyz quaternion."""
    return np.array([q[0], -q[1], -q[2], -q[3]])


def quat_to_rotvec(q: np.ndarray) -> np.ndarray:
    """Unit quaternion (4,) wxyz -> rotation vector (3,) rad, angle in [0, pi]."""
    q = np.asarray(q, np.float64)
    if q[0] < 0:
        q = -q
    s = float(np.linalg.norm(q[1:]))
    if s < 1e-12:
        return 2.0 * q[1:]
    angle = 2.0 * math.atan2(s, q[0])
    return q[1:] / s * angle


def rotvec_to_quat(rv: np.ndarray) -> np.ndarray:
    """Rotation vector (3,) rad -> unit quaternion (4,) wxyz."""
    rv = np.asarray(rv, np.float64)
    angle = float(np.linalg.norm(rv))
    if angle < 1e-12:
        return np.array([1.0, *(0.5 * rv)]) / math.sqrt(1.0 + 0.25 * angle * angle)
    return np.array([math.cos(angle / 2), *(rv / angle * math.sin(angle / 2))])


def quat_from_xyzw(x: float, y: float, z: float, w: float) -> np.ndarray:
    """ROS ``geometry_msgs/Quaternion`` order -> (4,) wxyz."""
    return np.array([w, x, y, z], np.float64)


def quat_angle(a: np.ndarray, b: np.ndarray) -> float:
    """Rotation angle (rad, 0..pi) between two unit quaternions."""
    return float(np.linalg.norm(quat_to_rotvec(quat_mul(b, quat_conj(a)))))


# ------------------------------------------------------------------------------------------------- validation

MAX_JOINTS = 64  # a joint_states message with more names than this is rejected as oversized


def check_pose(pos: Sequence[float], quat_wxyz: Sequence[float], frame: str, expected_frame: str,
               max_abs: float = 10.0) -> str | None:
    """Reason to reject a pose (``None`` if fine): non-finite numbers, wrong frame, far-away position
    (``|p_i| > max_abs`` m) or a quaternion whose norm is not 1 within 1%."""
    p, q = np.asarray(pos, np.float64), np.asarray(quat_wxyz, np.float64)
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(q))):
        return f"non-finite pose (position {p.tolist()}, quaternion {q.tolist()})"
    if frame != expected_frame:
        return f"frame_id {frame!r} != expected {expected_frame!r}"
    if np.any(np.abs(p) > max_abs):
        return f"position {p.tolist()} lies more than {max_abs} m from the base"
    n = float(np.linalg.norm(q))
    if abs(n - 1.0) > 0.01:
        return f"quaternion norm {n:.4f} is not 1"
    return None


def check_vector(name: str, values: Sequence[float], size: int | None = None, max_abs: float = 1e6) -> str | None:
    """Reason to reject a float vector (``None`` if fine): wrong size, non-finite, or ``|v_i| > max_abs``."""
    v = np.asarray(values, np.float64).reshape(-1)
    if size is not None and v.shape != (size,):
        return f"{name} has {v.size} values, expected {size}"
    if not np.all(np.isfinite(v)):
        return f"{name} holds non-finite values"
    if v.size and float(np.max(np.abs(v))) > max_abs:
        return f"{name} has a value above {max_abs} in magnitude"
    return None


def check_joint_state(names: Sequence[str], position: Sequence[float], velocity: Sequence[float],
                      effort: Sequence[float], required: Sequence[str] = ()) -> str | None:
    """Reason to reject a ``sensor_msgs/JointState`` (``None`` if fine).

    Rejects more than :data:`MAX_JOINTS` names, ``position`` not matching ``names`` in length, ``velocity`` /
    ``effort`` neither empty nor matching, non-finite positions or velocities, and missing ``required`` joints.
    """
    n = len(names)
    if n > MAX_JOINTS:
        return f"oversized joint state: {n} joints (max {MAX_JOINTS})"
    if len(position) != n:
        return f"joint state has {n} names but {len(position)} positions"
    for label, arr in (("velocities", velocity), ("efforts", effort)):
        if len(arr) not in (0, n):
            return f"joint state has {n} names but {len(arr)} {label}"
    if not (np.all(np.isfinite(np.asarray(position, np.float64))) and
            np.all(np.isfinite(np.asarray(velocity, np.float64)))):
        return "joint state holds non-finite positions or velocities"
    missing = [j for j in required if j not in names]
    if missing:
        return f"joint state lacks joints {missing}"
    return None


def check_image(height: int, width: int, encoding: str, step: int, nbytes: int,
                expected_hw: tuple[int, int] | None, max_bytes: int) -> str | None:
    """Reason to reject a ``sensor_msgs/Image`` (``None`` if fine): not ``rgb8``, larger than ``max_bytes``,
    a size other than ``expected_hw`` (height, width), or a ``step`` / data length that does not match."""
    if nbytes > max_bytes:
        return f"oversized image: {nbytes} bytes (max {max_bytes})"
    if encoding != "rgb8":
        return f"image encoding {encoding!r} != 'rgb8'"
    if expected_hw is not None and (height, width) != tuple(expected_hw):
        return f"image is {height}x{width}, expected {expected_hw[0]}x{expected_hw[1]}"
    if step != width * 3 or nbytes != height * step:
        return f"image step {step} / {nbytes} bytes do not match {height}x{width} rgb8"
    return None


# --------------------------------------------------------------------------------------------- motion limits


@dataclass
class SafetyLimits:
    """What the supervisor enforces on every command. Checked on construction (ValueError naming the field).

    Args:
        workspace_low / workspace_high: the box (m, base frame) every target is clamped into, (3,) each.
        max_speed: target speed limit (m/s, norm over x, y, z).
        max_accel: target acceleration limit (m/s^2, norm).
        max_rot_speed: target angular speed limit (rad/s).
        max_rotation: max rotation of the target from the reference orientation (rad per rotation-vector axis;
            the reference is the measured orientation when the supervisor anchors, i.e. after reset).
        max_lead: max distance per axis between the target and the measured EE position (m): pushing against an
            obstacle cannot wind up unbounded force.
        command_timeout: silence (s) after which the arm is held.
        state_timeout: state age (s) after which the arm is held and commands are refused.
    """

    workspace_low: Sequence[float] = (0.3, -0.25, 0.05)
    workspace_high: Sequence[float] = (0.7, 0.25, 0.4)
    max_speed: float = 0.5
    max_accel: float = 5.0
    max_rot_speed: float = 1.5
    max_rotation: float = 0.8
    max_lead: float = 0.1
    command_timeout: float = 0.5
    state_timeout: float = 0.5

    def __post_init__(self) -> None:
        lo = np.asarray(self.workspace_low, np.float64).reshape(-1)
        hi = np.asarray(self.workspace_high, np.float64).reshape(-1)
        if lo.shape != (3,) or hi.shape != (3,) or not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ValueError(f"workspace_low / workspace_high must be 3 finite numbers each, got {lo}, {hi}")
        if np.any(hi <= lo):
            raise ValueError(f"workspace_high={hi.tolist()} must exceed workspace_low={lo.tolist()} on every axis")
        self.workspace_low, self.workspace_high = lo, hi
        bounds = {"max_speed": (1e-3, 3.0), "max_accel": (1e-2, 50.0), "max_rot_speed": (1e-3, 10.0),
                  "max_rotation": (0.0, math.pi), "max_lead": (1e-3, 1.0), "command_timeout": (1e-3, 60.0),
                  "state_timeout": (1e-3, 60.0)}
        for name, (a, b) in bounds.items():
            v = float(getattr(self, name))
            if not (a <= v <= b):
                raise ValueError(f"{name}={v} is out of range; valid range is [{a}, {b}]")
            setattr(self, name, v)


@dataclass
class LimitResult:
    """One limited target: ``pos`` (3,) m, ``quat`` (4,) wxyz, ``clamped`` names the limits that acted
    (subset of workspace, speed, accel, lead, rot_speed, rotation)."""

    pos: np.ndarray
    quat: np.ndarray
    clamped: set[str] = field(default_factory=set)


class MotionLimiter:
    """Turns desired targets into safe ones, one control period at a time.

    The output target starts at an anchor (the measured pose after reset or after a hold) and moves toward each
    desired target with its velocity capped by ``max_speed``, by the braking distance ``sqrt(2 max_accel d)`` and
    by ``max_accel`` per period; it always stays inside the workspace box and within ``max_lead`` of the measured
    EE position. Orientation moves toward the desired one at ``max_rot_speed`` at most and stays within
    ``max_rotation`` of the anchor orientation. Deterministic: the same anchor and commands give the same outputs.
    """

    def __init__(self, limits: SafetyLimits):
        self.limits = limits
        self.pos: np.ndarray | None = None
        self.quat = np.array([1.0, 0.0, 0.0, 0.0])
        self.ref_quat = self.quat.copy()
        self.vel = np.zeros(3)

    @property
    def anchored(self) -> bool:
        return self.pos is not None

    def anchor(self, pos: np.ndarray, quat: np.ndarray) -> None:
        """Start from the measured pose (m, wxyz), at rest; ``quat`` also becomes the reference orientation."""
        lim = self.limits
        self.pos = np.clip(np.asarray(pos, np.float64), lim.workspace_low, lim.workspace_high)
        self.quat = np.asarray(quat, np.float64) / np.linalg.norm(quat)
        self.ref_quat = self.quat.copy()
        self.vel = np.zeros(3)

    def unanchor(self) -> None:
        """Forget the output (after a reset: the next command anchors at the new measured pose)."""
        self.pos = None
        self.vel = np.zeros(3)

    def stop(self) -> None:
        """Zero the velocity (hold): the next command ramps up again under the acceleration limit."""
        self.vel = np.zeros(3)

    def step(self, desired_pos: np.ndarray, desired_quat: np.ndarray | None, dt: float,
             measured_pos: np.ndarray | None) -> LimitResult:
        """Advance the output target one period of ``dt`` s toward ``desired_pos`` (m) / ``desired_quat`` (wxyz,
        ``None``: keep the orientation). Requires :meth:`anchor` first."""
        if self.pos is None:
            raise RuntimeError("MotionLimiter.step before anchor(): no measured pose to start from")
        if not dt > 0:
            raise ValueError(f"dt={dt} must be > 0")
        lim, clamped = self.limits, set()
        want = np.asarray(desired_pos, np.float64)
        boxed = np.clip(want, lim.workspace_low, lim.workspace_high)
        if not np.array_equal(boxed, want):
            clamped.add("workspace")
        err = boxed - self.pos
        dist = float(np.linalg.norm(err))
        v_des = err / dt
        cap = min(lim.max_speed, math.sqrt(2.0 * lim.max_accel * dist))
        speed = float(np.linalg.norm(v_des))
        if speed > cap + 1e-12:
            v_des *= cap / speed
            if speed > lim.max_speed + 1e-12:
                clamped.add("speed")
        dv = v_des - self.vel
        dv_norm = float(np.linalg.norm(dv))
        if dv_norm > lim.max_accel * dt + 1e-12:
            dv *= lim.max_accel * dt / dv_norm
            clamped.add("accel")
        vel = self.vel + dv
        pos = self.pos + vel * dt
        # never overshoot the desired point along the error direction
        if dist > 0 and float(np.dot(boxed - pos, err)) < 0:
            pos = boxed.copy()
        pos = np.clip(pos, lim.workspace_low, lim.workspace_high)
        if measured_pos is not None:
            m = np.asarray(measured_pos, np.float64)
            led = np.clip(pos, m - lim.max_lead, m + lim.max_lead)
            if not np.array_equal(led, pos):
                clamped.add("lead")
            pos = np.clip(led, lim.workspace_low, lim.workspace_high)
        self.vel = (pos - self.pos) / dt
        self.pos = pos
        if desired_quat is not None:
            self.quat = self._limit_rotation(np.asarray(desired_quat, np.float64), dt, clamped)
        return LimitResult(self.pos.copy(), self.quat.copy(), clamped)

    def _limit_rotation(self, want: np.ndarray, dt: float, clamped: set[str]) -> np.ndarray:
        lim = self.limits
        want = want / np.linalg.norm(want)
        rel = quat_to_rotvec(quat_mul(quat_conj(self.ref_quat), want))  # desired, relative to the reference
        boxed = np.clip(rel, -lim.max_rotation, lim.max_rotation)
        if not np.allclose(boxed, rel, atol=1e-12):
            clamped.add("rotation")
        want = quat_mul(self.ref_quat, rotvec_to_quat(boxed))
        delta = quat_to_rotvec(quat_mul(want, quat_conj(self.quat)))  # world-frame rotation still to go
        angle = float(np.linalg.norm(delta))
        max_step = lim.max_rot_speed * dt
        if angle > max_step + 1e-12:
            delta *= max_step / angle
            clamped.add("rot_speed")
        out = quat_mul(rotvec_to_quat(delta), self.quat)
        return out / np.linalg.norm(out)


# ------------------------------------------------------------------------------------------------ watchdog


class Watchdog:
    """Decides whether the arm must be held, from when state and commands last arrived.

    Times are seconds on any monotonic clock (the supervisor uses the wall clock, so a paused lockstep simulation
    still goes stale when its driver dies). ``state_age`` (s) is the age of the newest state's header stamp on
    the ROS clock, checked separately because a live but lagging sensor is as bad as a silent one.
    """

    def __init__(self, command_timeout: float, state_timeout: float):
        self.command_timeout, self.state_timeout = float(command_timeout), float(state_timeout)
        self.last_state: float | None = None
        self.last_command: float | None = None
        self.state_age = 0.0

    def feed_state(self, now: float, stamp_age: float = 0.0) -> None:
        """A valid state arrived at ``now`` whose header stamp was ``stamp_age`` s old."""
        self.last_state, self.state_age = now, float(stamp_age)

    def feed_command(self, now: float) -> None:
        """A valid command arrived at ``now``."""
        self.last_command = now

    def forget_commands(self) -> None:
        """After a reset: no command source counts as active until the next command."""
        self.last_command = None

    def state_problem(self, now: float) -> str | None:
        """Why the state cannot be trusted now (``None``: it can)."""
        if self.last_state is None:
            return "no robot state received yet"
        if now - self.last_state > self.state_timeout:
            return f"robot state silent for {now - self.last_state:.2f} s (> {self.state_timeout} s)"
        if self.state_age > self.state_timeout:
            return f"robot state stamps {self.state_age:.2f} s old (> {self.state_timeout} s)"
        return None

    def command_problem(self, now: float) -> str | None:
        """Why the command stream counts as silent (``None``: active, or no source since the last reset)."""
        if self.last_command is not None and now - self.last_command > self.command_timeout:
            return f"commands silent for {now - self.last_command:.2f} s (> {self.command_timeout} s)"
        return None


class EStop:
    """Latched emergency stop: :meth:`engage` from a topic or a service, released only by :meth:`release`."""

    def __init__(self) -> None:
        self.engaged = False
        self.reason = ""

    def engage(self, reason: str) -> bool:
        """Engage; returns True if it was not engaged before."""
        was = self.engaged
        self.engaged, self.reason = True, reason
        return not was

    def release(self) -> bool:
        """Release; returns True if it was engaged."""
        was = self.engaged
        self.engaged, self.reason = False, ""
        return was


class RateGate:
    """Lets one pose command through per ``min_period`` s of command stamps; later ones wait (coalesced: only the
    newest waiting command is kept). Stamps are on the ROS clock (sim time in lockstep)."""

    def __init__(self, min_period: float):
        self.min_period = float(min_period)
        self.last: float | None = None

    def open(self, stamp: float) -> bool:
        return self.last is None or stamp - self.last >= self.min_period - 1e-9

    def passed(self, stamp: float) -> None:
        self.last = stamp

    def reset(self) -> None:
        self.last = None
