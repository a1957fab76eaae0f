"""Actor/learner runtime: messages, rate limiting, and the reliability drills (SIGKILL either side, Ctrl+C)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from robot_rl.cli import compose
from robot_rl.data.store import EpisodeStore
from robot_rl.runtime.keys import runtime_key
from robot_rl.runtime.messages import MAX_MESSAGE_BYTES, MessageError, decode, encode
from robot_rl.runtime.rate import RateLimiter
from robot_rl.runtime.supervisor import spawn, stop_all
from robot_rl.utils.checkpoint import load_state

TESTS = str(Path(__file__).parent)


def test_message_round_trip_and_refusals():
    blob = encode("weights", {"version": 7}, {"actor.w": np.arange(6, dtype=np.float32).reshape(2, 3)})
    msg = decode(blob)
    assert msg.kind == "weights" and msg.meta == {"version": 7}
    np.testing.assert_array_equal(msg.arrays["actor.w"], np.arange(6).reshape(2, 3))
    import pickle

    for bad in (b"", b"\x00" * 16, pickle.dumps({"kind": "weights"}), blob[:-3]):
        with pytest.raises(MessageError, match="malformed"):
            decode(bad)
    with pytest.raises(MessageError, match="exceeds"):
        decode(b"\x00" * (MAX_MESSAGE_BYTES + 1))
    with pytest.raises(MessageError, match="unknown message kind"):
        encode("exec", {})


def test_rate_limiter_holds_the_update_to_data_ratio():
    lim = RateLimiter(updates_per_step=2.0, learning_starts=10)
    assert lim.budget(9) == 0 and lim.budget(10) == 2 and lim.budget(19) == 20
    assert lim.allowed(19, 15) == 5 and lim.allowed(19, 25) == 0  # never ahead, catches up when behind
    with pytest.raises(ValueError, match="updates_per_step"):
        RateLimiter(0)


def _run_dir(tmp_path, toy_task, **over):
    cfg = compose(
        "train",
        [
            "~task",
            "runtime=async",
            "agent.hidden_dims=[32,32]",
            "agent.num_critics=2",
            "agent.batch_size=32",
            "demos.episodes=3",
            "eval.episodes=2",
            "eval.every=100000",
            "learning_starts=50",
            "runtime.real_time=false",
            "runtime.weights_every=5",
        ],
    )
    cfg.task = OmegaConf.create(toy_task)
    for k, v in over.items():
        OmegaConf.update(cfg, k, v)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    runtime_key(run)
    return run


def _store_steps(run):
    try:
        with EpisodeStore.open(run / "online.zarr") as s:
            return s.num_steps
    except Exception:
        return 0


def _wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def tests_on_path(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", TESTS + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_learner_killed_actor_holds_then_a_restarted_learner_resumes(tmp_path, toy_task, tests_on_path):
    run = _run_dir(tmp_path, toy_task, total_steps=1500, **{"runtime.max_weight_lag_steps": 60})
    procs = {"actor": spawn("actor", run), "learner": spawn("learner", run)}
    try:
        _wait(lambda: _store_steps(run) >= 200, 120, "the actor to record 200 steps")
        at_kill = _store_steps(run)
        procs["learner"].send_signal(signal.SIGKILL)
        procs["learner"].wait()
        # The actor holds once 60 control steps (max_weight_lag_steps) pass without new weights: it may still file
        # the episode under way (25 steps at most) and 60 steps more, twice that if weights were in flight at the
        # kill. A bound in steps, not a quiet spell in seconds, so a slow machine cannot fail it; an actor that did
        # not hold would run on to 1,500.
        bound = at_kill + 25 + 2 * 60
        for _ in range(2):
            time.sleep(2.0)
            assert _store_steps(run) <= bound and procs["actor"].poll() is None, (_store_steps(run), bound)
        procs["learner"] = spawn("learner", run)
        assert procs["actor"].wait(timeout=240) == 0 and procs["learner"].wait(timeout=60) == 0
    finally:
        stop_all(procs, grace_s=5)
    state = load_state(run / "checkpoints/latest/trainer")
    with EpisodeStore.open(run / "online.zarr") as store:
        assert not store.validate()
        assert state["step"] == store.num_steps >= 1500 and state["episode"] == len(store)


def test_actor_killed_learner_waits_and_continues_with_a_restarted_actor(tmp_path, toy_task, tests_on_path):
    run = _run_dir(tmp_path, toy_task, total_steps=900)
    procs = {"actor": spawn("actor", run), "learner": spawn("learner", run)}
    try:
        _wait(lambda: _store_steps(run) >= 200, 120, "the actor to record 200 steps")
        procs["actor"].send_signal(signal.SIGKILL)
        procs["actor"].wait()
        time.sleep(1.5)
        assert procs["learner"].poll() is None  # the learner waits for the actor to return
        procs["actor"] = spawn("actor", run)
        assert procs["actor"].wait(timeout=240) == 0 and procs["learner"].wait(timeout=60) == 0
    finally:
        stop_all(procs, grace_s=5)
    state = load_state(run / "checkpoints/latest/trainer")
    with EpisodeStore.open(run / "online.zarr") as store:
        assert not store.validate() and state["step"] == store.num_steps and state["episode"] == len(store)


def _children_of(run):
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(run) in cmd and "robot_rl" in cmd:
                out.append((pid, cmd))
    return out


def test_ctrl_c_stops_everything_and_leaves_the_store_consistent(tmp_path, toy_task, tests_on_path):
    run = _run_dir(tmp_path, toy_task, total_steps=100000)
    cmd = [
        sys.executable,
        "-c",
        f"import sys; from robot_rl.runtime.supervisor import run_async; sys.exit(run_async({str(run)!r}))",
    ]
    launcher = subprocess.Popen(cmd, start_new_session=True)
    try:
        _wait(lambda: _store_steps(run) >= 100, 120, "training to start")
        os.killpg(launcher.pid, signal.SIGINT)  # what Ctrl+C in a terminal does: the whole process group
        assert launcher.wait(timeout=60) == 130
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    time.sleep(0.5)
    assert _children_of(run) == []
    with EpisodeStore.open(run / "online.zarr") as store:
        assert not store.validate() and len(store) > 0


def _scalar_tags(run: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return set(EventAccumulator(str(run / "tb")).Reload().Tags()["scalars"])


def test_sync_and_async_account_interventions_alike_and_log_the_same_metrics(tmp_path):
    """Sync (one process) and async (actor and learner processes) on the same seed count the operator's steps the same
    way (what the learner reports at each evaluation and in its checkpoint is what the store holds) and log the same
    tensorboard tags: both run the one collection loop and the trainer's public methods."""
    import json

    from robot_rl.cli import main

    tags = {}
    for runtime in ("sync", "async"):
        run = tmp_path / runtime
        paced = ["runtime.real_time=false"] if runtime == "async" else []  # the sync loop never paces in sim
        assert (
            main(
                [
                    "train",
                    "task=reach",
                    "hil=sim_operator_heavy",
                    f"runtime={runtime}",
                    *paced,
                    "total_steps=200",
                    "learning_starts=50",
                    "demos.episodes=3",
                    "eval.every=100",
                    "eval.episodes=2",
                    "agent.hidden_dims=[32,32]",
                    "agent.num_critics=2",
                    "agent.batch_size=32",
                    "threads=1",
                    "seed=3",
                    f"run_dir={run}",
                ]
            )
            == 0
        )
        with EpisodeStore.open(run / "online.zarr") as store:
            info = store.info()
            assert info["steps"] >= 200 and info["sources"]["intervention"] > 0
            assert 0 < info["intervention_fraction"] < 1
            flags = store.step_field("is_intervention")
        state = load_state(run / "checkpoints/latest/trainer")
        assert state["step"] == info["steps"] == len(flags)
        assert state["intervention_steps"] == int(flags.sum()) > 0
        last = json.loads((run / "eval.jsonl").read_text().splitlines()[-1])
        assert last["intervention_steps"] == int(flags.sum())
        assert last["intervention_share"] == pytest.approx(flags.mean())
        tags[runtime] = _scalar_tags(run)
    assert {
        "train/episode_success",
        "train/intervention_rate",
        "train/weight_lag_steps",
        "eval/success_rate",
        "learner/critic_loss",
    } <= tags["sync"]
    assert tags["sync"] == tags["async"], tags["sync"] ^ tags["async"]


