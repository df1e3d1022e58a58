#!/bin/bash
# PPO-ptx and PPO on the habit-remedied reward model, to ITERS (>= 100) iterations, judged on the 200 test
# prompts against SFT (issue 15, item 5; RESULTS "InstructGPT", twenty-first to twenty-seventh sessions).
# Everything from nothing on a fresh machine, by the commands RESULTS gives:
#
#   1. SFT on the first 950 demonstrations (lr 5e-4, one epoch; ~30 min on a core) and its 200 test answers;
#   2. runs/rm_aug: models/reward gone on with 150 rankings whose unasked habits (quotes, lowercase, capitals)
#      sit on answers of every quality (scripts/reward_habits.py augment, `redline simulate rank`; ~31 min);
#   3. PPO-ptx (γ_ptx 1, one demonstration per 4 episodes) and PPO without the mix, RLOO K 4, 32 episodes an
#      iteration, lr 3e-4, both on runs/rm_aug, a checkpoint every iteration (~3.5 min an iteration each,
#      the two beside each other on the two cores);
#   4. each run judged at ITERS, then at every iteration of JUDGE_AT (a copy of its checkpoint taken as the run
#      passes it, finished there once the run is): 200 test answers (T 0.7, top-p 0.95, 256 tokens),
#      the oracle and the reward-model judge (models/reward) against SFT's, and the habits each answer wears.
#
# bfloat16 (generation, --bf16-base) where the CPU has it natively, else float32 (scripts/lib.sh; BF16=0|1 overrides).
# Resumable: a step whose output is complete is skipped, a PPO run resumes from its last checkpoint; after an
# interruption (a session's end) rerun the same command. Lost with the machine, it starts over from step 1.
#
#   scripts/instructgpt_ppo_aug.sh                      # both runs beside each other, then judged at ITERS
#   JUDGE_AT="48 76" scripts/instructgpt_ppo_aug.sh     # and judged at 48 and 76 on the way (ascending)
#   PROCS=2 scripts/instructgpt_ppo_aug.sh              # one run at a time over both cores (torchrun, gloo)
#   JUDGE_AT="48 76" scripts/instructgpt_ppo_aug.sh judge    # beside runs already going: a copy of each at 48 and
#       # 76, judged (it waits for a checkpoint while that run's trainer runs; a run keeps its last two checkpoints).
#       # The runs at ITERS are judged by the command that trains them.
set -e
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 TRANSFORMERS_VERBOSITY=error
REDLINE=${REDLINE:-.venv/bin/redline}
TORCHRUN=${TORCHRUN:-.venv/bin/torchrun}
PROCS=${PROCS:-1}  # 2: each run over two processes (one a core), PPO-ptx first, then the other
PYTHON=${PYTHON:-.venv/bin/python}
R=${RUNS:-runs}
D=${DATA:-data/simulated}
ITERS=${ITERS:-100}
JUDGE_AT=${JUDGE_AT:-}
POLL=${POLL:-30}  # seconds between looks for a checkpoint to copy
MODE=${1:-all}
mkdir -p $R
. scripts/lib.sh  # stamp, done_run, generate, judge_against
test_answers() { generate "$1" $D/test.jsonl 200 "$2" --temperature 0.7 --top-p 0.95; }  # POLICY OUT

# 1. SFT, and its test answers (every arm is judged against them).
sft() {
  if ! done_run $R/sft; then stamp sft
    $REDLINE train sft --model embedded --data $D/demonstrations.jsonl --limit 950 --learning-rate 5e-4 --epochs 1 \
      $BF16_BASE --threads 1 --out $R/sft > $R/sft.log 2>&1
  fi
  test_answers $R/sft $R/test_sft.jsonl
}

# 2. The remedied reward model.
rm_aug() {
  done_run $R/rm_aug && return
  stamp rm_aug
  $PYTHON scripts/reward_habits.py augment $D/rankings.jsonl models/reward 300 $R/aug
  $REDLINE simulate rank --responses "$(ls $R/aug/responses_*.jsonl | paste -sd,)" --out $R/aug/rankings.jsonl --overwrite
  $REDLINE train reward --model models/reward --data $R/aug/rankings.jsonl --limit 150 --eval-data $R/aug/held_out.jsonl \
    --epochs 1 --learning-rate 1e-3 --max-length 384 --batch-size 2 --normalize-with $D/demonstrations.jsonl \
    --threads 1 --out $R/rm_aug > $R/rm_aug.log 2>&1
}
if [ "$MODE" = judge ] && ! { done_run $R/sft && done_run $R/rm_aug; }; then
  echo "judge: SFT and runs/rm_aug are not built yet in $R; run the script without 'judge' first" >&2
  exit 1
fi
sft & first=$!  # beside each other, one a core
rm_aug & second=$!
wait_all $first $second

