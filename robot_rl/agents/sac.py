"""Soft actor-critic with the RLPD options, in one file.

RLPD (Ball et al., 2023) is SAC plus three switches, all plain config here rather than a subclass:

* a critic ensemble of ``num_critics`` (RLPD: 10) of which ``num_target_critics`` (RLPD: 2) are sampled per
  update, and the target takes the minimum over those;
* LayerNorm in the critics (``critic_layer_norm``);
* a high update-to-data ratio (``utd_ratio`` critic updates per env step, one actor/temperature update per call).

The batch mixing of demonstrations and online data lives in the data layer (:mod:`robot_rl.data.replay`); the agent
just consumes batches. ``update()`` returns metrics; the caller logs them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces

from robot_rl.agents.encoders import build_encoder
from robot_rl.agents.networks import EnsembleQ, TanhGaussianActor

Batch = dict[str, Any]  # obs: dict[str, Tensor], action (B, A), reward (B,), terminated (B,), next_obs: dict


@dataclass
class SACConfig:
    """Hyper-parameters. Defaults are plain SAC; ``configs/agent/rlpd.yaml`` switches on the RLPD options."""

    hidden_dims: tuple[int, ...] = (256, 256)
    num_critics: int = 2
    num_target_critics: int = 2  # critics sampled for the target; the target is their minimum
    critic_layer_norm: bool = False
    actor_layer_norm: bool = False
    actor_q_reduce: str = "min"  # how the actor aggregates the ensemble: "min" (SAC) or "mean" (RLPD)
    utd_ratio: int = 1  # critic updates per update() call (per env step)
    batch_size: int = 256
    discount: float = 0.99
    tau: float = 0.005
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    temperature_lr: float = 3e-4
    init_temperature: float = 1.0
    target_entropy: float | None = None  # None: -action_dim / 2
    backup_entropy: bool = True  # subtract alpha * log pi in the critic target
    device: str = "auto"

    def __post_init__(self) -> None:
        self.hidden_dims = tuple(int(h) for h in self.hidden_dims)
        if not 1 <= self.num_target_critics <= self.num_critics:
            raise ValueError(f"num_target_critics={self.num_target_critics} must be in [1, num_critics={self.num_critics}]")
        if self.actor_q_reduce not in ("min", "mean"):
            raise ValueError(f"actor_q_reduce={self.actor_q_reduce!r}; valid: 'min', 'mean'")
        for name in ("utd_ratio", "batch_size", "num_critics"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if not 0.0 < self.discount <= 1.0 or not 0.0 < self.tau <= 1.0:
            raise ValueError(f"discount={self.discount} and tau={self.tau} must lie in (0, 1]")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SACConfig":
        """Build from a (hydra) mapping, naming unknown keys instead of ignoring them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known - {"name"})
        if unknown:
            raise ValueError(f"unknown agent option(s) {unknown}; valid: {sorted(known)}")
        return cls(**{k: v for k, v in d.items() if k in known})


