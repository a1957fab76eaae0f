"""``robot-rl bench hil``: env steps to 90% eval success with simulated human corrections vs without.

Both rows are RLPD with the same scripted demos, seeds, budget, evaluation schedule and evaluation seeds; the
``+sim_operator`` row trains with ``hil=sim_operator`` (the scripted expert takes over when the policy stalls or
drifts; its steps go to both buffers). Evaluation is always without the operator. Reported per row: steps to 90%
(and to 50%), the final success, and for the operator row the intervention rate over training (it should fall as
the policy improves). ``ratio`` = steps-to-90% without / with interventions (a row that never reached 90% counts
at the budget, and the ratio then says it is a bound). ``obs=pixels`` runs the same comparison from cameras.

Prints a table, writes ``hil.png`` (success and intervention rate against env steps) and ``hil.json`` under ``out``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.bench.sample_efficiency import MILESTONE, TARGET, _settings, _train_ours, steps_to_target

ROWS = {"rlpd+demos": [], "rlpd+demos+sim_operator": ["hil=sim_operator"]}


def intervention_curve(store_path: Path, every: int) -> list[tuple[int, float]]:
    """(env step, share of intervention steps in the preceding ``every`` steps) from a run's ``online.zarr``."""
    from robot_rl.data.store import EpisodeStore

    with EpisodeStore.open(store_path) as store:
        flags = store.read_all()["is_intervention"] if len(store) else np.zeros(0, bool)
    return [(min(i + every, len(flags)), float(flags[i:i + every].mean())) for i in range(0, len(flags), every)]


def run(quick: bool = False, overrides: list[str] | None = None) -> dict[str, Any]:
    s, extra = _settings(quick, [o for o in (overrides or []) if not o.startswith("rows=")])
    s["out"] = s["out"].replace("sample_efficiency", "hil")
    out = Path(s["out"])
    results: dict[str, Any] = {"settings": s, "rows": {}}
    for row, row_extra in ROWS.items():
        for seed in s["seeds"]:
            t0 = time.perf_counter()
            history = _train_ours(row.split("+sim")[0], seed, {**s, "out": str(out / row)}, extra + row_extra, quick)
            run_dir = out / row / f"rlpd+demos_s{seed}"
            curve = intervention_curve(run_dir / "online.zarr", max(1, s["eval_every"] // 2))
            hit, half = steps_to_target(history), steps_to_target(history, MILESTONE)
            results["rows"].setdefault(row, []).append({
                "seed": seed, "steps_to_90": hit, "steps_to_50": half, "reached": hit is not None,
                "final_success": history[-1]["success_rate"] if history else None,
                "curve": [(h["step"], h["success_rate"]) for h in history], "interventions": curve,
                "intervention_rate": float(np.mean([r for _, r in curve])) if curve else 0.0,
                "wall_s": time.perf_counter() - t0})
    base, hil = (results["rows"][r] for r in ROWS)
    budget = s["budget"]
    mean = lambda rows: float(np.mean([r["steps_to_90"] or budget for r in rows]))  # noqa: E731
    results["ratio"] = mean(base) / mean(hil)
    results["ratio_bound"] = ("lower bound" if not all(r["reached"] for r in base) and all(r["reached"] for r in hil)
                              else "upper bound" if all(r["reached"] for r in base) and not all(r["reached"] for r in hil)
                              else "unbounded" if not any(r["reached"] for r in base + hil) else "exact")
    _print(results)
    out.mkdir(parents=True, exist_ok=True)
    results["plot"] = str(_plot(results, out / "hil.png"))
    (out / "hil.json").write_text(json.dumps(results, indent=1))
    return results


def _print(results: dict[str, Any]) -> None:
    s = results["settings"]
    print(f"\nbench hil: {s['task']}, seeds {s['seeds']}, budget {s['budget']} env steps, target {TARGET:.0%}")
    print(f"{'row':28s} {'steps to 90%':>13s} {'steps to 50%':>13s} {'final':>6s} {'interv.':>8s} {'wall':>7s}")
    for row, runs in results["rows"].items():
        for r in runs:
            to90 = r["steps_to_90"] if r["reached"] else f">{s['budget']}"
            print(f"{row + ' s' + str(r['seed']):28s} {to90!s:>13s} {r['steps_to_50']!s:>13s} "
                  f"{r['final_success']:6.0%} {r['intervention_rate']:8.1%} {r['wall_s']:6.0f}s")
    print(f"ratio (steps to 90% without / with interventions): {results['ratio']:.2f} ({results['ratio_bound']})")


def _plot(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for row, runs in results["rows"].items():
        for r in runs:
            steps, succ = zip(*r["curve"]) if r["curve"] else ((), ())
            ax1.plot(steps, [100 * x for x in succ], marker="o", label=f"{row} s{r['seed']}")
            if r["interventions"]:
                st, rate = zip(*r["interventions"])
                ax2.plot(st, [100 * x for x in rate], label=f"{row} s{r['seed']}")
    ax1.axhline(100 * TARGET, color="grey", lw=0.8, ls="--")
    ax1.set(xlabel="env steps", ylabel="eval success (%)", ylim=(-3, 103), title="success (eval, no operator)")
    ax2.set(xlabel="env steps", ylabel="% of steps", ylim=(-3, 103), title="intervention rate during training")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
