"""``robot-rl train-reward data=STORE [reward=NAME] [key=value ...]``: learn or calibrate a reward model on a store.

The CLI composes ``configs/train_reward.yaml`` and calls :func:`train_reward_main`. What happens depends on the
``reward`` group:

* ``classifier``: train a success classifier (``reward.train.backbone: trunk``, frozen EfficientNet-Lite0 + head) or
  fine-tune a dual encoder into one (``backbone: vlm`` with ``vlm_path``); validation report, threshold for
  ``target_fpr``, plots; with ``relabel`` the store's steps get the classifier's probabilities as a cached label set.
* ``vlm_zero_shot``: score the store with the dual encoder at ``reward.path`` (cached), pick the success threshold
  for ``target_fpr`` from the store's labels and report how well the zero-shot scores separate success.
* ``preference``: ask the labeller (``reward.labeller``) about frame pairs (cached), fit the Bradley-Terry reward
  model, relabel the store (cached label set) and, with ``reward.train.relabel_out``, write a copy of the store with
  the learned rewards.
* ``progress``: train a progress model on the store's successful episodes (:mod:`robot_rl.rewards.progress`;
  validation rank correlation and ``progress.png``), or with ``reward.adapt_from`` adapt a trained one to the
  store's demonstration of a changed variant (one-shot).

Outputs go to ``out`` (default ``runs/reward/<date>_<time>_<name>``): ``reward_model.json`` (+ weights),
``report.json``, and for classifiers ``calibration.png`` and ``roc.png``. Train a policy on the result with
``robot-rl train reward=<name> reward.path=<out>``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from robot_rl.data.store import EpisodeStore
from robot_rl.rewards.base import REWARD_KINDS, jsonable, resolve_device
from robot_rl.rewards.classifier import ClassifierConfig, evaluate_scores, train_classifier
from robot_rl.rewards.frames import LabelRule, load_frames, store_cameras
from robot_rl.rewards.labelling import score_store, write_relabelled_store

TRAINABLE = tuple(k for k in REWARD_KINDS if k != "ground_truth")


def _log(msg: str) -> None:
    print(f"[train-reward] {msg}", flush=True)


def train_reward_main(cfg: DictConfig) -> int:
    """Run ``robot-rl train-reward`` for the composed ``cfg`` (``configs/train_reward.yaml``). Returns 0; bad input
    raises ``ValueError`` with one line naming the key or the counts (the CLI prints it and exits 2)."""
    r: dict[str, Any] = (
        OmegaConf.to_container(cfg.reward, resolve=True) if isinstance(cfg.reward, DictConfig) else dict(cfg.reward)
    )  # type: ignore[assignment]
    name = str(r.get("name", ""))
    if name == "ground_truth":
        raise ValueError(
            "reward=ground_truth is the env's own reward: nothing to train; pick reward=classifier, "
            "vlm_zero_shot or preference"
        )
    if name not in TRAINABLE:
        raise ValueError(f"reward={name!r} cannot be trained; valid: {', '.join(TRAINABLE)}")
    data = cfg.get("data")
    if not data:
        raise ValueError("data= must name an episode store, e.g. robot-rl train-reward data=runs/pick_cube/demos.zarr")
    threads = int(cfg.get("threads", 0) or 0)
    torch.set_num_threads(threads if threads > 0 else max(1, os.cpu_count() or 1))
    seed, device = int(cfg.get("seed", 0)), resolve_device(cfg.get("device", "auto"))
    out = Path(cfg.out) if cfg.get("out") else Path("runs") / "reward" / f"{time.strftime('%Y%m%d_%H%M%S')}_{name}"
    store = EpisodeStore.open(str(data))
    _log(f"{name} on {store} ({device}); outputs in {out}/")
    t0 = time.perf_counter()
    if name == "classifier":
        report = _classifier(store, r, seed, device, out)
    elif name == "vlm_zero_shot":
        report = _zero_shot(store, r, seed, device, out)
    elif name == "progress":
        report = _progress(store, r, seed, device, out)
    else:
        report = _preference(store, r, seed, device, out)
    report["wall_s"] = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(jsonable(report), indent=2))
    use = (
        f"reward.shaping.path={out} (on top of reward=classifier or ground_truth)"
        if name == "progress"
        else f"reward={name} reward.path={out}"
    )
    _log(f"wrote {out}/ (reward_model.json, report.json). Use it: robot-rl train obs=pixels {use}")
    return 0


def _summary(ev: dict[str, Any]) -> str:
    m = ev["at_threshold"]
    return (
        f"threshold {ev['threshold']:.4g} (target FPR {ev['target_fpr']:g}): accuracy {m['accuracy']:.3f}, "
        f"precision {m['precision']:.3f}, recall {m['recall']:.3f}, FPR {m['fpr']:.4f}; ROC AUC "
        f"{ev['roc_auc']:.4f} on {ev['positives']} positive / {ev['negatives']} negative frames"
    )


def _classifier(store: EpisodeStore, r: dict[str, Any], seed: int, device: torch.device, out: Path) -> dict[str, Any]:
    ccfg = ClassifierConfig.from_dict(r.get("train"))
    if ccfg.backbone == "vlm":
        from robot_rl.rewards.vlm.finetune import train_vlm_classifier

        model, report = train_vlm_classifier(store, ccfg, seed=seed, device=device, out=out, log=_log)
    else:
        model, report = train_classifier(store, ccfg, seed=seed, device=device, out=out, log=_log)
    _log("validation: " + _summary(report["validation"]))
    for note in report["validation"]["notes"]:
        _log(f"note: {note}")
    if ccfg.relabel:
        _, stats = score_store(store, model, log=_log)
        report["relabel"] = stats
    return report


def _progress(store: EpisodeStore, r: dict[str, Any], seed: int, device: torch.device, out: Path) -> dict[str, Any]:
    from robot_rl.rewards.progress import ProgressConfig, ProgressModel, adapt_progress, train_progress

    pcfg = ProgressConfig.from_dict(r.get("train"))
    if r.get("adapt_from"):  # one-shot: the given model, fine-tuned on this store's demonstration(s)
        model = ProgressModel.load(r["adapt_from"], device)
        rec = adapt_progress(model, store, pcfg, seed)
        report = {**model.report, "adapted": {**rec, "from": str(r["adapt_from"]), "demo_store": str(store.root)}}
        model.save(out, report)
        _log(
            f"adapted {r['adapt_from']} on {rec['demo_frames']} frames of {store.root} ({rec['replayed_frames']} "
            "original frames replayed)"
        )
        return report
    model, report = train_progress(store, pcfg, seed=seed, device=device, out=out, log=_log)
    v = report["validation"]
    _log(
        f"validation on {v['episodes']} held-out episodes: rank correlation {v['rank_correlation']:.3f}, mean "
        f"absolute error {v['mae']:.3f} ({report['failed_episodes_left_out']} failed episodes left out)"
    )
    return report


def _zero_shot(store: EpisodeStore, r: dict[str, Any], seed: int, device: torch.device, out: Path) -> dict[str, Any]:
    from robot_rl.rewards.vlm.zero_shot import ZeroShotReward, default_prompt

    if not r.get("path"):
        raise ValueError("reward=vlm_zero_shot needs reward.path: a dual-encoder checkpoint directory")
    avail = store_cameras(store)
    cams = list(r.get("cameras") or (["front"] if "front" in avail else sorted(avail)[:1]))
    zcfg = {**r, "cameras": cams, "prompt": r.get("prompt") or default_prompt(store.metadata(0)["task"])}
    model = ZeroShotReward.from_config(zcfg, device)
    scores, stats = score_store(store, model, log=_log)
    t = dict(r.get("train") or {})
    rule = LabelRule.from_dict(t)
    frames = load_frames(store, cams[:1], rule)
    per_step = frames.label[frames.t >= 1]  # labels of each transition's next frame, in step order
    lab = per_step >= 0
    y = per_step[lab] == 1
    report: dict[str, Any] = {
        "kind": "vlm_zero_shot",
        "store": str(store.root),
        "scoring": stats,
        "prompt": model.prompt,
        "negatives": model.negatives,
        "cameras": cams,
    }
    if y.any() and (~y).any():
        ev = evaluate_scores(y, scores[lab], float(t.get("target_fpr", 0.01)))
        model.threshold = ev["threshold"]
        report["validation_in_sample"] = ev
        _log("zero-shot on the store's labels: " + _summary(ev))
    else:
        _log(
            "the store has no frames of both classes: threshold left at "
            f"{model.threshold}; record successes and failures to calibrate it"
        )
    model.save(out, report)
    return report


def _preference(store: EpisodeStore, r: dict[str, Any], seed: int, device: torch.device, out: Path) -> dict[str, Any]:
    from robot_rl.rewards.preference import PreferenceConfig, train_preference_reward
    from robot_rl.rewards.preference_labels import build_labeller

    pcfg = PreferenceConfig.from_dict(r.get("train"))
    labeller = build_labeller(r.get("labeller") or {}, device)
    model, report = train_preference_reward(store, labeller, pcfg, seed=seed, device=device, out=out, log=_log)
    fit = report["fit"]
    _log(
        f"Bradley-Terry: {fit['pairs_used']} answered pairs ({fit['unsure']} unsure dropped), held-out pair "
        f"accuracy {fit['val_accuracy']:.3f}, training {fit['train_accuracy']:.3f}"
    )
    if pcfg.relabel or pcfg.relabel_out:
        scores, stats = score_store(store, model, log=_log)
        report["relabel"] = stats
        if pcfg.relabel_out:
            scale = float(r.get("reward_scale", 1.0))
            write_relabelled_store(store, pcfg.relabel_out, scale * np.asarray(scores), overwrite=False).close()
            report["relabelled_store"] = str(pcfg.relabel_out)
            _log(f"relabelled copy: {pcfg.relabel_out}")
    return report
