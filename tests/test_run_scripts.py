"""scripts/instructgpt_ppo_aug.sh's bookkeeping, with `redline` and python stubbed out: which checkpoint a judged copy
holds, what it is finished and judged with, and what it skips. The models themselves are the trainers' tests."""

import json
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# a run folder named in $FAIL fails; one named in $SLOW takes two seconds
STUB = """#!/bin/bash
echo "$*" >> "{log}"
out=""; prev=""; iterations=""
for a in "$@"; do [ "$prev" = --out ] && out=$a; [ "$prev" = --iterations ] && iterations=$a; prev=$a; done
# train ppo: its settings written as it starts (as claim_output does), its card with the iterations run as it ends
[ "$1 $2" = "train ppo" ] && mkdir -p "$out" && printf '{{\n  "iterations": %s,\n  "seed": 0\n}}\n' "$iterations" \
  > "$out/train_config.json"
[ -n "$FAIL" ] && [ "$out" = "$FAIL" ] && exit 3
[ -n "$SLOW" ] && [ "$out" = "$SLOW" ] && sleep 2
case "$1 $2" in
  "train ppo") printf '{{\n  "kind": "ppo",\n  "metrics": {{\n    "iterations": %s,\n    "episodes": 0\n  }}\n}}\n' \
               "$iterations" > "$out/redline.json" ;;
  generate*) for i in $(seq 200); do echo '{{}}'; done > "$out" ;;
  evaluate*) mkdir -p "$out" && echo '{{}}' > "$out/summary.json" ;;
esac
"""


# torchrun: the launch logged, then the command after its three flags (--standalone --nproc_per_node N) run
TORCHRUN = """#!/bin/bash
echo "torchrun $*" >> "{log}"
shift 3
exec "$@"
"""


