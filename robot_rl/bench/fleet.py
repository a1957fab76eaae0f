"""``robot-rl bench fleet``: what a fleet of actors on Ray (``runtime=ray``) gives on this machine.

Throughput rows: ``robot-rl train runtime=ray`` on ``task`` from state with 1, 2 and 4 actors (``actors``), one torch
thread per process, ``steps`` env steps each at the run's update-to-data ratio. Per row, from the run's
``fleet.json``: the fleet's env steps/s, the learner's updates/s, each actor's own env steps/s (while it was
collecting), and the scaling efficiency against the one-actor row (``rate / (rate with 1 actor * actors)``); the
cores in use are ``actors + 1`` processes on ``os.cpu_count()`` cores, said beside the figures.

Learning rows (``learning=true``): success against env steps with 1 and with ``learning_actors`` actors on ``task``,
the same budget (``learning_steps``) and the same evaluation episodes (evaluation seeds follow the run's seed);
env steps to 90% and wall-clock time to it, with the ratio of the fleet's to the single actor's.

A projection for ``project_actors`` actors and one learner, from the measured per-actor env steps/s and the
learner's updates/s: the fleet's rate is the smaller of the actors' total and what the learner's updates allow at
the update-to-data ratio. The learner's figure is this CPU's; a GPU learner's is unknown until measured, and is
printed as such.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from robot_rl.bench.common import Bench, parse_overrides, print_table

DEFAULTS: dict[str, Any] = {
    "threads": 1,  # torch threads per process (actors and learner)
    "task": "pick_cube",
    "actors": (1, 2, 4),  # throughput rows
    "steps": 0,  # env steps per throughput row; 0: 400 quick, 3000 full
    "steps_per_call": 50,
    "learning_starts": 100,  # env steps before the first update (every row)
    "learning": False,  # opt-in: success against env steps, 1 actor vs learning_actors
    "learning_actors": 4,
    "learning_steps": 0,  # 0: 600 quick, 8000 full
    "eval_every": 0,  # 0: 300 quick, 1000 full
    "eval_episodes": 0,  # 0: 3 quick, 20 full
    "project_actors": 64,
    "seed": 0,
    "out": "",  # where the runs go (empty: a temp dir)
}
AUTO = {"steps": (400, 3000), "learning_steps": (600, 8000), "eval_every": (300, 1000), "eval_episodes": (3, 20)}


def _train(run_dir: Path, task: str, actors: int, steps: int, s: dict[str, Any], eval_every: int, episodes: int) -> int:
    cmd = [
        sys.executable, "-m", "robot_rl.cli", "train", f"task={task}", "obs=state", "runtime=ray",
        f"runtime.actors={actors}", f"runtime.steps_per_call={s['steps_per_call']}",
        f"runtime.actor_threads={s['threads']}", f"runtime.learner_threads={s['threads']}", f"total_steps={steps}",
        f"learning_starts={s['learning_starts']}",
        f"eval.every={eval_every}", f"eval.episodes={episodes}", f"seed={s['seed']}", f"run_dir={run_dir}",
    ]  # fmt: skip
    with open(run_dir.with_suffix(".log"), "w") as log:
        return subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)


def _steps_to(history: list[dict[str, Any]], target: float = 0.9) -> int | None:
    return next((int(h["step"]) for h in history if h["success_rate"] >= target), None)


def run(quick: bool = False, overrides: list[str] | None = None) -> dict[str, Any]:
    s = parse_overrides(overrides or [], DEFAULTS, quick, AUTO)
    bench = Bench("fleet", quick, s)
    return bench.run(_measure, s)


def _measure(bench: Bench, s: dict[str, Any]) -> dict[str, Any]:
    out = Path(s["out"] or tempfile.mkdtemp(prefix="robot_rl_fleet_"))
    out.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    rows: dict[str, dict[str, Any]] = {}
    for n in s["actors"]:
        run_dir = out / f"throughput_{n}"
        print(f"fleet bench: {n} actor(s), {s['steps']} env steps on {s['task']} ...", flush=True)
        code = _train(run_dir, s["task"], n, s["steps"], s, 10**9, 1)
        if code != 0 or not (run_dir / "fleet.json").exists():
            rows[str(n)] = {"error": f"exit {code}; see {run_dir.with_suffix('.log')}"}
            continue
        f = json.loads((run_dir / "fleet.json").read_text())
        per_actor = list(f["actor_env_steps_per_s"].values())
        rows[str(n)] = {
            "actors": n,
            "processes_on_cores": f"{n + 1} on {cores}",
            "env_steps_per_s": f["env_steps_per_s"],
            "updates_per_s": f["updates_per_s"],
            "actor_env_steps_per_s": sum(per_actor) / len(per_actor) if per_actor else None,
            "seconds": f["seconds"],
        }
    base = rows.get("1", {}).get("env_steps_per_s")
    for row in rows.values():
        if "error" not in row:
            row["scaling_efficiency"] = row["env_steps_per_s"] / (base * row["actors"]) if base else None
    print_table(
        ["actors", "processes", "env steps/s", "updates/s", "per actor (collecting)", "efficiency vs 1 actor"],
        [
            [
                k,
                r.get("processes_on_cores", "-"),
                _f(r.get("env_steps_per_s")),
                _f(r.get("updates_per_s")),
                _f(r.get("actor_env_steps_per_s")),
                _f(r.get("scaling_efficiency"), ".2f"),
            ]
            for k, r in rows.items()
        ],  # fmt: skip
    )
    result: dict[str, Any] = {"throughput": rows, "projection": _projection(rows, s["project_actors"])}
    print(result["projection"]["text"])
    if s["learning"]:
        result["learning"] = _learning(out, s)
    bench.print_notes()
    return bench.result(rows, settings=s, out=str(out), **{k: v for k, v in result.items() if k != "throughput"})


def _projection(rows: dict[str, dict[str, Any]], actors: int) -> dict[str, Any]:
    one = rows.get("1", {})
    per_actor, updates = one.get("actor_env_steps_per_s"), one.get("updates_per_s")
    if not per_actor or not updates:
        keys = ("per_actor_env_steps_per_s", "actors_env_steps_per_s", "cpu_learner_updates_per_s")
        return {"text": "projection: unknown (no one-actor row with learner updates)", "actors": actors,
                **dict.fromkeys(keys), "gpu_learner_updates_per_s": None}  # fmt: skip
    actors_total = actors * per_actor
    text = (
        f"projection for {actors} actors (a core each) and one learner: the actors could give {actors_total:,.0f} env "
        f"steps/s ({per_actor:.0f} each, measured alone); a learner at this CPU's {updates:.0f} updates/s holds the "
        f"update-to-data ratio at {updates:.0f} env steps/s, so it bounds the fleet "
        f"({min(actors_total, updates) / actors_total:.1%} of the actors' rate). A GPU learner's updates/s: unknown "
        "(no GPU measured here); the fleet needs "
        f"{actors_total:,.0f} updates/s for the actors to be the bound."
    )
    return {
        "text": text,
        "actors": actors,
        "per_actor_env_steps_per_s": per_actor,
        "actors_env_steps_per_s": actors_total,
        "cpu_learner_updates_per_s": updates,
        "fleet_env_steps_per_s_with_this_cpu_learner": min(actors_total, updates),
        "gpu_learner_updates_per_s": None,
    }


def _learning(out: Path, s: dict[str, Any]) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for n in (1, int(s["learning_actors"])):
        run_dir = out / f"learning_{n}"
        print(f"fleet bench: learning with {n} actor(s), {s['learning_steps']} env steps ...", flush=True)
        t0 = time.perf_counter()
        code = _train(run_dir, s["task"], n, s["learning_steps"], s, s["eval_every"], s["eval_episodes"])
        wall = time.perf_counter() - t0
        lines = (run_dir / "eval.jsonl").read_text().splitlines() if (run_dir / "eval.jsonl").exists() else []
        history = [json.loads(x) for x in lines if x.strip()]
        hit = _steps_to(history)
        seconds_to = None
        if hit is not None:  # wall clock to that evaluation: the share of the run's steps, a fair linear estimate
            seconds_to = wall * hit / max(int(history[-1]["step"]), 1)
        res[str(n)] = {
            "exit": code,
            "steps_to_90": hit,
            "seconds_to_90_est": seconds_to,
            "final_success": history[-1]["success_rate"] if history else None,
            "curve": [[int(h["step"]), float(h["success_rate"])] for h in history],
            "wall_seconds": wall,
        }
    one, many = res["1"], res[str(s["learning_actors"])]
    ratio = (
        one["seconds_to_90_est"] / many["seconds_to_90_est"]
        if one["seconds_to_90_est"] and many["seconds_to_90_est"]
        else None
    )
    res["wall_clock_speedup_to_90"] = ratio
    print_table(
        ["actors", "steps to 90%", "final success", "wall s"],
        [
            [k, r["steps_to_90"] or "not reached", _f(r["final_success"], ".0%"), _f(r["wall_seconds"], ".0f")]
            for k, r in res.items()
            if isinstance(r, dict)
        ],  # fmt: skip
    )
    print(
        f"wall-clock speed-up to 90%, {s['learning_actors']} actors vs 1: "
        + ("unknown" if ratio is None else f"{ratio:.2f}x")
    )
    return res


def _f(x: Any, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)
