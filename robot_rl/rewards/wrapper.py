"""Online reward relabelling: a gymnasium wrapper that replaces the env's reward and ``info["success"]`` with a
reward model's, keeping the env's own in ``info["gt_success"]`` / ``info["gt_reward"]`` (sim evaluation only).

Each step scores the observation the env returned (the transition's next observation): all cameras of a step, and
for a vector env all sub-envs, go through the model as one batch, on the model's device (CUDA when present).
``wrap_reward(env, reward_cfg, device)`` is the entry point the trainer uses; ``reward_cfg`` is the ``reward`` config
group (``configs/reward/*.yaml``):

* ``name``: ``ground_truth`` (the env is returned unchanged), ``classifier`` (a saved success classifier, a
  fine-tuned VLM classifier or any saved reward model), ``vlm_zero_shot`` or ``preference``;
* ``path``: the model directory written by ``robot-rl train-reward`` (for ``vlm_zero_shot`` it may also be a dual
  encoder checkpoint directory, then ``prompt`` / ``negatives`` / ``cameras`` come from the config);
* ``threshold``: success when the score is at least this (null: the saved one);
* ``reward``: ``binary`` (``success_reward`` on predicted success, else 0) or ``score`` (the model's score: a
  probability for classifiers, the task prompt's probability for zero-shot, the standardised preference reward);
  ``prob`` is accepted as a synonym of ``score``;
* ``consecutive``: frames in a row at or above the threshold before success is declared (suppresses single-frame
  false positives);
* ``terminate_on_success``: set ``terminated`` when success is declared. In sim, for a faithful comparison, also
  turn the task's own ``terminate_on_success`` off so that the ground truth does not end episodes;
* ``refine``: a judge on the classifier's successes, hard-negative mining and retraining during training
  (:mod:`robot_rl.rewards.refine`; single env only);
* ``shaping``: ``path`` of a progress model (or any saved reward model) used as the potential of potential-based
  shaping on top of whichever reward (``ground_truth`` included), ``mode`` potential | raw, ``scale``
  (:mod:`robot_rl.rewards.shaping`); the discount comes from the learner.

Every step's info also says whether the model declared success (``reward_declared``) and, where the env reports its
own success, whether that declaration was false (``reward_hacked``: the model says success, the env says no) and
whether the judge vetoed it (``reward_vetoed``). The step that ends an episode carries ``reward_stats``: those
counted over the episode (steps), and ``hacked_episode`` (1.0 when any step was hacked).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from robot_rl.envs.contract import image_keys
from robot_rl.rewards.base import REWARD_KINDS, RewardDataError, RewardModel, load_reward_model, resolve_device
from robot_rl.rewards.refine import ClassifierRefiner, RefineConfig

REWARD_MODES = ("binary", "score", "prob")


def _space_shapes(space: gym.spaces.Dict, batched: bool) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for k, s in space.spaces.items():
        shape = tuple(s.shape[1:]) if batched else tuple(s.shape)
        if isinstance(s, gym.spaces.Box) and s.dtype == np.uint8 and len(shape) == 3 and shape[-1] == 3:
            shapes[k] = shape
    return shapes


class Relabeller:
    """The per-step logic shared by the single and the vector wrapper (and offline relabelling of a store), over a
    batch of ``n`` observations."""

    def __init__(
        self,
        model: RewardModel,
        n: int,
        mode: str,
        threshold: float | None,
        success_reward: float,
        consecutive: int,
        terminate_on_success: bool,
    ):
        if mode not in REWARD_MODES:
            raise ValueError(f"reward={mode!r} must be one of {', '.join(REWARD_MODES)}")
        if consecutive < 1:
            raise ValueError(f"consecutive={consecutive} must be >= 1")
        self.model, self.mode = model, "score" if mode == "prob" else mode
        self.threshold = model.threshold if threshold is None else float(threshold)
        self.success_reward, self.consecutive = float(success_reward), int(consecutive)
        self.terminate = bool(terminate_on_success)
        self.streak = np.zeros(n, dtype=np.int64)

    def __call__(self, obs: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Batched obs ``{camera: (n, H, W, 3)}`` -> (reward (n,), success (n,) bool, score (n,))."""
        return self.decide(self.model.score({c: obs[c] for c in self.model.cameras}))

    def decide(self, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The model's scores ``(n,)`` of one step of each of the ``n`` streams -> (reward, success, score)."""
        above = score >= self.threshold if self.threshold is not None else np.zeros(len(score), dtype=bool)
        self.streak = np.where(above, self.streak + 1, 0)
        success = self.streak >= self.consecutive
        reward = np.where(success, self.success_reward, 0.0) if self.mode == "binary" else score.astype(np.float64)
        return reward, success, score


class RewardWrapper(gym.Wrapper):
    """Single env: after each step, ``reward`` and ``info["success"]`` come from ``model`` (see the module
    docstring); ``info["gt_success"]``, ``info["gt_reward"]`` keep the env's, ``info["reward_score"]`` the model's
    raw score. ``reset`` reports ``success=False`` and the env's own in ``gt_success``."""

    def __init__(
        self,
        env: gym.Env,
        model: RewardModel,
        reward: str = "binary",
        threshold: float | None = None,
        success_reward: float = 1.0,
        consecutive: int = 1,
        terminate_on_success: bool = True,
        refine: RefineConfig | None = None,
        seed: int = 0,
        log: Any = None,
    ):
        super().__init__(env)
        model.check_frames(_space_shapes(env.observation_space, batched=False), "the env's observation space")
        self.model = model
        self._core = Relabeller(model, 1, reward, threshold, success_reward, consecutive, terminate_on_success)
        self.refine = refine or RefineConfig(judge="none")
        judged = self.refine.judge == "ground_truth" or (self.refine.judge == "auto" and model.kind == "classifier")
        if judged and threshold is not None:  # the user's threshold holds through retraining
            model.threshold = float(threshold)
        self.refiner = (
            ClassifierRefiner(model, self.refine, seed, log, fixed_threshold=threshold is not None) if judged else None
        )
        self.env_steps = 0
        self._ep = {"declared_steps": 0, "hacked_steps": 0, "vetoed_steps": 0}
        self._last: tuple[dict[str, np.ndarray], bool] | None = None  # the last step's frames, declared success

    def load_weights(self, path: Any) -> None:
        """Take the weights and threshold of the classifier saved at ``path`` (a retrained one, from a checkpoint)."""
        saved = load_reward_model(path, self.model.device)
        self.model.scorer.load_state_dict(saved.scorer.state_dict())
        self.model.threshold = self._core.threshold = saved.threshold
        self.model.invalidate_identity()

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        if self.refiner is not None and self.refiner.due(self.env_steps):  # between episodes, never mid-episode
            self.refiner.retrain(self.env_steps)
            self._core.threshold = self.model.threshold
        obs, info = self.env.reset(**kwargs)
        self._core.streak[:] = 0
        self._ep = dict.fromkeys(self._ep, 0)
        info = dict(info)
        info["gt_success"] = bool(info.get("success", False))
        info["success"] = False
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        frames = {c: np.asarray(obs[c]) for c in self.model.cameras}
        r, s, score = self._core({c: f[None] for c, f in frames.items()})
        info = dict(info)
        known = "success" in info  # the env reports its own success (sim): false declarations can be counted
        if not known and self.refine.judge == "ground_truth":  # (auto: nobody to judge here)
            raise RewardDataError(
                "reward.refine.judge=ground_truth needs the env's own success in info (a "
                "simulator); this env reports none: use judge=auto or none"
            )
        gt = bool(info.get("success", False))
        declared = bool(s[0])
        hacked = declared and known and not gt
        vetoed = hacked and self.refiner is not None  # the judge (ground truth) rejects it
        if vetoed:
            self.refiner.add_negative(frames)
            if self.refine.veto:
                r, s = np.zeros(1), np.zeros(1, bool)
                self._core.streak[:] = 0
        self.env_steps += 1
        for k, v in (("declared_steps", declared), ("hacked_steps", hacked), ("vetoed_steps", vetoed)):
            self._ep[k] += int(v)
        info["gt_success"], info["gt_reward"] = gt, float(reward)
        info["success"], info["reward_score"] = bool(s[0]), float(score[0])
        info.update(reward_declared=declared, reward_hacked=hacked, reward_vetoed=vetoed)
        if s[0] and self._core.terminate:
            terminated = True
        if terminated or truncated:
            info["reward_stats"] = {
                **{k: float(v) for k, v in self._ep.items()},
                "hacked_episode": float(self._ep["hacked_steps"] > 0),
            }
        self._last = (frames, declared)
        return obs, float(r[0]), bool(terminated), bool(truncated), info

    def operator_mark(self, mark: str) -> None:
        """An operator's mark on the frame of the step just taken (called by
        :class:`~robot_rl.hil.intervention.InterventionWrapper`): with a refiner, "failure" on a frame the classifier
        called success makes it a hard negative, "success" on a frame it did not makes it a positive."""
        if self.refiner is None or self._last is None:
            return
        frames, declared = self._last
        if mark == "failure" and declared:
            self.refiner.add_negative(frames)
        elif mark == "success" and not declared:
            self.refiner.add_positive(frames)


class RewardVectorWrapper(gym.vector.VectorWrapper):
    """Vector env (next-step autoreset, gymnasium's default): every sub-env's observation scored in one batch per
    step. The step right after a sub-env ended returns its reset observation; that step keeps reward 0 and
    success False, as the env reports it. Info arrays as for :class:`RewardWrapper`, with ``_key`` masks."""

    def __init__(
        self,
        env: gym.vector.VectorEnv,
        model: RewardModel,
        reward: str = "binary",
        threshold: float | None = None,
        success_reward: float = 1.0,
        consecutive: int = 1,
        terminate_on_success: bool = True,
    ):
        super().__init__(env)
        mode = env.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
        if mode != gym.vector.AutoresetMode.NEXT_STEP:
            raise ValueError(f"RewardVectorWrapper supports next-step autoreset only, got {mode}")
        model.check_frames(_space_shapes(env.observation_space, batched=True), "the vector env's observation space")
        self.model, self.n = model, env.num_envs
        self._core = Relabeller(model, self.n, reward, threshold, success_reward, consecutive, terminate_on_success)
        self._was_done = np.zeros(self.n, dtype=bool)

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._core.streak[:] = 0
        self._was_done[:] = False
        info = dict(info)
        info["gt_success"] = np.asarray(info.get("success", np.zeros(self.n, bool)), dtype=bool)
        info["success"], info["_success"] = np.zeros(self.n, bool), np.ones(self.n, bool)
        info["_gt_success"] = np.ones(self.n, bool)
        return obs, info

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        r, s, score = self._core({c: np.asarray(obs[c]) for c in self.model.cameras})
        fresh = self._was_done  # these returned a reset observation this step
        r, s = np.where(fresh, 0.0, r), s & ~fresh
        self._core.streak[fresh] = 0
        info = dict(info)
        ones = np.ones(self.n, bool)
        info["gt_success"] = np.asarray(info.get("success", np.zeros(self.n, bool)), dtype=bool)
        info["gt_reward"] = np.asarray(reward, dtype=np.float64)
        info["success"], info["reward_score"] = s, score
        for k in ("gt_success", "gt_reward", "success", "reward_score"):
            info[f"_{k}"] = ones
        terminated = np.asarray(terminated, dtype=bool) | (s if self._core.terminate else False)
        self._was_done = terminated | np.asarray(truncated, dtype=bool)
        return obs, r, terminated, np.asarray(truncated, dtype=bool), info


def build_reward_model(reward_cfg: Mapping[str, Any], device: str | torch.device | None = "auto") -> RewardModel | None:
    """The reward model a ``reward`` config names (None for ``ground_truth``)."""
    name = str(reward_cfg.get("name", "ground_truth"))
    if name == "ground_truth":
        return None
    if name not in REWARD_KINDS:
        raise ValueError(f"unknown reward {name!r}; valid: {', '.join(REWARD_KINDS)}")
    path = reward_cfg.get("path")
    if not path:
        raise ValueError(
            f"reward={name} needs reward.path: a directory written by robot-rl train-reward"
            + (" or a dual-encoder checkpoint directory" if name == "vlm_zero_shot" else "")
        )
    if name == "vlm_zero_shot":
        from robot_rl.rewards.vlm.zero_shot import ZeroShotReward, is_checkpoint_dir

        if is_checkpoint_dir(path):
            return ZeroShotReward.from_config(reward_cfg, device)
    return load_reward_model(path, device)


def wrap_reward(
    env: gym.Env | gym.vector.VectorEnv,
    reward_cfg: Mapping[str, Any] | None,
    device: str | torch.device | None = "auto",
    seed: int = 0,
    log: Any = None,
    gamma: float = 0.99,
    shape: bool = True,
) -> gym.Env | gym.vector.VectorEnv:
    """Wrap ``env`` so its reward and ``info["success"]`` come from the reward model ``reward_cfg`` names (see the
    module docstring); ``ground_truth`` (or no config) returns ``env`` itself. Camera names and image sizes of the
    env must match the model's, else :class:`~robot_rl.rewards.base.RewardDataError` names them. With ``shape``,
    :func:`wrap_shaping` on top."""
    env = _wrap_model(env, dict(reward_cfg or {}), device, seed, log)
    return wrap_shaping(env, reward_cfg, device, gamma) if shape else env


def wrap_shaping(
    env: gym.Env | gym.vector.VectorEnv,
    reward_cfg: Mapping[str, Any] | None,
    device: str | torch.device | None = "auto",
    gamma: float = 0.99,
) -> gym.Env:
    """Potential-based shaping (``reward.shaping``, :mod:`robot_rl.rewards.shaping`) on top of ``env``'s reward, or
    ``env`` itself when no ``shaping.path`` is set. It must be the outermost reward change: whatever sets the final
    reward and end flags of a step (a learned reward, an operator's success mark) sits inside it."""
    shaping = dict((reward_cfg or {}).get("shaping") or {})
    if shaping.get("path"):
        from robot_rl.rewards.shaping import PotentialShaping

        if isinstance(env, gym.vector.VectorEnv):
            raise ValueError("reward.shaping works with a single env, not a vector env")
        potential = load_reward_model(shaping["path"], resolve_device(device))
        potential.check_frames(_space_shapes(env.observation_space, batched=False), "the env's observation space")
        env = PotentialShaping(
            env,
            potential,
            gamma,
            str(shaping.get("mode") or "potential"),
            float(1.0 if shaping.get("scale") is None else shaping["scale"]),
        )
    return env


def relabel_options(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """How a ``reward`` config turns the model's scores into rewards: :class:`Relabeller`'s keyword arguments."""
    return dict(
        reward=str(cfg.get("reward", "binary")),
        threshold=cfg.get("threshold"),
        success_reward=float(cfg.get("success_reward", 1.0)),
        consecutive=int(cfg.get("consecutive", 1)),
        terminate_on_success=bool(cfg.get("terminate_on_success", True)),
    )


def _wrap_model(env: Any, cfg: dict[str, Any], device: Any, seed: int, log: Any) -> Any:
    model = build_reward_model(cfg, resolve_device(device))
    if model is None:
        return env
    if not image_keys(env.single_observation_space if isinstance(env, gym.vector.VectorEnv) else env.observation_space):
        raise RewardDataError(f"reward={cfg.get('name')} scores camera images, but the env has none (use obs=pixels)")
    kw = relabel_options(cfg)
    refine = RefineConfig.from_dict(cfg.get("refine"))
    if isinstance(env, gym.vector.VectorEnv):
        if refine.judge == "ground_truth":
            raise ValueError("reward.refine.judge=ground_truth works with a single env, not a vector env")
        return RewardVectorWrapper(env, model, **kw)
    return RewardWrapper(env, model, **kw, refine=refine, seed=seed, log=log)
