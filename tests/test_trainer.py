import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from robot_rl.cli import compose
from robot_rl.envs.contract import NonFiniteError, check_env_contract
from robot_rl.envs.make import make_env
from robot_rl.trainer import Trainer
from robot_rl.utils.checkpoint import load_state


def toy_cfg(toy_task, tmp_path, **over):
    cfg = compose(
        "train",
        [
            "~task",
            "agent=rlpd",
            "agent.hidden_dims=[32,32]",
            "agent.num_critics=4",
            "agent.batch_size=64",
            "agent.utd_ratio=2",
            "demos.episodes=5",
            "eval.episodes=5",
            "threads=1",
            "device=cpu",
        ],
    )
    cfg.task = OmegaConf.create(toy_task)
    for k, v in over.items():
        OmegaConf.update(cfg, k, v)
    return cfg


def test_toy_env_meets_contract(toy_task):
    check_env_contract(make_env(toy_task))


def test_nan_observation_is_refused_at_the_env_boundary(toy_task):
    env = make_env(dict(toy_task, env_kwargs={"nan_at_step": 2}))
    env.reset(seed=0)
    env.step(np.zeros(2, np.float32))
    with pytest.raises(NonFiniteError, match=r"observation\['state'\]"):
        env.step(np.zeros(2, np.float32))
    with pytest.raises(NonFiniteError, match="action"):
        env.step(np.array([np.nan, 0], np.float32))


def test_rlpd_with_demos_learns_toy_reach(toy_task, tmp_path):
    cfg = toy_cfg(toy_task, tmp_path, total_steps=1500, **{"eval.every": 1500, "eval.episodes": 20})
    tr = Trainer(cfg, tmp_path)
    tr.collect_demos()
    out = tr.train(progress=False)
    assert out["final"]["success_rate"] >= 0.8, out
    assert (tmp_path / "curve.png").stat().st_size > 1000
    assert (tmp_path / "checkpoints/best/agent.safetensors").exists()
    assert len((tmp_path / "eval.jsonl").read_text().splitlines()) >= 1


def test_stop_at_success_ends_the_run_early(toy_task, tmp_path):
    cfg = toy_cfg(toy_task, tmp_path, total_steps=5000, **{"eval.every": 250, "eval.stop_at_success": 0.4})
    tr = Trainer(cfg, tmp_path)
    tr.collect_demos()
    tr.train(progress=False)
    assert tr.history[-1]["score"] >= 0.4 and tr.step < 5000
    assert all(h["score"] < 0.4 for h in tr.history[:-1])


def test_best_and_stop_claims_are_confirmed_on_the_same_larger_set(toy_task, tmp_path):
    over = {"eval.every": 250, "eval.confirm": 2, "eval.confirm_from": 0.0, "eval.stop_at_success": 0.95}
    tr = Trainer(toy_cfg(toy_task, tmp_path, total_steps=1000, **over), tmp_path)
    tr.collect_demos()
    tr.train(progress=False)
    best = -1.0
    for h in tr.history:
        claims = h["success_rate"] >= best or h["success_rate"] >= 0.95
        assert ("confirm_success_rate" in h) == claims, h  # every claim confirmed, nothing else
        if claims:
            assert h["confirm_episodes"] == 10 and h["score"] == h["confirm_success_rate"]
            assert h["confirm_success_ci_low"] <= h["confirm_success_rate"] <= h["confirm_success_ci_high"]
        else:
            assert h["score"] == h["success_rate"]
        best = max(best, h["score"])
    assert tr.best_success == best
    winner = [h for h in tr.history if h["score"] == best][-1]  # the last to reach it: ties go to the newer
    assert load_state(tmp_path / "checkpoints/best/agent")["num_updates"] == winner["updates"]
    if tr.step < 1000:  # stopped early: only on a confirmed rate
        assert tr.history[-1]["score"] >= 0.95


