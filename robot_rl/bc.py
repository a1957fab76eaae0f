"""``robot-rl train-bc``: clone the episodes of stores into a policy that predicts action chunks
(:class:`~robot_rl.agents.bc.BCAgent`), evaluate it in the task's simulator every ``eval.every`` updates and keep
``checkpoints/best`` and ``checkpoints/latest`` as every run here does (safetensors + JSON, the run's config and
its env spec). The result is a policy to deploy, or the frozen base of a residual RL run
(``robot-rl train base_policy=<run> agent=residual``).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robot_rl.agents.bc import BCAgent, BCConfig, chunk_targets
from robot_rl.data.store import EpisodeStore
from robot_rl.envs.contract import STATE_KEY


def bc_config(cfg: Any) -> BCConfig:
    """The policy's :class:`BCConfig` from a ``train_bc`` config (its top-level keys and ``bc:``)."""
    from omegaconf import OmegaConf

    extra = OmegaConf.to_container(cfg.bc, resolve=True) if cfg.get("bc") else {}
    top = {k: cfg[k] for k in ("policy", "chunk", "execute", "replan")}
    return BCConfig.from_dict({**extra, **top, "device": str(cfg.get("device", "auto"))})


class ChunkData:
    """Every cloned step: observations in the policy's buffer form and the chunk to predict there."""

    def __init__(self, agent: BCAgent, paths: Sequence[str | Path], schema: Any, only_successful: bool):
        obs: dict[str, list[np.ndarray]] = {}
        chunks, self.episodes, self.skipped = [], 0, 0
        if not paths:
            raise ValueError("no data: give the stores to clone, e.g. data=[runs/pick_cube/<run>/demos.zarr]")
        for path in paths:
            if not Path(path).exists():
                raise ValueError(f"data store {path} does not exist")
            with EpisodeStore.open(path) as store:
                problems = schema.mismatches(store.schema)
                if problems:
                    raise ValueError(f"store {path} does not match the task: " + "; ".join(problems))
                for ep in store.iter_episodes():
                    if only_successful and not ep["metadata"]["success"]:
                        self.skipped += 1
                        continue
                    ep = agent.featurize_episode(ep)
                    for k, v in ep["obs"].items():
                        obs.setdefault(k, []).append(np.asarray(v))
                    chunks.append(chunk_targets(ep["action"], agent.cfg.chunk))
                    self.episodes += 1
        if not chunks:
            raise ValueError(f"the stores {list(map(str, paths))} hold no episode to clone (only_successful="
                             f"{only_successful}, {self.skipped} skipped)")  # fmt: skip
        self.obs = {k: np.concatenate(v) for k, v in obs.items()}
        self.chunks = np.concatenate(chunks)

    def __len__(self) -> int:
        return len(self.chunks)

    def batches(self, batch_size: int, device: torch.device, rng: np.random.Generator) -> Iterator[dict[str, Any]]:
        """Random minibatches, forever."""
        obs = {k: torch.as_tensor(v) for k, v in self.obs.items()}
        chunks = torch.as_tensor(self.chunks)
        while True:
            i = torch.as_tensor(rng.integers(0, len(self), batch_size))
            yield {"obs": {k: v[i].to(device) for k, v in obs.items()}, "chunk": chunks[i].to(device)}


