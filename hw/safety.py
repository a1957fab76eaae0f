"""Pure-Python safety logic of the ROS2 robot path: workspace clamp, speed / acceleration / rotation limits, the
watchdog, the e-stop latch and message validation. No ROS import: the supervisor node
(:mod:`hw.nodes.safety_supervisor`) wraps these, and tests drive them with plain numbers.

Units: positions m (robot base frame), time s, speed m/s, acceleration m/s^2, angles rad, angular speed rad/s.
Quaternions are ``(w, x, y, z)`` numpy arrays here (MuJoCo's order); ROS messages carry ``(x, y, z, w)`` and are
converted at the boundary (:func:`quat_from_xyzw`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# ----------------------------------------------------------------------------------------------- quaternions


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a * b`` of two (4,) wxyz quaternions."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ]
    )


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


def check_pose(
    pos: Sequence[float], quat_wxyz: Sequence[float], frame: str, expected_frame: str, max_abs: float = 10.0
) -> str | None:
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


def check_joint_state(
    names: Sequence[str],
    position: Sequence[float],
    velocity: Sequence[float],
    effort: Sequence[float],
    required: Sequence[str] = (),
) -> str | None:
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
    if not (
        np.all(np.isfinite(np.asarray(position, np.float64))) and np.all(np.isfinite(np.asarray(velocity, np.float64)))
    ):
        return "joint state holds non-finite positions or velocities"
    missing = [j for j in required if j not in names]
    if missing:
        return f"joint state lacks joints {missing}"
    return None


def check_image(
    height: int, width: int, encoding: str, step: int, nbytes: int, expected_hw: tuple[int, int] | None, max_bytes: int
) -> str | None:
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
    """What the supervisor enforces on every output target. Checked on construction (ValueError naming the field).

    Args:
        workspace_low / workspace_high: the box (m, base frame) every target stays in, (3,) each.
        max_speed: target speed limit (m/s, norm over x, y, z), between any two outputs.
        max_accel: target acceleration limit (m/s^2, norm), between any two output velocities.
        max_rot_speed: target angular speed limit (rad/s).
        max_rotation: max rotation of the target from the reference orientation (rad per rotation-vector axis;
            the reference is the measured orientation when the supervisor anchors, i.e. after reset).
        max_lead: max distance per axis between the target and the measured EE position (m): pushing against an
            obstacle cannot wind up unbounded force. A measured pose more than ``2 * max_lead`` from the target
            (per axis) is a fault (collision, sensor error, arm moved by hand): the supervisor holds.
        command_timeout: silence (s) after which the arm is held; also the max age of a command's stamp.
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
        bounds = {
            "max_speed": (1e-3, 3.0),
            "max_accel": (1e-2, 50.0),
            "max_rot_speed": (1e-3, 10.0),
            "max_rotation": (0.0, math.pi),
            "max_lead": (1e-3, 1.0),
            "command_timeout": (1e-3, 60.0),
            "state_timeout": (1e-3, 60.0),
        }
        for name, (a, b) in bounds.items():
            v = float(getattr(self, name))
            if not (a <= v <= b):
                raise ValueError(f"{name}={v} is out of range; valid range is [{a}, {b}]")
            setattr(self, name, v)

    @property
    def max_deviation(self) -> float:
        """Per-axis distance (m) between measured pose and target beyond which the supervisor holds."""
        return 2.0 * self.max_lead


@dataclass
class LimitResult:
    """One limited target: ``pos`` (3,) m, ``quat`` (4,) wxyz, ``clamped`` names the limits that acted
    (subset of workspace, lead, speed, accel, brake, hold, rotation, rot_speed)."""

    pos: np.ndarray
    quat: np.ndarray
    clamped: set[str] = field(default_factory=set)


def _inside(p: np.ndarray, lo: np.ndarray, hi: np.ndarray, eps: float = 1e-9) -> bool:
    return bool(np.all(p >= lo - eps) and np.all(p <= hi + eps))


