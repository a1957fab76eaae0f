"""Observation encoders: dict observation -> flat feature vector ``(B, F)``.

State-only observations pass straight through. Camera encoders plug in here by config.
"""

from __future__ import annotations

from typing import Mapping

import torch
from gymnasium import spaces
from torch import nn

from robot_rl.envs.contract import STATE_KEY, image_keys


class StateEncoder(nn.Module):
    """Identity on ``obs["state"]`` (B, D) -> (B, D)."""

    def __init__(self, state_dim: int):
        super().__init__()
        self.out_dim = state_dim

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return obs[STATE_KEY]


def build_encoder(observation_space: spaces.Dict) -> nn.Module:
    """Pick the encoder for an observation space. Exposes ``out_dim``."""
    cams = image_keys(observation_space)
    if cams:
        raise NotImplementedError(f"camera observations {cams} need an image encoder; use obs=state for now")
    return StateEncoder(observation_space[STATE_KEY].shape[0])
