"""Save a grid of front / wrist camera images of a Panda task: the nominal look, then the randomised look for a few
seeds (the figure ``docs/domain_randomization.png`` in the README).

    python -m sim.show_randomization --task pick_cube --seeds 0 2 4 6 12 --out docs/domain_randomization.png

The figure's seeds were chosen so that all five table textures appear.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import sim  # noqa: F401  (registers the env ids, sets MUJOCO_GL before mujoco makes a context)
from robot_rl.envs.make import make_gym_env

ENV_IDS = {
    "reach": "sim:robot_rl/Reach-v0",
    "pick_cube": "sim:robot_rl/PickCube-v0",
    "peg_insert": "sim:robot_rl/PegInsert-v0",
}
CAMERAS = ("front", "wrist")


def camera_grid(task: str, seeds: list[int], image_size: int = 128) -> tuple[np.ndarray, list[str]]:
    """Images uint8 (2, 1 + len(seeds), image_size, image_size, 3): rows are cameras, the first column is the nominal
    look of ``reset(seed=seeds[0])``, the others the randomised look of ``reset(seed=s)``; plus column titles."""
    nominal = make_gym_env(ENV_IDS[task], obs_mode="pixels", image_size=image_size)
    randomised = make_gym_env(ENV_IDS[task], obs_mode="pixels", image_size=image_size, randomize=True)
    try:
        columns = [nominal.reset(seed=seeds[0])[0]] + [randomised.reset(seed=s)[0] for s in seeds]
    finally:
        nominal.close()
        randomised.close()
    grid = np.stack([[obs[cam] for obs in columns] for cam in CAMERAS])
    return grid, [f"nominal (seed {seeds[0]})"] + [f"seed {s}" for s in seeds]


def save_grid(grid: np.ndarray, titles: list[str], out: Path, task: str) -> None:
    """Write ``grid`` (rows, cols, H, W, 3) as a titled PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = grid.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.0 * rows + 0.4), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.imshow(grid[r, c], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=10)
            if c == 0:
                ax.set_ylabel(CAMERAS[r], fontsize=10)
    fig.suptitle(
        f"{task}: visual domain randomisation (lighting, colours, table texture, camera pose/fov)", fontsize=10
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Save nominal vs randomised camera images of a Panda task.")
    parser.add_argument("--task", choices=sorted(ENV_IDS), default="pick_cube")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--image-size", type=int, default=128, help="px")
    parser.add_argument("--out", type=Path, default=Path("docs/domain_randomization.png"))
    args = parser.parse_args(argv)
    grid, titles = camera_grid(args.task, args.seeds, args.image_size)
    save_grid(grid, titles, args.out, args.task)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
