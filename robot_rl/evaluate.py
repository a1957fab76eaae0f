"""Policy evaluation: success rate with its confidence interval, return, episode length and cycle time, the seeds
of the failed episodes, optionally an MP4 (of every episode, or of the failures replayed)."""

from __future__ import annotations

import math
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
    episodes; NaN if none succeeded) and ``failed_seeds`` (replay one with ``seeds=[s]``: a deterministic policy
    repeats it). With ``video_path`` the env must have been made with ``render_mode="rgb_array"``; frames of all
    episodes are written to one MP4. ``reset`` is called at each episode start (a policy with memory, such as a chunk
    executor). ``progress``: a progress bar.
    """
    from tqdm import tqdm

    dt = control_dt(env)
    successes, returns, lengths, cycle_times = [], [], [], []
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
        "return_mean": float(np.mean(returns)),
        "length_mean": float(np.mean(lengths)),
        "cycle_time_s": float(np.mean(cycle_times)) if cycle_times else float("nan"),
    }


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
