"""benchmarks/training.py on tiny-random: ``+drop`` trains with LoRA dropout and the default without
(the losses part once the adapters are non-zero), and a misspelt case is refused before anything trains
(the embedded-model run is the benchmark; this keeps it from rotting)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path, cases: str, steps: int = 3):
    out = tmp_path / "training.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "training.py"), "--model", "tiny-random",
                           "--steps", str(steps), "--threads", "1", "--cases", cases, "--out", str(out)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    return done, out


def test_drop_trains_with_dropout_and_the_default_without(tmp_path):
    done, out = _run(tmp_path, "fp32+sliced:1x2,fp32+sliced+drop:1x2,fp32+sliced+nodrop:1x2")
    assert done.returncode == 0, done.stderr[-2000:]
    default, drop, nodrop = json.loads(out.read_text())["rows"]
    assert default["losses"] == nodrop["losses"]  # the default is no dropout, to the bit
    assert drop["losses"][0] == default["losses"][0]  # LoRA's B starts at zero: dropout cannot show yet
    assert drop["losses"][1:] != default["losses"][1:]


def test_a_misspelt_case_is_refused_before_training(tmp_path):
    done, out = _run(tmp_path, "fp32+sliced:1x2,fp32+nodorp:1x2")
    assert done.returncode != 0 and "'fp32+nodorp:1x2'" in done.stderr and "+nodrop" in done.stderr
    assert not out.exists()
