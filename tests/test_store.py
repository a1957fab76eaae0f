"""Zarr episode store: round trip, next-observation derivation, random access, metadata, schema and input checks,
corruption detection, compression, and atomic appends under SIGKILL."""

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from gymnasium import spaces

from robot_rl.data.store import SOURCES, EpisodeStore, StoreError, StoreSchema, next_observations

D, A, HW = 5, 3, 16
SCHEMA = StoreSchema({"state": ((D,), "float32"), "front": ((HW, HW, 3), "uint8")}, A, 10.0, "dx dy dz, gripper")
STEP_KEYS = ("action", "reward", "terminated", "truncated", "is_intervention", "timestamp")


def make_episode(i: int) -> dict:
    """Episode ``i`` (length 2..6), every value derived from ``i``; row T of the observations is the final one."""
    T = 2 + i % 5
    t = np.arange(T + 1)
    state = (i * 1000 + 10 * t[:, None] + np.arange(D)).astype(np.float32)
    front = np.empty((T + 1, HW, HW, 3), np.uint8)
    front[:] = ((i * 7 + 3 * t[:, None, None, None] + np.arange(HW)[:, None, None]) % 256).astype(np.uint8)
    last, term = np.arange(T) == T - 1, i % 2 == 0
    return dict(
        obs={"state": state[:T], "front": front[:T]},
        final_obs={"state": state[T], "front": front[T]},
        action=np.sin(i + np.arange(T * A)).reshape(T, A).astype(np.float32),
        reward=((i + np.arange(T)) / 10).astype(np.float32),
        terminated=last & term,
        truncated=last & (not term),
        is_intervention=np.arange(T) % 3 == i % 3,
        timestamp=i * 100.0 + np.arange(T) / 10,
        success=i % 3 == 0,
        source=SOURCES[i % 4],
        task=f"task{i % 2}",
        notes=f"episode {i}\nline two ✓",
        start_time=1.7e9 + i,
    )


def assert_episode(got: dict, i: int) -> None:
    exp = make_episode(i)
    for k in ("state", "front"):
        np.testing.assert_array_equal(got["obs"][k], exp["obs"][k])
        np.testing.assert_array_equal(got["final_obs"][k], exp["final_obs"][k])
        assert got["obs"][k].dtype == exp["obs"][k].dtype
    for k in STEP_KEYS:
        np.testing.assert_array_equal(got[k], exp[k], err_msg=k)
    m = got["metadata"]
    assert (m["episode"], m["success"], m["source"], m["task"], m["notes"], m["start_time"], m["length"]) == (
        i,
        exp["success"],
        exp["source"],
        exp["task"],
        exp["notes"],
        exp["start_time"],
        len(exp["reward"]),
    )


def check_store(store: EpisodeStore) -> int:
    """Every committed episode is whole and exact; returns how many there are."""
    n = 0
    for n, ep in enumerate(store.iter_episodes(), start=1):
        assert_episode(ep, n - 1)
    assert n == len(store) and store.num_steps == sum(2 + i % 5 for i in range(n))
    return n


def build(path: Path, n: int, **kw) -> EpisodeStore:
    store = EpisodeStore.create(path, SCHEMA, **kw)
    for i in range(n):
        assert store.append_episode(**make_episode(i)) == i
    return store


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_round_trip_is_exact(tmp_path):
    with build(tmp_path / "s", 6, durable=True):
        pass
    store = EpisodeStore.open(tmp_path / "s", schema=SCHEMA, verify="full")
    assert check_store(store) == 6 and store.validate() == []
    assert store.schema == SCHEMA
    np.testing.assert_array_equal(store.episode_ends, np.cumsum([2 + i % 5 for i in range(6)]))
    assert_episode(store.episode(3), 3)
    assert_episode(store.episode(-1), 5)
    with pytest.raises(IndexError):
        store.episode(6)


