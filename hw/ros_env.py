"""The ROS2 env client: a gymnasium ``Env`` (the contract of ``robot_rl/envs/contract.py``) built from robot topics.

Importing this module registers ``robot_rl/Ros2Robot-v0``, so a task config with
``env_id: hw.ros_env:robot_rl/Ros2Robot-v0`` (``configs/task/ros2_reach.yaml``) lets ``robot-rl train / record /
eval`` run against any ROS2 robot that speaks these topics (names configurable, ``topics``):

* subscribes ``robot/ee_pose`` (``PoseStamped``; the trigger of an observation), ``robot/ee_twist``
  (``TwistStamped``; empty name: velocity by finite differences), ``robot/joint_states`` (``JointState``; the
  gripper opening = sum of ``gripper_joints`` positions), ``robot/task_state`` (``JointState`` used as a stamped
  float vector; state mode with ``task_state_dim > 0``), ``robot/camera/<name>/image_raw`` (rgb8 ``Image``, pixels
  mode) and ``robot/success`` (``std_msgs/Bool``);
* an observation is the newest ``ee_pose`` newer than the command, with every other stamped topic's message closest
  in stamp within ``sync_tolerance`` (:func:`hw.timesync.align`); data older than ``max_age`` is stale;
* publishes each action as an absolute TCP target on ``cmd/target_pose`` (and ``cmd/gripper``), computed exactly
  like the sim (``sim/panda_env.py`` ``_apply_action``: ``action_scale`` m per step along the base axes, clamped to
  the workspace and to ``2 * action_scale`` around the measured TCP; rotation about the base axes within
  ``rotation_limit`` of the reset orientation), for the safety supervisor to check and forward;
* paces at ``control_rate``; resets through the supervisor's ``safety/reset`` (``std_srvs/Trigger``), seeding a
  simulated robot through its ``reset_seed`` parameter (``seed_node``).

Stale or missing data: nothing more is commanded (the supervisor's watchdog holds the arm) and ``step`` /
``reset`` raise :class:`StaleDataError` naming each topic's age, after ``step_timeout`` (``on_stale="raise"``)
or after waiting up to ``stale_timeout`` (``on_stale="wait"``).

State layout (float32), as the sim's: ``ee_pos`` (3, m), ``ee_vel`` (3, m/s), ``ee_rotvec`` (3, rad, if
``rotation``), ``gripper_opening`` (m) and ``gripper_cmd`` (1 closed / 0 open) if ``use_gripper``, then the task
state (``task_state_dim``) in state mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from hw.safety import check_joint_state, check_vector, quat_conj, quat_mul, quat_to_rotvec, rotvec_to_quat
from hw.timesync import StampedBuffer, align, staleness_report
from robot_rl.envs.contract import check_choice, check_range, check_vec

ENV_ID = "robot_rl/Ros2Robot-v0"
DEFAULT_TOPICS = {
    "ee_pose": "robot/ee_pose",
    "ee_twist": "robot/ee_twist",
    "joint_states": "robot/joint_states",
    "task_state": "robot/task_state",
    "success": "robot/success",
    "camera": "robot/camera/{name}/image_raw",
    "command": "cmd/target_pose",
    "gripper": "cmd/gripper",
    "reset": "safety/reset",
}


class StaleDataError(RuntimeError):
    """The robot's observations stopped or went stale; the arm is held by the supervisor's watchdog."""


class RosRobotEnv(gym.Env):
    """A ROS2 robot as a gymnasium env. See the module docstring for topics, timing and the state layout.

    Args:
        obs_mode: "state" (proprioception + task state) or "pixels" (proprioception + ``cameras``).
        cameras: camera names (pixels mode), each an rgb8 topic from ``topics["camera"]``.
        image_size: camera image side (px) or ``[height, width]``.
        task_state_dim: length of the stamped task-state vector appended in state mode (0: none).
        control_rate: env steps per second (Hz).
        max_episode_steps: time limit, reported as ``truncated``.
        action_scale / rotation / rotation_scale / rotation_limit / use_gripper / workspace_low / workspace_high:
            as the sim tasks (m per step, rad per step, rad, m).
        terminate_on_success: end the episode (``terminated``) on success.
        lockstep: the robot is a lockstep simulator (``robot-rl-sim-driver`` with ``lockstep``): "now" is its
            newest state stamp, so one env step is exactly one physics step and runs as fast as it can.
        frame_id: frame of poses (robot base).
        gripper_joints: joint names whose positions sum to the gripper opening (m).
        topics: overrides of :data:`DEFAULT_TOPICS`.
        seed_node: node whose ``reset_seed`` parameter ``reset(seed=...)`` sets (a simulated robot); "" for none.
        expert: "reach": a scripted expert (``expert_action``) from the task state's goal (first 3 entries).
        sync_tolerance: max stamp difference between the parts of one observation (s).
        max_age: max age of an observation's stamp when it is used (s, realtime only).
        on_stale: "raise" after ``step_timeout`` s without a fresh observation, or "wait" up to ``stale_timeout``.
        connect_timeout: wait for the reset service and the first observation (s).
        service_timeout: wait for a reset to finish (s).
        max_image_bytes: larger images are rejected (logged) before decoding.
        resend_after: lockstep: re-send an unanswered command after this many wall seconds (s); the supervisor
            repeats its target and the driver steps at most once per stamp, so a lost message cannot stall a step.
        driver_topics: the robot driver's command inputs (the supervisor's outputs, after any remapping, e.g.
            ``/franka/cartesian_target``); a ``command`` or ``gripper`` topic naming one is refused, since it would
            bypass the safety supervisor.
        node_name: this client's ROS2 node name.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    _instances = 0

    def __init__(
        self,
        obs_mode: str = "state",
        cameras: Sequence[str] = ("front", "wrist"),
        image_size: int | Sequence[int] = 128,
        task_state_dim: int = 0,
        control_rate: float = 10.0,
        max_episode_steps: int = 50,
        action_scale: float = 0.025,
        rotation: bool = False,
        rotation_scale: float = 0.1,
        rotation_limit: float = 0.8,
        use_gripper: bool = False,
        workspace_low: Sequence[float] = (0.3, -0.25, 0.05),
        workspace_high: Sequence[float] = (0.7, 0.25, 0.4),
        terminate_on_success: bool = True,
        lockstep: bool = False,
        frame_id: str = "base",
        gripper_joints: Sequence[str] = ("finger_left", "finger_right"),
        topics: Mapping[str, str] | None = None,
        seed_node: str = "sim_driver",
        expert: str | None = None,
        sync_tolerance: float = 0.02,
        max_age: float = 0.5,
        on_stale: str = "raise",
        stale_timeout: float = 60.0,
        step_timeout: float = 2.0,
        connect_timeout: float = 30.0,
        service_timeout: float = 30.0,
        max_image_bytes: int = 16 * 2**20,
        resend_after: float = 0.25,
        driver_topics: Sequence[str] = ("robot/target_pose", "robot/gripper"),
        node_name: str = "robot_rl_env",
        render_mode: str | None = None,
    ):
        check_choice("obs_mode", obs_mode, ("state", "pixels"))
        check_choice("on_stale", on_stale, ("raise", "wait"))
        check_choice("expert", expert, (None, "reach"))
        check_choice("render_mode", render_mode, (None, "rgb_array"))
        self.obs_mode, self.render_mode, self.on_stale, self.expert = obs_mode, render_mode, on_stale, expert
        hw_ = [int(image_size)] * 2 if np.ndim(image_size) == 0 else [int(v) for v in image_size]
        if len(hw_) != 2 or not all(16 <= v <= 2048 for v in hw_):
            raise ValueError(f"image_size={image_size!r} must be a side or [height, width], each in [16, 2048] px")
        self.image_hw = (hw_[0], hw_[1])
        self.cameras = [str(c) for c in cameras] if obs_mode == "pixels" else []
        self.task_state_dim = int(check_range("task_state_dim", task_state_dim, 0, 4096)) if obs_mode == "state" else 0
        self.control_dt = 1.0 / check_range("control_rate", control_rate, 0.5, 1000.0)
        self.max_episode_steps = int(check_range("max_episode_steps", max_episode_steps, 1, 10**7))
        self.action_scale = check_range("action_scale", action_scale, 0.001, 0.1)
        self.rotation, self.use_gripper = bool(rotation), bool(use_gripper)
        self.rotation_scale = check_range("rotation_scale", rotation_scale, 0.01, 0.5)
        self.rotation_limit = check_range("rotation_limit", rotation_limit, 0.0, np.pi / 2)
        self.ws_low = check_vec("workspace_low", workspace_low, -2.0, 2.0)
        self.ws_high = check_vec("workspace_high", workspace_high, -2.0, 2.0)
        if np.any(self.ws_high <= self.ws_low):
            raise ValueError(f"workspace_high={list(self.ws_high)} must exceed workspace_low={list(self.ws_low)}")
        self.terminate_on_success, self.lockstep, self.frame_id = bool(terminate_on_success), bool(lockstep), frame_id
        self.gripper_joints = [str(j) for j in gripper_joints]
        unknown = set(topics or {}) - set(DEFAULT_TOPICS)
        if unknown:
            raise ValueError(f"unknown topics {sorted(unknown)}; valid keys: {sorted(DEFAULT_TOPICS)}")
        self.topics = {**DEFAULT_TOPICS, **dict(topics or {})}
        guarded = {_topic_key(t) for t in driver_topics}
        for key in ("command", "gripper"):
            if _topic_key(self.topics[key]) in guarded:
                raise ValueError(
                    f"topics.{key}={self.topics[key]!r} is the robot driver's own input: commands must go "
                    f"through the safety supervisor (its inputs: cmd/target_pose, cmd/gripper); fix the "
                    f"task or robot config (driver topics: {list(driver_topics)})"
                )
        self.seed_node = seed_node
        self.sync_ns = int(check_range("sync_tolerance", sync_tolerance, 0.0, 10.0) * 1e9)
        self.max_age = check_range("max_age", max_age, 0.001, 3600.0)
        self.stale_timeout = check_range("stale_timeout", stale_timeout, 0.01, 86400.0)
        self.step_timeout = check_range("step_timeout", step_timeout, 0.01, 3600.0)
        self.connect_timeout = check_range("connect_timeout", connect_timeout, 0.1, 3600.0)
        self.service_timeout = check_range("service_timeout", service_timeout, 0.1, 3600.0)
        self.max_image_bytes = int(max_image_bytes)
        self.resend_after = check_range("resend_after", resend_after, 0.01, 60.0)

        n_act = 3 + 3 * self.rotation + int(self.use_gripper)
        self.action_space = spaces.Box(-1.0, 1.0, (n_act,), np.float32)
        self.state_layout = [("ee_pos", 3), ("ee_vel", 3)]
        if self.rotation:
            self.state_layout.append(("ee_rotvec", 3))
        if self.use_gripper:
            self.state_layout += [("gripper_opening", 1), ("gripper_cmd", 1)]
        if self.task_state_dim:
            self.state_layout.append(("task_state", self.task_state_dim))
        dim = sum(n for _, n in self.state_layout)
        obs_spaces: dict[str, spaces.Space] = {"state": spaces.Box(-np.inf, np.inf, (dim,), np.float32)}
        for cam in self.cameras:
            obs_spaces[cam] = spaces.Box(0, 255, (*self.image_hw, 3), np.uint8)
        self.observation_space = spaces.Dict(obs_spaces)

        self._target_pos = np.zeros(3)
        self._target_quat = np.array([1.0, 0, 0, 0])
        self._frame_quat = np.array([1.0, 0, 0, 0])
        self._gripper_cmd = 0.0
        self._steps = 0
        self._deadline = 0
        self._last: dict[str, Any] | None = None
        self._closed = False
        self._start_ros(node_name)

    # ------------------------------------------------------------------------------------------------ ROS
    def _start_ros(self, node_name: str) -> None:
        try:
            import rclpy
            from geometry_msgs.msg import PoseStamped, TwistStamped
            from rclpy.executors import SingleThreadedExecutor
            from sensor_msgs.msg import Image, JointState
            from std_msgs.msg import Bool, Float64
            from std_srvs.srv import Trigger

            from hw.ros_common import RejectLog, image_from_msg, pose_from_msg, stamp_ns, state_qos
        except ImportError as e:
            raise ImportError(f"RosRobotEnv needs rclpy ({e}); install it with pip install 'robot-rl[ros2]'") from e
        self._rclpy, self._stamp_ns = rclpy, stamp_ns
        self._msgs = {"PoseStamped": PoseStamped, "Float64": Float64, "Trigger": Trigger}
        self._ctx = rclpy.Context()
        rclpy.init(args=[], context=self._ctx)
        # one robot often has several clients in one process (the trainer's training, eval and demo envs)
        RosRobotEnv._instances += 1
        name = node_name if RosRobotEnv._instances == 1 else f"{node_name}_{RosRobotEnv._instances}"
        self.node = rclpy.create_node(name, context=self._ctx)
        self._ex = SingleThreadedExecutor(context=self._ctx)
        self._ex.add_node(self.node)
        self._reject = RejectLog(self.node.get_logger())
        qos = state_qos()
        t = self.topics
        self.buffers: dict[str, StampedBuffer] = {"ee_pose": StampedBuffer(t["ee_pose"])}
        self._success: bool | None = None
        self._newest_ns = 0

        def keep(key: str, parse: Any) -> Any:
            buf = self.buffers[key]

            def cb(msg: Any) -> None:
                try:
                    value = parse(msg)
                except Exception as e:  # noqa: BLE001 - a malformed message is dropped, never raised
                    buf.rejected += 1
                    self._reject(buf.name, str(e))
                    return
                ns = stamp_ns(msg.header.stamp)
                buf.add(ns, value)
                if key == "ee_pose":
                    self._newest_ns = max(self._newest_ns, ns)

            return cb

        self.node.create_subscription(
            PoseStamped, t["ee_pose"], keep("ee_pose", lambda msg: pose_from_msg(msg, self.frame_id)), qos
        )
        if t["ee_twist"]:
            self.buffers["ee_twist"] = StampedBuffer(t["ee_twist"])

            def parse_twist(msg: Any) -> np.ndarray:
                v = msg.twist.linear
                lin = np.array([v.x, v.y, v.z])
                if bad := check_vector("twist", lin, 3, max_abs=100.0):
                    raise ValueError(bad)
                return lin

            self.node.create_subscription(TwistStamped, t["ee_twist"], keep("ee_twist", parse_twist), qos)
        if self.use_gripper:
            self.buffers["joint_states"] = StampedBuffer(t["joint_states"])

            def parse_joints(msg: Any) -> float:
                if bad := check_joint_state(msg.name, msg.position, msg.velocity, msg.effort, self.gripper_joints):
                    raise ValueError(bad)
                return float(sum(msg.position[list(msg.name).index(j)] for j in self.gripper_joints))

            self.node.create_subscription(JointState, t["joint_states"], keep("joint_states", parse_joints), qos)
        if self.task_state_dim:
            self.buffers["task_state"] = StampedBuffer(t["task_state"])

            def parse_task(msg: Any) -> np.ndarray:
                if bad := check_vector("task state", msg.position, self.task_state_dim):
                    raise ValueError(bad)
                return np.asarray(msg.position, np.float64)

            self.node.create_subscription(JointState, t["task_state"], keep("task_state", parse_task), qos)
        for cam in self.cameras:
            self.buffers[cam] = StampedBuffer(t["camera"].format(name=cam), maxlen=4)

            def parse_image(msg: Any) -> np.ndarray:
                return image_from_msg(msg, self.image_hw, self.max_image_bytes)

            self.node.create_subscription(Image, t["camera"].format(name=cam), keep(cam, parse_image), state_qos(2))

        def on_success(msg: Any) -> None:
            self._success = bool(msg.data)

        self.node.create_subscription(Bool, t["success"], on_success, qos)
        self._pub_target = self.node.create_publisher(PoseStamped, t["command"], qos)
        self._pub_gripper = self.node.create_publisher(Float64, t["gripper"], qos) if self.use_gripper else None
        self._reset_client = self.node.create_client(Trigger, t["reset"])
        self._param_client = None
        if self.seed_node:
            from rcl_interfaces.srv import SetParameters

            self._param_client = self.node.create_client(SetParameters, f"/{self.seed_node.lstrip('/')}/set_parameters")

    def now_ns(self) -> int:
        """ROS time now (ns); in lockstep, the robot's newest state stamp (sim time)."""
        return self._newest_ns if self.lockstep else self.node.get_clock().now().nanoseconds

    def _call(self, client: Any, request: Any, what: str, retry_after: float | None = None) -> Any:
        """Call a service and wait up to ``service_timeout`` s for the answer. ``retry_after`` (s, idempotent calls
        only): re-send the request when it went unanswered that long, since a request sent just after discovery can
        lose its answer while the server's reply path to us is still being matched."""
        if not client.wait_for_service(timeout_sec=self.connect_timeout):
            raise StaleDataError(
                f"{what}: service {client.srv_name} not available after {self.connect_timeout} s "
                "(is the safety supervisor / robot driver running, on this ROS_DOMAIN_ID?)"
            )
        deadline = time.monotonic() + self.service_timeout
        while True:
            fut = client.call_async(request)
            left = deadline - time.monotonic()
            self._ex.spin_until_future_complete(fut, timeout_sec=max(0.0, min(left, retry_after or left)))
            if fut.done():
                return fut.result()
            fut.cancel()
            if time.monotonic() >= deadline:
                raise StaleDataError(f"{what}: {client.srv_name} did not answer within {self.service_timeout} s")

    def _wait_obs(
        self, after_ns: int, min_ns: int, timeout: float, what: str, resend: Callable[[], None] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Spin until an aligned observation with stamp > ``after_ns`` and >= ``min_ns`` exists (and, realtime,
        is at most ``max_age`` old); raise :class:`StaleDataError` after ``timeout`` s (wall). ``resend``: called
        every ``resend_after`` s without an answer (lockstep: the same command again, which the supervisor and the
        driver answer at most once)."""
        others = {k: b for k, b in self.buffers.items() if k != "ee_pose"}
        start = warned = sent = time.monotonic()
        limit = timeout if self.on_stale == "raise" else max(timeout, self.stale_timeout)
        while True:
            self._ex.spin_once(timeout_sec=0.002)
            if resend is not None and time.monotonic() - sent > self.resend_after:
                resend()
                sent = time.monotonic()
            got = align(self.buffers["ee_pose"], others, after_ns, self.sync_ns, "ee_pose")
            if (
                got is not None
                and got[0] >= min_ns
                and (self.lockstep or (self.now_ns() - got[0]) / 1e9 <= self.max_age)
            ):
                for _ in range(8):  # take what else is already queued (the unstamped success flag)
                    self._ex.spin_once(timeout_sec=0.0)
                return align(self.buffers["ee_pose"], others, after_ns, self.sync_ns, "ee_pose") or got
            now = time.monotonic()
            if now - start > limit:
                raise StaleDataError(
                    f"{what}: no fresh, complete observation for {now - start:.1f} s (on_stale={self.on_stale}); "
                    f"holding (no new commands sent). Newest data per topic:\n"
                    f"{staleness_report(self.buffers, self.now_ns(), after_ns)}"
                )
            if self.on_stale == "wait" and now - warned > 2.0:
                warned = now
                self.node.get_logger().warning(
                    f"{what}: waiting for fresh robot data ({now - start:.0f} s of {limit:.0f} s)"
                )

    def _observation(self, stamp: int, parts: dict[str, Any]) -> dict[str, np.ndarray]:
        pos, quat = parts["ee_pose"]
        if "ee_twist" in parts:
            vel = parts["ee_twist"]
        elif self._last is not None and stamp > self._last["stamp"]:
            vel = (pos - self._last["pos"]) / ((stamp - self._last["stamp"]) / 1e9)
        else:
            vel = np.zeros(3)
        state = [pos, vel]
        if self.rotation:
            state.append(quat_to_rotvec(quat_mul(quat, quat_conj(self._frame_quat))))
        if self.use_gripper:
            state.append([parts["joint_states"], self._gripper_cmd])
        if self.task_state_dim:
            state.append(parts["task_state"])
        obs = {"state": np.concatenate([np.asarray(s, np.float64).reshape(-1) for s in state]).astype(np.float32)}
        for cam in self.cameras:
            obs[cam] = parts[cam]
        self._last = {"stamp": stamp, "pos": pos, "quat": quat, "obs": obs, "parts": parts}
        return obs

    def _info(self) -> dict[str, Any]:
        return {"success": bool(self._success), "is_intervention": False, "stamp": self._last["stamp"] / 1e9}

    # -------------------------------------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset the robot (through the supervisor) and return the first observation after it."""
        super().reset(seed=seed)
        if self._closed:
            raise RuntimeError("RosRobotEnv is closed")
        if seed is not None and self._param_client is not None:
            from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
            from rcl_interfaces.srv import SetParameters

            req = SetParameters.Request(
                parameters=[
                    Parameter(
                        name="reset_seed",
                        value=ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=int(seed) % 2**31),
                    )
                ]
            )
            out = self._call(self._param_client, req, "reset(seed)", retry_after=2.0)  # setting it twice is harmless
            if not all(r.successful for r in out.results):
                raise RuntimeError(f"{self.seed_node} refused reset_seed={seed}: {[r.reason for r in out.results]}")
        # newest state before the reset: the first observation must be newer
        self._ex.spin_once(timeout_sec=0.0)
        before = max(self.now_ns(), self._newest_ns)
        out = self._call(self._reset_client, self._msgs["Trigger"].Request(), "reset")
        if not out.success:
            raise RuntimeError(f"robot reset failed: {out.message}")
        self._last = None
        self._success = None
        stamp, parts = self._wait_obs(before, before + 1, self.connect_timeout, "reset")
        self._target_pos, self._target_quat = parts["ee_pose"][0].copy(), parts["ee_pose"][1].copy()
        self._frame_quat = self._target_quat.copy()
        self._gripper_cmd = 0.0
        self._steps = 0
        self._deadline = stamp if self.lockstep else self.now_ns()
        obs = self._observation(stamp, parts)
        return obs, self._info()

    def step(self, action: np.ndarray):
        """Send one action as a target through the supervisor; return the observation one control period later."""
        if self._last is None:
            raise RuntimeError("call reset() before step()")
        a = np.asarray(action, dtype=np.float32).reshape(-1)
        if a.shape != self.action_space.shape:
            raise ValueError(f"action has shape {a.shape}, expected {self.action_space.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action {a.tolist()} holds non-finite values")
        a = np.clip(a, -1.0, 1.0).astype(np.float64)
        self._apply_action(a)
        now = self.now_ns()
        dt_ns = int(round(self.control_dt * 1e9))
        from hw.ros_common import pose_msg

        command = pose_msg(self._target_pos, self._target_quat, self.frame_id, now)

        def send() -> None:
            if self.use_gripper:
                self._pub_gripper.publish(self._msgs["Float64"](data=float(self._gripper_cmd)))
            self._pub_target.publish(command)

        send()
        deadline = max(self._deadline + dt_ns, now)
        slack = 0 if self.lockstep else int(0.3 * dt_ns)
        stamp, parts = self._wait_obs(
            now, deadline - slack, self.step_timeout + self.control_dt, "step", resend=send if self.lockstep else None
        )
        self._deadline = deadline
        obs = self._observation(stamp, parts)
        self._steps += 1
        info = self._info()
        success = info["success"]
        terminated = bool(success and self.terminate_on_success)
        truncated = bool(not terminated and self._steps >= self.max_episode_steps)
        return obs, float(success), terminated, truncated, info

    def _apply_action(self, a: np.ndarray) -> None:
        """Update the TCP target like the sim: base-axis deltas, workspace clamp, lead over the measured TCP."""
        ee = self._last["pos"]
        lead = 2.0 * self.action_scale
        target = np.clip(self._target_pos + a[:3] * self.action_scale, self.ws_low, self.ws_high)
        self._target_pos = np.clip(np.clip(target, ee - lead, ee + lead), self.ws_low, self.ws_high)
        if self.rotation:
            new = quat_mul(rotvec_to_quat(a[3:6] * self.rotation_scale), self._target_quat)
            rel = np.clip(
                quat_to_rotvec(quat_mul(new, quat_conj(self._frame_quat))), -self.rotation_limit, self.rotation_limit
            )
            self._target_quat = quat_mul(rotvec_to_quat(rel), self._frame_quat)
        if self.use_gripper:
            if a[-1] > 0.5:
                self._gripper_cmd = 1.0
            elif a[-1] < -0.5:
                self._gripper_cmd = 0.0

    def expert_action(self, noise: float = 0.0) -> np.ndarray:
        """Scripted reach expert (``expert="reach"``): head for the goal (first 3 task-state entries, m)."""
        if self.expert != "reach" or not self.task_state_dim or self._last is None:
            raise ValueError("expert_action needs expert='reach', task_state_dim >= 3 in state mode, and a reset")
        goal = self._last["parts"]["task_state"][:3]
        a = np.clip((goal - self._target_pos) / self.action_scale, -1, 1)
        if noise > 0:
            a = a + self.np_random.normal(0.0, noise, 3)
        full = np.zeros(self.action_space.shape)
        full[:3] = a
        return np.clip(full, -1, 1).astype(np.float32)

    @property
    def target(self) -> tuple[np.ndarray, np.ndarray]:
        """The commanded TCP target: position (3,) m and wxyz quaternion, before the supervisor's limits."""
        return self._target_pos.copy(), self._target_quat.copy()

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array" or not self.cameras or self._last is None:
            return None
        return self._last["obs"][self.cameras[0]]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._ex.shutdown(timeout_sec=1.0)
            self.node.destroy_node()
        finally:
            if self._ctx.ok():
                self._rclpy.shutdown(context=self._ctx)


def _topic_key(name: str) -> str:
    """A topic name for comparison: without leading or trailing slashes."""
    return str(name).strip().strip("/")


if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="hw.ros_env:RosRobotEnv")
