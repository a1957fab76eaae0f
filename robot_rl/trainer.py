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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from robot_rl.agents.residual import BASE_KEY, BaseActionWrapper, wrap_base_policy
from robot_rl.agents.sac import SAC, SACConfig
from robot_rl.collect import Collected, Collector, episode_metrics, make_training_env, open_online_store, store_schema
from robot_rl.data.episode import intervention_segments, penalize_takeovers, trigger_transitions
from robot_rl.data.replay import ReplayBuffer, mixed_batches
from robot_rl.data.store import EpisodeStore
from robot_rl.envs.make import expert_action, find_wrapper, make_env
from robot_rl.evaluate import PendingEvaluation, eval_summary, evaluate_claim, plot_history
from robot_rl.hil.intervention import InterventionWrapper
from robot_rl.rewards.refine import record_refinements
from robot_rl.rewards.shaping import PotentialShaping
from robot_rl.rewards.wrapper import RewardWrapper
from robot_rl.utils.checkpoint import checkpoint_path, find_checkpoint, load_state, replace_dir, save_state
from robot_rl.utils.config import config_group
from robot_rl.utils.perf import set_threads
from robot_rl.utils.specs import check_spec, env_spec

REWARD_COUNTS = ("declared_episodes", "hacked_episodes", "vetoed_steps")
LEARNER_LOG_EVERY = 100  # updates between ``learner/*`` scalars (updates 1, 101, 201, ...)


def store_list(path: str | Path | Sequence[str | Path]) -> list[str | Path]:
    """``demos.path``: one store or a list of them."""
    return [path] if isinstance(path, (str, os.PathLike)) else list(path)


def check_prior(cfg: DictConfig, optimistic: bool) -> None:
    """``prior=`` (reward-free stores) and ``agent.optimistic_prior`` go together, and the prior data take the demo
    buffer alone; raise naming the fix otherwise."""
    if cfg.get("prior") and not optimistic:
        raise ValueError("prior= stores carry no rewards: learn from them with agent=explore (agent.optimistic_prior)")
    if optimistic and not cfg.get("prior"):
        raise ValueError("agent.optimistic_prior relabels the demo buffer's rows: give the prior stores, prior=[...]")
    if optimistic and (int(cfg.demos.episodes) > 0 or cfg.demos.get("path")):
        raise ValueError("prior data take the demo buffer's half of each batch: set demos.episodes=0 and no demos.path")


def eval_task(cfg: DictConfig) -> Any:
    """The task config evaluations run in: the run's own, or ``eval.task`` (a task of the same spec, e.g.
    ``pick_cube_gap``, the stand-in for the real robot when training in ``pick_cube``)."""
    name = cfg.eval.get("task")
    if not name:
        return cfg.task
    other = cfg.copy()
    other.task = config_group("task", str(name))  # its ${obs} resolves against this run's config
    return other.task


