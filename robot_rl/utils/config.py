"""Where the configs live, and a run's resolved config read back from its run directory."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(os.environ.get("ROBOT_RL_CONFIG_DIR", Path(__file__).resolve().parents[2] / "configs"))


def load_run_config(run_dir: Path, overrides: Sequence[str] = ()) -> Any:
    """``<run_dir>/config.yaml`` with dotlist ``overrides`` (e.g. ``runtime.topic_prefix=arm1``) applied."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(run_dir) / "config.yaml")
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ValueError(f"malformed override(s) {bad}: expected key=value, e.g. runtime.max_weight_lag_steps=100")
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    return cfg


def run_process_args(role: str, argv: Sequence[str] | None = None) -> tuple[Path, list[str]]:
    """The command line of a runtime process (``python -m robot_rl.runtime.<role> RUN_DIR [key=value ...]``): its
    run directory and the overrides of ``<run_dir>/config.yaml``."""
    import argparse

    p = argparse.ArgumentParser(description=f"robot_rl {role} process (started by the async runtime)")
    p.add_argument("run_dir", type=Path)
    p.add_argument(
        "overrides",
        nargs="*",
        help="key=value over <run_dir>/config.yaml, e.g. runtime.transport=hw.ros_transport:RosTransport",
    )
    args = p.parse_args(argv)
    return args.run_dir, list(args.overrides)
