"""The learner process: receives transitions from the actor, trains at the update-to-data ratio, publishes weights.

It owns the agent, the replay buffers, evaluation and checkpoints (the :class:`~robot_rl.trainer.Trainer` pieces),
but no robot. The actor's store is the source of truth: a learner (re)connecting to an actor loads every episode the
store holds beyond its own count, then takes the actor's running episode as it is replayed. It commits transitions
to its replay buffer a whole episode at a time, so its buffer always equals the store plus nothing half-known. A
restarted learner resumes from ``checkpoints/latest`` and the store.

Syncing: on ``hello`` the learner loads the store's new episodes from ``<run_dir>/online.zarr`` when it can read it
(same machine, or a shared run directory; ``runtime.store_sync``), then answers ``sync`` {episodes it holds}; the
actor replays over the transport whatever the learner still lacks. A learner on another machine, with no access to
the store, gets every episode that way, in raw form, and keeps a replica of the store in its own
``<run_dir>/online.zarr`` (marked by ``online.replica``), which is what it resumes from after a restart.

The learner never drives the robot: it builds its own env only for the spaces, scripted demos and evaluation. For a
task whose env is a robot client (``hw.*``, e.g. ``task=ros2_reach``), ``runtime.learner_task`` names the task
config it builds instead: the robot's sim twin (``reach`` for ``ros2_reach``).

A malformed message from the actor (:class:`~robot_rl.runtime.messages.MessageError`: a meta that does not fit its
kind, a step whose arrays are not the env's, a store size its store file contradicts) is logged and drops the
connection, applying nothing; the actor resyncs the learner when it reconnects.

Run as ``python -m robot_rl.runtime.learner RUN_DIR [key=value ...]`` (the launcher does), or as the ROS2 node
``robot-rl-learner`` (:mod:`hw.nodes.learner`).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from robot_rl.collect import Collected, episode_source
from robot_rl.data.episode import EpisodeBuilder
from robot_rl.data.store import EpisodeStore, StoreError
from robot_rl.evaluate import eval_summary
from robot_rl.runtime.messages import Message, MessageError, check_arrays, split_obs
from robot_rl.runtime.rate import RateLimiter
from robot_rl.runtime.transport import PeerChannel, Transport, make_transport
from robot_rl.utils.checkpoint import checkpoint_path
from robot_rl.utils.config import CONFIG_DIR, load_run_config, run_process_args
from robot_rl.utils.signals import ctrl_c_stops

STORE_SYNC = ("auto", "file", "transport")
REPLICA_MARK = "online.replica"
STEP_SCALARS = ("reward", "terminated", "truncated", "is_intervention", "timestamp")  # one value each per step


def learner_task(cfg: Any) -> Any:
    """The task config the learner builds its env from: ``runtime.learner_task`` (a name in ``configs/task``, or a
    mapping) or the run's task. Refuses a robot-client env (``hw.*``): the robot belongs to the actor."""
    name = cfg.runtime.get("learner_task")
    if not name:
        if str(cfg.task.get("env_id", "")).startswith("hw."):
            raise ValueError(
                f"task {cfg.task.name} drives a robot ({cfg.task.env_id}), and the robot belongs to the "
                "actor: set runtime.learner_task to its sim twin (e.g. runtime.learner_task=reach for "
                "ros2_reach) for the learner's spaces, scripted demos and evaluation"
            )
        return cfg.task
    if isinstance(name, str):
        path = CONFIG_DIR / "task" / f"{name}.yaml"
        if not path.exists():
            raise ValueError(f"runtime.learner_task={name!r}: no {path}")
        name = OmegaConf.load(path)
    task = OmegaConf.create({"obs": cfg.get("obs", "state"), "task": name})
    OmegaConf.resolve(task)
    if str(task.task.get("env_id", "")).startswith("hw."):
        raise ValueError(f"runtime.learner_task={task.task.get('name')!r} is a robot client too; name a sim task")
    return task.task


