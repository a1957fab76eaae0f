"""Data path: episode-store writes, replay sampling, replay memory and store -> replay load time.

``robot-rl bench data [--quick] [--json PATH] [key=value ...]``. Every figure sits next to a baseline measured (or,
for the 10 Hz need, computed from the env) in the same run, and every ratio is ``measured / baseline`` of one metric:

1. Store writes (``write_*``): transitions/s (and camera frames/s) of :meth:`EpisodeStore.append_episode` with
   ``episode_len``-step episodes, against what 10 Hz control produces (``need_10hz``: 1 / control_dt transitions/s,
   one frame per camera each). Images are real frames of the task rendered once by its scripted expert and then
   tiled in order (a pool longer than one image chunk, so no chunk holds a repeated frame); ``write_pixels_noisy``
   adds Gaussian sensor noise (``noise_sigma`` 8-bit levels) because real cameras compress far worse than flat-shaded
   sim frames. ``write_state`` is the state-only store built for row 4. Also bytes on disk per transition.
2. Replay sampling (``sample_*``): batches/s at ``batch_size`` from our :class:`ReplayBuffer` holding the env's
   pixel observations (uint8 cameras, each observation stored once), against the same transitions in an in-repo
   float32 buffer that stores obs and next_obs separately (:class:`Float32TransitionBuffer`, written here to the LeRobot
   HIL-SERL port's layout, images CHW in [0, 1]; it is not LeRobot's code, whose speed may differ); and
   against our buffer with the task's state-only observations (what pixels cost).
3. Memory (``memory_*``): bytes per transition of those two pixel buffers, from the numpy arrays they allocated.
4. Load (``load_*`` vs ``read_*``): seconds to open a store and fill a fresh :class:`ReplayBuffer` the way the
   trainer does (``iter_episodes`` + ``add_episode``), against opening it and reading the same arrays raw
   (``read_all``). State observations at ``load_transitions`` (100k by default); pixels on the row-1 store, whose
   size is limited by memory (a 100k pixel buffer is ~10 GB), compared as transitions/s.
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from robot_rl.bench.common import Bench, median, parse_overrides, print_table
from robot_rl.data.replay import ReplayBuffer
from robot_rl.data.store import EpisodeStore, StoreSchema
from robot_rl.utils.perf import tune_malloc

DEFAULTS: dict[str, Any] = {
    "threads": os.cpu_count() or 1,  # torch threads (zarr's codec threads are its own)
    "task": "pick_cube",  # configs/task/<task>.yaml; needs a scripted expert
    "episode_len": 30,  # steps per episode written / filled (pick_cube's time limit)
    "pool_episodes": 0,  # at least this many expert episodes rendered for the frame pool; 0: 2 quick, 4 full
    "write_episodes": 0,  # timed appends per store-write row (after one untimed); 0: 10 quick, 40 full
    "noise_sigma": 2.0,  # std of the sensor noise of write_pixels_noisy, in 8-bit levels
    "image_chunk": 32,  # camera frames per zarr chunk (the store's default)
    "batch_size": 256,
    "sample_buffer": 0,  # transitions in each sampling buffer; 0: 500 quick, 3000 full
    "seconds": 0.0,  # wall budget per sampling row per repeat; 0: 1 quick, 4 full
    "batches": 0,  # > 0: time this many batches per sampling row instead of a wall budget
    "repeats": 0,  # round-robin repeats of the sampling and load rows (median reported); 0: 1 quick, 3 full
    "load_transitions": 0,  # state transitions in the load-test store; 0: 3000 quick, 100000 full
    "dir": "",  # parent directory of the temporary stores (default: the system temp dir)
    "seed": 0,
}

AUTO = {
    "pool_episodes": (2, 4),
    "write_episodes": (10, 40),
    "sample_buffer": (500, 3000),
    "seconds": (1.0, 4.0),
    "repeats": (1, 3),
    "load_transitions": (3000, 100_000),
}  # (quick, full) values of the settings left unset

ROW_LABELS: dict[str, str] = {
    "need_10hz": "needed by 10 Hz control (1 / control_dt)",
    "write_pixels": "store append, sim camera frames",
    "write_pixels_noisy": "store append, sim frames + sensor noise",
    "write_state": "store append, state only",
    "sample_pixels": "ours, uint8 cameras + state",
    "sample_float32": "in-repo float32 buffer, obs + next_obs (LeRobot port's layout, not its code)",
    "sample_state": "ours, state only",
    "memory_ours": "ours, uint8, each observation once",
    "memory_float32": "in-repo float32 buffer, obs + next_obs (LeRobot port's layout, not its code)",
    "read_state": "open + read_all (raw arrays), state",
    "load_state": "open + iter_episodes + add_episode, state",
    "read_pixels": "open + read_all (raw arrays), pixels",
    "load_pixels": "open + iter_episodes + add_episode, pixels",
}

# name -> (measured row, baseline row, metric, which direction is better)
RATIO_DEFS: dict[str, tuple[str, str, str, str]] = {
    "write_pixels/need_10hz": ("write_pixels", "need_10hz", "transitions_per_s", "higher"),
    "write_pixels_noisy/need_10hz": ("write_pixels_noisy", "need_10hz", "transitions_per_s", "higher"),
    "write_state/need_10hz": ("write_state", "need_10hz", "transitions_per_s", "higher"),
    "sample_pixels/sample_float32": ("sample_pixels", "sample_float32", "batches_per_s", "higher"),
    "sample_pixels/sample_state": ("sample_pixels", "sample_state", "batches_per_s", "higher"),
    "memory_ours/memory_float32": ("memory_ours", "memory_float32", "bytes_per_transition", "lower"),
    "load_state/read_state": ("load_state", "read_state", "seconds", "lower"),
    "load_pixels/read_pixels": ("load_pixels", "read_pixels", "seconds", "lower"),
}


# ----------------------------------------------------------------------------- recorded footage
@dataclass(frozen=True)
class Pool:
    """Expert footage, episodes concatenated (each followed by its final observation as one more row).

    ``obs``: {key: (P, ...)} as the env returns them; ``action``: (P, A) float32 (zeros on final rows);
    ``reward``: (P,) float32; ``control_dt``: seconds per env step; ``observation_space``: the env's;
    ``episodes``: expert episodes recorded.
    """

    obs: Mapping[str, np.ndarray]
    action: np.ndarray
    reward: np.ndarray
    control_dt: float
    observation_space: spaces.Dict
    episodes: int

    def __len__(self) -> int:
        return len(self.action)

    @property
    def cameras(self) -> list[str]:
        return [k for k, v in self.obs.items() if v.dtype == np.uint8 and v.ndim == 4]

    def window(self, start: int, length: int) -> dict[str, Any]:
        """Rows ``start .. start + length`` (wrapping around the pool) as one episode cut by a time limit, in the
        form :meth:`EpisodeStore.append_episode` and :meth:`ReplayBuffer.add_episode` take."""
        rows = (start + np.arange(length + 1)) % len(self)
        flags = np.zeros(length, dtype=bool)
        truncated = flags.copy()
        truncated[-1] = True
        return {
            "obs": {k: v[rows[:-1]] for k, v in self.obs.items()},
            "final_obs": {k: v[rows[-1]] for k, v in self.obs.items()},
            "action": self.action[rows[:-1]],
            "reward": self.reward[rows[:-1]],
            "terminated": flags,
            "truncated": truncated,
            "is_intervention": flags.copy(),
            "timestamp": np.arange(length, dtype=np.float64) * self.control_dt,
        }


def _task_config(task: str) -> dict[str, Any]:
    from omegaconf import OmegaConf

    from robot_rl.cli import compose

    cfg = compose("train", [f"task={task}"])
    return OmegaConf.to_container(cfg.task)  # type: ignore[return-value]


def record_pool(task: Mapping[str, Any], obs_mode: str, min_episodes: int, min_rows: int, seed: int) -> Pool:
    """Run the task's scripted expert for at least ``min_episodes`` episodes and ``min_rows`` rows of footage."""
    from robot_rl.envs.make import control_dt, expert_action, make_env

    env = make_env(task, obs_mode=obs_mode)
    obs_rows: dict[str, list[np.ndarray]] = {k: [] for k in env.observation_space.spaces}
    actions: list[np.ndarray] = []
    rewards: list[float] = []
    episodes = 0
    try:
        zero = np.zeros(env.action_space.shape, dtype=np.float32)
        while episodes < min_episodes or len(actions) < min_rows:
            obs, _ = env.reset(seed=seed + episodes)
            episodes += 1
            done = False
            while not done:
                action = np.asarray(expert_action(env), dtype=np.float32)
                for k, v in obs.items():
                    obs_rows[k].append(v)
                actions.append(action)
                obs, reward, terminated, truncated, _ = env.step(action)
                rewards.append(float(reward))
                done = terminated or truncated
            for k, v in obs.items():
                obs_rows[k].append(v)
            actions.append(zero)
            rewards.append(0.0)
        return Pool(
            {k: np.stack(v) for k, v in obs_rows.items()},
            np.stack(actions),
            np.asarray(rewards, dtype=np.float32),
            control_dt(env),
            env.observation_space,
            episodes,
        )
    finally:
        env.close()


