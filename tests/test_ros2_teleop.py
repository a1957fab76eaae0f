"""A person's device over ROS2 (hw/ros_teleop.py): what robot-rl-teleop publishes drives ``hil=teleop teleop=ros2``.

Unit tests drive :meth:`RosTeleopDevice.feed` without ROS2 (staleness, taps, edge-triggered marks, gripper, malformed
Joys, config plumbing). The ROS2 test trains on ``task=ros2_reach`` against the lockstep sim robot (sim driver +
safety supervisor) in a loopback-only network namespace (tests/ros2_netns.py) while a scripted publisher takes over
mid-episode, and checks the online store and both buffers step by step.
"""

import logging
import time

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

pytest.importorskip("rclpy", reason="the ros2 extra is not installed (pip install 'robot-rl[ros2]')")

from ros2_netns import node_log, run_in_netns, skip_reason, start_node, stop_nodes  # noqa: E402

from hw.nodes.teleop import joy_fields  # noqa: E402
from hw.ros_teleop import RosTeleopDevice  # noqa: E402
from robot_rl.hil.devices import ActionLayout, DeviceState, make_device  # noqa: E402

XYZ, XYZ_G = ActionLayout(), ActionLayout(gripper=True)
SPEC = "hw.ros_teleop:RosTeleopDevice"


def joy(action, active=True, events=()):
    """Joy fields (axes, buttons) exactly as robot-rl-teleop publishes one device poll."""
    return joy_fields(DeviceState(np.asarray(action, np.float32), active, frozenset(events)))


def offline(layout=XYZ, **kw) -> RosTeleopDevice:
    return RosTeleopDevice(layout, connect=False, **kw)


# ------------------------------------------------------------------------------------------- device logic
def test_fresh_active_joy_drives_and_a_stale_or_inactive_one_does_not():
    dev = offline(stale_after=0.3)
    st = dev.read()
    assert not st.active and st.action.tolist() == [0, 0, 0] and not st.events  # nothing received yet
    dev.feed(*joy([0.5, -0.25, 1.0]))
    for _ in range(2):  # the newest Joy keeps driving while it is fresh
        st = dev.read()
        assert st.active and st.action.tolist() == [0.5, -0.25, 1.0]
    dev.feed(*joy([0.5, 0.0, 0.0]), t=time.monotonic() - 0.31)  # arrived 0.31 s ago: the node went silent
    st = dev.read()
    assert not st.active and st.action.tolist() == [0, 0, 0]
    dev.feed(*joy([0.0, 0.0, 0.0], active=False))
    assert not dev.read().active
    short = offline(stale_after=0.05)
    short.feed(*joy([1.0, 0.0, 0.0]))
    time.sleep(0.1)
    assert not short.read().active and short.received == 1


def test_a_tap_between_two_reads_counts_once():
    dev = offline()
    dev.feed(*joy([0.0, 1.0, 0.0]))
    dev.feed(*joy([0.0, 0.0, 0.0], active=False))  # released before the env read it
    st = dev.read()
    assert st.active and st.action.tolist() == [0, 1, 0]
    assert not dev.read().active
    dev.feed(*joy([0.0, 1.0, 0.0]), t=time.monotonic() - 1.0)  # a tap from long ago never drives
    dev.feed(*joy([0.0, 0.0, 0.0], active=False))
    assert not dev.read().active
    dev.feed(*joy([1.0, 0.0, 0.0]))
    dev.reset()  # a tap from the last episode is forgotten at reset
    dev.feed(*joy([0.0, 0.0, 0.0], active=False))
    assert not dev.read().active


def test_marks_accumulate_between_reads_edge_triggered():
    dev = offline()
    dev.feed(*joy([0, 0, 0], False, ["success"]))
    dev.feed(*joy([0, 0, 0], False))
    dev.feed(*joy([0, 0, 0], False, ["failure", "quit"]))
    assert dev.read().events == {"success", "failure", "quit"}
    assert dev.read().events == frozenset()  # each mark once
    for _ in range(3):  # a button held over several Joys is one press
        dev.feed(*joy([0, 0, 0], False, ["start"]))
    assert dev.read().events == {"start"}
    dev.feed(*joy([0, 0, 0], False, ["start"]))
    assert dev.read().events == frozenset()
    dev.feed(*joy([0, 0, 0], False))
    dev.feed(*joy([0, 0, 0], False, ["start"]))  # released and pressed again: a new press
    assert dev.read().events == {"start"}
    dev.feed(*joy([0, 0, 0], False, ["discard"]), t=time.monotonic() - 1.0)
    assert dev.read().events == {"discard"}  # a mark is never dropped, however late the env reads it
    dev.feed(*joy([0, 0, 0], False, ["discard"]))  # the previous Joy is stale: this is a new press
    assert dev.read().events == {"discard"}


