"""``runtime=ray``: a fleet of actors on Ray feeding one learner.

Each actor (:class:`FleetActor`, a Ray actor with its own process, env, seed stream and torch threads) runs the one
collection loop (:class:`~robot_rl.collect.Collector`) and files every episode it finishes in its own store,
``<run_dir>/fleet/actor_<i>/online.zarr``, before the learner hears of it. The learner (:class:`Fleet`, in the
process that ran ``robot-rl train``) hands out work a call at a time: *collect ``runtime.steps_per_call`` env steps
with these weights*. It answers each call's episodes by adding them to its buffers, counts them per actor against
that actor's store (a store is the record of truth, so an episode is never counted twice or lost), trains at the
update-to-data ratio over the fleet's total env steps, and gives an actor its next call only while the fleet is at
most ``runtime.max_lead_steps`` env steps ahead of the updates. Weights go out through the Ray object store, once
per version.

Everything that crosses between processes is the project's own message bytes (:mod:`robot_rl.runtime.messages`):
safetensors arrays and a JSON header, checked on arrival. Ray itself moves those bytes (and, between its own
processes, pickles its control messages): run a multi-machine fleet on a network you trust.

An actor that dies is restarted by Ray (``runtime.restarts`` times) and reopens its store; the learner catches up
from the store and goes on. The learner checkpoints like every run; ``resume=`` rebuilds its buffers from the fleet's
stores. Ctrl+C stops the actors (each files its running episode as a cut one) and the local Ray instance.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.collect import Collected
from robot_rl.evaluate import eval_summary
from robot_rl.runtime.messages import MessageError, check_arrays, decode, encode, join_obs, split_obs
from robot_rl.utils.config import load_run_config

EPISODE_FIELDS = ("action", "reward", "terminated", "truncated", "is_intervention", "timestamp")


def actor_store(run_dir: Path, index: int) -> Path:
    return Path(run_dir) / "fleet" / f"actor_{index}" / "online.zarr"


def init_ray(rt: Any, actors: int) -> Any:
    """Start (or join, with ``runtime.address``) Ray with usage statistics off; a local instance binds to 127.0.0.1
    and runs no dashboard unless ``runtime.dashboard``. Returns the ``ray`` module."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # before the import: Ray reads these when it starts
    if not rt.get("address"):  # a local instance: every Ray process on 127.0.0.1 (Ray would pick the outward address)
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:
        import ray
    except ImportError:
        raise RuntimeError("runtime=ray needs Ray: pip install 'robot-rl[fleet]' (or the dev extra)") from None
    if ray.is_initialized():
        return ray
    if rt.get("address"):
        ray.init(address=str(rt.address), log_to_driver=True)
    else:
        ray.init(
            num_cpus=max(int(rt.get("num_cpus") or 0), actors + 1),
            include_dashboard=bool(rt.get("dashboard", False)),
            _node_ip_address="127.0.0.1",
            log_to_driver=True,
            configure_logging=False,
        )
    return ray


def episode_message(c: Any, store_episodes: int, stats: dict[str, float]) -> bytes:
    """A filed episode (:class:`~robot_rl.collect.Collected`) as an ``episode`` message."""
    ep = c.episode
    arrays = {**join_obs(ep["obs"], "obs"), **join_obs(ep["final_obs"], "final_obs")}
    arrays.update({k: ep[k] for k in EPISODE_FIELDS})
    if c.policy_action is not None:
        arrays["policy_action"] = c.policy_action
    meta = {"store_episodes": store_episodes, "success": c.success, "source": c.source, "cut": c.cut, "stats": stats}
    return encode("episode", meta, arrays)


