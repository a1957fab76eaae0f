"""Frames of an episode store, their success labels, and episode-level splits.

Frames. An episode of ``T`` transitions has ``T + 1`` frames: its observations ``obs[0..T-1]`` and the final
observation ``final_obs`` as frame ``T``. Frame ``t + 1`` is transition ``t``'s next observation, the frame a reward
for that transition is computed from. Frames are numbered globally as ``frame_id = first_step(e) + e + t``, so the
numbering of earlier episodes never changes when episodes are appended.

Labelling rule (:class:`LabelRule`), per frame: ``1`` success, ``0`` not, ``-1`` left out.

* Marked frames are positives. A mark says "transition ``t``'s next frame shows success" and comes from (a) a
  per-step label set named by ``marks`` (a column ``success``, non-zero = mark), (b) ``reward_marks``: transitions
  whose stored reward is at least this (e.g. 1.0 for the sim's sparse reward), or (c) an episode's notes, when they
  are a JSON object with ``"success_steps": [t, ...]``.
* In a successful episode the last ``positive_last_k`` frames (the final observation included) are positives: the
  operator (or the env) ended it in the success state. The ``margin`` frames before them are left out (the object
  is nearly there: neither class is certain). The earlier frames are negatives.
* Every unmarked frame of a failed episode is a negative.

The split (:func:`split_episodes`) is by episode, stratified by episode success, so no episode contributes frames to
both training and validation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from robot_rl.data.store import EpisodeStore
from robot_rl.rewards.base import RewardDataError, check_cameras


@dataclass
class LabelRule:
    """How frames of a store get success labels (see the module docstring). ``positive_last_k`` >= 1 frames,
    ``margin`` >= 0 frames, ``marks``: a per-step label set name or None, ``reward_marks``: reward threshold or
    None."""

    positive_last_k: int = 3
    margin: int = 2
    marks: str | None = None
    reward_marks: float | None = None

    def __post_init__(self) -> None:
        if int(self.positive_last_k) < 1 or int(self.margin) < 0:
            raise ValueError(f"positive_last_k={self.positive_last_k} must be >= 1 and margin={self.margin} >= 0")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> LabelRule:
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def episode_labels(length: int, success: bool, marks: np.ndarray | None, rule: LabelRule) -> np.ndarray:
    """Labels of one episode's ``length + 1`` frames (int8: 1 success, 0 not, -1 left out).

    ``marks``: (length,) bool, transition ``t`` marks frame ``t + 1``, or None."""
    n = length + 1
    lab = np.zeros(n, dtype=np.int8)
    if success:
        k = min(int(rule.positive_last_k), n)
        lab[n - k :] = 1
        lab[max(0, n - k - int(rule.margin)) : n - k] = -1
    if marks is not None and np.any(marks):
        lab[1:][np.asarray(marks, dtype=bool)] = 1
    return lab


@dataclass
class StoreFrames:
    """Frames of some episodes of a store (``F`` frames in all).

    ``images``: {camera: uint8 (F, H, W, 3)}; ``episode``: (F,) int64 episode index; ``t``: (F,) int64 frame index
    within its episode (0..T); ``frame_id``: (F,) int64 global frame number; ``label``: (F,) int8 (see the module
    docstring); ``episodes``: (E',) the episode indices included; ``episode_success``: (E',) bool.
    """

    images: dict[str, np.ndarray]
    episode: np.ndarray
    t: np.ndarray
    frame_id: np.ndarray
    label: np.ndarray
    episodes: np.ndarray
    episode_success: np.ndarray

    def __len__(self) -> int:
        return len(self.episode)

    @property
    def cameras(self) -> list[str]:
        return sorted(self.images)

    @property
    def image_shapes(self) -> dict[str, tuple[int, int, int]]:
        return {c: tuple(int(d) for d in x.shape[1:]) for c, x in self.images.items()}  # type: ignore[misc]

    def subset(self, mask: np.ndarray) -> StoreFrames:
        """The frames where ``mask`` (F,) is true (episode lists restricted to the episodes left)."""
        eps = np.unique(self.episode[mask])
        keep = np.isin(self.episodes, eps)
        return StoreFrames(
            {c: x[mask] for c, x in self.images.items()},
            self.episode[mask],
            self.t[mask],
            self.frame_id[mask],
            self.label[mask],
            self.episodes[keep],
            self.episode_success[keep],
        )

    def of_episodes(self, episodes: Sequence[int]) -> StoreFrames:
        return self.subset(np.isin(self.episode, np.asarray(episodes)))


def store_cameras(store: EpisodeStore) -> dict[str, tuple[int, int, int]]:
    """Camera name -> (H, W, 3) of the store's uint8 image observations."""
    return {k: tuple(s) for k, (s, d) in store.schema.obs.items() if d == "uint8" and len(s) == 3 and s[-1] == 3}


