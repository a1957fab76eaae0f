"""The actor/learner transport over ROS2 (``runtime=ros2``): the runtime's safetensors messages on three topics.

The actor and the learner may run on different machines of one ROS2 network (same ``ROS_DOMAIN_ID``, discovery
reaching both). Topics, all ``std_msgs/UInt8MultiArray``, under ``runtime.topic_prefix`` (default ``robot_rl``):

* ``<prefix>/to_learner`` (actor -> learner): the actor's beacon (its session id, every ``heartbeat_s``), then per
  connection ``hello``, ``step``, ``episode_end``, ``done``, and heartbeats that acknowledge weights (below).
  RELIABLE, VOLATILE, KEEP_LAST ``history_depth`` (0: KEEP_ALL): transitions must not be dropped.
* ``<prefix>/to_actor`` (learner -> actor): connection requests, heartbeats, ``sync``, ``stop``. Same QoS.
* ``<prefix>/weights`` (learner -> actor): ``weights`` messages cut into chunks of at most :data:`CHUNK_BYTES`.
  RELIABLE, VOLATILE, KEEP_LAST deep enough for every chunk of the largest allowed message.

Every message is one *frame*: a fixed header (magic ``RRL1``, frame type, sender session, addressee session,
sequence number, payload length), an HMAC-SHA256 of header and payload keyed by the run's key
(``<run_dir>/runtime.key``; copy it to the other machine with ``config.yaml``), then the payload: one runtime message
as :func:`robot_rl.runtime.messages.encode` makes it (safetensors; nothing received is ever unpickled).

Weights: one large sample on a latest-only topic can be lost mid-transfer when the next one overwrites it
(ros2/ros2#1289), so weights never travel that way. The learner numbers its weights messages per connection
(1, 2, ...) and publishes each as ``CHUNK`` frames (sequence number = that version; payload: chunk index, chunk
count, total length, SHA-256 of the whole message, then the chunk's bytes: :func:`split_weights`). The actor
reassembles the newest version begun (:class:`Reassembler`: an older partial one is dropped when a newer starts,
stale and duplicate chunks are ignored), checks the SHA-256, hands the owner only complete versions newer than the
last (it keeps just the newest one not yet received by the owner), and acknowledges: every actor heartbeat carries
the newest complete version as its sequence number, and one goes out at once when a version completes. The learner
keeps only the newest unacknowledged version (:class:`WeightsOutbox`): it publishes it once the previous one is
acknowledged, or again after a resend period without an acknowledgement (lost chunks, an actor that subscribed
late), so the actor always converges on the newest weights and a slow actor never builds a backlog.

Sessions: the actor draws a random 16-byte session id at start, and the learner one per connection, so a restarted
actor or learner (or a learner reconnecting after an error) is a new connection. The learner connects to the actor
whose beacon it heard most recently (``CONNECT``, repeated until the actor answers); the actor hands that learner out
as a new channel (:meth:`RosTransport.accept`) and the actor program closes the previous one. A beacon from a
different actor session closes the learner's channel (the actor restarted).

Failure detection: both sides send a heartbeat every ``heartbeat_s``; a channel whose peer was silent for
``peer_timeout_s`` closes ("peer silent"), as does one that misses a message (sequence gap on the message topics: the
owner reconnects and the protocol resyncs from the store), one whose peer said goodbye, and one whose peer sent a
payload that does not decode. Frames that are too large (``max_message_mb``; a chunk: :data:`CHUNK_BYTES`),
truncated, of another run (bad HMAC), of an unknown type, on the wrong topic or addressed to another session, and
chunks that do not fit (:class:`ChunkError`), are dropped with a throttled log line; nothing a peer sends can raise
out of a callback.

``authenticate: false`` keys the HMAC with a fixed, public key (integrity only), so anyone who reaches the ROS2 graph
could forge frames: it is refused unless the graph is confined to this machine (:func:`confined_graph`).
"""

from __future__ import annotations

import array
import hashlib
import hmac
import ipaddress
import math
import os
import queue
import secrets
import struct
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import rclpy
import rclpy.exceptions
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import UInt8MultiArray

from hw.netns import network_isolated
from hw.ros_common import RejectLog
from robot_rl.runtime.keys import runtime_key
from robot_rl.runtime.messages import MAX_MESSAGE_BYTES, Message, MessageError, decode, encode
from robot_rl.runtime.transport import Transport

MAGIC = b"RRL1"
BEACON, CONNECT, DATA, HEARTBEAT, BYE, CHUNK = 1, 2, 3, 4, 5, 6
FRAME_TYPES = {
    BEACON: "beacon",
    CONNECT: "connect",
    DATA: "data",
    HEARTBEAT: "heartbeat",
    BYE: "bye",
    CHUNK: "weights chunk",
}
_HEAD = struct.Struct("<4sBB16s16sQI")  # magic, type, flags, src session, dst session, seq, payload length
MAC_BYTES = 32
HEADER_BYTES = _HEAD.size + MAC_BYTES
NOBODY = bytes(16)  # the addressee of a beacon
UNAUTHENTICATED_KEY = b"robot_rl: frames checked for integrity only"
CHUNK_BYTES = 256 << 10  # weights bytes per chunk frame (half of Fast DDS's default 512 KiB shared-memory segment)
_CHUNK = struct.Struct("<IIQ32s")  # chunk index, chunk count, total length (bytes), SHA-256 of the whole message
CHUNK_HEADER_BYTES = _CHUNK.size
MAX_BACKOFF = 32  # the longest weights resend period, in resend periods


