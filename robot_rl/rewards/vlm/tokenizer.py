"""Text tokenizers of the dual encoder: a word-level vocabulary (small models, tests) and CLIP-style byte-level BPE.

Both turn a list of strings into ``(ids, eot)``: int64 ``(N, context_length)`` token ids (``[start] tokens [end]``,
zero-padded, cut to fit with the end token kept) and int64 ``(N,)`` positions of each end token, which is where a
CLIP-style text tower pools. Both are described by ``tokenizer.json`` in a checkpoint directory:

* ``{"type": "word", "vocab": [token, ...], "lowercase": true}``: id = index in ``vocab``; the first four entries are
  the special tokens ``<pad>``, ``<unk>``, ``<start>``, ``<end>``. Text is lower-cased and split into runs of letters
  and digits and single punctuation characters; unknown words map to ``<unk>``.
* ``{"type": "bpe", "vocab_file": "vocab.json", "merges_file": "merges.txt", "start": "<|startoftext|>",
  "end": "<|endoftext|>", "lowercase": true}``: the byte-level BPE of CLIP (Radford et al., 2021; Sennrich et al.,
  2016). ``vocab.json`` maps token strings to ids; ``merges.txt`` lists one merge ``"a b"`` per line in priority
  order (a first line starting with ``#`` is a header). Each word's UTF-8 bytes are mapped to printable characters
  (printable Latin-1 bytes to themselves, the others to code points from 256 on), its last symbol gets the
  end-of-word suffix ``</w>``, and the lowest-ranked adjacent pair is merged until no listed pair remains.
  The pre-tokenizer approximates CLIP's with Python's ``re`` (letters, single digits, other symbol runs, and the
  English contractions), which agrees on ordinary task descriptions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

WORD_SPECIALS = ("<pad>", "<unk>", "<start>", "<end>")
_WORD_SPLIT = re.compile(r"[^\W_]+|[^\w\s]|_", re.UNICODE)
_BPE_SPLIT = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_+", re.UNICODE | re.IGNORECASE)


class Tokenizer:
    """Base: subclasses give ``encode_one(text) -> list[int]`` (without start/end) and the special ids."""

    start_id: int
    end_id: int
    pad_id: int = 0
    vocab_size: int

    def encode_one(self, text: str) -> list[int]:
        raise NotImplementedError

    def __call__(self, texts: Sequence[str], context_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``texts`` -> ids (N, context_length) int64 and end-token positions (N,) int64."""
        if context_length < 2:
            raise ValueError(f"context_length={context_length} must be >= 2")
        ids = torch.full((len(texts), context_length), self.pad_id, dtype=torch.long)
        eot = torch.zeros(len(texts), dtype=torch.long)
        for i, t in enumerate(texts):
            toks = [self.start_id, *self.encode_one(str(t))[: context_length - 2], self.end_id]
            ids[i, : len(toks)] = torch.tensor(toks)
            eot[i] = len(toks) - 1
        return ids, eot

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError

    def fingerprint_data(self) -> str:
        """Everything that determines the ids, as one string (hashed into the model's identity)."""
        return json.dumps(self.to_json(), sort_keys=True)


class WordTokenizer(Tokenizer):
    """Word-level vocabulary (see the module docstring)."""

    def __init__(self, vocab: Sequence[str], lowercase: bool = True):
        vocab = list(vocab)
        if tuple(vocab[:4]) != WORD_SPECIALS:
            raise ValueError(f"a word vocabulary starts with {list(WORD_SPECIALS)}, got {vocab[:4]}")
        if len(set(vocab)) != len(vocab):
            raise ValueError("the word vocabulary has duplicate entries")
        self.vocab, self.lowercase = vocab, bool(lowercase)
        self.index = {w: i for i, w in enumerate(vocab)}
        self.pad_id, self.unk_id, self.start_id, self.end_id = 0, 1, 2, 3
        self.vocab_size = len(vocab)

    @staticmethod
    def words(text: str, lowercase: bool = True) -> list[str]:
        return _WORD_SPLIT.findall(text.lower() if lowercase else text)

    @classmethod
    def build(cls, texts: Sequence[str], extra: Sequence[str] = ()) -> WordTokenizer:
        """A vocabulary of every word in ``texts`` and ``extra`` (sorted), after the special tokens."""
        words = sorted({w for t in texts for w in cls.words(t)} | set(extra))
        return cls([*WORD_SPECIALS, *words])

    def encode_one(self, text: str) -> list[int]:
        return [self.index.get(w, self.unk_id) for w in self.words(text, self.lowercase)]

    def to_json(self) -> dict[str, Any]:
        return {"type": "word", "vocab": self.vocab, "lowercase": self.lowercase}


def bytes_to_symbols() -> dict[int, str]:
    """Byte value -> one printable character: printable Latin-1 bytes map to themselves, the remaining 68 bytes to
    ``chr(256 + k)`` in increasing byte order (the reversible byte alphabet of byte-level BPE)."""
    keep = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAC + 1)) | set(range(0xAE, 0xFF + 1))
    out, k = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + k)
            k += 1
    return out


