"""scripts/gpu_check.py in its CPU mode at tiny sizes (so the GPU check cannot rot), its wheel
installer, and the timeout that kills a hung part."""

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_tiny_run_writes_every_part(tmp_path):
    out = tmp_path / "out"
    (tmp_path / "none").mkdir()  # a wheels folder with no wheels in it
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), str(out), "--cpu", "--tiny", "--wheels", str(tmp_path / "none")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    r = json.loads((out / "results.json").read_text())
    parts = r["parts"]
    assert r["device"] == "cpu" and r["tiny"] and set(parts) == {"wheels", "env", "tests", "engine:tiny", "sft:tiny", "ppo:tiny"}
    assert parts["wheels"]["status"] == "skipped" and "no wheels in" in parts["wheels"]["reason"]
    assert parts["env"]["cuda_available"] is False and parts["env"]["libraries"]["torch"]
    # Without CUDA every gpu test is collected and skips, each with its reason.
    tests = parts["tests"]
    assert tests["status"] == "ok" and tests["counts"]["skipped"] == len(tests["tests"]) >= 8
    assert all("needs CUDA" in t["message"] for t in tests["tests"].values())
    assert (out / "gpu_tests.xml").exists() and (out / "log.txt").exists()

    engine = parts["engine:tiny"]
    assert engine["status"] == "ok" and engine["layers"] == 2
    expected = engine["batch"] * engine["max_new_tokens"]
    for method in ("generate", "engine", "engine_not_exact"):
        assert engine[method]["tokens"] == expected and engine[method]["tokens_per_s"] > 0
    assert engine["engine_vs_generate"] > 0

    sft = parts["sft:tiny"]
    assert sft["status"] == "ok" and sft["steps"] == 2 and sft["tokens"] > 0 and sft["tokens_per_s"] > 0

    ppo = parts["ppo:tiny"]
    assert ppo["status"] == "ok" and [i["iteration"] for i in ppo["iterations"]] == [1, 2]
    assert all(i[k] > 0 for i in ppo["iterations"] for k in ("generate_s", "evaluate_s", "train_s"))


def _wheel(folder: Path, name: str, version: str = "1.0") -> Path:
    """A minimal pure-Python wheel holding one module ``name`` that defines ``VALUE = 42``."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {f"{name}.py": "VALUE = 42\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{f},,\n" for f in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for f, text in files.items():
            z.writestr(f, text)
    return path


def test_wheels_install_what_is_missing_and_leave_installed_packages_alone(gpu_check, tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "redline_probe_pkg")
    _wheel(wheels, "pytest", "0.0.1")  # installed here: must not shadow the real one
    site = tmp_path / "site"
    r = gpu_check.install_wheels(wheels, site)
    assert r["status"] == "ok", r
    assert r["installed"] == ["redline_probe_pkg-1.0-py3-none-any.whl"]
    assert "pytest-0.0.1-py3-none-any.whl" in r["already_installed"]
    assert (site / "redline_probe_pkg.py").exists() and not (site / "pytest.py").exists()
    assert gpu_check.install_wheels(tmp_path / "absent", site)["status"] == "skipped"
    (tmp_path / "empty").mkdir()  # was "ok", installing nothing
    assert gpu_check.install_wheels(tmp_path / "empty", site) == {"status": "skipped", "folder": str(tmp_path / "empty"),
                                                                  "reason": f"no wheels in {tmp_path / 'empty'}"}


def test_a_hung_part_is_killed_at_its_timeout(gpu_check, tmp_path):
    with open(tmp_path / "log", "w") as log:
        code, seconds = gpu_check.run_child([sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ), 1, log)
    assert code is None and seconds < 30


def test_an_unknown_size_is_refused_before_any_part_runs(gpu_check, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        gpu_check.main([str(tmp_path / "out"), "--cpu", "--sizes", "smollm2-135m,llama1b", "--parts", "engine"])
    assert e.value.code == 2 and "unknown sizes: llama1b" in capsys.readouterr().err
    assert not (tmp_path / "out" / "results.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--parts", ","], "--parts ',': no part to run"),  # ran nothing and exited 0
    (["--sizes", "tiny, llama1b"], "unknown sizes: llama1b"),  # each size stripped, as each part is
    (["--budget", "10"], "--budget 10: below the 15 s a part needs to start"),  # every part skipped, exit 0
    (["--wheels", "no-such-folder"], "--wheels no-such-folder: not a folder"),  # TRL's parts skipped, exit 0
])
def test_arguments_that_would_run_nothing_or_skip_quietly_are_refused_before_any_part_runs(gpu_check, tmp_path, capsys,
                                                                                          monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        gpu_check.main([str(tmp_path / "out"), "--cpu", *args])
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing made before the refusal


def test_an_out_that_is_a_file_is_refused_in_one_line(gpu_check, tmp_path, capsys):
    """OUT an existing file was a FileExistsError traceback."""
    (tmp_path / "out").write_text("keep me")
    with pytest.raises(SystemExit) as e:
        gpu_check.main([str(tmp_path / "out"), "--cpu", "--parts", "env"])
    assert e.value.code == 2 and "exists and is not a folder" in capsys.readouterr().err
    assert (tmp_path / "out").read_text() == "keep me"


def test_a_size_or_part_named_twice_runs_once(gpu_check, tmp_path, monkeypatch):
    """--sizes tiny,tiny ran each speed part twice, the second overwriting the first's entry, on the budget."""
    ran = []
    monkeypatch.setattr(gpu_check, "run_child", lambda cmd, env, timeout, log: (ran.append(cmd), (1, 0.0))[1])
    gpu_check.main([str(tmp_path / "out"), "--cpu", "--parts", "engine,engine", "--sizes", "tiny,tiny",
                    "--wheels", str(tmp_path)])
    assert len(ran) == 1


def test_a_nan_is_written_as_null_so_results_json_is_json(gpu_check, tmp_path, monkeypatch):
    """A part's NaN (a bf16 loss that diverged) was written into results.json as NaN, which strict JSON readers refuse."""
    import argparse

    monkeypatch.setattr(gpu_check, "part_env", lambda args: {"first_loss": float("nan"), "losses": [1.5, float("inf")]})
    gpu_check.child(argparse.Namespace(part="env", result=tmp_path / "env.json"))
    assert json.loads((tmp_path / "env.json").read_text(), parse_constant=pytest.fail) == {
        "first_loss": None, "losses": [1.5, None], "status": "ok"}


def test_the_parts_temporary_files_are_removed_when_the_check_ends(gpu_check, tmp_path, monkeypatch):
    """Each part's models (0.5-4 GB at the real sizes) and the wheels' folder were left in /tmp by every run, the default
    suite's included; the children's TMPDIR is now inside the check's own folder, removed at the end."""
    seen = []

    def part(cmd, env, timeout, log):  # a part that leaves a model behind, as a killed one does
        work = Path(env["TMPDIR"]) / "redline-gpu-ppo-x"
        work.mkdir()
        (work / "model.safetensors").write_bytes(b"0" * 10)
        seen.append(work)
        return None, 1.0

    monkeypatch.setattr(gpu_check, "run_child", part)
    assert gpu_check.main([str(tmp_path / "out"), "--cpu", "--tiny", "--parts", "ppo", "--wheels", str(tmp_path)]) == 1
    assert len(seen) == 1 and not seen[0].exists() and not seen[0].parent.parent.exists()  # TMPDIR and the site: gone
    assert json.loads((tmp_path / "out" / "results.json").read_text())["parts"]["ppo:tiny"]["status"] == "timeout"
