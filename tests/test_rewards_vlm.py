"""VLM rewards with tiny randomly initialised dual encoders built from configs: checkpoint format, tokenizers,
zero-shot scoring (and its cache), fine-tuning into a success classifier, checkpoint conversion."""

import json
import shutil

import numpy as np
import pytest
import torch
from test_rewards_helpers import TINY_CLASSIFIER, SquareEnv, draw, square_store  # noqa: F401

from robot_rl.data.store import EpisodeStore
from robot_rl.rewards import load_reward_model, wrap_reward
from robot_rl.rewards.classifier import ClassifierConfig
from robot_rl.rewards.labelling import score_store
from robot_rl.rewards.vlm.convert import clip_vocab_from_merges, convert_clip_state_dict, infer_config
from robot_rl.rewards.vlm.finetune import train_vlm_classifier
from robot_rl.rewards.vlm.model import (
    DualEncoder,
    DualEncoderConfig,
    TextConfig,
    VisionConfig,
    load_dual_encoder,
    model_fingerprint,
    save_dual_encoder,
)
from robot_rl.rewards.vlm.tokenizer import BPETokenizer, WordTokenizer, bytes_to_symbols, load_tokenizer
from robot_rl.rewards.vlm.zero_shot import ZeroShotReward

PROMPTS = ["a red square in the top right corner", "a red square far from the corner", "an empty grey image"]


def tiny_config(**kw) -> DualEncoderConfig:
    kw.setdefault("text", TextConfig(vocab_size=64, context_length=12, width=32, layers=1, heads=2))
    return DualEncoderConfig(
        embed_dim=16, vision=VisionConfig(image_size=32, patch_size=8, width=32, layers=2, heads=2), **kw
    )


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vlm") / "tiny"
    save_dual_encoder(DualEncoder(tiny_config(name="tiny test model")), WordTokenizer.build(PROMPTS), path)
    return path


def test_checkpoint_directory_round_trip(tiny_vlm, tmp_path):
    model, tok = load_dual_encoder(tiny_vlm, "cpu")
    assert json.loads((tiny_vlm / "config.json").read_text())["format"] == "robot_rl.dual_encoder"
    img = np.random.default_rng(0).integers(0, 256, (3, 64, 48, 3), dtype=np.uint8)  # non-square: centre crop
    emb = model.encode_image(img)
    assert emb.shape == (3, 16) and torch.allclose(emb.norm(dim=-1), torch.ones(3))
    ids, eot = tok(PROMPTS, 12)
    assert ids[0, 0] == tok.start_id and ids[0, eot[0]] == tok.end_id
    assert model.logits(emb, model.encode_text(ids, eot)).shape == (3, 3)
    copy = tmp_path / "copy"
    shutil.copytree(tiny_vlm, copy)
    m2, t2 = load_dual_encoder(copy, "cpu")
    assert model_fingerprint(m2, t2) == model_fingerprint(model, tok)
    (copy / "config.json").write_text(json.dumps({**json.loads((copy / "config.json").read_text()), "embed_dim": 8}))
    with pytest.raises(ValueError, match="does not fit config.json"):
        load_dual_encoder(copy, "cpu")
    (copy / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="model.safetensors missing"):
        load_dual_encoder(copy, "cpu")


def test_tokenizers(tmp_path):
    w = WordTokenizer.build(["Pick the cube!"])
    ids, eot = w(["pick the CUBE", "pick a sphere " * 10], 6)
    assert ids[0].tolist() == [2, w.index["pick"], w.index["the"], w.index["cube"], 3, 0] and eot.tolist() == [4, 5]
    assert ids[1, 2] == w.unk_id and ids[1, 5] == w.end_id  # cut to fit, end token kept
    syms = list(bytes_to_symbols().values())
    assert len(set(syms)) == 256 and bytes_to_symbols()[ord("a")] == "a"
    merges = [("c", "u"), ("cu", "b"), ("cub", "e</w>"), ("t", "h"), ("th", "e</w>")]
    vocab, used = clip_vocab_from_merges(merges, 2 * 256 + len(merges) + 2)
    bpe = BPETokenizer(vocab, used)
    assert bpe.tokens("The  CUBE, cubes") == ["the</w>", "cube</w>", ",</w>", "cub", "e", "s</w>"]
    from robot_rl.rewards.vlm.tokenizer import save_tokenizer

    save_tokenizer(bpe, tmp_path)
    again = load_tokenizer(tmp_path)
    assert again(["the cube"], 8)[0].tolist() == bpe(["the cube"], 8)[0].tolist()
    assert again.fingerprint_data() == bpe.fingerprint_data()


