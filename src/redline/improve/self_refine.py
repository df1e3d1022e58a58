"""Self-Refine: the same model gives feedback on its response, then refines it — PIT's prompting baseline.

Madaan et al. 2023, "Self-Refine: iterative refinement with self-feedback", arXiv 2303.17651. Per
task an init prompt writes y_0, a feedback prompt critiques it, an iterate prompt rewrites it given
the feedback; the loop stops when the feedback says there is nothing to fix or after a few rounds
(~4). PIT (Wang et al. 2023, arXiv 2310.00898) compares against it; people preferred PIT on HH-RLHF
by 23.5 points.

    redline refine --model MODEL --input responses.jsonl --iterations 4 --out DIR

Steps of one iteration (``self_refine_step``):
  1. ask the model for feedback on each (prompt, current response): the feedback prompt
     (prompts.py) asks for one problem per line, or exactly "NO ISSUES";
  2. read the feedback (``parse_feedback``): NO ISSUES on its first or last line means done;
  3. a done item keeps its response (``nothing_to_fix``; ``--stop nothing`` ends it); an empty
     feedback is a parse failure (the response stays, the failure is counted);
  4. ask the model to refine every other item given its feedback (the iterate prompt);
  5. read each refinement as ``improve`` reads a rewrite (``pit.read_rewrite``): one cut by
     ``--max-new-tokens`` (``budget``), one that loops (``loop``) or an empty one (``parse``) is a
     failure that leaves the response as it was; otherwise it is the new response.
The loop, the stop rules, the output layout and resuming are ``revise``'s (``improve/loop.py``).

Deviations from the paper:
  1. y_0 is read from ``--input`` (as PIT's y_0 comes from the ordinary policy); the paper's init
     prompt is not run. Any model's responses can be refined.
  2. One zero-shot feedback prompt and one iterate prompt for every request; the paper writes them
     per task, with few-shot examples, and scores named traits in the feedback.
  3. The iterate prompt sees the current response and its feedback only, not the whole history of
     earlier responses and feedback (the loop carries one response per item).
  4. ``--stop nothing`` (the paper's rule) is the default; ``fixed`` and ``best`` are the loop's. Under
     it an item also stops when its refinement comes back the same as the response (the loop's
     rule), not only when its feedback says NO ISSUES.
  5. Sampling at temperature 0.7 by default, inside the paper-comparison's best range for
     Self-Refine (0.6–0.8, PIT's §5), with a seed per (item, iteration, call).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from redline import RedlineError
from redline.generation import has_room
from redline.improve.loop import IterateSettings, StepOutput, item_seed, run_method
from redline.improve.pit import read_rewrite
from redline.improve.revise import generate_by_budget, token_counter
from redline.prompts import feedback_messages, iterate_messages, parse_feedback


@dataclass
class RefineConfig(IterateSettings):
    """`redline refine`: the model, then the settings every iterating command shares."""

    model: str = field(default="", metadata={"required": True, "help": "the model that gives feedback and refines (hub id, path, run, embedded)"})
    iterations: int = field(default=4, metadata={"min": 1, "result": False, "help": "at most this many rounds of feedback and refinement"})
    stop: str = field(default="nothing", metadata={"choices": ("fixed", "nothing", "best"), "help": "nothing (stop when the feedback finds nothing to fix; the paper), fixed, or best (keep the best by --judge)"})
    temperature: float = field(default=0.7, metadata={"min": 0, "help": "sampling temperature (0.6-0.8 best for Self-Refine in PIT's comparison; 0 = greedy)"})
    feedback_max_new_tokens: int = field(default=256, metadata={"min": 1, "help": "tokens per feedback"})
    max_new_tokens: int = field(default=512, metadata={"min": 1, "help": "tokens per refined response"})


def self_refine_step(engine, config: RefineConfig):
    """The step function for ``run_iterations``: steps 1–5 of the module docstring. An item whose feedback or
    refine prompt leaves the model no room fails alone, as a budget failure (its response kept as it was)."""
    _, count_prompt, context = token_counter(engine)

    def budgets(prompts: list, tokens: int) -> list[int]:  # 0: no room (``generate_by_budget`` sends it nowhere)
        return [tokens if has_room(count_prompt(p), context) else 0 for p in prompts]

    def step(rows: list[dict], iteration: int) -> list[StepOutput]:
        # Step 1: feedback on every current response.
        prompts = [feedback_messages(row["prompt"], row["response"]) for row in rows]
        seeds = [item_seed(config.seed, row["id"], iteration) for row in rows]
        room = budgets(prompts, config.feedback_max_new_tokens)
        feedback = [parse_feedback(c.text) for c in generate_by_budget(engine, prompts, room, seeds, config)]  # step 2

        # Step 3: done items keep their response; empty feedback is a parse failure.
        outputs: list[StepOutput | None] = [None] * len(rows)
        todo = []
        for i, (row, f) in enumerate(zip(rows, feedback)):
            if not room[i]:
                outputs[i] = StepOutput(feedback="", revision=None, failure="budget", budget=0)
            elif f.done:
                outputs[i] = StepOutput(feedback=f.feedback, revision=row["response"], keep=True)
            elif not f.parsed:
                outputs[i] = StepOutput(feedback="", revision=None)
            else:
                todo.append(i)

        # Step 4: refine the others given their feedback.
        if todo:
            prompts = [iterate_messages(rows[i]["prompt"], rows[i]["response"], feedback[i].feedback) for i in todo]
            seeds = [item_seed(config.seed + 1, rows[i]["id"], iteration) for i in todo]
            room = budgets(prompts, config.max_new_tokens)
            refined = generate_by_budget(engine, prompts, room, seeds, config)
            for i, c, budget in zip(todo, refined, room):  # step 5
                out = read_rewrite(c.text, c.finish_reason, rows[i]["response"], None if budget else 0)  # 0: no room
                outputs[i] = StepOutput(feedback=feedback[i].feedback, revision=out.revision, failure=out.failure,
                                        budget=out.budget)
        return outputs  # type: ignore[return-value]

    return step


def refine(config: RefineConfig, out, engine=None, judge=None, responses=None) -> dict[str, Any]:
    """Refine ``config.input`` (or ``responses``) for up to ``config.iterations`` rounds into ``out``."""

    if engine is None and not config.model:
        raise RedlineError("--model is required")
    if engine is None:
        from redline.models import check_language_model

        check_language_model(config.model, "a language model that can write feedback")
    return run_method(config, config.model, lambda e: self_refine_step(e, config), out,
                      engine=engine, judge=judge, responses=responses)