class FrameError(ValueError):
    """A frame that is not ours to read (malformed, oversized, wrong key)."""


class ChunkError(FrameError):
    """A weights chunk that does not fit: a malformed chunk header, a chunk that disagrees with the other chunks of
    its version, or a version whose reassembled bytes fail their SHA-256."""


@dataclass(frozen=True)
class Frame:
    type: int
    src: bytes
    dst: bytes
    seq: int
    payload: bytes


def pack_frame(key: bytes, type_: int, src: bytes, dst: bytes, seq: int, payload: bytes = b"") -> bytes:
    """Header + HMAC-SHA256(key, header + payload) + payload."""
    head = _HEAD.pack(MAGIC, type_, 0, src, dst, seq, len(payload))
    return head + hmac.new(key, head + payload, hashlib.sha256).digest() + payload


def unpack_frame(key: bytes, data: bytes, max_payload: int) -> Frame:
    """Inverse of :func:`pack_frame` for payloads of at most ``max_payload`` bytes; raises :class:`FrameError` with
    the reason for anything else."""
    if len(data) < HEADER_BYTES:
        raise FrameError(f"truncated frame: {len(data)} bytes, the header alone is {HEADER_BYTES}")
    if len(data) > HEADER_BYTES + max_payload:
        raise FrameError(f"oversized frame: {len(data)} bytes exceeds the {HEADER_BYTES + max_payload}-byte limit")
    magic, type_, _flags, src, dst, seq, n = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise FrameError(f"bad magic {magic!r}: not a robot_rl runtime frame")
    if n != len(data) - HEADER_BYTES:
        raise FrameError(f"length field says {n} payload bytes, the frame holds {len(data) - HEADER_BYTES}")
    head, mac, payload = data[: _HEAD.size], data[_HEAD.size : HEADER_BYTES], data[HEADER_BYTES:]
    if not hmac.compare_digest(mac, hmac.new(key, head + payload, hashlib.sha256).digest()):
        raise FrameError(
            "bad HMAC: sent with another run's key (copy <run_dir>/runtime.key from the actor's machine) or corrupted"
        )
    if type_ not in FRAME_TYPES:
        raise FrameError(f"unknown frame type {type_}")
    return Frame(type_, src, dst, seq, payload)