class MotionLimiter:
    """Turns a stream of goals into a stream of safe targets: one state, one call per output.

    Each :meth:`step` is one output, ``dt`` seconds after the previous one (the caller's clock: wall time, or sim
    time in lockstep; never less than ``min_dt``). Whatever the goals, between any two outputs:

    * the target stays in the workspace box (always);
    * it moves at most ``max_speed * dt`` (m), and its velocity ``(pos' - pos) / dt`` changes by at most
      ``max_accel * dt`` (m/s): a goal behind a moving target is reached by braking, never by a jump;
    * it turns at most ``max_rot_speed * dt`` (rad) and stays within ``max_rotation`` (rad per axis) of the
      anchor orientation;
    * it stays within ``max_lead`` per axis of the measured position whenever that was possible without breaking
      the limits above (the goal is clamped into the lead box; a measured pose that moves faster than the target
      may follow leaves at most the braking distance ``max_speed^2 / (2 max_accel)`` of excess).

    How: the goal is clamped into the workspace and lead boxes; the candidate velocity heads for it, capped by
    ``max_speed`` and by the speed from which the limiter's braking still stops at the goal, and changed by at most
    ``max_accel * dt``. The candidate is taken only if the new position and its stopping point (braking at
    ``max_accel`` with steps of at least ``min_dt``) lie in the boxes; otherwise the target brakes along its current
    direction, which never moves the stopping point (so the workspace box can never be left). Deterministic.
    """

    def __init__(self, limits: SafetyLimits, min_dt: float):
        if not 0 < min_dt <= 10:
            raise ValueError(f"min_dt={min_dt} s must lie in (0, 10]")
        self.limits, self.min_dt = limits, float(min_dt)
        self.pos: np.ndarray | None = None
        self.vel = np.zeros(3)
        self.ref_quat = np.array([1.0, 0.0, 0.0, 0.0])
        self.rel = np.zeros(3)  # rotation vector of the target relative to ref_quat (rad, body frame)

    @property
    def anchored(self) -> bool:
        return self.pos is not None

    @property
    def quat(self) -> np.ndarray:
        """The target orientation, (4,) wxyz."""
        q = quat_mul(self.ref_quat, rotvec_to_quat(self.rel))
        return q / np.linalg.norm(q)

    def anchor_problem(self, pos: np.ndarray) -> str | None:
        """Why the limiter cannot start from measured position ``pos`` (m): it lies more than ``max_lead`` outside
        the workspace box (clamping it in would pull the arm). ``None``: it can."""
        lim = self.limits
        out = np.maximum(lim.workspace_low - pos, 0) + np.maximum(pos - lim.workspace_high, 0)
        if np.any(out > lim.max_lead):
            return (
                f"the TCP at {np.round(pos, 3).tolist()} m lies {float(out.max()):.3f} m outside the workspace box "
                f"(> max_lead {lim.max_lead} m): bring the arm into the box first"
            )
        return None

    def anchor(self, pos: np.ndarray, quat: np.ndarray) -> None:
        """Start at rest from the measured pose (m, wxyz; clamped into the box, see :meth:`anchor_problem`);
        ``quat`` becomes the reference orientation."""
        lim = self.limits
        pos = np.asarray(pos, np.float64)
        if self.anchor_problem(pos) is not None:
            raise ValueError(self.anchor_problem(pos))
        self.pos = np.clip(pos, lim.workspace_low, lim.workspace_high)
        q = np.asarray(quat, np.float64)
        self.ref_quat = q / np.linalg.norm(q)
        self.rel = np.zeros(3)
        self.vel = np.zeros(3)

    def unanchor(self) -> None:
        """Forget the output (after a reset or an e-stop release: the next command anchors at the measured pose)."""
        self.pos = None
        self.vel = np.zeros(3)

    def stop_distance(self, speed: float) -> float:
        """Distance (m) braking at ``max_accel`` from ``speed`` (m/s) covers in steps of ``min_dt``, each moving at the
        speed it ends with (the limiter's own braking); longer steps brake harder per step and cover less."""
        step = self.limits.max_accel * self.min_dt  # speed shed per step (m/s)
        n = math.floor(speed / step + 1e-12)
        return max(0.0, self.min_dt * (n * speed - step * n * (n + 1) / 2))

    def _stop_point(self, pos: np.ndarray, vel: np.ndarray) -> np.ndarray:
        speed = float(np.linalg.norm(vel))
        return pos if speed == 0 else pos + vel * (self.stop_distance(speed) / speed)

    def _reach_cap(self, dist: float, dt: float) -> float:
        """Largest speed v (m/s, <= ``max_speed``) such that one step of ``dt`` at v and then braking from v cover at
        most ``dist`` m (bisection: the distance grows with v)."""

        def covered(v: float) -> float:
            return v * dt + self.stop_distance(v)

        hi = self.limits.max_speed
        if covered(hi) <= dist:
            return hi
        lo = 0.0
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if covered(mid) <= dist else (lo, mid)
        return lo

    def _brake(self, dt: float) -> np.ndarray:
        speed = float(np.linalg.norm(self.vel))
        if speed <= self.limits.max_accel * dt:
            return np.zeros(3)
        return self.vel * (1 - self.limits.max_accel * dt / speed)

    def step(
        self, goal_pos: np.ndarray | None, goal_quat: np.ndarray | None, dt: float, measured_pos: np.ndarray | None
    ) -> LimitResult:
        """One output, ``dt`` s (>= ``min_dt``) after the previous: move toward ``goal_pos`` (m; ``None``: brake to
        rest and stay) and ``goal_quat`` (wxyz; ``None``: keep the orientation) within the limits, given the newest
        measured TCP position (m; ``None``: unknown). Requires :meth:`anchor` first."""
        if self.pos is None:
            raise RuntimeError("MotionLimiter.step before anchor(): no measured pose to start from")
        if not (math.isfinite(dt) and dt >= self.min_dt - 1e-12):
            raise ValueError(f"dt={dt} s must be finite and >= min_dt={self.min_dt} s")
        lim, clamped = self.limits, set()
        lo, hi = lim.workspace_low, lim.workspace_high
        flo, fhi = lo, hi  # the feasible box: workspace and lead box around the measured position
        if measured_pos is not None:
            m = np.asarray(measured_pos, np.float64)
            if not np.all(np.isfinite(m)):
                raise ValueError(f"measured position {m.tolist()} is not finite")
            flo, fhi = np.maximum(lo, m - lim.max_lead), np.minimum(hi, m + lim.max_lead)
            if np.any(fhi < flo):  # the measured pose lies far outside the box: only the workspace binds
                flo, fhi = lo, hi
        if goal_pos is None:
            vel = self._brake(dt)
            clamped.add("hold")
        else:
            want = np.asarray(goal_pos, np.float64)
            if want.shape != (3,) or not np.all(np.isfinite(want)):
                raise ValueError(f"goal position {want.tolist()} must be 3 finite numbers")
            goal = np.clip(want, lo, hi)
            if not np.array_equal(goal, want):
                clamped.add("workspace")
            led = np.clip(goal, flo, fhi)
            if not np.array_equal(led, goal):
                clamped.add("lead")
            err = led - self.pos
            dist = float(np.linalg.norm(err))
            v_des = err / dt
            cap = self._reach_cap(dist, dt)
            speed = dist / dt
            if speed > cap:
                v_des *= cap / speed
                if speed > lim.max_speed:
                    clamped.add("speed")
            dv = v_des - self.vel
            dv_norm = float(np.linalg.norm(dv))
            if dv_norm > lim.max_accel * dt:
                dv *= lim.max_accel * dt / dv_norm
                clamped.add("accel")
            cand = self.vel + dv
            # hold the feasible box strictly while we are in it (the lead box may have moved away from us)
            strict = _inside(self.pos, flo, fhi) and _inside(self._stop_point(self.pos, self.vel), flo, fhi)
            blo, bhi = (flo, fhi) if strict else (lo, hi)
            nxt = self.pos + cand * dt
            if _inside(nxt, blo, bhi) and _inside(self._stop_point(nxt, cand), blo, bhi):
                vel = cand
            else:
                vel = self._brake(dt)
                clamped.add("brake")
        pos = np.clip(self.pos + vel * dt, lo, hi)  # a no-op but for rounding
        self.vel = (pos - self.pos) / dt
        self.pos = pos
        if goal_quat is not None:
            self._turn(np.asarray(goal_quat, np.float64), dt, clamped)
        return LimitResult(self.pos.copy(), self.quat, clamped)

    def _turn(self, want: np.ndarray, dt: float, clamped: set[str]) -> None:
        """Rotate toward ``want`` (wxyz): straight in rotation-vector space relative to the reference, which never
        turns faster on SO(3) than the step's length and stays in the (convex) per-axis box."""
        lim = self.limits
        if want.shape != (4,) or not np.all(np.isfinite(want)) or np.linalg.norm(want) < 1e-6:
            raise ValueError(f"goal orientation {want.tolist()} must be a finite nonzero quaternion")
        rel = quat_to_rotvec(quat_mul(quat_conj(self.ref_quat), want / np.linalg.norm(want)))
        boxed = np.clip(rel, -lim.max_rotation, lim.max_rotation)
        if not np.allclose(boxed, rel, atol=1e-12):
            clamped.add("rotation")
        delta = boxed - self.rel
        angle = float(np.linalg.norm(delta))
        max_step = lim.max_rot_speed * dt
        if angle > max_step:
            delta *= max_step / angle
            clamped.add("rot_speed")
        self.rel = np.clip(self.rel + delta, -lim.max_rotation, lim.max_rotation)


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