def with_sensor_noise(pool: Pool, sigma: float, rng: np.random.Generator) -> Pool:
    """``pool`` with i.i.d. Gaussian noise of ``sigma`` 8-bit levels added to every camera frame (rounded, clipped)."""
    obs = dict(pool.obs)
    for k in pool.cameras:
        noisy = pool.obs[k].astype(np.float32) + rng.normal(0.0, sigma, pool.obs[k].shape).astype(np.float32)
        obs[k] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return replace(pool, obs=obs)


# ----------------------------------------------------------------------------- baseline buffer
class Float32TransitionBuffer:
    """Baseline replay layout of the LeRobot HIL-SERL port: every observation float32 (images CHW in [0, 1]), obs
    and next_obs stored separately for each transition. ``sample`` returns the same keys as :class:`ReplayBuffer`
    (as CPU tensors); only what is stored differs."""

    def __init__(self, observation_space: spaces.Dict, action_dim: int, capacity: int):
        def shape(sp: spaces.Box) -> tuple[int, ...]:
            return (sp.shape[2], sp.shape[0], sp.shape[1]) if self._is_image(sp) else tuple(sp.shape)

        self.capacity = int(capacity)
        self.images = {k for k, sp in observation_space.spaces.items() if self._is_image(sp)}
        self.obs = {k: np.zeros((capacity, *shape(sp)), np.float32) for k, sp in observation_space.spaces.items()}
        self.next_obs = {k: np.zeros_like(v) for k, v in self.obs.items()}
        self.action = np.zeros((capacity, action_dim), np.float32)
        self.reward = np.zeros(capacity, np.float32)
        self.terminated = np.zeros(capacity, bool)
        self.truncated = np.zeros(capacity, bool)
        self.is_intervention = np.zeros(capacity, bool)
        self.size = 0

    @staticmethod
    def _is_image(sp: spaces.Box) -> bool:
        return np.dtype(sp.dtype) == np.uint8 and len(sp.shape) == 3

    def _convert(self, key: str, x: np.ndarray) -> np.ndarray:
        return np.moveaxis(x, -1, -3).astype(np.float32) / 255.0 if key in self.images else x.astype(np.float32)

    def add_episode(self, episode: Mapping[str, Any]) -> None:
        """Append an episode (the dict :meth:`ReplayBuffer.add_episode` takes) while it fits; no ring wrap."""
        n = min(len(episode["action"]), self.capacity - self.size)
        a, b = self.size, self.size + n
        for k in self.obs:
            seq = np.concatenate([episode["obs"][k], episode["final_obs"][k][None]])
            self.obs[k][a:b] = self._convert(k, seq[:n])
            self.next_obs[k][a:b] = self._convert(k, seq[1 : n + 1])
        for name in ("action", "reward", "terminated", "truncated", "is_intervention"):
            getattr(self, name)[a:b] = episode[name][:n]
        self.size = b

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, Any]:
        """``batch_size`` uniform transitions: {obs, next_obs: {key: (n, ...)}, action (n, A), reward, flags (n,)}."""
        idx = rng.integers(0, self.size, size=batch_size)
        t = torch.from_numpy
        return {
            "obs": {k: t(v[idx]) for k, v in self.obs.items()},
            "next_obs": {k: t(v[idx]) for k, v in self.next_obs.items()},
            "action": t(self.action[idx]),
            "reward": t(self.reward[idx]),
            "terminated": t(self.terminated[idx].astype(np.float32)),
            "truncated": t(self.truncated[idx].astype(np.float32)),
            "is_intervention": t(self.is_intervention[idx].astype(np.float32)),
        }


