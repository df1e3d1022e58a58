"""The iteration loop shared by `revise` (critic), `improve` (PIT) and `refine` (Self-Refine).

Each takes response records and rewrites every response N times; iteration k works on the output
of iteration k−1. What differs is one step — how a batch of (prompt, current response) becomes
(feedback, new response) — passed in as a function. The loop owns the rest: the output layout,
the stop rules, and resuming.

Output layout (what ``redline evaluate`` reads)::

    DIR/iteration_0.jsonl     the input responses, as given
    DIR/iteration_K.jsonl     one record per input id, after iteration K:
        id, prompt, source, meta      as in the input (meta keeps e.g. the simulated instructions)
        response                      the current response after iteration K (what is judged)
        response_0                    the original response
        feedback                      the critique / feedback written at iteration K ("" if none)
        revision                      the raw new response of iteration K (cut or looping where it
                                      failed), or null if there was none
        changed                       whether `response` differs from iteration K−1's
        parsed                        whether the step's output is usable (no failure)
        failure                       null, or why the output was not used: parse, budget or loop
        nothing_to_fix                the feedback says nothing needs fixing (the response is kept)
        budget                        new tokens the step could write for this item (where it says)
        stopped                       whether the item had stopped before iteration K (carried over)
        halted                        whether the item stops after iteration K (stop rules below)
        reused                        with greedy decoding: the step's output is iteration K−1's, whose
                                      input was this same response (see "Greedy runs" below)
        left, reward                  with ``leave_above``: the judge's reward for the response, and
                                      whether it was left alone for being at or above the bar (in
                                      the iteration that left it; later files carry it as stopped)
    DIR/summary.json          per iteration: items, changed, failures by cause, nothing to fix,
                              stopped (all so far), left (newly, that iteration), reused; the run's settings

Stop rules (``stop``):
    fixed          every item runs N iterations;
    nothing        an item stops once its step changes nothing (the critic or the feedback finds
                   nothing to fix); it is carried over unchanged;
    best           keep the best response so far by a judge: a new response replaces the current
                   one only if the judge prefers it; an item stops when it is not replaced (but not
                   when the judge could not say: an ``invalid`` verdict keeps it and it goes on).

Leaving good responses alone (``leave_above``, with a reward-model judge): before each iteration
the judge scores every active response; one scoring at least the bar is not rewritten at all (no
step runs for it; it stops, counted as ``left`` in the summary). A reward model trained with
``--normalize-with`` scores the demonstrations' mean at 0, so ``leave_above 0`` reads "leave what
is already as good as the average demonstration". Why: a critic that cannot tell a good answer from
a bad one invents faults in good answers and obeys them (RESULTS "Critic"); a reward model near its
annotators can tell, and the step is not spent on answers it would only make worse.

Greedy runs (temperature 0, ``reuse``): a step reads (prompt, current response) and nothing else (the
iteration only seeds sampling), so an item whose response iteration K−1 stepped and did not change
would be given the same input at K and write the same output; the loop takes K−1's output for it
instead of generating again (``reused``; a failure stays a failure, "nothing to fix" stays so).
Later iterations change few answers, so most of their generation was this recomputation (RESULTS
"Critic"). bfloat16 engines are exact only for the same calls (their
matmuls round by batch shape), so there a reused output is the one K−1's call gave, where a new
call might differ in a late token; float32 engines give the same bits either way.

A failure leaves the response as it was (counted in the summary by its cause; the item goes on):
``parse`` (the output has no usable new response), ``budget`` (it ran out of new tokens: a cut
revision is never applied) or ``loop`` (it repeats itself); the step says which. Feedback that
finds nothing to fix keeps the response whatever the step's revision says (``StepOutput.keep``).

Resuming: records are appended in chunks and fsynced. Run the same command again and every
iteration file is read back (a torn last line is dropped), finished ids are skipped, and the run
continues with no record lost or duplicated.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from redline import RedlineError
from redline.config import seed_field
from redline.generation import sampling_from_flags
from redline.models import DTYPES as DTYPE_CHOICES
from redline.records import Response, append_records, read_jsonl_prefix, write_records, write_text_atomic

STOP_RULES = ("fixed", "nothing", "best")


FAILURES = ("parse", "budget", "loop")


@dataclass
class StepOutput:
    feedback: str
    revision: str | None  # the new response; None: the output did not parse
    failure: str | None = None  # one of FAILURES: the revision is not used ("parse" where revision is None)
    keep: bool = False  # the feedback finds nothing to fix: the response stays, whatever the revision says
    budget: int | None = None  # new tokens the step could write for this item

    def __post_init__(self):
        if self.failure is None and self.revision is None:
            self.failure = "parse"
        if self.failure is not None and self.failure not in FAILURES:
            raise ValueError(f"failure {self.failure!r} is not one of {', '.join(FAILURES)}")

    @property
    def usable(self) -> bool:
        return self.failure is None


# (current records with id, prompt, response, meta; iteration number) -> one output per record
Step = Callable[[list[dict], int], list[StepOutput]]


def item_seed(seed: int, item_id: str, iteration: int) -> int:
    """A sampling seed per (item, iteration) that does not depend on batching or on resuming."""
    import zlib

    return (seed * 1_000_003 + zlib.crc32(f"{item_id}\x00{iteration}".encode())) % (2**31 - 1)


@dataclass
class IterateSettings:
    """What `revise`, `improve` and `refine` share; each adds its model and may change defaults."""

    input: str = field(default="", metadata={"required": True, "help": "response records to rewrite"})
    iterations: int = field(default=1, metadata={"min": 1, "result": False, "help": "rounds of rewriting"})
    stop: str = field(default="fixed", metadata={"choices": ("fixed", "nothing", "best"), "help": "fixed, nothing (stop when nothing changes) or best (keep the best by --judge)"})
    judge: str | None = field(default=None, metadata={"help": "judge spec for --stop best and --leave-above"})
    leave_above: float | None = field(default=None, metadata={"help": "leave a response whose reward by --judge (a "
        "reward model) is at least this unchanged, and spend no step on it (0: the demonstrations' mean for a reward "
        "run trained with --normalize-with)"})
    temperature: float = field(default=0.0, metadata={"min": 0, "help": "sampling temperature (0 = greedy)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling"})
    max_new_tokens: int = field(default=512, metadata={"min": 1, "help": "tokens per generation"})
    seed: int = seed_field("sampling seed")
    no_repeat_ngram: int = field(default=0, metadata={"min": 0, "help": "forbid repeating any n-gram of this many "
        "tokens within one output (a guard against greedy loops; the input is not counted, so copying it is "
        "allowed); 0 = off; transformers backend only"})
    copy_ngrams: bool = field(default=False, metadata={"help": "with --no-repeat-ngram: an n-gram the input holds may "
        "repeat, so a rewrite that copies an answer which restates a phrase copies it whole (loops of new text stay "
        "banned); off by default, as the runs measured before it were"})
    backend: str = field(default="transformers", metadata={"choices": ("transformers", "vllm"), "help": "generation backend: transformers or vllm"})
    dtype: str = field(default="float32", metadata={"choices": DTYPE_CHOICES, "help": "weights dtype"})
    device: str = field(default="auto", metadata={"result": False, "help": "cpu, cuda or auto"})
    limit: int | None = field(default=None, metadata={"min": 1, "help": "rewrite the first N responses"})
    skip_invalid: bool = field(default=False, metadata={"help": "skip bad records instead of stopping"})
    # result False: in float32 the outputs are the same bits; in bfloat16 the batch shapes differ (module doc)
    reuse: bool = field(default=True, metadata={"result": False, "help": "with greedy decoding, do not rewrite again "
        "a response the last iteration stepped and left unchanged: take that iteration's output (--no-reuse: generate)"})


def run_method(
    config: IterateSettings,
    model: str,
    make_step: Callable[[Any], Step],
    out: str | Path,
    *,
    engine: Any = None,
    judge: Any = None,
    responses: Sequence[Response] | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Read the inputs, build the judge, load ``model`` into an engine and run the iterations.

    Each method checks its model first (a critic, a PIT policy ...), then calls this with its step.
    Every setting and the inputs are checked here, before the model loads.
    """
    from redline.config import check_values
    from redline.records import read_records

    check_values(config)  # a config built in Python: flags and config files were checked as they were read
    check_settings(config.iterations, config.stop, judge if judge is not None else config.judge,  # before any model loads
                   config.leave_above)
    check_sampling(config)
    if responses is None:
        if not config.input:  # a config built in Python; read_records("") spoke of a datasets folder named ""
            raise RedlineError("--input is required: response records to rewrite (or pass responses=)")
        responses = read_records(config.input, "response", skip_invalid=config.skip_invalid, limit=config.limit,
                                 require_id=True)  # the iteration files are matched by id
    check_ids(responses)
    check_iterations_held(out, config.iterations)  # before the model loads
    if judge is None and config.judge:
        from redline.judges import parse_judge

        judge = parse_judge(config.judge)
        judge.check()
    if judge is not None:
        from redline.judges import check_records

        check_records(judge, responses, config.input or "the responses")
    if engine is None:
        from redline.generation import load_engine

        engine = load_engine(model, backend=config.backend, dtype=config.dtype, device=config.device)
    return run_iterations(responses, make_step(engine), iterations=config.iterations, out=out, stop=config.stop,
                          judge=judge, leave_above=config.leave_above, settings=settings or asdict(config),
                          reuse=config.reuse and config.temperature == 0)


