"""Policy evaluation: success rate, return, episode length and cycle time, optionally an MP4."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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
) -> dict[str, float]:
    """Run ``episodes`` episodes with seeds ``seed, seed+1, ...``.

    Returns ``success_rate`` (0-1), ``return_mean``, ``length_mean`` (steps), ``cycle_time_s`` (mean seconds to
    success over successful episodes; NaN if none succeeded). With ``video_path`` the env must have been made with
    ``render_mode="rgb_array"``; frames of all episodes are written to one MP4. ``reset`` is called at each
    episode start (a policy with memory, such as a chunk executor).
    """
    dt = control_dt(env)
    successes, returns, lengths, cycle_times = [], [], [], []
    frames: list[np.ndarray] = []
    for ep in range(episodes):
        obs, info = env.reset(seed=seed + ep)
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
    return {
        "success_rate": float(np.mean(successes)),
        "return_mean": float(np.mean(returns)),
        "length_mean": float(np.mean(lengths)),
        "cycle_time_s": float(np.mean(cycle_times)) if cycle_times else float("nan"),
    }


def write_video(path: str | Path, frames: list[np.ndarray], fps: float) -> None:
    """Write uint8 HxWx3 frames to an MP4 (H.264 via the ffmpeg shipped in imageio-ffmpeg)."""
    import imageio.v2 as imageio

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with imageio.get_writer(str(path), fps=fps, codec="libx264", macro_block_size=1, quality=7) as writer:
        for frame in frames:
            writer.append_data(frame)
