"""Label sets in the episode store: append-only per-step labels and tables, identity checks, crash safety, and that
labelling never touches episode data."""

import json

import numpy as np
import pytest
from test_store import SCHEMA, build, files

from robot_rl.data.store import EpisodeStore, StoreError


def test_per_step_labels_append_in_whole_episodes(tmp_path):
    store = build(tmp_path / "s", 4)  # episode lengths 2, 3, 4, 5
    ends = store.episode_ends.tolist()
    assert ends == [2, 5, 9, 14] and store.label_names() == []
    before = {k: v for k, v in files(tmp_path / "s").items() if not k.startswith("labels")}
    meta = {"labeller": "classifier", "fingerprint": "abc"}
    assert store.append_labels("clf-abc", {"p": np.linspace(0, 1, 5, dtype=np.float32)}, per_step=True, meta=meta) == 5
    with pytest.raises(StoreError, match="episode end"):  # rows 5..7 stop inside episode 2
        store.append_labels("clf-abc", {"p": np.zeros(3, np.float32)}, per_step=True, meta=meta)
    assert store.append_labels("clf-abc", {"p": np.ones(9, np.float32)}, per_step=True, meta=meta) == 14
    with pytest.raises(StoreError, match="episode end"):  # past the committed steps
        store.append_labels("clf-abc", {"p": np.ones(1, np.float32)}, per_step=True, meta=meta)
    got = EpisodeStore.open(tmp_path / "s").read_labels("clf-abc")
    np.testing.assert_array_equal(got["p"], np.r_[np.linspace(0, 1, 5, dtype=np.float32), np.ones(9, np.float32)])
    info = store.label_info("clf-abc")
    assert (info["rows"], info["per_step"], info["meta"]) == (14, True, meta)
    assert info["columns"] == {"p": {"shape": [], "dtype": "float32"}}
    after = {k: v for k, v in files(tmp_path / "s").items() if not k.startswith("labels")}
    assert after == before  # episode data untouched, byte for byte


def test_tables_identity_and_layout_checks(tmp_path):
    build(tmp_path / "s", 2).close()
    store = EpisodeStore.open(tmp_path / "s")  # read-only for episodes; label sets have their own writer
    rows = {"a": np.array([0, 1], np.int64), "b": np.array([3, 2], np.int64), "answer": np.array([1, -1], np.int8)}
    meta = {"endpoint": "http://x", "model": "m"}
    assert store.append_labels("pref-1", rows, per_step=False, meta=meta) == 2
    assert store.append_labels("pref-1", {k: v[:1] for k, v in rows.items()}, per_step=False, meta=meta) == 3
    with pytest.raises(StoreError, match="meta"):
        store.append_labels("pref-1", rows, per_step=False, meta={"model": "other"})
    with pytest.raises(StoreError, match="columns"):
        store.append_labels("pref-1", {"a": rows["a"]}, per_step=False, meta=meta)
    with pytest.raises(StoreError, match="dtype"):
        store.append_labels("pref-1", {**rows, "answer": rows["answer"].astype(np.float32)}, per_step=False, meta=meta)
    with pytest.raises(StoreError, match="same length"):
        store.append_labels("x", {"a": np.zeros(2), "b": np.zeros(3)}, per_step=False)
    with pytest.raises(StoreError, match="non-finite"):
        store.append_labels("x", {"a": np.array([np.nan])}, per_step=False)
    with pytest.raises(StoreError, match="name"):
        store.append_labels("../evil", rows, per_step=False)
    with pytest.raises(StoreError, match="no label set"):
        store.read_labels("missing")
    got = store.read_labels("pref-1")
    np.testing.assert_array_equal(got["answer"], [1, -1, 1])
    assert got["answer"].dtype == np.int8 and store.label_names() == ["pref-1"]


def test_killed_append_and_corruption(tmp_path):
    store = build(tmp_path / "s", 2)
    store.append_labels("v", {"x": np.arange(2.0)}, per_step=False)
    d = tmp_path / "s" / "labels" / "v"
    (d / "part-000001-deadbeef.npz").write_bytes(b"half written")  # an append killed before its commit
    (d / "commit.json.1234.lbltmp").write_bytes(b"{")  # and its temp file
    assert store.read_labels("v")["x"].tolist() == [0.0, 1.0]
    assert store.append_labels("v", {"x": np.array([5.0])}, per_step=False) == 3
    assert store.read_labels("v")["x"].tolist() == [0.0, 1.0, 5.0]
    assert not list(d.glob("*.lbltmp"))
    part = json.loads((d / "commit.json").read_text())["parts"][0]["file"]
    raw = bytearray((d / part).read_bytes())
    raw[-30] ^= 0xFF
    (d / part).write_bytes(bytes(raw))
    with pytest.raises(StoreError, match="checksum"):
        store.read_labels("v")


def test_overwrite_removes_labels_and_open_keeps_them(tmp_path):
    store = build(tmp_path / "s", 2)
    store.append_labels("v", {"x": np.arange(2.0)}, per_step=False)
    store.close()
    with EpisodeStore.open(tmp_path / "s", "a", verify="full") as again:
        assert again.label_names() == ["v"] and again.validate() == []
    assert EpisodeStore.create(tmp_path / "s", SCHEMA, overwrite=True).label_names() == []
