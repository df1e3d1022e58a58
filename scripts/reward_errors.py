"""Where a reward model errs on simulated rankings: its accuracy split by what separates the two answers of a pair
(RESULTS "InstructGPT", twenty-fifth session: why `models/reward` stops at 83.5% against the 85% goal).

Reads the scores `redline evaluate rankings` writes (OUT/scores.jsonl, each ranking with its responses' scores and the
simulated world's meta), and for every labelled-decisive comparison asks the oracle (redline.simulate.oracle) which
of its checks the two answers differ on: an instruction one meets and the other breaks, or a penalty (short,
repetition, off topic, copied) that weighs on one more than the other. Three splits, each with the reward model's
accuracy against the labels (the goal's figure), against the oracle, and the labels' own accuracy against the oracle
on the same pairs (the ceiling of learning from them):

    redline evaluate rankings --model models/reward --data data/simulated/rankings.jsonl --held-out-of models/reward --out runs/rm_heldout
    python scripts/reward_errors.py runs/rm_heldout/scores.jsonl benchmarks/results/reward_errors.json

- by difference: pairs separated by exactly one check, named by it ("several" when more, "none" when the checks
  agree and only the penalties' size differs);
- by how many checks separate them (0, 1, 2, 3 or more);
- by the gap in oracle quality between the two answers;
- by how the two answers were made (the world's policies: sample, hot, partial, fixed; "edit" when one is the
  other's repair).

And the planted check behind the reading (can the model learn one such check at all, given only pairs it separates?):

    python scripts/reward_errors.py pairs data/simulated/rankings.jsonl keyword_include,keyword_avoid runs/kw
    redline train reward --model embedded --data runs/kw/train.jsonl --eval-data runs/kw/eval.jsonl --epochs 3 ...

writes, as preference records, every pair of a ranking's answers that the oracle orders and that exactly one of the
named checks separates (the better answer chosen, whatever the annotator said), 30% of the prompts held out.

Our own few lines over the oracle; nothing here is a library's job.
"""

from __future__ import annotations

import itertools
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

from redline.records import Ranking
from redline.simulate.oracle import check_all
from redline.train.reward import oracle_qualities, read_comparisons, score_hit

PENALTY_STEP = 0.05  # a penalty "differs" when its multipliers differ by more than this


def separators(meta: dict, prompt: str, a: str, b: str) -> list[str]:
    """The oracle's checks on which answers ``a`` and ``b`` differ: instruction types met by one only, and penalties
    whose multipliers differ by more than PENALTY_STEP."""
    ra, rb = check_all(meta, a, prompt), check_all(meta, b, prompt)
    out = [ca.instruction.type for ca, cb in zip(ra.checks, rb.checks) if ca.met != cb.met]
    out += [name for name in ra.penalties if abs(ra.penalties[name] - rb.penalties.get(name, 1.0)) > PENALTY_STEP]
    return out


def gap_bin(gap: float) -> str:
    return "≤ 0.1" if gap <= 0.1 else "0.1–0.3" if gap <= 0.3 else "0.3–0.6" if gap <= 0.6 else "> 0.6"


def made(meta: dict, i: int, j: int) -> str:
    edit = meta.get("edit_of") or []
    if (i < len(edit) and edit[i] == j) or (j < len(edit) and edit[j] == i):
        return "edit (one repairs the other)"
    policy = meta.get("policy") or []
    return " / ".join(sorted((policy[i], policy[j]))) if len(policy) > max(i, j) else "unknown"


