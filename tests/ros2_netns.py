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

import importlib.util
import os
import signal
import subprocess
import sys
import tempfile

from hw.netns import (  # noqa: F401
    CYCLONE_LOOPBACK_XML,
    PRELUDE,
    dds_shm_entries,
    loopback_ros_env,
    netns_unavailable,
    reap_session,
    unshare_cmd,
)

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)


def skip_reason() -> str | None:
    """Why ROS2 tests cannot run confined here (``None``: they can)."""
    if importlib.util.find_spec("rclpy") is None:
        return "rclpy is not installed (pip install 'robot-rl[ros2]')"
    reason = netns_unavailable()
    return f"{reason}; refusing to run DDS on the real network" if reason else None


def ros_env(tmp: str, domain_id: int | None = None) -> dict[str, str]:
    """:func:`hw.netns.loopback_ros_env` plus the repository and tests on ``PYTHONPATH``, Fast DDS pinned."""
    env = loopback_ros_env(tmp, domain_id)
    env.update(
        RMW_IMPLEMENTATION="rmw_fastrtps_cpp",
        PYTHONPATH=os.pathsep.join([REPO_ROOT, TESTS_DIR, env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
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
    cmd = [*unshare_cmd(), "sh", "-c", PRELUDE, "sh", sys.executable, "-c", code]
    shm_before = dds_shm_entries()
    with tempfile.TemporaryDirectory(prefix="ros2_test_") as tmp:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=ros_env(tmp),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # our own session: the body and the nodes it started
            out, _ = proc.communicate()
            raise AssertionError(
                f"{module}.{func} timed out after {timeout} s in the netns; output:\n{out[-6000:]}"
            ) from None
        finally:  # nothing the body started outlives it, nor the shared memory its killed nodes left
            reap_session(proc.pid, shm_before)
    assert proc.returncode == 0, f"{module}.{func} failed (rc={proc.returncode}) in the netns; output:\n{out[-8000:]}"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def start_node(module: str, *args: str) -> subprocess.Popen:
    """Start ``python -m module *args`` (e.g. ``--config configs/robot/sim.yaml --ros-args -p lockstep:=true``) from a
    body, so it inherits the namespace; stdout and stderr go to a temp file whose path is ``proc.log_path``."""
    log = tempfile.NamedTemporaryFile(
        "w+", prefix=module.rsplit(".", 1)[-1] + "_", suffix=".log", delete=False, dir=os.environ.get("ROS_HOME")
    )
    proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
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