# ------------------------------------------------------------------------------------------ weights chunks
def chunk_count(total: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Chunks of ``chunk_bytes`` bytes that carry a ``total``-byte message (at least one)."""
    return max(1, -(-total // chunk_bytes))


def split_weights(blob: bytes, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The chunk payloads of one weights message ``blob``, in order: chunk header (index, count, total length in
    bytes, SHA-256 of ``blob``) + at most ``chunk_bytes`` bytes of ``blob``."""
    digest, count, view = hashlib.sha256(blob).digest(), chunk_count(len(blob), chunk_bytes), memoryview(blob)
    for i in range(count):
        yield _CHUNK.pack(i, count, len(blob), digest) + view[i * chunk_bytes : (i + 1) * chunk_bytes]


class Reassembler:
    """Rebuilds weights messages of rising versions from their chunks (:func:`split_weights`), in any order.

    :meth:`add` returns a message once all its chunks are in and its SHA-256 matches. Only the newest version begun
    is kept (up to ``max_bytes``): its chunks start a new partial version and drop an older partial one; chunks of
    versions older than that or than the last one completed, and duplicates, are ignored. Not thread-safe.
    """

    def __init__(self, max_bytes: int, chunk_bytes: int = CHUNK_BYTES):
        self.max_bytes, self.chunk_bytes = int(max_bytes), int(chunk_bytes)
        self.delivered = 0  # the newest version completed (versions count from 1)
        self._version = 0  # the version being assembled (0: none)
        self._head: tuple[int, bytes] = (0, b"")  # its total length and SHA-256
        self._buf = bytearray()
        self._missing: set[int] = set()

    def add(self, version: int, payload: bytes) -> bytes | None:
        """One chunk (``payload`` as :func:`split_weights` makes it) of ``version``: the whole message when this
        completes the newest version, else None. Raises :class:`ChunkError` for a malformed chunk, one that disagrees
        with earlier chunks of its version, or a completed version that fails its checksum (then dropped: a resend
        of it starts over)."""
        if len(payload) < CHUNK_HEADER_BYTES:
            raise ChunkError(f"truncated chunk: {len(payload)} bytes, its header alone is {CHUNK_HEADER_BYTES}")
        index, count, total, digest = _CHUNK.unpack_from(payload)
        if total > self.max_bytes:
            raise ChunkError(f"weights of {total} bytes exceed the {self.max_bytes}-byte limit (max_message_mb)")
        if count != chunk_count(total, self.chunk_bytes) or index >= count:
            raise ChunkError(
                f"chunk {index} of {count} does not fit a {total}-byte message in "
                f"{chunk_count(total, self.chunk_bytes)} chunks of {self.chunk_bytes} bytes"
            )
        start = index * self.chunk_bytes
        size = min(self.chunk_bytes, total - start)
        if len(payload) - CHUNK_HEADER_BYTES != size:
            raise ChunkError(f"chunk {index} of {count} holds {len(payload) - CHUNK_HEADER_BYTES} bytes, not {size}")
        if version <= self.delivered or version < self._version:
            return None  # superseded
        if version != self._version:  # a newer version begins: whatever was partial is dropped
            self._version, self._head, self._missing = version, (total, digest), set(range(count))
            self._buf = bytearray(total)
        elif (total, digest) != self._head:
            raise ChunkError(
                f"chunk {index} of version {version} disagrees with its earlier chunks (length or checksum)"
            )
        if index not in self._missing:
            return None  # a duplicate
        self._buf[start : start + size] = memoryview(payload)[CHUNK_HEADER_BYTES:]
        self._missing.discard(index)
        if self._missing:
            return None
        blob, self._buf, self._version = bytes(self._buf), bytearray(), 0
        if hashlib.sha256(blob).digest() != digest:
            raise ChunkError(f"weights version {version} fails its SHA-256 after reassembly; dropped")
        self.delivered = version
        return blob


class WeightsOutbox:
    """The learner's side of the weights flow: holds only the newest weights message until the actor acknowledges
    it (or a newer one replaces it), and says when to publish: at once if the previously published version was
    acknowledged, else once a resend period passed since it went out (then the newest, which may be the same version
    again). The period is ``resend_s`` s, or twice the last acknowledgement delay if longer, doubled for each
    publication in a row that went unanswered (up to :data:`MAX_BACKOFF` times as long), so a link too slow to move
    one version within the period still gets one through. Thread-safe."""

    def __init__(self, resend_s: float):
        self.resend_s = float(resend_s)
        self.version = 0  # the newest version offered (versions count from 1)
        self.published = 0  # the newest version handed out to publish
        self.acked = 0  # the newest version the actor acknowledged
        self._newest: bytes | None = None  # the newest version's message, until acknowledged
        self._out_at = 0.0  # when the last publication finished (monotonic s; inf while it is under way)
        self._taken_at = 0.0  # when it was handed out
        self._ack_delay = 0.0  # the last publication -> acknowledgement delay (s)
        self._unanswered = 0  # publications in a row not acknowledged (resends, or newer versions before an ack)
        self._closed = False
        self._cond = threading.Condition()

    def offer(self, blob: bytes) -> int:
        """Make ``blob`` the newest weights (the older unpublished or unacknowledged one is dropped); its version."""
        with self._cond:
            self.version += 1
            self._newest = blob
            self._cond.notify_all()
            return self.version

    def ack(self, version: int) -> None:
        """The actor holds ``version`` (and so needs nothing older)."""
        with self._cond:
            version = min(int(version), self.published)
            if version <= self.acked:
                return
            if version == self.published:
                self._ack_delay, self._unanswered = time.monotonic() - self._taken_at, 0
            self.acked = version
            if self.acked >= self.version:
                self._newest = None
            self._cond.notify_all()

    def take(self, timeout: float | None = None) -> tuple[int, bytes] | None:
        """Wait up to ``timeout`` s (None: until closed) for a version due to be published: (version, message);
        call :meth:`sent` when it went out. None on timeout or once closed."""
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                wait = deadline - now
                if self._newest is not None:
                    answered = self.acked >= self.published
                    due = (
                        now
                        if answered
                        else self._out_at
                        + max(self.resend_s, 2 * self._ack_delay) * min(2**self._unanswered, MAX_BACKOFF)
                    )
                    if due <= now:
                        self._unanswered += not answered
                        self.published, self._taken_at, self._out_at = self.version, now, math.inf
                        return self.version, self._newest
                    wait = min(wait, due - now)
                if wait <= 0:
                    return None
                self._cond.wait(None if math.isinf(wait) else wait)
            return None

    def sent(self) -> None:
        """The version :meth:`take` handed out is published: the resend period starts now."""
        with self._cond:
            self._out_at = time.monotonic()
            self._cond.notify_all()

    def close(self) -> None:
        """Wake and end :meth:`take` (returns None from now on)."""
        with self._cond:
            self._closed, self._newest = True, None
            self._cond.notify_all()


# ------------------------------------------------------------------------------------------------ settings
_LOOPBACK_NAMES = ("localhost", "ip6-localhost", "ip6-loopback")


def _loopback(peer: str) -> bool:
    host = peer.strip().strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower() in _LOOPBACK_NAMES


def confined_graph(env: Mapping[str, str], isolated: bool = False) -> str | None:
    """What keeps a ROS2 process started with environment ``env`` from reaching other machines, or None if nothing
    does: ``isolated`` (its network namespace holds only loopback), ``ROS_LOCALHOST_ONLY=1`` (Jazzy still honours it
    and then ignores the two below), ``ROS_AUTOMATIC_DISCOVERY_RANGE=OFF``, or ``=LOCALHOST`` with no
    ``ROS_STATIC_PEERS`` off this machine. (Unset, the range is SUBNET.)"""
    if isolated:
        return "a network namespace that holds only loopback"
    if env.get("ROS_LOCALHOST_ONLY", "") == "1":
        return "ROS_LOCALHOST_ONLY=1"
    scope = env.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "")
    if scope == "OFF":
        return "ROS_AUTOMATIC_DISCOVERY_RANGE=OFF"
    peers = [p for p in env.get("ROS_STATIC_PEERS", "").split(";") if p.strip()]
    if scope == "LOCALHOST" and all(_loopback(p) for p in peers):
        return "ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST"
    return None


