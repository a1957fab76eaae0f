"""Keeping a learned success classifier honest while RL pushes on it: a judge, hard negatives and retraining.

A policy trained on a classifier's reward looks for the frames the classifier wrongly calls success and farms them
(the classifier was validated on recorded frames, not on what the policy will show it). The fix used by HIL-SERL is
a person who rejects those successes and a classifier retrained with them as negatives. Here:

* **The judge** rules on every frame the classifier calls success. ``judge="ground_truth"``: the simulator's own
  success (``info["gt_success"]``) stands in for the operator, as in sim benchmarks (an env that reports no success
  of its own is an error); ``"auto"`` (the default): the same for a success classifier in a single env that reports
  its own success, nobody elsewhere; ``"none"``: nobody rules (the classifier's word is final; hacked frames are
  still counted in sim, for the report).
* **Veto** (``veto=True``): a success the judge rejects pays no reward and does not end the episode, as when the
  operator presses "not a success" and lets the robot go on. Without it the policy is paid for the hack until the
  classifier has learned it away.
* **Mining**: every rejected frame is kept (its trunk maps, one camera set per frame) as a hard negative. An
  operator's marks count too (``hil=teleop`` or the simulated operator): "failure" on a frame the classifier called
  success is a negative, "success" on a frame it did not is a positive.
* **Retraining** every ``every`` env steps with new negatives: the head is fine-tuned for ``steps`` gradient steps
  from its current weights on the classifier's original training frames (reloaded from the store it was trained
  on) plus the mined negatives, which make up ``mined_share`` of the negatives of each batch. The threshold is
  picked again for the original ``target_fpr`` on the original validation episodes (with ``threshold_floor``, never
  below the classifier's original threshold: the lowest threshold meeting the target on near-separable validation
  frames drifts down as the head sees more negatives), and the classifier is replaced in place (its identity, hence
  the name of its cached labels, changes).

:class:`ClassifierRefiner` does the mining and retraining; :class:`~robot_rl.rewards.wrapper.RewardWrapper` calls it.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robot_rl.data.store import EpisodeStore
from robot_rl.rewards.base import Options, RewardDataError

JUDGES = ("none", "auto", "ground_truth")


@dataclass
class RefineConfig(Options):
    """``reward.refine`` (``configs/reward/classifier.yaml``); units in the comments there."""

    options_name = "reward.refine"

    judge: str = "auto"
    veto: bool = True
    every: int = 500
    steps: int = 300
    mined_share: float = 0.5
    max_mined: int = 4000
    threshold_floor: bool = False

    def __post_init__(self) -> None:
        if self.judge not in JUDGES:
            raise ValueError(f"reward.refine.judge={self.judge!r} must be one of {', '.join(JUDGES)}")
        if self.every < 0 or self.steps < 1 or self.max_mined < 1:
            raise ValueError(
                f"reward.refine: every={self.every} must be >= 0 (0: never retrain), steps={self.steps} "
                f"and max_mined={self.max_mined} >= 1"
            )
        if not 0 < self.mined_share < 1:
            raise ValueError(f"reward.refine.mined_share={self.mined_share} must lie in (0, 1)")


class ClassifierRefiner:
    """Hard-negative mining and periodic retraining of a :class:`~robot_rl.rewards.classifier.SuccessClassifier`.

    ``add_negative(frames)`` keeps one rejected frame set ({camera: uint8 (H, W, 3)}); ``due(env_steps)`` says whether
    a retraining is due; ``retrain()`` runs it and returns its record (also appended to ``history``). The original
    training frames are loaded lazily at the first retraining, from the store named in the classifier's report.
    ``log``: where progress lines go."""

    def __init__(
        self,
        model: Any,
        cfg: RefineConfig,
        seed: int = 0,
        log: Callable[[str], None] | None = None,
        fixed_threshold: bool = False,
    ):
        from robot_rl.rewards.classifier import SuccessClassifier

        if not isinstance(model, SuccessClassifier):
            raise RewardDataError(
                f"reward.refine retrains a success classifier (reward=classifier from "
                f"robot-rl train-reward), not a {getattr(model, 'kind', type(model).__name__)} model"
            )
        self.model, self.cfg, self.seed = model, cfg, int(seed)
        self.original_threshold = float(model.threshold if model.threshold is not None else 0.5)
        self.fixed_threshold = bool(fixed_threshold)  # set by the user (reward.threshold): kept through retraining
        self.log = log or (lambda _msg: None)
        self.mined: list[dict[str, torch.Tensor]] = []  # hard negatives: trunk maps per camera, (C, h, w) float16
        self.mined_positives: list[dict[str, torch.Tensor]] = []  # successes the classifier missed
        self.new_since_retrain = 0
        self.last_retrain_step = 0
        self.history: list[dict[str, Any]] = []
        self._base: tuple[dict[str, torch.Tensor], np.ndarray, dict[str, torch.Tensor], np.ndarray] | None = None

    def add_negative(self, frames: Mapping[str, np.ndarray]) -> None:
        """One frame set the judge rejected: its trunk maps are kept (oldest dropped beyond ``max_mined``)."""
        self._keep(self.mined, frames)

    def add_positive(self, frames: Mapping[str, np.ndarray]) -> None:
        """One frame set an operator marked successful that the classifier did not call success."""
        self._keep(self.mined_positives, frames)

    def _keep(self, where: list, frames: Mapping[str, np.ndarray]) -> None:
        feat = self.model.featurizer
        where.append({c: feat.maps(np.asarray(frames[c])[None])[0].cpu() for c in self.model.cameras})
        if len(where) > self.cfg.max_mined:
            where.pop(0)
        self.new_since_retrain += 1

    def due(self, env_steps: int) -> bool:
        return (
            self.cfg.every > 0 and self.new_since_retrain > 0 and env_steps - self.last_retrain_step >= self.cfg.every
        )

    def _original(self) -> tuple[dict[str, torch.Tensor], np.ndarray, dict[str, torch.Tensor], np.ndarray]:
        """Trunk maps and labels of the classifier's own training and validation frames (loaded once)."""
        if self._base is None:
            from robot_rl.rewards.frames import LabelRule, load_frames

            report = self.model.report or {}
            path, rule = report.get("store"), report.get("config") or {}
            train_eps, val_eps = report.get("train_episodes"), report.get("val_episodes")
            if not path or train_eps is None or val_eps is None:
                raise RewardDataError(
                    "reward.refine: the classifier's report does not name its training store and "
                    "split; retrain it with robot-rl train-reward"
                )
            try:
                store = EpisodeStore.open(path)
            except Exception as exc:
                raise RewardDataError(
                    f"reward.refine: cannot open the classifier's training store {path} ({exc}); "
                    "retraining needs its original frames there"
                ) from None
            with store:
                frames = load_frames(store, self.model.cameras, LabelRule.from_dict(rule))
            feat = self.model.featurizer
            parts = []
            for eps in (train_eps, val_eps):
                part = frames.of_episodes(eps)
                part = part.subset(part.label >= 0)
                parts += [{c: feat.maps(part.images[c]).cpu() for c in self.model.cameras}, part.label == 1]
            self._base = tuple(parts)  # type: ignore[assignment]
            self.log(
                f"reward.refine: {len(parts[1])} training and {len(parts[3])} validation frames reloaded from {path}"
            )
        return self._base  # type: ignore[return-value]

    def retrain(self, env_steps: int = 0) -> dict[str, Any]:
        """Fine-tune the classifier's head on its original frames plus the mined ones; pick the threshold again
        (unless fixed); replace the model's weights and threshold in place. Returns the record."""
        from robot_rl.rewards.classifier import evaluate_scores, fit_binary, predict_logits
        from robot_rl.rewards.metrics import binary_metrics

        t0 = time.perf_counter()
        tr_in, y_tr, va_in, y_va = self._original()
        n_mined, n_pos = len(self.mined), len(self.mined_positives)
        extra = self.mined + self.mined_positives
        mined = {c: torch.stack([m[c] for m in self.mined]) for c in self.model.cameras} if n_mined else None
        inputs = {
            c: torch.cat([tr_in[c], *([torch.stack([m[c] for m in extra])] if extra else [])])[None]
            for c in self.model.cameras
        }  # one augmented copy: K = 1
        y = np.concatenate([y_tr, np.zeros(n_mined, bool), np.ones(n_pos, bool)])
        # sampling weights within each class: the mined frames of a class together get mined_share of its draws
        share = self.cfg.mined_share / (1 - self.cfg.mined_share)
        w = np.ones(len(y))
        w[len(y_tr) : len(y_tr) + n_mined] = share * int((~y_tr).sum()) / max(1, n_mined)
        w[len(y_tr) + n_mined :] = share * int(y_tr.sum()) / max(1, n_pos)
        rc = (self.model.report or {}).get("config") or {}
        scorer = self.model.scorer
        fit = fit_binary(
            scorer,
            inputs,
            y,
            va_in,
            y_va,
            steps=self.cfg.steps,
            batch_size=int(rc.get("batch_size", 128)),
            lr=float(rc.get("lr", 1e-3)) / 3,
            weight_decay=float(rc.get("weight_decay", 1e-4)),
            eval_every=max(1, self.cfg.steps // 5),
            seed=self.seed + len(self.history) + 1,
            sample_weights=w,
            prior_logit=self.model.prior_logit,
        )
        dev = self.model.device
        p_val = (
            torch.sigmoid(predict_logits(scorer, {c: v.to(dev) for c, v in va_in.items()}) + self.model.prior_logit)
            .double()
            .cpu()
            .numpy()
        )
        ev = evaluate_scores(y_va, p_val, float(rc.get("target_fpr", 0.01)))
        p_mined = (
            torch.sigmoid(predict_logits(scorer, {c: v.to(dev) for c, v in mined.items()}) + self.model.prior_logit)
            .double()
            .cpu()
            .numpy()
            if mined
            else np.zeros(0)
        )
        picked = float(ev["threshold"])
        if self.fixed_threshold:
            self.model.threshold = self.original_threshold
        else:
            self.model.threshold = max(picked, self.original_threshold) if self.cfg.threshold_floor else picked
        at = binary_metrics(y_va, p_val, self.model.threshold)  # at the threshold in use
        self.model.invalidate_identity()
        self.new_since_retrain, self.last_retrain_step = 0, int(env_steps)
        rec = {
            "env_steps": int(env_steps),
            "retrain": len(self.history) + 1,
            "mined": n_mined,
            "mined_positives": n_pos,
            "threshold": self.model.threshold,
            "threshold_picked": picked,
            "val_fpr": at["fpr"],
            "val_recall": at["recall"],
            "mined_still_positive": float(np.mean(p_mined >= self.model.threshold)) if n_mined else 0.0,
            "best_step": fit["best_step"],
            "seconds": time.perf_counter() - t0,
        }
        self.history.append(rec)
        self.log(
            f"reward.refine: retrained on {n_mined} mined negatives and {n_pos} positives at step {env_steps}: "
            f"threshold "
            f"{rec['threshold']:.3f}, validation FPR {rec['val_fpr']:.2%}, recall {rec['val_recall']:.1%}, "
            f"{rec['mined_still_positive']:.1%} of the mined frames still called success "
            f"({rec['seconds']:.1f} s)"
        )
        return rec


def record_refinements(refiner: ClassifierRefiner | None, run_dir: Any, logged: int, writer: Any = None) -> int:
    """File the retrainings after the first ``logged`` of ``refiner.history``: a line each in
    ``<run_dir>/reward_refine.jsonl``, tensorboard ``reward/*`` with a ``writer``, and the retrained classifier in
    ``<run_dir>/reward_model/`` (what a restarted actor or a resumed run scores with). Returns the new count; the
    same for sync runs (the trainer) and async ones (the actor, where the retraining runs)."""
    if refiner is None or len(refiner.history) <= logged:
        return logged
    run_dir = Path(run_dir)
    for rec in refiner.history[logged:]:
        with open(run_dir / "reward_refine.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        if writer is not None:
            for k in ("threshold", "val_fpr", "val_recall", "mined", "mined_still_positive"):
                writer.add_scalar(f"reward/{k}", rec[k], rec["env_steps"])
    tmp = run_dir / "reward_model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    refiner.model.save(tmp)
    shutil.rmtree(run_dir / "reward_model", ignore_errors=True)
    tmp.rename(run_dir / "reward_model")
    return len(refiner.history)


__all__ = ["JUDGES", "ClassifierRefiner", "RefineConfig", "record_refinements"]
