"""Success classifier on frozen image features: the learned reward of HIL-SERL (Luo et al., 2024), with validation.

Frames from an episode store get success labels by the rule of :mod:`robot_rl.rewards.frames`. Every camera goes
through one frozen ImageNet EfficientNet-Lite0 trunk (:class:`~robot_rl.agents.vision.PretrainedTrunk`); its maps
are computed once per frame (plus ``image_copies`` randomly shifted copies per training frame, DrQ-style image-space
augmentation paid once) and kept. Only a small head trains: a spatial-embedding head per camera
(:class:`~robot_rl.agents.vision.SpatialEmbeddingHead`), concatenated, then an MLP to one logit; during training the
cached maps are also shifted by up to ``feature_pad`` cells (:func:`~robot_rl.agents.augment.random_shift_features`).

Training batches are class-balanced; the logit is then shifted by the log prior odds of the training labels, so the
probability refers to the data's own class balance (the standard prior-shift correction). The state with the lowest
validation loss is kept. The split is by episode (no frame of a validation episode is trained on). The decision
threshold is the lowest one whose false-positive rate on the validation negatives is at most ``target_fpr``
(:func:`~robot_rl.rewards.metrics.threshold_for_fpr`); accuracy, precision, recall, FPR and ROC AUC are reported
there, with a reliability diagram and the ROC curve as PNGs.

Saved as ``reward_model.safetensors`` (the head; the trunk too when it is not the wheel's pretrained one) and
``reward_model.json`` (config, threshold, metrics, camera names and shapes, trunk stage and fingerprint, label rule).
The trunk + head pair, saving and loading included, is :class:`TrunkRewardModel`, which the progress and preference
models extend too.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from robot_rl.agents.augment import random_shift, random_shift_features
from robot_rl.agents.vision import PretrainedTrunk, SpatialEmbeddingHead, weights_fingerprint
from robot_rl.data.store import EpisodeStore
from robot_rl.rewards.base import (
    WEIGHTS_FILE,
    RewardDataError,
    RewardModel,
    RewardNetConfig,
    read_model_json,
    resolve_device,
)
from robot_rl.rewards.frames import LabelRule, StoreFrames, count_labels, load_frames, split_episodes
from robot_rl.rewards.metrics import binary_metrics, calibration, plot_calibration, plot_roc, roc_auc, threshold_for_fpr


@dataclass
class ClassifierConfig(RewardNetConfig):
    """Training options (``reward.train`` in ``configs/reward/classifier.yaml``); units in the comments there.

    Labelling: ``positive_last_k``, ``margin``, ``marks``, ``reward_marks`` (see :class:`LabelRule`). Data checks:
    ``min_positives`` / ``min_negatives`` frames, a warning above ``imbalance_warn`` majority:minority. Trunk, head
    and training: see :class:`~robot_rl.rewards.base.RewardNetConfig`. Augmentation: ``image_copies`` shifted copies
    per training frame by up to ``pad`` px, and feature-map shifts of ``feature_pad`` cells (None: ``pad`` / trunk
    stride). ``backbone``: ``trunk`` (this module) or ``vlm`` (fine-tune the dual encoder at ``vlm_path`` with
    ``prompt``, training its last ``train_blocks`` image blocks: :mod:`robot_rl.rewards.vlm.finetune`).
    """

    options_name = "classifier"

    backbone: str = "trunk"
    positive_last_k: int = 3
    margin: int = 2
    marks: str | None = None
    reward_marks: float | None = None
    target_fpr: float = 0.01
    min_positives: int = 10
    min_negatives: int = 10
    imbalance_warn: float = 20.0
    pad: int = 4
    image_copies: int = 1
    vlm_path: str | None = None
    prompt: str | None = None
    train_blocks: int = 1
    relabel: bool = True

    def __post_init__(self) -> None:
        if self.backbone not in ("trunk", "vlm"):
            raise ValueError(f"backbone={self.backbone!r} must be 'trunk' or 'vlm'")
        super().__post_init__()
        if not 0 <= self.target_fpr < 1 or not 0 < self.val_fraction < 1:
            raise ValueError(
                f"target_fpr={self.target_fpr} must lie in [0, 1) and val_fraction={self.val_fraction} in (0, 1)"
            )
        if min(self.steps, self.batch_size, self.eval_every, self.min_positives, self.min_negatives) < 1:
            raise ValueError("steps, batch_size, eval_every, min_positives and min_negatives must be >= 1")
        if self.image_copies < 0 or self.pad < 0:
            raise ValueError(f"image_copies={self.image_copies} and pad={self.pad} must be >= 0")

    def label_rule(self) -> LabelRule:
        return LabelRule(self.positive_last_k, self.margin, self.marks, self.reward_marks)


# --------------------------------------------------------------------------------------------------- features
class TrunkFeaturizer:
    """One frozen EfficientNet-Lite0 trunk for every camera: uint8 ``(N, H, W, 3)`` -> float16 maps
    ``(N, C, h, w)`` (stage 6: ``C = 320``, ``h = ceil(H / 32)``), computed ``batch`` frames at a time on
    ``device`` without autograd."""

    def __init__(
        self,
        stage: int = 6,
        pretrained: bool = True,
        device: str | torch.device | None = "auto",
        image_size: tuple[int, int] = (128, 128),
        batch: int = 64,
    ):
        self.device = resolve_device(device)
        self.trunk = PretrainedTrunk(stage, pretrained, image_size).to(self.device)
        self.stage, self.pretrained, self.batch = int(stage), bool(pretrained), int(batch)

    def fingerprint(self) -> str:
        """Identifies the trunk's cut and weights (see :meth:`PretrainedTrunk.fingerprint`)."""
        return self.trunk.fingerprint()

    def feature_shape(self, hw: Sequence[int]) -> tuple[int, int, int]:
        """``(C, h, w)`` of the maps of an ``(H, W)`` frame."""
        with torch.no_grad():
            out = self.trunk(torch.zeros(1, int(hw[0]), int(hw[1]), 3, dtype=torch.uint8, device=self.device))
        return tuple(int(d) for d in out.shape[1:])  # type: ignore[return-value]

    @torch.no_grad()
    def maps(
        self, images: Any, pad: int = 0, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float16
    ) -> torch.Tensor:
        """Trunk maps of ``images`` (uint8 ``(N, H, W, 3)`` array or tensor) on the featurizer's device; ``pad`` > 0
        first shifts every frame by its own random offset of up to ``pad`` px (edges replicated)."""
        x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
        out = []
        for a in range(0, len(x), self.batch):
            chunk = x[a : a + self.batch].to(self.device)
            if pad > 0:
                chunk = random_shift(chunk, pad, generator)
            out.append(self.trunk(chunk).to(dtype))
        if not out:
            return torch.zeros(0, *self.feature_shape(x.shape[1:3]), dtype=dtype, device=self.device)
        return torch.cat(out)


