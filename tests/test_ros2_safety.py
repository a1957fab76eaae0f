"""Safety logic of the ROS2 robot path, without ROS: limits, watchdog, e-stop, validation, stamp alignment."""

import math

import numpy as np
import pytest

from hw.safety import (
    EStop,
    MotionLimiter,
    SafetyLimits,
    Watchdog,
    check_image,
    check_joint_state,
    check_pose,
    check_vector,
    quat_angle,
    quat_mul,
    quat_to_rotvec,
    rotvec_to_quat,
)
from hw.timesync import StampedBuffer, align, staleness_report

DOWN = np.array([1.0, 0, 0, 0])


def limiter(**kw):
    lim = MotionLimiter(SafetyLimits(**kw), min_dt=0.1)
    lim.anchor(np.array([0.5, 0.0, 0.2]), DOWN)
    return lim


def test_limits_validate_on_construction():
    with pytest.raises(ValueError, match="workspace_high"):
        SafetyLimits(workspace_low=(0.5, 0, 0), workspace_high=(0.4, 1, 1))
    with pytest.raises(ValueError, match="max_speed"):
        SafetyLimits(max_speed=-1)
    with pytest.raises(ValueError, match="3 finite"):
        SafetyLimits(workspace_low=(0, 0))


def test_workspace_clamp_and_lead():
    lim = limiter(max_speed=3.0, max_accel=50.0, max_lead=0.1)
    out = lim.step(np.array([0.5, 0.0, -1.0]), None, 0.1, measured_pos=None)
    assert out.pos[2] == pytest.approx(0.05) and "workspace" in out.clamped  # floor of the box
    lim = limiter(max_speed=3.0, max_accel=50.0, max_lead=0.05)
    out = lim.step(np.array([0.7, 0.0, 0.2]), None, 0.1, measured_pos=np.array([0.5, 0.0, 0.2]))
    assert out.pos[0] == pytest.approx(0.55) and "lead" in out.clamped


def test_speed_and_accel_limits():
    lim = limiter(max_speed=0.2, max_accel=1.0, max_lead=1.0)
    far = np.array([0.7, 0.0, 0.2])
    prev, speeds = lim.pos.copy(), []
    for _ in range(30):
        out = lim.step(far, None, 0.1, measured_pos=None)
        speeds.append(np.linalg.norm(out.pos - prev) / 0.1)
        prev = out.pos.copy()
    speeds = np.array(speeds)
    assert speeds.max() <= 0.2 + 1e-9
    assert np.all(np.abs(np.diff(np.concatenate([[0.0], speeds]))) <= 1.0 * 0.1 + 1e-9)  # |dv| <= a dt
    assert speeds[0] == pytest.approx(0.1)  # 0 -> 0.1 m/s in one 0.1 s period at 1 m/s^2
    assert lim.pos[0] == pytest.approx(0.7, abs=1e-6)  # arrives, without overshoot
    first = limiter(max_speed=0.2, max_accel=1.0).step(far, None, 0.1, None)
    assert {"speed", "accel"} <= first.clamped


def test_small_moves_pass_unchanged_and_are_deterministic():
    a, b = limiter(), limiter()
    for k in range(5):
        goal = np.array([0.5 + 0.01 * k, 0.0, 0.2])
        oa, ob = a.step(goal, DOWN, 0.1, goal), b.step(goal, DOWN, 0.1, goal)
        assert np.array_equal(oa.pos, ob.pos)
    assert oa.pos == pytest.approx(goal) and not oa.clamped


def test_rotation_speed_and_range():
    lim = limiter(max_rot_speed=1.0, max_rotation=0.5)
    want = rotvec_to_quat(np.array([0.0, 0.0, 1.2]))
    out = lim.step(lim.pos, want, 0.1, None)
    assert quat_angle(DOWN, out.quat) == pytest.approx(0.1) and "rot_speed" in out.clamped
    for _ in range(20):
        out = lim.step(lim.pos, want, 0.1, None)
    assert quat_to_rotvec(out.quat)[2] == pytest.approx(0.5) and "rotation" in out.clamped


def test_quaternion_helpers_roundtrip():
    rv = np.array([0.3, -0.2, 0.9])
    assert quat_to_rotvec(rotvec_to_quat(rv)) == pytest.approx(rv)
    q = quat_mul(rotvec_to_quat(np.array([0, 0, math.pi / 2])), rotvec_to_quat(np.array([0, 0, math.pi / 2])))
    assert quat_to_rotvec(q) == pytest.approx([0, 0, math.pi])


