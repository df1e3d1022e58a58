"""`redline serve`: an OpenAI-compatible HTTP server over redline's generation engine.

Endpoints: ``POST /v1/chat/completions``, ``GET /v1/models``, and ``GET /health`` (no key). Any
OpenAI client, and redline's own LLM judge (``openai:MODEL@http://HOST:PORT/v1``), talks to it.

What it does, in the order a request meets it:

1. **key** — with ``api_key`` set, every ``/v1`` request needs ``Authorization: Bearer KEY``
   (401 otherwise);
2. **concurrency** — at most ``max_concurrency`` requests are in flight; one more gets 429 with
   ``Retry-After``, which OpenAI clients (and the judge) retry, rather than waiting unseen;
3. **validation** — the body must be a chat request (422 naming the field, 400 for a body that
   is not JSON or asks for what this server does not do: ``stream``, ``n > 1``; 404 for a model
   it does not serve), errors in OpenAI's ``{"error": {"message", "type", "param"}}`` shape;
4. **batching** — requests wait in a queue for up to ``batch_wait_ms`` (or until ``max_batch``
   are there); those with the same sampling settings go through one ``engine.generate`` call, in
   a worker thread so the server keeps accepting. Generation is most of the cost of a judge run,
   and a batch of N costs far less than N single calls;
5. **answer** — an OpenAI ``chat.completion`` with ``usage`` (prompt and completion tokens).
   An engine that raises ``EngineUnavailable`` gives 503; any other error 500.

``make_app(engine, ...)`` takes a ready engine (a ``ScriptedEngine`` in tests), and
``FlakyEngine`` wraps one to fail its first N calls: the retry paths of clients are tested
against real HTTP on loopback, not against a mock. ``start_server`` runs an app in a thread on a
free port. fastapi and uvicorn are imported here only, so ``import redline`` never needs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import random
import socket
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from redline import RedlineError


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


# ----------------------------------------------------------------------------- the request


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart]]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(BaseModel):
    # OpenAI's other fields (user, logprobs, response_format ...) are accepted and ignored.
    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: Union[str, list[str], None] = None
    seed: int | None = None
    n: int = Field(1, ge=1)
    stream: bool = False


# ----------------------------------------------------------------------------- batching


@dataclass
class _Pending:
    prompt: list[dict[str, str]]
    settings: tuple  # (temperature, top_p, max_new_tokens, stop): requests batch only with equals
    seed: int | None
    future: asyncio.Future = field(repr=False)


class Batcher:
    """Collects requests for a few ms and runs each group through one ``engine.generate`` call."""

    def __init__(self, engine, max_batch: int, wait_s: float, stats: Counter):
        self.engine, self.max_batch, self.wait_s, self.stats = engine, max_batch, wait_s, stats
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()

    async def submit(self, prompt, settings: tuple, seed: int | None):
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Pending(prompt, settings, seed, future))
        return await future

    async def run(self) -> None:
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
            for settings, group in groups.items():
                await self._generate(settings, group)

    async def _generate(self, settings: tuple, group: list[_Pending]) -> None:
        from redline.generation import SamplingParams

        temperature, top_p, max_new_tokens, stop = settings
        params = SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, stop=list(stop))
        # Seeds always per request: the engine's default (params.seed + position) would make a
        # reply depend on its place in the batch; a request without a seed gets a fresh one.
        seeds = [p.seed if p.seed is not None else random.randrange(2**31) for p in group]
        self.stats["batches"] += 1
        self.stats["generated"] += len(group)
        try:
            completions = await asyncio.to_thread(
                self.engine.generate, [p.prompt for p in group], params, seeds=seeds, progress=False
            )
            if len(completions) != len(group):
                raise RuntimeError(f"the engine returned {len(completions)} completions for {len(group)} prompts")
        except Exception as e:  # every waiting request learns what happened
            for p in group:
                if not p.future.done():
                    p.future.set_exception(e)
            return
        for p, c in zip(group, completions):
            if not p.future.done():
                p.future.set_result(c)


# ----------------------------------------------------------------------------- the app


def _error(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return JSONResponse(body, status_code=status, headers=headers)


def make_app(
    engine,
    model_name: str = "redline",
    *,
    api_key: str | None = None,
    max_batch: int = 8,
    max_concurrency: int = 64,
    batch_wait_ms: float = 5.0,
    default_max_tokens: int = 256,
) -> FastAPI:
    """The server's app over a ready engine; ``app.state.stats`` counts requests and batches."""
    if max_batch < 1 or max_concurrency < 1:
        raise RedlineError("--max-batch and --max-concurrency must be at least 1")
    stats: Counter = Counter()
    created = int(time.time())
    state: dict[str, Any] = {"in_flight": 0}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = Batcher(engine, max_batch, batch_wait_ms / 1000, stats)
        app.state.batcher = batcher
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app = FastAPI(title="redline", lifespan=lifespan)
    app.state.stats = stats
    app.state.engine = engine

    @app.middleware("http")
    async def gate(request: Request, call_next):
        """Key first, then the concurrency bound: a refused request never takes a slot."""
        if not request.url.path.startswith("/v1"):
            return await call_next(request)
        if api_key is not None:
            given = request.headers.get("authorization", "")
            token = given[7:] if given.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(token.encode(), api_key.encode()):
                stats["unauthorized"] += 1
                return _error(401, "invalid or missing API key (send Authorization: Bearer KEY)", "authentication_error")
        if state["in_flight"] >= max_concurrency:
            stats["busy"] += 1
            return _error(429, f"the server is at its limit of {max_concurrency} requests in flight; retry shortly",
                          "rate_limit_error", headers={"Retry-After": "1"})
        state["in_flight"] += 1
        try:
            return await call_next(request)
        finally:
            state["in_flight"] -= 1

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return _error(400, "the request body is not valid JSON")
        parts = []
        for e in errors[:5]:
            where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
            parts.append(f"{where}: {e.get('msg')}")
        first = ".".join(str(x) for x in errors[0].get("loc", ()) if x != "body") if errors else None
        return _error(422, "; ".join(parts), param=first or None)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created, "owned_by": "redline"}]}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest):
        stats["requests"] += 1
        if body.model != model_name:
            return _error(404, f"model {body.model!r} is not served here; this server serves {model_name!r}",
                          param="model")
        if body.stream:
            return _error(400, "stream=true is not supported by redline serve", param="stream")
        if body.n != 1:
            return _error(400, "n > 1 is not supported by redline serve; send n requests", param="n")
        max_new = body.max_completion_tokens or body.max_tokens or default_max_tokens
        stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
        messages = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages
        ]
        try:
            completion = await app.state.batcher.submit(messages, (body.temperature, body.top_p, max_new, stop), body.seed)
        except EngineUnavailable as e:
            stats["errors"] += 1
            return _error(503, f"the engine is unavailable: {e}", "server_error")
        except Exception as e:
            stats["errors"] += 1
            return _error(500, f"generation failed: {type(e).__name__}: {e}", "server_error")
        finish = "length" if completion.finish_reason == "length" else "stop"
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": completion.text}, "finish_reason": finish}],
            "usage": {
                "prompt_tokens": completion.prompt_tokens,
                "completion_tokens": completion.completion_tokens,
                "total_tokens": completion.prompt_tokens + completion.completion_tokens,
            },
        }

    return app


# ----------------------------------------------------------------------------- running it


class RunningServer:
    """A uvicorn server in a daemon thread; ``url`` is its ``/v1`` base; ``stop()`` ends it."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self.app = app
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))  # port 0: the OS picks a free one, and we know it before starting
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


def start_server(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Run ``app`` in a background thread (port 0: a free port) and return once it accepts."""
    return RunningServer(app, host, port).start()


def serve(
    model: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    max_batch: int = 8,
    max_concurrency: int = 64,
    batch_wait_ms: float = 5.0,
    served_name: str | None = None,
    backend: str = "transformers",
    dtype: str = "float32",
    device: str = "auto",
) -> None:
    """Load ``model`` into an engine and serve it until interrupted (``redline serve``)."""
    import uvicorn

    from redline.generation import load_engine

    engine = load_engine(model, backend=backend, dtype=dtype, device=device)
    app = make_app(engine, served_name or model, api_key=api_key, max_batch=max_batch,
                   max_concurrency=max_concurrency, batch_wait_ms=batch_wait_ms)
    print(f"redline serve: {served_name or model} at http://{host}:{port}/v1 "
          f"(judge spec: openai:{served_name or model}@http://{host}:{port}/v1)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="info")
