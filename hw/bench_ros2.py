"""Control-loop latency over ROS2: from an observation's stamp to the command it produces, against the 10 Hz budget,
idle and while a learner trains on the same machine.

``robot-rl bench ros2 [--quick] [--json PATH] [key=value ...]``. The robot is the MuJoCo reach task served by
``robot-rl-sim-driver`` in realtime (physics on the wall clock at 10 Hz, every state stamped when published) behind
``robot-rl-safety``, both from ``configs/robot/sim.yaml``; the loop is the ROS2 env client (:mod:`hw.ros_env`, as
``task=ros2_reach`` builds it) plus the default RLPD agent's ``act()`` (untrained: latency does not depend on the
weights). Per control step, after ``warmup`` untimed ones:

* ``ros2_<obs>``: observation stamp (the driver's publish time) -> the command's publish on ``cmd/target_pose`` (its
  stamp): transport and alignment of the observation, ``act()``, and the env's command path;
* ``ros2_<obs>_robot``: observation stamp -> the supervisor's answer to that command arriving at the driver's input
  ``robot/target_pose``, i.e. after the safety supervisor's checks and limits (what the arm feels). The supervisor
  runs with ``trace_commands``: it publishes on ``safety/command_trace`` which output (its stamp, on the supervisor's
  clock) answered which command (its stamp), and a probe in a process of its own watches the three topics and times
  each output's arrival on ``robot/target_pose`` (standing in for the driver, at the driver's scheduling priority);
* ``ros2_<obs>_sup_in``: command stamp -> the answering output's stamp (the command delivered to the supervisor and
  its callback started; a command less than 2 ms after the previous output waits for the next timer tick);
* ``ros2_<obs>_sup_out``: the answering output's stamp -> its arrival at the driver (limits, publish, delivery);
* ``ros2_<obs>_transport``: observation stamp -> the observation handed to the loop by the env client;
* ``ros2_<obs>_act``: ``act()`` inside that loop;
* ``inproc_<obs>``, the baseline: the same loop in one process without ROS (the MuJoCo reach env stepped directly):
  observation ready (``env.step`` returned) -> action ready to apply.

``<obs>`` is ``state`` (proprioception + task state) and ``pixels`` (``front`` and ``wrist`` uint8 cameras of
``image_size`` px + proprioception; ``act()`` runs the frozen image trunk). Every row reports p50 / p99 / mean / max in
ms and its margin against the control period (``budget_ms``: 100 ms at 10 Hz); ``ratios`` holds ROS2 / in-process at
p50 and p99 (the cost of the middleware and the supervisor hop).

Load (``load=none|learner|both``; ``both`` by default in full mode, ``none`` in quick): the ``_load`` rows (e.g.
``ros2_state_robot_load``) are the same loop measured again while a learner trains in another process: the task's
agent (the one ``act()`` runs) built on the reach task's state spaces, calling ``update()`` on random batches in a loop
with ``load_threads`` torch threads (1: the ``learner_threads`` of ``runtime=async`` / ``ros2``), at nice
``load_nice`` (10: a learner on a robot PC should run niced below the control path). It starts before the loaded
loop (and its first updates are done before timing starts) and is killed after it. ``loaded`` holds, per mode, the
cores kept busy during the timed loaded steps (``/proc/stat``, everything on the machine) and the learner's own share
and updates/s; ``comparison`` holds idle and loaded p99 side by side with their ratio, and ``targets`` the latency
targets for obs stamp -> supervised command at the driver under load (p99 <= 20 ms from state, <= 50 ms from two
128 px cameras), each "met" or "not met" as measured (flagged as not comparable when ``image_size`` is not 128).

Scheduling: ``realtime_priority`` (10 by default; 0: normal scheduling) runs the driver, the supervisor (their
``realtime_priority`` parameter), the probe and this process during the ROS2 loops under ``SCHED_FIFO`` at that
priority, as a robot PC runs its control path (the in-process baseline runs at normal priority); what each got, or
why it was not permitted (then they run at normal priority), is printed and kept in ``scheduling``.

Network: DDS multicasts discovery on every interface, so the benchmark runs inside a fresh loopback-only network
namespace (:mod:`hw.netns`, re-executing itself there), with ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and a random
``ROS_DOMAIN_ID``. Where no namespace can be made it refuses to run, unless ``allow_network=true``.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from robot_rl.bench.common import (
    NOISY_LATENCIES,
    Bench,
    busy_between,
    cpu_times,
    latency_stats,
    parse_overrides,
    print_table,
)

DEFAULTS: dict[str, Any] = {
    "obs": "both",  # state | pixels | both
    "steps": 0,  # timed control steps per observation mode and load; 0: 40 quick, 300 full
    "warmup": -1,  # untimed steps first; -1: 5 quick, 20 full
    "image_size": 0,  # camera side (px) in pixels mode; 0: 64 quick, 128 full
    "threads": 1,  # torch threads of the loop's process (an actor's share of a small machine)
    "device": "cpu",  # the agent's device (cpu | cuda | auto)
    "deterministic": False,  # act(deterministic=...)
    "budget_ms": 0.0,  # 0: the control period (100 ms at 10 Hz)
    "seed": 0,
    "load": "",  # none | learner | both (idle and loaded rows); "": none quick, both full
    "load_threads": 1,  # torch threads of the learner that loads the machine
    "load_nice": 10,  # nice of that learner's process (0: not niced)
    "realtime_priority": 10,  # SCHED_FIFO priority of the driver, supervisor, probe and ROS2 loop (0: normal)
    "allow_network": False,  # run on this network namespace when a loopback-only one cannot be made
    "timeout_s": 0.0,  # kill the isolated run after this long; 0: 600 quick, 3600 full
}

AUTO = {
    "steps": (40, 300),
    "warmup": (5, 20),
    "image_size": (64, 128),
    "load": ("none", "both"),
    "timeout_s": (600.0, 3600.0),
}  # (quick, full) values of the settings left unset

# latency targets: p99 of obs stamp -> supervised command at the driver, under load (ms); pixels: two 128 px cameras
TARGETS_MS: dict[str, float] = {"state": 20.0, "pixels": 50.0}
TARGET_IMAGE_SIZE = 128

PARTS = ("", "_robot", "_sup_in", "_sup_out", "_transport", "_act")
ROW_LABELS: dict[str, str] = {}
for _obs in ("state", "pixels"):
    for _sfx, _how in (("", ""), ("_load", ", learner loading the machine")):
        ROW_LABELS.update(
            {
                f"ros2_{_obs}{_sfx}": f"ROS2, {_obs}{_how}: obs stamp -> command published",
                f"ros2_{_obs}_robot{_sfx}": f"ROS2, {_obs}{_how}: obs stamp -> command at the driver (after the "
                "supervisor)",
                f"ros2_{_obs}_sup_in{_sfx}": f"ROS2, {_obs}{_how}: command published -> supervisor answers it",
                f"ros2_{_obs}_sup_out{_sfx}": f"ROS2, {_obs}{_how}: supervisor answers -> answer at the driver",
                f"ros2_{_obs}_transport{_sfx}": f"ROS2, {_obs}{_how}: obs stamp -> obs in the loop (DDS + alignment)",
                f"ros2_{_obs}_act{_sfx}": f"ROS2, {_obs}{_how}: act()",
                f"inproc_{_obs}{_sfx}": f"in-process, {_obs}{_how}: obs ready -> action ready (baseline)",
            }
        )
SHORT_LABELS = {
    "": "obs stamp -> command published",
    "_robot": "obs stamp -> command at the driver",
    "_sup_in": "  command published -> supervisor answers",
    "_sup_out": "  supervisor answers -> at driver",
    "_transport": "obs stamp -> obs in the loop",
    "_act": "act()",
}


def _settings(quick: bool, overrides: list[str]) -> dict[str, Any]:
    s = parse_overrides(overrides, DEFAULTS, quick, AUTO)
    if s["obs"] not in ("state", "pixels", "both"):
        raise ValueError(f"obs={s['obs']!r} must be state, pixels or both")
    if s["load"] not in ("none", "learner", "both"):
        raise ValueError(f"load={s['load']!r} must be none, learner or both")
    if s["steps"] < 1:
        raise ValueError("steps must be >= 1")
    if not 0 <= s["realtime_priority"] <= 99:
        raise ValueError(f"realtime_priority={s['realtime_priority']} must lie in 0..99 (0: normal scheduling)")
    if not 0 <= s["load_nice"] <= 19 or s["load_threads"] < 1:
        raise ValueError("load_nice must lie in 0..19 and load_threads be >= 1")
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
            raise RuntimeError(
                f"refusing to run DDS on a network that is not isolated: {reason}. Run where a "
                "loopback-only network namespace can be made (unshare + ip), or pass "
                "allow_network=true to run on this machine's network anyway"
            )
        print(
            f"WARNING: {reason}; allow_network=true: running DDS on this network (loopback discovery only, a "
            "random ROS_DOMAIN_ID)"
        )
        os.environ.update(
            {
                k: v
                for k, v in loopback_ros_env(tempfile.mkdtemp(prefix="bench_ros2_")).items()
                if k.startswith(("ROS_", "RMW_", "CYCLONE"))
            }
        )
        return _measure(s, quick, f"NOT isolated ({reason}); allow_network=true")
    with tempfile.TemporaryDirectory(prefix="bench_ros2_") as tmp:
        out = Path(tmp) / "result.json"
        code = (
            "import sys, json; from hw.bench_ros2 import _isolated_main; "
            "_isolated_main(json.loads(sys.argv[1]), sys.argv[2] == '1', sys.argv[3])"
        )
        env = loopback_ros_env(tmp)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_repo()), env.get("PYTHONPATH", "")) if p)
        res = run_isolated(
            [sys.executable, "-c", code, json.dumps(s), "1" if quick else "0", str(out)],
            env,
            timeout=s["timeout_s"],
            cwd=str(_repo()),
        )
        if res.returncode != 0 or not out.exists():
            raise RuntimeError(f"the isolated benchmark failed (exit {res.returncode}); see its output above")
        return json.loads(out.read_text())


def _isolated_main(s: dict[str, Any], quick: bool, out: str) -> None:
    from hw.netns import network_isolated

    if not network_isolated():
        raise SystemExit("not in a loopback-only network namespace; refusing to start DDS")
    Path(out).write_text(
        json.dumps(
            _measure(
                s, quick, "fresh loopback-only network namespace (unshare -n), ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST"
            )
        )
    )


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
        self.procs[name] = (
            subprocess.Popen(
                [sys.executable, "-m", module, *args], cwd=str(_repo()), stdout=log, stderr=subprocess.STDOUT
            ),
            log,
        )

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


def _scheduling_line(log: str) -> str:
    """What a node's ``realtime_priority`` got, from its log line ("scheduling: ...")."""
    for line in log.splitlines():
        if "scheduling: " in line:
            return line.split("scheduling: ", 1)[1].strip()
    return "unknown (no scheduling line in its log)"