def check_episode(arrays: dict[str, np.ndarray], obs_space: Any, action_dim: int) -> dict[str, Any]:
    """The episode of an ``episode`` message, after checking every array against the env's spaces (raises
    :class:`~robot_rl.runtime.messages.MessageError` naming what does not fit)."""
    if "action" not in arrays or arrays["action"].ndim != 2:
        raise MessageError("episode: no (T, A) action array")
    t = len(arrays["action"])
    spec: dict[str, list] = {"action": [((t, action_dim), np.dtype(np.float32))]}
    spec.update({k: [((t,), None)] for k in EPISODE_FIELDS[1:]})
    if "policy_action" in arrays:
        spec["policy_action"] = spec["action"]
    for k, space in obs_space.spaces.items():
        spec[f"obs.{k}"] = [((t, *space.shape), np.dtype(space.dtype))]
        spec[f"final_obs.{k}"] = [(tuple(space.shape), np.dtype(space.dtype))]
    check_arrays(arrays, spec, "episode", finite=True)
    out = {k: arrays[k] for k in EPISODE_FIELDS}
    out.update(obs=split_obs(arrays, "obs"), final_obs=split_obs(arrays, "final_obs"))
    return out


class FleetActor:
    """One actor of the fleet: its env, a policy copy and a collector over its own store. Ray runs it in a process
    of its own (:class:`Fleet` wraps it with ``ray.remote``); nothing here needs Ray."""

    def __init__(self, run_dir: str, index: int, overrides: list[str] | None = None):
        import torch
        from omegaconf import OmegaConf

        from robot_rl.agents.sac import SAC, SACConfig
        from robot_rl.collect import Collector, make_training_env, open_online_store
        from robot_rl.utils.perf import set_threads

        cfg = load_run_config(Path(run_dir), overrides or [])
        rt = cfg.runtime
        self.index = index
        set_threads(int(rt.actor_threads))
        cfg.seed = int(cfg.seed) + 1000 * (index + 1)  # each actor its own streams (operator, reward model, torch)
        torch.manual_seed(int(cfg.seed))
        self.env = make_training_env(cfg)
        # where each episode came from, in its notes: mixed fleets (sim actors and a robot) keep them apart
        origin = "robot" if str(cfg.task.get("env_id", "")).startswith("hw.") else "sim"
        self._notes = {"actor": index, "origin": origin, "task": str(cfg.task.name)}
        agent_cfg = {**OmegaConf.to_container(cfg.agent, resolve=True), "device": str(rt.actor_device)}
        self.agent = SAC(self.env.observation_space, self.env.action_space, SACConfig.from_dict(agent_cfg))
        path = actor_store(Path(run_dir), index)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.store = open_online_store(path.parent, self.env)
        self.collector = Collector(self.env, task=str(cfg.task.name), store=self.store, featurize=self.agent.featurize)
        self.version = -1
        ours = decode(encode("weights", {"version": 0}, self.agent.policy_weights())).arrays
        self._weights_spec = {k: [(v.shape, v.dtype)] for k, v in ours.items()}
        self._seed = int(cfg.seed)
        self._resets = len(self.store)  # a restarted actor does not replay old episodes
        self._reset()

    def hello(self) -> bytes:
        """Who this actor is: its env spec (JSON) and what its store holds."""
        from robot_rl.utils.specs import env_spec

        meta = {"store_episodes": len(self.store), "store_steps": self.store.num_steps}
        return encode("hello", {**meta, "spec": json.dumps(env_spec(self.env)), "index": self.index})

    def _reset(self) -> None:
        from robot_rl.collect import episode_seed

        self.collector.reset(seed=episode_seed(self._seed, self._resets))
        self._resets += 1

    def collect(self, weights: bytes | None, steps: int) -> list[bytes]:
        """Apply ``weights`` (a ``weights`` message; None: keep the current ones), run ``steps`` env steps, filing
        each episode that ends; return a ``collected`` message and one ``episode`` message per episode filed."""
        from robot_rl.collect import episode_metrics

        if weights is not None:
            msg = decode(weights)
            check_arrays(msg.arrays, self._weights_spec, "weights", finite=True)  # never drive with NaN
            if int(msg.meta["version"]) > self.version:
                import torch

                self.agent.load_policy_weights({k: torch.from_numpy(v) for k, v in msg.arrays.items()})
                self.version = int(msg.meta["version"])
        if self.version < 0:
            raise RuntimeError(f"fleet actor {self.index}: no policy weights yet")
        t0 = time.perf_counter()
        out = []
        for _ in range(int(steps)):
            step = self.collector.step(self.agent.act(self.collector.fobs))
            if step.done:
                c = self.collector.finish(notes=json.dumps(self._notes))
                stats = episode_metrics(c.episode, c.success, c.reward_stats)
                out.append(episode_message(c, len(self.store), {**stats, "version": float(self.version)}))
                self._reset()
        meta = {
            "steps": int(steps),
            "store_episodes": len(self.store),
            "store_steps": self.store.num_steps,
            "running": len(self.collector),
            "seconds": time.perf_counter() - t0,
        }
        return [encode("collected", meta), *out]

    def close(self) -> bytes:
        """File the running episode as a cut one, close the store and the env; a ``collected`` message of what the
        store holds."""
        self.collector.close(json.dumps({**self._notes, "cut": "the fleet stopped mid-episode"}))
        meta = {"steps": 0, "store_episodes": len(self.store), "store_steps": self.store.num_steps, "running": 0}
        self.store.close()
        self.env.close()
        return encode("collected", meta)