def test_zero_shot_scores_and_cache(tiny_vlm, square_store, tmp_path):
    model, tok = load_dual_encoder(tiny_vlm, "cpu")
    zs = ZeroShotReward(model, tok, PROMPTS[0], PROMPTS[1:], ["front", "wrist"], threshold=0.4, checkpoint=tiny_vlm)
    frames = {c: np.stack([draw(np.array([x, x]))[c] for x in (0.1, 0.5, 0.9)]) for c in ("front", "wrist")}
    p = zs.score(frames)
    assert p.shape == (3,) and ((p > 0) & (p < 1)).all()
    per_cam = [zs.prompt_probs(frames[c]) for c in ("front", "wrist")]
    np.testing.assert_allclose(p, (per_cam[0] + per_cam[1]).numpy() / 2, rtol=1e-5)
    # The softmax over the prompts: the task prompt's share of all three.
    with torch.no_grad():
        lg = model.logits(model.encode_image(frames["front"]), zs.text_emb)
    np.testing.assert_allclose(per_cam[0].numpy(), torch.softmax(lg, -1)[:, 0].numpy(), rtol=1e-5)
    other = ZeroShotReward(model, tok, PROMPTS[0], PROMPTS[2:], ["front"])
    assert other.label_name() != zs.label_name()  # prompts are part of the cache key
    # Cached: the second pass over the store makes no model call.
    shutil.copytree(square_store, tmp_path / "s.zarr")
    store = EpisodeStore.open(tmp_path / "s.zarr")
    s1, st1 = score_store(store, zs)
    s2, st2 = score_store(store, zs)
    assert st1["model_calls"] > 0 and st2["model_calls"] == 0 and np.allclose(s1, s2, atol=1e-6)
    # Saved with a threshold; and usable straight from a checkpoint directory in a reward config.
    zs.save(tmp_path / "zs")
    again = load_reward_model(tmp_path / "zs", "cpu")
    np.testing.assert_allclose(again.score(frames), p, rtol=1e-5)
    env = wrap_reward(
        SquareEnv(),
        {
            "name": "vlm_zero_shot",
            "path": str(tiny_vlm),
            "prompt": PROMPTS[0],
            "negatives": PROMPTS[1:],
            "cameras": ["front"],
            "reward": "score",
        },
        "cpu",
    )
    env.reset(seed=0)
    _, r, _, _, info = env.step(np.zeros(2, np.float32))
    assert 0 < r < 1 and r == info["reward_score"]


def test_finetuned_vlm_becomes_a_success_classifier(tiny_vlm, square_store, tmp_path):
    cfg = ClassifierConfig.from_dict(
        {
            **TINY_CLASSIFIER,
            "backbone": "vlm",
            "vlm_path": str(tiny_vlm),
            "prompt": PROMPTS[0],
            "train_blocks": 1,
            "steps": 200,
            "lr": 3e-3,
        }
    )
    torch.manual_seed(0)
    clf, rep = train_vlm_classifier(EpisodeStore.open(square_store), cfg, seed=0, device="cpu", out=tmp_path / "ft")
    assert rep["validation"]["roc_auc"] >= 0.9, rep["validation"]
    assert rep["validation"]["at_threshold"]["accuracy"] >= 0.85
    assert (tmp_path / "ft" / "vlm" / "model.safetensors").is_file() and (tmp_path / "ft" / "roc.png").is_file()
    again = load_reward_model(tmp_path / "ft", "cpu")
    frames = {c: np.stack([draw(np.array([x, x]))[c] for x in (0.1, 0.9)]) for c in ("front", "wrist")}
    np.testing.assert_allclose(again.score(frames), clf.score(frames), rtol=1e-5)
    assert again.score(frames)[1] > again.score(frames)[0]  # the corner frame is the success
    # Only the top block and the head changed; the frozen bottom of the tower is untouched.
    base, _ = load_dual_encoder(tiny_vlm, "cpu")
    tuned = again.model
    assert torch.equal(base.visual.conv1.weight, tuned.visual.conv1.weight)
    assert torch.equal(
        base.visual.transformer.resblocks[0].mlp.c_fc.weight, tuned.visual.transformer.resblocks[0].mlp.c_fc.weight
    )
    assert not torch.equal(base.visual.proj, tuned.visual.proj)


