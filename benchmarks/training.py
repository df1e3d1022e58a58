"""Training throughput on this CPU for the critic's SFT: today's float32 against the vocabulary
projection on the completion only (``+sliced``), a bfloat16 frozen base under float32 LoRA adapters
(``bf16-base``) and bfloat16 autocast; one padded batch against micro-batches of 1. ``loss_vs_first``
is the mean per-step training-loss difference against the first case, with its standard error
(the same examples in the same order in every case, so the pairs isolate the mode).

Each case is a fresh process that trains a LoRA critic (the `redline train critic` defaults) on the
shipped simulated feedback for a few optimiser steps, and reports tokens per second (tokens the
model read, prompt included, from TRL's count), the peak resident memory and the loss, so a faster
mode that learns worse shows. Seconds are the Trainer's ``train_runtime``: every step, the first (with its
one-time costs) included alike in every case, model loading not.

    python benchmarks/training.py --steps 6 --out benchmarks/results/training.json

A case is MODE:BATCHxACCUM, e.g. ``bf16-base+sliced:1x4`` (4 sequences per optimiser step either
way). MODE is ``fp32`` (float32 weights), ``bf16-autocast`` (float32 weights, bfloat16 autocast),
``bf16-base`` or ``bf16-base-autocast`` (both: the float32 adapters' products in bfloat16 too), with ``+sliced`` for ``train_sft``'s completion-only projection; without it the case
runs TRL's own loss, which on a CPU projects every position. ``+drop`` sets ``--lora-dropout 0.05`` (the
default until the eighth session: PEFT then masks and copies every adapted layer's input) and ``+nodrop``
sets 0 (today's default, spelt out so that older commands read the same).

``--workload reward`` trains the K-way reward model (`redline train reward`'s trainer) on the shipped
rankings instead, BATCH prompts (of 5 completions each) a forward pass, at --max-length 384 as
scripts/instructgpt_v2.sh does; tokens are the completions' real tokens. ``+padded`` scores the padded
batch in one forward pass (the way before the eighth session); without it a CPU scores each
completion alone at its own length (``reward.completion_scores``).

    python benchmarks/training.py --workload reward --steps 8 --threads 1 --cases "fp32+padded+drop:2x1,fp32:2x1"

Threads under sharing: a case may end in ``@T`` (its torch threads; default ``--threads``), ``+passive`` runs it
with ``OMP_WAIT_POLICY=PASSIVE`` (OpenMP threads sleep rather than spin while they wait for each other), and
``--beside 0,1,2`` runs every case once alone and once beside a competing process of 1 and of 2 torch threads
(a steady loop of float32 matrix products the size of the model's, standing in for another training job),
whose own GFLOP/s over the case's whole process (model loading included) are reported too, so a setting that
speeds us up by starving the other job shows. Cases without ``+passive`` and the competitor run with OpenMP's
default spinning waits, whatever the parent's environment says.

    python benchmarks/training.py --steps 3 --beside 0,1,2 --cases "fp32:1x4@1,fp32:1x4@2,fp32+passive:1x4@2"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What both children start with: their arguments (as ``measure`` passes them) and the thread count.
PRELUDE = r"""
import json, resource, sys
mode, steps, batch, accum, out, threads, model = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6]), sys.argv[8]
precision, *extras = mode.split("+")
import torch
if threads:
    torch.set_num_threads(threads)
"""

CHILD = PRELUDE + r"""
from redline.train.critic import CriticConfig, train_critic
import redline.train.sft as sft
if "sliced" not in extras:
    sft._sliceable = lambda *args: None  # TRL's own loss
config = CriticConfig(model=model, data=sys.argv[7], limit=steps * batch * accum, max_steps=steps, batch_size=batch, grad_accum=accum,
                      bf16=precision in ("bf16-autocast", "bf16-base-autocast"),
                      bf16_base=precision in ("bf16-base", "bf16-base-autocast"), logging_steps=1,
                      save_steps=10_000, seed=0, lora_dropout=0.05 if "drop" in extras else 0.0)
