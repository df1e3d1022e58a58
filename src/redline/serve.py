"""`redline serve`: an OpenAI-compatible HTTP server over redline's generation engine.

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``, and
``GET /health`` (no key). The official ``openai`` client, any other OpenAI client, and redline's own
LLM judge (``openai:MODEL@http://HOST:PORT/v1``) talk to it, streaming included.

What it does, in the order a request meets it:

1. **key** — with ``api_key`` set, every ``/v1`` request needs ``Authorization: Bearer KEY``
   (401 otherwise);
2. **concurrency** — at most ``max_concurrency`` completion requests are in flight (a stream counts
   until its last event; ``GET /v1/models`` takes no slot); one more gets 429 with ``Retry-After``, which OpenAI clients (and the judge) retry,
   rather than waiting unseen;
3. **size** — a body over ``max_body_bytes`` (16 MiB by default) is a 413: refused from its Content-Length
   before a byte is read, or, sent chunked, as soon as it passes the limit (``redline.http_body``);
4. **validation** — the body must be a chat (or completions) request; anything wrong is a 400
   naming the field, in OpenAI's ``{"error": {"message", "type", "param", "code"}}`` shape, as is
   every other error (404 for a route or a model this server does not have, 405, 500). Parameters
   redline does not implement (``logprobs``, ``tools``, ``response_format``, penalties, ...) are
   refused by name unless they ask for nothing, and unknown ones are refused as OpenAI does, never
   silently ignored. ``max_tokens`` above ``max_tokens_limit``, a prompt above
   ``max_prompt_tokens`` (engines with ``continuous()``), an empty prompt, messages the model's chat
   template refuses, a seed outside 0..2**63-1, more than 4 stop strings (``MAX_STOP``, OpenAI's) and
   more than ``MAX_CHOICES`` choices (prompts × n) in one request are a 400 for that request alone;
5. **scheduling** — each choice (``n`` per prompt) is one item for the engine:

   - an engine that offers ``continuous()`` (the transformers engine) gets **continuous batching by
     step**: one thread decodes every running item one token per step, and a new item takes a free
     row at the next step. A short request never waits for a long one to finish (issue 20: one
     1e9-token request held eight 8-token requests for 8.6 s when whole requests were batched), and
     it costs the long one only the rows it shares. Prompts are tokenized in worker threads, so a
     1 MB prompt is refused without stalling the decode loop.
   - any other engine (vLLM's offline ``LLM``, ``ScriptedEngine``) gets the ``Batcher``: requests
     wait up to ``batch_wait_ms`` (or until ``max_batch`` are there), and those with equal sampling
     settings go through one ``engine.generate`` call in a worker thread. If that call fails and
     held more than one item, each item is run again alone, so one bad request fails alone.

   Why by step rather than separate lanes for short and long requests: lanes still queue a long
   request behind another long one, need a threshold that is wrong for someone, and would run two
   forwards at once on one model; by step, every request waits at most one step for a free row;
6. **answer** — a ``chat.completion`` / ``text_completion`` with ``usage``; or, with
   ``stream=true``, server-sent events in OpenAI's chunk format (a role delta, content deltas, a
   last chunk per choice with its ``finish_reason``, a usage chunk with
   ``stream_options.include_usage``, then ``data: [DONE]``). A streamed choice never sends part of
   a stop string. An engine that raises ``EngineUnavailable`` gives 503; a ``RedlineError`` about
   one request 400; any other error 500 (inside a stream: an ``error`` event, which the ``openai``
   client raises). A client that goes away (a closed stream, a timeout) stops its choices' generation.

``make_app(engine, ...)`` takes a ready engine (a ``ScriptedEngine`` in tests), and
``FlakyEngine`` wraps one to fail its first N calls: the retry paths of clients are tested
against real HTTP on loopback, not against a mock. ``start_server`` runs an app in a thread on a
free port. fastapi and uvicorn are imported here only (the ``serve`` extra), so ``import redline``
never needs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import random
import socket
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Literal, Union

from redline import RedlineError

try:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from pydantic import BaseModel, ConfigDict, Field
    from starlette.exceptions import HTTPException
except ModuleNotFoundError as e:  # `redline serve` without its extra: one line, not a traceback
    raise RedlineError(
        f"redline serve needs fastapi and uvicorn ({e.name} is not installed): pip install 'redline[serve]'"
    ) from None

from redline.generation import Completion, SamplingParams, cut_at_stop
from redline.http_body import BodyLimit

MAX_N = 16  # choices per prompt
MAX_STOP = 4  # stop strings, as OpenAI allows
# One request's choices (prompts × n): --max-concurrency bounds the requests in flight, this what each may carry.
# More prompts go as more requests, which the scheduler batches together just the same.
MAX_CHOICES = 256
MAX_SEED = 2**63 - 1  # the engine seeds torch generators, which take 64-bit integers
# A request body's bytes: 256 prompts of 2048 tokens, each token as far as 6 bytes of JSON escape apiece, fit.
MAX_BODY_BYTES = 16 * 2**20


class EngineUnavailable(RuntimeError):
    """The engine cannot take work now (overloaded, warming up): the server answers 503."""


class FlakyEngine:
    """A test stand-in: an engine whose first ``failures`` calls to ``generate`` raise.

    ``error`` is the exception class: ``EngineUnavailable`` (the server answers 503) or any
    other (500). ``calls`` counts every call, failed or not.
    """

    def __init__(self, engine, failures: int = 1, error: type[Exception] = EngineUnavailable):
        self.engine, self.failures, self.error = engine, failures, error
        self.calls = 0
        self._lock = threading.Lock()

    def generate(self, prompts, params, seeds=None, progress=True):
        with self._lock:
            self.calls += 1
            call = self.calls
        if call <= self.failures:
            raise self.error(f"injected failure {call} of {self.failures}")
        return self.engine.generate(prompts, params, seeds=seeds, progress=progress)


class RequestError(Exception):
    """A request this server refuses: its HTTP status and OpenAI's error fields."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error",
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code