def _normal_scheduling() -> None:
    """Back to SCHED_OTHER for every thread of this process (after :func:`hw.ros_common.raise_priority`)."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setscheduler(int(tid), os.SCHED_OTHER, os.sched_param(0))
        except OSError:
            pass


class _Probe:
    """Records ``cmd/target_pose`` stamps (as published by the env client), the supervisor's
    ``safety/command_trace`` (command stamp -> the stamp of the output that answered it) and when each output reaches
    ``robot/target_pose`` (the driver's input). A process of its own (:func:`_probe_main`), so its callbacks never
    wait for the measured loop's interpreter lock; at the driver's scheduling priority, since it stands in for it."""

    def __init__(self, tmp: str, priority: int):
        self.dir = Path(tempfile.mkdtemp(prefix="probe_", dir=tmp))
        code = "import sys; from hw.bench_ros2 import _probe_main; _probe_main(sys.argv[1], int(sys.argv[2]))"
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(self.dir), str(priority)], cwd=str(_repo()))

    def wait_matched(self, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while not (self.dir / "ready").exists():
            if time.monotonic() > end or self.proc.poll() is not None:
                raise RuntimeError(
                    "the probe never matched the cmd/target_pose, robot/target_pose and "
                    "safety/command_trace publishers (is the supervisor running with "
                    "trace_commands:=true?)"
                )
            time.sleep(0.05)

    def results(self) -> dict[str, Any]:
        data = _stop_helper(self.proc, self.dir, timeout=10)
        if not data:
            raise RuntimeError(f"the probe process wrote no results (exit {self.proc.returncode})")
        return {
            "cmd": sorted(data["cmd"]),
            "trace": {int(k): v for k, v in data["trace"].items()},
            "at_robot": {int(k): v for k, v in data["at_robot"].items()},
            "scheduling": data["scheduling"],
        }

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _probe_main(folder: str, priority: int = 0) -> None:
    """The probe process: spin until ``<folder>/stop`` exists, then write ``result.json``."""
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import TimeReference

    from hw.ros_common import raise_priority, stamp_ns, state_qos

    out = Path(folder)
    rclpy.init(args=[])
    node = rclpy.create_node("bench_probe")
    cmd: list[int] = []
    trace: dict[int, int] = {}  # command stamp -> stamp of the supervisor's output that answered it
    at_robot: dict[int, int] = {}  # output stamp -> its arrival here (wall clock, ns)

    def on_trace(m: TimeReference) -> None:
        trace.setdefault(stamp_ns(m.time_ref), stamp_ns(m.header.stamp))

    sub_cmd = node.create_subscription(
        PoseStamped, "cmd/target_pose", lambda m: cmd.append(stamp_ns(m.header.stamp)), state_qos(200)
    )
    sub_robot = node.create_subscription(
        PoseStamped,
        "robot/target_pose",
        lambda m: at_robot.setdefault(stamp_ns(m.header.stamp), time.time_ns()),
        state_qos(200),
    )
    sub_trace = node.create_subscription(TimeReference, "safety/command_trace", on_trace, state_qos(200))
    _, scheduling = raise_priority(priority)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    subs = (sub_cmd, sub_robot, sub_trace)
    try:
        while not (out / "stop").exists():
            ex.spin_once(timeout_sec=0.01)
            if not (out / "ready").exists() and all(sub.get_publisher_count() for sub in subs):
                (out / "ready").touch()
        end = time.monotonic() + 0.3
        while time.monotonic() < end:  # what is still in flight
            ex.spin_once(timeout_sec=0.01)
        (out / "result.json").write_text(
            json.dumps(
                {
                    "cmd": cmd,
                    "trace": {str(k): v for k, v in trace.items()},
                    "at_robot": {str(k): v for k, v in at_robot.items()},
                    "scheduling": scheduling,
                }
            )
        )
    finally:
        node.destroy_node()
        rclpy.shutdown()


# ------------------------------------------------------------------------------------------------ load
class _Load:
    """A learner training in a process of its own (:func:`_load_main`) while the loaded loop runs."""

    def __init__(self, tmp: str, s: dict[str, Any], agent_cfg: dict[str, Any]):
        self.dir = Path(tempfile.mkdtemp(prefix="load_", dir=tmp))
        (self.dir / "agent.json").write_text(json.dumps(agent_cfg))
        code = (
            "import sys; from hw.bench_ros2 import _load_main; "
            "_load_main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, str(self.dir), str(s["load_threads"]), str(s["load_nice"]), str(s["seed"])],
            cwd=str(_repo()),
        )
        self.result: dict[str, Any] = {}  # what the learner reported when stopped (:meth:`stop`)

    def wait_ready(self, timeout: float = 120.0) -> None:
        end = time.monotonic() + timeout
        while not (self.dir / "ready").exists():
            if time.monotonic() > end or self.proc.poll() is not None:
                raise RuntimeError("the load learner never started updating")
            time.sleep(0.05)

    def progress(self) -> tuple[int, float]:
        """(updates so far, CPU seconds of the learner process so far)."""
        try:
            updates = int((self.dir / "updates").read_text() or 0)
        except (OSError, ValueError):
            updates = 0
        return updates, _proc_cpu_s(self.proc.pid)

    def stop(self) -> dict[str, Any]:
        return _stop_helper(self.proc, self.dir, timeout=30)


def _load_main(folder: str, threads: int, nice: int, seed: int) -> None:
    """The load process: the task's agent on the reach task's state spaces, ``update()`` on random batches in a
    loop until ``<folder>/stop`` exists; ``updates`` holds the count so far."""
    import itertools

    import torch
    import yaml

    from robot_rl.agents.sac import SAC, SACConfig
    from robot_rl.envs.make import make_env
    from robot_rl.utils.perf import tune_malloc

    out = Path(folder)
    try:  # never the control path's realtime priority, whoever started this process
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except OSError:
        pass
    if nice:
        os.nice(nice)
    tune_malloc()
    torch.set_num_threads(max(1, threads))
    torch.manual_seed(seed)
    cfg = SACConfig.from_dict(json.loads((out / "agent.json").read_text()))
    with open(_repo() / "configs/task/reach.yaml") as f:
        task = yaml.safe_load(f)
    task["env_kwargs"].update(obs_mode="state")
    env = make_env(task)
    obs_space, act_space = env.observation_space, env.action_space
    env.close()
    agent = SAC(obs_space, act_space, cfg)
    gen = torch.Generator().manual_seed(seed)
    b, ad = cfg.batch_size, int(act_space.shape[0])

    def obs() -> dict[str, torch.Tensor]:
        return {k: torch.randn(b, *sp.shape, generator=gen) for k, sp in obs_space.spaces.items()}

    batches = [
        {
            "obs": obs(),
            "next_obs": obs(),
            "action": torch.rand(b, ad, generator=gen) * 2 - 1,
            "reward": torch.rand(b, generator=gen),
            "terminated": (torch.rand(b, generator=gen) < 0.01).float(),
        }
        for _ in range(4)
    ]
    it = itertools.cycle(batches)
    n, t0 = 0, time.perf_counter()
    while not (out / "stop").exists():
        agent.update(it)
        n += 1
        (out / "updates").write_text(str(n))
        if n == 3:
            (out / "ready").touch()
    (out / "result.json").write_text(
        json.dumps({"updates": n, "seconds": time.perf_counter() - t0, "utd_ratio": cfg.utd_ratio, "batch_size": b})
    )


@contextlib.contextmanager
def _under_load(tmp: str, s: dict[str, Any], agent_cfg: dict[str, Any], suffix: str) -> Iterator[_Load | None]:
    """While the block runs, a learner trains in another process (``suffix`` non-empty: a loaded row), else nothing.
    Yields the :class:`_Load` (or None); its results are in ``load.result`` once the block is done."""
    load = _Load(tmp, s, agent_cfg) if suffix else None
    try:
        if load is not None:
            load.wait_ready()
        yield load
    finally:
        if load is not None:
            load.result = load.stop()


def _stop_helper(proc: subprocess.Popen, folder: Path, timeout: float) -> dict[str, Any]:
    """Ask a helper process (probe, load) to stop by touching ``<folder>/stop``, wait up to ``timeout`` s (then kill
    it) and return its ``<folder>/result.json`` ({} when it wrote none)."""
    (folder / "stop").touch()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    try:
        return json.loads((folder / "result.json").read_text())
    except (OSError, ValueError):
        return {}


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) so far; nan where unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


# ---------------------------------------------------------------------------------------------- measure
def _agent(env: Any, agent_cfg: dict[str, Any]) -> Any:
    from robot_rl.agents.sac import SAC, SACConfig

    return SAC(env.observation_space, env.action_space, SACConfig.from_dict(agent_cfg))


def _ros_loop(
    mode: str,
    s: dict[str, Any],
    task: dict[str, Any],
    agent_cfg: dict[str, Any],
    tmp: str,
    sfx: str = "",
    load: _Load | None = None,
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """One ROS2 control loop (driver + supervisor already running); latencies per part, in ms, keyed with
    suffix ``sfx``."""
    from hw.ros_common import raise_priority
    from hw.ros_env import RosRobotEnv

    prio = int(s["realtime_priority"])
    _, scheduling = raise_priority(prio)  # before the env's DDS threads start: they inherit it
    kw = dict(task["env_kwargs"])
    kw.update(
        obs_mode=mode,
        lockstep=False,
        image_size=s["image_size"],
        step_timeout=5.0,
        connect_timeout=60.0,
        node_name=f"bench_env_{mode}{sfx}",
    )
    try:
        env = RosRobotEnv(**kw)
    except Exception:
        _normal_scheduling()
        raise
    probe = _Probe(tmp, prio)
    try:
        agent = _agent(env, agent_cfg)
        probe.wait_matched()
        obs, info = env.reset(seed=s["seed"])
        t_ret = time.time_ns()
        recs: list[tuple[int, int, float]] = []  # obs stamp, obs handed to the loop (ns), act ms
        t_start, episodes = time.perf_counter(), 1
        cpu0 = cpu1 = None
        load0 = load1 = (0, float("nan"))
        for i in range(s["warmup"] + s["steps"]):
            t_obs = int(round(float(info["stamp"]) * 1e9))
            t0 = time.perf_counter()
            action = agent.act(obs, deterministic=s["deterministic"])
            act_ms = (time.perf_counter() - t0) * 1e3
            if i >= s["warmup"]:
                recs.append((t_obs, t_ret, act_ms))
            else:
                t_start = time.perf_counter()
                cpu0 = cpu_times()
                load0 = load.progress() if load is not None else load0
            obs, _, terminated, truncated, info = env.step(action)
            t_ret = time.time_ns()
            if terminated or truncated:  # resets are not control steps: the next command comes from a fresh obs
                obs, info = env.reset()
                t_ret = time.time_ns()
                episodes += 1
        loop_s = time.perf_counter() - t_start
        cpu1 = cpu_times()
        load1 = load.progress() if load is not None else load1
        time.sleep(0.5)  # the last commands reach the probe
        got = probe.results()
    finally:
        probe.close()
        env.close()
        if prio:
            _normal_scheduling()
    cmds, trace, at_robot = got["cmd"], got["trace"], got["at_robot"]
    out: dict[str, list[float]] = {f"ros2_{mode}{part}{sfx}": [] for part in PARTS}
    missing = unanswered = lost = 0
    for t_obs, t_ret, act_ms in recs:
        j = bisect.bisect_left(cmds, t_ret)  # the command of this step: the first one published after the obs came
        if j == len(cmds):
            missing += 1
            continue
        cmd = cmds[j]
        out[f"ros2_{mode}{sfx}"].append((cmd - t_obs) / 1e6)
        out[f"ros2_{mode}_transport{sfx}"].append((t_ret - t_obs) / 1e6)
        out[f"ros2_{mode}_act{sfx}"].append(act_ms)
        answer = trace.get(cmd)
        if answer is None:
            unanswered += 1
        elif answer not in at_robot:
            lost += 1
        else:
            out[f"ros2_{mode}_robot{sfx}"].append((at_robot[answer] - t_obs) / 1e6)
            out[f"ros2_{mode}_sup_in{sfx}"].append((answer - cmd) / 1e6)
            out[f"ros2_{mode}_sup_out{sfx}"].append((at_robot[answer] - answer) / 1e6)
    extra: dict[str, Any] = {
        "steps_per_s": len(recs) / loop_s,
        "episodes": episodes,
        "timed_steps": len(recs),
        "commands_seen": len(cmds),
        "commands_missing": missing,
        "commands_unanswered": unanswered,
        "answers_not_seen_at_driver": lost,
        "answered_at_driver": len(out[f"ros2_{mode}_robot{sfx}"]),
        "loop_scheduling": scheduling,
        "probe_scheduling": got["scheduling"],
    }
    busy = busy_between(cpu0, cpu1)
    extra["busy_cores"] = None if busy is None else round(busy, 2)
    if load is not None:
        extra["learner_updates_per_s"] = (load1[0] - load0[0]) / loop_s
        extra["learner_cores"] = round((load1[1] - load0[1]) / loop_s, 2)
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
    return Bench("ros2", quick, s, NOISY_LATENCIES).run(_measure_loops, network)


def _measure_loops(bench: Bench, network: str) -> dict[str, Any]:
    import torch
    import yaml
    from omegaconf import OmegaConf

    from robot_rl.cli import compose

    s, notes = bench.settings, bench.notes
    torch.manual_seed(s["seed"])
    repo = _repo()
    with open(repo / "configs/task/ros2_reach.yaml") as f:
        task = yaml.safe_load(f)
    with open(repo / "configs/robot/sim.yaml") as f:
        robot = yaml.safe_load(f)
    hz = float(task["env_kwargs"]["control_rate"])
    budget = s["budget_ms"] or 1e3 / hz
    modes = ["state", "pixels"] if s["obs"] == "both" else [s["obs"]]
    loads = {"none": [""], "learner": ["_load"], "both": ["", "_load"]}[s["load"]]
    agent_cfg: dict[str, Any] = OmegaConf.to_container(
        compose("train", ["task=ros2_reach", f"device={s['device']}"]).agent, resolve=True
    )  # type: ignore[assignment]
    prio = int(s["realtime_priority"])
    load_desc = (
        f"{agent_cfg['name']} learner (hidden {tuple(agent_cfg['hidden_dims'])}, {agent_cfg['num_critics']} "
        f"critics, UTD {agent_cfg.get('utd_ratio', 1)}, batch {agent_cfg.get('batch_size')}) calling update() "
        f"in a loop in another process, {s['load_threads']} torch thread(s), "
        + (f"nice {s['load_nice']} (a learner on a robot PC should run niced)" if s["load_nice"] else "NOT niced")
    )
    print(
        f"ros2 benchmark: reach served by robot-rl-sim-driver in realtime at {hz:g} Hz behind robot-rl-safety "
        f"(configs/robot/sim.yaml), env client hw.ros_env + {agent_cfg['name']} act() (untrained, hidden "
        f"{tuple(agent_cfg['hidden_dims'])}), torch threads {torch.get_num_threads()}; {s['steps']} timed steps "
        f"per mode and load after {s['warmup']} warm-up; budget {budget:g} ms; network: {network}"
    )
    print(f"load: {s['load']}" + (f"; loaded rows: {load_desc}" if "_load" in loads else ""))
    scheduling: dict[str, str] = {}
    samples: dict[str, list[float]] = {}
    loops: dict[str, dict[str, Any]] = {}
    tmp = tempfile.mkdtemp(prefix="bench_ros2_nodes_")
    nodes = _Nodes(tmp)
    sim_yaml = str(repo / "configs/robot/sim.yaml")
    sup_log = ""
    try:
        nodes.start(
            "supervisor",
            "hw.nodes.safety_supervisor",
            "--config",
            sim_yaml,
            "--ros-args",
            "-p",
            "lockstep:=false",
            "-p",
            "trace_commands:=true",
            "-p",
            f"realtime_priority:={prio}",
        )
        for mode in modes:
            nodes.start(
                f"driver_{mode}",
                "hw.nodes.sim_driver",
                "--config",
                sim_yaml,
                "--ros-args",
                "-p",
                "lockstep:=false",
                "-p",
                f"obs_mode:={mode}",
                "-p",
                f"image_size:={s['image_size']}",
                "-p",
                f"realtime_priority:={prio}",
            )
            try:
                for sfx in loads:
                    t0 = time.perf_counter()
                    try:
                        with _under_load(tmp, s, agent_cfg, sfx) as load:
                            got, extra = _ros_loop(mode, s, task, agent_cfg, tmp, sfx, load)
                    except Exception:
                        for name in list(nodes.procs):
                            print(f"--- {name} log (tail)\n{nodes.log(name)[-2000:]}")
                        raise
                    if load is not None:
                        extra["learner"] = load.result
                    samples.update(got)
                    loops[f"ros2_{mode}{sfx}"] = {**extra, "wall_s": time.perf_counter() - t0}
                    for key, what in (
                        ("commands_missing", "had no command seen by the probe"),
                        (
                            "commands_unanswered",
                            "had a command the supervisor never answered (refused or dropped by a hold)",
                        ),
                        ("answers_not_seen_at_driver", "had an answer the probe never saw on robot/target_pose"),
                    ):
                        if extra[key]:
                            notes.append(f"{extra[key]} {mode}{' loaded' if sfx else ''} steps {what}")
            finally:
                scheduling[f"driver_{mode}"] = _scheduling_line(nodes.log(f"driver_{mode}"))
                nodes.stop(f"driver_{mode}")
            for sfx in loads:
                t0 = time.perf_counter()
                with _under_load(tmp, s, agent_cfg, sfx):
                    samples[f"inproc_{mode}{sfx}"], extra = _inproc_loop(mode, s, agent_cfg)
                loops[f"inproc_{mode}{sfx}"] = {**extra, "wall_s": time.perf_counter() - t0}
        sup_log = nodes.log("supervisor")
        scheduling["supervisor"] = _scheduling_line(sup_log)
    finally:
        if nodes.procs:
            nodes.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    for part in ("loop", "probe"):
        key = f"{part}_scheduling"
        scheduling[f"ros2 {part}"] = next((v[key] for v in loops.values() if key in v), "")
    clamps = sup_log.count("target clamped by")
    if clamps:
        notes.append(
            f"the supervisor clamped targets (untrained policy; logged at most once a second: {clamps} "
            "lines); clamped ones are still forwarded"
        )

    rows = {k: {"label": ROW_LABELS[k], **latency_stats(v, budget)} for k, v in samples.items() if v}
    ratios: dict[str, float] = {}
    for mode in modes:
        for sfx in loads:
            a, b = rows.get(f"ros2_{mode}{sfx}"), rows.get(f"inproc_{mode}{sfx}")
            if a and b:
                ratios[f"ros2/inproc {mode}{sfx} p50"] = a["p50_ms"] / b["p50_ms"]
                ratios[f"ros2/inproc {mode}{sfx} p99"] = a["p99_ms"] / b["p99_ms"]
    comparison: dict[str, dict[str, float]] = {}
    for k in rows:
        if not k.endswith("_load") and f"{k}_load" in rows:
            idle, loaded = rows[k], rows[f"{k}_load"]
            comparison[k] = {
                "idle_p50_ms": idle["p50_ms"],
                "idle_p99_ms": idle["p99_ms"],
                "load_p50_ms": loaded["p50_ms"],
                "load_p99_ms": loaded["p99_ms"],
                "load/idle p99": loaded["p99_ms"] / idle["p99_ms"],
            }
            ratios[f"load/idle p99 {k}"] = comparison[k]["load/idle p99"]
    for k, r in rows.items():
        ratios[f"budget/p99 {k}"] = r["budget_over_p99"]
    over = [
        k
        for k in rows
        if k.startswith("ros2_")
        and not any(p in k for p in ("_act", "_transport", "_sup_"))
        and rows[k]["p99_ms"] > budget
    ]
    if over:
        notes.append(f"over the {budget:g} ms budget at p99: {', '.join(over)}")
    targets = []
    for mode in modes:
        key = f"ros2_{mode}_robot_load"
        t: dict[str, Any] = {"row": key, "target_p99_ms": TARGETS_MS[mode], "under": "load"}
        if mode == "pixels":
            t["comparable"] = s["image_size"] == TARGET_IMAGE_SIZE
        if key in rows:
            t.update(p99_ms=rows[key]["p99_ms"], met=rows[key]["p99_ms"] <= TARGETS_MS[mode])
        else:
            t.update(p99_ms=None, met=None)
        targets.append(t)
    loaded = {
        k.removeprefix("ros2_").removesuffix("_load"): {
            kk: v[kk] for kk in ("busy_cores", "learner_cores", "learner_updates_per_s") if kk in v
        }
        for k, v in loops.items()
        if k.startswith("ros2_") and k.endswith("_load")
    }
    idle_busy = {
        k.removeprefix("ros2_"): v.get("busy_cores")
        for k, v in loops.items()
        if k.startswith("ros2_") and not k.endswith("_load")
    }
    _print(rows, ratios, loops, budget, modes, loads, targets, s, scheduling)
    bench.print_notes()
    headline = "ros2/inproc state p50" if "state" in modes else "ros2/inproc pixels p50"
    return bench.result(
        rows,
        network=network,
        task={
            "name": "ros2_reach",
            "control_hz": hz,
            "image_size": s["image_size"],
            "modes": modes,
            "cameras": ["front", "wrist"] if "pixels" in modes else [],
            "driver": {k: robot["driver"][k] for k in ("task", "max_step")},
            "supervisor": {k: robot["supervisor"][k] for k in ("max_speed", "control_rate", "rate_hz")},
        },
        agent={
            "name": agent_cfg["name"],
            "hidden_dims": list(agent_cfg["hidden_dims"]),
            "num_critics": agent_cfg["num_critics"],
        },
        load={
            "setting": s["load"],
            "learner": load_desc if "_load" in loads else None,
            "loaded": loaded,
            "idle_busy_cores": idle_busy,
        },
        scheduling=scheduling,
        budget_ms=budget,
        loops=loops,
        ratios=ratios,
        comparison=comparison,
        targets=targets,
        ratio=ratios.get(headline),
    )


def _fmt(r: dict[str, Any] | None, key: str) -> str:
    return f"{r[key]:.2f}" if r else "-"


def _print(
    rows: dict[str, dict[str, Any]],
    ratios: dict[str, float],
    loops: dict[str, dict[str, Any]],
    budget: float,
    modes: list[str],
    loads: list[str],
    targets: list[dict[str, Any]],
    s: dict[str, Any],
    scheduling: dict[str, str],
) -> None:
    print(f"\nlatency per control step, ms (budget {budget:g} ms); idle vs while a learner trains in another process")
    table = []
    for mode in modes:
        busy = [
            f"{mode}{sfx}: {loops[f'ros2_{mode}{sfx}'].get('busy_cores')} busy cores"
            for sfx in loads
            if f"ros2_{mode}{sfx}" in loops
        ]
        table.append([f"[{mode}] ({'; '.join(busy)})", "", "", "", "", "", "", ""])
        for base in [f"ros2_{mode}{p}" for p in PARTS] + [f"inproc_{mode}"]:
            idle, loaded = rows.get(base), rows.get(f"{base}_load")
            if not (idle or loaded):
                continue
            label = (
                "in-process: obs ready -> action ready (baseline)"
                if base.startswith("inproc")
                else f"ROS2: {SHORT_LABELS[base.removeprefix(f'ros2_{mode}')]}"
            )
            ratio = f"{loaded['p99_ms'] / idle['p99_ms']:.2f}x" if idle and loaded else "-"
            table.append(
                [
                    f"  {label}",
                    _fmt(idle, "p50_ms"),
                    _fmt(idle, "p99_ms"),
                    _fmt(idle, "max_ms"),
                    _fmt(loaded, "p50_ms"),
                    _fmt(loaded, "p99_ms"),
                    _fmt(loaded, "max_ms"),
                    ratio,
                ]
            )
    print_table(["row", "idle p50", "idle p99", "idle max", "load p50", "load p99", "load max", "load/idle p99"], table)
    print()
    for mode in modes:
        for sfx in loads:
            ros, inp = loops.get(f"ros2_{mode}{sfx}", {}), loops.get(f"inproc_{mode}{sfx}", {})
            what = "loaded" if sfx else "idle"
            extra = ""
            if sfx and ros:
                extra = (
                    f"; {ros.get('busy_cores')} cores busy, the learner took {ros.get('learner_cores')} "
                    f"({ros.get('learner_updates_per_s', float('nan')):.1f} updates/s)"
                )
            print(
                f"{mode} {what}: ROS2 loop {ros.get('steps_per_s', float('nan')):.1f} steps/s (paced by the "
                f"driver's clock); in-process {inp.get('steps_per_s', float('nan')):.1f} steps/s (flat out)"
                f"{extra}; the supervisor's answer reached the driver in {ros.get('answered_at_driver', 0)} of "
                f"{ros.get('timed_steps', 0)} timed steps"
            )
    print("scheduling: " + "; ".join(f"{k}: {v}" for k, v in scheduling.items()))
    for t in targets:
        mode = t["row"].split("_")[1]
        what = (
            f"target: obs stamp -> supervised command at the driver, p99 under load <= "
            f"{t['target_p99_ms']:g} ms ({'state' if mode == 'state' else f'two {TARGET_IMAGE_SIZE} px cameras'})"
        )
        if t["met"] is None:
            print(f"{what}: not measured (load={s['load']})")
            continue
        caveat = (
            ""
            if t.get("comparable", True)
            else (f" (at {s['image_size']} px, not the target's {TARGET_IMAGE_SIZE} px: not comparable)")
        )
        print(f"{what}: {t['p99_ms']:.1f} ms: {'met' if t['met'] else 'not met'}{caveat}")
    print_table(["ratio", "x"], [[k, f"{v:.3g}"] for k, v in ratios.items()])