class Trainer:
    """Builds env, agent and buffers from a resolved config and runs :meth:`train`."""

    def __init__(self, cfg: DictConfig, run_dir: Path):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        set_threads(int(cfg.threads))
        torch.manual_seed(int(cfg.seed))
        self.rng = np.random.default_rng(int(cfg.seed))
        self.env = make_training_env(cfg)
        self.eval_env = wrap_base_policy(make_env(eval_task(cfg)), cfg)
        if cfg.eval.get("task"):  # another task: it must take the same observations and actions
            check_spec(env_spec(self.eval_env), env_spec(self.env), f"(eval.task={cfg.eval.task})")
        self.env.reset(seed=int(cfg.seed))  # seeds the env's own stream; episodes continue from it
        self.agent = SAC(
            self.env.observation_space,
            self.env.action_space,
            SACConfig.from_dict(OmegaConf.to_container(cfg.agent, resolve=True)),
        )
        adim = self.agent.action_dim
        space = self.agent.buffer_observation_space  # cameras as cached trunk maps when the encoder caches them
        check_prior(cfg, self.agent.cfg.optimistic_prior)
        ac = self.agent.cfg  # Cal-QL's lower bound (mc_discount) and n-step returns
        buf = dict(mc_discount=self.agent.mc_discount, n_step=ac.n_step, discount=ac.discount)
        self.online = ReplayBuffer(space, adim, int(cfg.buffer_capacity), self.agent.device, **buf)
        self.demo = ReplayBuffer(space, adim, int(cfg.buffer_capacity), self.agent.device, **buf)
        self.step, self.episode, self.demo_episodes, self.prefill_episodes = 0, 0, 0, 0
        self.intervention_steps = 0  # of the collected steps, how many a person (or the simulated operator) drove
        self.reward_counts = dict.fromkeys(REWARD_COUNTS, 0)  # a learned reward's declarations (reward_stats)
        self.reward_wrapper = find_wrapper(self.env, RewardWrapper)
        self.history: list[dict[str, float]] = []
        self.best_success = -1.0
        self._next_eval = int(cfg.eval.every)
        self._eval_agent: SAC | None = None  # a copy of the policy for background evaluations (start_evaluation)
        self.evaluating: PendingEvaluation | None = None  # the evaluation under way (start_evaluation_if_due)
        self._refinements_logged = 0
        self.restored: dict[Path, int] = {}  # on resume: the episodes taken from each online store

    # ---------------------------------------------------------------- demos
    def collect_demos(self) -> dict[str, float]:
        """Roll out the task's scripted expert for ``demos.episodes`` successful episodes into the demo buffer,
        and keep them in ``<run_dir>/demos.zarr`` (reusable with ``demos.path=``)."""
        n = int(self.cfg.demos.episodes)
        kept = tried = 0
        env = wrap_base_policy(make_env(self.cfg.task), self.cfg)  # a residual agent's demos carry the base's actions
        seed = int(self.cfg.seed) + 1_000_000  # disjoint from training and evaluation seeds
        store = EpisodeStore.create(self.run_dir / "demos.zarr", store_schema(self.env), overwrite=True)
        collector = Collector(env, task=str(self.cfg.task.name), source="scripted", store=store)
        try:
            while kept < n and tried < 3 * n + 10:
                collector.reset(seed=seed + tried)
                tried += 1
                success = False
                while True:
                    step = collector.step(expert_action(env))
                    success = success or bool(step.info["success"])
                    if step.done:
                        break
                c = collector.take(success)
                if success or not self.cfg.demos.only_successful:
                    self.demo.add_episode(self.agent.featurize_episode(self._as_demo(c.episode)))
                    collector.file(c)
                    kept += 1
        finally:
            store.close()
            env.close()
        self.demo_episodes = kept
        if kept < n:
            raise RuntimeError(f"the scripted expert succeeded in only {kept} of {tried} episodes; expected {n}")
        return {"demo_episodes": kept, "demo_transitions": len(self.demo), "expert_success_rate": kept / tried}

    def load_demos(self, path: str | Path | Sequence[str | Path]) -> dict[str, float]:
        """Fill the demo buffer from one episode store or several (all episodes, or only successful ones if
        ``demos.only_successful``); refuses a store whose observations or actions differ from the env's."""
        only = bool(self.cfg.demos.only_successful)
        self.demo_episodes = self._fill_demos(path, only)
        if not self.demo_episodes:
            raise ValueError(f"demo store(s) {path} hold no usable episode (only_successful={only})")
        return {"demo_episodes": self.demo_episodes, "demo_transitions": len(self.demo)}

    def load_prior(self, paths: Sequence[str | Path]) -> dict[str, float]:
        """Reward-free prior data (ExPLORe) into the demo buffer, every episode: the agent gives their rows an
        optimistic reward (``agent.optimistic_prior``), so they take the demonstrations' half of each batch."""
        self.demo_episodes = self._fill_demos(paths, only_successful=False)
        if not self.demo_episodes:
            raise ValueError(f"prior store(s) {list(store_list(paths))} hold no episode")
        return {"prior_episodes": self.demo_episodes, "prior_transitions": len(self.demo)}

    def prefill(self, paths: list[str | Path]) -> dict[str, float]:
        """Fill the online buffer with every episode of earlier stores (e.g. ``runs/<run>/online.zarr``) before
        training: experience from earlier runs, replayed like the run's own (their intervention segments go to the
        demo buffer too)."""
        for path in paths:
            self.prefill_episodes += self.fill_from_store(path)[0]
        return {"prefill_episodes": self.prefill_episodes, "prefill_transitions": len(self.online)}

    def fill_from_store(
        self,
        path: str | Path,
        start: int = 0,
        stop: int | None = None,
        demos: bool = False,
        only_successful: bool = False,
        count: bool = False,
    ) -> tuple[int, int]:
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
            propose = self.check_store(store, path)
            for ep in store.iter_episodes(start, stop):
                if propose:
                    ep = self.env.propose_episode(ep)
                if not demos:
                    self.add_collected(ep)
                    if count:
                        self.count_collected(ep)
                elif ep["metadata"]["success"] or not only_successful:
                    self.add_demo(ep)
                else:
                    continue
                episodes, steps = episodes + 1, steps + len(ep["action"])
        return episodes, steps

    def check_store(self, store: EpisodeStore, path: str | Path) -> bool:
        """Refuse a store whose observations or actions differ from the env's, naming every difference. Returns
        whether its episodes lack only the base policy's proposals of a residual run (a store recorded without the
        base, e.g. teleop demos): :meth:`BaseActionWrapper.propose_episode` then fills them in."""
        semantics = store.schema.action_semantics
        problems = store_schema(self.env, semantics).mismatches(store.schema)
        propose = (
            bool(problems)
            and isinstance(self.env, BaseActionWrapper)
            and BASE_KEY not in store.schema.obs
            and not store_schema(self.env.env, semantics).mismatches(store.schema)
        )
        if problems and not propose:
            raise ValueError(f"store {path} does not match task {self.cfg.task.name}: " + "; ".join(problems))
        return propose

    def add_demo(self, episode: Mapping[str, Any]) -> None:
        """One episode, whole, into the demo buffer, as a demonstration (:meth:`_as_demo`)."""
        self.demo.add_episode(self.agent.featurize_episode(self._as_demo(episode)))

    def _fill_demos(self, paths: str | Path | Sequence[str | Path], only_successful: bool) -> int:
        """The episodes of one store or several into the demo buffer; returns how many."""
        return sum(self.fill_from_store(p, demos=True, only_successful=only_successful)[0] for p in store_list(paths))

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
        if corr.get("demo_buffer", False):
            for segment in intervention_segments(episode):
                self.demo.add_episode(segment)

    def count_collected(
        self, episode: Mapping[str, Any], steps: bool = True, reward_stats: Mapping[str, float] | None = None
    ) -> None:
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

    def take_episode(self, c: Collected, steps_counted: bool = False) -> None:
        """A finished episode the run collected (filed in the store already) into the buffers
        (:meth:`add_collected`, in buffer form when the collector kept it) and the counts (:meth:`count_collected`;
        ``steps_counted``: its env steps were counted as they ran)."""
        self.add_collected(c.buffer_form if c.buffer_form is not None else c.episode, c.policy_action)
        self.count_collected(c.episode, steps=not steps_counted, reward_stats=c.reward_stats)

    def log_episode(self, writer, metrics: Mapping[str, float]) -> None:
        """An episode's :func:`episode_metrics` as ``train/<name>`` at the current step."""
        for k, v in metrics.items():
            writer.add_scalar(f"train/{k}", float(v), self.step)

    def batches(self):
        """The endless stream of training batches: ``demo_fraction`` of each from the demo buffer (RLPD's symmetric
        sampling), the rest from the online buffer."""
        return mixed_batches(self.demo, self.online, self.agent.batch_size, float(self.cfg.demo_fraction), self.rng)

    def learn(self, batches, writer=None) -> dict[str, float] | None:
        """One agent update (the input normaliser fitted on everything collected first, once, and before the first
        update ``demo_warmup_updates`` on demonstration batches alone), its metrics logged
        as ``learner/<name>`` every :data:`LEARNER_LOG_EVERY` updates. None while the buffers are empty (no demos,
        and the first episode has not ended)."""
        if not len(self.online) and not len(self.demo):
            return None
        if self.agent.num_updates == 0:  # int first: no GPU sync
            if not self.agent.normalizer_fitted:
                self.agent.fit_normalizer(self._all_states())
            warm = int(self.cfg.get("demo_warmup_updates", 0) or 0)
            if warm and len(self.demo):  # the critic and actor first learn the demonstrations alone
                demo_only = mixed_batches(self.demo, self.demo, self.agent.batch_size, 1.0, self.rng)
                for _ in range(warm):
                    self.agent.update(demo_only)
        metrics = self.agent.update(batches)
        if writer is not None and self.agent.num_updates % LEARNER_LOG_EVERY == 1:  # from the first update on
            for k, v in metrics.items():
                writer.add_scalar(f"learner/{k}", v, self.step)
        return metrics

    @property
    def eval_due(self) -> bool:
        """Whether the step count reached the next evaluation (every ``eval.every`` env steps)."""
        return self.step >= self._next_eval

    def train(self, progress: bool = True) -> dict[str, Any]:
        """Run to the first episode end at or after ``total_steps`` env steps; return the final evaluation."""
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        cfg = self.cfg
        total = int(cfg.total_steps)
        writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step if self.step else None)
        batches = self.batches()
        bar = tqdm(
            total=total,
            initial=self.step,
            disable=not progress,
            unit="step",
            dynamic_ncols=True,
            desc=f"{cfg.task.name}/{cfg.agent.name}",
            mininterval=1.0 if sys.stderr.isatty() else 30.0,
        )
        store = open_online_store(self.run_dir, self.env)
        collector = Collector(
            self.env, task=str(cfg.task.name), store=store, featurize=self.agent.featurize, keep_buffer_form=True
        )  # the frozen trunk runs once per frame, there
        collector.reset()
        t0, steps0 = time.perf_counter(), self.step
        try:
            while True:  # runs to the first episode end at or after total_steps, so checkpoints stay exact
                if self.step < int(cfg.random_steps):
                    action = self.rng.uniform(-1, 1, self.agent.action_dim).astype(np.float32)
                else:
                    action = self.agent.act(collector.fobs)
                step = collector.step(action)
                self.step += 1
                if self.step >= int(cfg.learning_starts):
                    self.learn(batches, writer)
                bar.update(1)
                if self.step % 50 == 0:
                    rate = (self.step - steps0) / max(time.perf_counter() - t0, 1e-9)
                    last = eval_summary(self.history[-1]) if self.history else "no eval yet"
                    bar.set_postfix_str(f"{last}, {rate:.1f} steps/s", refresh=False)
                if not step.done:
                    continue
                c = collector.finish()
                self.take_episode(c, steps_counted=True)
                self.log_episode(writer, episode_metrics(c.episode, c.success, c.reward_stats))
                self._log_refinements(writer)
                if self.eval_due or self.step >= total:
                    self.evaluate_and_checkpoint(writer)
                if self.step >= total or self.target_reached():
                    break
                collector.reset()
        except KeyboardInterrupt:
            bar.write(f"interrupted at step {self.step}; the last checkpoint is {self.run_dir / 'checkpoints/latest'}")
            raise
        finally:  # stopped mid-episode (Ctrl+C, an error): its transitions are kept as a cut episode
            collector.close("cut short: training stopped mid-episode")
            store.close()
            bar.close()
            writer.close()
            self.plot_curve()
        return {"final": self.history[-1] if self.history else {}, "run_dir": str(self.run_dir)}

    def _log_refinements(self, writer) -> None:
        """The learned reward's retrainings since the last call (``reward.refine``): see
        :func:`~robot_rl.rewards.refine.record_refinements`."""
        refiner = self.reward_wrapper.refiner if self.reward_wrapper is not None else None
        self._refinements_logged = record_refinements(refiner, self.run_dir, self._refinements_logged, writer)

    def target_reached(self) -> bool:
        """True once an evaluation reached ``eval.stop_at_success`` (null: never stop early), confirmed on
        ``eval.confirm`` x more episodes when that is on."""
        target = self.cfg.eval.get("stop_at_success")
        if target is None or not self.history:
            return False
        last = self.history[-1]
        return last.get("score", last["success_rate"]) >= float(target)

    def _all_states(self) -> np.ndarray:
        """Every state observation collected so far (demos and online), for fitting the input normaliser."""
        parts = [b.obs["state"][: len(b)] for b in (self.demo, self.online) if len(b)]
        return np.concatenate(parts)

    def evaluate_and_checkpoint(self, writer) -> dict[str, Any]:
        """Evaluate the deterministic policy now (``eval.episodes`` on the task's own success, a claim confirmed on
        more), append the result to ``eval.jsonl`` and tensorboard, and write ``checkpoints/latest`` (and ``best``
        when it is the best yet); return the result."""
        return self.finish_evaluation(self.start_evaluation(), writer)

    def start_evaluation(self, background: bool = False) -> PendingEvaluation:
        """Begin an evaluation of the policy as it is now, to be recorded by :meth:`finish_evaluation`. With
        ``background`` a copy of the policy is evaluated in a thread while the caller goes on updating and
        collecting (the async learner: a confirmed evaluation takes seconds, in which the actor keeps collecting);
        the agent as evaluated waits in ``checkpoints/candidate``, so ``best`` is the policy that was evaluated."""
        progress = {
            "step": self.step,
            "episode": self.episode,
            "updates": self.agent.num_updates,
            "intervention_steps": self.intervention_steps,
            "intervention_share": self.intervention_steps / max(self.step, 1),
        }
        if self.reward_wrapper is not None:  # what the learned reward declared over the run (train episodes)
            progress.update(
                {f"reward_{k}": v for k, v in self.reward_counts.items()},
                reward_threshold=self.reward_wrapper.model.threshold,
            )
        while self._next_eval <= self.step:
            self._next_eval += int(self.cfg.eval.every)
        if not background:
            policy = lambda o: self.agent.act(o, deterministic=True)  # noqa: E731
            return PendingEvaluation(lambda: self._evaluate_policy(policy), progress)
        if self._eval_agent is None:  # acts for the evaluations; the learner's agent goes on updating meanwhile
            self._eval_agent = SAC(self.env.observation_space, self.env.action_space, self.agent.cfg)
        self._eval_agent.load_policy_weights(self.agent.policy_weights())  # copied here, before the thread starts
        candidate = self.run_dir / "checkpoints" / "candidate"
        self.save_checkpoint(candidate, with_trainer_state=False)
        agent = self._eval_agent
        policy = lambda o: agent.act(o, deterministic=True)  # noqa: E731
        return PendingEvaluation(lambda: self._evaluate_policy(policy), progress, candidate, background=True)

    def start_evaluation_if_due(self, background: bool) -> None:
        """For loops that go on while an evaluation runs (the async learner, the fleet): begin one when it is due
        and none is under way; :meth:`poll_evaluation` records it."""
        if self.eval_due and self.evaluating is None:
            self.evaluating = self.start_evaluation(background)

    def poll_evaluation(self, writer, wait: bool = False) -> dict[str, Any] | None:
        """Record the evaluation under way once it has finished (``wait``: wait for it) and return its result;
        None while there is none to record."""
        pending = self.evaluating
        if pending is None or not (wait or pending.done()):
            return None
        self.evaluating = None
        return self.finish_evaluation(pending, writer)

    def _evaluate_policy(self, policy) -> dict[str, Any]:
        """``eval.episodes`` episodes of ``policy``, a claim of a new best or of ``eval.stop_at_success`` confirmed
        on ``eval.confirm`` x more (:func:`~robot_rl.evaluate.evaluate_claim`)."""
        ev = self.cfg.eval
        stop_at = None if ev.get("stop_at_success") is None else float(ev.stop_at_success)
        episodes = int(ev.episodes)
        confirm = int(ev.get("confirm", 0) or 0) * episodes
        confirm_from = float(ev.get("confirm_from", 0.5))
        return evaluate_claim(
            policy, self.eval_env, episodes, int(self.cfg.seed), confirm, self.best_success, stop_at, confirm_from
        )

    def finish_evaluation(self, pending: PendingEvaluation, writer) -> dict[str, Any]:
        """Wait for ``pending`` and record it: ``eval.jsonl``, tensorboard, ``checkpoints/latest`` (now) and
        ``best`` (the evaluated policy) when its score is the best yet; return the result."""
        result = {**pending.result(), **pending.progress, "eval_seconds": time.perf_counter() - pending.started}
        self.history.append(result)
        for k in ("success_rate", "return_mean", "length_mean", "cycle_time_s", "confirm_success_rate"):
            if k in result and not math.isnan(result[k]):
                writer.add_scalar(f"eval/{k}", result[k], result["step"])
        with open(self.run_dir / "eval.jsonl", "a") as f:
            f.write(json.dumps(result) + "\n")
        self.save_checkpoint(self.run_dir / "checkpoints" / "latest")
        # A tie goes to the newer policy: 100 episodes cannot rank policies near 100%, more training can (README
        # "Default training": a 6k best kept on ties scored 97.1% over 1,000 episodes, that run's 20k latest 99.6%).
        best = self.run_dir / "checkpoints" / "best"
        if result["score"] >= self.best_success:
            self.best_success = result["score"]
            if pending.candidate is not None:
                replace_dir(pending.candidate, best)
            else:
                self.save_checkpoint(best, with_trainer_state=False)
        elif pending.candidate is not None:
            shutil.rmtree(pending.candidate, ignore_errors=True)
        self.plot_curve()
        return result

    # ----------------------------------------------------------- checkpoints
    def save_checkpoint(self, path: Path, with_trainer_state: bool = True) -> None:
        """Replace ``path`` (a directory) with agent + trainer state, whole or not at all (:func:`replace_dir`)."""
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_state(self.agent.state_dict(), tmp / "agent")
        (tmp / "config.yaml").write_text(OmegaConf.to_yaml(self.cfg, resolve=True))
        (tmp / "spec.json").write_text(json.dumps(env_spec(self.env), indent=1))
        if with_trainer_state:
            trainer_state = {
                "step": self.step,
                "episode": self.episode,
                "demo_episodes": self.demo_episodes,
                "prefill_episodes": self.prefill_episodes,
                "intervention_steps": self.intervention_steps,
                "reward_counts": self.reward_counts,
                "best_success": self.best_success,
                "next_eval": self._next_eval,
                "history": self.history,
                "rng": self.rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "env_rng": self.env.unwrapped.np_random.bit_generator.state,
                "hil": hil.state_dict() if (hil := find_wrapper(self.env, InterventionWrapper)) else None,
            }
            save_state(trainer_state, tmp / "trainer")
        refiner = self.reward_wrapper.refiner if self.reward_wrapper is not None else None
        if refiner is not None and refiner.history:  # the retrained classifier: what this run's rewards came from
            self.reward_wrapper.model.save(tmp / "reward_model")
        replace_dir(tmp, path)

    def start_fresh(self) -> dict[str, Any]:
        """What a new run does before training, as its config says: the agent from ``init_from``, demos from
        ``demos.path`` or the scripted expert, the online buffer from ``prefill`` stores. Returns what it did."""
        cfg, done = self.cfg, {}
        if cfg.get("init_from"):
            done.update(self.init_from(cfg.init_from))
        if cfg.get("prior"):
            done.update(self.load_prior(cfg.prior))
        elif cfg.demos.get("path"):
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
        path = find_checkpoint(path, prefer="best")
        check_spec(json.loads((path / "spec.json").read_text()), env_spec(self.env), str(path))
        self.agent.load_state_dict(load_state(path / "agent", self.agent.device))
        return {"init_from": str(path), "its_updates": self.agent.num_updates}

    def load_checkpoint(self, path: Path) -> None:
        """Restore everything :meth:`save_checkpoint` wrote; refuses a checkpoint made for another env spec."""
        path = checkpoint_path(path)
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
        self.best_success, self._next_eval, self.history = (
            float(st["best_success"]),
            int(st["next_eval"]),
            st["history"],
        )
        self.rng.bit_generator.state = st["rng"]
        torch.set_rng_state(st["torch_rng"])
        self.env.unwrapped.np_random.bit_generator.state = st["env_rng"]
        hil = find_wrapper(self.env, InterventionWrapper)
        if st.get("hil") and hil is not None:  # the simulated operator's stream and budget
            hil.load_state_dict(st["hil"])
        self._restore_buffers()

    def _restore_buffers(self) -> None:
        """Refill the demo and online buffers from the run's stores, in the order they were first filled (collected
        episodes' intervention segments into the demo buffer too, as in training)."""
        prior = self.cfg.get("prior")
        demos = prior or self.cfg.demos.get("path") or (self.run_dir / "demos.zarr" if self.demo_episodes else None)
        if demos:
            only = bool(self.cfg.demos.only_successful) and not prior
            n = self._fill_demos(demos, only)
            if n != self.demo_episodes:
                raise ValueError(
                    f"demo store {demos} yields {n} episodes; the checkpoint was trained with "
                    f"{self.demo_episodes}. Restore the original store to resume"
                )
        if self.prefill_episodes:
            paths = list(self.cfg.get("prefill") or [])
            if sum(self.fill_from_store(p)[0] for p in paths) != self.prefill_episodes:
                raise ValueError(
                    f"the prefill stores {paths} no longer hold the {self.prefill_episodes} episodes "
                    "this run started from; restore them to resume"
                )
        if not self.episode:
            return
        paths = self.online_stores()
        if not paths:
            raise ValueError(
                f"{self.run_dir}: online.zarr is missing; it holds the {self.episode} episodes this run collected, "
                "which a resumed run needs in its replay buffer"
            )
        stored = steps = interventions = 0
        lengths = []  # read once: an actor of a live fleet may file more while this runs; those come later
        for path in paths:
            with EpisodeStore.open(path) as store:
                lengths.append(len(store))
                stored, steps = stored + len(store), steps + store.num_steps
                interventions += int(np.count_nonzero(store.step_field("is_intervention")))
        if stored < self.episode:
            raise ValueError(
                f"{', '.join(map(str, paths))} hold {stored} episodes, fewer than the {self.episode} the checkpoint "
                "counted; a store was truncated or replaced. Resume from matching stores"
            )
        for path, n in zip(paths, lengths):
            self.fill_from_store(path, 0, n)
        self.restored = dict(zip(paths, lengths))
        if stored > self.episode:  # collected after the last checkpoint: kept, and counted as experience
            extra = steps - self.step
            print(f"recovered {stored - self.episode} episode(s) ({extra} steps) collected after the last checkpoint")
            self.episode, self.step, self.intervention_steps = stored, steps, interventions

    def online_stores(self) -> list[Path]:
        """The stores of the episodes this run collected: ``<run_dir>/online.zarr``, or with ``runtime=ray`` one per
        fleet actor, ``<run_dir>/fleet/actor_<i>/online.zarr``."""
        if self.cfg.get("runtime") is not None and self.cfg.runtime.get("name") == "ray":
            return sorted(self.run_dir.glob("fleet/actor_*/online.zarr"), key=lambda p: int(p.parent.name[6:]))
        online = self.run_dir / "online.zarr"
        return [online] if online.exists() else []

    def plot_curve(self) -> Path | None:
        """Write ``curve.png`` (:func:`~robot_rl.evaluate.plot_history`)."""
        title = f"{self.cfg.agent.name}, seed {self.cfg.seed}"
        return plot_history(self.history, self.run_dir / "curve.png", str(self.cfg.task.name), title)