def test_best_goes_to_the_newer_of_tied_scores_and_never_to_a_lower_one(toy_task, tmp_path, monkeypatch):
    """Confirmed scores 0.6, 1.0, 0.9, 1.0, 0.95 at updates 1-5: ``best`` is the second 1.0 (100 episodes cannot rank
    policies near 100%; the newer has trained longer), never a later lower score."""
    import robot_rl.evaluate as evaluate_module

    rates = iter([0.6, 0.6, 1.0, 1.0, 0.9, 1.0, 1.0, 0.95])  # each evaluation, then its confirmation if it claims

    def scripted(policy, env, episodes, seed, **kw):
        rate = next(rates)
        return {"success_rate": rate, "success_ci_low": rate, "success_ci_high": rate, "episodes": episodes,
                "failed_seeds": [], "return_mean": rate, "length_mean": 1.0, "cycle_time_s": 1.0}  # fmt: skip

    monkeypatch.setattr(evaluate_module, "evaluate", scripted)
    tr = Trainer(toy_cfg(toy_task, tmp_path, **{"eval.confirm_from": 0.5}), tmp_path)

    class Writer:
        def add_scalar(self, *a):
            pass

    for i in range(1, 6):
        tr.agent.num_updates = i
        tr.evaluate_and_checkpoint(Writer())
    assert [h["score"] for h in tr.history] == [0.6, 1.0, 0.9, 1.0, 0.95]
    assert ["confirm_success_rate" in h for h in tr.history] == [True, True, False, True, False]
    assert load_state(tmp_path / "checkpoints/best/agent")["num_updates"] == 4 and tr.best_success == 1.0


def test_a_background_evaluation_records_the_policy_it_evaluated_while_the_agent_goes_on(
    toy_task, tmp_path, monkeypatch
):
    """``start_evaluation(background=True)`` evaluates a copy of the policy in a thread: the learner's agent changes
    meanwhile (here by hand, as updates would), yet the evaluation acts with the weights it began with, its record
    carries the step and update count of then, ``best`` holds the evaluated agent and ``latest`` the agent of now."""
    import threading

    import robot_rl.evaluate as evaluate_module

    tr = Trainer(toy_cfg(toy_task, tmp_path, **{"eval.confirm": 0}), tmp_path)
    obs, _ = tr.eval_env.reset(seed=0)
    before = tr.agent.act(obs, deterministic=True)
    changed, acted = threading.Event(), []

    def held(policy, env, episodes, seed, **kw):
        assert changed.wait(60)  # the agent has changed by now
        acted.append(policy(obs))
        return {"success_rate": 0.8, "episodes": episodes, "failed_seeds": [], "return_mean": 0.8,
                "length_mean": 1.0, "cycle_time_s": 1.0}  # fmt: skip

    monkeypatch.setattr(evaluate_module, "evaluate", held)
    tr.agent.num_updates, tr.step = 7, 1000
    pending = tr.start_evaluation(background=True)
    assert not tr.eval_due  # the next evaluation is scheduled from the step it began at
    with torch.no_grad():  # what updates would do while it runs
        for p in tr.agent.actor.parameters():
            p.add_(0.5)
    tr.agent.num_updates, tr.step = 19, 1003
    changed.set()

    class Writer:
        def add_scalar(self, *a):
            pass

    h = tr.finish_evaluation(pending, Writer())
    np.testing.assert_array_equal(acted[0], before)
    assert not np.allclose(tr.agent.act(obs, deterministic=True), before)
    assert (h["step"], h["updates"], h["score"]) == (1000, 7, 0.8) and tr.history == [h]
    assert load_state(tmp_path / "checkpoints/best/agent")["num_updates"] == 7
    assert load_state(tmp_path / "checkpoints/latest/agent")["num_updates"] == 19
    assert not (tmp_path / "checkpoints/candidate").exists()


