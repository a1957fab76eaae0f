"""Learned success classifier against the simulator's ground truth, on held-out episodes.

``robot-rl bench reward [--quick] [--json PATH] [key=value ...]`` (the CLI's ``bench`` dispatch; the module's
:func:`run` follows the conventions of :mod:`robot_rl.bench.data`). Per task (``tasks``, default ``pick_cube`` and
``peg_insert``), with pixel observations:

1. Record a training store and a held-out store (disjoint reset seeds): ``success_episodes`` scripted-expert
   episodes and ``failure_episodes`` episodes of the expert with Gaussian action noise (``noise``); a noisy episode
   counts as successful when it *ends* in the success state. The task's ``terminate_on_success`` is off so that a
   successful episode holds the success state until the time limit, as an operator holds a success pose for the
   positives (HIL-SERL); each step's ground truth ``info["success"]`` goes into the store as the per-step label set
   ``gt_success`` (labels API), never into training.
2. Train the classifier (:mod:`robot_rl.rewards.classifier`) on the training store, the threshold chosen for
   ``target_fpr`` on its episode-level validation split, once per label source in ``labels`` (default both, reported
   side by side; the first is the task's row and the RL rows' classifier): ``operator`` marks every
   frame in which the success state is held as positive, as an operator holding a success key while holding the
   success pose would (HIL-SERL collects its positives that way); in sim the training store's ``gt_success`` stands
   in for the key (the held-out store's never reaches training). ``last_k`` uses the store-only rule (the last
   ``positive_last_k`` frames of successful episodes positive, ``margin`` left out, all else negative): with
   episodes that hold success for many frames it calls the earlier success frames negatives, and its recall against
   the ground truth suffers accordingly (AUC stays high; the threshold lands too high).
3. Score every frame of the held-out store and compare with the ground truth: frame accuracy, precision, recall,
   false-positive rate at the chosen threshold, ROC AUC; and per episode, whether any frame was called a success
   (what a binary reward with ``consecutive=1`` would pay) against whether the episode ever succeeded. The aim is
   frame FPR <= 1% at recall >= 90% (``meets_aim``).

Opt-in RL rows (``rl=true``, :func:`rl_rows`): ``robot-rl train obs=pixels`` on each task with each reward of
``rl_rows`` (:data:`RL_ROWS`: the ground truth; the classifier alone; the classifier with the simulator as judge,
``reward.refine``; that plus potential-based shaping by a progress model trained on the same store; raw progress as
the reward, the trap), ``rl_seeds`` seeds, ``rl_steps`` env steps, evaluation on the simulator's success every
``rl_eval_every`` steps. Per row: env steps to 90% true success, the final success, and the share of training
episodes after ``rl_warmup`` steps in which the model called a frame success that the simulator did not ("hacked").
Aims (the issue's): the classifier within 1.5x of the ground truth's env steps with under 1% hacked episodes after
warm-up; shaping ahead of the sparse classifier.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.bench.common import Bench, parse_overrides, print_table
from robot_rl.data.episode import EpisodeBuilder
from robot_rl.data.store import EpisodeStore, StoreSchema
from robot_rl.envs.contract import ACTION_SEMANTICS
from robot_rl.rewards.base import jsonable
from robot_rl.rewards.classifier import ClassifierConfig, train_classifier
from robot_rl.rewards.frames import load_frames
from robot_rl.rewards.metrics import binary_metrics, roc_auc

DEFAULTS: dict[str, Any] = {
    "threads": os.cpu_count() or 1,  # torch threads
    "tasks": "pick_cube,peg_insert",  # comma-separated configs/task names with a scripted expert
    "image_size": 0,  # px; 0: 64 quick, 128 full
    "success_episodes": 0,  # expert episodes per store (train); 0: 8 quick, 30 full
    "failure_episodes": 0,  # noisy episodes ending in failure per store (train); 0: 8 quick, 30 full
    "heldout_episodes": 0,  # of each kind in the held-out store; 0: 6 quick, 20 full
    "noise": 1.0,  # std of the expert's action noise for the failure episodes (action units)
    "labels": "operator,last_k",  # each trains its own classifier, reported side by side: operator (success frames
    # marked while held; sim: the per-frame gt_success stands in) | last_k (episode-level success marks: the rule)
    "positive_last_k": 3,  # labelling rule (see robot_rl/rewards/frames.py)
    "margin": 2,
    "target_fpr": 0.01,
    "min_examples": 10,  # minimum positive and negative training frames (the classifier's check)
    "steps": 0,  # classifier gradient steps; 0: 400 quick, 1500 full
    "image_copies": 1,
    "pretrained": True,
    "seed": 0,
    "rl": False,  # opt-in: the RL rows (robot-rl train with each reward; see RL_ROWS)
    "rl_rows": "ground_truth,classifier,classifier+judge,classifier+judge+shaping,progress_raw",
    "rl_seeds": 1,
    "rl_steps": 3000,  # env steps per RL run
    "rl_eval_every": 500,
    "rl_eval_episodes": 10,
    "rl_warmup": 1000,  # env steps before hacked episodes count against the aim
    "rl_threads": 0,  # torch threads per RL run (0: threads)
    "dir": "",  # parent of the temporary stores (default: the system temp dir)
    "keep": "",  # directory to keep the stores and the trained classifiers in (default: deleted)
}
AUTO = {
    "image_size": (64, 128),
    "success_episodes": (8, 30),
    "failure_episodes": (8, 30),
    "heldout_episodes": (6, 20),
    "steps": (400, 1500),
}  # (quick, full) values of the settings left unset
AIM_FPR, AIM_RECALL = 0.01, 0.90


def record_store(
    path: Path,
    task: Mapping[str, Any],
    image_size: int,
    successes: int,
    failures: int,
    noise: float,
    seed: int,
    max_attempts: int | None = None,
    obs_mode: str = "pixels",
    terminate_on_success: bool = False,
    expert_noise: float = 0.0,
) -> dict[str, Any]:
    """Record ``successes`` expert episodes and ``failures`` noisy episodes that end in failure (noisy ones that end
    in success are kept as successes too) into a new store at ``path``; the per-step ground truth goes into the
    label set ``gt_success``. ``expert_noise``: the expert's own episodes are noisy too (only its successes are
    kept), demonstrations a cloned policy learns imperfectly from. Returns counts and seconds."""
    from robot_rl.envs.make import control_dt, make_env

    env = make_env(task, obs_mode=obs_mode, image_size=image_size, terminate_on_success=terminate_on_success)
    t0 = time.perf_counter()
    try:
        schema = StoreSchema.from_spaces(
            env.observation_space, env.action_space, 1.0 / control_dt(env), ACTION_SEMANTICS
        )
        store = EpisodeStore.create(path, schema)
        gt: list[np.ndarray] = []
        n_succ = n_fail = attempts = noisy_succ = 0
        max_attempts = max_attempts or 4 * (successes + failures) + 10
        while (n_succ < successes or n_fail < failures) and attempts < max_attempts:
            expert = n_succ < successes and (n_fail >= failures or attempts % 2 == 0)
            obs, info = env.reset(seed=seed + attempts)
            attempts += 1
            ep, marks = EpisodeBuilder(), []
            while True:
                base = env.unwrapped
                action = base.expert_action(noise=expert_noise) if expert else base.expert_action(noise=noise)
                nxt, r, term, trunc, info = env.step(action)
                ep.add(obs, action, r, term, trunc, nxt, timestamp=0.1 * len(ep))
                marks.append(bool(info.get("success", False)))
                obs = nxt
                if term or trunc:
                    break
            ok = marks[-1]
            if ok and n_succ >= successes or not ok and n_fail >= failures:
                continue  # quota of this kind already met
            noisy_succ += int(ok and not expert)
            n_succ, n_fail = n_succ + ok, n_fail + (not ok)
            store.append_episode(
                **ep.build(),
                success=ok,
                source="scripted",
                task=str(task.get("name", "")),
                notes=json.dumps({"seed": seed + attempts - 1, "noise": expert_noise if expert else noise}),
            )
            gt.append(np.asarray(marks, dtype=bool))
        store.append_labels(
            "gt_success",
            {"success": np.concatenate(gt)},
            per_step=True,
            meta={"source": "sim info['success'] after each step"},
        )
        store.close()
    finally:
        env.close()
    if n_succ < successes or n_fail < failures:
        raise RuntimeError(
            f"{path}: only {n_succ} successful and {n_fail} failed episodes in {attempts} attempts "
            f"(wanted {successes} and {failures}); change noise="
        )
    return {
        "episodes": n_succ + n_fail,
        "successes": n_succ,
        "failures": n_fail,
        "noisy_successes": noisy_succ,
        "attempts": attempts,
        "seconds": time.perf_counter() - t0,
    }


def heldout_truth(store: EpisodeStore) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Every frame of ``store`` ({camera: (F, H, W, 3)}), its ground truth (F,) bool (frame 0 of an episode: not a
    success) and each frame's episode index (F,)."""
    frames = load_frames(store)
    marks = store.read_labels("gt_success")["success"].astype(bool)
    truth = np.zeros(len(frames), dtype=bool)
    later = frames.t >= 1
    truth[later] = marks  # frames 1..T of each episode are the steps' next observations, in step order
    return frames.images, truth, frames.episode


