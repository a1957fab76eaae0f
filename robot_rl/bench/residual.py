"""``robot-rl bench residual``: what RL on top of a cloned policy buys, every row a ``robot-rl`` run with the same seed
and the same evaluation episodes.

Data per task: ``demos`` scripted-expert episodes (``demos.zarr``) and as many successful episodes of the expert with
action noise ``noise`` (``noisy.zarr``): demonstrations a cloned policy learns imperfectly from. Rows (``rows``):

* ``bc`` / ``bc_noisy``: ``robot-rl train-bc`` (``policy``, ``chunk``) for ``bc_steps`` updates; success over
  ``bc_episodes`` evaluation episodes.
* ``residual`` / ``residual_noisy``: ``robot-rl train agent=residual`` over that policy for ``online_steps`` env
  steps (no further demonstrations: the base carries them): env steps to ``target`` success.
* ``dsrl`` / ``dsrl_noisy``: SAC choosing the latent noise of a flow-matching clone (``agent=dsrl``): env steps to
  ``target``.
* ``rlpd`` / ``rlpd_noisy``: RLPD from scratch with the same demonstrations (``demos.path``): env steps to
  ``target``; the RL rows' ratios are to these.

Prints a table per task, writes ``residual.json`` (every curve and ratio) and ``residual.png`` into ``out``; each
run's log sits next to its run directory. With ``reuse=true`` a row that finished with the same resolved config is
read back.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from robot_rl.bench.common import (
    Bench,
    cli_run,
    parse_overrides,
    print_table,
    ratio,
    split_list,
    steps_to,
    write_json,
)

ROWS = ("bc", "bc_noisy", "residual", "residual_noisy", "dsrl", "dsrl_noisy", "rlpd", "rlpd_noisy")
DEFAULTS: dict[str, Any] = {
    "threads": 1,
    "tasks": "peg_insert,pick_cube",  # comma-separated
    "rows": ",".join(ROWS),  # comma-separated
    "obs": "state",
    "demos": 20,  # expert episodes in each store
    "noise": 0.5,  # action noise of the noisy demonstrations
    "policy": "mlp",  # the cloned policy's head (dsrl rows: always flow)
    "chunk": 4,
    "bc_steps": 0,  # 0: 300 quick, 3000 full
    "bc_episodes": 0,  # 0: 5 quick, 100 full
    "online_steps": 0,  # env steps; 0: 200 quick, 6000 full
    "eval_every": 0,  # env steps; 0: 100 quick, 500 full
    "eval_episodes": 0,  # 0: 3 quick, 20 full
    "target": 0.95,
    "seed": 0,
    "out": "",  # where the runs go (empty: a temp dir)
    "reuse": False,
}
AUTO = {
    "bc_steps": (300, 3000),
    "bc_episodes": (5, 100),
    "online_steps": (200, 6000),
    "eval_every": (100, 500),
    "eval_episodes": (3, 20),
}


def run(quick: bool = False, overrides: list[str] | None = None) -> dict[str, Any]:
    s = parse_overrides(overrides or [], DEFAULTS, quick, AUTO)
    unknown = set(split_list(s["rows"])) - set(ROWS)
    if unknown:
        raise ValueError(f"rows: unknown {sorted(unknown)}; valid: {', '.join(ROWS)}")
    return Bench("residual", quick, s).run(_measure, s)


def _measure(bench: Bench, s: dict[str, Any]) -> dict[str, Any]:
    out = Path(s["out"] or tempfile.mkdtemp(prefix="robot_rl_residual_"))
    rows = {task: _task_rows(task, s, out / task) for task in split_list(s["tasks"])}
    result = bench.result(rows, out=str(out))
    write_json(out / "residual.json", result)
    _plot(rows, out / "residual.png", s["target"])
    bench.print_notes()
    return result


def _record(path: Path, task: str, s: dict[str, Any], noise: float) -> dict[str, Any] | None:
    """The bench's demonstrations of ``task`` at ``path`` (recorded once; None when it was there already)."""
    from omegaconf import OmegaConf

    from robot_rl.bench.reward import record_store
    from robot_rl.utils.config import config_group

    if path.exists():
        return None
    print(f"residual bench: {task}: recording {s['demos']} expert episodes (action noise {noise})", flush=True)
    spec = OmegaConf.merge({"obs": s["obs"]}, {"task": config_group("task", task)}).task
    return record_store(
        path, OmegaConf.to_container(spec, resolve=True), 128, s["demos"], 0, 0.0, s["seed"], obs_mode=s["obs"],
        terminate_on_success=True, expert_noise=noise, max_attempts=20 * s["demos"] + 10,  # noisy experts fail often
    )  # fmt: skip


