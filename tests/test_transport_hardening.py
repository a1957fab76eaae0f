"""Transport hardening: the socket transport's handshake (wrong keys, half-open clients, reconnecting learners) and
malformed messages from an authenticated peer, rejected by the actor's and the learner's message handlers without
taking either down. No assertion depends on timing: every wait is for a condition, with a generous limit."""

import socket
import threading
from multiprocessing import AuthenticationError, Pipe
from multiprocessing.connection import Client

import numpy as np
import pytest
from test_runtime import _run_dir, _wait

from robot_rl.runtime.messages import Channel, MessageError, decode, encode
from robot_rl.runtime.transport import SocketTransport

WAIT_S = 60.0  # generous: these run on a loaded 2-core machine


def _recv(ch, kind, timeout=WAIT_S):
    """The next ``kind`` message on ``ch`` (others are skipped)."""
    box = []
    _wait(
        lambda: (m := ch.recv(timeout=0.05)) is not None and m.kind == kind and not box.append(m),
        timeout,
        f"a {kind} message (closed={ch.closed}, error={ch.error})",
    )
    return box[0]


def _accept(transport):
    box = []
    _wait(lambda: (c := transport.accept()) is not None and not box.append(c), WAIT_S, "the actor to accept")
    return box[0]


def _exchange(actor, learner_ch):
    """hello learner->actor and sync actor->learner over a fresh connection; returns the actor's channel."""
    actor_ch = _accept(actor)
    assert learner_ch.send("hello", {"store_episodes": 0})
    assert _recv(actor_ch, "hello").meta == {"store_episodes": 0}
    assert actor_ch.send("sync", {"episodes": 0})
    assert _recv(learner_ch, "sync").meta == {"episodes": 0}
    return actor_ch


class _Log:
    """Everything printed so far (capsys drains on read, so keep what was read)."""

    def __init__(self, capsys):
        self.capsys, self.text = capsys, ""

    def has(self, line):
        self.text += self.capsys.readouterr().out
        return line in self.text


# ------------------------------------------------------------------------------------------------ handshake
@pytest.fixture
def actor(tmp_path):
    t = SocketTransport(tmp_path)
    t.listen()
    yield t
    t.close()


def test_a_wrong_key_is_refused_and_logged_and_the_right_key_still_gets_in(tmp_path, actor, capsys):
    log = _Log(capsys)
    with pytest.raises(AuthenticationError):  # this used to kill the actor's accept thread for good
        Client(actor.address, family="AF_UNIX", authkey=b"another run's key")
    _wait(lambda: log.has("refused a connection") and log.has("wrong runtime.key"), WAIT_S, "the refusal logged")
    stranger = SocketTransport(tmp_path)
    stranger.key = b"another run's key"
    with pytest.raises(AuthenticationError, match="wrong runtime.key"):  # a learner says why it cannot connect
        stranger.connect(WAIT_S)
    learner_ch = SocketTransport(tmp_path).connect(WAIT_S)
    assert learner_ch is not None
    _exchange(actor, learner_ch)


def test_a_half_open_client_does_not_block_the_next_one_and_is_dropped(tmp_path, capsys):
    patient = SocketTransport(tmp_path, handshake_timeout_s=3600)  # the silent client cannot time out in this test
    patient.listen()
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        silent.connect(patient.address)  # connects, never answers the challenge
        learner_ch = SocketTransport(tmp_path).connect(WAIT_S)
        assert learner_ch is not None
        _exchange(patient, learner_ch)
    finally:
        silent.close()
        patient.close()
    strict = SocketTransport(tmp_path, handshake_timeout_s=0.5)
    strict.listen()
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        silent.connect(strict.address)
        silent.settimeout(WAIT_S)
        while silent.recv(4096):  # the challenge, then end of file: the actor dropped us
            pass
        log = _Log(capsys)
        _wait(lambda: log.has("did not complete the handshake (timed out"), WAIT_S, "the drop logged")
        assert _exchange(strict, SocketTransport(tmp_path).connect(WAIT_S)) is not None
    finally:
        silent.close()
        strict.close()


def test_a_restarted_learner_always_gets_back_in(tmp_path, actor):
    learner = SocketTransport(tmp_path)
    for attempt in range(5):
        if attempt % 2:  # a wrong-key client in between changes nothing
            with pytest.raises(AuthenticationError):
                Client(actor.address, family="AF_UNIX", authkey=b"wrong")
        learner_ch = learner.connect(WAIT_S)
        assert learner_ch is not None, f"attempt {attempt}: no connection"
        actor_ch = _exchange(actor, learner_ch)
        learner_ch.close()  # the learner goes away (a crash closes the socket the same way)
        _wait(lambda ch=actor_ch: ch.recv(timeout=0.05) is None and ch.closed, WAIT_S, "the actor to see it go")
        actor_ch.close()


