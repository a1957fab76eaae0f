"""Weights over ROS2 (hw/ros_transport.py): chunked, checksummed, acknowledged, resent until the actor holds the newest.

The chunker, reassembler, outbox and the ``authenticate: false`` check are pure Python (rclpy must import); the
transfer test runs real DDS inside a fresh loopback-only network namespace (tests/ros2_netns.py) and skips where none
can be made.
"""

import hashlib
import os
import random
import time

import numpy as np
import pytest
from ros2_netns import run_in_netns

pytest.importorskip("rclpy", reason="the ros2 extra is not installed")

from hw import ros_transport as rt  # noqa: E402
from hw.ros_transport import ChunkError, Reassembler, RosTransportSettings, WeightsOutbox, split_weights  # noqa: E402

SMALL = 64  # chunk bytes in the pure tests


def _chunks(blob: bytes) -> list[bytes]:
    return list(split_weights(blob, SMALL))


def _feed(r: Reassembler, version: int, chunks: list[bytes]) -> list[bytes]:
    return [b for c in chunks if (b := r.add(version, c)) is not None]


# ----------------------------------------------------------------------------------- chunker and reassembler
def test_chunks_reassemble_in_any_order_and_duplicates_are_ignored():
    blob = os.urandom(1000)
    chunks = _chunks(blob)
    assert len(chunks) == 16 and all(len(c) <= rt.CHUNK_HEADER_BYTES + SMALL for c in chunks)
    assert b"".join(c[rt.CHUNK_HEADER_BYTES :] for c in chunks) == blob
    shuffled = chunks + chunks[3:9]  # every chunk, some twice
    random.Random(0).shuffle(shuffled)
    r = Reassembler(10_000, SMALL)
    assert _feed(r, 1, shuffled) == [blob] and r.delivered == 1
    assert _feed(r, 1, chunks) == []  # a resend of what we hold: nothing new
    one = _chunks(b"x" * SMALL)  # exactly one full chunk; an empty message is one empty chunk
    assert len(one) == 1 and _feed(r, 2, one) == [b"x" * SMALL]
    assert _feed(r, 3, _chunks(b"")) == [b""]


def test_a_missing_chunk_then_a_newer_version_and_interleaved_versions():
    r = Reassembler(10_000, SMALL)
    v1, v2, v3 = (os.urandom(300) for _ in range(3))
    c1, c2, c3 = _chunks(v1), _chunks(v2), _chunks(v3)
    assert _feed(r, 1, c1[:2] + c1[3:]) == []  # chunk 2 lost
    assert _feed(r, 2, c2) == [v2]  # the newer version completes; the partial v1 is dropped
    assert _feed(r, 1, c1[2:3]) == [] and r.delivered == 2  # v1's straggler changes nothing
    # interleaved: v3 starts, then chunks of v4 and v3 alternate; v4 began last, so v3 is dropped and v4 arrives
    v4 = os.urandom(300)
    c4 = _chunks(v4)
    got = _feed(r, 3, c3[:2])
    for a, b in zip(c4, c3[2:] + [c3[0]] * 2):
        got += _feed(r, 4, [a]) + _feed(r, 3, [b])
    assert got == [v4] and r.delivered == 4
    # an older version that starts after a newer one completed is ignored outright
    assert _feed(r, 3, c3) == []


def test_a_wrong_checksum_drops_that_version_until_a_good_resend():
    blob = os.urandom(200)
    good = _chunks(blob)
    bad = [
        c[: rt.CHUNK_HEADER_BYTES - 32] + hashlib.sha256(b"other").digest() + c[rt.CHUNK_HEADER_BYTES :] for c in good
    ]
    r = Reassembler(10_000, SMALL)
    _feed(r, 1, bad[:-1])
    with pytest.raises(ChunkError, match="fails its SHA-256"):
        r.add(1, bad[-1])
    assert r.delivered == 0
    assert _feed(r, 1, good) == [blob] and r.delivered == 1  # the resend, well formed


