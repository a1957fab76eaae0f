"""Policy evaluation: success rate with its confidence interval, return, episode length and cycle time, the seeds
of the failed episodes, optionally an MP4 (of every episode, or of the failures replayed)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from robot_rl.envs.make import control_dt

Policy = Callable[[dict[str, np.ndarray]], np.ndarray]


def evaluate(
    policy: Policy,
    env: gym.Env,
    episodes: int,
    seed: int,
    video_path: str | Path | None = None,
    fps: float | None = None,
    reset: Callable[[], None] | None = None,
    seeds: list[int] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run ``episodes`` episodes with seeds ``seed, seed+1, ...`` (or the given ``seeds``).

    Returns ``success_rate`` (0-1) with ``success_ci_low`` / ``success_ci_high`` (the 95% Wilson score interval),
    ``episodes``, ``return_mean``, ``length_mean`` (steps), ``cycle_time_s`` (mean seconds to success over successful
    episodes; NaN if none succeeded), ``failed_seeds`` (replay one with ``seeds=[s]``: a deterministic policy
    repeats it) and ``failure_endings``: how the failed episodes ended, as the mean over them of each number or flag
    in the env's last ``info`` (``pick_cube``: ``is_grasped``, ``lift``), plus ``time_limit``, the share cut off by
    the time limit rather than terminated. With ``video_path`` the env must have been made with
    ``render_mode="rgb_array"``; frames of all episodes are written to one MP4. ``reset`` is called at each episode
    start (a policy with memory, such as a chunk executor). ``progress``: a progress bar.
    """
    from tqdm import tqdm

    dt = control_dt(env)
    successes, returns, lengths, cycle_times = [], [], [], []
    endings: list[dict[str, float]] = []  # of the failed episodes
    frames: list[np.ndarray] = []
    seeds = list(seeds) if seeds is not None else [seed + ep for ep in range(episodes)]
    for ep_seed in tqdm(seeds, disable=not progress, unit="episode", desc="evaluating"):
        obs, info = env.reset(seed=ep_seed)
        if reset is not None:
            reset()
        ret, steps, success = 0.0, 0, False
        if video_path:
            frames.append(env.render())
        while True:
            obs, reward, terminated, truncated, info = env.step(policy(obs))
            ret += float(reward)
            steps += 1
            success = success or bool(info.get("success", False))
            if video_path:
                frames.append(env.render())
            if terminated or truncated:
                break
        successes.append(success)
        if not success:
            endings.append({**_numbers(info), "time_limit": float(truncated and not terminated)})
        returns.append(ret)
        lengths.append(steps)
        if success:
            cycle_times.append(steps * dt)
    if video_path:
        write_video(video_path, frames, fps or 1.0 / dt)
    low, high = wilson_interval(int(np.sum(successes)), len(successes))
    return {
        "success_rate": float(np.mean(successes)),
        "success_ci_low": low,
        "success_ci_high": high,
        "episodes": len(successes),
        "failed_seeds": [s for s, ok in zip(seeds, successes) if not ok],
        "failure_endings": _means(endings),
        "return_mean": float(np.mean(returns)),
        "length_mean": float(np.mean(lengths)),
        "cycle_time_s": float(np.mean(cycle_times)) if cycle_times else float("nan"),
    }


EVAL_SEED, CONFIRM_SEED = 100_000, 200_000  # added to a run's seed: its evaluation and confirmation episodes


def claims_confirmation(rate: float, best: float, stop_at: float | None, confirm_from: float) -> bool:
    """Whether an evaluation's success ``rate`` is to be confirmed on more episodes: it would make a new best (at
    least ``best``, the best confirmed figure so far) or reach ``stop_at`` (None: no stop rule), and it is
    ``confirm_from`` or more. Such a claim is checked on a larger, fixed set of episodes, so that "best" is really
    better and a stop is earned, not a lucky draw of a few episodes."""
    claims = rate >= best or (stop_at is not None and rate >= stop_at)
    return claims and rate >= confirm_from


def evaluate_claim(
    policy: Policy,
    env: gym.Env,
    episodes: int,
    seed: int,
    confirm_episodes: int,
    best: float,
    stop_at: float | None,
    confirm_from: float,
) -> dict[str, Any]:
    """A training run's evaluation: ``episodes`` episodes of ``policy`` from the run's ``seed`` (+ EVAL_SEED) and,
    where their rate claims (:func:`claims_confirmation`), ``confirm_episodes`` more (0: none), the same episodes for
    every candidate (+ CONFIRM_SEED), so claims compare paired. ``score`` is the confirmed rate where there is one."""
    result = evaluate(policy, env, episodes, seed=seed + EVAL_SEED)
    if confirm_episodes > 0 and claims_confirmation(result["success_rate"], best, stop_at, confirm_from):
        more = evaluate(policy, env, confirm_episodes, seed=seed + CONFIRM_SEED)
        result.update({f"confirm_{k}": more[k] for k in ("success_rate", "success_ci_low", "success_ci_high")})
        result.update(confirm_episodes=more["episodes"], confirm_failed_seeds=more["failed_seeds"])
    result["score"] = result.get("confirm_success_rate", result["success_rate"])
    return result


