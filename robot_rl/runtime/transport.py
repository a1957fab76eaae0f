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
  ``<run_dir>/runtime.key`` (:class:`SocketTransport`). Both processes on one machine.
* ``ros2`` (``runtime=ros2``): the same message bytes on ROS2 topics, with heartbeats, session ids and per-frame
  HMACs (:class:`hw.ros_transport.RosTransport`). The actor and the learner may run on different machines.

The protocol on top is the same for both (:mod:`robot_rl.runtime.actor`, :mod:`robot_rl.runtime.learner`): on every
new channel the actor sends ``hello`` {store_episodes}; the learner loads what it can read of the store and answers
``sync`` {episodes: how many it holds}; the actor replays the stored episodes the learner lacks, then its running
episode, then streams live. Nothing received is unpickled (:mod:`robot_rl.runtime.messages`).
"""

from __future__ import annotations

import abc
import os
import queue
import threading
import time
from multiprocessing.connection import Client, Listener
from pathlib import Path
from typing import Any, Mapping, Protocol

from robot_rl.runtime.launch import runtime_address, runtime_key
from robot_rl.runtime.messages import Channel, Message

ROS2_TRANSPORT = "hw.ros_transport:RosTransport"  # needs rclpy: pip install 'robot-rl[ros2]'
TRANSPORTS = ("socket", ROS2_TRANSPORT)


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


class SocketTransport(Transport):
    """A Unix socket named after the run directory (:func:`~robot_rl.runtime.launch.runtime_address`), authenticated
    with the run's key (``multiprocessing.connection``'s HMAC challenge; raw bytes only, never pickles)."""

    def __init__(self, run_dir: Path):
        self.address, self.key = runtime_address(run_dir), runtime_key(run_dir)
        self._listener: Listener | None = None
        self._conns: queue.Queue = queue.Queue()
        self._closing = False

    def listen(self) -> None:
        if os.path.exists(self.address):
            os.unlink(self.address)
        self._listener = Listener(self.address, family="AF_UNIX", authkey=self.key)
        threading.Thread(target=self._accept_forever, args=(self._listener,), daemon=True).start()

    def _accept_forever(self, listener: Listener) -> None:
        while True:
            try:
                self._conns.put(listener.accept())
            except (OSError, EOFError):  # a bad handshake (wrong key) or the listener closed
                if self._closing:
                    return

    def accept(self) -> Channel | None:
        try:
            return Channel(self._conns.get_nowait())
        except queue.Empty:
            return None

    def connect(self, timeout: float) -> Channel | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return Channel(Client(self.address, family="AF_UNIX", authkey=self.key))
            except (OSError, EOFError):
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
