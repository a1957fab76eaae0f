"""The actor process: drives the robot (or the sim) with the latest policy weights and records everything.

Each control step: apply the newest weights that arrived (between steps, never mid-step), act, step the env, stream
the transition to the learner. Each finished episode is appended to ``<run_dir>/online.zarr`` before the learner
hears of it, so the store is the record of truth and a learner crash loses nothing.

Safety: the actor never waits for the learner, but it will not drive the robot with a policy that is too old. With
no weights yet, or when ``runtime.max_weight_lag_steps`` control steps have passed since the last weights arrived
(the learner died or stalled), it *holds*: it stops stepping the env (a real robot's watchdog then holds the arm;
the sim simply does not advance) and waits for fresh weights, logging why.

Connections come from a transport (:mod:`robot_rl.runtime.transport`, ``runtime.transport``): a Unix socket on one
machine, or ROS2 topics (``runtime=ros2``), where the learner may run on another machine. On every new learner
connection the actor sends ``hello`` {store_episodes} and streams nothing until the learner answers ``sync``
{episodes it holds, raw}; it then replays the stored episodes the learner lacks (from the store: raw observations),
then its running episode, then streams live. Steps carry the featurized observations (cameras as frozen-trunk maps,
a fifth of the bytes), or the raw ones when the learner asked for ``raw`` (it keeps a replica of the store). A
malformed message from the learner (:class:`~robot_rl.runtime.messages.MessageError`; weights whose names, shapes or
dtypes are not this policy's) is logged and drops the connection; the learner reconnects.

Run as ``python -m robot_rl.runtime.actor RUN_DIR [key=value ...]`` (the launcher does; ``key=value`` overrides
entries of ``<run_dir>/config.yaml``), or as the ROS2 node ``robot-rl-actor`` (:mod:`hw.nodes.actor`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from robot_rl.rewards.refine import record_refinements
from robot_rl.runtime.messages import MessageError, check_arrays, decode, encode, join_obs
from robot_rl.runtime.transport import PeerChannel, Transport, make_transport
from robot_rl.utils.config import load_run_config, run_process_args
from robot_rl.utils.signals import StopRequest, ctrl_c_stops


class Actor:
    """Drives the env with the newest weights; ``transport``: how learners reach it (default: ``runtime.transport``
    of the run's config)."""

    def __init__(self, run_dir: Path, overrides: Sequence[str] = (), transport: Transport | None = None):
        import torch

        from robot_rl.agents.sac import SAC, SACConfig
        from robot_rl.collect import Collector, make_training_env, open_online_store
        from robot_rl.envs.make import control_dt, find_wrapper
        from robot_rl.rewards.wrapper import RewardWrapper
        from robot_rl.utils.perf import set_threads

        self.run_dir = Path(run_dir)
        self.stop = StopRequest()
        self.cfg = cfg = load_run_config(self.run_dir, overrides)
        rt = cfg.runtime
        set_threads(int(rt.actor_threads))
        torch.manual_seed(int(cfg.seed) + 7)
        self.env = make_training_env(cfg)
        self.reward = find_wrapper(self.env, RewardWrapper)  # a learned reward, retrained here with reward.refine
        if self.reward is not None and (self.run_dir / "reward_model").exists():  # a restarted actor goes on with it
            self.reward.load_weights(self.run_dir / "reward_model")
        self._refinements_logged = 0
        self.dt = control_dt(self.env)
        agent_cfg = {**OmegaConf.to_container(cfg.agent, resolve=True), "device": str(rt.actor_device)}
        self.agent = SAC(self.env.observation_space, self.env.action_space, SACConfig.from_dict(agent_cfg))
        self.store = open_online_store(self.run_dir, self.env)
        self.steps, self.episodes = self.store.num_steps, len(self.store)
        self.total = int(cfg.total_steps)
        self.max_lag = int(rt.max_weight_lag_steps)
        self.pace = bool(rt.get("real_time", False))
        self.collector = Collector(self.env, task=str(cfg.task.name), store=self.store, featurize=self.agent.featurize)
        self.version, self.steps_at_weights = -1, 0
        self.holding: str | None = None
        self.transport = transport if transport is not None else make_transport(rt, self.run_dir, "actor")
        self.ch: PeerChannel | None = None
        self.synced = False  # the current learner answered hello with sync: stream to it
        self._ch_version = -1  # newest weights version applied from the current learner
        self.raw_obs = False  # the current learner wants raw observations (it keeps a replica store)
        self.weight_updates = 0  # weight messages applied
        # what a weights message must hold: this policy's names, shapes and dtypes as they arrive (0-d as [1])
        ours = decode(encode("weights", {"version": 0}, self.agent.policy_weights())).arrays
        self._weights_spec = {k: [(v.shape, v.dtype)] for k, v in ours.items()}
        self._reported: PeerChannel | None = None  # the closed channel whose loss was last logged
        # env errors that mean "the robot's data stopped" (e.g. hw.ros_env.StaleDataError): the running episode is
        # filed as cut and the env reset (retried) instead of ending the actor
        self.recoverable = tuple(_import_class(name) for name in rt.get("recoverable_errors", None) or ())
        self._pending: list[dict[str, Any]] = []  # step messages of the running episode, for a (re)connecting learner
        # each reset its own seed (episode_seed of the run's seed and the count of resets, which starts at the
        # episodes already stored): a restarted actor does not replay old episodes
        self._resets = self.episodes

    @staticmethod
    def log(msg: str) -> None:
        print(f"[actor] {msg}", flush=True)

    # ------------------------------------------------------------------------------------------ connections
    def _poll_connection(self) -> None:
        ch = self.transport.accept()
        if ch is None:
            return
        if self.ch is not None:
            self.ch.close()
        self.ch, self.synced, self._ch_version, self.raw_obs = ch, False, -1, False
        # A new learner: tell it what the store holds; stream nothing until it answers with sync.
        ch.send("hello", {"store_episodes": self.episodes, "store_steps": self.steps})
        self.log("learner connected")

    def _step_msg(self, entry: dict[str, Any]) -> dict[str, Any]:
        """A running-episode entry -> the arrays of its ``step`` message (raw or featurized observations)."""
        o, no = (entry["obs"], entry["next_obs"]) if self.raw_obs else (entry["fobs"], entry["next_fobs"])
        return {**join_obs(o, "obs"), **join_obs(no, "next_obs"), **entry["rest"]}

    def _replay(self, ch: PeerChannel, held: int) -> None:
        """The learner holds ``held`` episodes: send the stored episodes [held, ours) from the store (raw
        observations; the learner featurizes), then the running episode's steps, and stream live from here on."""
        if held > self.episodes:
            self.log(
                f"the learner holds {held} episodes but the store has {self.episodes}: a different run? "
                "dropping the connection"
            )
            ch.close()
            return
        if held < self.episodes:
            from robot_rl.data.store import EpisodeStore

            with EpisodeStore.open(self.run_dir / "online.zarr") as store:
                for i, ep in enumerate(store.iter_episodes(held, self.episodes), start=held):
                    obs, final = ep["obs"], ep["final_obs"]
                    n = len(ep["action"])
                    for t in range(n):
                        nxt = {k: v[t + 1] for k, v in obs.items()} if t + 1 < n else final
                        ch.send(
                            "step",
                            arrays={
                                **join_obs({k: v[t] for k, v in obs.items()}, "obs"),
                                **join_obs(nxt, "next_obs"),
                                "action": ep["action"][t],
                                "reward": ep["reward"][t],
                                "terminated": ep["terminated"][t],
                                "truncated": ep["truncated"][t],
                                "is_intervention": ep["is_intervention"][t],
                                "timestamp": np.float64(ep["timestamp"][t]),
                            },
                        )
                    meta = ep["metadata"]
                    ch.send(
                        "episode_end",
                        {
                            "steps": n,
                            "store_episodes": i + 1,
                            "replay": True,
                            "success": bool(meta["success"]),
                            "source": meta["source"],
                            "notes": meta["notes"],
                            "version": -1,
                            "stats": {},
                        },
                    )
            self.log(f"replayed stored episodes {held}..{self.episodes - 1} to the learner")
        for entry in self._pending:
            ch.send("step", arrays=self._step_msg(entry))
        self.synced = True

    def _poll_messages(self) -> bool:
        """Apply the newest weights received; True if the learner asked us to stop."""
        if self.ch is None:
            return False
        newest, stop = None, False
        while (msg := self.ch.recv()) is not None:
            if msg.kind == "weights":
                try:
                    check_arrays(msg.arrays, self._weights_spec, "weights", finite=True)  # never drive with NaN
                except MessageError as e:
                    self.ch.close()
                    self._reported = self.ch
                    self.log(f"rejected weights v{msg.meta['version']} from the learner ({e}); dropped the connection")
                    newest = None
                    break
                newest = msg
            elif msg.kind == "stop":
                stop = True
            elif msg.kind == "sync":
                self.raw_obs = bool(msg.meta.get("raw", False))
                self._replay(self.ch, int(msg.meta["episodes"]))
                if self.ch.closed:
                    break
        if self.ch.closed and self._reported is not self.ch:  # e.g. a malformed message: the learner will reconnect
            self._reported = self.ch
            self.log(f"learner connection lost ({self.ch.error}); waiting for it to reconnect")
        # versions count the sending learner's updates: a restarted learner (resumed from its last checkpoint) may
        # start below what its predecessor sent, so they are compared within one connection only
        if newest is not None and int(newest.meta["version"]) >= self._ch_version:
            import torch

            self.agent.load_policy_weights({k: torch.from_numpy(v) for k, v in newest.arrays.items()})
            self.version, self.steps_at_weights = int(newest.meta["version"]), self.steps
            self._ch_version = self.version
            self.weight_updates += 1
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
        """Collect until ``total_steps``; 0 when done, 130 when stopped. Ctrl+C and SIGTERM stop it between control
        steps and in its waits (:class:`~robot_rl.utils.signals.StopRequest`), never in the middle of a call into the
        env or the transport."""
        with self.stop.installed():
            return self._run()

    def _run(self) -> int:
        self.transport.listen()
        self.log(f"listening for the learner on {self.transport.describe()}")
        collector = self.collector  # cameras go through the frozen trunk once per frame there: to act and to send
        try:
            self._reset()
            while self.steps < self.total or len(collector):  # ends with an episode, like the one-process loop
                self.stop.check()
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
                try:
                    step = collector.step(self.agent.act(collector.fobs))
                except self.recoverable as e:  # the robot's data stopped: cut the episode, wait for it, reset
                    cut = f"cutting the episode ({len(collector)} steps)" if len(collector) else "nothing to cut"
                    self.log(f"the env stalled ({type(e).__name__}: {str(e).splitlines()[0]}); {cut}; resetting")
                    if len(collector):
                        self._finish(False, cut=True, notes=f"cut short: the env stalled ({type(e).__name__})")
                    self._reset()
                    continue
                entry = {
                    "obs": step.obs,
                    "next_obs": step.next_obs,
                    "fobs": step.fobs,
                    "next_fobs": step.next_fobs,
                    "rest": {
                        "action": step.action,
                        "reward": np.float32(step.reward),
                        "terminated": np.bool_(step.terminated),
                        "truncated": np.bool_(step.truncated),
                        "is_intervention": np.bool_(step.is_intervention),
                        "timestamp": np.float64(step.timestamp),
                        "policy_action": step.policy_action,
                    },
                }
                self._pending.append(entry)
                if self.ch is not None and self.synced:
                    self.ch.send("step", arrays=self._step_msg(entry))
                self.steps += 1
                if step.done:
                    self._finish(bool(step.info["success"]))
                    self._reset()
                if self.pace:
                    time.sleep(max(0.0, self.dt - (time.monotonic() - t0)))
            if self.ch is not None:
                self._await_stop(timeout=float(self.cfg.runtime.get("stop_timeout_s", 600)))
            self.log(
                f"finished: {self.steps} steps, {self.episodes} episodes in the store; {self.weight_updates} "
                f"weight updates applied, newest v{self.version}"
            )
            return 0
        except KeyboardInterrupt:
            self.log("interrupted")
            return 130
        finally:
            if collector.close("cut short: actor stopped mid-episode") is not None:
                self.episodes += 1
            self.store.close()
            if self.ch is not None:
                self.ch.flush(2.0)
                self.ch.close()
            self.transport.close()
            self.env.close()

    def _reset(self) -> None:
        """Start the next episode with its own seed; while the env fails with a recoverable error (the robot is not
        answering), log and retry every 2 s."""
        from robot_rl.collect import episode_seed

        seed = episode_seed(int(self.cfg.seed), self._resets)
        self._resets += 1
        while True:
            try:
                self.collector.reset(seed=seed)
                return
            except self.recoverable as e:
                self.log(f"the env did not reset ({type(e).__name__}: {str(e).splitlines()[0]}); retrying in 2 s")
                self._poll_connection()
                time.sleep(2.0)
                self.stop.check()

    def _finish(self, success: bool, cut: bool = False, notes: str = "") -> None:
        """File the running episode (``cut``: stopped early, its last step marked truncated) and tell the learner,
        with its :func:`~robot_rl.collect.episode_metrics`."""
        from robot_rl.collect import episode_metrics

        c = self.collector.finish(success, cut=cut, notes=notes)
        self.episodes += 1
        self._pending = []
        if self.reward is not None:
            self._refinements_logged = record_refinements(self.reward.refiner, self.run_dir, self._refinements_logged)
        stats = episode_metrics(c.episode, success, c.reward_stats, self.steps - self.steps_at_weights)
        if self.ch is not None and self.synced:
            self.ch.send(
                "episode_end",
                {
                    "steps": c.steps,
                    "store_episodes": self.episodes,
                    "success": success,
                    "source": c.source,
                    "cut": cut,
                    "notes": notes,
                    "version": self.version,
                    "stats": stats,
                },
            )

    def _await_stop(self, timeout: float) -> None:
        """Tell the learner we are done and wait for its final evaluation and checkpoint (it answers ``stop``), or
        for ``timeout`` s; a learner that (re)connects meanwhile is synced and told too."""
        deadline = time.monotonic() + timeout
        told = None
        while time.monotonic() < deadline:
            self.stop.check()
            self._poll_connection()
            ch = self.ch
            if ch is None:
                time.sleep(0.2)
                continue
            if self.synced and told is not ch:
                ch.send("done", {"steps": self.steps})
                told = ch
            msg = ch.recv(timeout=0.2)
            if msg is None:
                if ch.closed:
                    time.sleep(0.2)
            elif msg.kind == "stop":
                return
            elif msg.kind == "sync":
                self.raw_obs = bool(msg.meta.get("raw", False))
                self._replay(ch, int(msg.meta["episodes"]))


def _import_class(name: str) -> type:
    """``"package.module.Class"`` -> the class (an exception type named in the config)."""
    import importlib

    module, _, cls = name.rpartition(".")
    try:
        out = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(f"runtime.recoverable_errors: cannot import {name!r} ({e})") from None
    if not (isinstance(out, type) and issubclass(out, Exception)):
        raise ValueError(f"runtime.recoverable_errors: {name!r} is not an exception type")
    return out


def main(argv: list[str] | None = None) -> int:
    run_dir, overrides = run_process_args("actor", argv)
    ctrl_c_stops()
    return Actor(run_dir, overrides).run()


if __name__ == "__main__":
    sys.exit(main())