def allocated_bytes(obj: Any) -> int:
    """Bytes of every numpy array reachable from ``obj``'s attributes (through dicts, lists, tuples), each counted
    once (views are charged to the array that owns the memory)."""
    seen: set[int] = set()

    def walk(x: Any) -> int:
        if isinstance(x, np.ndarray):
            owner = x
            while isinstance(owner.base, np.ndarray):
                owner = owner.base
            if id(owner) in seen:
                return 0
            seen.add(id(owner))
            return owner.nbytes
        if isinstance(x, Mapping):
            return sum(walk(v) for v in x.values())
        if isinstance(x, (list, tuple)):
            return sum(walk(v) for v in x)
        return 0

    return walk(vars(obj))


def tensor_bytes(tree: Any) -> int:
    """Bytes of all tensors in a (nested dict) batch."""
    if isinstance(tree, Mapping):
        return sum(tensor_bytes(v) for v in tree.values())
    return tree.numel() * tree.element_size() if isinstance(tree, torch.Tensor) else 0


def fill(buffer: ReplayBuffer | Float32TransitionBuffer, pool: Pool, transitions: int, episode_len: int) -> None:
    """Add ``transitions`` rows of pool footage to ``buffer`` as consecutive ``episode_len``-step episodes."""
    done = 0
    while done < transitions:
        n = min(episode_len, transitions - done)
        buffer.add_episode(pool.window(done, n))
        done += n


