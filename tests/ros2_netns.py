"""Run a ROS2 test body inside a private network namespace that holds only loopback.

DDS discovery multicasts on every interface by default; these helpers make sure no test traffic can leave the
machine: each body runs in a fresh namespace (``unshare -n``, or ``unshare -rn`` when not root) where only ``lo``
exists (checked before the body starts), with ``lo`` up, a multicast route on it, and
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and a random ``ROS_DOMAIN_ID``. (Fast DDS still maps shared-memory
segments in /dev/shm, but peers find each other only through discovery over the namespace's own loopback: two
namespaces on the same domain were checked not to exchange messages.) A Cyclone DDS peer in the body gets
a config bound to ``lo`` with unicast discovery on 127.0.0.1 (:data:`CYCLONE_LOOPBACK_XML`). Where a namespace
cannot be made, :func:`skip_reason` says why and the tests skip: they never run on the real network.

Usage in a test module::

    pytestmark = pytest.mark.skipif(bool(skip_reason()), reason=skip_reason() or "")

    def _body():            # runs in the namespace, in a fresh interpreter
        ...

    def test_x():
        run_in_netns(__name__, "_body")
"""

from __future__ import annotations

import functools
import importlib.util
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
CYCLONE_LOOPBACK_XML = (
    "<CycloneDDS><Domain id='any'><General><Interfaces><NetworkInterface name='lo'/></Interfaces>"
    "<AllowMulticast>false</AllowMulticast></General><Discovery><ParticipantIndex>auto</ParticipantIndex>"
    "<MaxAutoParticipantIndex>30</MaxAutoParticipantIndex><Peers><Peer address='127.0.0.1'/></Peers></Discovery>"
    "</Domain></CycloneDDS>")
# Inside the namespace: bring lo up, route multicast to it, and refuse to run if any other interface exists.
_PRELUDE = ('set -e; ip link set lo up; ip route add 224.0.0.0/4 dev lo; '
            'n=$(ip -o link show | wc -l); if [ "$n" != 1 ]; then '
            'echo "netns has $n interfaces, expected only lo" >&2; exit 97; fi; exec "$@"')


def _unshare_cmd() -> list[str]:
    return ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-rn"]


@functools.lru_cache(maxsize=1)
def skip_reason() -> str | None:
    """Why ROS2 tests cannot run confined here (``None``: they can)."""
    if not sys.platform.startswith("linux"):
        return "ROS2 tests need Linux network namespaces"
    if importlib.util.find_spec("rclpy") is None:
        return "rclpy is not installed (pip install 'robot-rl[ros2]')"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool!r} not found: cannot confine DDS traffic to a loopback-only network namespace"
    try:
        r = subprocess.run([*_unshare_cmd(), "sh", "-c", _PRELUDE, "sh", "true"], capture_output=True, text=True,
                           timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot create a network namespace ({e}); refusing to run DDS on the real network"
    if r.returncode != 0:
        return (f"cannot create a loopback-only network namespace ({' '.join(_unshare_cmd())}: "
                f"{(r.stderr or r.stdout).strip()[:200]}); refusing to run DDS on the real network")
    return None


def ros_env(tmp: str, domain_id: int | None = None) -> dict[str, str]:
    """Environment for ROS2 processes in the namespace: loopback discovery, a random domain, Fast DDS, logs and
    ROS_HOME under ``tmp``."""
    env = dict(os.environ)
    for key in ("ROS_LOCALHOST_ONLY", "ROS_STATIC_PEERS", "FASTRTPS_DEFAULT_PROFILES_FILE",
                "FASTDDS_DEFAULT_PROFILES_FILE", "ROS_DISCOVERY_SERVER"):
        env.pop(key, None)
    env.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_DOMAIN_ID=str(random.randint(1, 100) if domain_id is None else domain_id),
               RMW_IMPLEMENTATION="rmw_fastrtps_cpp", CYCLONEDDS_URI=CYCLONE_LOOPBACK_XML,
               ROS_LOG_DIR=os.path.join(tmp, "log"), ROS_HOME=tmp, MUJOCO_GL=env.get("MUJOCO_GL", "egl"),
               PYTHONPATH=os.pathsep.join([REPO_ROOT, TESTS_DIR, env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return env


def run_in_netns(module: str, func: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Run ``module.func()`` in a fresh interpreter inside a loopback-only network namespace.

    Raises AssertionError with the body's output if it fails or times out; returns the completed process
    (stdout and stderr merged into ``stdout``) so a test can check log lines.
    """
    reason = skip_reason()
    if reason:
        import pytest

        pytest.skip(reason)
    code = f"import {module} as m; m.{func}()"
    cmd = [*_unshare_cmd(), "sh", "-c", _PRELUDE, "sh", sys.executable, "-c", code]
    with tempfile.TemporaryDirectory(prefix="ros2_test_") as tmp:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=ros_env(tmp), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # our own session: the body and the nodes it started
            out, _ = proc.communicate()
            raise AssertionError(f"{module}.{func} timed out after {timeout} s in the netns; output:\n{out[-6000:]}")
    assert proc.returncode == 0, f"{module}.{func} failed (rc={proc.returncode}) in the netns; output:\n{out[-8000:]}"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def start_node(module: str, *args: str) -> subprocess.Popen:
    """Start ``python -m module *args`` (e.g. ``--config configs/robot/sim.yaml --ros-args -p lockstep:=true``) from a
    body, so it inherits the namespace; stdout and stderr go to a temp file whose path is ``proc.log_path``."""
    log = tempfile.NamedTemporaryFile("w+", prefix=module.rsplit(".", 1)[-1] + "_", suffix=".log", delete=False,
                                      dir=os.environ.get("ROS_HOME"))
    proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO_ROOT, stdout=log,
                            stderr=subprocess.STDOUT)
    proc.log_path = log.name  # type: ignore[attr-defined]
    return proc


def stop_nodes(*procs: subprocess.Popen) -> None:
    """SIGINT each started node, then SIGKILL what is still running after 5 s."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def node_log(proc: subprocess.Popen) -> str:
    with open(proc.log_path) as f:  # type: ignore[attr-defined]
        return f.read()
