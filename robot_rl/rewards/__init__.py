"""Rewards without hand engineering: one interface (:class:`~robot_rl.rewards.base.RewardModel`: camera frames ->
score and success), chosen by the ``reward`` config group.

* ``ground_truth``: the env's own reward (sim only).
* ``classifier``: success classifier on frozen EfficientNet-Lite0 features (:mod:`.classifier`), or a dual encoder
  fine-tuned into one (:mod:`.vlm.finetune`).
* ``vlm_zero_shot``: image-text similarity to the task description against negative prompts (:mod:`.vlm.zero_shot`).
* ``preference``: Bradley-Terry reward model (:mod:`.preference`) learned from pairwise answers of a local VLM or an
  HTTP chat endpoint (:mod:`.preference_labels`).

Entry points: :func:`wrap_reward` (online, a gymnasium wrapper; :mod:`.wrapper`) and :func:`train_reward_main`
(``robot-rl train-reward``; :mod:`.train`). Labels computed from stores are cached in the stores' label sets
(:mod:`.labelling`, :mod:`robot_rl.data.labels`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from robot_rl.rewards.base import RewardDataError, RewardModel, load_reward_model
from robot_rl.rewards.wrapper import wrap_reward

if TYPE_CHECKING:
    from omegaconf import DictConfig


def train_reward_main(cfg: DictConfig) -> int:
    """``robot-rl train-reward``; see :func:`robot_rl.rewards.train.train_reward_main` (imported on first use)."""
    from robot_rl.rewards.train import train_reward_main as main

    return main(cfg)


__all__ = ["RewardDataError", "RewardModel", "load_reward_model", "train_reward_main", "wrap_reward"]
