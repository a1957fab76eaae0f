"""A CLIP/SigLIP-style image-text dual encoder (Radford et al., 2021; Zhai et al., 2023), built here in plain torch.

Image tower (ViT, Dosovitskiy et al., 2021): non-overlapping ``patch_size`` patches -> linear embedding, a class
token, learned positions, pre-LayerNorm, ``layers`` pre-norm transformer blocks, LayerNorm of the class token,
projection to ``embed_dim``. Text tower: token embedding + learned positions, causal pre-norm transformer blocks,
final LayerNorm, the feature at the end-of-text token, projection to ``embed_dim``. Both embeddings are
L2-normalised; similarity logits are ``exp(logit_scale) * cos + logit_bias`` (``logit_bias`` only in sigmoid models).

Parameter names follow the layout of OpenAI's released CLIP weights (``visual.conv1.weight``,
``visual.transformer.resblocks.0.attn.in_proj_weight``, ``token_embedding.weight``, ``text_projection``, ...), so
converting such a checkpoint is a matter of reading its tensors (see :mod:`robot_rl.rewards.vlm.convert`).

Checkpoint directory format (read by :func:`load_dual_encoder`, written by :func:`save_dual_encoder`)::

    config.json        {"format": "robot_rl.dual_encoder", "version": 1, "embed_dim": E,
                        "vision": {"image_size", "patch_size", "width", "layers", "heads", "mean", "std"},
                        "text": {"vocab_size", "context_length", "width", "layers", "heads"},
                        "activation": "quick_gelu" | "gelu", "score": "softmax" | "sigmoid",
                        "logit_bias": bool, "name": free text}
    model.safetensors  every parameter, names as above (float32 or float16)
    tokenizer.json     see robot_rl/rewards/vlm/tokenizer.py (plus vocab.json and merges.txt for BPE)

Images enter as uint8 ``(B, H, W, 3)``: centre-cropped to a square, resized (bilinear, antialiased) to
``image_size``, scaled to [0, 1] and normalised with ``mean`` / ``std``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from robot_rl.agents.vision import weights_fingerprint
from robot_rl.rewards.base import RewardDataError, resolve_device
from robot_rl.rewards.vlm.tokenizer import Tokenizer, load_tokenizer, save_tokenizer

CONFIG_FORMAT, CONFIG_VERSION = "robot_rl.dual_encoder", 1
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class VisionConfig:
    """Image tower: input ``image_size`` px (square), ``patch_size`` px patches, ``width`` channels, ``layers`` blocks,
    ``heads`` attention heads; ``mean`` / ``std``: RGB normalisation of [0, 1] pixels."""

    image_size: int = 224
    patch_size: int = 32
    width: int = 768
    layers: int = 12
    heads: int = 12
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD


@dataclass
class TextConfig:
    """Text tower: ``vocab_size`` token ids, ``context_length`` tokens, ``width`` channels, ``layers`` causal blocks,
    ``heads`` attention heads."""

    vocab_size: int = 49408
    context_length: int = 77
    width: int = 512
    layers: int = 12
    heads: int = 8


@dataclass
class DualEncoderConfig:
    """The architecture (see the module docstring). Defaults: CLIP ViT-B/32 sizes."""

    embed_dim: int = 512
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    activation: str = "quick_gelu"
    score: str = "softmax"
    logit_bias: bool = False
    name: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.vision, Mapping):
            self.vision = VisionConfig(**self.vision)
        if isinstance(self.text, Mapping):
            self.text = TextConfig(**self.text)
        self.vision.mean, self.vision.std = tuple(self.vision.mean), tuple(self.vision.std)
        if self.activation not in ("quick_gelu", "gelu"):
            raise ValueError(f"activation={self.activation!r} must be quick_gelu or gelu")
        if self.score not in ("softmax", "sigmoid"):
            raise ValueError(f"score={self.score!r} must be softmax or sigmoid")
        v, t = self.vision, self.text
        if v.image_size % v.patch_size:
            raise ValueError(f"image_size={v.image_size} must be a multiple of patch_size={v.patch_size}")
        for name, w, h in (("vision", v.width, v.heads), ("text", t.width, t.heads)):
            if w % h:
                raise ValueError(f"{name} width={w} must be a multiple of heads={h}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["vision"]["mean"], d["vision"]["std"] = list(self.vision.mean), list(self.vision.std)
        return {"format": CONFIG_FORMAT, "version": CONFIG_VERSION, **d}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DualEncoderConfig:
        if d.get("format") != CONFIG_FORMAT or d.get("version") != CONFIG_VERSION:
            raise RewardDataError(f"config.json: not a version-{CONFIG_VERSION} {CONFIG_FORMAT} config")
        return cls(**{k: v for k, v in d.items() if k not in ("format", "version")})


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``: the GELU approximation OpenAI's CLIP weights were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    """Multi-head self-attention with packed ``in_proj_weight`` (3W, W) / ``in_proj_bias`` (3W,) and ``out_proj``.
    ``(B, L, W) -> (B, L, W)``, causal when asked."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        b, n, w = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).split(w, dim=-1)
        q, k, v = (t.view(b, n, self.heads, w // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(y.transpose(1, 2).reshape(b, n, w))


class MLP(nn.Module):
    """``c_fc`` (W -> 4W), activation, ``c_proj`` (4W -> W)."""

    def __init__(self, width: int, activation: str):
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.act = QuickGELU() if activation == "quick_gelu" else nn.GELU()
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.act(self.c_fc(x)))


class ResidualBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

    def __init__(self, width: int, heads: int, activation: str):
        super().__init__()
        self.ln_1, self.attn = nn.LayerNorm(width), Attention(width, heads)
        self.ln_2, self.mlp = nn.LayerNorm(width), MLP(width, activation)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """``layers`` :class:`ResidualBlock` s in ``resblocks``: ``(B, L, W) -> (B, L, W)``."""

    def __init__(self, width: int, layers: int, heads: int, activation: str):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualBlock(width, heads, activation) for _ in range(layers))

    def forward(self, x: torch.Tensor, causal: bool = False, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Blocks ``[start, stop)`` only (all by default): lets a caller cache the output of frozen early blocks."""
        for blk in self.resblocks[start:stop]:
            x = blk(x, causal)
        return x


class VisionTower(nn.Module):
    """ViT image tower: normalised float ``(B, 3, S, S)`` -> ``(B, embed_dim)`` (not normalised)."""

    def __init__(self, cfg: VisionConfig, embed_dim: int, activation: str):
        super().__init__()
        w, grid = cfg.width, cfg.image_size // cfg.patch_size
        self.conv1 = nn.Conv2d(3, w, cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(w) * w**-0.5)
        self.positional_embedding = nn.Parameter(torch.randn(grid * grid + 1, w) * w**-0.5)
        self.ln_pre = nn.LayerNorm(w)
        self.transformer = Transformer(w, cfg.layers, cfg.heads, activation)
        self.ln_post = nn.LayerNorm(w)
        self.proj = nn.Parameter(torch.randn(w, embed_dim) * w**-0.5)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens with the class token first, after ``ln_pre``: ``(B, 1 + grid^2, width)``."""
        t = self.conv1(x).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(t.dtype).expand(t.shape[0], 1, -1)
        return self.ln_pre(torch.cat([cls, t], dim=1) + self.positional_embedding.to(t.dtype))

    def head(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens after the blocks ``(B, L, W)`` -> ``ln_post`` of the class token, projected: ``(B, embed_dim)``."""
        return self.ln_post(tokens[:, 0]) @ self.proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.transformer(self.tokens(x)))


class DualEncoder(nn.Module):
    """Image and text towers with a shared embedding space (see the module docstring)."""

    def __init__(self, cfg: DualEncoderConfig):
        super().__init__()
        self.cfg = cfg
        t = cfg.text
        self.visual = VisionTower(cfg.vision, cfg.embed_dim, cfg.activation)
        self.token_embedding = nn.Embedding(t.vocab_size, t.width)
        self.positional_embedding = nn.Parameter(torch.randn(t.context_length, t.width) * 0.01)
        self.transformer = Transformer(t.width, t.layers, t.heads, cfg.activation)
        self.ln_final = nn.LayerNorm(t.width)
        self.text_projection = nn.Parameter(torch.randn(t.width, cfg.embed_dim) * t.width**-0.5)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        if cfg.logit_bias:
            self.logit_bias = nn.Parameter(torch.tensor(-10.0))
        self.register_buffer("mean", torch.tensor(cfg.vision.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.vision.std).view(1, 3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def preprocess(self, images: Any) -> torch.Tensor:
        """uint8 ``(B, H, W, 3)`` -> normalised float ``(B, 3, S, S)`` on the model's device (centre square crop,
        antialiased bilinear resize)."""
        x = torch.as_tensor(images).to(self.device)
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected uint8 images (B, H, W, 3), got {x.dtype} {tuple(x.shape)}")
        h, w = x.shape[1:3]
        s = min(h, w)
        x = x[:, (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        size = self.cfg.vision.image_size
        if s != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=s > size)
        return (x - self.mean) / self.std

    def encode_image(self, images: Any) -> torch.Tensor:
        """uint8 ``(B, H, W, 3)`` -> L2-normalised ``(B, embed_dim)``."""
        return F.normalize(self.visual(self.preprocess(images)), dim=-1)

    def encode_text(self, ids: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        """Token ids ``(N, context_length)`` and end-token positions ``(N,)`` -> L2-normalised ``(N, embed_dim)``."""
        ids, eot = ids.to(self.device), eot.to(self.device)
        x = self.token_embedding(ids) + self.positional_embedding[: ids.shape[1]]
        x = self.ln_final(self.transformer(x, causal=True))
        return F.normalize(x[torch.arange(len(ids), device=x.device), eot] @ self.text_projection, dim=-1)

    def logits(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """``(B, E)``, ``(N, E)`` normalised -> ``(B, N)`` similarity logits."""
        out = self.logit_scale.exp() * image_emb @ text_emb.T
        return out + self.logit_bias if self.cfg.logit_bias else out


def save_dual_encoder(model: DualEncoder, tokenizer: Tokenizer, directory: str | Path) -> Path:
    """Write ``config.json``, ``model.safetensors`` and the tokenizer files into ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(model.cfg.to_json(), indent=1))
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(d / "model.safetensors"))
    save_tokenizer(tokenizer, d)
    return d


