"""``robot-rl data``: info, validate, merge, LeRobot v3.0 export round trip, rosbag2 import round trip, CLI errors."""

import bisect
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from robot_rl.data.lerobot import read_lerobot
from robot_rl.data.store import SOURCES, EpisodeStore, StoreSchema
from robot_rl.data.tools import main

D, A, HW = 4, 3, 16
SCHEMA = StoreSchema({"state": ((D,), "float32"), "front": ((HW, HW, 3), "uint8")}, A, 10.0, "dx dy dz, gripper")
STEP_KEYS = ("action", "reward", "terminated", "truncated", "is_intervention", "timestamp")


def episode(i: int, d: int = D) -> dict:
    """Episode ``i`` (length 3..6), all values derived from ``i``; camera frames are smooth gradients."""
    T = 3 + i % 4
    t = np.arange(T + 1)
    state = (i * 100 + t[:, None] + np.arange(d) / 10).astype(np.float32)
    yy, xx = np.mgrid[:HW, :HW]
    front = (40 + 6 * xx + 3 * yy + 2 * t[:, None, None] + 5 * i)[..., None] + np.array([0, 10, 20])
    front = front.astype(np.uint8)
    last = np.arange(T) == T - 1
    return dict(
        obs={"state": state[:T], "front": front[:T]},
        final_obs={"state": state[T], "front": front[T]},
        action=np.cos(i + np.arange(T * A)).reshape(T, A).astype(np.float32),
        reward=(np.arange(T) * 0.25 + i).astype(np.float32),
        terminated=last & (i % 2 == 0),
        truncated=last & (i % 2 == 1),
        is_intervention=np.arange(T) % 2 == i % 2,
        timestamp=1.7e9 + i * 10 + np.arange(T) / 10,
        success=i % 3 == 0,
        source=SOURCES[i % 4],
        task=f"task {i % 2}",
        notes=f"note {i}",
        start_time=1.7e9 + i * 10,
    )


def make_store(path, ids, schema=SCHEMA, **kw) -> None:
    with EpisodeStore.create(path, schema, **kw) as s:
        for i in ids:
            s.append_episode(**episode(i, schema.obs["state"][0][0]))


def assert_same(got: dict, exp: dict, images_exact: bool = True) -> None:
    for k in STEP_KEYS:
        np.testing.assert_array_equal(got[k], exp[k], err_msg=k)
    np.testing.assert_array_equal(got["obs"]["state"], exp["obs"]["state"])
    np.testing.assert_array_equal(got["final_obs"]["state"], exp["final_obs"]["state"])
    if images_exact:
        np.testing.assert_array_equal(got["obs"]["front"], exp["obs"]["front"])
    m = got["metadata"]
    assert (m["success"], m["source"], m["task"], m["notes"], m["start_time"]) == (
        exp["success"],
        exp["source"],
        exp["task"],
        exp["notes"],
        exp["start_time"],
    )


