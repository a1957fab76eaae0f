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
"""

import os
import shlex

import yaml
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_ROBOT_CONFIG = "configs/robot/sim.yaml"
DEFAULT_TRAIN = "task=ros2_reach runtime.learner_task=reach"
PATH_KEYS = ("task_config", "device_config")  # relative paths in robot configs are relative to the repository


def _abs(path):
    return path if os.path.isabs(path) else os.path.join(REPO, path)


def _section(robot_config, name):
    """One node's section of a robot config as ROS2 parameters (number lists as float arrays, paths absolute)."""
    with open(_abs(robot_config)) as f:
        cfg = yaml.safe_load(f) or {}
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
    """Make ``run_dir/config.yaml`` (and ``runtime.key``) from ``robot-rl train`` overrides if it does not exist;
    no ``run_dir``: a new one, ``runs/<task>/<date>_<time>_ros2``. Returns the run directory."""
    if run_dir and os.path.exists(os.path.join(run_dir, "config.yaml")):
        return run_dir
    import time

    from omegaconf import OmegaConf

    from robot_rl.cli import compose
    from robot_rl.runtime.launch import runtime_key

    cfg = compose("train", ["runtime=ros2", *shlex.split(train)])
    run_dir = run_dir or os.path.join("runs", str(cfg.task.name), time.strftime("%Y%m%d_%H%M%S") + "_ros2")
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "config.yaml"), "w") as f:
        f.write(OmegaConf.to_yaml(cfg))
    runtime_key(run_dir)
    return run_dir


def _truthy(text):
    return text.strip().lower() in ("1", "true", "yes", "on")


def _with_teleop(train, teleop):
    """With the teleop node, a new run takes the person's corrections from it (unless ``train`` sets ``hil``)."""
    if teleop and train.strip() and not any(a.startswith("hil=") for a in shlex.split(train)):
        return f"{train} hil=teleop teleop=ros2"
    return train


def _setup(context, *args, **kwargs):
    arg = {name: LaunchConfiguration(name).perform(context) for name in
           ("run_dir", "learner_run_dir", "robot_config", "train", "overrides", "topic_prefix", "teleop", "learner")}
    run_dir = os.path.abspath(_ensure_run(arg["run_dir"], _with_teleop(arg["train"], _truthy(arg["teleop"]))))
    learner_dir = os.path.abspath(arg["learner_run_dir"] or run_dir)
    runtime = {"overrides": arg["overrides"]}
    if arg["topic_prefix"]:
        runtime["topic_prefix"] = arg["topic_prefix"]
    robot = arg["robot_config"]
    nodes = [
        Node(executable="robot-rl-sim-driver", name="sim_driver", output="screen",
             parameters=[_section(robot, "driver")]),
        Node(executable="robot-rl-safety", name="safety_supervisor", output="screen",
             parameters=[_section(robot, "supervisor")]),
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
    return LaunchDescription([
        DeclareLaunchArgument("run_dir", default_value="",
                              description="the run directory (made from `train` if it has no config.yaml; default: "
                                          "a new one in runs/<task>/)"),
        DeclareLaunchArgument("learner_run_dir", default_value="",
                              description="the learner's run directory (default: run_dir; another one gets every "
                                          "episode over ROS2 and keeps a replica store)"),
        DeclareLaunchArgument("robot_config", default_value=DEFAULT_ROBOT_CONFIG,
                              description="driver / supervisor / teleop parameters (configs/robot/*.yaml)"),
        DeclareLaunchArgument("train", default_value=DEFAULT_TRAIN,
                              description="robot-rl train overrides for a new run (runtime=ros2 implied)"),
        DeclareLaunchArgument("overrides", default_value="",
                              description="key=value over the run's config.yaml for the actor and the learner"),
        DeclareLaunchArgument("topic_prefix", default_value="",
                              description="actor/learner topic prefix (default: the run's runtime.topic_prefix)"),
        DeclareLaunchArgument("teleop", default_value="true", description="start robot-rl-teleop"),
        DeclareLaunchArgument("learner", default_value="true",
                              description="start robot-rl-learner here (false: it runs on another machine)"),
        OpaqueFunction(function=_setup),
    ])
