"""Frozen-trunk feature cache: each stored frame goes through the pretrained trunk once, not once per update.

With a frozen image trunk the map of a stored frame never changes, yet SERL and HIL-SERL recompute it for every
sampled frame of every update (batch 256, two cameras, obs and next obs: ~1000 trunk passes per gradient step).
:class:`FeatureCache` keeps the trunk output per replay-buffer slot instead, as float16 in one preallocated array per
camera, with a ``valid`` mask. An update then costs only the trainable head; a frame is encoded the first time it is
sampled (or eagerly, with :meth:`FeatureCache.fill`), and again only after its slot is overwritten.

Staleness is handled at two levels:

* slot: the replay buffer calls :meth:`FeatureCache.invalidate` for every slot it (over)writes (the ring wrapping
  around, a reloaded checkpoint). A per-slot generation counter makes this safe against a concurrent
  :meth:`FeatureCache.get`: features computed from a frame that was overwritten meanwhile are returned to that caller
  but never stored as valid.
* trunk: the cache remembers the trunk fingerprint (a hash of its weights and cut, see
  :meth:`robot_rl.agents.vision.PretrainedTrunk.fingerprint`); every ``get``/``put`` compares it (memoised, a string
  compare) and a change clears the whole cache.

Bytes per frame and camera: ``C * h * w * 2``: 10,240 for the default ``(320, 4, 4)`` map (stage 6 at 128 px),
14,336 for ``(112, 8, 8)``; a uint8 128x128 frame is 49,152. 100k slots x 2 cameras at the default: 2.0 GB.

Usage (the replay buffer owns the cache; the agent asks it for features instead of images)::

    encoder = build_encoder(obs_space)                      # pretrained, cache on by default
    cache = FeatureCache.for_encoder(encoder, num_slots=buffer.capacity, device=agent.device)

    # ReplayBuffer.add / add_episode, under the buffer's lock, for every slot written:
    cache.invalidate(slots)
    # optional, after loading demos into slots `s` from an episode store (batched trunk passes):
    cache.fill(s, {cam: episode["obs"][cam] for cam in encoder.cameras})

    # learner: sample slot ids, then features for obs (slot i) and next obs (slot i + 1 or the side table)
    feats = cache.get(idx, lambda miss: {c: buffer.obs[c][miss] for c in encoder.cameras})  # {cam: (B, C, h, w)}
    q_in = encoder(batch_obs_state_only, features=feats, augment=True)                       # (B, out_dim)

Final observations of episodes (the replay buffer's side table, one per episode) have no slot of their own: encode
them when the episode is added (``encode_frames`` on the single frame) and keep the float16 map next to the
observation, or give them ids in an extra region of a larger cache (``num_slots = capacity + extra``).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

EncodeFn = Callable[[Mapping[str, Any]], Mapping[str, torch.Tensor]]  # {cam: uint8 (n,H,W,3)} -> {cam: (n,C,h,w)}
ImagesFn = Callable[[np.ndarray], Mapping[str, Any]]  # slot ids (n,) -> {cam: uint8 (n, H, W, 3)}


@torch.no_grad()
def encode_frames(encode_fn: EncodeFn, frames: Mapping[str, Any], batch_size: int = 32,
                  dtype: torch.dtype = torch.float16, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Encode a whole episode's frames in batches: ``{cam: uint8 (T, H, W, 3)}`` -> ``{cam: dtype (T, C, h, w)}``.

    ``frames`` values may be numpy arrays, tensors or lazily read arrays (zarr): only ``batch_size`` frames per
    camera are read and encoded at a time. ``encode_fn`` is e.g. ``ObservationEncoder.encode_images``.
    """
    lengths = {len(v) for v in frames.values()}
    if len(lengths) != 1:
        raise ValueError(f"cameras have different frame counts: { {k: len(v) for k, v in frames.items()} }")
    (t_len,) = lengths
    chunks: dict[str, list[torch.Tensor]] = {k: [] for k in frames}
    for lo in range(0, t_len, batch_size):
        out = encode_fn({k: np.asarray(v[lo:lo + batch_size]) if not isinstance(v, torch.Tensor) else
                         v[lo:lo + batch_size] for k, v in frames.items()})
        for k in frames:
            chunks[k].append(out[k].to(device=device, dtype=dtype))
    if t_len == 0:
        return {k: torch.zeros(0, dtype=dtype, device=device) for k in frames}
    return {k: torch.cat(v, dim=0) for k, v in chunks.items()}


