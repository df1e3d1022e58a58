"""Peak memory of `redline train ppo` with the shared reference (LoRA adapters off = the SFT policy and
the reward model) against separate frozen copies (`--no-shared-reference`).

Each case runs in a fresh Python process: it loads the four roles (policy, reference, value, reward
model), then trains a couple of short iterations. Memory is the process's resident set as Linux
reports it: at the end of the run (VmRSS) and its peak over the whole run (VmHWM). Safetensors maps
weights lazily, so the resident set right after loading says little. The reward model is the
policy's base with a fresh score head, saved as a reward run: its weights do not matter for memory.

    python benchmarks/ppo_memory.py --models tiny-random embedded --out benchmarks/results/ppo_memory.json
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

CHILD = r"""
import json, sys, time
import torch
from redline.models import ModelCard, load_reward_model, load_tokenizer, save_model
from redline.records import read_prompt_records
from redline.train.ppo import PPOConfig, instructgpt_reward, load_ppo_models, run_ppo
from redline.train.sft import as_chat

model, shared, work, iterations, new_tokens, threads = sys.argv[1], sys.argv[2] == "shared", sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
torch.set_num_threads(threads)

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024  # MiB

config = PPOConfig(policy=model, reward=f"{work}/rm-{model}", prompts=f"{work}/prompts.jsonl", device="cpu",
                   shared_reference=shared, iterations=iterations, batch_size=4, minibatch_size=4,
                   micro_batch_size=2, max_new_tokens=new_tokens, warmup_iterations=1, value_warmup_iterations=0,
                   save_every=100)
before = rss("VmRSS")
t0 = time.perf_counter()
models = load_ppo_models(config, "cpu")
load_s = time.perf_counter() - t0
scorer, adapter_off = models.scorer()
reward = instructgpt_reward(scorer, models.scorer_tokenizer, adapter_off=adapter_off)
records = read_prompt_records(config.prompts)
run_ppo(config, models, records, reward, lambda r: as_chat(r["prompt"]), f"{work}/run-{model}-{sys.argv[2]}")
rows = [json.loads(l) for l in open(f"{work}/run-{model}-{sys.argv[2]}/ppo_log.jsonl")]
last = rows[-1]
print(json.dumps({"python_mib": round(before), "end_mib": round(rss("VmRSS")), "peak_mib": round(rss("VmHWM")),
                  "load_s": round(load_s, 1), "iteration_s": round(sum(last[k] for k in ("generate_s", "score_s", "evaluate_s", "train_s")), 1),
                  "generate_s": last["generate_s"], "score_s": last["score_s"], "evaluate_s": last["evaluate_s"], "train_s": last["train_s"]}))
"""


def make_reward_run(model: str, work: Path) -> None:
    """The policy's base as a reward run (fresh score head), once per model."""
    code = (
        "import sys; from redline.models import *; "
        "save_model(load_reward_model(sys.argv[1], device='cpu'), load_tokenizer(sys.argv[1]), sys.argv[2], "
        "ModelCard(kind='reward', base_model=sys.argv[1]))"
    )
    if not (work / f"rm-{model}").exists():
        done = subprocess.run([sys.executable, "-c", code, model, str(work / f"rm-{model}")], capture_output=True, text=True)
        if done.returncode:  # a model that does not load: say why, not a CalledProcessError naming no reason
            sys.exit(f"{model}: its reward run could not be made:\n{done.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny-random", "embedded"])
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per case (1 on a shared 2-core machine)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ppo_memory.json"))
    args = parser.parse_args()

    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "prompts.jsonl").write_text("".join(
            json.dumps({"prompt": f"Write two sentences about topic number {i}, in plain words."}) + "\n" for i in range(8)))
        for model in args.models:
            make_reward_run(model, work)
            for mode in ("shared", "separate"):
                out = subprocess.run([sys.executable, "-c", CHILD, model, mode, str(work), str(args.iterations),
                                      str(args.max_new_tokens), str(args.threads)], env=env, capture_output=True, text=True)
                if out.returncode:
                    sys.exit(f"{model} {mode} failed:\n{out.stderr[-3000:]}")
                row = {"model": model, "reference": mode, **json.loads(out.stdout.strip().splitlines()[-1])}
                print(json.dumps(row), file=sys.stderr)
                rows.append(row)
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    settings = {"iterations": args.iterations, "batch_size": 4, "minibatch_size": 4, "micro_batch_size": 2,
                "max_new_tokens": args.max_new_tokens, "threads": args.threads, "lora_r": 16, "dtype": "float32"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "settings": settings, "rows": rows}, indent=2) + "\n")
    print("| model | reference | resident at end MiB | peak MiB | iteration s (generate / score / evaluate / train) |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['model']} | {r['reference']} | {r['end_mib']} | {r['peak_mib']} | "
              f"{r['iteration_s']} ({r['generate_s']} / {r['score_s']} / {r['evaluate_s']} / {r['train_s']}) |")


if __name__ == "__main__":
    main()
