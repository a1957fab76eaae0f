"""``robot-rl record``: scripted recording end to end, appending, schema refusal, operator marks (start, success,
failure, discard, quit) through a keyboard fed synthetic keys, Ctrl+C, and SIGKILL at random times."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from robot_rl.cli import compose, main
from robot_rl.data.store import EpisodeStore, StoreSchema
from robot_rl.envs.make import control_dt, make_env
from robot_rl.hil.devices import ActionLayout, KeyboardDevice, ScriptedDevice
from robot_rl.record import ACTION_SEMANTICS, Recorder

ROOT = Path(__file__).resolve().parents[1]


def reach_task():
    return compose("record", ["task=reach"]).task


def check_whole(store: EpisodeStore, source: str = "scripted") -> list[dict]:
    """Deep-validate ``store`` and check that every committed episode is whole; returns the notes."""
    assert store.validate(deep=True) == []
    notes = []
    for ep in store.iter_episodes():
        m = ep["metadata"]
        done = ep["terminated"] | ep["truncated"]
        assert m["length"] > 0 and done[-1] and not done[:-1].any(), m
        assert isinstance(m["success"], bool) and m["source"] == source and m["task"] == "reach"
        assert len(ep["action"]) == m["length"] and np.all(np.diff(ep["timestamp"]) >= 0)
        notes.append(json.loads(m["notes"]))
    return notes


def replays(store: EpisodeStore, i: int, env) -> bool:
    """Episode ``i`` is exactly what the env does from its seed under its actions (so no row is torn or stale)."""
    ep = store.episode(i)
    obs, _ = env.reset(seed=json.loads(ep["metadata"]["notes"])["seed"])
    for t, action in enumerate(ep["action"]):
        if not np.array_equal(obs["state"], ep["obs"]["state"][t]):
            return False
        obs, *_ = env.step(action)
    return np.array_equal(obs["state"], ep["final_obs"]["state"])


def test_record_scripted_appends_and_refuses_other_schema(tmp_path, capsys):
    out = tmp_path / "demos.zarr"
    args = ["record", "task=reach", "device=scripted", f"out={out}", "view=off"]
    assert main([*args, "episodes=3"]) == 0
    assert "recorded 3 episode(s)" in capsys.readouterr().out
    store = EpisodeStore.open(out, verify="full")
    assert len(store) == 3 and store.info()["success_rate"] == 1.0 and store.info()["sources"]["scripted"] == 3
    assert [n["seed"] for n in check_whole(store)] == [0, 1, 2]
    env = make_env(reach_task())
    expected = StoreSchema.from_spaces(env.observation_space, env.action_space, 1 / control_dt(env), ACTION_SEMANTICS)
    assert store.schema == expected
    assert replays(store, 2, env)
    ep = store.episode(0)
    assert ep["terminated"][-1] and ep["reward"][-1] == 1.0 and not ep["is_intervention"].any()
    np.testing.assert_allclose(ep["timestamp"], 0.1 * np.arange(len(ep["action"])))  # sim time when not paced

    assert main([*args, "episodes=2"]) == 0  # appends, continuing the seeds
    store = EpisodeStore.open(out, verify="full")
    assert len(store) == 5 and [n["seed"] for n in check_whole(store)] == [0, 1, 2, 3, 4]
    before = store.num_steps

    assert main([*args, "episodes=1", "obs=pixels"]) == 2
    err = capsys.readouterr().err
    assert "another schema" in err and "observation 'front'" in err
    assert main([*args, "episodes=0"]) == 2 and main([*args, "view=maybe"]) == 2
    assert main([*args, "device=joystick"]) == 2
    assert "valid choices: gamepad, keyboard, ros2, scripted, spacemouse" in capsys.readouterr().err
    store = EpisodeStore.open(out, verify="full")
    assert len(store) == 5 and store.num_steps == before


class ScriptedOperator(KeyboardDevice):
    """A keyboard whose keys come from a script: one list of key strokes per read ("+w" down, "-w" up, "y" tap)."""

    def __init__(self, layout, script):
        super().__init__(layout, listen=False)
        self.script = list(script)

    def read(self):
        for stroke in self.script.pop(0) if self.script else ["esc"]:
            if stroke[0] in "+-" and len(stroke) > 1:
                (self.press if stroke[0] == "+" else self.release)(stroke[1:])
            else:
                self.press(stroke)
                self.release(stroke)
        return super().read()


def test_operator_marks(tmp_path):
    env = make_env(reach_task())
    script = [
        [],
        [],
        ["enter"],
        ["+w"],
        [],
        ["-w", "y"],  # waits, starts, moves 2 steps, marks success
        ["enter"],
        ["+s"],
        ["backspace"],  # discarded
        ["-s", "enter"],
        [],
        ["n"],  # failure after one step (kept: keep_failures)
        ["enter"],
        ["+a"],
        [],
        [],
        ["y", "n"],  # both marks at once: failure wins
        [],
        ["esc"],  # quit while waiting
    ]
    dev = ScriptedOperator(ActionLayout.from_env(env), script)
    store = EpisodeStore.open(
        tmp_path / "s",
        "a",
        schema=StoreSchema.from_spaces(env.observation_space, env.action_space, 10.0, ACTION_SEMANTICS),
    )
    rec = Recorder(
        env,
        dev,
        store,
        task="reach",
        episodes=10,
        seed=7,
        keep_failures=True,
        success_reward=1.0,
        real_time=False,
        max_attempts=None,
        progress=False,
    )
    rec.dt = 0.0  # no waiting between polls in the test
    assert rec.run() == "quit"
    assert (rec.kept, rec.kept_success, rec.discarded, rec.attempts) == (3, 1, 1, 5)
    notes = check_whole(store, source="teleop")
    assert [n["end"] for n in notes] == ["operator_success", "operator_failure", "operator_failure"]
    assert [n["seed"] for n in notes] == [7, 9, 10]  # seed 8 was discarded
    ok, fail, both = store.episode(0), store.episode(1), store.episode(2)
    assert ok["metadata"]["success"] and ok["terminated"][-1] and ok["reward"][-1] == 1.0
    np.testing.assert_array_equal(ok["action"], [[1, 0, 0], [1, 0, 0]])  # W held for two steps
    assert ok["metadata"]["length"] == 2 and fail["metadata"]["length"] == 1
    assert not fail["metadata"]["success"] and fail["truncated"][-1] and not fail["terminated"].any()
    assert not both["metadata"]["success"] and both["metadata"]["length"] == 3
    np.testing.assert_array_equal(both["action"][:, 1], [1, 1, 1])  # A: +y
    assert replays(store, 0, env)  # the observation kept is the one after the re-reset at start


def test_failures_dropped_without_keep_failures(tmp_path):
    env = make_env(reach_task())
    dev = ScriptedOperator(ActionLayout.from_env(env), [["enter"], [], ["n"], ["enter"], ["y"], ["enter"], ["y"]])
    store = EpisodeStore.open(
        tmp_path / "s",
        "a",
        schema=StoreSchema.from_spaces(env.observation_space, env.action_space, 10.0, ACTION_SEMANTICS),
    )
    rec = Recorder(
        env,
        dev,
        store,
        task="reach",
        episodes=1,
        seed=0,
        keep_failures=False,
        success_reward=None,
        real_time=False,
        max_attempts=None,
        progress=False,
    )
    rec.dt = 0.0
    assert rec.run() == "done"
    assert (rec.kept, rec.dropped, len(store)) == (1, 1, 1)
    # a success mark on the first read after start finds nothing recorded, so it is ignored (that step is taken);
    # Enter during an episode does nothing; the next mark ends the episode after 2 steps
    ep = store.episode(0)
    assert ep["metadata"]["success"] and ep["metadata"]["length"] == 2 and ep["terminated"][-1]
    assert ep["reward"][-1] == 0.0  # success_reward=None keeps the env's reward


def test_ctrl_c_keeps_completed_episodes(tmp_path, monkeypatch, capsys):
    class Interrupting(ScriptedDevice):
        reads = 0

        def read(self):
            Interrupting.reads += 1
            if Interrupting.reads == 14:  # reach episodes take ~5 steps: mid third episode
                raise KeyboardInterrupt
            return super().read()

    monkeypatch.setattr("robot_rl.record.make_device", lambda name, env, **cfg: Interrupting(env))
    out = tmp_path / "s"
    assert main(["record", "task=reach", "device=scripted", "episodes=10", f"out={out}", "view=off"]) == 130
    printed = capsys.readouterr().out
    store = EpisodeStore.open(out, verify="full")
    assert 1 <= len(store) < 10 and f"recorded {len(store)} episode(s)" in printed and "interrupted" in printed
    check_whole(store)


def _commits(out: Path) -> int:
    try:
        return json.loads((out / "commit.json").read_bytes())["episodes"]
    except (OSError, ValueError):
        return 0


def _start(out: Path, log):
    cmd = [
        sys.executable,
        "-m",
        "robot_rl.cli",
        "record",
        "task=reach",
        "device=scripted",
        "episodes=1000",
        f"out={out}",
        "view=off",
    ]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "MUJOCO_GL": "egl"})


def _wait_for_more(proc, out: Path, than: int, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while _commits(out) <= than:
        assert proc.poll() is None, f"recorder exited early with {proc.returncode}"
        assert time.monotonic() - t0 < timeout, "no episode landed in time"
        time.sleep(0.02)


def kill_rounds(tmp_path: Path, rounds: int) -> None:
    """SIGKILL the recorder ``rounds`` times at random moments after an episode lands; after each kill the store is
    whole, never shrinks, and the next recorder appends to it. A final round ends with Ctrl+C (SIGINT): exit 130."""
    out, rng, env = tmp_path / "demos.zarr", random.Random(0), make_env(reach_task())
    count = 0
    with open(tmp_path / "log.txt", "wb") as log:
        for r in range(rounds + 1):
            proc = _start(out, log)
            try:
                _wait_for_more(proc, out, count)
                time.sleep(rng.uniform(0.0, 0.4))  # lands anywhere: mid-step, mid-append, mid-commit
                proc.send_signal(signal.SIGKILL if r < rounds else signal.SIGINT)
                rc = proc.wait(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            assert rc == (-signal.SIGKILL if r < rounds else 130), rc
            store = EpisodeStore.open(out, verify="full")
            notes = check_whole(store)
            seeds = [n["seed"] for n in notes]
            assert len(store) > count and seeds == sorted(set(seeds)), (count, seeds)
            assert all(n["end"] == "env_terminated" for n in notes) and store.info()["success_rate"] == 1.0
            # about 4 in 10 kills land mid-append; the episodes of this round (the first one written over the rows a
            # killed append left) are exactly what the env does under their actions
            assert all(replays(store, i, env) for i in range(count, len(store)))
            count = len(store)
    assert b"interrupted" in (tmp_path / "log.txt").read_bytes()


def test_sigkill_at_random_times_leaves_only_whole_episodes(tmp_path):
    kill_rounds(tmp_path, rounds=5)


@pytest.mark.slow
def test_sigkill_many_rounds(tmp_path):
    kill_rounds(tmp_path, rounds=12)


def test_human_time_limit_and_device_failure(tmp_path, monkeypatch, capsys):
    from robot_rl.hil.devices import DeviceError

    class Unplugged(ScriptedOperator):
        def read(self):
            if not self.script:
                raise DeviceError("keyboard: gone")
            return super().read()

    # episode 1: started and left alone until the time limit; episode 2: the device fails after one step
    script = [["enter"]] + [[]] * 200 + [["enter"], []]
    monkeypatch.setattr(
        "robot_rl.record.make_device", lambda name, env, **cfg: Unplugged(ActionLayout.from_env(env), script)
    )
    out = tmp_path / "s"
    args = ["record", "task=reach", "device=keyboard", f"out={out}", "view=off", "real_time=false"]
    assert main([*args, "keep_failures=true"]) == 1
    assert "keyboard: gone" in capsys.readouterr().err
    store = EpisodeStore.open(out, verify="full")
    (notes,) = check_whole(store, source="teleop")
    # a human gets 10x the task's 20-step limit
    assert store.episode(0)["metadata"]["length"] == 200 and notes["end"] == "env_truncated"
