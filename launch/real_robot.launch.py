"""The training stack against a real arm whose driver is already running: safety supervisor, teleop, actor, learner.

    ros2 launch launch/real_robot.launch.py run_dir:=runs/fr3_insert \
        train:="task=<your ros2 task> init_from=runs/sim_run" robot_config:=configs/robot/franka.yaml \
        ee_pose_topic:=/franka/ee_pose target_pose_topic:=/franka/cartesian_target reset_service:=/franka/reset

The same as launch/sim_robot.launch.py minus the sim driver. The arm's own topics are wired in by launch arguments
(empty: the robot config's value, then this stack's default name):

* the supervisor's ``robot/ee_pose``, ``robot/joint_states`` (inputs) and ``robot/target_pose``, ``robot/gripper``
  (outputs, what the arm's Cartesian controller listens to) are remapped; its ``driver_reset_service`` parameter names
  the arm's reset-to-home service;
* the actor's env client (``hw.ros_env``) subscribes the same state topics, the success topic and the cameras: set
  through the run's ``task.env_kwargs.topics`` (the env's node lives in its own rclpy context, so process-wide
  remappings would not reach it). Its commands (``cmd/target_pose``, ``cmd/gripper``) go to the supervisor only.

The learner never touches the robot (``runtime.learner_task`` or a sim task for its own env); ``learner:=false``
leaves it to a GPU machine (copy the run's config.yaml and runtime.key there). Keep the hardware e-stop in reach.
The helpers and the run's nodes are shared with launch/sim_robot.launch.py (:mod:`hw.launch_common`).
"""

import os
import shlex

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch_ros.actions import Node

from launch import LaunchDescription

DEFAULT_ROBOT_CONFIG = "configs/robot/franka.yaml"
# launch argument -> (the env client's topics key, the supervisor's name for it or None, the stack's default)
TOPIC_ARGS = {
    "ee_pose_topic": ("ee_pose", "robot/ee_pose", "robot/ee_pose"),
    "joint_states_topic": ("joint_states", "robot/joint_states", "robot/joint_states"),
    "ee_twist_topic": ("ee_twist", None, "robot/ee_twist"),
    "success_topic": ("success", None, "robot/success"),
    "camera_topic": ("camera", None, "robot/camera/{name}/image_raw"),
}
OUTPUT_ARGS = {"target_pose_topic": "robot/target_pose", "gripper_topic": "robot/gripper"}  # supervisor -> arm


def _setup(context, *args, **kwargs):
    from hw import launch_common as common

    arg = common.launch_values(context, "reset_service", *TOPIC_ARGS, *OUTPUT_ARGS)
    if not arg["run_dir"]:
        raise RuntimeError("run_dir:=... is required (the actor's run directory)")
    run_dir = os.path.abspath(arg["run_dir"])
    common.ensure_run(run_dir, common.with_teleop(arg["train"], common.truthy(arg["teleop"])), need_train=True)
    robot = arg["robot_config"]
    env_topics = (common.load_robot_config(robot).get("env") or {}).get("topics") or {}

    supervisor_remaps, env_overrides = [], []
    for name, (key, internal, default) in TOPIC_ARGS.items():
        topic = arg[name] or env_topics.get(key) or default
        env_overrides.append(f"task.env_kwargs.topics.{key}={topic}")
        if internal is not None and topic != internal:
            supervisor_remaps.append((internal, topic))
    for name, internal in OUTPUT_ARGS.items():
        if arg[name] and arg[name] != internal:
            supervisor_remaps.append((internal, arg[name]))
    supervisor = common.section(robot, "supervisor")
    if arg["reset_service"]:
        supervisor["driver_reset_service"] = arg["reset_service"]
    overrides = " ".join(shlex.quote(o) for o in (*env_overrides, *shlex.split(arg["overrides"])))
    return [
        Node(
            executable="robot-rl-safety",
            name="safety_supervisor",
            output="screen",
            parameters=[supervisor],
            remappings=supervisor_remaps,
        ),
        *common.run_nodes(arg, run_dir, common.runtime_parameters(overrides, arg["topic_prefix"])),
    ]


def generate_launch_description():
    from hw import launch_common as common

    topic_args = [
        DeclareLaunchArgument(
            name,
            default_value="",
            description=f"the arm's {key} topic (default: robot_config env.topics.{key}, else {default})",
        )
        for name, (key, _, default) in TOPIC_ARGS.items()
    ]
    output_args = [
        DeclareLaunchArgument(
            name,
            default_value="",
            description=f"the arm controller's input the supervisor's {internal} is remapped to (default: no remap)",
        )
        for name, internal in OUTPUT_ARGS.items()
    ]
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "run_dir", description="the run directory (made from `train` if it has no config.yaml)"
            ),
            DeclareLaunchArgument(
                "learner_run_dir", default_value="", description="the learner's run directory (default: run_dir)"
            ),
            DeclareLaunchArgument(
                "robot_config",
                default_value=DEFAULT_ROBOT_CONFIG,
                description="supervisor / teleop parameters and env topics (configs/robot/*.yaml)",
            ),
            DeclareLaunchArgument(
                "train", default_value="", description="robot-rl train overrides for a new run (runtime=ros2 implied)"
            ),
            *common.runtime_arguments(),
            DeclareLaunchArgument(
                "reset_service",
                default_value="",
                description="the arm's reset-to-home service (std_srvs/Trigger; default: the robot "
                "config's driver_reset_service)",
            ),
            *topic_args,
            *output_args,
            *common.switch_arguments(),
            OpaqueFunction(function=_setup),
        ]
    )