class PendingEvaluation:
    """An evaluation begun by ``Trainer.start_evaluation``: ``fn`` run now, or in a thread with ``background``.
    ``progress`` is the run's state when it began (step, updates, ...), recorded with the result; ``candidate`` the
    checkpoint of the evaluated agent (background only)."""

    def __init__(self, fn, progress: dict[str, Any], candidate: Path | None = None, background: bool = False):
        self.progress, self.candidate, self.started = progress, candidate, time.perf_counter()
        self._result: dict[str, Any] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), name="evaluation", daemon=True)
        if background:
            self._thread.start()
        else:
            self._run(fn)

    def _run(self, fn) -> None:
        try:
            self._result = fn()
        except BaseException as e:  # raised again in the caller's thread by result()
            self._error = e

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self) -> dict[str, Any]:
        """The evaluation's figures, once it has finished (waits); an error in the evaluation is raised here."""
        if self._thread.ident is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result


def _numbers(info: dict[str, Any]) -> dict[str, float]:
    """The finite scalar numbers and flags of an ``info`` dict, other than what the evaluation reports itself."""
    out = {}
    for k, v in info.items():
        if k in ("success", "is_intervention") or not isinstance(v, (bool, int, float, np.number, np.bool_)):
            continue
        if math.isfinite(float(v)):
            out[k] = float(v)
    return out


def _means(rows: list[dict[str, float]]) -> dict[str, float]:
    """Per key, the mean over the rows that have it (an env may report some entries only in some episodes)."""
    keys = dict.fromkeys(k for row in rows for k in row)
    return {k: float(np.mean([row[k] for row in rows if k in row])) for k in keys}


def eval_summary(result: dict[str, Any]) -> str:
    """One evaluation in words: ``eval success 95%``, with the confirmation when there was one."""
    text = f"eval success {result['success_rate']:.0%}"
    if "confirm_success_rate" in result:
        text += f" (confirmed {result['confirm_success_rate']:.0%} over {result['confirm_episodes']})"
    return text


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate from ``successes`` of ``n`` trials (95% at z = 1.96); it stays
    inside [0, 1] and is honest at 0 and n successes, where the normal approximation collapses to a point."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))  # rounding never excludes p


def write_video(path: str | Path, frames: list[np.ndarray], fps: float) -> None:
    """Write uint8 HxWx3 frames to an MP4 (H.264 via the ffmpeg shipped in imageio-ffmpeg)."""
    import imageio.v2 as imageio

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with imageio.get_writer(str(path), fps=fps, codec="libx264", macro_block_size=1, quality=7) as writer:
        for frame in frames:
            writer.append_data(frame)


def plot_history(
    history: list[dict[str, Any]], out: Path, task: str, title: str, xlabel: str = "env steps"
) -> Path | None:
    """Write ``out`` (PNG): eval success against ``xlabel`` (with the confirmed rates where an evaluation was
    confirmed, and the operator's share of steps per interval when anyone took over) and the cycle time."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(steps, [100 * h["success_rate"] for h in history], marker="o", label="eval success")
    confirmed = [(h["step"], 100 * h["confirm_success_rate"]) for h in history if "confirm_success_rate" in h]
    if confirmed:
        ax1.scatter(*zip(*confirmed), marker="s", color="tab:green", zorder=3, label="confirmed on more episodes")
    ax1.set(xlabel=xlabel, ylabel="eval success (%)", ylim=(-3, 103), title=f"{task}: success")
    ax1.axhline(90, color="grey", lw=0.8, ls="--")
    if any(h.get("intervention_steps") for h in history):  # corrections: the operator's share per interval
        prev = [(0, 0)] + [(h["step"], h.get("intervention_steps", 0)) for h in history[:-1]]
        share = [
            100 * (h.get("intervention_steps", 0) - n0) / max(h["step"] - s0, 1) for h, (s0, n0) in zip(history, prev)
        ]
        ax1.plot(steps, share, ls="--", color="tab:red", label="steps the operator drove (%)")
    ax1.legend(fontsize=8)
    ax2.plot(steps, [h["cycle_time_s"] for h in history], marker="o", color="tab:orange")
    ax2.set(xlabel=xlabel, ylabel="seconds", title="cycle time (mean time to success)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)
