#!/bin/bash
# InstructGPT on the shipped simulated data (benchmarks/RESULTS.md, "Judges" and "InstructGPT"): reward
# model, judge agreement, SFT, PPO and PPO-ptx, samples of each policy on 48 test prompts, win rates.
# One torch thread (another job shared the 2 cores). Every step is skipped once done; rerun to resume.
set -e
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 TRANSFORMERS_VERBOSITY=error
R=runs/igpt
D=data/simulated
stamp() { echo "=== $(date +%T) $*"; }
if [ ! -f $R/rm/redline.json ]; then stamp rm
  /usr/bin/time -v .venv/bin/redline train reward --data $D/rankings.jsonl --limit 150 --eval-split 0.2 --max-length 384 \
    --batch-size 2 --learning-rate 3e-4 --logging-steps 5 --save-steps 20 --out $R/rm 2> >(tee $R/rm.time >&2)
fi
if [ ! -f $R/agree/summary.json ] && [ ! -f $R/agree/agreement.json ]; then stamp agreement
  .venv/bin/python - <<'PY'
import json
rows = [json.loads(l) for l in open("data/simulated/preferences.jsonl")][450:]
for side in ("chosen", "rejected"):
    with open(f"runs/igpt/pairs_{side}.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps({"id": r["id"], "prompt": r["prompt"], "response": r[side], "meta": r["meta"]}) + "\n")
PY
  .venv/bin/redline evaluate agreement --judges oracle,reward:$R/rm --a $R/pairs_chosen.jsonl --b $R/pairs_rejected.jsonl --out $R/agree
fi
if [ ! -f $R/sft/redline.json ]; then stamp sft
  .venv/bin/redline train sft --data $D/demonstrations.jsonl --limit 120 --grad-accum 4 --learning-rate 5e-4 --logging-steps 5 --out $R/sft
fi
# The first PPO run kept the default lr (2e-5) and a 10-iteration warm-up over 12 iterations: its policy barely
# moved (approx. KL 0, clip fraction 0; RESULTS "InstructGPT"). The runs below use 2e-4 and one warm-up iteration.
PPO="--policy $R/sft --prompts $D/rankings.jsonl --iterations 20 --batch-size 16 --max-new-tokens 96 --threads 1 \
  --save-every 2 --learning-rate 2e-4 --warmup-iterations 1"
ppo() {  # RUN [flags]
  local run=$1; shift
  [ -f $R/$run/redline.json ] && return
  stamp $run
  /usr/bin/time -v .venv/bin/redline train ppo $PPO "$@" --out $R/$run 2> >(tee $R/$run.time >&2)
}
generate() {  # RUN: 48 test prompts, sampled as for every policy here (the base model: RUN=base)
  local model=$R/$1; [ $1 = base ] && model=embedded
  [ -f $R/gen_$1.jsonl ] && [ $(wc -l < $R/gen_$1.jsonl) -ge 48 ] && return
  stamp generate $1
  .venv/bin/redline generate --model $model --prompts $D/test.jsonl --limit 48 --max-new-tokens 256 --dtype bfloat16 \
    --threads 1 --source $1 --out $R/gen_$1.jsonl
}
against_sft() {  # RUN: win rate against the SFT policy by the oracle and by the reward-model judge
  for judge in oracle reward:$R/rm; do
    local name=$(echo $judge | cut -d: -f1)
    [ -f $R/eval_$1_$name/summary.json ] && continue
    stamp evaluate $1 $judge
    .venv/bin/redline evaluate --a $R/gen_$1.jsonl --b $R/gen_sft.jsonl --judge $judge --out $R/eval_$1_$name
  done
}
ppo ppo2 --reward $R/rm
ppo ppo2-ptx --reward $R/rm --ptx-data $D/demonstrations.jsonl --ptx-coef 27.8
for run in sft base ppo2 ppo2-ptx; do generate $run; done
for run in base ppo2 ppo2-ptx; do against_sft $run; done
# PPO with a perfect reward model (the oracle's quality): what PPO gains when the reward model is not the limit.
ppo ppo-oracle --reward $R/rm --score oracle --iterations 12
generate ppo-oracle
against_sft ppo-oracle
# Comparisons shuffled as independent pairs (the paper's ablation), at the grouped run's compute: 60 steps of
# 4 pairs = 480 forward passes, as the grouped run's 60 steps of 2 prompts x 4 responses.
if [ ! -f $R/rm-pairs/redline.json ]; then stamp rm-pairs
  .venv/bin/redline train reward --data $D/rankings.jsonl --limit 150 --eval-split 0.2 --max-length 384 --pairs \
    --batch-size 4 --max-steps 60 --learning-rate 3e-4 --logging-steps 5 --save-steps 20 --out $R/rm-pairs
fi
stamp done
