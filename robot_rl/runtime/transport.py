"""How the actor and the learner reach each other: a transport hands out channels.

A *channel* is one live connection to the peer (:class:`PeerChannel`): ``send`` queues a message and never blocks the
caller (a slow or dead peer cannot stall a control loop), ``recv(timeout)`` returns the next message or None,
``closed`` turns true when the peer goes away, goes silent or sends garbage (``error`` says why), ``flush`` waits for
queued messages to leave, ``close`` ends it. The owner then asks its transport for a new channel.

A *transport* makes channels, one role per process:

* the actor calls :meth:`Transport.listen` once, then :meth:`Transport.accept` between control steps (it never
  blocks): a channel to a learner that just connected (or reconnected), or None;
* the learner calls :meth:`Transport.connect`, which waits up to a timeout for a channel to the actor.

``runtime.transport`` picks the implementation (:func:`make_transport`):

* ``socket`` (``runtime=async``): a Unix socket named after the run directory, with an HMAC handshake keyed by
  ``<run_dir>/runtime.key`` (:class:`SocketTransport`). Both processes on one machine. Each connection's handshake
  runs in its own thread with a time limit, so a client with the wrong key (refused and logged) or one that never
  finishes the handshake cannot stop the actor from admitting the next learner.
* ROS2 (``runtime=ros2``, ``runtime.transport=hw.ros_transport:RosTransport``): the same message bytes on ROS2
  topics, with heartbeats, session ids and per-frame HMACs. The actor and the learner may run on different
  machines.

The protocol on top is the same for both (:mod:`robot_rl.runtime.actor`, :mod:`robot_rl.runtime.learner`): on every
new channel the actor sends ``hello`` {store_episodes}; the learner loads what it can read of the store and answers
``sync`` {episodes: how many it holds}; the actor replays the stored episodes the learner lacks, then its running
episode, then streams live. Nothing received is unpickled (:mod:`robot_rl.runtime.messages`).
"""

from __future__ import annotations

import abc
import os
import queue
import socket
import struct
import threading
import time
from collections.abc import Mapping
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener, answer_challenge, deliver_challenge
from pathlib import Path
from typing import Any, Protocol

from robot_rl.runtime.keys import runtime_address, runtime_key
from robot_rl.runtime.messages import Channel, Message

ROS2_TRANSPORT = "hw.ros_transport:RosTransport"  # needs rclpy: pip install 'robot-rl[ros2]'
TRANSPORTS = ("socket", ROS2_TRANSPORT)
HANDSHAKE_TIMEOUT_S = 10.0  # a socket peer that has not completed the HMAC handshake by then is dropped


class PeerChannel(Protocol):
    """What the actor and the learner need of a connection (:class:`~robot_rl.runtime.messages.Channel` is one)."""

    closed: bool
    error: str | None

    def send(self, kind: str, meta: Mapping[str, Any] | None = None, arrays: Mapping[str, Any] | None = None) -> bool:
        """Queue one message; False if the channel is closed or the peer stopped reading. Never blocks."""

    def recv(self, timeout: float = 0.0) -> Message | None:
        """The next message, or None if none arrives within ``timeout`` seconds (or the channel is closed)."""

    def flush(self, timeout: float = 5.0) -> None:
        """Wait up to ``timeout`` s until the queued messages have left (and, where the transport can tell, arrived)."""

    def close(self) -> None:
        """End the connection (the peer sees it as closed)."""


class Transport(abc.ABC):
    """Makes :class:`PeerChannel` s; see the module docstring for who calls what."""

    def listen(self) -> None:
        """Actor side: start accepting learner connections (returns at once)."""

    @abc.abstractmethod
    def accept(self) -> PeerChannel | None:
        """Actor side: a channel to a newly connected learner, or None. Never blocks."""

    @abc.abstractmethod
    def connect(self, timeout: float) -> PeerChannel | None:
        """Learner side: a channel to the actor, or None after ``timeout`` seconds without one."""

    def describe(self) -> str:
        """One line for logs: what this transport connects through."""
        return type(self).__name__

    def close(self) -> None:
        """Stop listening and release resources (open channels are closed by their owners)."""


def _log(msg: str) -> None:
    print(f"[transport] {msg}", flush=True)


def _set_io_timeout(conn: Connection, seconds: float) -> None:
    """Kernel send/receive timeouts on ``conn``'s socket (0: none): a blocked read or write then fails with an
    OSError after ``seconds`` s instead of waiting for a silent peer forever."""
    whole = int(seconds)
    timeval = struct.pack("ll", whole, int((seconds - whole) * 1e6))
    with socket.socket(fileno=os.dup(conn.fileno())) as sock:  # the same socket; closing the dup leaves conn open
        sock.setblocking(True)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