def check_settings(iterations: int, stop: str, judge: Any, leave_above: float | None = None) -> None:
    if stop not in STOP_RULES:
        raise RedlineError(f"--stop {stop!r} is not one of {', '.join(STOP_RULES)}")
    if stop == "best" and not judge:
        raise RedlineError("--stop best needs a judge (--judge)")
    if leave_above is not None:
        scores = judge.strip().startswith("reward:") if isinstance(judge, str) else callable(getattr(judge, "score", None))
        if not scores:
            raise RedlineError("--leave-above needs a reward-model judge that scores one response (--judge reward:RUN), "
                               f"got {judge if isinstance(judge, str) else getattr(judge, 'name', judge)!r}")
    if iterations < 1:
        raise RedlineError(f"--iterations must be at least 1, got {iterations}")


def check_sampling(config: IterateSettings) -> None:
    """What ``SamplingParams`` would refuse only at the first generate call: after the model loaded and
    ``iteration_0.jsonl`` was written, so that the corrected rerun met "a run with other settings"."""
    # SamplingParams' own bounds, named by their flags (--max-new-tokens: its config's minimum, or None)
    sampling_from_flags(temperature=config.temperature, top_p=config.top_p, no_repeat_ngram=config.no_repeat_ngram)
    if config.no_repeat_ngram and config.backend == "vllm":
        raise RedlineError("--no-repeat-ngram is implemented by the transformers backend only: use --backend "
                           "transformers or leave it at 0")


