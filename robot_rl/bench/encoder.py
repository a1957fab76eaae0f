"""Pixel learner throughput: the frozen-trunk feature cache against recomputing the trunk at every update.

``robot-rl bench encoder [--quick] [--json PATH] [key=value ...]``. Two copies of the default RLPD pixel agent
(``configs/agent/rlpd.yaml``, frozen ImageNet EfficientNet-Lite0 trunk + spatial-embedding heads, "front" and "wrist"
cameras of the task at ``image_size`` px), the same ``batch_size``, ``utd`` and torch ``threads`` on both sides, each
fed by ``mixed_batches`` (demo fraction 0.5) from a demo and an online :class:`~robot_rl.data.replay.ReplayBuffer`
filled with the same real expert footage (rendered once, tiled in order):

* ``cache``: ``encoder.cache`` on (the default): the buffers hold the float16 trunk maps that
  :meth:`~robot_rl.agents.sac.SAC.featurize` computed once per frame, so an update runs only heads, critics and
  actor;
* ``cache_featurize``: the same plus one :meth:`featurize` of a new real frame pair per ``update()`` call: the
  trainer's per-env-step learner cost (one featurize and one ``update()`` of ``utd`` critic steps per env step);
* ``recompute``: ``encoder: {cache: false}``: the buffers hold the uint8 images and every critic step runs the trunk
  on ``obs`` and ``next_obs`` of every sampled row, and the actor step on ``obs`` again: ``cameras x batch x
  (2 utd + 1)`` trunk frames per ``update()``.

One unit is one ``update()`` call (``utd`` critic steps + one actor/temperature step), sampling included. Repeats go
round-robin over the rows (median reported). The recompute side costs ~15 ms per 128 px frame on a 2-core CPU
(~11 s per update at batch 64), so the default batch is 64 (the config trains at 256) and the cache's advantage,
which grows with the batch (the recompute side is linear in it, the cached side has a fixed part), is understated.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from robot_rl.bench.common import NOISY_RATES, Bench, device_sync, median, parse_overrides, print_table

DEFAULTS: dict[str, Any] = {
    "threads": 1,  # torch threads, the same on both sides (1: a learner's share of a 2-core box)
    "task": "pick_cube",  # configs/task/<task>.yaml; needs a scripted expert and pixels mode
    "image_size": 128,  # camera side, px
    "batch_size": 64,  # both sides; small so the recompute side stays affordable on a CPU (config: 256)
    "utd": 0,  # critic steps per update() on both sides; 0: the agent config's utd_ratio (rlpd: 2)
    "seconds": 0.0,  # wall budget per row per repeat (at least one update); 0: 3 s quick, 10 s full
    "updates": 0,  # > 0: time this many update() calls per row per repeat instead of a wall budget
    "repeats": 0,  # 0: 1 quick, 3 full
    "warmup": 1,  # untimed update() calls per row before timing
    "buffer": 0,  # transitions in each of the demo and online buffers; 0: 100 quick, 400 full
    "pool_episodes": 0,  # expert episodes rendered for the footage; 0: 1 quick, 3 full
    "episode_len": 30,  # steps per episode written into the buffers
    "device": "auto",
    "seed": 0,
}

AUTO = {
    "seconds": (3.0, 10.0),
    "repeats": (1, 3),
    "buffer": (100, 400),
    "pool_episodes": (1, 3),
}  # (quick, full) values of the settings left unset

ROW_LABELS: dict[str, str] = {
    "cache": "feature cache: float16 trunk maps in the buffer",
    "cache_featurize": "feature cache + featurize 1 frame pair/update",
    "recompute": "no cache: trunk on obs + next_obs every update",
}

# name -> (measured row, baseline row); both in update() calls per second, higher is better
RATIO_DEFS: dict[str, tuple[str, str]] = {
    "cache/recompute": ("cache", "recompute"),
    "cache_featurize/recompute": ("cache_featurize", "recompute"),
}


def _pixel_config(s: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(task config, rlpd agent config) as plain dicts, with the benchmark's image size, device, batch and UTD."""
    from omegaconf import OmegaConf

    from robot_rl.cli import compose

    cfg = compose(
        "train",
        [
            f"task={s['task']}",
            "obs=pixels",
            f"task.env_kwargs.image_size={s['image_size']}",
            f"device={s['device']}",
            f"seed={s['seed']}",
        ],
    )
    agent = OmegaConf.to_container(cfg.agent, resolve=True)
    s["config_batch_size"] = agent["batch_size"]  # what training uses, for the printout
    agent["batch_size"] = s["batch_size"]
    if s["utd"] > 0:
        agent["utd_ratio"] = s["utd"]
    return OmegaConf.to_container(cfg.task, resolve=True), agent  # type: ignore[return-value]


