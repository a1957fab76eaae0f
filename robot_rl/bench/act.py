"""Actor latency: ``agent.act(obs)`` against the control period, with the rest of a control step beside it.

``robot-rl bench act [--quick] [--json PATH] [key=value ...]``. The default RLPD agent (``configs/agent/rlpd.yaml``,
untrained: latency does not depend on the weights' values) acts on real observations of the task's MuJoCo env,
driven by its own actions, on the agent's device (``device=auto``: CUDA when present, with
``torch.cuda.synchronize()`` around every timed call). Three control loops run round-robin in blocks, so drift in
background load hits every row alike; each loop times its parts per step after ``warmup`` untimed steps:

* state loop (state observations, no rendering): ``act_state`` (``agent.act``), ``env_step_state``, and
  ``step_state`` = both, the whole control step of a state-based actor;
* pixel actor loop (``obs_mode=pixels``: "front" and "wrist" uint8 ``image_size`` x ``image_size`` images + state):
  ``act_pixels`` (raw uint8 images -> frozen trunk + heads + actor: what a deployed actor does), ``env_step_pixels``
  (physics + rendering both cameras), and ``step_pixels_actor`` = both;
* pixel trainer loop, as :class:`robot_rl.trainer.Trainer` steps: ``act_pixels_maps`` (``act`` on the cached
  float16 trunk maps: heads + actor only), the env step, and ``featurize_pixels`` (the frozen trunk on the new frame
  pair, once per env step, for the buffer); ``step_pixels_trainer`` = all three (the learner's update is not in it:
  see ``robot-rl bench learner`` / ``bench encoder``);
* residual loop (state observations): a cloned base policy (``robot-rl train-bc``'s flow-matching head, ``chunk``
  actions predicted every ``chunk // 2`` steps, untrained) and the residual agent on top (``agent=residual``):
  ``act_base`` (the base's act: a chunk prediction on some steps, the next stored action on others),
  ``act_residual`` (base + residual: what a residual actor computes per step) and ``step_residual`` (with the env
  step).

Every row reports p50 / p99 / mean / max in ms over ``calls`` steps and its margin against the control period
(``budget_ms``, 100 ms at the tasks' 10 Hz): ``budget / p99`` (x, > 1 fits) and ``budget - p99`` (ms of headroom).
Episode resets are not timed. ``threads`` defaults to 1, an actor's share of a small machine
(``runtime.actor_threads``: the actor's and the learner's threads together should not exceed the cores).
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch

from robot_rl.agents.residual import BASE_KEY
from robot_rl.bench.common import NOISY_LATENCIES, Bench, device_sync, latency_stats, parse_overrides, print_table

DEFAULTS: dict[str, Any] = {
    "threads": 1,  # torch threads of this (actor) process
    "task": "pick_cube",  # configs/task/<task>.yaml; pixels mode must be supported
    "image_size": 128,  # camera side (px) in pixels mode
    "calls": 0,  # timed steps per loop; 0: 100 quick, 1000 full
    "warmup": -1,  # untimed steps per loop first; -1: 10 quick, 50 full
    "block": 50,  # steps per loop before moving to the next one (round-robin)
    "deterministic": False,  # act(deterministic=...); False is the exploring actor of training
    "device": "auto",  # the agent's device
    "budget_ms": 0.0,  # control period to meet; 0: the task's control_dt (100 ms at 10 Hz)
    "seed": 0,
}

AUTO = {"calls": (100, 1000), "warmup": (10, 50)}  # (quick, full) values of the settings left unset

ROW_LABELS: dict[str, str] = {
    "act_state": "act(), state obs",
    "env_step_state": "env step, state (no rendering)",
    "step_state": "control step, state: act + env step",
    "act_pixels": "act(), 2 raw uint8 cameras (trunk + heads + actor)",
    "env_step_pixels": "env step, pixels (physics + render 2 cameras)",
    "step_pixels_actor": "control step, pixel actor: act + env step",
    "act_pixels_maps": "act(), cached trunk maps (heads + actor)",
    "featurize_pixels": "featurize(), one frame pair (frozen trunk)",
    "step_pixels_trainer": "trainer step: act(maps) + env step + featurize",
    "act_base": "act(), cloned base (flow head, chunked), state obs",
    "act_residual": "act(), base + residual, state obs",
    "step_residual": "control step, residual: base + residual + env step",
}

# row -> loop that measures it
LOOP_OF: dict[str, str] = {
    "act_state": "state",
    "env_step_state": "state",
    "step_state": "state",
    "act_pixels": "pixel_actor",
    "env_step_pixels": "pixel_actor",
    "step_pixels_actor": "pixel_actor",
    "act_pixels_maps": "pixel_trainer",
    "featurize_pixels": "pixel_trainer",
    "step_pixels_trainer": "pixel_trainer",
    "act_base": "residual",
    "act_residual": "residual",
    "step_residual": "residual",
}


class _Loop:
    """One control loop: ``step()`` runs one env step with its agent calls and returns ``{part: ms}``."""

    def __init__(self, env: Any, agent: Any, kind: str, deterministic: bool, seed: int, base: Any = None):
        self.env, self.agent, self.kind, self.deterministic, self.base = env, agent, kind, deterministic, base
        self.sync = device_sync(agent.device)
        self.obs, _ = env.reset(seed=seed)
        if base is not None:
            base.reset()
        self.fobs = agent.featurize(self.obs) if kind == "pixel_trainer" else None
        self.episodes = 1

    def step(self) -> dict[str, float]:
        clock, sync, agent = time.perf_counter, self.sync, self.agent
        out: dict[str, float] = {}
        sync()
        t0 = clock()
        if self.kind == "residual":  # the base's proposal, then the residual agent on top of it
            proposal = self.base.act(self.obs, deterministic=True)
            sync()
            tb = clock()
            action = agent.act({**self.obs, BASE_KEY: proposal}, deterministic=self.deterministic)
        else:
            obs_in = self.fobs if self.kind == "pixel_trainer" else self.obs
            action = agent.act(obs_in, deterministic=self.deterministic)
        sync()
        t1 = clock()
        obs, _, terminated, truncated, _ = self.env.step(action)
        t2 = clock()
        if self.kind == "residual":
            out.update(act_base=(tb - t0) * 1e3, act_residual=(t1 - t0) * 1e3, step_residual=(t2 - t0) * 1e3)
        elif self.kind == "pixel_trainer":
            self.fobs = agent.featurize(obs)
            sync()
            t3 = clock()
            out.update(
                act_pixels_maps=(t1 - t0) * 1e3, featurize_pixels=(t3 - t2) * 1e3, step_pixels_trainer=(t3 - t0) * 1e3
            )
        elif self.kind == "pixel_actor":
            out.update(act_pixels=(t1 - t0) * 1e3, env_step_pixels=(t2 - t1) * 1e3, step_pixels_actor=(t2 - t0) * 1e3)
        else:
            out.update(act_state=(t1 - t0) * 1e3, env_step_state=(t2 - t1) * 1e3, step_state=(t2 - t0) * 1e3)
        self.obs = obs
        if terminated or truncated:  # resets are not part of a control step: untimed
            self.obs, _ = self.env.reset()
            if self.kind == "pixel_trainer":
                self.fobs = agent.featurize(self.obs)
            if self.base is not None:
                self.base.reset()
            self.episodes += 1
        return out


def _agent_config(overrides: list[str]) -> tuple[Any, dict[str, Any]]:
    from omegaconf import OmegaConf

    from robot_rl.cli import compose

    cfg = compose("train", overrides)
    return cfg, OmegaConf.to_container(cfg.agent, resolve=True)  # type: ignore[return-value]


def run(quick: bool, overrides: list[str]) -> dict[str, Any]:
    """Measure every row (see the module docstring), print the table, return every figure.

    Returns a JSON-serialisable dict: ``settings``, ``machine``, ``task``, ``budget_ms``, ``rows`` (per row its
    latency figures in ms, margins and ``label``), ``ratio`` (``budget / p99`` of ``act_pixels``), ``ratios``
    (``budget / p99`` of every row), ``notes``.
    """
    s = parse_overrides(overrides, DEFAULTS, quick, AUTO)
    if s["calls"] < 1 or s["block"] < 1:
        raise ValueError("calls and block must be >= 1")
    return Bench("act", quick, s, NOISY_LATENCIES).run(_run)


def _run(bench: Bench) -> dict[str, Any]:
    import numpy as np

    from robot_rl.agents.bc import BCAgent, BCConfig
    from robot_rl.agents.residual import BaseActionWrapper
    from robot_rl.agents.sac import SAC, SACConfig
    from robot_rl.envs.make import control_dt, make_env

    s, threads, notes = bench.settings, bench.threads, bench.notes
    torch.manual_seed(s["seed"])
    base = [f"task={s['task']}", f"device={s['device']}", f"seed={s['seed']}"]
    state_cfg, state_agent_cfg = _agent_config(base + ["obs=state"])
    pix_cfg, pix_agent_cfg = _agent_config(base + ["obs=pixels", f"task.env_kwargs.image_size={s['image_size']}"])

    t0 = time.perf_counter()
    state_env = make_env(state_cfg.task)
    pix_env = make_env(pix_cfg.task)
    trainer_env = make_env(pix_cfg.task)  # the trainer loop steps its own env, not the actor loop's
    residual_env = make_env(state_cfg.task)
    state_agent = SAC(state_env.observation_space, state_env.action_space, SACConfig.from_dict(state_agent_cfg))
    base_policy = BCAgent(
        residual_env.observation_space, residual_env.action_space, BCConfig(policy="flow", device=s["device"])
    )
    base_policy.fit_normalizer(np.stack([residual_env.observation_space["state"].sample() for _ in range(8)]))
    _, residual_agent_cfg = _agent_config(base + ["obs=state", "agent=residual"])
    with_base = BaseActionWrapper(residual_env, base_policy).observation_space
    residual_agent = SAC(with_base, residual_env.action_space, SACConfig.from_dict(residual_agent_cfg))
    pix_agent = SAC(pix_env.observation_space, pix_env.action_space, SACConfig.from_dict(pix_agent_cfg))
    build_s = time.perf_counter() - t0
    budget = s["budget_ms"] or 1e3 * control_dt(pix_env)
    device = pix_agent.device
    cams = list(pix_agent.encoder.cameras)
    shapes = {k: list(v.shape) for k, v in pix_env.observation_space.spaces.items()}
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"act benchmark: task {state_cfg.task.name}, agent {pix_cfg.agent.name} (untrained, hidden "
        f"{tuple(pix_agent.cfg.hidden_dims)}, {pix_agent.cfg.num_critics} critics), device {device} ({dev_name}), "
        f"torch threads {threads} (cores {os.cpu_count()}); pixel obs {shapes}; frozen trunk maps "
        f"{pix_agent.encoder.feature_shapes if cams else 'n/a'}; {s['calls']} timed steps per loop after "
        f"{s['warmup']} warm-up, blocks of {s['block']}, round-robin; budget {budget:g} ms per control step "
        f"(agents and envs built in {build_s:.1f} s)"
    )
    if cams and not pix_agent.cached_cameras:
        notes.append(
            "the pixel agent does not cache trunk maps: act_pixels_maps and featurize_pixels run the trunk "
            "like act_pixels"
        )

    try:
        loops = {
            "state": _Loop(state_env, state_agent, "state", s["deterministic"], s["seed"]),
            "pixel_actor": _Loop(pix_env, pix_agent, "pixel_actor", s["deterministic"], s["seed"]),
        }
        loops["pixel_trainer"] = _Loop(trainer_env, pix_agent, "pixel_trainer", s["deterministic"], s["seed"] + 1)
        loops["residual"] = _Loop(
            residual_env, residual_agent, "residual", s["deterministic"], s["seed"] + 2, base=base_policy
        )
        for loop in loops.values():
            for _ in range(s["warmup"]):
                loop.step()
        samples: dict[str, list[float]] = {k: [] for k in ROW_LABELS}
        done = dict.fromkeys(loops, 0)
        wall = dict.fromkeys(loops, 0.0)
        while any(n < s["calls"] for n in done.values()):
            for name, loop in loops.items():
                bench.keep_threads(f"before loop {name}")
                n = min(s["block"], s["calls"] - done[name])
                w0 = time.perf_counter()
                for _ in range(n):
                    for part, ms in loop.step().items():
                        samples[part].append(ms)
                wall[name] += time.perf_counter() - w0
                done[name] += n
        episodes = {k: v.episodes for k, v in loops.items()}
    finally:
        for env in (state_env, pix_env, trainer_env, residual_env):
            env.close()

    rows: dict[str, dict[str, Any]] = {}
    for key, xs in samples.items():
        rows[key] = {"label": ROW_LABELS[key], "loop": LOOP_OF[key], **latency_stats(xs, budget)}
    for key, row in rows.items():
        if key.startswith("step_"):
            row["steps_per_s"] = 1e3 / row["mean_ms"]
    ratios = {f"budget/p99 {k}": v["budget_over_p99"] for k, v in rows.items()}
    _print(rows, budget, s["calls"])
    over = [k for k, v in rows.items() if k.startswith("step_") and v["p99_ms"] > budget]
    if over:
        notes.append(f"control steps over the {budget:g} ms budget at p99: {', '.join(over)}")
    bench.print_notes()
    return bench.result(
        rows,
        machine={"device": str(device), "device_name": dev_name},
        task={
            "name": str(state_cfg.task.name),
            "control_hz": 1.0 / control_dt(pix_env),
            "cameras": cams,
            "pixel_obs": shapes,
            "state_obs": list(state_env.observation_space["state"].shape),
            "trunk_maps": {k: list(v) for k, v in pix_agent.encoder.feature_shapes.items()},
        },
        agent={
            "name": str(pix_cfg.agent.name),
            "hidden_dims": list(pix_agent.cfg.hidden_dims),
            "num_critics": pix_agent.cfg.num_critics,
            "cached_cameras": list(pix_agent.cached_cameras),
        },
        budget_ms=budget,
        ratio=rows["act_pixels"]["budget_over_p99"],
        ratios=ratios,
        loop_wall_s=wall,
        episodes=episodes,
        build_s=build_s,
    )


def _print(rows: dict[str, dict[str, Any]], budget: float, calls: int) -> None:
    print(f"\nlatency per call over {calls} steps per loop, ms (budget {budget:g} ms per control step)")
    groups = (
        ("state loop", ("act_state", "env_step_state", "step_state")),
        ("pixel actor loop", ("act_pixels", "env_step_pixels", "step_pixels_actor")),
        ("pixel trainer loop", ("act_pixels_maps", "featurize_pixels", "step_pixels_trainer")),
        ("residual loop", ("act_base", "act_residual", "step_residual")),
    )
    table = []
    for title, keys in groups:
        table.append([f"[{title}]", "", "", "", "", "", ""])
        for k in keys:
            r = rows[k]
            table.append(
                [
                    f"  {r['label']}",
                    f"{r['p50_ms']:.2f}",
                    f"{r['p99_ms']:.2f}",
                    f"{r['mean_ms']:.2f}",
                    f"{r['max_ms']:.2f}",
                    f"{r['budget_over_p99']:.1f}x",
                    f"{r['headroom_ms']:.1f}",
                ]
            )
    print_table(["row", "p50", "p99", "mean", "max", "budget/p99", "budget-p99 ms"], table)
    a, e = rows["act_pixels"], rows["env_step_pixels"]
    print(
        f"\npixel actor: act p99 {a['p99_ms']:.1f} ms = {100 * a['p99_ms'] / budget:.0f}% of the {budget:g} ms "
        f"budget (margin {a['budget_over_p99']:.1f}x); with the rendered env step the control step's p99 is "
        f"{rows['step_pixels_actor']['p99_ms']:.1f} ms (margin {rows['step_pixels_actor']['budget_over_p99']:.1f}x)"
    )
    print(
        f"trainer, per env step before its update: act on cached maps {rows['act_pixels_maps']['p50_ms']:.1f} ms + "
        f"env step {e['p50_ms']:.1f} ms + featurize {rows['featurize_pixels']['p50_ms']:.1f} ms (p50) = "
        f"{rows['step_pixels_trainer']['p50_ms']:.1f} ms; the cached-maps act saves "
        f"{a['p50_ms'] - rows['act_pixels_maps']['p50_ms']:.1f} ms of trunk only because featurize pays it"
    )
    r = rows["act_residual"]
    print(
        f"residual actor: base + residual act p99 {r['p99_ms']:.1f} ms (the base alone {rows['act_base']['p99_ms']:.1f}"
        f" ms) = {100 * r['p99_ms'] / budget:.0f}% of the {budget:g} ms budget (margin {r['budget_over_p99']:.1f}x)"
    )
