"""Learner throughput: gradient updates per second of our SAC/RLPD agent against Stable-Baselines3 SAC.

``robot-rl bench learner [--quick] [--json PATH] [key=value ...]``. Every row runs in this process, one after
another, under the same ``torch.set_num_threads(threads)``; repeats go round-robin over the rows so slow drift in
background load hits every row alike, and each row reports the median over repeats. Rows:

* ``rlpd_utd1``: ours, RLPD (10 LayerNorm critics, 2 sampled for the target, actor on the ensemble mean), UTD=1;
  one update = one critic step + one actor/temperature step, on pre-built random batches (data not timed) that carry
  what training batches carry, so the actor's behaviour-cloning term runs as it does in training (on no row here).
* ``rlpd_utd4``: the same at UTD=4, counted in critic steps (the actor step amortised over 4), as RLPD trains. Its
  ratio to SB3 is per env step (``update_calls_per_s``: 4 critic steps + 1 actor step, against SB3's 1 + 1), the
  learning each side does per env step; critic steps against SB3's whole updates would compare unlike work.
* ``sac2``: ours as plain SAC (2 critics), UTD=1, the same structure as SB3.
* ``sb3``: SB3 SAC (2 critics, ``ent_coef="auto"``), ``model.train(gradient_steps, batch_size)``; SB3 samples from
  its replay buffer inside ``train()``, so that cost is in its figure.
* ``rlpd_utd1_sampling`` / ``sac2_sampling``: ours including ``mixed_batches`` sampling (demo fraction 0.5) from two
  :class:`~robot_rl.data.replay.ReplayBuffer` s, to compare with SB3 like for like.
* ``rlpd_utd1_bf16`` / ``rlpd_utd4_bf16`` / ``sac2_bf16``: those rows with ``precision=bf16`` (bfloat16 autocast
  of the update's products; float32 weights, targets and losses) and Adam's fused kernel.
* ``<row>_bf16_compile``: the bf16 rows with ``compile=True`` (``torch.compile`` of the critic ensembles and the
  actor); the time its first updates take to compile is printed, not timed.
* ``<row>_bf16_joint`` / ``<row>_bf16_compile_joint``: those with ``joint_update=True``: the last critic step and
  the actor + temperature step as one forward and one backward (compiled, one graph).
* ``rlpd_loop``: ``rlpd_utd1`` with the critic ensemble as a Python loop over separate ``nn.Sequential`` MLPs
  (:class:`LoopEnsembleQ`), to show what the batched :class:`~robot_rl.agents.networks.EnsembleQ` buys.
* ``<row>_cuda`` / ``<row>_cuda_bf16`` (``rlpd_utd1``, ``rlpd_utd4``, ``sac2``), only where a CUDA device is present
  (named in the labels and ``machine.cuda_device``): the same updates on the GPU, batches already there, each
  timed call ended by ``torch.cuda.synchronize``. Without one there are no GPU rows, and a note says so.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from robot_rl.agents.networks import EnsembleQ, mlp
from robot_rl.agents.sac import SAC, SACConfig
from robot_rl.bench.common import NOISY_RATES, Bench, device_sync, median, parse_overrides, print_table
from robot_rl.data.replay import ReplayBuffer, mixed_batches, to_device
from robot_rl.utils.perf import compile_works, tune_malloc

DEFAULTS: dict[str, Any] = {
    "threads": os.cpu_count() or 1,  # torch threads for every row
    "state_dim": 18,
    "action_dim": 4,
    "hidden": (256, 256),
    "batch_size": 256,
    "num_critics": 10,
    "seconds": 0.0,  # wall budget per row per repeat; 0: 3 s quick, 15 s full
    "updates": 0,  # > 0: time this many units per row instead of a wall budget
    "repeats": 0,  # 0: 1 quick, 3 full
    "warmup": -1,  # untimed units per row before timing; -1: 10 quick, 30 full
    "buffer": 10_000,  # transitions prefilled in SB3's buffer and in each of our buffers
    "num_batches": 4,  # pre-built random batches cycled by the no-sampling rows
    "seed": 0,
    "profile": False,  # also print a torch.profiler summary of our RLPD UTD=1 update
}

AUTO = {"seconds": (3.0, 15.0), "repeats": (1, 3), "warmup": (10, 30)}  # (quick, full) values of those left unset

ROW_LABELS: dict[str, str] = {
    "rlpd_utd1": "ours RLPD (10 critics), UTD=1",
    "rlpd_utd4": "ours RLPD, UTD=4 [critic steps]",
    "sac2": "ours SAC (2 critics), UTD=1",
    "sb3": "SB3 SAC (2 critics)",
    "rlpd_utd1_sampling": "ours RLPD UTD=1 + replay sampling",
    "sac2_sampling": "ours SAC (2 critics) + replay sampling",
    "rlpd_loop": "ours RLPD UTD=1, per-critic loop",
    "rlpd_utd1_bf16": "ours RLPD (10 critics), UTD=1, bf16 + fused Adam",
    "rlpd_utd4_bf16": "ours RLPD, UTD=4 [critic steps], bf16 + fused Adam",
    "sac2_bf16": "ours SAC (2 critics), UTD=1, bf16 + fused Adam",
}


# ----------------------------------------------------------------------------- per-critic loop baseline
class LoopEnsembleQ(nn.Module):
    """``E`` separate ``nn.Sequential`` Q-MLPs (Linear -> [LayerNorm] -> ReLU per hidden layer -> Linear) run in a
    Python loop: the unbatched equivalent of :class:`EnsembleQ`, with the same ``forward(feat (B, F),
    action (B, A), idx, frozen) -> (E', B)`` signature.
    """

    def __init__(self, ensemble_size: int, in_dim: int, hidden_dims: Sequence[int], layer_norm: bool):
        super().__init__()
        self.members = nn.ModuleList(mlp(in_dim, hidden_dims, 1, layer_norm) for _ in range(ensemble_size))
        self.ensemble_size = ensemble_size

    def forward(
        self, feat: torch.Tensor, action: torch.Tensor, idx: torch.Tensor | None = None, frozen: bool = False
    ) -> torch.Tensor:
        x = torch.cat([feat, action], dim=-1)
        members = self.members if idx is None else [self.members[i] for i in idx.tolist()]

        def run(m: nn.Module) -> torch.Tensor:
            if not frozen:
                return m(x)
            return torch.func.functional_call(m, {k: v.detach() for k, v in m.named_parameters()}, (x,))

        return torch.stack([run(m).squeeze(-1) for m in members])

    @torch.no_grad()
    def load_from_ensemble(self, ens: EnsembleQ) -> LoopEnsembleQ:
        """Copy the weights of a batched ensemble with the same shapes (member ``i`` <- slice ``i``)."""
        if ens.ensemble_size != self.ensemble_size:
            raise ValueError(f"ensemble sizes differ: {ens.ensemble_size} vs {self.ensemble_size}")
        src_lin = [*ens.linears, ens.head]
        src_norm = list(ens.norms) if ens.norms is not None else []
        for i, member in enumerate(self.members):
            lins = [m for m in member if isinstance(m, nn.Linear)]
            norms = [m for m in member if isinstance(m, nn.LayerNorm)]
            if len(lins) != len(src_lin) or len(norms) != len(src_norm):
                raise ValueError("layer structure differs between the loop and the batched ensemble")
            for dst, src in zip(lins, src_lin):
                dst.weight.copy_(src.weight[i].T)  # (in, out) -> nn.Linear's (out, in)
                dst.bias.copy_(src.bias[i, 0])
            for dst, src in zip(norms, src_norm):
                dst.weight.copy_(src.weight[i, 0])
                dst.bias.copy_(src.bias[i, 0])
        return self


def use_loop_critic(agent: SAC) -> None:
    """Swap ``agent``'s batched critic and target for :class:`LoopEnsembleQ` copies (same weights), with a fresh
    critic optimizer and the parameter lists the target update uses."""
    cfg, critic, target = agent.cfg, agent.critic, agent.critic_target
    if not isinstance(critic, EnsembleQ) or not isinstance(target, EnsembleQ):
        raise TypeError("the agent's critics are not batched EnsembleQ modules (already swapped?)")
    in_dim, layer_norm = critic.linears[0].weight.shape[1], critic.norms is not None
    agent.critic = LoopEnsembleQ(cfg.num_critics, in_dim, cfg.hidden_dims, layer_norm).load_from_ensemble(critic)
    agent.critic_target = LoopEnsembleQ(cfg.num_critics, in_dim, cfg.hidden_dims, layer_norm).load_from_ensemble(target)
    agent.critic_target.requires_grad_(False)
    agent.critic.to(agent.device)
    agent.critic_target.to(agent.device)
    agent.critic_opt = torch.optim.Adam(agent.critic.parameters(), lr=cfg.critic_lr)
    agent._critic_params = list(agent.critic.parameters())
    agent._target_params = list(agent.critic_target.parameters())


# ----------------------------------------------------------------------------- builders
def _spaces(state_dim: int, action_dim: int) -> tuple[spaces.Dict, spaces.Box]:
    obs = spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (state_dim,), np.float32)})
    return obs, spaces.Box(-1.0, 1.0, (action_dim,), np.float32)


def _make_agent(
    s: dict[str, Any],
    num_critics: int,
    utd: int,
    mixed: bool = False,
    device: str = "cpu",
    compile: bool = False,
    joint: bool = False,
) -> SAC:
    rlpd = num_critics > 2
    cfg = SACConfig(
        hidden_dims=s["hidden"],
        num_critics=num_critics,
        num_target_critics=2,
        critic_layer_norm=rlpd,
        actor_q_reduce="mean" if rlpd else "min",
        utd_ratio=utd,
        batch_size=s["batch_size"],
        device=device,
        precision="bf16" if mixed else "fp32",
        fused_optimizer=mixed,
        compile=compile,
        joint_update=joint,
    )
    return SAC(*_spaces(s["state_dim"], s["action_dim"]), cfg)


def _random_batches(s: dict[str, Any], gen: torch.Generator) -> list[dict[str, Any]]:
    b, sd, ad = s["batch_size"], s["state_dim"], s["action_dim"]
    return [
        {
            "obs": {"state": torch.randn(b, sd, generator=gen)},
            "next_obs": {"state": torch.randn(b, sd, generator=gen)},
            "action": torch.rand(b, ad, generator=gen) * 2 - 1,
            "reward": torch.rand(b, generator=gen),
            "terminated": (torch.rand(b, generator=gen) < 0.01).float(),
            # what every training batch carries: the behaviour-cloning term runs (on no row, as without a person)
            "is_intervention": torch.zeros(b),
            "from_demo": (torch.arange(b) < b // 2).float(),
        }
        for _ in range(max(1, s["num_batches"]))
    ]


def _filled_buffer(s: dict[str, Any], rng: np.random.Generator, episode_len: int = 100) -> ReplayBuffer:
    obs_space, _ = _spaces(s["state_dim"], s["action_dim"])
    n = max(2, s["buffer"])
    buf = ReplayBuffer(obs_space, s["action_dim"], capacity=n)
    states = rng.standard_normal((n + 1, s["state_dim"]), dtype=np.float32)
    actions = rng.uniform(-1, 1, (n, s["action_dim"])).astype(np.float32)
    rewards = rng.random(n, dtype=np.float32)
    for i in range(n):
        end = (i + 1) % episode_len == 0 or i == n - 1
        buf.add({"state": states[i]}, actions[i], float(rewards[i]), False, end, {"state": states[i + 1]})
    return buf


def _make_sb3(s: dict[str, Any], rng: np.random.Generator) -> Any:
    """An SB3 SAC on a dummy Box env with ``s["buffer"]`` random transitions in its replay buffer."""
    import gymnasium as gym
    from stable_baselines3 import SAC as SB3SAC
    from stable_baselines3.common.logger import Logger

    class _DummyEnv(gym.Env):
        observation_space = spaces.Box(-np.inf, np.inf, (s["state_dim"],), np.float32)
        action_space = spaces.Box(-1.0, 1.0, (s["action_dim"],), np.float32)

        def reset(self, *, seed: int | None = None, options: dict | None = None):
            super().reset(seed=seed)
            return np.zeros(s["state_dim"], np.float32), {}

        def step(self, action: np.ndarray):
            return np.zeros(s["state_dim"], np.float32), 0.0, False, False, {}

    n = max(2, s["buffer"])
    model = SB3SAC(
        "MlpPolicy",
        _DummyEnv(),
        buffer_size=n,
        learning_starts=0,
        batch_size=s["batch_size"],
        ent_coef="auto",
        policy_kwargs={"net_arch": list(s["hidden"])},
        device="cpu",
        seed=s["seed"],
        verbose=0,
    )
    model.set_logger(Logger(folder=None, output_formats=[]))  # train() records metrics; keep them in memory
    states = rng.standard_normal((n + 1, 1, s["state_dim"]), dtype=np.float32)
    actions = rng.uniform(-1, 1, (n, 1, s["action_dim"])).astype(np.float32)
    rewards = rng.random((n, 1), dtype=np.float32)
    dones = rng.random((n, 1)) < 0.01
    for i in range(n):
        model.replay_buffer.add(states[i], states[i + 1], actions[i], rewards[i], dones[i], [{}])
    return model


# ----------------------------------------------------------------------------- the benchmark
def _agent_step(agent: SAC, batches: Iterator[dict[str, Any]], units_per_call: int) -> Callable[[], int]:
    sync = device_sync(agent.device)  # a GPU's queued work is finished inside the timed call

    def step() -> int:
        agent.update(batches)
        sync()
        return units_per_call

    return step


def _profile_update(agent: SAC, batches: Iterator[dict[str, Any]], n: int) -> dict[str, Any]:
    """Where one RLPD UTD=1 update spends its time: critic vs actor step wall time, and torch.profiler top ops."""
    from torch.profiler import ProfilerActivity, profile

    def wall(fn: Callable[[], Any]) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n * 1e3

    batch = next(batches)

    def under_autocast(step: Callable[[Any], Any]) -> Any:
        with agent.autocast():  # as update() runs it
            return step(batch)

    breakdown = {
        "critic_step_ms": wall(lambda: under_autocast(agent._critic_step)),
        "actor_temperature_step_ms": wall(lambda: under_autocast(agent._actor_step)),
        "update_ms": wall(lambda: agent.update(batches)),
    }
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            agent.update(batches)
    averages = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in averages) or 1.0
    top = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    print(
        f"\nprofile of ours RLPD UTD=1 ({n} updates): critic step {breakdown['critic_step_ms']:.2f} ms, "
        f"actor+temperature step {breakdown['actor_temperature_step_ms']:.2f} ms, "
        f"whole update {breakdown['update_ms']:.2f} ms"
    )
    print_table(
        ["op (self CPU)", "ms/update", "%", "calls/update"],
        [
            [e.key, e.self_cpu_time_total / 1e3 / n, 100.0 * e.self_cpu_time_total / total, f"{e.count / n:g}"]
            for e in top
        ],
    )
    return {
        **breakdown,
        "top_ops": [
            {
                "op": e.key,
                "self_cpu_ms_per_update": e.self_cpu_time_total / 1e3 / n,
                "percent": 100.0 * e.self_cpu_time_total / total,
                "calls_per_update": e.count / n,
            }
            for e in top
        ],
    }


def run(quick: bool, overrides: list[str]) -> dict[str, Any]:
    """Measure every row (see the module docstring), print a table and the ratios, and return every figure.

    Returns a JSON-serialisable dict: ``settings``, ``machine``, ``rows`` (per row: ``updates_per_s``,
    ``ms_per_update``, per-repeat rates), ``ratio`` (ours RLPD UTD=1 / SB3 updates/s, ``None`` without SB3) and
    ``ratios`` (the other comparisons).
    """
    s = parse_overrides(overrides, DEFAULTS, quick, AUTO)
    return Bench("learner", quick, s, NOISY_RATES + (" (try threads=1)" if s["threads"] > 1 else "")).run(_run)


def _run(bench: Bench) -> dict[str, Any]:
    s, threads, notes = bench.settings, bench.threads, bench.notes
    seconds, repeats, warmup = s["seconds"], s["repeats"], s["warmup"]
    torch.manual_seed(s["seed"])
    rng = np.random.default_rng(s["seed"])
    gen = torch.Generator().manual_seed(s["seed"])
    budget = f"{s['updates']} units" if s["updates"] > 0 else f"{seconds:g} s"
    print(
        f"learner benchmark: torch threads T={threads} (cores {os.cpu_count()}), batch {s['batch_size']}, "
        f"state {s['state_dim']}, action {s['action_dim']}, hidden {s['hidden']}, {budget} per row x {repeats} "
        f"repeat(s), warmup {warmup}"
    )
    if not tune_malloc():  # the CLI already did; idempotent. Applies to every row alike, SB3's included.
        notes.append("glibc malloc tuning unavailable: large temporaries are page-faulted in on every update")

    # Build everything first; time later.
    fixed = _random_batches(s, gen)
    steps: dict[str, Callable[[], int]] = {}
    agents: dict[str, SAC] = {}
    labels, gpu = dict(ROW_LABELS), torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    devices = [("", "cpu", fixed)]  # (row suffix, device, its batches): the GPU's rows where there is one
    if gpu is not None:
        devices.append(("_cuda", "cuda", [to_device(b, torch.device("cuda")) for b in fixed]))
    else:
        notes.append("no CUDA device: no GPU rows (none are estimated from the CPU's)")
    rows_of = (("rlpd_utd1", s["num_critics"], 1), ("rlpd_utd4", s["num_critics"], 4), ("sac2", 2, 1))
    for suffix, device, batches in devices:
        # (bf16, compile, joint pass)
        variants = [(False, False, False), (True, False, False), (True, False, True)]
        if compile_works(device):
            variants += [(True, True, False), (True, True, True)]
        else:
            notes.append(f"torch.compile does not work on {device} here: no _compile rows")
        for key, critics, utd in rows_of:
            for mixed, compile, joint in variants:
                fast = ("_bf16" if mixed else "") + ("_compile" if compile else "") + ("_joint" if joint else "")
                name = f"{key}{suffix}{fast}"
                agents[name] = _make_agent(s, critics, utd, mixed, device, compile, joint)
                steps[name] = _agent_step(agents[name], itertools.cycle(batches), utd)
                label = ROW_LABELS[key + ("_bf16" if mixed else "")] + (" + torch.compile" if compile else "")
                label += " + joint pass" if joint else ""
                labels[name] = label + (f" [CUDA: {gpu}]" if suffix else "")

    sb3_version = None
    try:
        import stable_baselines3

        sb3_version = stable_baselines3.__version__
        t0 = time.perf_counter()
        sb3 = _make_sb3(s, rng)
        print(f"SB3 {sb3_version}: built and prefilled {s['buffer']} transitions in {time.perf_counter() - t0:.1f} s")
        bench.keep_threads("after building SB3")
        chunk = max(1, min(10, s["updates"] or 10))

        def sb3_step() -> int:
            sb3.train(gradient_steps=chunk, batch_size=s["batch_size"])
            return chunk

        steps["sb3"] = sb3_step
    except ImportError:
        notes.append("stable-baselines3 not installed: SB3 row and ratios skipped (pip install '.[dev]')")

    demo, online = _filled_buffer(s, rng), _filled_buffer(s, rng)
    for key, critics in (("rlpd_utd1_sampling", s["num_critics"]), ("sac2_sampling", 2)):
        agents[key] = _make_agent(s, critics, 1)
        steps[key] = _agent_step(agents[key], mixed_batches(demo, online, s["batch_size"], 0.5, rng), 1)

    agents["rlpd_loop"] = _make_agent(s, s["num_critics"], 1)
    use_loop_critic(agents["rlpd_loop"])
    steps["rlpd_loop"] = _agent_step(agents["rlpd_loop"], itertools.cycle(fixed), 1)

    # Warm up (at most ~seconds/3 of wall time per row), then time round-robin.
    for name, step in steps.items():
        done, calls, t0 = 0, 0, time.perf_counter()
        while done < warmup and (calls < 3 or time.perf_counter() - t0 < seconds / 3):
            done, calls = done + step(), calls + 1
        if "_compile" in name:
            notes.append(f"{name}: {time.perf_counter() - t0:.1f} s to compile and warm up (not timed)")
    rates, faults = bench.round_robin(steps, repeats, seconds, s["updates"], show=".1f")

    rows: dict[str, dict[str, Any]] = {}
    for key, rs in rates.items():
        ups = median(rs)
        rows[key] = {
            "label": labels[key],
            "updates_per_s": ups,
            "ms_per_update": 1e3 / ups,
            "per_repeat_updates_per_s": rs,
            "page_faults_per_update": median(faults[key]),
            "unit": "critic step" if key.startswith("rlpd_utd4") else "update (critic + actor + temperature step)",
        }
    for key in rows:
        if key.startswith("rlpd_utd4"):
            rows[key]["update_calls_per_s"] = rows[key]["updates_per_s"] / 4

    def ratio(a: str, b: str) -> float | None:
        return rows[a]["updates_per_s"] / rows[b]["updates_per_s"] if a in rows and b in rows else None

    def per_env_step(a: str) -> float | None:  # UTD 4: 4 critic steps + 1 actor step per env step, vs SB3's 1 + 1
        return rows[a]["update_calls_per_s"] / rows["sb3"]["updates_per_s"] if a in rows and "sb3" in rows else None

    ratios = {
        "rlpd_utd1/sb3": ratio("rlpd_utd1", "sb3"),
        "rlpd_utd4_per_env_step/sb3": per_env_step("rlpd_utd4"),
        "rlpd_utd1_sampling/sb3": ratio("rlpd_utd1_sampling", "sb3"),
        "sac2/sb3": ratio("sac2", "sb3"),
        "sac2_sampling/sb3": ratio("sac2_sampling", "sb3"),
        "batched/loop": ratio("rlpd_utd1", "rlpd_loop"),
        "rlpd_utd1_bf16/sb3": ratio("rlpd_utd1_bf16", "sb3"),
        "sac2_bf16/sb3": ratio("sac2_bf16", "sb3"),
        "bf16/fp32 rlpd_utd1": ratio("rlpd_utd1_bf16", "rlpd_utd1"),
        "bf16/fp32 rlpd_utd4": ratio("rlpd_utd4_bf16", "rlpd_utd4"),
        "bf16/fp32 sac2": ratio("sac2_bf16", "sac2"),
        "rlpd_utd1_bf16_compile/sb3": ratio("rlpd_utd1_bf16_compile", "sb3"),
        "rlpd_utd4_bf16_compile_per_env_step/sb3": per_env_step("rlpd_utd4_bf16_compile"),
        "sac2_bf16_compile/sb3": ratio("sac2_bf16_compile", "sb3"),
        "compile/eager rlpd_utd1_bf16": ratio("rlpd_utd1_bf16_compile", "rlpd_utd1_bf16"),
        "compile/eager rlpd_utd4_bf16": ratio("rlpd_utd4_bf16_compile", "rlpd_utd4_bf16"),
        "rlpd_utd1_bf16_compile_joint/sb3": ratio("rlpd_utd1_bf16_compile_joint", "sb3"),
        "rlpd_utd4_bf16_compile_joint_per_env_step/sb3": per_env_step("rlpd_utd4_bf16_compile_joint"),
        "sac2_bf16_compile_joint/sb3": ratio("sac2_bf16_compile_joint", "sb3"),
        "joint/two-step rlpd_utd1_bf16": ratio("rlpd_utd1_bf16_joint", "rlpd_utd1_bf16"),
        "joint/two-step rlpd_utd1_bf16_compile": ratio("rlpd_utd1_bf16_compile_joint", "rlpd_utd1_bf16_compile"),
        "joint/two-step rlpd_utd4_bf16_compile": ratio("rlpd_utd4_bf16_compile_joint", "rlpd_utd4_bf16_compile"),
    }
    if gpu is not None:  # the GPU's rows against this CPU's and against SB3 (on the CPU)
        ratios.update({
            "cuda/cpu rlpd_utd1": ratio("rlpd_utd1_cuda", "rlpd_utd1"),
            "cuda bf16/cpu fp32 rlpd_utd1": ratio("rlpd_utd1_cuda_bf16", "rlpd_utd1"),
            "rlpd_utd1_cuda/sb3 (cpu)": ratio("rlpd_utd1_cuda", "sb3"),
            "rlpd_utd1_cuda_bf16/sb3 (cpu)": ratio("rlpd_utd1_cuda_bf16", "sb3"),
        })  # fmt: skip

    print()
    print_table(
        ["row", "updates/s", "ms/update", "page faults/update"],
        [
            [v["label"], v["updates_per_s"], f"{v['ms_per_update']:.2f}", f"{v['page_faults_per_update']:.0f}"]
            for v in rows.values()
        ],
    )
    print()
    print_table(["ratio", "x"], [[k, "n/a" if v is None else f"{v:.2f}"] for k, v in ratios.items()])
    bench.print_notes()
    result = bench.result(
        rows,
        settings={**s, "hidden": list(s["hidden"])},
        machine={"sb3": sb3_version, "cuda_device": gpu},
        ratio=ratios["rlpd_utd1/sb3"],
        ratios=ratios,
    )
    if s["profile"]:
        result["profile"] = _profile_update(agents["rlpd_utd1"], itertools.cycle(fixed), max(5, warmup))
    return result