def test_garbage_and_oversized_chunk_headers_are_refused():
    r = Reassembler(1000, SMALL)
    blob = os.urandom(200)
    chunks = _chunks(blob)
    head = rt._CHUNK
    digest = hashlib.sha256(blob).digest()
    cases = {
        "truncated chunk": b"tiny",
        "exceed the 1000-byte limit": head.pack(0, 2**20, 2**40, digest),  # a 1 TiB promise
        "does not fit": head.pack(0, 3, 200, digest) + blob[:SMALL],  # 200 bytes are 4 chunks of 64
        "does not fit ": head.pack(4, 4, 200, digest) + blob[:8],  # index past the end
        "holds 63 bytes, not 64": head.pack(0, 4, 200, digest) + blob[:63],
        "holds 9 bytes, not 8": head.pack(3, 4, 200, digest) + blob[192:] + b"!",
    }
    for why, bad in cases.items():
        with pytest.raises(ChunkError, match=why.strip()):
            r.add(1, bad)
    _feed(r, 1, chunks[:2])
    liar = head.pack(2, 4, 200, hashlib.sha256(b"x").digest()) + blob[128:192]  # another checksum, same version
    with pytest.raises(ChunkError, match="disagrees"):
        r.add(1, liar)
    assert _feed(r, 1, chunks[2:]) == [blob]  # the refusals changed nothing
    assert issubclass(ChunkError, rt.FrameError)  # logged and dropped by the transport's callback like a bad frame


def test_outbox_keeps_only_the_newest_and_resends_until_acknowledged():
    o = WeightsOutbox(resend_s=0.2)
    assert o.take(timeout=0.01) is None  # nothing offered
    assert o.offer(b"v1") == 1 and o.take(timeout=0.01) == (1, b"v1")
    o.sent()
    for i in range(2, 6):  # a burst while v1 is unacknowledged: only the newest is kept
        o.offer(b"v%d" % i)
    assert o.take(timeout=0.05) is None  # not due: v1 was just sent and is not acknowledged
    o.ack(1)
    assert o.take(timeout=0.01) == (5, b"v5")  # v2..v4 never go out
    o.sent()
    t0 = time.monotonic()
    assert o.take(timeout=5) == (5, b"v5")  # no acknowledgement: the same version again after resend_s
    assert time.monotonic() - t0 >= 0.15
    o.sent()
    t0 = time.monotonic()
    assert o.take(timeout=5) == (5, b"v5")  # still none: again, after twice as long (a link slower than resend_s)
    assert time.monotonic() - t0 >= 0.35
    o.sent()
    o.ack(5)
    assert o.take(timeout=0.3) is None and o._newest is None  # acknowledged: nothing held, nothing to send
    o.ack(99)  # an acknowledgement of what was never published changes nothing
    assert o.acked == 5
    o.offer(b"v6")
    o.close()
    assert o.take() is None  # closed: returns at once