def pairs(path: str):
    """Each labelled-decisive comparison: (its keys by split, model right vs label, oracle-decisive?, model right vs
    oracle, labels right vs oracle)."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            record = json.loads(line)
            meta, ranks, scores = record.get("meta") or {}, record["ranks"], record["scores"]
            q = oracle_qualities(Ranking(prompt=record["prompt"], responses=record["responses"], ranks=ranks, meta=meta))
            if q is None:
                raise SystemExit(f"{path}:{n}: meta has no instructions (what the oracle reads); this reads simulated rankings")
            for i, j in itertools.combinations(range(len(ranks)), 2):
                if ranks[i] == ranks[j]:
                    continue
                w, l = (i, j) if ranks[i] < ranks[j] else (j, i)
                sep = separators(meta, record["prompt"], record["responses"][w], record["responses"][l])
                keys = {"difference": sep[0] if len(sep) == 1 else "none" if not sep else "several",
                        "differences": str(min(len(sep), 3)).replace("3", "3 or more"),
                        "oracle gap": gap_bin(abs(q[w] - q[l])), "made": made(meta, w, l)}
                decisive = q[w] != q[l]
                better, worse = (w, l) if q[w] >= q[l] else (l, w)
                yield keys, score_hit(scores, w, l), decisive, score_hit(scores, better, worse) if decisive else None, float(better == w)


def main(scores_path: str, out: str | None = None) -> None:
    table: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0] * 5))
    for keys, right, decisive, oracle_right, labels_right in pairs(scores_path):
        for split in list(keys) + ["all"]:
            row = table[split][keys.get(split, "all")]
            row[0] += 1
            row[1] += right
            if decisive:
                row[2] += 1
                row[3] += oracle_right
                row[4] += labels_right
    result = {}
    for split, rows in table.items():
        result[split] = {key: {"comparisons": int(r[0]), "accuracy": round(r[1] / r[0], 4),
                               "oracle_comparisons": int(r[2]),
                               "oracle_accuracy": round(r[3] / r[2], 4) if r[2] else None,
                               "labels_vs_oracle": round(r[4] / r[2], 4) if r[2] else None}
                         for key, r in sorted(rows.items(), key=lambda kv: -kv[1][0])}
    pct = lambda x: "–" if x is None else f"{100 * x:.1f}%"
    for split in ("all", "differences", "difference", "oracle gap", "made"):
        print(f"\n| by {split} | decisive comparisons | right against the labels | oracle-decisive | right against the oracle | the labels against the oracle |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for key, r in result[split].items():
            print(f"| {key} | {r['comparisons']} | {pct(r['accuracy'])} | {r['oracle_comparisons']} | "
                  f"{pct(r['oracle_accuracy'])} | {pct(r['labels_vs_oracle'])} |")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps({"scores": scores_path, **result}, indent=2, ensure_ascii=False) + "\n")


def write_pairs(rankings: str, checks: str, out: str, held_out: float = 0.3, seed: int = 0) -> None:
    """Preference records of the pairs exactly one of ``checks`` (comma-separated) separates, the oracle's better
    answer chosen; the prompts split ``held_out`` / rest by ``seed`` into OUT/eval.jsonl and OUT/train.jsonl."""
    wanted, rows = set(checks.split(",")), []
    for r in read_comparisons(rankings):
        q = oracle_qualities(r)
        if q is None:
            raise SystemExit(f"{rankings}: ranking {r.id} has no meta.instructions; this reads simulated rankings")
        for i, j in itertools.combinations(range(len(r.responses)), 2):
            sep = separators(r.meta, r.prompt, r.responses[i], r.responses[j]) if q[i] != q[j] else []
            if len(sep) == 1 and sep[0] in wanted:
                w, l = (i, j) if q[i] > q[j] else (j, i)
                meta = {"topic": r.meta["topic"], "instructions": r.meta["instructions"], "separator": sep[0],
                        "oracle_quality": [round(q[w], 4), round(q[l], 4)]}
                rows.append({"prompt": r.prompt, "chosen": r.responses[w], "rejected": r.responses[l], "meta": meta})
    prompts = sorted({row["prompt"] for row in rows})
    random.Random(seed).shuffle(prompts)
    test = set(prompts[: int(held_out * len(prompts))])
    Path(out).mkdir(parents=True, exist_ok=True)
    for name, part in (("train", [x for x in rows if x["prompt"] not in test]), ("eval", [x for x in rows if x["prompt"] in test])):
        Path(out, f"{name}.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in part))
        print(f"{out}/{name}.jsonl: {len(part)} pairs on {len({x['prompt'] for x in part})} prompts")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "pairs":
        write_pairs(*sys.argv[2:])
    elif len(sys.argv) in (2, 3) and sys.argv[1] != "pairs":
        main(*sys.argv[1:])
    else:
        raise SystemExit(__doc__)
