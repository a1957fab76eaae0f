"""Speed and expert-success benchmark of the sim tasks: ``python -m sim.bench [--episodes N]``.

Prints, per task: state-mode ``step()`` and ``reset()`` time (ms), pixels-mode step time (two 128 px cameras), and
the scripted expert's success rate over N seeded episodes.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym

import sim  # noqa: F401

TASKS = ("robot_rl/Reach-v0", "robot_rl/PickCube-v0", "robot_rl/PegInsert-v0")


def bench_task(env_id: str, episodes: int, obs_mode: str = "state") -> dict[str, float]:
    """Run ``episodes`` expert episodes; return mean step/reset times (ms), success rate and mean length."""
    env = gym.make(f"sim:{env_id}", obs_mode=obs_mode).unwrapped
    t_step = t_reset = 0.0
    steps = wins = 0
    for seed in range(episodes):
        t0 = time.perf_counter()
        env.reset(seed=seed)
        t_reset += time.perf_counter() - t0
        while True:
            a = env.expert_action()
            t0 = time.perf_counter()
            _, _, terminated, truncated, info = env.step(a)
            t_step += time.perf_counter() - t0
            steps += 1
            if terminated or truncated:
                wins += info["success"]
                break
    env.close()
    return {
        "step_ms": 1e3 * t_step / steps,
        "reset_ms": 1e3 * t_reset / episodes,
        "success": wins / episodes,
        "mean_len": steps / episodes,
    }


def main() -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--pixel-episodes", type=int, default=5)
    args = parser.parse_args()
    for env_id in TASKS:
        s = bench_task(env_id, args.episodes)
        p = bench_task(env_id, args.pixel_episodes, "pixels")
        print(
            f"{env_id:24s} state step {s['step_ms']:.2f} ms  reset {s['reset_ms']:.2f} ms  "
            f"pixels step {p['step_ms']:.2f} ms  expert {s['success']:.0%} of {args.episodes} "
            f"(pixels {p['success']:.0%} of {args.pixel_episodes})  mean length {s['mean_len']:.1f}"
        )


if __name__ == "__main__":
    main()
