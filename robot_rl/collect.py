"""The one collection loop: step an env with an action, keep what was executed, file each episode whole.

Every way this project gathers experience runs through :class:`Collector`: the one-process trainer, the async actor
(and the ROS2 actor node, which is that actor), the trainer's scripted demos and ``robot-rl record``. Each step it
sends an action to the env, keeps the action the env reports as executed (a person's during a take-over) next to
the one proposed, and, given the agent's ``featurize``, puts each observation in buffer form once (cameras through
the frozen trunk), for acting and for the replay buffer alike. An episode ends when the env says so or the caller
cuts it; it is then filed in the store whole, with its source (``intervention`` when a person drove any step, else
the collector's own) and, when cut, its last step marked truncated so its value bootstraps.

What to do with the actions and the episodes is the caller's: the collector knows no agent, buffer or runtime.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.data.episode import EpisodeBuilder, episode_stats
from robot_rl.data.store import EpisodeStore, StoreSchema
from robot_rl.envs.contract import ACTION_SEMANTICS
from robot_rl.envs.make import control_dt, make_env
from robot_rl.utils.signals import signals_deferred

Obs = Mapping[str, np.ndarray]


def make_training_env(cfg: Any) -> Any:
    """The env the policy collects experience in: the task's env, its reward and success from a learned model when
    ``reward`` names one (the evaluation env keeps the task's own success signal), wrapped for human (or simulated)
    interventions when ``hil`` names a device, reward shaping (``reward.shaping``), so it shapes the final reward and
    end flags, an operator's success mark included, and outermost a residual agent's base policy, whose proposal
    (``base_action``) only the agent sees."""
    from omegaconf import OmegaConf

    from robot_rl.agents.residual import wrap_base_policy
    from robot_rl.hil.intervention import make_intervention_env
    from robot_rl.rewards.wrapper import wrap_reward, wrap_shaping

    reward = OmegaConf.to_container(cfg.reward, resolve=True) if cfg.get("reward") else None
    device, gamma = str(cfg.get("device", "auto")), float(cfg.agent.get("discount", 0.99))
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    env = wrap_reward(make_env(cfg.task), reward, device=device, seed=int(cfg.seed), log=log, shape=False)
    env = make_intervention_env(env, cfg.get("hil"), seed=int(cfg.seed))  # marks reach the learned reward inside
    return wrap_base_policy(wrap_shaping(env, reward, device=device, gamma=gamma), cfg)


def episode_seed(*keys: int) -> int:
    """An env reset seed for one episode, mixed from ``keys`` (e.g. the run's seed, an actor's index and the
    episode's count): distinct keys give unrelated start states. Seeds spaced by hand (``seed + episode``) would
    give run ``seed + 1`` the episodes of run ``seed`` one episode later."""
    return int(np.random.SeedSequence([int(k) % 2**63 for k in keys]).generate_state(1, np.uint64)[0] >> 1)


def store_schema(env: Any, action_semantics: str | None = None) -> StoreSchema:
    """The schema of a store holding ``env``'s episodes; the actions mean what the env's outermost wrapper that says
    (``action_semantics``) says, else :data:`ACTION_SEMANTICS`."""
    semantics = action_semantics if action_semantics is not None else getattr(env, "action_semantics", ACTION_SEMANTICS)
    return StoreSchema.from_spaces(env.observation_space, env.action_space, 1.0 / control_dt(env), semantics)


def open_online_store(run_dir: Path, env: Any) -> EpisodeStore:
    """``<run_dir>/online.zarr``, for appending: every episode the policy collects, appended as it ends."""
    path = Path(run_dir) / "online.zarr"
    if path.exists():
        return EpisodeStore.open(path, mode="a", schema=store_schema(env))
    return EpisodeStore.create(path, store_schema(env))


def episode_source(episode: Mapping[str, Any], default: str) -> str:
    """``intervention`` when a person (or the simulated operator) drove any step of ``episode``, else ``default``."""
    return "intervention" if bool(np.any(episode["is_intervention"])) else default


def episode_metrics(
    episode: Mapping[str, Any],
    success: bool,
    reward_stats: Mapping[str, float] | None = None,
    weight_lag_steps: int = 0,
) -> dict[str, float]:
    """What a collected episode logs as ``train/<name>``, in sync and async runs alike: :func:`episode_stats`, the
    policy's age in env steps when the episode ended (0 in a one-process run) and a learned reward's
    ``reward_<stat>``."""
    return {
        **episode_stats(episode, success),
        "weight_lag_steps": float(weight_lag_steps),
        **{f"reward_{k}": float(v) for k, v in (reward_stats or {}).items()},
    }


class Pacer:
    """Keeps a loop at one iteration per ``dt`` seconds (when enabled); counts iterations that overran."""

    def __init__(self, dt: float, enabled: bool = True):
        self.dt, self.enabled, self.late = dt, enabled, 0
        self._next = time.monotonic() + dt

    def restart(self) -> None:
        self._next = time.monotonic() + self.dt

    def wait(self) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now < self._next:
            time.sleep(self._next - now)
            self._next += self.dt
        else:  # overran: do not try to catch up with a burst of fast steps
            self.late += 1
            self._next = now + self.dt


@dataclass
class Step:
    """One control step as the collector kept it (``fobs``/``next_fobs``: buffer form, or the raw observations when
    the collector has no ``featurize``)."""

    obs: Obs
    next_obs: Obs
    fobs: Obs
    next_fobs: Obs
    action: np.ndarray  # executed: the person's during a take-over
    policy_action: np.ndarray  # what was sent to the env
    reward: float
    terminated: bool
    truncated: bool
    is_intervention: bool
    timestamp: float
    info: dict[str, Any]

    @property
    def done(self) -> bool:
        return bool(self.terminated or self.truncated)


@dataclass
class Collected:
    """A finished episode: ``episode`` as the store holds it (raw observations), ``buffer_form`` the same in buffer
    form (when the collector keeps it), ``policy_action`` (T, A) the actions proposed, ``reward_stats`` what a
    learned reward reported at its end (``info["reward_stats"]``)."""

    episode: dict[str, Any]
    success: bool
    source: str
    cut: bool = False
    notes: str = ""
    buffer_form: dict[str, Any] | None = None
    policy_action: np.ndarray | None = None
    reward_stats: dict[str, float] = field(default_factory=dict)
    start_time: float | None = None  # wall clock (s since the epoch) of its start; None: when filed

    @property
    def steps(self) -> int:
        return len(self.episode["action"])


class Collector:
    """Steps ``env`` one action at a time and files each finished episode in ``store`` (if given).

    Args:
        task: the task name filed with each episode.
        source: the source of an episode no person drove (``policy``, ``scripted``, ``teleop``).
        featurize: the agent's ``featurize`` (observation -> buffer form), run once per observation; None: raw.
        keep_buffer_form: also build each episode in buffer form (:attr:`Collected.buffer_form`).
        clock: seconds since the episode began, for timestamps (None: ``control period * step``).
    """

    def __init__(
        self,
        env: Any,
        *,
        task: str,
        source: str = "policy",
        store: EpisodeStore | None = None,
        featurize: Callable[[Obs], Obs] | None = None,
        keep_buffer_form: bool = False,
        clock: Callable[[], float] | None = None,
    ):
        self.env, self.task, self.source, self.store = env, task, source, store
        self.featurize = featurize if featurize is not None else (lambda obs: obs)
        self.keep_buffer_form = keep_buffer_form and featurize is not None
        self.clock = clock
        self.dt = control_dt(env)
        self.obs: Obs | None = None
        self.fobs: Obs | None = None
        self._raw, self._buf = EpisodeBuilder(), EpisodeBuilder()
        self._last_info: dict[str, Any] = {}

    def __len__(self) -> int:
        """Steps of the running episode."""
        return len(self._raw)

    def reset(self, seed: int | None = None) -> Obs:
        """Start an episode (the running one, if any, is dropped: file it first with :meth:`finish`)."""
        self.discard()
        self.obs, _ = self.env.reset(seed=seed)
        self.fobs = self.featurize(self.obs)
        return self.obs

    def step(self, action: np.ndarray) -> Step:
        """Send ``action`` to the env and keep the transition; an env error propagates with nothing kept."""
        if self.obs is None:
            raise RuntimeError("Collector.step before reset")
        stamp = self.clock() if self.clock is not None else self.dt * len(self._raw)
        next_obs, reward, terminated, truncated, info = self.env.step(action)
        proposed = np.asarray(info.get("policy_action", action), np.float32)
        executed = np.asarray(info.get("executed_action", action), np.float32)
        human = bool(info.get("is_intervention", False))
        next_fobs = self.featurize(next_obs)
        self._raw.add(self.obs, executed, reward, terminated, truncated, next_obs, human, stamp, policy_action=proposed)
        if self.keep_buffer_form:
            self._buf.add(self.fobs, executed, reward, terminated, truncated, next_fobs, human, stamp)
        step = Step(
            obs=self.obs,
            next_obs=next_obs,
            fobs=self.fobs,
            next_fobs=next_fobs,
            action=executed,
            policy_action=proposed,
            reward=float(reward),
            terminated=bool(terminated),
            truncated=bool(truncated),
            is_intervention=human,
            timestamp=stamp,
            info=info,
        )
        self.obs, self.fobs, self._last_info = next_obs, next_fobs, info
        return step

    def take(self, success: bool, cut: bool = False, notes: str = "") -> Collected:
        """End the running episode without filing it (``cut``: stopped early, its last step marked truncated);
        :meth:`file` it, edited or not, or drop it."""
        episode = self._raw.build(cut=cut)
        out = Collected(
            episode=episode,
            success=bool(success),
            source=episode_source(episode, self.source),
            cut=cut,
            notes=notes,
            buffer_form=self._buf.build(cut=cut) if self.keep_buffer_form else None,
            policy_action=self._raw.policy_actions(),
            reward_stats=dict(self._last_info.get("reward_stats") or {}),
        )
        self.discard()
        return out

    def file(self, c: Collected) -> None:
        """Append ``c`` to the store (if the collector has one)."""
        if self.store is not None:
            self.store.append_episode(
                **c.episode, success=c.success, source=c.source, task=self.task, notes=c.notes, start_time=c.start_time
            )

    def finish(self, success: bool | None = None, cut: bool = False, notes: str = "") -> Collected:
        """End the running episode and file it, both or neither (signals wait until both are done). ``success``:
        the env's last ``info["success"]`` when None."""
        if success is None:
            success = bool(self._last_info.get("success", False))
        with signals_deferred():
            c = self.take(success, cut, notes)
            self.file(c)
        return c

    def discard(self) -> None:
        """Drop the running episode's steps."""
        self._raw.clear()
        self._buf.clear()
        self._last_info = {}

    def close(self, notes: str) -> Collected | None:
        """File the running episode, if any, as a cut one (stopped mid-episode: its last step bootstraps)."""
        return self.finish(False, cut=True, notes=notes) if len(self) else None
