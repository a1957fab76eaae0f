"""Keys and addresses of a run's processes: the actor's Unix socket and the per-run connection key.

The learner authenticates to the actor with an HMAC over a challenge, keyed by ``<run_dir>/runtime.key``; the ROS2
transport and the safety nodes use keys made the same way (:func:`key_file`). Nothing received is unpickled.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
from pathlib import Path


def runtime_address(run_dir: Path) -> str:
    """The actor's Unix socket for ``run_dir`` (under the temp dir: socket paths are limited to ~100 bytes)."""
    digest = hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"robot_rl-{digest}.sock")


def runtime_key(run_dir: Path) -> bytes:
    """The run's connection key, made on first use (readable by the owner only)."""
    return key_file(Path(run_dir) / "runtime.key")


def key_file(path: Path) -> bytes:
    """The 32-byte key held (as hex) in ``path``, made on first use (mode 0600; concurrent first users agree)."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)  # first writer wins; a concurrent one reads the winner's key
        except FileExistsError:
            pass
        os.unlink(tmp)
    try:
        return bytes.fromhex(path.read_text().strip())
    except ValueError:
        raise ValueError(f"{path} does not hold a hex key; delete it to make a new one") from None