def run(quick: bool, overrides: list[str]) -> dict[str, Any]:
    """Measure every row (see the module docstring), print the table and ratios, return every figure.

    Returns a JSON-serialisable dict: ``settings``, ``machine``, ``task``, ``rows`` (per row ``updates_per_s``,
    ``critic_steps_per_s``, ``ms_per_update``, per-repeat rates, trunk frames per update, buffer bytes per
    transition), ``ratio`` (the headline: ``cache_featurize / recompute`` updates/s, the cache's per-frame trunk
    cost included), ``ratios``, ``notes``.
    """
    s = parse_overrides(overrides, DEFAULTS, quick, AUTO)
    if s["batch_size"] < 1 or s["buffer"] < 2 or s["episode_len"] < 1 or s["warmup"] < 0:
        raise ValueError("batch_size and episode_len must be >= 1, buffer >= 2, warmup >= 0")
    return Bench("encoder", quick, s, NOISY_RATES + (" (try threads=1)" if s["threads"] > 1 else "")).run(_run)


def _run(bench: Bench) -> dict[str, Any]:
    from robot_rl.agents.sac import SAC, SACConfig
    from robot_rl.bench.data import allocated_bytes, fill, record_pool
    from robot_rl.data.replay import ReplayBuffer, mixed_batches

    s, threads, notes = bench.settings, bench.threads, bench.notes
    task, agent_cfg = _pixel_config(s)

    t0 = time.perf_counter()
    pool = record_pool(task, "pixels", s["pool_episodes"], 2, s["seed"])
    render_s = time.perf_counter() - t0
    agents: dict[str, SAC] = {}
    for side, enc in (("cache", None), ("recompute", {"cache": False})):
        torch.manual_seed(s["seed"])  # the same head, actor and critic initialisation on both sides
        agents[side] = SAC(
            pool.observation_space, _action_space(pool), SACConfig.from_dict({**agent_cfg, "encoder": enc})
        )
    cached, recompute = agents["cache"], agents["recompute"]
    if not cached.cached_cameras:
        raise ValueError("the default pixel agent does not cache trunk maps; nothing to compare")
    if recompute.cached_cameras:
        raise ValueError("encoder: {cache: false} still caches; nothing to compare")
    cams = list(cached.cached_cameras)
    b, utd = cached.cfg.batch_size, cached.cfg.utd_ratio
    t0 = time.perf_counter()
    maps = replace(pool, obs=cached.featurize(pool.obs, batched=True))  # the trunk once per frame, as the trainer
    featurize_s = time.perf_counter() - t0
    sync = device_sync(cached.device)

    buffers: dict[str, tuple[ReplayBuffer, ReplayBuffer]] = {}
    for side, footage in (("cache", maps), ("recompute", pool)):
        agent = agents[side]
        pair = tuple(
            ReplayBuffer(agent.buffer_observation_space, agent.action_dim, s["buffer"], agent.device) for _ in range(2)
        )
        for buf in pair:
            fill(buf, footage, s["buffer"], s["episode_len"])
        agent.fit_normalizer(np.asarray(pool.obs["state"]))  # the trainer fits the state normaliser before updating
        buffers[side] = pair  # type: ignore[assignment]
    bytes_per_transition = {side: allocated_bytes(pair[0]) / s["buffer"] for side, pair in buffers.items()}
    print(
        f"encoder benchmark: task {task.get('name', s['task'])}, cameras {cams} at {s['image_size']} px, trunk maps "
        f"{dict(cached.encoder.feature_shapes)} float16; agent rlpd, batch {b}, UTD {utd}, device {cached.device}, "
        f"torch threads {threads} (cores {os.cpu_count()}); buffers 2 x {s['buffer']} transitions of "
        f"{len(pool)} footage rows from {pool.episodes} expert episodes (rendered in {render_s:.1f} s, featurized in "
        f"{featurize_s:.1f} s); {_budget(s)} per row x {s['repeats']} repeat(s), warmup {s['warmup']}"
    )
    print(
        f"batch {b} keeps the default run to a few minutes on a CPU: the recompute side runs the trunk on "
        f"{len(cams) * b * (2 * utd + 1)} frames per update (training uses {s['config_batch_size']}: "
        f"batch_size={s['config_batch_size']} measures it, much slower; the cache's lead grows with the batch)"
    )

    frames = [pool.obs[c] for c in cams]
    counter = {"i": 0}

    def featurize_next() -> None:  # a new real frame pair each call, cycling through the footage
        i = counter["i"] % len(pool)
        counter["i"] += 1
        cached.featurize({"state": pool.obs["state"][i], **{c: f[i] for c, f in zip(cams, frames)}})

    steps: dict[str, Callable[[], int]] = {
        "cache": _update_step(cached, mixed_batches(*buffers["cache"], b, 0.5, np.random.default_rng(s["seed"])), sync),
        "cache_featurize": _update_step(
            cached,
            mixed_batches(*buffers["cache"], b, 0.5, np.random.default_rng(s["seed"] + 1)),
            sync,
            before=featurize_next,
        ),
        "recompute": _update_step(
            recompute, mixed_batches(*buffers["recompute"], b, 0.5, np.random.default_rng(s["seed"])), sync
        ),
    }
    for step in steps.values():
        for _ in range(s["warmup"]):
            step()
    rates, _ = bench.round_robin(steps, s["repeats"], s["seconds"], s["updates"], show=".3g")

    trunk_frames = {"cache": 0, "cache_featurize": len(cams), "recompute": len(cams) * b * (2 * utd + 1)}
    rows: dict[str, dict[str, Any]] = {}
    for key, rs in rates.items():
        ups = median(rs)
        rows[key] = {
            "label": ROW_LABELS[key],
            "updates_per_s": ups,
            "critic_steps_per_s": ups * utd,
            "ms_per_update": 1e3 / ups,
            "per_repeat_updates_per_s": rs,
            "trunk_frames_per_update": trunk_frames[key],
            "buffer_bytes_per_transition": bytes_per_transition["recompute" if key == "recompute" else "cache"],
        }
    ratios = {name: rows[m]["updates_per_s"] / rows[base]["updates_per_s"] for name, (m, base) in RATIO_DEFS.items()}
    rec = rows["recompute"]
    trunk_ms_per_frame = (rec["ms_per_update"] - rows["cache"]["ms_per_update"]) / max(
        1, rec["trunk_frames_per_update"]
    )

    print()
    print_table(
        ["row", "updates/s", "critic steps/s", "ms/update", "trunk frames/update", "buffer B/transition"],
        [
            [
                v["label"],
                f"{v['updates_per_s']:.3g}",
                f"{v['critic_steps_per_s']:.3g}",
                f"{v['ms_per_update']:.1f}",
                v["trunk_frames_per_update"],
                f"{v['buffer_bytes_per_transition']:.0f}",
            ]
            for v in rows.values()
        ],
    )
    print()
    print_table(["ratio (updates/s)", "x"], [[k, f"{v:.1f}"] for k, v in ratios.items()])
    print(
        f"(recompute - cache = {trunk_ms_per_frame:.1f} ms per trunk frame; batch {b}, UTD {utd}, "
        f"{threads} thread(s); the ratio aims at >= 5x)"
    )
    headline = ratios["cache_featurize/recompute"]  # the cache's own cost (the trunk once per new frame) included
    print(f"headline: {headline:.1f}x learner updates/s with the feature cache, its per-frame featurize included")
    if headline < 5:
        notes.append(f"cache_featurize/recompute = {headline:.1f}x, below the 5x aim")
    bench.print_notes()
    machine = {"device": str(cached.device)}
    if cached.device.type == "cuda":
        machine["device_name"] = torch.cuda.get_device_name(cached.device)
    return bench.result(
        rows,
        settings={**s, "utd": utd},
        machine=machine,
        task={
            "name": str(task.get("name", s["task"])),
            "cameras": cams,
            "image_size": s["image_size"],
            "trunk_maps": {c: list(v) for c, v in cached.encoder.feature_shapes.items()},
            "footage_rows": len(pool),
            "footage_episodes": pool.episodes,
        },
        ratio=headline,
        ratios=ratios,
        ratio_defs={
            k: {"measured": m, "baseline": base, "metric": "updates_per_s", "better": "higher"}
            for k, (m, base) in RATIO_DEFS.items()
        },
        trunk_ms_per_frame=trunk_ms_per_frame,
        render_s=render_s,
        featurize_pool_s=featurize_s,
    )


def _budget(s: dict[str, Any]) -> str:
    return f"{s['updates']} updates" if s["updates"] > 0 else f"{s['seconds']:g} s (at least 1 update)"


def _action_space(pool: Any) -> Any:
    from gymnasium import spaces

    return spaces.Box(-1.0, 1.0, (pool.action.shape[1],), np.float32)


def _update_step(
    agent: Any, batches: Iterator[dict[str, Any]], sync: Callable[[], None], before: Callable[[], None] | None = None
) -> Callable[[], int]:
    def step() -> int:
        if before is not None:
            before()
        agent.update(batches)
        sync()
        return 1

    return step