def save_policy(agent: BCAgent, cfg: Any, spec: dict[str, Any], path: Path) -> None:
    """``path`` (a checkpoint directory) replaced whole by the policy, the run's config and the env spec."""
    from omegaconf import OmegaConf

    from robot_rl.utils.checkpoint import replace_dir, save_state

    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_state(agent.state_dict(), tmp / "agent")
    (tmp / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (tmp / "spec.json").write_text(json.dumps(spec, indent=1))
    replace_dir(tmp, path)


def is_bc_run(train_cfg: Any) -> bool:
    """Whether a run's saved config is a ``train-bc`` run's."""
    return "chunk" in train_cfg and "policy" in train_cfg and "agent" not in train_cfg


def load_policy(path: str | Path, env: Any, device: str = "cpu") -> tuple[BCAgent, Path]:
    """The cloned policy of a ``train-bc`` run (its best checkpoint) or checkpoint directory, for ``env``; raises
    ``ValueError`` naming a path that holds none and every mismatch between its spec and the env's."""
    from omegaconf import OmegaConf

    from robot_rl.utils.checkpoint import find_checkpoint, load_state
    from robot_rl.utils.specs import check_spec, env_spec

    try:
        ckpt = find_checkpoint(path, prefer="best")
    except FileNotFoundError as e:
        raise ValueError(f"base policy: {e}; give a robot-rl train-bc run directory") from None
    saved = OmegaConf.load(ckpt / "config.yaml")
    if not is_bc_run(saved):
        raise ValueError(f"base policy {path} is not a robot-rl train-bc run (its config has no policy and chunk)")
    check_spec(json.loads((ckpt / "spec.json").read_text()), env_spec(env), f"{ckpt} (base policy)")
    cfg = bc_config(saved)
    cfg.device = device
    agent = BCAgent(env.observation_space, env.action_space, cfg)
    agent.load_state_dict(load_state(ckpt / "agent", agent.device))
    return agent, ckpt


def train_bc(cfg: Any, run_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Clone ``cfg.data`` for ``cfg.steps`` updates with evaluations every ``cfg.eval.every`` updates and one at
    the end; returns ``{"final", "run_dir", "data"}``."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    from robot_rl.collect import store_schema
    from robot_rl.envs.make import make_env
    from robot_rl.evaluate import evaluate, plot_history
    from robot_rl.utils.perf import set_threads
    from robot_rl.utils.specs import env_spec

    set_threads(int(cfg.threads))
    torch.manual_seed(int(cfg.seed))
    rng = np.random.default_rng(int(cfg.seed))
    env = make_env(cfg.task)
    agent = BCAgent(env.observation_space, env.action_space, bc_config(cfg))
    data = ChunkData(agent, list(cfg.data), store_schema(env), bool(cfg.only_successful))
    agent.fit_normalizer(data.obs[STATE_KEY])
    counts = {"episodes": data.episodes, "steps": len(data), "skipped": data.skipped}
    print(f"cloning {counts}", file=sys.stderr, flush=True)
    spec, total, every = env_spec(env), int(cfg.steps), int(cfg.eval.every)
    batches = data.batches(agent.batch_size, agent.device, rng)
    writer = SummaryWriter(str(run_dir / "tb"))
    history: list[dict[str, Any]] = []
    best = -1.0
    bar = tqdm(total=total, disable=not progress, unit="update", desc=f"{cfg.task.name}/bc-{cfg.policy} H={cfg.chunk}")
    try:
        while agent.num_updates < total:
            metrics = agent.update(batches)
            bar.update(1)
            if agent.num_updates % 100 == 1:
                writer.add_scalar("learner/bc_loss", metrics["bc_loss"], agent.num_updates)
            if agent.num_updates % every and agent.num_updates < total:
                continue
            t0 = time.perf_counter()
            res = evaluate(
                lambda o: agent.act(o, deterministic=True), env, int(cfg.eval.episodes), int(cfg.seed) + 100_000,
                reset=agent.reset,
            )  # fmt: skip
            res.update(step=agent.num_updates, updates=agent.num_updates, bc_loss=metrics["bc_loss"])
            res["eval_seconds"] = time.perf_counter() - t0
            history.append(res)
            writer.add_scalar("eval/success_rate", res["success_rate"], agent.num_updates)
            with open(run_dir / "eval.jsonl", "a") as f:
                f.write(json.dumps(res) + "\n")
            save_policy(agent, cfg, spec, run_dir / "checkpoints" / "latest")
            if res["success_rate"] > best:
                best = res["success_rate"]
                save_policy(agent, cfg, spec, run_dir / "checkpoints" / "best")
            bar.set_postfix_str(f"eval success {res['success_rate']:.0%}, loss {metrics['bc_loss']:.4f}")
            plot_history(history, run_dir / "curve.png", str(cfg.task.name), f"bc-{cfg.policy}, chunk {cfg.chunk}",
                         xlabel="updates")  # fmt: skip
    finally:
        bar.close()
        writer.close()
        env.close()
    return {"final": history[-1] if history else {}, "run_dir": str(run_dir), "data": counts}
