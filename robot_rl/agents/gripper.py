"""The discrete gripper of ``SACConfig(gripper="discrete")``: a small DQN over {open, stay, close}.

The env reads the last action dim as a switch (``> 0.5`` close, ``< -0.5`` open, else keep), so
:class:`~robot_rl.agents.sac.SAC` can hand that dim to a 3-way Q ensemble (:class:`GripperQ`) beside its arm actor.
This module holds the pieces: discretising executed commands, counting toggles (which pay ``gripper_penalty``), the
double-DQN target and the epsilon-greedy schedule; the loss is in :meth:`SAC._gripper_step
<robot_rl.agents.sac.SAC._gripper_step>`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from robot_rl.agents.networks import EnsembleMLP

# Action indices of the gripper critic, and the env command each one is executed as.
OPEN, STAY, CLOSE = 0, 1, 2
GRIPPER_COMMANDS: tuple[float, float, float] = (-1.0, 0.0, 1.0)  # index -> value of the action's last dim
GRIPPER_ACTION_NAMES: tuple[str, str, str] = ("open", "stay", "close")
CLOSE_THRESHOLD = 0.5  # command > +0.5 closes, < -0.5 opens (sim/panda_env.py PandaEnv._apply_action)
CLOSED_STATE_THRESHOLD = 0.5  # a gripper state value > 0.5 means closed (sim: state "gripper_cmd", 1 = closed)


def discretize_gripper(command: torch.Tensor) -> torch.Tensor:
    """Continuous gripper commands ``(...)`` in [-1, 1] -> action indices ``(...)`` (int64: 0 open, 1 stay, 2 close).

    Same thresholds as the env: ``> 0.5`` close, ``< -0.5`` open, anything in between (both bounds included) stay.
    """
    idx = torch.full(command.shape, STAY, dtype=torch.long, device=command.device)
    idx = torch.where(command > CLOSE_THRESHOLD, CLOSE, idx)
    return torch.where(command < -CLOSE_THRESHOLD, OPEN, idx)


def gripper_toggles(action_idx: torch.Tensor, closed: torch.Tensor | None) -> torch.Tensor:
    """Which gripper actions change the gripper's state; bool, same shape as ``action_idx`` ``(B,)``.

    Args:
        action_idx: executed gripper action indices ``(B,)`` (see :func:`discretize_gripper`).
        closed: the gripper state in effect when the action was chosen, ``(B,)`` bool (True = closed), or ``None``
            when the data carries no gripper state.

    With a state, a toggle is "close while open" or "open while closed"; a repeated command (close while closed) has
    the same effect as stay and is not a toggle. Without a state every open/close command counts as one: an upper
    bound that charges redundant commands too, which changes no optimal behaviour (a redundant command and stay
    lead to the same next state, so the penalty only breaks their tie in favour of stay).
    """
    if closed is None:
        return action_idx != STAY
    return ((action_idx == CLOSE) & ~closed) | ((action_idx == OPEN) & closed)


def double_dqn_target(
    reward: torch.Tensor,
    terminated: torch.Tensor,
    next_q_online: torch.Tensor,
    next_q_target: torch.Tensor,
    discount: float | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Double-DQN target with an ensemble: ``y = r + discount * (1 - terminated) * min_e Q'_e(s', a*)``.

    Args:
        reward: ``(B,)`` gripper reward (env reward minus the toggle penalty).
        terminated: ``(B,)`` float, 1 where the episode ended by task success or failure. A time-limit cut
            (``truncated``) is *not* terminal here: it bootstraps from ``next_obs`` like any other step.
        next_q_online: ``(E, B, 3)`` online ensemble at the next observation; picks
            ``a* = argmax_a min_e Q_e(s', a)``.
        next_q_target: ``(E', B, 3)`` target (Polyak) ensemble at the next observation; evaluates ``a*``.
        discount: per-step discount in (0, 1], or ``(B,)`` per row (n-step rows: ``discount ** k``).

    Returns:
        ``(target (B,), a* (B,) int64)``.
    """
    next_action = next_q_online.min(dim=0).values.argmax(dim=-1)  # (B,)
    idx = next_action.view(1, -1, 1).expand(next_q_target.shape[0], -1, 1)
    next_v = next_q_target.gather(-1, idx).squeeze(-1).min(dim=0).values  # (B,)
    return reward + discount * (1.0 - terminated) * next_v, next_action


def epsilon_at(step: int, start: float, end: float, decay_steps: int) -> float:
    """Linear epsilon-greedy schedule: ``start`` at step 0, ``end`` from ``decay_steps`` on (``end`` if 0 steps)."""
    if decay_steps <= 0 or step >= decay_steps:
        return float(end)
    return float(start + (end - start) * step / decay_steps)


class GripperQ(EnsembleMLP):
    """``E`` Q-functions over the 3 gripper actions: ``forward(features (B, F), idx) -> Q (E', B, 3)``.

    Hidden layers are ``Linear -> [LayerNorm] -> ReLU`` per member, all members in one batched matmul per layer
    (:class:`~robot_rl.agents.networks.EnsembleMLP`); ``idx`` selects a subset of members (``E'`` of them).
    """

    def __init__(self, ensemble_size: int, in_dim: int, hidden_dims: Sequence[int], layer_norm: bool):
        super().__init__(ensemble_size, in_dim, hidden_dims, len(GRIPPER_COMMANDS), layer_norm)
