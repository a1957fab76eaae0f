"""The ROS2 robot path with real rclpy: sim driver + safety supervisor + env client, teleop, a bare DDS peer.

Every body runs in a fresh loopback-only network namespace (tests/ros2_netns.py) with
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a random ROS_DOMAIN_ID; the tests skip where no such namespace can be
made. Nodes run as separate processes started from the body, exactly as their console scripts would.
"""

import importlib.util
import time

import numpy as np
import pytest
from ros2_netns import node_log, run_in_netns, skip_reason, start_node, stop_nodes

pytestmark = pytest.mark.skipif(bool(skip_reason()), reason=skip_reason() or "")


def _wait_log(proc, text: str, timeout: float = 5.0) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        log = node_log(proc)
        if text in log:
            return log
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the node's log:\n{node_log(proc)[-4000:]}")


class Probe:
    """A throwaway rclpy node with its own context, spun on demand."""

    def __init__(self, name: str = "probe"):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.rclpy = rclpy
        self.ctx = rclpy.Context()
        rclpy.init(args=[], context=self.ctx)
        self.node = rclpy.create_node(name, context=self.ctx)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)

    def spin_until(self, pred, timeout: float = 5.0, what: str = "condition") -> None:
        end = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > end:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            self.ex.spin_once(timeout_sec=0.02)

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.ex.spin_once(timeout_sec=0.01)

    def close(self) -> None:
        self.ex.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        self.rclpy.shutdown(context=self.ctx)


# ------------------------------------------------------------------------------ lockstep: contract + expert
def _lockstep_body():
    import yaml

    from hw.nodes.sim_driver import load_env_kwargs
    from hw.ros_env import StaleDataError
    from robot_rl.envs.contract import check_env_contract
    from robot_rl.envs.make import expert_action, make_env, make_gym_env

    # both nodes from their console-script main() with the robot config, as a user would start them
    driver = start_node("hw.nodes.sim_driver", "--config", "configs/robot/sim.yaml")
    sup = start_node("hw.nodes.safety_supervisor", "--config", "configs/robot/sim.yaml")
    env = None
    try:
        with open("configs/task/ros2_reach.yaml") as f:
            task = yaml.safe_load(f)
        task["env_kwargs"].update(obs_mode="state", step_timeout=1.5)
        env = make_env(task)  # by config alone: env_id hw.ros_env:robot_rl/Ros2Robot-v0
        check_env_contract(env, steps=5)

        # the same seed and expert directly in MuJoCo gives the same episode
        kw = load_env_kwargs("configs/task/reach.yaml", "", "state", 128)
        kw.update(max_episode_steps=20, terminate_on_success=True)
        sim = make_gym_env("sim:robot_rl/Reach-v0", **kw)
        o_ros, _ = env.reset(seed=7)
        o_sim, _ = sim.reset(seed=7)
        assert np.array_equal(o_ros["state"], o_sim["state"])
        for _ in range(20):
            a = expert_action(env)
            np.testing.assert_allclose(a, sim.unwrapped.expert_action(), atol=1e-4)
            o_ros, r, term, trunc, info = env.step(a)
            o_sim, _, term_sim, _, _ = sim.step(a)
            np.testing.assert_allclose(o_ros["state"], o_sim["state"], atol=1e-5)
            if term or trunc:
                break
        assert term and info["success"] and r == 1.0 and term_sim, "scripted reach over ROS2 did not succeed"
        print("lockstep reach over ROS2 succeeded in", env.unwrapped._steps, "steps")

        # the driver dies: the env raises a clear error and the supervisor holds the arm
        driver.kill()
        driver.wait()
        t0 = time.monotonic()
        with pytest.raises(StaleDataError, match="robot/ee_pose"):
            env.step(np.zeros(3, np.float32))
        assert time.monotonic() - t0 < 5.0
        _wait_log(sup, "holding the arm: robot state silent")
    finally:
        if env is not None:
            env.close()
        stop_nodes(driver, sup)


def test_lockstep_env_contract_and_scripted_reach_over_ros2():
    """Env client passes check_env_contract; the expert's reach succeeds over ROS2 and matches MuJoCo step for step;
    a dead driver gives StaleDataError and a holding supervisor."""
    out = run_in_netns(__name__, "_lockstep_body", timeout=150)
    assert "lockstep reach over ROS2 succeeded" in out.stdout