def test_next_obs_and_random_access(tmp_path):
    store = build(tmp_path / "s", 5)
    g = 0
    for i in range(5):
        exp = make_episode(i)
        T = len(exp["reward"])
        for t in range(T):
            s = store.step(g)
            assert store.episode_of(g) == i and (s["episode"], s["t"]) == (i, t)
            nxt = {k: exp["obs"][k][t + 1] if t + 1 < T else exp["final_obs"][k] for k in exp["obs"]}
            for k in exp["obs"]:
                np.testing.assert_array_equal(s["obs"][k], exp["obs"][k][t])
                np.testing.assert_array_equal(s["next_obs"][k], nxt[k])
            for k in STEP_KEYS:
                np.testing.assert_array_equal(s[k], exp[k][t], err_msg=k)
            g += 1
    assert g == store.num_steps
    with pytest.raises(IndexError):
        store.episode_of(g)
    block = store.read_all(1, 4)  # bulk read of episodes 1..3, as a replay buffer fill would do
    nxt = next_observations(block["obs"], block["final_obs"], block["episode_ends"])
    exp_next = np.concatenate(
        [
            np.concatenate([make_episode(i)["obs"]["state"][1:], make_episode(i)["final_obs"]["state"][None]])
            for i in (1, 2, 3)
        ]
    )
    np.testing.assert_array_equal(nxt["state"], exp_next)
    assert block["first_step"] == store.episode_ends[0] and list(block["source"]) == list(SOURCES[1:4])


def test_metadata_and_info(tmp_path):
    store = build(tmp_path / "s", 8)
    info = store.info()
    lengths = [2 + i % 5 for i in range(8)]
    assert (info["episodes"], info["steps"]) == (8, sum(lengths))
    assert info["length"] == {"min": 2, "max": 6, "mean": np.mean(lengths), "median": np.median(lengths)}
    assert info["success_rate"] == pytest.approx(3 / 8)  # episodes 0, 3, 6
    assert info["sources"] == {s: 2 for s in SOURCES} and info["tasks"] == {"task0": 4, "task1": 4}
    assert info["size_bytes"] > 0 and info["control_hz"] == 10.0
    assert store.metadata(5)["notes"] == "episode 5\nline two ✓"
    obs_space = spaces.Dict(
        {"state": spaces.Box(-1, 1, (D,), np.float32), "front": spaces.Box(0, 255, (HW, HW, 3), np.uint8)}
    )
    act_space = spaces.Box(-1, 1, (A,), np.float32)
    assert StoreSchema.from_spaces(obs_space, act_space, 10.0, SCHEMA.action_semantics) == SCHEMA
    root = json.loads((tmp_path / "s" / "zarr.json").read_text())["attributes"]["robot_rl"]
    assert root["schema_version"] == 1 and root["observations"]["front"] == {"shape": [HW, HW, 3], "dtype": "uint8"}
    assert root["action_dim"] == A and root["control_hz"] == 10.0 and root["action_semantics"]


def test_schema_mismatch_names_the_key(tmp_path):
    build(tmp_path / "s", 1).close()
    sem = SCHEMA.action_semantics
    cases = {
        r"'front': expected shape \(32, 32, 3\).*store has shape \(16, 16, 3\)": StoreSchema(
            {**SCHEMA.obs, "front": ((32, 32, 3), "uint8")}, A, 10.0, sem
        ),
        "'state'.*float64": StoreSchema({**SCHEMA.obs, "state": ((D,), "float64")}, A, 10.0, sem),
        "'wrist'.*store has nothing": StoreSchema({**SCHEMA.obs, "wrist": ((HW, HW, 3), "uint8")}, A, 10.0, sem),
        "action_dim": StoreSchema(SCHEMA.obs, A + 1, 10.0, sem),
        "control_hz": StoreSchema(SCHEMA.obs, A, 20.0, sem),
        "version: expected 2": StoreSchema(SCHEMA.obs, A, 10.0, sem, version=2),
    }
    for pattern, schema in cases.items():
        with pytest.raises(StoreError, match=pattern):
            EpisodeStore.open(tmp_path / "s", schema=schema)
        with pytest.raises(StoreError, match=pattern):
            EpisodeStore.open(tmp_path / "s", "a", schema=schema)
    meta = tmp_path / "s" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["robot_rl"]["schema_version"] = 99
    meta.write_text(json.dumps(doc))
    with pytest.raises(StoreError, match="schema_version: store has 99"):
        EpisodeStore.open(tmp_path / "s")


