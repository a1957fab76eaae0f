"""Behavioural tests of the MuJoCo Panda tasks in sim/ (contract, seeding, limits, experts, workspace)."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import sim  # noqa: F401  (registers the env ids, sets MUJOCO_GL before mujoco makes a context)
from robot_rl.envs.contract import NonFiniteError, check_env_contract
from robot_rl.envs.make import make_gym_env

TASKS = {"reach": "robot_rl/Reach-v0", "pick_cube": "robot_rl/PickCube-v0", "peg_insert": "robot_rl/PegInsert-v0"}
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "task"


def make(task: str, **kwargs) -> gym.Env:
    return make_gym_env(f"sim:{TASKS[task]}", **kwargs)


def run_expert(env: gym.Env, seed: int) -> tuple[bool, list[np.ndarray], dict]:
    """One expert episode; returns (success, actions, last info)."""
    env.reset(seed=seed)
    actions, info = [], {}
    while True:
        a = env.unwrapped.expert_action()
        actions.append(a)
        _, _, terminated, truncated, info = env.step(a)
        if terminated or truncated:
            return bool(info["success"]), actions, info


@pytest.mark.parametrize("task", TASKS)
def test_contract_state(task):
    env = make(task)
    check_env_contract(env, steps=8)
    space = env.observation_space
    assert list(space.spaces) == ["state"]
    layout = env.unwrapped.state_layout
    assert sum(n for _, n in layout) == space["state"].shape[0]
    assert env.unwrapped.control_dt == pytest.approx(0.1)
    assert not env.unwrapped._renderers, "state mode must never create a GL context"
    env.close()


@pytest.mark.parametrize("task,size", [("reach", 32), ("pick_cube", 128), ("peg_insert", 32)])
def test_contract_pixels(task, size):
    env = make(task, obs_mode="pixels", image_size=size)
    check_env_contract(env, steps=3)
    obs, _ = env.reset(seed=1)
    for cam in ("front", "wrist"):
        assert obs[cam].shape == (size, size, 3) and obs[cam].dtype == np.uint8
        assert obs[cam].std() > 5, f"{cam} image looks blank"
    names = [n for n, _ in env.unwrapped.state_layout]
    assert names[:2] == ["ee_pos", "ee_vel"] and not any("cube" in n or "hole" in n or "goal" in n for n in names)
    env.close()


def test_render_rgb_array():
    env = make("pick_cube", render_mode="rgb_array", render_size=64)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8 and frame.std() > 5
    env.close()


@pytest.mark.parametrize("task", TASKS)
def test_seeding_determinism(task):
    env = make(task)
    rng = np.random.default_rng(3)
    actions = rng.uniform(-1, 1, (10, *env.action_space.shape)).astype(np.float32)

    def rollout(seed):
        obs, _ = env.reset(seed=seed)
        out = [obs["state"]]
        for a in actions:
            out.append(env.step(a)[0]["state"])
        return np.stack(out)

    a, b, c = rollout(7), rollout(7), rollout(8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a[0], c[0]), "different seeds must give different initial states"


@pytest.mark.parametrize("task", TASKS)
def test_time_limit_truncates(task):
    env = make(task, max_episode_steps=4)
    env.reset(seed=0)
    zero = np.zeros(env.action_space.shape, np.float32)
    for t in range(4):
        _, reward, terminated, truncated, info = env.step(zero)
        assert not terminated and not info["success"] and reward == 0.0
        assert truncated == (t == 3)


@pytest.mark.parametrize("task", TASKS)
def test_success_terminates(task):
    env = make(task)
    success, actions, info = run_expert(env, seed=5)
    assert success and info["is_intervention"] is False
    # Replay: the last step is the success step, terminated (not truncated), reward 1.
    env.reset(seed=5)
    for a in actions[:-1]:
        assert env.step(a)[1] == 0.0
    _, reward, terminated, truncated, info = env.step(actions[-1])
    assert (reward, terminated, truncated, info["success"]) == (1.0, True, False, True)
    # Without terminate_on_success the episode goes on (and still reports success).
    env2 = make(task, terminate_on_success=False)
    env2.reset(seed=5)
    for a in actions:
        _, reward, terminated, truncated, info = env2.step(a)
    assert info["success"] and not terminated and reward == 1.0


@pytest.mark.parametrize("task", TASKS)
def test_expert_success_rate(task):
    env = make(task)
    wins = sum(run_expert(env, seed)[0] for seed in range(100, 140))
    assert wins >= 38, f"{task} expert succeeded in {wins}/40 episodes"


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("obs_mode", ["state", "pixels"])
def test_expert_success_rate_long(task, obs_mode):
    env = make(task, obs_mode=obs_mode, image_size=32)
    n = 200 if obs_mode == "state" else 20
    wins = sum(run_expert(env, seed)[0] for seed in range(1000, 1000 + n))
    assert wins >= 0.95 * n, f"{task} ({obs_mode}) expert succeeded in {wins}/{n} episodes"


@pytest.mark.parametrize("task", TASKS)
def test_noisy_expert_still_mostly_succeeds(task):
    env = make(task, max_episode_steps=60)  # noise slows the expert down; this checks it still gets there
    env.reset(seed=0)
    a = env.unwrapped.expert_action(noise=0.3)
    assert a.dtype == np.float32 and a.shape == env.action_space.shape and np.all(np.abs(a) <= 1)
    wins = 0
    for seed in range(10):
        env.reset(seed=seed)
        while True:
            _, _, terminated, truncated, info = env.step(env.unwrapped.expert_action(noise=0.2))
            if terminated or truncated:
                wins += info["success"]
                break
    assert wins >= 7


@pytest.mark.parametrize("task", TASKS)
def test_replayed_actions_fail_on_other_seeds(task):
    env = make(task)
    success, actions, _ = run_expert(env, seed=0)
    assert success
    wins = 0
    for seed in range(1, 11):
        env.reset(seed=seed)
        for a in actions:
            _, _, terminated, truncated, info = env.step(a)
            if terminated or truncated:
                break
        wins += info["success"]
    assert wins <= 3, f"{task}: one episode's actions solved {wins}/10 other seeds; randomisation is too narrow"


@pytest.mark.parametrize("task", TASKS)
def test_workspace_enforced_under_max_actions(task):
    env = make(task, max_episode_steps=1000)
    base = env.unwrapped
    env.reset(seed=0)
    n = env.action_space.shape[0]
    for direction in ([1, 1, 1], [-1, -1, -1], [1, -1, -1], [-1, 1, 1]):
        a = np.zeros(n, np.float32)
        a[:3] = direction
        for _ in range(25):
            env.step(a)
            assert np.all(base._target_pos >= base.ws_low) and np.all(base._target_pos <= base.ws_high)
            ee = base.ee_pos
            assert np.all(ee >= base.ws_low - 0.01) and np.all(ee <= base.ws_high + 0.01), (direction, ee)
        reached = base.ws_high if direction[0] > 0 else base.ws_low
        assert abs(base.ee_pos[0] - reached[0]) < 0.01, "max actions should drive the EE to the workspace bound"


@pytest.mark.parametrize("task", TASKS)
def test_nan_action_raises(task):
    env = make(task)
    env.reset(seed=0)
    a = np.zeros(env.action_space.shape, np.float32)
    a[0] = np.nan
    with pytest.raises(NonFiniteError):
        env.step(a)
    a[0] = np.inf
    with pytest.raises(NonFiniteError):
        env.step(a)


def test_gripper_three_way_command():
    env = make("pick_cube")
    env.reset(seed=0)
    cmd_idx = [name for name, _ in env.unwrapped.state_layout].index("gripper_cmd")
    cmd = lambda obs: obs["state"][sum(n for _, n in env.unwrapped.state_layout[:cmd_idx])]  # noqa: E731
    seq = [(0.9, 1.0), (0.0, 1.0), (0.5, 1.0), (-0.6, 0.0), (0.2, 0.0), (-1.0, 0.0), (1.0, 1.0)]
    for g, expected in seq:
        obs = env.step(np.array([0, 0, 0, g], np.float32))[0]
        assert cmd(obs) == expected, (g, expected)
    assert env.unwrapped.gripper_opening < 0.01, "fingers should be closed after a close command"


def test_rotation_actions_and_limit():
    env = make("reach", rotation=True, rotation_limit=0.3)
    assert env.action_space.shape == (6,)
    env.reset(seed=0)
    names = [n for n, _ in env.unwrapped.state_layout]
    start = sum(n for name, n in env.unwrapped.state_layout[: names.index("ee_rotvec")])
    for _ in range(15):
        obs = env.step(np.array([0, 0, 0, 0, 0, 1], np.float32))[0]
    rotvec = obs["state"][start : start + 3]
    assert rotvec[2] == pytest.approx(0.3, abs=0.03) and np.all(np.abs(rotvec[:2]) < 0.03)
    wins = sum(run_expert(env, seed)[0] for seed in range(5))
    assert wins >= 4


@pytest.mark.parametrize("task", TASKS)
def test_shaped_reward_is_dense_and_bounded(task):
    env = make(task, reward_type="shaped")
    env.reset(seed=0)
    rewards = []
    while True:
        _, r, terminated, truncated, _ = env.step(env.unwrapped.expert_action())
        rewards.append(r)
        if terminated or truncated:
            break
    assert all(0.0 <= r <= 1.0 for r in rewards) and rewards[-1] == 1.0
    assert len(set(np.round(rewards, 6))) > 2


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"obs_mode": "rgb"}, "obs_mode='rgb'.*state.*pixels"),
        ({"reward_type": "dense"}, "reward_type"),
        ({"action_scale": 0.5}, r"action_scale=0.5.*\[0.001, 0.1\]"),
        ({"workspace_low": [0.5, 0.3, 0.1], "workspace_high": [0.4, 0.4, 0.3]}, "workspace_high"),
        ({"ee_start": [0.9, 0.0, 0.2]}, "ee_start"),
        ({"image_size": 4}, "image_size"),
        ({"cube_size": 0.1}, r"cube_size=0.1.*\[0.03, 0.05\]"),
        ({"object_x_range": [0.6, 0.4]}, "object_x_range"),
        ({"use_gripper": False}, "use_gripper"),
    ],
)
def test_invalid_kwargs_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make("pick_cube", **kwargs)


def test_peg_clearance_validated():
    with pytest.raises(ValueError, match=r"hole_clearance=0.006.*0.005"):
        make("peg_insert", hole_clearance=0.006)
    env = make("peg_insert").unwrapped
    env.reset(seed=0)
    walls = [env.model.geom(f"block_wall{i}") for i in range(4)]
    hole_width = 2 * (abs(walls[0].pos[0]) - walls[0].size[0])
    assert 0 < hole_width - env.peg_width <= 0.005


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIG_DIR.glob("*.yaml") if not p.name.startswith("ros2_")))
def test_task_configs_build_envs(config):  # ros2_* tasks need a robot (tests/test_ros2_nodes.py builds them)
    omegaconf = pytest.importorskip("omegaconf")
    from robot_rl.utils.config import config_group

    cfg = omegaconf.OmegaConf.merge({"obs": "state"}, {"task": config_group("task", config[:-5])})  # its defaults
    task = omegaconf.OmegaConf.to_container(cfg.task, resolve=True)
    assert set(task) == {"name", "env_id", "env_kwargs", "has_expert"} and task["name"] == config[:-5]
    env = make_gym_env(task["env_id"], **task["env_kwargs"])
    obs, _ = env.reset(seed=0)
    env.step(env.action_space.sample())
    assert hasattr(env.unwrapped, "expert_action") == task["has_expert"]
    env.close()


def test_misaligned_peg_is_blocked_by_the_block():
    env = make("peg_insert", max_episode_steps=1000).unwrapped
    env.reset(seed=2)
    offset = np.array([0.006, 0.0, 0.006])  # 6 mm off-centre: 4 mm overlap with a wall (clearance 2 mm per side)
    for _ in range(20):
        env.step(env._expert_out(env._move_action(env.hole + offset + env.ee_pos - env.peg_tip), 0.0, 0.0))
    assert np.abs(env.peg_tip - env.hole - offset).max() < 0.002
    for _ in range(10):
        _, _, terminated, _, info = env.step(np.array([0, 0, -1], np.float32))
        assert not info["success"] and not terminated
    assert env.peg_tip[2] > env.hole[2] - 0.003, "the peg went through the block"
    # Centred, the same push inserts it.
    for _ in range(30):
        _, _, terminated, _, info = env.step(env.expert_action())
        if terminated:
            break
    assert info["success"]


def test_a_dynamics_gap_delays_scales_and_weighs_as_configured():
    a = np.array([1.0, 0.0, 0.0, 0.0], np.float32)
    nominal = make("pick_cube").unwrapped
    gap = make("pick_cube", dynamics={"action_delay": 1, "action_gain": 0.5}).unwrapped
    for env in (nominal, gap):
        env.reset(seed=0)
    start = gap._target_pos.copy()
    nominal.step(a)
    gap.step(a)
    np.testing.assert_allclose(gap._target_pos, start)  # the first command waits a step (a zero one acts)
    gap.step(np.zeros(4, np.float32))
    moved, nominal_moved = gap._target_pos[0] - start[0], nominal._target_pos[0] - start[0]
    assert moved == pytest.approx(0.5 * nominal_moved) and nominal_moved == pytest.approx(nominal.action_scale)
    heavy = make("pick_cube", dynamics={"object_mass": 2.0, "object_friction": 0.5}).unwrapped
    cube = nominal.model.body("cube").id
    assert heavy.model.body_mass[cube] == pytest.approx(2 * nominal.model.body_mass[cube])
    g = [i for i in range(heavy.model.ngeom) if heavy.model.geom_bodyid[i] == cube]
    np.testing.assert_allclose(heavy.model.geom_friction[g, 0], 0.5 * nominal.model.geom_friction[g, 0])
    assert nominal.model.body_mass[cube] == make("pick_cube").unwrapped.model.body_mass[cube]  # shared model intact
    with pytest.raises(ValueError, match="unknown dynamics key.*'latency'"):
        make("pick_cube", dynamics={"latency": 1})
    with pytest.raises(ValueError, match="action_delay"):
        make("pick_cube", dynamics={"action_delay": 9})