def start_fleet_actors(ray: Any, run_dir: Path, rt: Any) -> list[Any]:
    """``rt.actors`` :class:`FleetActor` processes on Ray (restarted by Ray when they die), each placed by
    ``rt.actor_resources`` and configured by ``rt.actor_overrides``."""
    remote = ray.remote(num_cpus=1, max_restarts=int(rt.restarts), max_task_retries=0)(FleetActor)
    per_actor = rt.get("actor_overrides") or {}  # e.g. {"1": ["task=ros2_reach"]}: a robot among sim actors
    placed = rt.get("actor_resources") or {}  # e.g. {"1": {"robot_arm": 1}}: that actor runs on the robot's node
    return [
        remote.options(resources=dict(placed.get(str(i), {}))).remote(str(run_dir), i, list(per_actor.get(str(i), [])))
        for i in range(int(rt.actors))
    ]


class Fleet:
    """The learner side of ``runtime=ray``: a :class:`~robot_rl.trainer.Trainer` and ``runtime.actors`` Ray actors."""

    def __init__(self, run_dir: Path, resume: bool = False, owns_ray: bool = True, actors: list[Any] | None = None):
        import threading

        from robot_rl.runtime.rate import RateLimiter
        from robot_rl.trainer import Trainer
        from robot_rl.utils.checkpoint import checkpoint_path

        self.run_dir = Path(run_dir)
        self.cfg = cfg = load_run_config(self.run_dir)
        rt = cfg.runtime
        self.n = int(rt.actors)
        if self.n < 1:
            raise ValueError(f"runtime.actors={self.n} must be at least 1")
        self.steps_per_call = int(rt.steps_per_call)
        self.max_lead = int(rt.get("max_lead_steps") or self.n * self.steps_per_call)
        if self.steps_per_call < 1 or self.max_lead < self.steps_per_call:
            raise ValueError(
                f"runtime.steps_per_call={self.steps_per_call} must be >= 1 and runtime.max_lead_steps="
                f"{self.max_lead} at least that (else no actor could ever be given a call)"
            )
        self.weights_every = max(1, int(rt.weights_every))
        self.eval_background = bool(rt.get("eval_background", True))
        cfg.threads = int(rt.learner_threads)
        self.tr = tr = Trainer(cfg, self.run_dir)
        latest = checkpoint_path(self.run_dir / "checkpoints" / "latest")
        resumed = resume and (latest / "trainer.json").exists()
        if resumed:
            tr.load_checkpoint(latest)  # its buffers hold every episode of the stores
            self.log(f"resumed from {latest} at step {tr.step} ({tr.episode} episodes)")
        else:  # no checkpoint yet: what the stores hold is taken (and counted) when each actor says hello
            self.log(f"starting: {tr.start_fresh()}")
        restored = {int(p.parent.name[len("actor_") :]): n for p, n in tr.restored.items()}
        self.held = [restored.get(i, 0) for i in range(self.n)]  # episodes taken, per actor store
        self.store_steps = [0] * self.n  # env steps each actor has run (its store, plus its running episode)
        self.limiter = RateLimiter(1.0, int(cfg.learning_starts))
        self.ray = init_ray(rt, self.n)
        self.owns_ray = owns_ray  # False where the learner runs as a Ray actor (runtime.learner=ray)
        self.stop_asked = threading.Event()  # set from another thread: stop as on Ctrl+C
        self._weights_ref, self._weights_version = None, -1
        self.actors: list[Any] = list(actors or [])  # Ray handles of the FleetActors (started here when none)
        self.alive = [True] * self.n
        self.restarts_seen = [0] * self.n
        self._actor_rates: list[list[float]] = [[] for _ in range(self.n)]  # env steps/s of each collect call

    @staticmethod
    def log(msg: str) -> None:
        print(f"[fleet] {msg}", flush=True)

    def _store_len(self, i: int) -> int:
        from robot_rl.data.store import EpisodeStore

        path = actor_store(self.run_dir, i)
        if not path.exists():
            return 0
        with EpisodeStore.open(path) as store:
            return len(store)

    # ---------------------------------------------------------------------------------------------- actors
    def start_actors(self) -> None:
        from robot_rl.utils.specs import check_spec, env_spec

        if not self.actors:
            self.actors = start_fleet_actors(self.ray, self.run_dir, self.cfg.runtime)
        ours = env_spec(self.tr.env)
        for i, blob in enumerate(self.ray.get([a.hello.remote() for a in self.actors])):
            hello = decode(blob)
            check_spec(json.loads(hello.meta["spec"]), ours, f"fleet actor {i}")  # names the mismatch
            self._catch_up(i, int(hello.meta["store_episodes"]))
            self.store_steps[i] = int(hello.meta["store_steps"])

    def _catch_up(self, i: int, store_episodes: int) -> None:
        """Take the episodes of actor ``i``'s store that the learner does not hold yet (filed, but their answer was
        lost: the actor died, or the learner restarted)."""
        if store_episodes > self.held[i]:
            self.tr.fill_from_store(actor_store(self.run_dir, i), self.held[i], store_episodes, count=True)
            self.log(f"actor {i}: took episodes {self.held[i]}..{store_episodes - 1} from its store")
            self.held[i] = store_episodes

    def _weights(self) -> Any:
        """The newest weights in the Ray object store (put once per version)."""
        n = self.tr.agent.num_updates
        if self._weights_ref is None or n - self._weights_version >= self.weights_every:
            self._weights_ref = self.ray.put(encode("weights", {"version": n}, self.tr.agent.policy_weights()))
            self._weights_version = n
        return self._weights_ref

    def _may_collect(self) -> bool:
        """Whether another call fits the update-to-data ratio: the fleet at most ``max_lead_steps`` env steps ahead
        of the updates (and of ``learning_starts``)."""
        if not len(self.tr.online) and not len(self.tr.demo):
            return True  # nothing to learn from yet (no demos, no episode ended): only more data can help
        done = sum(self.store_steps)
        return done + self.steps_per_call <= self.limiter.learning_starts + self.tr.agent.num_updates + self.max_lead

    # ------------------------------------------------------------------------------------------------ loop
    def run(self) -> int:
        from torch.utils.tensorboard import SummaryWriter

        tr, total = self.tr, int(self.cfg.total_steps)
        writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=tr.step if tr.step else None)
        batches = tr.batches()
        pending: dict[Any, int] = {}
        idle = set(range(self.n))
        try:
            self.start_actors()
            where = self.ray.util.get_node_ip_address()
            self.log(
                f"{self.n} actors on Ray at {where} (learner on {tr.agent.device}), {self.steps_per_call} env steps "
                "per call"
            )
            t0, steps0, updates0 = time.perf_counter(), sum(self.store_steps), tr.agent.num_updates
            while True:
                if self.stop_asked.is_set():
                    raise KeyboardInterrupt
                launch_more = sum(self.store_steps) < total
                for i in sorted(idle):
                    if launch_more and self.alive[i] and self._may_collect():
                        pending[self.actors[i].collect.remote(self._weights(), self.steps_per_call)] = i
                        idle.discard(i)
                if not pending and (not launch_more or not any(self.alive)):
                    break
                learned = self._learn(batches, writer)
                ready, _ = self.ray.wait(list(pending), num_returns=len(pending), timeout=0 if learned else 0.05)
                for ref in ready:
                    i = pending.pop(ref)
                    idle.add(i)
                    self._answer(i, ref, writer)
                tr.start_evaluation_if_due(self.eval_background)
                if self._evaluated(writer) and tr.target_reached():
                    self.log("eval.stop_at_success reached: stopping the fleet")
                    break
            self._evaluated(writer, wait=True)
            self._stop(pending, writer)
            self._write_throughput(
                time.perf_counter() - t0, sum(self.store_steps) - steps0, tr.agent.num_updates - updates0
            )
            if not tr.history or tr.history[-1]["step"] != tr.step:
                tr.evaluate_and_checkpoint(writer)
            self.log(f"done at step {tr.step}: {eval_summary(tr.history[-1])}")
            return 0
        except KeyboardInterrupt:
            self.log("interrupted: stopping the actors")
            self._stop(pending, writer)
            return 130
        finally:
            writer.close()
            tr.plot_curve()
            if self.owns_ray:
                self.ray.shutdown()

    def _evaluated(self, writer, wait: bool = False) -> bool:
        """Record the evaluation under way once it has finished (``wait``: wait for it); whether one was recorded."""
        h = self.tr.poll_evaluation(writer, wait)
        if h is not None:
            self.log(f"step {h['step']}: {eval_summary(h)}, {h['updates']} updates (now {self.tr.agent.num_updates})")
        return h is not None

    def _write_throughput(self, seconds: float, env_steps: int, updates: int) -> None:
        """``<run_dir>/fleet.json``: the fleet's env steps and the learner's updates per second over the run (from
        the actors' start to their stop; evaluations included), and each actor's own env steps per second."""
        rates = {str(i): self._actor_rates[i] for i in range(self.n) if self._actor_rates[i]}
        out = {
            "actors": self.n,
            "seconds": seconds,
            "env_steps": env_steps,
            "updates": updates,
            "env_steps_per_s": env_steps / max(seconds, 1e-9),
            "updates_per_s": updates / max(seconds, 1e-9),
            "actor_env_steps_per_s": {k: float(np.median(v)) for k, v in rates.items()},
        }
        (self.run_dir / "fleet.json").write_text(json.dumps(out, indent=1))

    def _learn(self, batches: Any, writer: Any) -> bool:
        """Updates while the ratio allows (at most 20 before the next look at the actors); True if any ran."""
        ran = 0
        while ran < 20 and self.limiter.allowed(sum(self.store_steps), self.tr.agent.num_updates) > 0:
            if self.tr.learn(batches, writer) is None:
                break
            ran += 1
        return ran > 0

    def _answer(self, i: int, ref: Any, writer: Any) -> None:
        """Take what actor ``i``'s call returned; an actor that died is caught up from its store once Ray has
        restarted it."""
        tr = self.tr
        try:
            blobs = self.ray.get(ref)
            head = decode(blobs[0])
            if head.kind != "collected":
                raise MessageError(f"a {head.kind} message where a collected one belongs")
        except self.ray.exceptions.RayError as e:
            self._actor_failed(i, e)
            return
        except MessageError as e:  # an actor of another version, or damage: what its store holds still counts
            self.log(f"actor {i}: rejected its answer ({e}); taking its episodes from its store")
            self._catch_up(i, self._store_len(i))
            return
        for blob in blobs[1:]:
            try:
                msg = decode(blob)
                if msg.kind != "episode":
                    raise MessageError(f"a {msg.kind} message where an episode belongs")
            except MessageError as e:
                self.log(f"actor {i}: rejected an episode message ({e}); its store has the episode")
                continue
            k = int(msg.meta["store_episodes"])
            if k <= self.held[i]:
                continue  # already taken from the store
            self._catch_up(i, k - 1)
            try:
                episode = check_episode(msg.arrays, tr.agent.observation_space, tr.agent.action_dim)
            except MessageError as e:  # the store's copy was checked when it was filed
                self.log(f"actor {i}: episode {k - 1} arrived malformed ({e}); taking it from its store")
                self._catch_up(i, k)
                continue
            stats = {k2: float(v) for k2, v in (msg.meta.get("stats") or {}).items()}
            version = stats.pop("version", -1.0)
            stats["weight_lag_steps"] = float(max(0, tr.agent.num_updates - version))  # updates ~ env steps here
            reward_stats = {k2[len("reward_") :]: v for k2, v in stats.items() if k2.startswith("reward_")}
            tr.take_episode(
                Collected(
                    episode,
                    bool(msg.meta["success"]),
                    str(msg.meta["source"]),
                    bool(msg.meta["cut"]),
                    policy_action=msg.arrays.get("policy_action"),
                    reward_stats=reward_stats,
                )
            )
            tr.log_episode(writer, stats)
            writer.add_scalar(f"fleet/actor_{i}/weight_lag_updates", stats["weight_lag_steps"], tr.step)
            self.held[i] = k
        self._catch_up(i, int(head.meta["store_episodes"]))
        self.store_steps[i] = int(head.meta["store_steps"]) + int(head.meta["running"])
        seconds = float(head.meta.get("seconds", 0.0))
        if seconds > 0:
            self._actor_rates[i].append(int(head.meta["steps"]) / seconds)
            writer.add_scalar(f"fleet/actor_{i}/env_steps_per_s", self._actor_rates[i][-1], tr.step)

    def _actor_failed(self, i: int, error: Exception) -> None:
        """Actor ``i`` died during a call: Ray restarts it (up to ``runtime.restarts`` times); catch up from its store
        and go on, or go on without it."""
        self.restarts_seen[i] += 1
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if self.restarts_seen[i] > int(self.cfg.runtime.restarts):
            self.alive[i] = False
            self.log(f"actor {i} failed ({first}) with no restarts left; going on with the others")
            if not any(self.alive):
                raise RuntimeError("every fleet actor failed; see the errors above") from error
            return
        self.log(f"actor {i} failed ({first}); Ray restarts it, the learner catches up from its store")
        try:
            hello = decode(self.ray.get(self.actors[i].hello.remote(), timeout=300))
        except self.ray.exceptions.RayError as e:
            self._actor_failed(i, e)
            return
        self._catch_up(i, int(hello.meta["store_episodes"]))
        self.store_steps[i] = int(hello.meta["store_steps"])

    def _stop(self, pending: dict[Any, int], writer: Any) -> None:
        """Wait for the calls under way, then close every actor (each files its running episode as a cut one) and
        take what their stores hold."""
        for ref, i in list(pending.items()):
            self._answer(i, ref, writer)
        pending.clear()
        for i, actor in enumerate(self.actors):
            if not self.alive[i]:
                continue
            try:
                head = decode(self.ray.get(actor.close.remote(), timeout=120))
                self._catch_up(i, int(head.meta["store_episodes"]))
            except self.ray.exceptions.RayError as e:
                self.log(f"actor {i} did not close cleanly ({type(e).__name__}); its store keeps what it filed")
            self.ray.kill(actor, no_restart=True)


