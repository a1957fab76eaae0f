"""rclpy helpers shared by the nodes and the env client: parameters with descriptors, message <-> numpy
conversion with validation (and the pose callbacks' parse), QoS profiles, throttled rejection logs, where the nodes
keep their files, realtime scheduling and the console-script ``main`` wrapper.

Importing this module imports rclpy: install the ``ros2`` extra (``pip install 'robot-rl[ros2]'``).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

try:
    import rclpy
    import rclpy.exceptions
    import rclpy.executors
    from builtin_interfaces.msg import Time as TimeMsg
    from geometry_msgs.msg import PoseStamped
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        f"the ROS2 robot path needs rclpy and the standard messages ({e}); install them with "
        "pip install 'robot-rl[ros2]' (Linux x86_64, Python 3.11/3.12)"
    ) from e

from hw.safety import check_image, check_pose, quat_from_xyzw

INSTALL_HINT = "pip install 'robot-rl[ros2]'"


# ------------------------------------------------------------------------------------------------------ QoS
def state_qos(depth: int = 5) -> QoSProfile:
    """Reliable, volatile, keep-last ``depth``: robot state, commands, images (loopback or a wired robot LAN)."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def latched_qos() -> QoSProfile:
    """Reliable, transient-local, depth 1: status topics a late subscriber must still see (holding, e-stop)."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )


# ------------------------------------------------------------------------------------------------ parameters
def declare(
    node: Node,
    name: str,
    default: Any,
    description: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    choices: Sequence[str] | None = None,
    read_only: bool = True,
) -> Any:
    """Declare a ROS2 parameter with a descriptor (and a range or choices); return its value.

    Out-of-range overrides are refused by rclpy at declaration; choices are checked here. Ranges apply to
    scalar ints and floats; for float arrays ``lo`` / ``hi`` bound every entry (checked here).
    """
    desc = ParameterDescriptor(description=description, read_only=read_only)
    if choices:
        desc.additional_constraints = f"one of {list(choices)}"
    scalar = isinstance(default, (int, float)) and not isinstance(default, bool)
    if scalar and lo is not None and hi is not None:
        if isinstance(default, int):
            desc.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
        else:
            desc.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    elif lo is not None and hi is not None:
        desc.additional_constraints = f"every entry in [{lo}, {hi}]"
    value = node.declare_parameter(name, default, desc).value
    if choices and value not in choices:
        raise ValueError(f"parameter {name}={value!r} is invalid; choose one of {list(choices)}")
    if not scalar and isinstance(value, (list, tuple)) and lo is not None and hi is not None:
        arr = np.asarray(value, np.float64)
        if np.any(~np.isfinite(arr)) or np.any(arr < lo) or np.any(arr > hi):
            raise ValueError(f"parameter {name}={list(value)} is out of range; every entry must lie in [{lo}, {hi}]")
    return value


def config_to_ros_args(argv: Sequence[str], section: str) -> list[str]:
    """Replace ``--config PATH`` in ``argv`` by a ROS2 params file holding that YAML's ``section`` for every node.

    ``robot-rl-safety --config configs/robot/sim.yaml`` reads the ``supervisor:`` mapping of that file; later
    ``--ros-args -p name:=value`` still override it. Lists of numbers become float arrays.
    """
    argv = list(argv)
    if "--config" not in argv:
        return argv
    i = argv.index("--config")
    if i + 1 >= len(argv):
        raise SystemExit("--config needs a path to a robot config (configs/robot/*.yaml)")
    path = argv[i + 1]
    del argv[i : i + 2]
    import yaml

    with open(path) as f:
        cfg = yaml.safe_load(f) or {}
    if section not in cfg:
        raise SystemExit(f"{path} has no {section!r} section (has: {sorted(cfg)})")
    params = {}
    for k, v in (cfg[section] or {}).items():
        if isinstance(v, list) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            v = [float(x) for x in v]
        params[k] = v
    fd, tmp = tempfile.mkstemp(prefix=f"robot_rl_{section}_", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump({"/**": {"ros__parameters": params}}, f)
    return argv[:1] + ["--ros-args", "--params-file", tmp] + argv[1:]


def run_node(make: Callable[[], Node], argv: Sequence[str] | None, section: str) -> int:
    """Console-script body: init rclpy with ``argv`` (``--config`` expanded), build the node, spin, clean up."""
    args = config_to_ros_args(sys.argv if argv is None else argv, section)
    rclpy.init(args=args)
    node = None
    try:
        try:
            node = make()
        except (ValueError, RuntimeError, rclpy.exceptions.ParameterException) as e:  # a config error: one line
            print(f"{os.path.basename(str(args[0])) if args else section}: {type(e).__name__}: {e}", file=sys.stderr)
            return 2
        run = getattr(node, "run", None)
        if run is not None:
            run()
        else:
            rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


# ------------------------------------------------------------------------------------------------- messages
def stamp_ns(stamp: TimeMsg) -> int:
    """``builtin_interfaces/Time`` -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def to_stamp(ns: int) -> TimeMsg:
    """Integer nanoseconds -> ``builtin_interfaces/Time``."""
    return TimeMsg(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def pose_msg(pos: np.ndarray, quat_wxyz: np.ndarray, frame: str, ns: int) -> PoseStamped:
    """``PoseStamped`` from a position (3,) m and a wxyz quaternion."""
    msg = PoseStamped()
    msg.header.frame_id, msg.header.stamp = frame, to_stamp(ns)
    p, q = msg.pose.position, msg.pose.orientation
    p.x, p.y, p.z = (float(v) for v in pos)
    q.w, q.x, q.y, q.z = (float(v) for v in quat_wxyz)
    return msg


def pose_from_msg(msg: PoseStamped, expected_frame: str) -> tuple[np.ndarray, np.ndarray]:
    """``(pos (3,), quat (4,) wxyz normalised)``; raises ValueError with the reason for a malformed pose."""
    p, q = msg.pose.position, msg.pose.orientation
    pos = np.array([p.x, p.y, p.z], np.float64)
    quat = quat_from_xyzw(q.x, q.y, q.z, q.w)
    bad = check_pose(pos, quat, msg.header.frame_id, expected_frame)
    if bad:
        raise ValueError(bad)
    return pos, quat / np.linalg.norm(quat)


def parse_pose(
    msg: PoseStamped, expected_frame: str, reject: Callable[[str, str], None], topic: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """A pose callback's parse: :func:`pose_from_msg`, or None when the pose is malformed, after telling ``reject``
    (a :class:`RejectLog`) why, under ``topic``."""
    try:
        return pose_from_msg(msg, expected_frame)
    except ValueError as e:
        reject(topic, str(e))
        return None


def image_msg(img: np.ndarray, frame: str, ns: int) -> Image:
    """``sensor_msgs/Image`` rgb8 from a uint8 (H, W, 3) array."""
    msg = Image()
    msg.header.frame_id, msg.header.stamp = frame, to_stamp(ns)
    msg.height, msg.width = int(img.shape[0]), int(img.shape[1])
    msg.encoding, msg.is_bigendian, msg.step = "rgb8", 0, int(img.shape[1]) * 3
    msg.data = np.ascontiguousarray(img, np.uint8).tobytes()
    return msg


def image_from_msg(msg: Image, expected_hw: tuple[int, int] | None, max_bytes: int) -> np.ndarray:
    """uint8 (H, W, 3) copy of an rgb8 image; raises ValueError with the reason for a malformed or oversized one."""
    nbytes = len(msg.data)
    bad = check_image(msg.height, msg.width, msg.encoding, msg.step, nbytes, expected_hw, max_bytes)
    if bad:
        raise ValueError(bad)
    return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3).copy()


# ------------------------------------------------------------------------------------------------- logging
class RejectLog:
    """Logs each rejected message's reason: the first of a kind at once, then at most once per ``period`` s with
    the count since, so a flood of bad messages cannot flood the log (or slow the node)."""

    def __init__(self, logger: Any, period: float = 2.0):
        self.logger, self.period = logger, float(period)
        self._last: dict[str, float] = {}
        self._count: dict[str, int] = {}
        self.total = 0

    def __call__(self, topic: str, reason: str) -> None:
        self.total += 1
        key = f"{topic}: {reason.split(':')[0]}"
        self._count[key] = self._count.get(key, 0) + 1
        now = time.monotonic()
        if now - self._last.get(key, -1e9) >= self.period:
            n = self._count.pop(key)
            self._last[key] = now
            more = f" ({n} such since the last report)" if n > 1 else ""
            self.logger.warning(f"rejected message on {topic}: {reason}{more}")


# ------------------------------------------------------------------------------------------------- files
def robot_rl_home() -> Path:
    """Where the nodes keep their files (the e-stop latch, the e-stop key): ``$ROS_HOME/robot_rl`` (``~/.ros``
    without ROS_HOME)."""
    return Path(os.environ.get("ROS_HOME") or Path.home() / ".ros") / "robot_rl"


# ---------------------------------------------------------------------------------------------- scheduling
def raise_priority(priority: int) -> tuple[bool, str]:
    """Run this process under ``SCHED_FIFO`` at ``priority`` (1..99), as a robot PC runs its control nodes: a busy
    learner (or anything else at normal priority) on the same cores then cannot delay its callbacks. Applies to every
    thread that exists now (rclpy's and DDS's included) and, through inheritance, to every thread started later.

    ``priority`` 0 leaves the scheduling alone. Where ``SCHED_FIFO`` is not permitted (no ``CAP_SYS_NICE`` and
    ``ulimit -r`` below ``priority``) it falls back to nice -10 if that is permitted, else changes nothing.
    Returns ``(raised, a line for the log saying what was applied or why not)``.
    """
    if not 0 <= int(priority) <= 99:
        raise ValueError(f"realtime_priority={priority} must lie in 0..99 (0: normal scheduling)")
    if priority == 0:
        return False, "normal scheduling (realtime_priority 0)"
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    hint = (
        f"allow it with CAP_SYS_NICE or an rtprio limit >= {priority} (ulimit -r; /etc/security/limits.conf "
        "'@robot - rtprio 99')"
    )

    def each(fn: Callable[[int], None]) -> None:
        for tid in tids:
            try:
                fn(tid)
            except ProcessLookupError:  # a thread that ended meanwhile
                pass

    try:
        each(lambda tid: os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(int(priority))))
        return True, f"SCHED_FIFO priority {priority} ({len(tids)} threads)"
    except (OSError, AttributeError) as e:
        fifo_err = e
    try:
        each(lambda tid: os.setpriority(os.PRIO_PROCESS, tid, -10))
        return True, f"SCHED_FIFO not permitted ({fifo_err}): nice -10 instead; {hint}"
    except (OSError, AttributeError) as e:
        return False, f"NOT raised: SCHED_FIFO not permitted ({fifo_err}), nor nice -10 ({e}); {hint}"


def apply_priority(node: Node, priority: int) -> None:
    """:func:`raise_priority` for a node, with a ``scheduling:`` line in its log saying what was applied (a warning
    when a priority was asked for and not applied)."""
    raised, how = raise_priority(priority)
    (node.get_logger().info if raised or not priority else node.get_logger().warning)(f"scheduling: {how}")
