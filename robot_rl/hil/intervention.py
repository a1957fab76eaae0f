"""Interventions during training: while a teleop device (or the simulated operator) is active, its action replaces
the policy's.

:class:`InterventionWrapper` sits outside the env (around ``make_env``'s :class:`~robot_rl.envs.contract.FiniteGuard`,
so the executed action is checked again at the env boundary). Each ``step(policy_action)``:

1. checks the policy's action (shape of the action space, finite: :class:`~robot_rl.envs.contract.NonFiniteError`
   otherwise, even when a human is about to override it: a NaN from the policy is a bug to surface);
2. ``device.observe(obs, policy_action)`` (a no-op for human devices; the simulated operator decides from it), then
   ``device.read()``;
3. executes the device's action if the device is active, else the policy's (clipped to the action space, so the
   stored action is exactly what the env received);
4. applies the operator's marks: ``success`` ends the episode as ``terminated`` with ``info["success"] = True`` and
   the reward set to ``success_reward`` (None: the env's); ``failure`` ends it as ``truncated`` (stopped by hand:
   value targets bootstrap) unless the env terminated it in this same step; ``quit`` and ``discard`` end it as
   ``truncated`` too and set ``info["operator_quit"]`` / ``info["operator_discard"]`` (the caller stops / drops the
   episode). A mark ends the episode *after* this control period's action has run: a gym step always steps. A
   learned reward inside (``operator_mark``) also takes the mark as a label of that frame.

``info`` of every step carries ``is_intervention`` (bool), ``executed_action`` (float32 (A,), equal to the
policy's clipped action when nobody intervened), ``policy_action`` (float32 (A,)), ``operator_mark`` ("success",
"failure" or None), ``operator_quit`` and ``operator_discard`` (bool); ``reset``'s info has all but the two actions.
The step that ends an episode also carries the episode's ``episode_steps``, ``intervention_steps``,
``intervention_rate`` (= intervention_steps / episode_steps) and ``intervention_segments`` (runs of consecutive
intervention steps), plus ``operator_stats`` when the device reports its own (the simulated operator: take-overs by
reason, budget left).

Gripper hand-over: the device's gripper belief is synced to the env's commanded gripper state after every step the
policy executed (and at reset), so when a human takes over, the first read already carries the policy's gripper
state and does not undo its grasp; a gripper button pressed between two reads acts on the synced belief. While the
device is active its belief is authoritative and is not synced. The gripper state comes from, in order: a
``gripper_closed() -> bool | None`` method of the unwrapped env (a real robot env can expose its gripper this way),
the ``gripper_cmd`` entry of the unwrapped env's ``state_layout`` (sim: ``obs["state"]`` value > 0.5 = closed), or
else the executed actions since reset (the env starts each episode open; > 0.5 closes, < -0.5 opens).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from robot_rl.envs.contract import STATE_KEY, assert_finite
from robot_rl.hil.devices import ActionLayout, DeviceError, TeleopDevice, make_device

HIL_MODES = ("none", "sim_operator", "teleop")
CLOSED_THRESHOLD = 0.5  # a gripper state / command value > 0.5 means closed; < -0.5 as a command means open


class InterventionWrapper(gym.Wrapper):
    """Lets ``device`` override the policy's actions and end episodes (module docstring for the full behaviour).

    Args:
        env: a contract env (``robot_rl/envs/contract.py``), usually from :func:`robot_rl.envs.make.make_env`.
        device: a :class:`~robot_rl.hil.devices.TeleopDevice`; a human device or
            :class:`~robot_rl.hil.sim_operator.SimOperator`. The wrapper owns it: :meth:`close` closes it.
        success_reward: reward of the step the operator marks successful (None: keep the env's reward).
    """

    def __init__(self, env: gym.Env, device: TeleopDevice, success_reward: float | None = 1.0):
        super().__init__(env)
        self.device = device
        self.success_reward = None if success_reward is None else float(success_reward)
        self._shape = tuple(env.action_space.shape)
        self._low = np.asarray(env.action_space.low, np.float32)
        self._high = np.asarray(env.action_space.high, np.float32)
        try:
            self._has_gripper = ActionLayout.from_env(env).gripper
        except DeviceError:  # not an end-effector action layout (e.g. a toy or dm_control env): no gripper
            self._has_gripper = False
        layout = getattr(env.unwrapped, "state_layout", None) or []
        offsets, i = {}, 0
        for key, n in layout:
            offsets[key] = i
            i += int(n)
        self._gripper_index: int | None = offsets.get("gripper_cmd")
        self._obs: dict[str, np.ndarray] | None = None
        self._mark_sink = _find_mark_sink(env)  # a learned reward that learns from the operator's marks, if any
        self._cmd_closed = False  # gripper state implied by the executed actions since reset
        self._was_active = False
        self._ep_steps = self._ep_int_steps = self._ep_segments = 0
        self.total_steps = 0  # env steps through this wrapper, all episodes
        self.total_intervention_steps = 0  # of which the device executed

    # ------------------------------------------------------------------------------------------------ gym API
    def reset(self, **kwargs: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Reset the env and the device (its gripper belief follows the env's); per-episode counters restart."""
        obs, info = self.env.reset(**kwargs)
        self.device.reset()
        self._obs = obs
        self._cmd_closed = False
        self._was_active = False
        self._ep_steps = self._ep_int_steps = self._ep_segments = 0
        self._sync_gripper(obs)
        info = dict(info)
        info.update(is_intervention=False, operator_mark=None, operator_quit=False, operator_discard=False)
        return obs, info

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """One control period: the device's action if it is active, else ``action`` (float32 (A,) in [-1, 1])."""
        if self._obs is None:
            raise RuntimeError("InterventionWrapper.step() before reset()")
        policy = self._checked(action, "policy action")
        self.device.observe(self._obs, policy)
        st = self.device.read()
        active = bool(st.active)
        executed = self._checked(st.action, f"{self.device.name} action") if active else policy
        obs, reward, terminated, truncated, info = self.env.step(executed)
        info = dict(info)
        terminated, truncated = bool(terminated), bool(truncated)

        if self._has_gripper:
            g = float(executed[-1])
            if g > CLOSED_THRESHOLD:
                self._cmd_closed = True
            elif g < -CLOSED_THRESHOLD:
                self._cmd_closed = False
        if not active:
            self._sync_gripper(obs)

        mark = "failure" if "failure" in st.events else ("success" if "success" in st.events else None)
        quit_, discard = "quit" in st.events, "discard" in st.events
        if mark is not None and self._mark_sink is not None:
            self._mark_sink.operator_mark(mark)  # the operator's word on this frame becomes a label
        if mark == "success":
            terminated, truncated = True, False
            info["success"] = True
            if self.success_reward is not None:
                reward = self.success_reward
        elif mark == "failure" or quit_ or discard:
            truncated = not terminated

        self._ep_steps += 1
        self.total_steps += 1
        if active:
            self._ep_int_steps += 1
            self.total_intervention_steps += 1
            self._ep_segments += int(not self._was_active)
        self._was_active = active
        self._obs = obs
        info.update(
            is_intervention=active,
            executed_action=executed.copy(),
            policy_action=policy,
            operator_mark=mark,
            operator_quit=quit_,
            operator_discard=discard,
        )
        if terminated or truncated:
            info.update(self.episode_stats())
            stats = getattr(self.device, "episode_stats", None)
            if callable(stats):
                info["operator_stats"] = stats()
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        """Close the device, then the env."""
        try:
            self.device.close()
        finally:
            super().close()

    def state_dict(self) -> dict[str, Any]:
        """The run-long state, for an exact resume from a checkpoint taken between episodes (what the next reset
        does not start over): the step counters and the device's own (:meth:`TeleopDevice.state_dict
        <robot_rl.hil.devices.TeleopDevice.state_dict>`: the simulated operator's generator and budget)."""
        return {
            "total_steps": self.total_steps,
            "total_intervention_steps": self.total_intervention_steps,
            "device": self.device.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.total_steps = int(state["total_steps"])
        self.total_intervention_steps = int(state["total_intervention_steps"])
        self.device.load_state_dict(state["device"])

    # ------------------------------------------------------------------------------------------------ helpers
    def episode_stats(self) -> dict[str, float | int]:
        """The current episode so far: ``episode_steps``, ``intervention_steps``, ``intervention_rate`` (fraction of
        steps the device executed, 0 for an empty episode) and ``intervention_segments``."""
        rate = self._ep_int_steps / self._ep_steps if self._ep_steps else 0.0
        return {
            "episode_steps": self._ep_steps,
            "intervention_steps": self._ep_int_steps,
            "intervention_rate": float(rate),
            "intervention_segments": self._ep_segments,
        }

    def gripper_closed(self, obs: Mapping[str, np.ndarray] | None = None) -> bool | None:
        """The env's commanded gripper state (True closed, False open, None unknown or no gripper): from the
        unwrapped env's ``gripper_closed()``, else ``obs["state"]`` at the ``gripper_cmd`` entry of its
        ``state_layout``, else the executed actions since reset."""
        if not self._has_gripper:
            return None
        fn = getattr(self.env.unwrapped, "gripper_closed", None)
        if callable(fn):
            value = fn()
            return None if value is None else bool(value)
        obs = self._obs if obs is None else obs
        if self._gripper_index is not None and obs is not None and STATE_KEY in obs:
            return bool(obs[STATE_KEY][self._gripper_index] > CLOSED_THRESHOLD)
        return self._cmd_closed

    def _sync_gripper(self, obs: Mapping[str, np.ndarray]) -> None:
        if self._has_gripper:
            self.device.sync_gripper(self.gripper_closed(obs))

    def _checked(self, action: Any, what: str) -> np.ndarray:
        """``action`` as float32 of the action space's shape, finite, clipped to the space's bounds."""
        a = np.asarray(action, dtype=np.float32)
        if a.shape != self._shape:
            a = a.reshape(-1)
            if a.shape != self._shape:
                raise ValueError(f"{what} has shape {np.shape(action)}; the env takes {self._shape}")
        assert_finite(what, a)
        return np.clip(a, self._low, self._high)


def _find_mark_sink(env: Any) -> Any:
    """The first wrapper inside ``env`` with an ``operator_mark(mark)`` method (a learned reward), or None."""
    while env is not None:
        if callable(getattr(type(env), "operator_mark", None)):
            return env
        env = getattr(env, "env", None)
    return None


def make_intervention_env(env: gym.Env, hil: Mapping[str, Any] | None, seed: int | None = None) -> gym.Env:
    """Wrap ``env`` as a ``configs/hil/<name>.yaml`` config says.

    ``hil``: ``name`` none (or ``hil`` None: ``env`` is returned unwrapped), ``sim_operator`` (a
    :class:`~robot_rl.hil.sim_operator.SimOperator` with ``settings`` as its keyword arguments) or ``teleop`` (the
    human device ``device`` from :func:`~robot_rl.hil.devices.make_device` with ``settings``; ``device`` is a name, or
    a ``configs/teleop/<name>.yaml`` mapping, its ``name`` and settings with ``settings`` over them, as ``hil=teleop
    teleop=ros2`` gives); ``success_reward`` as in :class:`InterventionWrapper`. ``seed``: the simulated operator's
    seed when ``settings`` gives none (else 0). Raises ValueError for an unknown mode or setting, DeviceError when the
    device cannot be used here.
    """
    cfg = dict(hil or {})
    name = str(cfg.get("name", "none"))
    if name not in HIL_MODES:
        raise ValueError(f"unknown hil mode {name!r}; valid choices: {', '.join(HIL_MODES)}")
    if name == "none":
        return env
    settings = dict(cfg.get("settings") or {})
    if name == "sim_operator":
        from robot_rl.hil.sim_operator import SimOperator

        if settings.get("seed") is None:
            settings["seed"] = 0 if seed is None else int(seed)
        device: TeleopDevice = SimOperator(env, **settings)
    else:
        spec = cfg.get("device", "spacemouse")
        if isinstance(spec, Mapping):  # a teleop config: name plus that device's settings
            spec = dict(spec)
            settings = {**{k: v for k, v in spec.items() if k != "name"}, **settings}
            spec = spec.get("name", "spacemouse")
        device = make_device(str(spec), env, **settings)
    return InterventionWrapper(env, device, success_reward=cfg.get("success_reward", 1.0))


__all__ = ["HIL_MODES", "InterventionWrapper", "make_intervention_env"]