# --------------------------------------------------------------------------------------------- message meta
@pytest.mark.parametrize(
    "kind, meta, error",
    [
        ("weights", {}, "without 'version'"),
        ("weights", {"version": "7"}, "not an integer"),
        ("sync", {"episodes": "3"}, "not an integer >= 0"),
        ("sync", {"episodes": -1}, "not an integer >= 0"),
        ("sync", {"episodes": 3, "raw": "yes"}, "not true or false"),
        ("hello", {"store_episodes": 1.5}, "not an integer >= 0"),
        ("episode_end", {"steps": 3, "store_episodes": 1}, "without 'success'"),
        ("episode_end", {"steps": 3, "store_episodes": 1, "success": True, "stats": {"x": "high"}}, "mapping"),
        ("done", {"steps": None}, "not an integer >= 0"),
    ],
)
def test_decode_refuses_a_meta_that_does_not_fit_its_kind(kind, meta, error):
    with pytest.raises(MessageError, match=error):
        decode(encode(kind, meta))


# ------------------------------------------------------------------------------------------------ the actor
@pytest.fixture(scope="module")
def actor_proc(tmp_path_factory, toy_task_module):
    from robot_rl.runtime.actor import Actor

    a = Actor(_run_dir(tmp_path_factory.mktemp("actor"), toy_task_module))
    yield a
    a.store.close()
    a.env.close()


@pytest.fixture(scope="module")
def toy_task_module():
    from conftest import TOY_TASK

    return dict(TOY_TASK, env_kwargs={})


def _to_actor(actor_proc, data):
    """``data`` (bytes) from the learner's end of a fresh connection; the actor handles it as between two control
    steps. Returns the actor's channel."""
    ours, theirs = Pipe()
    actor_proc.ch, actor_proc._ch_version = Channel(ours), -1
    theirs.send_bytes(data)
    assert actor_proc._poll_messages() is False  # no exception, no stop
    theirs.close()
    return actor_proc.ch


def _weights(actor_proc, change=None):
    w = {k: v.numpy().copy() for k, v in actor_proc.agent.policy_weights().items()}
    if change:
        change(w)
    return w


def _first(w):
    return next(k for k in w if k.startswith("actor."))  # a float32 layer of the policy


@pytest.mark.parametrize(
    "case",
    [
        "weights without version",
        "weights with a string version",
        "garbage bytes",
        "sync with a string count",
        "weights of the wrong shape",
        "weights of the wrong dtype",
        "weights missing an array",
        "weights with extra",
        "weights holding NaN",
    ],
)
def test_the_actor_rejects_a_malformed_message_and_drops_only_the_connection(actor_proc, case, capsys):
    w = _weights(actor_proc)
    data = {
        "weights without version": lambda: encode("weights", {}, w),
        "weights with a string version": lambda: encode("weights", {"version": "3"}, w),
        "garbage bytes": lambda: b"\x05\x00\x00\x00\x00\x00\x00\x00not a message",
        "sync with a string count": lambda: encode("sync", {"episodes": "0"}),
        "weights of the wrong shape": lambda: encode(
            "weights",
            {"version": 3},
            _weights(actor_proc, lambda w: w.update({_first(w): np.zeros((7, 7), np.float32)})),
        ),
        "weights of the wrong dtype": lambda: encode(
            "weights",
            {"version": 3},
            _weights(actor_proc, lambda w: w.update({_first(w): w[_first(w)].astype(np.float64)})),
        ),
        "weights missing an array": lambda: encode(
            "weights", {"version": 3}, _weights(actor_proc, lambda w: w.pop(_first(w)))
        ),
        "weights with extra": lambda: encode("weights", {"version": 3}, {**w, "exec": np.zeros(1, np.float32)}),
        "weights holding NaN": lambda: encode(
            "weights", {"version": 3}, _weights(actor_proc, lambda w: w[_first(w)].fill(np.nan))
        ),
    }[case]()
    before = {k: v.clone() for k, v in actor_proc.agent.policy_weights().items()}
    ch = _to_actor(actor_proc, data)
    assert ch.closed  # the learner reconnects and is resynced
    assert actor_proc.version == -1 and actor_proc.weight_updates == 0 and not actor_proc.synced
    assert all(np.array_equal(before[k], v) for k, v in actor_proc.agent.policy_weights().items())
    out = capsys.readouterr().out
    assert "rejected weights" in out or "learner connection lost" in out, out
    # the same actor takes good weights and a sync over the next connection
    ours, theirs = Pipe()
    actor_proc.ch, actor_proc._ch_version = Channel(ours), -1
    theirs.send_bytes(encode("sync", {"episodes": 0}))
    theirs.send_bytes(encode("weights", {"version": 5}, _weights(actor_proc, lambda w: w[_first(w)].fill(0.25))))
    assert actor_proc._poll_messages() is False and not actor_proc.ch.closed
    assert actor_proc.version == 5 and actor_proc.synced
    assert np.all(actor_proc.agent.policy_weights()[_first(w)].numpy() == 0.25)
    actor_proc.agent.load_policy_weights(before)  # leave it as the next case expects
    actor_proc.version, actor_proc.weight_updates, actor_proc.synced = -1, 0, False
    actor_proc.ch.close()
    theirs.close()


