"""Revise any model's responses with a trained critic, iteratively.

Jin et al. 2023, arXiv 2311.14543: the critic reads a prompt and a response, writes a critique and
a revision; the revision is fed back as the next response. One revision of ChatGPT's responses won
56.6% against the originals, five iterations 65.9%.

    redline revise --critic RUN --input responses.jsonl --iterations 5 --out DIR [--stop nothing]

Steps of one iteration (``critic_step``):
  1. build the critic's chat prompt from each (prompt, current response) — prompts.py;
  2. give each item its budget of new tokens (``revision_budget``): ``--critique-tokens`` for the
     critique, plus 1.5 × the response's tokens (at least 128) for the revision, so that a full
     revision of a response of that length fits; capped by the model's context and ``--max-new-tokens``;
  3. generate critique + revision for the batch through the generation engine in one call, each
     item under its own budget (rows with different budgets decode together);
  4. read each output. A failure leaves the response as it was, and is counted by its cause:
       budget  the output ran out of new tokens before it ended: a cut revision is never applied;
       loop    the output repeats one block of words over and over (``has_loop``), where the
               response it revises did not;
       parse   no revision part, or an empty one;
  5. ``--apply when-critiqued`` (the default) keeps the response when the critique says there is
     nothing to fix (``finds_nothing_to_fix``), whatever the revision says; ``always`` applies every
     revision that parsed. A revision equal to the response changes nothing under either.
The loop, the stop rules, the output layout and resuming are in ``improve/loop.py``.

Deviations from the paper:
  1. Stop rules beyond a fixed count ("nothing": stop when the revision changes nothing; "best":
     keep the best so far by a judge) are ours; the paper ran fixed iterations.
  2. Generation is greedy by default (temperature 0) so a revision is reproducible; the paper does
     not state its decoding settings.
  3. Budgets per item, the failure causes and ``--apply when-critiqued`` are ours: a small critic
     that rewrites answers it calls good, or whose revision is cut, does harm the paper's 40B
     critic was not measured for.
  4. A multi-turn chat prompt is shown to the critic by its last user message (``critic_messages``), in
     training and here alike: the critic does not see the earlier turns (an imported HH-RLHF dialogue),
     where PIT and Self-Refine show the whole chat. The paper's data were single-turn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from redline import RedlineError
from redline.improve.loop import IterateSettings, StepOutput, item_seed, run_method
from redline.prompts import critic_messages, finds_nothing_to_fix, has_loop, parse_critic_output

APPLY_RULES = ("when-critiqued", "always")
REVISION_FACTOR = 1.5  # new tokens for a revision, per token of the response it revises
MIN_REVISION_TOKENS = 128  # a short response may need a much longer revision ("at least 300 words")
# Budgets round up to a multiple of this: slack past 1.5x, and the budgets of earlier runs (once
# rounded so that items shared generate calls; the engine now takes a cap per prompt) stay the same.
BUDGET_STEP = 128


@dataclass
class ReviseConfig(IterateSettings):
    """`redline revise`: the critic, then the settings every iterating command shares."""

    critic: str = field(default="", metadata={"required": True, "help": "the critic's run folder (or any model that writes Critique:/Revision:)"})
    apply: str = field(default="when-critiqued", metadata={"choices": APPLY_RULES,
        "help": "when-critiqued (keep the response when the critique finds nothing to fix) or always"})
    critique_tokens: int = field(default=256, metadata={"min": 1,
        "help": "new tokens for a critique; each item gets these plus 1.5 x its response's tokens (at least 128)"})
    max_new_tokens: int | None = field(default=None, metadata={"min": 1,
        "help": "cap on an item's new tokens (default: the model's context); a revision cut by it is never applied"})

    def check(self) -> None:
        """What a config built in Python (not parsed from flags) could still get wrong."""
        if self.apply not in APPLY_RULES:
            raise RedlineError(f"--apply {self.apply!r} is not one of {', '.join(APPLY_RULES)}")
        if self.critique_tokens < 1:
            raise RedlineError("--critique-tokens must be at least 1")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise RedlineError("--max-new-tokens must be at least 1")


def revision_budget(response_tokens: int, prompt_tokens: int, critique_tokens: int,
                    context: int | None = None, cap: int | None = None) -> int:
    """New tokens for one critique and a full revision of a response of ``response_tokens``
    (step 2), rounded up to a multiple of BUDGET_STEP, never past the context or ``cap``; 0 where the
    prompt leaves the model no room (``generate_by_budget`` writes nothing for it: a budget failure)."""
    wanted = critique_tokens + max(MIN_REVISION_TOKENS, math.ceil(REVISION_FACTOR * response_tokens))
    budget = math.ceil(wanted / BUDGET_STEP) * BUDGET_STEP
    from redline.generation import has_room

    if not has_room(prompt_tokens, context):
        return 0
    if context is not None:
        budget = min(budget, context - prompt_tokens)
    if cap is not None:
        budget = min(budget, cap)
    return max(1, budget)


def token_counter(engine):
    """Tokens of a text (or a chat prompt) as the engine's model counts them, and its context length.

    An engine without a tokenizer (ScriptedEngine) counts whitespace-separated words, as it
    generates them."""
    encode = getattr(engine, "encode", None)
    tokenizer = getattr(engine, "tokenizer", None)
    if encode is None or tokenizer is None:
        from redline.generation.scripted import n_words, prompt_text

        return (lambda text: n_words(text)), (lambda prompt: n_words(prompt_text(prompt))), None
    config = getattr(engine, "config", None)
    context = getattr(config, "max_position_embeddings", None)
    if context is None:  # vLLM: the length it was loaded with
        context = getattr(getattr(getattr(getattr(engine, "llm", None), "llm_engine", None), "model_config", None),
                          "max_model_len", None)
    return (lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])), (lambda p: len(encode(p))), context


def generate_by_budget(engine, prompts: list, budgets: list[int], seeds: list[int], config, progress: bool = False) -> list:
    """Each prompt's completion under its own new-token budget, in the prompts' order, in one call:
    the engine decodes rows with other budgets together (one call per budget decoded 3–5 small
    groups of rows one after another). ``config`` gives the sampling settings (temperature, top_p,
    seed, no_repeat_ngram, copy_ngrams). A prompt with a budget of 0 (one longer than the model's context) is
    not sent: the engine refuses it, and with it every other item of the call; its completion is empty and cut
    by length, which the steps read as a budget failure (the response kept as it was)."""
    from redline.generation import Completion, SamplingParams

    fits = [i for i, budget in enumerate(budgets) if budget > 0]
    params = [SamplingParams(temperature=config.temperature, top_p=config.top_p, max_new_tokens=budgets[i], seed=config.seed,
                             no_repeat_ngram=config.no_repeat_ngram, prompt_ngrams=config.copy_ngrams) for i in fits]
    done = engine.generate([prompts[i] for i in fits], params, seeds=[seeds[i] for i in fits], progress=progress) if fits else []
    completions = [Completion(text="", prompt_tokens=0, completion_tokens=0, finish_reason="length", seconds=0.0, seed=seed)
                   for seed in seeds]
    for i, completion in zip(fits, done):
        completions[i] = completion
    return completions


def critic_step(engine, config: ReviseConfig, progress: bool = False):
    """The step function for ``run_iterations``: steps 1–5 of the module docstring; ``progress``
    shows the engine's bar (tokens/s, time left) for each generate call."""
    count_text, count_prompt, context = token_counter(engine)

    def step(rows: list[dict], iteration: int) -> list[StepOutput]:
        prompts = [critic_messages(row["prompt"], row["response"]) for row in rows]  # step 1
        budgets = [revision_budget(count_text(row["response"]), count_prompt(p), config.critique_tokens, context,  # step 2
                                   config.max_new_tokens) for row, p in zip(rows, prompts)]
        seeds = [item_seed(config.seed, row["id"], iteration) for row in rows]
        completions = generate_by_budget(engine, prompts, budgets, seeds, config, progress)  # step 3
        return [read_output(c.text, c.finish_reason, row["response"], budget, config.apply)  # steps 4-5
                for row, c, budget in zip(rows, completions, budgets)]

    return step


def read_output(text: str, finish_reason: str, response: str, budget: int | None = None,
                apply: str = "when-critiqued") -> StepOutput:
    """Steps 4–5 for one generation: its critique, and its revision unless it failed (with the cause)."""
    parsed = parse_critic_output(text)
    failure = None
    if finish_reason == "length":
        failure = "loop" if has_loop(text) else "budget"
    elif parsed.revision is None:
        failure = "parse"
    elif has_loop(parsed.revision) and not has_loop(response):
        failure = "loop"
    if failure:  # the revision (cut, looping or missing) is kept in the record, never applied
        return StepOutput(feedback=parsed.critique, revision=parsed.revision, failure=failure, budget=budget)
    keep = apply == "when-critiqued" and finds_nothing_to_fix(parsed.critique)
    return StepOutput(feedback=parsed.critique, revision=parsed.revision, keep=keep, budget=budget)


def revise(config: ReviseConfig, out, engine=None, judge=None, responses=None, progress: bool = False) -> dict[str, Any]:
    """Revise ``config.input`` (or ``responses``) for ``config.iterations`` rounds into ``out``.

    The critic's kind, every setting (``ReviseConfig.check``) and the input are checked before the
    critic loads."""
    from redline.models import CRITIC, run_kind

    if engine is None and not config.critic:  # a config built in Python: the critic is loaded by its name
        raise RedlineError("--critic is required: the critic's run folder (or pass engine=)")
    kind = run_kind(config.critic)
    if kind is not None and kind != CRITIC:
        raise RedlineError(f"{config.critic} is a {kind} run, not a critic (train one with `redline train critic`)")
    config.check()  # --iterations, --stop and the inputs: run_method, before the critic loads
    return run_method(config, config.critic, lambda e: critic_step(e, config, progress), out,
                      engine=engine, judge=judge, responses=responses)
