#!/bin/bash
# PIT on the shipped simulated data (benchmarks/RESULTS.md, "PIT"): the reward-gap model, PIT SFT and the RL
# curriculum from the embedded model, the round-1-only ablation, `improve` with every stage, Self-Refine with
# the embedded model, and win rates by the oracle and the reward-model judge of scripts/instructgpt_simulated.sh.
# One torch thread (another job shared the 2 cores). Every step is skipped once done; rerun to resume.
set -e
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 TRANSFORMERS_VERBOSITY=error
P=runs/pit
D=data/simulated
N=48          # test prompts
ITERS=3       # rounds of improve / refine
stamp() { echo "=== $(date +%T) $*"; }
mkdir -p $P
if [ ! -f $P/gap/redline.json ]; then stamp gap-reward
  /usr/bin/time -v .venv/bin/redline train gap-reward --data $D/preferences.jsonl --split-thirds --eval-split 0.15 --max-steps 40 \
    --batch-size 2 --learning-rate 5e-4 --warmup 0.1 --logging-steps 5 --save-steps 10 --out $P/gap 2> >(tee $P/gap.time >&2)
fi
RL="--iterations 6 --batch-size 8 --max-new-tokens 128 --learning-rate 2e-4 --warmup-iterations 1 --save-every 2"
if [ ! -f $P/pit/pit.json ]; then stamp pit rounds 0,1
  /usr/bin/time -v .venv/bin/redline train pit --policy embedded --gap-reward $P/gap --data $D/preferences.jsonl --split-thirds \
    --rounds 0,1 $RL --out $P/pit 2> >(tee $P/pit.time >&2)
fi
if [ ! -f $P/pit-r1/pit.json ]; then stamp pit round 1 only
  mkdir -p $P/pit-r1
  [ -d $P/pit-r1/sft ] || cp -r $P/pit/sft $P/pit-r1/sft          # the same PIT SFT stage and BASE references
  [ -f $P/pit-r1/references.jsonl ] || cp $P/pit/references.jsonl $P/pit-r1/
  .venv/bin/redline train pit --policy embedded --gap-reward $P/gap --data $D/preferences.jsonl --split-thirds \
    --rounds 1 $RL --out $P/pit-r1
fi
declare -A MODEL=([none]=$P/pit/sft [r0]=$P/pit/rl-0 [r1]=$P/pit-r1/rl-1 [r01]=$P/pit/rl-0-1)
for v in r01 r0 r1 none; do
  if [ ! -f $P/improve-$v/iteration_$ITERS.jsonl ]; then stamp improve $v
    .venv/bin/redline improve --model ${MODEL[$v]} --input $D/test.jsonl --limit $N --iterations $ITERS --temperature 0.5 \
      --max-new-tokens 256 --dtype bfloat16 --out $P/improve-$v
  fi
done
if [ ! -f $P/refine/iteration_$ITERS.jsonl ]; then stamp refine
  .venv/bin/redline refine --model embedded --input $D/test.jsonl --limit $N --iterations $ITERS --temperature 0.7 \
    --max-new-tokens 256 --dtype bfloat16 --out $P/refine
fi
for judge in oracle reward:runs/igpt/rm; do name=$(echo $judge | cut -d: -f1)
  for v in improve-r01 improve-r0 improve-r1 improve-none refine; do
    [ -f $P/eval/$v-$name/summary.json ] || { stamp evaluate $v $judge
      .venv/bin/redline evaluate --a $P/$v --judge $judge --out $P/eval/$v-$name; }
  done
  [ -f $P/eval/pit-vs-refine-$name/summary.json ] || { stamp evaluate pit vs refine $judge
    .venv/bin/redline evaluate --a $P/improve-r01/iteration_$ITERS.jsonl --b $P/refine/iteration_$ITERS.jsonl --judge $judge \
      --out $P/eval/pit-vs-refine-$name; }
done
stamp done
