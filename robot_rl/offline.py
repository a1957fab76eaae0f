"""``robot-rl train-offline``: learn a policy from episode stores alone, with no env step taken.

Every episode of the ``data`` stores (successes and failures, demonstrations, earlier runs, corrections) goes whole
into the trainer's demo buffer, with its rewards from the store or, with a learned ``reward`` (``reward=classifier
reward.path=...``), relabelled by that model (its scores cached in each store's label sets, so a second run makes no
model call; :func:`robot_rl.rewards.labelling.score_store`). The agent is any loss of the SAC family: ``agent=iql``
or ``agent=calql`` (:mod:`robot_rl.agents.offline`). It trains for ``steps`` updates, evaluates the deterministic
policy in the task's simulator every ``eval.every`` updates and checkpoints like ``robot-rl train`` (``eval.jsonl``'s
``step`` counts updates here). ``robot-rl train init_from=<this run>`` continues online (README "Offline RL").
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.data.store import EpisodeStore
from robot_rl.evaluate import eval_summary


def offline_episodes(
    path: str | Path, reward_cfg: Mapping[str, Any] | None, model: Any = None, log: Any = None
) -> Iterator[dict[str, Any]]:
    """The episodes of the store at ``path`` with the rewards offline training uses: the store's own, or with
    ``model`` (a :class:`~robot_rl.rewards.base.RewardModel` that ``reward_cfg`` configures) the model's, decided
    frame by frame as the reward wrapper would live (threshold, consecutive frames; a declared success ends the
    episode there when ``terminate_on_success``). Raises ``ValueError`` naming the store for one that is
    empty or holds no reward signal while no model is given (a missing one: :class:`StoreError`)."""
    from robot_rl.rewards.labelling import score_store
    from robot_rl.rewards.wrapper import Relabeller, relabel_options

    with EpisodeStore.open(path) as store:
        if not len(store):
            raise ValueError(f"data store {path} holds no episode")
        if model is None:
            rewards = store.step_field("reward")
            if not np.any(rewards) and not any(store.metadata(i)["success"] for i in range(len(store))):
                raise ValueError(
                    f"data store {path} holds no reward signal (every reward is 0 and no episode succeeded): label "
                    "it with a reward model (reward=classifier reward.path=<robot-rl train-reward output>)"
                )
            yield from store.iter_episodes()
            return
        scores, _ = score_store(store, model, log=log)
        o = relabel_options(reward_cfg or {})
        decide = Relabeller(
            model, 1, o["reward"], o["threshold"], o["success_reward"], o["consecutive"], o["terminate_on_success"]
        )
        ends = store.episode_ends
        for i, ep in enumerate(store.iter_episodes()):
            first = int(ends[i - 1]) if i else 0
            decide.streak[:] = 0
            reward = np.zeros(len(ep["reward"]), dtype=np.float32)
            terminated = np.array(ep["terminated"], dtype=bool)
            for t in range(len(reward)):
                r, success, _ = decide.decide(scores[first + t : first + t + 1])
                reward[t] = r[0]
                if success[0] and decide.terminate:
                    terminated[t] = True
            yield {**ep, "reward": reward, "terminated": terminated}


def load_offline_data(trainer: Any, paths: Sequence[str | Path], log: Any = None) -> dict[str, Any]:
    """Every episode of ``paths`` into ``trainer``'s demo buffer (see :func:`offline_episodes`); refuses a store
    whose observations or actions do not match the task. Returns counts."""
    from robot_rl.rewards.wrapper import build_reward_model

    if not paths:
        raise ValueError("no data: give the stores to learn from, e.g. data=[runs/pick_cube/<run>/online.zarr]")
    reward_cfg = trainer.cfg.get("reward") or {}
    model = build_reward_model(reward_cfg, trainer.agent.device)
    episodes = steps = successes = 0
    for path in paths:
        if not Path(path).exists():
            raise ValueError(f"data store {path} does not exist")
        with EpisodeStore.open(path) as store:
            trainer.check_store(store, path)
        for ep in offline_episodes(path, reward_cfg, model, log):
            trainer.add_demo(ep)
            episodes, steps = episodes + 1, steps + len(ep["action"])
            successes += bool(np.any(ep["reward"] > 0)) if model is not None else bool(ep["metadata"]["success"])
    return {"episodes": episodes, "transitions": steps, "successes": successes, "relabelled_by": reward_cfg.get("name")}


def train_offline(cfg: Any, run_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Fill the buffers from ``cfg.data``, run ``cfg.steps`` updates with evaluations every ``cfg.eval.every``
    updates and a last one at the end; returns ``{"final", "run_dir", "data"}``. Ctrl+C stops it after the last
    checkpoint (no data is touched)."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    from robot_rl.trainer import Trainer

    tr = Trainer(cfg, run_dir)
    data = load_offline_data(tr, list(cfg.data), log=lambda m: print(m, file=sys.stderr))
    print(f"offline data: {data}", flush=True)
    total = int(cfg.steps)
    writer = SummaryWriter(str(run_dir / "tb"))
    batches = tr.batches()
    bar = tqdm(total=total, disable=not progress, unit="update", desc=f"{cfg.task.name}/{cfg.agent.name} offline")
    t0 = time.perf_counter()
    try:
        while tr.agent.num_updates < total:
            tr.learn(batches, writer)
            tr.step = tr.agent.num_updates  # the run's clock: updates (no env step is taken)
            bar.update(1)
            if tr.eval_due or tr.step >= total:
                tr.evaluate_and_checkpoint(writer)
                rate = tr.step / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix_str(f"{eval_summary(tr.history[-1])}, {rate:.0f} updates/s")
                if tr.target_reached():
                    break
    finally:
        bar.close()
        writer.close()
        tr.plot_curve()
    return {"final": tr.history[-1] if tr.history else {}, "run_dir": str(run_dir), "data": data}