@dataclass
class RosTransportSettings:
    """``runtime.*`` keys of ``configs/runtime/ros2.yaml`` this transport reads (units as named)."""

    topic_prefix: str = "robot_rl"  # topics <prefix>/to_learner, <prefix>/to_actor, <prefix>/weights
    heartbeat_s: float = 0.5  # period of beacons and heartbeats
    peer_timeout_s: float = 5.0  # silence after which a channel closes
    history_depth: int = 1000  # KEEP_LAST depth of the two message topics; 0: KEEP_ALL
    max_message_mb: float = MAX_MESSAGE_BYTES / 2**20  # larger frames are refused (and never sent)
    authenticate: bool = True  # HMAC with <run_dir>/runtime.key (false: a fixed key; only on a confined graph)
    outbox: int = 10_000  # queued messages per channel before it counts the peer as not reading

    def __post_init__(self) -> None:
        if not self.topic_prefix or not all(
            part.replace("_", "a").isalnum() for part in self.topic_prefix.strip("/").split("/")
        ):
            raise ValueError(f"topic_prefix={self.topic_prefix!r}: ROS2 names take letters, digits, _ and /")
        if not 0.01 <= self.heartbeat_s <= 60:
            raise ValueError(f"heartbeat_s={self.heartbeat_s} must lie in [0.01, 60] s")
        if self.peer_timeout_s < 2 * self.heartbeat_s:
            raise ValueError(
                f"peer_timeout_s={self.peer_timeout_s} must be at least twice heartbeat_s={self.heartbeat_s}"
            )
        if self.history_depth < 0:
            raise ValueError(f"history_depth={self.history_depth} must be >= 0 (0: KEEP_ALL)")
        if not 0 < self.max_message_mb <= 1024:
            raise ValueError(f"max_message_mb={self.max_message_mb} must lie in (0, 1024]")
        if not self.authenticate and confined_graph(os.environ, network_isolated()) is None:
            raise ValueError(
                "authenticate=false keys every frame with a fixed, public key, so anyone reaching this ROS2 graph "
                "could forge weights and commands; it is allowed only when the graph stays on this machine, and "
                f"ROS_AUTOMATIC_DISCOVERY_RANGE={os.environ.get('ROS_AUTOMATIC_DISCOVERY_RANGE', '')!r} "
                f"(ROS_LOCALHOST_ONLY={os.environ.get('ROS_LOCALHOST_ONLY', '')!r}, ROS_STATIC_PEERS="
                f"{os.environ.get('ROS_STATIC_PEERS', '')!r}) does not confine it. Fix: export "
                "ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST with no off-machine ROS_STATIC_PEERS (source "
                "scripts/ros2_env.sh) before starting actor and learner on one machine, or set "
                "runtime.authenticate=true and copy <run_dir>/runtime.key to the other machine"
            )

    @classmethod
    def from_mapping(cls, runtime: Mapping[str, Any]) -> RosTransportSettings:
        """The settings named in ``runtime`` (a config section; other keys ignored), defaults for the rest."""
        kw = {}
        for f in fields(cls):
            if runtime.get(f.name) is not None:
                default = getattr(cls, f.name)
                kw[f.name] = type(default)(runtime[f.name]) if not isinstance(default, bool) else bool(runtime[f.name])
        return cls(**kw)

    @property
    def max_payload(self) -> int:
        """The largest message (bytes)."""
        return int(self.max_message_mb * 2**20)

    @property
    def resend_s(self) -> float:
        """How long the learner waits for the actor to acknowledge weights before publishing them again (s)."""
        return max(1.0, 4 * self.heartbeat_s)


def message_qos(depth: int) -> QoSProfile:
    """Reliable, volatile; KEEP_LAST ``depth`` (0: KEEP_ALL): the actor/learner message topics."""
    if depth == 0:
        return QoSProfile(
            history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE
        )
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def weights_qos(max_payload: int) -> QoSProfile:
    """Reliable, volatile, KEEP_LAST every chunk of a ``max_payload``-byte message (+1): the weights topic. Never
    latest-only, and never KEEP_ALL (a dead reader still matched could block the learner)."""
    return message_qos(chunk_count(max_payload) + 1)


