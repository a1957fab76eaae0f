"""Messages between actor and learner, and the channel that carries them.

A message is one safetensors blob: named arrays plus a text header holding its ``kind`` and a JSON ``meta``. Decoding
parses that format and nothing else, so a message from a peer can carry tensors but never code: nothing received is
unpickled. The same bytes travel over a local socket (:class:`Channel`) or ROS2 topics (:mod:`hw.ros_transport`);
:mod:`robot_rl.runtime.transport` picks one.

Kinds (actor -> learner): ``hello`` (a new connection: how many episodes the store holds), ``step`` (one
transition), ``episode_end`` (its length, store index, success, source, intervention stats), ``done`` (total steps
reached). A fleet actor answers each collect call with ``collected`` (steps run, what its store holds) and one
``episode`` per episode it filed (the whole episode's arrays). Learner -> actor: ``sync`` (how many episodes the
learner holds and whether it wants raw observations; the actor replays the stored episodes it lacks and its running
episode, then streams), ``weights`` (policy weights and their version = the learner's update count), ``stop``.

:func:`decode` checks each kind's meta against :data:`SCHEMAS` (required keys and their types), so a handler can
read ``msg.meta`` without guarding it; the receiver checks the arrays against what it expects (:func:`check_arrays`:
the learner a step's observations and action, the actor the weights' names, shapes and dtypes). Anything malformed
raises :class:`MessageError`, upon which the receiver drops the connection and the peer reconnects and resyncs.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

MAX_MESSAGE_BYTES = 64 << 20  # larger than any weights blob or pixel transition we send; anything bigger is refused


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# meta value types: name -> (check, what a valid value is)
META_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "count": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "int": (_is_int, "an integer"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "numbers": (
        lambda v: isinstance(v, dict) and all(isinstance(x, (int, float)) for x in v.values()),
        "a mapping of names to numbers",
    ),
}
# per kind: meta key -> type in META_TYPES ("?": optional); keys not listed are ignored
SCHEMAS: dict[str, dict[str, str]] = {
    "hello": {"store_episodes": "count", "store_steps": "count?"},
    "step": {},
    "episode_end": {
        "steps": "count",
        "store_episodes": "count",
        "success": "bool",
        "cut": "bool?",
        "replay": "bool?",
        "source": "str?",
        "notes": "str?",
        "version": "int?",
        "stats": "numbers?",
    },
    "done": {"steps": "count?"},
    "sync": {"episodes": "count", "raw": "bool?"},
    "weights": {"version": "int"},
    "stop": {},
    # a fleet actor (robot_rl/runtime/fleet.py) -> the learner: what one collect call did, then each episode it filed
    "collected": {"steps": "count", "store_episodes": "count", "store_steps": "count", "running": "count"},
    "episode": {"store_episodes": "count", "success": "bool", "source": "str", "cut": "bool", "stats": "numbers?"},
}
KINDS = tuple(SCHEMAS)
ArraySpec = tuple[tuple[int, ...], np.dtype | None]  # a shape and a dtype (None: any)


class MessageError(ValueError):
    """A malformed, oversized or unknown message."""


@dataclass
class Message:
    kind: str
    meta: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def encode(kind: str, meta: Mapping[str, Any] | None = None, arrays: Mapping[str, Any] | None = None) -> bytes:
    """``kind``, a JSON-able ``meta`` and named arrays -> bytes (safetensors). Torch tensors are moved to numpy."""
    if kind not in KINDS:
        raise MessageError(f"unknown message kind {kind!r}; valid: {KINDS}")
    out = {}
    for name, x in (arrays or {}).items():
        x = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
        out[name] = np.ascontiguousarray(x)
    return st_save(out, metadata={"kind": kind, "meta": json.dumps(dict(meta or {}))})


def decode(data: bytes) -> Message:
    """Inverse of :func:`encode`; raises :class:`MessageError` on anything else."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageError(f"message of {len(data)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
    try:
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + n])
        meta_text = header.get("__metadata__", {})
        kind = meta_text["kind"]
        meta = json.loads(meta_text.get("meta", "{}"))
        arrays = st_load(data)
    except Exception as e:  # any parse failure is the peer's fault, reported as one error type
        raise MessageError(f"malformed message ({type(e).__name__}: {e})") from None
    if kind not in KINDS or not isinstance(meta, dict):
        raise MessageError(f"unknown message kind {kind!r}")
    msg = Message(kind, meta, arrays)
    validate(msg)
    return msg


