"""benchmarks/ppo.py on tiny-random: each case runs in its own process with its own settings, and the
table and JSON carry every phase (the embedded-model run is the benchmark; this keeps it from rotting)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def benchmark(out: Path, max_new_tokens: str, cases: str) -> subprocess.CompletedProcess:
    """benchmarks/ppo.py on tiny-random, one iteration a case, one thread."""
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ppo.py"), "--model", "tiny-random", "--iterations",
                           "1", "--max-new-tokens", max_new_tokens, "--out", str(out), "--cases", cases],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)


def test_cases_run_side_by_side_and_report_each_phase(tmp_path):
    out = tmp_path / "ppo.json"
    done = benchmark(out, "4", "plain:;recomputed:rollout_logprobs=false,ppo_epochs=1")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["case"] for r in rows] == ["plain", "recomputed"]
    assert rows[1]["overrides"] == {"rollout_logprobs": "false", "ppo_epochs": "1"}
    for r in rows:
        assert all(r[k] > 0 for k in ("generate_s", "score_s", "evaluate_s", "train_s")) and r["peak_mib"] > 100
    assert "| plain | working tree | defaults |" in done.stdout and "1.00×" in done.stdout


def test_an_unknown_setting_fails_the_case_by_name(tmp_path):
    done = benchmark(tmp_path / "x.json", "2", "bad:no_such_field=1")
    assert done.returncode != 0 and "no field 'no_such_field'" in done.stderr


def test_a_case_may_change_a_setting_the_benchmark_sets_for_every_case(tmp_path):
    out = tmp_path / "ppo.json"
    done = benchmark(out, "2", "small:batch_size=4,minibatch_size=4,micro_batch_size=2")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(out.read_text())["rows"][0]["iterations"][0]["episodes"] == 4
