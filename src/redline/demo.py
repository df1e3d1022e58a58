"""`redline demo`: the whole critique-and-revision loop on a laptop, in minutes.

The newcomer's first run (DESIGN.md): no GPU, no network, the embedded model and the simulated
annotators. It reruns the critic experiment of Jin et al. 2023 (arXiv 2311.14543) in miniature:

  1. find the data: the shipped simulated set (``data/simulated/`` in a checkout), or, where it
     is missing, build a small one with the template responder (seconds, no model);
  2. train a critic (LoRA on the embedded model) on ``--train-records`` feedback records spread
     over prompts. With ``--critic auto`` (the default) in a checkout, this short run only shows the
     step (its loss falls): the revisions use the critic the project ships in ``models/critic/``,
     trained on 1000 records of the same set by the command its card records; elsewhere, or with
     ``--critic train``, the critic trained here revises. ``--critic PATH`` takes any critic run;
  3. revise ``--test-items`` held-out responses for ``--iterations`` rounds. With ``--gate auto``
     (the default) in a checkout, the reward model the project ships in ``models/reward/`` (83.5% on
     held-out decisive comparisons: without it the critic's invented faults harm good answers) stands
     behind the critic: an answer it scores at or above ``--leave-above`` (-2, two below the
     demonstrations' mean: the bar ``scripts/choose_gate.py`` chose on validation answers) is left
     alone, and a revision is kept only where it scores higher than the answer it replaces
     (``revise --judge reward:models/reward --leave-above -2 --stop best``); ``--gate none`` shows the
     critic alone;
  4. revise ``--good-items`` answers that already meet every instruction (``test_fixed.jsonl``):
     the no-harm check, the critic must leave them as good as they are;
  5. judge every iteration of both against their originals with the oracle, and print the win
     rates with their 95% intervals; the curves are drawn to ``OUT/eval*/win_rate_curve.png``.

Every step resumes: run it again and finished steps are skipped, unless what they read has changed since
(``OUT/inputs.json``: the critic and reward model 'auto' chose, the data; a pull that brings a new shipped
critic made the demo print its old results): then the steps that read it start over, and say so. The full-size
experiment is
``redline experiment critic``. The output is the steps, their progress bars and the tables: the
libraries' deprecation warnings, notices and per-step log lines are kept out of it (``console.quiet``).
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from redline import RedlineError
from redline.config import check_values, seed_field
from redline.console import quiet

SHIPPED = Path(__file__).resolve().parents[2] / "data" / "simulated"
# The critic a checkout ships: LoRA on the embedded model, trained on 1000 records of SHIPPED
# (models/critic/README.md holds the command); an installed wheel has neither.
SHIPPED_CRITIC = Path(__file__).resolve().parents[2] / "models" / "critic"
# The reward model a checkout ships (models/reward/README.md holds its command): the critic's gate.
SHIPPED_REWARD = Path(__file__).resolve().parents[2] / "models" / "reward"


@dataclass
class DemoConfig:
    """`redline demo`: the model, the sizes of the miniature experiment, and how to generate."""

    model: str = field(default="embedded", metadata={"help": "hub id, local path, 'embedded' (SmolLM2-135M-Instruct) or 'tiny-random'"})
    seed: int = seed_field("random seed")
    critic: str = field(default="auto", metadata={"help": "the critic that revises: 'auto' (the shipped models/critic "
        "with the embedded model in a checkout, else one trained here), 'train' (the one trained here) or a critic run folder"})
    gate: str = field(default="auto", metadata={"help": "a reward model behind the critic: 'auto' (the shipped "
        "models/reward with the embedded model in a checkout, else none), 'none', or a reward run folder"})
    # -2 was chosen on validation answers, never on the test items (scripts/choose_gate.py; RESULTS "Critic").
    leave_above: float = field(default=-2.0, metadata={"help": "with a gate: leave answers it scores at least this "
        "unrevised (0: the demonstrations' mean; -2, the default, was chosen on answers to the reward model's "
        "held-out prompts by scripts/choose_gate.py)"})
    train_records: int = field(default=24, metadata={"min": 1, "help": "feedback records to train on (with the shipped "
        "critic this run only shows the step; 80 or more for a critic of your own, with --critic train)"})
    test_items: int = field(default=48, metadata={"min": 1, "help": "held-out responses to revise"})
    good_items: int = field(default=24, metadata={"min": 0,
        "help": "answers that meet every instruction to revise too (the no-harm check; 0: skip)"})
    iterations: int = field(default=1, metadata={"min": 1, "help": "rounds of critique and revision"})
    max_steps: int | None = field(default=None, metadata={"min": 1, "help": "cap the critic's optimiser steps"})
    epochs: float = field(default=1.0, metadata={"min": 0.01, "help": "passes over the training records"})
    max_new_tokens: int | None = field(default=None, metadata={"min": 1,
        "help": "cap on an item's new tokens (default: a critique and 1.5x the response, as in revise)"})
    no_repeat_ngram: int = field(default=8, metadata={"min": 0,
        "help": "forbid a revision to repeat any n-gram of this many tokens (a guard against greedy loops; 0 = off). "
        "8: 15 of 48 revisions looped without it (RESULTS 'Critic')"})
    dtype: str = field(default="float32", metadata={"choices": ("float32", "bfloat16", "float16"), "help": "weights dtype while training"})
    generate_dtype: str = field(default="auto", metadata={"choices": ("auto", "float32", "bfloat16", "float16"),
        "help": "weights dtype while revising; auto: bfloat16 where the CPU or GPU has it natively (1.7x faster "
                "than float32 on an AVX-512 CPU), else float32 (bfloat16 ran 3x slower on an AVX2-only CPU)"})
    device: str = field(default="auto", metadata={"result": False, "help": "cpu, cuda, cuda:1, mps or auto"})


def say(message: str) -> None:
    print(f"redline demo: {message}", file=sys.stderr, flush=True)


def find_data(out: Path) -> Path:
    """Step 1: the shipped simulated set, or a small template-built one."""
    if (SHIPPED / "feedback.jsonl").exists() and (SHIPPED / "test.jsonl").exists():
        return SHIPPED
    from redline.simulate.build import BuildConfig, build

    folder = out / "data"
    if not (folder / "manifest.json").exists():
        say(f"{SHIPPED} not found; building a small simulated set with the template responder")
        build(BuildConfig(out=folder, responder="template", prompts=200, test_prompts=50, k=4, seed=0))
    return folder


def pick_critic(args: DemoConfig, trained: Path) -> Path:
    """The critic that revises: ``trained`` (step 2's) or a finished run folder."""
    from redline.models import run_info

    if args.critic == "train":
        return trained
    if args.critic == "auto":
        shipped = args.model == "embedded" and (SHIPPED_CRITIC / "redline.json").exists()
        return SHIPPED_CRITIC if shipped else trained
    kind = run_info(args.critic).get("kind")
    if kind != "critic":
        raise RedlineError(f"--critic {args.critic}: not a critic run folder ({what_is(args.critic, kind)}); "
                           "give 'auto', 'train' or a `redline train critic` run")
    return Path(args.critic)


def what_is(path: str, kind: str | None) -> str:
    """Why ``path`` is not the run a flag wants: a typo'd path is not 'a run of kind None'."""
    from redline.models import RUN_INFO

    if not Path(path).exists():
        return "no such folder"
    if not (Path(path) / RUN_INFO).is_file():
        return "no redline.json in it: not a redline run"
    return f"its redline.json says kind {kind!r}"


def pick_gate(args: DemoConfig) -> str | None:
    """The reward model behind the critic, or None."""
    from redline.models import run_info

    if args.gate == "none":
        return None
    if args.gate == "auto":
        shipped = args.model == "embedded" and (SHIPPED_REWARD / "redline.json").exists()
        return str(SHIPPED_REWARD) if shipped else None
    kind = run_info(args.gate).get("kind")
    if kind != "reward":
        raise RedlineError(f"--gate {args.gate}: not a reward run folder ({what_is(args.gate, kind)}); "
                           "give 'auto', 'none' or a `redline train reward` run")
    return args.gate


INPUTS = "inputs.json"  # what OUT's later steps read, by digest (``start_over_where_changed``)


def start_over_where_changed(out: Path, critic: Path, trained: Path, gate: str | None, data: Path) -> None:
    """The demo's fingerprint holds its flags ('auto'), not what they chose: a critic, reward model or data set
    that changed since OUT was made (a pull that ships new ones) left the finished steps' old results to be
    printed again. What the steps read is recorded in OUT/inputs.json; where it changed, the steps that read
    it are removed to run again, and the user is told. An OUT from before the record is taken as it is."""
    import json
    import shutil

    from redline.config import input_digest
    from redline.models import read_json_object
    from redline.records import write_text_atomic

    now = {"critic": None if critic == trained else input_digest(str(critic)), "gate": gate and input_digest(gate),
           "feedback": input_digest(str(data / "feedback.jsonl")) if critic == trained else None,
           "test": input_digest(str(data / "test.jsonl")), "test_fixed": input_digest(str(data / "test_fixed.jsonl"))}
    stamp = out / INPUTS
    before = read_json_object(stamp, "the demo's record of what its steps read",
                              "rerun with --overwrite to start the demo over") if stamp.is_file() else None
    changed = [name for name in now if before is not None and before.get(name) != now[name]]
    if changed:
        again = [trained] if "feedback" in changed else []
        again += [out / name for name in ("revise", "revise_good", "eval", "eval_good")]
        say(f"{', '.join(changed)} changed since {out} was made: the steps that read it run again")
        for folder in again:
            shutil.rmtree(folder, ignore_errors=True)
    if before != now:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(stamp, json.dumps(now, indent=2) + "\n")


def run_demo(args: DemoConfig, out: str | Path, verbose: bool = False) -> str:
    """Steps 1–5 into ``out``; returns the reports printed at the end. The libraries' notices and the
    weight-loading bars are hidden unless ``verbose`` (``redline --verbose demo``)."""
    check_values(args)  # built in Python: flags and config files were checked as they were read
    start = time.perf_counter()
    with contextlib.nullcontext() if verbose else quiet(loading_bars=False):
        from redline.evaluate import EvaluateConfig, evaluate_iterations
        from redline.improve.loop import check_sampling
        from redline.improve.revise import ReviseConfig, revise
        from redline.models import resolve_dtype, run_info
        from redline.records import read_records
        from redline.train.critic import CriticConfig, train_critic

        out = Path(out)
        trained = out / "critic"
        critic = pick_critic(args, trained)  # before any work: a wrong --critic or --gate is refused at once
        gate = pick_gate(args)
        if gate is None and args.leave_above != DemoConfig.leave_above:
            raise RedlineError(f"--leave-above {args.leave_above:g} needs a reward model behind the critic; --gate "
                               f"{args.gate} gives none (the shipped one goes with the embedded model)")
        settings = dict(critic=str(critic), iterations=args.iterations, max_new_tokens=args.max_new_tokens,
                        seed=args.seed, dtype=resolve_dtype(args.generate_dtype, args.device), device=args.device, no_repeat_ngram=args.no_repeat_ngram)
        if gate:
            settings.update(judge=f"reward:{gate}?device={args.device}", stop="best", leave_above=args.leave_above)
        check_sampling(ReviseConfig(**settings))  # --no-repeat-ngram 1: now, not after the critic has trained
        data = find_data(out)  # step 1
        say(f"step 1/5: data from {data}")
        start_over_where_changed(out, critic, trained, gate, data)

        if (trained / "redline.json").exists():  # step 2
            say(f"step 2/5: the critic in {trained} is trained already")
        else:
            config = CriticConfig(
                model=args.model, data=str(data / "feedback.jsonl"), limit=args.train_records, epochs=args.epochs,
                max_steps=args.max_steps, seed=args.seed, dtype=args.dtype, device=args.device,
            )
            say(f"step 2/5: training a critic on {args.train_records} feedback records (LoRA on {args.model})")
            with contextlib.redirect_stdout(io.StringIO()):  # the trainer's per-step dicts: in critic/train_log.jsonl
                metrics = train_critic(config, trained)
            say(f"          {metrics['steps']} steps, loss {metrics['first_loss']} -> {metrics['final_loss']}, "
                f"{metrics['train_seconds']:.0f} s")
        if critic != trained:
            shipped = run_info(critic).get("metrics", {})
            say(f"          the revisions use {critic} ({shipped.get('examples', '?')} records, "
                f"{shipped.get('steps', '?')} steps; its README.md says how it was trained)")

        if gate:
            say(f"          behind the critic, the reward model {gate}: answers it scores >= {args.leave_above:g} are "
                "left alone, and a revision is kept only where it scores higher")
        sets = [("revise", "eval", data / "test.jsonl", args.test_items, "held-out responses")]
        if args.good_items and (data / "test_fixed.jsonl").exists():
            sets.append(("revise_good", "eval_good", data / "test_fixed.jsonl", args.good_items,
                         "answers that meet every instruction (no harm)"))
        for step, (folder, _, path, n, what) in enumerate(sets, start=3):  # steps 3 and 4
            items = read_records(path, "response", limit=n)
            say(f"step {step}/5: revising {len(items)} {what} (critique and revision, {args.iterations} iterations)")
            summary = revise(ReviseConfig(**settings), out / folder, responses=items, progress=True)
            for it in summary["iterations"]:
                failures = ", ".join(f"{k} {cause}" for cause, k in it["failures"].items() if k) or "none"
                left = f"{it['left']} left alone by the reward model, " if gate else ""
                say(f"          iteration {it['iteration']}: {it['changed']} of {it['items']} changed, {left}"
                    f"{it['nothing_to_fix']} found nothing to fix, failures kept unchanged: {failures}")
        if len(sets) == 1:
            why = "--good-items 0" if not args.good_items else "this set has no test_fixed.jsonl"
            say(f"step 4/5: skipped ({why}): no answers that meet every instruction are revised")

        say("step 5/5: judging every iteration against the original with the oracle")
        reports = []
        for folder, evaluation, *_ in sets:
            evaluate_iterations(EvaluateConfig(a=str(out / folder), judge="oracle", out=str(out / evaluation), seed=args.seed))
            reports.append((out / evaluation / "report.md").read_text(encoding="utf-8"))
    say(f"done in {time.perf_counter() - start:.0f} s; the curves are in {', '.join(str(out / e) for _, e, *_ in sets)}")
    return "\n".join(reports)