# ----------------------------------------------------------------------------- the requests


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart]]
    name: str | None = None  # accepted; chat templates have no place for it
    refusal: str | None = None  # accepted: every reply carries it, and a client sends a reply back as it came

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False
    include_obfuscation: bool | None = None  # accepted; redline pads nothing


class _Common(BaseModel):
    """The fields both endpoints share. Unknown fields are refused, as OpenAI refuses them."""

    model_config = ConfigDict(extra="forbid")

    model: str
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    stop: Union[str, Annotated[list[str], Field(max_length=MAX_STOP)], None] = None
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # accepted and ignored: they change nothing about the reply
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: str | None = None
    # Not implemented: accepted only at a value that asks for nothing (``_refused``).
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, Any] | None = None

    def settings(self, default_max_tokens: int) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return SamplingParams(
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            max_new_tokens=self.max_tokens or default_max_tokens,
            stop=stop,
        )


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    parallel_tool_calls: bool | None = None  # meaningless without tools, which are refused
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None
    modalities: list[str] | None = None
    audio: Any = None
    prediction: Any = None
    web_search_options: Any = None
    reasoning_effort: str | None = None

    def settings(self, default_max_tokens: int) -> SamplingParams:
        params = super().settings(default_max_tokens)
        params.max_new_tokens = self.max_completion_tokens or params.max_new_tokens
        return params


class CompletionRequest(_Common):
    prompt: Union[str, list[str]]
    logprobs: int | None = None
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None


# parameter -> the values that ask for nothing; any other value is refused by name
_NOTHING: dict[str, tuple] = {
    "frequency_penalty": (None, 0), "presence_penalty": (None, 0), "logit_bias": (None, {}),
    "logprobs": (None, False, 0), "top_logprobs": (None, 0), "tools": (None, []), "tool_choice": (None, "none"),
    "functions": (None, []), "function_call": (None, "none"), "response_format": (None, {"type": "text"}),
    "modalities": (None, ["text"]), "audio": (None,), "prediction": (None,), "web_search_options": (None,),
    "reasoning_effort": (None,), "echo": (None, False), "suffix": (None, ""),
}


