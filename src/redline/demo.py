"""`redline demo`: the whole critique-and-revision loop on a laptop, in minutes.

The newcomer's first run (DESIGN.md): no GPU, no network, the embedded model and the simulated
annotators. It reruns the critic experiment of Jin et al. 2023 (arXiv 2311.14543) in miniature:

  1. find the data: the shipped simulated set (``data/simulated/`` in a checkout), or, where it
     is missing, build a small one with the template responder (seconds, no model);
  2. train a critic (LoRA on the embedded model) on the first ``--train-records`` feedback records
     (80 by default: ~5 minutes on 2 CPU cores);
  3. revise ``--test-items`` held-out responses for ``--iterations`` rounds;
  4. judge every iteration against the original with the oracle, and print the win rates with
     their 95% intervals; the curve is drawn to ``OUT/eval/win_rate_curve.png``.

Every step resumes: run it again and finished steps are skipped. The full-size experiment is
``redline experiment critic``. The output is the steps, their progress bars and the table: the
libraries' deprecation warnings, notices and per-step log lines are kept out of it (``quiet``).
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SHIPPED = Path(__file__).resolve().parents[2] / "data" / "simulated"


@dataclass
class DemoConfig:
    """`redline demo`: the model, the sizes of the miniature experiment, and how to generate."""

    model: str = field(default="embedded", metadata={"help": "hub id, local path, 'embedded' (SmolLM2-135M-Instruct) or 'tiny-random'"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    train_records: int = field(default=80, metadata={"min": 1, "help": "feedback records to train on"})
    test_items: int = field(default=16, metadata={"min": 1, "help": "held-out responses to revise"})
    iterations: int = field(default=3, metadata={"min": 1, "help": "rounds of critique and revision"})
    max_steps: int | None = field(default=None, metadata={"min": 1, "help": "cap the critic's optimiser steps"})
    epochs: float = field(default=1.0, metadata={"min": 0.01, "help": "passes over the training records"})
    max_new_tokens: int | None = field(default=None, metadata={"min": 1,
        "help": "cap on an item's new tokens (default: a critique and 1.5x the response, as in revise)"})
    dtype: str = field(default="float32", metadata={"choices": ("float32", "bfloat16", "float16"), "help": "weights dtype while training"})
    generate_dtype: str = field(default="bfloat16", metadata={"choices": ("float32", "bfloat16", "float16"),
        "help": "weights dtype while revising: bfloat16 generates ~1.7x faster on this CPU"})
    device: str = field(default="auto", metadata={"result": False, "help": "cpu, cuda, cuda:1, mps or auto"})


def say(message: str) -> None:
    print(f"redline demo: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def quiet():
    """Hide what a newcomer cannot act on: FutureWarnings and DeprecationWarnings from inside
    transformers, TRL and PEFT, the libraries' info notices (tokenizers, weight loading) and the
    progress bars of dataset preparation. Progress bars of training, revising and judging stay."""
    import warnings

    import datasets
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    datasets_bars = datasets.is_progress_bar_enabled()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        datasets.disable_progress_bars()
        try:
            yield
        finally:
            hf_logging.set_verbosity(verbosity)
            hf_logging.enable_progress_bar()
            if datasets_bars:
                datasets.enable_progress_bars()


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


def run_demo(args: DemoConfig, out: str | Path) -> str:
    """Steps 1–4 into ``out``; returns the report printed at the end."""
    start = time.perf_counter()
    with quiet():
        from redline.evaluate import EvaluateConfig, evaluate_iterations
        from redline.improve.revise import ReviseConfig, revise
        from redline.records import read_records
        from redline.train.critic import CriticConfig, train_critic

        out = Path(out)
        data = find_data(out)  # step 1
        say(f"step 1/4: data from {data}")

        critic = out / "critic"  # step 2
        if (critic / "redline.json").exists():
            say(f"step 2/4: the critic in {critic} is trained already")
        else:
            config = CriticConfig(
                model=args.model, data=str(data / "feedback.jsonl"), limit=args.train_records, epochs=args.epochs,
                max_steps=args.max_steps, seed=args.seed, dtype=args.dtype, device=args.device,
            )
            say(f"step 2/4: training a critic on {args.train_records} feedback records (LoRA on {args.model})")
            with contextlib.redirect_stdout(io.StringIO()):  # the trainer's per-step dicts: in critic/train_log.jsonl
                metrics = train_critic(config, critic)
            say(f"          {metrics['steps']} steps, loss {metrics['first_loss']} -> {metrics['final_loss']}, "
                f"{metrics['train_seconds']:.0f} s")

        test = read_records(data / "test.jsonl", "response", limit=args.test_items)  # step 3
        say(f"step 3/4: revising {len(test)} held-out responses (critique and revision, {args.iterations} iterations)")
        summary = revise(
            ReviseConfig(critic=str(critic), iterations=args.iterations, max_new_tokens=args.max_new_tokens,
                         seed=args.seed, dtype=args.generate_dtype, device=args.device),
            out / "revise",
            responses=test,
            progress=True,
        )
        for it in summary["iterations"]:
            failures = ", ".join(f"{n} {cause}" for cause, n in it["failures"].items() if n) or "none"
            say(f"          iteration {it['iteration']}: {it['changed']} of {it['items']} changed, "
                f"{it['nothing_to_fix']} found nothing to fix, failures kept unchanged: {failures}")

        say("step 4/4: judging every iteration against the original with the oracle")
        evaluate_iterations(EvaluateConfig(a=str(out / "revise"), judge="oracle", out=str(out / "eval"), seed=args.seed))
    say(f"done in {time.perf_counter() - start:.0f} s; the curve is {out / 'eval' / 'win_rate_curve.png'}")
    return (out / "eval" / "report.md").read_text()
