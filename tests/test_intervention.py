"""InterventionWrapper: the device's action replaces the policy's while it is active, flags and executed actions in
info, operator marks end episodes (success terminated, failure truncated), per-episode stats, NaN refusal, and the
gripper hand-over at take-over. Toy envs only (no MuJoCo), except the config test on reach."""

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml
from gymnasium import spaces

from robot_rl.envs.contract import NonFiniteError
from robot_rl.envs.make import make_env
from robot_rl.hil.devices import ActionLayout, DeviceState, KeyboardDevice, TeleopDevice
from robot_rl.hil.intervention import InterventionWrapper, make_intervention_env
from robot_rl.hil.sim_operator import SimOperator

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEVICE_ACTION = np.array([-0.2, -0.3], np.float32)
POLICY_ACTION = np.array([0.1, 0.05], np.float32)


class ScriptDevice(TeleopDevice):
    """Replays one scripted (active, events) per read; records what the wrapper told it."""

    name = "script"

    def __init__(self, script, action=DEVICE_ACTION):
        super().__init__(ActionLayout())
        self.script, self.action, self.i = list(script), np.asarray(action, np.float32), 0
        self.observed, self.synced, self.closed = [], [], False

    def read(self):
        active, events = self.script[self.i] if self.i < len(self.script) else (False, ())
        self.i += 1
        return DeviceState(self.action.copy(), active, frozenset(events))

    def observe(self, obs, proposed_action):
        self.observed.append((obs["state"].copy(), proposed_action.copy()))

    def sync_gripper(self, closed):
        self.synced.append(closed)
        super().sync_gripper(closed)

    def close(self):
        self.closed = True


def toy(toy_task, steps=6):
    return make_env(dict(toy_task, env_kwargs={"max_episode_steps": steps}))


def test_routes_device_action_flags_and_stats(toy_task):
    flags = [False, True, True, False, True, False]
    dev = ScriptDevice([(f, ()) for f in flags])
    env = InterventionWrapper(toy(toy_task), dev)
    obs, info = env.reset(seed=3)
    assert info["is_intervention"] is False and info["operator_mark"] is None
    infos, ends = [], []
    for t, f in enumerate(flags):
        pos0 = env.unwrapped.pos.copy()
        obs_before = obs["state"].copy()
        obs, reward, terminated, truncated, info = env.step(POLICY_ACTION)
        want = DEVICE_ACTION if f else POLICY_ACTION
        np.testing.assert_allclose(env.unwrapped.pos - pos0, 0.15 * want, atol=1e-6)  # what the env executed
        assert info["is_intervention"] is f
        assert info["executed_action"].dtype == np.float32 and info["executed_action"].shape == (2,)
        np.testing.assert_array_equal(info["executed_action"], want)
        np.testing.assert_array_equal(info["policy_action"], POLICY_ACTION)
        np.testing.assert_array_equal(dev.observed[t][0], obs_before)  # observe() saw what the policy acted on
        np.testing.assert_array_equal(dev.observed[t][1], POLICY_ACTION)
        infos.append(info)
        ends.append(terminated or truncated)
    assert ends == [False] * 5 + [True] and not terminated  # the toy's time limit, no success on this seed
    assert "intervention_steps" not in infos[2]
    assert (info["episode_steps"], info["intervention_steps"], info["intervention_segments"]) == (6, 3, 2)
    assert info["intervention_rate"] == pytest.approx(0.5)
    assert env.total_steps == 6 and env.total_intervention_steps == 3
    env.reset(seed=4)  # per-episode counters restart, totals keep counting
    assert env.episode_stats()["intervention_steps"] == 0 and env.total_intervention_steps == 3
    env.close()
    assert dev.closed


@pytest.mark.parametrize("mark, success_reward", [("success", 5.0), ("success", None), ("failure", 5.0)])
def test_operator_marks_end_the_episode(toy_task, mark, success_reward):
    dev = ScriptDevice([(False, ()), (True, {mark})])
    env = InterventionWrapper(toy(toy_task, steps=50), dev, success_reward=success_reward)
    env.reset(seed=3)
    _, reward, terminated, truncated, info = env.step(POLICY_ACTION)
    assert not (terminated or truncated) and info["operator_mark"] is None
    _, reward, terminated, truncated, info = env.step(POLICY_ACTION)
    np.testing.assert_array_equal(info["executed_action"], DEVICE_ACTION)  # the marked step still ran
    assert info["operator_mark"] == mark and info["episode_steps"] == 2 and info["intervention_steps"] == 1
    if mark == "success":
        assert (terminated, truncated, info["success"]) == (True, False, True)
        assert reward == (5.0 if success_reward is not None else 0.0)
    else:
        assert (terminated, truncated, info["success"]) == (False, True, False)
        assert reward == 0.0


@pytest.mark.parametrize("event", ["quit", "discard"])
def test_quit_and_discard_are_flagged_and_truncate(toy_task, event):
    env = InterventionWrapper(toy(toy_task, steps=50), ScriptDevice([(False, {event})]))
    env.reset(seed=3)
    _, _, terminated, truncated, info = env.step(POLICY_ACTION)
    assert (terminated, truncated) == (False, True)
    assert info[f"operator_{event}"] is True and info["operator_mark"] is None


