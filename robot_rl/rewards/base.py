"""What every reward model shares: the interface, device choice, identity hashing, loading by kind, and the training
options of the reward nets on the frozen trunk (:class:`RewardNetConfig`).

A reward model maps camera frames to a per-frame score and a success decision. Frames are uint8 ``(B, H, W, 3)``
arrays or tensors, one per camera name, all with the same ``B``; scores are float ``(B,)``. What the score means
depends on the kind: a success probability (classifier, fine-tuned VLM), the zero-shot probability of the task
prompt among the prompts (VLM zero-shot), or a learned return-to-go-like preference reward (Bradley-Terry model).

Saved models live in a directory with ``reward_model.json`` (``{"format": "robot_rl.reward_model", "version": 1,
"kind": ...}`` plus what the kind needs) and usually ``reward_model.safetensors``; :func:`load_reward_model` reads
any of them. Nothing is ever unpickled.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch

MODEL_FILE, WEIGHTS_FILE = "reward_model.json", "reward_model.safetensors"
MODEL_FORMAT, MODEL_VERSION = "robot_rl.reward_model", 1
REWARD_KINDS = ("ground_truth", "classifier", "vlm_zero_shot", "preference", "progress")  # the `reward=` names


class RewardDataError(ValueError):
    """The data or model given to a reward model is unusable (too few examples, missing cameras, wrong image
    sizes, mismatched weights); the message names what and how many."""


def options_from_dict(cls: type, d: Mapping[str, Any] | None, what: str) -> Any:
    """The dataclass ``cls`` built from a (hydra) mapping, naming unknown keys (as ``what`` option(s)) instead of
    ignoring them."""
    d = dict(d or {})
    known = {f.name for f in dataclasses.fields(cls)}
    if unknown := sorted(set(d) - known):
        raise ValueError(f"unknown {what} option(s) {unknown}; valid: {sorted(known)}")
    return cls(**d)


class Options:
    """What the option dataclasses here share: :meth:`from_dict` builds one from a (hydra) mapping, naming unknown
    keys (as ``options_name`` option(s)) instead of ignoring them; :meth:`to_dict` gives the options back as a dict
    (for reports and the saved models' JSON)."""

    options_name: ClassVar[str] = "reward"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Self:
        """Build from a (hydra) mapping, naming unknown keys instead of ignoring them."""
        return options_from_dict(cls, d, cls.options_name)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class RewardNetConfig(Options):
    """The ``reward.train`` options of every reward net on the frozen trunk (the success classifier, the progress
    model, the preference reward); each kind adds its own and may change a default. Units in
    ``configs/reward/*.yaml``.

    ``cameras``: the cameras the net sees (a name or a list; None: every camera of the store). ``val_fraction``:
    share of the data held out for validation. ``trunk_stage`` and ``pretrained``: the frozen EfficientNet-Lite0
    trunk. ``feature_dim`` and ``num_kernels``: the spatial-embedding head of each camera; ``hidden`` and ``dropout``:
    the MLP after them. ``feature_pad``: cells of random shift of the cached trunk maps per step. ``steps``,
    ``batch_size``, ``lr``, ``weight_decay``: AdamW on the head; ``eval_every``: steps between validations."""

    cameras: tuple[str, ...] | None = None
    val_fraction: float = 0.2
    trunk_stage: int = 6
    pretrained: bool = True
    feature_dim: int = 64
    num_kernels: int = 8
    hidden: int = 128
    dropout: float = 0.1
    feature_pad: float | None = None
    steps: int = 1500
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    eval_every: int = 100

    def __post_init__(self) -> None:
        if self.cameras is not None:
            self.cameras = (self.cameras,) if isinstance(self.cameras, str) else tuple(self.cameras)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["cameras"] = list(self.cameras) if self.cameras is not None else None
        return d

    def fit_options(self) -> dict[str, Any]:
        """``steps``, ``batch_size``, ``lr``, ``weight_decay`` and ``eval_every``: the keywords the fit functions
        (:func:`~robot_rl.rewards.classifier.fit_binary`, ...) take from these options."""
        return {k: getattr(self, k) for k in ("steps", "batch_size", "lr", "weight_decay", "eval_every")}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` / None: CUDA when present, else CPU; anything else as torch understands it."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def identity_hash(identity: Mapping[str, Any]) -> str:
    """16 hex chars of the SHA-256 of ``identity`` as canonical JSON (sorted keys): equal labellers, equal hash."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_sha256(path: str | Path) -> str:
    """16 hex chars of the SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def check_cameras(
    available: Mapping[str, tuple[int, ...]], wanted: Mapping[str, tuple[int, ...]] | list[str], where: str
) -> None:
    """Raise :class:`RewardDataError` naming every camera of ``wanted`` missing from ``available`` (name -> shape)
    and, when ``wanted`` gives shapes (None: any), every camera whose image shape differs."""
    names = list(wanted)
    missing = [c for c in names if c not in available]
    if missing:
        raise RewardDataError(f"{where}: camera(s) {missing} missing; it has {sorted(available) or 'no cameras'}")
    if isinstance(wanted, Mapping):  # a shape of None accepts any image size
        bad = [
            f"{c}: {tuple(available[c])} instead of {tuple(wanted[c])}"
            for c in names
            if wanted[c] is not None and tuple(available[c]) != tuple(wanted[c])
        ]
        if bad:
            raise RewardDataError(f"{where}: wrong image size for camera(s) {'; '.join(bad)} (H, W, 3)")


class RewardModel(ABC):
    """Frames -> scores and success. Subclasses set ``kind``, ``cameras`` (sorted names) and ``image_shapes``
    (name -> ``(H, W, 3)``, or None where any size is accepted), and ``threshold`` (success when
    ``score >= threshold``; None: never success)."""

    kind: str = ""
    cameras: list[str]
    image_shapes: dict[str, tuple[int, int, int]]
    threshold: float | None = None

    @abstractmethod
    def score(self, frames: Mapping[str, Any]) -> np.ndarray:
        """Frames {camera: uint8 (B, H, W, 3)} -> float64 scores (B,). Runs without autograd, batched."""

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What determines the scores (weights fingerprint, prompts, ...); cached labels are keyed on its hash."""

    def label_name(self) -> str:
        """Name of this model's per-step label set in a store: ``<kind>-<identity hash>``."""
        return f"{self.kind}-{identity_hash(self.identity())}"

    def success(self, scores: np.ndarray) -> np.ndarray:
        """(B,) bool: ``scores >= threshold`` (all False without a threshold)."""
        scores = np.asarray(scores, dtype=np.float64)
        return scores >= self.threshold if self.threshold is not None else np.zeros(scores.shape, dtype=bool)

    def check_frames(self, shapes: Mapping[str, tuple[int, ...]], where: str) -> None:
        """Raise :class:`RewardDataError` if ``shapes`` (camera -> (H, W, 3)) lacks a camera or has a wrong size."""
        check_cameras(shapes, {c: self.image_shapes[c] for c in self.cameras}, where)

    def write_model_json(self, out: Path, fields: Mapping[str, Any], report: Mapping[str, Any] | None) -> Path:
        """Write ``out/reward_model.json``: format, version and kind, then ``fields`` (what the kind needs to load
        again), the identity and ``report`` (made JSON-safe). Returns ``out``."""
        meta = {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "kind": self.kind,
            **fields,
            "identity": self.identity(),
            "report": jsonable(report),
        }
        (out / MODEL_FILE).write_text(json.dumps(meta, indent=2))
        return out


def read_model_json(path: str | Path) -> dict[str, Any]:
    """``reward_model.json`` of a saved reward model directory, checked for format and version."""
    p = Path(path)
    f = p / MODEL_FILE if p.is_dir() else p
    if not f.is_file():
        raise RewardDataError(f"{path}: no {MODEL_FILE}; give a directory written by robot-rl train-reward")
    try:
        d = json.loads(f.read_text())
    except Exception as exc:
        raise RewardDataError(f"{f}: unreadable: {exc}") from exc
    if d.get("format") != MODEL_FORMAT or d.get("version") != MODEL_VERSION:
        raise RewardDataError(f"{f}: not a version-{MODEL_VERSION} {MODEL_FORMAT} file")
    return d


def load_reward_model(path: str | Path, device: str | torch.device | None = "auto") -> RewardModel:
    """Load any saved reward model directory (dispatch on ``kind`` in ``reward_model.json``)."""
    d = read_model_json(path)
    kind = d.get("kind")
    if kind == "classifier":
        from robot_rl.rewards.classifier import SuccessClassifier

        return SuccessClassifier.load(path, device)
    if kind == "vlm_classifier":
        from robot_rl.rewards.vlm.finetune import VLMClassifier

        return VLMClassifier.load(path, device)
    if kind == "vlm_zero_shot":
        from robot_rl.rewards.vlm.zero_shot import ZeroShotReward

        return ZeroShotReward.load(path, device)
    if kind == "progress":
        from robot_rl.rewards.progress import ProgressModel

        return ProgressModel.load(path, device)
    if kind == "preference":
        from robot_rl.rewards.preference import PreferenceReward

        return PreferenceReward.load(path, device)
    raise RewardDataError(f"{path}: unknown reward model kind {kind!r}")


def jsonable(x: Any) -> Any:
    """For reports: ``x`` with numpy scalars/arrays and non-finite floats turned into JSON-safe values (NaN -> None)."""
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    return x