# ------------------------------------------------------------------- realtime: supervisor, images, e-stop
def _realtime_body():
    import os
    from pathlib import Path

    from geometry_msgs.msg import PoseStamped, TwistStamped
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Bool, Float64, String
    from std_srvs.srv import SetBool

    from hw.ros_common import latched_qos, pose_msg, state_qos
    from hw.ros_env import RosRobotEnv
    from hw.safety import release_token
    from robot_rl.runtime.keys import key_file

    driver = start_node("hw.nodes.sim_driver", "--ros-args", "-p", "obs_mode:=pixels", "-p", "image_size:=64")
    sup = start_node(
        "hw.nodes.safety_supervisor",
        "--ros-args",
        "-p",
        "max_speed:=0.2",
        "-p",
        "max_accel:=2.0",
        "-p",
        "command_timeout:=0.5",
    )
    env = probe = None
    try:
        env = RosRobotEnv(
            obs_mode="pixels",
            cameras=["front", "wrist"],
            image_size=64,
            max_image_bytes=200_000,
            step_timeout=3.0,
            node_name="env",
        )
        obs, _ = env.reset(seed=1)
        t0, stamps = time.monotonic(), []
        for _ in range(5):
            obs, _, _, _, info = env.step(np.zeros(3, np.float32))
            stamps.append(info["stamp"])
        elapsed = time.monotonic() - t0
        assert 0.35 < elapsed < 1.5, f"5 steps at 10 Hz took {elapsed:.2f} s"
        assert np.all(np.diff(stamps) > 0.05), stamps
        assert obs["front"].shape == (64, 64, 3) and obs["front"].dtype == np.uint8 and obs["front"].std() > 0

        probe = Probe()
        n = probe.node
        outs, holding, status, estopped = [], [], [], []
        n.create_subscription(
            PoseStamped,
            "robot/target_pose",
            lambda m: outs.append(
                (
                    np.array([m.pose.position.x, m.pose.position.y, m.pose.position.z]),
                    time.time_ns(),
                    m.header.stamp.sec * 10**9 + m.header.stamp.nanosec,
                )
            ),
            state_qos(50),
        )
        challenge = []
        n.create_subscription(String, "safety/estop_challenge", lambda m: challenge.append(m.data), latched_qos())
        n.create_subscription(Bool, "safety/holding", lambda m: holding.append(m.data), latched_qos())
        n.create_subscription(String, "safety/status", lambda m: status.append(m.data), latched_qos())
        n.create_subscription(Bool, "safety/estopped", lambda m: estopped.append(m.data), latched_qos())
        cmd = n.create_publisher(PoseStamped, "cmd/target_pose", state_qos())
        twist = n.create_publisher(TwistStamped, "cmd/twist", state_qos())
        grip = n.create_publisher(Float64, "cmd/gripper", state_qos())
        joints = n.create_publisher(JointState, "robot/joint_states", state_qos())
        image = n.create_publisher(Image, "robot/camera/front/image_raw", state_qos())
        estop = n.create_publisher(Bool, "estop", state_qos())
        estop_srv = n.create_client(SetBool, "safety/estop")
        down = np.array([1.0, 0, 0, 0])

        def send(pos, frame="base", quat=down):
            cmd.publish(
                pose_msg(np.asarray(pos, float), np.asarray(quat, float), frame, n.get_clock().now().nanoseconds)
            )

        probe.spin_until(
            lambda: cmd.get_subscription_count() > 0 and estop.get_subscription_count() > 0,
            what="the supervisor's subscriptions",
        )
        # (a) out of the box and too fast: far up, left and away, commands at 50 Hz for 2 s; outputs come at the
        # supervisor's own 50 Hz and on each command, limited against the time between them
        n0 = len(outs)
        for _ in range(100):
            send([0.9, 0.5, 1.0])
            probe.spin_for(0.02)
        probe.spin_until(lambda: len(outs) >= n0 + 80, what="targets")
        path = np.array([o[0] for o in outs[n0:]])
        arrived = np.array([o[1] for o in outs[n0:]], np.int64)  # ns, the same clock as the stamps
        stamps = np.array([o[2] for o in outs[n0:]], np.int64)
        assert np.all(path <= np.array([0.7, 0.25, 0.4]) + 1e-9), "target left the workspace"
        per_output = np.linalg.norm(np.diff(path, axis=0), axis=1) / (np.diff(stamps) / 1e9)  # exact: its clock
        assert per_output.max() <= 0.2 * (1 + 1e-9), f"{per_output.max():.9f} m/s between two outputs"
        # from arrival times at the boundary, over windows of >= 1 s between targets that arrived within 50 ms of
        # their stamps (a receiver descheduled by load would otherwise see a burst as a jump)
        prompt = np.flatnonzero(arrived - stamps <= 50_000_000)
        windows = [
            np.linalg.norm(path[j] - path[i]) / ((arrived[j] - arrived[i]) / 1e9)
            for i in prompt
            for j in prompt
            if arrived[j] - arrived[i] >= 1_000_000_000
        ]
        assert len(windows) >= 10, f"only {len(windows)} windows of promptly arrived targets"
        assert max(windows) <= 0.2 * 1.1, f"over 1 s windows the target moved at up to {max(windows):.3f} m/s"
        assert max(windows) >= 0.2 * 0.5, f"the target hardly moved ({max(windows):.3f} m/s)"
        _wait_log(sup, "target clamped by")
        # (b) silence -> hold: the target brakes to rest and stays
        probe.spin_until(
            lambda: status and "commands silent" in status[-1],
            timeout=3.0,
            what=f"holding after command silence (status so far: {status})",
        )
        assert holding[-1]
        # (c) malformed messages: logged and dropped, the node lives on, the held target does not move
        probe.spin_for(0.3)
        rest = outs[-1][0]
        before = len(outs)
        send([np.nan, 0.0, 0.2])
        send([0.5, 0.0, 0.2], frame="world")
        send([0.5, 0.0, 0.2], quat=[0.0, 0.0, 0.0, 0.0])
        bad = JointState(name=[f"j{i}" for i in range(100)], position=[0.0] * 100)
        joints.publish(bad)
        joints.publish(JointState(name=["a", "b"], position=[0.0]))
        tw = TwistStamped()
        tw.header.frame_id, tw.twist.linear.x = "base", float("nan")
        twist.publish(tw)
        grip.publish(Float64(data=float("inf")))
        probe.spin_for(0.3)
        log = _wait_log(sup, "robot/joint_states: oversized joint state")
        for text in (
            "cmd/target_pose: non-finite pose",
            "frame_id 'world' != expected 'base'",
            "quaternion norm",
            "joint state has 2 names but 1 positions",
            "cmd/twist: twist holds non-finite",
            "cmd/gripper: gripper command inf",
        ):
            assert text in log, f"{text!r} not logged:\n{log[-3000:]}"
        assert all(np.array_equal(o[0], rest) for o in outs[before:]), "a malformed command moved the target"
        big = Image(height=300, width=300, encoding="rgb8", step=900, data=bytes(300 * 900))  # 270 kB > 200 kB
        small = Image(height=32, width=32, encoding="rgb8", step=96, data=bytes(32 * 96))
        for k, img in enumerate((big, small), start=1):
            for _ in range(10):  # the driver's own images keep coming: retry until the bad one was taken
                img.header.stamp = n.get_clock().now().to_msg()
                image.publish(img)
                obs, _, _, _, _ = env.step(np.zeros(3, np.float32))  # the env drops bad images and carries on
                if env.buffers["front"].rejected >= k:
                    break
        assert env.buffers["front"].rejected == 2 and obs["front"].shape == (64, 64, 3)
        # a command stamped 0.3 s in the future is refused and logged
        cmd.publish(pose_msg(np.array([0.5, 0.0, 0.25]), down, "base", n.get_clock().now().nanoseconds + 300_000_000))
        _wait_log(sup, "in the future")
        before = len(outs)
        send([0.5, 0.0, 0.25])
        probe.spin_until(lambda: len(outs) > before, what="a valid command after the malformed ones")
        assert sup.poll() is None and driver.poll() is None
        # (d) e-stop: topic engages, commands and resets are refused, the unauthenticated service cannot release,
        # a release signed with the wrong key is refused, one signed with the supervisor's key releases
        estop.publish(Bool(data=True))
        probe.spin_until(lambda: estopped and estopped[-1], what="estopped")
        probe.spin_for(0.2)  # the hold target at the measured pose comes with the e-stop
        held = outs[-1][0]
        for _ in range(5):
            send([0.5, 0.0, 0.3])
            probe.spin_for(0.05)
        assert all(np.array_equal(o[0], held) for o in outs[-5:]), "command obeyed during e-stop"
        _wait_log(sup, "e-stop engaged (estop topic)")
        with pytest.raises(RuntimeError, match="e-stop"):
            env.reset()
        fut = estop_srv.call_async(SetBool.Request(data=False))
        probe.spin_until(fut.done, what="e-stop service answer")
        assert not fut.result().success and "robot-rl-estop release" in fut.result().message
        release = n.create_publisher(String, "safety/release", state_qos())
        probe.spin_until(lambda: challenge and release.get_subscription_count() > 0, what="the release challenge")
        n_chal = len(challenge)
        release.publish(String(data=release_token(b"w" * 32, challenge[-1], "intruder")))
        _wait_log(sup, "e-stop release refused: wrong key (from 'intruder')")
        probe.spin_until(lambda: len(challenge) > n_chal, what="a fresh challenge after the refused release")
        assert estopped[-1]
        key = key_file(Path(os.environ["ROS_HOME"]) / "robot_rl" / "estop.key")
        release.publish(String(data=release_token(key, challenge[-1], "test operator")))
        probe.spin_until(lambda: not estopped[-1], what="estopped false")
        _wait_log(sup, "e-stop released by test operator")
        n_out = len(outs)
        send([0.5, 0.0, 0.25])
        probe.spin_until(lambda: len(outs) > n_out, what="a command after release")
        # (e) the driver dies: the supervisor holds and refuses commands
        driver.kill()
        driver.wait()
        _wait_log(sup, "holding the arm: robot state silent", timeout=3.0)
        end = time.monotonic() + 20.0  # fresh commands until one is refused for the state (the supervisor may lag
        while "holding: robot state silent" not in node_log(sup):  # a moment behind the dead peer, seen under load)
            assert time.monotonic() < end, f"a command was not refused for the dead driver:\n{node_log(sup)[-3000:]}"
            send([0.5, 0.0, 0.25])
            probe.spin_for(0.2)
    finally:
        if probe is not None:
            probe.close()
        if env is not None:
            env.close()
        stop_nodes(driver, sup)
    print(node_log(sup)[-2500:])