def test_gripper_belief_is_synced_and_follows_the_persons_gripper_input():
    dev = offline(XYZ_G)
    dev.reset()
    dev.sync_gripper(True)  # the policy closed the gripper
    dev.feed(*joy([0, 0, 0, -1.0], active=False))  # the node's own belief is open
    dev.feed(*joy([0.3, 0, 0, -1.0]))  # the person takes over: the grasp is kept
    assert dev.read().action.tolist() == pytest.approx([0.3, 0, 0, 1.0])
    dev.feed(*joy([0, 0, 0, 1.0]))  # the person's toggle: the node's belief changes, ours follows
    dev.feed(*joy([0, 0, 0, -1.0]))  # and the open button
    st = dev.read()
    assert st.active and st.action[-1] == -1.0
    dev.feed(*joy([0, 0, 0, 1.0], active=False))  # a change the person did not make (the node reset) is ignored
    dev.sync_gripper(None)
    dev.feed(*joy([0, 0, 0, 1.0]))
    assert dev.read().action[-1] == 0.0  # unknown: hold
    dev.reset()
    assert dev.read().action[-1] == -1.0


def test_malformed_joys_are_logged_and_dropped(caplog):
    dev = offline()
    with caplog.at_level(logging.WARNING):
        assert dev.feed([0.0, float("nan"), 0.0], [1, 0, 0, 0, 0, 0]) is None
        assert dev.feed([0.0, 2.0, 0.0], [1, 0, 0, 0, 0, 0]) is None
        assert dev.feed([0.0, 0.0], [1, 0, 0, 0, 0, 0]) is None
        assert dev.feed([0.0, 0.0, 0.0], [1, 0]) is None
    assert dev.rejected == 4 and dev.received == 0 and not dev.read().active
    assert "rejected message on teleop/joy" in caplog.text
    assert dev.feed(*joy([0.1, 0.0, 0.0])) is not None and dev.read().active


def test_settings_are_checked():
    for bad in ({"stale_after": 0}, {"stale_after": float("nan")}, {"service_timeout": -1}, {"topic": " "}):
        with pytest.raises(ValueError):
            offline(**bad)


# --------------------------------------------------------------------------------------------- plumbing
class _EEEnv(gym.Env):
    """Just enough end-effector env for make_device / make_intervention_env: 3-dim action, state obs."""

    action_space = spaces.Box(-1, 1, (3,), np.float32)
    observation_space = spaces.Dict({"state": spaces.Box(-1, 1, (3,), np.float32)})

    def reset(self, *, seed=None, options=None):
        return {"state": np.zeros(3, np.float32)}, {"success": False}

    def step(self, action):
        return {"state": np.zeros(3, np.float32)}, 0.0, False, False, {"success": False}


def test_make_device_resolves_module_class_and_the_ros2_config():
    import yaml

    from robot_rl.cli import CONFIG_DIR, compose
    from robot_rl.hil.intervention import make_intervention_env

    dev = make_device(SPEC, _EEEnv(), connect=False, stale_after=0.5)
    assert isinstance(dev, RosTeleopDevice) and dev.layout == XYZ and dev.stale_after == 0.5 and dev.is_human
    with pytest.raises(ValueError, match="has no setting bogus"):
        make_device(SPEC, _EEEnv(), bogus=1)
    with pytest.raises(ValueError, match="cannot import"):
        make_device("hw.ros_teleop:Nope", _EEEnv())
    with pytest.raises(ValueError, match="not a TeleopDevice"):
        make_device("json:JSONDecoder", _EEEnv())
    with pytest.raises(ValueError, match="valid choices: keyboard"):
        make_device("ros3", _EEEnv())

    documented = yaml.safe_load((CONFIG_DIR / "teleop/ros2.yaml").read_text())
    assert documented.pop("name") == SPEC
    make_device(SPEC, _EEEnv(), connect=False, **documented).close()  # every documented setting is accepted

    cfg = compose("train", ["task=ros2_reach", "hil=teleop", "teleop=ros2", "teleop.stale_after=0.4"])
    assert cfg.hil.device.name == SPEC and cfg.hil.device.stale_after == 0.4
    assert compose("train", ["hil=teleop"]).hil.device == "spacemouse"  # no teleop group chosen: as before
    assert "teleop" not in compose("train", [])
    hil = dict(cfg.hil, settings={"connect": False})
    env = make_intervention_env(_EEEnv(), hil)
    assert isinstance(env.device, RosTeleopDevice) and env.device.stale_after == 0.4
    env.reset()
    env.device.feed(*joy([0.2, 0.0, -0.2]))
    _, _, _, _, info = env.step(np.zeros(3, np.float32))
    assert info["is_intervention"] and info["executed_action"].tolist() == pytest.approx([0.2, 0.0, -0.2])
    env.close()