def _marks_from_notes(notes: str, length: int) -> np.ndarray | None:
    try:
        d = json.loads(notes)
    except (ValueError, TypeError):
        return None
    steps = d.get("success_steps") if isinstance(d, dict) else None
    if not isinstance(steps, list):
        return None
    m = np.zeros(length, dtype=bool)
    for s in steps:
        if isinstance(s, int) and 0 <= s < length:
            m[s] = True
    return m


def load_frames(
    store: EpisodeStore,
    cameras: Sequence[str] | None = None,
    rule: LabelRule | None = None,
    episodes: Sequence[int] | None = None,
) -> StoreFrames:
    """Read the frames of ``episodes`` (default: all) for ``cameras`` (default: every camera of the store) and
    label them with ``rule`` (default :class:`LabelRule`). Raises :class:`RewardDataError` naming missing cameras,
    cameras of different sizes, or a ``marks`` label set that the store lacks or that does not cover it."""
    rule = rule or LabelRule()
    avail = store_cameras(store)
    cams = sorted(cameras) if cameras else sorted(avail)
    if not cams:
        raise RewardDataError(f"{store.root}: the store has no camera observations (record with obs=pixels)")
    check_cameras(avail, list(cams), f"store {store.root}")
    eps = np.arange(len(store)) if episodes is None else np.asarray(sorted(set(int(e) for e in episodes)))
    if len(eps) == 0:
        raise RewardDataError(f"{store.root}: no episodes to read")
    mark_steps = None
    if rule.marks:
        if rule.marks not in store.label_names():
            raise RewardDataError(
                f"{store.root}: no label set {rule.marks!r} for marks (it has {store.label_names() or 'none'})"
            )
        lab = store.read_labels(rule.marks)
        if "success" not in lab:
            raise RewardDataError(f"label set {rule.marks!r} has no 'success' column (columns {sorted(lab)})")
        mark_steps = np.asarray(lab["success"]) != 0
    imgs: dict[str, list[np.ndarray]] = {c: [] for c in cams}
    ep_col, t_col, fid, labels, succ = [], [], [], [], []
    ends = store.episode_ends
    wanted = set(int(e) for e in eps)
    for ep in store.iter_episodes(int(eps[0]), int(eps[-1]) + 1):
        meta = ep["metadata"]
        e = int(meta["episode"])
        if e not in wanted:
            continue
        T, first = meta["length"], meta["first_step"]
        marks = None
        if mark_steps is not None:
            if ends[e] > len(mark_steps):
                raise RewardDataError(
                    f"label set {rule.marks!r} covers {len(mark_steps)} steps; episode {e} ends at step {ends[e]}"
                )
            marks = mark_steps[first : first + T].copy()
        if rule.reward_marks is not None:
            rm = np.asarray(ep["reward"]) >= float(rule.reward_marks)
            marks = rm if marks is None else marks | rm
        nm = _marks_from_notes(meta["notes"], T)
        if nm is not None:
            marks = nm if marks is None else marks | nm
        for c in cams:
            imgs[c].append(np.concatenate([ep["obs"][c], ep["final_obs"][c][None]]))
        ep_col.append(np.full(T + 1, e, dtype=np.int64))
        t_col.append(np.arange(T + 1, dtype=np.int64))
        fid.append(first + int(e) + np.arange(T + 1, dtype=np.int64))
        labels.append(episode_labels(T, bool(meta["success"]), marks, rule))
        succ.append(bool(meta["success"]))
    return StoreFrames(
        {c: np.concatenate(v) for c, v in imgs.items()},
        np.concatenate(ep_col),
        np.concatenate(t_col),
        np.concatenate(fid),
        np.concatenate(labels),
        eps.astype(np.int64),
        np.asarray(succ, dtype=bool),
    )


def split_episodes(
    episodes: np.ndarray, success: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Episode-level split, stratified by episode success: ``(train, validation)`` episode index arrays.

    Each class keeps ``round(val_fraction * n)`` episodes for validation, at least one when it has two or more
    (and none when ``val_fraction`` is 0)."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction} must lie in [0, 1)")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for cls in (True, False):
        eps = np.asarray(episodes)[np.asarray(success) == cls]
        eps = eps[rng.permutation(len(eps))]
        k = int(round(val_fraction * len(eps)))
        if val_fraction > 0 and len(eps) >= 2:
            k = min(max(k, 1), len(eps) - 1)
        val.append(eps[:k])
        train.append(eps[k:])
    return np.sort(np.concatenate(train)).astype(np.int64), np.sort(np.concatenate(val)).astype(np.int64)


def count_labels(frames: StoreFrames) -> dict[str, int]:
    """Frame and episode counts per class: positives, negatives, left out, episodes, successful episodes."""
    return {
        "positives": int(np.sum(frames.label == 1)),
        "negatives": int(np.sum(frames.label == 0)),
        "left_out": int(np.sum(frames.label < 0)),
        "episodes": int(len(frames.episodes)),
        "successful_episodes": int(np.sum(frames.episode_success)),
    }
