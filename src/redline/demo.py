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
``redline experiment critic``.
"""

from __future__ import annotations

import sys
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
    max_new_tokens: int = field(default=512, metadata={"min": 1, "help": "tokens per critique and revision"})
    dtype: str = field(default="float32", metadata={"choices": ("float32", "bfloat16", "float16"), "help": "weights dtype while training"})
    generate_dtype: str = field(default="bfloat16", metadata={"choices": ("float32", "bfloat16", "float16"),
        "help": "weights dtype while revising: bfloat16 generates ~1.7x faster on this CPU"})
    device: str = field(default="auto", metadata={"result": False, "help": "cpu, cuda, cuda:1, mps or auto"})


def find_data(out: Path) -> Path:
    """Step 1: the shipped simulated set, or a small template-built one."""
    if (SHIPPED / "feedback.jsonl").exists() and (SHIPPED / "test.jsonl").exists():
        return SHIPPED
    from redline.simulate.build import BuildConfig, build

    folder = out / "data"
    if not (folder / "manifest.json").exists():
        print(f"redline: {SHIPPED} not found; building a small simulated set with the template responder", file=sys.stderr)
        build(BuildConfig(out=folder, responder="template", prompts=200, test_prompts=50, k=4, seed=0))
    return folder


def run_demo(args: DemoConfig, out: str | Path) -> str:
    """Steps 1–4 into ``out``; returns the report printed at the end."""
    from redline.evaluate import EvaluateConfig, evaluate_iterations
    from redline.improve.revise import ReviseConfig, revise
    from redline.records import read_records
    from redline.train.critic import CriticConfig, train_critic

    out = Path(out)
    data = find_data(out)  # step 1
    print(f"redline: data from {data}", file=sys.stderr)

    critic = out / "critic"  # step 2
    if not (critic / "redline.json").exists():
        config = CriticConfig(
            model=args.model, data=str(data / "feedback.jsonl"), limit=args.train_records, epochs=args.epochs,
            max_steps=args.max_steps, seed=args.seed, dtype=args.dtype, device=args.device,
        )
        print(f"redline: training a critic on {args.train_records} feedback records (LoRA, {args.model})", file=sys.stderr)
        train_critic(config, critic)

    test = read_records(data / "test.jsonl", "response", limit=args.test_items)  # step 3
    revise(
        ReviseConfig(critic=str(critic), iterations=args.iterations, max_new_tokens=args.max_new_tokens,
                     seed=args.seed, dtype=args.generate_dtype, device=args.device),
        out / "revise",
        responses=test,
    )

    evaluate_iterations(EvaluateConfig(a=str(out / "revise"), judge="oracle", out=str(out / "eval"), seed=args.seed))  # step 4
    return (out / "eval" / "report.md").read_text()
