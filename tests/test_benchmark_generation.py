"""benchmarks/generation.py on tiny-random: the budgets workload (revise's per-item caps) called both
ways gives the same completions, and the methods that do not apply to a workload are skipped by name
(the embedded-model run is the benchmark; this keeps it from rotting)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_budgets_in_one_call_and_one_call_per_budget_give_the_same_completions(tmp_path):
    out = tmp_path / "generation.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "generation.py"), "--model", "tiny-random",
                           "--workload", "budgets", "--items", "4", "--threads", "1", "--out", str(out),
                           "--methods", "engine,engine-grouped,batched"],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    one, grouped, batched = json.loads(out.read_text())["runs"]
    assert one["calls"] == 1 and grouped["calls"] > 1  # the workload's budgets differ
    assert one["completions_sha256"] == grouped["completions_sha256"] and one["tokens"] == grouped["tokens"]
    assert one["finish_reasons"]["length"] == 4  # EOS ignored: every item generates its own budget
    assert batched["skipped"] == "the budgets workload is the engines'"
    assert "| budgets | engine-grouped | 4 |" in done.stdout and "1.00×" in done.stdout
