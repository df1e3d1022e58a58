"""`redline serve` over real HTTP on loopback: keys, validation, usage, batching, errors, limits."""

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from redline.generation import ScriptedEngine
from redline.serve import EngineUnavailable, FlakyEngine, make_app, start_server

CHAT = {"model": "m", "messages": [{"role": "user", "content": "Say hi"}], "temperature": 0, "max_tokens": 8}


@pytest.fixture
def echo_server():
    engine = ScriptedEngine(lambda prompt, seed: f"you said {prompt[-1]['content']}")
    app = make_app(engine, "m", api_key="sesame", batch_wait_ms=20)
    with start_server(app) as server:
        yield server, engine


def _post(server, body, key="sesame", **kwargs):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{server.url}/chat/completions", json=body, headers=headers, timeout=10, **kwargs)


def test_chat_completion_has_openai_shape_and_usage(echo_server):
    server, _ = echo_server
    r = _post(server, CHAT)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "m"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "you said Say hi"}
    assert body["choices"][0]["finish_reason"] == "stop"
    # ScriptedEngine counts words as tokens: prompt "Say hi" = 2, reply = 4
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}


def test_max_tokens_and_stop_reach_the_engine(echo_server):
    server, _ = echo_server
    r = _post(server, {**CHAT, "max_tokens": 2})
    assert r.json()["choices"][0]["message"]["content"] == "you said"
    assert r.json()["choices"][0]["finish_reason"] == "length"
    r = _post(server, {**CHAT, "stop": ["said"]})
    assert r.json()["choices"][0]["message"]["content"] == "you "


def test_models_lists_the_served_model(echo_server):
    server, _ = echo_server
    r = httpx.get(f"{server.url}/models", headers={"Authorization": "Bearer sesame"})
    assert [m["id"] for m in r.json()["data"]] == ["m"]


def test_a_bad_or_missing_key_is_401(echo_server):
    server, engine = echo_server
    for key in ("wrong", None):
        r = _post(server, CHAT, key=key)
        assert r.status_code == 401
        assert "API key" in r.json()["error"]["message"]
    assert httpx.get(f"{server.url}/models").status_code == 401
    assert engine.calls == []
    assert httpx.get(server.url.removesuffix("/v1") + "/health").status_code == 200  # no key needed


@pytest.mark.parametrize(
    "body, status, says",
    [
        ({"model": "m", "messages": []}, 422, "messages"),
        ({"model": "m"}, 422, "messages"),
        ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, 422, "messages.0.role"),
        ({**CHAT, "temperature": 5}, 422, "temperature"),
        ({**CHAT, "max_tokens": 0}, 422, "max_tokens"),
        ({**CHAT, "stream": True}, 400, "stream"),
        ({**CHAT, "n": 3}, 400, "n > 1"),
        ({**CHAT, "model": "gpt-9"}, 404, "serves 'm'"),
    ],
)
def test_malformed_requests_get_a_clear_error(echo_server, body, status, says):
    server, engine = echo_server
    r = _post(server, body)
    assert r.status_code == status, r.text
    assert says in r.json()["error"]["message"]
    assert engine.calls == []