# ------------------------------------------------------------------------------------------------- e-stop


class EStop:
    """Latched emergency stop. Anyone may :meth:`engage` it; :meth:`release` is the supervisor's to call once a
    release was authenticated (:class:`ReleaseAuth`).

    ``latch_file``: where the latch persists (JSON, written atomically on every change), so a supervisor that
    restarts while engaged comes up engaged; an unreadable latch file also comes up engaged (fail safe).
    ``None``: not persisted.
    """

    def __init__(self, latch_file: str | os.PathLike | None = None):
        self.latch_file = None if latch_file is None else Path(latch_file)
        self.engaged, self.reason = False, ""
        if self.latch_file is not None and self.latch_file.exists():
            try:
                saved = json.loads(self.latch_file.read_text())
                self.engaged, self.reason = bool(saved["engaged"]), str(saved.get("reason", ""))
                if self.engaged:
                    self.reason = f"latched before a restart: {self.reason}"
            except (OSError, ValueError, KeyError, TypeError) as e:
                self.engaged, self.reason = True, f"latch file {self.latch_file} unreadable ({type(e).__name__})"

    def _save(self) -> None:
        if self.latch_file is None:
            return
        self.latch_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.latch_file.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "w") as f:
            json.dump({"engaged": self.engaged, "reason": self.reason, "time": time.time()}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.latch_file)

    def engage(self, reason: str) -> bool:
        """Engage (and persist); returns True if it was not engaged before."""
        was = self.engaged
        self.engaged, self.reason = True, reason
        self._save()
        return not was

    def release(self) -> bool:
        """Release (and persist); returns True if it was engaged."""
        was = self.engaged
        self.engaged, self.reason = False, ""
        self._save()
        return was


