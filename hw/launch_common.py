"""What launch/sim_robot.launch.py and launch/real_robot.launch.py share: robot-config sections as node parameters,
making a run directory from ``robot-rl train`` overrides, the launch arguments both declare, and the run's own nodes
(actor, learner, teleop) that follow the robot side of either stack.

Needs no ROS2 to import: ``launch`` / ``launch_ros`` are imported when a launch file calls in.
"""

from __future__ import annotations

import os
import shlex
from typing import Any

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATH_KEYS = ("task_config", "device_config")  # relative paths in robot configs are relative to the repository
RUN_ARGS = ("run_dir", "learner_run_dir", "robot_config", "train", "overrides", "topic_prefix", "teleop", "learner")


def abs_path(path: str) -> str:
    """``path`` as is if absolute, else relative to the repository."""
    return path if os.path.isabs(path) else os.path.join(REPO, path)


def load_robot_config(robot_config: str) -> dict[str, Any]:
    """A robot config (``configs/robot/*.yaml``) as a mapping."""
    with open(abs_path(robot_config)) as f:
        return yaml.safe_load(f) or {}


def section(robot_config: str, name: str) -> dict[str, Any]:
    """One node's section of a robot config as ROS2 parameters (number lists as float arrays, paths absolute)."""
    cfg = load_robot_config(robot_config)
    if name not in cfg:
        raise RuntimeError(f"{robot_config} has no {name!r} section (has {sorted(cfg)})")
    params = {}
    for key, value in (cfg[name] or {}).items():
        if (
            isinstance(value, list)
            and value
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)
        ):
            value = [float(x) for x in value]
        if key in PATH_KEYS and value:
            value = abs_path(value)
        params[key] = value
    return params


def ensure_run(run_dir: str, train: str, need_train: bool = False) -> str:
    """Make ``run_dir/config.yaml`` (and ``runtime.key``) from ``robot-rl train`` overrides if it does not exist; no
    ``run_dir``: a new one, ``runs/<task>/<date>_<time>_ros2``. ``need_train``: a new run needs ``train`` overrides
    (RuntimeError without). Returns the run directory."""
    if run_dir and os.path.exists(os.path.join(run_dir, "config.yaml")):
        return run_dir
    if need_train and not train.strip():
        raise RuntimeError(f'{run_dir} has no config.yaml: give train:="task=... " (robot-rl train overrides)')
    import time

    from omegaconf import OmegaConf

    from robot_rl.cli import compose
    from robot_rl.runtime.keys import runtime_key

    cfg = compose("train", ["runtime=ros2", *shlex.split(train)])
    run_dir = run_dir or os.path.join("runs", str(cfg.task.name), time.strftime("%Y%m%d_%H%M%S") + "_ros2")
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "config.yaml"), "w") as f:
        f.write(OmegaConf.to_yaml(cfg))
    runtime_key(run_dir)
    return run_dir


def truthy(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def with_teleop(train: str, teleop: bool) -> str:
    """With the teleop node, a new run takes the person's corrections from it (unless ``train`` sets ``hil``)."""
    if teleop and train.strip() and not any(a.startswith("hil=") for a in shlex.split(train)):
        return f"{train} hil=teleop teleop=ros2"
    return train


def launch_values(context: Any, *extra: str) -> dict[str, str]:
    """The values of :data:`RUN_ARGS` and of the launch arguments ``extra`` in ``context``."""
    from launch.substitutions import LaunchConfiguration

    return {name: LaunchConfiguration(name).perform(context) for name in (*RUN_ARGS, *extra)}


def runtime_parameters(overrides: str, topic_prefix: str) -> dict[str, str]:
    """The actor's and the learner's parameters beyond ``run_dir``: config overrides and the topic prefix if set."""
    runtime = {"overrides": overrides}
    if topic_prefix:
        runtime["topic_prefix"] = topic_prefix
    return runtime


def run_nodes(arg: dict[str, str], run_dir: str, runtime: dict[str, str]) -> list[Any]:
    """The run's own nodes, after the robot side: the actor of ``run_dir``, the learner (``learner:=true``; of
    ``learner_run_dir``, default ``run_dir``) and teleop (``teleop:=true``; the robot config's ``teleop`` section)."""
    from launch_ros.actions import Node

    learner_dir = os.path.abspath(arg["learner_run_dir"] or run_dir)
    nodes = [
        Node(executable="robot-rl-actor", name="actor", output="screen", parameters=[{"run_dir": run_dir}, runtime])
    ]
    if truthy(arg["learner"]):
        nodes.append(
            Node(
                executable="robot-rl-learner",
                name="learner",
                output="screen",
                parameters=[{"run_dir": learner_dir}, runtime],
            )
        )
    if truthy(arg["teleop"]):
        nodes.append(
            Node(
                executable="robot-rl-teleop",
                name="teleop",
                output="screen",
                parameters=[section(arg["robot_config"], "teleop")],
            )
        )
    return nodes


def runtime_arguments() -> list[Any]:
    """The ``overrides`` and ``topic_prefix`` launch arguments (for the actor and the learner)."""
    from launch.actions import DeclareLaunchArgument

    return [
        DeclareLaunchArgument(
            "overrides",
            default_value="",
            description="key=value over the run's config.yaml for the actor and the learner",
        ),
        DeclareLaunchArgument(
            "topic_prefix",
            default_value="",
            description="actor/learner topic prefix (default: the run's runtime.topic_prefix)",
        ),
    ]


def switch_arguments() -> list[Any]:
    """The ``teleop`` and ``learner`` launch arguments: whether this launch starts those nodes."""
    from launch.actions import DeclareLaunchArgument

    return [
        DeclareLaunchArgument("teleop", default_value="true", description="start robot-rl-teleop"),
        DeclareLaunchArgument(
            "learner",
            default_value="true",
            description="start robot-rl-learner here (false: it runs on another machine)",
        ),
    ]
