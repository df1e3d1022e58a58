"""One interface for every caller that needs text from a model: a batch of prompts in, completions out.

Revise loops, PPO rollouts, judges and the server all call ``engine.generate(prompts, params)``::

    from redline.generation import SamplingParams, load_engine

    engine = load_engine("embedded")                       # transformers on CPU or GPU
    out = engine.generate(["Once upon a time"], SamplingParams(temperature=0, max_new_tokens=32))
    out[0].text, out[0].finish_reason, engine.last_stats.tokens_per_s

A ``str`` prompt is raw text, tokenized as the tokenizer does by default (as vLLM does); a list of
``{"role", "content"}`` messages gets the model's chat template with the generation prompt
(``as_chat`` turns a record's string prompt into such a list). ``params`` is one ``SamplingParams``
for all prompts or one per prompt. Item i's seed is ``seeds[i]`` if given, else its params' ``seed +
i`` (with a list too: give ``seeds`` for seeds of your own). In float32 a completion depends only on
its prompt, its seed and the sampling settings, never on what else shares its batch; in bfloat16 it
can change past a few hundred positions with the call (``transformers_engine`` says exactly what
holds, bit for bit).

Engines:

- ``transformers`` (``TransformersEngine``): our own decode loop over a ``transformers`` model, with
  a per-sequence KV cache, continuous batching and per-row RNG; the fast path on CPU.
- ``vllm`` (``VLLMEngine``): vLLM on GPU, imported only when asked for.
- ``ScriptedEngine``: canned or computed replies, for the tests of every other module.

This module stays light: torch and the backends are imported only by ``load_engine``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any, Protocol, Union, runtime_checkable

Message = dict[str, str]
Prompt = Union[str, list[Message]]

BACKENDS = ("transformers", "vllm")


class SamplingError(ValueError):
    """A sampling setting out of its bounds: ``field`` names it, so a command can name its own flag."""

    def __init__(self, field_name: str, rule: str):
        super().__init__(f"{field_name} {rule}")
        self.field = field_name
        self.rule = rule


@dataclass
class SamplingParams:
    """How to sample: one set shared by a ``generate`` call's items, or one set per prompt (``per_prompt``)."""

    temperature: float = 0.7  # 0 = greedy (so is one under 1e-5 in the transformers engine: sampling.GREEDY_BELOW)
    top_p: float = 1.0  # nucleus sampling: keep the most likely tokens up to this much probability
    max_new_tokens: int = 256
    stop: list[str] = field(default_factory=list)  # cut before the first of these; finish_reason "stop"
    seed: int = 0  # item i uses seed + i unless generate() is given seeds
    # Forbid a token that would repeat an n-gram of this many tokens already in the completion (the
    # prompt is not counted: a revision may copy its answer). 0 = off. transformers' decode loop only.
    no_repeat_ngram: int = 0
    # With no_repeat_ngram: an n-gram the prompt holds may repeat, so a revision that copies an answer
    # which itself repeats a phrase (a title restated, an all-capitals text) copies it whole; loops of
    # new text stay banned. Off by default (the runs measured before it existed ran without it).
    prompt_ngrams: bool = False
    # Return each generated token's log-probability under the distribution it was drawn from (log
    # softmax of logits / temperature, before top-p; greedy reads temperature 1) and that
    # distribution's entropy: PPO's π_old without a second forward pass. transformers' engine only.
    logprobs: bool = False

    def __post_init__(self):
        for name, ok, rule in (
            # inf sampled uniformly, and under no_repeat_ngram turned the banned tokens' logits into NaN
            ("temperature", 0 <= self.temperature < float("inf"), "must be a finite number, at least 0"),
            ("top_p", 0 < self.top_p <= 1, "must be in (0, 1]"),
            ("max_new_tokens", self.max_new_tokens >= 1, "must be at least 1"),
            ("no_repeat_ngram", self.no_repeat_ngram == 0 or self.no_repeat_ngram >= 2, "must be 0 (off) or at least 2"),
            # what torch's generators take (vLLM seeds them too): a wider seed failed once the model had loaded
            ("seed", -(2**63) <= self.seed < 2**64, "must be within -2**63 and 2**64 - 1 (a 64-bit seed)"),
        ):
            if not ok:
                raise SamplingError(name, f"{rule}, got {getattr(self, name)}")
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = [s for s in self.stop if s]


def sampling_from_flags(**settings) -> SamplingParams:
    """``SamplingParams`` from a command's settings, one out of bounds refused as its flag (``--top-p``): called
    before a model loads, so a bad setting costs nothing."""
    try:
        return SamplingParams(**settings)
    except SamplingError as bad:
        from redline import RedlineError

        raise RedlineError(f"--{bad.field.replace('_', '-')} {bad.rule}") from None


@dataclass
class Completion:
    text: str  # the completion only, without the prompt, the EOS token or the stop string
    prompt_tokens: int
    completion_tokens: int  # tokens generated, up to and including the one that ended it
    finish_reason: str  # "stop" (EOS or a stop string) | "length" (max_new_tokens reached)
    seconds: float  # wall-clock time from this item's start (its prefill) to its last token
    seed: int
    # The generated ids behind completion_tokens (EOS included); empty where the engine has no
    # tokenizer (ScriptedEngine). PPO trains on exactly these, since re-tokenizing text is not exact (its reward
    # model reads the decoded text in the chat template: train/ppo.py, deviation 17).
    token_ids: list[int] = field(default_factory=list)
    # With ``SamplingParams.logprobs``: one float per token of ``token_ids`` (see there); else empty.
    logprobs: list[float] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)


