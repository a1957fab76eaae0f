"""Behaviour cloning with action chunks: a policy that predicts the next ``chunk`` actions from one observation, with
an MLP head (mean-squared error) or a flow-matching head (a small generative model of the chunk, for multi-modal
demonstrations), and the executor that turns a stream of predicted chunks into one action per control step.

:class:`BCAgent` is an :class:`~robot_rl.agents.base.Agent`: it shares the encoders, the observation path (the
feature cache for cameras), the input normaliser and the safetensors + JSON checkpoints of every agent here, so the
same ``act()`` serves evaluation, the actors and the ROS2 node, and a residual agent can run it as its frozen base
(:mod:`robot_rl.agents.residual`). ``robot-rl train-bc`` (:mod:`robot_rl.bc`) trains it from episode stores.

Chunk execution (:class:`ChunkExecutor`):

* ``receding``: predict a chunk, execute its first ``replan`` actions, predict again (by default half the chunk, as
  Diffusion Policy executes 8 of 16; ``replan = chunk``: open loop over whole chunks);
* ``ensemble``: predict a chunk every step; the action at step t averages every chunk's prediction for t, weighted
  ``exp(-decay * i)`` with i = 0 for the oldest prediction (ACT's temporal ensembling, Zhao et al. 2023).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import nn

from robot_rl.agents.base import Agent, Batch, config_from_dict
from robot_rl.agents.encoders import build_encoder
from robot_rl.agents.networks import mlp

HEADS = ("mlp", "flow")
EXECUTION = ("receding", "ensemble")


@dataclass
class BCConfig:
    """Hyper-parameters of a chunked behaviour-cloning policy; ``from_dict`` names unknown keys."""

    policy: str = "mlp"  # head: "mlp" (regression) or "flow" (flow matching)
    chunk: int = 8  # actions predicted per observation (H)
    execute: str = "receding"  # how chunks become actions: "receding" or "ensemble" (see the module docstring)
    replan: int | None = None  # receding: actions executed per chunk before predicting again (None: half the chunk)
    ensemble_decay: float = 0.01  # ensemble: weight exp(-decay * i), i = 0 for the oldest prediction
    hidden_dims: tuple[int, ...] = (256, 256)
    flow_steps: int = 10  # flow: Euler steps from noise to a chunk
    lr: float = 3e-4
    weight_decay: float = 1e-6
    batch_size: int = 256
    encoder: dict | None = None  # as the SAC agent's (robot_rl.agents.encoders.EncoderConfig)
    device: str = "auto"

    def __post_init__(self) -> None:
        self.hidden_dims = tuple(int(h) for h in self.hidden_dims)
        self.encoder = None if self.encoder is None else dict(self.encoder)
        if self.policy not in HEADS:
            hint = " (the generative head here is flow matching: policy=flow)" if self.policy == "diffusion" else ""
            raise ValueError(f"policy={self.policy!r}; valid: {', '.join(HEADS)}{hint}")
        if self.execute not in EXECUTION:
            raise ValueError(f"execute={self.execute!r}; valid: {', '.join(EXECUTION)}")
        if self.replan is None:
            self.replan = max(1, self.chunk // 2)
        if self.chunk < 1 or not 1 <= self.replan <= self.chunk:
            raise ValueError(f"need chunk >= 1 and 1 <= replan <= chunk; got chunk={self.chunk}, replan={self.replan}")
        if self.ensemble_decay < 0 or self.flow_steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(
                f"need ensemble_decay >= 0 ({self.ensemble_decay}), flow_steps >= 1 ({self.flow_steps}), "
                f"batch_size >= 1 ({self.batch_size}) and lr > 0 ({self.lr})"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BCConfig:
        return config_from_dict(cls, d, "BC")


# ----------------------------------------------------------------------------------------------- chunk targets
def chunk_targets(actions: np.ndarray, horizon: int) -> np.ndarray:
    """An episode's actions ``(T, A)`` -> the chunk to predict at each step ``(T, H, A)``: ``actions[t : t + H]``,
    padded past the episode's end with its last action (the robot holds its last command)."""
    actions = np.asarray(actions, dtype=np.float32)
    padded = np.concatenate([actions, np.repeat(actions[-1:], horizon - 1, axis=0)])
    idx = np.arange(len(actions))[:, None] + np.arange(horizon)[None, :]
    return padded[idx]


