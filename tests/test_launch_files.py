"""The ROS2 launch files, checked without ``launch`` / ``launch_ros`` (not installable here).

Statically (ast): every node is a ``launch_ros.actions.Node`` with a literal ``executable`` that is a console script of
this distribution (``[project.scripts]`` in pyproject.toml, whose entry point exists), and the files import nothing
else at module level. Dynamically (with stand-ins for the launch API): the launch descriptions are built and their
OpaqueFunctions run for the default arguments and for a real-robot set of remaps; every parameter passed to a node is
one that node declares (``declare(node, "name", ...)`` calls in its module, or its ``PARAMETERS`` tuple), every
remapped name is a topic its module uses, and the actor's overrides apply to the run's config.
"""

import ast
import importlib
import importlib.util
import shlex
import sys
import types
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
ALLOWED_IMPORTS = {
    "os",
    "shlex",
    "yaml",
    "launch",
    "launch.actions",
    "launch.substitutions",
    "launch.conditions",
    "launch_ros.actions",
}


def console_scripts() -> dict[str, str]:
    return tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]


def module_file(entry_point: str) -> Path:
    module = entry_point.split(":")[0]
    return REPO / (module.replace(".", "/") + ".py")


def declared_parameters(path: Path) -> set[str]:
    """Names passed to ``declare(<node>, "<name>", ...)`` anywhere in the module, plus a module-level
    ``PARAMETERS`` tuple of string literals."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) == "declare"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
        ):
            names.add(node.args[1].value)
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PARAMETERS" for t in node.targets):
            names |= {e.value for e in node.value.elts if isinstance(e, ast.Constant)}
    return names


def node_calls(path: Path) -> list[ast.Call]:
    return [
        n
        for n in ast.walk(ast.parse(path.read_text()))
        if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "Node"
    ]


def test_there_are_launch_files():
    assert {p.name for p in LAUNCH_FILES} >= {"sim_robot.launch.py", "real_robot.launch.py"}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_static_structure_and_executables_are_console_scripts(path):
    tree = ast.parse(path.read_text())
    for node in tree.body:  # module level: the launch API and the standard library only
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mods = [node.module]
        else:
            continue
        assert set(mods) <= ALLOWED_IMPORTS, f"{path.name} imports {mods} at module level"
    assert "generate_launch_description" in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    scripts = console_scripts()
    calls = node_calls(path)
    assert calls, f"{path.name} starts no Node"
    for call in calls:
        kw = {k.arg: k.value for k in call.keywords}
        assert isinstance(kw.get("executable"), ast.Constant), f"{path.name}: Node without a literal executable"
        exe = kw["executable"].value
        assert exe in scripts, (
            f"{path.name} runs {exe!r}, which is not in [project.scripts] of pyproject.toml (has {sorted(scripts)})"
        )
        module, func = scripts[exe].split(":")
        assert module_file(scripts[exe]).exists(), scripts[exe]
        spec = importlib.util.find_spec(module)
        assert spec is not None, f"{exe}: module {module} not importable"
        assert f"def {func}(" in module_file(scripts[exe]).read_text(), f"{exe}: {module} has no {func}()"
        assert "package" not in kw, f"{path.name}: {exe} is a pip console script on PATH, not in an ament package"


# ------------------------------------------------------------------------------- the launch API, stood in
class _Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class Node(_Recorded):
    pass


class DeclareLaunchArgument(_Recorded):
    @property
    def name(self):
        return self.args[0]


class OpaqueFunction(_Recorded):
    pass


class LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context.launch_configurations[self.name]


class LaunchDescription:
    def __init__(self, entities):
        self.entities = list(entities)


@pytest.fixture
def launch_api(monkeypatch):
    mods = {
        "launch": {"LaunchDescription": LaunchDescription},
        "launch.actions": {"DeclareLaunchArgument": DeclareLaunchArgument, "OpaqueFunction": OpaqueFunction},
        "launch.substitutions": {"LaunchConfiguration": LaunchConfiguration},
        "launch_ros": {},
        "launch_ros.actions": {"Node": Node},
    }
    for name, attrs in mods.items():
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, mod)


def run_launch(path: Path, **args: str) -> list[Node]:
    """Build the file's launch description with ``args`` over the declared defaults and run its OpaqueFunctions."""
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    desc = mod.generate_launch_description()
    declared = {e.name: e.kwargs.get("default_value") for e in desc.entities if isinstance(e, DeclareLaunchArgument)}
    unknown = set(args) - set(declared)
    assert not unknown, f"{path.name} declares no launch arguments {unknown}"
    values = {**declared, **args}
    missing = [k for k, v in values.items() if v is None]
    assert not missing, f"required launch arguments not given: {missing}"
    context = types.SimpleNamespace(launch_configurations=values)
    nodes = [e for e in desc.entities if isinstance(e, Node)]
    for e in desc.entities:
        if isinstance(e, OpaqueFunction):
            nodes += [n for n in e.kwargs["function"](context) if isinstance(n, Node)]
    return nodes


def check_nodes(nodes: list[Node]) -> dict[str, Node]:
    scripts = console_scripts()
    by_exe = {}
    for node in nodes:
        exe = node.kwargs["executable"]
        path = module_file(scripts[exe])
        declared = declared_parameters(path)
        passed = {}
        for entry in node.kwargs.get("parameters", []):
            assert isinstance(entry, dict), f"{exe}: parameters must be dicts here, got {entry!r}"
            passed.update(entry)
        undeclared = set(passed) - declared
        assert not undeclared, f"{exe} ({path.name}) is given parameters it does not declare: {sorted(undeclared)}"
        source = path.read_text()
        for old, _new in node.kwargs.get("remappings", []):
            assert f'"{old}"' in source, f"{exe}: remaps {old!r}, a name {path.name} does not use"
        by_exe[exe] = node
    return by_exe


