"""Where the configs live, and a run's resolved config read back from its run directory."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(os.environ.get("ROBOT_RL_CONFIG_DIR", Path(__file__).resolve().parents[2] / "configs"))


def load_run_config(run_dir: Path, overrides: Sequence[str] = ()) -> Any:
    """``<run_dir>/config.yaml`` with ``overrides`` applied: ``group=name`` picks another config of a group
    (``task=ros2_reach``: ``configs/task/ros2_reach.yaml``, in place of the run's task), any other ``key=value`` sets
    one value (``runtime.topic_prefix=arm1``)."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(run_dir) / "config.yaml")
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ValueError(f"malformed override(s) {bad}: expected key=value, e.g. runtime.max_weight_lag_steps=100")
    values = []
    for o in overrides:
        key, name = o.split("=", 1)
        if (CONFIG_DIR / key).is_dir():
            cfg[key] = config_group(key, name)  # its interpolations (${obs}) resolve against this run's config
        else:
            values.append(o)
    if values:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(values))
    return cfg


def group_choices(group: str) -> list[str]:
    """The config names of a group (``configs/<group>/*.yaml``), sorted."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def config_group(group: str, name: str) -> Any:
    """``configs/<group>/<name>.yaml`` as a run would compose it (its defaults list applied), interpolations left
    unresolved for the config it joins."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    choices = group_choices(group)
    if name not in choices:
        raise ValueError(f"unknown {group} {name!r}; valid choices: {', '.join(choices)}")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        composed = compose("train", overrides=[f"{group}={name}"])
    return OmegaConf.create(OmegaConf.to_container(composed[group], resolve=False))


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
