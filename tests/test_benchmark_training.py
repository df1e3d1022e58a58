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


def test_the_reward_workload_scores_a_row_at_a_time_to_the_padded_losses(tmp_path):
    out = tmp_path / "reward.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "training.py"), "--workload", "reward", "--model",
                           "tiny-random", "--steps", "2", "--threads", "1", "--cases", "fp32+padded:2x1,fp32:2x1",
                           "--out", str(out)], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    padded, unpadded = json.loads(out.read_text())["rows"]
    assert padded["tokens"] == unpadded["tokens"] > 0  # the same real tokens, read two ways
    assert all(abs(a - b) < 1e-4 for a, b in zip(padded["losses"], unpadded["losses"]))
    refused, _ = _run(tmp_path, "fp32+padded:1x2")  # the critic workload has no padded mode
    assert refused.returncode != 0 and "+padded is the reward workload's" in refused.stderr


def test_threads_and_a_competitor_beside_each_case(tmp_path):
    # two children, not the four of "--beside 0,1": each pays ~20 s of imports, the training itself is a second
    out = tmp_path / "threads.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "training.py"), "--model", "tiny-random",
                           "--steps", "2", "--threads", "1", "--beside", "1",
                           "--cases", "fp32+sliced:1x2,fp32+sliced+passive:1x2@2", "--out", str(out)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["case"], r["beside"]) for r in rows] == [("fp32+sliced:1x2", 1), ("fp32+sliced+passive:1x2@2", 1)]
    assert all(r["competitor_gflops"] > 0 for r in rows)  # the competitor ran, and said what it got
    # threads and the wait policy change the speed, not what is learnt
    assert rows[0]["losses"] and all(abs(a - b) < 1e-4 for a, b in zip(rows[1]["losses"], rows[0]["losses"]))
    refused, _ = _run(tmp_path, "fp32+sliced:1x2@two")
    assert refused.returncode != 0 and "'fp32+sliced:1x2@two'" in refused.stderr and "@THREADS" in refused.stderr


def test_the_reward_workload_counts_the_tokens_of_the_steps_it_trains_only(tmp_path):
    # every ranking the same length (two-digit items, the same answers): each trained batch holds the same tokens,
    # so twice the steps read twice the tokens; the data loader's batch collated ahead and never trained must not count
    rankings = tmp_path / "rankings.jsonl"
    rankings.write_text("".join(json.dumps({"prompt": f"Write about item {i}.", "responses": ["A fine answer.", "bad"],
                                            "ranks": [0, 1]}) + "\n" for i in range(10, 30)))
    tokens = []
    for steps in (1, 2):
        out = tmp_path / f"reward-{steps}.json"
        done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "training.py"), "--workload", "reward", "--model",
                               "tiny-random", "--data", str(rankings), "--steps", str(steps), "--threads", "1",
                               "--cases", "fp32:2x1", "--out", str(out)], capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        tokens.append(json.loads(out.read_text())["rows"][0]["tokens"])
    assert tokens[0] > 0 and tokens[1] == 2 * tokens[0]