def evaluate_heldout(model: Any, store: EpisodeStore) -> dict[str, Any]:
    """Frame- and episode-level agreement of ``model`` (at its threshold) with the ground truth of ``store``."""
    images, truth, episode = heldout_truth(store)
    t0 = time.perf_counter()
    p = model.score({c: images[c] for c in model.cameras})
    score_s = time.perf_counter() - t0
    frame = binary_metrics(truth, p, model.threshold)
    pred = p >= model.threshold
    eps = np.unique(episode)
    ep_truth = np.array([truth[episode == e].any() for e in eps])
    ep_pred = np.array([pred[episode == e].any() for e in eps])
    ep = binary_metrics(ep_truth, ep_pred.astype(float), 0.5)
    return {
        "frame": frame,
        "roc_auc": roc_auc(truth, p),
        "episode": ep,
        "frames": int(len(p)),
        "positive_frames": int(truth.sum()),
        "score_ms_per_frame": 1000 * score_s / max(1, len(p)),
        "meets_aim": bool(frame["fpr"] <= AIM_FPR and frame["recall"] >= AIM_RECALL),
    }


RL_ROWS: dict[str, list[str]] = {  # "{clf}" / "{prog}": the classifier and progress model trained here
    "ground_truth": ["reward=ground_truth"],
    "classifier": ["reward=classifier", "reward.path={clf}", "reward.refine.judge=none"],
    "classifier+judge": ["reward=classifier", "reward.path={clf}", "reward.refine.judge=ground_truth"],
    "classifier+judge+shaping": [
        "reward=classifier",
        "reward.path={clf}",
        "reward.refine.judge=ground_truth",
        "reward.shaping.path={prog}",
    ],
    "progress_raw": ["reward=progress", "reward.path={prog}"],
}
AIM_RL_RATIO, AIM_HACKED = 1.5, 0.01