class RosChannel:
    """One connection to a peer session; see :class:`robot_rl.runtime.transport.PeerChannel`. Messages the peer
    sent before it closed can still be received; :meth:`send` never blocks (threads publish). Weights go through a
    :class:`WeightsOutbox` (learner) and a :class:`Reassembler` (actor); see the module docstring."""

    def __init__(self, transport: RosTransport, peer: bytes):
        self.t, self.peer = transport, peer
        s = transport.settings
        # our end's id: the actor's session, or a fresh id per learner connection
        self.local = transport.session if transport.role == "actor" else secrets.token_bytes(16)
        self.route = peer if transport.role == "actor" else self.local  # how the transport routes frames to us
        self.error: str | None = None
        self._closed = self._closed_here = False
        self.last_heard = time.monotonic()
        self.accepted = transport.role == "actor"  # learner: until the actor first answers
        self._inbox: queue.Queue[bytes | None] = queue.Queue()  # None: take the newest weights
        self._weights: bytes | None = None  # the newest complete weights the owner has not received yet
        self._weights_lock = threading.Lock()
        self._out: queue.Queue[bytes | None] = queue.Queue(maxsize=s.outbox)
        self._rx_seq = self._tx_seq = 0  # messages on the message topics
        self.reassembler = Reassembler(s.max_payload)
        self.weights_out = WeightsOutbox(s.resend_s)
        threads = [self._drain] + ([self._publish_weights] if transport.role == "learner" else [])
        for target in threads:
            threading.Thread(target=target, daemon=True, name=f"ros_channel{target.__name__}").start()

    def __repr__(self) -> str:
        return f"RosChannel(peer={self.peer.hex()[:8]}, closed={self.closed})"

    # --------------------------------------------------------------------------------------- owner side
    @property
    def closed(self) -> bool:
        if not self._closed:
            silent = time.monotonic() - self.last_heard
            if silent > self.t.settings.peer_timeout_s:
                self._fail(f"peer silent for {silent:.1f} s (peer_timeout_s={self.t.settings.peer_timeout_s})")
        return self._closed

    def send(self, kind: str, meta: Mapping[str, Any] | None = None, arrays: Mapping[str, Any] | None = None) -> bool:
        if self.closed:
            return False
        data = encode(kind, meta, arrays)
        if len(data) > self.t.settings.max_payload:
            self.t.reject(
                "send",
                f"{kind} message of {len(data)} bytes exceeds max_message_mb="
                f"{self.t.settings.max_message_mb}; not sent",
            )
            return False
        if kind == "weights":
            if self.t.role != "learner":
                raise ValueError("only the learner sends weights")
            self.weights_out.offer(data)
            return True
        try:
            self._out.put_nowait(data)
            return True
        except queue.Full:
            self._fail("peer not reading: outbox full")
            return False

    def recv(self, timeout: float = 0.0) -> Message | None:
        if self._closed_here:
            return None
        try:
            payload = self._inbox.get(timeout=timeout) if timeout > 0 and not self.closed else self._inbox.get_nowait()
        except queue.Empty:
            return None
        if payload is None:
            with self._weights_lock:
                payload, self._weights = self._weights, None
        try:
            return decode(payload)
        except MessageError as e:  # the peer speaks our framing and key but sent garbage: drop the connection
            self.t.reject("message", f"from {self.peer.hex()[:8]}: {e}")
            self._fail(f"malformed message from the peer: {e}")
            return None

    def flush(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self._out.unfinished_tasks and not self._closed and time.monotonic() < deadline:
            time.sleep(0.01)
        for pub in self.t.publishers_to_peer():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                pub.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9)))
            except Exception:  # noqa: BLE001 - best effort at shutdown
                pass

    def close(self) -> None:
        if not self._closed_here:
            self._closed_here = True
            if not self._closed:
                self.t.publish_control(BYE, self.peer, self.local)
            self._fail("closed")
            try:
                self._out.put_nowait(None)
            except queue.Full:
                pass
            self.t.forget(self)

    # -------------------------------------------------------------------------------- transport side
    def _fail(self, why: str) -> None:
        if not self._closed:
            self._closed, self.error = True, why
            self.weights_out.close()

    def _drain(self) -> None:
        """Sender thread: publish the queued messages in order."""
        while True:
            payload = self._out.get()
            try:
                if payload is None:
                    return
                self._tx_seq += 1
                if not self.t.publish("data", DATA, self.peer, self._tx_seq, payload, self.local):
                    self._fail("publish failed: the transport is shut down")
            except Exception as e:  # noqa: BLE001 - a failed publish closes this channel, never the process
                self._fail(f"publish failed: {type(e).__name__}: {e}")
            finally:
                self._out.task_done()

    def _publish_weights(self) -> None:
        """Learner's weights thread: publish the chunks of each version :class:`WeightsOutbox` says is due."""
        while (item := self.weights_out.take()) is not None:
            version, blob = item
            try:
                for chunk in split_weights(blob):
                    if not self.t.publish("weights", CHUNK, self.peer, version, chunk, self.local):
                        self._fail("publish failed: the transport is shut down")
                        return
            except Exception as e:  # noqa: BLE001 - as in _drain
                self._fail(f"publish failed: {type(e).__name__}: {e}")
                return
            self.weights_out.sent()

    def _heard(self) -> None:
        self.last_heard = time.monotonic()

    def _deliver(self, frame: Frame) -> None:
        """A DATA frame from the peer (executor thread)."""
        self._heard()
        self.accepted = True
        if frame.seq <= self._rx_seq:
            return  # a duplicate
        if frame.seq != self._rx_seq + 1:
            self._fail(
                f"lost {frame.seq - self._rx_seq - 1} message(s) from the peer (got #{frame.seq} after "
                f"#{self._rx_seq}); reconnect and resync"
            )
            return
        self._rx_seq = frame.seq
        if not self._closed:
            self._inbox.put(frame.payload)

    def _chunk(self, frame: Frame) -> None:
        """A weights chunk from the learner (actor's executor thread): a completed version goes to the owner (only
        the newest is kept) and is acknowledged at once. Raises :class:`ChunkError` for a chunk that does not fit."""
        self._heard()
        if self._closed:
            return
        blob = self.reassembler.add(frame.seq, frame.payload)
        if blob is None:
            return
        with self._weights_lock:
            if self._weights is None:
                self._inbox.put(None)
            self._weights = blob
        self.t.publish_control(HEARTBEAT, self.peer, seq=frame.seq)