def _task_rows(task: str, s: dict[str, Any], base: Path) -> dict[str, Any]:
    wanted = split_list(s["rows"])
    same = [f"obs={s['obs']}", f"seed={s['seed']}", f"threads={s['threads']}", f"task={task}"]
    online = ["train", *same, f"total_steps={s['online_steps']}", f"eval.every={s['eval_every']}"]
    online.append(f"eval.episodes={s['eval_episodes']}")
    r: dict[str, Any] = {}

    def row(name: str, *args: str) -> dict[str, Any]:
        print(f"residual bench: {task}: {name} ...", flush=True)
        r[name] = cli_run(base / name, *args, reuse=s["reuse"])
        r[name]["steps_to_target"] = steps_to(r[name]["curve"], s["target"])
        return r[name]

    for suffix, noise in (("", 0.0), ("_noisy", float(s["noise"]))):
        if not any(name.endswith("_noisy") == bool(suffix) for name in wanted):
            continue
        data = base / f"demos{suffix}.zarr"
        r[f"data{suffix}"] = _record(data, task, s, noise)
        clone = ["train-bc", *same, f"data=[{data}]", f"chunk={s['chunk']}", f"steps={s['bc_steps']}"]
        clone += [f"eval.every={s['bc_steps']}", f"eval.episodes={s['bc_episodes']}"]
        bc, flow = base / f"bc{suffix}", base / (f"bc{suffix}" if s["policy"] == "flow" else f"flow{suffix}")
        if {f"bc{suffix}", f"residual{suffix}"} & set(wanted):  # the residual's base
            row(f"bc{suffix}", *clone, f"policy={s['policy']}")
        if f"residual{suffix}" in wanted:
            row(f"residual{suffix}", *online, "agent=residual", f"base_policy={bc}", "demos.episodes=0")
        if f"dsrl{suffix}" in wanted:
            if flow != bc or f"bc{suffix}" not in r:  # DSRL steers a flow-matching clone
                row(flow.name, *clone, "policy=flow")
            row(f"dsrl{suffix}", *online, "agent=dsrl", f"base_policy={flow}", "demos.episodes=0")
        if f"rlpd{suffix}" in wanted:
            rlpd = row(f"rlpd{suffix}", *online, "agent=rlpd", f"demos.path={data}")
            for name in (f"residual{suffix}", f"dsrl{suffix}"):
                if name in r:
                    r[name]["vs_rlpd_steps"] = ratio(r[name]["steps_to_target"], rlpd["steps_to_target"])
    _print(task, r, s["target"])
    return r


def _print(task: str, r: dict[str, Any], target: float) -> None:
    print(f"\n{task}: every row the same seed and evaluation episodes; ratio: env steps to {target:.0%} / RLPD's")
    table = []
    for name, row in r.items():
        if not isinstance(row, dict) or "curve" not in row:
            continue
        cloned = name.startswith(("bc", "flow"))
        to = row.get("steps_to_target")
        table.append([
            name, row.get("error") or ("-" if row["final"] is None else f"{row['final']:.0%}"),
            "-" if cloned else (to if to is not None else "not reached"),
            "-" if row.get("vs_rlpd_steps") is None else f"{row['vs_rlpd_steps']:.2f}x",
            f"{row['seconds']:.0f}",
        ])  # fmt: skip
    print_table(["row", "final success", f"env steps to {target:.0%}", "ratio", "wall s"], table)


def _plot(rows: dict[str, dict[str, Any]], path: Path, target: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(1, len(rows)), figsize=(6 * max(1, len(rows)), 4), squeeze=False)
    for ax, (task, r) in zip(axes[0], rows.items()):
        for name, row in r.items():
            if not isinstance(row, dict) or not row.get("curve"):
                continue
            if name.startswith(("bc", "flow")):  # a cloned policy: its success, as a level
                ax.axhline(100 * row["final"], ls=":", lw=1, label=f"{name} (cloned, no env steps)")
                continue
            steps, success = zip(*row["curve"])
            ax.plot(steps, [100 * x for x in success], marker="o", ms=3, label=name)
        ax.axhline(100 * target, color="grey", lw=0.8, ls="--")
        ax.set(title=task, xlabel="env steps", ylabel="eval success (%)", ylim=(-3, 103))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