def resolve_device(device: str) -> torch.device:
    """``"auto"`` picks CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class SAC:
    """Owns the encoder, actor, critic ensemble, target critics, optimizers and temperature.

    ``act(obs)`` serves the actor (one unbatched observation -> one action in [-1, 1]); ``update(batches)`` serves
    the learner, pulling ``utd_ratio`` batches from the iterator.
    """

    def __init__(self, observation_space: spaces.Dict, action_space: spaces.Box, config: SACConfig):
        self.cfg = config
        self.device = resolve_device(config.device)
        self.observation_space, self.action_space = observation_space, action_space
        self.action_dim = int(np.prod(action_space.shape))
        self.encoder = build_encoder(observation_space).to(self.device)
        feat = self.encoder.out_dim
        self.actor = TanhGaussianActor(feat, self.action_dim, config.hidden_dims, config.actor_layer_norm).to(self.device)
        self.critic = EnsembleQ(config.num_critics, feat + self.action_dim, config.hidden_dims,
                                config.critic_layer_norm).to(self.device)
        self.critic_target = EnsembleQ(config.num_critics, feat + self.action_dim, config.hidden_dims,
                                       config.critic_layer_norm).to(self.device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.log_alpha = torch.tensor(np.log(config.init_temperature), dtype=torch.float32, device=self.device,
                                      requires_grad=True)
        self.target_entropy = (-self.action_dim / 2.0 if config.target_entropy is None else float(config.target_entropy))
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr)
        self.temp_opt = torch.optim.Adam([self.log_alpha], lr=config.temperature_lr)
        self.num_updates = 0
        self._critic_params = list(self.critic.parameters())
        self._target_params = list(self.critic_target.parameters())

    # ------------------------------------------------------------------ acting
    @torch.inference_mode()
    def act(self, obs: Mapping[str, np.ndarray], deterministic: bool = False) -> np.ndarray:
        """One observation (unbatched dict of arrays) -> float32 action ``(A,)`` in [-1, 1]."""
        batch = {k: torch.as_tensor(v, device=self.device).unsqueeze(0) for k, v in obs.items()}
        action, _ = self.actor(self.encoder(batch), deterministic=deterministic)
        return action[0].cpu().numpy().astype(np.float32)

    # ---------------------------------------------------------------- learning
    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.detach().exp()

    def _target_idx(self) -> torch.Tensor | None:
        e, m = self.cfg.num_critics, self.cfg.num_target_critics
        return None if m == e else torch.randperm(e, device=self.device)[:m]

    def _critic_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        feat = self.encoder(batch["obs"])
        with torch.no_grad():
            next_feat = self.encoder(batch["next_obs"])
            next_action, next_logp = self.actor(next_feat)
            next_q = self.critic_target(next_feat, next_action, self._target_idx()).min(dim=0).values
            if self.cfg.backup_entropy:
                next_q = next_q - self.alpha * next_logp
            target = batch["reward"] + self.cfg.discount * (1.0 - batch["terminated"]) * next_q
        q = self.critic(feat, batch["action"])  # (E, B)
        loss = F.mse_loss(q, target.unsqueeze(0).expand_as(q), reduction="none").mean(dim=1).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(self._target_params, self._critic_params, self.cfg.tau)
        return {"critic_loss": loss.detach() / q.shape[0], "q_mean": q.detach().mean(), "target_q": target.mean()}

    def _actor_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        feat = self.encoder(batch["obs"]).detach()
        action, logp = self.actor(feat)
        self.critic.requires_grad_(False)  # the actor loss needs dQ/da, not dQ/dtheta
        q = self.critic(feat, action)
        self.critic.requires_grad_(True)
        q = q.mean(dim=0) if self.cfg.actor_q_reduce == "mean" else q.min(dim=0).values
        actor_loss = (self.alpha * logp - q).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        temp_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.temp_opt.zero_grad(set_to_none=True)
        temp_loss.backward()
        self.temp_opt.step()
        return {"actor_loss": actor_loss.detach(), "entropy": -logp.detach().mean(), "alpha": self.alpha,
                "temperature_loss": temp_loss.detach()}

    def update(self, batches: Iterator[Batch]) -> dict[str, float]:
        """Run ``utd_ratio`` critic updates and one actor + temperature update; return scalar metrics."""
        for _ in range(self.cfg.utd_ratio):
            batch = next(batches)
            metrics = self._critic_step(batch)
        metrics.update(self._actor_step(batch))
        self.num_updates += 1
        return {k: float(v) for k, v in metrics.items()}

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly: weights, optimizers, temperature, counters."""
        return {
            "encoder": self.encoder.state_dict(), "actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(), "log_alpha": self.log_alpha.detach(),
            "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
            "temp_opt": self.temp_opt.state_dict(), "num_updates": self.num_updates, "config": asdict(self.cfg),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name in ("encoder", "actor", "critic", "critic_target"):
            getattr(self, name).load_state_dict(state[name])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        for name in ("actor_opt", "critic_opt", "temp_opt"):
            getattr(self, name).load_state_dict(state[name])
        self.num_updates = int(state["num_updates"])

    def policy_weights(self) -> dict[str, torch.Tensor]:
        """The small part an actor needs: encoder + actor weights, flat names -> CPU tensors."""
        out = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        out.update({f"actor.{k}": v for k, v in self.actor.state_dict().items()})
        return {k: v.detach().cpu() for k, v in out.items()}

    def load_policy_weights(self, weights: Mapping[str, torch.Tensor]) -> None:
        self.encoder.load_state_dict({k[8:]: v for k, v in weights.items() if k.startswith("encoder.")})
        self.actor.load_state_dict({k[6:]: v for k, v in weights.items() if k.startswith("actor.")})
