"""The whole stack against the MuJoCo arm served as a ROS2 robot: sim driver, safety supervisor, teleop, actor, learner.

    ros2 launch launch/sim_robot.launch.py                     # a new run in runs/ros2_reach/<date>_<time>_ros2
    ros2 launch launch/sim_robot.launch.py run_dir:=runs/ros2_reach/demo
    ros2 launch launch/sim_robot.launch.py run_dir:=runs/r1 train:="task=ros2_reach runtime.learner_task=reach \
        total_steps=3000" teleop:=false

Nodes (console scripts of this repository's pip install, found on PATH; there is no ament package to look in):

* ``robot-rl-sim-driver`` (sim_driver), ``robot-rl-safety`` (safety_supervisor), ``robot-rl-teleop`` (teleop): their
  parameters are the ``driver`` / ``supervisor`` / ``teleop`` sections of ``robot_config`` (configs/robot/sim.yaml);
* ``robot-rl-actor`` (actor) and ``robot-rl-learner`` (learner) of the run in ``run_dir``, on the ROS2 transport. A run
  directory without ``config.yaml`` is made from ``train`` (``robot-rl train`` overrides; runtime=ros2 is implied).
  ``learner:=false`` leaves the learner to another machine (copy config.yaml and runtime.key there, and start
  ``robot-rl-learner RUN_DIR`` with the same ROS_DOMAIN_ID).

Only ``launch`` / ``launch_ros`` come from a ROS2 install; tests/test_launch_files.py checks this file without them.
The helpers and the run's nodes are shared with launch/real_robot.launch.py (:mod:`hw.launch_common`).
"""

import os

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch_ros.actions import Node

from launch import LaunchDescription

DEFAULT_ROBOT_CONFIG = "configs/robot/sim.yaml"
DEFAULT_TRAIN = "task=ros2_reach runtime.learner_task=reach"


def _setup(context, *args, **kwargs):
    from hw import launch_common as common

    arg = common.launch_values(context)
    train = common.with_teleop(arg["train"], common.truthy(arg["teleop"]))
    run_dir = os.path.abspath(common.ensure_run(arg["run_dir"], train))
    robot = arg["robot_config"]
    return [
        Node(
            executable="robot-rl-sim-driver",
            name="sim_driver",
            output="screen",
            parameters=[common.section(robot, "driver")],
        ),
        Node(
            executable="robot-rl-safety",
            name="safety_supervisor",
            output="screen",
            parameters=[common.section(robot, "supervisor")],
        ),
        *common.run_nodes(arg, run_dir, common.runtime_parameters(arg["overrides"], arg["topic_prefix"])),
    ]


def generate_launch_description():
    from hw import launch_common as common

    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "run_dir",
                default_value="",
                description="the run directory (made from `train` if it has no config.yaml; default: "
                "a new one in runs/<task>/)",
            ),
            DeclareLaunchArgument(
                "learner_run_dir",
                default_value="",
                description="the learner's run directory (default: run_dir; another one gets every "
                "episode over ROS2 and keeps a replica store)",
            ),
            DeclareLaunchArgument(
                "robot_config",
                default_value=DEFAULT_ROBOT_CONFIG,
                description="driver / supervisor / teleop parameters (configs/robot/*.yaml)",
            ),
            DeclareLaunchArgument(
                "train",
                default_value=DEFAULT_TRAIN,
                description="robot-rl train overrides for a new run (runtime=ros2 implied)",
            ),
            *common.runtime_arguments(),
            *common.switch_arguments(),
            OpaqueFunction(function=_setup),
        ]
    )
