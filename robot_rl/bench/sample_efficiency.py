"""``robot-rl bench sample-efficiency``: env steps to 90% eval success on a task, ours vs Stable-Baselines3.

Rows, all on the same task, seeds, step budget, evaluation schedule and evaluation seeds:

* ``rlpd+demos``: our RLPD with scripted demonstrations (``demos`` episodes, default 10);
* ``sac``: our SAC, no demonstrations;
* ``sb3_sac``: Stable-Baselines3 SAC (its defaults), no demonstrations, on the raw state;
* ``sb3_sac_std``: the same on the state standardised as ours is (statistics fitted once, here from SB3's own
  warm-up of uniform random actions, then fixed; clipped at 10 standard deviations): our rows get that for free;
* ``rlpd+demos_pixels`` (opt-in: ``pixels=true``, or name it in ``rows``): ``rlpd+demos`` from the "front" and
  "wrist" camera images plus proprioception (``obs=pixels``: frozen pretrained trunk with cached features, trainable
  heads, DrQ shift), same demos, seeds, budget and evaluation. Pixel training runs ~3-10 env steps/s on a 2-core
  CPU (rendering, the trunk once per frame, heads in every update), so the default budget takes ~0.5-1.5 h per seed.

Every row evaluates alike: ``eval_episodes`` episodes, and a rate that claims a new best or 90% (at
``eval.confirm_from`` or above) confirmed on ``eval.confirm`` x more episodes. "Steps to 90%" (and to 50%) is the
first evaluation whose confirmed figure got there, and a run stops there or at the budget. Prints a
table, writes ``curves.png`` and returns every figure; ``ratio`` is SB3's steps-to-90% over ours (RLPD +
demos), with a row that never reached 90% counted at the budget: the ratio is then a lower or an upper bound, and
says which; when neither row reached 90% it is unknown and no figure is given.
With the pixels row, ``pixels_over_state`` is its steps-to-90% over ``rlpd+demos``'s (what learning from images
costs in env steps) and ``ratio_pixels`` is SB3's (from state) over it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.bench.common import print_table, torch_threads, write_json

TARGET = 0.9
MILESTONE = 0.5  # also reported, so rows that never reach the target still compare
PIXEL_ROW = "rlpd+demos_pixels"


def _settings(quick: bool, overrides: list[str]) -> tuple[dict[str, Any], list[str]]:
    s = {
        "task": "pick_cube",
        "seeds": [0],
        "budget": 15000,
        "eval_every": 1000,
        "eval_episodes": 20,
        "demos": 10,
        "out": "bench_out/sample_efficiency",
        "rows": ["rlpd+demos", "sac", "sb3_sac", "sb3_sac_std"],
        "threads": 0,
        "pixels": False,
    }
    if quick:
        s.update(budget=600, eval_every=300, eval_episodes=5, demos=3)
    rest = []
    for ov in overrides:
        key, _, val = ov.partition("=")
        if key in s and isinstance(s[key], bool):
            if val.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(f"override {ov!r}: expected true or false")
            s[key] = val.lower() in ("1", "true", "yes")
        elif key in s:
            s[key] = (
                type(s[key])(val)
                if not isinstance(s[key], list)
                else [type(s[key][0])(v) for v in val.strip("[]").split(",") if v]
            )
        else:
            rest.append(ov)  # passed through to the training config
    if s["pixels"] and PIXEL_ROW not in s["rows"]:
        s["rows"] = [*s["rows"], PIXEL_ROW]
    return s, rest


def steps_to_target(history: list[dict[str, float]], target: float = TARGET, confirmed: bool = False) -> int | None:
    """First evaluated env step whose success rate reached ``target``; None if never. ``confirmed``: an evaluation's
    ``score`` where it has one (the rate on ``eval.confirm`` x more episodes, the figure a run's stop rule and best
    pick read), so a 20-episode figure that the larger evaluation did not bear out does not count, and one it did
    does."""
    return next(
        (
            int(h["step"])
            for h in history
            if h.get("score" if confirmed else "success_rate", h["success_rate"]) >= target
        ),
        None,
    )


def _train_ours(row: str, seed: int, s: dict[str, Any], extra: list[str], quick: bool) -> list[dict[str, float]]:
    from robot_rl.cli import compose
    from robot_rl.trainer import Trainer

    agent, demos = ("rlpd", s["demos"]) if row in ("rlpd+demos", PIXEL_ROW) else ("sac", 0)
    ov = [
        f"task={s['task']}",
        f"agent={agent}",
        f"seed={seed}",
        f"total_steps={s['budget']}",
        f"eval.every={s['eval_every']}",
        f"eval.episodes={s['eval_episodes']}",
        f"demos.episodes={demos}",
        f"threads={s['threads']}",
        f"eval.stop_at_success={TARGET}",
    ]
    if demos == 0:
        ov.append(f"random_steps={min(1000, s['budget'] // 4)}")
    if quick:
        ov += ["agent.hidden_dims=[64,64]"]
    if row == PIXEL_ROW:
        ov.append("obs=pixels")  # front + wrist images and proprioception; everything else as rlpd+demos
    cfg = compose("train", ov + extra)
    run_dir = Path(s["out"]) / f"{row}_s{seed}"
    trainer = Trainer(cfg, run_dir)
    if demos:
        trainer.collect_demos()
    trainer.train(progress=False)
    return trainer.history


def _standardiser(task: Any, steps: int, seed: int) -> Any:
    """``state -> clip((state - loc) / scale, -10, 10)`` with loc and scale (at least 0.01, as the StateEncoder's)
    from ``steps`` env steps of uniform random actions: what SB3's warm-up sees."""
    from robot_rl.envs.make import make_env

    env = make_env(task)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    states = [obs["state"]]
    for _ in range(steps):
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        states.append(obs["state"])
        if terminated or truncated:
            obs, _ = env.reset()
            states.append(obs["state"])
    env.close()
    x = np.asarray(states, np.float64)
    loc, scale = x.mean(0), np.maximum(x.std(0), 1e-2)
    return lambda state: np.clip((np.asarray(state) - loc) / scale, -10.0, 10.0).astype(np.float32)


def _train_sb3(
    seed: int, s: dict[str, Any], extra: list[str], quick: bool, standardise: bool = False
) -> list[dict[str, float]]:
    import gymnasium as gym
    import torch
    from stable_baselines3 import SAC as SB3SAC
    from stable_baselines3.common.callbacks import BaseCallback

    from robot_rl.cli import compose
    from robot_rl.envs.make import make_env
    from robot_rl.evaluate import EVAL_SEED, evaluate, evaluate_claim
    from robot_rl.trainer import set_threads

    cfg = compose("train", [f"task={s['task']}", f"seed={seed}"] + extra)
    env = gym.wrappers.FilterObservation(make_env(cfg.task), ["state"])
    env = gym.wrappers.FlattenObservation(env)
    warmup = min(1000, s["budget"] // 4)
    prep = _standardiser(cfg.task, warmup, seed) if standardise else (lambda state: state)
    if standardise:
        space = gym.spaces.Box(-10.0, 10.0, env.observation_space.shape, np.float32)
        env = gym.wrappers.TransformObservation(env, prep, space)
    eval_env = make_env(cfg.task)
    set_threads(int(s["threads"]))
    kwargs = {"policy_kwargs": {"net_arch": [64, 64]}} if quick else {}
    model = SB3SAC(
        "MlpPolicy",
        env,
        seed=seed,
        device="cpu",
        batch_size=256,
        learning_starts=warmup,
        verbose=0,
        **kwargs,
    )
    set_threads(int(s["threads"]))  # SB3 may have changed it; both sides get the same threads
    history: list[dict[str, float]] = []
    confirm_episodes = int(cfg.eval.confirm or 0) * int(s["eval_episodes"])

    class EvalCallback(BaseCallback):
        """Evaluates as our trainer does (``Trainer.evaluate_and_checkpoint``): ``eval_episodes`` episodes, and a
        rate that claims a new best or the target (at ``eval.confirm_from`` or above) confirmed on ``eval.confirm``
        x more, the same episodes every time; the confirmed figure is the ``score`` the stop rule reads."""

        def __init__(self):
            super().__init__()
            self.next_eval = s["eval_every"]
            self.best = -1.0  # as the trainer's best_success: no evaluation yet

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.next_eval and bool(self.locals["dones"][0]):
                policy = lambda o: model.predict(prep(o["state"]), deterministic=True)[0]  # noqa: E731
                confirm_from = float(cfg.eval.confirm_from)
                res = evaluate_claim(
                    policy, eval_env, s["eval_episodes"], seed, confirm_episodes, self.best, TARGET, confirm_from
                )
                self.best = max(self.best, res["score"])
                history.append(dict(res, step=self.num_timesteps))
                while self.next_eval <= self.num_timesteps:
                    self.next_eval += s["eval_every"]
                return res["score"] < TARGET  # like our rows, stop once the (confirmed) target is reached
            return True

    torch.manual_seed(seed)
    model.learn(total_timesteps=s["budget"], callback=EvalCallback())
    if not history or (history[-1]["step"] < s["budget"] and history[-1]["score"] < TARGET):
        history.append(
            dict(
                evaluate(
                    lambda o: model.predict(prep(o["state"]), deterministic=True)[0],
                    eval_env,
                    s["eval_episodes"],
                    seed=seed + EVAL_SEED,
                ),
                step=model.num_timesteps,
            )
        )
    return history


def run(quick: bool = False, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train every row for every seed; print the table; return all figures (JSON-able)."""
    s, extra = _settings(quick, list(overrides or []))
    out = Path(s["out"])
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "task": s["task"],
        "budget_env_steps": s["budget"],
        "seeds": s["seeds"],
        "eval_every": s["eval_every"],
        "eval_episodes": s["eval_episodes"],
        "demos": s["demos"],
        "target_success": TARGET,
        "rows": {},
    }
    if PIXEL_ROW in s["rows"]:
        print(
            f"{PIXEL_ROW}: training from camera images, ~3-10 env steps/s on a 2-core CPU: up to "
            f"{s['budget'] / 3 / 60:.0f} min per seed for a budget of {s['budget']} env steps",
            flush=True,
        )
    for row in s["rows"]:
        per_seed = []
        for seed in s["seeds"]:
            t0 = time.perf_counter()
            with torch_threads(None):  # a run sets torch threads from threads=; the caller's count comes back after
                if row.startswith("sb3_sac"):
                    history = _train_sb3(seed, s, extra, quick, standardise=row == "sb3_sac_std")
                else:
                    history = _train_ours(row, seed, s, extra, quick)
            per_seed.append(
                {
                    "seed": seed,
                    "steps_to_90": steps_to_target(history, confirmed=True),
                    "steps_to_50": steps_to_target(history, MILESTONE, confirmed=True),
                    "wall_s": time.perf_counter() - t0,
                    "final_success": history[-1]["success_rate"],
                    "curve": [[h["step"], h["success_rate"]] for h in history],
                    "score_curve": [[h["step"], h.get("score", h["success_rate"])] for h in history],
                }
            )
            print(
                f"  {row} seed {seed}: steps to 90% = {per_seed[-1]['steps_to_90']}, "
                f"final success {per_seed[-1]['final_success']:.0%}, {per_seed[-1]['wall_s']:.0f} s",
                flush=True,
            )
        reached = [p["steps_to_90"] for p in per_seed]
        half = [p["steps_to_50"] for p in per_seed]
        results["rows"][row] = {
            "per_seed": per_seed,
            "median_steps_to_90": float(np.median([r if r is not None else s["budget"] for r in reached])),
            "reached": sum(r is not None for r in reached),
            "median_steps_to_50": float(np.median([r if r is not None else s["budget"] for r in half])),
            "reached_50": sum(r is not None for r in half),
            "final_success_mean": float(np.mean([p["final_success"] for p in per_seed])),
            "wall_s_mean": float(np.mean([p["wall_s"] for p in per_seed])),
        }
    _ratio(results)
    _print_table(results)
    results["plot"] = str(_plot(results, out / "curves.png"))
    write_json(out / "results.json", results)
    return results


def _ratio(results: dict[str, Any]) -> None:
    rows, n = results["rows"], len(results["seeds"])

    def ratio(num: dict[str, Any], den: dict[str, Any], target: int = 90) -> tuple[float | None, str]:
        """Steps to ``target``% of ``num`` over ``den`` (medians over seeds) and what that figure is."""
        key, reached = ("median_steps_to_90", "reached") if target == 90 else ("median_steps_to_50", "reached_50")
        bound = _bound(num[reached] < n, den[reached] < n, target)
        return (None if bound.startswith("unknown") else num[key] / max(den[key], 1.0)), bound

    results["ratio"] = None
    if "rlpd+demos" in rows and "sb3_sac" in rows:
        ours, theirs = rows["rlpd+demos"], rows["sb3_sac"]
        results["ratio"], results["ratio_bound"] = ratio(theirs, ours)
        results["ratio_50"], results["ratio_50_bound"] = ratio(theirs, ours, 50)
        results["ratio_meaning"] = "SB3 SAC env steps to 90% / ours (RLPD + demos); > 1 means we need fewer steps"
    if "rlpd+demos" in rows and "sb3_sac_std" in rows:
        results["ratio_std"], results["ratio_std_bound"] = ratio(rows["sb3_sac_std"], rows["rlpd+demos"])
    if PIXEL_ROW in rows:
        px = rows[PIXEL_ROW]
        if "rlpd+demos" in rows:
            results["pixels_over_state"], results["pixels_over_state_bound"] = ratio(px, rows["rlpd+demos"])
            results["pixels_over_state_meaning"] = (
                f"{PIXEL_ROW} env steps to 90% / rlpd+demos (state); > 1 means images need more steps"
            )
        if "sb3_sac" in rows:
            results["ratio_pixels"], results["ratio_pixels_bound"] = ratio(rows["sb3_sac"], px)
            results["ratio_pixels_meaning"] = f"SB3 SAC (state) env steps to 90% / ours from pixels ({PIXEL_ROW})"


def _bound(numerator_capped: bool, denominator_capped: bool, target: int = 90) -> str:
    """What a steps-to-target ratio is when rows that missed the target count at the budget (below their true
    figure): unknown when neither reached it (no figure then)."""
    if numerator_capped and denominator_capped:
        return f"unknown (neither row reached {target}%)"
    return "lower bound" if numerator_capped else "upper bound" if denominator_capped else "exact"


def _figure(value: float | None, bound: str) -> str:
    return bound if value is None else f"{value:.2f}x" + ("" if bound == "exact" else f" ({bound})")


def _print_table(results: dict[str, Any]) -> None:
    budget = results["budget_env_steps"]
    obs = f"state; {PIXEL_ROW}: front + wrist images" if PIXEL_ROW in results["rows"] else "state"
    print(f"\nsample efficiency on {results['task']} ({obs}), budget {budget} env steps, seeds {results['seeds']}")
    table = []
    for name, r in results["rows"].items():
        shown = f">{budget}" if r["reached"] == 0 else f"{r['median_steps_to_90']:.0f}"
        shown50 = f">{budget}" if r["reached_50"] == 0 else f"{r['median_steps_to_50']:.0f}"
        table.append(
            [
                name,
                shown,
                f"{r['reached']}/{len(results['seeds'])}",
                shown50,
                f"{r['final_success_mean']:.0%}",
                f"{r['wall_s_mean']:.0f}",
            ]
        )
    print_table(["row", "steps to 90% (median)", "reached", "steps to 50%", "final success", "wall s"], table)
    for key, target in (("ratio", 90), ("ratio_50", 50)):
        if f"{key}_bound" in results:
            print(f"ratio SB3 / ours (steps to {target}%): {_figure(results[key], results[f'{key}_bound'])}")
    if "ratio_std_bound" in results:
        figure = _figure(results["ratio_std"], results["ratio_std_bound"])
        print(f"ratio SB3 on the standardised state / ours (steps to 90%): {figure}")
    for key, what in (
        ("pixels_over_state", "pixels / state, ours RLPD + demos"),
        ("ratio_pixels", "ratio SB3 (state) / ours (pixels)"),
    ):
        if key in results:
            print(f"{what} (steps to 90%): {_figure(results[key], results[f'{key}_bound'])}")


def _plot(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, (name, r) in enumerate(results["rows"].items()):
        for j, p in enumerate(r["per_seed"]):
            xs, ys = zip(*p["curve"]) if p["curve"] else ((), ())
            ax.plot(
                xs,
                [100 * y for y in ys],
                color=f"C{i}",
                alpha=0.9 if j == 0 else 0.5,
                label=name if j == 0 else None,
                marker="o",
                ms=3,
            )
    ax.axhline(100 * TARGET, color="grey", ls="--", lw=0.8)
    ax.set(
        xlabel="env steps",
        ylabel="eval success (%)",
        ylim=(-3, 103),
        title=f"{results['task']}: sample efficiency (seeds {results['seeds']})",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(run(quick=True), indent=1, default=str))