class BPETokenizer(Tokenizer):
    """CLIP-style byte-level BPE with the ``</w>`` end-of-word marker (see the module docstring)."""

    def __init__(
        self,
        vocab: dict[str, int],
        merges: Sequence[tuple[str, str]],
        start: str = "<|startoftext|>",
        end: str = "<|endoftext|>",
        lowercase: bool = True,
        files: dict[str, str] | None = None,
    ):
        self.vocab, self.lowercase = dict(vocab), bool(lowercase)
        self.ranks = {tuple(m): i for i, m in enumerate(merges)}
        for tok in (start, end):
            if tok not in self.vocab:
                raise ValueError(f"BPE vocabulary lacks the special token {tok!r}")
        self.start, self.end = start, end
        self.start_id, self.end_id = self.vocab[start], self.vocab[end]
        self.pad_id = 0
        self.vocab_size = max(self.vocab.values()) + 1
        self.byte_sym = bytes_to_symbols()
        self.files = files or {"vocab_file": "vocab.json", "merges_file": "merges.txt"}
        self._cache: dict[str, list[str]] = {}
        self._merges = [tuple(m) for m in merges]

    @classmethod
    def from_files(cls, vocab_file: str | Path, merges_file: str | Path, **kw: Any) -> BPETokenizer:
        """Read ``vocab.json`` (token -> id) and ``merges.txt`` (one ``a b`` per line, optional ``#`` header)."""
        vocab = json.loads(Path(vocab_file).read_text(encoding="utf-8"))
        merges = []
        for i, line in enumerate(Path(merges_file).read_text(encoding="utf-8").splitlines()):
            if (i == 0 and line.startswith("#")) or not line.strip():
                continue
            a, b = line.split()
            merges.append((a, b))
        return cls(
            vocab, merges, files={"vocab_file": Path(vocab_file).name, "merges_file": Path(merges_file).name}, **kw
        )

    def _bpe(self, word: str) -> list[str]:
        """Merge the symbols of one pre-token (already mapped to the byte alphabet) by rank."""
        if word in self._cache:
            return self._cache[word]
        syms = list(word[:-1]) + [word[-1] + "</w>"]
        while len(syms) > 1:
            pairs = [(self.ranks.get((a, b), None), i) for i, (a, b) in enumerate(zip(syms, syms[1:]))]
            ranked = [(r, i) for r, i in pairs if r is not None]
            if not ranked:
                break
            best = min(ranked)[0]
            a, b = self._merges[best]
            out, i = [], 0
            while i < len(syms):
                if i + 1 < len(syms) and syms[i] == a and syms[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            syms = out
        self._cache[word] = syms
        return syms

    def tokens(self, text: str) -> list[str]:
        """The BPE token strings of ``text`` (without start/end)."""
        text = " ".join(text.split())
        if self.lowercase:
            text = text.lower()
        out = []
        for piece in _BPE_SPLIT.findall(text):
            out.extend(self._bpe("".join(self.byte_sym[b] for b in piece.encode("utf-8"))))
        return out

    def encode_one(self, text: str) -> list[int]:
        unknown = [t for t in self.tokens(text) if t not in self.vocab]
        if unknown:
            raise ValueError(
                f"BPE tokens {unknown[:3]} are not in the vocabulary (vocab.json and merges.txt "
                "do not belong together?)"
            )
        return [self.vocab[t] for t in self.tokens(text)]

    def to_json(self) -> dict[str, Any]:
        return {"type": "bpe", **self.files, "start": self.start, "end": self.end, "lowercase": self.lowercase}

    def fingerprint_data(self) -> str:
        return json.dumps({"vocab": self.vocab, "merges": self._merges, **self.to_json()}, sort_keys=True)


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """The tokenizer described by ``<directory>/tokenizer.json``."""
    d = Path(directory)
    spec = json.loads((d / "tokenizer.json").read_text(encoding="utf-8"))
    kind = spec.get("type")
    if kind == "word":
        return WordTokenizer(spec["vocab"], spec.get("lowercase", True))
    if kind == "bpe":
        return BPETokenizer.from_files(
            d / spec.get("vocab_file", "vocab.json"),
            d / spec.get("merges_file", "merges.txt"),
            start=spec.get("start", "<|startoftext|>"),
            end=spec.get("end", "<|endoftext|>"),
            lowercase=spec.get("lowercase", True),
        )
    raise ValueError(f"{d / 'tokenizer.json'}: unknown tokenizer type {kind!r} (word or bpe)")


def save_tokenizer(tok: Tokenizer, directory: str | Path) -> None:
    """Write ``tokenizer.json`` (and, for BPE, ``vocab.json`` and ``merges.txt``) into ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / "tokenizer.json").write_text(json.dumps(tok.to_json(), indent=1), encoding="utf-8")
    if isinstance(tok, BPETokenizer):
        (d / tok.files["vocab_file"]).write_text(json.dumps(tok.vocab), encoding="utf-8")
        (d / tok.files["merges_file"]).write_text(
            "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in tok._merges) + "\n", encoding="utf-8"
        )