class RosTransport(Transport):
    """Channels over ROS2 topics for ``role`` "actor" or "learner" (module docstring). ``node``: an rclpy node to
    use (spun by this transport's thread from now on), e.g. the console script's node with its parameters; None: a
    node in a private context."""

    def __init__(self, role: str, key: bytes, settings: RosTransportSettings | None = None, node: Node | None = None):
        if role not in ("actor", "learner"):
            raise ValueError(f"role={role!r} must be 'actor' or 'learner'")
        self.role, self.key = role, bytes(key)
        self.settings = s = settings or RosTransportSettings()
        self.session = secrets.token_bytes(16)
        self._own_context = node is None
        if node is None:
            self._ctx = rclpy.Context()
            rclpy.init(args=[], context=self._ctx, signal_handler_options=SignalHandlerOptions.NO)
            node = rclpy.create_node(f"robot_rl_{role}_transport", context=self._ctx)
        self.node, self._ctx = node, node.context
        self._log = node.get_logger()
        self.reject = RejectLog(self._log)
        self._lock = threading.RLock()
        self._pub_lock = threading.Lock()
        self._channels: dict[bytes, RosChannel] = {}
        self._new: queue.Queue[RosChannel] = queue.Queue()
        self._beacons: dict[bytes, float] = {}  # learner: actor session -> last beacon (monotonic s)
        self._running = True
        prefix = "/" + s.topic_prefix.strip("/") if s.topic_prefix.startswith("/") else s.topic_prefix.strip("/")
        self.topics = {
            "to_learner": f"{prefix}/to_learner",
            "to_actor": f"{prefix}/to_actor",
            "weights": f"{prefix}/weights",
        }
        mq, wq = message_qos(s.history_depth), weights_qos(s.max_payload)
        if role == "actor":
            self._pubs = {"data": node.create_publisher(UInt8MultiArray, self.topics["to_learner"], mq)}
            node.create_subscription(UInt8MultiArray, self.topics["to_actor"], self._cb("to_actor", "data"), mq)
            node.create_subscription(UInt8MultiArray, self.topics["weights"], self._cb("weights", "weights"), wq)
        else:
            self._pubs = {
                "data": node.create_publisher(UInt8MultiArray, self.topics["to_actor"], mq),
                "weights": node.create_publisher(UInt8MultiArray, self.topics["weights"], wq),
            }
            node.create_subscription(UInt8MultiArray, self.topics["to_learner"], self._cb("to_learner", "data"), mq)
        node.create_timer(s.heartbeat_s, self._tick)
        self._ex = SingleThreadedExecutor(context=self._ctx)
        self._ex.add_node(node)
        self._spinner = threading.Thread(target=self._spin, daemon=True, name=f"ros_transport_{role}")
        self._spinner.start()

    @classmethod
    def from_config(
        cls, runtime: Mapping[str, Any], run_dir: Path, role: str, node: Node | None = None
    ) -> RosTransport:
        """Settings from the ``runtime`` config section; the key from ``<run_dir>/runtime.key`` (ValueError for
        ``authenticate: false`` unless the ROS2 graph is confined to this machine: :func:`confined_graph`)."""
        settings = RosTransportSettings.from_mapping(runtime)
        key = runtime_key(run_dir) if settings.authenticate else UNAUTHENTICATED_KEY
        return cls(role, key, settings, node)

    def describe(self) -> str:
        return (
            f"ROS2 topics {self.topics['to_learner']}, {self.topics['to_actor']}, {self.topics['weights']} "
            f"(session {self.session.hex()[:8]})"
        )

    # ----------------------------------------------------------------------------------------- threads
    def _spin(self) -> None:
        while self._running and self._ctx.ok():
            try:
                self._ex.spin_once(timeout_sec=0.05)
            except Exception as e:  # noqa: BLE001 - shutdown races; a callback error is logged, spinning goes on
                if not self._running or not self._ctx.ok():
                    return
                self._log.error(f"transport executor: {type(e).__name__}: {e}", throttle_duration_sec=2.0)

    def publish(
        self, topic: str, type_: int, dst: bytes, seq: int, payload: bytes = b"", src: bytes | None = None
    ) -> bool:
        """Frame and publish on ``topic`` ("data": the outgoing message topic, "weights") from ``src`` (default: our
        session); False once shut down."""
        pub = self._pubs.get(topic)
        if pub is None:
            raise ValueError(f"the {self.role} does not publish {topic}")
        msg = UInt8MultiArray()
        msg.data = array.array("B", pack_frame(self.key, type_, src or self.session, dst, seq, payload))
        with self._pub_lock:
            if not self._running or not self._ctx.ok():
                return False
            pub.publish(msg)
        return True

    def publish_control(self, type_: int, dst: bytes, src: bytes | None = None, seq: int = 0) -> None:
        """A beacon, connect, heartbeat (the actor's carries the newest weights version it holds as ``seq``) or bye
        (no payload); errors at shutdown are ignored."""
        try:
            self.publish("data", type_, dst, seq, b"", src)
        except Exception:  # noqa: BLE001
            pass

    def publishers_to_peer(self) -> list[Any]:
        return list(self._pubs.values())

    def _tick(self) -> None:
        """Every ``heartbeat_s`` (executor thread): beacon (actor) or connect/heartbeat (learner); drop dead
        channels."""
        if self.role == "actor":
            self.publish_control(BEACON, NOBODY)
        with self._lock:
            chans = list(self._channels.values())
        for ch in chans:
            if ch.closed:
                self.forget(ch)
            elif self.role == "learner":
                self.publish_control(HEARTBEAT if ch.accepted else CONNECT, ch.peer, ch.local)
            else:
                self.publish_control(HEARTBEAT, ch.peer, seq=ch.reassembler.delivered)

    def _cb(self, topic_name: str, topic: str) -> Any:
        limit = CHUNK_HEADER_BYTES + CHUNK_BYTES if topic == "weights" else self.settings.max_payload

        def cb(msg: UInt8MultiArray) -> None:
            try:
                data = msg.data.tobytes() if isinstance(msg.data, array.array) else bytes(msg.data)
                frame = unpack_frame(self.key, data, limit)
                if (frame.type == CHUNK) != (topic == "weights"):
                    raise FrameError(f"{FRAME_TYPES[frame.type]} frame on the wrong topic")
                self._route(frame)
            except FrameError as e:
                self.reject(self.topics[topic_name], str(e))
            except Exception as e:  # noqa: BLE001 - nothing a peer sends may raise out of a callback
                self.reject(self.topics[topic_name], f"{type(e).__name__}: {e}")

        return cb

    def _route(self, f: Frame) -> None:
        if f.type == BEACON:
            if self.role == "learner":
                self._on_beacon(f.src)
            return
        with self._lock:
            if self.role == "actor":
                if f.dst != self.session:
                    return  # for another actor session (our predecessor, or another pair on the same topics)
                ch = self._channels.get(f.src)
            else:
                ch = self._channels.get(f.dst)  # keyed by our connection id
                if ch is not None and f.src != ch.peer:
                    return
            if ch is None and f.type == CONNECT and self.role == "actor":
                ch = self._channels[f.src] = RosChannel(self, f.src)
                self._new.put(ch)
                self._log.info(f"learner session {f.src.hex()[:8]} connected")
                self.publish_control(HEARTBEAT, f.src)
                return
        if ch is None:
            return
        if f.type == DATA:
            ch._deliver(f)
        elif f.type == CHUNK:
            ch._chunk(f)
        elif f.type == BYE:
            ch._heard()
            ch._fail("the peer closed the connection")
        else:  # CONNECT repeated, HEARTBEAT
            ch._heard()
            if self.role == "learner":
                ch.accepted = True
                ch.weights_out.ack(f.seq)

    def _on_beacon(self, src: bytes) -> None:
        now = time.monotonic()
        with self._lock:
            self._beacons[src] = now
            for ch in list(self._channels.values()):
                if ch.peer == src:
                    ch._heard()
                elif not ch._closed:
                    ch._fail(f"the actor restarted (new session {src.hex()[:8]}, was {ch.peer.hex()[:8]})")
                    self._beacons.pop(ch.peer, None)

    def forget(self, ch: RosChannel) -> None:
        with self._lock:
            if self._channels.get(ch.route) is ch:
                del self._channels[ch.route]
            if ch.error and "silent" in ch.error:
                self._beacons.pop(ch.peer, None)

    # ----------------------------------------------------------------------------------------------- API
    def accept(self) -> RosChannel | None:
        if self.role != "actor":
            raise RuntimeError("accept() is the actor's side; the learner calls connect()")
        try:
            return self._new.get_nowait()
        except queue.Empty:
            return None

    def connect(self, timeout: float) -> RosChannel | None:
        if self.role != "learner":
            raise RuntimeError("connect() is the learner's side; the actor calls accept()")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._running:
            now = time.monotonic()
            with self._lock:
                live = {s: t for s, t in self._beacons.items() if now - t < self.settings.peer_timeout_s}
                if live:
                    peer = max(live, key=live.get)
                    for old in list(self._channels.values()):
                        old._fail("replaced by a new connection")
                        self.forget(old)
                    ch = RosChannel(self, peer)
                    self._channels[ch.route] = ch
                    ch.last_heard = live[peer]
                    self.publish_control(CONNECT, peer, ch.local)
                    self._log.info(f"connecting to actor session {peer.hex()[:8]}")
                    return ch
            time.sleep(0.05)
        return None

    def close(self) -> None:
        if not self._running:
            return
        with self._lock:
            chans = list(self._channels.values())
        for ch in chans:
            ch.close()
        time.sleep(0.05)  # let the byes leave
        self._running = False
        self._spinner.join(timeout=2.0)
        try:
            self._ex.shutdown(timeout_sec=1.0)
        except Exception:  # noqa: BLE001
            pass
        if self._own_context:
            self.node.destroy_node()
            if self._ctx.ok():
                rclpy.shutdown(context=self._ctx)


