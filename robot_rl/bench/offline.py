"""``robot-rl bench offline``: what stored data buy on each task, every row a ``robot-rl`` run with the same seed and
the same evaluation episodes.

Data: ``demos`` scripted-expert episodes and ``failures`` noisy ones that failed (:func:`~robot_rl.bench.reward.
record_store`, observations as ``obs``), the same store for every row of a task. Row groups (``groups``):

* ``offline``: ``robot-rl train-offline`` with IQL and with Cal-QL, ``offline_steps`` updates: success from the store
  alone (the best and the last evaluation).
* ``online``: ``online_steps`` env steps from the Cal-QL run's weights, Cal-QL with the store in every batch and
  WSRL-style (SAC loss, ``warmup`` env steps before the first update, online data only), against RLPD from scratch
  with the same store as its demonstrations: env steps to 90% and the ratio to RLPD's, and whether success dips
  after the switch (the lowest of the first three online evaluations more than 10 points under the offline run's
  last).
* ``gap`` (tasks with a ``<task>_gap`` variant): the variant stands in for the real robot, with its own store
  recorded there. Success on the variant of H2O (the task's simulator plus that store), of sim-only RLPD (the
  simulator's scripted demos) and of IQL on the "real" store alone.
* ``prior``: RLPD with no demonstrations, with and without the store given as reward-free prior data (ExPLORe):
  env steps to 90% and the ratio.

Prints a table per task, writes ``offline.json`` (every curve and ratio) and ``offline.png`` (the curves) into
``out``; each run's log sits next to its run directory.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from robot_rl.bench.common import Bench, cli_run, parse_overrides, print_table, ratio, split_list, write_json

DEFAULTS: dict[str, Any] = {
    "threads": 1,
    "tasks": "pick_cube,peg_insert",  # comma-separated
    "groups": "offline,online,gap,prior",  # comma-separated
    "obs": "state",
    "demos": 20,  # expert episodes in the store
    "failures": 20,  # noisy failed episodes in the store
    "noise": 0.6,  # action noise of the failed attempts
    "offline_steps": 0,  # updates; 0: 200 quick, 5000 full
    "online_steps": 0,  # env steps; 0: 300 quick, 6000 full
    "warmup": 0,  # WSRL warm-up env steps; 0: 100 quick, 500 full
    "eval_every": 0,  # 0: 100 quick, 500 full (env steps online, updates offline)
    "eval_episodes": 0,  # 0: 3 quick, 20 full
    "seed": 0,
    "out": "",  # where the runs go (empty: a temp dir)
    "reuse": False,  # a row that finished with the same resolved config is read back, not rerun
}
AUTO = {
    "offline_steps": (200, 5000),
    "online_steps": (300, 6000),
    "warmup": (100, 500),
    "eval_every": (100, 500),
    "eval_episodes": (3, 20),
}


def run(quick: bool = False, overrides: list[str] | None = None) -> dict[str, Any]:
    s = parse_overrides(overrides or [], DEFAULTS, quick, AUTO)
    unknown = set(split_list(s["groups"])) - {"offline", "online", "gap", "prior"}
    if unknown:
        raise ValueError(f"groups: unknown {sorted(unknown)}; valid: offline, online, gap, prior")
    return Bench("offline", quick, s).run(_measure, s)


def _measure(bench: Bench, s: dict[str, Any]) -> dict[str, Any]:
    out = Path(s["out"] or tempfile.mkdtemp(prefix="robot_rl_offline_"))
    rows = {task: _task_rows(task, s, out / task) for task in split_list(s["tasks"])}
    result = bench.result(rows, out=str(out))
    write_json(out / "offline.json", result)
    _plot(rows, out / "offline.png")
    bench.print_notes()
    return result


def _record(path: Path, task: str, s: dict[str, Any]) -> dict[str, Any] | None:
    """The bench's store of ``task`` at ``path`` (recorded once; None when it was there already)."""
    from omegaconf import OmegaConf

    from robot_rl.bench.reward import record_store
    from robot_rl.utils.config import config_group

    if path.exists():
        return None
    print(f"offline bench: {task}: recording {s['demos']} expert + {s['failures']} failed episodes", flush=True)
    spec = OmegaConf.merge({"obs": s["obs"]}, {"task": config_group("task", task)}).task
    return record_store(
        path, OmegaConf.to_container(spec, resolve=True), 128, s["demos"], s["failures"], s["noise"], s["seed"],
        obs_mode=s["obs"], terminate_on_success=True,
    )  # fmt: skip


