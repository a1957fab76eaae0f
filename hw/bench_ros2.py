"""Control-loop latency over ROS2: from an observation's stamp to the command it produces, against the 10 Hz budget.

``robot-rl bench ros2 [--quick] [--json PATH] [key=value ...]``. The robot is the MuJoCo reach task served by
``robot-rl-sim-driver`` in realtime (physics on the wall clock at 10 Hz, every state stamped when published) behind
``robot-rl-safety``, both from ``configs/robot/sim.yaml``; the loop is the ROS2 env client (:mod:`hw.ros_env`, as
``task=ros2_reach`` builds it) plus the default RLPD agent's ``act()`` (untrained: latency does not depend on the
weights). Per control step, after ``warmup`` untimed ones:

* ``ros2_<obs>``: observation stamp (the driver's publish time) -> the command's publish on ``cmd/target_pose`` (its
  stamp): transport and alignment of the observation, ``act()``, and the env's command path;
* ``ros2_<obs>_robot``: observation stamp -> that command arriving at the driver's input ``robot/target_pose``,
  i.e. after the safety supervisor's checks and limits (what the arm feels); both command topics are watched by a
  probe in a process of its own;
* ``ros2_<obs>_transport``: observation stamp -> the observation handed to the loop by the env client;
* ``ros2_<obs>_act``: ``act()`` inside that loop;
* ``inproc_<obs>``, the baseline: the same loop in one process without ROS (the MuJoCo reach env stepped directly):
  observation ready (``env.step`` returned) -> action ready to apply.

``<obs>`` is ``state`` (proprioception + task state) and ``pixels`` (``front`` and ``wrist`` uint8 cameras of
``image_size`` px + proprioception; ``act()`` runs the frozen image trunk). Every row reports p50 / p99 / mean / max in
ms and its margin against the control period (``budget_ms``: 100 ms at 10 Hz); ``ratios`` holds ROS2 / in-process at
p50 and p99 (the cost of the middleware and the supervisor hop).

Network: DDS multicasts discovery on every interface, so the benchmark runs inside a fresh loopback-only network
namespace (:mod:`hw.netns`, re-executing itself there), with ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and a random
``ROS_DOMAIN_ID``. Where no namespace can be made it refuses to run, unless ``allow_network=true``.
"""

from __future__ import annotations

import bisect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.bench.common import busy_cores, machine_info, parse_overrides, print_table

DEFAULTS: dict[str, Any] = {
    "obs": "both",  # state | pixels | both
    "steps": 0,  # timed control steps per observation mode; 0: 40 quick, 300 full
    "warmup": -1,  # untimed steps first; -1: 5 quick, 20 full
    "image_size": 0,  # camera side (px) in pixels mode; 0: 64 quick, 128 full
    "threads": 1,  # torch threads of the loop's process (an actor's share of a small machine)
    "device": "cpu",  # the agent's device (cpu | cuda | auto)
    "deterministic": False,  # act(deterministic=...)
    "budget_ms": 0.0,  # 0: the control period (100 ms at 10 Hz)
    "seed": 0,
    "allow_network": False,  # run on this network namespace when a loopback-only one cannot be made
    "timeout_s": 0.0,  # kill the isolated run after this long; 0: 600 quick, 3600 full
}

ROW_LABELS: dict[str, str] = {}
for _obs in ("state", "pixels"):
    ROW_LABELS.update({
        f"ros2_{_obs}": f"ROS2, {_obs}: obs stamp -> command published",
        f"ros2_{_obs}_robot": f"ROS2, {_obs}: obs stamp -> command at the driver (after the supervisor)",
        f"ros2_{_obs}_transport": f"ROS2, {_obs}: obs stamp -> obs in the loop (DDS + alignment)",
        f"ros2_{_obs}_act": f"ROS2, {_obs}: act()",
        f"inproc_{_obs}": f"in-process, {_obs}: obs ready -> action ready (baseline)",
    })


def _settings(quick: bool, overrides: list[str]) -> dict[str, Any]:
    s = parse_overrides(overrides, DEFAULTS)
    if s["obs"] not in ("state", "pixels", "both"):
        raise ValueError(f"obs={s['obs']!r} must be state, pixels or both")
    s["steps"] = s["steps"] or (40 if quick else 300)
    s["warmup"] = s["warmup"] if s["warmup"] >= 0 else (5 if quick else 20)
    s["image_size"] = s["image_size"] or (64 if quick else 128)
    s["timeout_s"] = s["timeout_s"] or (600.0 if quick else 3600.0)
    if s["steps"] < 1:
        raise ValueError("steps must be >= 1")
    return s


