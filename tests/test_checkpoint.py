import numpy as np
import pytest
import torch

from robot_rl.utils.checkpoint import load_state, save_state


def test_nested_state_round_trip(tmp_path):
    state = {
        "w": torch.randn(3, 2),
        "opt": {"state": {0: {"step": torch.tensor(4.0)}}, "param_groups": [{"lr": 1e-3, "params": [0]}]},
        "n": 7,
        "name": "x",
        "arr": np.arange(4),
        "none": None,
        "flag": True,
    }
    save_state(state, tmp_path / "ck")
    out = load_state(tmp_path / "ck")
    assert torch.equal(out["w"], state["w"]) and out["n"] == 7 and out["name"] == "x" and out["flag"] is True
    assert 0 in out["opt"]["state"] and torch.equal(out["opt"]["state"][0]["step"], torch.tensor(4.0))
    assert out["opt"]["param_groups"][0]["lr"] == 1e-3 and np.array_equal(out["arr"], np.arange(4))
    assert not list(tmp_path.glob("*.tmp"))


def test_missing_checkpoint_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_state(tmp_path / "nope")


def test_unserialisable_value_is_refused(tmp_path):
    with pytest.raises(TypeError, match="'bad'"):
        save_state({"bad": object()}, tmp_path / "ck")


def test_a_swap_cut_between_its_two_renames_is_finished_on_the_next_read(tmp_path):
    from robot_rl.utils.checkpoint import checkpoint_path, replace_dir

    def make(path, text):
        path.mkdir()
        (path / "agent.json").write_text(text)

    latest = tmp_path / "latest"
    make(latest, "v1")
    make(tmp_path / "latest.tmp", "v2")
    replace_dir(tmp_path / "latest.tmp", latest)  # the whole swap
    assert (latest / "agent.json").read_text() == "v2" and sorted(p.name for p in tmp_path.iterdir()) == ["latest"]
    # a crash after `latest` went aside and before the new one moved in: the complete new one wins
    latest.rename(tmp_path / "latest.old")
    make(tmp_path / "latest.tmp", "v3")
    assert (checkpoint_path(latest) / "agent.json").read_text() == "v3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest"]
    # nothing to finish when `latest` is there (a half-written .tmp from a crash mid-save is ignored)
    make(tmp_path / "latest.tmp", "half")
    assert (checkpoint_path(latest) / "agent.json").read_text() == "v3"
    # only the old one left: it comes back
    latest.rename(tmp_path / "latest.old")
    import shutil

    shutil.rmtree(tmp_path / "latest.tmp")
    assert (checkpoint_path(latest) / "agent.json").read_text() == "v3"