def summarize_rl_run(history: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    """One run's ``eval.jsonl`` records -> steps to 90% (None: not reached), final success, and the share of
    training episodes after ``warmup`` env steps that the reward model called a success falsely."""
    reached = next((h["step"] for h in history if h["success_rate"] >= 0.9), None)
    last = history[-1] if history else {}
    before = [h for h in history if h["step"] <= warmup]
    w = before[-1] if before else {"episode": 0, "reward_hacked_episodes": 0}
    episodes = last.get("episode", 0) - w.get("episode", 0)
    hacked = last.get("reward_hacked_episodes", 0) - w.get("reward_hacked_episodes", 0)
    judged = "reward_hacked_episodes" in last  # a reward model was there to be hacked
    return {
        "steps_to_90": reached,
        "final_success": last.get("success_rate"),
        "episodes_after_warmup": int(episodes),
        "hacked_after_warmup": int(hacked) if judged else None,
        "hacked_share_after_warmup": hacked / episodes if episodes > 0 and judged else None,
        "vetoed_steps": last.get("reward_vetoed_steps", 0),
        "curve": [[h["step"], h["success_rate"]] for h in history],
    }


def rl_rows(task: str, clf: Path, prog: Path, s: Mapping[str, Any], tmp: Path) -> dict[str, Any]:
    """The RL rows on ``task`` (see the module docstring): each a ``robot-rl train`` subprocess (its log next to
    its run directory), one at a time. Returns {row: {"per_seed": [...], "mean_steps_to_90", ...}}."""
    import subprocess
    import sys

    names = [r.strip() for r in str(s["rl_rows"]).split(",") if r.strip()]
    if unknown := [r for r in names if r not in RL_ROWS]:
        raise ValueError(f"unknown bench reward rl_rows {unknown}; valid: {', '.join(RL_ROWS)}")
    threads = s["rl_threads"] or s["threads"]
    out: dict[str, Any] = {}
    for name in names:
        per_seed = []
        for seed in range(int(s["rl_seeds"])):
            run_dir = tmp / f"rl_{task}_{name}_s{seed}"
            ovs = [o.format(clf=clf, prog=prog) for o in RL_ROWS[name]]
            cmd = [
                sys.executable,
                "-m",
                "robot_rl.cli",
                "train",
                f"task={task}",
                "obs=pixels",
                f"seed={seed}",
                f"task.env_kwargs.image_size={s['image_size']}",
                f"total_steps={s['rl_steps']}",
                f"eval.every={s['rl_eval_every']}",
                f"eval.episodes={s['rl_eval_episodes']}",
                f"threads={threads}",
                f"run_dir={run_dir}",
                *ovs,
            ]
            print(f"  RL {task} {name} seed {seed}: {s['rl_steps']} env steps ...", flush=True)
            t0 = time.perf_counter()
            with open(tmp / f"rl_{task}_{name}_s{seed}.log", "w") as log:
                code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
            lines = (run_dir / "eval.jsonl").read_text().splitlines() if (run_dir / "eval.jsonl").exists() else []
            summary = summarize_rl_run([json.loads(x) for x in lines], int(s["rl_warmup"]))
            per_seed.append({**summary, "seed": seed, "exit_code": code, "seconds": time.perf_counter() - t0})
        steps = [x["steps_to_90"] if x["steps_to_90"] is not None else None for x in per_seed]
        out[name] = {
            "overrides": RL_ROWS[name],
            "per_seed": per_seed,
            "mean_steps_to_90": (float(np.mean(steps)) if all(x is not None for x in steps) else None),
            "hacked_share_after_warmup": _mean([x["hacked_share_after_warmup"] for x in per_seed]),
            "final_success_mean": _mean([x["final_success"] for x in per_seed]),
        }
    gt = (out.get("ground_truth") or {}).get("mean_steps_to_90")
    for name, row in out.items():
        if name != "ground_truth":
            m = row["mean_steps_to_90"]
            row["steps_vs_ground_truth"] = (m / gt) if (m is not None and gt) else None  # None: unknown
    return out


def _mean(xs: list[Any]) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def _print_rl(task: str, rows: Mapping[str, Any], s: Mapping[str, Any]) -> None:
    table = []
    for name, r in rows.items():
        per = " ".join(
            str(x["steps_to_90"]) if x["steps_to_90"] is not None else f">{s['rl_steps']}" for x in r["per_seed"]
        )
        ratio = r.get("steps_vs_ground_truth")
        hacked = r["hacked_share_after_warmup"]
        table.append(
            [
                name,
                per,
                f"{r['final_success_mean']:.0%}" if r["final_success_mean"] is not None else "-",
                "-" if name == "ground_truth" else ("unknown" if ratio is None else f"{ratio:.2f}x"),
                "-" if hacked is None else f"{hacked:.1%}",
            ]
        )
    print(
        f"\nRL on {task} (true success; ratio: the row's env steps to 90% over the ground truth's, aim <= "
        f"{AIM_RL_RATIO:g}x; hacked: training episodes after {s['rl_warmup']} steps the model called a success "
        f"falsely, aim < {AIM_HACKED:.0%})"
    )
    print_table(["reward", "steps to 90% per seed", "final", "ratio", "hacked"], table)


def run(quick: bool, overrides: list[str]) -> dict[str, Any]:
    """Run the benchmark (see the module docstring), print a table, and return every figure as a JSON-serialisable
    dict: ``settings``, ``machine``, ``rows`` (per task: recording counts, validation on the training store's
    split, held-out frame and episode metrics, timings), ``rl``, ``notes``."""
    s = parse_overrides(overrides, DEFAULTS, quick, AUTO)
    bench = Bench("reward", quick, s, "timings are depressed")
    if s["keep"]:
        Path(s["keep"]).mkdir(parents=True, exist_ok=True)
        return bench.run(_run, Path(s["keep"]))
    with tempfile.TemporaryDirectory(prefix="robot_rl_bench_reward_", dir=s["dir"] or None) as tmp:
        return bench.run(_run, Path(tmp))


LABEL_MODES = {
    "operator": "per-frame sim success (an operator's held key)",
    "last_k": "episode-level success marks",
}


def _label_modes(s: Mapping[str, Any]) -> list[str]:
    modes = [m.strip() for m in str(s["labels"]).split(",") if m.strip()]
    bad = [m for m in modes if m not in LABEL_MODES]
    if bad or not modes:
        raise ValueError(f"labels={s['labels']!r}: each of {', '.join(LABEL_MODES)}, comma-separated")
    return modes


def _train_and_score(tmp: Path, task_name: str, mode: str, s: Mapping[str, Any], out: Path) -> dict[str, Any]:
    """Train the classifier on the task's training store with ``mode``'s labels; score the held-out store."""
    cfg = ClassifierConfig.from_dict(
        {
            "positive_last_k": s["positive_last_k"],
            "margin": s["margin"],
            "marks": "gt_success" if mode == "operator" else None,
            "target_fpr": s["target_fpr"],
            "steps": s["steps"],
            "image_copies": s["image_copies"],
            "pretrained": s["pretrained"],
            "relabel": False,
            "min_positives": s["min_examples"],
            "min_negatives": s["min_examples"],
        }
    )
    model, rep = train_classifier(
        EpisodeStore.open(tmp / f"{task_name}_train.zarr"), cfg, seed=s["seed"], device="auto", out=out
    )
    return {
        "validation": rep["validation"],
        "train_counts": rep["train"],
        "val_counts": rep["val"],
        "heldout": evaluate_heldout(model, EpisodeStore.open(tmp / f"{task_name}_heldout.zarr")),
        "threshold": model.threshold,
        "seconds": {"features": rep["seconds"]["features"], "train_total": rep["seconds"]["total"]},
    }


def _run(bench: Bench, tmp: Path) -> dict[str, Any]:
    from robot_rl.bench.data import _task_config

    s = bench.settings
    rows: dict[str, Any] = {}
    for task_name in [t.strip() for t in str(s["tasks"]).split(",") if t.strip()]:
        task = _task_config(task_name)
        print(f"reward benchmark: {task_name}, {s['image_size']} px, recording ...", flush=True)
        rec_train = record_store(
            tmp / f"{task_name}_train.zarr",
            task,
            s["image_size"],
            s["success_episodes"],
            s["failure_episodes"],
            s["noise"],
            seed=s["seed"] * 100_000,
        )
        n_held = s["heldout_episodes"]
        rec_held = record_store(
            tmp / f"{task_name}_heldout.zarr",
            task,
            s["image_size"],
            n_held,
            n_held,
            s["noise"],
            seed=s["seed"] * 100_000 + 50_000,
        )
        rows[task_name] = {"recorded_train": rec_train, "recorded_heldout": rec_held, "by_labels": {}}
        for i, mode in enumerate(_label_modes(s)):  # the first is the task's row (and the RL rows' classifier)
            out = tmp / (f"{task_name}_classifier" if i == 0 else f"{task_name}_classifier_{mode}")
            got = _train_and_score(tmp, task_name, mode, s, out)
            got["seconds"]["record"] = rec_train["seconds"] + rec_held["seconds"]
            rows[task_name]["by_labels"][mode] = got
            if i == 0:
                rows[task_name].update(got, labels=mode)
            f, e, held = got["heldout"]["frame"], got["heldout"]["episode"], got["heldout"]
            print(
                f"  {task_name} [{LABEL_MODES[mode]}]: held-out frames FPR {f['fpr']:.4f} recall {f['recall']:.3f} "
                f"accuracy {f['accuracy']:.3f} AUC {held['roc_auc']:.4f}; episodes FPR {e['fpr']:.3f} recall "
                f"{e['recall']:.3f}",
                flush=True,
            )
    rl: dict[str, Any] = {"status": "not requested (rl=true to run it)"}
    if s["rl"]:
        from robot_rl.rewards.progress import ProgressConfig, train_progress

        rl = {}
        for task_name in rows:
            train_store = EpisodeStore.open(tmp / f"{task_name}_train.zarr")
            _, prep = train_progress(
                train_store,
                ProgressConfig(marks="gt_success", steps=s["steps"]),
                seed=s["seed"],
                out=tmp / f"{task_name}_progress",
            )
            print(
                f"  {task_name}: progress model, held-out rank correlation "
                f"{prep['validation']['rank_correlation']:.3f}",
                flush=True,
            )
            rl[task_name] = {
                "progress_validation": prep["validation"],
                "rows": rl_rows(task_name, tmp / f"{task_name}_classifier", tmp / f"{task_name}_progress", s, tmp),
            }
            _print_rl(task_name, rl[task_name]["rows"], s)
    table = []
    for name, mode, r in ((n, m, x) for n, row in rows.items() for m, x in row["by_labels"].items()):
        f, e, v = r["heldout"]["frame"], r["heldout"]["episode"], r["validation"]["at_threshold"]
        table.append(
            [
                name,
                LABEL_MODES[mode],
                f"{v['fpr']:.4f}",
                f"{v['recall']:.3f}",
                f"{f['fpr']:.4f}",
                f"{f['recall']:.3f}",
                f"{f['accuracy']:.3f}",
                f"{r['heldout']['roc_auc']:.4f}",
                f"{e['fpr']:.3f}",
                f"{e['recall']:.3f}",
                "yes" if r["heldout"]["meets_aim"] else "no",
            ]
        )
    print()
    print_table(
        [
            "task",
            "trained on",
            "val FPR",
            "val recall",
            "held-out FPR",
            "recall",
            "accuracy",
            "AUC",
            "episode FPR",
            "episode recall",
            f"FPR<={AIM_FPR:g} & recall>={AIM_RECALL:g}",
        ],
        table,
    )
    bench.print_notes()
    return jsonable(bench.result(rows, rl=rl, aim={"fpr": AIM_FPR, "recall": AIM_RECALL}))