class FrameScorer(nn.Module):
    """Per-camera trunk maps -> one logit per frame (or ``outputs`` logits).

    ``forward({camera: (B, C, h, w)}, augment=False, generator=None) -> (B,)`` (``(B, outputs)`` when ``outputs`` >
    1): a spatial-embedding head per camera (``feature_dim`` outputs each, in sorted camera order), concatenated, then
    ``Linear(hidden) -> ReLU -> Dropout -> Linear(outputs)``. With ``augment`` the maps are shifted by up to
    ``feature_pad`` cells first."""

    def __init__(
        self,
        feature_shapes: Mapping[str, tuple[int, int, int]],
        feature_dim: int = 64,
        num_kernels: int = 8,
        hidden: int = 128,
        dropout: float = 0.1,
        feature_pad: float = 0.0,
        outputs: int = 1,
    ):
        super().__init__()
        self.cameras = sorted(feature_shapes)
        self.heads = nn.ModuleDict(
            {c: SpatialEmbeddingHead(feature_shapes[c], feature_dim, num_kernels, dropout) for c in self.cameras}
        )
        self.mlp = nn.Sequential(
            nn.Linear(feature_dim * len(self.cameras), hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, int(outputs)),
        )
        self.feature_pad = float(feature_pad)

    def forward(
        self, maps: Mapping[str, torch.Tensor], augment: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        parts = []
        for c in self.cameras:
            m = maps[c]
            if augment and self.feature_pad > 0:
                m = random_shift_features(m, self.feature_pad, generator)
            parts.append(self.heads[c](m))
        out = self.mlp(torch.cat(parts, dim=-1))
        return out.squeeze(-1) if out.shape[-1] == 1 else out


# --------------------------------------------------------------------------------------------------- training
def check_label_counts(
    frames: StoreFrames, min_positives: int, min_negatives: int, imbalance_warn: float, where: str
) -> dict[str, int]:
    """Counts of :func:`count_labels`; raises :class:`RewardDataError` with them when a class has too few frames,
    warns when the majority class outnumbers the minority more than ``imbalance_warn`` times."""
    c = count_labels(frames)
    summary = (
        f"{c['positives']} positive and {c['negatives']} negative frames from {c['episodes']} episodes "
        f"({c['successful_episodes']} successful, {c['episodes'] - c['successful_episodes']} failed; "
        f"{c['left_out']} frames left out)"
    )
    if c["positives"] < min_positives or c["negatives"] < min_negatives:
        raise RewardDataError(
            f"{where}: too few examples: {summary}; need at least {min_positives} positives and "
            f"{min_negatives} negatives. Record more successful episodes (positives) or failed "
            "ones (negatives: keep_failures=true, teleop.noise=...), or raise positive_last_k"
        )
    ratio = max(c["positives"], c["negatives"]) / max(1, min(c["positives"], c["negatives"]))
    if ratio > imbalance_warn:
        warnings.warn(
            f"{where}: heavy class imbalance ({ratio:.0f}:1): {summary}; training batches are balanced, "
            "but validation figures of the minority class rest on few frames",
            stacklevel=2,
        )
    return c


def fit_binary(
    module: nn.Module,
    train: Mapping[str, torch.Tensor],
    y_train: np.ndarray,
    val: Mapping[str, torch.Tensor] | None,
    y_val: np.ndarray | None,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    eval_every: int,
    seed: int,
    params: Sequence[nn.Parameter] | None = None,
    log: Callable[[str], None] | None = None,
    sample_weights: np.ndarray | None = None,
    prior_logit: float | None = None,
) -> dict[str, Any]:
    """Train ``module`` (``forward(inputs {name: (B, ...)}, augment, generator) -> logits (B,)``) as a binary
    classifier on cached inputs. Returns ``{"prior_logit", "best_step", "best_val_loss", "history"}`` and leaves the
    best state (lowest validation loss) loaded.

    ``train``: {name: (K, N, ...)} with ``K`` augmented copies of each of the ``N`` training frames (one copy drawn
    per sample); ``y_train`` (N,) in {0, 1}; ``val``: {name: (M, ...)} and ``y_val`` (M,) or None. Batches hold
    ``batch_size // 2`` positives and as many negatives (with replacement; ``sample_weights`` (N,), relative draw
    weights within each class, default uniform); predictions add ``prior_logit`` (default: the log odds of the
    training labels). AdamW on ``params`` (default: parameters that require grad).
    """
    dev = next(module.parameters()).device
    y_train = np.asarray(y_train).astype(bool)
    pos, neg = np.flatnonzero(y_train), np.flatnonzero(~y_train)
    if len(pos) == 0 or len(neg) == 0:
        raise RewardDataError(f"training frames need both classes: {len(pos)} positives, {len(neg)} negatives")
    prior_logit = float(math.log(len(pos) / len(neg))) if prior_logit is None else float(prior_logit)
    w = np.ones(len(y_train)) if sample_weights is None else np.asarray(sample_weights, np.float64)
    p_pos, p_neg = w[pos] / w[pos].sum(), w[neg] / w[neg].sum()
    rng = np.random.default_rng(seed)
    gen = torch.Generator(device=dev).manual_seed(seed)
    opt = torch.optim.AdamW(
        list(params) if params is not None else [p for p in module.parameters() if p.requires_grad],
        lr=lr,
        weight_decay=weight_decay,
    )
    half = max(1, batch_size // 2)
    target = torch.cat([torch.ones(half), torch.zeros(half)]).to(dev)
    k = next(iter(train.values())).shape[0]
    best = {"loss": float("inf"), "step": 0, "state": None}
    history = []

    def val_loss() -> float:
        logits = predict_logits(module, val) + prior_logit
        return float(
            F.binary_cross_entropy_with_logits(
                logits, torch.as_tensor(y_val, dtype=torch.float32, device=logits.device)
            )
        )

    for step in range(1, steps + 1):
        module.train()
        idx = np.concatenate([rng.choice(pos, half, p=p_pos), rng.choice(neg, half, p=p_neg)])
        copy = rng.integers(0, k, len(idx))
        batch = {n: x[torch.as_tensor(copy), torch.as_tensor(idx)].to(dev, non_blocking=True) for n, x in train.items()}
        loss = F.binary_cross_entropy_with_logits(module(batch, augment=True, generator=gen), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            rec = {"step": step, "train_loss": float(loss.detach())}
            if val is not None and y_val is not None and len(y_val):
                rec["val_loss"] = val_loss()
                if rec["val_loss"] <= best["loss"]:
                    best = {
                        "loss": rec["val_loss"],
                        "step": step,
                        "state": {n: t.detach().clone() for n, t in module.state_dict().items()},
                    }
            history.append(rec)
            if log:
                log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()))
    if best["state"] is not None:
        module.load_state_dict(best["state"])
    module.eval()
    return {
        "prior_logit": prior_logit,
        "best_step": best["step"] or steps,
        "best_val_loss": best["loss"] if best["state"] is not None else float("nan"),
        "history": history,
    }


@torch.no_grad()
def predict_logits(
    module: nn.Module, inputs: Mapping[str, torch.Tensor], batch: int = 512, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """``module``'s logits (N,) (``(N, outputs)`` with several outputs) over cached inputs {name: (N, ...)},
    ``batch`` at a time, in eval mode; ``dtype``: what the inputs are cast to on their way to the device (None:
    kept)."""
    module.eval()
    dev = next(module.parameters()).device
    n = next(iter(inputs.values())).shape[0]
    out = [module({k: v[a : a + batch].to(dev, dtype=dtype) for k, v in inputs.items()}) for a in range(0, n, batch)]
    return torch.cat(out) if out else torch.zeros(0, device=dev)


def evaluate_scores(y: np.ndarray, p: np.ndarray, target_fpr: float, probabilities: bool = True) -> dict[str, Any]:
    """Validation report of scores ``p`` (N,) against labels ``y`` (N,): the threshold for ``target_fpr``
    (:func:`threshold_for_fpr`), metrics there and at 0.5, ROC AUC, calibration (ECE, Brier; probabilities only),
    counts."""
    y = np.asarray(y).astype(bool)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        thr = threshold_for_fpr(p[~y], target_fpr, p[y], probabilities=probabilities)
    at = binary_metrics(y, p, thr)
    cal = calibration(y, p) if probabilities else {"ece": float("nan"), "brier": float("nan")}
    return {
        "threshold": thr,
        "target_fpr": target_fpr,
        "at_threshold": at,
        "at_0.5": binary_metrics(y, p, 0.5),
        "roc_auc": roc_auc(y, p),
        "ece": cal["ece"],
        "brier": cal["brier"],
        "positives": int(y.sum()),
        "negatives": int((~y).sum()),
        "notes": [str(w.message) for w in caught],
    }


def prepare_split(
    store: EpisodeStore, cfg: ClassifierConfig, seed: int, log: Callable[[str], None] | None = None
) -> tuple[StoreFrames, StoreFrames, dict[str, Any]]:
    """Load and label the store's frames, check the counts, split by episode. Returns ``(train, val, info)`` with
    only labelled frames in each; raises :class:`RewardDataError` when either side lacks a class."""
    frames = load_frames(store, cfg.cameras, cfg.label_rule())
    counts = check_label_counts(frames, cfg.min_positives, cfg.min_negatives, cfg.imbalance_warn, f"store {store.root}")
    tr_eps, va_eps = split_episodes(frames.episodes, frames.episode_success, cfg.val_fraction, seed)
    train, val = frames.of_episodes(tr_eps), frames.of_episodes(va_eps)
    train, val = train.subset(train.label >= 0), val.subset(val.label >= 0)
    for name, part in (("training", train), ("validation", val)):
        c = count_labels(part)
        if c["positives"] == 0 or c["negatives"] == 0:
            raise RewardDataError(
                f"store {store.root}: the {name} split has {c['positives']} positive and "
                f"{c['negatives']} negative frames ({c['successful_episodes']} successful of "
                f"{c['episodes']} episodes); the episode-level split needs at least 2 successful "
                "episodes and frames of both classes on each side"
            )
    info = {
        "counts": counts,
        "train": count_labels(train),
        "val": count_labels(val),
        "train_episodes": tr_eps.tolist(),
        "val_episodes": va_eps.tolist(),
    }
    if log:
        log(f"frames: {counts}; train {info['train']}; val {info['val']}")
    return train, val, info


def cached_inputs(
    encode: Callable[..., torch.Tensor],
    train: StoreFrames,
    val: StoreFrames,
    pad: int,
    copies: int,
    generator: torch.Generator,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Frozen encodings of the split, computed once: ``{camera: (1 + copies, N, ...)}`` of the training frames (as
    they are, then ``copies`` times shifted by up to ``pad`` px) and ``{camera: (M, ...)}`` of the validation frames.
    ``encode(images, pad=0, generator=None)`` encodes uint8 ``(N, H, W, 3)`` frames (trunk maps, image tokens)."""
    tr_in = {
        c: torch.stack(
            [encode(train.images[c])] + [encode(train.images[c], pad=pad, generator=generator) for _ in range(copies)]
        )
        for c in train.cameras
    }
    return tr_in, {c: encode(val.images[c]) for c in val.cameras}


def fit_success_head(
    module: nn.Module,
    tr_in: Mapping[str, torch.Tensor],
    va_in: Mapping[str, torch.Tensor],
    train: StoreFrames,
    val: StoreFrames,
    cfg: ClassifierConfig,
    seed: int,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], np.ndarray, dict[str, Any]]:
    """:func:`fit_binary` of ``module`` on the cached inputs of the split (:func:`cached_inputs`) with ``cfg``'s
    options, then its validation probabilities and their :func:`evaluate_scores` at ``cfg.target_fpr``. Returns
    ``(fit, p_val, validation)``."""
    fit = fit_binary(module, tr_in, train.label == 1, va_in, val.label == 1, **cfg.fit_options(), seed=seed, log=log)
    p_val = torch.sigmoid(predict_logits(module, va_in) + fit["prior_logit"]).double().cpu().numpy()
    return fit, p_val, evaluate_scores(val.label == 1, p_val, cfg.target_fpr)


def success_report(
    kind: str,
    store: str,
    info: Mapping[str, Any],
    ev: Mapping[str, Any],
    fit: Mapping[str, Any],
    cfg: ClassifierConfig,
    seed: int,
    device: torch.device,
    t0: float,
    t_feat: float,
) -> dict[str, Any]:
    """The training report of a success classifier: ``kind``, ``store``, the split's ``info``, the validation ``ev``,
    the ``fit`` and its history, seconds (features ``t_feat``; total since ``t0``), options, seed and device."""
    return {
        "kind": kind,
        "store": store,
        **info,
        "validation": ev,
        "fit": {k: fit[k] for k in ("prior_logit", "best_step", "best_val_loss")},
        "history": fit["history"],
        "seconds": {"features": t_feat, "total": time.perf_counter() - t0},
        "config": cfg.to_dict(),
        "seed": seed,
        "device": str(device),
    }


def train_classifier(
    store: EpisodeStore,
    cfg: ClassifierConfig,
    *,
    seed: int = 0,
    device: str | torch.device | None = "auto",
    out: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[SuccessClassifier, dict[str, Any]]:
    """Train a success classifier on ``store`` (see the module docstring). Returns the model and its report
    (validation metrics at the chosen threshold and at 0.5, ROC AUC, calibration, counts, timings); with ``out``
    also saves it there with ``calibration.png`` and ``roc.png``."""
    t0 = time.perf_counter()
    dev = resolve_device(device)
    torch.manual_seed(seed)
    train, val, info = prepare_split(store, cfg, seed, log)
    shapes = train.image_shapes
    sizes = {s[:2] for s in shapes.values()}
    feat = TrunkFeaturizer(cfg.trunk_stage, cfg.pretrained, dev, next(iter(sizes)))
    fshapes = {c: feat.feature_shape(shapes[c][:2]) for c in train.cameras}
    gen = torch.Generator(device=dev).manual_seed(seed)
    t1 = time.perf_counter()
    tr_in, va_in = cached_inputs(feat.maps, train, val, cfg.pad, cfg.image_copies, gen)
    t_feat = time.perf_counter() - t1
    stride = max(1, shapes[train.cameras[0]][0] // fshapes[train.cameras[0]][1])
    fpad = cfg.feature_pad if cfg.feature_pad is not None else cfg.pad / stride
    scorer = FrameScorer(fshapes, cfg.feature_dim, cfg.num_kernels, cfg.hidden, cfg.dropout, fpad).to(dev)
    fit, p_val, ev = fit_success_head(scorer, tr_in, va_in, train, val, cfg, seed, log)
    report = success_report("classifier", str(Path(store.root).resolve()), info, ev, fit, cfg, seed, dev, t0, t_feat)
    model = SuccessClassifier(feat, scorer, shapes, ev["threshold"], fit["prior_logit"], report)
    if out is not None:
        model.save(out, report)
        write_plots(out, val.label == 1, p_val, ev["threshold"])
    return model, report


def write_plots(out: str | Path, y: np.ndarray, p: np.ndarray, threshold: float) -> None:
    """``calibration.png`` (reliability diagram) and ``roc.png`` of validation probabilities into ``out``."""
    Path(out).mkdir(parents=True, exist_ok=True)
    plot_calibration(Path(out) / "calibration.png", y, p)
    plot_roc(Path(out) / "roc.png", y, p, threshold)


# ------------------------------------------------------------------------------------------------------ models
class TrunkRewardModel(RewardModel):
    """A frozen trunk (:class:`TrunkFeaturizer`) and a trained :class:`FrameScorer` on its maps: what the success
    classifier, the progress model (:mod:`robot_rl.rewards.progress`) and the preference reward
    (:mod:`robot_rl.rewards.preference`) share, saving and loading included.

    A saved model is a directory with ``reward_model.safetensors`` (the scorer as ``scorer.*``, and the trunk as
    ``trunk.*`` when it is not the pretrained one) and ``reward_model.json``: format, version, kind, cameras
    (name -> image shape), what the kind adds (:meth:`saved_fields`), ``trunk`` (stage, pretrained, fingerprint,
    feature map shape per camera), ``head`` (the scorer's sizes, and ``bins`` when it has more than one output),
    identity and report. Subclasses set ``kind`` and ``noun`` (what messages call it) and name their fields in
    ``saved_names``: attributes written into the JSON and constructor keywords when it is read back
    (:meth:`from_saved`), with the report unless ``keeps_report`` is off; a ``pretrained_only`` kind saves no trunk of
    its own and leaves ``pretrained`` out of its JSON."""

    noun = "model"
    pretrained_only = False
    saved_names: tuple[str, ...] = ()
    keeps_report = True

    def __init__(
        self,
        featurizer: TrunkFeaturizer,
        scorer: FrameScorer,
        image_shapes: Mapping[str, Sequence[int]],
        report: Mapping[str, Any] | None = None,
    ):
        self.featurizer, self.scorer = featurizer, scorer.eval()
        self.report = dict(report or {})  # how it was trained (store, split, config): what retraining starts from
        self.image_shapes = {c: tuple(int(d) for d in s) for c, s in image_shapes.items()}  # type: ignore[misc]
        self.cameras = sorted(self.image_shapes)

    @property
    def device(self) -> torch.device:
        return self.featurizer.device

    def frame_maps(self, frames: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Float32 trunk maps {camera: (B, C, h, w)} of frames {camera: uint8 (B, H, W, 3)}, whose cameras and image
        sizes are checked first."""
        self.check_frames({c: tuple(np.shape(frames[c])[1:]) for c in frames}, f"frames given to the {self.noun}")
        return {c: self.featurizer.maps(frames[c], dtype=torch.float32) for c in self.cameras}

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "head": weights_fingerprint(self.scorer), "trunk": self.featurizer.fingerprint()}

    def saved_fields(self) -> dict[str, Any]:
        """What this kind adds to ``reward_model.json`` (threshold, calibration, ...): its ``saved_names``, read back
        by :meth:`from_saved`."""
        return {k: getattr(self, k) for k in self.saved_names}

    @classmethod
    def from_saved(
        cls,
        featurizer: TrunkFeaturizer,
        scorer: FrameScorer,
        image_shapes: Mapping[str, Sequence[int]],
        saved: Mapping[str, Any],
    ) -> Self:
        """The model from its loaded parts and its ``reward_model.json`` (``saved``): the saved fields as keywords,
        and the report when the kind keeps it."""
        kwargs = {k: saved[k] for k in cls.saved_names}
        if cls.keeps_report:
            kwargs["report"] = saved.get("report")
        return cls(featurizer, scorer, image_shapes, **kwargs)

    def save(self, out: str | Path, report: Mapping[str, Any] | None = None) -> Path:
        """Write ``reward_model.safetensors`` and ``reward_model.json`` into directory ``out`` (``report``: the
        training report to keep; None: the model's own)."""
        if self.pretrained_only and not self.featurizer.pretrained:
            raise RewardDataError(f"{self.kind} models are saved with the pretrained trunk only (pretrained=true)")
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {f"scorer.{k}": v.detach().cpu().contiguous() for k, v in self.scorer.state_dict().items()}
        if not self.featurizer.pretrained:
            tensors.update(
                {f"trunk.{k}": v.detach().cpu().contiguous() for k, v in self.featurizer.trunk.state_dict().items()}
            )
        save_file(tensors, str(out / WEIGHTS_FILE))
        heads, mlp = self.scorer.heads, self.scorer.mlp
        head0 = heads[self.cameras[0]]
        trunk = {
            "stage": self.featurizer.stage,
            "pretrained": self.featurizer.pretrained,
            "fingerprint": self.featurizer.fingerprint(),
            "feature_shapes": {c: list(heads[c].in_shape) for c in self.cameras},
        }
        if self.pretrained_only:
            del trunk["pretrained"]
        head = {
            "feature_dim": head0.out_dim,
            "num_kernels": int(head0.kernel.shape[-1]),
            "hidden": int(mlp[0].out_features),
            "dropout": float(mlp[2].p),
            "feature_pad": self.scorer.feature_pad,
        }
        if (outputs := int(mlp[-1].out_features)) > 1:
            head["bins"] = outputs
        fields = {
            "cameras": {c: list(s) for c, s in self.image_shapes.items()},
            **self.saved_fields(),
            "trunk": trunk,
            "head": head,
        }
        return self.write_model_json(out, fields, report if report is not None else self.report)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = "auto") -> Self:
        """Rebuild from a directory written by :meth:`save`; the trunk here must have the saved fingerprint."""
        d = read_model_json(path)
        if d["kind"] != cls.kind:
            raise RewardDataError(f"{path}: a {d['kind']} model, not a {cls.noun}")
        shapes = {c: tuple(s) for c, s in d["cameras"].items()}
        t, h = d["trunk"], d["head"]
        pretrained = True if cls.pretrained_only else bool(t["pretrained"])
        feat = TrunkFeaturizer(t["stage"], pretrained, device, next(iter(shapes.values()))[:2])
        tensors = load_file(str(Path(path) / WEIGHTS_FILE))
        if not pretrained:
            feat.trunk.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("trunk.")})
        if feat.fingerprint() != t["fingerprint"]:
            raise RewardDataError(
                f"{path}: the frozen trunk here (fingerprint {feat.fingerprint()}) differs from the "
                f"one the {cls.noun} was trained on ({t['fingerprint']}); retrain it"
            )
        scorer = FrameScorer(
            {c: tuple(s) for c, s in t["feature_shapes"].items()},
            h["feature_dim"],
            h["num_kernels"],
            h["hidden"],
            h["dropout"],
            h["feature_pad"],
            outputs=h.get("bins", 1),
        )
        scorer.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("scorer.")})
        return cls.from_saved(feat, scorer.to(feat.device), shapes, d)


