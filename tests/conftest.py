import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # so env ids "toy_env:toy/PointReach-v0" resolve
os.environ.setdefault("MUJOCO_GL", "egl")

TOY_TASK = {"name": "toy_reach", "env_id": "toy_env:toy/PointReach-v0", "env_kwargs": {}, "has_expert": True}


@pytest.fixture
def toy_task():
    return dict(TOY_TASK, env_kwargs={})
