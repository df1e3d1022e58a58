"""Peak memory of evaluate's bootstrap interval over many judgments, three ways side by side:

- ``naive``: every resample drawn at once, a (resamples x judgments) matrix of indices and as large a
  one of scores (written here);
- ``256 rows a chunk``: ``evaluate.bootstrap_interval`` before 0ad36d1, 256 resamples at a time
  (the same function with RESAMPLE_CHUNK unbounded);
- ``redline``: ``evaluate.bootstrap_interval`` as it is, RESAMPLE_CHUNK (2**21) indices at a time.

The three draw the same indices from the same generator (its stream does not depend on how it is cut),
so their intervals must agree to the bit: a run where they do not fails. Memory is the peak of numpy's
and Python's allocations during the call (tracemalloc; numpy reports its arrays to it); CPU is
``time.process_time``. Scores are random verdicts (win 1, tie 0.5, loss 0) at a 60% win rate.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bootstrap_memory.py --out benchmarks/results/bootstrap_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from redline import evaluate


def naive_interval(scores: np.ndarray, resamples: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """The percentile bootstrap with every resample drawn at once."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(scores), size=(resamples, len(scores)))
    values = scores[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def chunked_interval(chunk: int):
    def interval(scores: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
        saved, evaluate.RESAMPLE_CHUNK = evaluate.RESAMPLE_CHUNK, chunk
        try:
            return evaluate.bootstrap_interval(scores, resamples, seed)
        finally:
            evaluate.RESAMPLE_CHUNK = saved
    return interval


def measure(interval, scores: np.ndarray, resamples: int, seed: int) -> dict:
    tracemalloc.start()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    cpu = time.process_time()
    low, high = interval(scores, resamples, seed)
    cpu = time.process_time() - cpu
    peak = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    return {"cpu_s": round(cpu, 2), "peak_mib": round(peak / 2**20, 1), "ci95": [low, high]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--judgments", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument("--resamples", type=int, default=2000, help="evaluate's default")
    parser.add_argument("--naive-max-mib", type=float, default=2048,
                        help="the naive case runs only where its two matrices fit in this (it is skipped, with its size, above)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bootstrap_memory.json"))
    args = parser.parse_args()
    if min(args.judgments) < 2 or args.resamples < 1:
        parser.error("a bootstrap needs at least 2 judgments and 1 resample")

    cases = [("naive", naive_interval), ("256 rows a chunk", chunked_interval(sys.maxsize)),
             ("redline", chunked_interval(evaluate.RESAMPLE_CHUNK))]
    for _, interval in cases:  # numpy's first percentile and the like, loaded before anything is measured
        interval(np.array([0.0, 1.0, 0.5]), 10, args.seed)
    rows = []
    for n in args.judgments:
        scores = np.random.default_rng(1).choice([1.0, 0.5, 0.0], size=n, p=[0.55, 0.1, 0.35])
        intervals = set()
        for case, interval in cases:
            naive_mib = 2 * args.resamples * n * 8 / 2**20  # int64 indices and float64 scores, resamples x n each
            if case == "naive" and naive_mib > args.naive_max_mib:
                row = {"case": case, "judgments": n, "resamples": args.resamples, "skipped": True,
                       "peak_mib": round(naive_mib, 1)}
            else:
                row = {"case": case, "judgments": n, "resamples": args.resamples, "skipped": False,
                       **measure(interval, scores, args.resamples, args.seed)}
                intervals.add(tuple(row["ci95"]))
            print(json.dumps(row), file=sys.stderr)
            rows.append(row)
        if len(intervals) != 1:
            sys.exit(f"the intervals of {n} judgments differ: {sorted(intervals)}")
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "numpy": np.__version__}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "resample_chunk": evaluate.RESAMPLE_CHUNK, "rows": rows},
                                   indent=2) + "\n")
    print("| judgments | resamples | case | CPU s | peak MiB | 95% interval |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if r["skipped"]:
            print(f"| {r['judgments']} | {r['resamples']} | {r['case']} | not run | {r['peak_mib']} (its matrices) | |")
        else:
            print(f"| {r['judgments']} | {r['resamples']} | {r['case']} | {r['cpu_s']} | {r['peak_mib']} | "
                  f"[{r['ci95'][0]:.6f}, {r['ci95'][1]:.6f}] |")


if __name__ == "__main__":
    main()
