"""``robot-rl-learner``: the learner of a run (:mod:`robot_rl.runtime.learner`) as a ROS2 process on the ROS2
transport.

    robot-rl-learner RUN_DIR [key=value ...] [--ros-args -p topic_prefix:=arm1 ...]

It trains at the update-to-data ratio on what the actor (``robot-rl-actor``) streams and sends weights back. It may run
on another machine than the actor (a GPU workstation): copy the run's ``config.yaml`` and ``runtime.key`` there; it
then gets every episode over ROS2 (or reads the store if the run directory is shared). It never drives the robot:
for a robot task, ``runtime.learner_task`` names the sim twin it evaluates in. ROS2 parameters (:data:`PARAMETERS`)
override the ``runtime.*`` settings of ``<run_dir>/config.yaml``.
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
    return run_runtime_node("learner", argv, PARAMETERS)


if __name__ == "__main__":
    raise SystemExit(main())
