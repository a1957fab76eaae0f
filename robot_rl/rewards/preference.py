"""Preference rewards from AI feedback, in the spirit of RL-VLM-F (Wang et al., 2024): a labeller compares two
frames for progress on the task, a Bradley-Terry reward model (Bradley & Terry, 1952; as in Christiano et al., 2017)
learns a per-frame reward from the answers, and the model relabels stores offline.

Labellers (:class:`PreferenceLabeller`): ``compare(first, second, task)`` on uint8 ``(N, H, W, 3)`` frame pairs gives
``(N,)`` int8 answers: :data:`FIRST` (0, the first frame shows more progress), :data:`SECOND` (1) or :data:`UNSURE`
(-1: no preference, or an answer that could not be read). Two kinds:

* :class:`LocalVLMLabeller`: a local dual encoder's zero-shot task-prompt probability for each frame; the frame with
  the higher one wins when the gap exceeds ``margin``.
* :class:`HTTPChatLabeller`: an OpenAI-compatible chat-completions endpoint, one request per pair: the prompt and
  both frames as base64 PNG data URLs, temperature 0; the reply is read by :func:`parse_answer`. Requests use
  ``urllib`` with a timeout and retries with exponential backoff on connection errors, timeouts, HTTP 429 and 5xx;
  replies are parsed as JSON only (nothing is unpickled).

Answers are cached in the store as the label table ``pref-<hash of labeller identity, camera and task>`` with columns
``first``, ``second`` (global frame ids, see :mod:`robot_rl.rewards.frames`) and ``answer``; a rerun with the same
seed, store and labeller asks nothing. The reward model is a :class:`~robot_rl.rewards.classifier.FrameScorer` on
frozen trunk maps trained with ``-log sigmoid(r(preferred) - r(other))``; unsure answers are dropped. Its output is
standardised over the training store's frames; when the store has successful episodes a success threshold is picked
for ``target_fpr`` on the labelled frames as for the classifier.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from robot_rl.agents.vision import weights_fingerprint
from robot_rl.data.store import EpisodeStore, StoreError
from robot_rl.rewards.base import (MODEL_FILE, MODEL_FORMAT, MODEL_VERSION, RewardDataError, RewardModel,
                                   WEIGHTS_FILE, identity_hash, jsonable, options_from_dict, read_model_json,
                                   resolve_device)
from robot_rl.rewards.classifier import FrameScorer, TrunkFeaturizer, evaluate_scores
from robot_rl.rewards.frames import LabelRule, StoreFrames, load_frames

FIRST, SECOND, UNSURE = 0, 1, -1

DEFAULT_PROMPT = (
    "You see two images from a robot's camera: Image 1 first, then Image 2. The goal of the robot is: {task}. "
    "Which image shows more progress towards that goal? Think briefly about what each image shows, then end your "
    "reply with one line: 'Answer: 1' if Image 1 shows more progress, 'Answer: 2' if Image 2 does, or 'Answer: 0' "
    "if there is no clear difference.")


# --------------------------------------------------------------------------------------------------- answers
_WORD_TO_ANSWER = {"1": FIRST, "one": FIRST, "first": FIRST, "2": SECOND, "two": SECOND, "second": SECOND,
                   "0": UNSURE, "-1": UNSURE, "none": UNSURE, "neither": UNSURE, "tie": UNSURE, "equal": UNSURE,
                   "same": UNSURE, "unsure": UNSURE, "both": UNSURE}
_ANSWER_LINE = re.compile(r"answer\s*(?:is)?\s*[:=\-]?\s*[\*\"'`(\[]*\s*(?:image\s*)?(-1|[012]|one|two|first|second|"
                          r"none|neither|tie|equal|same|unsure|both)\b")
_IMAGE_MENTION = re.compile(r"\bimage\s*([12])\b")


def parse_answer(text: str) -> int:
    """Read a labeller's reply: :data:`FIRST`, :data:`SECOND` or :data:`UNSURE`.

    In order: the last ``Answer: X`` (X in 1/2/0, "image 1", "first", "none", ...; markdown emphasis allowed); a JSON
    object with an ``answer`` field; a reply that is only such a token; a reply that names exactly one of "image 1"
    and "image 2". Anything else is UNSURE."""
    if not isinstance(text, str):
        return UNSURE
    t = text.strip().lower()
    hits = _ANSWER_LINE.findall(t)
    if hits:
        return _WORD_TO_ANSWER[hits[-1]]
    try:
        obj = json.loads(t)
        if isinstance(obj, dict) and "answer" in obj:
            return _WORD_TO_ANSWER.get(str(obj["answer"]).strip().lower().removeprefix("image").strip(), UNSURE)
    except ValueError:
        pass
    bare = t.strip(" .!*\"'`()[]").removeprefix("image").strip()
    if bare in _WORD_TO_ANSWER:
        return _WORD_TO_ANSWER[bare]
    named = set(_IMAGE_MENTION.findall(t))
    if len(named) == 1:
        return FIRST if named == {"1"} else SECOND
    return UNSURE


# ------------------------------------------------------------------------------------------------- labellers
class PreferenceLabeller(ABC):
    """Compares frame pairs for task progress. ``calls`` counts model forward passes or HTTP requests made."""

    calls: int = 0

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What determines the answers (model fingerprint, or endpoint + model + prompt hash)."""

    @abstractmethod
    def compare(self, first: np.ndarray, second: np.ndarray, task: str) -> np.ndarray:
        """uint8 ``(N, H, W, 3)`` pairs -> ``(N,)`` int8 answers (FIRST, SECOND, UNSURE)."""