def _handshake(conn: Connection, key: bytes, server: bool, timeout: float) -> None:
    """``multiprocessing.connection``'s mutual HMAC challenge on ``conn`` (what ``Listener``/``Client`` with an
    ``authkey`` run), within ``timeout`` s. Raises AuthenticationError (the peer holds another key), OSError (timed
    out: BlockingIOError), EOFError (the peer left) or AssertionError (the peer sent no challenge)."""
    _set_io_timeout(conn, timeout)
    if server:
        deliver_challenge(conn, key)
        answer_challenge(conn, key)
    else:
        answer_challenge(conn, key)
        deliver_challenge(conn, key)
    _set_io_timeout(conn, 0.0)


class SocketTransport(Transport):
    """A Unix socket named after the run directory (:func:`~robot_rl.runtime.keys.runtime_address`), authenticated
    with the run's key (``multiprocessing.connection``'s HMAC challenge; raw bytes only, never pickles).
    ``handshake_timeout_s``: how long a connecting peer may take to authenticate before it is dropped."""

    def __init__(self, run_dir: Path, handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S):
        self.address, self.key = runtime_address(run_dir), runtime_key(run_dir)
        self.handshake_timeout_s = float(handshake_timeout_s)
        self._listener: Listener | None = None
        self._conns: queue.Queue = queue.Queue()
        self._closing = False

    def listen(self) -> None:
        if os.path.exists(self.address):
            os.unlink(self.address)
        self._listener = Listener(self.address, family="AF_UNIX")  # no authkey: _admit authenticates each peer
        threading.Thread(target=self._accept_forever, args=(self._listener,), daemon=True).start()

    def _accept_forever(self, listener: Listener) -> None:
        """Accept connections until :meth:`close`, each authenticated by a thread of its own (:meth:`_admit`), so
        no peer can hold up the next one."""
        while not self._closing:
            try:
                conn = listener.accept()
            except OSError as e:
                if self._closing:
                    return
                _log(f"accept on {self.address} failed ({type(e).__name__}: {e}); still listening")
                time.sleep(0.5)
                continue
            threading.Thread(target=self._admit, args=(conn,), daemon=True).start()

    def _admit(self, conn: Connection) -> None:
        """Authenticate one connecting peer: queue it for :meth:`accept`, or close it and say why."""
        try:
            _handshake(conn, self.key, server=True, timeout=self.handshake_timeout_s)
            self._conns.put(conn)
            return
        except AuthenticationError:
            _log(
                f"refused a connection on {self.address}: wrong runtime.key (the peer's HMAC does not match this "
                "run's <run_dir>/runtime.key)"
            )
        except (OSError, EOFError, AssertionError) as e:
            why = (
                f"timed out after {self.handshake_timeout_s:g} s"
                if isinstance(e, BlockingIOError)
                else type(e).__name__
            )
            _log(f"dropped a connection on {self.address}: the peer did not complete the handshake ({why})")
        conn.close()

    def accept(self) -> Channel | None:
        try:
            return Channel(self._conns.get_nowait())
        except queue.Empty:
            return None

    def connect(self, timeout: float) -> Channel | None:
        """Retry for ``timeout`` s; raises AuthenticationError when the actor holds another key."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            conn = None
            try:
                conn = Client(self.address, family="AF_UNIX")
                _handshake(conn, self.key, server=False, timeout=self.handshake_timeout_s)
                return Channel(conn)
            except AuthenticationError:
                conn.close()
                raise AuthenticationError(
                    f"the actor on {self.address} refused this learner's key: wrong "
                    "runtime.key (the actor was started with another <run_dir>/runtime.key)"
                ) from None
            except (OSError, EOFError, AssertionError):  # no actor yet, or it did not complete the handshake
                if conn is not None:
                    conn.close()
                time.sleep(0.2)
        return None

    def describe(self) -> str:
        return f"unix socket {self.address}"

    def close(self) -> None:
        self._closing = True
        if self._listener is not None:
            self._listener.close()
            self._listener = None


def make_transport(runtime: Mapping[str, Any], run_dir: Path, role: str) -> Transport:
    """The transport ``runtime.transport`` names (default ``socket``) for ``role`` ("actor" or "learner")."""
    if role not in ("actor", "learner"):
        raise ValueError(f"role={role!r} must be 'actor' or 'learner'")
    kind = str(runtime.get("transport", "socket"))
    if kind == "socket":
        return SocketTransport(run_dir)
    if ":" in kind:  # "module:Class", e.g. hw.ros_transport:RosTransport (the learning core names no ROS code)
        import importlib

        module, _, attr = kind.partition(":")
        return getattr(importlib.import_module(module), attr).from_config(runtime, run_dir, role)
    raise ValueError(f"runtime.transport={kind!r}: use 'socket' or 'module:Class' (e.g. {ROS2_TRANSPORT})")
