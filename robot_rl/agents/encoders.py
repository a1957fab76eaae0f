"""Observation encoders: dict observation -> flat feature vector ``(B, F)``.

Robot state arrives in physical units (metres, radians, metres per second) whose useful variations can be a few
millimetres; networks learn far faster on standardised inputs. :class:`StateEncoder` therefore standardises the state
with statistics fitted once from the first data (demonstrations and warm-up steps) and then frozen, so the input
distribution does not drift under the learner. The statistics are buffers: they travel with checkpoints and with the
policy weights shipped to actors.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from robot_rl.envs.contract import STATE_KEY, image_keys


class StateEncoder(nn.Module):
    """``obs["state"]`` (B, D) -> ``clip((state - loc) / scale, -clip, clip)`` (B, D)."""

    def __init__(self, state_dim: int, min_scale: float = 1e-2, clip: float = 10.0):
        super().__init__()
        self.out_dim = state_dim
        self.min_scale, self.clip = min_scale, clip
        self.register_buffer("loc", torch.zeros(state_dim))
        self.register_buffer("scale", torch.ones(state_dim))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def fit(self, states: np.ndarray) -> None:
        """Set the statistics from ``states`` (N, D); dimensions that barely vary keep ``min_scale``."""
        x = torch.as_tensor(np.asarray(states, dtype=np.float32), device=self.loc.device)
        if x.ndim != 2 or x.shape[1] != self.out_dim or x.shape[0] < 2:
            raise ValueError(f"need states of shape (N >= 2, {self.out_dim}) to fit the normaliser, got {tuple(x.shape)}")
        self.loc.copy_(x.mean(0))
        self.scale.copy_(x.std(0).clamp_min(self.min_scale))
        self.fitted.fill_(True)

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return ((obs[STATE_KEY] - self.loc) / self.scale).clamp(-self.clip, self.clip)


def build_encoder(observation_space: spaces.Dict) -> nn.Module:
    """Pick the encoder for an observation space. Exposes ``out_dim`` and ``fit(states)``."""
    cams = image_keys(observation_space)
    if cams:
        raise ValueError(f"this agent learns from state only; the observation has cameras {cams}. "
                         "Train with obs=state (image encoders are the next step on the roadmap)")
    return StateEncoder(observation_space[STATE_KEY].shape[0])
