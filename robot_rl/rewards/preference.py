"""Preference rewards from AI feedback, in the spirit of RL-VLM-F (Wang et al., 2024): a labeller compares two
frames for progress on the task (:mod:`robot_rl.rewards.preference_labels`), a Bradley-Terry reward model (Bradley &
Terry, 1952; as in Christiano et al., 2017) learns a per-frame reward from the answers, and the model relabels stores
offline.

The reward model is a :class:`~robot_rl.rewards.classifier.FrameScorer` on frozen trunk maps trained with
``-log sigmoid(r(preferred) - r(other))``; unsure answers are dropped. Its output is standardised over the training
store's frames; when the store has successful episodes a success threshold is picked for ``target_fpr`` on the
labelled frames as for the classifier.

The labelling side's names (labellers, :func:`parse_answer`, :func:`collect_preferences`, ...) are importable from
here too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from robot_rl.data.store import EpisodeStore
from robot_rl.rewards.base import RewardDataError, RewardNetConfig, resolve_device
from robot_rl.rewards.classifier import (
    FrameScorer,
    TrunkFeaturizer,
    TrunkRewardModel,
    evaluate_scores,
    predict_logits,
)
from robot_rl.rewards.frames import LabelRule, load_frames
from robot_rl.rewards.preference_labels import (
    DEFAULT_PROMPT,
    FIRST,
    SECOND,
    UNSURE,
    EndpointError,
    HTTPChatLabeller,
    LocalVLMLabeller,
    PreferenceLabeller,
    build_labeller,
    collect_preferences,
    parse_answer,
    png_data_url,
    sample_pairs,
)


# ------------------------------------------------------------------------------------------------ reward model
@dataclass
class PreferenceConfig(RewardNetConfig):
    """Options of ``reward.train`` in ``configs/reward/preference.yaml`` (units there). Trunk, head and training: see
    :class:`~robot_rl.rewards.base.RewardNetConfig` (``batch_size`` counts pairs here)."""

    options_name = "preference"

    camera: str | None = None
    task: str | None = None
    pairs: int = 500
    batch_pairs: int = 16
    feature_pad: float = 0.125
    steps: int = 1000
    target_fpr: float = 0.01
    positive_last_k: int = 3
    margin: int = 2
    relabel: bool = True
    relabel_out: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pairs < 2 or self.steps < 1 or not 0 <= self.val_fraction < 1:
            raise ValueError(
                f"need pairs >= 2, steps >= 1, val_fraction in [0, 1): {self.pairs}, {self.steps}, {self.val_fraction}"
            )


def fit_bradley_terry(
    scorer: FrameScorer,
    maps: Mapping[str, torch.Tensor],
    first: np.ndarray,
    second: np.ndarray,
    answer: np.ndarray,
    *,
    val_fraction: float,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    eval_every: int,
    seed: int,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train ``scorer`` so that ``sigmoid(r(a) - r(b))`` predicts that ``a`` was preferred.

    ``maps``: {camera: (F, C, h, w)} of all frames; ``first`` / ``second`` (P,) frame indices; ``answer`` (P,)
    FIRST / SECOND / UNSURE (dropped). A random ``val_fraction`` of the pairs is held out; the state with the lowest
    held-out loss is kept. Returns ``{"pairs_used", "val_accuracy", "train_accuracy", "best_step", "history"}``."""
    keep = answer != UNSURE
    a, b = np.asarray(first)[keep], np.asarray(second)[keep]
    y = (np.asarray(answer)[keep] == FIRST).astype(np.float32)
    if len(y) < 2:
        raise RewardDataError(f"only {len(y)} usable preference answers ({int(np.sum(~keep))} unsure); need more")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    nv = int(round(val_fraction * len(y)))
    va, tr = perm[:nv], perm[nv:]
    dev = next(scorer.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed)
    opt = torch.optim.AdamW(scorer.parameters(), lr=lr, weight_decay=weight_decay)
    ta, tb, ty = (torch.as_tensor(x, device=dev) for x in (a, b, y))

    def pair_logits(rows: np.ndarray, augment: bool) -> torch.Tensor:
        r = torch.as_tensor(rows, device=dev)
        both = torch.cat([ta[r], tb[r]])
        out = scorer({c: m[both].to(dev) for c, m in maps.items()}, augment=augment, generator=gen)
        return out[: len(rows)] - out[len(rows) :]

    def evaluate(rows: np.ndarray) -> tuple[float, float]:
        scorer.eval()
        with torch.no_grad():
            z = torch.cat([pair_logits(rows[s : s + 512], False) for s in range(0, len(rows), 512)])
            t = ty[torch.as_tensor(rows, device=dev)]
            return float(F.binary_cross_entropy_with_logits(z, t)), float(((z > 0).float() == t).float().mean())

    best, history = (float("inf"), 0, None), []
    for step in range(1, steps + 1):
        scorer.train()
        rows = tr[rng.integers(0, len(tr), batch_size)]
        loss = F.binary_cross_entropy_with_logits(pair_logits(rows, True), ty[torch.as_tensor(rows, device=dev)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            rec = {"step": step, "train_loss": float(loss.detach())}
            if len(va):
                rec["val_loss"], rec["val_accuracy"] = evaluate(va)
                if rec["val_loss"] <= best[0]:
                    best = (rec["val_loss"], step, {k: v.detach().clone() for k, v in scorer.state_dict().items()})
            history.append(rec)
            if log:
                log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()))
    if best[2] is not None:
        scorer.load_state_dict(best[2])
    scorer.eval()
    return {
        "pairs_used": int(len(y)),
        "unsure": int(np.sum(~keep)),
        "val_pairs": int(len(va)),
        "val_accuracy": evaluate(va)[1] if len(va) else float("nan"),
        "train_accuracy": evaluate(tr)[1],
        "best_step": best[1] or steps,
        "history": history,
    }


