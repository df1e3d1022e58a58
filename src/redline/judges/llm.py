"""The LLM judge: a model behind an OpenAI-compatible chat API compares two responses.

Every pair is asked twice, once with A shown first and once with B shown first (AlpacaEval
randomises the order for the same reason: LLM judges prefer a position). Each answer is parsed
(``prompts.parse_pairwise_verdict``) and mapped back to A/B; the two orders agreeing give the
verdict, disagreeing give a tie, so a judge that always answers "the first one" scores every
pair a tie. If either order could not be read or failed for good, the pair is ``invalid``: one
order alone would carry the position bias the second ask is there to cancel.

Calls go through ``httpx`` on a thread pool of ``concurrency`` workers. 429, 5xx, timeouts and
dropped connections are retried with exponential backoff and jitter (a ``Retry-After`` header is
honoured); other 4xx fail at once. Successful answers are kept in an sqlite cache keyed by the
exact request (server, model, template version, messages, sampling settings), so a rerun or a
second evaluation of the same pairs pays nothing twice. ``check()`` asks ``GET /models`` first,
so an unreachable server, a refused key or an unknown model is one clear error before judging.

The answer's length limit is sent as ``max_completion_tokens`` to api.openai.com (its reasoning
models refuse ``max_tokens``, which it deprecated) and as ``max_tokens`` elsewhere (what vLLM,
llama.cpp and ``redline serve`` have always read); ``token_param=`` forces one, and a server that
refuses the one sent (HTTP 400 naming it) is asked again with the other, which the judge then keeps.
Reasoning models spend that budget thinking before they answer: give them ``max_tokens=2048``; an
answer cut by the limit after reasoning tokens, or inside its ``<think>`` block, says so (a reasoning
trace is never read as a verdict). The cache key is the same whichever name is sent.

We call the API with ``httpx`` rather than the official ``openai`` client: the client's retries
do not expose the per-call failure we record in each verdict, and the cache sits in front of the
call either way; the request is the same JSON the client sends.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence
from urllib.parse import urlparse

from redline import RedlineError
from redline.judges import Item, Verdict, swap_winner
from redline.prompts import PAIRWISE_VERSION, pairwise_messages, parse_pairwise_verdict

FIRST_PAIRWISE_VERSION = "pairwise-v1"  # judgments files written under it name no template

RETRY_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
TOKEN_PARAMS = ("max_tokens", "max_completion_tokens")


class ResponseCache:
    """A key -> text store in one sqlite file, safe to share between threads and processes."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:  # a folder, or a file that is no sqlite database (cache=answers.jsonl), fails here: say so, touch nothing
            self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            with self._lock, self._db:
                self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, text TEXT NOT NULL, at REAL)")
        except sqlite3.DatabaseError as e:
            raise RedlineError(f"judge cache {self.path}: cannot use it as an sqlite file ({e}); name a new file "
                               "(cache=PATH.sqlite) or cache=off") from None

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT text FROM answers WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, text: str) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?)", (key, text, time.time()))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def default_cache_path() -> Path:
    from redline.models import cache_dir

    return cache_dir() / "judge-cache.sqlite"


def combine_orders(ab: str, ba: str) -> str:
    """The pair's verdict from the two asks, both already in A/B terms (see the module docstring)."""
    if "invalid" in (ab, ba):
        return "invalid"
    return ab if ab == ba else "tie"


def openai_name(model: str, base_url: str, temperature: float = 0.0, max_tokens: int = 32) -> str:
    """The name of ``OpenAIJudge(model, base_url, ...)``. Sampling settings and the template change verdicts, so they
    are in the name a judgments file keeps (and a rerun compares); at their defaults (the first template) the name is
    as it always was."""
    settings = "&".join(f"{k}={v:g}" for k, v, default in (("temperature", temperature, 0.0),
                                                          ("max_tokens", max_tokens, 32)) if v != default)
    if PAIRWISE_VERSION != FIRST_PAIRWISE_VERSION:
        settings = "&".join(filter(None, (settings, f"template={PAIRWISE_VERSION}")))
    return f"openai:{model}@{base_url.rstrip('/')}" + (f"?{settings}" if settings else "")


