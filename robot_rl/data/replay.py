"""Replay buffer and the demo/online batch mixer.

Each observation is stored once. The next observation of slot ``i`` is slot ``i + 1`` while the episode goes on;
when an episode ends (terminated or truncated) its true final observation is kept in a side table, so bootstrapping
at a time-limit cut uses the real last state rather than the next episode's first. Writes are sequential in a ring,
so only the newest slot can lack its successor; sampling never returns it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from gymnasium import spaces


class ReplayBuffer:
    """Preallocated ring buffer of transitions for a dict observation space.

    ``add()`` takes one transition; ``sample(n, rng)`` returns a batch of tensors on ``device``:
    ``obs``/``next_obs`` (dicts of ``(n, ...)``), ``action`` (n, A), ``reward`` (n,), ``terminated`` (n,),
    ``truncated`` (n,), ``is_intervention`` (n,), and with ``mc_discount`` ``mc_return`` (n,): the discounted return
    from each step to its episode's end (Cal-QL's lower bound), known for episodes added whole
    (:meth:`add_episode`; -inf, "no bound", for rows added one by one). Safe to call ``add`` and ``sample`` from
    different threads.

    With ``n_step`` > 1 each row looks up to ``n_step`` steps ahead within its episode (and no further than the
    newest complete step): ``reward`` is the ``discount``-discounted sum of the ``k`` rewards, ``next_obs`` the
    observation ``k`` steps on, ``terminated``/``truncated`` whether the episode ended so within them, and the batch
    gains ``discount`` (n,), ``discount ** k``, to bootstrap with.
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_dim: int,
        capacity: int,
        device: str | torch.device = "cpu",
        mc_discount: float | None = None,
        n_step: int = 1,
        discount: float = 0.99,
    ):
        if capacity < 2:
            raise ValueError(f"capacity={capacity} must be >= 2")
        if n_step < 1:
            raise ValueError(f"n_step={n_step} must be >= 1")
        self.n_step, self.discount = int(n_step), float(discount)
        self.capacity, self.device = int(capacity), torch.device(device)
        self.obs = {k: np.zeros((capacity, *s.shape), dtype=s.dtype) for k, s in observation_space.spaces.items()}
        self.action = np.zeros((capacity, action_dim), dtype=np.float32)
        self.reward = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=bool)
        self.truncated = np.zeros(capacity, dtype=bool)
        self.is_intervention = np.zeros(capacity, dtype=bool)
        self.mc_discount = None if mc_discount is None else float(mc_discount)
        self.mc_return = np.full(capacity, -np.inf, dtype=np.float32)
        self.final_next_obs: dict[int, dict[str, np.ndarray]] = {}  # slot -> last observation of its episode
        self._pin = self.device.type == "cuda"
        self.pos = 0  # next slot to write
        self.size = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.size

    @property
    def num_sampleable(self) -> int:
        return self.size - (1 if self._pending() is not None else 0)

    def _pending(self) -> int | None:
        """The newest slot if its next observation is not known yet (episode still running)."""
        if self.size == 0:
            return None
        last = (self.pos - 1) % self.capacity
        return None if (self.terminated[last] or self.truncated[last]) else last

    def add(
        self,
        obs: Mapping[str, np.ndarray],
        action: np.ndarray,
        reward: float,
        terminated: bool,
        truncated: bool,
        next_obs: Mapping[str, np.ndarray],
        is_intervention: bool = False,
    ) -> None:
        """Append one transition. ``next_obs`` is only kept when the episode ends here."""
        with self._lock:
            i = self.pos
            for k, arr in self.obs.items():
                arr[i] = obs[k]
            self.action[i] = action
            self.reward[i] = reward
            self.terminated[i], self.truncated[i] = terminated, truncated
            self.is_intervention[i] = is_intervention
            if self.mc_discount is not None:
                self.mc_return[i] = -np.inf  # no return known for a row added alone
            self.final_next_obs.pop(i, None)
            if terminated or truncated:
                self.final_next_obs[i] = {k: np.array(v, copy=True) for k, v in next_obs.items()}
            self.pos = (i + 1) % self.capacity
            self.size = min(self.size + 1, self.capacity)

    def add_episode(self, episode: Mapping[str, Any]) -> None:
        """Append a whole episode as stored by :class:`~robot_rl.data.store.EpisodeStore` (``obs`` {key: (T, ...)},
        ``final_obs`` {key: ...}, ``action`` (T, A), ``reward``, ``terminated``, ``truncated``, ``is_intervention``
        (T,)). Rows are written in bulk; the result equals ``T`` calls of :meth:`add`. An episode longer than the
        buffer keeps its last ``capacity`` rows."""
        steps = len(episode["action"])
        if steps == 0:
            return
        skip = max(0, steps - self.capacity)
        final_t = steps - 1
        mc = returns_to_go(episode["reward"], self.mc_discount) if self.mc_discount is not None else None
        ends_here = bool(episode["terminated"][final_t]) or bool(episode["truncated"][final_t])
        with self._lock:
            start = (self.pos + skip) % self.capacity  # as if the skipped rows had been written first
            n = steps - skip
            for a, b in ((start, min(start + n, self.capacity)), (0, max(0, start + n - self.capacity))):
                if b <= a:
                    continue
                lo = skip + (a - start if a >= start else self.capacity - start)
                rows = slice(lo, lo + (b - a))
                for k, arr in self.obs.items():
                    arr[a:b] = episode["obs"][k][rows]
                self.action[a:b] = episode["action"][rows]
                self.reward[a:b] = episode["reward"][rows]
                self.terminated[a:b] = episode["terminated"][rows]
                self.truncated[a:b] = episode["truncated"][rows]
                self.is_intervention[a:b] = episode["is_intervention"][rows]
                if mc is not None:
                    self.mc_return[a:b] = mc[rows]
                for slot in range(a, b):
                    self.final_next_obs.pop(slot, None)
            last = (start + n - 1) % self.capacity
            if ends_here:
                self.final_next_obs[last] = {k: np.array(v, copy=True) for k, v in episode["final_obs"].items()}
            self.pos = (start + n) % self.capacity
            self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, Any]:
        """Uniformly sample ``batch_size`` complete transitions."""
        with self._lock:
            pending = self._pending()
            n = self.size - (pending is not None)
            if n <= 0:
                raise RuntimeError("cannot sample from a replay buffer with no complete transition")
            idx = rng.integers(0, n, size=batch_size)
            if pending is not None:
                # Skip the pending slot: valid slots are every slot of [0, size) but `pending`.
                idx = idx + (idx >= pending)
            last, reward, discount = (idx, None, None) if self.n_step == 1 else self._look_ahead(idx, pending)
            done = np.flatnonzero(self.terminated[last] | self.truncated[last])
            nxt = (last + 1) % self.capacity
            batch_obs = {k: self._gather(arr, idx) for k, arr in self.obs.items()}
            next_obs = {k: self._gather(arr, nxt) for k, arr in self.obs.items()}
            for j in done:
                final = self.final_next_obs[int(last[j])]
                for k in next_obs:
                    next_obs[k].numpy()[j] = final[k]  # a numpy copy: torch would split a 48 KiB copy over threads
            out = {
                "obs": batch_obs,
                "next_obs": next_obs,
                "action": self._gather(self.action, idx),
                "reward": self._gather(self.reward, idx) if reward is None else torch.from_numpy(reward),
                "terminated": torch.from_numpy(self.terminated[last].astype(np.float32)),
                "truncated": torch.from_numpy(self.truncated[last].astype(np.float32)),
                "is_intervention": torch.from_numpy(self.is_intervention[idx].astype(np.float32)),
            }
            if discount is not None:
                out["discount"] = torch.from_numpy(discount)
            if self.mc_discount is not None:
                out["mc_return"] = self._gather(self.mc_return, idx)
        return to_device(out, self.device)

    def _look_ahead(self, idx: np.ndarray, pending: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For rows ``idx``: the last slot of each one's ``n_step`` window (its episode's end, or the step before
        the pending one, cut it short), the discounted reward sum over the window and ``discount ** k``."""
        last = idx.copy()
        reward = self.reward[idx].astype(np.float64)
        k = np.ones(len(idx))
        open_ = ~(self.terminated[idx] | self.truncated[idx])  # the window may go on past this step
        for j in range(1, self.n_step):
            cur = (idx + j) % self.capacity
            open_ &= cur != (-1 if pending is None else pending)  # its successor is not known yet
            reward += np.where(open_, self.discount**j * self.reward[cur], 0.0)
            last = np.where(open_, cur, last)
            k += open_
            open_ &= ~(self.terminated[cur] | self.truncated[cur])
        return last, reward.astype(np.float32), (self.discount**k).astype(np.float32)

    def _gather(self, arr: np.ndarray, idx: np.ndarray) -> torch.Tensor:
        """``arr[idx]`` as a CPU tensor; page-locked when the buffer feeds a GPU, so the copy to it is asynchronous.
        (Pinned blocks come from torch's caching host allocator, which reuses a block only once its copy is done.)"""
        out = torch.empty((len(idx), *arr.shape[1:]), dtype=torch.from_numpy(arr[:0]).dtype, pin_memory=self._pin)
        np.take(arr, idx, axis=0, out=out.numpy(), mode="clip")  # indices are in range; "raise" copies via a temp
        return out

    # Checkpointing: plain arrays, saved with safetensors by the caller.
    def state_dict(self) -> dict[str, Any]:
        with self._lock:
            slots = sorted(self.final_next_obs)
            return {
                "obs": {k: v[: self.size].copy() for k, v in self.obs.items()},
                "action": self.action[: self.size].copy(),
                "reward": self.reward[: self.size].copy(),
                "terminated": self.terminated[: self.size].copy(),
                "truncated": self.truncated[: self.size].copy(),
                "is_intervention": self.is_intervention[: self.size].copy(),
                "mc_return": self.mc_return[: self.size].copy(),
                "final_slots": np.asarray(slots, dtype=np.int64),
                "final_next_obs": {
                    k: np.stack([self.final_next_obs[s][k] for s in slots])
                    if slots
                    else np.zeros((0, *v.shape[1:]), v.dtype)
                    for k, v in self.obs.items()
                },
                "pos": self.pos,
                "size": self.size,
            }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        size = int(state["size"])
        if size > self.capacity:
            raise ValueError(f"checkpointed buffer holds {size} transitions, more than capacity {self.capacity}")
        with self._lock:
            for k, v in self.obs.items():
                v[:size] = state["obs"][k]
            for name in ("action", "reward", "terminated", "truncated", "is_intervention"):
                getattr(self, name)[:size] = state[name]
            self.mc_return[:size] = state["mc_return"] if "mc_return" in state else -np.inf
            self.final_next_obs = {
                int(s): {k: np.asarray(state["final_next_obs"][k][j]) for k in self.obs}
                for j, s in enumerate(state["final_slots"])
            }
            self.pos, self.size = int(state["pos"]), size


def returns_to_go(reward: np.ndarray, discount: float) -> np.ndarray:
    """``G_t = r_t + discount * G_{t+1}`` over one episode, ``G_T = 0`` after its last step: ``(T,)`` float32."""
    out = np.empty(len(reward), dtype=np.float64)
    g = 0.0
    for t in range(len(reward) - 1, -1, -1):
        g = float(reward[t]) + discount * g
        out[t] = g
    return out.astype(np.float32)


def to_device(tree: Any, device: torch.device) -> Any:
    """numpy arrays or CPU tensors (possibly nested in dicts) -> torch tensors on ``device`` (asynchronous from
    pinned memory)."""
    if isinstance(tree, dict):
        return {k: to_device(v, device) for k, v in tree.items()}
    t = tree if isinstance(tree, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(tree))
    return t.to(device, non_blocking=True)


def mixed_batches(
    demo: ReplayBuffer | None, online: ReplayBuffer, batch_size: int, demo_fraction: float, rng: np.random.Generator
) -> Iterator[dict[str, Any]]:
    """Endless batches with ``round(batch_size * demo_fraction)`` rows from ``demo`` and the rest from ``online``.

    RLPD's symmetric sampling is ``demo_fraction=0.5``. With no demo buffer (or an empty one) every row is online.
    Each batch also carries ``from_demo`` (B,) float, 1 for the rows drawn from ``demo``.
    """
    if not 0.0 <= demo_fraction <= 1.0:
        raise ValueError(f"demo_fraction={demo_fraction} must lie in [0, 1]")
    while True:
        n_demo = int(round(batch_size * demo_fraction)) if demo is not None and demo.num_sampleable > 0 else 0
        if online.num_sampleable == 0:
            n_demo = batch_size
        parts = []
        if n_demo:
            parts.append(dict(demo.sample(n_demo, rng), from_demo=torch.ones(n_demo, device=demo.device)))
        if batch_size - n_demo:
            n = batch_size - n_demo
            parts.append(dict(online.sample(n, rng), from_demo=torch.zeros(n, device=online.device)))
        yield parts[0] if len(parts) == 1 else _concat(parts)


def _concat(parts: list[Any]) -> Any:
    if isinstance(parts[0], dict):
        return {k: _concat([p[k] for p in parts]) for k in parts[0]}
    return torch.cat(parts, dim=0)