class _NoTransport:
    def close(self):
        pass


def test_a_learner_syncing_from_the_store_puts_the_interventions_in_its_demo_buffer(tmp_path):
    """The learner's sync with the actor's store (on connect and on resync) fills its buffers as training did live:
    the corrected segments go to the demo buffer too."""
    import shutil

    from robot_rl.runtime.learner import Learner
    from robot_rl.trainer import Trainer

    cfg = compose(
        "train",
        [
            "task=reach",
            "hil=sim_operator_heavy",
            "corrections.demo_buffer=true",
            "runtime=async",
            "agent.hidden_dims=[32,32]",
            "agent.num_critics=2",
            "agent.batch_size=32",
            "demos.episodes=2",
            "total_steps=80",
            "learning_starts=100000",
            "eval.every=100000",
            "eval.episodes=1",
            "threads=1",
            "device=cpu",
        ],
    )
    live = Trainer(cfg, tmp_path / "live")  # the experience and buffers a learner fed episode by episode ends with
    live.start_fresh()
    live.train(progress=False)
    assert live.demo.is_intervention[: len(live.demo)].any()
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    shutil.copytree(tmp_path / "live/online.zarr", run / "online.zarr")
    learner = Learner(run, transport=_NoTransport())
    try:
        learner._sync(live.episode // 2)  # a first connection, then a resync picks up the rest
        learner._sync(live.episode)
        tr = learner.trainer
        assert (tr.episode, tr.step, tr.intervention_steps) == (live.episode, live.step, live.intervention_steps)
        assert tr.intervention_steps > 0
        for mine, theirs in ((tr.demo, live.demo), (tr.online, live.online)):
            a, b = mine.state_dict(), theirs.state_dict()
            assert a["size"] == b["size"] > 0
            for k in ("action", "reward", "terminated", "truncated", "is_intervention", "final_slots"):
                np.testing.assert_array_equal(a[k], b[k], err_msg=k)
            np.testing.assert_array_equal(a["obs"]["state"], b["obs"]["state"])
            np.testing.assert_array_equal(a["final_next_obs"]["state"], b["final_next_obs"]["state"])
    finally:
        learner.close()


def test_async_run_stops_once_the_evaluation_reaches_stop_at_success(tmp_path):
    """eval.stop_at_success ends an async run at that evaluation, as it does a sync one (0: the first evaluation)."""
    from robot_rl.cli import main

    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "task=reach",
                "runtime=async",
                "runtime.real_time=false",
                "total_steps=2000",
                "learning_starts=50",
                "demos.episodes=2",
                "eval.every=100",
                "eval.episodes=1",
                "eval.stop_at_success=0",
                "agent.hidden_dims=[32,32]",
                "agent.num_critics=2",
                "agent.batch_size=32",
                f"run_dir={run}",
            ]
        )
        == 0
    )
    with EpisodeStore.open(run / "online.zarr") as store:
        assert store.num_steps < 1000  # far short of total_steps: stopped at (about) the first evaluation
    assert load_state(run / "checkpoints/latest/trainer")["history"][0]["step"] >= 100


def test_a_stop_request_holds_ctrl_c_until_checked_and_a_second_one_raises_at_once():
    """The actor's Ctrl+C: recorded by the handler (never raised inside a native call), raised by check(); a second
    Ctrl+C raises at once; the handlers before it are back afterwards."""
    import os
    import signal

    from robot_rl.utils.signals import StopRequest

    before = signal.getsignal(signal.SIGINT)
    stop = StopRequest()
    with stop.installed():
        stop.check()  # nothing asked yet
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.asked.is_set()  # recorded, not raised
        with pytest.raises(KeyboardInterrupt):
            stop.check()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # the second one (Python runs the handler right after the call)
    assert signal.getsignal(signal.SIGINT) is before
