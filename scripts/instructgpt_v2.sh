#!/bin/bash
# InstructGPT that climbs (issue 15, item 5): the full run plan on the shipped simulated world, every arm
# judged against SFT on the 200 test prompts by the oracle and by the reward-model judge.
#
#   1. reward model on all the rankings (one epoch, lr 1e-3: 1e-4 learnt almost nothing in 60 steps);
#   2. SFT chosen by the reward model on validation prompts, as the paper did: a few candidates and the
#      base model answer the held-out demonstrations' prompts; the highest mean reward is SFT (the base
#      model itself if no candidate beats it, so SFT never makes the policy worse by the reward model);
#   3. PPO and PPO-ptx with the learned reward model, ITERS (>= 100) iterations each;
#   4. PPO and RLOO with the oracle's quality as the reward (a perfect reward model);
#   5. DPO on the preference pairs, from the chosen SFT;
#   6. every policy answers the 200 test prompts; each is judged against SFT (oracle, reward:rm).
#
# Resumable: every step is skipped once its output is complete, and an interrupted PPO run resumes from
# its last checkpoint (every 2 iterations) when the script runs again: just rerun it.
# One torch thread per process (the CPU has 2 cores); PARALLEL=1 runs two RL arms at a time.
#
# Expected time on the 2-core CPU, one thread per process. Measured: one PPO iteration at the defaults
# (16 episodes, 256 new tokens, 2 epochs of 4 minibatches; embedded policy, embedded-sized reward model)
# took 322 s of CPU (generate 16%, score 5%, evaluate 23%, train 55%; mean response 164 tokens, 38% cut
# at 256; peak RSS 6.4 GiB). Scaled from it and from RESULTS "InstructGPT":
#   reward model ~7.5 h at first (61 s a step of 2 prompts, 438 steps, on a shared core; a padded batch and
#   LoRA dropout), ~4 h since it scores each completion alone (RESULTS "Training": 1.66x; peak RSS 12 -> 8 GB);
#   SFT candidates ~2.5 h; validation generation ~15 min;
#   PPO ~5.3 min/iteration (9 h for 100), PPO-ptx ~6.5 min (11 h), PPO oracle ~5 min (8.5 h),
#   RLOO oracle ~3.5 min (6 h); DPO ~1.5 h; test generation + judging ~2 h.
#   In all ~42 h of one core; ~23 h with PARALLEL=1 when both cores are free (two PPO runs: ~15 GiB).
set -e
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 TRANSFORMERS_VERBOSITY=error
REDLINE=${REDLINE:-.venv/bin/redline}
PYTHON=${PYTHON:-.venv/bin/python}
R=${RUNS:-runs/igpt2}
D=${DATA:-data/simulated}
ITERS=${ITERS:-100}
N_VAL=${N_VAL:-50}
PARALLEL=${PARALLEL:-0}
MODEL=${MODEL:-embedded}  # the base model (tiny-random for a smoke run of the whole plan)
RM=${RM:-$R/rm}           # RM=models/reward: the shipped reward model, step 1's output on another machine
mkdir -p $R
. scripts/lib.sh  # stamp, done_run, generate, judge_against

# 1. The reward model, on all the rankings; 10% of the prompts held out (accuracy beside the annotators').
if ! done_run $RM; then stamp rm
  $REDLINE train reward --model $MODEL --data $D/rankings.jsonl --epochs 1 --learning-rate 1e-3 --eval-split 0.1 --max-length 384 \
    --batch-size 2 --lora-dropout 0.05 --logging-steps 10 --save-steps 50 --normalize-with $D/demonstrations.jsonl \
    --out $RM
fi

# 2. SFT candidates on all but the last N_VAL demonstrations; their prompts are the validation set.
n_demo=$(wc -l < $D/demonstrations.jsonl)
[ -f $R/val_prompts.jsonl ] || tail -n $N_VAL $D/demonstrations.jsonl > $R/val_prompts.jsonl
sft() {  # NAME flags...
  local name=$1; shift
  done_run $R/$name && return
  stamp $name
  $REDLINE train sft --model $MODEL --data $D/demonstrations.jsonl --limit $((n_demo - N_VAL)) --logging-steps 10 --save-steps 50 \
    "$@" --out $R/$name
}
sft sft-lr2e-4 --learning-rate 2e-4 --epochs 1
sft sft-lr5e-4 --learning-rate 5e-4 --epochs 1
sft sft-lr5e-4-e2 --learning-rate 5e-4 --epochs 2
for cand in sft-lr2e-4 sft-lr5e-4 sft-lr5e-4-e2; do generate $R/$cand $R/val_prompts.jsonl $N_VAL $R/val_$cand.jsonl; done
generate $MODEL $R/val_prompts.jsonl $N_VAL $R/val_base.jsonl
if [ ! -f $R/sft_choice.json ]; then stamp choose sft
  $PYTHON - "$R" "$RM" <<'PY'