# ------------------------------------------------------------------------------------ authenticate: false
def test_unauthenticated_frames_only_on_a_graph_confined_to_this_machine(monkeypatch):
    from hw.ros_transport import confined_graph

    assert confined_graph({}) is None  # unset: SUBNET
    assert confined_graph({"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"}) is None
    assert confined_graph({"ROS_AUTOMATIC_DISCOVERY_RANGE": "SYSTEM_DEFAULT"}) is None
    assert confined_graph({"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}) == "ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST"
    assert (
        confined_graph({"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_STATIC_PEERS": "127.0.0.1;localhost; [::1]"})
        is not None
    )
    assert (
        confined_graph({"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_STATIC_PEERS": "127.0.0.1;192.168.1.20"})
        is None
    )  # a peer on another machine
    assert confined_graph({"ROS_AUTOMATIC_DISCOVERY_RANGE": "OFF", "ROS_STATIC_PEERS": "10.0.0.2"}) is not None
    assert confined_graph({"ROS_LOCALHOST_ONLY": "1", "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"}) is not None
    assert confined_graph({"ROS_LOCALHOST_ONLY": "0"}) is None
    assert confined_graph({}, isolated=True) is not None

    monkeypatch.setattr(rt, "network_isolated", lambda: False)
    for var in ("ROS_LOCALHOST_ONLY", "ROS_STATIC_PEERS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "SUBNET")
    with pytest.raises(
        ValueError,
        match="authenticate=false.*ROS_AUTOMATIC_DISCOVERY_RANGE='SUBNET'.*Fix: export "
        "ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST.*runtime.authenticate=true",
    ):
        RosTransportSettings.from_mapping({"authenticate": False})
    with pytest.raises(ValueError, match="authenticate=false"):  # (from_config reads the settings the same way)
        rt.RosTransport.from_config({"authenticate": False}, None, "actor")
    assert RosTransportSettings.from_mapping({"authenticate": True}).authenticate  # the default is untouched
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    assert not RosTransportSettings.from_mapping({"authenticate": False}).authenticate
    monkeypatch.setenv("ROS_STATIC_PEERS", "robot.lan")
    with pytest.raises(ValueError, match="ROS_STATIC_PEERS='robot.lan'"):
        RosTransportSettings(authenticate=False)


# ------------------------------------------------------------------------------ weights over real DDS, loaded
def _wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _burst_body():
    import subprocess
    import sys
    import threading

    from hw.ros_transport import RosTransport

    key = os.urandom(32)
    settings = RosTransportSettings(heartbeat_s=0.1, peer_timeout_s=10.0)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # keeps one of the cores busy throughout
    actor = learner = None
    stop = threading.Event()
    try:
        actor, learner = RosTransport("actor", key, settings), RosTransport("learner", key, settings)
        lch = learner.connect(timeout=30)
        assert lch is not None, "no actor beacon heard"
        box = []
        _wait(lambda: (c := actor.accept()) is not None and box.append(c) is None, 30, "accept")
        ach = box.pop()
        bases: dict[int, np.ndarray] = {}
        got: list[tuple[int, int, bool]] = []  # (size, version, bytes intact) of every weights the actor received

        def actor_loop():  # the actor's side: take what arrived, as its control loop would, and check every byte
            while not stop.is_set():
                msg = ach.recv(timeout=0.05)
                if msg is not None and msg.kind == "weights":
                    v, w = int(msg.meta["version"]), msg.arrays["w"]
                    base = bases[int(msg.meta["bytes"])]
                    got.append((w.size, v, w.shape == base.shape and np.array_equal(w ^ np.uint8(v), base)))

        reader = threading.Thread(target=actor_loop, daemon=True)
        reader.start()
        version, rng = 0, np.random.default_rng(0)

        def burst(size: int, n: int) -> None:
            nonlocal version
            bases[size] = rng.integers(0, 256, size, dtype=np.uint8)
            t0, first = time.monotonic(), len(got)
            for _ in range(n):  # back to back, as fast as the learner side can make and queue them
                version += 1
                assert lch.send("weights", {"version": version, "bytes": size}, {"w": bases[size] ^ np.uint8(version)})
            queued = time.monotonic() - t0
            _wait(lambda: got and got[-1][1] == version, 90, f"the actor to hold v{version} ({size} bytes)")
            print(
                f"{n} x {size / 2**20:.1f} MiB: queued in {queued:.2f} s, newest held after "
                f"{time.monotonic() - t0:.2f} s; the actor received versions {[v for _, v, _ in got[first:]]}"
            )

        burst(512 << 10, 50)
        burst(20 << 20, 50)
        # chunks lost on the way (the first copy of every version misses one): the learner resends until acknowledged
        seen, deliver = set(), ach._chunk

        def lossy(frame):
            if frame.seq in seen or rt._CHUNK.unpack_from(frame.payload)[0] != 1:
                return deliver(frame)
            seen.add(frame.seq)

        ach._chunk = lossy
        burst(512 << 10, 10)
        assert seen, "no chunk was dropped"
        assert all(ok for _, _, ok in got), [g for g in got if not g[2]]
        versions = [v for _, v, _ in got]
        assert versions == sorted(set(versions)), versions  # only ever newer versions
        assert not lch.closed and not ach.closed, (lch.error, ach.error)
        out = lch.weights_out
        _wait(lambda: out.acked == out.version, 30, "the learner to see the newest acknowledged")
        print(f"weights ok: {len(got)} intact deliveries, resent {len(seen)} lossy versions")
    finally:
        stop.set()
        hog.kill()
        hog.wait()
        for t in (learner, actor):
            if t is not None:
                t.close()


def test_weights_bursts_under_load_always_end_on_the_newest_intact():
    """50 versions of 0.5 MiB, then 50 of 20 MiB, queued back to back while another process keeps a core busy: the
    actor ends on the newest version each time and every version it receives is intact, bit for bit (received ones
    only ever get newer). Then versions whose first copy loses a chunk: the learner resends until acknowledged."""
    out = run_in_netns(__name__, "_burst_body", timeout=240)
    print("\n".join(ln for ln in out.stdout.splitlines() if "MiB" in ln or "ok" in ln))
    assert "weights ok" in out.stdout