def test_sim_launch_nodes_get_only_declared_parameters(launch_api, tmp_path):
    run = tmp_path / "run"
    nodes = check_nodes(
        run_launch(
            REPO / "launch/sim_robot.launch.py",
            run_dir=str(run),
            train="task=ros2_reach runtime.learner_task=reach total_steps=50",
        )
    )
    assert set(nodes) == {
        "robot-rl-sim-driver",
        "robot-rl-safety",
        "robot-rl-actor",
        "robot-rl-learner",
        "robot-rl-teleop",
    }
    driver = nodes["robot-rl-sim-driver"].kwargs["parameters"][0]
    assert driver["lockstep"] is True and Path(driver["task_config"]).is_absolute()
    assert Path(driver["task_config"]).exists()
    assert nodes["robot-rl-safety"].kwargs["parameters"][0]["workspace_low"] == [0.3, -0.25, 0.05]
    assert nodes["robot-rl-actor"].kwargs["parameters"][0]["run_dir"] == str(run)
    from robot_rl.utils.config import load_run_config

    cfg = load_run_config(run)  # the launch file made the run
    assert (
        cfg.runtime.transport == "hw.ros_transport:RosTransport"
        and cfg.runtime.learner_task == "reach"
        and cfg.total_steps == 50
    )
    assert (run / "runtime.key").exists()
    assert cfg.hil.name == "teleop" and cfg.hil.device.name == "hw.ros_teleop:RosTeleopDevice"  # the teleop node's
    # the learner elsewhere: no learner here; teleop off
    nodes = check_nodes(
        run_launch(
            REPO / "launch/sim_robot.launch.py", run_dir=str(run), learner="false", teleop="false", topic_prefix="arm2"
        )
    )
    assert set(nodes) == {"robot-rl-sim-driver", "robot-rl-safety", "robot-rl-actor"}
    assert nodes["robot-rl-actor"].kwargs["parameters"][1]["topic_prefix"] == "arm2"


def test_sim_launch_without_a_run_dir_makes_a_new_run(launch_api, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    nodes = check_nodes(run_launch(REPO / "launch/sim_robot.launch.py"))
    run = Path(nodes["robot-rl-actor"].kwargs["parameters"][0]["run_dir"])
    assert run.parent == tmp_path / "runs/ros2_reach" and run.name.endswith("_ros2")
    assert (run / "config.yaml").exists() and (run / "runtime.key").exists()
    assert nodes["robot-rl-learner"].kwargs["parameters"][0]["run_dir"] == str(run)
    check_nodes(run_launch(REPO / "launch/sim_robot.launch.py", run_dir=str(tmp_path / "solo"), teleop="false"))
    from robot_rl.utils.config import load_run_config

    assert load_run_config(tmp_path / "solo").hil.name == "none"  # no teleop node, no corrections


def test_real_launch_remaps_the_arm_topics(launch_api, tmp_path):
    run = tmp_path / "fr3"
    path = REPO / "launch/real_robot.launch.py"
    with pytest.raises(RuntimeError, match="no config.yaml"):
        run_launch(path, run_dir=str(run))
    nodes = check_nodes(
        run_launch(
            path,
            run_dir=str(run),
            train="task=ros2_reach runtime.learner_task=reach",
            target_pose_topic="/fr3/cartesian_target",
            gripper_topic="/fr3/gripper_cmd",
            ee_pose_topic="/fr3/tcp_pose",
            reset_service="/fr3/home",
            overrides="total_steps=123",
        )
    )
    assert set(nodes) == {"robot-rl-safety", "robot-rl-actor", "robot-rl-learner", "robot-rl-teleop"}
    sup = nodes["robot-rl-safety"].kwargs
    assert dict(sup["remappings"]) == {
        "robot/ee_pose": "/fr3/tcp_pose",
        "robot/joint_states": "/franka/joint_states",
        "robot/target_pose": "/fr3/cartesian_target",
        "robot/gripper": "/fr3/gripper_cmd",
    }
    assert sup["parameters"][0]["driver_reset_service"] == "/fr3/home"
    assert sup["parameters"][0]["frame_id"] == "fr3_link0"  # configs/robot/franka.yaml
    # the actor's env client gets the same topics through the run's config
    from robot_rl.utils.config import load_run_config

    overrides = shlex.split(nodes["robot-rl-actor"].kwargs["parameters"][1]["overrides"])
    cfg = load_run_config(run, overrides)
    topics = cfg.task.env_kwargs.topics
    assert topics.ee_pose == "/fr3/tcp_pose" and topics.joint_states == "/franka/joint_states"
    assert topics.camera == "/cameras/{name}/image_raw" and cfg.total_steps == 123
    from hw.ros_env import DEFAULT_TOPICS

    assert set(topics) <= set(DEFAULT_TOPICS)


def test_declared_parameters_match_the_nodes():
    """The static PARAMETERS tuples of the runtime nodes list what they declare at run time."""
    pytest.importorskip("rclpy", reason="the ros2 extra is not installed")
    from hw.nodes import actor, learner
    from hw.ros_transport import NODE_PARAMETERS

    for mod in (actor, learner):
        assert set(mod.PARAMETERS) <= set(NODE_PARAMETERS)
    scripts = console_scripts()
    sup = declared_parameters(module_file(scripts["robot-rl-safety"]))
    assert {"workspace_low", "max_speed", "driver_reset_service", "lockstep"} <= sup
    assert {"task", "task_config", "lockstep", "heartbeat_hz"} <= declared_parameters(
        module_file(scripts["robot-rl-sim-driver"])
    )