def test_supervisor_limits_holds_rejects_and_estop_over_ros2():
    """Realtime driver + supervisor: workspace, speed and acceleration clamps; hold on command silence and on a
    dead driver; malformed messages (NaN, wrong frame, bad sizes, oversized joint states and images) logged and
    dropped while every node survives; e-stop by topic, release by service; env client paces at 10 Hz."""
    out = run_in_netns(__name__, "_realtime_body", timeout=150)
    assert "rejected message on robot/camera/front/image_raw: oversized image" in out.stdout
    assert "expected 64x64" in out.stdout


# ------------------------------------------------------------------------------ e-stop console and latch
def _estop_latch_body():
    import os
    import subprocess
    import sys

    def console(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "hw.nodes.estop", *args, "--timeout", "20"],
            capture_output=True,
            text=True,
            timeout=60,
        )

    looped = start_node("hw.nodes.safety_supervisor", "--ros-args", "-r", "cmd/target_pose:=robot/target_pose")
    assert looped.wait(timeout=60) == 2, "a supervisor remapped onto its own output must refuse to start"
    assert "would bypass the limits" in node_log(looped)
    sup = start_node("hw.nodes.safety_supervisor")
    try:
        out = console("engage")
        assert out.returncode == 0 and "engaged" in out.stdout, out.stderr
        _wait_log(sup, "E-STOP engaged by estop topic")
        stop_nodes(sup)  # the supervisor dies while engaged ...
        sup = start_node("hw.nodes.safety_supervisor")  # ... and comes back engaged
        _wait_log(sup, "E-STOP engaged at start (latched before a restart", timeout=20)
        out = console("status")
        assert "ENGAGED" in out.stdout, out.stdout + out.stderr
        wrong = os.path.join(os.environ["ROS_HOME"], "wrong.key")
        with open(wrong, "w") as f:
            f.write("ab" * 32)
        out = console("release", "--key-file", wrong, "--source", "someone")
        assert out.returncode == 1 and "refused" in out.stderr, out.stdout + out.stderr
        _wait_log(sup, "e-stop release refused: wrong key (from 'someone')")
        out = console("release", "--source", "the operator console")  # the supervisor's own key file
        assert out.returncode == 0 and "released" in out.stdout, out.stdout + out.stderr
        _wait_log(sup, "e-stop released by the operator console")
        stop_nodes(sup)
        sup = start_node("hw.nodes.safety_supervisor")  # released before the restart: comes up released
        _wait_log(sup, "supervising", timeout=20)
        assert "E-STOP engaged at start" not in node_log(sup)
        print("estop latch ok")
    finally:
        stop_nodes(sup)


