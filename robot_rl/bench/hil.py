"""``robot-rl bench hil``: do corrections pay? Env steps to 90% eval success with simulated corrections vs without.

Every row is ``robot-rl train`` on the same task, seeds, demos, budget, evaluation schedule and evaluation seeds,
differing only in the overrides the row names (:data:`ROWS`). Evaluation is always without the operator. The rows
that answer the question (the default ``rows``):

* ``no_corrections``: RLPD with the scripted demos, nobody intervenes (the baseline);
* ``corrections``: the same with ``hil=sim_operator`` (the person-like simulated operator) and the learner's defaults
  for what corrections teach (``corrections:`` in ``configs/train.yaml``, ``agent.bc_weight``);
* ``corrections_async``: the same with actor and learner processes (``runtime=async``, paced at the control rate
  as on a robot: a run takes up to ``budget`` / 10 s; the learner needs a core of its own to hold the UTD ratio).

The other rows of :data:`ROWS` are the ablations behind those defaults (README "Human corrections"); name them in
``rows=``, or add one as ``row=NAME:override;override``. Each run stops at 90% confirmed on ``eval.confirm`` x more
episodes; steps to a mark are read off each evaluation's confirmed figure where it has one (what the stop rule reads),
else its ``eval_episodes`` figure. Per row and seed: steps to 90% (and 50%), final success, the
share of env steps the operator drove over training (up to the step that reached 90%, else the budget) and its curve.
``ratio`` = mean steps-to-90% of the row's baseline (the same config, nobody intervenes: ``no_corrections``, or
``no_corrections+bc_demos`` for a ``+bc_demos`` row) / of the row, a run that never reached 90% counted at the
budget (the ratio then says which way it is bounded); ``ratio 50%`` the same for steps to 50% (how much sooner the
policy is half-way there). The aim: ratio >= 2 at <= 20% intervention steps; each row says whether it met it.

Runs go to ``out/<row>/s<seed>`` as ``robot-rl train`` subprocesses, ``jobs`` at a time, each with ``threads``
torch threads (env steps to 90% do not depend on speed in sync rows; an async row runs alone, as its learner needs
its core to keep up with the control rate). With ``reuse=true`` a finished run whose resolved config equals the one
the bench would run now is reused (an interrupted sweep loses nothing; changed defaults rerun). Prints a table,
writes ``hil.png`` (success and the operator's share of steps against env steps, mean over seeds) and ``hil.json``
under ``out``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from robot_rl.bench.common import finished_run, parse_overrides, print_table, write_json
from robot_rl.bench.sample_efficiency import MILESTONE, TARGET, steps_to_target

OPERATOR = ["hil=sim_operator"]


def _learner(
    demo_buffer: bool = True, takeover_reward: float = 0.0, bc_weight: float = 0.0, trigger_reward: float | None = None
) -> list[str]:
    """Every learner switch set explicitly, so an ablation row does not change with the defaults."""
    return [
        f"corrections.demo_buffer={str(demo_buffer).lower()}",
        f"corrections.takeover_reward={takeover_reward}",
        f"agent.bc_weight={bc_weight}",
        f"corrections.trigger_reward={'null' if trigger_reward is None else trigger_reward}",
    ]


ROWS: dict[str, list[str]] = {
    "no_corrections": [],
    "no_corrections+bc_demos": ["agent.bc_on_demos=true"],  # the baseline's best shot: clone the demos instead
    "corrections": OPERATOR,  # the person-like operator, the learner's defaults (= "no_demo_buffer")
    "corrections_async": OPERATOR + ["runtime=async"],  # paced at the control rate, as on a robot
    "corrections_async+stale_weights": OPERATOR + ["runtime=async", "runtime.weights_every=20"],  # 2 s policy lag
    # ablations. The operator: an impatient one and the person-like one, both with the plain HIL-SERL learner
    # (corrected segments into both buffers, nothing else) ...
    "heavy_operator": ["hil=sim_operator_heavy"] + _learner(),
    "person_operator": OPERATOR + _learner(),
    # ... what the learner makes of the person-like operator's corrections (with HIL-SERL's demo-buffer replay,
    # _learner's default): each switch alone, both, both without the demo buffer (the defaults) ...
    "bc": OPERATOR + _learner(bc_weight=1.0),
    "takeover_reward": OPERATOR + _learner(takeover_reward=-1.0),
    "trigger_reward": OPERATOR + _learner(trigger_reward=-1.0),
    "bc+takeover_reward": OPERATOR + _learner(takeover_reward=-1.0, bc_weight=1.0),
    "corrections+trigger_reward": OPERATOR + _learner(takeover_reward=-1.0, bc_weight=1.0, trigger_reward=-1.0),
    "no_demo_buffer": OPERATOR + _learner(demo_buffer=False, takeover_reward=-1.0, bc_weight=1.0),
    # ... with the demos cloned as well (agent.bc_on_demos) ...
    "corrections+bc_demos": OPERATOR + ["agent.bc_on_demos=true"],
    # ... or only where the critic rates the operator's action above the policy's (Q filter)
    "corrections+q_filter": OPERATOR + ["agent.bc_q_filter=true"],
    # ... and the impatient operator with that learner
    "heavy_operator+learner": ["hil=sim_operator_heavy"] + _learner(takeover_reward=-1.0, bc_weight=1.0),
}
DEFAULT_ROWS = ("no_corrections", "corrections", "corrections_async")
BASELINE = "no_corrections"
AIM_RATIO, AIM_INTERVENTION = 2.0, 0.20
MARKS = ((90, ""), (50, "_50"))  # success marks (TARGET, MILESTONE in %) and the suffix of their keys in a row

DEFAULTS: dict[str, Any] = {
    "task": "pick_cube",
    "seeds": "0,1,2",
    "budget": 6000,
    "eval_every": 500,
    "eval_episodes": 20,
    "demos": 40,
    "rows": ",".join(DEFAULT_ROWS),
    "row": "",
    "jobs": 1,
    "threads": 0,
    "reuse": False,
    "out": "bench_out/hil",
}
QUICK = {"budget": 600, "eval_every": 300, "eval_episodes": 5, "demos": 3, "seeds": "0"}


def settings(quick: bool, overrides: list[str]) -> tuple[dict[str, Any], dict[str, list[str]], list[str]]:
    """The bench's settings, its rows (name -> train overrides) and the overrides passed on to every run (those
    not naming a bench setting, e.g. ``agent.utd_ratio=4``)."""
    mine = [o for o in overrides if o.partition("=")[0].lstrip("+") in DEFAULTS]
    rest = [o for o in overrides if o not in mine]
    s = parse_overrides(mine, {**DEFAULTS, **(QUICK if quick else {})})
    s["seeds"] = [int(x) for x in str(s["seeds"]).strip("[]").split(",") if x.strip()]
    rows = {}
    for name in [r.strip() for r in str(s["rows"]).split(",") if r.strip()]:
        if name not in ROWS:
            raise ValueError(f"unknown bench hil row {name!r}; valid: {', '.join(ROWS)} (or row=NAME:override;...)")
        rows[name] = ROWS[name]
    if s["row"]:
        name, sep, ovs = str(s["row"]).partition(":")
        if not sep or not name:
            raise ValueError(
                f"row={s['row']!r}: expected row=NAME:override;override (e.g. "
                "row=bc2:hil=sim_operator;agent.bc_weight=2)"
            )
        rows[name] = [o for o in ovs.split(";") if o]
    if not s["seeds"] or s["jobs"] < 1:
        raise ValueError(f"need at least one seed and jobs >= 1 (got seeds={s['seeds']}, jobs={s['jobs']})")
    return s, rows, rest


def train_overrides(s: dict[str, Any], row: list[str], seed: int, run_dir: Path, quick: bool) -> list[str]:
    """The ``robot-rl train`` overrides of one run."""
    threads = s["threads"] if s["threads"] > 0 else max(1, (os.cpu_count() or 1) // s["jobs"])
    ov = [
        f"task={s['task']}",
        "agent=rlpd",
        f"seed={seed}",
        f"total_steps={s['budget']}",
        f"eval.every={s['eval_every']}",
        f"eval.episodes={s['eval_episodes']}",
        f"demos.episodes={s['demos']}",
        f"threads={threads}",
        f"eval.stop_at_success={TARGET}",
        f"run_dir={run_dir}",
    ]
    if any(o.startswith("runtime=") for o in row):  # the actor's and the learner's share of the threads
        ov += [f"runtime.actor_threads={max(1, threads // 2)}", f"runtime.learner_threads={max(1, threads // 2)}"]
    if quick:
        ov.append("agent.hidden_dims=[64,64]")
    return ov + list(row)


def intervention_flags(store_path: Path) -> np.ndarray:
    """Every collected env step's ``is_intervention`` flag, in order, from a run's ``online.zarr`` (the accounting
    is the same for sync and async runs: both record every episode there)."""
    from robot_rl.data.store import EpisodeStore

    if not Path(store_path).exists():
        return np.zeros(0, bool)
    with EpisodeStore.open(store_path) as store:
        return store.step_field("is_intervention").astype(bool)


def intervention_curve(flags: np.ndarray, every: int) -> list[list]:
    """(env step, share of intervention steps in the ``every`` steps ending there)."""
    return [[min(i + every, len(flags)), float(flags[i : i + every].mean())] for i in range(0, len(flags), every)]


def run_summary(run_dir: Path, budget: int, eval_every: int) -> dict[str, Any]:
    """One finished run's figures from its ``eval.jsonl`` and ``online.zarr``."""
    lines = (run_dir / "eval.jsonl").read_text().splitlines() if (run_dir / "eval.jsonl").exists() else []
    history = [json.loads(line) for line in lines if line.strip()]
    flags = intervention_flags(run_dir / "online.zarr")
    hit = steps_to_target(history, confirmed=True)
    upto = flags[: hit if hit is not None else budget]
    cfg = run_dir / "config.yaml"
    utd = OmegaConf.load(cfg).agent.get("utd_ratio") if cfg.exists() else None
    return {
        "utd_ratio": utd,  # what the run trained at (a row or the command line may set agent.utd_ratio)
        "steps_to_90": hit,
        "steps_to_50": steps_to_target(history, MILESTONE, confirmed=True),
        "reached": hit is not None,
        "final_success": history[-1]["success_rate"] if history else None,
        "curve": [[int(h["step"]), float(h["success_rate"])] for h in history],
        "intervention_share": float(upto.mean()) if len(upto) else 0.0,
        "intervention_steps": int(upto.sum()),
        "interventions": intervention_curve(flags, max(1, eval_every)),
    }