def test_non_finite_and_misshapen_actions_are_refused(toy_task):
    env = InterventionWrapper(toy(toy_task), ScriptDevice([(False, ())] * 3))
    env.reset(seed=3)
    with pytest.raises(NonFiniteError, match="policy action"):
        env.step(np.array([np.nan, 0.0], np.float32))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3, np.float32))
    bad = InterventionWrapper(toy(toy_task), ScriptDevice([(True, ())], action=[np.inf, 0.0]))
    bad.reset(seed=3)
    with pytest.raises(NonFiniteError, match="script action"):
        bad.step(POLICY_ACTION)
    # an inactive device's (ignored) action is not judged; out-of-range actions are stored clipped, as executed
    env2 = InterventionWrapper(toy(toy_task), ScriptDevice([(False, ())], action=[np.nan, 0.0]))
    env2.reset(seed=3)
    _, _, _, _, info = env2.step(np.array([3.0, -0.5], np.float32))
    np.testing.assert_array_equal(info["executed_action"], [1.0, -0.5])


class GripperPoint(gym.Env):
    """A point with a gripper: action (dx, dy, dz, gripper); the gripper closes at > 0.5, opens at < -0.5. With
    ``layout``, the state is [x, y, z, gripper_cmd] and ``state_layout`` names it (as the sim tasks do)."""

    def __init__(self, layout: bool):
        self.action_space = spaces.Box(-1, 1, (4,), np.float32)
        self.observation_space = spaces.Dict({"state": spaces.Box(-9, 9, (4 if layout else 3,), np.float32)})
        if layout:
            self.state_layout = [("ee_pos", 3), ("gripper_cmd", 1)]
        self.layout = layout

    def _obs(self):
        s = np.r_[self.pos, float(self.closed)] if self.layout else self.pos
        return {"state": s.astype(np.float32)}

    def reset(self, *, seed=None, options=None):
        self.pos, self.closed = np.zeros(3), False
        return self._obs(), {"success": False, "is_intervention": False}

    def step(self, action):
        self.pos = self.pos + 0.01 * action[:3]
        self.closed = True if action[3] > 0.5 else (False if action[3] < -0.5 else self.closed)
        return self._obs(), 0.0, False, False, {"success": False, "is_intervention": False}


@pytest.mark.parametrize("layout", [True, False], ids=["state_layout", "action_history"])
def test_take_over_keeps_the_policys_grasp(layout):
    kb = KeyboardDevice(ActionLayout(rotation=False, gripper=True), listen=False)
    env = InterventionWrapper(GripperPoint(layout), kb)
    env.reset()
    assert kb.read().action[-1] == -1.0  # reset: open
    env.step(np.array([0, 0, -1, 1], np.float32))  # the policy closes the gripper ...
    env.step(np.array([0, 0, 0, 0], np.float32))  # ... and holds it
    assert env.gripper_closed() is True
    kb.press("w")  # the operator pushes forward
    _, _, _, _, info = env.step(np.zeros(4, np.float32))
    assert info["is_intervention"]
    np.testing.assert_array_equal(info["executed_action"], [1, 0, 0, 1])  # moves, and keeps the gripper closed
    assert env.unwrapped.closed
    kb.release("w")
    kb.press("space")  # the operator toggles: opens
    _, _, _, _, info = env.step(np.zeros(4, np.float32))
    assert info["is_intervention"] and info["executed_action"][-1] == -1.0 and not env.unwrapped.closed


def test_env_method_decides_the_gripper_state():
    env = GripperPoint(layout=True)
    env.gripper_closed = lambda: None  # e.g. a real gripper that has not reported yet
    dev = ScriptDevice([])
    wrapped = InterventionWrapper(env, dev)
    wrapped.reset()
    wrapped.step(np.array([0, 0, 0, 1], np.float32))
    assert dev.synced == [None, None]


def test_make_intervention_env_from_configs(toy_task):
    names = sorted(p.stem for p in (CONFIGS / "hil").glob("*.yaml"))
    assert names == ["none", "sim_operator", "sim_operator_heavy", "teleop"]
    cfgs = {n: yaml.safe_load((CONFIGS / "hil" / f"{n}.yaml").read_text()) for n in names}
    env = toy(toy_task)
    assert make_intervention_env(env, cfgs["none"]) is env
    assert make_intervention_env(env, None) is env
    with pytest.raises(ValueError, match="unknown hil mode"):
        make_intervention_env(env, {"name": "robot"})
    reach = yaml.safe_load((CONFIGS / "task" / "reach.yaml").read_text())
    reach["env_kwargs"]["obs_mode"] = "state"
    for preset in ("sim_operator", "sim_operator_heavy"):  # every documented key is accepted
        sim = make_intervention_env(make_env(reach), cfgs[preset], seed=7)
        assert isinstance(sim, InterventionWrapper) and isinstance(sim.device, SimOperator) and sim.device.seed == 7
    teleop = make_intervention_env(make_env(reach), dict(cfgs["teleop"], device="scripted"))
    assert teleop.device.name == "scripted"
    with pytest.raises(ValueError, match="no setting"):
        make_intervention_env(make_env(reach), dict(cfgs["teleop"], device="scripted", settings={"speed": 1}))


def test_wrapped_env_keeps_the_contract():
    from robot_rl.envs.contract import check_env_contract

    reach = yaml.safe_load((CONFIGS / "task" / "reach.yaml").read_text())
    reach["env_kwargs"]["obs_mode"] = "state"
    base = make_env(reach)
    check_env_contract(InterventionWrapper(base, SimOperator(base)), steps=6)
