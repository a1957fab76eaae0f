"""Property-based tests of the supervisor's safety logic (hw/safety.py, no ROS): whatever arrives, the output stream
keeps the limits in time.

Hypothesis generates streams of robot states, pose and twist commands (any rate from bursts to 1 Hz, stamps in the
future, in the past and out of order, NaN), measured poses that follow, stick, jump or go silent, e-stops, releases
and resets, and feeds them to :class:`hw.safety.SupervisorCore` with a simulated clock. The invariants are checked on
the outputs, between any two consecutive outputs of one motion (from an anchor to the next reset / e-stop), against
the time between their stamps:

* inside the workspace box;
* speed <= max_speed, change of velocity <= max_accel * dt (the anchor counts as an output at rest);
* turn <= max_rot_speed * dt, rotation from the anchor orientation <= max_rotation per axis;
* within max_lead of the measured pose when the robot is stuck, and within max_lead plus the braking distance when it
  follows the target with lag;
* lockstep: one output per new command stamp, the same outputs whatever the arrival order of states and commands.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hw.safety import (
    EStop,
    MotionLimiter,
    Output,
    ReleaseAuth,
    SafetyLimits,
    SupervisorCore,
    quat_angle,
    quat_conj,
    quat_mul,
    quat_to_rotvec,
    release_token,
    rotvec_to_quat,
)

TOL = 1e-7
DOWN = np.array([1.0, 0.0, 0.0, 0.0])
PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

finite = st.floats(-2.0, 2.0, allow_nan=False)
maybe_nan = st.one_of(finite, finite, finite, st.just(float("nan")), st.just(float("inf")))
vec3 = st.tuples(maybe_nan, maybe_nan, maybe_nan).map(np.array)
small_rot = st.tuples(*[st.floats(-2.5, 2.5)] * 3).map(lambda r: rotvec_to_quat(np.array(r)))

limits_st = st.builds(
    SafetyLimits,
    max_speed=st.floats(0.05, 2.0),
    max_accel=st.floats(0.5, 20.0),
    max_rot_speed=st.floats(0.1, 5.0),
    max_rotation=st.floats(0.05, 1.5),
    max_lead=st.floats(0.01, 0.3),
    command_timeout=st.floats(0.1, 2.0),
    state_timeout=st.floats(0.1, 1.0),
)

event = st.one_of(
    st.tuples(st.just("pose"), vec3, small_rot, st.floats(-1.0, 0.3)),  # position, orientation, stamp offset (s)
    st.tuples(st.just("pose"), vec3, small_rot, st.floats(-0.02, 0.02)),
    st.tuples(
        st.just("twist"),
        st.tuples(*[st.floats(-3, 3)] * 3).map(np.array),
        st.tuples(*[st.floats(-4, 4)] * 3).map(np.array),
        st.floats(-0.1, 0.1),
    ),
    st.tuples(st.just("wait"), st.floats(0.0005, 0.3)),  # time passes (ticks happen at the output period)
    st.tuples(st.just("jump"), st.tuples(*[st.floats(-0.4, 0.4)] * 3).map(np.array)),  # the measured pose jumps
    st.tuples(st.just("silent"), st.floats(0.1, 1.5)),  # no state for a while
    st.tuples(
        st.just("estop"),
    ),
    st.tuples(
        st.just("release"),
    ),
    st.tuples(
        st.just("reset"),
    ),
)


# well-formed commands near the workspace and pauses: the robot models of the lead tests then see real motion
goals_and_waits = st.lists(
    st.one_of(
        st.tuples(st.just("pose"), st.tuples(*[st.floats(0.0, 1.0)] * 3).map(np.array), small_rot, st.just(0.0)),
        st.tuples(st.just("wait"), st.floats(0.01, 0.5)),
    ),
    max_size=30,
)


class Chain:
    """Checks the invariants between consecutive outputs of one motion (anchor -> reset / e-stop / release)."""

    def __init__(self, lim: SafetyLimits):
        self.lim = lim
        self.prev: Output | None = None
        self.vel = np.zeros(3)
        self.ref: np.ndarray | None = None
        self.count = 0

    def restart(self, anchor: Output) -> None:
        self.prev, self.vel, self.ref = anchor, np.zeros(3), anchor.quat

    def check(self, out: Output) -> None:
        lim = self.lim
        assert np.all(np.isfinite(out.pos)) and np.all(np.isfinite(out.quat))
        assert np.all(out.pos >= lim.workspace_low - TOL) and np.all(out.pos <= lim.workspace_high + TOL), out
        if out.kind in ("estop", "repeat"):
            return
        p = self.prev
        assert p is not None, "an output before any anchor"
        dt = (out.stamp_ns - p.stamp_ns) / 1e9
        assert dt > 0, f"output stamps not increasing: {p.stamp_ns} -> {out.stamp_ns}"
        step = out.pos - p.pos
        v = step / dt
        assert np.linalg.norm(v) <= lim.max_speed * (1 + 1e-9) + TOL, f"speed {np.linalg.norm(v)} > {lim.max_speed}"
        dv = float(np.linalg.norm(v - self.vel))
        assert dv <= lim.max_accel * dt * (1 + 1e-6) + 1e-6, f"accel {dv / dt} > {lim.max_accel} (dt {dt})"
        turn = quat_angle(p.quat, out.quat)
        assert turn <= lim.max_rot_speed * dt + 1e-6, f"turned {turn} rad in {dt} s"
        rel = quat_to_rotvec(quat_mul(quat_conj(self.ref), out.quat))
        assert np.all(np.abs(rel) <= lim.max_rotation + 1e-6), f"rotation {rel} beyond {lim.max_rotation}"
        self.prev, self.vel = out, v
        self.count += 1


def run_realtime(lim: SafetyLimits, events, robot: str = "follow", output_period: float = 0.02):
    """Feed ``events`` to a realtime core; the measured pose ``robot``: "follow" (first-order lag toward the target),
    "stuck" (never moves). Returns the chain checker and per-output (output, measured position) pairs."""
    core = SupervisorCore(lim, output_period=output_period, future_tolerance=0.05)
    chain = Chain(lim)
    t = 1_000_000_000_000  # ns on the ROS clock
    meas = np.array([0.5, 0.0, 0.2])
    state_quiet_until = -1
    history = []
    anchor = None

    def mono() -> float:
        return t / 1e9

    def publish_state() -> None:
        if t >= state_quiet_until:
            core.on_state(meas, DOWN, t, t, mono())

    def emit(out: Output | None) -> None:
        nonlocal anchor, meas
        if core.anchor_out is not anchor and core.anchor_out is not None:
            anchor = core.anchor_out
            chain.restart(anchor)
        if out is None:
            return
        chain.check(out)
        history.append((out, meas.copy()))
        if robot == "follow":
            meas = meas + 0.3 * (out.pos - meas)

    def advance(seconds: float) -> None:
        nonlocal t
        end = t + int(seconds * 1e9)
        while t < end:
            t = min(end, t + int(output_period * 1e9))
            publish_state()
            core.update_hold(mono())
            emit(core.tick(t, mono()))

    publish_state()
    for ev in events:
        kind = ev[0]
        if kind == "pose":
            emit(core.on_pose(ev[1], ev[2], t + int(ev[3] * 1e9), t, mono())[1])
        elif kind == "twist":
            core.on_twist(ev[1], ev[2], t + int(ev[3] * 1e9), t, mono())
        elif kind == "wait":
            advance(ev[1])
        elif kind == "jump":
            meas = meas + ev[1]
            publish_state()
        elif kind == "silent":
            state_quiet_until = t + int(ev[1] * 1e9)
            advance(ev[1] + 0.05)
        elif kind == "estop":
            _, out = core.engage("test", t)
            if out is not None:
                chain.check(out)
            chain.prev = None
        elif kind == "release":
            core.release()
            chain.prev = None
        elif kind == "reset":
            core.after_reset(t)
            chain.prev = None
        advance(0.0)
    advance(0.5)
    return chain, history


@PROPS
@given(limits_st, st.lists(event, max_size=40))
def test_any_command_stream_keeps_box_speed_accel_rotation(lim, events):
    run_realtime(lim, events)


@PROPS
@given(
    limits_st,
    st.lists(st.one_of(event, event.filter(lambda e: e[0] == "pose")), max_size=30),
    st.sampled_from([0.001, 0.002, 0.01, 0.02, 0.1]),
)
def test_any_output_rate_keeps_the_limits(lim, events, period):
    """The same invariants with the output timer anywhere from 1 kHz to 10 Hz."""
    run_realtime(lim, events, output_period=period)


@PROPS
@given(limits_st, goals_and_waits)
def test_target_stays_within_lead_of_a_stuck_robot(lim, events):
    _, history = run_realtime(lim, events, robot="stuck")
    for out, meas in history:
        assert np.all(np.abs(out.pos - meas) <= lim.max_lead + TOL), (out.pos, meas)


@PROPS
@given(limits_st, goals_and_waits)
def test_target_lead_over_a_lagging_robot_is_bounded_by_braking(lim, events):
    _, history = run_realtime(lim, events, robot="follow")
    brake = lim.max_speed**2 / (2 * lim.max_accel)
    for out, meas in history:
        assert np.all(np.abs(out.pos - meas) <= lim.max_lead + brake + TOL), (out.pos, meas)


def test_fifty_hertz_commands_toward_a_far_goal_move_at_max_speed():
    """The case that broke before: pose commands at 50 Hz toward a far goal give outputs at max_speed, not 1.7x."""
    lim = SafetyLimits(max_speed=0.5, max_accel=5.0, max_lead=1.0, command_timeout=1.0)
    events = []
    for _ in range(100):
        events += [
            ("pose", np.array([0.7, 0.25, 0.4]), DOWN, 0.0),
            ("twist", np.array([3.0, 0, 0]), np.zeros(3), 0.0),
            ("wait", 0.02),
        ]
    _, history = run_realtime(lim, events, robot="follow")
    pos = np.array([o.pos for o, _ in history])
    stamps = np.array([o.stamp_ns for o, _ in history]) / 1e9
    speed = np.linalg.norm(np.diff(pos, axis=0), axis=1) / np.diff(stamps)
    assert speed.max() <= 0.5 + 1e-9 and speed.max() > 0.45


# --------------------------------------------------------------------------------------------------- lockstep
def run_lockstep(lim: SafetyLimits, goals, order, period: float = 0.1) -> np.ndarray:
    """A lockstep client: one command per step, stamped with the newest state it saw; the sim steps once per output
    with a new stamp. ``order[k % len(order)]``: whether the state of step k reaches the supervisor before the
    command of step k (else just after it). ``goals``: (position, whether the client re-sends the command)."""
    core = SupervisorCore(lim, lockstep=True, control_period=period)
    chain = Chain(lim)
    sim_ns = 1000 * 10**9
    meas = np.array([0.5, 0.0, 0.2])
    core.on_state(meas, DOWN, sim_ns, 0, 0.0)
    undelivered = None
    outs = []
    for k, (goal, resend) in enumerate(goals):
        if undelivered is not None and order[k % len(order)]:
            assert core.on_state(undelivered, DOWN, sim_ns, 0, 0.0) is None
            undelivered = None
        why, out = core.on_pose(goal, DOWN, sim_ns, 0, 0.0)
        assert why is None, why
        if out is None:  # waiting for the state of this instant
            assert undelivered is not None
            out = core.on_state(undelivered, DOWN, sim_ns, 0, 0.0)
            undelivered = None
        if k == 0:
            chain.restart(core.anchor_out)
        assert out is not None and out.kind == "step" and out.stamp_ns == sim_ns
        chain.check(out)
        if resend:
            _, again = core.on_pose(goal, DOWN, sim_ns, 0, 0.0)
            assert again.kind == "repeat" and np.array_equal(again.pos, out.pos)
        outs.append(out.pos)
        meas = meas + 0.6 * (out.pos - meas)  # the sim steps once
        sim_ns += int(period * 1e9)
        undelivered = meas.copy()
    return np.array(outs)


@settings(max_examples=150, deadline=None)
@given(
    limits_st,
    st.lists(st.tuples(st.tuples(*[st.floats(0.0, 1.0)] * 3).map(np.array), st.booleans()), min_size=1, max_size=25),
    st.lists(st.booleans(), min_size=1, max_size=5),
)
def test_lockstep_one_step_per_command_deterministic_whatever_the_arrival_order(lim, goals, order):
    a = run_lockstep(lim, goals, [True])
    b = run_lockstep(lim, goals, order)
    np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------------------------------- e-stop
@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_release_needs_the_key(token):
    auth = ReleaseAuth(b"k" * 32)
    assert auth.check(token)[0] is False
    forged = release_token(b"x" * 32, auth.challenge, "intruder")
    assert auth.check(forged) == (False, "wrong key (from 'intruder')")


def test_release_with_the_key_once_and_never_replayed():
    auth = ReleaseAuth(b"k" * 32)
    token = release_token(b"k" * 32, auth.challenge, "operator console")
    assert auth.check(token) == (True, "operator console")
    ok, why = auth.check(token)
    assert not ok and "challenge" in why


def test_estop_latch_survives_a_restart(tmp_path):
    latch = tmp_path / "estop.json"
    e = EStop(latch)
    assert not e.engaged
    e.engage("test button")
    again = EStop(latch)
    assert again.engaged and "test button" in again.reason
    again.release()
    assert not EStop(latch).engaged
    latch.write_text("{not json")
    broken = EStop(latch)
    assert broken.engaged and "unreadable" in broken.reason


def test_estop_holds_the_measured_pose_and_refuses_commands():
    lim = SafetyLimits()
    core = SupervisorCore(lim)
    core.on_state(np.array([0.5, 0.0, 0.2]), DOWN, 10**12, 10**12, 1000.0)
    new, out = core.engage("estop topic", 10**12)
    assert new and out.kind == "estop" and np.allclose(out.pos, [0.5, 0.0, 0.2])
    why, _ = core.on_pose(np.array([0.6, 0.0, 0.2]), DOWN, 10**12, 10**12, 1000.0)
    assert "e-stop" in why
    assert core.on_twist(np.ones(3), np.zeros(3), 10**12, 10**12, 1000.0).startswith("e-stop")


def test_limiter_arguments_are_checked():
    lim = MotionLimiter(SafetyLimits(), min_dt=0.01)
    with pytest.raises(RuntimeError, match="anchor"):
        lim.step(np.zeros(3), None, 0.02, None)
    lim.anchor(np.array([0.5, 0.0, 0.2]), DOWN)
    with pytest.raises(ValueError, match="min_dt"):
        lim.step(np.zeros(3), None, 0.001, None)
    with pytest.raises(ValueError, match="finite"):
        lim.step(np.array([math.nan, 0, 0]), None, 0.02, None)
    assert "outside the workspace" in lim.anchor_problem(np.array([2.0, 0.0, 0.2]))