# ----------------------------------------------------------------------------- measurements
JITTER = 1e-4  # std of the noise that keeps tiled float rows from repeating byte for byte (units of the values)


def _episodes(pool: Pool, count: int, length: int, rng: np.random.Generator) -> Iterator[dict[str, Any]]:
    """``count`` consecutive windows of the footage. Float observations and actions get :data:`JITTER` noise:
    the footage repeats every ``len(pool)`` rows, real trajectories never do, and zstd would exploit it."""
    for e in range(count):
        ep = pool.window(e * length, length)
        for k, v in ep["obs"].items():
            if v.dtype.kind == "f":
                ep["obs"][k] = (v + rng.normal(0.0, JITTER, v.shape)).astype(v.dtype)
        ep["action"] = np.clip(ep["action"] + rng.normal(0.0, JITTER, ep["action"].shape), -1, 1).astype(np.float32)
        yield ep


def time_writes(
    path: Path, pool: Pool, episodes: int, length: int, image_chunk: int, task: str, rng: np.random.Generator
) -> dict[str, Any]:
    """Create a store at ``path`` and append one untimed then ``episodes`` timed ``length``-step episodes.

    Returns transitions/s and frames/s (camera frames of the observations; the per-episode final frame is not
    counted), per-append ms, and bytes per transition raw (the arrays handed to ``append_episode``) and on disk.
    """
    schema = StoreSchema.from_spaces(
        pool.observation_space, spaces.Box(-1, 1, pool.action.shape[1:], np.float32), 1.0 / pool.control_dt
    )
    times: list[float] = []
    raw = 0
    with EpisodeStore.create(path, schema, image_chunk=image_chunk) as store:
        for i, ep in enumerate(_episodes(pool, episodes + 1, length, rng)):
            t0 = time.perf_counter()
            store.append_episode(**ep, success=False, source="scripted", task=task)
            if i:
                times.append(time.perf_counter() - t0)
            raw += sum(
                v.nbytes
                for v in (
                    *ep["obs"].values(),
                    *ep["final_obs"].values(),
                    ep["action"],
                    ep["reward"],
                    ep["terminated"],
                    ep["truncated"],
                    ep["is_intervention"],
                    ep["timestamp"],
                )
            )
        steps, size = store.num_steps, store.info()["size_bytes"]
    transitions = episodes * length
    elapsed = sum(times)
    frames = transitions * len(pool.cameras)
    return {
        "transitions_per_s": transitions / elapsed,
        "frames_per_s": frames / elapsed if frames else None,
        "ms_per_append_median": 1e3 * median(times),
        "ms_per_append_max": 1e3 * max(times),
        "seconds": elapsed,
        "timed_appends": episodes,
        "episode_len": length,
        "store_steps": steps,
        "raw_bytes_per_transition": raw / steps,
        "disk_bytes_per_transition": size / steps,
        "compression": raw / size,
    }