def _task_rows(task: str, s: dict[str, Any], base: Path) -> dict[str, Any]:
    """Every row of one task (see the module docstring)."""
    from robot_rl.utils.config import CONFIG_DIR

    groups = set(split_list(s["groups"]))
    common = [f"obs={s['obs']}", f"seed={s['seed']}", f"threads={s['threads']}", f"eval.episodes={s['eval_episodes']}"]
    common.append(f"eval.every={s['eval_every']}")
    r: dict[str, Any] = {"data_store": _record(base / "data.zarr", task, s)}

    def row(name: str, *args: str) -> dict[str, Any]:
        print(f"offline bench: {task}: {name} ...", flush=True)
        r[name] = cli_run(base / name, *args, *common, reuse=s["reuse"])
        return r[name]

    data = base / "data.zarr"
    offline = ["train-offline", f"task={task}", f"data=[{data}]", f"steps={s['offline_steps']}"]
    online = ["train", f"task={task}", f"total_steps={s['online_steps']}"]
    if groups & {"offline", "online"}:
        row("iql_offline", *offline, "agent=iql")
        row("calql_offline", *offline, "agent=calql")
    if "online" in groups:
        same_data = [f"demos.path={data}", "demos.only_successful=false"]
        row("rlpd_same_data", *online, "agent=rlpd", *same_data)
        start = f"init_from={base / 'calql_offline'}"
        row("calql_online", *online, "agent=calql", start, *same_data)
        row("wsrl", *online, "agent=calql", "agent.loss=sac", start, "demos.episodes=0",
            f"learning_starts={s['warmup']}")  # fmt: skip
        for name in ("calql_online", "wsrl"):
            curve, before = r[name]["curve"], r["calql_offline"]["final"]
            r[name]["vs_rlpd_steps_to_90"] = ratio(r[name]["steps_to_90"], r["rlpd_same_data"]["steps_to_90"])
            early = min((c[1] for c in curve[:3]), default=None)  # the first three online evaluations
            r[name].update(offline_final=before, early_online_min=early)
            r[name]["dips"] = None if early is None or before is None else early < before - 0.1
    if "gap" in groups and (CONFIG_DIR / "task" / f"{task}_gap.yaml").exists():
        gap = f"{task}_gap"
        real = base / "real.zarr"
        r["real_store"] = _record(real, gap, s)
        on_gap = f"eval.task={gap}"
        row("h2o", *online, "agent=h2o", f"demos.path={real}", "demos.only_successful=false", on_gap)
        row("sim_only", *online, "agent=rlpd", on_gap)
        row("real_offline", "train-offline", f"task={gap}", f"data=[{real}]", f"steps={s['offline_steps']}",
            "agent=iql")  # fmt: skip
    if "prior" in groups:
        row("no_prior", *online, "agent=rlpd", "demos.episodes=0")
        row("prior", *online, "agent=explore", f"prior=[{data}]", "demos.episodes=0")
        r["prior"]["vs_no_prior_steps_to_90"] = ratio(r["prior"]["steps_to_90"], r["no_prior"]["steps_to_90"])
    _print(task, r)
    return r


def _fmt(x: Any, spec: str = ".0%") -> str:
    return "-" if x is None else format(x, spec)


def _print(task: str, r: dict[str, Any]) -> None:
    print(f"\n{task}: every row the same seed and evaluation episodes")
    table = []
    for name, row in r.items():
        if not isinstance(row, dict) or "curve" not in row:
            continue
        ratio = row.get("vs_rlpd_steps_to_90", row.get("vs_no_prior_steps_to_90"))
        dip = row.get("dips")
        table.append([
            name, row.get("error") or _fmt(row["final"]), _fmt(row["best"]),
            row["steps_to_90"] if row["steps_to_90"] is not None else "not reached",
            "-" if ratio is None else f"{ratio:.2f}x",
            "-" if dip is None else ("yes" if dip else "no"), f"{row['seconds']:.0f}",
        ])  # fmt: skip
    print_table(["row", "final success", "best", "steps to 90%", "ratio", "dips at switch", "wall s"], table)


def _plot(rows: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(1, len(rows)), figsize=(6 * max(1, len(rows)), 4), squeeze=False)
    for ax, (task, r) in zip(axes[0], rows.items()):
        for name, row in r.items():
            if isinstance(row, dict) and row.get("curve"):
                steps, success = zip(*row["curve"])
                ax.plot(steps, [100 * x for x in success], marker="o", ms=3, label=name)
        ax.set(title=task, xlabel="env steps (offline rows: updates)", ylabel="eval success (%)", ylim=(-3, 103))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