class FeatureCache:
    """Slot id -> trunk feature maps, float16, one preallocated ``(num_slots, C, h, w)`` array per camera.

    ``encode_fn``: ``{cam: uint8 (n, H, W, 3)} -> {cam: float (n, C, h, w)}`` (the frozen trunk);
    ``fingerprint_fn``: ``() -> str`` identifying the trunk weights (must be cheap: memoised). ``batch_size``: frames
    per trunk pass when filling; 32 is the fastest per frame on a CPU (at 256 the activations overflow the caches and
    each frame costs ~1.6x more). Thread-safe: the
    replay buffer may ``invalidate`` from the actor's thread while the learner calls ``get``.
    ``stats`` counts ``hits``, ``misses`` (computed entries) and ``clears`` (fingerprint changes).
    """

    def __init__(self, num_slots: int, feature_shapes: Mapping[str, Sequence[int]], encode_fn: EncodeFn,
                 fingerprint_fn: Callable[[], str], device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float16, batch_size: int = 32):
        if num_slots < 1 or batch_size < 1:
            raise ValueError(f"num_slots={num_slots} and batch_size={batch_size} must be >= 1")
        self.num_slots, self.device, self.dtype = int(num_slots), torch.device(device), dtype
        self.batch_size = int(batch_size)
        self.feature_shapes = {k: tuple(int(d) for d in s) for k, s in feature_shapes.items()}
        self.encode_fn, self.fingerprint_fn = encode_fn, fingerprint_fn
        self.features = {k: torch.zeros((self.num_slots, *s), dtype=dtype, device=self.device)
                         for k, s in self.feature_shapes.items()}
        self.valid = np.zeros(self.num_slots, dtype=bool)
        self.generation = np.zeros(self.num_slots, dtype=np.int64)  # bumped by invalidate()
        self._epoch = 0  # bumped by clear()
        self.fingerprint = fingerprint_fn()
        self.stats = {"hits": 0, "misses": 0, "clears": 0}
        self._lock = threading.Lock()

    @classmethod
    def for_encoder(cls, encoder: Any, num_slots: int, device: str | torch.device | None = None,
                    dtype: torch.dtype = torch.float16, batch_size: int = 32) -> "FeatureCache":
        """A cache for an :class:`~robot_rl.agents.encoders.ObservationEncoder` with a frozen trunk, on the
        encoder's device unless ``device`` says otherwise."""
        if not getattr(encoder, "frozen", False):
            raise ValueError("only a frozen trunk's features can be cached (encoder type 'pretrained')")
        return cls(num_slots, encoder.feature_shapes, encoder.encode_images, encoder.trunk_fingerprint,
                   device=device if device is not None else encoder.device, dtype=dtype, batch_size=batch_size)

    # ------------------------------------------------------------------------------------------------- info
    @property
    def bytes_per_frame(self) -> int:
        """Bytes one slot takes, all cameras together."""
        item = torch.empty((), dtype=self.dtype).element_size()
        return int(sum(np.prod(s) for s in self.feature_shapes.values()) * item)

    def __len__(self) -> int:
        """Number of slots holding valid features."""
        return int(self.valid.sum())

    # ------------------------------------------------------------------------------------------ invalidation
    def invalidate(self, slots: np.ndarray | Sequence[int] | slice) -> None:
        """Forget the features of ``slots`` (int ids or a slice): call whenever the buffer writes those slots."""
        with self._lock:
            self.valid[slots] = False
            self.generation[slots] += 1

    def clear(self) -> None:
        """Forget everything (e.g. the trunk changed)."""
        with self._lock:
            self._clear_locked()

    def _clear_locked(self) -> None:
        self.valid[:] = False
        self.generation += 1
        self._epoch += 1
        self.stats["clears"] += 1

    def sync(self) -> bool:
        """Compare the trunk fingerprint with the one the cache was filled under; clear on a change.
        Returns True when it cleared. ``get`` and ``put`` call this."""
        fp = self.fingerprint_fn()
        with self._lock:
            if fp == self.fingerprint:
                return False
            self.fingerprint = fp
            self._clear_locked()
            return True

    # ----------------------------------------------------------------------------------------------- access
    def get(self, slots: np.ndarray | Sequence[int], images_fn: ImagesFn) -> dict[str, torch.Tensor]:
        """Features of ``slots`` (int array ``(B,)``, repeats allowed): ``{cam: dtype (B, C, h, w)}`` on the cache's
        device. Missing entries are computed in batches of ``batch_size`` from ``images_fn(missing_ids)`` (each id
        once) and stored, unless their slot was invalidated while they were being computed."""
        self.sync()
        slots = np.asarray(slots, dtype=np.int64).reshape(-1)
        if slots.size and (slots.min() < 0 or slots.max() >= self.num_slots):
            raise IndexError(f"slot ids must lie in [0, {self.num_slots}), got [{slots.min()}, {slots.max()}]")
        with self._lock:
            missing = np.unique(slots[~self.valid[slots]])
            gens, epoch = self.generation[missing].copy(), self._epoch
        self.stats["misses"] += int(missing.size)
        self.stats["hits"] += int(slots.size - np.isin(slots, missing).sum())
        fresh = self._compute(missing, images_fn) if missing.size else {}
        rejected = self._store(missing, gens, epoch, fresh) if missing.size else np.zeros(0, dtype=np.int64)
        idx = torch.as_tensor(slots, device=self.device)
        with self._lock:
            out = {k: f.index_select(0, idx) for k, f in self.features.items()}
        if rejected.size:  # overwritten while computing: hand back what was computed from the frames read
            pos = np.flatnonzero(np.isin(slots, rejected))
            src = torch.as_tensor(np.searchsorted(missing, slots[pos]), device=self.device)
            pos_t = torch.as_tensor(pos, device=self.device)
            for k in out:
                out[k][pos_t] = fresh[k][src]
        return out

    def put(self, slots: np.ndarray | Sequence[int], features: Mapping[str, torch.Tensor]) -> None:
        """Store precomputed maps ``{cam: (n, C, h, w)}`` for ``slots`` (n,) and mark them valid (computed by the
        current trunk: the caller vouches for it)."""
        self.sync()
        slots = np.asarray(slots, dtype=np.int64).reshape(-1)
        with self._lock:
            idx = torch.as_tensor(slots, device=self.device)
            for k, f in self.features.items():
                f[idx] = features[k].to(device=self.device, dtype=self.dtype)
            self.valid[slots] = True

    def fill(self, slots: np.ndarray | Sequence[int], frames: Mapping[str, Any]) -> None:
        """Encode ``frames`` ``{cam: uint8 (n, H, W, 3)}`` (arrays, tensors or zarr) in batches and store them for
        ``slots`` (n,): eager filling, e.g. right after a stored episode was loaded into the buffer."""
        slots = np.asarray(slots, dtype=np.int64).reshape(-1)
        self.sync()
        with self._lock:
            gens, epoch = self.generation[slots].copy(), self._epoch
        feats = encode_frames(self.encode_fn, {k: frames[k] for k in self.features}, self.batch_size, self.dtype,
                              self.device)
        self._store(slots, gens, epoch, feats)

    # ------------------------------------------------------------------------------------------------ internals
    @torch.no_grad()
    def _compute(self, ids: np.ndarray, images_fn: ImagesFn) -> dict[str, torch.Tensor]:
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in self.features}
        for lo in range(0, ids.size, self.batch_size):
            out = self.encode_fn(images_fn(ids[lo:lo + self.batch_size]))
            for k in parts:
                parts[k].append(out[k].to(device=self.device, dtype=self.dtype))
        return {k: torch.cat(v, dim=0) for k, v in parts.items()}

    def _store(self, ids: np.ndarray, gens: np.ndarray, epoch: int, feats: Mapping[str, torch.Tensor]) -> np.ndarray:
        """Write ``feats`` rows for ``ids`` whose generation is unchanged; return the ids that were not written."""
        with self._lock:
            if epoch != self._epoch:
                return ids
            ok = self.generation[ids] == gens
            if ok.any():
                rows = torch.as_tensor(np.flatnonzero(ok), device=self.device)
                idx = torch.as_tensor(ids[ok], device=self.device)
                for k, f in self.features.items():
                    f[idx] = feats[k].index_select(0, rows)
                self.valid[ids[ok]] = True
            return ids[~ok]
