"""A mixed fleet (robot_rl/runtime/fleet.py): a sim actor and a ROS2 robot actor feeding one learner on Ray. The robot
is the MuJoCo reach task behind robot-rl-sim-driver and robot-rl-safety (configs/robot/sim.yaml, lockstep), as
tests/test_ros2_runtime.py runs it; the body runs in a loopback-only network namespace (tests/ros2_netns.py) with
Ray embedded on 127.0.0.1."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ros2_netns import REPO_ROOT, node_log, run_in_netns, skip_reason, start_node, stop_nodes

pytest.importorskip("ray")
pytestmark = pytest.mark.skipif(bool(skip_reason()), reason=skip_reason() or "")


def _mixed_body():
    import tempfile

    from omegaconf import OmegaConf

    from robot_rl.cli import compose
    from robot_rl.data.store import EpisodeStore
    from robot_rl.utils.checkpoint import load_state

    cfg = compose(
        "train",
        [
            "task=reach",
            "runtime=ray",
            "runtime.actors=2",
            "runtime.steps_per_call=20",
            "device=cpu",
            "total_steps=200",
            "learning_starts=30",
            "demos.episodes=3",
            "eval.every=100",
            "eval.episodes=1",
            "agent.hidden_dims=[32,32]",
            "agent.num_critics=2",
            "agent.batch_size=32",
        ],
    )
    cfg.runtime.actor_overrides = {"1": ["task=ros2_reach"]}  # actor 1 drives the robot, actor 0 the simulator
    with tempfile.TemporaryDirectory(dir=os.environ.get("ROS_HOME")) as tmp:
        run = Path(tmp) / "run"
        run.mkdir()
        (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
        driver = start_node("hw.nodes.sim_driver", "--config", "configs/robot/sim.yaml")
        sup = start_node("hw.nodes.safety_supervisor", "--config", "configs/robot/sim.yaml")
        code = f"import sys; from robot_rl.runtime.fleet import run_fleet; sys.exit(run_fleet({str(run)!r}))"
        try:
            proc = subprocess.run(
                [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=400
            )
            assert proc.returncode == 0, (
                f"rc={proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}\n--- supervisor\n"
                f"{node_log(sup)[-1500:]}"
            )
        finally:
            stop_nodes(sup, driver)
        origins, episodes, steps = [], 0, 0
        for i in (0, 1):
            with EpisodeStore.open(run / f"fleet/actor_{i}/online.zarr") as store:
                assert len(store) > 0 and not store.validate()
                notes = [json.loads(store.metadata(k)["notes"]) for k in range(len(store))]
                origins.append({(n["origin"], n["task"]) for n in notes if "cut" not in n})
                episodes, steps = episodes + len(store), steps + store.num_steps
        assert origins == [{("sim", "reach")}, {("robot", "ros2_reach")}], origins
        state = load_state(run / "checkpoints/latest/trainer")
        assert (state["episode"], state["step"]) == (episodes, steps) and steps >= 200
        print(f"mixed fleet ok: {episodes} episodes, {steps} steps")


def test_a_sim_actor_and_a_ros2_robot_actor_feed_one_learner():
    """runtime=ray with actor 1 on task=ros2_reach (the robot over ROS2, through the safety supervisor) beside actor 0
    on task=reach (MuJoCo in its process): both feed the learner, each episode's notes keep its origin, and the
    learner counts exactly what the two stores hold."""
    out = run_in_netns(__name__, "_mixed_body", timeout=480)
    assert "mixed fleet ok" in out.stdout
    print(next(ln for ln in out.stdout.splitlines() if ln.startswith("mixed fleet ok")))
