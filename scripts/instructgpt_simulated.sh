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
for run in ppo ppo-ptx; do
  if [ ! -f $R/$run/redline.json ]; then stamp $run
    ptx=""; [ $run = ppo-ptx ] && ptx="--ptx-data $D/demonstrations.jsonl --ptx-coef 27.8"
    .venv/bin/redline train ppo --policy $R/sft --reward $R/rm --prompts $D/rankings.jsonl --iterations 12 --batch-size 16 \
      --max-new-tokens 96 --threads 1 --save-every 4 $ptx --out $R/$run
  fi
done
for run in sft ppo ppo-ptx; do stamp generate $run
  .venv/bin/redline generate --model $R/$run --prompts $D/test.jsonl --limit 48 --max-new-tokens 256 --dtype bfloat16 \
    --threads 1 --source $run --out $R/gen_$run.jsonl
done
for run in ppo ppo-ptx; do for judge in oracle reward:$R/rm; do stamp evaluate $run $judge
  name=$(echo $judge | cut -d: -f1)
  .venv/bin/redline evaluate --a $R/gen_$run.jsonl --b $R/gen_sft.jsonl --judge $judge --out $R/eval_${run}_$name
done; done
stamp done