def test_demos_are_kept_in_a_store_and_load_back(toy_task, tmp_path):
    first = Trainer(toy_cfg(toy_task, tmp_path), tmp_path / "a")
    first.collect_demos()
    store = tmp_path / "a/demos.zarr"
    second = Trainer(toy_cfg(toy_task, tmp_path, **{"demos.path": str(store)}), tmp_path / "b")
    assert second.load_demos(store)["demo_episodes"] == 5
    a, b = first.demo.state_dict(), second.demo.state_dict()
    assert a["size"] == b["size"] > 0
    for k in ("action", "reward", "terminated", "truncated"):
        assert np.array_equal(a[k], b[k]), k
    assert np.array_equal(a["obs"]["state"], b["obs"]["state"])
    assert np.array_equal(a["final_next_obs"]["state"], b["final_next_obs"]["state"])


def test_demo_store_for_another_task_is_refused(toy_task, tmp_path):
    from robot_rl.data.store import EpisodeStore, StoreSchema

    EpisodeStore.create(tmp_path / "other.zarr", StoreSchema({"state": ((9,), "float32")}, 2, 10.0)).close()
    tr = Trainer(toy_cfg(toy_task, tmp_path), tmp_path / "run")
    with pytest.raises(ValueError, match=r"does not match task toy_reach: observation 'state'"):
        tr.load_demos(tmp_path / "other.zarr")


def _weights(tr):
    return {k: v.clone() for k, v in tr.agent.critic.state_dict().items()}


def test_resume_continues_exactly(toy_task, tmp_path):
    over = {"total_steps": 400, "eval.every": 200, "learning_starts": 50}
    straight = Trainer(toy_cfg(toy_task, tmp_path, **over), tmp_path / "a")
    straight.collect_demos()
    straight.train(progress=False)

    first = Trainer(toy_cfg(toy_task, tmp_path, **dict(over, total_steps=200)), tmp_path / "b")
    first.collect_demos()
    first.train(progress=False)
    stop_step = first.step
    del first
    resumed = Trainer(toy_cfg(toy_task, tmp_path, **over), tmp_path / "b")
    resumed.load_checkpoint(tmp_path / "b/checkpoints/latest")
    assert resumed.step == stop_step and resumed.agent.num_updates > 0
    resumed.train(progress=False)

    assert resumed.step == straight.step and resumed.agent.num_updates == straight.agent.num_updates
    for (k, a), b in zip(_weights(straight).items(), _weights(resumed).values()):
        assert torch.equal(a, b), k
    assert torch.equal(straight.agent.log_alpha, resumed.agent.log_alpha)
    assert [h["return_mean"] for h in straight.history] == [h["return_mean"] for h in resumed.history]


