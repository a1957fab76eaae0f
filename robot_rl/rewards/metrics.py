"""Binary-classifier metrics, threshold choice for a target false-positive rate, and the reliability/ROC plots.

All functions take labels ``y`` (N,) in {0, 1} (bool or int) and scores ``s`` (N,) where larger means "more likely
success"; a frame is predicted positive when ``s >= threshold``.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np


def _ys(y: Any, s: Any) -> tuple[np.ndarray, np.ndarray]:
    y, s = np.asarray(y).astype(bool).reshape(-1), np.asarray(s, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in length")
    return y, s


def roc_auc(y: Any, s: Any) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a random negative (ties count
    half), from the rank-sum (Mann-Whitney U) statistic. NaN without both classes."""
    y, s = _ys(y, s)
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # average ranks over ties
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_s)) + 1]
    stops = np.r_[starts[1:], len(s)]
    for a, b in zip(starts, stops):
        ranks[order[a:b]] = (a + b + 1) / 2.0
    u = ranks[y].sum() - npos * (npos + 1) / 2.0
    return float(u / (npos * nneg))


def roc_curve(y: Any, s: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)``: one point per distinct score, thresholds descending, starting at (0, 0)."""
    y, s = _ys(y, s)
    thr = np.unique(s)[::-1]
    npos, nneg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    tp = np.array([np.sum(y & (s >= t)) for t in thr], dtype=np.float64)
    fp = np.array([np.sum(~y & (s >= t)) for t in thr], dtype=np.float64)
    return np.r_[0.0, fp / nneg], np.r_[0.0, tp / npos], np.r_[np.inf, thr]


def threshold_for_fpr(
    negative_scores: Any, target_fpr: float, positive_scores: Any = None, probabilities: bool = False
) -> float:
    """A threshold whose false-positive rate on ``negative_scores`` is at most ``target_fpr``, with the highest
    recall that allows.

    The lowest such threshold is the smallest float above the ``(m + 1)``-th largest negative score,
    ``m = floor(target_fpr * n)``. Without ``positive_scores`` that is returned. With them, every threshold up to the
    lowest positive score at or above it has the same FPR bound and the same recall, and the middle of that gap is
    returned (in logit space when ``probabilities``), so small score shifts on new data move neither rate. With
    fewer than ``1 / target_fpr`` negatives no false positive is allowed, and a :class:`UserWarning` says that the
    target cannot be resolved."""
    s = np.sort(np.asarray(negative_scores, dtype=np.float64).reshape(-1))[::-1]
    if len(s) == 0:
        raise ValueError("no negative scores to pick a threshold from")
    if not 0 <= target_fpr < 1:
        raise ValueError(f"target_fpr={target_fpr} must lie in [0, 1)")
    m = int(math.floor(target_fpr * len(s) + 1e-9))
    if target_fpr > 0 and len(s) * target_fpr < 1:
        warnings.warn(
            f"only {len(s)} negative frames: a false-positive rate of {target_fpr:g} needs at least "
            f"{math.ceil(1 / target_fpr)} to resolve; the threshold admits no false positive on them",
            stacklevel=2,
        )
    low = float(np.nextafter(s[min(m, len(s) - 1)], np.inf))
    if positive_scores is None:
        return low
    pos = np.asarray(positive_scores, dtype=np.float64).reshape(-1)
    above = pos[pos >= low]
    if len(above) == 0:
        return low
    high = float(above.min())
    if probabilities:
        eps = 1e-12
        lo, hi = np.clip([low, high], eps, 1 - eps)
        mid = 0.5 * (np.log(lo / (1 - lo)) + np.log(hi / (1 - hi)))
        t = float(1.0 / (1.0 + np.exp(-mid)))
    else:
        t = 0.5 * (low + high)
    return float(min(max(t, low), high))


def binary_metrics(y: Any, s: Any, threshold: float) -> dict[str, float]:
    """Accuracy, precision, recall (true-positive rate), false-positive rate and the confusion counts at
    ``threshold``. Undefined ratios are NaN."""
    y, s = _ys(y, s)
    pred = s >= threshold
    tp, fp = int(np.sum(pred & y)), int(np.sum(pred & ~y))
    fn, tn = int(np.sum(~pred & y)), int(np.sum(~pred & ~y))

    def div(a: float, b: float) -> float:
        return a / b if b else float("nan")

    return {
        "accuracy": div(tp + tn, len(y)),
        "precision": div(tp, tp + fp),
        "recall": div(tp, tp + fn),
        "fpr": div(fp, fp + tn),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "threshold": float(threshold),
    }


def calibration(y: Any, p: Any, bins: int = 10) -> dict[str, Any]:
    """Reliability table of probabilities ``p`` in [0, 1] over ``bins`` equal-width bins: per bin the mean
    predicted probability, the observed positive frequency and the count; plus the expected calibration error
    (count-weighted mean |observed - predicted|) and the Brier score."""
    y, p = _ys(y, p)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    mean_p, freq, count = [], [], []
    for b in range(bins):
        m = idx == b
        count.append(int(m.sum()))
        mean_p.append(float(p[m].mean()) if m.any() else float("nan"))
        freq.append(float(y[m].mean()) if m.any() else float("nan"))
    cnt = np.asarray(count, dtype=np.float64)
    gap = np.abs(np.nan_to_num(np.asarray(freq)) - np.nan_to_num(np.asarray(mean_p)))
    return {
        "edges": edges.tolist(),
        "mean_predicted": mean_p,
        "observed": freq,
        "count": count,
        "ece": float((gap * cnt).sum() / max(cnt.sum(), 1)),
        "brier": float(np.mean((p - y) ** 2)),
    }


def plot_calibration(path: str | Path, y: Any, p: Any, bins: int = 10, title: str = "") -> None:
    """Reliability diagram (observed frequency against mean predicted probability per bin, with the diagonal and
    a histogram of the predictions) written as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cal = calibration(y, p, bins)
    fig, (ax, hx) = plt.subplots(2, 1, figsize=(4.5, 5.5), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect")
    mp, ob = np.asarray(cal["mean_predicted"]), np.asarray(cal["observed"])
    ok = ~np.isnan(mp)
    ax.plot(mp[ok], ob[ok], "o-", label=f"ECE {cal['ece']:.3f}")
    ax.set_ylabel("observed success frequency")
    ax.set_title(title or "reliability (validation)")
    ax.legend(loc="upper left")
    hx.hist(np.asarray(p, dtype=np.float64), bins=cal["edges"], color="tab:blue", alpha=0.7)
    hx.set_yscale("log")
    hx.set_xlabel("predicted success probability")
    hx.set_ylabel("frames")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_roc(path: str | Path, y: Any, s: Any, threshold: float | None = None, title: str = "") -> None:
    """ROC curve (true-positive against false-positive rate) as a PNG, with the operating point at ``threshold``
    marked."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fpr, tpr, _ = roc_curve(y, s)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, drawstyle="steps-post", label=f"AUC {roc_auc(y, s):.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    if threshold is not None:
        m = binary_metrics(y, s, threshold)
        ax.plot(
            [m["fpr"]],
            [m["recall"]],
            "o",
            color="tab:red",
            label=f"threshold {threshold:.3g}: FPR {m['fpr']:.3f}, recall {m['recall']:.3f}",
        )
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate (recall)")
    ax.set_title(title or "ROC (validation)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