def _refused(body: _Common) -> RequestError | None:
    """The first parameter of ``body`` that asks for something redline does not implement."""
    if isinstance(body, CompletionRequest) and body.logprobs is not None:  # 0 too: it asks for each chosen token's
        return RequestError(400, "logprobs is not supported by redline serve", param="logprobs")
    for name, nothing in _NOTHING.items():
        if name in body.model_fields_set and getattr(body, name) not in nothing:
            return RequestError(400, f"{name} is not supported by redline serve", param=name)
    if isinstance(body, CompletionRequest) and body.best_of not in (None, body.n):
        return RequestError(400, "best_of is not supported by redline serve (leave it out or equal to n)", "best_of")
    return None


# ----------------------------------------------------------------------------- scheduling


@dataclass
class _Pending:
    prompt: Any
    params: SamplingParams
    seed: int
    future: asyncio.Future = field(repr=False)

    @property
    def settings(self) -> tuple:  # requests batch only with equal settings
        p = self.params
        return (p.temperature, p.top_p, p.max_new_tokens, tuple(p.stop))


class Batcher:
    """For any engine: collects requests for a few ms and runs each group through one ``engine.generate``."""

    def __init__(self, engine, max_batch: int, wait_s: float, stats: Counter):
        self.engine, self.max_batch, self.wait_s, self.stats = engine, max_batch, wait_s, stats
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def prepare(self, prompt, params: SamplingParams) -> Any:
        return prompt  # only the engine knows its tokens

    async def run(self, prompt, params: SamplingParams, seed: int, on_text: Callable[[str], None] | None) -> Completion:
        """A completion of ``prompt``; the text comes whole at the end (``on_text`` is not called)."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Pending(prompt, params, seed, future))
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.wait_s
            while len(batch) < self.max_batch:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except asyncio.TimeoutError:
                    break
            groups: dict[tuple, list[_Pending]] = {}
            for pending in batch:
                groups.setdefault(pending.settings, []).append(pending)
            for group in groups.values():
                if not await self._generate(group) and len(group) > 1:
                    for pending in group:  # one bad item must not fail the others: each alone
                        await self._generate([pending])

    async def _generate(self, group: list[_Pending]) -> bool:
        """One engine call for ``group``; False if it failed and left the futures for a retry."""
        group = [p for p in group if not p.future.done()]
        if not group:
            return True
        self.stats["batches"] += 1
        self.stats["generated"] += len(group)
        try:
            completions = await asyncio.to_thread(
                self.engine.generate, [p.prompt for p in group], group[0].params, seeds=[p.seed for p in group],
                progress=False,
            )
            if len(completions) != len(group):
                raise RuntimeError(f"the engine returned {len(completions)} completions for {len(group)} prompts")
        except Exception as e:
            if len(group) > 1 and not isinstance(e, EngineUnavailable):
                return False
            for p in group:  # every waiting request learns what happened
                if not p.future.done():
                    p.future.set_exception(e)
            return True
        for p, c in zip(group, completions):
            if not p.future.done():
                p.future.set_result(c)
        return True


class Stepper:
    """For an engine with ``continuous()``: continuous batching by step (module doc, step 5)."""

    def __init__(self, engine, max_prompt_tokens: int, max_tokens: int, stats: Counter):
        self.batcher = engine.continuous(max_prompt_tokens, max_tokens)
        self.stats = stats

    async def start(self) -> None:
        self.batcher.start()

    async def stop(self) -> None:
        await asyncio.to_thread(self.batcher.stop)

    async def prepare(self, prompt, params: SamplingParams) -> list[int]:
        """Token ids, in a worker thread (a long prompt never stalls the decode loop), checked against the limits."""
        ids = await asyncio.to_thread(self.batcher.encode, prompt)
        if not ids:  # the decode loop has no position to start an empty prompt from
            raise RequestError(400, "prompt is empty: it has no tokens to continue", param="prompt")
        self.batcher.check(ids, params)  # a RedlineError: a 400, before any stream starts
        return ids

    async def run(self, ids: list[int], params: SamplingParams, seed: int,
                  on_text: Callable[[str], None] | None) -> Completion:
        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def settle(result):
            if not future.done():
                (future.set_exception if isinstance(result, BaseException) else future.set_result)(result)

        text = (lambda delta: loop.call_soon_threadsafe(on_text, delta)) if on_text else None
        item = self.batcher.submit(ids, params, seed, lambda r: loop.call_soon_threadsafe(settle, r), text)
        self.stats["generated"] += 1
        try:
            return await future
        finally:
            item.cancelled = True  # finished: no effect; abandoned (a client gone): frees its row


class StreamText:
    """What of a choice's growing text may be sent yet: never a part of a stop string.

    ``add`` takes a delta from the engine and returns what is safe to send; ``finish`` takes the
    engine's final text and returns the rest. The engine checks stop strings every few tokens, so
    it may decode past one before it stops: the last ``len(longest stop) - 1`` characters are held
    back until they cannot begin a stop string.
    """

    def __init__(self, stop: list[str]):
        self.stop, self.seen, self.sent = stop, "", ""
        self.hold = max((len(s) for s in stop), default=1) - 1

    def add(self, delta: str) -> str:
        self.seen += delta
        text, hit = cut_at_stop(self.seen, self.stop)
        if not hit:
            text = text[: max(0, len(text) - self.hold)]
        if len(text) <= len(self.sent):
            return ""
        out, self.sent = text[len(self.sent):], text
        return out

    def finish(self, final: str) -> str:
        # The engine's final text is the truth; what was sent is always a prefix of it, since the
        # deltas decode the same tokens (a tokenizer that decodes otherwise loses the rest, never repeats).
        return final[len(self.sent):] if final.startswith(self.sent) else ""


# ----------------------------------------------------------------------------- the app


def _error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
                code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _error(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
           headers: dict[str, str] | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse(_error_body(message, kind, param, code), status_code=status, headers=headers)


def _too_large(limit: int) -> JSONResponse:
    return _error(413, f"the request body is larger than this server's limit of {limit} bytes "
                  "(redline serve --max-body-bytes)", code="request_too_large")


def _as_request_error(e: BaseException) -> RequestError:
    """How an engine's exception reaches a client: 400 for a fault of the request, else 503 or 500."""
    if isinstance(e, RequestError):
        return e
    if any((c.__module__, c.__name__) == ("jinja2.exceptions", "TemplateError") for c in type(e).__mro__):
        # the model's chat template refused the messages (its raise_exception: no system role, roles must alternate)
        return RequestError(400, f"messages: the model's chat template refuses them: {e}", param="messages")
    if isinstance(e, (RedlineError, ValueError, OverflowError)):
        return RequestError(400, str(e))
    if isinstance(e, EngineUnavailable):
        return RequestError(503, f"the engine is unavailable: {e}", kind="server_error")
    return RequestError(500, f"generation failed: {type(e).__name__}: {e}", kind="server_error")


