"""Preference rewards: answer parsing, the OpenAI-compatible HTTP labeller against a local server, cached answers,
and a Bradley-Terry model that recovers a synthetic oracle's ordering."""

import base64
import io
import json
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from PIL import Image
from test_rewards_helpers import SquareEnv, draw, record, square_store  # noqa: F401

from robot_rl.data.store import EpisodeStore
from robot_rl.rewards import load_reward_model, wrap_reward
from robot_rl.rewards.frames import load_frames
from robot_rl.rewards.preference import (
    FIRST,
    SECOND,
    UNSURE,
    EndpointError,
    HTTPChatLabeller,
    PreferenceConfig,
    PreferenceLabeller,
    collect_preferences,
    parse_answer,
    train_preference_reward,
)


def progress(front: np.ndarray) -> float:
    """Ground-truth task progress of a SquareEnv front frame: x + y of the red square (from the pixels)."""
    rows, cols = np.nonzero((front[..., 0] > 180) & (front[..., 1] < 80))
    return float(cols.mean() + (front.shape[0] - rows.mean()))


class Oracle(PreferenceLabeller):
    """Prefers the frame whose square is further along, unsure within 1 px."""

    def __init__(self):
        self.calls = 0

    def identity(self):
        return {"kind": "oracle", "version": 1}

    def compare(self, first, second, task):
        self.calls += 1
        d = np.array([progress(a) - progress(b) for a, b in zip(first, second)])
        return np.where(d > 1, FIRST, np.where(d < -1, SECOND, UNSURE)).astype(np.int8)


@pytest.mark.parametrize(
    "text, want",
    [
        ("Image 2 shows the cube lifted.\nAnswer: 2", SECOND),
        ("**Answer:** 1", FIRST),
        ("answer: image 1.", FIRST),
        ("Answer: 0", UNSURE),
        ("I think answer: 2 ... wait, Answer: 1", FIRST),
        ('{"answer": 2}', SECOND),
        ("2", SECOND),
        ("Image 1", FIRST),
        ("The first shows more; image 1 is better", FIRST),
        ("Both image 1 and image 2 look alike", UNSURE),
        ("no idea", UNSURE),
        ("", UNSURE),
        ("Answer: none", UNSURE),
    ],
)
def test_parse_answer(text, want):
    assert parse_answer(text) == want


class Endpoint:
    """A local OpenAI-compatible chat endpoint on 127.0.0.1 that answers like the oracle, after a scripted list of
    misbehaviours (``"500"``, ``"400"``, ``"slow"``, ``"garbage"``) consumed one per request."""

    def __init__(self):
        self.requests, self.script = [], []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                act = endpoint.script.pop(0) if endpoint.script else "ok"
                if act == "slow":
                    time.sleep(0.5)
                if act in ("500", "400"):
                    self.send_response(int(act))
                    self.end_headers()
                    self.wfile.write(b'{"error": "scripted"}')
                    return
                if act == "garbage":
                    reply = b"<html>not json</html>"
                else:
                    urls = [p["image_url"]["url"] for p in body["messages"][0]["content"] if p["type"] == "image_url"]
                    imgs = [np.asarray(Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1])))) for u in urls]
                    d = progress(imgs[0]) - progress(imgs[1])
                    text = f"Comparing the two images.\n**Answer: {'1' if d > 0 else '2'}**"
                    reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                try:
                    self.wfile.write(reply)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint():
    ep = Endpoint()
    yield ep
    ep.close()