class FleetLearner:
    """The learner as a Ray actor (``runtime.learner=ray``): a :class:`Fleet` in a process that Ray places where a
    GPU is (when the cluster has one), wherever ``robot-rl train`` was started. Ray runs it with two threads, so
    :meth:`stop` reaches it while :meth:`run` is under way."""

    def __init__(self, run_dir: str, resume: bool, actors: list[Any]):
        self.fleet = Fleet(Path(run_dir), resume=resume, owns_ray=False, actors=actors)
        where = {"pid": os.getpid(), "node": self.fleet.ray.util.get_node_ip_address()}
        (Path(run_dir) / "fleet").mkdir(exist_ok=True)
        (Path(run_dir) / "fleet" / "learner.json").write_text(
            json.dumps({**where, "device": str(self.fleet.tr.agent.device)})
        )

    def run(self) -> int:
        return self.fleet.run()

    def stop(self) -> None:
        self.fleet.stop_asked.set()


def _run_learner_actor(run_dir: Path, resume: bool) -> int:
    """Run the learner as a Ray actor (one GPU when the cluster has one) and wait for it. The actors are started here,
    so they outlive a learner that dies: a new learner (``runtime.restarts`` times) resumes from its checkpoint and
    the fleet's stores and takes the same actors over. Ctrl+C asks the learner to stop as it would."""
    rt = load_run_config(run_dir).runtime
    ray = init_ray(rt, int(rt.actors))
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    remote = ray.remote(num_cpus=1, num_gpus=gpus, max_concurrency=2, max_restarts=0)(FleetLearner)
    deaths, learner, ref = 0, None, None
    try:
        actors = start_fleet_actors(ray, run_dir, rt)
        while True:
            learner = remote.remote(str(run_dir), resume, actors)
            ref = learner.run.remote()
            try:
                while True:
                    done, _ = ray.wait([ref], timeout=1.0)
                    if done:
                        return int(ray.get(ref))
            except ray.exceptions.RayActorError as e:
                deaths += 1
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                if deaths > int(rt.restarts):
                    raise RuntimeError(f"the fleet's learner died {deaths} times; last: {first}") from e
                Fleet.log(f"the learner died ({first}); a new one resumes from its checkpoint and the stores")
                resume = True
    except KeyboardInterrupt:
        Fleet.log("interrupted: asking the learner to stop the actors")
        if learner is not None and ref is not None:
            learner.stop.remote()
            try:
                ray.get(ref, timeout=300)
            except (ray.exceptions.RayError, KeyboardInterrupt):
                pass
        return 130
    finally:
        ray.shutdown()


def run_fleet(run_dir: Path, resume: bool = False) -> int:
    """``robot-rl train runtime=ray``: ``runtime.actors`` actors on Ray and the learner here (``runtime.learner=
    driver``) or in a Ray actor of its own (``runtime.learner=ray``); exit status 0 when done, 130 on Ctrl+C."""
    from robot_rl.utils.signals import ctrl_c_stops

    ctrl_c_stops()
    where = str(load_run_config(Path(run_dir)).runtime.get("learner", "driver"))
    if where not in ("driver", "ray"):
        raise ValueError(f"runtime.learner={where!r}: use driver (this process) or ray (a Ray actor, on a GPU node)")
    if where == "ray":
        code = _run_learner_actor(Path(run_dir), resume)
    else:
        code = Fleet(Path(run_dir), resume=resume).run()
    print(f"fleet run finished with status {code}", file=sys.stderr if code else sys.stdout)
    return code
