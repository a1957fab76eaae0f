"""Progress model: how far along the task a frame is, in [0, 1], learned from demonstrations (Robo-Dopamine-style
step-aware progress, on this project's frozen trunk).

Labels. In an episode that reaches success, frame ``t`` of its ``T + 1`` frames has progress ``min(t / s, 1)``, with
``s`` the first frame marked successful (by the label rule's ``marks`` / ``reward_marks``; else the episode's last
frame): normalised time to success. Failed episodes carry no progress label (how far a failure got is not known
from the store alone) and are left out; the counts say how many.

Model. The trunk's maps of every camera go through a spatial-embedding head per camera, fused by concatenation and
an MLP (the classifier's :class:`~robot_rl.rewards.classifier.FrameScorer`) into ``bins`` logits over progress
values ``k / (bins - 1)``. Training targets are two-hot (the two bins around the true progress, weighted so their
mean is exact), the loss is cross-entropy, and the prediction is the expected value, so it is exact at 0 and 1 and
smooth between. Validation on held-out episodes: the rank correlation (Spearman) between predicted and true progress
within each episode, averaged, the mean absolute error, and a calibration plot (``progress.png``).

One-shot adaptation (:func:`adapt_progress`): fine-tune the head on the frames of a single demonstration of a changed
task variant, replaying the original frames alongside so the old variant is not forgotten.

The model is a potential for :class:`~robot_rl.rewards.shaping.PotentialShaping`; as a reward on its own
(``reward=progress``, the score as reward) it is the "semantic trap" ablation: the policy can farm frames that look
advanced without finishing the task.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from robot_rl.data.store import EpisodeStore
from robot_rl.rewards.base import RewardDataError, RewardNetConfig, resolve_device
from robot_rl.rewards.classifier import FrameScorer, TrunkFeaturizer, TrunkRewardModel, predict_logits
from robot_rl.rewards.frames import LabelRule, StoreFrames, load_frames, split_episodes


@dataclass
class ProgressConfig(RewardNetConfig):
    """``reward.train`` of ``configs/reward/progress.yaml``; units there. Trunk, head and training: see
    :class:`~robot_rl.rewards.base.RewardNetConfig`."""

    options_name = "progress"

    bins: int = 11
    marks: str | None = None
    reward_marks: float | None = None
    min_episodes: int = 2
    feature_pad: float = 0.5
    adapt_steps: int = 300

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bins < 2 or min(self.steps, self.batch_size, self.eval_every, self.adapt_steps) < 1:
            raise ValueError(
                f"progress: bins={self.bins} must be >= 2 and steps, batch_size, eval_every, adapt_steps >= 1"
            )
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"progress: val_fraction={self.val_fraction} must lie in (0, 1)")


def progress_labels(frames: StoreFrames) -> np.ndarray:
    """float32 (F,) progress of every frame of ``frames`` (NaN for frames of failed episodes); see the module
    docstring. ``frames.label`` must come from a rule whose positives mark success frames (the last frame of a
    successful episode is positive under every rule here)."""
    out = np.full(len(frames), np.nan, np.float32)
    succeeded = dict(zip(frames.episodes.tolist(), frames.episode_success.tolist()))
    for e in np.unique(frames.episode):
        rows = np.flatnonzero(frames.episode == e)
        if not succeeded[int(e)]:
            continue
        t, lab = frames.t[rows], frames.label[rows]
        first = t[lab == 1].min() if np.any(lab == 1) else t.max()
        out[rows] = np.minimum(t / max(int(first), 1), 1.0)
    return out


def two_hot(progress: torch.Tensor, bins: int) -> torch.Tensor:
    """(N,) progress in [0, 1] -> (N, bins) targets on the grid ``k / (bins - 1)`` whose expectation is exact."""
    x = progress.clamp(0, 1) * (bins - 1)
    lo = x.floor().long().clamp(max=bins - 2)
    w_hi = x - lo
    out = torch.zeros(len(x), bins, device=x.device)
    out.scatter_(1, lo[:, None], (1 - w_hi)[:, None])
    out.scatter_add_(1, (lo + 1)[:, None], w_hi[:, None])
    return out


def expected_progress(logits: torch.Tensor) -> torch.Tensor:
    """(N, bins) logits -> (N,) expected progress on the grid ``k / (bins - 1)``."""
    grid = torch.linspace(0, 1, logits.shape[-1], device=logits.device)
    return (logits.softmax(-1) * grid).sum(-1)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def progress_metrics(pred: np.ndarray, truth: np.ndarray, episode: np.ndarray) -> dict[str, float]:
    """Rank correlation within each episode (averaged), mean absolute error, over frames with a label."""
    ok = np.isfinite(truth)
    rhos = [_spearman(pred[ok & (episode == e)], truth[ok & (episode == e)]) for e in np.unique(episode[ok])]
    rhos = [r for r in rhos if np.isfinite(r)]
    return {
        "rank_correlation": float(np.mean(rhos)) if rhos else float("nan"),
        "mae": float(np.mean(np.abs(pred[ok] - truth[ok]))) if ok.any() else float("nan"),
        "episodes": int(len(np.unique(episode[ok]))),
        "frames": int(ok.sum()),
    }


class ProgressModel(TrunkRewardModel):
    """Frozen trunk + :class:`~robot_rl.rewards.classifier.FrameScorer` with ``bins`` outputs: frames -> expected
    progress (B,) in [0, 1]. No success threshold (it is a potential, not a success detector). Saved and loaded as
    every :class:`~robot_rl.rewards.classifier.TrunkRewardModel`, with the pretrained trunk only."""

    kind = "progress"
    noun = "progress model"
    pretrained_only = True

    @torch.no_grad()
    def score(self, frames: Mapping[str, Any]) -> np.ndarray:
        return expected_progress(self.scorer.eval()(self.frame_maps(frames))).double().cpu().numpy()


def _labelled(store: EpisodeStore, cfg: ProgressConfig, cameras: Any = None) -> tuple[StoreFrames, np.ndarray]:
    rule = LabelRule(positive_last_k=1, margin=0, marks=cfg.marks, reward_marks=cfg.reward_marks)
    frames = load_frames(store, cameras if cameras is not None else cfg.cameras, rule)
    prog = progress_labels(frames)
    n_succ = len(np.unique(frames.episode[np.isfinite(prog)]))
    if n_succ < cfg.min_episodes:
        raise RewardDataError(
            f"store {store.root}: {n_succ} successful episode(s) of {len(store)}; progress is "
            f"learned from episodes that reach success: record at least {cfg.min_episodes} "
            "(e.g. robot-rl record device=scripted)"
        )
    keep = np.isfinite(prog)
    return frames.subset(keep), prog[keep]


def _fit(
    scorer: Any,
    maps: Mapping[str, torch.Tensor],
    prog: np.ndarray,
    steps: int,
    cfg: ProgressConfig,
    seed: int,
    val: tuple[Mapping[str, torch.Tensor], np.ndarray, np.ndarray] | None = None,
    weights: np.ndarray | None = None,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, float]]:
    """Cross-entropy on two-hot targets, AdamW; ``weights``: relative draw weights of the frames."""
    dev = next(scorer.parameters()).device
    rng = np.random.default_rng(seed)
    gen = torch.Generator(device=dev).manual_seed(seed)
    opt = torch.optim.AdamW(
        [p for p in scorer.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    target = two_hot(torch.as_tensor(prog, dtype=torch.float32), cfg.bins).to(dev)
    p = None if weights is None else np.asarray(weights, np.float64) / np.sum(weights)
    history = []
    for step in range(1, steps + 1):
        scorer.train()
        idx = rng.choice(len(prog), cfg.batch_size, p=p)
        batch = {c: m[torch.as_tensor(idx)].to(dev, torch.float32) for c, m in maps.items()}
        loss = (
            -(target[torch.as_tensor(idx, device=dev)] * F.log_softmax(scorer(batch, augment=True, generator=gen), -1))
            .sum(-1)
            .mean()
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if val is not None and (step % cfg.eval_every == 0 or step == steps):
            rec = {
                "step": step,
                "train_loss": float(loss.detach()),
                **progress_metrics(_predict(scorer, val[0]), val[1], val[2]),
            }
            history.append(rec)
            if log:
                log(
                    f"step={step} loss={rec['train_loss']:.4f} val rank corr={rec['rank_correlation']:.3f} "
                    f"mae={rec['mae']:.3f}"
                )
    scorer.eval()
    return history


@torch.no_grad()
def _predict(scorer: Any, maps: Mapping[str, torch.Tensor], batch: int = 512) -> np.ndarray:
    logits = predict_logits(scorer, maps, batch, dtype=torch.float32)
    if not len(logits):
        return np.zeros(0)
    # the expectation per forward batch, as the logits came, so its reductions run on the same shapes on any device
    return torch.cat([expected_progress(z) for z in logits.split(batch)]).double().cpu().numpy()


def train_progress(
    store: EpisodeStore,
    cfg: ProgressConfig,
    *,
    seed: int = 0,
    device: str | torch.device | None = "auto",
    out: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[ProgressModel, dict[str, Any]]:
    """Train a progress model on the successful episodes of ``store`` (module docstring). Returns the model and
    its report; with ``out`` saves both and ``progress.png`` (predicted against true progress on held-out frames)."""
    t0 = time.perf_counter()
    dev = resolve_device(device)
    torch.manual_seed(seed)
    frames, prog = _labelled(store, cfg)
    eps = np.unique(frames.episode)
    tr_eps, va_eps = split_episodes(eps, np.ones(len(eps), bool), cfg.val_fraction, seed)
    feat = TrunkFeaturizer(cfg.trunk_stage, cfg.pretrained, dev, next(iter(frames.image_shapes.values()))[:2])
    maps = {c: feat.maps(frames.images[c]).cpu() for c in frames.cameras}
    tr, va = np.isin(frames.episode, tr_eps), np.isin(frames.episode, va_eps)
    fshapes = {c: tuple(maps[c].shape[1:]) for c in frames.cameras}
    scorer = FrameScorer(
        fshapes, cfg.feature_dim, cfg.num_kernels, cfg.hidden, cfg.dropout, cfg.feature_pad, outputs=cfg.bins
    ).to(dev)
    val = ({c: m[torch.as_tensor(va)] for c, m in maps.items()}, prog[va], frames.episode[va])
    history = _fit(
        scorer, {c: m[torch.as_tensor(tr)] for c, m in maps.items()}, prog[tr], cfg.steps, cfg, seed, val, log=log
    )
    pred = _predict(scorer, val[0])
    report = {
        "kind": "progress",
        "store": str(Path(store.root).resolve()),
        "config": cfg.to_dict(),
        "seed": seed,
        "train_episodes": [int(e) for e in tr_eps],
        "val_episodes": [int(e) for e in va_eps],
        "failed_episodes_left_out": int(len(store) - len(eps)),
        "validation": progress_metrics(pred, *val[1:]),
        "history": history,
        "seconds": time.perf_counter() - t0,
    }
    model = ProgressModel(feat, scorer, frames.image_shapes, report)
    if out is not None:
        model.save(out, report)
        plot_progress(Path(out) / "progress.png", pred, val[1])
    return model, report


def adapt_progress(
    model: ProgressModel, demo: EpisodeStore, cfg: ProgressConfig | None = None, seed: int = 0, replay: bool = True
) -> dict[str, Any]:
    """One-shot adaptation in place: fine-tune ``model``'s head for ``adapt_steps`` on the frames of the successful
    episode(s) in ``demo`` (one demonstration of the changed variant), with the original training frames replayed
    (half of each batch) when ``replay`` and the original store is still there. Returns a record."""
    cfg = cfg or ProgressConfig.from_dict((model.report or {}).get("config"))
    frames, prog = _labelled(demo, ProgressConfig(**{**cfg.to_dict(), "min_episodes": 1}), model.cameras)
    maps = {c: model.featurizer.maps(frames.images[c]).cpu() for c in model.cameras}
    weights = np.ones(len(prog))
    src = (model.report or {}).get("store")
    if replay and src and Path(src).exists():
        with EpisodeStore.open(src) as old:
            of, op = _labelled(old, cfg, model.cameras)
        keep = np.isin(of.episode, (model.report or {}).get("train_episodes") or np.unique(of.episode))
        omaps = {c: model.featurizer.maps(of.images[c][keep]).cpu() for c in model.cameras}
        weights = np.r_[np.full(len(prog), 1.0 / len(prog)), np.full(int(keep.sum()), 1.0 / max(1, keep.sum()))]
        maps = {c: torch.cat([maps[c], omaps[c]]) for c in model.cameras}
        prog = np.r_[prog, op[keep]]
    _fit(model.scorer, maps, prog, cfg.adapt_steps, cfg, seed, weights=weights)
    return {"demo_frames": int(len(frames)), "replayed_frames": int(len(prog) - len(frames)), "steps": cfg.adapt_steps}


def plot_progress(path: Path, pred: np.ndarray, truth: np.ndarray) -> None:
    """Predicted against true progress on held-out frames, with the per-bin mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.scatter(truth, pred, s=4, alpha=0.3, label="frames")
    edges = np.linspace(0, 1, 11)
    mid = (edges[:-1] + edges[1:]) / 2
    means = [
        pred[(truth >= a) & (truth < b + (b == 1))].mean() if np.any((truth >= a) & (truth < b + (b == 1))) else np.nan
        for a, b in zip(edges[:-1], edges[1:])
    ]
    ax.plot(mid, means, "o-", color="C1", label="mean per bin")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="true progress (held-out episodes)", ylabel="predicted progress", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ = [
    "ProgressConfig",
    "ProgressModel",
    "adapt_progress",
    "expected_progress",
    "progress_labels",
    "progress_metrics",
    "train_progress",
    "two_hot",
]