def test_estop_latch_survives_a_restart_and_release_needs_the_key():
    """A supervisor remapped onto its own outputs refuses to start; robot-rl-estop engages; a supervisor restarted
    while engaged comes up engaged; a release signed with the wrong key is refused and logged; the console's release
    with the supervisor's key releases, logged with its source."""
    out = run_in_netns(__name__, "_estop_latch_body", timeout=150)
    assert "estop latch ok" in out.stdout


# ----------------------------------------------------------------------------------------------- teleop
def _teleop_body():
    import rclpy
    from sensor_msgs.msg import Joy
    from std_msgs.msg import String

    from hw.nodes.teleop import JOY_BUTTONS, TeleopNode, parse_joy
    from hw.ros_common import state_qos
    from robot_rl.hil.devices import ActionLayout, KeyboardDevice

    probe = Probe()
    dev = KeyboardDevice(ActionLayout(rotation=False, gripper=True), listen=False)
    rclpy.init(args=[])  # the teleop node's own (global) context, as its console script has
    try:
        node = TeleopNode(device=dev)
        joys, events = [], []
        probe.node.create_subscription(Joy, "teleop/joy", joys.append, state_qos(10))
        probe.node.create_subscription(String, "teleop/event", lambda m: events.append(m.data), state_qos(10))
        probe.spin_until(lambda: node.pub_joy.get_subscription_count() > 0, what="teleop subscription")
        dev.press("w")
        dev.press("y")
        node.poll()
        probe.spin_until(lambda: joys and events, what="joy + event")
        state = parse_joy(joys[-1].axes, joys[-1].buttons, 4)
        assert state.active and state.action[0] == pytest.approx(1.0) and state.events == {"success"}
        assert events == ["success"] and len(joys[-1].buttons) == len(JOY_BUTTONS)
        with pytest.raises(ValueError, match="axes"):
            parse_joy([0.0, float("nan"), 0.0, 0.0], joys[-1].buttons, 4)
        with pytest.raises(ValueError, match="4"):
            parse_joy([0.0] * 3, joys[-1].buttons, 4)
        node.destroy_node()
        print("teleop ok")
    finally:
        probe.close()
        rclpy.shutdown()


