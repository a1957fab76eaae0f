"""A simulated operator: the task's scripted expert watching the policy and taking over when it stalls or drifts.

So human-in-the-loop training can be tested and benchmarked in sim without a person. :class:`SimOperator` is a
:class:`~robot_rl.hil.devices.TeleopDevice` (device name ``sim_operator``); :class:`~robot_rl.hil.intervention.
InterventionWrapper` calls ``observe(obs, policy_action)`` and then ``read()`` once per control step, exactly as it
polls a human's device. Settings and defaults: ``configs/hil/sim_operator.yaml``.

What it watches (read from the unwrapped sim env, no privileged access beyond what the scripted expert uses):
``ee_pos`` (m, base frame), ``expert_action()`` (noise-free), ``action_scale`` (m per step at |a| = 1) and, with a
gripper, the ``gripper_cmd`` entry of ``state_layout`` in the observation. In the sim tasks the action frame's axes
are the base axes (reset pose, gripper down), so the expert's translation dims times ``action_scale`` are the
displacement it commands, in m.

Only steps the policy executed enter its history; the history restarts at each take-over and hand-back, so after a
hand-back the policy has a full window before a stall or drift can be judged again. Triggers, checked in this order
on each policy step:

* ``unsafe`` (``unsafe_height`` m, None: off): the proposed action would take the EE below ``unsafe_height`` above
  the table (z = 0) while moving down, and the expert's next target stays above it. Judged before the action runs,
  so the take-over replaces that action.
* ``drift`` (``drift_steps``, ``drift_distance`` m, ``corridor`` m): over the last ``drift_steps`` policy steps the EE
  moved away from where the expert heads (sum of displacements along the expert's unit direction at each step
  < -``drift_distance``), or (``corridor`` not None) left the corridor around its path (sum of displacements across
  it > ``corridor`` and more than along it).
* ``stall`` (``stall_steps``, ``stall_distance`` m, ``expert_motion_min`` m): over the last ``stall_steps`` policy
  steps the EE progressed less than ``stall_distance`` in the expert's direction (sum over the steps of each step's
  displacement along the expert's unit direction at that step) while the expert would have moved at least
  ``expert_motion_min`` (sum of its commanded displacements): the policy makes no headway where the expert would.
* ``gripper`` (with a gripper): for ``stall_steps`` policy steps in a row the expert wants the gripper closed (open)
  while it is open (closed), and the policy does not command that.

On a trigger, with probability ``probability`` (seeded) and budget left, the expert drives for ``takeover_steps``
steps (Gaussian ``noise`` std on its motion dims, action units, from the operator's own seeded generator), then hands
back. Budget: at most ``floor(max_fraction * episode_steps)`` intervention steps per episode (``episode_steps``: the
env's time limit unless given) and ``budget_steps`` per run (None: unlimited); a take-over ends early when either runs
out. With ``fail_when_exhausted``, a trigger that finds no budget left marks the episode ``failure`` (the wrapper
truncates it): the policy is hopeless and the rest of the episode would teach little. The operator never marks
success: that comes from the env.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

import numpy as np

from robot_rl.envs.contract import STATE_KEY
from robot_rl.hil.devices import ActionLayout, DeviceError, DeviceState, TeleopDevice

TRIGGERS = ("unsafe", "drift", "stall", "gripper")
_EPS = 1e-6  # m: expert commands shorter than this have no direction


class SimOperator(TeleopDevice):
    """The scripted expert as an intervening operator (module docstring for the rules; all lengths in m).

    Args:
        env: the sim env (any wrapper of it); its unwrapped env has ``expert_action``, ``ee_pos``, ``action_scale``.
        stall_steps: policy steps in the stall window (and gripper-disagreement run); None: no stall/gripper trigger.
        stall_distance: EE progress along the expert's heading over the window below which the policy stalls (m).
        expert_motion_min: the expert's commanded displacement over the window must reach this (m) for a stall.
        drift_steps: policy steps in the drift window; None: no drift trigger.
        drift_distance: net motion away from the expert's heading over the window that counts as drift (m).
        corridor: motion across the expert's heading over the window that counts as leaving its path (m); None: the
            path is not judged, only motion away from the expert's heading is drift.
        unsafe_height: EE height above the table below which a downward policy action is unsafe (m); None: off.
        takeover_steps: steps the expert drives once it takes over (>= 1).
        noise: std of Gaussian noise on the expert's motion dims while it drives (action units, >= 0).
        max_fraction: cap on intervention steps per episode as a fraction of ``episode_steps``, in [0, 1].
        budget_steps: cap on intervention steps over the operator's lifetime (the run); None: unlimited.
        probability: chance that a trigger leads to a take-over, in [0, 1] (declined: the window restarts).
        episode_steps: the episode length ``max_fraction`` refers to; None: the env's ``max_episode_steps`` (no
            per-episode cap when the env has none).
        fail_when_exhausted: mark ``failure`` when a trigger finds no budget left.
        seed: seed of the operator's generator (take-over coin flips and expert noise).
    """

    name = "sim_operator"
    is_human = False

    def __init__(
        self,
        env: Any,
        *,
        stall_steps: int | None = 3,
        stall_distance: float = 0.01,
        expert_motion_min: float = 0.02,
        drift_steps: int | None = 3,
        drift_distance: float = 0.01,
        corridor: float | None = 0.03,
        unsafe_height: float | None = 0.03,
        takeover_steps: int = 5,
        noise: float = 0.0,
        max_fraction: float = 0.5,
        budget_steps: int | None = None,
        probability: float = 1.0,
        episode_steps: int | None = None,
        fail_when_exhausted: bool = False,
        seed: int = 0,
    ):
        base = env.unwrapped
        for attr in ("expert_action", "ee_pos"):
            if not hasattr(base, attr):
                raise DeviceError(
                    f"sim_operator: {type(base).__name__} has no {attr!r}; the simulated operator "
                    "needs a sim task with a scripted expert (reach, pick_cube, peg_insert)"
                )
        super().__init__(ActionLayout.from_env(env))

        def count(name: str, v: Any, optional: bool) -> int | None:
            if v is None and optional:
                return None
            if v is None or int(v) < 1 or int(v) != v:
                raise ValueError(f"sim_operator: {name}={v!r} must be an integer >= 1" + (" or null" * optional))
            return int(v)

        def nonneg(name: str, v: Any) -> float:
            if v is None or not np.isfinite(float(v)) or float(v) < 0:
                raise ValueError(f"sim_operator: {name}={v!r} must be a finite number >= 0")
            return float(v)

        self.stall_steps = count("stall_steps", stall_steps, True)
        self.drift_steps = count("drift_steps", drift_steps, True)
        self.takeover_steps = count("takeover_steps", takeover_steps, False)
        self.stall_distance = nonneg("stall_distance", stall_distance)
        self.expert_motion_min = nonneg("expert_motion_min", expert_motion_min)
        self.drift_distance = nonneg("drift_distance", drift_distance)
        self.corridor = None if corridor is None else nonneg("corridor", corridor)
        self.unsafe_height = None if unsafe_height is None else nonneg("unsafe_height", unsafe_height)
        self.noise = nonneg("noise", noise)
        self.max_fraction = nonneg("max_fraction", max_fraction)
        self.probability = nonneg("probability", probability)
        if self.max_fraction > 1 or self.probability > 1:
            raise ValueError(
                f"sim_operator: max_fraction={max_fraction} and probability={probability} must lie in [0, 1]"
            )
        self.budget_steps = None if budget_steps is None else int(nonneg("budget_steps", budget_steps))
        limit = episode_steps if episode_steps is not None else getattr(base, "max_episode_steps", None)
        self.episode_steps = count("episode_steps", limit, True)
        self.episode_cap = (
            None if self.episode_steps is None else int(np.floor(self.max_fraction * self.episode_steps + 1e-9))
        )
        self.fail_when_exhausted = bool(fail_when_exhausted)
        self.seed = int(seed)
        self._env = env
        self._scale = float(getattr(base, "action_scale", 1.0))
        offsets, i = {}, 0
        for key, n in getattr(base, "state_layout", None) or []:
            offsets[key] = i
            i += int(n)
        self._gripper_index = offsets.get("gripper_cmd") if self.layout.gripper else None
        self._rng = np.random.default_rng(self.seed)
        self._hist: deque[tuple[np.ndarray, np.ndarray]] = deque(
            maxlen=max(self.stall_steps or 1, self.drift_steps or 1)
        )
        self.run_intervention_steps = 0
        self.run_takeovers: Counter[str] = Counter()
        self._new_episode()

    # -------------------------------------------------------------------------------------------- device API
    def reset(self) -> None:
        """New episode: per-episode counters, the history and any take-over in progress start over."""
        super().reset()
        self._new_episode()

    def observe(self, obs: Mapping[str, np.ndarray] | None, proposed_action: np.ndarray | None) -> None:
        """Watch the state before this step and the policy's proposed action (float32 (A,)); decide whether the
        expert drives this step (:meth:`read` returns the decision)."""
        base = self._env.unwrapped
        ee = np.asarray(base.ee_pos, np.float64).copy()
        expert = np.asarray(base.expert_action(), np.float32).reshape(-1)
        cmd = expert[:3].astype(np.float64) * self._scale  # m the expert would move the EE target
        if self._pending is not None:  # the previous step was the policy's: its EE displacement is now known
            ee0, cmd0 = self._pending
            self._hist.append((ee - ee0, cmd0))
            self._pending = None
        self._decision = self._decide(obs, ee, expert, cmd, proposed_action)

    def read(self) -> DeviceState:
        """The decision for this step: the expert's action with ``active=True`` while it drives, else inactive (with
        the noise-free expert action, which the wrapper ignores); ``events`` holds ``failure`` when configured."""
        if self._decision is None:  # polled without observe(): judge from the env state alone
            self.observe(None, None)
        st, self._decision = self._decision, None
        return st

    def episode_stats(self) -> dict[str, Any]:
        """This episode's take-overs by trigger (``takeovers_<trigger>``), intervention steps, and the budget left
        (steps; -1: unlimited)."""
        left = self._budget_left()
        out: dict[str, Any] = {f"takeovers_{k}": int(self._ep_takeovers[k]) for k in TRIGGERS}
        out.update(
            intervention_steps=self._ep_int_steps,
            budget_left=-1 if left == np.inf else int(left),
            run_intervention_steps=self.run_intervention_steps,
        )
        return out

    def state_dict(self) -> dict[str, Any]:
        """What decides its future take-overs beyond its settings, for an exact resume between episodes: the
        generator's state (coin flips, noise), the run's intervention steps (budget used) and take-overs by trigger.
        The per-episode state is left out: checkpoints fall between episodes and :meth:`reset` starts it over."""
        return {
            "rng": self._rng.bit_generator.state,
            "run_intervention_steps": self.run_intervention_steps,
            "run_takeovers": {k: int(v) for k, v in self.run_takeovers.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self._rng.bit_generator.state = state["rng"]
        self.run_intervention_steps = int(state["run_intervention_steps"])
        self.run_takeovers = Counter({k: int(v) for k, v in state["run_takeovers"].items()})

    @property
    def taking_over(self) -> bool:
        """True while a take-over is in progress: the expert drives the next step too."""
        return self._takeover_left > 0

    @property
    def last_trigger(self) -> str | None:
        """The trigger of the most recent take-over this episode (one of :data:`TRIGGERS`), None if none yet."""
        return self._last_trigger

    @property
    def help(self) -> str:
        return "simulated operator: the scripted expert takes over when the policy stalls or drifts"

    # ----------------------------------------------------------------------------------------------- internals
    def _new_episode(self) -> None:
        self._hist.clear()
        self._pending: tuple[np.ndarray, np.ndarray] | None = None
        self._decision: DeviceState | None = None
        self._takeover_left = 0
        self._grip_mismatch = 0
        self._ep_int_steps = 0
        self._ep_takeovers: Counter[str] = Counter()
        self._last_trigger: str | None = None

    def _budget_left(self) -> float:
        left = np.inf
        if self.episode_cap is not None:
            left = min(left, self.episode_cap - self._ep_int_steps)
        if self.budget_steps is not None:
            left = min(left, self.budget_steps - self.run_intervention_steps)
        return max(left, 0)

    def _decide(
        self,
        obs: Mapping[str, np.ndarray] | None,
        ee: np.ndarray,
        expert: np.ndarray,
        cmd: np.ndarray,
        proposed: np.ndarray | None,
    ) -> DeviceState:
        if self._takeover_left > 0:
            if self._budget_left() > 0:
                self._takeover_left -= 1
                return self._drive(expert)
            self._takeover_left = 0  # budget ran out mid-take-over: hand back
            self._restart_watch()
        proposed = None if proposed is None else np.asarray(proposed, np.float64).reshape(-1)
        trigger = self._trigger(obs, ee, expert, cmd, proposed)
        events: frozenset[str] = frozenset()
        if trigger is not None:
            self._restart_watch()
            have_budget = self._budget_left() > 0
            if have_budget and (self.probability >= 1.0 or self._rng.random() < self.probability):
                self._takeover_left = self.takeover_steps - 1
                self._ep_takeovers[trigger] += 1
                self.run_takeovers[trigger] += 1
                self._last_trigger = trigger
                return self._drive(expert)
            if not have_budget and self.fail_when_exhausted:
                events = frozenset({"failure"})
        self._pending = (ee, cmd)
        return DeviceState(expert, False, events)

    def _drive(self, expert: np.ndarray) -> DeviceState:
        action = expert.astype(np.float64)
        if self.noise > 0:
            n_motion = len(action) - int(self.layout.gripper)
            action[:n_motion] += self._rng.normal(0.0, self.noise, n_motion)
        self._ep_int_steps += 1
        self.run_intervention_steps += 1
        if self._takeover_left == 0:  # last step of this take-over: the policy watches afresh from the next
            self._restart_watch()
        return DeviceState(np.clip(action, -1.0, 1.0).astype(np.float32), True, frozenset())

    def _restart_watch(self) -> None:
        self._hist.clear()
        self._pending = None
        self._grip_mismatch = 0

    def _trigger(
        self,
        obs: Mapping[str, np.ndarray] | None,
        ee: np.ndarray,
        expert: np.ndarray,
        cmd: np.ndarray,
        proposed: np.ndarray | None,
    ) -> str | None:
        """The first trigger that fires on this policy step (see the module docstring), or None."""
        if self.unsafe_height is not None and proposed is not None:
            z_policy = ee[2] + proposed[2] * self._scale
            if proposed[2] < 0 and z_policy < self.unsafe_height <= ee[2] + cmd[2]:
                return "unsafe"
        hist = list(self._hist)
        if self.drift_steps is not None and len(hist) >= self.drift_steps:
            along, across = _progress(hist[-self.drift_steps :])
            off_path = self.corridor is not None and across > self.corridor and across > along
            if along < -self.drift_distance or off_path:
                return "drift"
        if self.stall_steps is not None and len(hist) >= self.stall_steps:
            along, _ = _progress(hist[-self.stall_steps :])
            wanted = float(sum(np.linalg.norm(c) for _, c in hist[-self.stall_steps :]))
            if along < self.stall_distance and wanted >= self.expert_motion_min:
                return "stall"
        if self.stall_steps is not None and self._gripper_disagrees(obs, expert, proposed):
            return "gripper"
        return None

    def _gripper_disagrees(
        self, obs: Mapping[str, np.ndarray] | None, expert: np.ndarray, proposed: np.ndarray | None
    ) -> bool:
        """Count policy steps in a row where the expert wants the gripper toggled and the policy does not command
        it; True once the run reaches ``stall_steps``."""
        if self._gripper_index is None or obs is None or STATE_KEY not in obs or proposed is None:
            return False
        closed = bool(obs[STATE_KEY][self._gripper_index] > 0.5)
        want, pol = float(expert[-1]), float(proposed[-1])
        mismatch = (want > 0.5 and not closed and pol <= 0.5) or (want < -0.5 and closed and pol >= -0.5)
        self._grip_mismatch = self._grip_mismatch + 1 if mismatch else 0
        return self._grip_mismatch >= self.stall_steps


def _progress(window: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """Sums over ``(EE displacement, expert command)`` pairs (m, (3,) each) of the displacement along the expert's
    unit direction and of its length across it (m); an expert command shorter than 1 um has no direction (all
    motion then counts as across)."""
    along = across = 0.0
    for d, c in window:
        norm = float(np.linalg.norm(c))
        u = c / norm if norm > _EPS else np.zeros(3)
        a = float(d @ u)
        along += a
        across += float(np.linalg.norm(d - a * u))
    return along, across


__all__ = ["SimOperator", "TRIGGERS"]