# ------------------------------------------------------------------------------------------ console scripts
NODE_PARAMETERS: dict[str, tuple[Any, str]] = {
    # name: (default when neither the run's config nor the command line gives one, description)
    "run_dir": ("", "the run directory (holds config.yaml and runtime.key; the actor's also online.zarr)"),
    "overrides": (
        "",
        "space-separated key=value over the run's config.yaml, e.g. 'total_steps=2000 runtime.learner_task=reach'",
    ),
    "topic_prefix": (
        RosTransportSettings.topic_prefix,
        "topics <prefix>/to_learner, <prefix>/to_actor, <prefix>/weights",
    ),
    "heartbeat_s": (RosTransportSettings.heartbeat_s, "beacon / heartbeat period (s)"),
    "peer_timeout_s": (RosTransportSettings.peer_timeout_s, "silence after which the connection counts as lost (s)"),
    "history_depth": (RosTransportSettings.history_depth, "KEEP_LAST depth of the message topics (0: KEEP_ALL)"),
    "max_message_mb": (RosTransportSettings.max_message_mb, "larger messages are refused (MiB)"),
    "authenticate": (
        RosTransportSettings.authenticate,
        "HMAC every frame with <run_dir>/runtime.key (false: refused unless ROS2 discovery stays on this machine)",
    ),
}