def run(quick: bool, overrides: list[str]) -> dict[str, Any]:
    """Measure (in a loopback-only network namespace), print the table, return every figure.

    Returns a JSON-serialisable dict: ``settings``, ``machine``, ``network`` (how DDS was confined), ``budget_ms``,
    ``rows`` (latency figures in ms, margins, ``label``), ``ratios`` (ROS2 / in-process at p50 and p99, and
    ``budget / p99`` per row), ``ratio`` (ROS2 / in-process p50, state), ``notes``.
    """
    from hw.netns import loopback_ros_env, netns_unavailable, network_isolated, run_isolated

    s = _settings(quick, overrides)
    if network_isolated():
        return _measure(s, quick, "this process's network namespace holds only lo")
    reason = netns_unavailable()
    if reason is not None:
        if not s["allow_network"]:
            raise RuntimeError(f"refusing to run DDS on a network that is not isolated: {reason}. Run where a "
                               "loopback-only network namespace can be made (unshare + ip), or pass "
                               "allow_network=true to run on this machine's network anyway")
        print(f"WARNING: {reason}; allow_network=true: running DDS on this network (loopback discovery only, a "
              "random ROS_DOMAIN_ID)")
        os.environ.update({k: v for k, v in loopback_ros_env(tempfile.mkdtemp(prefix="bench_ros2_")).items()
                           if k.startswith(("ROS_", "RMW_", "CYCLONE"))})
        return _measure(s, quick, f"NOT isolated ({reason}); allow_network=true")
    with tempfile.TemporaryDirectory(prefix="bench_ros2_") as tmp:
        out = Path(tmp) / "result.json"
        code = ("import sys, json; from hw.bench_ros2 import _isolated_main; "
                "_isolated_main(json.loads(sys.argv[1]), sys.argv[2] == '1', sys.argv[3])")
        env = loopback_ros_env(tmp)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_repo()), env.get("PYTHONPATH", "")) if p)
        res = run_isolated([sys.executable, "-c", code, json.dumps(s), "1" if quick else "0", str(out)], env,
                           timeout=s["timeout_s"], cwd=str(_repo()))
        if res.returncode != 0 or not out.exists():
            raise RuntimeError(f"the isolated benchmark failed (exit {res.returncode}); see its output above")
        return json.loads(out.read_text())


def _isolated_main(s: dict[str, Any], quick: bool, out: str) -> None:
    from hw.netns import network_isolated

    if not network_isolated():
        raise SystemExit("not in a loopback-only network namespace; refusing to start DDS")
    Path(out).write_text(json.dumps(_measure(s, quick, "fresh loopback-only network namespace (unshare -n), "
                                                       "ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST")))


def _repo() -> Path:
    from robot_rl.cli import CONFIG_DIR

    return CONFIG_DIR.parent


# ------------------------------------------------------------------------------------------------ nodes
class _Nodes:
    """The sim driver and supervisor as subprocesses, logs in a temp dir."""

    def __init__(self, tmp: str):
        self.tmp, self.procs = tmp, {}

    def start(self, name: str, module: str, *args: str) -> None:
        log = open(os.path.join(self.tmp, f"{name}.log"), "w")
        self.procs[name] = (subprocess.Popen([sys.executable, "-m", module, *args], cwd=str(_repo()), stdout=log,
                                             stderr=subprocess.STDOUT), log)

    def log(self, name: str) -> str:
        with open(os.path.join(self.tmp, f"{name}.log")) as f:
            return f.read()

    def stop(self, *names: str) -> None:
        import signal

        for name in names or list(self.procs):
            proc, log = self.procs.pop(name)
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log.close()


