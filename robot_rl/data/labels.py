"""Label sets: derived annotations cached in an episode store, beside its episodes and never inside them.

Derived annotations (a success classifier's probabilities, a VLM's scores, preference answers) are cached in the
store as append-only *label sets*, each in its own directory with its own commit record, so caching a label never
rewrites episode data and a label set can be written while the store is open read-only (or being recorded into)::

    labels/<name>/label.json        written once at creation: {"format", "version", "per_step", "columns": {col:
                                    {"shape", "dtype"}}, "meta": {...}} (meta: e.g. the labeller's identity)
    labels/<name>/part-<i>-<id>.npz one file per append (numpy arrays, loaded with allow_pickle=False)
    labels/<name>/commit.json       {"rows", "parts": [{"file", "rows", "sha256"}]}, replaced whole, written last
    labels/<name>/writer.lock       flock'ed by the label set's single writer

An append writes its part file (temp file + ``os.replace``) and then replaces ``commit.json``; readers trust only
the commit, so a killed append leaves an orphan part that nobody reads. Parts are checksummed (sha256). A per-step
set (``per_step=True``) has one row per store step, appended in whole episodes from step 0 (row ``t`` describes
transition ``t``; by this project's convention its *next* observation, the frame a reward is computed from); a
table (``per_step=False``) takes any rows (e.g. pairs of frames and an answer).

:class:`LabelSets` does the work; :class:`~robot_rl.data.store.EpisodeStore` offers it as ``label_names``,
``label_info``, ``read_labels`` and ``append_labels``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.data.store import COMMIT_FILE, LABELS_DIR, LOCK_FILE, StoreError, _check_array, _take_flock, _write_atomic

LABEL_FORMAT, LABEL_VERSION = "robot_rl.labels", 1
HEAD_FILE = "label.json"
_LABEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_LABEL_TMP_SUFFIX = ".lbltmp"  # not the episode writer's suffix: opening the store for appending never deletes these


class LabelSets:
    """The label sets of the store at ``root`` (see the module docstring). ``durable``: fsync every file written
    and its directory, as the store does."""

    def __init__(self, root: str | os.PathLike, durable: bool = False):
        self.root, self.durable = Path(root), bool(durable)

    def names(self) -> list[str]:
        """Names of the label sets with a commit record, sorted."""
        d = self.root / LABELS_DIR
        return sorted(c.name for c in d.iterdir() if (c / COMMIT_FILE).is_file()) if d.is_dir() else []

    def info(self, name: str) -> dict[str, Any]:
        """``{"name", "per_step", "columns": {col: {"shape", "dtype"}}, "meta", "rows"}`` of a committed label set.
        Raises :class:`StoreError` when there is none called ``name``."""
        head, commit = self._head(name), self._commit(name)
        if head is None or commit is None:
            raise StoreError(f"{self.root}: no label set {name!r} (sets: {', '.join(self.names()) or 'none'})")
        return {
            "name": name,
            "per_step": head["per_step"],
            "columns": head["columns"],
            "meta": head["meta"],
            "rows": commit["rows"],
        }

    def read(self, name: str) -> dict[str, np.ndarray]:
        """Every committed row of label set ``name``: {column: (rows, *shape)}. Each part's checksum is verified; a
        per-step set covers steps ``[0, rows)``."""
        info = self.info(name)
        parts = self._commit(name)["parts"]  # type: ignore[index]
        cols: dict[str, list[np.ndarray]] = {c: [] for c in info["columns"]}
        for part in parts:
            path = self.root / LABELS_DIR / name / part["file"]
            try:
                raw = path.read_bytes()
            except OSError as exc:
                raise StoreError(f"label set {name!r}: part {part['file']} unreadable: {exc}") from exc
            if hashlib.sha256(raw).hexdigest() != part["sha256"]:
                raise StoreError(f"label set {name!r}: part {part['file']} fails its checksum (corrupt)")
            with np.load(io.BytesIO(raw), allow_pickle=False) as z:
                for c in cols:
                    x = z[c]
                    if len(x) != part["rows"]:
                        raise StoreError(
                            f"label set {name!r}: part {part['file']} column {c!r} has {len(x)} rows, "
                            f"commit says {part['rows']}"
                        )
                    cols[c].append(x)
        out = {}
        for c, spec in info["columns"].items():
            shape, dtype = tuple(spec["shape"]), np.dtype(spec["dtype"])
            out[c] = np.concatenate(cols[c]) if cols[c] else np.zeros((0, *shape), dtype)
        return out

    def append(
        self,
        name: str,
        columns: Mapping[str, Any],
        *,
        per_step: bool,
        meta: Mapping[str, Any] | None = None,
        episode_ends: np.ndarray | None = None,
        num_steps: int = 0,
    ) -> int:
        """Append rows to label set ``name`` (created on first use) atomically; returns its committed row count.

        ``columns``: {column: (n, *shape)} numeric or bool arrays, all with the same n >= 1; floats must be finite.
        ``per_step``: one row per store step; the rows continue the set from its current end and must stop at one
        of ``episode_ends`` (the store snapshot's, of ``num_steps`` committed steps): label whole episodes. ``meta``:
        JSON-serialisable description fixed at creation (e.g. the labeller's identity); a later append with a
        different ``meta``, ``per_step`` or column layout raises :class:`StoreError`. Takes the label set's own
        writer lock, not the store's.
        """
        if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name):
            raise StoreError(f"label set name {name!r}: use 1-128 of [A-Za-z0-9._-], starting with a letter or digit")
        if not columns:
            raise StoreError(f"label set {name!r}: no columns given")
        arrays = {str(c): np.asarray(x) for c, x in columns.items()}
        lengths = {c: (len(x) if x.ndim else -1) for c, x in arrays.items()}
        n = next(iter(lengths.values()))
        if n < 1 or any(v != n for v in lengths.values()):
            raise StoreError(f"label set {name!r}: columns need the same length >= 1, got {lengths}")
        for c, x in arrays.items():
            if x.dtype.kind not in "biuf":
                raise StoreError(f"label set {name!r}: column {c!r} has dtype {x.dtype}; numbers or bools only")
        meta_json = json.loads(json.dumps(dict(meta or {}), sort_keys=True))
        head = {
            "format": LABEL_FORMAT,
            "version": LABEL_VERSION,
            "per_step": bool(per_step),
            "columns": {c: {"shape": list(x.shape[1:]), "dtype": x.dtype.name} for c, x in arrays.items()},
            "meta": meta_json,
        }
        d = self.root / LABELS_DIR / name
        d.mkdir(parents=True, exist_ok=True)
        fd = _take_flock(d / LOCK_FILE, f"{self.root}: another process is writing label set {name!r}")
        try:
            for stale in d.glob(f"*{_LABEL_TMP_SUFFIX}"):  # temp files of a killed label writer
                stale.unlink(missing_ok=True)
            commit = self._commit(name)
            old = self._head(name) if commit is not None else None  # a head without a commit: never used
            if old is None:
                for c, x in arrays.items():
                    _check_array(f"label column {c!r}", x, x.shape, x.dtype)  # finite floats
                _write_atomic(d / HEAD_FILE, json.dumps(head, sort_keys=True).encode(), self.durable, _LABEL_TMP_SUFFIX)
            else:
                for key in ("per_step", "meta"):
                    if old[key] != head[key]:
                        raise StoreError(
                            f"label set {name!r} was created with {key}={old[key]!r}, this append has "
                            f"{head[key]!r}; use another name for other labels"
                        )
                if set(old["columns"]) != set(arrays):
                    raise StoreError(
                        f"label set {name!r}: columns {sorted(arrays)} != the set's {sorted(old['columns'])}"
                    )
                for c, spec in old["columns"].items():
                    arrays[c] = _check_array(
                        f"label column {c!r}",
                        arrays[c],
                        (n, *spec["shape"]),
                        spec["dtype"],
                        exact=np.dtype(spec["dtype"]).kind != "f",
                    )
            commit = commit or {"rows": 0, "parts": []}
            start, stop = commit["rows"], commit["rows"] + n
            if per_step:
                ends = np.asarray(episode_ends if episode_ends is not None else [], dtype=np.int64)
                if stop > num_steps or stop not in ends:
                    nxt = ends[ends > start]
                    raise StoreError(
                        f"label set {name!r}: per-step rows [{start}, {stop}) must end at an episode end "
                        f"within the store's {num_steps} committed steps (next episode ends: "
                        f"{nxt[:3].tolist()})"
                    )
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            raw = buf.getvalue()
            part = {
                "file": f"part-{len(commit['parts']):06d}-{uuid.uuid4().hex[:8]}.npz",
                "rows": n,
                "sha256": hashlib.sha256(raw).hexdigest(),
            }
            _write_atomic(d / part["file"], raw, self.durable, _LABEL_TMP_SUFFIX)
            new = {"rows": stop, "parts": [*commit["parts"], part], "time": time.time()}
            _write_atomic(d / COMMIT_FILE, json.dumps(new).encode(), self.durable, _LABEL_TMP_SUFFIX)
            return stop
        finally:
            if fd is not None:
                os.close(fd)

    def _head(self, name: str) -> dict[str, Any] | None:
        path = self.root / LABELS_DIR / name / HEAD_FILE
        if not path.is_file():
            return None
        try:
            head = json.loads(path.read_bytes())
        except Exception as exc:
            raise StoreError(f"{path}: unreadable: {exc!r}") from exc
        if head.get("format") != LABEL_FORMAT or head.get("version") != LABEL_VERSION:
            raise StoreError(f"{path}: not a version-{LABEL_VERSION} label set")
        return head

    def _commit(self, name: str) -> dict[str, Any] | None:
        path = self.root / LABELS_DIR / name / COMMIT_FILE
        if not path.is_file():
            return None
        try:
            rec = json.loads(path.read_bytes())
            return {"rows": int(rec["rows"]), "parts": list(rec["parts"])}
        except Exception as exc:
            raise StoreError(f"{path}: unreadable label commit record: {exc!r}") from exc


__all__ = ["LABEL_FORMAT", "LABEL_VERSION", "LabelSets"]
