"""The actor process: drives the robot (or the sim) with the latest policy weights and records everything.

Each control step: apply the newest weights that arrived (between steps, never mid-step), act, step the env, stream
the transition to the learner. Each finished episode is appended to ``<run_dir>/online.zarr`` before the learner
hears of it, so the store is the record of truth and a learner crash loses nothing.

Safety: the actor never waits for the learner, but it will not drive the robot with a policy that is too old. With
no weights yet, or when ``runtime.max_weight_lag_steps`` control steps have passed since the last weights arrived
(the learner died or stalled), it *holds*: it stops stepping the env (a real robot's watchdog then holds the arm;
the sim simply does not advance) and waits for fresh weights, logging why.

Run as ``python -m robot_rl.runtime.actor RUN_DIR`` (the launcher does).
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import sys
import threading
import time
from multiprocessing.connection import Listener
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from robot_rl.runtime.launch import runtime_address, runtime_key
from robot_rl.runtime.messages import Channel, join_obs


class Actor:
    def __init__(self, run_dir: Path):
        import torch

        from robot_rl.agents.sac import SAC, SACConfig
        from robot_rl.data.episode import EpisodeBuilder
        from robot_rl.envs.make import control_dt
        from robot_rl.trainer import make_training_env, open_online_store, set_threads

        self.run_dir = Path(run_dir)
        self.cfg = cfg = OmegaConf.load(self.run_dir / "config.yaml")
        rt = cfg.runtime
        set_threads(int(rt.actor_threads))
        torch.manual_seed(int(cfg.seed) + 7)
        self.env = make_training_env(cfg)
        self.dt = control_dt(self.env)
        agent_cfg = {**OmegaConf.to_container(cfg.agent, resolve=True), "device": str(rt.actor_device)}
        self.agent = SAC(self.env.observation_space, self.env.action_space, SACConfig.from_dict(agent_cfg))
        self.store = open_online_store(self.run_dir, self.env)
        self.steps, self.episodes = self.store.num_steps, len(self.store)
        self.total = int(cfg.total_steps)
        self.max_lag = int(rt.max_weight_lag_steps)
        self.pace = bool(rt.get("real_time", False))
        self.episode = EpisodeBuilder()
        self.version, self.steps_at_weights = -1, 0
        self.holding: str | None = None
        self.ch: Channel | None = None
        self._conns: queue.Queue = queue.Queue()
        self._closing = False
        self._pending: list[dict[str, Any]] = []  # step messages of the running episode, for a (re)connecting learner
        self._seed = int(cfg.seed) + 17 * (self.episodes + 1)  # a restarted actor does not replay old episodes

    @staticmethod
    def log(msg: str) -> None:
        print(f"[actor] {msg}", flush=True)

    # ------------------------------------------------------------------------------------------ connections
    def _accept_forever(self, listener: Listener) -> None:
        while True:
            try:
                self._conns.put(listener.accept())
            except (OSError, EOFError):  # a bad handshake (wrong key) or the listener closed
                if self._closing:
                    return

    def _poll_connection(self) -> None:
        try:
            conn = self._conns.get_nowait()
        except queue.Empty:
            return
        if self.ch is not None:
            self.ch.close()
        self.ch = Channel(conn)
        # A new learner: tell it what the store holds, then replay the running episode it has not seen.
        self.ch.send("hello", {"store_episodes": self.episodes, "store_steps": self.steps})
        for msg in self._pending:
            self.ch.send("step", arrays=msg)
        self.log("learner connected")

    def _poll_messages(self) -> bool:
        """Apply the newest weights received; True if the learner asked us to stop."""
        if self.ch is None:
            return False
        newest, stop = None, False
        while (msg := self.ch.recv()) is not None:
            if msg.kind == "weights":
                newest = msg
            elif msg.kind == "stop":
                stop = True
        if newest is not None and int(newest.meta["version"]) >= self.version:
            import torch

            self.agent.load_policy_weights({k: torch.from_numpy(v) for k, v in newest.arrays.items()})
            self.version, self.steps_at_weights = int(newest.meta["version"]), self.steps
            if self.holding:
                self.log(f"weights v{self.version} arrived; resuming")
                self.holding = None
        return stop

    def _hold_reason(self) -> str | None:
        if self.version < 0:
            return "no policy weights yet"
        lag = self.steps - self.steps_at_weights
        if lag > self.max_lag:
            return f"weights are {lag} control steps old (limit {self.max_lag}): the learner is gone or stalled"
        return None

    # ------------------------------------------------------------------------------------------------ loop
    def run(self) -> int:
        address, key = runtime_address(self.run_dir), runtime_key(self.run_dir)
        if os.path.exists(address):
            os.unlink(address)
        listener = Listener(address, family="AF_UNIX", authkey=key)
        threading.Thread(target=self._accept_forever, args=(listener,), daemon=True).start()
        obs, _ = self.env.reset(seed=self._seed)
        fobs = self.agent.featurize(obs)  # cameras through the frozen trunk once per frame: to act and to send
        t_ep = 0
        try:
            while self.steps < self.total or len(self.episode):  # ends with an episode, like the one-process loop
                self._poll_connection()
                if self._poll_messages():
                    break
                reason = self._hold_reason()
                if reason:
                    if reason != self.holding:
                        self.log(f"holding: {reason}")
                        self.holding = reason
                    time.sleep(self.dt)
                    continue
                t0 = time.monotonic()
                action = self.agent.act(fobs)
                next_obs, reward, terminated, truncated, info = self.env.step(action)
                action = np.asarray(info.get("executed_action", action), np.float32)
                human = bool(info.get("is_intervention", False))
                self.episode.add(obs, action, reward, terminated, truncated, next_obs, human, timestamp=self.dt * t_ep)
                next_fobs = self.agent.featurize(next_obs)
                msg = {**join_obs(fobs, "obs"), **join_obs(next_fobs, "next_obs"), "action": action,
                       "reward": np.float32(reward), "terminated": np.bool_(terminated),
                       "truncated": np.bool_(truncated), "is_intervention": np.bool_(human),
                       "timestamp": np.float64(self.dt * t_ep)}
                self._pending.append(msg)
                if self.ch is not None:
                    self.ch.send("step", arrays=msg)
                self.steps += 1
                t_ep += 1
                obs, fobs = next_obs, next_fobs
                if terminated or truncated:
                    self._finish(bool(info["success"]), info)
                    self._seed += 1
                    obs, _ = self.env.reset(seed=self._seed)
                    fobs = self.agent.featurize(obs)
                    t_ep = 0
                if self.pace:
                    time.sleep(max(0.0, self.dt - (time.monotonic() - t0)))
            if self.ch is not None:
                self.ch.send("done", {"steps": self.steps})
                self._await_stop(timeout=float(self.cfg.runtime.get("stop_timeout_s", 600)))
            return 0
        except KeyboardInterrupt:
            self.log("interrupted")
            return 130
        finally:
            if len(self.episode):  # stopped mid-episode: keep it, cut (it bootstraps)
                self.store.append_episode(**self.episode.build(cut=True), success=False, source="policy",
                                          task=str(self.cfg.task.name), notes="cut short: actor stopped mid-episode")
            self.store.close()
            self._closing = True
            listener.close()
            if self.ch is not None:
                self.ch.flush(2.0)
                self.ch.close()
            self.env.close()

    def _finish(self, success: bool, info: dict) -> None:
        episode = self.episode.build()
        human = bool(np.any(episode["is_intervention"]))
        self.store.append_episode(**episode, success=success, source="intervention" if human else "policy",
                                  task=str(self.cfg.task.name))
        self.episodes += 1
        self.episode.clear()
        self._pending = []
        stats = {"episode_success": float(success), "episode_length": len(episode["action"]),
                 "intervention_rate": float(np.mean(episode["is_intervention"])),
                 "weight_lag_steps": self.steps - self.steps_at_weights}
        if self.ch is not None:
            self.ch.send("episode_end", {"steps": len(episode["action"]), "store_episodes": self.episodes,
                                         "success": success, "version": self.version, "stats": stats})

    def _await_stop(self, timeout: float) -> None:
        """Wait for the learner's final evaluation and checkpoint (it answers ``stop``), or for it to go away."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ch = self.ch
            msg = ch.recv(timeout=0.2) if ch is not None else None
            if msg is not None and msg.kind == "stop":
                return
            self._poll_connection()
            if self.ch is not ch:  # a learner (re)connected after we finished: tell it too
                self.ch.send("done", {"steps": self.steps})


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="robot_rl actor process (started by the async runtime)")
    p.add_argument("run_dir", type=Path)
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    return Actor(args.run_dir).run()


if __name__ == "__main__":
    sys.exit(main())
