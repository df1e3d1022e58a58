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
    # engine@2: two items a call; the same bits in float32 however the calls are formed
    out = tmp_path / "generation.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "generation.py"), "--model", "tiny-random",
                           "--workload", "budgets", "--items", "4", "--threads", "1", "--out", str(out),
                           "--methods", "engine,engine-grouped,engine@2,batched"],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    one, grouped, halves, batched = json.loads(out.read_text())["runs"]
    assert one["calls"] == 1 and grouped["calls"] > 1 and halves["calls"] == 2  # the workload's budgets differ
    assert one["completions_sha256"] == grouped["completions_sha256"] == halves["completions_sha256"]
    assert one["tokens"] == grouped["tokens"] and one["finish_reasons"]["length"] == 4  # EOS ignored: each its budget
    assert batched["skipped"] == "the budgets workload is the engines'"
    row = next(line for line in done.stdout.splitlines() if line.startswith("| budgets | engine | 4 |"))
    assert row.endswith(f"| {one['tokens_per_s'] / grouped['tokens_per_s']:.2f}× |")  # against the grouped way


def test_batched_generate_counts_to_the_first_of_several_end_tokens(monkeypatch):
    import importlib.util

    import redline.models
    from redline.models import load_causal_lm

    spec = importlib.util.spec_from_file_location("generation_benchmark", ROOT / "benchmarks" / "generation.py")
    generation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generation)
    model = load_causal_lm("tiny-random", "float32", "cpu")
    model.generation_config.eos_token_id = [2, 7]  # as a model that ends a turn on either of two tokens says it
    monkeypatch.setattr(redline.models, "load_causal_lm", lambda *a, **k: model)
    prompts, settings = generation.workload("rollout", 2)
    result = generation.run_hf_generate("tiny-random", prompts, {**settings, "max_new_tokens": 4}, batch=2)
    assert result["items"] == 2 and 2 <= result["tokens"] <= 8


def _module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("generation_benchmark", ROOT / "benchmarks" / "generation.py")
    generation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generation)
    return generation


def test_a_method_that_crashes_is_a_failed_row_and_the_run_exits_1(tmp_path, monkeypatch, capsys):
    import pytest

    generation = _module()
    crashed = subprocess.CompletedProcess([], 1, stdout="")
    monkeypatch.setattr(generation.subprocess, "run", lambda *a, **k: crashed)
    out = tmp_path / "g.json"
    with pytest.raises(SystemExit) as stop:
        generation.main(["--workload", "rollout", "--methods", "engine", "--out", str(out)])
    assert "failed: rollout/engine" in str(stop.value)
    [run] = json.loads(out.read_text())["runs"]
    assert run["failed"] == "exit code 1" and "skipped" not in run  # a crash is not a skip
    assert "| rollout | engine | FAILED: exit code 1 |" in capsys.readouterr().out


def test_bad_methods_and_sizes_are_refused_before_any_method_runs(tmp_path, monkeypatch, capsys):
    import pytest

    generation = _module()
    monkeypatch.setattr(generation.subprocess, "run", lambda *a, **k: pytest.fail("a method ran"))
    for argv, said in ((["--methods", "engine,engin"], "'engin' is not METHOD[@N]"),
                       (["--methods", "engine@0"], "'engine@0' is not METHOD[@N]"),
                       (["--items", "0"], "--items 0: at least 1"), (["--naive-items", "0"], "--naive-items 0"),
                       (["--methods", ","], "--methods: no method")):
        with pytest.raises(SystemExit):
            generation.main([*argv, "--out", str(tmp_path / "g.json")])
        assert said in capsys.readouterr().err
    assert not (tmp_path / "g.json").exists()


def test_llamacpp_gets_torchs_default_threads_as_every_other_method(monkeypatch):
    import types

    import torch

    import redline.models

    generation, made = _module(), {}

    class Llama:
        def __init__(self, **kwargs):
            made.update(kwargs)

        def create_completion(self, text, max_tokens, **kwargs):
            return {"usage": {"completion_tokens": max_tokens, "prompt_tokens": 3}}

    monkeypatch.setitem(sys.modules, "llama_cpp", types.SimpleNamespace(Llama=Llama))
    monkeypatch.setattr(redline.models, "embedded_gguf_path", lambda: Path("model.gguf"))
    real = redline.models.load_tokenizer
    monkeypatch.setattr(redline.models, "load_tokenizer", lambda name: real("tiny-random"))  # the embedded one's
    prompts, settings = generation.workload("rollout", 2)
    result = generation.run_llamacpp("embedded", prompts, settings, threads=0)
    assert made["n_threads"] == torch.get_num_threads() and result["tokens"] == 2 * 128
