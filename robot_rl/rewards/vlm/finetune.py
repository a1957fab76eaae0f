"""Fine-tune a dual encoder into a success classifier on a store's labels, in the spirit of RoboFuME (Yang et al.,
2023), which fine-tunes a pretrained vision-language model on a few demonstrations and failures to detect success.

The classifier's logit for a camera frame is ``a * cos(image_embedding, prompt_embedding) + b``: the prompt is the
task description (its text embedding is computed once and fixed), ``a`` and ``b`` are learned, and so are the last
``train_blocks`` transformer blocks of the image tower with its final LayerNorm and projection. Camera logits are
averaged. The frozen part of the image tower runs once per frame and its tokens are kept (plus ``image_copies``
randomly shifted copies per training frame), so training runs only the top of the tower. Labels, the episode-level
split, class-balanced batches, prior correction, threshold choice and the report are those of
:mod:`robot_rl.rewards.classifier`.

Saved as ``reward_model.json`` (``kind: vlm_classifier``, prompt, ``a``, ``b``, prior, threshold, report) next to
``vlm/``, a complete dual-encoder checkpoint directory holding the fine-tuned weights.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robot_rl.agents.augment import random_shift
from robot_rl.data.store import EpisodeStore
from robot_rl.rewards.base import (
    RewardDataError,
    RewardModel,
    read_model_json,
    resolve_device,
)
from robot_rl.rewards.classifier import (
    ClassifierConfig,
    cached_inputs,
    fit_success_head,
    prepare_split,
    success_report,
    write_plots,
)
from robot_rl.rewards.vlm.model import DualEncoder, load_dual_encoder, model_fingerprint, save_dual_encoder
from robot_rl.rewards.vlm.tokenizer import Tokenizer
from robot_rl.rewards.vlm.zero_shot import default_prompt


class VLMHead(nn.Module):
    """The trainable top of the image tower plus the similarity-to-prompt logit.

    ``forward({camera: tokens (B, L, W)}, augment=False, generator=None) -> (B,)``: tokens after the frozen first
    ``start`` blocks go through the remaining blocks, ``ln_post`` of the class token and ``proj``; the logit is
    ``exp(log_a) * cos(., prompt) + b``, averaged over cameras."""

    def __init__(self, model: DualEncoder, prompt_emb: torch.Tensor, start: int, cameras: list[str]):
        super().__init__()
        vis = model.visual
        self.blocks = copy.deepcopy(vis.transformer.resblocks[start:])
        self.ln_post, self.proj = copy.deepcopy(vis.ln_post), nn.Parameter(vis.proj.detach().clone())
        self.log_a = nn.Parameter(torch.tensor(float(np.log(10.0))))
        self.b = nn.Parameter(torch.zeros(()))
        self.register_buffer("prompt", prompt_emb.detach().clone())
        self.cameras, self.start = list(cameras), int(start)
        self.requires_grad_(True)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Cached tokens ``(B, L, W)`` -> L2-normalised image embeddings ``(B, embed_dim)``."""
        x = tokens.float()
        for blk in self.blocks:
            x = blk(x)
        return F.normalize(self.ln_post(x[:, 0]) @ self.proj, dim=-1)

    def forward(
        self, tokens: Mapping[str, torch.Tensor], augment: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        cos = torch.stack([self.embed(tokens[c]) @ self.prompt for c in self.cameras])  # (cameras, B)
        return (self.log_a.exp() * cos + self.b).mean(0)

    def write_back(self, model: DualEncoder) -> None:
        """Copy the trained blocks, ``ln_post`` and ``proj`` into ``model``'s image tower."""
        vis = model.visual
        with torch.no_grad():
            for i, blk in enumerate(self.blocks):
                vis.transformer.resblocks[self.start + i].load_state_dict(blk.state_dict())
            vis.ln_post.load_state_dict(self.ln_post.state_dict())
            vis.proj.copy_(self.proj)


@torch.no_grad()
def frozen_tokens(
    model: DualEncoder, images: Any, start: int, pad: int = 0, generator: torch.Generator | None = None, batch: int = 64
) -> torch.Tensor:
    """Image-tower tokens after the first ``start`` blocks: uint8 ``(N, H, W, 3)`` -> float16 ``(N, L, W)``;
    ``pad`` > 0 shifts each frame by up to ``pad`` px first."""
    x = torch.as_tensor(np.asarray(images))
    out = []
    for a in range(0, len(x), batch):
        chunk = x[a : a + batch].to(model.device)
        if pad > 0:
            chunk = random_shift(chunk, pad, generator)
        out.append(model.visual.transformer(model.visual.tokens(model.preprocess(chunk)), stop=start).half())
    return torch.cat(out)


def train_vlm_classifier(
    store: EpisodeStore,
    cfg: ClassifierConfig,
    *,
    seed: int = 0,
    device: str | torch.device | None = "auto",
    out: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[VLMClassifier, dict[str, Any]]:
    """Fine-tune the dual encoder at ``cfg.vlm_path`` on ``store`` (see the module docstring). Returns the model
    and its report; with ``out`` saves it (``vlm/`` + ``reward_model.json``) and the plots."""
    if not cfg.vlm_path:
        raise ValueError("backbone=vlm needs vlm_path: a dual-encoder checkpoint directory")
    t0 = time.perf_counter()
    dev = resolve_device(device)
    torch.manual_seed(seed)
    train, val, info = prepare_split(store, cfg, seed, log)
    model, tok = load_dual_encoder(cfg.vlm_path, dev)
    model.requires_grad_(False)
    prompt = cfg.prompt or default_prompt(store.metadata(0)["task"])
    ids, eot = tok([prompt], model.cfg.text.context_length)
    with torch.no_grad():
        prompt_emb = model.encode_text(ids, eot)[0]
    layers = model.cfg.vision.layers
    start = layers - min(max(int(cfg.train_blocks), 0), layers)
    gen = torch.Generator(device=dev).manual_seed(seed)
    tr_in, va_in = cached_inputs(partial(frozen_tokens, model, start=start), train, val, cfg.pad, cfg.image_copies, gen)
    t_feat = time.perf_counter() - t0
    head = VLMHead(model, prompt_emb, start, train.cameras).to(dev)
    with torch.no_grad():  # start the logit around 0 on the training frames
        cos = torch.stack([head.embed(tr_in[c][0][:256].to(dev)) @ head.prompt for c in head.cameras]).mean()
        head.b.fill_(-float(head.log_a.exp() * cos))
    fit, p_val, ev = fit_success_head(head, tr_in, va_in, train, val, cfg, seed, log)
    head.write_back(model)
    clf = VLMClassifier(
        model,
        tok,
        prompt,
        float(head.log_a.detach().exp()),
        float(head.b.detach()),
        train.image_shapes,
        ev["threshold"],
        fit["prior_logit"],
    )
    report = success_report("vlm_classifier", str(store.root), info, ev, fit, cfg, seed, dev, t0, t_feat)
    report["trained_blocks"] = layers - start
    if out is not None:
        clf.save(out, report)
        write_plots(out, val.label == 1, p_val, ev["threshold"])
    return clf, report


class VLMClassifier(RewardModel):
    """Fine-tuned dual encoder: frames -> success probability ``sigmoid(mean_cameras(a cos + b) + prior)``."""

    kind = "vlm_classifier"

    def __init__(
        self,
        model: DualEncoder,
        tokenizer: Tokenizer,
        prompt: str,
        a: float,
        b: float,
        image_shapes: Mapping[str, Any],
        threshold: float | None,
        prior_logit: float,
        batch: int = 64,
    ):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.prompt, self.a, self.b, self.prior_logit = prompt, float(a), float(b), float(prior_logit)
        self.image_shapes = {c: tuple(int(d) for d in s) for c, s in image_shapes.items()}
        self.cameras = sorted(self.image_shapes)
        self.threshold = None if threshold is None else float(threshold)
        self.batch = int(batch)
        ids, eot = tokenizer([prompt], model.cfg.text.context_length)
        with torch.no_grad():
            self.prompt_emb = model.encode_text(ids, eot)[0]
        self.fingerprint = model_fingerprint(model, tokenizer)

    @torch.no_grad()
    def score(self, frames: Mapping[str, Any]) -> np.ndarray:
        self.check_frames({c: tuple(np.shape(frames[c])[1:]) for c in frames}, "frames given to the VLM classifier")
        logits = []
        for c in self.cameras:
            x = frames[c]
            cos = torch.cat(
                [self.model.encode_image(x[a : a + self.batch]) @ self.prompt_emb for a in range(0, len(x), self.batch)]
            )
            logits.append(self.a * cos + self.b)
        return torch.sigmoid(torch.stack(logits).mean(0) + self.prior_logit).double().cpu().numpy()

    def identity(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model": self.fingerprint,
            "prompt": self.prompt,
            "a": round(self.a, 9),
            "b": round(self.b, 9),
            "prior_logit": round(self.prior_logit, 9),
            "cameras": self.cameras,
        }

    def save(self, out: str | Path, report: Mapping[str, Any] | None = None) -> Path:
        """Write ``out/vlm/`` (the fine-tuned checkpoint) and ``out/reward_model.json``."""
        out = Path(out)
        save_dual_encoder(self.model, self.tokenizer, out / "vlm")
        fields = {
            "checkpoint": "vlm",
            "model_fingerprint": self.fingerprint,
            "prompt": self.prompt,
            "a": self.a,
            "b": self.b,
            "prior_logit": self.prior_logit,
            "threshold": self.threshold,
            "cameras": {c: list(s) for c, s in self.image_shapes.items()},
        }
        return self.write_model_json(out, fields, report or {})

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = "auto") -> VLMClassifier:
        """Rebuild from a directory written by :meth:`save`."""
        d = read_model_json(path)
        model, tok = load_dual_encoder(Path(path) / d["checkpoint"], device)
        if model_fingerprint(model, tok) != d["model_fingerprint"]:
            raise RewardDataError(f"{path}: the fine-tuned checkpoint does not match reward_model.json")
        return cls(model, tok, d["prompt"], d["a"], d["b"], d["cameras"], d["threshold"], d["prior_logit"])
