"""Convert a CLIP checkpoint in OpenAI's parameter layout into this project's dual-encoder directory.

Nothing can be downloaded on the robot's machine, so conversion is a one-off step wherever the weights are::

    python -m robot_rl.rewards.vlm.convert --weights open_clip_pytorch_model.bin \\
        --merges bpe_simple_vocab_16e6.txt.gz --out checkpoints/clip-vit-b32

* ``--weights``: a plain state dict (``.safetensors``, or a torch ``.bin`` / ``.pt`` holding only tensors, read
  with ``torch.load(weights_only=True)``, so nothing else is unpickled) with OpenAI CLIP's names: ``visual.conv1``,
  ``visual.transformer.resblocks.N.attn.in_proj_weight``, ``token_embedding``, ``text_projection``, ... This is
  the layout of open_clip's ``*-quickgelu`` OpenAI checkpoints. OpenAI's original ``.pt`` files are TorchScript
  archives: load one with ``torch.jit.load`` in a trusted environment and save ``.state_dict()`` with safetensors
  first. Other families (SigLIP, Hugging Face ``CLIPModel``) use other names and towers (SigLIP pools with an
  attention head, not the class token): they need a rename map and, for SigLIP, a pooling variant added to
  :class:`~robot_rl.rewards.vlm.model.VisionTower`; that is not done here.
* ``--merges``: CLIP's BPE merges file (plain or ``.gz``). Without ``--vocab`` the vocabulary is rebuilt the way
  CLIP builds it: the 256 byte symbols, the same with ``</w>``, one entry per merge (the first
  ``vocab_size - 514`` merges), then ``<|startoftext|>`` and ``<|endoftext|>``.
* Architecture sizes are read from the tensor shapes; head counts default to ``width / 64`` (CLIP's rule;
  ``--vision-heads`` / ``--text-heads`` override), the activation to QuickGELU (OpenAI weights).

This path has been tested on randomly initialised checkpoints in that layout only: no real checkpoint is reachable
from the development machine. Check a converted model once on a few images and prompts before relying on it.
"""

from __future__ import annotations

import argparse
import gzip
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from robot_rl.rewards.vlm.model import (
    CLIP_MEAN,
    CLIP_STD,
    DualEncoder,
    DualEncoderConfig,
    TextConfig,
    VisionConfig,
    save_dual_encoder,
)
from robot_rl.rewards.vlm.tokenizer import BPETokenizer, bytes_to_symbols

# Entries of OpenAI's state dicts that are not parameters of the model built here.
IGNORED_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask")


def read_merges(path: str | Path) -> list[tuple[str, str]]:
    """Merges of a CLIP BPE file (``.gz`` or plain); a first line starting with ``#`` is skipped."""
    raw = (
        gzip.open(path, "rt", encoding="utf-8").read()
        if str(path).endswith(".gz")
        else Path(path).read_text(encoding="utf-8")
    )
    out = []
    for i, line in enumerate(raw.splitlines()):
        if (i == 0 and line.startswith("#")) or not line.strip():
            continue
        a, b = line.split()
        out.append((a, b))
    return out


def clip_vocab_from_merges(
    merges: Sequence[tuple[str, str]], vocab_size: int
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary from its merges for a text tower of ``vocab_size`` ids (see the module docstring).
    Returns ``(vocab, merges used)``."""
    syms = list(bytes_to_symbols().values())
    n = vocab_size - 2 * len(syms) - 2
    if n < 0 or n > len(merges):
        raise ValueError(f"vocab_size={vocab_size} does not fit {len(merges)} merges and 514 byte symbols")
    used = list(merges[:n])
    tokens = syms + [s + "</w>" for s in syms] + ["".join(m) for m in used] + ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, used


def _layers(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    idx = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return max(idx) + 1 if idx else 0


def infer_config(
    state: Mapping[str, torch.Tensor], vision_heads: int | None = None, text_heads: int | None = None, name: str = ""
) -> DualEncoderConfig:
    """Architecture of an OpenAI-layout CLIP state dict, from its tensor shapes."""
    conv = state["visual.conv1.weight"]  # (width, 3, patch, patch)
    width, patch = int(conv.shape[0]), int(conv.shape[-1])
    grid = int(round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5))
    t_width = int(state["ln_final.weight"].shape[0])
    vision = VisionConfig(
        image_size=grid * patch,
        patch_size=patch,
        width=width,
        layers=_layers(state, "visual.transformer.resblocks."),
        heads=vision_heads or max(1, width // 64),
        mean=CLIP_MEAN,
        std=CLIP_STD,
    )
    text = TextConfig(
        vocab_size=int(state["token_embedding.weight"].shape[0]),
        context_length=int(state["positional_embedding"].shape[0]),
        width=t_width,
        layers=_layers(state, "transformer.resblocks."),
        heads=text_heads or max(1, t_width // 64),
    )
    return DualEncoderConfig(
        embed_dim=int(state["text_projection"].shape[1]),
        vision=vision,
        text=text,
        activation="quick_gelu",
        score="softmax",
        logit_bias=False,
        name=name,
    )


def convert_clip_state_dict(
    state: Mapping[str, torch.Tensor],
    tokenizer: BPETokenizer,
    out: str | Path,
    vision_heads: int | None = None,
    text_heads: int | None = None,
    name: str = "",
) -> Path:
    """Write the checkpoint directory for an OpenAI-layout ``state`` and its ``tokenizer`` into ``out``."""
    state = {k.removeprefix("module."): v for k, v in state.items() if k.removeprefix("module.") not in IGNORED_KEYS}
    cfg = infer_config(state, vision_heads, text_heads, name)
    if tokenizer.vocab_size != cfg.text.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} ids, the text tower {cfg.text.vocab_size}")
    model = DualEncoder(cfg)
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    if missing or unexpected:
        raise ValueError(f"not an OpenAI-layout CLIP state dict: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return save_dual_encoder(model, tokenizer, out)


def _load_state(path: str | Path) -> dict[str, torch.Tensor]:
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a mapping of parameter names to tensors")
    return dict(state)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m robot_rl.rewards.vlm.convert", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True, help="state dict: .safetensors, or .bin/.pt holding only tensors")
    p.add_argument("--merges", required=True, help="CLIP BPE merges file (.txt or .txt.gz)")
    p.add_argument("--vocab", help="vocab.json (token -> id); default: rebuilt from the merges as CLIP does")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    p.add_argument("--vision-heads", type=int)
    p.add_argument("--text-heads", type=int)
    p.add_argument("--name", default="", help="free-text model name stored in config.json")
    args = p.parse_args(argv)
    state = _load_state(args.weights)
    merges = read_merges(args.merges)
    if args.vocab:
        import json

        vocab = json.loads(Path(args.vocab).read_text(encoding="utf-8"))
        used = merges
    else:
        vocab, used = clip_vocab_from_merges(merges, int(state["token_embedding.weight"].shape[0]))
    out = convert_clip_state_dict(
        state, BPETokenizer(vocab, used), args.out, args.vision_heads, args.text_heads, args.name
    )
    print(f"wrote {out}/ (config.json, model.safetensors, tokenizer.json, vocab.json, merges.txt)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
