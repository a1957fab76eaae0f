"""The losses that make the SAC agent an offline (or offline-to-online) learner, as pure functions on tensors.

``agent.loss`` picks them (``configs/agent/iql.yaml``, ``configs/agent/calql.yaml``); the networks, encoders,
checkpoints and metrics stay the agent's (:class:`~robot_rl.agents.sac.SAC`).

* **IQL** (Kostrikov et al., 2022, "Offline RL with Implicit Q-Learning"): a state value ``V`` fitted by expectile
  regression to the target critics' ``Q(s, a)`` on the dataset's actions only (:func:`expectile_loss`), a critic
  trained towards ``r + gamma V(s')``, and the policy extracted by advantage-weighted regression
  (:func:`awr_weights`): no action outside the data is ever evaluated.
* **CQL / Cal-QL** (Kumar et al., 2020; Nakamoto et al., 2023): the SAC critic loss plus a conservative penalty
  (:func:`cql_penalty`) that pushes Q down on sampled actions and up on the dataset's; Cal-QL bounds the sampled
  actions' Q from below by the Monte-Carlo return of the data (:func:`calibrate`), so the values it learns offline
  are not so low that online fine-tuning first unlearns them (the dip at the switch).
* **H2O** (Niu et al., 2022, "When to Trust Your Simulator"): online in an imperfect simulator with a fixed store of
  real transitions. Two classifiers tell real from simulated ``(s, a)`` and ``(s, a, s')``; their logits give each
  simulated transition's dynamics ratio (:func:`dynamics_log_ratio`), which weighs its Bellman error
  (:func:`h2o_td_weights`) and steers a value penalty towards simulated rows with a large gap (:func:`h2o_penalty`).
* **ExPLORe** (Li et al., 2023, "Accelerating Exploration with Unlabeled Prior Data"): reward-free prior data get an
  optimistic reward, a reward model's estimate plus a novelty bonus (random network distillation), both learned on
  the agent's own labelled data (:func:`optimistic_labels`); ``agent.optimistic_prior``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from robot_rl.agents.base import Batch
from robot_rl.agents.networks import mlp


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """Asymmetric squared loss of ``diff = target - prediction``: weight ``expectile`` where the prediction is
    below the target, ``1 - expectile`` above. 0.5 is the mean; towards 1 it approaches the maximum over the data's
    actions. Returns the mean over all entries."""
    weight = torch.where(diff > 0, expectile, 1.0 - expectile)
    return (weight * diff.square()).mean()


def awr_weights(advantage: torch.Tensor, beta: float, max_weight: float) -> torch.Tensor:
    """``exp(beta * advantage)``, clipped at ``max_weight`` (IQL's policy extraction); no gradient flows."""
    return torch.exp(beta * advantage.detach()).clamp(max=max_weight)


def calibrate(q_sampled: torch.Tensor, mc_return: torch.Tensor) -> torch.Tensor:
    """Cal-QL: ``max(Q, G)`` of sampled actions ``(E, B, N)`` against the data's discounted return ``(B,)`` from the
    same state (the behaviour policy's value, a reference the learned Q need not go below)."""
    return torch.maximum(q_sampled, mc_return.view(1, -1, 1))


def cql_penalty(q_data: torch.Tensor, q_sampled: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """CQL(H): ``temperature * logsumexp(Q_sampled / temperature) - Q(s, a_data)`` per member, mean over the
    batch: ``q_data`` ``(E, B)``, ``q_sampled`` ``(E, B, N)`` (already importance-corrected by the caller). Returns
    ``(E,)``."""
    soft_max = temperature * torch.logsumexp(q_sampled / temperature, dim=-1)
    return (soft_max - q_data).mean(dim=1)


def uniform_log_density(action_dim: int) -> float:
    """log of the uniform density on [-1, 1]^A, the proposal of CQL's random actions."""
    return -action_dim * math.log(2.0)


def dynamics_log_ratio(logit_sas: torch.Tensor, logit_sa: torch.Tensor) -> torch.Tensor:
    """H2O (Niu et al., 2022): ``log P_real(s' | s, a) / P_sim(s' | s, a)`` from two real-vs-sim classifiers, one on
    ``(s, a, s')`` and one on ``(s, a)``: by Bayes, the difference of their logits (each logit is ``log D / (1 -
    D)``, the log odds of "real")."""
    return logit_sas - logit_sa


def h2o_td_weights(log_ratio: torch.Tensor, real: torch.Tensor, clip: float = 1.0) -> torch.Tensor:
    """Per-row weights of the Bellman error: 1 on real rows, the dynamics ratio ``exp(log_ratio)`` clipped to ``[0,
    clip]`` on simulated ones, so a simulated transition the real dynamics would not produce counts less, and none
    counts more than a real one. ``real`` (B,) is 1 for real rows. No gradient flows."""
    ratio = torch.exp(log_ratio.detach().clamp(max=math.log(clip)))
    return torch.where(real > 0.5, torch.ones_like(ratio), ratio)


def h2o_penalty(q: torch.Tensor, log_ratio: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """H2O's adaptive value regularisation per member ``(E,)``: the Q of simulated rows, weighted towards those with
    a large dynamics gap and a high value (``softmax(Q + log u)`` over the simulated rows, ``u = max(-log_ratio,
    1e-6)`` a one-sample estimate of the gap's KL divergence), minus the mean Q of the real rows. ``q`` (E, B)."""
    sim = real < 0.5
    if not bool(sim.any()) or bool(sim.all()):
        return torch.zeros(q.shape[0], device=q.device)
    gap = torch.clamp(-log_ratio.detach(), min=1e-6)
    q_sim, q_real = q[:, sim], q[:, ~sim]
    weight = torch.softmax(q_sim.detach() + torch.log(gap[sim]).unsqueeze(0), dim=1)
    return (weight * q_sim).sum(dim=1) - q_real.mean(dim=1)


def optimistic_labels(reward_estimate: torch.Tensor, novelty: torch.Tensor, scale: torch.Tensor, bonus: float):
    """ExPLORe (Li et al., 2023): the reward given to a reward-free prior transition, a learned reward model's
    estimate plus ``bonus`` times its novelty (the RND prediction error) in units of ``scale`` (the typical error
    on the agent's own data), so the prior data the agent has not been near look worth visiting."""
    return reward_estimate + bonus * novelty / scale.clamp(min=1e-8)


class OfflineSteps:
    """The agent steps of the losses above, mixed into :class:`~robot_rl.agents.sac.SAC` (which owns the encoder,
    actor, critics and their optimizers, and calls these from its critic and actor steps by ``cfg.loss`` and
    ``cfg.optimistic_prior``). Each builds, saves and restores only the networks its config asks for."""

    def _init_offline(self, feat: int) -> None:
        """The networks of the configured loss on features of size ``feat``: IQL's value, H2O's discriminators,
        ExPLORe's reward model and RND."""
        cfg = self.cfg
        if cfg.loss == "iql":  # the state value V(s), on the critic's features (detached)
            self.value = mlp(feat, cfg.hidden_dims, 1, cfg.critic_layer_norm).to(self.device)
            self.value_opt = torch.optim.Adam(self.value.parameters(), lr=cfg.critic_lr)
        if cfg.optimistic_prior:  # ExPLORe: a reward model and RND (a fixed random net and its predictor)
            self.prior_reward = mlp(feat + self.arm_dim, cfg.hidden_dims, 1).to(self.device)
            self.rnd_target = mlp(feat + self.arm_dim, cfg.hidden_dims, 32).to(self.device).requires_grad_(False)
            self.rnd_predictor = mlp(feat + self.arm_dim, cfg.hidden_dims, 32).to(self.device)
            self.prior_opt = torch.optim.Adam(
                [*self.prior_reward.parameters(), *self.rnd_predictor.parameters()], lr=cfg.critic_lr
            )
            self.rnd_scale = torch.ones((), device=self.device)  # running mean of the novelty on online rows
        if cfg.loss == "h2o":  # real-vs-sim classifiers of (s, a) and (s, a, s'), on detached features
            self.disc_sa = mlp(feat + self.arm_dim, cfg.hidden_dims, 1).to(self.device)
            self.disc_sas = mlp(2 * feat + self.arm_dim, cfg.hidden_dims, 1).to(self.device)
            self.disc_opt = torch.optim.Adam(
                [*self.disc_sa.parameters(), *self.disc_sas.parameters()], lr=cfg.critic_lr
            )

    def _offline_names(self) -> tuple[str, ...]:
        """The networks and optimizers :meth:`_init_offline` built."""
        names = {"iql": ("value", "value_opt"), "h2o": ("disc_sa", "disc_sas", "disc_opt")}.get(self.cfg.loss, ())
        if self.cfg.optimistic_prior:
            names += ("prior_reward", "rnd_target", "rnd_predictor", "prior_opt")
        return names

    def _offline_state(self) -> dict[str, Any]:
        """Their weights and optimizers for :meth:`~robot_rl.agents.sac.SAC.state_dict`."""
        state = {name: getattr(self, name).state_dict() for name in self._offline_names()}
        if self.cfg.optimistic_prior:
            state["rnd_scale"] = self.rnd_scale.detach().clone()
        return state

    def _load_offline_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`_offline_state`. A checkpoint of another loss (``init_from`` across losses) lacks them:
        these networks then start afresh."""
        for name in self._offline_names():
            if name in state:
                getattr(self, name).load_state_dict(state[name])
        if "rnd_scale" in state and self.cfg.optimistic_prior:
            self.rnd_scale.copy_(state["rnd_scale"])

    def _next_value(self, next_feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The critic target's value of s' and the log-probability of the action it was taken at: one policy action,
        or with ``loss=cql`` and ``cql_max_target_backup`` the best of ``cql_samples`` (CQL's max backup, used by
        Cal-QL: against a penalty that pushes down every action off the data, one sampled action's value would pull
        the targets below the data's own)."""
        n = self.cfg.cql_samples if self.cfg.loss == "cql" and self.cfg.cql_max_target_backup else 1
        feat = next_feat.repeat_interleave(n, dim=0) if n > 1 else next_feat
        action, logp = self.actor(feat)
        q = self.critic_target(feat, action, self._target_idx()).min(dim=0).values
        if n == 1:
            return q, logp
        best = q.view(-1, n).argmax(dim=-1, keepdim=True)
        return q.view(-1, n).gather(-1, best).squeeze(-1), logp.view(-1, n).gather(-1, best).squeeze(-1)

    def _cql_penalty(
        self, feat: torch.Tensor, next_feat: torch.Tensor, q_data: torch.Tensor, batch: Batch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """CQL(H)'s penalty (summed over members, times ``cql_alpha``) on ``cql_samples`` uniform actions, policy
        actions at s and policy actions at s' per state, each importance-corrected by its proposal's log density;
        with ``cql_calibrated`` the policy actions' Q first bounded below by ``batch["mc_return"]`` (Cal-QL)."""
        cfg, n = self.cfg, self.cfg.cql_samples
        b, e = feat.shape[0], q_data.shape[0]
        feat_n = feat.repeat_interleave(n, dim=0)  # (B*n, F), rows of one state together
        with torch.no_grad():
            a_pi, logp_pi = self.actor(feat_n.detach())
            a_next, logp_next = self.actor(next_feat.repeat_interleave(n, dim=0))
        a_rand = torch.empty(b * n, self.arm_dim, device=feat.device).uniform_(-1.0, 1.0)
        q_rand = self.critic(feat_n, a_rand).view(e, b, n) - uniform_log_density(self.arm_dim)
        q_pi = self.critic(feat_n, a_pi).view(e, b, n)
        q_next = self.critic(feat_n, a_next).view(e, b, n)
        if cfg.cql_calibrated:
            if "mc_return" not in batch:
                raise ValueError(
                    "cql_calibrated (Cal-QL) needs batches with mc_return: replay buffers built with "
                    "mc_discount=agent.mc_discount (the trainer does this)"
                )
            q_pi, q_next = calibrate(q_pi, batch["mc_return"]), calibrate(q_next, batch["mc_return"])
        sampled = torch.cat([q_rand, q_pi - logp_pi.view(1, b, n), q_next - logp_next.view(1, b, n)], dim=-1)
        per_member = cql_penalty(q_data, sampled, cfg.cql_temperature)
        metrics = {"cql_penalty": per_member.detach().mean(), "cql_q_policy": q_pi.detach().mean()}
        return cfg.cql_alpha * per_member.sum(), metrics

    def _optimistic_reward(
        self, feat: torch.Tensor, action: torch.Tensor, batch: Batch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """ExPLORe: train the reward model and the RND predictor on the online rows, then give the prior rows
        (``from_demo``) their optimistic reward; the online rows keep theirs."""
        if "from_demo" not in batch:
            raise ValueError("agent.optimistic_prior needs batches that mark the prior rows (from_demo)")
        prior = batch["from_demo"] > 0.5
        x = torch.cat([feat, action], -1)
        online = ~prior
        metrics: dict[str, torch.Tensor] = {}
        if bool(online.any()):
            err = (self.rnd_predictor(x[online]) - self.rnd_target(x[online])).square().mean(-1)
            fit = F.mse_loss(self.prior_reward(x[online]).squeeze(-1), batch["reward"][online])
            self.prior_opt.zero_grad(set_to_none=True)
            (fit + err.mean()).backward()
            self.prior_opt.step()
            with torch.no_grad():
                self.rnd_scale.lerp_(err.detach().mean(), 0.01)
            metrics = {"prior_reward_loss": fit.detach(), "rnd_online": err.detach().mean()}
        with torch.no_grad():
            novelty = (self.rnd_predictor(x) - self.rnd_target(x)).square().mean(-1)
            label = optimistic_labels(self.prior_reward(x).squeeze(-1), novelty, self.rnd_scale, self.cfg.prior_bonus)
            reward = torch.where(prior, label, batch["reward"])
        if bool(prior.any()):
            metrics["prior_label"] = label[prior].mean()
        return reward, metrics

    def _h2o_terms(
        self, feat: torch.Tensor, action: torch.Tensor, next_feat: torch.Tensor, q: torch.Tensor, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """One step of the two discriminators (real rows: ``from_demo`` 1), then per-row Bellman weights and the
        value penalty (times ``h2o_alpha``, summed over members) from their dynamics ratio."""
        if "from_demo" not in batch:
            raise ValueError("loss=h2o needs batches that mark the real rows (from_demo): the trainer's mixed batches")
        real = batch["from_demo"]
        sa, sas = torch.cat([feat, action], -1), torch.cat([feat, action, next_feat], -1)
        noisy = lambda x: x + self.cfg.h2o_disc_noise * torch.randn_like(x)  # noqa: E731
        logit_sa, logit_sas = self.disc_sa(noisy(sa)).squeeze(-1), self.disc_sas(noisy(sas)).squeeze(-1)
        disc_loss = F.binary_cross_entropy_with_logits(logit_sa, real) + F.binary_cross_entropy_with_logits(
            logit_sas, real
        )
        self.disc_opt.zero_grad(set_to_none=True)
        disc_loss.backward()
        self.disc_opt.step()
        with torch.no_grad():
            log_ratio = dynamics_log_ratio(self.disc_sas(sas).squeeze(-1), self.disc_sa(sa).squeeze(-1))
            weight = h2o_td_weights(log_ratio, real, self.cfg.h2o_ratio_clip)
        per_member = h2o_penalty(q, log_ratio, real)
        sim = real < 0.5
        metrics = {
            "h2o_disc_loss": disc_loss.detach(),
            "h2o_penalty": per_member.detach().mean(),
            "h2o_sim_weight": weight[sim].mean() if bool(sim.any()) else torch.ones(()),
        }
        return weight, self.cfg.h2o_alpha * per_member.sum(), metrics

    def _value_step(self, feat: torch.Tensor, action: torch.Tensor) -> dict[str, torch.Tensor]:
        """IQL: fit V(s) to the target critics' Q(s, a_data) by expectile regression (``iql_expectile``)."""
        with torch.no_grad():
            q = self.critic_target(feat, action, self._target_idx()).min(dim=0).values
        v = self.value(feat).squeeze(-1)
        loss = expectile_loss(q - v, self.cfg.iql_expectile)
        self.value_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.value_opt.step()
        return {"value_loss": loss.detach(), "v_mean": v.detach().mean()}

    def _awr_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """IQL's policy extraction, advantage-weighted regression over the data's actions with weights
        ``exp(beta * (Q(s, a) - V(s)))``: of the mean action's squared error (``iql_extraction=regression``), or of
        ``-log pi(a | s)`` under a Gaussian around the squashed mean with a learned std (``likelihood``)."""
        action = batch["action"][:, : self.arm_dim]
        with torch.no_grad():
            feat = self.encode(batch["obs"], augment=True)
            adv = self.critic_target(feat, action, self._target_idx()).min(dim=0).values
            adv = adv - self.value(feat).squeeze(-1)
            weight = awr_weights(adv, self.cfg.iql_beta, self.cfg.iql_max_weight)
        if self.cfg.iql_extraction == "regression":  # weighted squared error of the mean action (a unit Gaussian)
            mean_action, _ = self.actor(feat, deterministic=True)
            loss = (weight * (mean_action - action).square().sum(-1)).mean()
        else:
            loss = -(weight * self.actor.mean_log_prob(feat, action)).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_opt.step()
        return {"actor_loss": loss.detach(), "advantage": adv.mean(), "awr_weight": weight.mean()}
