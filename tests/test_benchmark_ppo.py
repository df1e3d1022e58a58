"""benchmarks/ppo.py on tiny-random: each case runs in its own process with its own settings, and the
table and JSON carry every phase (the embedded-model run is the benchmark; this keeps it from rotting)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_two_cases_of_one_name_are_refused_before_anything_runs(tmp_path):
    # a name is the case's run folder: the second case resumed the first's finished run and reported its timings
    done = benchmark(tmp_path / "x.json", "2", "a:;b:;a:bf16_base=true")
    assert done.returncode != 0 and "'a' names more than one case" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "x.json").exists()
    empty = benchmark(tmp_path / "x.json", "2", " ; ")
    assert empty.returncode != 0 and "no case" in empty.stderr and "Traceback" not in empty.stderr


def test_a_model_that_does_not_load_names_the_reason_not_a_called_process_error(tmp_path, monkeypatch, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("ppo_memory", ROOT / "benchmarks" / "ppo_memory.py")
    ppo_memory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ppo_memory)
    failed = subprocess.CompletedProcess([], 1, stdout="", stderr="redline: no-such-model: no such model or path\n")
    monkeypatch.setattr(ppo_memory.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(SystemExit) as stop:
        ppo_memory.make_reward_run("no-such-model", tmp_path)
    assert "no-such-model: its reward run could not be made" in str(stop.value) and "no such model" in str(stop.value)