def time_read(path: Path) -> tuple[float, int]:
    """Seconds to open the store and read every committed array in bulk; and the transitions read."""
    t0 = time.perf_counter()
    with EpisodeStore.open(path) as store:
        data = store.read_all()
        n = store.num_steps
    elapsed = time.perf_counter() - t0
    del data
    return elapsed, n


def time_load(path: Path, observation_space: spaces.Dict, action_dim: int) -> tuple[float, int]:
    """Seconds to open the store and fill a fresh :class:`ReplayBuffer` episode by episode, as the trainer does;
    and the transitions loaded."""
    t0 = time.perf_counter()
    with EpisodeStore.open(path) as store:
        buf = ReplayBuffer(observation_space, action_dim, capacity=max(2, store.num_steps))
        for ep in store.iter_episodes():
            buf.add_episode(ep)
    elapsed = time.perf_counter() - t0
    n = len(buf)
    del buf
    return elapsed, n


# ----------------------------------------------------------------------------- the benchmark
def run(quick: bool, overrides: list[str]) -> dict[str, Any]:
    """Measure every row (see the module docstring), print tables and ratios, and return every figure.

    Returns a JSON-serialisable dict: ``settings``, ``machine``, ``rows`` (per row its figures, ``label`` and
    ``metric``), ``ratios`` (name -> measured / baseline), ``ratio_defs`` (name -> measured row, baseline row,
    metric, better direction), ``notes``.
    """
    s = parse_overrides(overrides, DEFAULTS, quick, AUTO)
    if s["episode_len"] < 1 or s["write_episodes"] < 1 or s["sample_buffer"] < 2 or s["load_transitions"] < 1:
        raise ValueError("episode_len, write_episodes and load_transitions must be >= 1, sample_buffer >= 2")
    with tempfile.TemporaryDirectory(prefix="robot_rl_bench_data_", dir=s["dir"] or None) as tmp:
        return Bench("data", quick, s).run(_run, Path(tmp))