class LocalVLMLabeller(PreferenceLabeller):
    """Zero-shot preferences from a local dual encoder (see the module docstring); one batched forward per call.
    ``negatives``: contrast prompts of the softmax; ``margin``: minimum probability gap for a preference."""

    def __init__(self, model: Any, tokenizer: Any, negatives: Sequence[str] | None = None, margin: float = 0.02,
                 prompt_template: str = "{task}"):
        from robot_rl.rewards.vlm.model import model_fingerprint
        from robot_rl.rewards.vlm.zero_shot import DEFAULT_NEGATIVES

        self.model, self.tokenizer = model, tokenizer
        self.negatives = list(negatives or DEFAULT_NEGATIVES)
        self.margin, self.template = float(margin), prompt_template
        self.fingerprint = model_fingerprint(model, tokenizer)
        self.calls = 0

    def identity(self) -> dict[str, Any]:
        return {"kind": "local_vlm", "model": self.fingerprint, "negatives": self.negatives, "margin": self.margin,
                "template": self.template}

    def compare(self, first: np.ndarray, second: np.ndarray, task: str) -> np.ndarray:
        from robot_rl.rewards.vlm.zero_shot import ZeroShotReward

        zs = ZeroShotReward(self.model, self.tokenizer, self.template.format(task=task), self.negatives, ["x"],
                            threshold=None)
        p = zs.prompt_probs(np.concatenate([first, second])).double().cpu().numpy()
        self.calls += 1
        d = p[:len(first)] - p[len(first):]
        return np.where(d > self.margin, FIRST, np.where(d < -self.margin, SECOND, UNSURE)).astype(np.int8)


