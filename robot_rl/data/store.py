"""Zarr v3 episode store: the on-disk record of demonstrations and online episodes.

Layout (one directory; the ``data/`` + ``meta/episode_ends`` part is diffusion_policy's)::

    zarr.json                   root group; attributes["robot_rl"] holds the schema (StoreSchema.to_json)
    data/<obs key>              (N, *shape) per observation key: state float32 (N, D), cameras uint8 (N, H, W, 3)
    data/action                 float32 (N, A), the executed action (the human's when intervening)
    data/reward                 float32 (N,)
    data/terminated             bool (N,)
    data/truncated              bool (N,)
    data/is_intervention        bool (N,)
    data/timestamp              float64 (N,), seconds
    meta/episode_ends           int64 (E,), exclusive cumulative end step of each episode
    meta/success                bool (E,)
    meta/source                 int8 (E,), index into SOURCES
    meta/start_time             float64 (E,), unix seconds
    meta/final_obs/<obs key>    (E, *shape), each episode's final next-observation
    meta/episodes.jsonl         one JSON line per episode: {"episode", "task", "notes"} (free text)
    commit.json                 the commit record: {"episodes", "steps", "jsonl_bytes", ...}
    writer.lock                 flock'ed by the single writer
    labels/<name>/              optional label sets (robot_rl.data.labels); never touch the episode data

Row t of an episode is transition t (obs_t, action_t, reward_t, flags_t); its next observation is row t + 1 of the
same episode, or ``meta/final_obs`` at the episode's last row, so no observation is stored twice. Every array is
zstd-compressed with a crc32c checksum per chunk (corruption is detected, never silently decoded) and chunked along
time only: cameras ``image_chunk`` frames per chunk, other arrays about 256 KiB of raw rows. Numbers live in zarr
arrays; free text lives in the JSON-lines file, since zarr v3 has no standard variable-length string type.

Atomicity. Readers trust only ``commit.json``, which is written last and replaced whole (temp file + ``os.replace``).
Rows beyond its ``steps`` / ``episodes`` and bytes of the JSON-lines file beyond its ``jsonl_bytes`` are ignored and
overwritten by the next append. An append (1) validates every input before touching the disk, (2) grows the arrays
(never shrinks them) and writes rows [N, N + T) and episode row E, (3) appends one JSON line after the committed
bytes, (4) replaces ``commit.json``. Every zarr file (chunks and array metadata) is also written through a temp file
and ``os.replace``, so a reader or a crash sees either the old or the new version of a file, never a torn one; the
chunk that straddles the committed end is rewritten with its committed rows unchanged, and array shapes only grow.
Hence a SIGKILL at any point leaves the previous commit and every byte it covers intact, and the half-written episode
invisible. With ``durable=True`` every file and its directory are also fsync'ed, extending this to power loss.

Concurrency: one writer (enforced with ``flock`` on ``writer.lock``), any number of readers in any process. A reader
sees the snapshot committed when it opened; :meth:`EpisodeStore.refresh` picks up later commits.

Labels. Derived annotations (classifier probabilities, VLM scores, preference answers) are cached beside the
episodes as append-only label sets under ``labels/``, each with its own commit record and writer lock, so
caching a label never rewrites episode data: see :mod:`robot_rl.data.labels`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.storage import LocalStore

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX: no writer lock
    fcntl = None

if TYPE_CHECKING:
    from robot_rl.data.labels import LabelSets

SCHEMA_VERSION = 1
FORMAT = "robot_rl.episode_store"
SOURCES = ("scripted", "teleop", "policy", "intervention")
# Per-step arrays besides the observations; their dtypes on disk.
STEP_FIELDS = {
    "action": np.float32,
    "reward": np.float32,
    "terminated": np.bool_,
    "truncated": np.bool_,
    "is_intervention": np.bool_,
    "timestamp": np.float64,
}
EPISODE_FIELDS = {"episode_ends": np.int64, "success": np.bool_, "source": np.int8, "start_time": np.float64}
COMMIT_FILE, JSONL_FILE, LOCK_FILE = "commit.json", "meta/episodes.jsonl", "writer.lock"
_TMP_SUFFIX = ".rrtmp"
LABELS_DIR = "labels"  # label sets: robot_rl.data.labels
_CHUNK_BYTES = 1 << 18
Verify = Literal["none", "quick", "full"]


class StoreError(ValueError):
    """The store is missing, corrupt or inconsistent, does not match what the caller expects, or got bad input."""


@dataclass(frozen=True)
class StoreSchema:
    """What every episode of a store holds.

    ``obs``: observation key -> (shape, dtype name), e.g. ``{"state": ((7,), "float32"), "front": ((64, 64, 3),
    "uint8")}``. ``action_dim``: A, length of the executed action. ``control_hz``: control rate (Hz).
    ``action_semantics``: free text, e.g. "ee delta xyz, rpy in the reset frame, gripper; all in [-1, 1]".
    """

    obs: Mapping[str, tuple[tuple[int, ...], str]]
    action_dim: int
    control_hz: float
    action_semantics: str = ""
    version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        obs = {str(k): (tuple(int(d) for d in shape), np.dtype(dt).name) for k, (shape, dt) in self.obs.items()}
        for k in obs:
            if not k or "/" in k or k.startswith(".") or k in STEP_FIELDS:
                raise StoreError(f"observation key {k!r} is not allowed (empty, has '/', or clashes with data/{k})")
        if int(self.action_dim) < 1 or not float(self.control_hz) > 0:
            raise StoreError(f"need action_dim >= 1 and control_hz > 0, got {self.action_dim}, {self.control_hz}")
        object.__setattr__(self, "obs", obs)
        object.__setattr__(self, "action_dim", int(self.action_dim))
        object.__setattr__(self, "control_hz", float(self.control_hz))

    @classmethod
    def from_spaces(
        cls, observation_space: Any, action_space: Any, control_hz: float, action_semantics: str = ""
    ) -> StoreSchema:
        """Schema of an env satisfying the contract (``spaces.Dict`` observations, flat float32 ``Box`` actions)."""
        obs = {k: (sp.shape, np.dtype(sp.dtype).name) for k, sp in observation_space.spaces.items()}
        return cls(obs, int(np.prod(action_space.shape)), control_hz, action_semantics)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "schema_version": self.version,
            "control_hz": self.control_hz,
            "action_dim": self.action_dim,
            "action_semantics": self.action_semantics,
            "sources": list(SOURCES),
            "observations": {k: {"shape": list(s), "dtype": d} for k, (s, d) in self.obs.items()},
            "time_unit": "s",
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> StoreSchema:
        if d.get("format") != FORMAT:
            raise StoreError(f"root attributes: format {d.get('format')!r} is not {FORMAT!r}")
        obs = {k: (tuple(v["shape"]), v["dtype"]) for k, v in d["observations"].items()}
        return cls(obs, d["action_dim"], d["control_hz"], d.get("action_semantics", ""), d["schema_version"])

    def mismatches(self, found: StoreSchema) -> list[str]:
        """One line per difference between this (expected) schema and ``found`` (the store's), naming the key."""
        out = []
        for name in ("version", "action_dim", "control_hz", "action_semantics"):
            if getattr(self, name) != getattr(found, name):
                out.append(f"{name}: expected {getattr(self, name)!r}, store has {getattr(found, name)!r}")
        for k in sorted(set(self.obs) | set(found.obs)):
            want, got = self.obs.get(k), found.obs.get(k)
            if want != got:
                out.append(f"observation {k!r}: expected {_spec(want)}, store has {_spec(got)}")
        return out


def _spec(s: tuple[tuple[int, ...], str] | None) -> str:
    return "nothing" if s is None else f"shape {s[0]} dtype {s[1]}"


def _write_atomic(path: Path, data: bytes, durable: bool, suffix: str = _TMP_SUFFIX) -> None:
    """Replace ``path`` with ``data`` whole: any reader (or a crash) sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}{suffix}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _take_flock(path: Path, busy: str) -> int | None:
    """Open ``path`` (created if absent) and hold an exclusive ``flock`` on it: the descriptor to close to release
    it (None without fcntl). Raises :class:`StoreError` with ``busy`` when another process holds it."""
    if fcntl is None:
        return None
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(busy) from None
    return fd


class _AtomicLocalStore(LocalStore):
    """A zarr LocalStore whose every write (chunk or metadata) replaces the file whole."""

    durable = False

    async def set(self, key: str, value: Any) -> None:
        if not self._is_open:
            await self._open()
        self._check_writable()
        await asyncio.to_thread(_write_atomic, self.root / key, value.to_bytes(), self.durable)


def _layout(schema: StoreSchema) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Array path -> (row shape, dtype). ``data/*`` arrays have one row per step, ``meta/*`` one per episode."""
    out = {f"data/{k}": (s, np.dtype(d)) for k, (s, d) in schema.obs.items()}
    out.update(
        {f"data/{k}": ((schema.action_dim,) if k == "action" else (), np.dtype(d)) for k, d in STEP_FIELDS.items()}
    )
    out.update({f"meta/{k}": ((), np.dtype(d)) for k, d in EPISODE_FIELDS.items()})
    out.update({f"meta/final_obs/{k}": (s, np.dtype(d)) for k, (s, d) in schema.obs.items()})
    return out


def _is_image(row_shape: tuple[int, ...], dtype: np.dtype) -> bool:
    return dtype == np.uint8 and len(row_shape) == 3


def _check_array(name: str, x: Any, shape: tuple[int, ...], dtype: Any, exact: bool = False) -> np.ndarray:
    """``x`` as a contiguous array of ``shape``/``dtype``; floats must be finite. ``exact=False`` lets real numbers be
    cast to a float ``dtype``; otherwise the dtype must match."""
    x, want = np.asarray(x), np.dtype(dtype)
    if x.shape != tuple(shape):
        raise StoreError(f"{name}: shape {x.shape}, expected {tuple(shape)}")
    if x.dtype != want:
        if exact or want.kind != "f" or x.dtype.kind not in "fiu":
            raise StoreError(f"{name}: dtype {x.dtype}, expected {want}")
        x = x.astype(want)
    if want.kind == "f" and not np.all(np.isfinite(x)):
        bad = np.flatnonzero(~np.isfinite(x.reshape(-1)))
        raise StoreError(
            f"{name}: {len(bad)} non-finite value(s), first at flat index {bad[0]} ({x.reshape(-1)[bad[0]]})"
        )
    return np.ascontiguousarray(x)


def next_observations(
    obs: Mapping[str, np.ndarray], final_obs: Mapping[str, np.ndarray], episode_ends: np.ndarray
) -> dict[str, np.ndarray]:
    """Next observation of every row of a block of whole episodes (as returned by :meth:`EpisodeStore.read_all`).

    ``obs``: {key: (n, ...)}; ``final_obs``: {key: (m, ...)}; ``episode_ends``: (m,) exclusive ends within the block
    (last == n). Returns {key: (n, ...)}: row t + 1 inside an episode, the episode's final_obs at its last row.
    """
    last = np.asarray(episode_ends, dtype=np.int64) - 1
    out = {}
    for k, x in obs.items():
        nxt = np.empty_like(x)
        nxt[:-1] = x[1:]
        nxt[last] = final_obs[k]
        out[k] = nxt
    return out


class EpisodeStore:
    """Append-only, crash-safe store of whole episodes. Build with :meth:`create` or :meth:`open`."""

    def __init__(self, root: Path, writable: bool, durable: bool):
        self.root, self.writable, self.durable = root, writable, durable
        self._lock_fd: int | None = None
        self._zstore: LocalStore | None = None
        self._arrays: dict[str, zarr.Array] = {}
        self.schema: StoreSchema | None = None
        self._commit: dict[str, int] = {"episodes": 0, "steps": 0, "jsonl_bytes": 0}
        self._meta: dict[str, np.ndarray] = {k: np.zeros(0, d) for k, d in EPISODE_FIELDS.items()}
        self._text: list[dict[str, Any]] = []

    # ---------------------------------------------------------------- opening
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        schema: StoreSchema,
        *,
        image_chunk: int = 32,
        durable: bool = False,
        overwrite: bool = False,
    ) -> EpisodeStore:
        """Create an empty store at ``path`` and return it open for writing.

        ``image_chunk``: camera frames per chunk. Raises :class:`StoreError` if a committed store is already there,
        unless ``overwrite``. A crash during creation leaves no commit record, so nothing half-made is ever opened.
        """
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        ours = {"zarr.json", "data", "meta", COMMIT_FILE, LOCK_FILE, LABELS_DIR}
        if foreign := sorted(c.name for c in root.iterdir() if c.name not in ours):
            raise StoreError(
                f"{root}: not an episode store and not empty ({', '.join(foreign[:5])}); refusing to delete anything"
            )
        self = cls(root, writable=True, durable=durable)
        self._take_lock()
        try:
            if (root / COMMIT_FILE).exists() and not overwrite:  # checked under the lock
                raise StoreError(f"{root}: a store already exists (pass overwrite=True to replace it)")
            (root / COMMIT_FILE).unlink(missing_ok=True)  # stop being a store before anything else goes
            for child in root.iterdir():
                if child.name != LOCK_FILE:
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
            self._zstore = self._make_zstore()
            zarr.create_group(self._zstore, attributes={"robot_rl": schema.to_json()})
            for name, (row, dtype) in _layout(schema).items():
                row_bytes = max(1, dtype.itemsize * int(np.prod(row)))
                frames = image_chunk if _is_image(row, dtype) else _CHUNK_BYTES // row_bytes
                zarr.create_array(
                    self._zstore,
                    name=name,
                    shape=(0, *row),
                    dtype=dtype,
                    chunks=(int(np.clip(frames, 1, 16384)), *(max(1, d) for d in row)),
                    compressors=[ZstdCodec(level=3), Crc32cCodec()],
                    fill_value=0,
                )
            _write_atomic(root / JSONL_FILE, b"", durable)
            self._write_commit({"episodes": 0, "steps": 0, "jsonl_bytes": 0}, schema)
            self._load(schema, "quick")
        except BaseException:
            self.close()
            raise
        return self

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        mode: Literal["r", "a"] = "r",
        *,
        schema: StoreSchema | None = None,
        verify: Verify = "quick",
        durable: bool = False,
        image_chunk: int = 32,
    ) -> EpisodeStore:
        """Open a store for reading (``mode="r"``) or appending (``"a"``; created from ``schema`` if absent).

        ``schema``: what the caller expects; any difference raises :class:`StoreError` naming the key.
        ``verify``: "quick" checks structure, commit record, episode table and chunk presence and decodes the last
        chunk of every array; "full" decodes every committed chunk (checksums included); "none" skips both.
        """
        root = Path(path)
        if mode == "a" and not (root / COMMIT_FILE).exists():
            if schema is None:
                raise StoreError(f"{root}: no store to append to; pass schema= to create one")
            if (root / "data" / "action" / "c").exists():
                raise StoreError(f"{root}: holds episode data but no {COMMIT_FILE}; refusing to overwrite it")
            return cls.create(root, schema, image_chunk=image_chunk, durable=durable)
        if mode not in ("r", "a"):
            raise ValueError(f"mode={mode!r} must be 'r' or 'a'")
        self = cls(root, writable=mode == "a", durable=durable)
        try:
            if self.writable:
                self._take_lock()
                for stale in root.rglob(f"*{_TMP_SUFFIX}"):  # temp files of a killed writer
                    stale.unlink(missing_ok=True)
            self._zstore = self._make_zstore()
            self._load(schema, verify)
        except BaseException:
            self.close()
            raise
        return self

    def _make_zstore(self) -> LocalStore:
        if not self.writable:
            return LocalStore(self.root, read_only=True)
        zstore = _AtomicLocalStore(self.root)
        zstore.durable = self.durable
        return zstore

    def _take_lock(self) -> None:
        self._lock_fd = _take_flock(
            self.root / LOCK_FILE, f"{self.root}: another process is writing to this store (one writer at a time)"
        )

    def close(self) -> None:
        """Release the writer lock (readers hold nothing)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> EpisodeStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _load(self, expected: StoreSchema | None, verify: Verify) -> None:
        commit = self._read_commit()
        try:
            attrs = zarr.open_group(self._zstore, mode="r").attrs["robot_rl"]
            found = StoreSchema.from_json(attrs)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"{self.root}: root group or its schema attributes unreadable: {exc!r}") from exc
        if found.version != SCHEMA_VERSION:
            raise StoreError(
                f"{self.root}: schema_version: store has {found.version}, this code reads {SCHEMA_VERSION}"
            )
        if expected is not None and (diff := expected.mismatches(found)):
            raise StoreError(f"{self.root}: schema mismatch: " + "; ".join(diff))
        self.schema = found
        self._open_arrays()
        self._load_snapshot(commit)
        if verify != "none" and (problems := self._problems(deep=verify == "full")):
            more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
            raise StoreError(f"{self.root}: " + "; ".join(problems[:5]) + more)

    def _read_commit(self) -> dict[str, int]:
        path = self.root / COMMIT_FILE
        try:
            rec = json.loads(path.read_bytes())
            commit = {k: int(rec[k]) for k in ("episodes", "steps", "jsonl_bytes")}
        except FileNotFoundError:
            raise StoreError(
                f"{self.root}: no {COMMIT_FILE}: not an episode store, or its creation never finished"
            ) from None
        except Exception as exc:
            raise StoreError(f"{path}: unreadable commit record: {exc!r}") from exc
        if min(commit.values()) < 0:
            raise StoreError(f"{path}: negative count in commit record {commit}")
        return commit

    def _write_commit(self, commit: dict[str, int], schema: StoreSchema) -> None:
        rec = {**commit, "format": FORMAT, "schema_version": schema.version, "time": time.time()}
        _write_atomic(self.root / COMMIT_FILE, json.dumps(rec).encode(), self.durable)

    def _open_arrays(self) -> None:
        arrays = {}
        for name, (row, dtype) in _layout(self.schema).items():
            try:
                arr = zarr.open_array(self._zstore, path=name, mode="r+" if self.writable else "r")
            except Exception as exc:
                raise StoreError(f"{name}: cannot open array: {exc!r}") from exc
            if arr.dtype != dtype or tuple(arr.shape[1:]) != row:
                raise StoreError(f"{name}: dtype {arr.dtype} rows {tuple(arr.shape[1:])}, schema says {dtype} {row}")
            arrays[name] = arr.with_config({"write_empty_chunks": True}) if self.writable else arr
        self._arrays = arrays

    def _load_snapshot(self, commit: dict[str, int]) -> None:
        """Read the (small) per-episode tables of ``commit`` into memory."""
        e = commit["episodes"]
        meta = {k: self._read(f"meta/{k}", 0, e) for k in EPISODE_FIELDS}
        path, nbytes = self.root / JSONL_FILE, commit["jsonl_bytes"]
        try:
            with open(path, "rb") as f:
                raw = f.read(nbytes)
        except OSError as exc:
            raise StoreError(f"{JSONL_FILE}: unreadable: {exc!r}") from exc
        if len(raw) < nbytes:
            raise StoreError(f"{JSONL_FILE}: {len(raw)} bytes, shorter than the committed {nbytes}")
        lines = raw.split(b"\n")[:-1] if raw else []
        try:
            text = [json.loads(line) for line in lines]
            ok = len(text) == e and all(t["episode"] == i for i, t in enumerate(text))
        except Exception as exc:
            raise StoreError(f"{JSONL_FILE}: unparsable line: {exc!r}") from exc
        if not ok:
            raise StoreError(f"{JSONL_FILE}: {len(text)} committed lines do not number episodes 0..{e - 1}")
        self._commit, self._meta, self._text = dict(commit), meta, text

    def refresh(self) -> int:
        """Pick up episodes committed by the writer since this reader opened. Returns how many are new."""
        if self.writable:
            return 0
        commit = self._read_commit()
        if commit["episodes"] < len(self):
            raise StoreError(
                f"{self.root}: commit record went back from {len(self)} to {commit['episodes']} "
                "episodes (store replaced?)"
            )
        if commit == self._commit:
            return 0
        old = len(self)
        self._open_arrays()  # array shapes have grown
        self._load_snapshot(commit)
        return len(self) - old

    # ---------------------------------------------------------------- checks
    def validate(self, deep: bool = True) -> list[str]:
        """Problems with the committed data, one line each naming the array and episodes; empty if all is well.

        ``deep`` decodes every committed chunk (checksums included); otherwise only the last chunk of each array.
        """
        return self._problems(deep)

    def _problems(self, deep: bool) -> list[str]:
        out = []
        ends, n = self._meta["episode_ends"], self.num_steps
        lengths = np.diff(ends, prepend=0)
        if np.any(lengths <= 0):
            i = int(np.flatnonzero(lengths <= 0)[0])
            out.append(f"meta/episode_ends: not increasing at episode {i} ({ends[i - 1] if i else 0} -> {ends[i]})")
        if len(ends) and ends[-1] != n:
            out.append(f"meta/episode_ends: last end {ends[-1]} != committed steps {n}")
        if len(ends) == 0 and n:
            out.append(f"{COMMIT_FILE}: {n} steps but no episodes")
        if np.any((self._meta["source"] < 0) | (self._meta["source"] >= len(SOURCES))):
            i = int(np.flatnonzero((self._meta["source"] < 0) | (self._meta["source"] >= len(SOURCES)))[0])
            out.append(f"meta/source: episode {i} has code {self._meta['source'][i]}, not in 0..{len(SOURCES) - 1}")
        for name, arr in self._arrays.items():
            need = n if name.startswith("data/") else len(self)
            if arr.shape[0] < need:
                out.append(f"{name}: {arr.shape[0]} rows, shorter than the committed {need}")
                continue
            c = arr.chunks[0]
            nchunks = -(-need // c)
            for j in range(nchunks):
                a, b = j * c, min(need, (j + 1) * c)
                key = arr.metadata.encode_chunk_key((j,) + (0,) * (arr.ndim - 1))
                if not (self.root / name / key).is_file():
                    out.append(f"{name}: chunk {key} missing ({self._where(name, a, b)})")
                elif deep or j == nchunks - 1:
                    try:
                        arr[a:b]
                    except Exception as exc:
                        out.append(f"{name}: chunk {key} corrupt ({self._where(name, a, b)}): {exc}")
        return out

    def _where(self, name: str, a: int, b: int) -> str:
        """Human description of rows [a, b) of array ``name``."""
        if name.startswith("data/"):
            e0, e1 = np.searchsorted(self._meta["episode_ends"], [a, max(a, b - 1)], side="right")
            return f"steps {a}..{b - 1}, " + (f"episode {e0}" if e0 == e1 else f"episodes {e0}..{e1}")
        return f"episode {a}" if b - a == 1 else f"episodes {a}..{b - 1}"

    def _read(self, name: str, a: int, b: int) -> np.ndarray:
        try:
            return self._arrays[name][a:b]
        except Exception as exc:
            raise StoreError(f"{name}: cannot read {self._where(name, a, b)}: {exc}") from exc

    # ---------------------------------------------------------------- writing
    def append_episode(
        self,
        obs: Mapping[str, np.ndarray],
        final_obs: Mapping[str, np.ndarray],
        action: np.ndarray,
        reward: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        is_intervention: np.ndarray,
        timestamp: np.ndarray,
        *,
        success: bool,
        source: str,
        task: str = "",
        notes: str = "",
        start_time: float | None = None,
    ) -> int:
        """Append one whole episode of T steps atomically; returns its index. Validates everything first.

        ``obs``: {key: (T, *shape)} observations before each step; ``final_obs``: {key: shape}, the observation after
        the last step. ``action`` (T, A) executed actions; ``reward`` (T,); ``terminated``/``truncated``/
        ``is_intervention`` (T,) bool, with the end flags set on the last step only (mark a recording stopped by
        hand as truncated); ``timestamp`` (T,) seconds, non-decreasing. ``source``: one of SOURCES.
        ``start_time``: unix seconds; defaults to now minus the episode's duration.
        """
        if not self.writable:
            raise StoreError(f"{self.root}: opened read-only")
        rows, ep = self._validated(obs, final_obs, action, reward, terminated, truncated, is_intervention, timestamp)
        if source not in SOURCES:
            raise StoreError(f"source={source!r} is not one of {', '.join(SOURCES)}")
        if not isinstance(success, (bool, np.bool_)) or not isinstance(task, str) or not isinstance(notes, str):
            raise StoreError("success must be a bool, task and notes str")
        ts = rows["data/timestamp"]
        start = time.time() - float(ts[-1] - ts[0]) if start_time is None else start_time
        e, n, t = len(self), self.num_steps, len(ts)
        ep.update(
            {
                "meta/episode_ends": np.int64(n + t),
                "meta/success": bool(success),
                "meta/source": np.int8(SOURCES.index(source)),
                "meta/start_time": _check_array("start_time", start, (), np.float64),
            }
        )
        for name, x in rows.items():
            self._write_rows(name, n, x)
        for name, x in ep.items():
            self._write_rows(name, e, np.asarray(x, dtype=self._arrays[name].dtype)[None])
        line = (json.dumps({"episode": e, "task": task, "notes": notes}, ensure_ascii=False) + "\n").encode()
        nbytes = self._commit["jsonl_bytes"]
        with open(self.root / JSONL_FILE, "r+b") as f:
            f.truncate(nbytes)  # drop what a killed append left
            f.seek(nbytes)
            f.write(line)
            if self.durable:
                f.flush()
                os.fsync(f.fileno())
        commit = {"episodes": e + 1, "steps": n + t, "jsonl_bytes": nbytes + len(line)}
        self._write_commit(commit, self.schema)  # the episode exists from here on
        self._commit = commit
        for k in EPISODE_FIELDS:
            self._meta[k] = np.append(self._meta[k], ep[f"meta/{k}"]).astype(EPISODE_FIELDS[k])
        self._text.append({"episode": e, "task": task, "notes": notes})
        return e

    def _write_rows(self, name: str, at: int, x: np.ndarray) -> None:
        arr = self._arrays[name]
        if arr.shape[0] < at + len(x):
            arr.resize((at + len(x), *arr.shape[1:]))  # only ever grows
        arr[at : at + len(x)] = x

    def _validated(
        self,
        obs: Mapping[str, Any],
        final_obs: Mapping[str, Any],
        action: Any,
        reward: Any,
        terminated: Any,
        truncated: Any,
        is_intervention: Any,
        timestamp: Any,
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        s = self.schema
        for what, d in (("obs", obs), ("final_obs", final_obs)):
            if set(d) != set(s.obs):
                raise StoreError(
                    f"{what}: keys {sorted(d)} != schema keys {sorted(s.obs)} (missing "
                    f"{sorted(set(s.obs) - set(d))}, extra {sorted(set(d) - set(s.obs))})"
                )
        t = int(np.shape(action)[0]) if np.ndim(action) else 0
        if t < 1:
            raise StoreError(f"action: shape {np.shape(action)}, expected (T >= 1, {s.action_dim})")
        rows, ep = {}, {}
        for k, (shape, dt) in s.obs.items():
            rows[f"data/{k}"] = _check_array(f"obs[{k!r}]", obs[k], (t, *shape), dt, exact=True)
            ep[f"meta/final_obs/{k}"] = _check_array(f"final_obs[{k!r}]", final_obs[k], shape, dt, exact=True)
        given = {
            "action": action,
            "reward": reward,
            "terminated": terminated,
            "truncated": truncated,
            "is_intervention": is_intervention,
            "timestamp": timestamp,
        }
        for k, dt in STEP_FIELDS.items():
            shape = (t, s.action_dim) if k == "action" else (t,)
            rows[f"data/{k}"] = _check_array(k, given[k], shape, dt, exact=dt is np.bool_)
        done = rows["data/terminated"] | rows["data/truncated"]
        if done[:-1].any() or not done[-1]:
            raise StoreError(
                f"terminated/truncated must be set on the last step only (set at steps "
                f"{np.flatnonzero(done).tolist()} of {t}); mark a recording stopped by hand as truncated"
            )
        if (back := np.flatnonzero(np.diff(rows["data/timestamp"]) < 0)).size:
            raise StoreError(f"timestamp: decreases at step {int(back[0]) + 1}")
        return rows, ep

    # ---------------------------------------------------------------- reading
    def __len__(self) -> int:
        return self._commit["episodes"]

    @property
    def num_steps(self) -> int:
        return self._commit["steps"]

    @property
    def episode_ends(self) -> np.ndarray:
        """(E,) int64 exclusive end step of each committed episode."""
        return self._meta["episode_ends"].copy()

    def __repr__(self) -> str:
        return (
            f"EpisodeStore({str(self.root)!r}, episodes={len(self)}, steps={self.num_steps}, writable={self.writable})"
        )

    def _index(self, i: int) -> int:
        e = len(self)
        if not -e <= i < e:
            raise IndexError(f"episode {i} out of range for {e} episodes")
        return i % e

    def metadata(self, i: int) -> dict[str, Any]:
        """Episode ``i``'s metadata: success, source, task, notes, start_time (unix s), length, first_step."""
        i = self._index(i)
        m, first = self._meta, int(self._meta["episode_ends"][i - 1]) if i else 0
        return {
            "episode": i,
            "success": bool(m["success"][i]),
            "source": SOURCES[int(m["source"][i])],
            "task": self._text[i]["task"],
            "notes": self._text[i]["notes"],
            "start_time": float(m["start_time"][i]),
            "length": int(m["episode_ends"][i]) - first,
            "first_step": first,
        }

    def episode_of(self, step: int) -> int:
        """Index of the episode holding global step ``step`` (0 <= step < num_steps)."""
        if not 0 <= step < self.num_steps:
            raise IndexError(f"step {step} out of range for {self.num_steps} steps")
        return int(np.searchsorted(self._meta["episode_ends"], step, side="right"))

    def step(self, step: int) -> dict[str, Any]:
        """Transition at global ``step``: obs and next_obs ({key: shape}), action (A,), reward, terminated,
        truncated, is_intervention, timestamp (s), episode, t (index within the episode)."""
        e = self.episode_of(step)
        first, end = (int(self._meta["episode_ends"][e - 1]) if e else 0), int(self._meta["episode_ends"][e])
        keys = list(self.schema.obs)
        out: dict[str, Any] = {"obs": {k: self._read(f"data/{k}", step, step + 1)[0] for k in keys}}
        out["next_obs"] = {
            k: (
                self._read(f"data/{k}", step + 1, step + 2)
                if step + 1 < end
                else self._read(f"meta/final_obs/{k}", e, e + 1)
            )[0]
            for k in keys
        }
        out.update({k: self._read(f"data/{k}", step, step + 1)[0] for k in STEP_FIELDS})
        out.update(episode=e, t=step - first)
        return out

    def step_field(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """One per-step field (``action``, ``reward``, ``terminated``, ``truncated``, ``is_intervention``,
        ``timestamp``) of episodes [start, stop), concatenated: a cheap read, no observations."""
        if name not in STEP_FIELDS:
            raise KeyError(f"{name!r} is not a per-step field; valid: {', '.join(STEP_FIELDS)}")
        stop = len(self) if stop is None else stop
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"episodes [{start}, {stop}) out of range for {len(self)} episodes")
        ends = self._meta["episode_ends"]
        return self._read(f"data/{name}", int(ends[start - 1]) if start else 0, int(ends[stop - 1]) if stop else 0)

    def read_all(self, start: int = 0, stop: int | None = None) -> dict[str, Any]:
        """Episodes [start, stop) in bulk, one read per array (for filling a replay buffer).

        Returns obs {key: (n, ...)}, final_obs {key: (m, ...)}, action (n, A), reward, terminated, truncated,
        is_intervention, timestamp (n,), episode_ends (m,) relative to the block (use :func:`next_observations`),
        first_step (global index of row 0), and per episode success (m,) bool, source (m,) str, task, notes (lists),
        start_time (m,) unix s.
        """
        stop = len(self) if stop is None else stop
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"episodes [{start}, {stop}) out of range for {len(self)} episodes")
        ends = self._meta["episode_ends"]
        a, b = (int(ends[start - 1]) if start else 0), (int(ends[stop - 1]) if stop else 0)
        keys = list(self.schema.obs)
        out: dict[str, Any] = {
            "obs": {k: self._read(f"data/{k}", a, b) for k in keys},
            "final_obs": {k: self._read(f"meta/final_obs/{k}", start, stop) for k in keys},
        }
        out.update({k: self._read(f"data/{k}", a, b) for k in STEP_FIELDS})
        out.update(
            episode_ends=ends[start:stop] - a,
            first_step=a,
            success=self._meta["success"][start:stop].copy(),
            source=np.array([SOURCES[c] for c in self._meta["source"][start:stop]], dtype=object),
            start_time=self._meta["start_time"][start:stop].copy(),
            task=[x["task"] for x in self._text[start:stop]],
            notes=[x["notes"] for x in self._text[start:stop]],
        )
        return out

    def iter_episodes(
        self, start: int = 0, stop: int | None = None, batch: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Yield :meth:`episode` dicts for episodes [start, stop), reading ``batch`` episodes per bulk read (None:
        as many as fill about 64 MiB of decoded rows, so each read decodes whole chunks rather than slivers)."""
        stop = len(self) if stop is None else stop
        if batch is None:
            row_bytes = sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in self.schema.obs.values())
            mean_len = max(1.0, self.num_steps / max(1, len(self)))
            batch = int(np.clip((64 << 20) / (row_bytes + 32) / mean_len, 1, 4096))
        for b0 in range(start, stop, batch):
            block = self.read_all(b0, min(stop, b0 + batch))
            lo = 0
            for j, hi in enumerate(block["episode_ends"]):
                ep = {
                    "obs": {k: v[lo:hi] for k, v in block["obs"].items()},
                    "final_obs": {k: v[j] for k, v in block["final_obs"].items()},
                }
                ep.update({k: block[k][lo:hi] for k in STEP_FIELDS})
                ep["metadata"] = self.metadata(b0 + j)
                lo = hi
                yield ep

    def episode(self, i: int) -> dict[str, Any]:
        """Episode ``i``: obs {key: (T, ...)}, final_obs {key: shape}, action (T, A), reward, terminated, truncated,
        is_intervention, timestamp (T,), metadata (see :meth:`metadata`)."""
        i = self._index(i)
        return next(self.iter_episodes(i, i + 1))

    def info(self) -> dict[str, Any]:
        """Summary: episodes, steps, episode length stats, success rate, counts per source and task, fraction of
        intervention steps, size on disk (bytes, sum of file sizes)."""
        lengths = np.diff(self._meta["episode_ends"], prepend=0)
        e = len(self)
        interventions = int(self._read("data/is_intervention", 0, self.num_steps).sum()) if e else 0
        size = sum(f.stat().st_size for f in self.root.rglob("*") if f.is_file())
        return {
            "path": str(self.root),
            "episodes": e,
            "steps": self.num_steps,
            "length": (
                {
                    "min": int(lengths.min()),
                    "max": int(lengths.max()),
                    "mean": float(lengths.mean()),
                    "median": float(np.median(lengths)),
                }
                if e
                else None
            ),
            "success_rate": float(self._meta["success"].mean()) if e else None,
            "sources": {s: int(np.sum(self._meta["source"] == j)) for j, s in enumerate(SOURCES)},
            "tasks": dict(Counter(x["task"] for x in self._text)),
            "intervention_fraction": interventions / self.num_steps if e else None,
            "control_hz": self.schema.control_hz,
            "schema_version": self.schema.version,
            "size_bytes": size,
        }

    # ---------------------------------------------------------------- labels
    @property
    def label_sets(self) -> LabelSets:
        """This store's label sets (:class:`robot_rl.data.labels.LabelSets`)."""
        from robot_rl.data.labels import LabelSets  # it builds on this module's file helpers

        return LabelSets(self.root, self.durable)

    def label_names(self) -> list[str]:
        """Names of the label sets with a commit record, sorted."""
        return self.label_sets.names()

    def label_info(self, name: str) -> dict[str, Any]:
        """``{"name", "per_step", "columns": {col: {"shape", "dtype"}}, "meta", "rows"}`` of a committed label set.
        Raises :class:`StoreError` when there is none called ``name``."""
        return self.label_sets.info(name)

    def read_labels(self, name: str) -> dict[str, np.ndarray]:
        """Every committed row of label set ``name``: {column: (rows, *shape)}, checksums verified; a per-step set
        covers steps ``[0, rows)``."""
        return self.label_sets.read(name)

    def append_labels(
        self, name: str, columns: Mapping[str, Any], *, per_step: bool, meta: Mapping[str, Any] | None = None
    ) -> int:
        """Append rows to label set ``name`` (created on first use) atomically; returns its committed row count.

        ``columns``: {column: (n, *shape)} numbers or bools, same n >= 1. ``per_step``: one row per store step,
        continuing the set and stopping at an episode end of this store's snapshot. ``meta``: fixed at creation.
        Needs no episode writer lock (see :meth:`robot_rl.data.labels.LabelSets.append`)."""
        return self.label_sets.append(
            name,
            columns,
            per_step=per_step,
            meta=meta,
            episode_ends=self._meta["episode_ends"],
            num_steps=self.num_steps,
        )


def __getattr__(name: str) -> Any:
    """The label-set names that live in :mod:`robot_rl.data.labels`, still importable from here."""
    if name in ("LABEL_FORMAT", "LABEL_VERSION", "LabelSets"):
        from robot_rl.data import labels

        return getattr(labels, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
