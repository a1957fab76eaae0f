"""Networks for the SAC family: batched MLP ensembles (the critics, the gripper Q) and a tanh-Gaussian actor.

An ensemble keeps every member's weights in one ``(E, in, out)`` tensor and evaluates all members with a single
batched matmul per layer, so ten critics cost about as much Python and kernel-launch overhead as one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _members(
    weight: torch.Tensor, bias: torch.Tensor, idx: torch.Tensor | None, frozen: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The parameters of the members ``idx`` selects (all for None), detached if ``frozen``."""
    if idx is not None:
        weight, bias = weight[idx], bias[idx]
    return (weight.detach(), bias.detach()) if frozen else (weight, bias)


class EnsembleLinear(nn.Module):
    """``E`` independent linear layers evaluated as one batched matmul.

    Input ``(B, in)`` (shared by all members) or ``(E', B, in)``; output ``(E', B, out)`` where ``E'`` is ``E`` or
    ``len(idx)`` when ``idx`` selects a subset of members. ``frozen``: the parameters enter detached, so gradients
    reach the input only (an actor's loss through a critic it must not train).
    """

    def __init__(self, ensemble_size: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(ensemble_size, 1, out_features))
        bound = 1.0 / math.sqrt(in_features)  # nn.Linear's default, per member
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, idx: torch.Tensor | None = None, frozen: bool = False) -> torch.Tensor:
        w, b = _members(self.weight, self.bias, idx, frozen)
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(w.shape[0], -1, -1)
        return torch.baddbmm(b, x, w)


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over the feature axis with per-member affine parameters; input ``(E', B, F)``; ``idx`` and ``frozen``
    as for :class:`EnsembleLinear`."""

    def __init__(self, ensemble_size: int, features: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ensemble_size, 1, features))
        self.bias = nn.Parameter(torch.zeros(ensemble_size, 1, features))
        self.eps = eps

    def forward(self, x: torch.Tensor, idx: torch.Tensor | None = None, frozen: bool = False) -> torch.Tensor:
        w, b = _members(self.weight, self.bias, idx, frozen)
        return torch.addcmul(b, F.layer_norm(x, x.shape[-1:], eps=self.eps), w)


class EnsembleMLP(nn.Module):
    """``E`` MLPs ``(B, in) -> (E', B, out)``: ``Linear -> [LayerNorm] -> ReLU`` per hidden layer, then a linear head.

    All members run in one batched matmul per layer; ``idx`` selects a subset of members (``E'`` of them);
    ``frozen`` detaches the parameters (gradients reach ``x`` only).
    """

    def __init__(self, ensemble_size: int, in_dim: int, hidden_dims: Sequence[int], out_dim: int, layer_norm: bool):
        super().__init__()
        dims = [in_dim, *hidden_dims]
        pairs = zip(dims[:-1], dims[1:], strict=True)
        self.linears = nn.ModuleList(EnsembleLinear(ensemble_size, a, b) for a, b in pairs)
        self.norms = nn.ModuleList(EnsembleLayerNorm(ensemble_size, d) for d in hidden_dims) if layer_norm else None
        self.head = EnsembleLinear(ensemble_size, dims[-1], out_dim)
        self.ensemble_size = ensemble_size

    def forward(self, x: torch.Tensor, idx: torch.Tensor | None = None, frozen: bool = False) -> torch.Tensor:
        for i, linear in enumerate(self.linears):
            x = linear(x, idx, frozen)
            if self.norms is not None:
                x = self.norms[i](x, idx, frozen)
            x = F.relu(x)
        return self.head(x, idx, frozen)


class EnsembleQ(EnsembleMLP):
    """``E`` Q-functions ``Q_i(feature, action)``: MLP with optional LayerNorm (RLPD) after each hidden layer.

    ``forward(feat (B, F), action (B, A), idx, frozen)`` returns Q-values ``(E', B)``.
    """

    def __init__(self, ensemble_size: int, in_dim: int, hidden_dims: Sequence[int], layer_norm: bool):
        super().__init__(ensemble_size, in_dim, hidden_dims, 1, layer_norm)

    def forward(
        self, feat: torch.Tensor, action: torch.Tensor, idx: torch.Tensor | None = None, frozen: bool = False
    ) -> torch.Tensor:
        x = torch.cat([feat, action], dim=-1)
        return super().forward(x, idx, frozen).squeeze(-1).float()  # float32 under autocast


def mlp(in_dim: int, hidden_dims: Sequence[int], out_dim: int, layer_norm: bool = False) -> nn.Sequential:
    """Plain MLP: ``Linear -> [LayerNorm] -> ReLU`` per hidden layer, then a linear output."""
    layers: list[nn.Module] = []
    for h in hidden_dims:
        layers += [nn.Linear(in_dim, h)] + ([nn.LayerNorm(h)] if layer_norm else []) + [nn.ReLU()]
        in_dim = h
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class TanhGaussianActor(nn.Module):
    """Squashed Gaussian policy: ``a = tanh(mu + sigma * eps)``, actions in ``(-1, 1)``.

    ``forward(feat (B, F))`` returns ``(action (B, A), log_prob (B,))`` sampled with the reparameterisation
    trick, or the deterministic ``tanh(mu)`` (and a zero log-prob) when ``deterministic``; ``with_mean`` adds
    ``tanh(mu)`` to a sample, from the same pass (what behaviour cloning in the actor loss compares).
    """

    def __init__(
        self,
        in_dim: int,
        action_dim: int,
        hidden_dims: Sequence[int],
        layer_norm: bool = False,
        log_std_min: float = -10.0,
        log_std_max: float = 2.0,
    ):
        super().__init__()
        self.net = mlp(in_dim, hidden_dims, 2 * action_dim, layer_norm)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(
        self, feat: torch.Tensor, deterministic: bool = False, with_mean: bool = False
    ) -> tuple[torch.Tensor, ...]:
        mu, log_std = self.net(feat).float().chunk(2, dim=-1)  # the distribution in float32, also under autocast
        if deterministic:
            return torch.tanh(mu), torch.zeros(mu.shape[0], device=mu.device)
        log_std = self._squash(log_std)
        std = log_std.exp()
        u = mu + std * torch.randn_like(mu)
        sample = torch.tanh(u), self._log_prob(u, mu, log_std, std)
        return (*sample, torch.tanh(mu)) if with_mean else sample

    def mean_log_prob(self, feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``log N(action; tanh(mu), sigma)`` ``(B,)`` of given actions ``(B, A)``: the likelihood IQL's policy
        extraction weights (a Gaussian around the squashed mean, as the IQL reference policy). The squashed density
        itself is degenerate at the +-1 actions that scripted and teleoperated data are full of."""
        mu, log_std = self.net(feat).float().chunk(2, dim=-1)
        log_std = self._squash(log_std)
        z = (action - torch.tanh(mu)) / log_std.exp()
        return (-0.5 * z.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def _squash(self, log_std: torch.Tensor) -> torch.Tensor:
        """log_std smoothly into [min, max] (no hard clip, so gradients never vanish at the bounds)."""
        return self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(log_std) + 1.0)

    @staticmethod
    def _log_prob(u: torch.Tensor, mu: torch.Tensor, log_std: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """log N(u; mu, std) - sum log(1 - tanh(u)^2), the latter in the numerically stable softplus form."""
        log_prob = (-0.5 * ((u - mu) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        return log_prob - (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