def test_bad_inputs_raise_before_anything_is_written(tmp_path):
    store = build(tmp_path / "s", 1)
    before = files(tmp_path / "s")

    def bad(pattern, **change):
        ep = make_episode(1)
        for k, v in change.items():
            if k in ("obs", "final_obs"):
                ep[k] = {**ep[k], **v}
            else:
                ep[k] = v
        with pytest.raises(StoreError, match=pattern):
            store.append_episode(**ep)

    ep = make_episode(1)
    nan_state = ep["obs"]["state"].copy()
    nan_state[1, 2] = np.nan
    bad(r"obs\['state'\]: 1 non-finite", obs={"state": nan_state})
    bad("reward: 1 non-finite", reward=np.array([0, np.inf, 0], np.float32))
    bad("final_obs.*'state'.*non-finite", final_obs={"state": np.full(D, np.nan, np.float32)})
    bad(r"obs\['front'\]: shape", obs={"front": np.zeros((3, 8, 8, 3), np.uint8)})
    bad(r"obs\['front'\]: dtype float32", obs={"front": np.zeros((3, HW, HW, 3), np.float32)})
    bad(r"obs\['state'\]: shape \(2, 5\)", obs={"state": ep["obs"]["state"][:2]})  # inconsistent T
    with pytest.raises(StoreError, match=r"obs: keys.*missing \['front'\]"):
        store.append_episode(**{**ep, "obs": {"state": ep["obs"]["state"]}})
    bad("scripted, teleop, policy, intervention", source="human")
    bad("last step only", terminated=np.array([True, False, True]))
    bad("last step only", terminated=np.zeros(3, bool), truncated=np.zeros(3, bool))
    bad("terminated: dtype", terminated=np.array([0, 0, 1]))
    bad("timestamp: decreases", timestamp=np.array([0.0, 0.2, 0.1]))
    assert files(tmp_path / "s") == before and len(store) == 1
    store.append_episode(**make_episode(1))  # and the store still takes good episodes
    assert check_store(EpisodeStore.open(tmp_path / "s", verify="full")) == 2


def test_corrupt_or_missing_chunk_is_named(tmp_path):
    build(tmp_path / "s", 6, image_chunk=4).close()  # 22 frames -> 6 chunks of data/front
    root = tmp_path / "s"
    (root / "data/front/c/0/0/0/0").write_bytes(os.urandom(200))
    store = EpisodeStore.open(root)  # quick check decodes only the last chunk of each array
    with pytest.raises(StoreError, match="data/front: cannot read steps 0..1, episode 0:"):
        store.episode(0)
    assert_episode(store.episode(4), 4)  # the rest stays readable
    assert any(p.startswith("data/front: chunk c/0/0/0/0 corrupt") for p in store.validate())
    with pytest.raises(StoreError, match="data/front: chunk c/0/0/0/0 corrupt"):
        EpisodeStore.open(root, verify="full")
    (root / "data/state/c/0/0").unlink()
    with pytest.raises(StoreError, match="data/state: chunk c/0/0 missing"):
        EpisodeStore.open(root)


def test_inconsistent_store_fails_to_open(tmp_path):
    root = tmp_path / "s"
    build(root, 4).close()
    zarr.open_array(root, path="data/reward", mode="r+").resize((3,))
    with pytest.raises(StoreError, match="data/reward: 3 rows, shorter than the committed 14"):
        EpisodeStore.open(root)
    build(root, 4, overwrite=True).close()
    ends = zarr.open_array(root, path="meta/episode_ends", mode="r+")
    ends[2] = ends[1]
    with pytest.raises(StoreError, match="meta/episode_ends: not increasing at episode 2"):
        EpisodeStore.open(root)
    (root / "commit.json").write_text("{not json")
    with pytest.raises(StoreError, match="commit"):
        EpisodeStore.open(root)
    with pytest.raises(StoreError, match="no commit.json"):
        EpisodeStore.open(tmp_path / "nothing")
    with pytest.raises(StoreError, match="a store already exists"):
        EpisodeStore.create(root, SCHEMA)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(StoreError, match=r"not an episode store and not empty \(keep.txt\)"):
        EpisodeStore.open(tmp_path / "notes", "a", schema=SCHEMA)
    assert [p.name for p in (tmp_path / "notes").iterdir()] == ["keep.txt"]