class PreferenceReward(TrunkRewardModel):
    """Frozen trunk + Bradley-Terry :class:`FrameScorer`: frames -> standardised reward
    ``(r - mean) / std`` (B,); success when it reaches ``threshold`` (None: never)."""

    kind = "preference"
    noun = "preference model"
    saved_names = ("threshold", "mean", "std")
    keeps_report = False  # a loaded preference model starts with an empty report

    def __init__(
        self,
        featurizer: TrunkFeaturizer,
        scorer: FrameScorer,
        image_shapes: Mapping[str, Sequence[int]],
        mean: float = 0.0,
        std: float = 1.0,
        threshold: float | None = None,
    ):
        super().__init__(featurizer, scorer, image_shapes)
        self.mean, self.std = float(mean), float(std)
        self.threshold = None if threshold is None else float(threshold)

    @torch.no_grad()
    def raw(self, maps: Mapping[str, torch.Tensor], batch: int = 512) -> torch.Tensor:
        """Unstandardised rewards (F,) of cached maps {camera: (F, C, h, w)}."""
        return predict_logits(self.scorer, maps, batch)

    @torch.no_grad()
    def score(self, frames: Mapping[str, Any]) -> np.ndarray:
        return ((self.scorer(self.frame_maps(frames)) - self.mean) / self.std).double().cpu().numpy()

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "mean": round(self.mean, 9), "std": round(self.std, 9)}


def train_preference_reward(
    store: EpisodeStore,
    labeller: PreferenceLabeller,
    cfg: PreferenceConfig,
    *,
    seed: int = 0,
    device: str | torch.device | None = "auto",
    out: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[PreferenceReward, dict[str, Any]]:
    """Collect (cached) preferences on ``store``'s frames and fit the Bradley-Terry reward model (see the module
    docstring). Returns the model and a report (answer counts, held-out pair accuracy, success-threshold
    validation when the store has successful episodes)."""
    t0 = time.perf_counter()
    dev = resolve_device(device)
    torch.manual_seed(seed)
    frames = load_frames(store, cfg.cameras, LabelRule(cfg.positive_last_k, cfg.margin))
    camera = cfg.camera or frames.cameras[0]
    task = cfg.task or store.metadata(0)["task"].replace("_", " ")
    prefs = collect_preferences(store, frames, camera, labeller, task, cfg.pairs, seed, cfg.batch_pairs, log=log)
    shapes = frames.image_shapes
    feat = TrunkFeaturizer(cfg.trunk_stage, cfg.pretrained, dev, next(iter(shapes.values()))[:2])
    maps = {c: feat.maps(frames.images[c]) for c in frames.cameras}
    fshapes = {c: tuple(m.shape[1:]) for c, m in maps.items()}
    scorer = FrameScorer(fshapes, cfg.feature_dim, cfg.num_kernels, cfg.hidden, cfg.dropout, cfg.feature_pad).to(dev)
    fit = fit_bradley_terry(
        scorer,
        maps,
        prefs["first"],
        prefs["second"],
        prefs["answer"],
        val_fraction=cfg.val_fraction,
        **cfg.fit_options(),
        seed=seed,
        log=log,
    )
    model = PreferenceReward(feat, scorer, shapes)
    r = model.raw(maps).double().cpu().numpy()
    model.mean, model.std = float(r.mean()), float(max(r.std(), 1e-6))
    z = (r - model.mean) / model.std
    report: dict[str, Any] = {
        "kind": "preference",
        "store": str(store.root),
        "camera": camera,
        "task": task,
        "preferences": {k: prefs[k] for k in ("cached", "asked", "labeller_calls", "label_set")},
        "answers": {
            "first": int(np.sum(prefs["answer"] == FIRST)),
            "second": int(np.sum(prefs["answer"] == SECOND)),
            "unsure": int(np.sum(prefs["answer"] == UNSURE)),
        },
        "labeller": labeller.identity(),
        "fit": {k: v for k, v in fit.items() if k != "history"},
        "history": fit["history"],
        "config": cfg.to_dict(),
        "seed": seed,
    }
    lab = frames.label >= 0
    y = frames.label[lab] == 1
    if y.any() and (~y).any():  # the store says which frames show success: calibrate a success threshold
        ev = evaluate_scores(y, z[lab], cfg.target_fpr, probabilities=False)
        model.threshold = ev["threshold"]
        report["success_validation_in_sample"] = ev
    report["seconds"] = time.perf_counter() - t0
    if out is not None:
        model.save(out, report)
    return model, report


__all__ = [
    "DEFAULT_PROMPT",
    "FIRST",
    "SECOND",
    "UNSURE",
    "EndpointError",
    "HTTPChatLabeller",
    "LocalVLMLabeller",
    "PreferenceConfig",
    "PreferenceLabeller",
    "PreferenceReward",
    "build_labeller",
    "collect_preferences",
    "fit_bradley_terry",
    "parse_answer",
    "png_data_url",
    "sample_pairs",
    "train_preference_reward",
]