def _launch(cmd: list[str], log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def run_all(s: dict[str, Any], rows: dict[str, list[str]], extra: list[str], quick: bool) -> dict[str, dict]:
    """Train every (row, seed) not already finished, ``jobs`` at a time; return {row: {seed: summary}}."""
    out = Path(s["out"])
    todo, done = [], {}

    def _paced(row: str) -> bool:  # actor and learner processes at the control rate: timing decides the UTD ratio
        return any(o.startswith("runtime=") and o != "runtime=sync" for o in rows[row])

    for row, ovs in rows.items():
        for seed in s["seeds"]:
            run_dir = out / row / f"s{seed}"
            train_ov = [*train_overrides(s, ovs, seed, run_dir, quick), *extra]
            if s["reuse"] and (summary := finished_run(run_dir, "train", train_ov)) is not None:
                done[(row, seed)] = {**summary, **run_summary(run_dir, s["budget"], s["eval_every"])}  # read anew
                continue
            shutil.rmtree(run_dir, ignore_errors=True)
            todo.append((row, seed, run_dir, [sys.executable, "-m", "robot_rl.cli", "train", *train_ov]))
    running: list[tuple[str, int, Path, subprocess.Popen, float]] = []
    failed: list[str] = []
    print(
        f"bench hil: {len(todo)} run(s) to train ({len(done)} reused), {s['jobs']} at a time; logs in "
        f"{out}/<row>/s<seed>.log",
        flush=True,
    )
    try:
        while todo or running:
            while todo and len(running) < s["jobs"] and not any(_paced(r[0]) for r in running):
                if _paced(todo[0][0]) and running:  # a paced run gets the machine to itself (the learner's core)
                    break
                row, seed, run_dir, cmd = todo.pop(0)
                running.append((row, seed, run_dir, _launch(cmd, run_dir.parent / f"s{seed}.log"), time.time()))
            time.sleep(1.0)
            for item in list(running):
                row, seed, run_dir, proc, t0 = item
                if proc.poll() is None:
                    continue
                running.remove(item)
                if proc.returncode != 0:  # the others go on; the bench fails at the end, naming it
                    failed.append(f"{row} seed {seed} (exit {proc.returncode}; {run_dir.parent / f's{seed}.log'})")
                    print(f"  {row} seed {seed} FAILED: see {run_dir.parent / f's{seed}.log'}", flush=True)
                    continue
                summary = dict(run_summary(run_dir, s["budget"], s["eval_every"]), wall_s=time.time() - t0)
                (run_dir / "bench_done.json").write_text(json.dumps(summary))
                done[(row, seed)] = summary
                to90 = summary["steps_to_90"] if summary["reached"] else f">{s['budget']}"
                print(
                    f"  {row} seed {seed}: steps to 90% {to90}, final {summary['final_success']:.0%}, "
                    f"interventions {summary['intervention_share']:.1%}, {summary['wall_s']:.0f} s",
                    flush=True,
                )
    finally:
        for *_, proc, _ in running:  # interrupted: stop the runs in flight (finished ones stay reusable)
            proc.terminate()
    if failed:
        raise RuntimeError(
            "bench hil: run(s) failed: " + "; ".join(failed) + ". The finished ones are kept: fix "
            "and rerun with reuse=true"
        )
    return {row: {seed: done[(row, seed)] for seed in s["seeds"]} for row in rows}


def baseline_of(row: str, rows: dict[str, Any]) -> str | None:
    """The row a corrections row is compared with: the same learner without corrections (``no_corrections``, or
    ``no_corrections+bc_demos`` for a ``+bc_demos`` row when it ran); None for the baselines themselves."""
    if row.startswith(BASELINE):
        return None
    name = BASELINE + "+bc_demos" if row.endswith("+bc_demos") else BASELINE
    return name if name in rows else None


def _ratio_bound(base_capped: bool, row_capped: bool) -> str:
    if base_capped and row_capped:
        return "unknown (neither reached the mark in every seed)"
    return "lower bound" if base_capped else "upper bound" if row_capped else "exact"


def run(quick: bool = False, overrides: list[str] | None = None) -> dict[str, Any]:
    s, rows, extra = settings(quick, list(overrides or []))
    runs = run_all(s, rows, extra, quick)
    budget, n = s["budget"], len(s["seeds"])
    results: dict[str, Any] = {"settings": s, "rows_overrides": rows, "extra_overrides": extra, "rows": {}}
    for row, per_seed in runs.items():
        seeds = [dict(per_seed[seed], seed=seed) for seed in s["seeds"]]
        results["rows"][row] = {
            "per_seed": seeds,
            "intervention_share": float(np.mean([r["intervention_share"] for r in seeds])),
            "final_success_mean": float(np.mean([r["final_success"] or 0.0 for r in seeds])),
            "utd_ratio": sorted({r.get("utd_ratio") for r in seeds}, key=str),
        }
        for pct, suffix in MARKS:  # a run that missed the mark counts at the budget
            hits = [r[f"steps_to_{pct}"] for r in seeds]
            results["rows"][row][f"mean_steps_to_{pct}"] = float(np.mean([budget if h is None else h for h in hits]))
            results["rows"][row]["reached" + suffix] = sum(h is not None for h in hits)
    for row, r in results["rows"].items():
        base_name = baseline_of(row, results["rows"])
        if base_name is None:
            continue
        base = results["rows"][base_name]
        r["baseline"] = base_name
        for pct, suffix in MARKS:
            bound = _ratio_bound(base["reached" + suffix] < n, r["reached" + suffix] < n)
            known = not bound.startswith("unknown")  # no figure when neither reached the mark
            mean = f"mean_steps_to_{pct}"
            r["ratio_bound" + suffix] = bound
            r["ratio" + suffix] = base[mean] / max(r[mean], 1.0) if known else None
        exact_or_low = r["ratio_bound"] in ("exact", "lower bound")
        r["aim_met"] = bool(exact_or_low and r["ratio"] >= AIM_RATIO and r["intervention_share"] <= AIM_INTERVENTION)
    _print(results)
    out = Path(s["out"])
    out.mkdir(parents=True, exist_ok=True)
    results["plot"] = str(_plot(results, out / "hil.png"))
    write_json(out / "hil.json", results, indent=1)
    return results


def _ratio_text(r: dict[str, Any], suffix: str) -> str:
    if "ratio_bound" + suffix not in r:
        return "-"
    ratio, bound = r["ratio" + suffix], r["ratio_bound" + suffix]
    return "unknown" if ratio is None else f"{ratio:.2f}" + ("" if bound == "exact" else " (" + bound.split()[0] + ")")


def _print(results: dict[str, Any]) -> None:
    s = results["settings"]
    print(
        f"\nbench hil: {s['task']}, seeds {s['seeds']}, {s['demos']} demos, budget {s['budget']} env steps, "
        f"eval every {s['eval_every']} ({s['eval_episodes']} episodes), target {TARGET:.0%}"
    )
    print(
        "ratio: the baseline's mean env steps to 90% (to 50%: ratio 50%) / the row's (baseline: the same config, "
        "nobody intervenes; a run that missed the mark counts at the budget). "
        f"aim: >= {AIM_RATIO:g}x at <= {AIM_INTERVENTION:.0%} intervention steps. UTD: the update ratio trained at"
    )
    table = []
    for row, r in results["rows"].items():
        per = " ".join(str(x["steps_to_90"]) if x["reached"] else f">{s['budget']}" for x in r["per_seed"])
        aim = ("met" if r["aim_met"] else "not met") + f" (ratio {r['ratio_bound']})" if "aim_met" in r else "-"
        table.append(
            [
                row,
                "/".join(str(u) for u in r.get("utd_ratio", [])) or "?",
                per,
                f"{r['mean_steps_to_90']:.0f}",
                f"{r['mean_steps_to_50']:.0f}",
                _ratio_text(r, "_50"),
                f"{r['intervention_share']:.1%}",
                f"{r['final_success_mean']:.0%}",
                _ratio_text(r, ""),
                r.get("baseline", "-"),
                aim,
            ]
        )
    print_table(
        [
            "row",
            "UTD",
            "steps to 90% per seed",
            "mean",
            "to 50%",
            "ratio 50%",
            "interv.",
            "final",
            "ratio",
            "baseline",
            "aim",
        ],
        table,
        align="lrrrrrrrrll",
    )


def mean_curve(curves: list[list], every: int, budget: int) -> tuple[list[int], list[float]]:
    """The mean over seeds of ``[step, value]`` curves on a grid of ``every`` steps up to ``budget``: each run's latest
    value at or before a grid step (a run that stopped at the target keeps its last evaluation; before a run's first
    point it counts as 0)."""
    grid = list(range(every, budget + every, every))
    vals = []
    for g in grid:
        at = [next((v for st, v in reversed(c) if st <= g + every // 10), 0.0) for c in curves]  # eval lands a bit late
        vals.append(float(np.mean(at)) if at else 0.0)
    return grid, vals


def _plot(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = results["settings"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (row, r) in enumerate(results["rows"].items()):
        style = {"color": f"C{i % 10}", "ls": "-" if i < 10 else "--", "label": row}
        grid, succ = mean_curve([x["curve"] for x in r["per_seed"]], s["eval_every"], s["budget"])
        ax1.plot(grid, [100 * v for v in succ], marker=".", **style)
        if r["intervention_share"] > 0:
            # the operator's share per interval, over the seeds still training there
            grid, share = _mean_share([x["interventions"] for x in r["per_seed"]], s["eval_every"], s["budget"])
            ax2.plot(grid, [100 * v for v in share], **style)
    ax1.axhline(100 * TARGET, color="grey", lw=0.8, ls="--")
    ax1.set(
        xlabel="env steps",
        ylabel="eval success (%), mean over seeds",
        ylim=(-3, 103),
        title=f"{s['task']}: success (eval, no operator)",
    )
    ax2.axhline(100 * AIM_INTERVENTION, color="grey", lw=0.8, ls="--")
    ax2.set(xlabel="env steps", ylabel="% of steps", ylim=(-3, 103), title="steps the operator drove, per interval")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _mean_share(curves: list[list], every: int, budget: int) -> tuple[list[int], list[float]]:
    """Mean over the seeds that collected a full interval there of the per-interval intervention share."""
    grid, out = [], []
    for g in range(every, budget + every, every):
        at = [v for c in curves for st, v in c if st == g]
        if at:
            grid.append(g)
            out.append(float(np.mean(at)))
    return grid, out