import json, sys
from redline.models import chat_text, load_reward_model, load_tokenizer, score_texts

runs, rm = sys.argv[1:3]
model, tokenizer = load_reward_model(rm, device="cpu"), load_tokenizer(rm)
means = {}
for cand in ("sft-lr2e-4", "sft-lr5e-4", "sft-lr5e-4-e2", "base"):
    rows = [json.loads(line) for line in open(f"{runs}/val_{cand}.jsonl")]
    scores = score_texts(model, tokenizer, [chat_text(tokenizer, r["prompt"], r["response"]) for r in rows], max_length=512)
    means[cand] = sum(scores) / len(scores)
best = max(means, key=means.get)
json.dump({"chosen": best, "mean_reward": means}, open(f"{runs}/sft_choice.json", "w"), indent=2)
print(json.dumps({"chosen": best, "mean_reward": means}))
PY
fi
chosen=$($PYTHON -c "import json; print(json.load(open('$R/sft_choice.json'))['chosen'])")
SFT=$R/$chosen
[ "$chosen" = base ] && SFT=$MODEL
stamp "SFT is $SFT"

# 3-4. RL arms at the defaults of RLSettings (λ 1, temperature 0.7, 256 new tokens, 2 epochs of 4 minibatches,
# a 1-iteration value warm-up); a checkpoint every 2 iterations, so an interruption loses at most 2.
# Frozen base weights in bfloat16 (1.36x an iteration; the PPO learning check climbs as in float32: RESULTS
# "Learning checks"). The reward model's LoRA dropout is given (0.05, the default it started under) so it resumes.
RL="--policy $SFT --reward $RM --prompts $D/rankings.jsonl --iterations $ITERS --threads 1 --save-every 2 --bf16-base"
ppo() {  # RUN flags...
  local run=$1; shift
  done_run $R/$run && return
  stamp $run
  /usr/bin/time -v $REDLINE train ppo $RL "$@" --out $R/$run 2> >(tee -a $R/$run.log >&2)
}
arms=(
  "ppo --ptx-coef 0"
  "ppo-ptx --ptx-data $D/demonstrations.jsonl"   # γ_ptx 1, one text per 4 episodes (the defaults; the paper: 27.8 and 8)
  "ppo-oracle --score oracle --ptx-coef 0"
  "rloo-oracle --score oracle --advantage rloo --rloo-k 4 --ptx-coef 0"
)
if [ "$PARALLEL" = 1 ]; then
  for ((i = 0; i < ${#arms[@]}; i += 2)); do
    ppo ${arms[i]} & first=$!
    ppo ${arms[i + 1]} & second=$!
    wait_all $first $second  # a failed arm stops the script, once its twin is done
  done
else
  for arm in "${arms[@]}"; do ppo $arm; done
fi

# 5. DPO from the chosen SFT on the preference pairs (LoRA, one epoch).
if ! done_run $R/dpo; then stamp dpo
  $REDLINE train dpo --model $SFT --data $D/preferences.jsonl --epochs 1 --logging-steps 10 --save-steps 20 --out $R/dpo
fi

# 6. The 200 test prompts, and each policy against SFT by the oracle and by the reward-model judge.
n_test=$(wc -l < $D/test.jsonl)
generate $SFT $D/test.jsonl $n_test $R/test_sft.jsonl
for run in ppo ppo-ptx ppo-oracle rloo-oracle dpo; do generate $R/$run $D/test.jsonl $n_test $R/test_$run.jsonl; done
for run in ppo ppo-ptx ppo-oracle rloo-oracle dpo; do
  judge_against $R/test_$run.jsonl $R/test_sft.jsonl $R/eval_$run oracle reward:$RM
done
# 7. Every arm side by side (judges nothing; rebuilt on every rerun): table.md, table.json, win_rates.png.
runs=""
for run in ppo ppo-ptx ppo-oracle rloo-oracle dpo; do for name in oracle reward; do runs+="$R/eval_${run}_$name=$run,"; done; done
$REDLINE evaluate table --runs "$runs" --title "InstructGPT arms against SFT, 200 test prompts" --out $R/table --overwrite
stamp done
