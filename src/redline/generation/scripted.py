"""``ScriptedEngine``: an engine whose replies are written in advance, for the tests of other modules.

It is real code with its own tests (tests/test_generation_scripted.py): it honours ``stop`` and
``max_new_tokens`` the way a model engine does, counting whitespace-separated words as tokens, so a
revise loop or a judge tested against it sees the same ``Completion`` fields and finish reasons it
will see from a model. Replies come from one of::

    ScriptedEngine(lambda prompt, seed: f"echo {seed}")        # computed from the prompt and seed
    ScriptedEngine(["first reply", "second reply"])             # in call order, cycling
    ScriptedEngine({"What is 2+2?": "4"}, default="I don't know")  # by prompt text

A dict is keyed by the prompt string, or for chat messages by the last message's content.
``calls`` records every (prompt, seed) asked for, in order.
"""

from __future__ import annotations

import re
import time
from typing import Callable, Mapping, Sequence

from redline.generation import (
    Completion,
    GenerationStats,
    Progress,
    Prompt,
    SamplingParams,
    check_prompts,
    cut_at_stop,
    item_seeds,
    per_prompt,
)

_WORD = re.compile(r"\S+")


def prompt_text(prompt: Prompt) -> str:
    return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)


def n_words(text: str) -> int:
    return len(_WORD.findall(text))


def scripted_completion(reply: str, params: SamplingParams) -> tuple[str, int, str]:
    """(text, completion_tokens, finish_reason) of a reply generated under ``params``, word by word.

    The first ``max_new_tokens`` words are "generated"; a stop string among them ends the reply just
    before it ("stop"); more words than that is "length"; a reply that ends by itself is "stop".
    """
    words = list(_WORD.finditer(reply))
    over = len(words) > params.max_new_tokens
    generated = reply[: words[params.max_new_tokens - 1].end()] if over else reply
    text, hit = cut_at_stop(generated, params.stop)
    if hit:
        stop_end = min(generated.find(s) + len(s) for s in params.stop if generated.find(s) == len(text))
        return text, n_words(generated[:stop_end]), "stop"
    if over:
        return text, params.max_new_tokens, "length"
    return text, len(words), "stop"


class ScriptedEngine:
    """An ``Engine`` that answers from a function ``(prompt, seed) -> str``, a list, or a dict."""

    def __init__(
        self,
        replies: Callable[[Prompt, int], str] | Sequence[str] | Mapping[str, str],
        default: str | None = None,
    ):
        if isinstance(replies, str):
            raise TypeError("give a list of replies, not one string")
        if not callable(replies) and not isinstance(replies, Mapping) and not replies:
            raise ValueError("a ScriptedEngine needs at least one reply")
        self.replies = replies
        self.default = default
        self.calls: list[tuple[Prompt, int]] = []
        self.last_stats = GenerationStats()
        self._next = 0

    def _reply(self, prompt: Prompt, seed: int) -> str:
        if callable(self.replies):
            return self.replies(prompt, seed)
        if isinstance(self.replies, Mapping):
            key = prompt if isinstance(prompt, str) else (prompt[-1]["content"] if prompt else "")
            if key in self.replies:
                return self.replies[key]
            if self.default is None:
                raise KeyError(f"ScriptedEngine has no reply for prompt {key[:80]!r} and no default")
            return self.default
        reply = self.replies[self._next % len(self.replies)]
        self._next += 1
        return reply

    def generate(
        self,
        prompts: list[Prompt],
        params: SamplingParams | Sequence[SamplingParams],
        seeds: list[int] | None = None,
        progress: Progress = True,
    ) -> list[Completion]:
        start = time.perf_counter()
        out = []
        check_prompts(prompts)
        params = per_prompt(params, len(prompts))
        for prompt, q, seed in zip(prompts, params, item_seeds(len(prompts), params, seeds)):
            t0 = time.perf_counter()
            self.calls.append((prompt, seed))
            text, n, reason = scripted_completion(self._reply(prompt, seed), q)
            out.append(Completion(text, n_words(prompt_text(prompt)), n, reason, time.perf_counter() - t0, seed))
        if not isinstance(progress, bool):  # the caller's bar (Engine.generate); scripted replies show none of their own
            progress.update(len(out))
        self.last_stats = GenerationStats(
            items=len(out),
            prompt_tokens=sum(c.prompt_tokens for c in out),
            completion_tokens=sum(c.completion_tokens for c in out),
            seconds=time.perf_counter() - start,
        )
        return out
