"""The LLM judge follows the API: the length limit under the name the server wants, and a reasoning
model's empty, cut answer said as such. Against a small stdlib server that answers as OpenAI's
reasoning models do (it refuses ``max_tokens`` with OpenAI's own error)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from redline import RedlineError
from redline.judges import Item, parse_judge
from redline.judges.llm import OpenAIJudge

REFUSAL = {"error": {
    "message": "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
    "type": "invalid_request_error", "param": "max_tokens", "code": "unsupported_parameter"}}


class ReasoningServer(ThreadingHTTPServer):
    """Serves one model, ``o-judge``, which answers "Output (a)" and refuses ``max_tokens``; with
    ``think`` tokens of reasoning first, a limit below them leaves an empty answer cut by length; ``blank``:
    an empty answer cut by length after no reasoning at all."""

    def __init__(self, think: int = 0):
        super().__init__(("127.0.0.1", 0), Handler)
        self.think, self.bodies, self.blank = think, [], False
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.reply(200, {"object": "list", "data": [{"id": "o-judge", "object": "model"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.server.bodies.append(body)
        if "max_tokens" in body:
            return self.reply(400, REFUSAL)
        cut = body["max_completion_tokens"] <= self.server.think or self.server.blank
        message = {"role": "assistant", "content": "" if cut else "Output (a)"}
        usage = {"completion_tokens_details": {"reasoning_tokens": min(self.server.think, body["max_completion_tokens"])}}
        self.reply(200, {"choices": [{"index": 0, "message": message, "finish_reason": "length" if cut else "stop"}],
                         "usage": usage})


@pytest.fixture
def server():
    s = ReasoningServer()
    yield s
    s.shutdown()


def test_a_server_that_refuses_max_tokens_is_asked_with_max_completion_tokens(server, tmp_path):
    judge = OpenAIJudge("o-judge", server.url, cache=str(tmp_path / "c.sqlite"), concurrency=1)
    assert judge.token_param == "max_tokens"  # not api.openai.com: the name every server has read
    verdict = judge.judge_many([Item("p", "x", "y")])[0]
    assert verdict.detail["orders"] == {"ab": "a", "ba": "b"}
    assert judge.token_param == "max_completion_tokens"  # kept for the rest of the run
    assert [("max_tokens" in b, b.get("max_completion_tokens")) for b in server.bodies] == [
        (True, None), (False, 32), (False, 32)]  # one refusal, then both orders
    assert judge.stats["failures"] == 0 and judge.stats["retries"] == 0
    # the cache key does not depend on the name sent: a judge that sends max_tokens finds the answers
    again = OpenAIJudge("o-judge", server.url, cache=str(tmp_path / "c.sqlite"), token_param="max_tokens")
    assert again.judge_many([Item("p", "x", "y")])[0].detail["orders"] == {"ab": "a", "ba": "b"}
    assert again.stats["cache_hits"] == 2 and len(server.bodies) == 3
    judge.close(), again.close()


def test_api_openai_com_gets_max_completion_tokens_and_the_spec_can_force_a_name(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert OpenAIJudge("gpt-5", cache="off").token_param == "max_completion_tokens"
    judge = parse_judge("openai:m@http://localhost:9/v1?token_param=max_completion_tokens&cache=off")
    assert judge.token_param == "max_completion_tokens"
    with pytest.raises(RedlineError, match="token_param must be"):
        OpenAIJudge("m", "http://localhost:9/v1", token_param="max_new_tokens", cache="off")


def test_an_answer_cut_before_it_began_says_to_raise_max_tokens(tmp_path):
    server = ReasoningServer(think=100)
    try:
        judge = OpenAIJudge("o-judge", server.url, cache="off", token_param="max_completion_tokens")
        verdict = judge.judge_many([Item("p", "x", "y")])[0]
        assert verdict.winner == "invalid" and "raise max_tokens" in verdict.detail["error"]
        # a model that wrote nothing without reasoning (a random one) is an answer that does not parse
        server.think, server.blank = 0, True
        blank = OpenAIJudge("o-judge", server.url, cache="off", max_tokens=16, token_param="max_completion_tokens")
        verdict = blank.judge_many([Item("p", "x", "y")])[0]
        assert verdict.winner == "invalid" and "error" not in verdict.detail
        blank.close()
        server.think, server.blank = 100, False
        roomy = OpenAIJudge("o-judge", server.url, cache="off", max_tokens=2048, token_param="max_completion_tokens")
        assert roomy.judge_many([Item("p", "x", "y")])[0].detail["orders"] == {"ab": "a", "ba": "b"}
        judge.close(), roomy.close()
    finally:
        server.shutdown()


class ContentServer(ThreadingHTTPServer):
    """Answers every chat with ``message`` (its ``content`` as it is given) and ``finish_reason``."""

    def __init__(self, content, finish_reason: str = "stop"):
        super().__init__(("127.0.0.1", 0), ContentHandler)
        self.content, self.finish_reason = content, finish_reason
        threading.Thread(target=self.serve_forever, daemon=True).start()

    url = ReasoningServer.url


class ContentHandler(Handler):
    def do_GET(self):
        self.reply(200, {"object": "list", "data": [{"id": "j", "object": "model"}]})

    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        message = {"role": "assistant", "content": self.server.content}
        self.reply(200, {"choices": [{"index": 0, "message": message, "finish_reason": self.server.finish_reason}]})


def test_a_reasoning_trace_cut_inside_its_think_block_is_no_verdict():
    """A server that keeps the reasoning in the content (vLLM without a reasoning parser): a trace cut at
    max_tokens that mentions one output was read as choosing it, in both orders, so every pair a tie."""
    server = ContentServer("<think>\nOkay, let me look at Output (a) first. It", finish_reason="length")
    try:
        judge = OpenAIJudge("j", server.url, cache="off")
        verdict = judge.judge_many([Item("p", "x", "y")])[0]
        judge.close()
    finally:
        server.shutdown()
    assert verdict.winner == "invalid" and "raise max_tokens" in verdict.detail["error"]


def test_content_sent_as_parts_is_read_as_its_text():
    """Mistral's reasoning models answer with content parts (thinking, then text): the text is the answer."""
    server = ContentServer([{"type": "thinking", "thinking": [{"type": "text", "text": "Output (b)?"}]},
                            {"type": "text", "text": "Output (a)"}])
    try:
        judge = OpenAIJudge("j", server.url, cache="off")
        verdict = judge.judge_many([Item("p", "x", "y")])[0]
        server.content = {"text": "Output (a)"}  # neither a string nor parts: a malformed answer, not a traceback
        malformed = judge.judge_many([Item("p", "x", "y")])[0]
        judge.close()
    finally:
        server.shutdown()
    assert verdict.detail["orders"] == {"ab": "a", "ba": "b"} and "error" not in verdict.detail
    assert malformed.winner == "invalid" and malformed.detail["error"].startswith("malformed answer")