# ---------------------------------------------------------------------------------- over ROS2, training
ACTIONS = {
    5: [0.6, -0.4, 0.2],
    6: [0.6, -0.4, 0.2],
    7: [0.6, -0.4, 0.2],
    8: [0.6, -0.4, 0.2],
    24: [-0.3, 0.5, -0.25],
    25: [-0.3, 0.5, -0.25],
    26: [-0.3, 0.5, -0.25],
    27: [-0.3, 0.5, -0.25],
}
FAILURE_AT = 27  # the person marks failure on this read: the episode ends there (truncated)
MALFORMED_AT = 12


def _wait(pred, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.002)


class ScriptedTeleop:
    """Stands in for robot-rl-teleop: a Joy publisher and a teleop/reset service in a context of its own."""

    def __init__(self):
        import threading

        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Joy
        from std_srvs.srv import Trigger

        from hw.ros_common import state_qos

        self.rclpy, self.Joy = rclpy, Joy
        self.ctx = rclpy.Context()
        rclpy.init(args=[], context=self.ctx)
        self.node = rclpy.create_node("teleop", context=self.ctx)
        self.pub = self.node.create_publisher(Joy, "teleop/joy", state_qos(10))
        self.resets = 0
        self.node.create_service(Trigger, "teleop/reset", self._on_reset)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        self.running = True
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        while self.running:
            self.ex.spin_once(timeout_sec=0.02)

    def _on_reset(self, request, response):
        self.resets += 1
        response.success, response.message = True, "reset"
        return response

    def publish(self, axes, buttons):
        msg = self.Joy()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.axes, msg.buttons = [float(a) for a in axes], [int(b) for b in buttons]
        self.pub.publish(msg)

    def close(self):
        self.running = False
        self.thread.join(timeout=2.0)
        self.ex.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        self.rclpy.shutdown(context=self.ctx)


