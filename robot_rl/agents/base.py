"""The agent interface: what training, collection, the async actor and learner, evaluation and the benchmarks use of a
learning agent, so that SAC/RLPD and later agents (offline IQL or Cal-QL, residual policies) fit behind them alike.

:class:`Agent` also carries the observation path every encoder-based agent shares: env observation -> buffer form
(:meth:`~Agent.featurize`, cached camera maps) -> features (:meth:`~Agent.encode`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from robot_rl.agents.encoders import Encoder

# obs: dict[str, Tensor], action (B, A), reward (B,), terminated (B,), next_obs: dict; optional keys per agent
Batch = dict[str, Any]


def config_from_dict(cls: type, d: Mapping[str, Any], what: str = "agent") -> Any:
    """The dataclass ``cls`` built from a (hydra) mapping, naming unknown keys instead of ignoring them (``name``,
    the config's label, is not an option)."""
    from dataclasses import fields

    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known - {"name"})
    if unknown:
        raise ValueError(f"unknown {what} option(s) {unknown}; valid: {sorted(known)}")
    return cls(**{k: v for k, v in d.items() if k in known})


class Agent(ABC):
    """A learning agent over a dict observation space and a box action space in [-1, 1].

    Every agent sets ``observation_space`` (what the env gives), ``action_space``, ``action_dim`` (flat size of an
    action, as the env takes it and the buffers store it), ``device`` (where its networks and batches live), ``cfg``
    (its config), ``encoder`` and ``num_updates`` (:meth:`update` calls so far, restored by :meth:`load_state_dict`).
    """

    observation_space: spaces.Dict
    action_space: spaces.Box
    action_dim: int
    device: torch.device
    cfg: Any
    encoder: Encoder
    num_updates: int
    mc_discount: float | None = None  # set: the replay buffers add each row's Monte-Carlo return (``mc_return``)

    # ---------------------------------------------------------------------------------------------- contract
    @abstractmethod
    def act(self, obs: Mapping[str, np.ndarray], deterministic: bool = False) -> np.ndarray:
        """One unbatched observation (env or buffer form) -> float32 action ``(action_dim,)`` in [-1, 1].
        ``deterministic``: the policy's best action, no exploration (evaluation)."""

    @abstractmethod
    def update(self, batches: Iterator[Batch]) -> dict[str, float]:
        """One learning step: pull the batches it needs (buffer form, tensors on :attr:`device`) from ``batches``,
        add one to ``num_updates`` and return scalar metrics for the caller to log."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly (weights, optimizers, counters): nested dicts of tensors
        and plain values, as :func:`robot_rl.utils.checkpoint.save_state` writes them."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` of an agent built with the same config; raise on a mismatch."""

    @abstractmethod
    def policy_weights(self) -> dict[str, torch.Tensor]:
        """What an actor process needs for :meth:`act`: flat names -> CPU tensors, shipped after updates."""

    @abstractmethod
    def load_policy_weights(self, weights: Mapping[str, torch.Tensor]) -> None:
        """Load :meth:`policy_weights` of an agent with the same config: :meth:`act` then matches it."""

    @property
    def batch_size(self) -> int:
        """Rows per batch that :meth:`update` pulls from its batch iterator."""
        return int(self.cfg.batch_size)

    @property
    def normalizer_fitted(self) -> bool:
        """Whether the input normaliser has its statistics (:meth:`fit_normalizer`)."""
        return bool(self.encoder.fitted)

    def fit_normalizer(self, states: np.ndarray) -> None:
        """Fix the input normaliser's statistics from ``states`` (every state observation collected before the
        first update); the trainer calls it once."""
        self.encoder.fit(states)

    # -------------------------------------------------------------------------------------- observation path
    @property
    def cached_cameras(self) -> list[str]:
        """Cameras the buffers hold as frozen-trunk maps instead of images (see :attr:`buffer_observation_space`)."""
        return self.encoder.cached_cameras

    @property
    def buffer_observation_space(self) -> spaces.Dict:
        """What the replay buffers hold: the env's observations with each cached camera replaced by its float16
        trunk maps (10 KiB per 128 px frame instead of 48 KiB, and no trunk pass per update)."""
        out = dict(self.observation_space.spaces)
        for cam in self.cached_cameras:
            out[cam] = spaces.Box(-np.inf, np.inf, self.encoder.feature_shapes[cam], np.float16)
        return spaces.Dict(out)

    def encode(self, obs: Mapping[str, torch.Tensor], augment: bool = False) -> torch.Tensor:
        """Batched observation -> features ``(B, F)``. A cached camera may arrive as its uint8 image ``(B, H, W, 3)``
        or as trunk maps ``(B, C, h, w)`` from :meth:`featurize`; ``augment`` applies the encoder's augmentation."""
        maps = {c: obs[c] for c in self.cached_cameras if obs[c].dtype != torch.uint8}
        return self.encoder(obs, features=maps, augment=augment)

    @torch.inference_mode()
    def featurize(self, obs: Mapping[str, np.ndarray], batched: bool = False) -> dict[str, np.ndarray]:
        """An env observation (``batched``: a stack ``(T, ...)`` of them) in buffer form (see
        :attr:`buffer_observation_space`): the frozen trunk runs once per frame, in batches of 32."""
        if not self.cached_cameras:
            return dict(obs)
        out = dict(obs)
        todo = [c for c in self.cached_cameras if np.asarray(obs[c]).dtype == np.uint8]  # others are maps already
        if not todo:
            return out
        frames = {c: np.asarray(obs[c]) if batched else np.asarray(obs[c])[None] for c in todo}
        n = len(next(iter(frames.values())))
        chunks = [
            self.encoder.encode_images({c: f[i : i + 32] for c, f in frames.items()})  # cameras in one batch
            for i in range(0, n, 32)
        ]
        for cam in todo:
            x = torch.cat([m[cam] for m in chunks]).to(torch.float16).cpu().numpy()
            out[cam] = x if batched else x[0]
        return out

    def featurize_episode(self, episode: Mapping[str, Any]) -> dict[str, Any]:
        """A stored episode (``obs`` {key: (T, ...)}, ``final_obs`` {key: ...}, ...) in buffer form."""
        if not self.cached_cameras:
            return dict(episode)
        return {
            **episode,
            "obs": self.featurize(episode["obs"], batched=True),
            "final_obs": self.featurize(episode["final_obs"]),
        }
