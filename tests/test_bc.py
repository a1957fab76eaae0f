"""Behaviour cloning with action chunks: chunk targets, the two execution modes on hand-made chunks, the flow head on a
toy distribution, ``robot-rl train-bc`` on reach from scripted demos, and its bad-input errors."""

import json

import numpy as np
import pytest
import torch

from robot_rl.agents.bc import BCConfig, ChunkExecutor, FlowHead, chunk_targets


def test_chunk_targets_pad_with_the_last_action():
    actions = np.arange(4, dtype=np.float32)[:, None]  # (T=4, A=1): 0 1 2 3
    got = chunk_targets(actions, 3)[..., 0]
    np.testing.assert_array_equal(got, [[0, 1, 2], [1, 2, 3], [2, 3, 3], [3, 3, 3]])


def _chunk(start: int, h: int) -> np.ndarray:
    """A chunk whose actions say when it was predicted and which of its steps they are: 100 x start + i."""
    return (100.0 * start + np.arange(h, dtype=np.float32))[:, None]


def _run(ex: ChunkExecutor, steps: int) -> tuple[list[float], list[int]]:
    actions, predicted_at = [], []
    for t in range(steps):
        if ex.wants_chunk:
            ex.push(_chunk(t, ex.horizon))
            predicted_at.append(t)
        actions.append(float(ex.next()[0]))
    return actions, predicted_at


def test_receding_horizon_executes_replan_actions_of_each_chunk():
    actions, at = _run(ChunkExecutor(4, "receding", replan=2), 7)
    assert at == [0, 2, 4, 6]
    assert actions == [0, 1, 200, 201, 400, 401, 600]
    actions, at = _run(ChunkExecutor(3, "receding", replan=3), 7)  # the whole chunk, open loop
    assert at == [0, 3, 6] and actions == [0, 1, 2, 300, 301, 302, 600]


def test_temporal_ensembling_averages_every_prediction_for_the_step():
    actions, at = _run(ChunkExecutor(3, "ensemble", decay=0.0), 5)
    assert at == [0, 1, 2, 3, 4]  # a chunk every step
    # step 2 is covered by the chunks from steps 0, 1, 2 (their entries 2, 1, 0): mean of 2, 101, 200
    assert actions[:3] == [0.0, pytest.approx((1 + 100) / 2), pytest.approx((2 + 101 + 200) / 3)]
    assert actions[4] == pytest.approx((202 + 301 + 400) / 3)  # the chunk from step 1 no longer covers step 4
    ex = ChunkExecutor(2, "ensemble", decay=1.0)  # older predictions weigh exp(0) = 1, newer exp(-1)
    _run(ex, 1)
    ex.push(_chunk(1, 2))
    w = np.exp(-np.arange(2.0))
    assert float(ex.next()[0]) == pytest.approx((w[0] * 1 + w[1] * 100) / w.sum())
    ex.reset()
    assert ex.wants_chunk and ex.t == 0 and not ex.chunks
    with pytest.raises(RuntimeError, match="no chunk covers"):
        ex.next()


def test_flow_head_denoises_a_bimodal_toy_distribution():
    """Half the demonstrations go to -0.6, half to +0.6: regression would average them to 0; the flow head keeps
    both modes and puts little mass between them."""
    torch.manual_seed(0)
    head = FlowHead(feat_dim=1, horizon=1, action_dim=1, hidden=(64, 64), steps=10)
    opt = torch.optim.Adam(head.parameters(), lr=2e-3)
    feat = torch.zeros(256, 1)
    for _ in range(1500):
        modes = torch.where(torch.rand(256) < 0.5, -0.6, 0.6)
        x = (modes + 0.03 * torch.randn(256)).view(256, 1, 1)
        loss = head.loss(feat, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        s = head.sample(torch.zeros(2000, 1)).flatten()
    near_low, near_high = ((s + 0.6).abs() < 0.15).float().mean(), ((s - 0.6).abs() < 0.15).float().mean()
    assert 0.3 < near_low < 0.7 and 0.3 < near_high < 0.7, (near_low, near_high)
    assert (s.abs() < 0.3).float().mean() < 0.1


def test_config_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="policy=flow"):
        BCConfig(policy="diffusion")
    with pytest.raises(ValueError, match="execute="):
        BCConfig(execute="sometimes")
    with pytest.raises(ValueError, match="replan"):
        BCConfig(chunk=4, replan=5)
    assert BCConfig(chunk=1).replan == 1 and BCConfig(chunk=8).replan == 4  # default: half the chunk
    with pytest.raises(ValueError, match="unknown BC option"):
        BCConfig.from_dict({"chunks": 3})


def test_train_bc_clones_reach_from_scripted_demos(reach_demos, tmp_path, capsys):
    from robot_rl.cli import main

    run = tmp_path / "bc"
    args = ["train-bc", "task=reach", f"data=[{reach_demos}]", "steps=1500", "eval.every=750", "threads=1"]
    assert main([*args, "replan=1", f"run_dir={run}"]) == 0
    history = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [750, 1500] and (run / "curve.png").stat().st_size > 1000
    assert max(h["success_rate"] for h in history) >= 0.8, history
    for name in ("best", "latest"):
        assert (run / "checkpoints" / name / "agent.safetensors").exists()
        assert (run / "checkpoints" / name / "spec.json").exists()
    capsys.readouterr()
    assert main(["eval", f"checkpoint={run}", "episodes=5"]) == 0  # robot-rl eval runs a cloned policy too
    assert "success rate" in capsys.readouterr().out


def test_train_bc_refuses_bad_data(reach_demos, tmp_path, capsys):
    from robot_rl.cli import main

    common = ["train-bc", "steps=10", f"run_dir={tmp_path / 'x'}"]
    assert main([*common, "task=pick_cube", f"data=[{reach_demos}]"]) == 2  # another task's store
    assert "does not match the task" in capsys.readouterr().err
    assert main([*common, "task=reach", "data=[]"]) == 2
    assert "no data" in capsys.readouterr().err
    assert main([*common, "task=reach", f"data=[{tmp_path / 'missing.zarr'}]"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([*common, "task=reach", f"data=[{reach_demos}]", "policy=diffusion"]) == 2
    assert "policy=flow" in capsys.readouterr().err
