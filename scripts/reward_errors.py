"""Where a reward model errs on simulated rankings: its accuracy split by what separates the two answers of a pair
(RESULTS "InstructGPT", twenty-fifth session: why `models/reward` stops at 83.5% against the 85% goal).

Reads the scores `redline evaluate rankings` writes (OUT/scores.jsonl, each ranking with its responses' scores and the
simulated world's meta), and for every labelled-decisive comparison asks the oracle (redline.simulate.oracle) which
of its checks the two answers differ on: an instruction one meets and the other breaks, or a penalty (short,
repetition, off topic, copied) that weighs on one more than the other. Four splits, each with the reward model's
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

And a remedy (twenty-seventh session): rankings whose answers differ by one content check, for a reward model to go
on with, as scripts/reward_habits.py's augment did for the habits. COUNT of the rankings the run trained on, each with
up to two of its answers copied with one broken content check fixed alone (a keyword, a word or sentence count,
paragraphs, sections, bullets, highlights, placeholders), and for a keyword a decoy beside it (the fixer's sentence
naming a word the task does not), ORIGINALS more of its training rankings as they were, its held-out ones untouched:

    python scripts/reward_errors.py augment data/simulated/rankings.jsonl models/reward COUNT runs/caug ORIGINALS
    redline simulate rank --responses runs/caug/responses_0.jsonl,... --out runs/caug/rankings.jsonl
    cat runs/caug/rankings.jsonl runs/caug/originals.jsonl > runs/caug/train.jsonl     # what to go on with

Our own few lines over the oracle; nothing here is a library's job.
"""

from __future__ import annotations

import difflib
import itertools
import json
import random
import re
import sys
from collections import defaultdict
from pathlib import Path

from redline.records import Ranking
from redline.simulate.instructions import _same_case
from redline.simulate.oracle import check_all
from redline.simulate.text import count_word
from redline.train.reward import oracle_qualities, read_comparisons, score_hit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reward_habits import numbered  # noqa: E402  (a file's records by line, each refused by file, line and field)

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
    for n, record in numbered(path, "prompt", "responses", "ranks", "scores"):
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
    if out and Path(out).is_dir():  # found before the oracle reads every pair, not when writing after it
        raise SystemExit(f"{out} is a folder: give the path of the JSON file to write")
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
    if not table:
        raise SystemExit(f"{scores_path}: no comparison the labels decide (every ranking all tied, or none): nothing to split")
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


# the checks the model must read a word or a count of the prompt for (RESULTS: 67.2% right where one of them alone
# separates two answers, against 92–100% for an answer's look)
CONTENT = ("keyword_include", "keyword_avoid", "keyword_frequency", "words_at_most", "words_at_least",
           "sentences_at_most", "sentences_at_least", "paragraphs_exact", "sections", "bullets_exact",
           "highlights_at_least", "placeholders")
KEYWORD_FIXES = ("keyword_include", "keyword_frequency")  # fixes that add sentences naming the keyword


def named_words(meta: dict) -> set[str]:
    """Every keyword a task's instructions name, lowercased."""
    out = set()
    for inst in meta["instructions"]:
        out.update(k.lower() for k in inst.get("keywords") or [])
        if inst.get("keyword"):
            out.add(inst["keyword"].lower())
    return out


def swap_added(before: str, after: str, word: str, other: str) -> str:
    """``after`` with ``word`` replaced by ``other`` (its case kept) where ``after`` added text to ``before`` only."""
    a, b = re.split(r"(\s+)", before), re.split(r"(\s+)", after)
    out = []
    for tag, _, _, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        part = "".join(b[j1:j2])
        if tag in ("insert", "replace"):
            part = re.sub(rf"\b{re.escape(word)}\b", lambda m: _same_case(m.group(0), other), part, flags=re.IGNORECASE)
        out.append(part)
    return "".join(out)


def content_edits(pool: list[str]):
    """``edits`` for reward_habits.augment_with: up to two of a ranking's answers that break a content check, each
    copied with that check alone fixed (the oracle's fixer, told to keep every other instruction as it was; kept only
    where the oracle finds that check and nothing else between the copy and its answer). Where the fix added
    sentences naming a keyword, a decoy too: the same copy with that keyword swapped for one the task does not name
    (drawn from ``pool``), which the oracle must find no different from the answer it was made from, so a reward
    model cannot learn the fixer's sentences in place of the keyword."""
    from redline.simulate.instructions import fix_all, parse_instructions

    added: dict[str, int] = defaultdict(int)

    def edits(row: dict, rng: random.Random) -> list[tuple[int, str, str]]:
        meta, prompt, texts = row["meta"], row["prompt"], row["responses"]
        instructions = parse_instructions(meta["instructions"])
        broken = [(i, c.instruction) for i, text in enumerate(texts) for c in check_all(meta, text, prompt).checks
                  if not c.met and c.instruction.type in CONTENT]
        rng.shuffle(broken)
        out, used = [], set()
        for i, inst in broken:
            if i in used or len(used) == 2:
                continue
            fixed = fix_all(instructions, texts[i], meta["topic"], only=[inst])
            if separators(meta, prompt, fixed, texts[i]) != [inst.type]:
                continue
            used.add(i)
            out.append((i, fixed, f"fix_{inst.type}"))
            added[f"fix_{inst.type}"] += 1
            if inst.type in KEYWORD_FIXES:
                named = named_words(meta)
                words = [w for w in pool if w not in named and not count_word(texts[i], w)]
                decoy = fixed
                for word in inst.keywords or (inst.keyword,):
                    if words:
                        decoy = swap_added(texts[i], decoy, word, rng.choice(words))
                if not separators(meta, prompt, decoy, texts[i]) and separators(meta, prompt, fixed, decoy) == [inst.type]:
                    out.append((i, decoy, f"decoy_{inst.type}"))
                    added[f"decoy_{inst.type}"] += 1
        return out

    return edits, lambda: "content edits added: " + ", ".join(f"{k} {v}" for k, v in sorted(added.items()))


def augment(rankings: str, reward_run: str, count: str, out: str, originals: str = "0") -> None:
    """Rankings whose answers differ by one content check, for a reward model to go on with (the next thing RESULTS'
    twenty-fifth session named): reward_habits.augment_with over ``content_edits``; then `redline simulate rank`."""
    from reward_habits import augment_with

    pool = sorted({w for r in read_comparisons(rankings) for w in named_words(r.meta or {"instructions": []})})
    edits, described = content_edits(pool)
    augment_with(rankings, reward_run, count, out, edits, described, originals)


COMMANDS = {"pairs": (write_pairs, 3, 3), "augment": (augment, 4, 5)}

if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command in ("-h", "--help"):  # it was read as the scores file: a FileNotFoundError traceback
        print(__doc__)
        raise SystemExit(0)
    from redline.records import RecordError

    try:  # a rankings file `train reward`'s reader refuses: its one line per bad record, not a traceback
        if command in COMMANDS and COMMANDS[command][1] <= len(sys.argv) - 2 <= COMMANDS[command][2]:
            COMMANDS[command][0](*sys.argv[2:])
        elif len(sys.argv) in (2, 3) and command not in COMMANDS:
            main(*sys.argv[1:])
        else:
            raise SystemExit(__doc__)
    except RecordError as e:
        raise SystemExit(str(e)) from None
