"""Zero-shot image-text reward: how much a frame looks like the task description rather than negative descriptions.

For each camera frame the dual encoder's image embedding is compared with the embeddings of ``[prompt, *negatives]``;
the reward is the task prompt's probability under a softmax over those prompts (``score: softmax``, CLIP-style), or
its sigmoid probability alone (``score: sigmoid``, SigLIP-style, using the model's logit bias). With several cameras
the per-camera probabilities are averaged. This is the VLM-as-reward idea of e.g. Rocamonde et al. (2024) and
Mahmoudieh et al. (2022), with negative prompts as the baseline.

Saved form (``robot-rl train-reward reward=vlm_zero_shot``, which also calibrates the success threshold on a
store): ``reward_model.json`` with ``kind: vlm_zero_shot``, the checkpoint directory, its fingerprint, the prompts,
cameras and threshold. A checkpoint directory can also be used directly from a ``reward`` config
(:meth:`ZeroShotReward.from_config`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robot_rl.rewards.base import (
    RewardDataError,
    RewardModel,
    read_model_json,
)
from robot_rl.rewards.vlm.model import DualEncoder, load_dual_encoder, model_fingerprint
from robot_rl.rewards.vlm.tokenizer import Tokenizer

DEFAULT_NEGATIVES = (
    "a robot arm that has not completed the task",
    "an empty table",
    "a robot gripper far from the object",
)


def default_prompt(task: str) -> str:
    """A task description from a task name, e.g. ``pick_cube`` -> ``"a robot arm that has completed the task:
    pick cube"``. Give a real description in the config where one is known."""
    return f"a robot arm that has completed the task: {task.replace('_', ' ').strip() or 'the task'}"


def is_checkpoint_dir(path: str | Path) -> bool:
    """True when ``path`` holds a dual-encoder checkpoint (``config.json`` + ``model.safetensors``)."""
    p = Path(path)
    return (p / "config.json").is_file() and (p / "model.safetensors").is_file()


class ZeroShotReward(RewardModel):
    """Dual encoder + prompts: frames {camera: uint8 (B, H, W, 3)} -> task-prompt probability (B,) in [0, 1]."""

    kind = "vlm_zero_shot"

    def __init__(
        self,
        model: DualEncoder,
        tokenizer: Tokenizer,
        prompt: str,
        negatives: Sequence[str],
        cameras: Sequence[str] | Mapping[str, Sequence[int] | None],
        threshold: float | None = 0.5,
        checkpoint: str | Path = "",
        batch: int = 64,
    ):
        if not prompt or not negatives and model.cfg.score == "softmax":
            raise ValueError("a zero-shot reward needs a prompt and, with a softmax score, at least one negative")
        if not cameras:
            raise ValueError("a zero-shot reward needs at least one camera name")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.prompt, self.negatives = str(prompt), [str(n) for n in negatives]
        self.image_shapes = (
            {c: (tuple(s) if s is not None else None) for c, s in cameras.items()}  # type: ignore
            if isinstance(cameras, Mapping)
            else {c: None for c in cameras}
        )
        self.cameras = sorted(self.image_shapes)
        self.threshold = None if threshold is None else float(threshold)
        self.checkpoint, self.batch = str(checkpoint), int(batch)
        ids, eot = tokenizer([self.prompt, *self.negatives], model.cfg.text.context_length)
        with torch.no_grad():
            self.text_emb = model.encode_text(ids, eot)
        self.fingerprint = model_fingerprint(model, tokenizer)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @torch.no_grad()
    def prompt_probs(self, images: Any) -> torch.Tensor:
        """uint8 ``(B, H, W, 3)`` -> ``(B,)`` probability of the task prompt (see the module docstring)."""
        out = []
        for a in range(0, len(images), self.batch):
            logits = self.model.logits(self.model.encode_image(images[a : a + self.batch]), self.text_emb)
            out.append(
                torch.sigmoid(logits[:, 0])
                if self.model.cfg.score == "sigmoid"
                else torch.softmax(logits, dim=-1)[:, 0]
            )
        return torch.cat(out) if out else torch.zeros(0, device=self.device)

    def score(self, frames: Mapping[str, Any]) -> np.ndarray:
        self.check_frames({c: tuple(np.shape(frames[c])[1:]) for c in frames}, "frames given to the VLM reward")
        p = torch.stack([self.prompt_probs(frames[c]) for c in self.cameras]).mean(0)
        return p.double().cpu().numpy()

    def identity(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model": self.fingerprint,
            "prompts": [self.prompt, *self.negatives],
            "cameras": self.cameras,
            "score": self.model.cfg.score,
        }

    def save(self, out: str | Path, report: Mapping[str, Any] | None = None) -> Path:
        """``reward_model.json`` pointing at the checkpoint directory (absolute path), with prompts, cameras,
        threshold and ``report``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        fields = {
            "checkpoint": str(Path(self.checkpoint).resolve()),
            "model_fingerprint": self.fingerprint,
            "prompt": self.prompt,
            "negatives": self.negatives,
            "cameras": {c: (list(s) if s is not None else None) for c, s in self.image_shapes.items()},
            "threshold": self.threshold,
        }
        return self.write_model_json(out, fields, report or {})

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = "auto") -> ZeroShotReward:
        """From a ``reward_model.json`` written by :meth:`save`; the checkpoint must be unchanged."""
        d = read_model_json(path)
        model, tok = load_dual_encoder(d["checkpoint"], device)
        if model_fingerprint(model, tok) != d["model_fingerprint"]:
            raise RewardDataError(
                f"{path}: the checkpoint at {d['checkpoint']} changed since this reward was "
                "calibrated (fingerprint differs); run robot-rl train-reward again"
            )
        return cls(model, tok, d["prompt"], d["negatives"], d["cameras"], d["threshold"], d["checkpoint"])

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], device: str | torch.device | None = "auto") -> ZeroShotReward:
        """From a ``reward`` config whose ``path`` is a checkpoint directory: ``prompt`` (required), ``negatives``
        (default: a few generic ones), ``cameras`` (list of names, default ``[front]``), ``threshold`` (default 0.5)."""
        if not cfg.get("prompt"):
            raise ValueError(
                "reward=vlm_zero_shot with a checkpoint directory needs reward.prompt (the task "
                "description, e.g. 'a robot arm holding a red cube above the table')"
            )
        model, tok = load_dual_encoder(cfg["path"], device)
        negatives = list(cfg.get("negatives") or DEFAULT_NEGATIVES)
        cams = list(cfg.get("cameras") or ["front"])
        thr = 0.5 if cfg.get("threshold") is None else float(cfg["threshold"])
        return cls(model, tok, str(cfg["prompt"]), negatives, cams, thr, cfg["path"])