class ReleaseAuth:
    """Challenge-response for releasing the e-stop with a shared key, over plain ROS2 strings.

    The supervisor publishes :attr:`challenge` (a fresh random nonce, changed after every attempt); a release is the
    JSON ``{"nonce", "source", "mac"}`` with ``mac = HMAC-SHA256(key, nonce + "|" + source)`` (:func:`release_token`).
    A recorded release cannot be replayed, and a caller without the key cannot release.
    """

    def __init__(self, key: bytes):
        if len(key) < 16:
            raise ValueError("the e-stop release key must be at least 16 bytes")
        self.key = bytes(key)
        self.challenge = secrets.token_hex(16)

    def check(self, token: str) -> tuple[bool, str]:
        """``(released, source or the reason for refusing)``; every attempt uses up the challenge."""
        nonce, self.challenge = self.challenge, secrets.token_hex(16)
        try:
            msg = json.loads(token)
            source, mac = str(msg["source"])[:200], str(msg["mac"])
            given = str(msg["nonce"])
        except (ValueError, KeyError, TypeError):
            return False, "malformed release request (expected JSON with nonce, source, mac)"
        if not hmac.compare_digest(given, nonce):
            return False, f"stale or wrong challenge (from {source!r}); read safety/estop_challenge and retry"
        if not hmac.compare_digest(mac, _release_mac(self.key, nonce, source)):
            return False, f"wrong key (from {source!r})"
        return True, source