class Learner:
    """Trainer state + the message loop. ``serve()`` returns when the actor reports ``done``. ``transport``: how it
    reaches the actor (default: ``runtime.transport`` of the run's config)."""

    def __init__(self, run_dir: Path, overrides: Sequence[str] = (), transport: Transport | None = None):
        from robot_rl.trainer import Trainer  # heavy import (torch), after argument parsing

        self.run_dir = Path(run_dir)
        self.cfg = load_run_config(self.run_dir, overrides)
        rt = self.cfg.runtime
        self.cfg.threads = int(rt.learner_threads)
        self.store_sync = str(rt.get("store_sync", "auto"))
        if self.store_sync not in STORE_SYNC:
            raise ValueError(f"runtime.store_sync={self.store_sync!r} is not one of {STORE_SYNC}")
        own = self.cfg.copy()
        own.task = learner_task(self.cfg)  # the learner's env: never the robot
        self.trainer = tr = Trainer(own, self.run_dir)
        latest = checkpoint_path(self.run_dir / "checkpoints" / "latest")
        if (latest / "trainer.json").exists():
            tr.load_checkpoint(latest)
            self.log(f"resumed from {latest} at step {tr.step} ({tr.episode} episodes, {tr.agent.num_updates} updates)")
        else:
            self.log(f"starting: {tr.start_fresh()}")
            self.log(f"starting with {len(tr.demo)} demo transitions")
        tr.cfg = self.cfg  # checkpoints keep the run's own config (its task), whatever env the learner built
        self.transport = transport if transport is not None else make_transport(rt, self.run_dir, "learner")
        self.limiter = RateLimiter(1.0, int(self.cfg.learning_starts))
        self.weights_every = int(rt.weights_every)
        self.running = EpisodeBuilder()
        self.batches = tr.batches()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=tr.step if tr.step else None)
        self._last_sent, self._data_at_send = -1, 0
        self.refresh_steps = max(1, int(rt.get("max_weight_lag_steps", 300)) // 3)
        self.replica: EpisodeStore | None = None  # transport sync: our copy of the actor's store
        self._stop_sent: PeerChannel | None = None  # the connection already told to stop (eval.stop_at_success)
        # evaluations in a thread on a copy of the policy, so updates (and fresh weights for the actor, which keeps
        # collecting) do not pause for them (Trainer.start_evaluation)
        self.eval_background = bool(rt.get("eval_background", True))

    @staticmethod
    def log(msg: str) -> None:
        print(f"[learner] {msg}", flush=True)

    # ------------------------------------------------------------------------------------------- protocol
    def _sync(self, store_episodes: int, path: Path | None = None) -> None:
        """Load the episodes [ours, store_episodes) of the store at ``path`` (default: the actor's store,
        ``<run_dir>/online.zarr``), committed while we were not listening, into the buffers as training does
        (:meth:`~robot_rl.trainer.Trainer.fill_from_store`: intervention segments into the demo buffer too)."""
        tr = self.trainer
        self.running.clear()
        if store_episodes < tr.episode:
            raise RuntimeError(
                f"the actor's store holds {store_episodes} episodes but this learner has {tr.episode}; "
                "the store was replaced or truncated"
            )
        if store_episodes > tr.episode:
            tr.fill_from_store(path or self.run_dir / "online.zarr", tr.episode, store_episodes, count=True)
            self.log(f"synced from the {'replica' if path else 'store'}: now {tr.episode} episodes, {tr.step} steps")

    def _store_readable(self) -> bool:
        """Whether this learner syncs from the actor's store file; else everything comes over the transport and the
        learner keeps its own replica of the store (``<run_dir>/online.zarr``, marked by ``online.replica``)."""
        if self.store_sync == "auto":
            return (self.run_dir / "online.zarr").exists() and not (self.run_dir / REPLICA_MARK).exists()
        return self.store_sync == "file"

    def _open_replica(self, store_episodes: int) -> None:
        """Transport sync: open (or create) the replica store and load what it holds beyond our count."""
        if self.replica is None:
            from robot_rl.collect import open_online_store

            (self.run_dir / REPLICA_MARK).write_text(
                "this run's online.zarr is the learner's replica of the actor's store, filled over the transport\n"
            )
            self.replica = open_online_store(self.run_dir, self.trainer.env)
        held = min(len(self.replica), store_episodes)
        if held > self.trainer.episode:  # received and kept before a crash, but not yet in a checkpoint
            self._sync(held, self.run_dir / "online.zarr")

    def _check_claim(self, store_episodes: int, at_least: int = 0) -> None:
        """Raise :class:`MessageError` before a sync from the actor's store file if the actor's count of its
        episodes is below ``at_least`` or above what the file holds."""
        if store_episodes < at_least:
            raise MessageError(f"the actor counts {store_episodes} stored episodes, fewer than {at_least}")
        if store_episodes > self.trainer.episode:
            with EpisodeStore.open(self.run_dir / "online.zarr", verify="none") as store:
                if store_episodes > len(store):
                    raise MessageError(
                        f"the actor counts {store_episodes} stored episodes but its store holds {len(store)}"
                    )

    def _check_step(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Raise :class:`MessageError` unless a ``step`` message holds exactly what :meth:`_handle` files: the
        action, the scalars, and every observation key under ``obs.`` and ``next_obs.`` with the env's shape (a
        cached camera: raw uint8 frames, or its float16 trunk maps unless this learner keeps a replica), ``obs``
        like the running episode's last ``next_obs`` and ``next_obs`` like ``obs``."""
        agent = self.trainer.agent
        env = agent.observation_space
        buf = agent.buffer_observation_space if agent.cached_cameras else env
        prev = self.running.final_obs if len(self.running) else None
        spec: dict[str, list] = {
            "action": [(agent.action_space.shape, None)],
            **{k: [((), None), ((1,), None)] for k in STEP_SCALARS},
        }
        if "policy_action" in arrays:  # live steps carry it; steps replayed from the store do not
            spec["policy_action"] = spec["action"]
        for k, space in env.spaces.items():
            if prev is not None:
                options = [(prev[k].shape, prev[k].dtype)]
            elif k in agent.cached_cameras:  # raw frames; trunk maps too unless they go to a replica
                options = [(space.shape, space.dtype)]
                if self.replica is None:
                    options.append((buf[k].shape, buf[k].dtype))
            else:
                options = [(space.shape, None)]
            x = arrays.get(f"obs.{k}")
            spec[f"obs.{k}"], spec[f"next_obs.{k}"] = options, options if x is None else [(x.shape, x.dtype)]
        check_arrays(arrays, spec, "step")

    def _handle(self, msg: Message, ch: PeerChannel) -> bool:
        """Apply one message; True when the run is over. Raises :class:`MessageError` (applying nothing) for a
        message that does not fit."""
        tr = self.trainer
        if msg.kind == "hello":
            store_episodes = int(msg.meta["store_episodes"])
            if self._store_readable():
                self._check_claim(store_episodes)
                self._sync(store_episodes)
            else:
                self._open_replica(store_episodes)
                self.running.clear()
                if store_episodes < tr.episode:
                    raise RuntimeError(
                        f"the actor's store holds {store_episodes} episodes but this learner has "
                        f"{tr.episode}; the store was replaced or truncated"
                    )
            # the actor replays what we still lack, then streams (raw observations for a replica)
            ch.send("sync", {"episodes": tr.episode, "raw": self.replica is not None})
            self._send_weights(ch, force=True)
        elif msg.kind == "step":
            a = msg.arrays
            self._check_step(a)
            one = {k: a[k].reshape(-1)[0].item() for k in STEP_SCALARS}
            self.running.add(
                split_obs(a, "obs"),
                a["action"],
                one["reward"],
                one["terminated"],
                one["truncated"],
                split_obs(a, "next_obs"),
                one["is_intervention"],
                one["timestamp"],
                policy_action=a.get("policy_action"),
            )
        elif msg.kind == "episode_end":
            if (
                not len(self.running)
                or len(self.running) != int(msg.meta["steps"])
                or int(msg.meta["store_episodes"]) != tr.episode + 1
            ):
                self.log(
                    f"episode {msg.meta['store_episodes']} of {msg.meta['steps']} steps arrived with "
                    f"{len(self.running)} steps after episode {tr.episode}; resyncing"
                )
                if self._store_readable():
                    self._check_claim(int(msg.meta["store_episodes"]), at_least=tr.episode)
                    self._sync(int(msg.meta["store_episodes"]))
                else:  # a new connection replays from what we hold
                    self.running.clear()
                    ch.close()
                return False
            episode = self.running.build(cut=bool(msg.meta.get("cut", False)))  # as the actor filed it
            proposed = self.running.policy_actions()
            self.running.clear()
            if self.replica is not None:  # first to the replica, so a crash right after loses nothing
                try:
                    self.replica.append_episode(
                        **episode,
                        success=bool(msg.meta["success"]),
                        source=str(msg.meta.get("source") or episode_source(episode, "policy")),
                        task=str(self.cfg.task.name),
                        notes=str(msg.meta.get("notes", "")),
                    )
                except StoreError as e:  # checked before anything is written: the replica is unchanged
                    raise MessageError(f"the replica store refused the episode ({e})") from None
            stats = {k: float(v) for k, v in (msg.meta.get("stats") or {}).items()}  # episode_metrics
            reward_stats = {k[len("reward_") :]: v for k, v in stats.items() if k.startswith("reward_")}
            tr.take_episode(
                Collected(
                    episode,
                    bool(msg.meta["success"]),
                    str(msg.meta.get("source") or ""),
                    policy_action=proposed,
                    reward_stats=reward_stats,
                )
            )
            tr.log_episode(self.writer, stats)
            tr.start_evaluation_if_due(self.eval_background)
            self._evaluated(ch)
        elif msg.kind == "done":
            self._evaluated(ch, wait=True)
            if not tr.history or tr.history[-1]["step"] != tr.step:  # (the last episode may have just evaluated)
                tr.evaluate_and_checkpoint(self.writer)
            self.log(f"done at step {tr.step}: {eval_summary(tr.history[-1])}")
            ch.send("stop")
            ch.flush()
            return True
        return False

    def _evaluated(self, ch: PeerChannel, wait: bool = False) -> None:
        """Record the evaluation under way once it has finished (``wait``: wait for it), and stop the actor when it
        reached ``eval.stop_at_success``."""
        tr = self.trainer
        h = tr.poll_evaluation(self.writer, wait)
        if h is None:
            return
        self.log(f"step {h['step']}: {eval_summary(h)}, {h['updates']} updates (now {tr.agent.num_updates})")
        if tr.target_reached() and self._stop_sent is not ch:  # eval.stop_at_success, as in one process
            # once per connection: a second stop could reach the actor as the answer to its "done" and let it leave
            # before this learner's final evaluation and checkpoint
            self.log("eval.stop_at_success reached: stopping the actor")
            ch.send("stop")
            self._stop_sent = ch

    def _send_weights(self, ch: PeerChannel, force: bool = False) -> None:
        """Every ``weights_every`` updates; and while the data allows no update (before ``learning_starts``), the
        same weights again every ``max_weight_lag_steps / 3`` env steps, so an idle learner is not taken for a
        stalled one (the actor holds on stale weights)."""
        n = self.trainer.agent.num_updates
        data = self.trainer.step + len(self.running)
        idle = self.limiter.allowed(data, n) <= 0 and data - self._data_at_send >= self.refresh_steps
        if force or n - self._last_sent >= self.weights_every or idle:
            ch.send("weights", {"version": n}, self.trainer.agent.policy_weights())
            self._last_sent, self._data_at_send = n, data

    def _learn(self) -> bool:
        """One update if the rate limiter allows it and there is data; True if it ran."""
        tr = self.trainer
        if self.limiter.allowed(tr.step + len(self.running), tr.agent.num_updates) <= 0:
            return False
        return tr.learn(self.batches, self.writer) is not None

    def serve(self, connect_timeout: float = 600.0) -> int:
        """Connect to the actor (retrying while it is away) and train until it reports ``done``."""
        self.log(f"looking for the actor on {self.transport.describe()}")
        while True:
            ch = self.transport.connect(connect_timeout)
            if ch is None:
                self.log(f"no actor on {self.transport.describe()} for {connect_timeout:.0f} s; stopping")
                return 1
            self.log("connected to the actor")
            try:
                if self._serve_channel(ch):
                    return 0
                self.log(f"actor connection lost ({ch.error}); waiting for it to return")
            finally:
                ch.close()

    def _serve_channel(self, ch: PeerChannel) -> bool:
        """Train and apply the actor's messages until it reports ``done`` (True) or the channel closes (False). A
        malformed message is logged and closes the channel: a reconnecting learner is resynced by the actor."""
        while not ch.closed:
            msg = ch.recv(timeout=0.0 if self._learn() else 0.02)
            while msg is not None:
                try:
                    if self._handle(msg, ch):
                        return True
                except MessageError as e:
                    self.log(f"rejected a {msg.kind} message from the actor ({e}); dropping the connection")
                    self.running.clear()
                    ch.close()
                    return False
                msg = ch.recv()
            self._evaluated(ch)
            self._send_weights(ch)
        return False

    def close(self) -> None:
        self.transport.close()
        if self.replica is not None:
            self.replica.close()
        self.writer.close()
        self.trainer.plot_curve()


def main(argv: list[str] | None = None) -> int:
    run_dir, overrides = run_process_args("learner", argv)
    ctrl_c_stops()
    learner = Learner(run_dir, overrides)
    try:
        return learner.serve(float(learner.cfg.runtime.get("connect_timeout_s", 600)))
    except KeyboardInterrupt:
        learner.log("interrupted")
        return 130
    finally:
        learner.close()


if __name__ == "__main__":
    sys.exit(main())