def run_script(tmp_path: Path, mode: str = "judge", **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    log = tmp_path / "calls.log"
    for name, text in (("redline", STUB), ("python", STUB), ("torchrun", TORCHRUN)):
        stub = tmp_path / f"stub-{name}"
        stub.write_text(text.format(log=log))
        stub.chmod(0o755)
    settings = ("RUNS", "RUNS_RL", "ITERS", "JUDGE_AT", "PROCS", "FAIL", "SLOW", "BF16")  # none from the caller's shell
    env = {"BF16": "1", **env}  # as on the AVX-512 CPUs RESULTS' runs had (else the stub python would be asked)
    # output to files, not pipes: the call returns when the script exits, not when the last job it left closes a pipe
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
        code = subprocess.Popen(["bash", str(ROOT / "scripts" / "instructgpt_ppo_aug.sh"), mode], stdout=out,
                                stderr=err, env={**{k: v for k, v in os.environ.items() if k not in settings},
                                                 "REDLINE": str(tmp_path / "stub-redline"),
                                                 "PYTHON": str(tmp_path / "stub-python"),
                                                 "TORCHRUN": str(tmp_path / "stub-torchrun"), "POLL": "0.1", **env},
                                ).wait(timeout=60)
    done = subprocess.CompletedProcess([], code, (tmp_path / "out.txt").read_text(), (tmp_path / "err.txt").read_text())
    assert done.returncode == (3 if "FAIL" in env else 0), done.stderr
    return done, log.read_text().splitlines() if log.exists() else []


def card(iterations: int) -> str:
    """A finished PPO run's redline.json, as the trainer writes it (indent 2)."""
    return json.dumps({"kind": "ppo", "metrics": {"iterations": iterations, "episodes": 0}}, indent=2) + "\n"


def a_world(tmp_path: Path, checkpoints: list[int]) -> Path:
    runs = tmp_path / "runs"
    for done in ("sft", "rm_aug"):
        (runs / done).mkdir(parents=True)
        (runs / done / "redline.json").write_text("{}")
    (runs / "test_sft.jsonl").write_text("{}\n" * 200)
    run = runs / "ppo_ptx_aug"
    for n in checkpoints:
        (run / "checkpoints" / f"iter-{n:06d}").mkdir(parents=True)
        (run / "checkpoints" / f"iter-{n:06d}" / "state.json").write_text(json.dumps({"iteration": n}))
    (run / "checkpoints" / ".iter-000005.tmp").mkdir(parents=True)  # one being written
    (run / "train_config.json").write_text("{}")
    (run / "ppo_log.jsonl").write_text("")
    return runs


def test_a_judged_copy_holds_only_its_checkpoint_and_is_finished_there_then_judged_by_both_judges(tmp_path):
    runs = a_world(tmp_path, [3, 4])
    done, calls = run_script(tmp_path, RUNS=str(runs), JUDGE_AT="3", RUNS_RL="ppo_ptx_aug")
    copy = runs / "copies" / "ppo_ptx_aug_it3"
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == ["iter-000003"]
    assert (copy / "train_config.json").is_file() and (copy / "ppo_log.jsonl").is_file()
    ppo = [c for c in calls if c.startswith("train ppo")]
    assert len(ppo) == 1 and ppo[0].endswith(f"--iterations 3 --out {copy}") and "--ptx-coef 1" in ppo[0]
    assert any(c.startswith(f"generate --model {copy} ") and "--top-p 0.95" in c for c in calls)
    judges = [c for c in calls if c.startswith("evaluate")]
    assert [j.split("--judge ")[1].split()[0] for j in judges] == ["oracle", "reward:models/reward"]
    assert all(f"--b {runs}/test_sft.jsonl" in j for j in judges)
    assert (runs / "habits_ppo_ptx_aug_it3.md").exists()
    # nothing judged at 100: the run has not finished; rerun, nothing is done twice
    assert not any("it100" in c for c in calls)
    _, again = run_script(tmp_path, RUNS=str(runs), JUDGE_AT="3", RUNS_RL="ppo_ptx_aug")
    assert [c for c in again[len(calls):] if not c.startswith("scripts/reward_habits.py answers")] == []


def test_a_checkpoint_already_pruned_is_reported_and_nothing_is_copied(tmp_path):
    runs = a_world(tmp_path, [3, 4])
    done, calls = run_script(tmp_path, RUNS=str(runs), JUDGE_AT="2", RUNS_RL="ppo_ptx_aug")
    assert f"{runs}/ppo_ptx_aug holds no checkpoint at 2" in done.stdout
    assert not (runs / "copies").exists() and not [c for c in calls if c.startswith(("train", "generate"))]


def test_a_copy_of_a_finished_run_leaves_its_model_behind_and_an_interrupted_copy_resumes(tmp_path):
    runs = a_world(tmp_path, [99, 100])
    (runs / "ppo_ptx_aug" / "redline.json").write_text(card(100))  # finished at 100: its model beside the checkpoints
    (runs / "ppo_ptx_aug" / "train_config.json").write_text('{\n  "iterations": 100,\n  "seed": 0\n}\n')
    (runs / "ppo_ptx_aug" / "adapter_model.safetensors").write_text("weights at 100")
    _, calls = run_script(tmp_path, "all", RUNS=str(runs), JUDGE_AT="99", RUNS_RL="ppo_ptx_aug")
    copy = runs / "copies" / "ppo_ptx_aug_it99"
    assert not (copy / "adapter_model.safetensors").exists()
    trained = [c for c in calls if c.startswith("train ppo")]
    assert len(trained) == 1 and trained[0].endswith(f"--iterations 99 --out {copy}")  # the run itself was done
    assert any(c.startswith(f"generate --model {copy} ") for c in calls)  # and the run at 100 itself
    assert any(c.startswith(f"generate --model {runs}/ppo_ptx_aug ") for c in calls)
    # a copy cut off while it was finished, after the run pruned 99: finished from the copy's own checkpoint
    (copy / "redline.json").unlink()
    shutil.rmtree(runs / "ppo_ptx_aug" / "checkpoints" / "iter-000099")
    _, again = run_script(tmp_path, RUNS=str(runs), JUDGE_AT="99", RUNS_RL="ppo_ptx_aug")
    assert any(c.endswith(f"--iterations 99 --out {copy}") for c in again[len(calls):])
    # judge mode judges copies only: the run at 100 was judged by the command that trained it, not again
    assert not any(c.startswith(f"generate --model {runs}/ppo_ptx_aug ") for c in again[len(calls):])


def test_a_run_finished_at_fewer_iterations_goes_on_and_is_not_judged_as_the_longer_run(tmp_path):
    runs = a_world(tmp_path, [75, 76])
    (runs / "ppo_ptx_aug" / "redline.json").write_text(card(76))  # stopped and finished at 76
    (runs / "ppo_ptx_aug" / "train_config.json").write_text('{\n  "iterations": 76,\n  "seed": 0\n}\n')
    _, calls = run_script(tmp_path, "all", RUNS=str(runs), RUNS_RL="ppo_ptx_aug", FAIL=f"{runs}/ppo_ptx_aug")
    assert [c for c in calls if c.startswith("train ppo")][0].endswith(f"--iterations 100 --out {runs}/ppo_ptx_aug")
    assert not any(c.startswith(("generate", "evaluate")) for c in calls)  # the trainer failed: 76 is not 100
    # its settings now say 100 (a trainer writes them as it starts) and its card still 76: interrupted on the way, a
    # rerun neither takes it for finished nor judges the 76-iteration model as the 100-iteration one
    assert '"iterations": 100,' in (runs / "ppo_ptx_aug" / "train_config.json").read_text()
    _, again = run_script(tmp_path, "all", RUNS=str(runs), RUNS_RL="ppo_ptx_aug", FAIL=f"{runs}/ppo_ptx_aug")
    assert sum(c.startswith("train ppo") for c in again[len(calls):]) == 1
    assert not any(c.startswith(("generate", "evaluate")) for c in again)


def test_runs_beside_each_other_are_both_waited_for_when_one_fails_and_copied_as_they_pass_judge_at(tmp_path):
    runs = a_world(tmp_path, [3, 4])
    done, calls = run_script(tmp_path, "all", RUNS=str(runs), ITERS="5", JUDGE_AT="3",
                             FAIL=f"{runs}/ppo_ptx_aug", SLOW=f"{runs}/ppo_noptx_aug")
    assert (runs / "ppo_noptx_aug" / "redline.json").is_file()  # the other run finished before the script failed
    assert (runs / "copies" / "ppo_ptx_aug_it3" / "checkpoints" / "iter-000003" / "state.json").is_file()
    assert not any(c.startswith(("generate", "evaluate")) for c in calls)  # nothing judged after a failure


def test_judging_refuses_before_sft_and_the_reward_model_are_built(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    done = subprocess.run(["bash", str(ROOT / "scripts" / "instructgpt_ppo_aug.sh"), "judge"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "RUNS": str(runs), "REDLINE": "false", "PYTHON": "false"})
    assert done.returncode == 1 and "SFT and runs/rm_aug are not built yet" in done.stderr


def test_over_two_processes_each_run_is_launched_by_torchrun_one_after_the_other_then_judged(tmp_path):
    runs = a_world(tmp_path, [])
    _, calls = run_script(tmp_path, "all", RUNS=str(runs), PROCS="2", ITERS="5")
    launches = [c for c in calls if c.startswith("torchrun")]
    assert [c.split("--out ")[1] for c in launches] == [f"{runs}/ppo_ptx_aug", f"{runs}/ppo_noptx_aug"]
    assert all(c.startswith(f"torchrun --standalone --nproc_per_node 2 {tmp_path}/stub-redline train ppo ")
               and "--iterations 5" in c for c in launches)
    assert "--ptx-coef 1" in launches[0] and "--ptx-coef 0" in launches[1]
    # SFT's answers were there: answers only from the two finished runs (judged beside each other), by both judges
    assert sorted(c.split("--out ")[1] for c in calls if c.startswith("generate")) == [
        f"{runs}/test_ppo_noptx_aug_it5.jsonl", f"{runs}/test_ppo_ptx_aug_it5.jsonl"]
    assert sorted(c.split("--out ")[1] for c in calls if c.startswith("evaluate")) == sorted(
        f"{runs}/eval_{run}_it5_{judge}" for run in ("ppo_ptx_aug", "ppo_noptx_aug") for judge in ("oracle", "reward"))


def test_bfloat16_only_where_the_cpu_has_it_natively(tmp_path):
    """On an AVX2-only CPU bf16 trained ~12x slower than float32: there the runs and their answers are float32."""
    for bf16, base, dtype in (("1", True, "bfloat16"), ("0", False, "float32")):
        runs = a_world(tmp_path / bf16, [])
        _, calls = run_script(tmp_path / bf16, "all", RUNS=str(runs), ITERS="5", RUNS_RL="ppo_ptx_aug", BF16=bf16)
        ppo = [c for c in calls if c.startswith("train ppo")]
        assert len(ppo) == 1 and ("--bf16-base" in ppo[0]) is base
        generated = [c for c in calls if c.startswith("generate")]
        assert generated and all(f"--dtype {dtype} " in c for c in generated)


def test_the_runs_themselves_are_judged_before_their_copies(tmp_path):
    runs = a_world(tmp_path, [3, 4])
    _, calls = run_script(tmp_path, "all", RUNS=str(runs), ITERS="5", JUDGE_AT="3", RUNS_RL="ppo_ptx_aug")
    answers = [c.split("--out ")[1] for c in calls if c.startswith("generate")]
    assert answers == [f"{runs}/test_ppo_ptx_aug_it5.jsonl", f"{runs}/test_ppo_ptx_aug_it3.jsonl"]