m = train_critic(config, out)
m["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
m["losses"] = [r["loss"] for r in map(json.loads, open(out + "/train_log.jsonl")) if "loss" in r]
print(json.dumps(m))
"""

# The reward model's workload (``--workload reward``): K-way rankings, BATCH prompts a forward pass. Tokens are
# the real (unpadded) tokens of the completions trained on, counted where the loss is computed (the data loader
# collates one batch ahead, which is never trained on); ``+padded`` scores the padded batch in one pass on the
# CPU too (the way before the eighth session; ``models.UNPADDED_ON_CPU``).
REWARD_CHILD = PRELUDE + r"""
import redline.models
from redline.train import reward
redline.models.UNPADDED_ON_CPU = "padded" not in extras
tokens = [0]
trainer_class = reward._ranking_trainer_class
def counting_trainer_class():
    class Counting(trainer_class()):
        def compute_loss(self, model, inputs, *args, **kwargs):
            tokens[0] += int(inputs["attention_mask"].sum())
            return super().compute_loss(model, inputs, *args, **kwargs)
    return Counting
reward._ranking_trainer_class = counting_trainer_class
config = reward.RewardConfig(model=model, data=sys.argv[7], limit=steps * batch * accum + 4, eval_split=0.1, max_steps=steps,
                             batch_size=batch, grad_accum=accum, max_length=384, bf16_base=precision == "bf16-base",
                             logging_steps=1, save_steps=10_000, seed=0, lora_dropout=0.05 if "drop" in extras else 0.0)
m = reward.train_reward(config, out)
losses = [r["loss"] for r in map(json.loads, open(out + "/train_log.jsonl")) if "loss" in r]
print(json.dumps({"steps": m["steps"], "tokens": tokens[0], "train_seconds": m["train_seconds"], "first_loss": losses[0],
                  "final_loss": losses[-1], "losses": losses, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

REWARD_CASES = ["fp32+padded:2x1", "fp32:2x1", "bf16-base:2x1"]
CASES = ["fp32:1x4", "fp32+sliced:1x4", "bf16-base:1x4", "bf16-base+sliced:1x4", "bf16-autocast+sliced:1x4"]


PRECISIONS = ("fp32", "bf16-autocast", "bf16-base", "bf16-base-autocast")
EXTRAS = ("sliced", "drop", "nodrop", "padded", "passive")

# The competitor beside a case (``--beside K``): float32 products of the embedded model's MLP shape (576 x 1536)
# on 256 rows, on K torch threads, until it is stopped; it then prints the GFLOP/s it got.
COMPETITOR = r"""
import json, signal, sys, time
import torch
torch.set_num_threads(int(sys.argv[1]))
a, b = torch.randn(256, 576), torch.randn(576, 1536)
done, start = [0], time.perf_counter()
def stop(*_):
    print(json.dumps({"gflops": round(done[0] * 2 * 256 * 576 * 1536 / (time.perf_counter() - start) / 1e9, 2)}), flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
while True:
    a @ b
    done[0] += 1
"""


def parse_case(case: str, default_threads: int) -> tuple[str, str, str, int]:
    """MODE:BATCHxACCUM[@THREADS] as (mode, batch, accum, threads); a case the child would misread (a typo
    in an extra would silently run the default) is refused."""
    mode, _, shape = case.partition(":")
    shape, at, threads = shape.partition("@")
    precision, *extras = mode.split("+")
    batch, _, accum = shape.partition("x")
    if precision not in PRECISIONS or not set(extras) <= set(EXTRAS) or {"drop", "nodrop"} <= set(extras) \
            or not (batch.isdigit() and accum.isdigit()) or (at and not threads.isdigit()):
        sys.exit(f"--cases: {case!r} is not MODE:BATCHxACCUM[@THREADS] with MODE one of {', '.join(PRECISIONS)} "
                 f"and extras from +{', +'.join(EXTRAS)} (not both +drop and +nodrop)")
    return mode, batch, accum, int(threads) if at else default_threads


def child_env(passive: bool) -> dict[str, str]:
    """The environment of a case or a competitor: OpenMP's default (spinning) waits unless ``passive``, whatever
    the parent has (``redline``'s own ``main`` sets PASSIVE; the JSON's meta records what the parent had)."""
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}
    env.pop("OMP_WAIT_POLICY", None)
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


def start_competitor(threads: int) -> subprocess.Popen | None:
    """A steady load of ``threads`` torch threads beside the case (None for 0), running once it says so."""
    if not threads:
        return None
    env = {**child_env(passive=False), "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen([sys.executable, "-c", COMPETITOR, str(threads)], stdout=subprocess.PIPE, text=True, env=env)
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        sys.exit(f"the competitor of {threads} threads did not start")
    return proc


def stop_competitor(proc: subprocess.Popen | None) -> float | None:
    """The GFLOP/s the competitor got from its start to now (None if there was none or it said nothing)."""
    if proc is None:
        return None
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None
    lines = out.strip().splitlines()
    return json.loads(lines[-1])["gflops"] if lines else None


def measure(case: str, args, beside: int = 0) -> dict:
    mode, batch, accum, threads = parse_case(case, args.threads)
    with tempfile.TemporaryDirectory() as out:
        env = child_env(passive="+passive" in mode)
        child = REWARD_CHILD if args.workload == "reward" else CHILD
        cmd = [sys.executable, "-c", child, mode, str(args.steps), batch, accum, out, str(threads), str(args.data), args.model]
        competitor = start_competitor(beside)
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        finally:
            competitor_gflops = stop_competitor(competitor)
        if done.returncode:
            sys.exit(f"{case} failed:\n{done.stderr[-3000:]}")
        m = json.loads(done.stdout.strip().splitlines()[-1])
    if not m.get("tokens"):
        sys.exit(f"{case}: the trainer logged no token count")
    return {"case": case, "beside": beside, "competitor_gflops": competitor_gflops, "steps": m["steps"],
            "tokens": m["tokens"], "seconds": m["train_seconds"],
            "tokens_per_s": round(m["tokens"] / m["train_seconds"], 1), "first_loss": m["first_loss"],
            "final_loss": m["final_loss"], "peak_rss_mb": round(m["peak_rss_mb"]), "losses": m["losses"]}


def paired_loss_difference(losses: list[float], base: list[float]) -> tuple[float, float]:
    """Mean and standard error of the per-step loss difference against the first case. Every case reads
    the same examples in the same order (seed 0), so a step's difference is the mode's, not the data's."""
    import statistics

    diffs = [a - b for a, b in zip(losses, base)]
    if len(diffs) < 2:
        return (diffs[0] if diffs else 0.0), float("nan")
    return statistics.fmean(diffs), statistics.stdev(diffs) / len(diffs) ** 0.5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", choices=("critic", "reward"), default="critic",
                    help="the critic's SFT, or the reward model's K-way rankings")
    ap.add_argument("--data", type=Path, default=None, help="default: the shipped feedback (critic) or rankings (reward)")
    ap.add_argument("--model", default="embedded", help="the base model (tiny-random: a smoke run)")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--cases", default=None,
                    help="MODE:BATCHxACCUM[@THREADS], comma-separated (default: CASES or REWARD_CASES)")
    ap.add_argument("--beside", default="0",
                    help="comma-separated torch threads of a competing process run beside every case (0: alone)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "training.json")
    args = ap.parse_args()
    if args.cases is None:
        args.cases = ",".join(REWARD_CASES if args.workload == "reward" else CASES)
    if args.data is None:
        args.data = ROOT / "data" / "simulated" / ("rankings.jsonl" if args.workload == "reward" else "feedback.jsonl")

    try:
        besides = [int(k) for k in args.beside.split(",")]
    except ValueError:
        sys.exit(f"--beside: {args.beside!r} is not comma-separated thread counts")
    for case in args.cases.split(","):
        parse_case(case, args.threads)
        critic_only = "+sliced" in case or "autocast" in case
        if (args.workload == "critic" and "+padded" in case) or (args.workload == "reward" and critic_only):
            sys.exit(f"--cases: {case!r}: +padded is the reward workload's; +sliced and autocast the critic's")
    rows = []
    for beside in besides:
        for case in args.cases.split(","):
            rows.append(measure(case, args, beside))
            print(rows[-1], flush=True)
    base = rows[0]["tokens_per_s"]
    for row in rows:
        row["vs_first"] = round(row["tokens_per_s"] / base, 2)
        mean, se = paired_loss_difference(row["losses"], rows[0]["losses"])
        row["loss_vs_first"] = f"{mean:+.4f} ± {se:.4f}"
    cols = ["case", "beside", "competitor_gflops", "steps", "tokens", "seconds", "tokens_per_s", "vs_first", "first_loss", "final_loss",
            "loss_vs_first", "peak_rss_mb"]
    print("| " + " | ".join(cols) + " |")
    print("|" + " --- |" * len(cols))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in cols) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "load": os.getloadavg()[0],
            "parent_omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "args": {k: str(v) for k, v in vars(args).items()}}
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