def test_http_labeller_request_retries_and_errors(endpoint, monkeypatch):
    monkeypatch.setenv("RRL_TEST_TOKEN", "sekret")
    waits = []
    lab = HTTPChatLabeller(
        endpoint.url,
        "judge-1",
        api_key_env="RRL_TEST_TOKEN",
        timeout_s=0.25,
        retries=2,
        image_size=48,
        sleep=waits.append,
    )
    a = np.stack([draw(np.array([0.8, 0.8]))["front"], draw(np.array([0.1, 0.1]))["front"]])
    b = a[::-1].copy()
    endpoint.script = ["500", "slow"]  # one server error and one timeout, then answers
    ans = lab.compare(a, b, "move the red square to the top right")
    assert ans.tolist() == [FIRST, SECOND] and lab.calls == 4 and waits == [1.0, 2.0]
    req = endpoint.requests[-1]
    assert req["path"] == "/v1/chat/completions" and req["headers"]["Authorization"] == "Bearer sekret"
    body = req["body"]
    assert body["model"] == "judge-1" and body["temperature"] == 0
    parts = body["messages"][0]["content"]
    assert "move the red square to the top right" in parts[0]["text"]
    urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert len(urls) == 2 and all(u.startswith("data:image/png;base64,") for u in urls)
    assert Image.open(io.BytesIO(base64.b64decode(urls[0].split(",", 1)[1]))).size == (48, 48)
    endpoint.script = ["400"]
    with pytest.raises(EndpointError, match="HTTP 400"):  # a client error is not retried
        lab.compare(a[:1], b[:1], "task")
    endpoint.script = ["500"] * 3
    with pytest.raises(EndpointError, match="no answer after 3 attempts"):
        lab.compare(a[:1], b[:1], "task")
    endpoint.script = ["garbage"]
    with pytest.raises(EndpointError, match="not a chat-completions reply"):
        lab.compare(a[:1], b[:1], "task")
    monkeypatch.delenv("RRL_TEST_TOKEN")
    with pytest.raises(EndpointError, match="RRL_TEST_TOKEN"):
        lab.compare(a[:1], b[:1], "task")
    assert lab.identity() == HTTPChatLabeller(endpoint.url + "/chat/completions", "judge-1", image_size=48).identity()
    assert lab.identity() != HTTPChatLabeller(endpoint.url, "judge-2", image_size=48).identity()


def test_answers_are_cached_in_the_store(square_store, tmp_path):
    shutil.copytree(square_store, tmp_path / "s.zarr")
    store = EpisodeStore.open(tmp_path / "s.zarr")
    frames = load_frames(store, ["front"])
    oracle = Oracle()
    first = collect_preferences(store, frames, "front", oracle, "task", pairs=40, seed=3, batch=8)
    assert first["asked"] == 40 and oracle.calls == 5
    again = collect_preferences(store, frames, "front", oracle, "task", pairs=40, seed=3, batch=8)
    assert again["cached"] == 40 and again["labeller_calls"] == 0 and oracle.calls == 5
    np.testing.assert_array_equal(first["answer"], again["answer"])
    more = collect_preferences(store, frames, "front", oracle, "task", pairs=50, seed=3, batch=8)
    assert more["cached"] == 40 and more["asked"] == 10  # the first 40 pairs of the same seed are reused
    other = collect_preferences(store, frames, "front", oracle, "another task", pairs=5, seed=3)
    assert other["asked"] == 5 and other["label_set"] != first["label_set"]


def test_bradley_terry_recovers_the_oracle(square_store, tmp_path):
    shutil.copytree(square_store, tmp_path / "s.zarr")
    store = EpisodeStore.open(tmp_path / "s.zarr")
    cfg = PreferenceConfig.from_dict(
        {
            "pairs": 200,
            "steps": 200,
            "batch_size": 64,
            "eval_every": 50,
            "feature_dim": 16,
            "hidden": 32,
            "num_kernels": 4,
            "val_fraction": 0.2,
            "positive_last_k": 1,
            "margin": 0,
            "cameras": ["front"],
        }
    )
    torch.manual_seed(0)
    model, rep = train_preference_reward(store, Oracle(), cfg, seed=0, device="cpu", out=tmp_path / "bt")
    assert rep["fit"]["val_accuracy"] >= 0.85, rep["fit"]
    held_out = record(tmp_path / "held_out.zarr", 3, 3, seed=7, steps=10)
    f = load_frames(held_out)
    r = load_reward_model(tmp_path / "bt", "cpu").score({"front": f.images["front"]})
    truth = np.array([progress(x) for x in f.images["front"]])
    rank = lambda x: np.argsort(np.argsort(x))  # noqa: E731
    spearman = np.corrcoef(rank(r), rank(truth))[0, 1]
    assert spearman >= 0.85, spearman
    np.testing.assert_allclose(r, model.score({"front": f.images["front"]}), rtol=1e-5, atol=1e-6)
    assert model.threshold is not None  # the store has successes: a success threshold was calibrated
    env = wrap_reward(SquareEnv(), {"name": "preference", "path": str(tmp_path / "bt"), "reward": "score"}, "cpu")
    env.reset(seed=1)
    rewards = [env.step(env.unwrapped.expert_action())[1] for _ in range(6)]
    assert rewards[-1] > rewards[0]  # moving towards the goal raises the learned reward
