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
