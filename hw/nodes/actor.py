"""``robot-rl-actor``: the actor of a run (:mod:`robot_rl.runtime.actor`) as a ROS2 process on the ROS2 transport.

    robot-rl-actor RUN_DIR [key=value ...] [--ros-args -p topic_prefix:=arm1 ...]

It drives the run's env (e.g. ``task=ros2_reach``: the robot through the safety supervisor), records every episode to
``<run_dir>/online.zarr`` and streams transitions to the learner (``robot-rl-learner``, this machine or another)
over the topics of :mod:`hw.ros_transport`. ROS2 parameters (:data:`PARAMETERS`) override the ``runtime.*``
settings of ``<run_dir>/config.yaml``; ``run_dir`` may come as a parameter instead (launch files).
"""

from __future__ import annotations

from collections.abc import Sequence

from hw.ros_transport import run_runtime_node

PARAMETERS = (
    "run_dir",
    "overrides",
    "topic_prefix",
    "heartbeat_s",
    "peer_timeout_s",
    "history_depth",
    "max_message_mb",
    "authenticate",
)


def main(argv: Sequence[str] | None = None) -> int:
    return run_runtime_node("actor", argv, PARAMETERS)


if __name__ == "__main__":
    raise SystemExit(main())