# ------------------------------------------------------------------ info / validate
def test_info_and_validate(tmp_path, capsys):
    make_store(tmp_path / "s", range(6), image_chunk=4)
    assert main(["info", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    for text in (
        "episodes       6  (25 steps; length min 3 / mean 4.2 / max 6)",
        "success rate   33.3%  (2 of 6)",
        "scripted 2, teleop 2, policy 1, intervention 1",
        "task 0 3, task 1 3",
        "10 Hz",
        "dim 3: dx dy dz, gripper",
        "state  (4,) float32",
        "front  (16, 16, 3) uint8",
        "KiB on disk",
    ):
        assert text in out, (text, out)
    assert main(["info", str(tmp_path / "s"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["episodes"] == 6 and info["steps"] == 25 and info["schema"]["action_dim"] == A
    assert info["intervention_fraction"] == pytest.approx(
        sum(episode(i)["is_intervention"].sum() for i in range(6)) / 25
    )
    assert main(["validate", str(tmp_path / "s")]) == 0
    assert capsys.readouterr().out.startswith(f"OK {tmp_path / 's'}: 6 episodes, 25 steps")
    (tmp_path / "s/data/front/c/1/0/0/0").write_bytes(b"\x00" * 64)  # frames 4..7: episodes 1 and 2
    assert main(["validate", str(tmp_path / "s")]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "data/front: chunk c/1/0/0/0 corrupt (steps 4..7, episodes 1..2)" in out


# ------------------------------------------------------------------ merge
def test_merge_copies_episodes_and_metadata(tmp_path, capsys):
    make_store(tmp_path / "a", range(3))
    make_store(tmp_path / "b", range(3, 7))
    out = str(tmp_path / "m")
    assert main(["merge", out, str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "merged 7 episodes" in capsys.readouterr().out
    m = EpisodeStore.open(out, verify="full")
    assert len(m) == 7 and m.schema == SCHEMA
    for i, ep in enumerate(m.iter_episodes()):
        assert_same(ep, episode(i))
    # filters, appending to an existing store
    assert main(["merge", str(tmp_path / "f"), str(tmp_path / "a"), str(tmp_path / "b"), "--only-successful"]) == 0
    assert [e["metadata"]["success"] for e in EpisodeStore.open(tmp_path / "f").iter_episodes()] == [True, True, True]
    assert main(["merge", str(tmp_path / "f"), str(tmp_path / "b"), "--source", "teleop", "policy"]) == 0
    assert "skipped 2: 0 unsuccessful, 2 by source" in capsys.readouterr().out
    assert [e["metadata"]["source"] for e in EpisodeStore.open(tmp_path / "f").iter_episodes()][3:] == [
        "teleop",
        "policy",
    ]


def test_merge_refuses_schema_mismatch(tmp_path, capsys):
    make_store(tmp_path / "a", range(2))
    make_store(
        tmp_path / "c",
        range(2),
        schema=StoreSchema({**SCHEMA.obs, "state": ((D + 1,), "float32")}, A, 10.0, SCHEMA.action_semantics),
    )
    assert main(["merge", str(tmp_path / "m"), str(tmp_path / "a"), str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("robot-rl data: error: input")
    assert str(tmp_path / "c") in err and "observation 'state': expected shape (4,)" in err and "(5,)" in err
    assert not (tmp_path / "m").exists()
    assert main(["merge", str(tmp_path / "a"), str(tmp_path / "a")]) == 2  # OUT is an input
    assert "is also an input" in capsys.readouterr().err


# ------------------------------------------------------------------ LeRobot export
@pytest.mark.parametrize("images", ["image", "video"])
def test_export_lerobot_round_trip(tmp_path, capsys, images):
    make_store(tmp_path / "s", range(5))
    out = tmp_path / "lr"
    assert main(["export-lerobot", str(tmp_path / "s"), str(out), "--images", images, "--repo-id", "lab/x"]) == 0
    assert "wrote LeRobot v3.0 dataset lab/x" in capsys.readouterr().out
    info = json.loads((out / "meta/info.json").read_text())
    lengths = [3 + i % 4 for i in range(5)]
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (5, sum(lengths), 2)
    assert info["splits"] == {"train": "0:5"} and info["chunks_size"] == 1000
    f = info["features"]
    assert f["observation.state"] == {"dtype": "float32", "shape": [D], "names": None}
    assert f["action"]["shape"] == [A] and f["next.done"]["dtype"] == "bool"
    assert f["observation.images.front"]["dtype"] == images and f["observation.images.front"]["shape"] == [HW, HW, 3]
    assert {
        "next.reward",
        "next.truncated",
        "complementary_info.is_intervention",
        "timestamp",
        "frame_index",
        "episode_index",
        "index",
        "task_index",
    } <= set(f)
    data = pq.read_table(out / "data/chunk-000/file-000.parquet")
    assert data.num_rows == sum(lengths) and data["index"].to_pylist() == list(range(sum(lengths)))
    assert set(data.column_names) == {k for k, v in f.items() if v["dtype"] != "video"}
    eps = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet")
    assert eps["length"].to_pylist() == lengths and eps["dataset_to_index"].to_pylist() == np.cumsum(lengths).tolist()
    tasks = pq.read_table(out / "meta/tasks.parquet")
    assert tasks["task"].to_pylist() == ["task 0", "task 1"] and tasks["task_index"].to_pylist() == [0, 1]
    stats = json.loads((out / "meta/stats.json").read_text())
    all_state = np.concatenate([episode(i)["obs"]["state"] for i in range(5)])
    np.testing.assert_allclose(stats["observation.state"]["mean"], all_state.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats["observation.state"]["std"], all_state.std(0), rtol=1e-5)
    assert np.array(stats["observation.images.front"]["mean"]).shape == (3, 1, 1)
    if images == "video":
        assert (out / "videos/observation.images.front/chunk-000/file-000.mp4").stat().st_size > 0
    got = list(read_lerobot(out))
    assert len(got) == 5
    for i, ep in enumerate(got):
        exp = episode(i)
        assert_same(ep, exp, images_exact=images == "image")
        err = np.abs(ep["obs"]["front"].astype(int) - exp["obs"]["front"]).mean()
        assert ep["obs"]["front"].shape == exp["obs"]["front"].shape and err < (8 if images == "video" else 1e-9)
        np.testing.assert_array_equal(ep["final_obs"]["front"], exp["final_obs"]["front"])  # kept as PNG
    assert main(["export-lerobot", str(tmp_path / "s"), str(out)]) == 2  # exists: refused unless --overwrite
    assert "--overwrite" in capsys.readouterr().err


def test_export_lerobot_many_files(tmp_path, monkeypatch):
    """Past the size limits every episode starts a new data and video file, two files per chunk directory."""
    from robot_rl.data import lerobot

    monkeypatch.setattr(lerobot, "DATA_FILE_MB", 0)
    monkeypatch.setattr(lerobot, "VIDEO_FILE_MB", 0)
    monkeypatch.setattr(lerobot, "CHUNKS_SIZE", 2)
    make_store(tmp_path / "s", range(5))
    lerobot.export_lerobot(tmp_path / "s", tmp_path / "lr")
    data = sorted(str(p.relative_to(tmp_path / "lr")) for p in (tmp_path / "lr").rglob("*.parquet"))
    assert [p for p in data if p.startswith("data/")] == [
        "data/chunk-000/file-000.parquet",
        "data/chunk-000/file-001.parquet",
        "data/chunk-001/file-000.parquet",
        "data/chunk-001/file-001.parquet",
        "data/chunk-002/file-000.parquet",
    ]
    assert len(list((tmp_path / "lr/videos").rglob("*.mp4"))) == 5
    eps = pq.read_table(tmp_path / "lr/meta/episodes/chunk-000/file-000.parquet")
    assert eps["videos/observation.images.front/from_timestamp"].to_pylist() == [0.0] * 5
    for i, ep in enumerate(read_lerobot(tmp_path / "lr")):
        assert_same(ep, episode(i), images_exact=False)
        assert np.abs(ep["obs"]["front"].astype(int) - episode(i)["obs"]["front"]).mean() < 8


# ------------------------------------------------------------------ rosbag import
T0 = 1_700_000_000 * 10**9
MS = 10**6
GAP = (1000 * MS, 1450 * MS)  # no front-camera frames here: ticks inside go stale
SUCCESS_AT, CUT_AT, STALE_S = 2550 * MS, 1500 * MS, 0.15


def rgb(i: int, hw: int = HW) -> np.ndarray:
    yy, xx = np.mgrid[:hw, :hw]
    return (((i * 7 + 3 * xx + 5 * yy)[..., None] + np.array([0, 11, 22])) % 256).astype(np.uint8)


def synthetic_streams() -> dict:
    """topic -> list of (header or bag stamp ns, bag receive ns, value): 3 s of a small robot."""
    s = {"/joint_states": [], "/ee_pose": [], "/front": [], "/wrist": [], "/action": [], "/gripper": []}
    for i in range(90):  # 30 Hz
        t = T0 + 5 * MS + i * 33_333_333
        s["/joint_states"].append((t, t + 2 * MS, (np.array([i, i + 0.5, -i]) * 0.01, np.sin(np.arange(3) + i))))
        tf = T0 + i * 33_333_333
        if not GAP[0] <= tf - T0 < GAP[1]:
            s["/front"].append((tf, tf + 3 * MS, rgb(i)))
    for j in range(60):  # 20 Hz
        t = T0 + 10 * MS + j * 50 * MS
        s["/ee_pose"].append((t, t + 1 * MS, np.array([j * 1e-3, j * 2e-3, j * 3e-3, 0, 0, 0, 1.0])))
    for j in range(45):  # 15 Hz
        t = T0 + 7 * MS + j * 66_666_667
        s["/wrist"].append((t, t + 1 * MS, rgb(100 + j)))
    for k in range(30):  # 10 Hz, no header: bag time
        t = T0 + 3 * MS + k * 100 * MS
        s["/action"].append((t, t, np.array([k, -k, 0.5 * k]) * 0.01))
        s["/gripper"].append((t + MS, t + MS, float(k % 2)))
    s["/intervention"] = [(T0 + 800 * MS, T0 + 800 * MS, True), (T0 + 1600 * MS, T0 + 1600 * MS, False)]
    s["/success"] = [(T0 + SUCCESS_AT, T0 + SUCCESS_AT, True)]
    s["/episode"] = [(T0 + CUT_AT, T0 + CUT_AT, True)]
    return s


def write_bag(path, storage: str, streams: dict) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    T = ts.types

    def header(t):
        return T["std_msgs/msg/Header"](
            stamp=T["builtin_interfaces/msg/Time"](sec=t // 10**9, nanosec=t % 10**9), frame_id="base"
        )

    def image(t, img, enc):
        data = img[..., ::-1] if enc == "bgr8" else img
        return T["sensor_msgs/msg/Image"](
            header=header(t),
            height=img.shape[0],
            width=img.shape[1],
            encoding=enc,
            is_bigendian=0,
            step=img.shape[1] * 3,
            data=np.ascontiguousarray(data).reshape(-1),
        )

    def point(x, y, z):
        return T["geometry_msgs/msg/Point"](x=x, y=y, z=z)

    make = {
        "/joint_states": (
            "sensor_msgs/msg/JointState",
            lambda t, v: T["sensor_msgs/msg/JointState"](
                header=header(t), name=["a", "b", "c"], position=v[0], velocity=v[1], effort=np.zeros(0)
            ),
        ),
        "/ee_pose": (
            "geometry_msgs/msg/PoseStamped",
            lambda t, v: T["geometry_msgs/msg/PoseStamped"](
                header=header(t),
                pose=T["geometry_msgs/msg/Pose"](
                    position=point(*v[:3]),
                    orientation=T["geometry_msgs/msg/Quaternion"](x=v[3], y=v[4], z=v[5], w=v[6]),
                ),
            ),
        ),
        "/front": ("sensor_msgs/msg/Image", lambda t, v: image(t, v, "rgb8")),
        "/wrist": ("sensor_msgs/msg/Image", lambda t, v: image(t, v, "bgr8")),
        "/action": (
            "std_msgs/msg/Float32MultiArray",
            lambda t, v: T["std_msgs/msg/Float32MultiArray"](
                layout=T["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0), data=v.astype(np.float32)
            ),
        ),
        "/gripper": ("std_msgs/msg/Float32", lambda t, v: T["std_msgs/msg/Float32"](data=v)),
        "/intervention": ("std_msgs/msg/Bool", lambda t, v: T["std_msgs/msg/Bool"](data=v)),
        "/success": ("std_msgs/msg/Bool", lambda t, v: T["std_msgs/msg/Bool"](data=v)),
        "/episode": ("std_msgs/msg/Bool", lambda t, v: T["std_msgs/msg/Bool"](data=v)),
    }
    plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[storage]
    msgs = sorted((bag_t, topic, t, v) for topic, items in streams.items() for t, bag_t, v in items)
    with Writer(path, version=9, storage_plugin=plugin) as w:
        conns = {topic: w.add_connection(topic, make[topic][0], typestore=ts) for topic in streams}
        for bag_t, topic, t, v in msgs:
            msg = make[topic][1](t, v)
            w.write(conns[topic], bag_t, ts.serialize_cdr(msg, make[topic][0]))


MAPPING = """
control_hz: 10
max_staleness_s: {stale}
task: stack
source: teleop
action_semantics: dx dy dz (m), gripper
state:
  - topic: /joint_states
    fields: [position, velocity]
  - /ee_pose
cameras:
  front: /front
  wrist: {{topic: /wrist, type: sensor_msgs/Image}}
action: [/action, /gripper]
intervention: /intervention
success: /success
episodes: {{split: {split}, topic: /episode}}
"""


def held(items: list, t: int):
    """(stamp, value) of the newest item stamped at or before ``t``, or None."""
    stamps = [x[0] for x in items]
    i = bisect.bisect_right(stamps, t) - 1
    return items[i] if i >= 0 else None


def expected_episodes(streams: dict, split: str) -> tuple[list[dict], int]:
    """The episodes the importer must produce (computed directly from the mapping's rules), and stale ticks."""
    required = ["/joint_states", "/ee_pose", "/front", "/wrist", "/action", "/gripper"]
    items = {k: sorted((t, v) for t, _, v in streams[k]) for k in streams}
    lo = max(items[k][0][0] for k in required)
    hi = min(items[k][-1][0] for k in required)
    grid = [lo + k * 100 * MS for k in range((hi - lo) // (100 * MS) + 1)]
    kept = [t for t in grid if all(t - held(items[k], t)[0] <= STALE_S * 1e9 for k in required)]
    segments = [(0, T0 + CUT_AT), (T0 + CUT_AT, 2 * T0)] if split == "topic" else [(0, 2 * T0)]
    out = []
    for a, b in segments:
        ticks = [t for t in kept if a <= t < b]
        won = a <= T0 + SUCCESS_AT < b
        if won:
            ticks = ticks[: next(j for j, t in enumerate(ticks) if t >= T0 + SUCCESS_AT) + 1]
        js = [held(items["/joint_states"], t)[1] for t in ticks]
        state = np.array(
            [np.concatenate([p, v, held(items["/ee_pose"], t)[1]]) for (p, v), t in zip(js, ticks)], np.float32
        )
        action = np.array(
            [[*held(items["/action"], t)[1], held(items["/gripper"], t)[1]] for t in ticks[:-1]], np.float32
        )
        front = np.stack([held(items["/front"], t)[1] for t in ticks])
        wrist = np.stack([held(items["/wrist"], t)[1] for t in ticks])
        inter = [bool(h[1]) if (h := held(items["/intervention"], t)) else False for t in ticks[:-1]]
        out.append(
            dict(
                state=state,
                action=action,
                front=front,
                wrist=wrist,
                inter=np.array(inter),
                won=won,
                timestamp=np.array(ticks[:-1]) / 1e9,
            )
        )
    return out, len(grid) - len(kept)


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    streams = synthetic_streams()
    for storage in ("sqlite3", "mcap"):
        write_bag(root / storage, storage, streams)
    return root, streams


@pytest.mark.parametrize("storage,split", [("sqlite3", "bag"), ("mcap", "topic")])
def test_import_rosbag_round_trip(tmp_path, capsys, bags, storage, split):
    root, streams = bags
    (tmp_path / "map.yaml").write_text(MAPPING.format(stale=STALE_S, split=split))
    bag_args = [str(root / storage)] * (2 if split == "bag" else 1)  # two bags -> two episodes
    assert main(["import-rosbag", *bag_args, str(tmp_path / "s"), "--map", str(tmp_path / "map.yaml")]) == 0
    report = capsys.readouterr().out
    exp, stale = expected_episodes(streams, split)
    if split == "bag":
        exp, stale = exp * 2, stale * 2
    assert stale > 0 and f"dropped as stale: {stale} (/front {stale})" in report, report
    store = EpisodeStore.open(tmp_path / "s", verify="full")
    assert store.schema.obs == {
        "state": ((13,), "float32"),
        "front": ((HW, HW, 3), "uint8"),
        "wrist": ((HW, HW, 3), "uint8"),
    }
    assert store.schema.action_dim == 4 and store.schema.action_semantics == "dx dy dz (m), gripper"
    assert len(store) == len(exp) == (2 if split == "bag" else 2)
    for ep, e in zip(store.iter_episodes(), exp):
        T = len(e["action"])
        np.testing.assert_array_equal(ep["obs"]["state"], e["state"][:-1])
        np.testing.assert_array_equal(ep["final_obs"]["state"], e["state"][-1])
        np.testing.assert_array_equal(ep["action"], e["action"])
        np.testing.assert_array_equal(ep["obs"]["front"], e["front"][:-1])
        np.testing.assert_array_equal(ep["obs"]["wrist"], e["wrist"][:-1])  # bgr8 came back as RGB
        np.testing.assert_array_equal(ep["final_obs"]["wrist"], e["wrist"][-1])
        np.testing.assert_array_equal(ep["is_intervention"], e["inter"])
        np.testing.assert_allclose(ep["timestamp"], e["timestamp"], rtol=0, atol=1e-6)
        assert ep["metadata"]["success"] == e["won"] and ep["terminated"][-1] == e["won"]
        assert ep["truncated"][-1] != e["won"] and ep["reward"].tolist() == [0.0] * (T - 1) + [float(e["won"])]
        assert ep["metadata"]["task"] == "stack" and ep["metadata"]["source"] == "teleop"
    assert any(e["inter"].any() for e in exp) and any(e["won"] for e in exp)


@pytest.mark.parametrize(
    "change,needle",
    [
        (("  - /ee_pose", "  - /ee_pos"), "state[1]: topic '/ee_pos' is not in bag"),
        (
            ("front: /front", "front: /joint_states"),
            "cameras.front: topic '/joint_states' has type sensor_msgs/msg/JointState; cameras take",
        ),
        (("[position, velocity]", "[positon]"), "state[0]: field(s) ['positon'] not in sensor_msgs/msg/JointState"),
        (("[position, velocity]", "[position, effort]"), "state[0]: topic '/joint_states' field 'effort' is empty"),
        (("control_hz: 10", "control_hz: fast"), "control_hz: 'fast'"),
    ],
)
def test_import_rosbag_bad_mapping(tmp_path, capsys, bags, change, needle):
    root, _ = bags
    (tmp_path / "map.yaml").write_text(MAPPING.format(stale=STALE_S, split="bag").replace(*change))
    assert main(["import-rosbag", str(root / "sqlite3"), str(tmp_path / "s"), "--map", str(tmp_path / "map.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("robot-rl data: error: mapping") and needle in err, err
    assert not (tmp_path / "s" / "commit.json").exists()


# ------------------------------------------------------------------ CLI
def test_cli_errors_are_one_line(tmp_path, capsys):
    from robot_rl.cli import main as cli_main

    assert cli_main(["data", "info", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"robot-rl data: error: STORE '{tmp_path / 'nope'}' does not exist; give the directory of an "
        "episode store (e.g. runs/pick_cube/<run>/demos.zarr)"
    )
    (tmp_path / "plain").mkdir()
    for argv in (
        ["validate", str(tmp_path / "plain")],
        ["export-lerobot", str(tmp_path / "plain"), "x"],
        ["merge", str(tmp_path / "m"), str(tmp_path / "plain")],
        ["frobnicate"],
        ["info"],
        ["merge", "o", "i", "--source", "human"],
        ["import-rosbag", str(tmp_path / "nobag"), "o", "--map", "m.yaml"],
    ):
        assert cli_main(["data", *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("robot-rl data: error: "), (argv, err)
    assert "not an episode store (no commit.json)" in (
        main(["info", str(tmp_path / "plain")]) == 2 and capsys.readouterr().err
    )
    for argv in (["info", "--help"], ["export-lerobot", "--help"], ["import-rosbag", "--help"]):
        assert cli_main(["data", *argv]) == 0
        assert f"usage: robot-rl data {argv[0]}" in capsys.readouterr().out
    assert main(["--help"]) == 0 and main([]) == 0  # (robot-rl's own parser takes a leading --help as its own)
    out = capsys.readouterr().out
    assert all(sub in out for sub in ("info", "validate", "merge", "export-lerobot", "import-rosbag"))
