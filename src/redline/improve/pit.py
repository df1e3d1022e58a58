"""Improve any model's responses with a PIT policy, iteratively: y_{t+1} = PIT(x, y_t).

Wang et al. 2023, "Enabling language models to implicitly learn self-improvement" (PIT),
arXiv 2310.00898 (ICLR 2024): y_0 comes from the ordinary policy, and the PIT policy
(``redline train pit``) rewrites the current response into a better one; the paper studied five
iterations and found quality not monotone in t, so stopping needs care (``--stop best`` with a judge).

    redline improve --model runs/pit --input responses.jsonl --iterations 5 --out DIR [--stop best --judge J]

Steps of one iteration (``pit_step``):
  1. build PIT's chat prompt from each (prompt, current response) — prompts.py, the template the
     policy was trained on;
  2. generate the new responses for the whole batch through the generation engine;
  3. parse each: an empty output (after an echoed "### Response" heading is dropped) leaves the
     response as it was. There is no written feedback: PIT improves implicitly (``feedback`` is "").
The loop, the stop rules, the output layout and resuming are ``revise``'s (``improve/loop.py``).

Deviations from the paper:
  1. Stop rules beyond a fixed count ("nothing", "best") are the loop's, shared with revise.
  2. Sampling at temperature 0.5 by default, inside the paper's best range for PIT (0.4–0.6), with a
     seed per (item, iteration) so that a run is reproducible and resumes exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from redline import RedlineError
from redline.improve.loop import IterateSettings, StepOutput, item_seed, run_method
from redline.prompts import parse_rewrite, pit_messages


@dataclass
class ImproveConfig(IterateSettings):
    """`redline improve`: the PIT policy, then the settings every iterating command shares."""

    model: str = field(default="", metadata={"required": True, "help": "the PIT policy: a `train pit` run folder (its final stage) or one of its stages"})
    iterations: int = field(default=1, metadata={"min": 1, "result": False, "help": "rounds of improvement (the paper studied 5)"})
    temperature: float = field(default=0.5, metadata={"min": 0, "help": "sampling temperature (the paper: 0.4-0.6 best for PIT; 0 = greedy)"})
    max_new_tokens: int = field(default=512, metadata={"min": 1, "help": "tokens per new response"})


def pit_step(engine, config: ImproveConfig):
    """The step function for ``run_iterations``: steps 1–3 of the module docstring."""
    from redline.generation import SamplingParams

    params = SamplingParams(temperature=config.temperature, top_p=config.top_p, max_new_tokens=config.max_new_tokens,
                            seed=config.seed)

    def step(rows: list[dict], iteration: int) -> list[StepOutput]:
        prompts = [pit_messages(row["prompt"], row["response"]) for row in rows]  # step 1
        seeds = [item_seed(config.seed, row["id"], iteration) for row in rows]
        completions = engine.generate(prompts, params, seeds=seeds, progress=False)  # step 2
        return [StepOutput(feedback="", revision=parse_rewrite(c.text)) for c in completions]  # step 3

    return step


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