def _training_body():
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from robot_rl.cli import compose
    from robot_rl.data.store import EpisodeStore
    from robot_rl.trainer import Trainer

    driver = start_node("hw.nodes.sim_driver", "--config", "configs/robot/sim.yaml")
    sup = start_node("hw.nodes.safety_supervisor", "--config", "configs/robot/sim.yaml")
    teleop = ScriptedTeleop()
    tr = None
    try:
        run_dir = Path(tempfile.mkdtemp(prefix="ros2_teleop_run_"))
        # stale_after 2 s: generous for a loaded machine (the staleness itself is checked below and in unit tests)
        cfg = compose(
            "train",
            [
                "task=ros2_reach",
                "hil=teleop",
                "teleop=ros2",
                "teleop.stale_after=2.0",
                "corrections.demo_buffer=true",  # the person's steps replayed as demos too: checked below
                "demos.episodes=0",
                "total_steps=28",
                "learning_starts=100000",
                "eval.every=100000",
                "eval.episodes=1",
                "threads=1",
                "device=cpu",
                "agent.hidden_dims=[32,32]",
                "agent.num_critics=2",
            ],
        )
        tr = Trainer(cfg, run_dir)
        dev = tr.env.device
        assert isinstance(dev, RosTeleopDevice), type(dev)
        _wait(lambda: teleop.pub.get_subscription_count() > 0, 30, "the device's teleop/joy subscription")
        end = time.monotonic() + 30  # both ends matched: an idle Joy gets through (as robot-rl-teleop idles)
        while dev.received == 0:
            assert time.monotonic() < end, "no Joy reached the device in 30 s"
            teleop.publish(*joy([0.0, 0.0, 0.0], active=False))
            time.sleep(0.05)

        published: list[tuple[bool, list[float]]] = []
        real_read = dev.read

        def paced_read():
            """Publish this step's Joy(s) and wait until the device has them, then let the wrapper read: each env
            step sees exactly the Joy scripted for it, however loaded the machine."""
            i = len(published)
            active, action = i in ACTIONS, ACTIONS.get(i, [0.0, 0.0, 0.0])
            msgs = [joy(action, active)]
            if i == FAILURE_AT:  # the mark's Joy, then the next poll's: the mark must survive until the read
                msgs = [joy(action, active, ["failure"]), joy(action, active)]
            if i == MALFORMED_AT:
                teleop.publish([0.0, float("nan"), 0.0], msgs[0][1])
            n0 = dev.received
            for m in msgs:
                teleop.publish(*m)
            _wait(lambda: dev.received >= n0 + len(msgs), 20, f"step {i}'s Joy at the device")
            published.append((active, action))
            return real_read()

        dev.read = paced_read
        tr.train(progress=False)
        dev.read = real_read

        n = len(published)
        with EpisodeStore.open(run_dir / "online.zarr") as store:
            data = store.read_all()
            assert store.num_steps == n == len(tr.online), (store.num_steps, n, len(tr.online))
            flags = data["is_intervention"]
            assert flags.tolist() == [i in ACTIONS for i in range(n)]
            np.testing.assert_allclose(data["action"][flags], [ACTIONS[i] for i in range(n) if i in ACTIONS], atol=1e-6)
            ends = np.asarray(data["episode_ends"])
            assert len(ends) >= 2 and ends[-1] == FAILURE_AT + 1 == n, ends  # the failure mark ended the last one
            assert data["truncated"][-1] and not data["terminated"][-1] and not data["success"][-1]
            starts = np.concatenate([[0], ends[:-1]])
            for e, (a, b) in enumerate(zip(starts, ends)):
                assert data["source"][e] == ("intervention" if flags[a:b].any() else "policy"), (e, data["source"])
            assert list(data["source"]).count("intervention") >= 2
        human = int(flags.sum())
        assert len(tr.demo) == human  # every corrected step is a demonstration too, with the person's action
        np.testing.assert_allclose(tr.demo.action[:human], data["action"][flags], atol=1e-6)
        assert dev.rejected == 1, dev.rejected
        _wait(lambda: teleop.resets >= 1, 10, "a teleop/reset call")

        # a teleop node that goes silent while active stops driving after stale_after
        n0 = dev.received
        teleop.publish(*joy([0.1, 0.1, 0.1]))
        _wait(lambda: dev.received > n0, 10, "the last Joy")
        assert dev.read().active
        time.sleep(dev.stale_after + 0.1)
        assert not dev.read().active

        # an owner that never closes the device (robot-rl train leaves its env open) still exits cleanly
        code = (
            "from hw.ros_teleop import RosTeleopDevice; from robot_rl.hil.devices import ActionLayout; "
            "d = RosTeleopDevice(ActionLayout()); print('left open')"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and "left open" in proc.stdout, (proc.returncode, proc.stderr[-2000:])
        print(f"ros2 teleop training ok: {n} steps, {human} corrected, {len(ends)} episodes, {teleop.resets} resets")
    except BaseException:
        for p in (driver, sup):
            print(f"--- {p.args[2]} (rc={p.poll()}):\n{node_log(p)[-3000:]}")
        raise
    finally:
        if tr is not None:
            tr.env.close()
            tr.eval_env.close()
        teleop.close()
        stop_nodes(driver, sup)


@pytest.mark.skipif(bool(skip_reason()), reason=skip_reason() or "")
def test_person_over_ros2_corrects_training_on_the_ros2_robot():
    """hil=teleop teleop=ros2 on task=ros2_reach: the published take-overs are exactly the is_intervention steps, with
    the published actions executed and stored, the episodes sourced "intervention", the steps in the demo buffer;
    a failure mark ends the episode; a malformed Joy is logged and dropped; a silent node stops driving; a device
    left open does not abort the process at exit."""
    out = run_in_netns(__name__, "_training_body", timeout=240)
    assert "ros2 teleop training ok" in out.stdout, out.stdout[-3000:]
    assert "rejected message on teleop/joy" in out.stdout