class _Probe:
    """Records ``cmd/target_pose`` stamps (as published by the env client) and when each forwarded command reaches
    ``robot/target_pose`` (the driver's input). A process of its own (:func:`_probe_main`), so its callbacks never wait
    for the measured loop's interpreter lock."""

    def __init__(self, tmp: str):
        self.dir = Path(tempfile.mkdtemp(prefix="probe_", dir=tmp))
        code = "import sys; from hw.bench_ros2 import _probe_main; _probe_main(sys.argv[1])"
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(self.dir)], cwd=str(_repo()))

    def wait_matched(self, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while not (self.dir / "ready").exists():
            if time.monotonic() > end or self.proc.poll() is not None:
                raise RuntimeError("the probe never matched cmd/target_pose and robot/target_pose publishers")
            time.sleep(0.05)

    def results(self) -> tuple[list[int], dict[int, int]]:
        (self.dir / "stop").touch()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        data = json.loads((self.dir / "result.json").read_text())
        return sorted(data["cmd"]), {int(k): v for k, v in data["at_robot"].items()}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _probe_main(folder: str) -> None:
    """The probe process: spin until ``<folder>/stop`` exists, then write ``result.json``."""
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.executors import SingleThreadedExecutor

    from hw.ros_common import stamp_ns, state_qos

    out = Path(folder)
    rclpy.init(args=[])
    node = rclpy.create_node("bench_probe")
    cmd: list[int] = []
    at_robot: dict[int, int] = {}
    sub_cmd = node.create_subscription(PoseStamped, "cmd/target_pose",
                                       lambda m: cmd.append(stamp_ns(m.header.stamp)), state_qos(200))
    sub_robot = node.create_subscription(
        PoseStamped, "robot/target_pose",
        lambda m: at_robot.setdefault(stamp_ns(m.header.stamp), time.time_ns()), state_qos(200))
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    try:
        while not (out / "stop").exists():
            ex.spin_once(timeout_sec=0.01)
            if not (out / "ready").exists() and sub_cmd.get_publisher_count() and sub_robot.get_publisher_count():
                (out / "ready").touch()
        end = time.monotonic() + 0.3
        while time.monotonic() < end:  # what is still in flight
            ex.spin_once(timeout_sec=0.01)
        (out / "result.json").write_text(json.dumps({"cmd": cmd, "at_robot": {str(k): v for k, v in at_robot.items()}}))
    finally:
        node.destroy_node()
        rclpy.shutdown()


# ---------------------------------------------------------------------------------------------- measure
def _stats(ms: list[float], budget: float) -> dict[str, Any]:
    x = np.asarray(ms, np.float64)
    p50, p99 = (float(v) for v in np.percentile(x, [50, 99]))
    return {"p50_ms": p50, "p99_ms": p99, "mean_ms": float(x.mean()), "max_ms": float(x.max()),
            "min_ms": float(x.min()), "n": int(x.size), "budget_over_p99": budget / p99, "headroom_ms": budget - p99}


def _agent(env: Any, agent_cfg: dict[str, Any]) -> Any:
    from robot_rl.agents.sac import SAC, SACConfig

    return SAC(env.observation_space, env.action_space, SACConfig.from_dict(agent_cfg))


def _ros_loop(mode: str, s: dict[str, Any], task: dict[str, Any], agent_cfg: dict[str, Any], tmp: str
              ) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """One ROS2 control loop (driver + supervisor already running); latencies per part, in ms."""
    from hw.ros_env import RosRobotEnv

    kw = dict(task["env_kwargs"])
    kw.update(obs_mode=mode, lockstep=False, image_size=s["image_size"], step_timeout=5.0, connect_timeout=60.0,
              node_name=f"bench_env_{mode}")
    env = RosRobotEnv(**kw)
    probe = _Probe(tmp)
    try:
        agent = _agent(env, agent_cfg)
        probe.wait_matched()
        obs, info = env.reset(seed=s["seed"])
        t_ret = time.time_ns()
        recs: list[tuple[int, int, float]] = []  # obs stamp, obs handed to the loop (ns), act ms
        t_start, episodes = time.perf_counter(), 1
        for i in range(s["warmup"] + s["steps"]):
            t_obs = int(round(float(info["stamp"]) * 1e9))
            t0 = time.perf_counter()
            action = agent.act(obs, deterministic=s["deterministic"])
            act_ms = (time.perf_counter() - t0) * 1e3
            if i >= s["warmup"]:
                recs.append((t_obs, t_ret, act_ms))
            else:
                t_start = time.perf_counter()
            obs, _, terminated, truncated, info = env.step(action)
            t_ret = time.time_ns()
            if terminated or truncated:  # resets are not control steps: the next command comes from a fresh obs
                obs, info = env.reset()
                t_ret = time.time_ns()
                episodes += 1
        loop_s = time.perf_counter() - t_start
        time.sleep(0.5)  # the last commands reach the probe
        cmds, at_robot = probe.results()
    finally:
        probe.close()
        env.close()
    out: dict[str, list[float]] = {f"ros2_{mode}": [], f"ros2_{mode}_robot": [], f"ros2_{mode}_transport": [],
                                   f"ros2_{mode}_act": []}
    missing = 0
    for t_obs, t_ret, act_ms in recs:
        j = bisect.bisect_left(cmds, t_ret)  # the command of this step: the first one published after the obs came
        if j == len(cmds):
            missing += 1
            continue
        cmd = cmds[j]
        out[f"ros2_{mode}"].append((cmd - t_obs) / 1e6)
        out[f"ros2_{mode}_transport"].append((t_ret - t_obs) / 1e6)
        out[f"ros2_{mode}_act"].append(act_ms)
        if cmd in at_robot:
            out[f"ros2_{mode}_robot"].append((at_robot[cmd] - t_obs) / 1e6)
    extra = {"steps_per_s": len(recs) / loop_s, "episodes": episodes, "commands_seen": len(cmds),
             "commands_missing": missing, "forwarded_by_supervisor": len(out[f"ros2_{mode}_robot"])}
    return out, extra


def _inproc_loop(mode: str, s: dict[str, Any], agent_cfg: dict[str, Any]) -> tuple[list[float], dict[str, Any]]:
    """The same loop on the MuJoCo reach env in this process: env.step returned -> act() returned, in ms."""
    import yaml

    from robot_rl.envs.make import make_env

    with open(_repo() / "configs/task/reach.yaml") as f:
        task = yaml.safe_load(f)
    task["env_kwargs"].update(obs_mode=mode, image_size=s["image_size"])
    env = make_env(task)
    try:
        agent = _agent(env, agent_cfg)
        obs, _ = env.reset(seed=s["seed"])
        t_obs = time.perf_counter()
        lat: list[float] = []
        t_start = time.perf_counter()
        for i in range(s["warmup"] + s["steps"]):
            action = agent.act(obs, deterministic=s["deterministic"])
            if i >= s["warmup"]:
                lat.append((time.perf_counter() - t_obs) * 1e3)
            else:
                t_start = time.perf_counter()
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                obs, _ = env.reset()
            t_obs = time.perf_counter()
        loop_s = time.perf_counter() - t_start
    finally:
        env.close()
    return lat, {"steps_per_s": len(lat) / loop_s}


def _measure(s: dict[str, Any], quick: bool, network: str) -> dict[str, Any]:
    import torch
    import yaml
    from omegaconf import OmegaConf

    from robot_rl.cli import compose

    notes: list[str] = []
    busy = busy_cores()
    if busy is not None and busy > 0.5:
        notes.append(f"other processes kept {busy:.1f} of {os.cpu_count()} cores busy before the run: latencies "
                     "(p99 and max above all) are inflated and noisy")
        print(f"WARNING: {notes[-1]}")
    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, s["threads"]))
    torch.manual_seed(s["seed"])
    repo = _repo()
    with open(repo / "configs/task/ros2_reach.yaml") as f:
        task = yaml.safe_load(f)
    with open(repo / "configs/robot/sim.yaml") as f:
        robot = yaml.safe_load(f)
    hz = float(task["env_kwargs"]["control_rate"])
    budget = s["budget_ms"] or 1e3 / hz
    modes = ["state", "pixels"] if s["obs"] == "both" else [s["obs"]]
    agent_cfg: dict[str, Any] = OmegaConf.to_container(
        compose("train", ["task=ros2_reach", f"device={s['device']}"]).agent, resolve=True)  # type: ignore[assignment]
    print(f"ros2 benchmark: reach served by robot-rl-sim-driver in realtime at {hz:g} Hz behind robot-rl-safety "
          f"(configs/robot/sim.yaml), env client hw.ros_env + {agent_cfg['name']} act() (untrained, hidden "
          f"{tuple(agent_cfg['hidden_dims'])}), torch threads {torch.get_num_threads()}; {s['steps']} timed steps "
          f"per mode after {s['warmup']} warm-up; budget {budget:g} ms; network: {network}")
    samples: dict[str, list[float]] = {}
    loops: dict[str, dict[str, Any]] = {}
    tmp = tempfile.mkdtemp(prefix="bench_ros2_nodes_")
    nodes = _Nodes(tmp)
    sim_yaml = str(repo / "configs/robot/sim.yaml")
    try:
        nodes.start("supervisor", "hw.nodes.safety_supervisor", "--config", sim_yaml, "--ros-args",
                    "-p", "lockstep:=false")
        for mode in modes:
            nodes.start(f"driver_{mode}", "hw.nodes.sim_driver", "--config", sim_yaml, "--ros-args",
                        "-p", "lockstep:=false", "-p", f"obs_mode:={mode}", "-p", f"image_size:={s['image_size']}")
            t0 = time.perf_counter()
            try:
                got, extra = _ros_loop(mode, s, task, agent_cfg, tmp)
            except Exception:
                for name in list(nodes.procs):
                    print(f"--- {name} log (tail)\n{nodes.log(name)[-2000:]}")
                raise
            finally:
                nodes.stop(f"driver_{mode}")
            samples.update(got)
            loops[f"ros2_{mode}"] = {**extra, "wall_s": time.perf_counter() - t0}
            if extra["commands_missing"]:
                notes.append(f"{extra['commands_missing']} {mode} steps had no command seen by the probe")
            t0 = time.perf_counter()
            samples[f"inproc_{mode}"], extra = _inproc_loop(mode, s, agent_cfg)
            loops[f"inproc_{mode}"] = {**extra, "wall_s": time.perf_counter() - t0}
        sup_log = nodes.log("supervisor")
    finally:
        if nodes.procs:
            nodes.stop()
        torch.set_num_threads(threads_before)
        shutil.rmtree(tmp, ignore_errors=True)
    clamps = sup_log.count("target clamped by")
    if clamps:
        notes.append(f"the supervisor clamped {clamps} targets (untrained policy); clamped ones are still forwarded")

    rows = {k: {"label": ROW_LABELS[k], **_stats(v, budget)} for k, v in samples.items() if v}
    ratios: dict[str, float] = {}
    for mode in modes:
        a, b = rows.get(f"ros2_{mode}"), rows.get(f"inproc_{mode}")
        if a and b:
            ratios[f"ros2/inproc {mode} p50"] = a["p50_ms"] / b["p50_ms"]
            ratios[f"ros2/inproc {mode} p99"] = a["p99_ms"] / b["p99_ms"]
    for k, r in rows.items():
        ratios[f"budget/p99 {k}"] = r["budget_over_p99"]
    over = [k for k in rows if k.startswith("ros2_") and not k.endswith(("_act", "_transport"))
            and rows[k]["p99_ms"] > budget]
    if over:
        notes.append(f"over the {budget:g} ms budget at p99: {', '.join(over)}")
    _print(rows, ratios, loops, budget, modes)
    for n in notes:
        print(f"note: {n}")
    machine = machine_info(max(1, s["threads"]))
    machine["busy_cores_before_run"] = None if busy is None else round(busy, 2)
    headline = "ros2/inproc state p50" if "state" in modes else "ros2/inproc pixels p50"
    return {
        "benchmark": "ros2", "quick": quick, "settings": s, "machine": machine, "network": network,
        "task": {"name": "ros2_reach", "control_hz": hz, "image_size": s["image_size"], "modes": modes,
                 "cameras": ["front", "wrist"] if "pixels" in modes else [],
                 "driver": {k: robot["driver"][k] for k in ("task", "max_step")},
                 "supervisor": {k: robot["supervisor"][k] for k in ("max_speed", "control_rate", "rate_hz")}},
        "agent": {"name": agent_cfg["name"], "hidden_dims": list(agent_cfg["hidden_dims"]),
                  "num_critics": agent_cfg["num_critics"]},
        "budget_ms": budget, "rows": rows, "loops": loops, "ratios": ratios, "ratio": ratios.get(headline),
        "notes": notes,
    }


