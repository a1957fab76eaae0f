"""Preference labels from AI feedback, in the spirit of RL-VLM-F (Wang et al., 2024): a labeller compares two frames
for progress on the task; the answers are cached in the store. The Bradley-Terry reward model learned from them is
:mod:`robot_rl.rewards.preference`.

Labellers (:class:`PreferenceLabeller`): ``compare(first, second, task)`` on uint8 ``(N, H, W, 3)`` frame pairs gives
``(N,)`` int8 answers: :data:`FIRST` (0, the first frame shows more progress), :data:`SECOND` (1) or :data:`UNSURE`
(-1: no preference, or an answer that could not be read). Two kinds:

* :class:`LocalVLMLabeller`: a local dual encoder's zero-shot task-prompt probability for each frame; the frame with
  the higher one wins when the gap exceeds ``margin``.
* :class:`HTTPChatLabeller`: an OpenAI-compatible chat-completions endpoint, one request per pair: the prompt and
  both frames as base64 PNG data URLs, temperature 0; the reply is read by :func:`parse_answer`. Requests use
  ``urllib`` with a timeout and retries with exponential backoff on connection errors, timeouts, HTTP 429 and 5xx;
  replies are parsed as JSON only (nothing is unpickled).

:func:`collect_preferences` asks about seeded random frame pairs and caches the answers in the store as the label
table ``pref-<hash of labeller identity, camera and task>`` with columns ``first``, ``second`` (global frame ids, see
:mod:`robot_rl.rewards.frames`) and ``answer``; a rerun with the same seed, store and labeller asks nothing.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from robot_rl.data.store import EpisodeStore, StoreError
from robot_rl.rewards.base import RewardDataError, identity_hash
from robot_rl.rewards.frames import StoreFrames

FIRST, SECOND, UNSURE = 0, 1, -1

DEFAULT_PROMPT = (
    "You see two images from a robot's camera: Image 1 first, then Image 2. The goal of the robot is: {task}. "
    "Which image shows more progress towards that goal? Think briefly about what each image shows, then end your "
    "reply with one line: 'Answer: 1' if Image 1 shows more progress, 'Answer: 2' if Image 2 does, or 'Answer: 0' "
    "if there is no clear difference."
)


# --------------------------------------------------------------------------------------------------- answers
_WORD_TO_ANSWER = {
    "1": FIRST,
    "one": FIRST,
    "first": FIRST,
    "2": SECOND,
    "two": SECOND,
    "second": SECOND,
    "0": UNSURE,
    "-1": UNSURE,
    "none": UNSURE,
    "neither": UNSURE,
    "tie": UNSURE,
    "equal": UNSURE,
    "same": UNSURE,
    "unsure": UNSURE,
    "both": UNSURE,
}
_ANSWER_LINE = re.compile(
    r"answer\s*(?:is)?\s*[:=\-]?\s*[\*\"'`(\[]*\s*(?:image\s*)?(-1|[012]|one|two|first|second|"
    r"none|neither|tie|equal|same|unsure|both)\b"
)
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

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        negatives: Sequence[str] | None = None,
        margin: float = 0.02,
        prompt_template: str = "{task}",
    ):
        from robot_rl.rewards.vlm.model import model_fingerprint
        from robot_rl.rewards.vlm.zero_shot import DEFAULT_NEGATIVES

        self.model, self.tokenizer = model, tokenizer
        self.negatives = list(negatives or DEFAULT_NEGATIVES)
        self.margin, self.template = float(margin), prompt_template
        self.fingerprint = model_fingerprint(model, tokenizer)
        self.calls = 0

    def identity(self) -> dict[str, Any]:
        return {
            "kind": "local_vlm",
            "model": self.fingerprint,
            "negatives": self.negatives,
            "margin": self.margin,
            "template": self.template,
        }

    def compare(self, first: np.ndarray, second: np.ndarray, task: str) -> np.ndarray:
        from robot_rl.rewards.vlm.zero_shot import ZeroShotReward

        zs = ZeroShotReward(
            self.model, self.tokenizer, self.template.format(task=task), self.negatives, ["x"], threshold=None
        )
        p = zs.prompt_probs(np.concatenate([first, second])).double().cpu().numpy()
        self.calls += 1
        d = p[: len(first)] - p[len(first) :]
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

    def __init__(
        self,
        url: str,
        model: str,
        prompt: str | None = None,
        api_key_env: str | None = None,
        timeout_s: float = 60.0,
        retries: int = 3,
        backoff_s: float = 1.0,
        image_size: int | None = 224,
        max_tokens: int = 300,
        temperature: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
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
        self._opener = (
            urllib.request.build_opener(urllib.request.ProxyHandler({})) if local else urllib.request.build_opener()
        )

    def identity(self) -> dict[str, Any]:
        return {
            "kind": "http_chat",
            "url": self.url,
            "model": self.model,
            "prompt_sha256": identity_hash({"prompt": self.prompt}),
            "image_size": self.image_size,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def request_body(self, first: np.ndarray, second: np.ndarray, task: str) -> dict[str, Any]:
        """The JSON body for one pair (one user message: text, Image 1, Image 2)."""
        content = [
            {"type": "text", "text": self.prompt.format(task=task)},
            {"type": "text", "text": "Image 1:"},
            {"type": "image_url", "image_url": {"url": png_data_url(first, self.image_size)}},
            {"type": "text", "text": "Image 2:"},
            {"type": "image_url", "image_url": {"url": png_data_url(second, self.image_size)}},
        ]
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

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
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
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
        return HTTPChatLabeller(
            cfg.get("url"),
            cfg.get("model"),
            cfg.get("prompt"),
            cfg.get("api_key_env"),
            float(cfg.get("timeout_s", 60)),
            int(cfg.get("retries", 3)),
            float(cfg.get("backoff_s", 1.0)),
            cfg.get("image_size", 224),
            int(cfg.get("max_tokens", 300)),
        )
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


def collect_preferences(
    store: EpisodeStore,
    frames: StoreFrames,
    camera: str,
    labeller: PreferenceLabeller,
    task: str,
    pairs: int,
    seed: int = 0,
    batch: int = 16,
    cache: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
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
        chunk = todo[s : s + batch]
        ans = np.asarray(labeller.compare(img[idx[chunk, 0]], img[idx[chunk, 1]], task), dtype=np.int8)
        for i, a in zip(chunk, ans):
            known[keys[i]] = int(a)
        if cache:
            try:
                store.append_labels(
                    name,
                    {
                        "first": np.array([keys[i][0] for i in chunk], np.int64),
                        "second": np.array([keys[i][1] for i in chunk], np.int64),
                        "answer": ans,
                    },
                    per_step=False,
                    meta=ident,
                )
            except (OSError, StoreError) as exc:
                if log:
                    log(f"answers not cached: {exc}")
                cache = False
    answer = np.array([known[k] for k in keys], dtype=np.int8)
    out = {
        "first": idx[:, 0].astype(np.int64),
        "second": idx[:, 1].astype(np.int64),
        "answer": answer,
        "cached": len(keys) - len(todo),
        "asked": len(todo),
        "labeller_calls": labeller.calls - calls0,
        "label_set": name,
    }
    if log:
        log(
            f"{name}: {out['cached']} answers from the cache, {out['asked']} asked in {out['labeller_calls']} calls; "
            f"first {int(np.sum(answer == FIRST))}, second {int(np.sum(answer == SECOND))}, "
            f"unsure {int(np.sum(answer == UNSURE))}"
        )
    return out


__all__ = [
    "DEFAULT_PROMPT",
    "FIRST",
    "SECOND",
    "UNSURE",
    "EndpointError",
    "HTTPChatLabeller",
    "LocalVLMLabeller",
    "PreferenceLabeller",
    "build_labeller",
    "collect_preferences",
    "parse_answer",
    "png_data_url",
    "sample_pairs",
]
