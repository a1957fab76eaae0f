"""Image encoders, DrQ augmentation and the frozen-trunk feature cache: small, behavioural tests."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from gymnasium import spaces

from robot_rl.agents.augment import random_shift, random_shift_features
from robot_rl.agents.encoders import Encoder, ObservationEncoder, StateEncoder, build_encoder
from robot_rl.agents.vision import (
    ConvTrunk,
    PretrainedTrunk,
    Trunk,
    efficientnet_lite0,
    imagenet_preprocess,
    lite0_weight_path,
    load_lite0_state_dict,
)

STATE_DIM = 5


def obs_space(size: int = 64, cams: tuple[str, ...] = ("front", "wrist")) -> spaces.Dict:
    d = {"state": spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32)}
    d.update({c: spaces.Box(0, 255, (size, size, 3), np.uint8) for c in cams})
    return spaces.Dict(d)


def random_obs(space: spaces.Dict, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, s in space.spaces.items():
        if s.dtype == np.uint8:
            out[k] = torch.randint(0, 256, (batch, *s.shape), dtype=torch.uint8, generator=g)
        else:
            out[k] = torch.randn(batch, *s.shape, generator=g)
    return out


@pytest.fixture(scope="module")
def pretrained_encoder() -> ObservationEncoder:
    """Default camera encoder (pretrained, shared frozen trunk, cache on) at 64x64: maps (320, 2, 2)."""
    return build_encoder(obs_space(64), {"feature_dim": 16})


# ----------------------------------------------------------------------------------------------------- encoders
def test_state_only_space_keeps_state_encoder():
    space = obs_space(cams=())
    assert isinstance(build_encoder(space), StateEncoder)
    assert isinstance(build_encoder(space, {"feature_dim": 64}), StateEncoder)  # image options, no cameras
    assert isinstance(build_encoder(obs_space(), {"type": "state"}), StateEncoder)  # cameras ignored on request


def test_default_for_camera_space_is_pretrained_shared_and_cached(pretrained_encoder):
    enc = pretrained_encoder
    assert enc.cfg.type == "pretrained" and enc.cache_enabled and enc.frozen
    assert list(enc.trunks) == ["shared"] and sorted(enc.heads) == ["front", "wrist"]
    assert enc.feature_shapes == {"front": (320, 2, 2), "wrist": (320, 2, 2)}
    assert enc.out_dim == 2 * 16 + STATE_DIM
    out = enc(random_obs(obs_space(64), 3))
    assert out.shape == (3, enc.out_dim) and torch.isfinite(out).all()


@pytest.mark.parametrize(
    "cfg, cams, n_trunks, n_heads",
    [
        ({"type": "conv", "feature_dim": 8}, ("front",), 1, 1),
        ({"type": "conv", "feature_dim": 8, "head": "spatial_softmax"}, ("front", "wrist"), 2, 2),
        ({"type": "conv", "feature_dim": 8, "shared_trunk": True, "shared_head": True}, ("front", "wrist"), 1, 1),
        ({"type": "pretrained", "feature_dim": 8, "pretrained": False, "trunk_stage": 4}, ("front",), 1, 1),
        (
            {
                "type": "pretrained",
                "feature_dim": 8,
                "pretrained": False,
                "trunk_stage": 4,
                "head": "spatial_softmax",
                "cameras": ["wrist"],
            },
            ("front", "wrist"),
            1,
            1,
        ),
        (
            {"type": "pretrained", "feature_dim": 8, "pretrained": False, "trunk_stage": 2, "use_state": False},
            ("front", "wrist"),
            1,
            2,
        ),
    ],
)
def test_output_shapes(cfg, cams, n_trunks, n_heads):
    space = obs_space(64, cams)
    enc = build_encoder(space, cfg)
    n_cams = len(cfg.get("cameras", cams))
    assert len(enc.trunks) == n_trunks and len(enc.heads) == n_heads
    assert enc.out_dim == n_cams * 8 + (STATE_DIM if cfg.get("use_state", True) else 0)
    obs = random_obs(space, 2)
    for augment in (False, True):
        out = enc(obs, augment=augment)
        assert out.shape == (2, enc.out_dim) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out.abs()[:, : n_cams * 8] < 1).all()  # tanh features


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown encoder option"):
        build_encoder(obs_space(), {"feature_dims": 3})
    with pytest.raises(ValueError, match="frozen trunk"):
        build_encoder(obs_space(), {"type": "conv", "cache": True})
    with pytest.raises(ValueError, match="not in the observation space"):
        build_encoder(obs_space(), {"type": "conv", "cameras": ["side"]})
    with pytest.raises(ValueError, match="needs cameras"):
        build_encoder(obs_space(cams=()), {"type": "conv"})


def test_state_fit_and_fitted_flag(pretrained_encoder):
    enc = build_encoder(obs_space(64, ("front",)), {"type": "conv", "feature_dim": 4})
    assert not bool(enc.fitted)
    enc.fit(np.random.default_rng(0).normal(3.0, 2.0, size=(100, STATE_DIM)))
    assert bool(enc.fitted) and abs(float(enc.state.loc.mean()) - 3.0) < 0.5


def test_frozen_trunk_unchanged_by_training_step_on_the_head(pretrained_encoder):
    enc = build_encoder(obs_space(64), {"feature_dim": 16})
    enc.train()
    trunk_before = {k: v.clone() for k, v in enc.trunks.state_dict().items()}
    heads_before = [p.detach().clone() for p in enc.heads.parameters()]
    trainable = list(enc.trainable_parameters())
    trainable_ids = {id(p) for p in trainable}
    assert all(id(p) not in trainable_ids for p in enc.trunks.parameters())
    assert {id(p) for p in enc.heads.parameters()} <= trainable_ids
    # Even an optimizer handed *every* parameter (with weight decay) must leave the frozen trunk alone.
    opt = torch.optim.AdamW(enc.parameters(), lr=1e-2, weight_decay=0.1)
    obs = random_obs(obs_space(64), 4)
    for _step in range(2):
        loss = enc(obs, augment=True).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not enc.trunks["shared"].training  # BatchNorm statistics never move
    assert all(p.grad is None for p in enc.trunks.parameters())
    enc.requires_grad_(True)  # a careless caller re-enables grads everywhere: the trunk stays out of optimizers
    assert {id(p) for p in enc.trainable_parameters()} == trainable_ids
    for k, v in enc.trunks.state_dict().items():
        assert torch.equal(v, trunk_before[k]), f"frozen trunk tensor {k} changed"
    assert any(not torch.equal(a, b) for a, b in zip(heads_before, enc.heads.parameters())), "head did not train"
    assert all(k.startswith("trunks.") for k in enc.frozen_state_keys()) and enc.frozen_state_keys()


def test_conv_trunk_trains():
    enc = build_encoder(obs_space(64, ("front",)), {"type": "conv", "feature_dim": 4})
    before = [p.detach().clone() for p in enc.trunks.parameters()]
    opt = torch.optim.Adam(enc.trainable_parameters(), lr=1e-2)
    enc(random_obs(obs_space(64, ("front",)), 2), augment=True).sum().backward()
    opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, enc.trunks.parameters()))


# ---------------------------------------------------------------------------------------------- pretrained weights
def test_weights_load_offline_from_the_wheel():
    path = lite0_weight_path()
    assert os.path.isfile(path) and path.endswith(".pth")
    state = load_lite0_state_dict(path)  # weights_only=True: tensors only
    assert len(state) == 296 and all(isinstance(v, torch.Tensor) for v in state.values())
    net = efficientnet_lite0()  # strict load of every key
    assert sum(p.numel() for p in net.parameters()) == 4_652_008  # EfficientNet-Lite0's published 4.65 M
    assert torch.equal(net._fc.weight, state["_fc.weight"]) and not net.training


def test_pretrained_classifier_behaves_like_an_imagenet_model():
    net = efficientnet_lite0()
    import matplotlib  # a project dependency; ships a photo of Grace Hopper in military uniform

    photo = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    if not os.path.isfile(photo):
        pytest.skip("matplotlib sample photo missing")
    import matplotlib.image

    img = torch.from_numpy(np.array(matplotlib.image.imread(photo))).unsqueeze(0)  # (1, 600, 512, 3) uint8
    x = (
        torch.nn.functional.interpolate(
            img.permute(0, 3, 1, 2).float(), size=(224, 224), mode="bilinear", antialias=True
        )
        .round()
        .clamp(0, 255)
        .to(torch.uint8)
        .permute(0, 2, 3, 1)
    )
    g = torch.Generator().manual_seed(0)
    synthetic = torch.zeros(1, 224, 224, 3, dtype=torch.uint8)
    synthetic[:, 56:168, 56:168] = torch.randint(0, 256, (3,), generator=g, dtype=torch.uint8)  # a coloured square
    with torch.no_grad():
        probs = net(imagenet_preprocess(torch.cat([x, synthetic]))).softmax(-1)
    assert torch.isfinite(probs).all() and (probs.max(-1).values > 10 / 1000).all()  # far from uniform
    top5 = probs[0].topk(5).indices.tolist()
    assert 652 in top5, f"ImageNet class 652 'military uniform' not in top-5 {top5}"  # 652 is top-1 here


def test_trunk_cut_matches_full_network_and_fingerprint_tracks_weights():
    trunk = PretrainedTrunk(stage=6, image_size=(64, 64))
    full = efficientnet_lite0()
    x = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        h = torch.nn.functional.relu6(full._bn0(full._conv_stem(imagenet_preprocess(x))))
        for block in full._blocks:
            h = block(h)
    torch.testing.assert_close(trunk(x), h)
    fp = trunk.fingerprint()
    assert fp == PretrainedTrunk(stage=6, image_size=(64, 64)).fingerprint() != PretrainedTrunk(stage=5).fingerprint()
    sd = trunk.state_dict()
    sd["net._blocks.0._bn1.bias"] = sd["net._blocks.0._bn1.bias"] + 1.0
    trunk.load_state_dict(sd)  # the memo is dropped by load_state_dict
    assert trunk.fingerprint() != fp


# ----------------------------------------------------------------------------------------------------- augmentation
def test_random_shift_keeps_shape_dtype_and_differs_across_samples():
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (1, 32, 32, 3), dtype=torch.uint8, generator=g).expand(8, -1, -1, -1).contiguous()
    out = random_shift(img, 4, generator=torch.Generator().manual_seed(1))
    assert out.shape == img.shape and out.dtype == torch.uint8
    assert len({o.numpy().tobytes() for o in out}) > 1, "every sample got the same shift"
    assert random_shift(img, 0) is img
    again = random_shift(img, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)  # seeded
    # each output is a crop of the replicate-padded input at an offset in [0, 2 pad]
    padded = torch.nn.functional.pad(img[:1].permute(0, 3, 1, 2).float(), (4, 4, 4, 4), mode="replicate")[0]
    crops = {padded[:, y : y + 32, x : x + 32].to(torch.uint8).numpy().tobytes() for y in range(9) for x in range(9)}
    assert all(o.permute(2, 0, 1).contiguous().numpy().tobytes() in crops for o in out)

    feat = torch.randn(8, 3, 16, 16, generator=g)  # float (B, C, H, W)
    shifted = random_shift(feat, 2, generator=g)
    assert shifted.shape == feat.shape and shifted.dtype == torch.float32
    assert not torch.equal(shifted, feat) and random_shift(feat, 0) is feat


def test_feature_shift_keeps_shape_dtype_and_is_identity_at_zero():
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(1, 4, 4, 4, generator=g).expand(6, -1, -1, -1).half()
    out = random_shift_features(feat, 0.5, generator=g)
    assert out.shape == feat.shape and out.dtype == torch.float16
    assert len({o.numpy().tobytes() for o in out}) == 6
    assert random_shift_features(feat, 0.0) is feat
    torch.testing.assert_close(
        random_shift_features(feat.float(), 1e-6, generator=g), feat.float(), atol=1e-4, rtol=0
    )  # the sampling grid sits on cell centres
    # a ramp along x, shifted by s in [-1, 1] cells: linear interpolation is exact inside, edges replicate
    ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(5, 2, 3, 4)
    out = random_shift_features(ramp, 1.0, generator=g)
    s = out[:, 0, 0, 1] - 1.0
    assert (s.abs() <= 1).all() and s.std() > 0
    torch.testing.assert_close(
        out, (torch.arange(4.0).view(1, 1, 1, 4) + s.view(5, 1, 1, 1)).clamp(0, 3).expand(5, 2, 3, 4)
    )


# ---------------------------------------------------------------------------------------------------- feature cache
def test_cached_trunk_maps_give_the_same_features_as_recomputing_the_trunk():
    from gymnasium.spaces import Box

    from robot_rl.agents.sac import SAC, SACConfig

    agent = SAC(
        obs_space(64),
        Box(-1, 1, (3,), np.float32),
        SACConfig(hidden_dims=(16,), device="cpu", encoder={"feature_dim": 8}),
    )
    assert agent.cached_cameras == ["front", "wrist"]
    space = agent.buffer_observation_space
    assert space["front"].dtype == np.float16 and space["front"].shape == (320, 2, 2)
    obs = {k: v.numpy() for k, v in random_obs(obs_space(64), 5, seed=3).items()}
    maps = agent.featurize(obs, batched=True)  # what the replay buffer stores, once per frame
    assert maps["front"].dtype == np.float16 and maps["state"] is obs["state"]
    from_maps = agent.encode({k: torch.as_tensor(v) for k, v in maps.items()})
    from_images = agent.encode({k: torch.as_tensor(v) for k, v in obs.items()})  # trunk recomputed
    torch.testing.assert_close(from_maps, from_images, atol=2e-2, rtol=0)
    single = agent.featurize({k: v[2] for k, v in obs.items()})
    np.testing.assert_allclose(single["wrist"].astype(np.float32), maps["wrist"][2].astype(np.float32), atol=1e-2)


# ------------------------------------------------------------------------------------------------ interfaces
@pytest.mark.parametrize(
    "cams, cfg",
    [
        ((), None),
        (("front", "wrist"), {"type": "state"}),
        (("front",), {"type": "conv", "feature_dim": 4, "conv_channels": 4}),
        (
            ("front",),
            {"type": "conv", "feature_dim": 4, "conv_channels": 4, "use_state": False, "head": "spatial_softmax"},
        ),
        (("front", "wrist"), {"feature_dim": 8, "pretrained": False}),
    ],
)
def test_every_encoder_implements_the_encoder_interface(cams, cfg):
    import robot_rl.agents.encoders as encoders

    modules = {
        c
        for c in vars(encoders).values()
        if isinstance(c, type) and issubclass(c, torch.nn.Module) and c.__module__ == encoders.__name__
    }
    assert modules == {Encoder, StateEncoder, ObservationEncoder}
    with pytest.raises(TypeError):
        Encoder()  # abstract: forward and fit
    space = obs_space(32, cams)
    enc = build_encoder(space, cfg)
    assert isinstance(enc, Encoder)
    assert all(hasattr(enc, name) for name in Encoder.__annotations__)  # out_dim, fitted
    assert enc.fitted.dtype == torch.bool and enc.fitted.shape == ()
    assert enc.cameras == sorted(enc.cameras) and set(enc.cameras) <= set(cams)
    assert set(enc.feature_shapes) == set(enc.cameras) and set(enc.cached_cameras) <= set(enc.cameras)
    obs = random_obs(space, 3)
    maps = enc.encode_images({c: obs[c] for c in enc.cached_cameras})
    assert set(maps) == set(enc.cached_cameras)
    assert all(m.shape == (3, *enc.feature_shapes[c]) for c, m in maps.items())
    out = enc(obs, features=maps, augment=True)
    assert out.shape == (3, enc.out_dim) and torch.isfinite(out).all()
    torch.testing.assert_close(enc(obs, features=maps), enc(obs))
    assert all(p.requires_grad for p in enc.trainable_parameters())
    assert set(enc.frozen_state_keys()) <= set(enc.state_dict())
    enc.fit(np.random.default_rng(0).normal(size=(10, STATE_DIM)))
    assert bool(enc.fitted)


def test_state_encoder_has_no_cameras_to_encode():
    enc = build_encoder(obs_space(cams=()))
    assert enc.cameras == [] and enc.cached_cameras == [] and enc.feature_shapes == {}
    assert enc.encode_images({}) == {} and enc.frozen_state_keys() == [] and not list(enc.trainable_parameters())
    with pytest.raises(ValueError, match="no image trunk"):
        enc.encode_images({"front": torch.zeros(1, 8, 8, 3, dtype=torch.uint8)})


def test_trunks_implement_the_trunk_interface():
    assert issubclass(ConvTrunk, Trunk) and issubclass(PretrainedTrunk, Trunk)
    assert PretrainedTrunk.frozen and not ConvTrunk.frozen
    with pytest.raises(TypeError):
        Trunk()  # abstract: forward and fingerprint
    trunk = ConvTrunk(4, (2, 2), image_size=(32, 32))
    assert trunk(torch.zeros(2, 32, 32, 3, dtype=torch.uint8)).shape == (2, *trunk.feature_shape)
    assert len(trunk.fingerprint()) == 16