def png_data_url(image: np.ndarray, size: int | None = None) -> str:
    """uint8 ``(H, W, 3)`` -> ``data:image/png;base64,...``, resized (bicubic) to ``size`` x ``size`` px if given."""
    from PIL import Image

    img = Image.fromarray(np.asarray(image, dtype=np.uint8))
    if size and img.size != (size, size):
        img = img.resize((int(size), int(size)), Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class EndpointError(RuntimeError):
    """The chat endpoint failed for good (after retries) or answered with something that is not a chat reply."""


class HTTPChatLabeller(PreferenceLabeller):
    """Preferences from an OpenAI-compatible chat-completions endpoint (see the module docstring).

    ``url``: the API base (``http://host:port/v1``; ``/chat/completions`` is appended unless already there).
    ``model``: the model name sent. ``prompt``: template with ``{task}``. ``api_key_env``: name of an environment
    variable holding a bearer token (None: no Authorization header). ``timeout_s``: per request (s). ``retries``:
    extra attempts after a transient failure, waiting ``backoff_s * 2**k`` s. ``image_size``: px of the square PNGs
    sent (None: as recorded). ``max_tokens``: reply budget."""

    def __init__(self, url: str, model: str, prompt: str | None = None, api_key_env: str | None = None,
                 timeout_s: float = 60.0, retries: int = 3, backoff_s: float = 1.0, image_size: int | None = 224,
                 max_tokens: int = 300, temperature: float = 0.0, sleep: Callable[[float], None] = time.sleep):
        if not url or not str(url).startswith(("http://", "https://")):
            raise ValueError(f"labeller url={url!r} must be an http(s) URL of an OpenAI-compatible API")
        if not model:
            raise ValueError("the HTTP labeller needs a model name (labeller.model)")
        url = str(url).rstrip("/")
        self.url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.model, self.prompt = str(model), prompt or DEFAULT_PROMPT
        if "{task}" not in self.prompt:
            raise ValueError("the labeller prompt must contain {task}")
        self.api_key_env, self.timeout_s, self.retries = api_key_env, float(timeout_s), int(retries)
        self.backoff_s, self.image_size = float(backoff_s), image_size
        self.max_tokens, self.temperature, self._sleep = int(max_tokens), float(temperature), sleep
        self.calls = 0
        self.replies: list[str] = []  # the last batch's raw replies, for inspection
        # A labeller on this machine is reached directly, whatever proxy the environment names.
        local = urllib.parse.urlsplit(self.url).hostname in ("127.0.0.1", "localhost", "::1")
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({})) if local else \
            urllib.request.build_opener()

    def identity(self) -> dict[str, Any]:
        return {"kind": "http_chat", "url": self.url, "model": self.model,
                "prompt_sha256": identity_hash({"prompt": self.prompt}), "image_size": self.image_size,
                "temperature": self.temperature, "max_tokens": self.max_tokens}

    def request_body(self, first: np.ndarray, second: np.ndarray, task: str) -> dict[str, Any]:
        """The JSON body for one pair (one user message: text, Image 1, Image 2)."""
        content = [{"type": "text", "text": self.prompt.format(task=task)},
                   {"type": "text", "text": "Image 1:"},
                   {"type": "image_url", "image_url": {"url": png_data_url(first, self.image_size)}},
                   {"type": "text", "text": "Image 2:"},
                   {"type": "image_url", "image_url": {"url": png_data_url(second, self.image_size)}}]
        return {"model": self.model, "messages": [{"role": "user", "content": content}],
                "temperature": self.temperature, "max_tokens": self.max_tokens}

    def ask(self, body: Mapping[str, Any]) -> str:
        """POST ``body``; the reply's text (``choices[0].message.content``, string or list of text parts)."""
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise EndpointError(f"environment variable {self.api_key_env} (labeller.api_key_env) is not set")
            headers["Authorization"] = f"Bearer {key}"
        last: str = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(self.backoff_s * 2 ** (attempt - 1))
            self.calls += 1
            req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with self._opener.open(req, timeout=self.timeout_s) as resp:
                    raw = resp.read()
            except urllib.error.HTTPError as exc:
                detail = exc.read(500).decode("utf-8", "replace") if exc.fp else ""
                last = f"HTTP {exc.code} from {self.url}: {detail.strip()[:200]}"
                if exc.code == 429 or exc.code >= 500:
                    continue
                raise EndpointError(last) from None
            except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as exc:
                last = f"{self.url}: {getattr(exc, 'reason', exc)}"
                continue
            return self._reply_text(raw)
        raise EndpointError(f"no answer after {self.retries + 1} attempts; last error: {last}")

    def _reply_text(self, raw: bytes) -> str:
        try:
            obj = json.loads(raw.decode("utf-8"))
            content = obj["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise EndpointError(f"{self.url}: not a chat-completions reply ({exc!r}): {raw[:200]!r}") from None
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        return content if isinstance(content, str) else ""

    def compare(self, first: np.ndarray, second: np.ndarray, task: str) -> np.ndarray:
        self.replies = [self.ask(self.request_body(a, b, task)) for a, b in zip(first, second)]
        return np.array([parse_answer(r) for r in self.replies], dtype=np.int8)


def build_labeller(cfg: Mapping[str, Any], device: str | torch.device | None = "auto") -> PreferenceLabeller:
    """The labeller a ``reward.labeller`` config names: ``type: vlm`` (``vlm_path``, ``negatives``, ``margin``) or
    ``type: http`` (``url``, ``model``, ``prompt``, ``api_key_env``, ``timeout_s``, ``retries``, ``image_size``)."""
    kind = str(cfg.get("type", "vlm"))
    if kind == "vlm":
        from robot_rl.rewards.vlm.model import load_dual_encoder
        if not cfg.get("vlm_path"):
            raise ValueError("labeller.type=vlm needs labeller.vlm_path (a dual-encoder checkpoint directory)")
        model, tok = load_dual_encoder(cfg["vlm_path"], device)
        return LocalVLMLabeller(model, tok, cfg.get("negatives"), float(cfg.get("margin", 0.02)))
    if kind == "http":
        return HTTPChatLabeller(cfg.get("url"), cfg.get("model"), cfg.get("prompt"), cfg.get("api_key_env"),
                                float(cfg.get("timeout_s", 60)), int(cfg.get("retries", 3)),
                                float(cfg.get("backoff_s", 1.0)), cfg.get("image_size", 224),
                                int(cfg.get("max_tokens", 300)))
    raise ValueError(f"labeller.type={kind!r} must be vlm or http")


# ---------------------------------------------------------------------------------------------- collecting
def sample_pairs(n_frames: int, n_pairs: int, seed: int) -> np.ndarray:
    """``(n_pairs, 2)`` indices of distinct frames, uniformly at random (seeded). Prefix-stable: asking for more
    pairs with the same seed and frame count starts with the same pairs (so cached answers are reused)."""
    if n_frames < 2:
        raise RewardDataError(f"need at least 2 frames to form pairs, got {n_frames}")
    u = np.random.default_rng(seed).random((n_pairs, 2))  # filled row by row
    a = np.minimum((u[:, 0] * n_frames).astype(np.int64), n_frames - 1)
    b = (a + 1 + np.minimum((u[:, 1] * (n_frames - 1)).astype(np.int64), n_frames - 2)) % n_frames
    return np.stack([a, b], axis=1)


def collect_preferences(store: EpisodeStore, frames: StoreFrames, camera: str, labeller: PreferenceLabeller,
                        task: str, pairs: int, seed: int = 0, batch: int = 16, cache: bool = True,
                        log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Answers for ``pairs`` random frame pairs of ``frames`` (seeded), from the store's cache where present,
    from ``labeller`` otherwise (``batch`` pairs per call, each batch cached as it arrives).

    Returns ``first``, ``second`` (int64 indices into ``frames``), ``answer`` (int8) and counts ``cached``,
    ``asked``, ``labeller_calls``, ``label_set``."""
    if camera not in frames.images:
        raise RewardDataError(f"labeller camera {camera!r} is not among the frames' cameras {frames.cameras}")
    ident = {"labeller": labeller.identity(), "camera": camera, "task": task}
    name = f"pref-{identity_hash(ident)}"
    known: dict[tuple[int, int], int] = {}
    if cache and name in store.label_names():
        tab = store.read_labels(name)
        known = {(int(a), int(b)): int(c) for a, b, c in zip(tab["first"], tab["second"], tab["answer"])}
    idx = sample_pairs(len(frames), pairs, seed)
    fid = frames.frame_id
    keys = [(int(fid[a]), int(fid[b])) for a, b in idx]
    todo = [i for i, k in enumerate(keys) if k not in known]
    calls0 = labeller.calls
    img = frames.images[camera]
    for s in range(0, len(todo), batch):
        chunk = todo[s:s + batch]
        ans = np.asarray(labeller.compare(img[idx[chunk, 0]], img[idx[chunk, 1]], task), dtype=np.int8)
        for i, a in zip(chunk, ans):
            known[keys[i]] = int(a)
        if cache:
            try:
                store.append_labels(name, {"first": np.array([keys[i][0] for i in chunk], np.int64),
                                           "second": np.array([keys[i][1] for i in chunk], np.int64),
                                           "answer": ans}, per_step=False, meta=ident)
            except (OSError, StoreError) as exc:
                if log:
                    log(f"answers not cached: {exc}")
                cache = False
    answer = np.array([known[k] for k in keys], dtype=np.int8)
    out = {"first": idx[:, 0].astype(np.int64), "second": idx[:, 1].astype(np.int64), "answer": answer,
           "cached": len(keys) - len(todo), "asked": len(todo), "labeller_calls": labeller.calls - calls0,
           "label_set": name}
    if log:
        log(f"{name}: {out['cached']} answers from the cache, {out['asked']} asked in {out['labeller_calls']} calls; "
            f"first {int(np.sum(answer == FIRST))}, second {int(np.sum(answer == SECOND))}, "
            f"unsure {int(np.sum(answer == UNSURE))}")
    return out


# ------------------------------------------------------------------------------------------------ reward model
@dataclass
class PreferenceConfig:
    """Options of ``reward.train`` in ``configs/reward/preference.yaml`` (units there)."""

    cameras: tuple[str, ...] | None = None
    camera: str | None = None
    task: str | None = None
    pairs: int = 500
    batch_pairs: int = 16
    val_fraction: float = 0.2
    trunk_stage: int = 6
    pretrained: bool = True
    feature_dim: int = 64
    num_kernels: int = 8
    hidden: int = 128
    dropout: float = 0.1
    feature_pad: float = 0.125
    steps: int = 1000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    eval_every: int = 100
    target_fpr: float = 0.01
    positive_last_k: int = 3
    margin: int = 2
    relabel: bool = True
    relabel_out: str | None = None

    def __post_init__(self) -> None:
        if self.cameras is not None:
            self.cameras = (self.cameras,) if isinstance(self.cameras, str) else tuple(self.cameras)
        if self.pairs < 2 or self.steps < 1 or not 0 <= self.val_fraction < 1:
            raise ValueError(f"need pairs >= 2, steps >= 1, val_fraction in [0, 1): {self.pairs}, {self.steps}, "
                             f"{self.val_fraction}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "PreferenceConfig":
        return options_from_dict(cls, d, "preference")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cameras"] = list(self.cameras) if self.cameras is not None else None
        return d


def fit_bradley_terry(scorer: FrameScorer, maps: Mapping[str, torch.Tensor], first: np.ndarray, second: np.ndarray,
                      answer: np.ndarray, *, val_fraction: float, steps: int, batch_size: int, lr: float,
                      weight_decay: float, eval_every: int, seed: int,
                      log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train ``scorer`` so that ``sigmoid(r(a) - r(b))`` predicts that ``a`` was preferred.

    ``maps``: {camera: (F, C, h, w)} of all frames; ``first`` / ``second`` (P,) frame indices; ``answer`` (P,)
    FIRST / SECOND / UNSURE (dropped). A random ``val_fraction`` of the pairs is held out; the state with the lowest
    held-out loss is kept. Returns ``{"pairs_used", "val_accuracy", "train_accuracy", "best_step", "history"}``."""
    keep = answer != UNSURE
    a, b = np.asarray(first)[keep], np.asarray(second)[keep]
    y = (np.asarray(answer)[keep] == FIRST).astype(np.float32)
    if len(y) < 2:
        raise RewardDataError(f"only {len(y)} usable preference answers ({int(np.sum(~keep))} unsure); need more")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    nv = int(round(val_fraction * len(y)))
    va, tr = perm[:nv], perm[nv:]
    dev = next(scorer.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed)
    opt = torch.optim.AdamW(scorer.parameters(), lr=lr, weight_decay=weight_decay)
    ta, tb, ty = (torch.as_tensor(x, device=dev) for x in (a, b, y))

    def pair_logits(rows: np.ndarray, augment: bool) -> torch.Tensor:
        r = torch.as_tensor(rows, device=dev)
        both = torch.cat([ta[r], tb[r]])
        out = scorer({c: m[both].to(dev) for c, m in maps.items()}, augment=augment, generator=gen)
        return out[:len(rows)] - out[len(rows):]

    def evaluate(rows: np.ndarray) -> tuple[float, float]:
        scorer.eval()
        with torch.no_grad():
            z = torch.cat([pair_logits(rows[s:s + 512], False) for s in range(0, len(rows), 512)])
            t = ty[torch.as_tensor(rows, device=dev)]
            return float(F.binary_cross_entropy_with_logits(z, t)), float(((z > 0).float() == t).float().mean())

    best, history = (float("inf"), 0, None), []
    for step in range(1, steps + 1):
        scorer.train()
        rows = tr[rng.integers(0, len(tr), batch_size)]
        loss = F.binary_cross_entropy_with_logits(pair_logits(rows, True), ty[torch.as_tensor(rows, device=dev)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            rec = {"step": step, "train_loss": float(loss.detach())}
            if len(va):
                rec["val_loss"], rec["val_accuracy"] = evaluate(va)
                if rec["val_loss"] <= best[0]:
                    best = (rec["val_loss"], step, {k: v.detach().clone() for k, v in scorer.state_dict().items()})
            history.append(rec)
            if log:
                log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()))
    if best[2] is not None:
        scorer.load_state_dict(best[2])
    scorer.eval()
    return {"pairs_used": int(len(y)), "unsure": int(np.sum(~keep)), "val_pairs": int(len(va)),
            "val_accuracy": evaluate(va)[1] if len(va) else float("nan"), "train_accuracy": evaluate(tr)[1],
            "best_step": best[1] or steps, "history": history}


class PreferenceReward(RewardModel):
    """Frozen trunk + Bradley-Terry :class:`FrameScorer`: frames -> standardised reward
    ``(r - mean) / std`` (B,); success when it reaches ``threshold`` (None: never)."""

    kind = "preference"

    def __init__(self, featurizer: TrunkFeaturizer, scorer: FrameScorer, image_shapes: Mapping[str, Sequence[int]],
                 mean: float = 0.0, std: float = 1.0, threshold: float | None = None):
        self.featurizer, self.scorer = featurizer, scorer.eval()
        self.image_shapes = {c: tuple(int(d) for d in s) for c, s in image_shapes.items()}  # type: ignore[misc]
        self.cameras = sorted(self.image_shapes)
        self.mean, self.std = float(mean), float(std)
        self.threshold = None if threshold is None else float(threshold)

    @torch.no_grad()
    def raw(self, maps: Mapping[str, torch.Tensor], batch: int = 512) -> torch.Tensor:
        """Unstandardised rewards (F,) of cached maps {camera: (F, C, h, w)}."""
        n = len(next(iter(maps.values())))
        dev = self.featurizer.device
        out = [self.scorer({c: m[s:s + batch].to(dev) for c, m in maps.items()}) for s in range(0, n, batch)]
        return torch.cat(out) if out else torch.zeros(0, device=dev)

    @torch.no_grad()
    def score(self, frames: Mapping[str, Any]) -> np.ndarray:
        self.check_frames({c: tuple(np.shape(frames[c])[1:]) for c in frames}, "frames given to the preference model")
        maps = {c: self.featurizer.maps(frames[c], dtype=torch.float32) for c in self.cameras}
        return ((self.scorer(maps) - self.mean) / self.std).double().cpu().numpy()

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "head": weights_fingerprint(self.scorer), "trunk": self.featurizer.fingerprint(),
                "mean": round(self.mean, 9), "std": round(self.std, 9)}

    def save(self, out: str | Path, report: Mapping[str, Any] | None = None) -> Path:
        """Write ``reward_model.safetensors`` (head; trunk too unless pretrained) and ``reward_model.json``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {f"scorer.{k}": v.detach().cpu().contiguous() for k, v in self.scorer.state_dict().items()}
        if not self.featurizer.pretrained:
            tensors.update({f"trunk.{k}": v.detach().cpu().contiguous()
                            for k, v in self.featurizer.trunk.state_dict().items()})
        save_file(tensors, str(out / WEIGHTS_FILE))
        head0 = self.scorer.heads[self.cameras[0]]
        meta = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "kind": self.kind,
                "cameras": {c: list(s) for c, s in self.image_shapes.items()}, "threshold": self.threshold,
                "mean": self.mean, "std": self.std,
                "trunk": {"stage": self.featurizer.stage, "pretrained": self.featurizer.pretrained,
                          "fingerprint": self.featurizer.fingerprint(),
                          "feature_shapes": {c: list(self.scorer.heads[c].in_shape) for c in self.cameras}},
                "head": {"feature_dim": head0.out_dim, "num_kernels": int(head0.kernel.shape[-1]),
                         "hidden": int(self.scorer.mlp[0].out_features), "dropout": float(self.scorer.mlp[2].p),
                         "feature_pad": self.scorer.feature_pad},
                "identity": self.identity(), "report": jsonable(report or {})}
        (out / MODEL_FILE).write_text(json.dumps(meta, indent=2))
        return out

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = "auto") -> "PreferenceReward":
        """Rebuild from a directory written by :meth:`save`; the trunk must have the saved fingerprint."""
        d = read_model_json(path)
        shapes = {c: tuple(s) for c, s in d["cameras"].items()}
        t, h = d["trunk"], d["head"]
        feat = TrunkFeaturizer(t["stage"], t["pretrained"], device, next(iter(shapes.values()))[:2])
        tensors = load_file(str(Path(path) / WEIGHTS_FILE))
        if not t["pretrained"]:
            feat.trunk.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("trunk.")})
        if feat.fingerprint() != t["fingerprint"]:
            raise RewardDataError(f"{path}: the frozen trunk here differs from the one the model was trained on")
        scorer = FrameScorer({c: tuple(s) for c, s in t["feature_shapes"].items()}, h["feature_dim"],
                             h["num_kernels"], h["hidden"], h["dropout"], h["feature_pad"])
        scorer.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("scorer.")})
        return cls(feat, scorer.to(feat.device), shapes, d["mean"], d["std"], d["threshold"])


def train_preference_reward(store: EpisodeStore, labeller: PreferenceLabeller, cfg: PreferenceConfig, *,
                            seed: int = 0, device: str | torch.device | None = "auto", out: str | Path | None = None,
                            log: Callable[[str], None] | None = None) -> tuple[PreferenceReward, dict[str, Any]]:
    """Collect (cached) preferences on ``store``'s frames and fit the Bradley-Terry reward model (see the module
    docstring). Returns the model and a report (answer counts, held-out pair accuracy, success-threshold
    validation when the store has successful episodes)."""
    t0 = time.perf_counter()
    dev = resolve_device(device)
    torch.manual_seed(seed)
    frames = load_frames(store, cfg.cameras, LabelRule(cfg.positive_last_k, cfg.margin))
    camera = cfg.camera or frames.cameras[0]
    task = cfg.task or store.metadata(0)["task"].replace("_", " ")
    prefs = collect_preferences(store, frames, camera, labeller, task, cfg.pairs, seed, cfg.batch_pairs, log=log)
    shapes = frames.image_shapes
    feat = TrunkFeaturizer(cfg.trunk_stage, cfg.pretrained, dev, next(iter(shapes.values()))[:2])
    maps = {c: feat.maps(frames.images[c]) for c in frames.cameras}
    fshapes = {c: tuple(m.shape[1:]) for c, m in maps.items()}
    scorer = FrameScorer(fshapes, cfg.feature_dim, cfg.num_kernels, cfg.hidden, cfg.dropout, cfg.feature_pad).to(dev)
    fit = fit_bradley_terry(scorer, maps, prefs["first"], prefs["second"], prefs["answer"],
                            val_fraction=cfg.val_fraction, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                            weight_decay=cfg.weight_decay, eval_every=cfg.eval_every, seed=seed, log=log)
    model = PreferenceReward(feat, scorer, shapes)
    r = model.raw(maps).double().cpu().numpy()
    model.mean, model.std = float(r.mean()), float(max(r.std(), 1e-6))
    z = (r - model.mean) / model.std
    report: dict[str, Any] = {"kind": "preference", "store": str(store.root), "camera": camera, "task": task,
                              "preferences": {k: prefs[k] for k in ("cached", "asked", "labeller_calls", "label_set")},
                              "answers": {"first": int(np.sum(prefs["answer"] == FIRST)),
                                          "second": int(np.sum(prefs["answer"] == SECOND)),
                                          "unsure": int(np.sum(prefs["answer"] == UNSURE))},
                              "labeller": labeller.identity(),
                              "fit": {k: v for k, v in fit.items() if k != "history"}, "history": fit["history"],
                              "config": cfg.to_dict(), "seed": seed}
    lab = frames.label >= 0
    y = frames.label[lab] == 1
    if y.any() and (~y).any():  # the store says which frames show success: calibrate a success threshold
        ev = evaluate_scores(y, z[lab], cfg.target_fpr, probabilities=False)
        model.threshold = ev["threshold"]
        report["success_validation_in_sample"] = ev
    report["seconds"] = time.perf_counter() - t0
    if out is not None:
        model.save(out, report)
    return model, report