def _release_mac(key: bytes, nonce: str, source: str) -> str:
    return hmac.new(key, f"{nonce}|{source}".encode(), hashlib.sha256).hexdigest()


def release_token(key: bytes, challenge: str, source: str) -> str:
    """The release request for ``challenge``, signed with ``key``; ``source`` (who releases) goes into the log."""
    return json.dumps({"nonce": challenge, "source": source, "mac": _release_mac(key, challenge, source)})


# --------------------------------------------------------------------------------------- the supervisor's core


@dataclass
class Output:
    """A target to publish: ``pos`` (3,) m, ``quat`` (4,) wxyz, ``stamp_ns`` (ROS clock; sim time in lockstep),
    ``clamped`` (the limits that acted), ``kind``: "step" (a limited step; in lockstep it steps the driver once),
    "repeat" (the previous output again, same stamp) or "estop" (the measured pose, on engaging the e-stop)."""

    pos: np.ndarray
    quat: np.ndarray
    stamp_ns: int
    clamped: frozenset[str] = frozenset()
    kind: str = "step"


class SupervisorCore:
    """Every decision of the safety supervisor, without ROS: what to do with each state, command and clock tick.

    Times: ``now_ns`` is the ROS clock (ns; ignored in lockstep, where "now" is the newest state stamp, i.e. sim
    time); ``mono`` is a monotonic wall clock (s) for the watchdog. Each callback returns what to publish and why a
    message was refused; the node (:mod:`hw.nodes.safety_supervisor`) only converts messages and publishes.

    One goal, one limiter, one output stream:

    * realtime: a pose command replaces the goal, a fresh twist moves it from the current target (``lin * dt``,
      ``ang * dt``; the newer of the two sources wins). Each pose command and each :meth:`tick` (a timer,
      ``output_period``) emits one limited step with ``dt`` = the time since the previous output on the supervisor's
      own clock (at least 2 ms apart: a faster command waits for the next tick). However fast, bursty or
      future-stamped the commands, the outputs are limited against the supervisor's own clock.
    * lockstep (a simulator that steps once per target): each pose command with a new stamp emits one step of
      ``control_period`` (the sim's step); a command repeating the previous stamp repeats the previous output,
      so a client may re-send a command it has no answer to without stepping the sim twice. Twists are refused.
      State silence is reported but does not refuse commands (the sim is paused by design between steps).

    Holding (state silent or stale, commands silent, measured pose too far from the target): the target brakes to
    rest at ``max_accel`` and stays. E-stop: the target jumps to the measured pose (the arm stops where it is) and
    every command is refused until an authenticated release.
    """

    def __init__(
        self,
        limits: SafetyLimits,
        *,
        lockstep: bool = False,
        output_period: float = 0.02,
        control_period: float = 0.1,
        future_tolerance: float = 0.05,
        twist_timeout: float = 0.25,
        estop: EStop | None = None,
    ):
        self.limits, self.lockstep = limits, bool(lockstep)
        if not 1e-4 <= output_period <= 1.0 or not 1e-3 <= control_period <= 10.0:
            raise ValueError(
                f"output_period={output_period} s must lie in [1e-4, 1], control_period="
                f"{control_period} s in [1e-3, 10]"
            )
        if not 0 <= future_tolerance <= 0.5:
            raise ValueError(f"future_tolerance={future_tolerance} s must lie in [0, 0.5]")
        self.period_ns = int(round((control_period if lockstep else output_period) * 1e9))
        # the shortest time between two outputs: a whole sim step in lockstep; realtime, a pose command is answered at
        # once unless the previous output is younger than this (then the next tick takes it)
        self.limiter = MotionLimiter(limits, control_period if lockstep else min(0.5 * output_period, 0.002))
        self.watchdog = Watchdog(limits.command_timeout, limits.state_timeout)
        self.estop = estop or EStop()
        # lockstep: a client may see the sim's next state (and stamp a command with it) before we do
        self.future_ns = int((future_tolerance + (control_period if lockstep else 0.0)) * 1e9)
        self.twist_timeout = float(twist_timeout)
        self.measured: tuple[np.ndarray, np.ndarray, int] | None = None  # pos, quat, stamp_ns
        self.goal: tuple[np.ndarray, np.ndarray, int] | None = None  # pos, quat, arrival number
        self.twist: tuple[np.ndarray, np.ndarray, float, int] | None = None  # lin, ang, arrival mono, number
        self.arrivals = 0
        self.last_cmd_ns: int | None = None
        self.last: Output | None = None  # the previous output
        self.pending_ns: int | None = None  # lockstep: a command stamped after the newest state, waiting for it
        self.anchor_out: Output | None = None  # where the current chain of outputs started (at rest)
        self.min_anchor_ns = -1  # after a reset: anchor only on state newer than this
        self.hold_reason = "starting"

    # ------------------------------------------------------------------------------------------- clocks
    def now(self, now_ns: int) -> int:
        """The supervisor's "now" (ns): the ROS clock, or the newest state stamp in lockstep."""
        if self.lockstep:
            return self.measured[2] if self.measured is not None else 0
        return int(now_ns)

    def problem(self, mono: float, motion: bool = False) -> str:
        """Why the arm is held now ("" if it is not): e-stop, state, commands, deviation. ``motion``: only what
        stops motion (in lockstep, wall-clock silence of a paused sim does not)."""
        if self.estop.engaged:
            return f"e-stop ({self.estop.reason})"
        bad = self.watchdog.state_problem(mono)
        if bad and not (motion and self.lockstep):
            return bad
        if not self.lockstep:
            bad = self.watchdog.command_problem(mono)
            if bad:
                return bad
        return self._deviation() or ""

    def _deviation(self) -> str | None:
        if self.measured is None or not self.limiter.anchored:
            return None
        dev = float(np.max(np.abs(self.measured[0] - self.limiter.pos)))
        if dev > self.limits.max_deviation:
            return (
                f"measured TCP {dev:.3f} m from the target (> {self.limits.max_deviation:.3f} m = 2 max_lead): "
                "collision, sensor fault or the arm was moved"
            )
        return None

    def may_command(self, mono: float) -> str | None:
        """Why commands are refused now (``None``: accepted): e-stop, or (realtime) a state that cannot be trusted."""
        if self.estop.engaged:
            return f"e-stop engaged ({self.estop.reason})"
        if not self.lockstep:
            bad = self.watchdog.state_problem(mono)
            if bad:
                return f"holding: {bad}"
        return None

    def _check_stamp(self, stamp_ns: int, now_ns: int) -> str | None:
        age = (self.now(now_ns) - stamp_ns) / 1e9
        if age > self.limits.command_timeout:
            return f"stale command: stamp {age:.3f} s old (> command_timeout {self.limits.command_timeout} s)"
        if -age * 1e9 > self.future_ns:
            return (
                f"command stamp {-age:.3f} s in the future (> future_tolerance {self.future_ns / 1e9} s): "
                "check the sender's clock (chrony/NTP) or its use of sim time"
            )
        return None

    # ---------------------------------------------------------------------------------------- messages
    def on_state(self, pos: np.ndarray, quat: np.ndarray, stamp_ns: int, now_ns: int, mono: float) -> Output | None:
        """A valid measured TCP pose (m, wxyz) stamped ``stamp_ns``; in lockstep, the output of a command that
        waited for this state (None otherwise)."""
        if self.measured is not None and stamp_ns < self.measured[2]:
            return None  # older than what we have (a heartbeat overtaken by a step): keep the newest
        self.measured = (np.asarray(pos, np.float64), np.asarray(quat, np.float64), int(stamp_ns))
        self.watchdog.feed_state(mono, max(0.0, (self.now(now_ns) - stamp_ns) / 1e9))
        if self.pending_ns is not None and stamp_ns >= self.pending_ns:
            return self._lockstep_output(mono)
        return None

    def on_pose(
        self, pos: np.ndarray, quat: np.ndarray, stamp_ns: int, now_ns: int, mono: float
    ) -> tuple[str | None, Output | None]:
        """A pose command (m, wxyz): ``(reason it was refused or None, output to publish now (lockstep) or None)``."""
        pos, quat = np.asarray(pos, np.float64), np.asarray(quat, np.float64)
        if pos.shape != (3,) or quat.shape != (4,) or not (np.all(np.isfinite(pos)) and np.all(np.isfinite(quat))):
            return "pose command must be a finite position (3,) and quaternion (4,)", None
        why = self._check_stamp(stamp_ns, now_ns) or self.may_command(mono)
        if why:
            return why, None
        if self.last_cmd_ns is not None and stamp_ns < self.last_cmd_ns:
            return "command older than the previous one (out of order)", None
        self.last_cmd_ns = int(stamp_ns)
        self.watchdog.feed_command(mono)
        self.arrivals += 1
        self.goal = (pos, quat / np.linalg.norm(quat), self.arrivals)
        if not self.lockstep:  # answer at once (low latency); the timer keeps the stream going
            return None, self.tick(now_ns, mono)
        if self.last is not None and stamp_ns == self.last.stamp_ns and self.last.kind != "estop":
            return None, Output(self.last.pos, self.last.quat, self.last.stamp_ns, frozenset(), "repeat")
        self.pending_ns = int(stamp_ns)
        if self.measured is None or self.measured[2] < stamp_ns:
            return None, None  # the state of that instant is still on its way: answer when it arrives
        return None, self._lockstep_output(mono)

    def _lockstep_output(self, mono: float) -> Output | None:
        """The step for the pending command, from the state of its instant (deterministic whatever the arrival
        order of state and command)."""
        stamp, self.pending_ns = self.pending_ns, None
        if self._anchor(stamp):
            return None
        return self._output(stamp, mono)

    def on_twist(self, lin: np.ndarray, ang: np.ndarray, stamp_ns: int, now_ns: int, mono: float) -> str | None:
        """A twist command (m/s, rad/s, base frame); the reason it was refused, or None."""
        if self.lockstep:
            return "twist commands need a realtime robot (lockstep steps once per pose command)"
        lin, ang = np.asarray(lin, np.float64), np.asarray(ang, np.float64)
        if lin.shape != (3,) or ang.shape != (3,) or not (np.all(np.isfinite(lin)) and np.all(np.isfinite(ang))):
            return "twist must be finite linear (3,) and angular (3,) velocities"
        why = self._check_stamp(stamp_ns, now_ns) or self.may_command(mono)
        if why:
            return why
        self.watchdog.feed_command(mono)
        self.arrivals += 1
        self.twist = (lin, ang, mono, self.arrivals)
        return None

    # ----------------------------------------------------------------------------------------- outputs
    def _anchor(self, now: int) -> str | None:
        if self.limiter.anchored:
            return None
        if self.measured is None or self.measured[2] <= self.min_anchor_ns:
            return "no robot state since the last reset yet"
        why = self.limiter.anchor_problem(self.measured[0])
        if why:
            return why
        self.limiter.anchor(self.measured[0], self.measured[1])
        # the anchor is a virtual output one period ago, at rest: the first real one is a full period later
        self.last = self.anchor_out = Output(
            self.limiter.pos.copy(), self.limiter.quat, now - self.period_ns, frozenset(), "anchor"
        )
        return None

    def _output(self, stamp: int, mono: float) -> Output | None:
        dt = (stamp - self.last.stamp_ns) / 1e9
        if dt < self.limiter.min_dt - 1e-9:
            return None
        hold = self.problem(mono, motion=True)
        measured = self.measured[0] if self.measured is not None else None
        goal_pos = goal_quat = None
        if not hold:
            twist = self.twist
            if twist is not None and mono - twist[2] > self.twist_timeout:
                twist = self.twist = None  # a silent twist source counts as zero
            if twist is not None and (self.goal is None or twist[3] > self.goal[2]):
                goal_pos = self.limiter.pos + twist[0] * dt
                goal_quat = quat_mul(rotvec_to_quat(twist[1] * dt), self.limiter.quat)
            elif self.goal is not None:
                goal_pos, goal_quat = self.goal[0], self.goal[1]
        res = self.limiter.step(goal_pos, goal_quat, dt, measured)
        self.last = Output(res.pos, res.quat, stamp, frozenset(res.clamped))
        return self.last

    def tick(self, now_ns: int, mono: float) -> Output | None:
        """Realtime timer: the next output (None in lockstep, before the first command after a reset, or when less
        than half an output period passed since the previous one). Holds brake here."""
        if self.lockstep:
            return None
        now = self.now(now_ns)
        if not self.limiter.anchored:
            if self.goal is None and self.twist is None:
                return None
            if self._anchor(now):
                return None
        if self.estop.engaged:
            if self.last is None or now - self.last.stamp_ns < self.limiter.min_dt * 1e9:
                return None
            self.last = Output(self.last.pos, self.last.quat, now, frozenset({"estop"}), "repeat")
            return self.last
        return self._output(now, mono)

    def update_hold(self, mono: float) -> tuple[str, str] | None:
        """Recompute the hold reason (call on every timer tick, before :meth:`tick`); ``(old, new)`` when its kind
        changed, for the node to log and publish. Entering a hold drops the commands in flight: motion resumes only
        on new ones."""
        reason = self.problem(mono)
        if _kind(reason) == _kind(self.hold_reason):
            self.hold_reason = reason
            return None
        old, self.hold_reason = self.hold_reason, reason
        if reason and not old and not self.lockstep:  # (lockstep: each command is answered on its own)
            self.goal, self.twist = None, None
        return old, reason

    # ----------------------------------------------------------------------------------- e-stop, reset
    def engage(self, source: str, now_ns: int) -> tuple[bool, Output | None]:
        """Engage the e-stop: ``(newly engaged, the hold target at the measured pose or None if none is known)``."""
        new = self.estop.engage(source)
        self.goal, self.twist, self.pending_ns = None, None, None
        if self.measured is None or self.limiter.anchor_problem(self.measured[0]) is not None:
            self.limiter.unanchor()
            return new, None
        self.limiter.anchor(self.measured[0], self.measured[1])
        self.last = Output(self.limiter.pos.copy(), self.limiter.quat, self.now(now_ns), frozenset({"estop"}), "estop")
        return new, self.last

    def release(self) -> bool:
        """Release the e-stop (the caller authenticated it); the next command anchors at the measured pose."""
        was = self.estop.release()
        self.limiter.unanchor()
        self.goal, self.twist, self.last, self.pending_ns = None, None, None, None
        return was

    def after_reset(self, call_ns: int) -> None:
        """The driver reset the robot: forget the target and the commands; anchor on state newer than ``call_ns``."""
        self.limiter.unanchor()
        self.watchdog.forget_commands()
        self.goal, self.twist, self.last_cmd_ns, self.last, self.pending_ns = None, None, None, None, None
        self.min_anchor_ns = int(call_ns)


def _kind(reason: str) -> str:
    """A hold reason without its numbers, so a growing silence does not count as a new reason."""
    return re.sub(r"[-+]?\d[\d.e+-]*", "#", reason)