def load_dual_encoder(
    directory: str | Path, device: str | torch.device | None = "auto"
) -> tuple[DualEncoder, Tokenizer]:
    """Read a checkpoint directory (see the module docstring) onto ``device``, in eval mode, float32."""
    d = Path(directory)
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (d / f).is_file():
            raise RewardDataError(
                f"{d}: not a dual-encoder checkpoint directory ({f} missing; expected config.json, "
                "model.safetensors, tokenizer.json)"
            )
    cfg = DualEncoderConfig.from_json(json.loads((d / "config.json").read_text()))
    model = DualEncoder(cfg)
    state = {k: v.float() for k, v in load_file(str(d / "model.safetensors")).items()}
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        raise RewardDataError(
            f"{d}/model.safetensors does not fit config.json: missing {missing[:4]}, "
            f"unexpected {unexpected[:4]}, wrong shapes {wrong[:4]}"
        )
    model.load_state_dict(state)
    tok = load_tokenizer(d)
    if tok.vocab_size > cfg.text.vocab_size:
        raise RewardDataError(f"{d}: the tokenizer has {tok.vocab_size} ids, the text tower {cfg.text.vocab_size}")
    return model.to(resolve_device(device)).eval(), tok


def model_fingerprint(model: DualEncoder, tokenizer: Tokenizer) -> str:
    """Identifies weights, architecture and tokenizer (16 hex chars)."""
    import hashlib

    extra = json.dumps(model.cfg.to_json(), sort_keys=True) + tokenizer.fingerprint_data()
    return weights_fingerprint(model, extra=hashlib.sha256(extra.encode()).hexdigest())