def run_runtime_node(role: str, argv: Sequence[str] | None, parameters: tuple[str, ...]) -> int:
    """Console-script body of ``robot-rl-actor`` / ``robot-rl-learner``: ``[RUN_DIR] [key=value ...] [--ros-args
    ...]``; ROS2 parameters ``parameters`` (a subset of :data:`NODE_PARAMETERS`) override the run's
    ``runtime.*`` settings; always the ROS2 transport."""
    import argparse
    import shlex
    import signal
    import sys

    from hw.ros_common import declare
    from robot_rl.utils.config import load_run_config
    from robot_rl.utils.signals import ctrl_c_stops

    unknown = set(parameters) - set(NODE_PARAMETERS)
    if unknown:
        raise ValueError(f"unknown runtime node parameters {sorted(unknown)}")
    args = list(sys.argv if argv is None else argv)
    cut = args.index("--ros-args") if "--ros-args" in args else len(args)
    p = argparse.ArgumentParser(
        prog=f"robot-rl-{role}",
        description=f"the {role} of a robot_rl run over ROS2 (runtime=ros2); ROS2 parameters follow --ros-args",
    )
    p.add_argument("run_dir", nargs="?", default="", help="run directory (or -p run_dir:=...)")
    p.add_argument("overrides", nargs="*", help="key=value over <run_dir>/config.yaml")
    ours = p.parse_args(args[1:cut])
    if "=" in ours.run_dir:  # only overrides were given (run_dir comes as a parameter)
        ours.overrides, ours.run_dir = [ours.run_dir, *ours.overrides], ""
    if ours.run_dir and not (Path(ours.run_dir) / "config.yaml").exists():  # before joining any DDS domain
        print(
            f"robot-rl-{role}: ValueError: {ours.run_dir}/config.yaml not found: make the run with robot-rl train "
            "... runtime=ros2 (or copy it from the other machine, with runtime.key)",
            file=sys.stderr,
        )
        return 2
    rclpy.init(args=[args[0], *args[cut:]], signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node(role)

    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    ctrl_c_stops()  # SIGINT (Ctrl+C, ros2 launch) raises KeyboardInterrupt even if our parent ignored it
    process = transport = None
    try:
        try:
            run_dir = declare(node, "run_dir", str(ours.run_dir), NODE_PARAMETERS["run_dir"][1])
            extra = declare(node, "overrides", "", NODE_PARAMETERS["overrides"][1]) if "overrides" in parameters else ""
            if not run_dir:
                raise ValueError("no run directory: give RUN_DIR or -p run_dir:=RUN_DIR")
            if not (Path(run_dir) / "config.yaml").exists():
                raise ValueError(
                    f"{run_dir}/config.yaml not found: make the run with robot-rl train ... "
                    "runtime=ros2 (or copy it from the other machine, with runtime.key)"
                )
            overrides = [*ours.overrides, *shlex.split(extra), "runtime.transport=hw.ros_transport:RosTransport"]
            cfg = load_run_config(Path(run_dir), overrides)
            if "actor_threads" not in cfg.runtime:
                raise ValueError(
                    f"{run_dir}/config.yaml has runtime={cfg.runtime.get('name')}: make the run with "
                    "runtime=ros2 (configs/runtime/ros2.yaml)"
                )
            runtime = dict(cfg.runtime)
            for name in parameters:
                if name in ("run_dir", "overrides"):
                    continue
                default, desc = NODE_PARAMETERS[name]
                value = runtime.get(name)
                value = type(default)(value) if value is not None else default
                runtime[name] = declare(node, name, value, desc)
            transport = RosTransport.from_config(runtime, Path(run_dir), role, node=node)
            if role == "actor":
                from robot_rl.runtime.actor import Actor

                process = Actor(Path(run_dir), overrides, transport=transport)
            else:
                from robot_rl.runtime.learner import Learner

                process = Learner(Path(run_dir), overrides, transport=transport)
        except (ValueError, RuntimeError, rclpy.exceptions.ParameterException) as e:  # a config error: one line
            print(f"robot-rl-{role}: {type(e).__name__}: {e}", file=sys.stderr)
            return 2
        if role == "actor":
            return process.run()
        try:
            return process.serve(float(cfg.runtime.get("connect_timeout_s", 600)))
        finally:
            process.close()
    except KeyboardInterrupt:
        print(f"[{role}] interrupted", flush=True)
        return 130
    finally:
        if transport is not None:
            transport.close()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
