"""``robot-rl``: one console script, one subcommand per job, hydra ``key=value`` overrides everywhere."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from robot_rl.utils.config import CONFIG_DIR, group_choices

BENCHES = (
    "learner",
    "sample-efficiency",
    "data",
    "act",
    "encoder",
    "hil",
    "reward",
    "ros2",
    "fleet",
    "offline",
    "residual",
)


class UsageError(Exception):
    """A bad command line or config: printed as one line, exit status 2."""


def compose(config_name: str, overrides: Sequence[str]) -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` with hydra overrides; config errors become one-line UsageErrors."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    if not CONFIG_DIR.is_dir():
        raise UsageError(f"config directory {CONFIG_DIR} not found; set ROBOT_RL_CONFIG_DIR or install with pip -e")
    for ov in overrides:
        if "=" not in ov and not ov.startswith("~"):
            raise UsageError(f"malformed override {ov!r}: expected key=value (e.g. task=pick_cube seed=1)")
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            cfg = hydra_compose(config_name, overrides=list(overrides))
        OmegaConf.resolve(cfg)
        OmegaConf.set_struct(cfg, False)
        return cfg
    except Exception as e:  # hydra raises several types; all are the user's input, all get one line
        raise UsageError(_explain_config_error(e)) from None


def _explain_config_error(e: Exception) -> str:
    msg = str(e)
    missing = re.search(r"Could not find '([\w-]+)/([\w-]+)'", msg)
    if missing:
        group, name = missing.groups()
        return f"unknown {group} {name!r}; valid choices: {', '.join(group_choices(group))}"
    key = re.search(r"Could not override '([\w.]+)'", msg) or re.search(r"Key '([\w.]+)' is not in struct", msg)
    if key:
        return f"unknown config key {key.group(1)!r}; see configs/ for the valid keys (prefix + to add a new one)"
    first = next((ln.strip() for ln in msg.splitlines() if ln.strip()), type(e).__name__)
    return f"bad config: {first}"


def _default_run_dir(cfg: DictConfig) -> Path:
    stamp = time.strftime("%Y%m%d_%H%M%S")
    return Path("runs") / str(cfg.task.name) / f"{stamp}_{cfg.agent.name}_s{cfg.seed}"


def cmd_train(overrides: Sequence[str]) -> int:
    from robot_rl.trainer import Trainer

    cfg = compose("train", overrides)
    resume = cfg.get("resume")
    if resume:
        ckpt = _find_checkpoint(Path(resume), prefer="latest")
        run_dir = ckpt.parent.parent
        saved = OmegaConf.load(ckpt / "config.yaml")
        if "data" in saved and "steps" in saved:
            raise UsageError(
                f"{run_dir} is an offline run: continue it online with robot-rl train init_from={run_dir}, or run "
                "robot-rl train-offline again"
            )
        # The run continues with its own config; only how long it runs may change on the command line.
        saved.total_steps = (
            cfg.total_steps if any(o.startswith("total_steps=") for o in overrides) else saved.total_steps
        )
        saved.resume = str(resume)
        cfg = saved
    else:
        run_dir = Path(cfg.run_dir) if cfg.get("run_dir") else _default_run_dir(cfg)
    _validate_train(cfg)
    wants_expert = not cfg.demos.get("path") and int(cfg.demos.episodes) > 0
    if not resume and wants_expert and not cfg.task.get("has_expert", True):
        raise UsageError(
            f"task {cfg.task.name} has no scripted expert to collect demos.episodes="
            f"{cfg.demos.episodes}; add demos.episodes=0 (and e.g. random_steps=1000 agent=sac)"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.runtime.name == "ray":
        from robot_rl.runtime.fleet import run_fleet

        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
        print(
            f"training {cfg.task.name} with {cfg.agent.name}: {cfg.runtime.actors} actors on Ray; outputs in {run_dir}/"
        )
        code = run_fleet(run_dir, resume=bool(resume))
        if code == 130:
            print(f"stopped. resume with: robot-rl train resume={run_dir}")
        return code
    if cfg.runtime.name in ("async", "ros2"):
        from robot_rl.runtime.supervisor import run_async

        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
        print(f"training {cfg.task.name} with {cfg.agent.name}: actor and learner processes; outputs in {run_dir}/")
        code = run_async(run_dir, restarts=int(cfg.runtime.restarts))
        if code == 130:
            print(f"stopped. resume with: robot-rl train resume={run_dir}")
        return code
    trainer = Trainer(cfg, run_dir)
    if resume:
        trainer.load_checkpoint(ckpt)
        print(f"resuming {run_dir} at step {trainer.step}")
    else:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
        print("starting:", json.dumps(trainer.start_fresh()))
    a = trainer.agent
    fast = a.precision + (", compiled" if hasattr(a, "prepare_update") and a.prepare_update() else "")
    print(f"training {cfg.task.name} with {cfg.agent.name} on {a.device} ({fast}); outputs in {run_dir}/")
    from robot_rl.utils.signals import ctrl_c_stops

    ctrl_c_stops()  # also when started in the background or stopped with kill / timeout
    try:
        out = trainer.train()
    except KeyboardInterrupt:
        print(f"stopped. resume with: robot-rl train resume={run_dir}")
        return 130
    final = out["final"]
    nan = float("nan")
    print(
        f"final eval: success {final.get('success_rate', nan):.0%} over {cfg.eval.episodes} episodes, "
        f"return {final.get('return_mean', nan):.2f}, cycle time {final.get('cycle_time_s', nan):.1f} s"
    )
    print(
        f"outputs: {run_dir}/  "
        "(checkpoints/best, checkpoints/latest, curve.png, eval.jsonl, demos.zarr, online.zarr, tb/)"
    )
    return 0


def _refuse_robot_task(cfg: DictConfig, command: str) -> None:
    """A command that learns from stores evaluates in simulation: a robot task gets the fix named."""
    if str(cfg.task.get("env_id", "")).startswith("hw."):
        raise UsageError(
            f"task={cfg.task.name} is a robot: {command} evaluates in simulation, so give the simulated task the data "
            "match (e.g. task=reach for data from ros2_reach)"
        )


def cmd_train_offline(overrides: Sequence[str]) -> int:
    from robot_rl.offline import train_offline

    cfg = compose("train_offline", overrides)
    if cfg.get("resume") or cfg.get("init_from"):
        raise UsageError("train-offline starts from its data: resume= and init_from= are for robot-rl train")
    _refuse_robot_task(cfg, "train-offline")
    _validate_train(cfg)
    if not isinstance(cfg.steps, int) or isinstance(cfg.steps, bool) or cfg.steps < 1:
        raise UsageError(f"steps={cfg.steps!r} must be a positive integer (updates)")
    run_dir = Path(cfg.run_dir) if cfg.get("run_dir") else _default_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    from robot_rl.utils.signals import ctrl_c_stops

    ctrl_c_stops()
    try:
        out = train_offline(cfg, run_dir)
    except ValueError as e:  # the data: a missing, empty, mismatched or unlabelled store
        raise UsageError(str(e)) from None
    except KeyboardInterrupt:
        print(f"stopped; the last checkpoint is {run_dir / 'checkpoints/latest'}")
        return 130
    final = out["final"]
    print(
        f"final eval: success {final.get('success_rate', float('nan')):.0%} over {cfg.eval.episodes} episodes after "
        f"{final.get('updates', 0)} updates. continue online: robot-rl train init_from={run_dir} agent={cfg.agent.name}"
    )
    return 0


def _validate_train(cfg: DictConfig) -> None:
    ints = [
        "seed",
        "threads",
        "total_steps",
        "random_steps",
        "learning_starts",
        "buffer_capacity",
        "demos.episodes",
        "eval.every",
        "eval.episodes",
        "eval.confirm",
        "demo_warmup_updates",
    ]
    for key in ints:
        val = OmegaConf.select(cfg, key)
        if val is None and key in ("eval.confirm", "demo_warmup_updates"):  # a run saved before these existed: off
            continue
        if not isinstance(val, int) or isinstance(val, bool) or (val < 0 and key != "seed"):
            raise UsageError(f"{key}={val!r} must be a non-negative integer")
    from robot_rl.agents.residual import check_base_policy

    try:
        check_base_policy(cfg)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not isinstance(cfg.demo_fraction, (int, float)) or not 0 <= cfg.demo_fraction <= 1:
        raise UsageError(f"demo_fraction={cfg.demo_fraction!r} must be a number in [0, 1]")
    if cfg.eval.every < 1 or cfg.eval.episodes < 1:
        raise UsageError("eval.every and eval.episodes must be >= 1")
    frm = cfg.eval.get("confirm_from", 0.5)
    if isinstance(frm, bool) or not isinstance(frm, (int, float)) or not 0 <= frm <= 1:
        raise UsageError(f"eval.confirm_from={frm!r} must be a success rate in [0, 1]")
    corr = cfg.get("corrections") or {}
    unknown = sorted(set(corr) - {"demo_buffer", "takeover_reward", "trigger_reward"})
    if unknown:
        raise UsageError(
            f"unknown corrections option(s) {unknown}; valid: demo_buffer, takeover_reward, trigger_reward"
        )
    if not isinstance(corr.get("demo_buffer", False), bool):
        raise UsageError(f"corrections.demo_buffer={corr.get('demo_buffer')!r} must be true or false")
    r = corr.get("takeover_reward", 0.0)
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r):
        raise UsageError(f"corrections.takeover_reward={r!r} must be a finite number (RLIF: -1; 0: off)")
    consecutive = int(OmegaConf.select(cfg, "reward.consecutive") or 1)
    if consecutive > 1 and OmegaConf.select(cfg, "task.env_kwargs.terminate_on_success"):
        print(
            f"warning: reward.consecutive={consecutive} waits for {consecutive} frames in a row, but the task ends at "
            "its first success frame, so a real success is never paid; set "
            'task.env_kwargs.terminate_on_success=false (README "Learned rewards under RL")',
            file=sys.stderr,
        )
    r = corr.get("trigger_reward")
    if r is not None and (isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r)):
        raise UsageError(f"corrections.trigger_reward={r!r} must be a finite number (e.g. -1) or null (off)")


def _find_checkpoint(path: Path, prefer: str) -> Path:
    """:func:`~robot_rl.utils.checkpoint.find_checkpoint`, its error as a usage error."""
    from robot_rl.utils.checkpoint import find_checkpoint

    try:
        return find_checkpoint(path, prefer)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None


def cmd_eval(overrides: Sequence[str]) -> int:
    from robot_rl.agents.residual import wrap_base_policy
    from robot_rl.agents.sac import SAC, SACConfig
    from robot_rl.bc import is_bc_run, load_policy
    from robot_rl.envs.make import make_env
    from robot_rl.evaluate import evaluate
    from robot_rl.trainer import set_threads
    from robot_rl.utils.checkpoint import load_state
    from robot_rl.utils.specs import check_spec, env_spec

    cfg = compose("eval", overrides)
    ckpt = _find_checkpoint(Path(str(cfg.checkpoint)), prefer="best")
    train_cfg = OmegaConf.load(ckpt / "config.yaml")
    set_threads(int(cfg.threads))
    env = make_env(train_cfg.task, render_mode="rgb_array" if cfg.video else None)
    if is_bc_run(train_cfg):  # a train-bc policy: checks its spec, its chunk executor resets with each episode
        agent, _ = load_policy(ckpt, env, str(cfg.device))
    else:
        env = wrap_base_policy(env, train_cfg)  # a residual run's base policy proposes, the agent corrects
        check_spec(json.loads((ckpt / "spec.json").read_text()), env_spec(env), str(ckpt))
        agent_cfg = SACConfig.from_dict({**OmegaConf.to_container(train_cfg.agent), "device": cfg.device})
        agent = SAC(env.observation_space, env.action_space, agent_cfg)
        agent.load_state_dict(load_state(ckpt / "agent", agent.device))
    policy, reset = (lambda o: agent.act(o, deterministic=True)), getattr(agent, "reset", None)
    n = int(cfg.episodes)
    res = evaluate(policy, env, n, int(cfg.seed), cfg.video, reset=reset, progress=n >= 100)
    cyc = res["cycle_time_s"]
    print(f"{train_cfg.task.name} | checkpoint {ckpt}")
    print(
        f"success rate {res['success_rate']:.1%} (95% CI {res['success_ci_low']:.1%}-{res['success_ci_high']:.1%}) "
        f"over {n} episodes | mean cycle time {'n/a' if math.isnan(cyc) else f'{cyc:.2f} s'} | return "
        f"{res['return_mean']:.2f} | length {res['length_mean']:.1f} steps"
    )
    failed = res["failed_seeds"]
    if failed:
        print(f"{len(failed)} failed episode(s), seeds {failed[:20]}{' ...' if len(failed) > 20 else ''}")
        ends = ", ".join(f"{k} {v:.3g}" for k, v in res["failure_endings"].items())
        print(f"how they ended (means over the failed episodes): {ends}")
    if cfg.video:
        print(f"video: {cfg.video}")
    if cfg.get("failures_video") and failed:  # the failures again, rendered: a deterministic policy repeats them
        shown = failed[: int(cfg.failures_max)]
        render_env = make_env(train_cfg.task, render_mode="rgb_array")
        if not is_bc_run(train_cfg):
            render_env = wrap_base_policy(render_env, train_cfg)
        again = evaluate(policy, render_env, len(shown), 0, cfg.failures_video, reset=reset, seeds=shown)
        print(f"video of {len(shown)} failed episode(s): {cfg.failures_video}")
        if len(again["failed_seeds"]) != len(shown):
            print(f"note: {len(shown) - len(again['failed_seeds'])} of them succeeded on replay: not deterministic")
    if cfg.get("json"):
        Path(str(cfg.json)).write_text(json.dumps({"checkpoint": str(ckpt), "task": str(train_cfg.task.name), **res}))
    return 0


def cmd_train_reward(overrides: Sequence[str]) -> int:
    from robot_rl.rewards import train_reward_main

    return train_reward_main(compose("train_reward", overrides))


def cmd_record(overrides: Sequence[str]) -> int:
    from robot_rl.record import run_record

    # ``device`` names the torch device in train/eval; for recording it is the teleop device (config group teleop).
    overrides = [re.sub(r"^(\+?)device([.=])", r"\1teleop\2", ov) for ov in overrides]
    return run_record(compose("record", overrides))


def cmd_data(argv: Sequence[str]) -> int:
    from robot_rl.data.tools import main as data_main

    return data_main(list(argv))


def cmd_bench(name: str, quick: bool, json_path: str | None, overrides: Sequence[str]) -> int:
    import importlib

    if name not in BENCHES:
        raise UsageError(f"unknown benchmark {name!r}; valid choices: {', '.join(BENCHES)}")
    # Benchmarks of the learning core live in robot_rl.bench; the ROS2 one with the ROS2 code it measures (hw).
    module = importlib.import_module({"ros2": "hw.bench_ros2"}.get(name, f"robot_rl.bench.{name.replace('-', '_')}"))
    result = module.run(quick=quick, overrides=list(overrides))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2))
        print(f"wrote {json_path}")
    return 0


def cmd_train_bc(overrides: Sequence[str]) -> int:
    from robot_rl.bc import train_bc

    cfg = compose("train_bc", overrides)
    _refuse_robot_task(cfg, "train-bc")
    for key in ("steps", "chunk"):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < 1:
            raise UsageError(f"{key}={cfg[key]!r} must be a positive integer")
    if not cfg.get("run_dir"):
        stamp = time.strftime("%Y%m%d_%H%M%S")
        cfg.run_dir = str(Path("runs") / str(cfg.task.name) / f"{stamp}_bc-{cfg.policy}_s{cfg.seed}")
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    from robot_rl.utils.signals import ctrl_c_stops

    ctrl_c_stops()
    try:
        out = train_bc(cfg, run_dir)
    except KeyboardInterrupt:
        print(f"stopped; the last checkpoint is {run_dir / 'checkpoints/latest'}")
        return 130
    final = out["final"]
    print(
        f"final eval: success {final.get('success_rate', float('nan')):.0%} over {cfg.eval.episodes} episodes after "
        f"{final.get('updates', 0)} updates. refine it with RL: robot-rl train task={cfg.task.name} "
        f"base_policy={run_dir} agent=residual"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="robot-rl", description="Real-world robot RL: train in sim, fine-tune on the arm.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    t = sub.add_parser("train", help="train a policy (e.g. robot-rl train task=pick_cube agent=rlpd seed=1)")
    t.add_argument("overrides", nargs="*", help="hydra overrides key=value (see configs/train.yaml)")
    e = sub.add_parser("eval", help="evaluate a checkpoint (robot-rl eval checkpoint=PATH episodes=20 video=out.mp4)")
    e.add_argument("overrides", nargs="*", help="checkpoint=PATH [episodes=N] [video=PATH] [seed=S]")
    o = sub.add_parser(
        "train-offline",
        help="train a policy from episode stores alone (robot-rl train-offline data=[demos.zarr] agent=iql)",
    )
    o.add_argument("overrides", nargs="*", help="hydra overrides key=value (see configs/train_offline.yaml)")
    bc = sub.add_parser(
        "train-bc",
        help="clone stores into a policy predicting action chunks (robot-rl train-bc data=[demos.zarr] policy=flow)",
    )
    bc.add_argument("overrides", nargs="*", help="hydra overrides key=value (see configs/train_bc.yaml)")
    tr = sub.add_parser(
        "train-reward",
        help="train a success classifier from a store (robot-rl train-reward data=demos.zarr out=reward_model/)",
    )
    tr.add_argument("overrides", nargs="*", help="hydra overrides key=value (see configs/train_reward.yaml)")
    r = sub.add_parser(
        "record",
        help="record teleop demos into a store "
        "(robot-rl record task=pick_cube device=spacemouse episodes=20 out=demos.zarr)",
    )
    r.add_argument("overrides", nargs="*", help="hydra overrides key=value (see configs/record.yaml)")
    d = sub.add_parser(
        "data",
        help="inspect and convert episode stores: info, validate, merge, export-lerobot, "
        "import-rosbag (robot-rl data info demos.zarr)",
        add_help=False,
    )
    d.add_argument("args", nargs=argparse.REMAINDER, help="robot-rl data --help for the subcommands")
    b = sub.add_parser("bench", help=f"run a benchmark: {', '.join(BENCHES)}")
    b.add_argument("name", help=", ".join(BENCHES))
    b.add_argument("--quick", action="store_true", help="a short version (under 2 minutes)")
    b.add_argument("--json", dest="json_path", help="write every figure to this JSON file")
    b.add_argument("overrides", nargs="*", help="hydra overrides for the benchmark's runs")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from robot_rl.utils.perf import tune_malloc

    tune_malloc()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["data"]:  # its own parser, so ``robot-rl data --help`` lists the data subcommands
        return cmd_data(argv[1:])
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    bad = [a for a in extra if a.startswith("-") or "=" not in a]
    if bad or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(bad or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]  # overrides may follow flags: bench learner --quick threads=1
    try:
        if args.command == "train":
            return cmd_train(args.overrides)
        if args.command == "eval":
            return cmd_eval(args.overrides)
        if args.command == "train-offline":
            return cmd_train_offline(args.overrides)
        if args.command == "train-bc":
            return cmd_train_bc(args.overrides)
        if args.command == "train-reward":
            return cmd_train_reward(args.overrides)
        if args.command == "record":
            return cmd_record(args.overrides)
        if args.command == "bench":
            return cmd_bench(args.name, args.quick, args.json_path, args.overrides)
        parser.print_help()
        return 0
    except UsageError as e:
        print(f"robot-rl: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # bad values found past config composition (spec mismatch, bad env kwargs, ...)
        print(f"robot-rl: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
