import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))  # so env ids "toy_env:toy/PointReach-v0" resolve
os.environ.setdefault("MUJOCO_GL", "egl")
# precision=auto picks bf16 on CPUs with native bf16 and fp32 on others: the suite's learning bars are set in fp32, so
# every machine runs the same arithmetic (subprocesses and Ray workers inherit this); the bf16 paths have their tests.
os.environ.setdefault("ROBOT_RL_AUTO_PRECISION", "fp32")
os.environ.setdefault("ROBOT_RL_AUTO_COMPILE", "0")  # compiling every agent the tests build would take minutes
# Tiny test networks gain nothing from intra-op threads, and more threads than free cores slow every process on a
# loaded 2-core machine; tests that exercise threads set them explicitly.
torch.set_num_threads(1)

TOY_TASK = {"name": "toy_reach", "env_id": "toy_env:toy/PointReach-v0", "env_kwargs": {}, "has_expert": True}


@pytest.fixture
def toy_task():
    return dict(TOY_TASK, env_kwargs={})


@pytest.fixture(scope="session")
def reach_demos(tmp_path_factory):
    """A store of 30 scripted-expert reach episodes and 5 noisy failed ones (state observations)."""
    from omegaconf import OmegaConf

    from robot_rl.bench.reward import record_store
    from robot_rl.utils.config import config_group

    path = tmp_path_factory.mktemp("demos") / "reach.zarr"
    spec = OmegaConf.to_container(OmegaConf.merge({"obs": "state"}, {"task": config_group("task", "reach")}).task)
    record_store(path, spec, 128, 30, 5, 3.0, 0, obs_mode="state", terminate_on_success=True)
    return path