def test_checkpoint_for_another_spec_is_refused(toy_task, tmp_path):
    tr = Trainer(toy_cfg(toy_task, tmp_path), tmp_path)
    tr.save_checkpoint(tmp_path / "ck")
    spec = json.loads((tmp_path / "ck/spec.json").read_text())
    spec["observation"]["state"]["shape"] = [7]
    (tmp_path / "ck/spec.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=r"observation 'state': checkpoint .*\[7\].* vs env .*\[4\]"):
        tr.load_checkpoint(tmp_path / "ck")


def _interrupt_after(env, steps):
    """Make ``env.step`` raise KeyboardInterrupt on its ``steps``-th call, like Ctrl+C mid-episode."""
    inner, count = env.step, [0]

    def step(action):
        count[0] += 1
        if count[0] == steps:
            raise KeyboardInterrupt
        return inner(action)

    env.step = step


def test_every_online_transition_reaches_the_store_and_a_resume_recovers_them(toy_task, tmp_path):
    from robot_rl.data.store import EpisodeStore

    over = {"total_steps": 1000, "eval.every": 150, "learning_starts": 50}
    tr = Trainer(toy_cfg(toy_task, tmp_path, **over), tmp_path)
    tr.collect_demos()
    _interrupt_after(tr.env, 260)
    with pytest.raises(KeyboardInterrupt):
        tr.train(progress=False)
    assert tr.step == 259
    with EpisodeStore.open(tmp_path / "online.zarr") as store:
        assert store.num_steps == 259 and not store.validate()
        last = store.episode(len(store) - 1)
        assert last["truncated"][-1] and not last["terminated"][-1]  # the cut episode bootstraps
        assert "cut short" in last["metadata"]["notes"]
        assert {store.metadata(i)["source"] for i in range(len(store))} == {"policy"}
        stored_episodes = len(store)
        n = len(tr.online)  # episodes enter the buffer whole, as they end: the cut one is in the store only
        assert n == 259 - len(last["action"])
        np.testing.assert_array_equal(store.read_all()["obs"]["state"][:n], tr.online.obs["state"][:n])
    ckpt_step = load_state(tmp_path / "checkpoints/latest/trainer")["step"]
    assert ckpt_step < 259  # the last checkpoint came before the interruption
    resumed = Trainer(toy_cfg(toy_task, tmp_path, **over), tmp_path)
    resumed.load_checkpoint(tmp_path / "checkpoints/latest")
    assert resumed.step == 259 and resumed.episode == stored_episodes and len(resumed.online) == 259
    assert len(resumed.demo) == len(tr.demo)


def test_resume_refuses_a_store_with_fewer_episodes_than_the_checkpoint(toy_task, tmp_path):
    import shutil

    tr = Trainer(toy_cfg(toy_task, tmp_path, total_steps=120, **{"eval.every": 100}), tmp_path)
    tr.collect_demos()
    tr.train(progress=False)
    shutil.rmtree(tmp_path / "online.zarr")
    resumed = Trainer(toy_cfg(toy_task, tmp_path), tmp_path)
    with pytest.raises(ValueError, match="online.zarr is missing"):
        resumed.load_checkpoint(tmp_path / "checkpoints/latest")


def test_online_buffer_prefills_from_an_earlier_run(toy_task, tmp_path):
    first = Trainer(toy_cfg(toy_task, tmp_path, total_steps=60, learning_starts=1000), tmp_path / "a")
    first.train(progress=False)
    store = str(tmp_path / "a/online.zarr")
    cfg = toy_cfg(toy_task, tmp_path, total_steps=100, learning_starts=1000, prefill=[store], **{"eval.every": 30})
    second = Trainer(cfg, tmp_path / "b")
    assert second.prefill([store])["prefill_transitions"] == first.step
    np.testing.assert_array_equal(second.online.obs["state"][: first.step], first.online.obs["state"][: first.step])
    second.train(progress=False)
    resumed = Trainer(cfg, tmp_path / "b")
    resumed.load_checkpoint(tmp_path / "b/checkpoints/latest")
    assert len(resumed.online) == first.step + second.step


def test_pixel_training_caches_trunk_maps_in_the_buffer_and_keeps_images_in_the_store(tmp_path):
    from robot_rl.data.store import EpisodeStore

    over = [
        "obs=pixels",
        "task=reach",
        "task.env_kwargs.image_size=64",
        "agent.hidden_dims=[32,32]",
        "agent.num_critics=2",
        "agent.batch_size=16",
        "agent.utd_ratio=1",
        "agent.precision=bf16",  # float16 cached maps under bf16 autocast (what precision=auto picks on a GPU)
        "+agent.encoder.feature_dim=16",
        "demos.episodes=2",
        "total_steps=60",
        "learning_starts=30",
        "eval.every=60",
        "eval.episodes=1",
        "threads=1",
        "device=cpu",
    ]
    tr = Trainer(compose("train", over), tmp_path)
    trunk = {k: v.clone() for k, v in tr.agent.encoder.trunks.state_dict().items()}
    heads = {k: v.clone() for k, v in tr.agent.encoder.heads.state_dict().items()}
    tr.collect_demos()
    tr.train(progress=False)
    assert tr.online.obs["front"].dtype == np.float16 and tr.online.obs["front"].shape[1:] == (320, 2, 2)
    assert all(torch.equal(v, tr.agent.encoder.trunks.state_dict()[k]) for k, v in trunk.items())  # frozen
    assert any(not torch.equal(v, tr.agent.encoder.heads.state_dict()[k]) for k, v in heads.items())  # trained
    with EpisodeStore.open(tmp_path / "online.zarr") as store:
        assert store.schema.obs["front"] == ((64, 64, 3), "uint8") and store.num_steps == tr.step
    resumed = Trainer(compose("train", over), tmp_path)
    resumed.load_checkpoint(tmp_path / "checkpoints/latest")
    # recomputed from the stored images (in batches, so equal up to float16 rounding of batch-size effects)
    np.testing.assert_allclose(
        resumed.online.obs["front"][: tr.step].astype(np.float32),
        tr.online.obs["front"][: tr.step].astype(np.float32),
        atol=2e-2,
        rtol=1e-2,
    )


def test_interventions_go_to_the_store_and_into_both_buffers(tmp_path):
    from robot_rl.data.store import EpisodeStore

    cfg = compose(
        "train",
        [
            "task=reach",
            "hil=sim_operator_heavy",
            "corrections.demo_buffer=true",
            "demos.episodes=0",
            "total_steps=120",
            "learning_starts=100000",
            "eval.every=100000",
            "eval.episodes=1",
            "threads=1",
            "device=cpu",
        ],
    )
    tr = Trainer(cfg, tmp_path)
    tr.train(progress=False)
    with EpisodeStore.open(tmp_path / "online.zarr") as store:
        data = store.read_all()
        human = int(data["is_intervention"].sum())
        assert 0 < human < store.num_steps == len(tr.online)
        assert "intervention" in set(data["source"])
    assert len(tr.demo) == human  # every corrected step is replayed as a demonstration too
    assert int(tr.online.is_intervention[: len(tr.online)].sum()) == human


def _hil_cfg(**over):
    """Reach with the simulated operator: coin flips, noise and a run budget (50 steps) that runs out mid-run."""
    cfg = compose(
        "train",
        [
            "task=reach",
            "hil=sim_operator_heavy",
            "hil.settings.probability=0.7",
            "hil.settings.budget_steps=50",
            "corrections.demo_buffer=true",  # the corrected segments replayed as demos: resume must rebuild them
            "agent.hidden_dims=[32,32]",
            "agent.num_critics=2",
            "agent.batch_size=32",
            "agent.utd_ratio=1",
            "demos.episodes=2",
            "eval.episodes=1",
            "learning_starts=40",
            "threads=1",
            "device=cpu",
        ],
    )
    for k, v in over.items():
        OmegaConf.update(cfg, k, v)
    return cfg


def _assert_same_buffer(a, b):
    """Two replay buffers hold the same transitions in the same slots."""
    sa, sb = a.state_dict(), b.state_dict()
    assert (sa["pos"], sa["size"]) == (sb["pos"], sb["size"])
    for k in ("action", "reward", "terminated", "truncated", "is_intervention", "final_slots"):
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
    for part in ("obs", "final_next_obs"):
        for k in sa[part]:
            np.testing.assert_array_equal(sa[part][k], sb[part][k], err_msg=f"{part}[{k}]")


def test_resume_with_the_sim_operator_continues_exactly(tmp_path):
    over = {"total_steps": 160, "eval.every": 80}
    straight = Trainer(_hil_cfg(**over), tmp_path / "a")
    straight.start_fresh()
    straight.train(progress=False)

    first = Trainer(_hil_cfg(**dict(over, total_steps=80)), tmp_path / "b")
    first.start_fresh()
    first.train(progress=False)
    stop_step, used = first.step, first.env.device.run_intervention_steps
    assert 0 < used < 50  # the checkpoint falls while the operator's budget is partly spent
    del first
    resumed = Trainer(_hil_cfg(**over), tmp_path / "b")
    resumed.load_checkpoint(tmp_path / "b/checkpoints/latest")
    assert resumed.step == stop_step and resumed.env.device.run_intervention_steps == used
    resumed.train(progress=False)

    ops = straight.env.device, resumed.env.device
    assert ops[0].run_intervention_steps == ops[1].run_intervention_steps == 50  # ran out after the checkpoint
    assert ops[0].run_takeovers == ops[1].run_takeovers
    assert ops[0].state_dict()["rng"] == ops[1].state_dict()["rng"]
    assert resumed.step == straight.step and resumed.agent.num_updates == straight.agent.num_updates
    for (k, a), b in zip(_weights(straight).items(), _weights(resumed).values()):
        assert torch.equal(a, b), k
    assert torch.equal(straight.agent.log_alpha, resumed.agent.log_alpha)
    assert [h["return_mean"] for h in straight.history] == [h["return_mean"] for h in resumed.history]
    _assert_same_buffer(straight.online, resumed.online)
    _assert_same_buffer(straight.demo, resumed.demo)


def test_resume_puts_the_stored_interventions_back_into_the_demo_buffer(tmp_path):
    cfg = _hil_cfg(total_steps=100, **{"eval.every": 100})  # the checkpoint at the end holds every episode
    tr = Trainer(cfg, tmp_path)
    tr.start_fresh()
    tr.train(progress=False)
    from robot_rl.data.store import EpisodeStore

    with EpisodeStore.open(tmp_path / "demos.zarr") as demos, EpisodeStore.open(tmp_path / "online.zarr") as online:
        scripted, corrected = demos.num_steps, int(online.read_all()["is_intervention"].sum())
    assert corrected > 0 and len(tr.demo) == scripted + corrected
    resumed = Trainer(cfg, tmp_path)
    resumed.load_checkpoint(tmp_path / "checkpoints/latest")
    _assert_same_buffer(tr.demo, resumed.demo)  # scripted demos, then the corrections, in the order trained on
    _assert_same_buffer(tr.online, resumed.online)


def test_init_from_starts_with_another_runs_agent_and_refuses_another_spec(toy_task, tmp_path):
    a = Trainer(toy_cfg(toy_task, tmp_path, total_steps=100, learning_starts=50, **{"eval.every": 100}), tmp_path / "a")
    a.collect_demos()
    a.train(progress=False)
    b = Trainer(toy_cfg(toy_task, tmp_path, init_from=str(tmp_path / "a"), **{"demos.episodes": 0}), tmp_path / "b")
    assert b.start_fresh()["init_from"].endswith("checkpoints/best")
    best = load_state(tmp_path / "a/checkpoints/best/agent")
    for k, v in best["actor"].items():
        assert torch.equal(b.agent.actor.state_dict()[k], v), k
    import shutil

    shutil.copytree(tmp_path / "a/checkpoints/best", tmp_path / "other")
    spec = json.loads((tmp_path / "other/spec.json").read_text())
    spec["action"]["shape"] = [3]
    (tmp_path / "other/spec.json").write_text(json.dumps(spec))
    c = Trainer(toy_cfg(toy_task, tmp_path, init_from=str(tmp_path / "other"), **{"demos.episodes": 0}), tmp_path / "c")
    with pytest.raises(ValueError, match="action shape"):
        c.start_fresh()


def test_evaluations_run_in_eval_task_when_given_and_a_task_of_another_spec_is_refused(tmp_path):
    base = ["task=pick_cube", "demos.episodes=0", "device=cpu", "threads=1"]
    tr = Trainer(compose("train", [*base, "eval.task=pick_cube_gap"]), tmp_path / "a")
    assert tr.eval_env.unwrapped.action_delay == 1 and tr.env.unwrapped.action_delay == 0
    with pytest.raises(ValueError, match=r"eval.task=reach.*action shape"):
        Trainer(compose("train", [*base, "eval.task=reach"]), tmp_path / "b")


def test_demo_warmup_updates_run_on_demonstrations_before_the_first_online_update(toy_task, tmp_path):
    tr = Trainer(toy_cfg(toy_task, tmp_path, total_steps=100, demo_warmup_updates=30), tmp_path)
    tr.collect_demos()
    assert tr.learn(tr.batches()) is not None and tr.agent.num_updates == 31  # 30 warm-up + the update itself
    tr.learn(tr.batches())
    assert tr.agent.num_updates == 32  # once only