def _run(bench: Bench, tmp: Path) -> dict[str, Any]:
    s, threads, notes = bench.settings, bench.threads, bench.notes
    rng = np.random.default_rng(s["seed"])
    length = s["episode_len"]
    if not tune_malloc():  # the CLI already did; idempotent. Applies to every row alike.
        notes.append("glibc malloc tuning unavailable: large batch buffers are page-faulted in on every sample")

    task = _task_config(s["task"])
    t0 = time.perf_counter()
    # More footage rows than one image chunk, so no chunk ever holds the same frame twice.
    pixels = record_pool(task, "pixels", s["pool_episodes"], s["image_chunk"] + 1, s["seed"])
    state = record_pool(task, "state", s["pool_episodes"], 1, s["seed"])
    cams = pixels.cameras
    hz = 1.0 / pixels.control_dt
    shapes = ", ".join(f"{k} {tuple(v.shape[1:])} {v.dtype}" for k, v in pixels.obs.items())
    print(
        f"data benchmark: task {task.get('name', s['task'])}, {hz:g} Hz, pixel obs {shapes}; state-only obs "
        f"{tuple(state.obs['state'].shape[1:])}; footage {len(pixels)} rows from {pixels.episodes} expert episodes "
        f"(rendered in {time.perf_counter() - t0:.1f} s); torch threads {threads} (cores {os.cpu_count()}); "
        f"stores under {tmp}"
    )
    rows: dict[str, dict[str, Any]] = {
        "need_10hz": {"transitions_per_s": hz, "frames_per_s": hz * len(cams), "metric": "transitions_per_s"}
    }

    # 1. store writes
    action_dim = pixels.action.shape[1]
    rows["write_pixels"] = time_writes(
        tmp / "pixels.zarr", pixels, s["write_episodes"], length, s["image_chunk"], s["task"], rng
    )
    noisy = with_sensor_noise(pixels, s["noise_sigma"], rng)
    rows["write_pixels_noisy"] = time_writes(
        tmp / "noisy.zarr", noisy, s["write_episodes"], length, s["image_chunk"], s["task"], rng
    )
    del noisy
    state_episodes = max(1, -(-s["load_transitions"] // length) - 1)  # + the untimed first one
    t0 = time.perf_counter()
    rows["write_state"] = time_writes(
        tmp / "state.zarr", state, state_episodes, length, s["image_chunk"], s["task"], rng
    )
    print(
        f"built the {(state_episodes + 1) * length}-transition state store ({state_episodes + 1} appends) in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    for key in ("write_pixels", "write_pixels_noisy", "write_state"):
        rows[key]["metric"] = "transitions_per_s"

    # 2. + 3. sampling and memory: the same footage in three buffers
    n = s["sample_buffer"]
    ours_px = ReplayBuffer(pixels.observation_space, action_dim, capacity=n)
    fill(ours_px, pixels, n, length)
    naive = Float32TransitionBuffer(pixels.observation_space, action_dim, capacity=n)
    fill(naive, pixels, n, length)
    ours_state = ReplayBuffer(state.observation_space, action_dim, capacity=n)
    fill(ours_state, state, n, length)
    for key, buf in (("memory_ours", ours_px), ("memory_float32", naive)):
        total = allocated_bytes(buf)
        rows[key] = {
            "bytes_per_transition": total / n,
            "gb_per_100k_transitions": total / n * 1e5 / 1e9,
            "allocated_bytes": total,
            "capacity": n,
            "metric": "bytes_per_transition",
        }

    b = s["batch_size"]
    samplers = {"sample_pixels": ours_px, "sample_float32": naive, "sample_state": ours_state}
    batch_bytes = {k: tensor_bytes(buf.sample(b, rng)) for k, buf in samplers.items()}  # also warms up

    def sampling(buf: Any) -> Callable[[], int]:
        def step() -> int:
            buf.sample(b, rng)
            return 1

        return step

    rates, faults = bench.round_robin(
        {k: sampling(buf) for k, buf in samplers.items()}, s["repeats"], s["seconds"], s["batches"]
    )
    for key, rs in rates.items():
        bps = median(rs)
        rows[key] = {
            "batches_per_s": bps,
            "ms_per_batch": 1e3 / bps,
            "per_repeat_batches_per_s": rs,
            "batch_mb": batch_bytes[key] / 1e6,
            "page_faults_per_batch": median(faults[key]),
            "batch_size": b,
            "buffer_transitions": n,
            "metric": "batches_per_s",
        }
    del samplers, ours_px, naive, ours_state
    gc.collect()

    # 4. store -> replay load, against a raw bulk read of the same store
    loads = {
        "state": (tmp / "state.zarr", state.observation_space),
        "pixels": (tmp / "pixels.zarr", pixels.observation_space),
    }
    times: dict[str, list[float]] = {f"{p}_{k}": [] for k in loads for p in ("read", "load")}
    counts: dict[str, int] = {}
    for _ in range(s["repeats"]):
        for kind, (path, space) in loads.items():
            sec, counts[f"read_{kind}"] = time_read(path)
            times[f"read_{kind}"].append(sec)
            sec, counts[f"load_{kind}"] = time_load(path, space, action_dim)
            times[f"load_{kind}"].append(sec)
            gc.collect()
    for key, ts in times.items():
        sec = median(ts)
        rows[key] = {
            "seconds": sec,
            "transitions": counts[key],
            "transitions_per_s": counts[key] / sec,
            "per_repeat_seconds": ts,
            "metric": "seconds",
        }
    if counts["load_state"] != counts["read_state"] or counts["load_pixels"] != counts["read_pixels"]:
        notes.append(f"loaded and read transition counts differ: {counts}")

    for key, row in rows.items():
        row["label"] = ROW_LABELS[key]
    ratios = {name: rows[m][metric] / rows[base][metric] for name, (m, base, metric, _) in RATIO_DEFS.items()}
    _print(rows, ratios, cams, hz, length)
    bench.print_notes()
    return bench.result(
        rows,
        settings={**s, "dir": str(tmp.parent)},
        task={
            "name": task.get("name", s["task"]),
            "control_hz": hz,
            "cameras": cams,
            "pixel_obs": {k: list(v.shape[1:]) for k, v in pixels.obs.items()},
            "state_obs": list(state.obs["state"].shape[1:]),
            "action_dim": int(action_dim),
            "footage_rows": len(pixels),
            "footage_episodes": pixels.episodes,
        },
        ratios=ratios,
        ratio_defs={
            k: {"measured": m, "baseline": base, "metric": metric, "better": better}
            for k, (m, base, metric, better) in RATIO_DEFS.items()
        },
    )


def _print(rows: dict[str, dict[str, Any]], ratios: dict[str, float], cams: list[str], hz: float, length: int) -> None:
    r = rows
    print(f"\n1. store writes: append_episode of {length}-step episodes, {len(cams)} cameras ({', '.join(cams)})")
    print_table(
        ["row", "transitions/s", "frames/s", "ms/append", "raw B/trans", "disk B/trans", "compression"],
        [[r["need_10hz"]["label"], r["need_10hz"]["transitions_per_s"], r["need_10hz"]["frames_per_s"], "", "", "", ""]]
        + [
            [
                r[k]["label"],
                r[k]["transitions_per_s"],
                r[k]["frames_per_s"] or "-",
                f"{r[k]['ms_per_append_median']:.1f}",
                f"{r[k]['raw_bytes_per_transition']:.0f}",
                f"{r[k]['disk_bytes_per_transition']:.0f}",
                f"{r[k]['compression']:.1f}x",
            ]
            for k in ("write_pixels", "write_pixels_noisy", "write_state")
        ],
    )
    b, n = r["sample_pixels"]["batch_size"], r["sample_pixels"]["buffer_transitions"]
    print(f"\n2. replay sampling: batch {b} from {n} transitions")
    print_table(
        ["row", "batches/s", "ms/batch", "MB/batch", "page faults/batch"],
        [
            [
                r[k]["label"],
                r[k]["batches_per_s"],
                f"{r[k]['ms_per_batch']:.2f}",
                f"{r[k]['batch_mb']:.1f}",
                f"{r[k]['page_faults_per_batch']:.0f}",
            ]
            for k in ("sample_pixels", "sample_float32", "sample_state")
        ],
    )
    print("\n3. replay memory (pixel observations)")
    print_table(
        ["row", "bytes/transition", "GB per 100k transitions"],
        [
            [r[k]["label"], f"{r[k]['bytes_per_transition']:.0f}", f"{r[k]['gb_per_100k_transitions']:.2f}"]
            for k in ("memory_ours", "memory_float32")
        ],
    )
    print("\n4. store -> replay buffer load")
    print_table(
        ["row", "transitions", "seconds", "transitions/s"],
        [
            [r[k]["label"], r[k]["transitions"], f"{r[k]['seconds']:.3f}", r[k]["transitions_per_s"]]
            for k in ("read_state", "load_state", "read_pixels", "load_pixels")
        ],
    )
    print()
    print_table(
        ["ratio (measured / baseline)", "x", "better"], [[k, f"{v:.3g}", RATIO_DEFS[k][3]] for k, v in ratios.items()]
    )
    print(f"(need_10hz = {hz:g} transitions/s = {hz * len(cams):g} camera frames/s)")
