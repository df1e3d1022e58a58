"""Improve any model's responses with a PIT policy, iteratively: y_{t+1} = PIT(x, y_t).

Wang et al. 2023, "Enabling language models to implicitly learn self-improvement" (PIT),
arXiv 2310.00898 (ICLR 2024): y_0 comes from the ordinary policy, and the PIT policy
(``redline train pit``) rewrites the current response into a better one; the paper studied five
iterations and found quality not monotone in t, so stopping needs care (``--stop best`` with a judge).

    redline improve --model runs/pit --input responses.jsonl --iterations 5 --out DIR [--stop best --judge J]

Steps of one iteration (``pit_step``):
  1. build PIT's chat prompt from each (prompt, current response) — prompts.py, the template the
     policy was trained on;
  2. give each item its budget of new tokens, by revise's rule with no critique: 1.5 × the
     response's tokens (at least 128), rounded up to a multiple of 128, capped by the model's
     context and ``--max-new-tokens``; a full rewrite of an answer of that length fits;
  3. generate the new responses through the generation engine in one call, each under its budget;
  4. read each. A failure leaves the response as it was, and is counted by its cause (the loop's
     summary): ``budget`` (the output ran out of new tokens: a cut rewrite is never applied),
     ``loop`` (it repeats one block of words over and over, ``has_loop``, where the response it
     rewrites did not) or ``parse`` (nothing left once an echoed "### Response" heading is
     dropped). There is no written feedback: PIT improves implicitly (``feedback`` is "").
The loop, the stop rules, the output layout and resuming are ``revise``'s (``improve/loop.py``).

Deviations from the paper:
  1. Stop rules beyond a fixed count ("nothing", "best") are the loop's, shared with revise.
  2. Sampling at temperature 0.5 by default, inside the paper's best range for PIT (0.4–0.6), with a
     seed per (item, iteration) so that a run is reproducible and resumes exactly.
  3. Budgets per item and the failure causes are ours (revise's): the 135M policy loops far more
     when it reads (request, response) than the request alone, and a rewrite cut by the budget is
     usually the start of the old answer; the paper's model was not measured for either.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from redline import RedlineError
from redline.improve.loop import IterateSettings, StepOutput, item_seed, run_method
from redline.improve.revise import generate_by_budget, revision_budget, token_counter
from redline.prompts import has_loop, parse_rewrite, pit_messages


@dataclass
class ImproveConfig(IterateSettings):
    """`redline improve`: the PIT policy, then the settings every iterating command shares."""

    model: str = field(default="", metadata={"required": True, "help": "the PIT policy: a `train pit` run folder (its final stage) or one of its stages"})
    iterations: int = field(default=1, metadata={"min": 1, "result": False, "help": "rounds of improvement (the paper studied 5)"})
    temperature: float = field(default=0.5, metadata={"min": 0, "help": "sampling temperature (the paper: 0.4-0.6 best for PIT; 0 = greedy)"})
    max_new_tokens: int | None = field(default=None, metadata={"min": 1, "help":
        "cap on an item's new tokens (default: the model's context; each item gets 1.5 x its response's tokens, at "
        "least 128); a rewrite cut by it is never applied"})


def pit_step(engine, config: ImproveConfig):
    """The step function for ``run_iterations``: steps 1–4 of the module docstring."""
    count_text, count_prompt, context = token_counter(engine)

    def step(rows: list[dict], iteration: int) -> list[StepOutput]:
        prompts = [pit_messages(row["prompt"], row["response"]) for row in rows]  # step 1
        budgets = [revision_budget(count_text(row["response"]), count_prompt(p), 0, context, config.max_new_tokens)
                   for row, p in zip(rows, prompts)]  # step 2
        seeds = [item_seed(config.seed, row["id"], iteration) for row in rows]
        completions = generate_by_budget(engine, prompts, budgets, seeds, config)  # step 3
        return [read_rewrite(c.text, c.finish_reason, row["response"], budget)  # step 4
                for row, c, budget in zip(rows, completions, budgets)]

    return step


def read_rewrite(text: str, finish_reason: str, response: str, budget: int | None = None) -> StepOutput:
    """Step 4 for one generation: the new response, or the failure that keeps the old one."""
    revision = parse_rewrite(text)
    failure = None
    if finish_reason == "length":
        failure = "loop" if has_loop(text) else "budget"
    elif revision is None:
        failure = "parse"
    elif has_loop(revision) and not has_loop(response):
        failure = "loop"
    return StepOutput(feedback="", revision=revision, failure=failure, budget=budget)


def improve(config: ImproveConfig, out, engine=None, judge=None, responses=None) -> dict[str, Any]:
    """Improve ``config.input`` (or ``responses``) for ``config.iterations`` rounds into ``out``.

    The model must be a PIT policy (checked before anything is read or written); with ``engine``
    given (tests, or a caller that loaded it) a model name that is not a folder is taken as it is.
    """
    from redline.train.pit import pit_policy

    policy = config.model
    if engine is None or Path(config.model).is_dir():
        if not config.model:
            raise RedlineError("--model is required: a PIT run (redline train pit)")
        policy = pit_policy(config.model)
    return run_method(config, policy, lambda e: pit_step(e, config), out, engine=engine, judge=judge,
                      responses=responses, settings={**asdict(config), "policy": policy})
