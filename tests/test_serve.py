"""`redline serve` over real HTTP on loopback: keys, validation, usage, batching, streaming, errors, limits.

The official ``openai`` client talks to it as users' programs do; tiny-random behind the real
command checks streaming, n, completions, request isolation and that a short request is not held
behind a long one.
"""

import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from redline import RedlineError
from redline.generation import ScriptedEngine
from redline.serve import EngineUnavailable, FlakyEngine, RunningServer, StreamText, make_app, start_server

openai = pytest.importorskip("openai")

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
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "you said Say hi", "refusal": None}
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
        ({"model": "m", "messages": []}, 400, "messages"),
        ({"model": "m"}, 400, "messages"),
        ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, 400, "messages.0.role"),
        ({**CHAT, "temperature": 5}, 400, "temperature"),
        ({**CHAT, "max_tokens": 0}, 400, "max_tokens"),
        ({**CHAT, "max_tokens": 10**9}, 400, "max_tokens is 1000000000; this server allows at most 1024"),
        ({**CHAT, "seed": 1180591620717411303424}, 400, "seed: Input should be less than or equal to"),
        ({**CHAT, "n": 17}, 400, "n: Input should be less than or equal to 16"),
        ({**CHAT, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop.list[str]: List should have at most 4 items"),
        ({**CHAT, "logprobs": True}, 400, "logprobs is not supported by redline serve"),
        ({**CHAT, "tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "tools is not supported"),
        ({**CHAT, "response_format": {"type": "json_object"}}, 400, "response_format is not supported"),
        ({**CHAT, "presence_penalty": 0.5}, 400, "presence_penalty is not supported"),
        ({**CHAT, "frobnicate": 1}, 400, "frobnicate: unrecognized request argument"),
        ({**CHAT, "model": "gpt-9"}, 404, "serves 'm'"),
    ],
)
def test_malformed_or_unsupported_requests_get_a_clear_error(echo_server, body, status, says):
    server, engine = echo_server
    r = _post(server, body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert says in error["message"] and error["type"] == "invalid_request_error"
    assert engine.calls == []


def test_a_request_carries_at_most_max_choices_choices():
    """--max-concurrency bounds the requests in flight; one request of 10,000 prompts would get round it."""
    from redline.serve import MAX_CHOICES

    engine = ScriptedEngine(lambda prompt, seed: f"{prompt}!")
    with start_server(make_app(engine, "m")) as server:
        post = lambda n, prompts: httpx.post(f"{server.url}/completions", timeout=10,  # noqa: E731
                                             json={"model": "m", "prompt": prompts, "n": n})
        r = post(4, [str(i) for i in range(MAX_CHOICES // 4 + 1)])
        assert r.status_code == 400 and r.json()["error"]["param"] == "prompt", r.text
        assert f"{MAX_CHOICES // 4 + 1} prompts × n 4 is {MAX_CHOICES + 4} choices" in r.json()["error"]["message"]
        assert engine.calls == []
        r = post(4, [str(i) for i in range(MAX_CHOICES // 4)])
        assert r.status_code == 200, r.text
        assert [c["text"] for c in r.json()["choices"]] == [f"{k // 4}!" for k in range(MAX_CHOICES)]


@pytest.mark.parametrize("logprobs", [0, 2])
def test_completions_logprobs_are_refused_even_at_0(echo_server, logprobs):
    """On /v1/completions, logprobs=0 still asks for each chosen token's log-probability (OpenAI, vLLM)."""
    server, engine = echo_server
    r = httpx.post(f"{server.url}/completions", json={"model": "m", "prompt": "x", "logprobs": logprobs},
                   headers={"Authorization": "Bearer sesame"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["param"] == "logprobs", r.text
    assert engine.calls == []


def test_parameters_that_ask_for_nothing_are_accepted(echo_server):
    server, _ = echo_server
    quiet = {"logprobs": False, "tools": [], "response_format": {"type": "text"}, "presence_penalty": 0, "user": "u",
             "stream": False, "n": 1, "max_completion_tokens": 8}
    assert _post(server, {**CHAT, **quiet}).status_code == 200


@pytest.mark.parametrize("method, path, status", [("GET", "/v1/nowhere", 404), ("POST", "/v1/embeddings", 404),
                                                  ("GET", "/v1/chat/completions", 405), ("GET", "/nowhere", 404),
                                                  ("GET", "/docs", 404), ("GET", "/openapi.json", 404)])  # no key there
def test_every_route_answers_errors_in_openai_shape(echo_server, method, path, status):
    server, _ = echo_server
    base = server.url.removesuffix("/v1")
    r = httpx.request(method, base + path, headers={"Authorization": "Bearer sesame"}, timeout=10)
    assert r.status_code == status
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert path in r.json()["error"]["message"]


def test_a_body_that_is_not_json_is_400(echo_server):
    server, _ = echo_server
    r = httpx.post(f"{server.url}/chat/completions", content=b"{not json", timeout=10,
                   headers={"Authorization": "Bearer sesame", "Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]


def test_a_body_that_is_no_json_object_says_so_and_names_a_missing_content_type(echo_server):
    """curl -d sends a form's Content-Type: FastAPI read no JSON and the error said 'body: Input should be a valid
    dictionary or object to extract fields from', naming neither the header nor the fix."""
    server, engine = echo_server
    url, key = f"{server.url}/chat/completions", {"Authorization": "Bearer sesame"}
    r = httpx.post(url, content=b'{"model": "m"}', timeout=10,
                   headers={**key, "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and r.json()["error"]["message"] == (
        "the request body must be a JSON object, sent with Content-Type: application/json (this one came as "
        "'application/x-www-form-urlencoded')")
    r = httpx.post(url, content=b'{"model": "m"}', headers=key, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["message"].endswith("(this one came with none)")
    r = httpx.post(url, json=[CHAT], headers=key, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["message"] == "the request body must be a JSON object"
    assert engine.calls == []


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
        models = httpx.get(f"{server.url}/models", timeout=10)  # takes no slot: a judge's check is not refused
        engine.gate.set()
        assert held.result().status_code == 200
    assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
    assert models.status_code == 200 and models.json()["data"][0]["id"] == "m"


def test_a_stream_holds_its_slot_until_its_last_event():
    engine = GatedEngine(ScriptedEngine(["done"]))
    with start_server(make_app(engine, "m", max_concurrency=1)) as server, ThreadPoolExecutor(1) as pool:
        held = pool.submit(lambda: list(_client(server).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True)))
        assert engine.entered.wait(10)  # the stream's headers are out; its reply is not
        busy = _post(server, CHAT, key=None)
        engine.gate.set()
        assert "".join(c.choices[0].delta.content or "" for c in held.result() if c.choices) == "done"
    assert busy.status_code == 429


# ----------------------------------------------------------------------------- the openai client, a scripted engine


def _client(server, key="sesame"):
    return openai.OpenAI(base_url=server.url, api_key=key, max_retries=0, timeout=60)


def test_openai_client_gets_n_choices_each_with_its_own_seed(echo_server):
    server, _ = echo_server
    r = _client(server).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], n=3, seed=5)
    assert [c.message.content for c in r.choices] == ["you said hi", "you said hi", "you said hi"]
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert r.usage.prompt_tokens == 1 and r.usage.completion_tokens == 9  # the prompt counts once


def test_a_conversation_can_send_a_reply_back_as_it_came(echo_server):
    """A chat loop appends the reply's message object, ``refusal: null`` included, to its next request."""
    server, engine = echo_server
    client, messages = _client(server), [{"role": "user", "content": "hi"}]
    messages.append(client.chat.completions.create(model="m", messages=messages).choices[0].message)
    messages.append({"role": "user", "content": "again"})
    r = client.chat.completions.create(model="m", messages=messages)
    assert r.choices[0].message.content == "you said again"
    assert [m["content"] for m in engine.calls[-1][0]] == ["hi", "you said hi", "again"]


def test_openai_client_streams_chunks_per_choice_with_usage():
    engine = ScriptedEngine(lambda prompt, seed: f"reply with seed {seed}")
    with start_server(make_app(engine, "m")) as server:
        stream = _client(server).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], n=2, seed=7, stream=True,
            stream_options={"include_usage": True})
        chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks) and len({c.id for c in chunks}) == 1
    text, finish = {0: "", 1: ""}, {}
    for c in chunks:
        for choice in c.choices:
            text[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finish[choice.index] = choice.finish_reason
    assert text == {0: "reply with seed 7", 1: "reply with seed 8"} and finish == {0: "stop", 1: "stop"}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8


def test_openai_client_completions_in_openai_order_and_streamed():
    engine = ScriptedEngine(lambda prompt, seed: f"{prompt} then {seed} STOP tail")
    with start_server(make_app(engine, "m")) as server:
        client = _client(server)
        r = client.completions.create(model="m", prompt=["a", "b"], n=2, seed=1, stop="STOP")
        assert r.object == "text_completion"
        assert [(c.index, c.text) for c in r.choices] == [(0, "a then 1 "), (1, "a then 2 "), (2, "b then 1 "), (3, "b then 2 ")]
        assert r.usage.prompt_tokens == 2
        chunks = list(client.completions.create(model="m", prompt="a", seed=1, stop=["STOP"], stream=True))
    assert "".join(c.choices[0].text for c in chunks) == "a then 1 " and chunks[-1].choices[0].finish_reason == "stop"


def test_openai_client_raises_the_servers_error():
    with start_server(make_app(ScriptedEngine(["x"]), "m")) as server:
        with pytest.raises(openai.BadRequestError, match="tools is not supported"):
            _client(server).chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}],
                tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
        with pytest.raises(openai.NotFoundError, match="Invalid URL"):
            _client(server).embeddings.create(model="m", input="hi")


def test_stream_text_never_sends_part_of_a_stop_string():
    text = StreamText(["STOP"])
    assert text.add("abc S") == "ab"  # the last 3 characters could begin "STOP": held back
    assert text.add("T") == "c"
    assert text.add("Ox") == " S"
    assert text.add("yz") == "TO"
    assert text.add(" STOP and on") == "xyz "  # cut at the stop string, which is never sent
    assert text.add(" more") == ""
    assert text.finish("abc STOxyz ") == ""
    plain = StreamText([])
    assert plain.add("a") == "a" and plain.add("b") == "b" and plain.finish("abc") == "c"


def test_a_bad_request_fails_alone_in_a_batch():
    """A batched engine call that fails is run again item by item: only the bad request fails (issue 20)."""
    def reply(prompt, seed):
        if prompt[-1]["content"] == "bad":
            raise RedlineError("a prompt has 200031 tokens; the model takes at most 2048")
        return "fine"

    engine = ScriptedEngine(reply)
    with start_server(make_app(engine, "m", batch_wait_ms=200)) as server, ThreadPoolExecutor(8) as pool:
        bodies = [{**CHAT, "messages": [{"role": "user", "content": "bad" if i == 3 else f"ok {i}"}]} for i in range(8)]
        replies = list(pool.map(lambda b: _post(server, b, key=None), bodies))
    assert [r.status_code for r in replies] == [200, 200, 200, 400, 200, 200, 200, 200]
    assert "200031 tokens" in replies[3].json()["error"]["message"]


def test_messages_the_chat_template_refuses_are_400():
    """Gemma's template has no system role, Mistral's wants roles to alternate: the request's fault, not a 500."""
    jinja2 = pytest.importorskip("jinja2")

    def reply(prompt, seed):
        if prompt[0]["role"] == "system":  # what a template's raise_exception raises while the engine encodes
            raise jinja2.exceptions.TemplateError("System role not supported")
        return "fine"

    with start_server(make_app(ScriptedEngine(reply), "m", batch_wait_ms=100)) as server, ThreadPoolExecutor(3) as pool:
        system = {**CHAT, "messages": [{"role": "system", "content": "Be brief."}, *CHAT["messages"]]}
        replies = list(pool.map(lambda b: _post(server, b, key=None), [CHAT, system, CHAT]))
    assert [r.status_code for r in replies] == [200, 400, 200]
    error = replies[1].json()["error"]
    assert error["param"] == "messages" and error["type"] == "invalid_request_error"
    assert "chat template refuses them: System role not supported" in error["message"]


# ----------------------------------------------------------------------------- the command


def test_serve_without_fastapi_is_one_line():
    code = ("import sys; sys.modules['fastapi'] = None; from redline.cli import main; "
            "sys.exit(main(['serve', '--model', 'tiny-random']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "redline: error: redline serve needs fastapi and uvicorn (fastapi is not installed): pip install 'redline[serve]'"]


def test_api_key_from_the_environment_or_a_file(tmp_path, monkeypatch):
    """Neither way puts the key on the command line, where `ps` shows it (issue 20)."""
    import redline.serve
    from redline.cli import main

    seen = {}
    monkeypatch.setattr(redline.serve, "serve", lambda model, **kw: seen.update(kw))
    monkeypatch.setenv("REDLINE_API_KEY", "from-env")
    assert main(["serve", "--model", "m"]) == 0 and seen["api_key"] == "from-env"
    (tmp_path / "key").write_text("from-file\n")
    assert main(["serve", "--model", "m", "--api-key-file", str(tmp_path / "key")]) == 0 and seen["api_key"] == "from-file"
    monkeypatch.delenv("REDLINE_API_KEY")
    assert main(["serve", "--model", "m"]) == 0 and seen["api_key"] is None
    (tmp_path / "empty").write_text("")
    assert main(["serve", "--model", "m", "--api-key-file", str(tmp_path / "empty")]) == 2
    with pytest.raises(SystemExit) as e:  # a range is refused when the flags are read
        main(["serve", "--model", "m", "--max-tokens-limit", "0"])
    assert e.value.code == 2


def test_an_api_key_file_with_a_bom_gives_the_key_and_an_unreadable_one_is_one_line(tmp_path, monkeypatch, capsys):
    """Notepad's BOM was kept as the key's first character, so every client's key was refused; a file not UTF-8
    was a bare UnicodeDecodeError naming no file, a folder '[Errno 21] Is a directory'."""
    import redline.serve
    from redline.cli import main

    seen = {}
    monkeypatch.setattr(redline.serve, "serve", lambda model, **kw: seen.update(kw))
    monkeypatch.delenv("REDLINE_API_KEY", raising=False)
    key = tmp_path / "key"
    key.write_bytes(b"\xef\xbb\xbfsecret\r\n")
    assert main(["serve", "--model", "m", "--api-key-file", str(key)]) == 0 and seen["api_key"] == "secret"
    key.write_bytes(b"caf\xe9\n")
    assert main(["serve", "--model", "m", "--api-key-file", str(key)]) == 2
    assert capsys.readouterr().err == f"redline: error: {key}: line 1: the API key file is not UTF-8 text\n"
    assert main(["serve", "--model", "m", "--api-key-file", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"redline: error: {tmp_path}: cannot read the API key file: Is a directory\n"


def test_a_model_the_decode_loop_cannot_serve_is_one_line(monkeypatch, capsys):
    """The engine refuses its continuous loop (a sliding window): exit 2 with its reason, before anything listens."""
    import redline.generation
    from redline.cli import main

    class Windowed(ScriptedEngine):
        def continuous(self, max_prompt_tokens, max_new_tokens):
            raise RedlineError("mistral attends within a sliding window of 4096 tokens, and this batch needs 8256")

    monkeypatch.setattr(redline.generation, "load_engine", lambda *args, **kwargs: Windowed(["x"]))
    assert main(["serve", "--model", "m", "--port", "0"]) == 2
    out = capsys.readouterr()
    assert out.err.strip().splitlines() == [
        "redline: error: mistral attends within a sliding window of 4096 tokens, and this batch needs 8256"]
    assert "redline serve:" not in out.out  # no banner for a server that never listened


def test_a_port_in_use_is_one_line_before_the_model_loads(monkeypatch, capsys):
    import redline.generation
    from redline.cli import main

    loaded = []
    monkeypatch.setattr(redline.generation, "load_engine", lambda *args, **kwargs: loaded.append(1))
    with start_server(make_app(ScriptedEngine(["x"]), "m")) as server:
        assert main(["serve", "--model", "m", "--port", str(server.port)]) == 2
    assert f"redline: error: cannot listen on 127.0.0.1:{server.port}: Address already in use" in capsys.readouterr().err
    assert loaded == []


def test_a_server_that_does_not_start_gives_its_port_back(monkeypatch):
    import uvicorn

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)  # returns at once, never started
    server = RunningServer(make_app(ScriptedEngine(["x"]), "m"))
    with pytest.raises(RedlineError, match="did not start"):
        server.start()
    with socket.socket() as again:  # free again: its socket was closed (a plain bind fails beside one left open)
        again.bind(("127.0.0.1", server.port))


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory):
    """`redline serve` as a user starts it: tiny-random, a key from a file, a 1000-token limit."""
    key = tmp_path_factory.mktemp("serve") / "key"
    key.write_text("sesame\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "redline.cli", "serve", "--model", "tiny-random", "--device", "cpu", "--port", str(port),
         "--api-key-file", str(key), "--max-tokens-limit", "1000", "--max-prompt-tokens", "1024"],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "redline serve did not come up"
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a request that never ends keeps uvicorn from stopping
            proc.kill()
            proc.wait()


def _tiny(base):
    return openai.OpenAI(base_url=f"{base}/v1", api_key="sesame", max_retries=0, timeout=120)


HI = [{"role": "user", "content": "Hi"}]


def test_tiny_random_answers_the_judge_and_refuses_without_the_key(tiny_server):
    from redline.judges import WINNERS, Item
    from redline.judges.llm import OpenAIJudge

    body = {"model": "tiny-random", "messages": HI, "max_tokens": 5, "temperature": 0}
    assert httpx.post(f"{tiny_server}/v1/chat/completions", json=body, timeout=60).status_code == 401
    r = _tiny(tiny_server).chat.completions.create(**body)
    assert r.usage.prompt_tokens > 1 and 1 <= r.usage.completion_tokens <= 5
    judge = OpenAIJudge("tiny-random", f"{tiny_server}/v1", api_key="sesame", cache="off", max_tokens=4, timeout=60)
    verdicts = judge.judge_many([Item("Say hi.", "Hello!", "Bye."), Item("Count to two.", "1 2", "3")])
    judge.close()
    # A random model's greedy answers never parse (they are whitespace, which the judge reports as
    # cut before they began); what matters is that every call came back, none as an HTTP error.
    assert all(v.winner in WINNERS for v in verdicts)
    assert all(v.detail.get("error", "the answer was cut").startswith("the answer was cut") for v in verdicts)
    assert judge.stats["requests"] == 4 and judge.stats["retries"] == 0


def test_tiny_random_n_and_streaming_give_what_single_requests_give(tiny_server):
    """Choice k of a seeded request is the request with seed + k; a stream is the same text in pieces."""
    client = _tiny(tiny_server)
    sampled = dict(model="tiny-random", messages=HI, max_tokens=16, temperature=1.0, top_p=0.9)
    three = client.chat.completions.create(**sampled, n=3, seed=11)
    alone = [client.chat.completions.create(**sampled, seed=11 + k).choices[0].message.content for k in range(3)]
    assert [c.message.content for c in three.choices] == alone
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(**sampled, seed=11, stream=True)]
    assert "".join(pieces) == alone[0] and len([p for p in pieces if p]) > 1
    # A stop string from the middle of the reply: the stream ends before it, as the whole reply does.
    stop = alone[0][len(alone[0]) // 2:][:3]
    whole = client.chat.completions.create(**sampled, seed=11, stop=[stop]).choices[0]
    streamed = "".join(c.choices[0].delta.content or ""
                       for c in client.chat.completions.create(**sampled, seed=11, stop=[stop], stream=True))
    assert whole.finish_reason == "stop" and stop not in whole.message.content and streamed == whole.message.content


def test_tiny_random_completions(tiny_server):
    client = _tiny(tiny_server)
    r = client.completions.create(model="tiny-random", prompt=["Once upon a time", "The fox"], n=2, max_tokens=6,
                                  temperature=1.0, seed=3)
    assert len(r.choices) == 4 and all(c.finish_reason in ("stop", "length") for c in r.choices)
    chunks = client.completions.create(model="tiny-random", prompt="The fox", max_tokens=6, temperature=1.0, seed=3,
                                       stream=True)
    assert "".join(c.choices[0].text for c in chunks) == r.choices[2].text


def test_tiny_random_an_empty_prompt_is_400_not_a_request_that_never_ends(tiny_server):
    """An empty prompt has no tokens: the decode loop cannot start it, and once lost it held its slot forever."""
    for body in ({"prompt": ""}, {"prompt": ["The fox", ""]}, {"prompt": "", "stream": True}):
        r = httpx.post(f"{tiny_server}/v1/completions", json={"model": "tiny-random", "max_tokens": 4, **body},
                       headers={"Authorization": "Bearer sesame"}, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == "prompt", r.text
        assert "prompt is empty" in r.json()["error"]["message"]
    assert _tiny(tiny_server).completions.create(model="tiny-random", prompt="The fox", max_tokens=4).choices


def test_tiny_random_a_bad_request_among_16_fails_alone(tiny_server):
    """Issue 20: a 1 MB prompt and an oversized seed among 16 concurrent valid requests, all alike."""
    valid = [{"model": "tiny-random", "messages": [{"role": "user", "content": f"number {i}"}], "max_tokens": 8,
              "temperature": 0} for i in range(16)]
    huge = {**valid[0], "messages": [{"role": "user", "content": "word " * 200_000}]}  # 1 MB
    seed = {**valid[0], "seed": 1180591620717411303424}
    bodies = valid[:8] + [huge, seed] + valid[8:]

    def post(body):
        return httpx.post(f"{tiny_server}/v1/chat/completions", json=body, headers={"Authorization": "Bearer sesame"},
                          timeout=120)

    with ThreadPoolExecutor(len(bodies)) as pool:
        replies = list(pool.map(post, bodies))
    assert [r.status_code for r in replies] == [200] * 8 + [400, 400] + [200] * 8
    assert "this server takes at most 1024" in replies[8].json()["error"]["message"]
    assert replies[9].json()["error"]["param"] == "seed"
    assert all(r.json()["choices"][0]["message"]["content"] is not None for r in replies[:8] + replies[10:])


def test_a_request_whose_client_gave_up_stops_generating():
    """A client that times out on a whole (not streamed) reply frees its rows, as a stream's does, not after 4000 tokens."""
    from redline.generation import load_engine

    engine = load_engine("tiny-random", device="cpu", threads=1)
    app = make_app(engine, "m", max_prompt_tokens=64, max_tokens_limit=4000)
    with start_server(app) as server:
        with pytest.raises(httpx.TimeoutException):
            httpx.post(f"{server.url}/chat/completions", json={**CHAT, "max_tokens": 4000, "n": 2}, timeout=1)
        loop = app.state.scheduler.batcher
        deadline = time.monotonic() + 3
        while loop.batch.n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert loop.batch.n == 0 and app.state.stats["abandoned"] == 1
        assert _post(server, CHAT, key=None).json()["choices"][0]["finish_reason"] in ("stop", "length")


def test_tiny_random_a_short_request_is_not_held_behind_a_long_one(tiny_server):
    """Issue 20: a 500-token request runs; an 8-token one sent meanwhile comes back long before it ends."""
    client = _tiny(tiny_server)
    long = client.chat.completions.create(model="tiny-random", messages=HI, max_tokens=500, temperature=0, stream=True)
    chunks = iter(long)
    next(chunks)  # the long request is running
    t0 = time.monotonic()
    short = client.chat.completions.create(model="tiny-random", messages=[{"role": "user", "content": "Short?"}],
                                           max_tokens=8, temperature=0)
    short_seconds = time.monotonic() - t0
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    long_seconds = time.monotonic() - t0
    assert finish == ["length"]  # the long one did run to its 500 tokens
    assert short.usage.completion_tokens <= 8
    assert short_seconds < 10 and short_seconds < long_seconds / 3, (short_seconds, long_seconds)


def test_a_body_over_the_limit_is_413_before_it_is_read_whole():
    """No cap: one client could post gigabytes, read into memory. Past --max-body-bytes: a 413 in OpenAI's shape,
    from the Content-Length before a byte is read, or from the bytes of a chunked body as soon as they pass it."""
    engine = ScriptedEngine(lambda prompt, seed: "ok")
    app = make_app(engine, "m", max_body_bytes=4096)
    read = []

    async def counting(scope, receive, send):  # the bytes the server's app took from the connection
        async def counted():
            message = await receive()
            read.append(len(message.get("body", b"")))
            return message
        await app(scope, counted if scope["type"] == "http" else receive, send)

    def chunked(n_chunks):
        yield b'{"model": "m", "prompt": "x"}'
        for _ in range(n_chunks):
            yield b" " * 1024

    with start_server(counting) as server:
        url = f"{server.url}/completions"
        r = httpx.post(url, json={"model": "m", "prompt": "x" * 5000}, timeout=10)
        assert r.status_code == 413, r.text
        error = r.json()["error"]
        assert "larger than this server's limit of 4096 bytes (redline serve --max-body-bytes)" in error["message"]
        assert error["code"] == "request_too_large" and sum(read) == 0
        json_type = {"Content-Type": "application/json"}
        r = httpx.post(url, content=chunked(10_000), headers=json_type, timeout=30)  # 10 MB, with no Content-Length
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
        assert 4096 < sum(read) < 2**18  # read to the message that passed the limit (uvicorn buffers up to 64 KiB)
        r = httpx.post(url, content=chunked(2), headers=json_type, timeout=10)
        assert r.json()["choices"][0]["text"] == "ok"  # within it
        assert httpx.post(url, json={"model": "m", "prompt": "x"}, timeout=10).status_code == 200
    assert [p for p, _ in engine.calls] == ["x", "x"]  # the refused bodies never reached the engine
    with pytest.raises(RedlineError, match="--max-body-bytes"):
        make_app(engine, "m", max_body_bytes=0)