def test_watchdog_state_and_command_silence():
    w = Watchdog(command_timeout=0.5, state_timeout=0.3)
    assert "no robot state" in w.state_problem(0.0)
    w.feed_state(10.0)
    assert w.state_problem(10.2) is None
    assert "silent" in w.state_problem(10.4)
    w.feed_state(10.4, stamp_age=0.9)  # arrives, but measured long ago
    assert "stamps" in w.state_problem(10.4)
    assert w.command_problem(100.0) is None  # no command source yet: nothing to hold for
    w.feed_command(11.0)
    assert w.command_problem(11.4) is None and "commands silent" in w.command_problem(11.6)
    w.forget_commands()
    assert w.command_problem(50.0) is None


def test_estop_latches():
    e = EStop()
    assert e.engage("topic") and not e.engage("service") and e.engaged
    assert e.release() and not e.engaged


def test_validation_rejects_malformed():
    assert check_pose([0.5, 0, 0.2], DOWN, "base", "base") is None
    assert "non-finite" in check_pose([np.nan, 0, 0.2], DOWN, "base", "base")
    assert "frame_id" in check_pose([0.5, 0, 0.2], DOWN, "world", "base")
    assert "quaternion norm" in check_pose([0.5, 0, 0.2], [0, 0, 0, 0], "base", "base")
    assert "more than" in check_pose([50, 0, 0.2], DOWN, "base", "base")
    assert check_joint_state(["a", "b"], [0, 1], [], [], required=["a"]) is None
    assert "oversized" in check_joint_state([f"j{i}" for i in range(100)], [0.0] * 100, [], [])
    assert "positions" in check_joint_state(["a", "b"], [0.0], [], [])
    assert "velocities" in check_joint_state(["a"], [0.0], [1.0, 2.0], [])
    assert "non-finite" in check_joint_state(["a"], [np.inf], [], [])
    assert "lacks" in check_joint_state(["a"], [0.0], [], [], required=["finger_left"])
    assert "expected 6" in check_vector("task", [1.0] * 5, 6)
    assert check_image(64, 64, "rgb8", 192, 64 * 64 * 3, (64, 64), 10**6) is None
    assert "oversized" in check_image(4000, 4000, "rgb8", 12000, 48 * 10**6, (64, 64), 10**6)
    assert "encoding" in check_image(64, 64, "bgra8", 256, 64 * 256, (64, 64), 10**6)
    assert "expected 64x64" in check_image(32, 32, "rgb8", 96, 32 * 96, (64, 64), 10**6)
    assert "do not match" in check_image(64, 64, "rgb8", 192, 100, (64, 64), 10**6)


def test_align_picks_newest_complete_set_within_tolerance():
    pose, img = StampedBuffer("pose"), StampedBuffer("img")
    for t in (100, 200, 300):
        pose.add(t, f"p{t}")
    img.add(195, "i195")
    img.add(260, "i260")  # 40 from 300: outside a tolerance of 10
    assert align(pose, {"img": img}, after_ns=0, tol_ns=10, trigger_key="pose") == (
        200,
        {"pose": "p200", "img": "i195"},
    )
    assert align(pose, {"img": img}, after_ns=200, tol_ns=10) is None  # nothing newer is complete
    assert align(pose, {"img": img}, after_ns=200, tol_ns=50)[0] == 300
    report = staleness_report({"pose": pose, "img": img, "none": StampedBuffer("none")}, now_ns=2_000_000_300)
    assert "none: nothing received" in report and "pose: newest stamp 2.000 s old" in report


@pytest.mark.parametrize(
    "topics", [{"command": "robot/target_pose"}, {"command": "/robot/target_pose"}, {"gripper": "robot/gripper"}]
)
def test_env_refuses_command_topics_that_bypass_the_supervisor(topics):
    from hw.ros_env import RosRobotEnv

    with pytest.raises(ValueError, match="driver's own input"):
        RosRobotEnv(topics=topics)  # refused before any ROS2 is started


def test_env_refuses_a_command_topic_remapped_onto_the_driver():
    from hw.ros_env import RosRobotEnv

    with pytest.raises(ValueError, match="/franka/cartesian_target"):
        RosRobotEnv(topics={"command": "/franka/cartesian_target"}, driver_topics=["/franka/cartesian_target"])