# ---------------------------------------------------------------------------------------------- the learner
@pytest.fixture(scope="module")
def learner_proc(tmp_path_factory, toy_task_module):
    from robot_rl.runtime.learner import Learner
    from robot_rl.trainer import open_online_store

    run = _run_dir(tmp_path_factory.mktemp("learner"), toy_task_module)
    ln = Learner(run)
    open_online_store(run, ln.trainer.env).close()  # the actor's (empty) store: the learner syncs from this file
    yield ln
    ln.writer.close()
    ln.transport.close()


def _step(i, state_shape=(4,), drop=()):
    a = {
        "obs.state": np.full(state_shape, i, np.float32),
        "next_obs.state": np.full(state_shape, i + 1, np.float32),
        "action": np.zeros(2, np.float32),
        "reward": np.float32(0),
        "terminated": np.bool_(False),
        "truncated": np.bool_(i == 2),
        "is_intervention": np.bool_(False),
        "timestamp": np.float64(0.1 * i),
    }
    return encode("step", arrays={k: v for k, v in a.items() if k not in drop})


def _serve(learner_proc, messages):
    """Send ``messages`` (bytes) to the learner over a fresh connection and let it serve that connection until it
    closes it; returns the learner's channel. The sending end stays open, so only the learner can close it."""
    ours, theirs = Pipe()
    ch = Channel(ours)
    for data in messages:
        theirs.send_bytes(data)
    served = threading.Thread(target=learner_proc._serve_channel, args=(ch,), daemon=True)
    served.start()
    served.join(WAIT_S)
    alive = served.is_alive()
    theirs.close()
    served.join(WAIT_S)
    assert not alive, "the learner kept a connection that sent a malformed message"
    return ch


@pytest.mark.parametrize(
    "case, messages, error",
    [
        ("garbage bytes", lambda: [b"\xff" * 64], "malformed"),
        ("hello with a string count", lambda: [encode("hello", {"store_episodes": "0"})], "not an integer"),
        ("step with missing arrays", lambda: [_step(0), _step(1, drop=("next_obs.state", "reward"))], None),
        ("step of the wrong shape", lambda: [_step(0, state_shape=(5,))], None),
        ("step whose shape changes mid-episode", lambda: [_step(0), _step(1, state_shape=(2, 2))], None),
        (
            "step with only an observation",
            lambda: [encode("step", arrays={"obs.state": np.zeros(4, np.float32)})],
            None,
        ),
        (
            "episode_end with a string length",
            lambda: [encode("episode_end", {"steps": "3", "store_episodes": 1, "success": False})],
            "not an integer",
        ),
        (
            "hello counting more episodes than the store holds",
            lambda: [encode("hello", {"store_episodes": 10**6})],
            None,
        ),
    ],
)
def test_the_learner_rejects_a_malformed_message_and_drops_only_the_connection(
    learner_proc, case, messages, error, capsys
):
    tr = learner_proc.trainer
    before = (tr.episode, tr.step, len(tr.online), len(tr.demo))
    ch = _serve(learner_proc, messages())
    assert ch.closed
    if error:  # refused as it was decoded
        assert error in ch.error, ch.error
    else:  # refused by the handler, which says why
        assert f"rejected a {decode(messages()[-1]).kind} message from the actor" in capsys.readouterr().out
    assert (tr.episode, tr.step, len(tr.online), len(tr.demo)) == before and len(learner_proc.running) == 0
    # the same learner syncs and files an episode over the next connection
    ours, theirs = Pipe()
    ch = Channel(ours)
    served = threading.Thread(target=learner_proc._serve_channel, args=(ch,), daemon=True)
    served.start()
    for data in (
        encode("hello", {"store_episodes": tr.episode}),
        _step(0),
        _step(1),
        _step(2),
        encode("episode_end", {"steps": 3, "store_episodes": tr.episode + 1, "success": False}),
    ):
        theirs.send_bytes(data)
    _wait(lambda: tr.episode == before[0] + 1, WAIT_S, "the episode to be filed")
    sync = None
    while sync is None:
        assert theirs.poll(WAIT_S), "no sync from the learner"
        msg = decode(theirs.recv_bytes())
        sync = msg if msg.kind == "sync" else None
    assert sync.meta["episodes"] == before[0]
    assert tr.step == before[1] + 3 and not ch.closed
    theirs.close()
    served.join(WAIT_S)
    assert not served.is_alive()