def test_teleop_node_publishes_intervention_joy():
    out = run_in_netns(__name__, "_teleop_body", timeout=60)
    assert "teleop ok" in out.stdout


# --------------------------------------------------------------------------------------- bare DDS peer
def _cyclone_body():
    import os
    from dataclasses import dataclass

    import cyclonedds.idl.annotations as annotate
    from cyclonedds.core import Policy, Qos
    from cyclonedds.domain import DomainParticipant
    from cyclonedds.idl import IdlStruct
    from cyclonedds.pub import DataWriter
    from cyclonedds.sub import DataReader
    from cyclonedds.topic import Topic

    @dataclass
    @annotate.final
    class Bool_(IdlStruct, typename="std_msgs::msg::dds_::Bool_"):  # ROS2's DDS name for std_msgs/Bool
        data: bool

    sup = start_node("hw.nodes.safety_supervisor")
    try:
        dp = DomainParticipant(int(os.environ["ROS_DOMAIN_ID"]))
        writer = DataWriter(dp, Topic(dp, "rt/estop", Bool_), qos=Qos(Policy.Reliability.Reliable(0)))
        latched = Qos(Policy.Reliability.Reliable(0), Policy.Durability.TransientLocal)
        reader = DataReader(dp, Topic(dp, "rt/safety/estopped", Bool_), qos=latched)
        seen: list[bool] = []
        end = time.monotonic() + 20
        while not (seen and seen[-1]) and time.monotonic() < end:
            writer.write(Bool_(data=True))
            time.sleep(0.1)
            seen += [s.data for s in reader.take(N=10)]
        assert seen and seen[-1], f"no estopped=true from the supervisor over bare DDS (saw {seen})"
        _wait_log(sup, "E-STOP engaged by estop topic")
        print("cyclonedds peer ok", seen)
    finally:
        stop_nodes(sup)


@pytest.mark.skipif(importlib.util.find_spec("cyclonedds") is None, reason="the cyclonedds binding is not installed")
def test_bare_cyclonedds_peer_estops_the_supervisor():
    """A plain Cyclone DDS participant (no ROS) publishes std_msgs/Bool on estop and reads the supervisor's
    latched safety/estopped: standard ROS2 messages interoperate across DDS vendors (Fast DDS node)."""
    out = run_in_netns(__name__, "_cyclone_body", timeout=90)
    assert "cyclonedds peer ok" in out.stdout