class OpenAIJudge:
    """``openai:MODEL@BASE_URL``: an LLM judge behind ``BASE_URL/chat/completions``."""

    both_orders = True

    def __init__(
        self,
        model: str,
        base_url: str = "https://api.openai.com/v1",
        *,
        key_env: str | None = None,
        api_key: str | None = None,
        concurrency: int = 4,
        retries: int = 5,
        timeout: float = 60.0,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        cache: str | os.PathLike | None = None,
        temperature: float = 0.0,
        max_tokens: int = 32,
        token_param: str = "auto",
        progress: bool = False,
    ):
        import httpx

        self.model = model
        self.base_url = base_url.rstrip("/")
        self.name = openai_name(model, base_url, temperature, max_tokens)
        if urlparse(self.base_url).scheme not in ("http", "https"):
            raise RedlineError(f"judge {self.name!r}: the base URL must start with http:// or https://")
        if concurrency < 1 or retries < 0 or not timeout > 0 or not backoff >= 0 or max_tokens < 1:
            raise RedlineError(f"judge {self.name!r}: concurrency >= 1, retries >= 0, timeout > 0, backoff >= 0 and "
                               "max_tokens >= 1 please")
        if api_key is None:
            api_key = os.environ.get(key_env or "OPENAI_API_KEY")
            if key_env and not api_key:
                raise RedlineError(f"judge {self.name!r}: the environment variable {key_env} (key_env) is not set")
            if not api_key and urlparse(self.base_url).hostname == "api.openai.com":
                raise RedlineError("the OpenAI API needs a key: set OPENAI_API_KEY (or name another variable with key_env=)")
        if token_param not in ("auto",) + TOKEN_PARAMS:
            raise RedlineError(f"judge {self.name!r}: token_param must be auto, max_tokens or max_completion_tokens")
        if token_param == "auto":
            token_param = TOKEN_PARAMS[urlparse(self.base_url).hostname == "api.openai.com"]
        self.token_param = token_param
        self.key_env = key_env or "OPENAI_API_KEY"
        self.concurrency, self.retries, self.backoff, self.max_backoff = concurrency, retries, backoff, max_backoff
        self.temperature, self.max_tokens, self.progress = temperature, max_tokens, progress
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)))
        if cache in ("off", "none"):
            self.cache = None
        else:
            self.cache = ResponseCache(cache if cache else default_cache_path())
        self.stats: Counter = Counter()  # requests, cache_hits, retries, failures
        self._stats_lock = threading.Lock()
        self._checked = False

    # ------------------------------------------------------------------ before judging

    def check(self) -> None:
        """Raise one clear ``RedlineError`` unless the server answers and serves the model."""
        import httpx

        if self._checked:
            return
        url = f"{self.base_url}/models"
        for attempt in range(self.retries + 1):  # a busy server (429, 5xx) is asked again, as calls are
            try:
                response = self._client.get(url)
            except httpx.HTTPError as e:  # not retried: a server that is not running should be said at once
                raise RedlineError(
                    f"the judge server at {self.base_url} is not reachable ({type(e).__name__}: {e}); "
                    "start it (redline serve --model MODEL --port PORT) or fix the URL in the judge spec"
                ) from None
            if response.status_code not in RETRY_STATUSES or attempt == self.retries:
                break
            self._count("retries")
            self._pause(attempt, _retry_after(response.headers.get("retry-after")))
        if response.status_code in (401, 403):
            raise RedlineError(
                f"the judge server at {self.base_url} refused the API key (HTTP {response.status_code}); "
                f"set {self.key_env} or name another variable with key_env="
            )
        if response.status_code != 200:
            raise RedlineError(f"GET {url} answered HTTP {response.status_code}: {response.text[:200]}")
        try:
            served = [m["id"] for m in response.json()["data"]]
        except (ValueError, KeyError, TypeError):
            raise RedlineError(f"GET {url} did not answer an OpenAI model list: {response.text[:200]}") from None
        if self.model not in served:
            listed = ", ".join(served[:10]) + (" ..." if len(served) > 10 else "")
            raise RedlineError(f"the judge server at {self.base_url} does not serve {self.model!r}; it serves: {listed}")
        self._checked = True

    # ------------------------------------------------------------------ one call

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] += n

    def ask(self, messages: list[dict[str, str]]) -> tuple[str | None, str]:
        """(answer text, "") or (None, why it failed for good), retrying what is worth retrying."""
        import httpx

        body = {"model": self.model, "messages": messages, "temperature": self.temperature, "max_tokens": self.max_tokens}
        key = hashlib.sha256(
            json.dumps({"url": self.base_url, "template": PAIRWISE_VERSION, "body": body}, sort_keys=True).encode()
        ).hexdigest()
        if self.cache is not None:
            cached = self.cache.get(key)
            if cached is not None:
                self._count("cache_hits")
                return cached, ""
        error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self._count("retries")
            wait = None
            try:
                self._count("requests")
                response = self._post(body)
            except (httpx.TimeoutException, httpx.TransportError) as e:
                error = f"{type(e).__name__}: {e}"
            else:
                if response.status_code == 200:
                    try:
                        answer = response.json()
                        choice = answer["choices"][0]
                        content = choice["message"]["content"] or ""
                        # some servers (Mistral's) send content as parts, as a request may: the text parts answer
                        text = content if isinstance(content, str) else "".join(
                            p["text"] for p in content if p["type"] == "text")
                    except (ValueError, KeyError, IndexError, TypeError):
                        self._count("failures")
                        return None, f"malformed answer: {response.text[:200]}"
                    if choice.get("finish_reason") == "length" and (not text and _reasoned(answer, choice)
                                                                    or _thinking(text)):
                        self._count("failures")
                        return None, (f"the answer was cut at max_tokens={self.max_tokens} before it began "
                                      "(a reasoning model thinks first: raise max_tokens, e.g. 2048)")
                    if self.cache is not None:
                        self.cache.put(key, text)
                    return text, ""
                error = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code not in RETRY_STATUSES:
                    break  # a 4xx will not change on retry
                wait = _retry_after(response.headers.get("retry-after"))
            if attempt < self.retries:
                self._pause(attempt, wait)
        self._count("failures")
        return None, error

    def _pause(self, attempt: int, wait: float | None) -> None:
        """Before asking again: the server's Retry-After if it sent one, else a jittered exponential backoff."""
        delay = min(self.max_backoff, self.backoff * 2**attempt) * (0.5 + random.random() / 2)
        time.sleep(min(self.max_backoff, wait) if wait is not None else delay)

    def _post(self, body: dict):
        """POST a chat completion with the length limit under ``token_param``; a 400 that names it
        is asked once more under the other name, kept if the server takes it."""
        url = f"{self.base_url}/chat/completions"
        sent = self.token_param
        response = self._client.post(url, json=_renamed(body, sent))
        if response.status_code == 400 and sent in response.text:
            other = TOKEN_PARAMS[1 - TOKEN_PARAMS.index(sent)]
            again = self._client.post(url, json=_renamed(body, other))
            if again.status_code != 400:
                self.token_param = other
                return again
        return response

    # ------------------------------------------------------------------ many pairs

    def judge_many(self, items: Sequence[Item]) -> list[Verdict]:
        self.check()
        asks = []
        for item in items:  # A first, then B first: the order swap that cancels position bias
            asks.append(pairwise_messages(item.prompt, item.a, item.b))
            asks.append(pairwise_messages(item.prompt, item.b, item.a))
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            answers = pool.map(self.ask, asks)
            if self.progress:
                from tqdm import tqdm

                answers = tqdm(answers, total=len(asks), desc="judge calls", unit="call")
            answers = list(answers)
        verdicts = []
        for i in range(len(items)):
            (text_ab, err_ab), (text_ba, err_ba) = answers[2 * i], answers[2 * i + 1]
            ab = parse_pairwise_verdict(text_ab) if text_ab is not None else "invalid"
            ba = swap_winner(parse_pairwise_verdict(text_ba)) if text_ba is not None else "invalid"
            raw = json.dumps(
                {"ab": text_ab if text_ab is not None else f"error: {err_ab}",
                 "ba": text_ba if text_ba is not None else f"error: {err_ba}"},
                ensure_ascii=False,
            )
            detail = {"orders": {"ab": ab, "ba": ba}}
            if text_ab is None or text_ba is None:
                detail["error"] = err_ab or err_ba
            verdicts.append(Verdict(combine_orders(ab, ba), raw=raw, detail=detail))
        return verdicts

    def close(self) -> None:
        self._client.close()
        if self.cache is not None:
            self.cache.close()


def _reasoned(answer: dict, choice: dict) -> bool:
    """Whether the server says the model spent tokens reasoning (OpenAI's usage, or vLLM's and
    others' ``reasoning_content`` beside the answer)."""
    details = (answer.get("usage") or {}).get("completion_tokens_details") or {}
    message = choice.get("message") or {}
    return bool(details.get("reasoning_tokens") or message.get("reasoning_content") or message.get("reasoning"))


def _thinking(text: str) -> bool:
    """Whether the answer stops inside a ``<think>`` block (a server that keeps the reasoning in the content)."""
    return text.rfind("<think>") > text.rfind("</think>")


def _renamed(body: dict, token_param: str) -> dict:
    """The request as sent: the cache's canonical body (``max_tokens``) with the limit under ``token_param``."""
    if token_param == "max_tokens":
        return body
    out = {k: v for k, v in body.items() if k != "max_tokens"}
    out[token_param] = body["max_tokens"]
    return out


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (the HTTP-date form is rare from these servers: ignored)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
