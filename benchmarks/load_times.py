"""How long a model takes to load: the embedded model cold (dequantizing the GGUF) against cached
(safetensors), and tiny-random; against the naive way, `from_pretrained(gguf_file=...)` every time.

Each measurement runs in a fresh Python process so nothing is warm that a user's would not be. A
load counts until the first forward pass returns, since safetensors maps weights lazily.

    python benchmarks/load_times.py --repeats 3 --out benchmarks/results/load_times.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
from redline import models
t1 = time.perf_counter()
how = sys.argv[1]
if how == "naive-gguf":
    from transformers import AutoModelForCausalLM
    gguf = models.embedded_gguf_path()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
else:
    model = models.load_causal_lm(how, device="cpu")
t2 = time.perf_counter()
with torch.no_grad():
    model(torch.tensor([[1, 2, 3, 4]]))
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_forward_s": t3 - t2}))
"""


def measure(how: str, cache: str) -> dict:
    env = {**os.environ, "REDLINE_CACHE": cache, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, how], env=env, capture_output=True, text=True)
    if out.returncode:  # say why (a missing GGUF, a model that does not load), not a CalledProcessError naming no reason
        sys.exit(f"loading {how!r} failed:\n{out.stderr[-3000:]}")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["ready_s"] = row["load_s"] + row["first_forward_s"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/load_times.json"))
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: a row needs at least one load")

    rows = []
    with tempfile.TemporaryDirectory() as cache:
        # (label, how, repeats, whether a first load, not counted, fills the cache the label says is there)
        cases = [("embedded, cold (empty cache: dequantize + write cache)", "embedded", 1, False)]
        cases += [("embedded, cached (safetensors)", "embedded", args.repeats, False)]  # the cold run filled it
        cases += [("tiny-random, cached", "tiny-random", args.repeats, True)]
        cases += [("naive: from_pretrained(gguf_file=...)", "naive-gguf", args.repeats, False)]
        for label, how, repeats, warm in cases:
            if warm:
                measure(how, cache)
            runs = [measure(how, cache) for _ in range(repeats)]
            row = {"case": label, "runs": repeats}
            for key in ("import_s", "load_s", "first_forward_s", "ready_s"):
                row[key] = round(statistics.median(r[key] for r in runs), 2)
            rows.append(row)
            print(f"{label}: ready in {row['ready_s']} s", file=sys.stderr)

    header = f"| case | runs | import s | load s | first forward s | ready s |\n| --- | --- | --- | --- | --- | --- |"
    print(header)
    for r in rows:
        print(f"| {r['case']} | {r['runs']} | {r['import_s']} | {r['load_s']} | {r['first_forward_s']} | {r['ready_s']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    args.out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
