"""Time of one PPO iteration, phase by phase, side by side in one run: today's code against an earlier
commit (the naive way it ran) and against today's options.

Each case is a fresh Python process that runs `run_ppo` for a few iterations on the embedded model
with the settings of RESULTS "InstructGPT" (16 episodes, up to 96 new tokens, GAE with a value model
started from the reward model, LoRA r 16, one torch thread) on the shipped test prompts, and reads
the phase timings every iteration logs (generate / score / evaluate / train), averaged over every iteration, the
first (with its one-time costs) included alike in every case. The reward model is the
embedded base with a fresh score head: its weights do not change the work. A case is
`NAME[@GITREF]:[FIELD=VALUE,...]`, cases separated by ";": with `@GITREF` the child imports redline from that commit
(`git archive` into a temporary folder), so "before" is the code as it was, not a flag that imitates it.

    python benchmarks/ppo.py --cases "before@b881223:;after:;after+bf16:bf16_base=true" \
        --iterations 2 --out benchmarks/results/ppo.json
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

from ppo_memory import make_reward_run  # benchmarks/ is this script's folder, first on sys.path

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("generate_s", "score_s", "evaluate_s", "train_s")

CHILD = r"""
import json, sys, time
import torch
from redline.config import field_value
from redline.records import read_prompt_records
from redline.train.ppo import PPOConfig, instructgpt_reward, load_ppo_models, run_ppo
from redline.train.sft import as_chat
from dataclasses import fields

rm, prompts, out, iterations, new_tokens, overrides, model = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), json.loads(sys.argv[6]), sys.argv[7]
torch.set_num_threads(1)
known = {f.name: f for f in fields(PPOConfig)}
extra = {}
for name, text in overrides.items():
    if name not in known:
        sys.exit(f"this commit's PPOConfig has no field {name!r}")
    extra[name] = field_value(PPOConfig, name, text)
settings = dict(policy=model, reward=rm, prompts=prompts, device="cpu", threads=1, iterations=iterations,
                batch_size=16, max_new_tokens=new_tokens, value_warmup_iterations=0, save_every=1000)
config = PPOConfig(**{**settings, **extra})  # a case's FIELD=VALUE replaces these too (batch_size=32)
models = load_ppo_models(config, "cpu")
scorer, adapter_off = models.scorer()
reward = instructgpt_reward(scorer, models.tokenizer, adapter_off=adapter_off)
records = read_prompt_records(prompts)
run_ppo(config, models, records, reward, lambda r: as_chat(r["prompt"]), out)
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
print(json.dumps({"peak_mib": round(peak)}))
"""


def parse_case(text: str) -> tuple[str, str | None, dict[str, str]]:
    """NAME[@GITREF]:[FIELD=VALUE,...] → (name, ref or None, overrides)."""
    head, _, tail = text.partition(":")
    name, _, ref = head.partition("@")
    overrides = {}
    for item in filter(None, tail.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            sys.exit(f"case {text!r}: {item!r} is not FIELD=VALUE")
        overrides[key.strip()] = value.strip()
    return name, ref or None, overrides


def check_ref(ref: str) -> None:
    """Refuse a case's GITREF that names no commit, before any case runs."""
    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"@{ref} names no commit of {ROOT} (a case is NAME[@GITREF]:[FIELD=VALUE,...])")


def source_of(ref: str | None, work: Path) -> Path:
    """The src folder a case imports redline from: this checkout's, or commit ``ref`` unpacked into ``work``."""
    if ref is None:
        return ROOT / "src"
    dest = work / f"src-{ref}"
    if not dest.exists():
        dest.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "src"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


def write(args, rows: list[dict]) -> None:
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "load_average": os.getloadavg()}
    settings = {"model": args.model, "iterations": args.iterations, "batch_size": 16, "max_new_tokens": args.max_new_tokens,
                "threads": 1, "advantage": "gae", "value_warmup_iterations": 0, "prompts": args.prompts,
                "cases": args.cases}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "settings": settings, "rows": rows}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="before@HEAD~1:;after:", help="NAME[@GITREF]:[FIELD=VALUE,...] cases, separated by ';'")
    parser.add_argument("--model", default="embedded", help="the policy's base (tiny-random: a smoke test)")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--prompts", default=str(ROOT / "data/simulated/test.jsonl"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ppo.json"))
    args = parser.parse_args()

    cases = [parse_case(c) for c in args.cases.split(";") if c.strip()]
    names = [name for name, _, _ in cases]
    if not cases:
        sys.exit(f"--cases {args.cases!r}: no case (NAME[@GITREF]:[FIELD=VALUE,...], separated by ';')")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:  # a case's name is its run folder: the second one resumed the first's finished run and reported its log
        sys.exit(f"--cases: {', '.join(map(repr, twice))} names more than one case; each case needs its own NAME")
    for _, ref, _ in cases:
        if ref:
            check_ref(ref)
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_reward_run(args.model, work)  # the policy's base with a fresh score head, as ppo_memory.py makes it
        rm = work / f"rm-{args.model}"
        for name, ref, overrides in cases:
            out = work / f"run-{name}"
            child = subprocess.run([sys.executable, "-c", CHILD, str(rm), args.prompts, str(out), str(args.iterations),
                                    str(args.max_new_tokens), json.dumps(overrides), args.model],
                                   env={**env, "PYTHONPATH": str(source_of(ref, work))}, capture_output=True, text=True)
            if child.returncode:
                sys.exit(f"case {name} failed:\n{child.stderr[-3000:]}")
            log = [json.loads(line) for line in (out / "ppo_log.jsonl").read_text().splitlines()]
            phases = {k: round(sum(r[k] for r in log) / len(log), 2) for k in PHASES}
            row = {"case": name, "commit": ref or "working tree", "overrides": overrides, **phases,
                   "iteration_s": round(sum(phases.values()), 1), **json.loads(child.stdout.strip().splitlines()[-1]),
                   "tokens": round(sum(r["response_length"] for r in log) / len(log) * log[0]["episodes"]),
                   "first_iteration": {k: log[0].get(k) for k in ("reward", "kl", "approx_kl", "policy_loss", "value_loss",
                                                                   "entropy", "clipfrac")},
                   "iterations": log}
            print(json.dumps({k: v for k, v in row.items() if k != "iterations"}), file=sys.stderr)
            rows.append(row)
            write(args, rows)  # after each case: a failed later case keeps the earlier ones
    base = rows[0]["iteration_s"]
    print("| case | commit | settings | generate s | score s | evaluate s | train s | iteration s | vs first | "
          "peak MiB | reward, KL, policy loss (iteration 1) |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        first = r["first_iteration"]
        print(f"| {r['case']} | {r['commit']} | {', '.join(f'{k}={v}' for k, v in r['overrides'].items()) or 'defaults'} | "
              f"{r['generate_s']} | {r['score_s']} | {r['evaluate_s']} | {r['train_s']} | {r['iteration_s']} | "
              f"{base / r['iteration_s']:.2f}× | {r['peak_mib']} | "
              f"{', '.join('—' if first[k] is None else f'{first[k]:.4f}' for k in ('reward', 'kl', 'policy_loss'))} |")


if __name__ == "__main__":
    main()
