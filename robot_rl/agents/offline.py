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

import torch


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