def test_convert_openai_layout_state_dict(tmp_path):
    merges = [("a", "b")]
    vocab, used = clip_vocab_from_merges(merges, 2 * 256 + 1 + 2)
    with pytest.raises(ValueError, match="does not fit"):
        clip_vocab_from_merges(merges, 100)
    torch.manual_seed(1)
    model = DualEncoder(tiny_config(text=TextConfig(vocab_size=515, context_length=12, width=32, layers=1, heads=2)))
    state = {f"module.{k}": v for k, v in model.state_dict().items()}  # e.g. saved from a DataParallel wrapper
    state.update(
        {"input_resolution": torch.tensor(32), "context_length": torch.tensor(12), "vocab_size": torch.tensor(515)}
    )
    cfg = infer_config({k[7:]: v for k, v in state.items()}, vision_heads=2, text_heads=2)
    assert (cfg.vision.image_size, cfg.vision.patch_size, cfg.vision.layers, cfg.text.layers, cfg.embed_dim) == (
        32,
        8,
        2,
        1,
        16,
    )
    convert_clip_state_dict(state, BPETokenizer(vocab, used), tmp_path / "conv", 2, 2)
    conv, tok = load_dual_encoder(tmp_path / "conv", "cpu")
    img = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    assert torch.allclose(conv.encode_image(img), model.encode_image(img), atol=1e-6)
    ids, eot = tok(["ab ba"], 12)
    assert torch.allclose(conv.encode_text(ids, eot), model.encode_text(ids, eot), atol=1e-6)
    with pytest.raises(ValueError, match="not an OpenAI-layout"):
        convert_clip_state_dict({**state, "module.extra.weight": torch.zeros(1)}, tok, tmp_path / "bad", 2, 2)
    with pytest.raises(ValueError, match="the tokenizer has"):
        convert_clip_state_dict(state, WordTokenizer.build(["x"]), tmp_path / "bad", 2, 2)


def test_local_vlm_labeller_and_sigmoid_score(tiny_vlm, tmp_path):
    from robot_rl.rewards.preference import FIRST, SECOND, UNSURE, build_labeller

    lab = build_labeller({"type": "vlm", "vlm_path": str(tiny_vlm), "negatives": PROMPTS[1:], "margin": 0.0}, "cpu")
    a = np.stack([draw(np.array([x, x]))["front"] for x in (0.1, 0.5, 0.9)])
    ans = lab.compare(a, a[::-1].copy(), PROMPTS[0])
    assert ans.dtype == np.int8 and set(ans.tolist()) <= {FIRST, SECOND, UNSURE} and lab.calls == 1
    assert ans[1] == UNSURE and {ans[0], ans[2]} == {FIRST, SECOND}  # same frame: no preference; else antisymmetric
    assert len(lab.identity()["model"]) == 16
    torch.manual_seed(2)
    sig = DualEncoder(tiny_config(score="sigmoid", logit_bias=True))
    save_dual_encoder(sig, WordTokenizer.build(PROMPTS), tmp_path / "sig")
    m, tok = load_dual_encoder(tmp_path / "sig", "cpu")
    zs = ZeroShotReward(m, tok, PROMPTS[0], [], ["front"])  # sigmoid: no negatives needed
    with torch.no_grad():
        want = torch.sigmoid(m.logits(m.encode_image(a), zs.text_emb)[:, 0])
    np.testing.assert_allclose(zs.score({"front": a}), want.numpy(), rtol=1e-5)
