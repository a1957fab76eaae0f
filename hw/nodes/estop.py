"""``robot-rl-estop``: the operator's e-stop console for the safety supervisor.

* ``robot-rl-estop engage``: engage the e-stop (anyone may; the same as publishing ``true`` on ``estop``).
* ``robot-rl-estop release [--key-file PATH]``: release it. The supervisor only releases on an answer to its current
  challenge (``safety/estop_challenge``) signed with its key (:class:`hw.safety.ReleaseAuth`): run this on the
  robot computer (the default key file is the supervisor's, under ``$ROS_HOME/robot_rl/estop.key``) or give the key
  file it was started with (``estop_key_file``, e.g. a run's ``runtime.key``). The release is logged with
  ``--source`` (default: user@host).
* ``robot-rl-estop status``: whether it is engaged, and the supervisor's status line.

Exit code 0 on success, 1 when refused or when no supervisor answered within ``--timeout`` s, 2 on bad arguments.
ROS2 arguments follow ``--ros-args`` (e.g. ``-r __ns:=/arm1``).
"""

from __future__ import annotations

import argparse
import getpass
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import Bool, String

from hw.ros_common import latched_qos, robot_rl_home, state_qos
from hw.safety import release_token
from robot_rl.runtime.keys import key_file


def default_key_file() -> Path:
    """The supervisor's default key file: ``$ROS_HOME/robot_rl/estop.key`` (``~/.ros`` without ROS_HOME)."""
    return robot_rl_home() / "estop.key"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv if argv is None else argv)
    cut = args.index("--ros-args") if "--ros-args" in args else len(args)
    p = argparse.ArgumentParser(prog="robot-rl-estop", description="engage, release or query the robot_rl e-stop")
    p.add_argument("action", choices=("engage", "release", "status"))
    p.add_argument(
        "--key-file", default="", help=f"key the supervisor signs releases with (default: {default_key_file()})"
    )
    p.add_argument(
        "--source",
        default=f"robot-rl-estop ({getpass.getuser()}@{socket.gethostname()})",
        help="who releases, for the supervisor's log",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="wait for the supervisor (s)")
    ours = p.parse_args(args[1:cut])
    key = None
    if ours.action == "release":
        path = Path(ours.key_file) if ours.key_file else default_key_file()
        if not path.exists():
            print(
                f"robot-rl-estop: no key file {path}: give the supervisor's estop_key_file with --key-file",
                file=sys.stderr,
            )
            return 2
        key = key_file(path)
    rclpy.init(args=[args[0], *args[cut:]])
    node = rclpy.create_node(f"estop_console_{os.getpid()}")
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    seen: dict[str, list] = {"estopped": [], "challenge": [], "status": []}
    node.create_subscription(Bool, "safety/estopped", lambda m: seen["estopped"].append(m.data), latched_qos())
    node.create_subscription(
        String, "safety/estop_challenge", lambda m: seen["challenge"].append(m.data), latched_qos()
    )
    node.create_subscription(String, "safety/status", lambda m: seen["status"].append(m.data), latched_qos())

    def spin_until(pred, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > end:
                return False
            ex.spin_once(timeout_sec=0.05)
        return True

    try:
        if not spin_until(lambda: seen["estopped"] and seen["challenge"], ours.timeout):
            print(
                f"robot-rl-estop: no safety supervisor answered within {ours.timeout} s (same ROS_DOMAIN_ID and "
                "namespace?)",
                file=sys.stderr,
            )
            return 1
        if ours.action == "status":
            spin_until(lambda: seen["status"], 1.0)
            state = "ENGAGED" if seen["estopped"][-1] else "released"
            print(f"e-stop {state}; supervisor: {seen['status'][-1] if seen['status'] else 'no status'}")
            return 0
        if ours.action == "engage":
            pub = node.create_publisher(Bool, "estop", state_qos())
            ok = spin_until(lambda: (pub.publish(Bool(data=True)) or True) and seen["estopped"][-1], ours.timeout)
            print(
                "e-stop engaged" if ok else "robot-rl-estop: the supervisor did not confirm the e-stop",
                file=sys.stdout if ok else sys.stderr,
            )
            return 0 if ok else 1
        if not seen["estopped"][-1]:
            print("e-stop is not engaged")
            return 0
        pub = node.create_publisher(String, "safety/release", state_qos())
        spin_until(lambda: pub.get_subscription_count() > 0, ours.timeout)
        challenge = seen["challenge"][-1]
        n = len(seen["challenge"])
        pub.publish(String(data=release_token(key, challenge, ours.source)))
        # the supervisor answers every attempt with a new challenge, and a release with estopped=false
        spin_until(lambda: len(seen["challenge"]) > n, ours.timeout)
        ok = spin_until(lambda: not seen["estopped"][-1], 1.0)
        if ok:
            print(f"e-stop released (logged as {ours.source!r})")
            return 0
        print("robot-rl-estop: release refused (wrong key? the supervisor's log says why)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