@dataclass
class GenerationStats:
    """What the last ``generate`` call did; ``tokens_per_s`` counts generated tokens only."""

    items: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    prefill_seconds: float = 0.0  # part of seconds spent on prompts (where the engine knows)
    shared_prompt_tokens: int = 0  # prompt tokens copied from another item's cache, not computed

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0


Progress = Any  # bool (a bar of the call's own, or none) or the caller's tqdm bar (see Engine.generate)


def progress_bar(total: int, *, initial: int = 0, enabled: bool = True):
    """The "generate" bar over items, with the rate and the time left, its count shown whole (engines advance it
    by fractions of an item): an engine's own for one call, or `redline generate`'s over a file, from ``initial``."""
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="item", desc="generate", file=sys.stderr, dynamic_ncols=True,
                disable=not enabled,
                bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]")


@runtime_checkable
class Engine(Protocol):
    last_stats: GenerationStats

    def generate(
        self,
        prompts: list[Prompt],
        params: SamplingParams | Sequence[SamplingParams],
        seeds: list[int] | None = None,
        progress: Progress = True,
    ) -> list[Completion]:
        """One completion per prompt, in input order; ``params`` is one set for all or one per prompt
        (as vLLM takes them: a revision budget that follows each answer needs its own cap). ``progress``: a bar of
        the call's own, none, or the caller's tqdm bar over a larger whole, advanced by this call's items and left
        open (`redline generate` calls the engine a chunk at a time under one bar for the file)."""
        ...


def as_chat(prompt: Prompt) -> list[Message]:
    """A record's prompt as chat messages: a string becomes one user message."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return list(prompt)


def encode_prompt(tokenizer, prompt: Prompt) -> list[int]:
    """Token ids of a prompt, the same for every engine: raw text as the tokenizer does by default, messages
    through the chat template with the generation prompt. A tokenizer with no chat template refuses messages
    in one line (transformers' ValueError came after the model had loaded, as a traceback)."""
    if isinstance(prompt, str):
        return tokenizer(prompt)["input_ids"]
    if not getattr(tokenizer, "chat_template", None):
        from redline import RedlineError

        raise RedlineError(f"{getattr(tokenizer, 'name_or_path', '') or 'the model'}: its tokenizer has no chat "
                           "template, so a prompt of chat messages (as redline's commands give theirs) cannot be written "
                           "out for it: use a chat or instruct model, or a run trained from one")
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def has_room(prompt_tokens: int, context: int | None) -> bool:
    """Whether a prompt of ``prompt_tokens`` leaves a model of ``context`` positions room for one new token (None:
    no known limit): the one rule the engines refuse a prompt by and the steps that budget tokens skip one by."""
    return context is None or prompt_tokens < context


def prompt_beginning(prompt: Prompt, words: int = 12) -> str:
    """The first words of a prompt's text (``prompt_text``: its last user message, for a chat), to name it in an
    engine's error."""
    from redline.records import prompt_text

    head = (prompt_text(prompt) if prompt else "").split()
    return " ".join(head[:words]) + (" ..." if len(head) > words else "")


def check_prompts(prompts: Sequence[Prompt]) -> None:
    """``generate``'s ``prompts`` are a list of prompts: one string was read as a list of one-character prompts (a
    completion per character), and one chat's messages as prompts of their own; each is refused in one line."""
    if isinstance(prompts, str):
        raise TypeError("generate takes a list of prompts, got one string: pass [prompt]")
    if any(isinstance(p, dict) for p in prompts):
        raise TypeError("generate takes a list of prompts, each a string or a list of {role, content} messages; got a "
                        "message alone: pass [messages] for one chat")


def per_prompt(params: SamplingParams | Sequence[SamplingParams], n: int) -> list[SamplingParams]:
    """``generate``'s ``params`` as one set per prompt: one set is shared, a sequence must have ``n``."""
    if isinstance(params, SamplingParams):
        return [params] * n
    params = list(params)
    if len(params) != n:
        raise ValueError(f"{len(params)} sampling params for {n} prompts")
    return params


def item_seeds(n: int, params: SamplingParams | Sequence[SamplingParams], seeds: list[int] | None) -> list[int]:
    """Item i's seed: ``seeds[i]`` if given, else its params' ``seed + i``."""
    if seeds is None:
        return [q.seed + i for i, q in enumerate(per_prompt(params, n))]
    if len(seeds) != n:
        raise ValueError(f"{len(seeds)} seeds for {n} prompts")
    return [int(s) for s in seeds]


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """``text`` up to the earliest stop string (removed), and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def load_engine(
    model: str, backend: str = "transformers", dtype: str = "float32", device: str = "auto", **options: Any
) -> Engine:
    """An engine for a model name (hub id, folder, ``embedded``, ``tiny-random``, a run folder).

    ``options`` go to the backend: ``TransformersEngine`` (``max_batch``, ``kv_budget_gb``,
    ``threads``, ``exact``, ...) or ``VLLMEngine`` (any ``vllm.LLM`` argument).
    """
    if backend == "transformers":
        from redline.generation.transformers_engine import TransformersEngine

        return TransformersEngine.load(model, dtype=dtype, device=device, **options)
    if backend == "vllm":
        from redline.generation.vllm_engine import VLLMEngine

        return VLLMEngine.load(model, dtype=dtype, device=device, **options)
    from redline import RedlineError

    raise RedlineError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")


from redline.generation.scripted import ScriptedEngine  # noqa: E402  (needs the classes above)

__all__ = [
    "BACKENDS",
    "Completion",
    "Engine",
    "GenerationStats",
    "Message",
    "Prompt",
    "SamplingError",
    "SamplingParams",
    "ScriptedEngine",
    "as_chat",
    "check_prompts",
    "cut_at_stop",
    "encode_prompt",
    "item_seeds",
    "per_prompt",
    "prompt_beginning",
    "load_engine",
    "sampling_from_flags",
]
