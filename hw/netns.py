"""Keep DDS traffic on this machine: run ROS2 code inside a private network namespace that holds only loopback.

DDS discovery multicasts on every interface by default. Tests and benchmarks that start ROS2 nodes run them in a fresh
namespace (``unshare -n``, or ``unshare -rn`` when not root) where only ``lo`` exists (checked before the command
starts), with ``lo`` up, a multicast route on it, ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and a random
``ROS_DOMAIN_ID`` (:func:`loopback_ros_env`). Where no such namespace can be made, :func:`netns_unavailable` says why
and the caller refuses to run (or, for a benchmark, runs only if told ``allow_network=true``). No ROS2 import here.
(tests/ros2_netns.py is the pytest flavour of the same recipe.)
"""

from __future__ import annotations

import functools
import os
import random
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence

# Inside the namespace: bring lo up, route multicast to it, and refuse to run if any other interface exists.
PRELUDE = (
    "set -e; ip link set lo up; ip route add 224.0.0.0/4 dev lo; "
    'n=$(ip -o link show | wc -l); if [ "$n" != 1 ]; then '
    'echo "netns has $n interfaces, expected only lo" >&2; exit 97; fi; exec "$@"'
)
CYCLONE_LOOPBACK_XML = (
    "<CycloneDDS><Domain id='any'><General><Interfaces><NetworkInterface name='lo'/></Interfaces>"
    "<AllowMulticast>false</AllowMulticast></General><Discovery><ParticipantIndex>auto</ParticipantIndex>"
    "<MaxAutoParticipantIndex>30</MaxAutoParticipantIndex><Peers><Peer address='127.0.0.1'/></Peers></Discovery>"
    "</Domain></CycloneDDS>"
)


def unshare_cmd() -> list[str]:
    """``unshare -n`` as root, else ``unshare -rn`` (a user namespace maps us to root inside)."""
    return ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-rn"]


def interfaces() -> list[str]:
    """Network interfaces of this process's namespace (``/proc/self/net/dev``; /sys/class/net shows the namespace
    sysfs was mounted in, not ours)."""
    with open("/proc/self/net/dev") as f:
        return sorted(line.split(":", 1)[0].strip() for line in f.readlines()[2:] if ":" in line)


def network_isolated() -> bool:
    """True when this process's network namespace holds no interface but ``lo`` (already confined)."""
    try:
        return interfaces() == ["lo"]
    except OSError:
        return False


@functools.lru_cache(maxsize=1)
def netns_unavailable() -> str | None:
    """Why a loopback-only network namespace cannot be made here (None: it can)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool!r} not found: cannot confine DDS traffic to a loopback-only network namespace"
    try:
        r = subprocess.run(
            [*unshare_cmd(), "sh", "-c", PRELUDE, "sh", "true"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot create a network namespace ({e})"
    if r.returncode != 0:
        return (
            f"cannot create a loopback-only network namespace ({' '.join(unshare_cmd())}: "
            f"{(r.stderr or r.stdout).strip()[:200]})"
        )
    return None


def loopback_ros_env(tmp: str, domain_id: int | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for ROS2 processes: loopback discovery, a random domain, Fast DDS, logs and ROS_HOME under
    ``tmp``, one OpenMP thread."""
    env = dict(os.environ if base is None else base)
    for key in (
        "ROS_LOCALHOST_ONLY",
        "ROS_STATIC_PEERS",
        "FASTRTPS_DEFAULT_PROFILES_FILE",
        "FASTDDS_DEFAULT_PROFILES_FILE",
        "ROS_DISCOVERY_SERVER",
    ):
        env.pop(key, None)
    env.update(
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_DOMAIN_ID=str(random.randint(1, 100) if domain_id is None else domain_id),
        RMW_IMPLEMENTATION=env.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp"),
        CYCLONEDDS_URI=CYCLONE_LOOPBACK_XML,
        ROS_LOG_DIR=os.path.join(tmp, "log"),
        ROS_HOME=tmp,
        MUJOCO_GL=env.get("MUJOCO_GL", "egl"),
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
    )
    return env


SHM_DIR = "/dev/shm"
DDS_SHM_PREFIXES = ("fastrtps_", "sem.fastrtps_", "fast_datasharing_", "sem.fast_datasharing_")


def dds_shm_entries() -> set[str]:
    """Fast DDS shared-memory segments, port files and semaphores now in /dev/shm (names)."""
    try:
        return {n for n in os.listdir(SHM_DIR) if n.startswith(DDS_SHM_PREFIXES)}
    except OSError:
        return set()


def _shm_in_use() -> set[str]:
    """Names under /dev/shm that a live process maps or holds open."""
    used: set[str] = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/maps") as f:
                used.update(
                    line.rsplit("/", 1)[-1].split(" (deleted)")[0].strip() for line in f if f" {SHM_DIR}/" in line
                )
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith(SHM_DIR + "/"):
                    used.add(target[len(SHM_DIR) + 1 :])
        except OSError:
            continue
    return used


def cleanup_dds_shm(before: set[str]) -> int:
    """Remove the Fast DDS shared-memory files that appeared since ``before`` and that no live process uses (what
    killed nodes leave behind); returns how many were removed."""
    new = dds_shm_entries() - before
    if not new:
        return 0
    removed = 0
    for name in new - _shm_in_use():
        try:
            os.unlink(os.path.join(SHM_DIR, name))
            removed += 1
        except OSError:
            pass
    return removed


def run_isolated(
    argv: Sequence[str], env: Mapping[str, str], timeout: float, cwd: str | None = None
) -> subprocess.CompletedProcess:
    """Run ``argv`` in a fresh loopback-only network namespace; its output goes to ours. Killed (with everything it
    started) after ``timeout`` s. Raises RuntimeError if no such namespace can be made."""
    reason = netns_unavailable()
    if reason:
        raise RuntimeError(reason)
    cmd = [*unshare_cmd(), "sh", "-c", PRELUDE, "sh", *argv]
    shm_before = dds_shm_entries()
    proc = subprocess.Popen(cmd, env=dict(env), cwd=cwd, start_new_session=True)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    except KeyboardInterrupt:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        raise
    finally:
        reap_session(proc.pid, shm_before)
    return subprocess.CompletedProcess(cmd, proc.returncode)


def reap_session(pid: int, shm_before: set[str]) -> None:
    """After the command started as session ``pid`` ended: kill whatever it left running in its session, then remove
    the DDS shared-memory files those processes left behind."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    cleanup_dds_shm(shm_before)
