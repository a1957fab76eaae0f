"""Offline labelling of a store with a reward model, cached in the store's label sets, and relabelled copies.

:func:`score_store` gives every step of a store the model's score of that transition's next observation (the frame
a reward is computed from), reading cached scores from the label set ``<kind>-<identity hash>`` and scoring, then
appending, only episodes past its end. A second call with the same model therefore makes no model call, and a store
that grew costs only its new episodes. :func:`write_relabelled_store` writes a copy of a store with rewards (and
optionally success flags) replaced: offline RL from learned rewards without touching the original episodes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.data.store import EpisodeStore, StoreError
from robot_rl.rewards.base import RewardModel
from robot_rl.rewards.frames import store_cameras


def next_frames(ep: dict[str, Any], cameras: list[str]) -> dict[str, np.ndarray]:
    """An episode's next observations per camera: {camera: (T, H, W, 3)} (rows 1..T-1 then the final one)."""
    return {c: np.concatenate([ep["obs"][c][1:], ep["final_obs"][c][None]]) for c in cameras}


def score_store(
    store: EpisodeStore,
    model: RewardModel,
    batch: int = 64,
    cache: bool = True,
    log: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-step scores ``(num_steps,)`` float64 of ``model`` on ``store`` and ``{"label_set", "cached_steps",
    "scored_steps", "model_calls"}``. ``cache``: read and extend the store's label set (a store that cannot be
    written is scored without caching, with a warning)."""
    model.check_frames(store_cameras(store), f"store {store.root}")
    name = model.label_name()
    have = np.zeros(0, dtype=np.float32)
    if cache and name in store.label_names():
        have = store.read_labels(name)["score"]
    have = have[: store.num_steps]
    ends = store.episode_ends
    first_ep = int(np.searchsorted(ends, len(have), side="right"))
    if len(have) and (first_ep == 0 or ends[first_ep - 1] != len(have)):  # not on an episode end: ignore it
        have, first_ep = np.zeros(0, np.float32), 0
    new, calls = [], 0
    for ep in store.iter_episodes(first_ep):
        frames = next_frames(ep, model.cameras)
        t = len(ep["reward"])
        out = np.empty(t, dtype=np.float64)
        for a in range(0, t, batch):
            out[a : a + batch] = model.score({c: x[a : a + batch] for c, x in frames.items()})
            calls += 1
        new.append(out)
    scored = np.concatenate(new) if new else np.zeros(0)
    if cache and len(scored):
        try:
            store.append_labels(name, {"score": scored.astype(np.float32)}, per_step=True, meta=model.identity())
        except (OSError, StoreError) as exc:
            warnings.warn(f"{store.root}: scores not cached ({exc})", stacklevel=2)
    if log:
        log(f"{name}: {len(have)} steps from the cache, {len(scored)} scored ({calls} model calls)")
    scores = np.concatenate([have.astype(np.float64), scored])
    return scores, {
        "label_set": name,
        "cached_steps": int(len(have)),
        "scored_steps": int(len(scored)),
        "model_calls": calls,
    }


def write_relabelled_store(
    src: EpisodeStore, dst: str | Path, rewards: np.ndarray, success: np.ndarray | None = None, overwrite: bool = False
) -> EpisodeStore:
    """Copy ``src`` to a new store at ``dst`` with per-step ``rewards`` (num_steps,) and, if given, per-episode
    ``success`` (episodes,) replaced; everything else (observations, actions, flags, metadata) is copied as is.
    The notes of each episode keep their text. Returns the new store (open for appending)."""
    rewards = np.asarray(rewards, dtype=np.float32)
    if rewards.shape != (src.num_steps,):
        raise ValueError(f"rewards: shape {rewards.shape}, expected ({src.num_steps},)")
    if success is not None and np.shape(success) != (len(src),):
        raise ValueError(f"success: shape {np.shape(success)}, expected ({len(src)},)")
    out = EpisodeStore.create(dst, src.schema, overwrite=overwrite)
    for ep in src.iter_episodes():
        m = ep["metadata"]
        a = m["first_step"]
        out.append_episode(
            ep["obs"],
            ep["final_obs"],
            ep["action"],
            rewards[a : a + m["length"]],
            ep["terminated"],
            ep["truncated"],
            ep["is_intervention"],
            ep["timestamp"],
            success=bool(success[m["episode"]]) if success is not None else m["success"],
            source=m["source"],
            task=m["task"],
            notes=m["notes"],
            start_time=m["start_time"],
        )
    return out