def check_ids(responses: Sequence[Response]) -> None:
    ids = [r.id for r in responses]
    if any(i is None for i in ids) or len(set(ids)) != len(ids):
        raise RedlineError("every input response needs a unique id (the iteration files are matched by id)")


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def iteration_path(out: Path, k: int) -> Path:
    return out / f"iteration_{k}.jsonl"


def check_iterations_held(out: str | Path, iterations: int) -> None:
    """A rerun may ask for more iterations than OUT holds (they go on from the last), not fewer: the later
    iteration files would stay beside a summary of ``iterations``, and ``evaluate --a OUT`` would judge them as
    this run's."""
    out = Path(out)
    if iteration_path(out, iterations + 1).exists():
        held = iterations + 1
        while iteration_path(out, held + 1).exists():
            held += 1
        raise RedlineError(f"{out} holds {held} iterations, past --iterations {iterations}: `evaluate --a {out}` would "
                           f"judge them all as this run's. Pass --iterations {held} (the finished ones are read back, "
                           "not redone), or another --out")


def run_iterations(
    responses: Sequence[Response],
    step: Step,
    *,
    iterations: int,
    out: str | Path,
    stop: str = "fixed",
    judge: Any = None,
    leave_above: float | None = None,
    chunk_size: int = 64,  # the engine's max_batch: 64 bf16 revise rows a call ran 1.15x 32 (RESULTS "Generation")
    settings: dict[str, Any] | None = None,
    progress: bool = True,
    reuse: bool = False,
) -> dict[str, Any]:
    """Run ``iterations`` rounds of ``step`` over ``responses``; write the layout above; return the summary.
    ``reuse``: the step is deterministic in (prompt, response) (greedy decoding; "Greedy runs" above)."""
    from tqdm.auto import tqdm

    check_settings(iterations, stop, judge, leave_above)
    check_ids(responses)
    check_iterations_held(out, iterations)
    ids = [r.id for r in responses]

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    first = iteration_path(out, 0)
    if first.exists():
        previous = {row["id"]: row for row in read_jsonl_prefix(first)}
        if set(previous) != set(ids):
            raise RedlineError(f"{out} holds a run on other inputs; choose another --out or remove it")
    else:
        write_records(first, [{**r.to_dict(), "response_0": r.response} for r in responses])
    previous = {row["id"]: row for row in read_jsonl_prefix(first)}

    from redline.records import read_reports

    summary: dict[str, Any] = {"settings": settings or {}, "stop": stop, "iterations": [],
                               "reads": read_reports([(settings or {}).get("input")])}
    for k in range(1, iterations + 1):
        path = iteration_path(out, k)
        done = {row["id"]: row for row in read_jsonl_prefix(path)}
        todo = [previous[i] for i in ids if i not in done]
        bar = tqdm(total=len(ids), initial=len(done), desc=f"iteration {k}/{iterations}", unit="item", disable=not progress)
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start : start + chunk_size]
            rows = _iterate_chunk(chunk, step, k, stop, judge, leave_above, reuse)
            append_records(path, rows)
            bar.update(len(rows))
        bar.close()
        current = {row["id"]: row for row in read_jsonl_prefix(path)}
        rows = [current[i] for i in ids]
        summary["iterations"].append(
            {
                "iteration": k,
                "items": len(rows),
                "changed": sum(r["changed"] for r in rows),
                "failures": {cause: sum(_failure(r) == cause for r in rows) for cause in FAILURES},
                "nothing_to_fix": sum(bool(r.get("nothing_to_fix")) for r in rows if not r["stopped"]),
                "stopped": sum(r["stopped"] for r in rows),
                **({"left": sum(bool(r.get("left")) for r in rows)} if leave_above is not None else {}),
                "reused": sum(bool(r.get("reused")) for r in rows),
            }
        )
        previous = current
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")  # a kill mid-write tore it
    print(f"redline: wrote {iterations} iterations of {len(ids)} responses to {out}", file=sys.stderr)
    return summary