class SuccessClassifier(TrunkRewardModel):
    """Frozen trunk + trained :class:`FrameScorer`: frames -> success probability (B,) in [0, 1].

    ``score(frames)``: {camera: uint8 (B, H, W, 3)} for every camera in ``cameras`` (exact image shapes) ->
    ``sigmoid(logit + prior_logit)``. ``threshold``: success when the probability is at least it."""

    kind = "classifier"
    noun = "classifier"
    saved_names = ("threshold", "prior_logit")

    def __init__(
        self,
        featurizer: TrunkFeaturizer,
        scorer: FrameScorer,
        image_shapes: Mapping[str, Sequence[int]],
        threshold: float | None,
        prior_logit: float,
        report: Mapping[str, Any] | None = None,
    ):
        super().__init__(featurizer, scorer, image_shapes, report)
        self.threshold = None if threshold is None else float(threshold)
        self.prior_logit = float(prior_logit)
        self._identity: dict[str, Any] | None = None

    @torch.no_grad()
    def score(self, frames: Mapping[str, Any]) -> np.ndarray:
        return torch.sigmoid(self.scorer(self.frame_maps(frames)) + self.prior_logit).double().cpu().numpy()

    def invalidate_identity(self) -> None:
        """Call after changing the weights in place: the identity (and the cached labels' name) follows them."""
        self._identity = None

    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            self._identity = {**super().identity(), "prior_logit": round(self.prior_logit, 9)}
        return self._identity