class _Gate:
    """ASGI middleware: the key first, then the concurrency bound (a refused request takes no slot).

    Pure ASGI rather than ``@app.middleware``: a streamed response holds its slot until its last
    byte, not only until its headers.
    """

    def __init__(self, app, api_key: str | None, max_concurrency: int, stats: Counter):
        self.app, self.api_key, self.max_concurrency, self.stats = app, api_key, max_concurrency, stats
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/v1"):
            return await self.app(scope, receive, send)
        if self.api_key is not None:
            given = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            token = given[7:] if given.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(token.encode(), self.api_key.encode()):
                self.stats["unauthorized"] += 1
                refusal = _error(401, "invalid or missing API key (send Authorization: Bearer KEY)",
                                 "authentication_error", code="invalid_api_key")
                return await refusal(scope, receive, send)
        if scope["method"] == "GET":  # the model list takes no slot: a judge's check must not wait behind the work
            return await self.app(scope, receive, send)
        if self.in_flight >= self.max_concurrency:
            self.stats["busy"] += 1
            refusal = _error(429, f"the server is at its limit of {self.max_concurrency} requests in flight; "
                             "retry shortly", "rate_limit_error", headers={"Retry-After": "1"})
            return await refusal(scope, receive, send)
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


def make_app(
    engine,
    model_name: str = "redline",
    *,
    api_key: str | None = None,
    max_batch: int = 16,
    max_concurrency: int = 64,
    batch_wait_ms: float = 5.0,
    default_max_tokens: int = 256,
    max_tokens_limit: int = 1024,
    max_prompt_tokens: int = 2048,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The server's app over a ready engine; ``app.state.stats`` counts requests and batches.

    ``max_tokens_limit``: the most tokens one choice may ask for (more is a 400). ``max_prompt_tokens``:
    the longest prompt (engines with ``continuous()`` only: others count no tokens before they run).
    ``max_batch`` and ``batch_wait_ms`` shape the ``Batcher`` of other engines. ``max_body_bytes``: the largest
    request body (more is a 413, never read into memory).
    """
    if max_batch < 1 or max_concurrency < 1 or max_body_bytes < 1:
        raise RedlineError("--max-batch, --max-concurrency and --max-body-bytes must be at least 1")
    if not 1 <= default_max_tokens <= max_tokens_limit or max_prompt_tokens < 1:
        raise RedlineError(f"max tokens: the default ({default_max_tokens}) must be between 1 and the limit "
                           f"({max_tokens_limit}), and the prompt limit ({max_prompt_tokens}) at least 1")
    stats: Counter = Counter()
    created = int(time.time())

    def new_scheduler():
        if hasattr(engine, "continuous"):
            return Stepper(engine, max_prompt_tokens, max_tokens_limit, stats)
        return Batcher(engine, max_batch, batch_wait_ms / 1000, stats)

    # The first one is built now, not at startup: a model the decode loop cannot serve (a sliding window)
    # is a RedlineError before the server starts, rather than a traceback from uvicorn's lifespan.
    first = [new_scheduler()]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        scheduler = first.pop() if first else new_scheduler()  # a decode thread starts once: a restart gets a new one
        app.state.scheduler = scheduler
        await scheduler.start()
        yield
        await scheduler.stop()

    # no /docs, /redoc or /openapi.json: they answered without the key, and /docs loaded its script from a CDN
    app = FastAPI(title="redline", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.stats = stats
    app.state.engine = engine
    app.add_middleware(BodyLimit, limit=max_body_bytes, refusal=_too_large)  # inside the gate: a 401 reads nothing
    app.add_middleware(_Gate, api_key=api_key, max_concurrency=max_concurrency, stats=stats)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return _error(400, "the request body is not valid JSON")
        if any(tuple(e.get("loc", ())) == ("body",) and e.get("type") == "model_attributes_type" for e in errors):
            # not an object: a JSON list, or a body FastAPI did not read as JSON (curl -d sends a form's type)
            kind = request.headers.get("content-type", "")
            return _error(400, "the request body must be a JSON object" + (
                "" if "json" in kind.lower() else f", sent with Content-Type: application/json (this one came "
                f"{'as ' + repr(kind) if kind else 'with none'})"))
        parts = []
        for e in errors[:5]:
            where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
            message = "unrecognized request argument" if e.get("type") == "extra_forbidden" else e.get("msg")
            parts.append(f"{where}: {message}")
        first = ".".join(str(x) for x in errors[0].get("loc", ()) if x != "body") if errors else None
        return _error(400, "; ".join(parts), param=first or None)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if exc.status_code == 404:
            message = f"Invalid URL ({request.method} {request.url.path})"  # OpenAI's words
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return _error(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):
        return _error(500, f"the server failed: {type(exc).__name__}: {exc}", "server_error")

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created, "owned_by": "redline"}]}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
        return await answer(body, [messages], chat=True, request=request)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts:
            return _error(400, "prompt: give a string or a non-empty list of strings", param="prompt")
        if len(prompts) * body.n > MAX_CHOICES:
            return _error(400, f"prompt: {len(prompts)} prompts × n {body.n} is {len(prompts) * body.n} choices; this "
                          f"server takes at most {MAX_CHOICES} in one request: send the rest as more requests "
                          "(they are batched together)", param="prompt")
        return await answer(body, prompts, chat=False, request=request)

    async def answer(body: _Common, prompts: list, chat: bool, request: Request):
        """Both endpoints: check, prepare every prompt, then run n choices of each (OpenAI's order)."""
        stats["requests"] += 1
        scheduler = app.state.scheduler
        try:
            if body.model != model_name:
                raise RequestError(404, f"model {body.model!r} is not served here; this server serves {model_name!r}",
                                   param="model", code="model_not_found")
            refused = _refused(body)
            if refused:
                raise refused
            params = body.settings(default_max_tokens)
            if params.max_new_tokens > max_tokens_limit:
                field_name = "max_completion_tokens" if getattr(body, "max_completion_tokens", None) else "max_tokens"
                raise RequestError(400, f"{field_name} is {params.max_new_tokens}; this server allows at most "
                                   f"{max_tokens_limit} (redline serve --max-tokens-limit)", param=field_name)
            prepared = [await scheduler.prepare(p, params) for p in prompts]
        except Exception as e:
            return _failure(_as_request_error(e))
        # Choice k = prompt k // n, seed + k % n: a seeded request gives the same choices every time.
        seeds = [body.seed + j if body.seed is not None else random.randrange(2**31)
                 for _ in prompts for j in range(body.n)]
        jobs = [(prepared[k // body.n], seeds[k]) for k in range(len(seeds))]
        reply = _Reply(chat, model_name, body)
        if body.stream:
            events = _stream(scheduler, jobs, body.n, params, reply, stats)
            return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        tasks = [asyncio.create_task(scheduler.run(p, params, s, None)) for p, s in jobs]
        gathered, gone = asyncio.gather(*tasks), asyncio.create_task(_disconnected(request))
        gathered.add_done_callback(lambda f: f.cancelled() or f.exception())  # read, so a cancel logs no warning
        try:
            await asyncio.wait([gathered, gone], return_when=asyncio.FIRST_COMPLETED)
            if not gathered.done():  # a client that went away (a timeout): its choices stop generating, as in a stream
                stats["abandoned"] += 1
                return _error(499, "the client closed the connection")
            results = gathered.result()
        except Exception as e:
            return _failure(_as_request_error(e))
        finally:
            gone.cancel()
            for t in tasks:
                t.cancel()
        return reply.whole(results, prompts_count=len(prompts))

    def _failure(e: RequestError) -> JSONResponse:
        stats["errors" if e.status >= 500 else "refused"] += 1
        return _error(e.status, e.message, e.kind, e.param, code=e.code)

    return app


class _Reply:
    """The OpenAI objects of one request: a whole reply, or the chunks of a stream."""

    def __init__(self, chat: bool, model: str, body: _Common):
        self.chat, self.model = chat, model
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def _head(self, chunk: bool) -> dict:
        kind = ("chat.completion.chunk" if chunk else "chat.completion") if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "system_fingerprint": None}

    @staticmethod
    def usage(results: list[Completion], n: int) -> dict:
        prompt = sum(c.prompt_tokens for c in results[::n])  # each prompt counts once, whatever n
        done = sum(c.completion_tokens for c in results)
        return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}

    def whole(self, results: list[Completion], prompts_count: int) -> dict:
        choices = []
        for k, c in enumerate(results):
            finish = "length" if c.finish_reason == "length" else "stop"
            if self.chat:
                choices.append({"index": k, "message": {"role": "assistant", "content": c.text, "refusal": None},
                                "logprobs": None, "finish_reason": finish})
            else:
                choices.append({"index": k, "text": c.text, "logprobs": None, "finish_reason": finish})
        return {**self._head(False), "choices": choices, "usage": self.usage(results, len(results) // prompts_count)}

    def chunk(self, k: int, text: str | None = None, finish: str | None = None, role: bool = False) -> str:
        if self.chat:
            delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
            choice = {"index": k, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": k, "text": text or "", "logprobs": None, "finish_reason": finish}
        return _event({**self._head(True), "choices": [choice], **({"usage": None} if self.include_usage else {})})

    def usage_chunk(self, results: list[Completion], n: int) -> str:
        return _event({**self._head(True), "choices": [], "usage": self.usage(results, n)})


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone: its body is read, so the next message is the disconnect."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _event(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _stream(scheduler, jobs: list[tuple[Any, int]], n: int, params: SamplingParams, reply: _Reply,
                  stats: Counter):
    """Server-sent events for every choice of a request, interleaved as their tokens come."""
    events: asyncio.Queue = asyncio.Queue()
    texts = [StreamText(params.stop) for _ in jobs]

    async def one(k: int, prepared, seed: int):
        try:
            completion = await scheduler.run(prepared, params, seed, lambda delta: events.put_nowait((k, "text", delta)))
            events.put_nowait((k, "done", completion))
        except Exception as e:
            events.put_nowait((k, "error", e))

    tasks = [asyncio.create_task(one(k, p, s)) for k, (p, s) in enumerate(jobs)]
    results: list[Completion | None] = [None] * len(jobs)
    try:
        if reply.chat:
            for k in range(len(jobs)):
                yield reply.chunk(k, role=True)
        left = len(jobs)
        while left:
            k, kind, value = await events.get()
            if kind == "text":
                safe = texts[k].add(value)
                if safe:
                    yield reply.chunk(k, safe)
            elif kind == "done":
                left -= 1
                results[k] = value
                rest = texts[k].finish(value.text)
                if rest:
                    yield reply.chunk(k, rest)
                yield reply.chunk(k, finish="length" if value.finish_reason == "length" else "stop")
            else:
                e = _as_request_error(value)
                stats["errors" if e.status >= 500 else "refused"] += 1
                yield _event(_error_body(e.message, e.kind, e.param, e.code))
                return
        if reply.include_usage:
            yield reply.usage_chunk(results, n)
        yield "data: [DONE]\n\n"
    finally:
        for t in tasks:  # a client that went away: its choices stop generating
            t.cancel()


# ----------------------------------------------------------------------------- running it


class RunningServer:
    """A uvicorn server in a daemon thread; ``url`` is its ``/v1`` base; ``stop()`` ends it."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self.app = app
        sock = _bound(host, port)  # port 0: the OS picks a free one, and we know it before starting
        self.port = sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}/v1"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._sock = sock

    def start(self, timeout: float = 30.0) -> "RunningServer":
        if self._thread.is_alive():
            return self
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()  # its socket closed: the port is free again
                raise RedlineError(f"the server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> "RunningServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _bound(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port), or one line saying why it cannot be."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise RedlineError(f"cannot listen on {host}:{port}: {e.strerror or e}; choose another --port or --host") from None
    return sock


def start_server(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Run ``app`` in a background thread (port 0: a free port) and return once it accepts."""
    return RunningServer(app, host, port).start()


def serve(
    model: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    max_batch: int = 16,
    max_concurrency: int = 64,
    batch_wait_ms: float = 5.0,
    max_tokens_limit: int = 1024,
    max_prompt_tokens: int = 2048,
    max_body_bytes: int = MAX_BODY_BYTES,
    served_name: str | None = None,
    backend: str = "transformers",
    dtype: str = "float32",
    device: str = "auto",
) -> None:
    """Load ``model`` into an engine and serve it until interrupted (``redline serve``)."""
    import uvicorn

    from redline.generation import load_engine

    _bound(host, port).close()  # a port in use is said before the model loads, not after
    options = {"max_batch": max_batch} if backend == "transformers" else {}
    engine = load_engine(model, backend=backend, dtype=dtype, device=device, **options)
    default_max_tokens = min(256, max_tokens_limit)
    app = make_app(engine, served_name or model, api_key=api_key, max_batch=max_batch,
                   max_concurrency=max_concurrency, batch_wait_ms=batch_wait_ms, default_max_tokens=default_max_tokens,
                   max_tokens_limit=max_tokens_limit, max_prompt_tokens=max_prompt_tokens,
                   max_body_bytes=max_body_bytes)
    name = served_name or model
    how = ("continuous batching by step" if hasattr(engine, "continuous")
           else f"batches of up to {max_batch} requests")
    print(f"redline serve: {name} at http://{host}:{port}/v1 ({how}; max_tokens up to {max_tokens_limit}; "
          f"judge spec: openai:{name}@http://{host}:{port}/v1)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="info")