def validate(msg: Message) -> None:
    """Raise :class:`MessageError` unless ``msg.meta`` holds every key its kind requires (:data:`SCHEMAS`), each
    present key with a value of its type."""
    for key, typ in SCHEMAS[msg.kind].items():
        optional, typ = typ.endswith("?"), typ.rstrip("?")
        if key not in msg.meta:
            if optional:
                continue
            raise MessageError(f"{msg.kind} message without {key!r} in its meta")
        check, what = META_TYPES[typ]
        if not check(msg.meta[key]):
            raise MessageError(f"{msg.kind} message: {key}={msg.meta[key]!r} is not {what}")


def check_arrays(
    arrays: Mapping[str, np.ndarray], spec: Mapping[str, Collection[ArraySpec]], what: str, finite: bool = False
) -> None:
    """Raise :class:`MessageError` unless ``arrays`` holds exactly the names of ``spec``, each with one of the
    (shape, dtype) pairs ``spec`` allows for it (a dtype None allows any), and, with ``finite``, no NaN or inf in a
    floating-point array. ``what`` names the arrays in the error."""
    missing, extra = sorted(set(spec) - set(arrays)), sorted(set(arrays) - set(spec))
    if missing or extra:
        raise MessageError(
            f"{what}: "
            + ", ".join(
                f"{label} arrays {names[:5]}" for label, names in (("missing", missing), ("unexpected", extra)) if names
            )
        )
    for name, x in arrays.items():
        if not any(x.shape == tuple(shape) and (dtype is None or x.dtype == dtype) for shape, dtype in spec[name]):
            allowed = " or ".join(
                f"{list(shape)} {'any dtype' if dtype is None else dtype}" for shape, dtype in spec[name]
            )
            raise MessageError(f"{what}: {name} is {list(x.shape)} {x.dtype}, expected {allowed}")
        if finite and np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
            raise MessageError(f"{what}: {name} holds NaN or inf")


def split_obs(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """``{"obs.state": x, "obs.front": y, ...}`` -> ``{"state": x, "front": y}`` for ``prefix="obs"``."""
    p = prefix + "."
    return {k[len(p) :]: v for k, v in arrays.items() if k.startswith(p)}


def join_obs(obs: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}.{k}": np.asarray(v) for k, v in obs.items()}


class Channel:
    """One connection to the peer. :meth:`send` never blocks the caller (a thread drains an outbox, so a slow or
    dead peer cannot stall a control loop); :meth:`recv` polls with a timeout. ``closed`` turns true when the peer
    goes away or sends garbage; the owner then reconnects."""

    def __init__(self, conn: Connection, outbox: int = 10_000):
        self.conn = conn
        self.closed = False
        self.error: str | None = None
        self._out: queue.Queue[bytes | None] = queue.Queue(maxsize=outbox)
        self._sender = threading.Thread(target=self._drain, daemon=True)
        self._sender.start()

    def _drain(self) -> None:
        while True:
            item = self._out.get()
            if item is None:
                return
            try:
                self.conn.send_bytes(item)
            except (OSError, EOFError, ValueError) as e:
                self._fail(f"send failed: {e}")
                return
            finally:
                self._out.task_done()

    def _fail(self, why: str) -> None:
        if not self.closed:
            self.closed, self.error = True, why

    def send(self, kind: str, meta: Mapping[str, Any] | None = None, arrays: Mapping[str, Any] | None = None) -> bool:
        """Queue a message; False (and the channel closed) if the outbox is full, i.e. the peer stopped reading."""
        if self.closed:
            return False
        try:
            self._out.put_nowait(encode(kind, meta, arrays))
            return True
        except queue.Full:
            self._fail("peer not reading: outbox full")
            return False

    def recv(self, timeout: float = 0.0) -> Message | None:
        """The next message, or None if none arrives within ``timeout`` seconds (or the channel is closed)."""
        if self.closed:
            return None
        try:
            if not self.conn.poll(timeout):
                return None
            return decode(self.conn.recv_bytes(MAX_MESSAGE_BYTES))
        except (OSError, EOFError) as e:
            self._fail(f"peer gone: {type(e).__name__}")
        except MessageError as e:
            self._fail(str(e))
        return None

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until queued messages are written (or ``timeout`` s pass)."""
        pause = threading.Event()
        for _ in range(int(timeout / 0.01)):
            if self._out.unfinished_tasks == 0 or self.closed:
                break
            pause.wait(0.01)

    def close(self) -> None:
        self._fail("closed")
        try:
            self._out.put_nowait(None)
        except queue.Full:
            pass
        try:
            self.conn.close()
        except OSError:
            pass
