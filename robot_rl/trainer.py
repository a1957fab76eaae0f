"""The one training loop every task uses: demos -> online RL with evaluation, checkpoints, logs and curves.

A run directory holds ``config.yaml`` (resolved), ``demos.zarr`` (the scripted demos, when collected),
``online.zarr`` (every episode the policy collected, appended as each ends), ``checkpoints/latest`` and
``checkpoints/best`` (safetensors + JSON), ``eval.jsonl``, ``curve.png`` and tensorboard scalars under ``tb/``.

Checkpoints hold weights, optimizer moments, counters and random streams (the simulated operator's stream and budget
too); the replay buffers are rebuilt from the stores on ``resume=RUN_DIR``, intervention segments into the demo buffer
as in training. Checkpoints are written at episode boundaries, so a resumed run continues exactly as
if it had never stopped. Episodes that ended after the last checkpoint are not lost: they are in ``online.zarr``, and
a resumed run takes them into its buffer and step count (it is then no longer bit-identical to an unbroken run).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from robot_rl.agents.sac import SAC, SACConfig
from robot_rl.data.episode import (EpisodeBuilder, episode_stats, intervention_segments, penalize_takeovers,
                                   trigger_transitions)
from robot_rl.data.replay import ReplayBuffer, mixed_batches
from robot_rl.data.store import EpisodeStore, StoreSchema
from robot_rl.envs.contract import ACTION_SEMANTICS
from robot_rl.envs.make import control_dt, expert_action, find_wrapper, make_env
from robot_rl.evaluate import evaluate
from robot_rl.hil.intervention import InterventionWrapper, make_intervention_env
from robot_rl.rewards.refine import record_refinements
from robot_rl.rewards.shaping import PotentialShaping
from robot_rl.rewards.wrapper import RewardWrapper
from robot_rl.utils.checkpoint import load_state, save_state
from robot_rl.utils.specs import check_spec, env_spec




REWARD_COUNTS = ("declared_episodes", "hacked_episodes", "vetoed_steps")


def set_threads(threads: int) -> None:
    """Give this process ``threads`` torch threads (0: one per core). See design.md on oversubscription."""
    torch.set_num_threads(threads if threads > 0 else max(1, os.cpu_count() or 1))


def make_training_env(cfg: DictConfig) -> Any:
    """The env the policy collects experience in: the task's env, its reward and success from a learned model when
    ``reward`` names one (the evaluation env keeps the task's own success signal), wrapped for human (or simulated)
    interventions when ``hil`` names a device."""
    from robot_rl.rewards import wrap_reward

    reward = OmegaConf.to_container(cfg.reward, resolve=True) if cfg.get("reward") else None
    env = wrap_reward(make_env(cfg.task), reward, device=str(cfg.get("device", "auto")), seed=int(cfg.seed),
                      log=lambda msg: print(msg, file=sys.stderr, flush=True),
                      gamma=float(cfg.agent.get("discount", 0.99)))  # learned reward and shaping, if any
    return make_intervention_env(env, cfg.get("hil"), seed=int(cfg.seed))  # the operator's marks come last


def open_online_store(run_dir: Path, env: Any) -> EpisodeStore:
    """``<run_dir>/online.zarr``, for appending: every episode the policy collects, appended as it ends."""
    path = Path(run_dir) / "online.zarr"
    schema = StoreSchema.from_spaces(env.observation_space, env.action_space, 1.0 / control_dt(env), ACTION_SEMANTICS)
    if path.exists():
        return EpisodeStore.open(path, mode="a", schema=schema)
    return EpisodeStore.create(path, schema)


class Trainer:
    """Builds env, agent and buffers from a resolved config and runs :meth:`train`."""

    def __init__(self, cfg: DictConfig, run_dir: Path):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        set_threads(int(cfg.threads))
        torch.manual_seed(int(cfg.seed))
        self.rng = np.random.default_rng(int(cfg.seed))
        self.env = make_training_env(cfg)
        self.eval_env = make_env(cfg.task)
        self.env.reset(seed=int(cfg.seed))  # seeds the env's own stream; episodes continue from it
        self.agent = SAC(self.env.observation_space, self.env.action_space,
                         SACConfig.from_dict(OmegaConf.to_container(cfg.agent, resolve=True)))
        adim = self.agent.action_dim
        space = self.agent.buffer_observation_space  # cameras as cached trunk maps when the encoder caches them
        self.online = ReplayBuffer(space, adim, int(cfg.buffer_capacity), self.agent.device)
        self.demo = ReplayBuffer(space, adim, int(cfg.buffer_capacity), self.agent.device)
        self.step, self.episode, self.demo_episodes, self.prefill_episodes = 0, 0, 0, 0
        self.intervention_steps = 0  # of the collected steps, how many a person (or the simulated operator) drove
        self.reward_counts = dict.fromkeys(REWARD_COUNTS, 0)  # a learned reward's declarations (reward_stats)
        self.reward_wrapper = find_wrapper(self.env, RewardWrapper)
        self.history: list[dict[str, float]] = []
        self.best_success = -1.0
        self._next_eval = int(cfg.eval.every)
        self._refinements_logged = 0

    # ---------------------------------------------------------------- demos
    def _store_schema(self, action_semantics: str) -> StoreSchema:
        return StoreSchema.from_spaces(self.env.observation_space, self.env.action_space, 1.0 / control_dt(self.env),
                                       action_semantics)

    def collect_demos(self) -> dict[str, float]:
        """Roll out the task's scripted expert for ``demos.episodes`` successful episodes into the demo buffer,
        and keep them in ``<run_dir>/demos.zarr`` (reusable with ``demos.path=``)."""
        n = int(self.cfg.demos.episodes)
        kept = tried = 0
        env = make_env(self.cfg.task)
        dt = control_dt(env)
        seed = int(self.cfg.seed) + 1_000_000  # disjoint from training and evaluation seeds
        store = EpisodeStore.create(self.run_dir / "demos.zarr", self._store_schema(ACTION_SEMANTICS), overwrite=True)
        try:
            while kept < n and tried < 3 * n + 10:
                obs, _ = env.reset(seed=seed + tried)
                tried += 1
                ep, success = EpisodeBuilder(), False
                while True:
                    action = np.asarray(expert_action(env), dtype=np.float32)
                    next_obs, reward, terminated, truncated, info = env.step(action)
                    ep.add(obs, action, reward, terminated, truncated, next_obs, timestamp=dt * len(ep))
                    success = success or bool(info["success"])
                    obs = next_obs
                    if terminated or truncated:
                        break
                if success or not self.cfg.demos.only_successful:
                    episode = ep.build()
                    self.demo.add_episode(self.agent.featurize_episode(self._as_demo(episode)))
                    store.append_episode(**episode, success=success, source="scripted", task=str(self.cfg.task.name))
                    kept += 1
        finally:
            store.close()
            env.close()
        self.demo_episodes = kept
        if kept < n:
            raise RuntimeError(f"the scripted expert succeeded in only {kept} of {tried} episodes; expected {n}")
        return {"demo_episodes": kept, "demo_transitions": len(self.demo), "expert_success_rate": kept / tried}

    def load_demos(self, path: str | Path) -> dict[str, float]:
        """Fill the demo buffer from an episode store (all episodes, or only successful ones if
        ``demos.only_successful``); refuses a store whose observations or actions differ from the env's."""
        only = bool(self.cfg.demos.only_successful)
        self.demo_episodes, _ = self.fill_from_store(path, demos=True, only_successful=only)
        if not self.demo_episodes:
            raise ValueError(f"demo store {path} holds no usable episode (only_successful={only})")
        return {"demo_episodes": self.demo_episodes, "demo_transitions": len(self.demo)}

    def prefill(self, paths: list[str | Path]) -> dict[str, float]:
        """Fill the online buffer with every episode of earlier stores (e.g. ``runs/<run>/online.zarr``) before
        training: experience from earlier runs, replayed like the run's own (their intervention segments go to the
        demo buffer too)."""
        for path in paths:
            self.prefill_episodes += self.fill_from_store(path)[0]
        return {"prefill_episodes": self.prefill_episodes, "prefill_transitions": len(self.online)}

    def fill_from_store(self, path: str | Path, start: int = 0, stop: int | None = None, demos: bool = False,
                        only_successful: bool = False, count: bool = False) -> tuple[int, int]:
        """Add the episodes [start, stop) of the store at ``path`` to the replay buffers; returns how many episodes
        and steps were added. Every buffer is (re)built from stores this way: demos, prefill, resume, and the async
        learner's sync with the actor's store.

        ``demos``: as demonstrations, each whole into the demo buffer (only the successful ones with
        ``only_successful``). Else as collected experience, exactly as training put it there live
        (:meth:`add_collected`): into the online buffer, its intervention segments into the demo buffer too; with
        ``count``, also counted as this run's (:meth:`count_collected`). Refuses a store whose observations or actions
        differ from the env's."""
        episodes = steps = 0
        with EpisodeStore.open(path) as store:
            problems = self._store_schema(store.schema.action_semantics).mismatches(store.schema)
            if problems:
                raise ValueError(f"store {path} does not match task {self.cfg.task.name}: " + "; ".join(problems))
            for ep in store.iter_episodes(start, stop):
                if not demos:
                    self.add_collected(ep)
                    if count:
                        self.count_collected(ep)
                elif ep["metadata"]["success"] or not only_successful:
                    self.demo.add_episode(self.agent.featurize_episode(self._as_demo(ep)))
                else:
                    continue
                episodes, steps = episodes + 1, steps + len(ep["action"])
        return episodes, steps

    def _as_demo(self, episode: Mapping[str, Any]) -> Mapping[str, Any]:
        """A demonstration as the demo buffer takes it: with the reward shaping the training env adds (if any), so
        both buffers carry one reward. (Its success reward stays the recorded one: a demonstration ends on a success
        the expert or the operator confirmed.)"""
        shaping = find_wrapper(self.env, PotentialShaping)
        return shaping.shape_episode(episode) if shaping is not None else episode

    def add_collected(self, episode: Mapping[str, Any], policy_action: np.ndarray | None = None) -> None:
        """An episode the policy collected into the replay buffers; the one path for live training (sync and async)
        and for rebuilds from a store, with the ``corrections`` config deciding what the take-overs teach:

        * all of it into the online buffer, the policy step before each take-over with ``takeover_reward`` added
          (:func:`~robot_rl.data.episode.penalize_takeovers`; 0: unchanged);
        * with ``demo_buffer``, its runs of intervention steps (:func:`~robot_rl.data.episode.intervention_segments`)
          into the demo buffer too, so corrections are replayed like demonstrations (HIL-SERL);
        * with ``trigger_reward`` (not null) and ``policy_action`` (T, A), the action the policy proposed where each
          take-over began, as a terminal transition with that reward
          (:func:`~robot_rl.data.episode.trigger_transitions`). The store keeps executed actions only, so episodes
          rebuilt from a store (resume, a learner catching up) go without these.

        (The agent's ``bc_weight`` adds behaviour cloning on the intervention rows of each batch.)"""
        corr = self.cfg.get("corrections") or {}
        penalty = float(corr.get("takeover_reward", 0.0))
        episode = self.agent.featurize_episode(episode)  # a no-op for an episode already in buffer form
        self.online.add_episode(penalize_takeovers(episode, penalty) if penalty else episode)
        if corr.get("trigger_reward") is not None and policy_action is not None:
            for transition in trigger_transitions(episode, policy_action, float(corr["trigger_reward"])):
                self.online.add_episode(transition)
        if corr.get("demo_buffer", True):
            for segment in intervention_segments(episode):
                self.demo.add_episode(segment)

    def count_collected(self, episode: Mapping[str, Any], steps: bool = True,
                        reward_stats: Mapping[str, float] | None = None) -> None:
        """Count an episode the run collected: episodes, intervention steps, (``steps``; the sync loop counts them
        as they run) env steps and, with a learned reward, its ``reward_stats`` (episodes in which it declared
        success, falsely by the env's own success, and the judge's vetoes). Sync and async runs account through here
        alike."""
        self.episode += 1
        self.intervention_steps += int(np.count_nonzero(episode["is_intervention"]))
        if steps:
            self.step += len(episode["action"])
        if reward_stats:
            self.reward_counts["declared_episodes"] += int(reward_stats.get("declared_steps", 0) > 0)
            self.reward_counts["hacked_episodes"] += int(reward_stats.get("hacked_episode", 0) > 0)
            self.reward_counts["vetoed_steps"] += int(reward_stats.get("vetoed_steps", 0))

    def _open_online_store(self) -> EpisodeStore:
        return open_online_store(self.run_dir, self.env)

    def train(self, progress: bool = True) -> dict[str, Any]:
        """Run to the first episode end at or after ``total_steps`` env steps; return the final evaluation."""
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        cfg = self.cfg
        total = int(cfg.total_steps)
        writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step if self.step else None)
        batches = mixed_batches(self.demo, self.online, self.agent.cfg.batch_size, float(cfg.demo_fraction),
                                self.rng)
        bar = tqdm(total=total, initial=self.step, disable=not progress, unit="step", dynamic_ncols=True,
                   desc=f"{cfg.task.name}/{cfg.agent.name}", mininterval=1.0 if sys.stderr.isatty() else 30.0)
        store = self._open_online_store()
        dt = control_dt(self.env)
        episode, featurized = EpisodeBuilder(), EpisodeBuilder()  # as stored; in buffer form (cached camera maps)
        obs, _ = self.env.reset()
        fobs = self.agent.featurize(obs)  # buffer form: the frozen trunk runs once per frame, here
        ep_len, t0, steps0 = 0, time.perf_counter(), self.step
        last_metrics: dict[str, float] = {}
        try:
            while True:  # runs to the first episode end at or after total_steps, so checkpoints stay exact
                if self.step < int(cfg.random_steps):
                    action = self.rng.uniform(-1, 1, self.agent.action_dim).astype(np.float32)
                else:
                    action = self.agent.act(fobs)
                next_obs, reward, terminated, truncated, info = self.env.step(action)
                proposed = info.get("policy_action", action)
                action = np.asarray(info.get("executed_action", action), np.float32)  # the human's, if intervening
                human = bool(info.get("is_intervention", False))
                next_fobs = self.agent.featurize(next_obs)
                episode.add(obs, action, reward, terminated, truncated, next_obs, human, timestamp=dt * ep_len)
                featurized.add(fobs, action, reward, terminated, truncated, next_fobs, human, timestamp=dt * ep_len,
                               policy_action=proposed)
                obs, fobs, ep_len = next_obs, next_fobs, ep_len + 1
                self.step += 1
                if self.step >= int(cfg.learning_starts):
                    if self.agent.num_updates == 0 and not self.agent.encoder.fitted:  # int first: no GPU sync
                        self.agent.encoder.fit(self._all_states())
                    last_metrics = self.agent.update(batches)
                bar.update(1)
                if self.step % 50 == 0:
                    rate = (self.step - steps0) / max(time.perf_counter() - t0, 1e-9)
                    last = self.history[-1]["success_rate"] if self.history else float("nan")
                    bar.set_postfix_str(f"eval success {last:.0%}, {rate:.1f} steps/s", refresh=False)
                if not (terminated or truncated):
                    continue
                done = episode.build()
                self.record_episode(store, done, bool(info["success"]), featurized.build(),
                                    featurized.policy_actions(), info.get("reward_stats"))
                episode.clear()
                featurized.clear()
                for k, v in (info.get("reward_stats") or {}).items():
                    writer.add_scalar(f"train/reward_{k}", v, self.step)
                self._log_refinements(writer)
                for k, v in episode_stats(done, bool(info["success"])).items():
                    writer.add_scalar(f"train/{k}", v, self.step)
                for k, v in last_metrics.items():
                    writer.add_scalar(f"learner/{k}", v, self.step)
                if self.step >= self._next_eval or self.step >= total:
                    self._evaluate_and_checkpoint(writer)
                if self.step >= total or self._target_reached():
                    break
                obs, _ = self.env.reset()
                fobs = self.agent.featurize(obs)
                ep_len = 0
        except KeyboardInterrupt:
            bar.write(f"interrupted at step {self.step}; the last checkpoint is {self.run_dir / 'checkpoints/latest'}")
            raise
        finally:
            if len(episode):  # stopped mid-episode (Ctrl+C, an error): keep its transitions as a truncated episode
                store.append_episode(**episode.build(cut=True), success=False, source="policy",
                                     task=str(cfg.task.name), notes="cut short: training stopped mid-episode")
            store.close()
            bar.close()
            writer.close()
            self.plot_curve()
        return {"final": self.history[-1] if self.history else {}, "run_dir": str(self.run_dir)}

    def record_episode(self, store: EpisodeStore, episode: dict[str, Any], success: bool,
                       buffer_form: dict[str, Any] | None = None, policy_action: np.ndarray | None = None,
                       reward_stats: Mapping[str, float] | None = None) -> None:
        """A finished online episode: appended to the store (first, so a crash right after loses nothing), added to
        the buffers (:meth:`add_collected`, as the async learner does; ``buffer_form``: the same episode already
        featurized; ``policy_action``: the actions the policy proposed) and counted (its steps were counted as they
        ran)."""
        human = bool(np.any(episode["is_intervention"]))
        store.append_episode(**episode, success=success, source="intervention" if human else "policy",
                             task=str(self.cfg.task.name))
        self.add_collected(episode if buffer_form is None else buffer_form, policy_action)
        self.count_collected(episode, steps=False, reward_stats=reward_stats)

    def _log_refinements(self, writer) -> None:
        """The learned reward's retrainings since the last call (``reward.refine``): see
        :func:`~robot_rl.rewards.refine.record_refinements`."""
        refiner = self.reward_wrapper.refiner if self.reward_wrapper is not None else None
        self._refinements_logged = record_refinements(refiner, self.run_dir, self._refinements_logged, writer)

    def _target_reached(self) -> bool:
        """True once an evaluation reached ``eval.stop_at_success`` (null: never stop early)."""
        target = self.cfg.eval.get("stop_at_success")
        return target is not None and bool(self.history) and self.history[-1]["success_rate"] >= float(target)

    def _all_states(self) -> np.ndarray:
        """Every state observation collected so far (demos and online), for fitting the input normaliser."""
        parts = [b.obs["state"][: len(b)] for b in (self.demo, self.online) if len(b)]
        return np.concatenate(parts)

    def _evaluate_and_checkpoint(self, writer) -> None:
        cfg = self.cfg
        start = time.perf_counter()
        result = evaluate(lambda o: self.agent.act(o, deterministic=True), self.eval_env,
                          int(cfg.eval.episodes), seed=int(cfg.seed) + 100_000)
        result.update(step=self.step, episode=self.episode, updates=self.agent.num_updates,
                      eval_seconds=time.perf_counter() - start, intervention_steps=self.intervention_steps,
                      intervention_share=self.intervention_steps / max(self.step, 1))
        if self.reward_wrapper is not None:  # what the learned reward declared over the run (train episodes)
            result.update({f"reward_{k}": v for k, v in self.reward_counts.items()},
                          reward_threshold=self.reward_wrapper.model.threshold)
        self.history.append(result)
        for k in ("success_rate", "return_mean", "length_mean", "cycle_time_s"):
            if not math.isnan(result[k]):
                writer.add_scalar(f"eval/{k}", result[k], self.step)
        with open(self.run_dir / "eval.jsonl", "a") as f:
            f.write(json.dumps(result) + "\n")
        while self._next_eval <= self.step:
            self._next_eval += int(cfg.eval.every)
        self.save_checkpoint(self.run_dir / "checkpoints" / "latest")
        if result["success_rate"] > self.best_success:
            self.best_success = result["success_rate"]
            self.save_checkpoint(self.run_dir / "checkpoints" / "best", with_trainer_state=False)
        self.plot_curve()

    # ----------------------------------------------------------- checkpoints
    def save_checkpoint(self, path: Path, with_trainer_state: bool = True) -> None:
        """Atomically replace ``path`` (a directory) with agent + trainer state."""
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_state(self.agent.state_dict(), tmp / "agent")
        (tmp / "config.yaml").write_text(OmegaConf.to_yaml(self.cfg, resolve=True))
        (tmp / "spec.json").write_text(json.dumps(env_spec(self.env), indent=1))
        if with_trainer_state:
            trainer_state = {
                "step": self.step, "episode": self.episode, "demo_episodes": self.demo_episodes,
                "prefill_episodes": self.prefill_episodes, "intervention_steps": self.intervention_steps,
                "reward_counts": self.reward_counts,
                "best_success": self.best_success, "next_eval": self._next_eval, "history": self.history,
                "rng": self.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                "env_rng": self.env.unwrapped.np_random.bit_generator.state,
                "hil": self.env.state_dict() if isinstance(self.env, InterventionWrapper) else None,
            }
            save_state(trainer_state, tmp / "trainer")
        refiner = self.reward_wrapper.refiner if self.reward_wrapper is not None else None
        if refiner is not None and refiner.history:  # the retrained classifier: what this run's rewards came from
            self.reward_wrapper.model.save(tmp / "reward_model")
        old = path.with_name(path.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)

    def start_fresh(self) -> dict[str, Any]:
        """What a new run does before training, as its config says: the agent from ``init_from``, demos from
        ``demos.path`` or the scripted expert, the online buffer from ``prefill`` stores. Returns what it did."""
        cfg, done = self.cfg, {}
        if cfg.get("init_from"):
            done.update(self.init_from(cfg.init_from))
        if cfg.demos.get("path"):
            done.update(self.load_demos(cfg.demos.path))
        elif int(cfg.demos.episodes) > 0:
            done.update(self.collect_demos())
        if cfg.get("prefill"):
            done.update(self.prefill(list(cfg.prefill)))
        return done

    def init_from(self, path: Path) -> dict[str, Any]:
        """Start from another run's agent (e.g. a sim-trained policy fine-tuned on the robot with the same config):
        its weights, optimizer moments, temperature and normaliser; this run's buffers, counters and streams are
        its own. Refuses a checkpoint made for a different observation/action spec."""
        path = Path(path)
        if not (path / "agent.safetensors").exists():
            path = path / "checkpoints" / ("best" if (path / "checkpoints/best/agent.safetensors").exists() else "latest")
        check_spec(json.loads((path / "spec.json").read_text()), env_spec(self.env), str(path))
        self.agent.load_state_dict(load_state(path / "agent", self.agent.device))
        return {"init_from": str(path), "its_updates": self.agent.num_updates}

    def load_checkpoint(self, path: Path) -> None:
        """Restore everything :meth:`save_checkpoint` wrote; refuses a checkpoint made for another env spec."""
        path = Path(path)
        check_spec(json.loads((path / "spec.json").read_text()), env_spec(self.env), str(path))
        self.agent.load_state_dict(load_state(path / "agent", self.agent.device))
        if not (path / "trainer.json").exists():
            raise ValueError(f"{path} holds weights only (no trainer state); resume from checkpoints/latest")
        st = load_state(path / "trainer")
        self.step, self.episode, self.demo_episodes = int(st["step"]), int(st["episode"]), int(st["demo_episodes"])
        self.prefill_episodes = int(st["prefill_episodes"])
        self.intervention_steps = int(st.get("intervention_steps", 0))
        self.reward_counts.update({k: int(v) for k, v in (st.get("reward_counts") or {}).items()})
        if (path / "reward_model").exists() and self.reward_wrapper is not None:
            self.reward_wrapper.load_weights(path / "reward_model")
        self.best_success, self._next_eval, self.history = float(st["best_success"]), int(st["next_eval"]), st["history"]
        self.rng.bit_generator.state = st["rng"]
        torch.set_rng_state(st["torch_rng"])
        self.env.unwrapped.np_random.bit_generator.state = st["env_rng"]
        if st.get("hil") and isinstance(self.env, InterventionWrapper):  # the simulated operator's stream and budget
            self.env.load_state_dict(st["hil"])
        self._restore_buffers()

    def _restore_buffers(self) -> None:
        """Refill the demo and online buffers from the run's stores, in the order they were first filled (collected
        episodes' intervention segments into the demo buffer too, as in training)."""
        demos = self.cfg.demos.get("path") or (self.run_dir / "demos.zarr" if self.demo_episodes else None)
        if demos:
            n, _ = self.fill_from_store(demos, demos=True, only_successful=bool(self.cfg.demos.only_successful))
            if n != self.demo_episodes:
                raise ValueError(f"demo store {demos} yields {n} episodes; the checkpoint was trained with "
                                 f"{self.demo_episodes}. Restore the original store to resume")
        if self.prefill_episodes:
            paths = list(self.cfg.get("prefill") or [])
            if sum(self.fill_from_store(p)[0] for p in paths) != self.prefill_episodes:
                raise ValueError(f"the prefill stores {paths} no longer hold the {self.prefill_episodes} episodes "
                                 "this run started from; restore them to resume")
        online = self.run_dir / "online.zarr"
        if not self.episode:
            return
        if not online.exists():
            raise ValueError(f"{online} is missing; it holds the {self.episode} episodes this run collected, "
                             "which a resumed run needs in its replay buffer")
        with EpisodeStore.open(online) as store:
            stored, steps = len(store), store.num_steps
            interventions = int(np.count_nonzero(store.step_field("is_intervention")))
        if stored < self.episode:
            raise ValueError(f"{online} holds {stored} episodes, fewer than the {self.episode} the checkpoint "
                             "counted; it was truncated or replaced. Resume from a matching store")
        self.fill_from_store(online)
        if stored > self.episode:  # collected after the last checkpoint: kept, and counted as experience
            extra = steps - self.step
            print(f"recovered {stored - self.episode} episode(s) ({extra} steps) collected after the last checkpoint")
            self.episode, self.step, self.intervention_steps = stored, steps, interventions

    def plot_curve(self) -> Path | None:
        """Write ``curve.png``: eval success rate and cycle time (seconds to success) against env steps."""
        if not self.history:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = [h["step"] for h in self.history]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
        ax1.plot(steps, [100 * h["success_rate"] for h in self.history], marker="o")
        ax1.set(xlabel="env steps", ylabel="eval success (%)", ylim=(-3, 103), title=f"{self.cfg.task.name}: success")
        ax1.axhline(90, color="grey", lw=0.8, ls="--")
        if any(h.get("intervention_steps") for h in self.history):  # corrections: the operator's share per interval
            prev = [(0, 0)] + [(h["step"], h.get("intervention_steps", 0)) for h in self.history[:-1]]
            share = [100 * (h.get("intervention_steps", 0) - n0) / max(h["step"] - s0, 1)
                     for h, (s0, n0) in zip(self.history, prev)]
            ax1.plot(steps, share, ls="--", color="tab:red", label="steps the operator drove (%)")
            ax1.legend(fontsize=8)
        ax2.plot(steps, [h["cycle_time_s"] for h in self.history], marker="o", color="tab:orange")
        ax2.set(xlabel="env steps", ylabel="seconds", title="cycle time (mean time to success)")
        for ax in (ax1, ax2):
            ax.grid(alpha=0.3)
        fig.suptitle(f"{self.cfg.agent.name}, seed {self.cfg.seed}")
        fig.tight_layout()
        out = self.run_dir / "curve.png"
        fig.savefig(out, dpi=100)
        plt.close(fig)
        return out
