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
"""

import os
import shlex

import yaml
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_ROBOT_CONFIG = "configs/robot/franka.yaml"
PATH_KEYS = ("task_config", "device_config")
# launch argument -> (the env client's topics key, the supervisor's name for it or None, the stack's default)
TOPIC_ARGS = {
    "ee_pose_topic": ("ee_pose", "robot/ee_pose", "robot/ee_pose"),
    "joint_states_topic": ("joint_states", "robot/joint_states", "robot/joint_states"),
    "ee_twist_topic": ("ee_twist", None, "robot/ee_twist"),
    "success_topic": ("success", None, "robot/success"),
    "camera_topic": ("camera", None, "robot/camera/{name}/image_raw"),
}
OUTPUT_ARGS = {"target_pose_topic": "robot/target_pose", "gripper_topic": "robot/gripper"}  # supervisor -> arm


def _abs(path):
    return path if os.path.isabs(path) else os.path.join(REPO, path)


def _load(robot_config):
    with open(_abs(robot_config)) as f:
        return yaml.safe_load(f) or {}


def _section(robot_config, name):
    """One node's section of a robot config as ROS2 parameters (number lists as float arrays, paths absolute)."""
    cfg = _load(robot_config)
    if name not in cfg:
        raise RuntimeError(f"{robot_config} has no {name!r} section (has {sorted(cfg)})")
    params = {}
    for key, value in (cfg[name] or {}).items():
        if isinstance(value, list) and value and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                     for x in value):
            value = [float(x) for x in value]
        if key in PATH_KEYS and value:
            value = _abs(value)
        params[key] = value
    return params


def _ensure_run(run_dir, train):
    """Make ``run_dir/config.yaml`` (and ``runtime.key``) from ``robot-rl train`` overrides if it does not exist."""
    if os.path.exists(os.path.join(run_dir, "config.yaml")):
        return
    if not train.strip():
        raise RuntimeError(f"{run_dir} has no config.yaml: give train:=\"task=... \" (robot-rl train overrides)")
    from omegaconf import OmegaConf

    from robot_rl.cli import compose
    from robot_rl.runtime.launch import runtime_key

    cfg = compose("train", ["runtime=ros2", *shlex.split(train)])
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "config.yaml"), "w") as f:
        f.write(OmegaConf.to_yaml(cfg))
    runtime_key(run_dir)


def _truthy(text):
    return text.strip().lower() in ("1", "true", "yes", "on")


def _with_teleop(train, teleop):
    """With the teleop node, a new run takes the person's corrections from it (unless ``train`` sets ``hil``)."""
    if teleop and train.strip() and not any(a.startswith("hil=") for a in shlex.split(train)):
        return f"{train} hil=teleop teleop=ros2"
    return train


def _setup(context, *args, **kwargs):
    names = ("run_dir", "learner_run_dir", "robot_config", "train", "overrides", "topic_prefix", "teleop", "learner",
             "reset_service", *TOPIC_ARGS, *OUTPUT_ARGS)
    arg = {name: LaunchConfiguration(name).perform(context) for name in names}
    if not arg["run_dir"]:
        raise RuntimeError("run_dir:=... is required (the actor's run directory)")
    run_dir = os.path.abspath(arg["run_dir"])
    learner_dir = os.path.abspath(arg["learner_run_dir"] or run_dir)
    _ensure_run(run_dir, _with_teleop(arg["train"], _truthy(arg["teleop"])))
    robot = arg["robot_config"]
    env_topics = (_load(robot).get("env") or {}).get("topics") or {}

    supervisor_remaps, env_overrides = [], []
    for name, (key, internal, default) in TOPIC_ARGS.items():
        topic = arg[name] or env_topics.get(key) or default
        env_overrides.append(f"task.env_kwargs.topics.{key}={topic}")
        if internal is not None and topic != internal:
            supervisor_remaps.append((internal, topic))
    for name, internal in OUTPUT_ARGS.items():
        if arg[name] and arg[name] != internal:
            supervisor_remaps.append((internal, arg[name]))
    supervisor = _section(robot, "supervisor")
    if arg["reset_service"]:
        supervisor["driver_reset_service"] = arg["reset_service"]
    runtime = {"overrides": " ".join(shlex.quote(o) for o in (*env_overrides, *shlex.split(arg["overrides"])))}
    if arg["topic_prefix"]:
        runtime["topic_prefix"] = arg["topic_prefix"]

    nodes = [
        Node(executable="robot-rl-safety", name="safety_supervisor", output="screen",
             parameters=[supervisor], remappings=supervisor_remaps),
        Node(executable="robot-rl-actor", name="actor", output="screen",
             parameters=[{"run_dir": run_dir}, runtime]),
    ]
    if _truthy(arg["learner"]):
        nodes.append(Node(executable="robot-rl-learner", name="learner", output="screen",
                          parameters=[{"run_dir": learner_dir}, runtime]))
    if _truthy(arg["teleop"]):
        nodes.append(Node(executable="robot-rl-teleop", name="teleop", output="screen",
                          parameters=[_section(robot, "teleop")]))
    return nodes


def generate_launch_description():
    topic_args = [DeclareLaunchArgument(name, default_value="",
                                        description=f"the arm's {key} topic (default: robot_config env.topics.{key}, "
                                                    f"else {default})")
                  for name, (key, _, default) in TOPIC_ARGS.items()]
    output_args = [DeclareLaunchArgument(name, default_value="",
                                         description=f"the arm controller's input the supervisor's {internal} is "
                                                     "remapped to (default: no remap)")
                   for name, internal in OUTPUT_ARGS.items()]
    return LaunchDescription([
        DeclareLaunchArgument("run_dir", description="the run directory (made from `train` if it has no config.yaml)"),
        DeclareLaunchArgument("learner_run_dir", default_value="",
                              description="the learner's run directory (default: run_dir)"),
        DeclareLaunchArgument("robot_config", default_value=DEFAULT_ROBOT_CONFIG,
                              description="supervisor / teleop parameters and env topics (configs/robot/*.yaml)"),
        DeclareLaunchArgument("train", default_value="",
                              description="robot-rl train overrides for a new run (runtime=ros2 implied)"),
        DeclareLaunchArgument("overrides", default_value="",
                              description="key=value over the run's config.yaml for the actor and the learner"),
        DeclareLaunchArgument("topic_prefix", default_value="",
                              description="actor/learner topic prefix (default: the run's runtime.topic_prefix)"),
        DeclareLaunchArgument("reset_service", default_value="",
                              description="the arm's reset-to-home service (std_srvs/Trigger; default: the robot "
                                          "config's driver_reset_service)"),
        *topic_args,
        *output_args,
        DeclareLaunchArgument("teleop", default_value="true", description="start robot-rl-teleop"),
        DeclareLaunchArgument("learner", default_value="true",
                              description="start robot-rl-learner here (false: it runs on another machine)"),
        OpaqueFunction(function=_setup),
    ])
