"""Revise any model's responses with a trained critic, iteratively.

Jin et al. 2023, arXiv 2311.14543: the critic reads a prompt and a response, writes a critique and
a revision; the revision is fed back as the next response. One revision of ChatGPT's responses won
56.6% against the originals, five iterations 65.9%.

    redline revise --critic RUN --input responses.jsonl --iterations 5 --out DIR [--stop nothing]

Steps of one iteration (``critic_step``):
  1. build the critic's chat prompt from each (prompt, current response) — prompts.py;
  2. generate critique + revision for the whole batch through the generation engine;
  3. parse each output; one with no revision part, or an empty one, leaves the response as it was.
The loop, the stop rules, the output layout and resuming are in ``improve/loop.py``.

Deviations from the paper:
  1. Stop rules beyond a fixed count ("nothing": stop when the revision changes nothing; "best":
     keep the best so far by a judge) are ours; the paper ran fixed iterations.
  2. Generation is greedy by default (temperature 0) so a revision is reproducible; the paper does
     not state its decoding settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from redline import RedlineError
from redline.improve.loop import IterateSettings, StepOutput, item_seed, run_method
from redline.prompts import critic_messages, parse_critic_output


@dataclass
class ReviseConfig(IterateSettings):
    """`redline revise`: the critic, then the settings every iterating command shares."""

    critic: str = field(default="", metadata={"required": True, "help": "the critic's run folder (or any model that writes Critique:/Revision:)"})
    max_new_tokens: int = field(default=512, metadata={"min": 1, "help": "tokens for critique and revision together"})


def critic_step(engine, config: ReviseConfig):
    """The step function for ``run_iterations``: steps 1–3 of the module docstring."""
    from redline.generation import SamplingParams

    params = SamplingParams(
        temperature=config.temperature, top_p=config.top_p, max_new_tokens=config.max_new_tokens, seed=config.seed
    )

    def step(rows: list[dict], iteration: int) -> list[StepOutput]:
        prompts = [critic_messages(row["prompt"], row["response"]) for row in rows]  # step 1
        seeds = [item_seed(config.seed, row["id"], iteration) for row in rows]
        completions = engine.generate(prompts, params, seeds=seeds, progress=False)  # step 2
        outputs = []
        for c in completions:  # step 3
            parsed = parse_critic_output(c.text)
            outputs.append(StepOutput(feedback=parsed.critique, revision=parsed.revision))
        return outputs

    return step


def revise(config: ReviseConfig, out, engine=None, judge=None, responses=None) -> dict[str, Any]:
    """Revise ``config.input`` (or ``responses``) for ``config.iterations`` rounds into ``out``."""
    from redline.models import CRITIC, run_kind

    kind = run_kind(config.critic)
    if kind is not None and kind != CRITIC:
        raise RedlineError(f"{config.critic} is a {kind} run, not a critic (train one with `redline train critic`)")
    return run_method(config, config.critic, lambda e: critic_step(e, config), out,
                      engine=engine, judge=judge, responses=responses)