def test_a_body_that_is_not_json_is_400(echo_server):
    server, _ = echo_server
    r = httpx.post(f"{server.url}/chat/completions", content=b"{not json", timeout=10,
                   headers={"Authorization": "Bearer sesame", "Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]


def test_concurrent_requests_are_batched(echo_server):
    server, _ = echo_server
    app = server.app
    with ThreadPoolExecutor(8) as pool:
        bodies = [{**CHAT, "messages": [{"role": "user", "content": f"number {i}"}]} for i in range(8)]
        replies = list(pool.map(lambda b: _post(server, b), bodies))
    assert [r.json()["choices"][0]["message"]["content"] for r in replies] == [f"you said number {i}" for i in range(8)]
    assert app.state.stats["generated"] == 8
    assert app.state.stats["batches"] < 8  # several requests shared an engine call


def test_requests_with_other_settings_are_not_batched_together():
    engine = ScriptedEngine(lambda prompt, seed: "one two three four five")
    app = make_app(engine, "m", batch_wait_ms=50)
    with start_server(app) as server, ThreadPoolExecutor(4) as pool:
        bodies = [{**CHAT, "max_tokens": n} for n in (1, 1, 3, 3)]
        texts = [r.json()["choices"][0]["message"]["content"] for r in pool.map(lambda b: _post(server, b, key=None), bodies)]
    assert texts == ["one", "one", "one two three", "one two three"]


def test_seeds_reach_the_engine_per_request():
    engine = ScriptedEngine(lambda prompt, seed: f"seed {seed}")
    with start_server(make_app(engine, "m")) as server:
        assert _post(server, {**CHAT, "seed": 42}, key=None).json()["choices"][0]["message"]["content"] == "seed 42"


def test_engine_failures_are_503_and_500():
    flaky = FlakyEngine(ScriptedEngine(["fine"]), failures=1)
    with start_server(make_app(flaky, "m")) as server:
        first, second = _post(server, CHAT, key=None), _post(server, CHAT, key=None)
    assert first.status_code == 503 and "injected failure 1 of 1" in first.json()["error"]["message"]
    assert second.status_code == 200 and flaky.calls == 2
    broken = FlakyEngine(ScriptedEngine(["fine"]), failures=5, error=RuntimeError)
    with start_server(make_app(broken, "m")) as server:
        r = _post(server, CHAT, key=None)
    assert r.status_code == 500 and "RuntimeError" in r.json()["error"]["message"]


def test_flaky_engine_is_an_engine_that_fails_first():
    flaky = FlakyEngine(ScriptedEngine(["ok"]), failures=2)
    from redline.generation import SamplingParams

    for _ in range(2):
        with pytest.raises(EngineUnavailable):
            flaky.generate(["p"], SamplingParams())
    assert flaky.generate(["p"], SamplingParams())[0].text == "ok"


class GatedEngine:
    """Blocks every generate call until ``gate`` is set: holds a request in flight on purpose."""

    def __init__(self, engine):
        self.engine, self.gate, self.entered = engine, threading.Event(), threading.Event()

    def generate(self, prompts, params, seeds=None, progress=True):
        self.entered.set()
        assert self.gate.wait(10)
        return self.engine.generate(prompts, params, seeds=seeds, progress=progress)


def test_requests_beyond_the_concurrency_bound_get_429():
    engine = GatedEngine(ScriptedEngine(["done"]))
    with start_server(make_app(engine, "m", max_concurrency=1)) as server, ThreadPoolExecutor(1) as pool:
        held = pool.submit(_post, server, CHAT, None)
        assert engine.entered.wait(10)
        busy = _post(server, CHAT, key=None)
        engine.gate.set()
        assert held.result().status_code == 200
    assert busy.status_code == 429 and busy.headers["retry-after"] == "1"


def test_redline_serve_command_with_tiny_random(tmp_path):
    """The real command, as a user starts it: tiny-random behind `redline serve`, judged over HTTP."""
    import os
    import socket
    import subprocess
    import sys
    import time

    from redline.judges import WINNERS, Item
    from redline.judges.llm import OpenAIJudge

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "redline.cli", "serve", "--model", "tiny-random", "--device", "cpu", "--port", str(port),
         "--max-batch", "4"],
        env={**os.environ, "REDLINE_API_KEY": "sesame"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "redline serve did not come up"
            time.sleep(0.2)
        body = {"model": "tiny-random", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "temperature": 0}
        assert httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60).status_code == 401
        r = httpx.post(f"{base}/v1/chat/completions", json=body, headers={"Authorization": "Bearer sesame"}, timeout=60)
        assert r.status_code == 200, r.text
        usage = r.json()["usage"]
        assert usage["prompt_tokens"] > 1 and 1 <= usage["completion_tokens"] <= 5
        judge = OpenAIJudge("tiny-random", f"{base}/v1", api_key="sesame", cache="off", max_tokens=4, timeout=60)
        verdicts = judge.judge_many([Item("Say hi.", "Hello!", "Bye."), Item("Count to two.", "1 2", "3")])
        judge.close()
        # a random model's answers rarely parse; what matters is that every call came back
        assert all(v.winner in WINNERS and "error" not in v.detail for v in verdicts)
        assert judge.stats["requests"] == 4 and judge.stats["failures"] == 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