# 3. The two runs. ppo_flags NAME: the run's flags, less --iterations and --out.
ppo_flags() {
  local flags="--policy $R/sft --reward $R/rm_aug --advantage rloo --rloo-k 4 --batch-size 32 --learning-rate 3e-4
    --threads 1 --save-every 1 $BF16_BASE --prompts $D/rankings.jsonl"
  case $1 in
    ppo_ptx_aug) echo "$flags --ptx-data $D/demonstrations.jsonl --ptx-coef 1 --ptx-ratio 0.25" ;;
    ppo_noptx_aug) echo "$flags --ptx-coef 0" ;;
    *) echo "unknown run $1" >&2; return 1 ;;
  esac
}
RUNS_RL=${RUNS_RL:-"ppo_ptx_aug ppo_noptx_aug"}  # RUNS_RL=ppo_ptx_aug: that run alone
finished_at() {  # RUN N: the run finished at iteration N: its card, written as it finishes, says so (its
  # train_config.json says what a rerun asks for from its start; a finished run rerun with more iterations goes on)
  done_run "$1" && grep -Eq "\"iterations\": $2,?\$" "$1/redline.json"
}
ppo() {  # NAME ITERATIONS OUT [PROCESSES]
  finished_at "$3" $2 && return
  stamp "$1 to $2 iterations: $3"
  local launch=$REDLINE
  if [ "${4:-1}" -gt 1 ]; then  # one job over several processes (gloo): see the README's "torchrun"
    launch="$TORCHRUN --standalone --nproc_per_node $4 $REDLINE"  # --standalone: a free port of its own
  fi
  $launch train ppo $(ppo_flags $1) --iterations $2 --out "$3" >> "$3.log" 2>&1
}

last_iteration() {  # RUN: the iteration of its last complete checkpoint (0: none)
  local last
  last=$(ls -d $1/checkpoints/iter-*/state.json 2> /dev/null | tail -1)
  [ -n "$last" ] && echo $((10#$(basename $(dirname $last) | cut -d- -f2))) || echo 0
}

# 4. A run judged at N: a copy finished at its iteration-N checkpoint (the run itself when N is ITERS).
trainer_alive() {  # RUN [PID]: its trainer runs now, or (PID) the job that trains it is still going
  if [ -n "$2" ]; then kill -0 $2 2> /dev/null; else pgrep -f "train ppo.*--out $1\b" > /dev/null; fi
}
copy_at() {  # NAME N [PID]: copy the run's iteration-N checkpoint, its settings and logs (not a finished run's model)
  local run=$R/$1 copy=$R/copies/${1}_it$2 ckpt
  [ "$2" = "$ITERS" ] && return  # judged on the run itself
  ckpt=$(printf 'iter-%06d' $2)
  done_run $copy || [ -f $copy/checkpoints/$ckpt/state.json ] && return  # copied before (a rerun resumes it)
  # the run keeps its last two checkpoints: wait while it is short of N, give up once N is pruned
  while [ ! -f $run/checkpoints/$ckpt/state.json ] && [ "$(last_iteration $run)" -lt $2 ] \
      && ! finished_at $run $ITERS && trainer_alive $run $3; do
    sleep $POLL
  done
  [ -f $run/checkpoints/$ckpt/state.json ] || { echo "$run holds no checkpoint at $2 (pruned, or not there yet): not judged at $2"; return 0; }
  rm -rf $copy && mkdir -p $copy/checkpoints
  cp -r $run/checkpoints/$ckpt $copy/checkpoints/.$ckpt.tmp  # first, before the run prunes it; complete once renamed
  find $run -mindepth 1 -maxdepth 1 -type f \( -name "*.jsonl" -o -name "*.json" \) ! -name redline.json -exec cp {} $copy/ \;
  mv $copy/checkpoints/.$ckpt.tmp $copy/checkpoints/$ckpt
}
judge() {  # NAME N
  local name=$1 n=$2 run=$R/$1 tag=${1}_it$2
  if [ "$n" != "$ITERS" ]; then
    run=$R/copies/$tag
    [ -d $run/checkpoints ] && ppo $name $n $run
  fi
  finished_at $run $n || return 0
  test_answers $run $R/test_$tag.jsonl
  judge_against $R/test_$tag.jsonl $R/test_sft.jsonl $R/eval_$tag oracle reward:models/reward
  $PYTHON scripts/reward_habits.py answers $R/test_sft.jsonl $R/test_$tag.jsonl > $R/habits_$tag.md
}

judge_each() {  # N...: each run judged at every N, the runs beside each other
  local pids=() name n
  for name in $RUNS_RL; do (for n in "$@"; do judge $name $n; done) & pids+=($!); done
  wait_all "${pids[@]}"
}
if [ "$MODE" = all ]; then
  declare -A trainer
  if [ "$PROCS" -gt 1 ]; then  # one run after the other, each over PROCS processes
    (for name in $RUNS_RL; do ppo $name $ITERS $R/$name $PROCS; done) & started=($!)
    for name in $RUNS_RL; do trainer[$name]=$!; done
  else
    started=()
    for name in $RUNS_RL; do ppo $name $ITERS $R/$name & started+=($!); trainer[$name]=$!; done
  fi
  # each run's JUDGE_AT checkpoints copied as it passes them (it keeps its last two)
  for name in $RUNS_RL; do (for n in $JUDGE_AT; do copy_at $name $n ${trainer[$name]}; done) & started+=($!); done
  wait_all "${started[@]}"
  judge_each $ITERS $JUDGE_AT  # the runs themselves first: a session's end cuts the copies' judgments, not theirs
else  # judge: beside runs going on; each run's copies taken (every one first), then finished and judged
  pids=()
  for name in $RUNS_RL; do
    (for n in $JUDGE_AT; do copy_at $name $n; done; for n in $JUDGE_AT; do judge $name $n; done) & pids+=($!)
  done
  wait_all "${pids[@]}"
fi
stamp done
