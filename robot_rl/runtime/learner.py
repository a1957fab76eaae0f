"""The learner process: receives transitions from the actor, trains at the update-to-data ratio, publishes weights.

It owns the agent, the replay buffers, evaluation and checkpoints (the :class:`~robot_rl.trainer.Trainer` pieces),
but no robot. The actor's store is the source of truth: a learner (re)connecting to an actor loads every episode the
store holds beyond its own count, then takes the actor's running episode as it is replayed. It commits transitions
to its replay buffer a whole episode at a time, so its buffer always equals the store plus nothing half-known. A
restarted learner resumes from ``checkpoints/latest`` and the store.

Run as ``python -m robot_rl.runtime.learner RUN_DIR`` (the launcher does).
"""

from __future__ import annotations

import argparse
import sys
import time
from multiprocessing.connection import Client
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from robot_rl.data.episode import EpisodeBuilder
from robot_rl.data.replay import mixed_batches
from robot_rl.data.store import EpisodeStore
from robot_rl.runtime.messages import Channel, Message, split_obs
from robot_rl.runtime.rate import RateLimiter
from robot_rl.runtime.launch import runtime_address, runtime_key


class Learner:
    """Trainer state + the message loop. ``serve()`` returns when the actor reports ``done``."""

    def __init__(self, run_dir: Path):
        from robot_rl.trainer import Trainer  # heavy import (torch), after argument parsing

        self.run_dir = Path(run_dir)
        self.cfg = OmegaConf.load(self.run_dir / "config.yaml")
        rt = self.cfg.runtime
        self.cfg.threads = int(rt.learner_threads)
        self.trainer = tr = Trainer(self.cfg, self.run_dir)
        latest = self.run_dir / "checkpoints" / "latest"
        if (latest / "trainer.json").exists():
            tr.load_checkpoint(latest)
            self.log(f"resumed from {latest} at step {tr.step} ({tr.episode} episodes, {tr.agent.num_updates} updates)")
        else:
            self.log(f"starting: {tr.start_fresh()}")
            self.log(f"starting with {len(tr.demo)} demo transitions")
        self.limiter = RateLimiter(1.0, int(self.cfg.learning_starts))
        self.weights_every = int(rt.weights_every)
        self.running = EpisodeBuilder()
        self.batches = mixed_batches(tr.demo, tr.online, tr.agent.cfg.batch_size, float(self.cfg.demo_fraction),
                                     tr.rng)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=tr.step if tr.step else None)
        self._last_sent = -1

    @staticmethod
    def log(msg: str) -> None:
        print(f"[learner] {msg}", flush=True)

    # ------------------------------------------------------------------------------------------- protocol
    def _sync(self, store_episodes: int) -> None:
        """Load the store's episodes [ours, store_episodes) (committed by the actor while we were not listening)."""
        tr = self.trainer
        self.running.clear()
        if store_episodes < tr.episode:
            raise RuntimeError(f"the actor's store holds {store_episodes} episodes but this learner has {tr.episode}; "
                               "the store was replaced or truncated")
        if store_episodes > tr.episode:
            with EpisodeStore.open(self.run_dir / "online.zarr") as store:
                for ep in store.iter_episodes(tr.episode, store_episodes):
                    tr.online.add_episode(tr.agent.featurize_episode(ep))
                    tr.step += len(ep["action"])
                    tr.episode += 1
            self.log(f"synced from the store: now {tr.episode} episodes, {tr.step} steps")

    def _handle(self, msg: Message, ch: Channel) -> bool:
        """Apply one message; True when the run is over."""
        tr = self.trainer
        if msg.kind == "hello":
            self._sync(int(msg.meta["store_episodes"]))
            self._send_weights(ch, force=True)
        elif msg.kind == "step":
            a = msg.arrays
            one = {k: a[k].reshape(-1)[0].item() for k in ("reward", "terminated", "truncated", "is_intervention",
                                                             "timestamp")}
            self.running.add(split_obs(a, "obs"), a["action"], one["reward"], one["terminated"], one["truncated"],
                             split_obs(a, "next_obs"), one["is_intervention"], one["timestamp"])
        elif msg.kind == "episode_end":
            if len(self.running) != int(msg.meta["steps"]):
                self.log(f"episode of {msg.meta['steps']} steps arrived with {len(self.running)}; resyncing")
                self._sync(int(msg.meta["store_episodes"]))
                return False
            episode = self.running.build()
            self.running.clear()
            tr.online.add_episode(tr.agent.featurize_episode(episode))
            from robot_rl.data.episode import intervention_segments

            for seg in intervention_segments(episode):
                tr.demo.add_episode(tr.agent.featurize_episode(seg))
            tr.step += len(episode["action"])
            tr.episode += 1
            for k, v in msg.meta.get("stats", {}).items():
                self.writer.add_scalar(f"train/{k}", float(v), tr.step)
            if tr.step >= tr._next_eval:
                tr._evaluate_and_checkpoint(self.writer)
                h = tr.history[-1]
                self.log(f"step {tr.step}: eval success {h['success_rate']:.0%}, {tr.agent.num_updates} updates")
        elif msg.kind == "done":
            tr._evaluate_and_checkpoint(self.writer)
            self.log(f"done at step {tr.step}: eval success {tr.history[-1]['success_rate']:.0%}")
            ch.send("stop")
            ch.flush()
            return True
        return False

    def _send_weights(self, ch: Channel, force: bool = False) -> None:
        n = self.trainer.agent.num_updates
        if force or n - self._last_sent >= self.weights_every:
            ch.send("weights", {"version": n}, self.trainer.agent.policy_weights())
            self._last_sent = n

    def _learn(self) -> bool:
        """One update if the rate limiter allows it and there is data; True if it ran."""
        tr = self.trainer
        if self.limiter.allowed(tr.step + len(self.running), tr.agent.num_updates) <= 0 or not len(tr.online) \
                and not len(tr.demo):
            return False
        if tr.agent.num_updates == 0 and not tr.agent.encoder.fitted:
            tr.agent.encoder.fit(tr._all_states())
        metrics = tr.agent.update(self.batches)
        if tr.agent.num_updates % 100 == 0:
            for k, v in metrics.items():
                self.writer.add_scalar(f"learner/{k}", v, tr.step)
        return True

    def serve(self, address: str, key: bytes, connect_timeout: float = 600.0) -> int:
        """Connect to the actor (retrying while it is away) and train until it reports ``done``."""
        while True:
            conn = self._connect(address, key, connect_timeout)
            if conn is None:
                self.log(f"no actor at {address} for {connect_timeout:.0f} s; stopping")
                return 1
            ch = Channel(conn)
            self.log("connected to the actor")
            try:
                while not ch.closed:
                    msg = ch.recv(timeout=0.0 if self._learn() else 0.02)
                    while msg is not None:
                        if self._handle(msg, ch):
                            return 0
                        msg = ch.recv()
                    self._send_weights(ch)
                self.log(f"actor connection lost ({ch.error}); waiting for it to return")
            finally:
                ch.close()

    def _connect(self, address: str, key: bytes, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return Client(address, family="AF_UNIX", authkey=key)
            except (OSError, EOFError):
                time.sleep(0.2)
        return None

    def close(self) -> None:
        self.writer.close()
        self.trainer.plot_curve()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="robot_rl learner process (started by the async runtime)")
    p.add_argument("run_dir", type=Path)
    args = p.parse_args(argv)
    learner = Learner(args.run_dir)
    try:
        return learner.serve(runtime_address(args.run_dir), runtime_key(args.run_dir))
    except KeyboardInterrupt:
        learner.log("interrupted")
        return 130
    finally:
        learner.close()


if __name__ == "__main__":
    sys.exit(main())
