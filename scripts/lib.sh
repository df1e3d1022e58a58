# The steps the run scripts share (sourced by instructgpt_v2.sh, instructgpt_ppo_aug.sh and pit_v2.sh after they set
# REDLINE): a stamped step line, a finished run, jobs waited for together, test answers written once, one policy
# judged against another.

stamp() { echo "=== $(date +%T) $*"; }
# bfloat16 where this machine runs it natively (AVX-512/AMX CPU, a GPU), else float32: on an AVX2-only CPU bf16 trains
# ~12x slower (redline.models.fast_bfloat16). The runs in RESULTS ran on AVX-512 CPUs: bfloat16 and --bf16-base.
if [ -z "${BF16:-}" ]; then
  BF16=$(${PYTHON:-.venv/bin/python} -c "from redline.models import fast_bfloat16; print(int(fast_bfloat16('cpu')))" \
    2> /dev/null || echo 0)
fi
if [ "$BF16" = 1 ]; then GEN_DTYPE=bfloat16 BF16_BASE=--bf16-base; else GEN_DTYPE=float32 BF16_BASE=; fi
done_run() { [ -f "$1/redline.json" ]; }  # a run folder a trainer finished
wait_all() {  # PID...: wait for every one (none left running behind a failure), then fail if any failed
  local rc=0 pid
  for pid in "$@"; do wait $pid || rc=$?; done
  return $rc
}

generate() {  # MODEL PROMPTS N OUT [flags...]: N answers (256 new tokens, GEN_DTYPE, one thread); skipped once OUT holds N
  local model=$1 prompts=$2 n=$3 out=$4
  shift 4
  [ -f "$out" ] && [ "$(wc -l < "$out")" -ge "$n" ] && return
  stamp generate "$model" "$(basename "$out")"
  $REDLINE generate --model "$model" --prompts "$prompts" --limit "$n" --max-new-tokens 256 --dtype $GEN_DTYPE --threads 1 \
    --source "$(basename "$model")" "$@" --out "$out"
}

judge_against() {  # A B OUT JUDGE...: A's answers against B's by each judge into OUT_<judge's name>; skipped where summarised
  local a=$1 b=$2 out=$3 judge
  shift 3
  for judge in "$@"; do
    [ -f "${out}_${judge%%:*}/summary.json" ] && continue
    stamp evaluate "$(basename "$a")" "$judge"
    $REDLINE evaluate --a "$a" --b "$b" --judge "$judge" --out "${out}_${judge%%:*}"
  done
}