def _print(rows: dict[str, dict[str, Any]], ratios: dict[str, float], loops: dict[str, dict[str, Any]],
           budget: float, modes: list[str]) -> None:
    print(f"\nlatency per control step, ms (budget {budget:g} ms)")
    table = []
    for mode in modes:
        table.append([f"[{mode}]", "", "", "", "", "", ""])
        for k in (f"ros2_{mode}", f"ros2_{mode}_robot", f"ros2_{mode}_transport", f"ros2_{mode}_act",
                  f"inproc_{mode}"):
            if k in rows:
                r = rows[k]
                table.append([f"  {r['label']}", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['mean_ms']:.2f}",
                              f"{r['max_ms']:.2f}", f"{r['budget_over_p99']:.1f}x", str(r["n"])])
    print_table(["row", "p50", "p99", "mean", "max", "budget/p99", "n"], table)
    print()
    for mode in modes:
        ros, inp = loops.get(f"ros2_{mode}", {}), loops.get(f"inproc_{mode}", {})
        print(f"{mode}: ROS2 loop {ros.get('steps_per_s', float('nan')):.1f} steps/s (paced by the driver's clock); "
              f"in-process {inp.get('steps_per_s', float('nan')):.1f} steps/s (flat out)")
    print_table(["ratio", "x"], [[k, f"{v:.3g}"] for k, v in ratios.items()])
