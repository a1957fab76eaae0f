"""``runtime=async``: start the actor and the learner as two processes, supervise them, and tear both down.

The actor listens on a Unix socket named after the run directory (:func:`~robot_rl.runtime.keys.runtime_address`)
and the learner connects, authenticating with the run's key (:func:`~robot_rl.runtime.keys.runtime_key`). A crashed
actor or learner is restarted (``runtime.restarts`` times); the learner then resumes from its last checkpoint and the
store. Ctrl+C stops both and waits for them: the actor files its running episode as a cut one, so the store stays
consistent, and no process is left behind (children also die with the launcher).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from robot_rl.runtime.keys import runtime_key
from robot_rl.utils.signals import ctrl_c_stops

PROCESS_NAMES = ("actor", "learner")


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the launcher dies, however it dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def spawn(name: str, run_dir: Path) -> subprocess.Popen:
    """Start ``python -m robot_rl.runtime.<name> RUN_DIR``."""
    return subprocess.Popen(
        [sys.executable, "-m", f"robot_rl.runtime.{name}", str(run_dir)],
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )


def stop_all(procs: dict[str, subprocess.Popen], grace_s: float = 20.0) -> None:
    """SIGINT every live child, wait up to ``grace_s``, then SIGKILL what is left, and reap all."""
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace_s
    for p in procs.values():
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_async(run_dir: Path, restarts: int = 3, poll_s: float = 0.5) -> int:
    """Run actor + learner for the run whose config is ``<run_dir>/config.yaml``; exit status 0 when both finish."""
    run_dir = Path(run_dir)
    ctrl_c_stops()
    runtime_key(run_dir)
    procs = {name: spawn(name, run_dir) for name in PROCESS_NAMES}
    left = {name: restarts for name in PROCESS_NAMES}
    try:
        while True:
            time.sleep(poll_s)
            codes = {name: p.poll() for name, p in procs.items()}
            if codes["actor"] == 0 and codes["learner"] is not None:
                return 0 if codes["learner"] == 0 else codes["learner"]
            for name, code in codes.items():
                if code is None or code == 0:
                    continue
                if left[name] == 0:
                    print(f"[launcher] the {name} failed (exit {code}) and has no restarts left; stopping", flush=True)
                    return 1
                left[name] -= 1
                print(
                    f"[launcher] the {name} exited with {code}; restarting it ({left[name]} restarts left)", flush=True
                )
                procs[name] = spawn(name, run_dir)
    except KeyboardInterrupt:
        print("[launcher] stopping actor and learner", flush=True)
        return 130
    finally:
        stop_all(procs)