def _failure(row: dict) -> str | None:
    """A row's failure cause; rows written before causes were recorded have ``parsed`` only."""
    if row["stopped"]:
        return None
    return row.get("failure", None if row["parsed"] else "parse")


def _last_output(row: dict) -> StepOutput | None:
    """The step output iteration k−1 recorded for ``row`` if a step ran on it and left its response as it was,
    which a deterministic step would write again (None otherwise)."""
    if "changed" not in row or row["changed"] or row.get("halted") or row.get("stopped"):
        return None  # iteration 0, a new response, or no step ran
    return StepOutput(feedback=row["feedback"], revision=row["revision"], failure=_failure(row),
                      keep=bool(row.get("nothing_to_fix")), budget=row.get("budget"))


def _iterate_chunk(chunk: list[dict], step: Step, k: int, stop: str, judge: Any,
                   leave_above: float | None = None, reuse: bool = False) -> list[dict]:
    """Iteration ``k`` over a chunk of records from iteration k−1."""
    active = [row for row in chunk if not row.get("halted")]
    rewards: dict[str, float] = {}
    if leave_above is not None and active:
        scores = judge.score([(row["prompt"], row["response"]) for row in active])
        rewards = {row["id"]: float(s) for row, s in zip(active, scores)}
    left = {i for i, r in rewards.items() if r >= leave_above}
    active = [row for row in active if row["id"] not in left]
    reused = {row["id"]: o for row in active if reuse and (o := _last_output(row)) is not None}
    fresh = [row for row in active if row["id"] not in reused]
    outputs = dict(reused)
    if fresh:
        outputs.update(zip((row["id"] for row in fresh), step(fresh, k)))

    candidates = {}
    for row in active:
        o = outputs[row["id"]]
        if o.usable and not o.keep and not _same(o.revision, row["response"]):
            candidates[row["id"]] = o.revision
    accepted, unjudged = set(candidates), set()
    if stop == "best" and candidates:
        accepted, unjudged = _judge_prefers_new(judge, [row for row in active if row["id"] in candidates], candidates)

    rows = []
    for row in chunk:
        base = {k: row[k] for k in ("id", "prompt", "response_0") if k in row}
        base.update({k: row[k] for k in ("source", "meta") if row.get(k) is not None})
        # no step ran: stopped before (carried over), or left at or above the bar (it stops here, as it is)
        unstepped = {**base, "response": row["response"], "feedback": "", "revision": None, "changed": False,
                     "parsed": True, "failure": None, "nothing_to_fix": False}
        if row.get("halted"):
            rows.append({**unstepped, "stopped": True, "halted": True})
            continue
        scored = {"reward": rewards[row["id"]], "left": row["id"] in left} if row["id"] in rewards else {}
        if row["id"] in left:
            rows.append({**unstepped, "stopped": False, "halted": True, **scored})
            continue
        o = outputs[row["id"]]
        new = o.revision if row["id"] in accepted else row["response"]
        changed = row["id"] in accepted
        # a failed step is not a verdict, nor is a judge's "invalid" (it could not say): try again
        halted = stop != "fixed" and not changed and o.usable and row["id"] not in unjudged
        rows.append({**base, "response": new, "feedback": o.feedback, "revision": o.revision,
                     "changed": changed, "parsed": o.usable, "failure": o.failure, "nothing_to_fix": o.keep,
                     **({"budget": o.budget} if o.budget is not None else {}),
                     **({"reused": True} if row["id"] in reused else {}),
                     "stopped": False, "halted": halted, **scored})
    return rows


def _judge_prefers_new(judge, rows: list[dict], candidates: dict[str, str]) -> tuple[set[str], set[str]]:
    """(ids whose new response the judge prefers to the current one, ids it gave no verdict for); ties
    and invalid verdicts keep the current one."""
    from redline.judges import Item

    items = [Item(prompt=row["prompt"], a=candidates[row["id"]], b=row["response"], meta=row.get("meta", {})) for row in rows]
    verdicts = judge.judge_many(items)
    return ({row["id"] for row, v in zip(rows, verdicts) if v.winner == "a"},
            {row["id"] for row, v in zip(rows, verdicts) if v.winner == "invalid"})