def test_images_stay_uint8_and_compress(tmp_path):
    schema = StoreSchema({"state": ((D,), "float32"), "front": ((64, 64, 3), "uint8")}, A, 10.0)
    store = EpisodeStore.create(tmp_path / "s", schema)
    yy, xx = np.mgrid[:64, :64]
    for _ in range(4):
        T = 50
        front = np.empty((T, 64, 64, 3), np.uint8)
        front[:] = ((xx + yy + np.arange(T)[:, None, None]) % 256)[..., None].astype(np.uint8)
        store.append_episode(
            {"state": np.zeros((T, D), np.float32), "front": front},
            {"state": np.zeros(D, np.float32), "front": front[-1]},
            np.zeros((T, A), np.float32),
            np.zeros(T),
            np.arange(T) == T - 1,
            np.zeros(T, bool),
            np.zeros(T, bool),
            np.arange(T) / 10.0,
            success=True,
            source="scripted",
        )
    raw = 4 * 50 * 64 * 64 * 3
    assert store.info()["size_bytes"] < raw / 10
    arr = zarr.open_array(tmp_path / "s", path="data/front", mode="r")
    assert arr.dtype == np.uint8 and arr.chunks == (32, 64, 64, 3)
    assert [c["name"] for c in json.loads((tmp_path / "s/data/front/zarr.json").read_text())["codecs"]] == [
        "bytes",
        "zstd",
        "crc32c",
    ]
    assert store.episode(2)["obs"]["front"].dtype == np.uint8


def test_single_writer_and_reader_snapshots(tmp_path):
    writer = build(tmp_path / "s", 2)
    with pytest.raises(StoreError, match="another process is writing"):
        EpisodeStore.open(tmp_path / "s", "a")
    reader = EpisodeStore.open(tmp_path / "s")
    for i in range(2, 5):
        writer.append_episode(**make_episode(i))
    assert len(reader) == 2  # a snapshot until refreshed
    with pytest.raises(StoreError, match="read-only"):
        reader.append_episode(**make_episode(5))
    assert reader.refresh() == 3 and check_store(reader) == 5
    writer.close()
    with EpisodeStore.open(tmp_path / "s", "a") as again:  # lock released
        assert len(again) == 5


# ------------------------------------------------------------------ crash safety under SIGKILL
CHILD = "import sys; sys.path[:0] = sys.argv[1:3]; from test_store import writer_loop; writer_loop(sys.argv[3])"


def writer_loop(path: str) -> None:
    """Run in a child process: append episodes len(store), len(store) + 1, ... until killed."""
    store = EpisodeStore.open(path, "a", schema=SCHEMA, image_chunk=4)  # small chunks: appends rewrite shared ones
    print("ready", len(store), flush=True)
    while True:
        i = len(store)
        print("begin", i, flush=True)
        store.append_episode(**make_episode(i))
        print("done", i, flush=True)


def test_sigkill_mid_append_never_loses_or_exposes_an_episode(tmp_path):
    rng, path, here = np.random.default_rng(0), tmp_path / "crash", Path(__file__).resolve().parent
    seen, mid_append, t0 = 0, 0, time.monotonic()
    for kill in range(20):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(here), str(here.parent), str(path)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert select.select([proc.stdout], [], [], 60)[0], "writer did not start"
            assert proc.stdout.readline().split() == ["ready", str(seen)]
            if kill % 4 == 1:  # a reader in another process while the writer appends sees only whole episodes
                assert check_store(EpisodeStore.open(path, verify="full")) >= seen
            time.sleep(rng.uniform(0.0, 0.3))
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        out = proc.stdout.read().split()
        proc.stdout.close()
        store = EpisodeStore.open(path, verify="full")
        n = check_store(store)
        assert n >= seen, f"kill {kill}: episodes went from {seen} to {n}"
        if len(out) >= 2 and out[-2] == "begin":  # killed inside append_episode(i): i is all or nothing
            i = int(out[-1])
            assert n in (i, i + 1)
            mid_append += n == i
        seen = n
    print(f"{seen} episodes committed over 20 kills, {mid_append} kills inside an append left it invisible")
    assert mid_append >= 5, f"only {mid_append} kills landed mid-append"
    assert seen >= 20 and time.monotonic() - t0 < 60
    EpisodeStore.open(path, "a").close()  # a writer clears what killed writers left behind
    assert not list(path.rglob("*.rrtmp"))