# ----------------------------------------------------------------------------------------------- execution
class ChunkExecutor:
    """Turns predicted chunks ``(H, A)`` into one action per step (see the module docstring). Call :meth:`reset` at
    each episode start; each step, :meth:`push` a new chunk when :attr:`wants_chunk`, then take :meth:`next`."""

    def __init__(self, horizon: int, mode: str = "receding", replan: int | None = None, decay: float = 0.01):
        if mode not in EXECUTION:
            raise ValueError(f"execute={mode!r}; valid: {', '.join(EXECUTION)}")
        self.horizon, self.mode, self.decay = int(horizon), mode, float(decay)
        self.replan = max(1, self.horizon // 2) if replan is None else int(replan)
        self.reset()

    def reset(self) -> None:
        self.chunks: deque[tuple[int, np.ndarray]] = deque()  # (step it was predicted at, chunk)
        self.t = 0

    @property
    def wants_chunk(self) -> bool:
        """Whether this step needs a fresh prediction: every step when ensembling, else every ``replan`` steps."""
        if self.mode == "ensemble" or not self.chunks:
            return True
        return self.t - self.chunks[-1][0] >= self.replan

    def push(self, chunk: np.ndarray) -> None:
        chunk = np.asarray(chunk, dtype=np.float32)
        if chunk.ndim != 2 or chunk.shape[0] != self.horizon:
            raise ValueError(f"expected a chunk of shape ({self.horizon}, A), got {chunk.shape}")
        self.chunks.append((self.t, chunk))
        while self.chunks and self.chunks[0][0] <= self.t - self.horizon:  # it has no action for this step or later
            self.chunks.popleft()
        if self.mode == "receding":
            while len(self.chunks) > 1:
                self.chunks.popleft()

    def next(self) -> np.ndarray:
        """This step's action; advances one step."""
        if not self.chunks or self.chunks[-1][0] + self.horizon <= self.t:
            raise RuntimeError("no chunk covers this step: push() one when wants_chunk")
        if self.mode == "receding":
            start, chunk = self.chunks[-1]
            action = chunk[self.t - start]
        else:
            live = [(s, c) for s, c in self.chunks if s + self.horizon > self.t]  # oldest first
            w = np.exp(-self.decay * np.arange(len(live)))
            action = sum(wi * c[self.t - s] for wi, (s, c) in zip(w, live)) / w.sum()
        self.t += 1
        return np.asarray(action, dtype=np.float32)


# ----------------------------------------------------------------------------------------------- heads
class MLPHead(nn.Module):
    """features -> a chunk in [-1, 1]^(H x A), trained by mean squared error."""

    def __init__(self, feat_dim: int, horizon: int, action_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.shape = (horizon, action_dim)
        self.net = mlp(feat_dim, hidden, horizon * action_dim)

    def loss(self, feat: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.sample(feat), chunk)

    def sample(self, feat: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return torch.tanh(self.net(feat)).view(-1, *self.shape)


def time_embedding(t: torch.Tensor, dim: int = 16) -> torch.Tensor:
    """Sinusoidal features of flow times ``t`` ``(B,)`` in [0, 1] -> ``(B, dim)``."""
    freqs = torch.exp(torch.arange(dim // 2, device=t.device) * (-math.log(1000.0) / max(dim // 2 - 1, 1)))
    angles = 1000.0 * t[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class FlowHead(nn.Module):
    """Flow matching (rectified flow; Lipman et al. 2023, Liu et al. 2023) over flattened chunks: a velocity network
    ``v(x_t, t, features)`` regressed on ``x_1 - x_0`` along straight paths ``x_t = (1 - t) x_0 + t x_1`` from
    Gaussian noise ``x_0`` to a demonstrated chunk ``x_1``; sampling integrates ``v`` from noise with ``steps`` Euler
    steps. The noise is the policy's input that DSRL-style steering would choose; ``None`` draws it, and a zero
    noise gives the flow's deterministic central sample (what evaluation and a residual's base use)."""

    def __init__(self, feat_dim: int, horizon: int, action_dim: int, hidden: tuple[int, ...], steps: int):
        super().__init__()
        self.shape, self.dim, self.steps = (horizon, action_dim), horizon * action_dim, int(steps)
        self.net = mlp(feat_dim + self.dim + 16, hidden, self.dim)

    def velocity(self, x: torch.Tensor, t: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, time_embedding(t), feat], dim=-1))

    def loss(self, feat: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor:
        x1 = chunk.reshape(len(chunk), -1)
        x0 = torch.randn_like(x1)
        t = torch.rand(len(x1), device=x1.device)
        xt = (1 - t[:, None]) * x0 + t[:, None] * x1
        return F.mse_loss(self.velocity(xt, t, feat), x1 - x0)

    def sample(self, feat: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        x = torch.randn(len(feat), self.dim, device=feat.device) if noise is None else noise.reshape(len(feat), -1)
        dt = 1.0 / self.steps
        for i in range(self.steps):
            t = torch.full((len(feat),), i * dt, device=feat.device)
            x = x + dt * self.velocity(x, t, feat)
        return x.clamp(-1.0, 1.0).view(-1, *self.shape)


# ----------------------------------------------------------------------------------------------- the agent
class BCAgent(Agent):
    """Encoder + chunk head; :meth:`act` runs the :class:`ChunkExecutor` (call :meth:`reset` at each episode start:
    evaluation and the base-policy wrapper do). :meth:`update` pulls batches of ``obs`` (buffer form) and ``chunk``
    ``(B, H, A)``."""

    def __init__(self, observation_space: spaces.Dict, action_space: spaces.Box, config: BCConfig):
        from robot_rl.agents.sac import resolve_device

        self.cfg = config
        self.device = resolve_device(config.device)
        self.observation_space, self.action_space = observation_space, action_space
        self.action_dim = int(np.prod(action_space.shape))
        self.encoder = build_encoder(observation_space, config.encoder).to(self.device)
        feat, h, a = self.encoder.out_dim, config.chunk, self.action_dim
        head = MLPHead(feat, h, a, config.hidden_dims) if config.policy == "mlp" else None
        self.head = head or FlowHead(feat, h, a, config.hidden_dims, config.flow_steps)
        self.head.to(self.device)
        params = [*self.head.parameters(), *self.encoder.trainable_parameters()]
        self.opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        self.num_updates = 0
        self.executor = ChunkExecutor(h, config.execute, config.replan, config.ensemble_decay)

    def reset(self) -> None:
        """A new episode: forget the chunks of the last one."""
        self.executor.reset()

    @torch.inference_mode()
    def predict_chunk(
        self, obs: Mapping[str, np.ndarray], noise: np.ndarray | None = None, deterministic: bool = True
    ) -> np.ndarray:
        """One observation -> its chunk ``(H, A)``. ``noise`` (flow head): the chunk's latent; none and
        ``deterministic``: zero noise."""
        batch = {k: torch.as_tensor(np.asarray(v), device=self.device).unsqueeze(0) for k, v in obs.items()}
        feat = self.encode(batch)
        z = None if noise is None else torch.as_tensor(np.asarray(noise, np.float32), device=self.device)[None]
        if z is None and deterministic and isinstance(self.head, FlowHead):
            z = torch.zeros(1, self.head.dim, device=self.device)
        return self.head.sample(feat, z)[0].cpu().numpy()

    def act(self, obs: Mapping[str, np.ndarray], deterministic: bool = False) -> np.ndarray:
        """This step's action from the executor, predicting a chunk when it wants one. Behaviour cloning has no
        exploration: ``deterministic`` only picks the flow head's zero noise over a drawn one."""
        if self.executor.wants_chunk:
            self.executor.push(self.predict_chunk(obs, deterministic=deterministic))
        return self.executor.next()

    def update(self, batches: Iterator[Batch]) -> dict[str, float]:
        batch = next(batches)
        feat = self.encode(batch["obs"], augment=True)
        loss = self.head.loss(feat, batch["chunk"])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.num_updates += 1
        return {"bc_loss": float(loss.detach())}

    def state_dict(self) -> dict[str, Any]:
        return {
            "encoder": self.encoder.state_dict(),
            "head": self.head.state_dict(),
            "opt": self.opt.state_dict(),
            "num_updates": self.num_updates,
            "config": asdict(self.cfg),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        saved = dict(state.get("config") or {})
        for key in ("policy", "chunk"):
            if key in saved and saved[key] != getattr(self.cfg, key):
                raise ValueError(f"checkpoint has {key}={saved[key]!r}, this policy {getattr(self.cfg, key)!r}")
        self.encoder.load_state_dict(state["encoder"])
        self.head.load_state_dict(state["head"])
        if "opt" in state:
            self.opt.load_state_dict(state["opt"])
        self.num_updates = int(state.get("num_updates", 0))

    def policy_weights(self) -> dict[str, torch.Tensor]:
        out = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        out.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        return {k: v.detach().cpu() for k, v in out.items()}

    def load_policy_weights(self, weights: Mapping[str, torch.Tensor]) -> None:
        self.encoder.load_state_dict({k[8:]: v for k, v in weights.items() if k.startswith("encoder.")})
        self.head.load_state_dict({k[5:]: v for k, v in weights.items() if k.startswith("head.")})
