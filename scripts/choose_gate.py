"""Choose the gate's bar (`--leave-above`) on validation answers, never on the test items (issue 14, item 2).

The demo puts a reward model behind the critic: an answer the reward model scores at or above a bar is
left alone, and a revision is kept only where it scores higher than the answer it replaces
(`revise --judge reward:RUN --leave-above BAR --stop best`). The bar trades fixes on weak answers for
harm on good ones. This script picks it where the test sets play no part:

1. validation answers: the rankings of the prompts the reward run held out (it never trained on them),
   each prompt's first `sample` response (the embedded model at temperature 0.7, as `test.jsonl`) and its
   `fixed` response where the oracle scores it 1.0 (every instruction met, as `test_fixed.jsonl`);
2. the critic revises both sets once, ungated (`redline revise`, the demo's decoding settings);
3. the reward model scores every original and revision; each bar of a grid is replayed (left alone at
   or above the bar, else the revision kept only if it scores higher: the loop's own rules) and judged
   by the oracle against the originals;
4. the rule, fixed before any replay: among the bars whose validation good answers keep a win rate of at
   least 49% (a point above issue 14's 48%), the one with the highest win rate on the validation
   answers (a tie goes to the lower bar, which leaves more alone); where no bar keeps them there, the bar
   whose good answers win most (gate.json's "rule" says which applied).

`--replay NAME=FOLDER` replays the grid on other ungated `revise` outputs too (the test sets), so the
chosen bar's test figures can be read beside the validation ones; they do not enter the choice.
The validation prompts were in the critic's training data (one record each, as every training prompt):
the critic may fix more there than on test answers; the reward model never saw them.

    python scripts/choose_gate.py runs/gate_val --replay test=runs/c1000x5/test --replay good=runs/c1000x5/good
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

BARS = [x / 2 for x in range(-8, 3)]  # -4.0 ... 1.0 in halves; 0 is the demonstrations' mean
GOOD_FLOOR = 0.49


def validation_sets(data: str, reward: str) -> tuple[list[dict], list[dict]]:
    """The held-out prompts' first `sample` answers and their oracle-perfect `fixed` answers."""
    from redline.records import prompt_key
    from redline.train.reward import read_comparisons, split_by_prompt

    made = Path(reward) / "train_config.json"
    if not made.is_file():  # before the critic revises anything
        raise SystemExit(f"--reward {reward}: not a `redline train reward` run (no {made.name}): its held-out prompts "
                         "cannot be found")
    trained = json.loads(made.read_text())
    # the split is recomputed as `train reward` made it: only from the file it split, and only if it split one
    if trained.get("eval_data"):
        raise SystemExit(f"{reward} held out the rankings of --eval-data {trained['eval_data']} and trained on every "
                         f"prompt of its --data: no prompt of {data} is held out from it")
    if trained.get("data") and Path(trained["data"]).resolve() != Path(data).resolve():
        raise SystemExit(f"--data {data}: {reward} split {trained['data']}, so its held-out prompts cannot be found "
                         "in another file (give --data the file it trained on)")
    rankings = read_comparisons(data, limit=trained.get("limit"), skip_invalid=bool(trained.get("skip_invalid")))
    _, held = split_by_prompt(rankings, trained["eval_split"], trained["seed"])
    held_keys = {prompt_key(r.prompt) for r in held}
    answers, good = [], []
    with open(data, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if prompt_key(row["prompt"]) not in held_keys:
                continue
            meta = row["meta"]
            task = {k: v for k, v in meta.items() if k in ("topic", "form", "instructions")}
            policies, qualities = meta["policy"], meta["oracle_quality"]
            picks = [("sample", answers, lambda q: True), ("fixed", good, lambda q: q == 1.0)]
            for policy, out, ok in picks:
                i = next((i for i, p in enumerate(policies) if p == policy and ok(qualities[i])), None)
                if i is not None:
                    out.append({"id": f"{row['id']}-{policy}", "prompt": row["prompt"], "response": row["responses"][i],
                                "source": f"rankings:{policy}", "meta": task})
    return answers, good


def revise(critic: str, records: list[dict], folder: Path) -> Path:
    """The critic's one ungated iteration over ``records`` (resumes: `revise` skips what it wrote)."""
    folder.mkdir(parents=True, exist_ok=True)
    inputs = folder.with_suffix(".jsonl")
    inputs.write_text("".join(json.dumps(r) + "\n" for r in records))
    redline = Path(sys.executable).with_name("redline")
    subprocess.run([str(redline), "revise", "--critic", critic, "--input", str(inputs), "--iterations", "1",
                    "--dtype", "bfloat16", "--no-repeat-ngram", "8", "--out", str(folder)], check=True)
    return folder / "iteration_1.jsonl"


def replay(rows: list[dict], scores: dict[tuple[str, str], float], bar: float) -> dict:
    """The gate at ``bar`` over one ungated iteration: wins/ties/losses against the originals by the oracle."""
    from redline.evaluate import scores_of, win_rate, win_rate_interval
    from redline.judges import Item
    from redline.judges.oracle import OracleJudge

    items, changed, left = [], 0, 0
    for row in rows:
        original, final = row["response_0"], row["response_0"]
        s0 = scores[(row["id"], original)]
        if s0 >= bar:
            left += 1
        elif row.get("changed") and scores[(row["id"], row["response"])] > s0:
            final = row["response"]
            changed += 1
        items.append(Item(prompt=row["prompt"], a=final, b=original, meta=row["meta"]))
    verdicts = [v.winner for v in OracleJudge().judge_many(items)]  # evaluate's oracle verdicts
    wins, losses = verdicts.count("a"), verdicts.count("b")
    low, high = win_rate_interval(scores_of(verdicts))  # evaluate's interval: the same seed and resamples
    return {"bar": bar, "items": len(rows), "wins": wins, "ties": len(rows) - wins - losses, "losses": losses,
            "win_rate": win_rate(verdicts), "ci95": [low, high], "changed": changed, "left": left}


def choose(answers: list[dict], good: list[dict]) -> float:
    """The rule of the docstring: the best validation answers' win rate among bars that spare good answers."""
    fine = [(a, g) for a, g in zip(answers, good) if g["win_rate"] >= GOOD_FLOOR]
    if not fine:
        return max(zip(answers, good), key=lambda p: (p[1]["win_rate"], -p[1]["bar"]))[1]["bar"]
    return max(fine, key=lambda p: (p[0]["win_rate"], -p[0]["bar"]))[0]["bar"]


def rule(good: list[dict]) -> str:
    """The rule ``choose`` applied, in words: the docstring's, or its fallback where no bar spares good answers."""
    if any(g["win_rate"] >= GOOD_FLOOR for g in good):
        return (f"highest validation-answers win rate among bars whose validation good answers win >= {GOOD_FLOOR:.0%} "
                "(tie: the lower bar)")
    return (f"no bar kept the validation good answers' win rate at {GOOD_FLOOR:.0%} or more: the bar at which they win "
            "most (tie: the lower bar)")


def read_cache(path: Path, reward: str, digest: str | None) -> dict:
    """The scores WORK/scores.json holds, keyed by (prompt, text), when the reward model that gave them is ``reward``
    as it is now (``digest``); none when there is no file. Scores of another or a retrained reward model are refused:
    read as this one's, they chose the bar by the wrong model's opinion."""
    if not path.is_file():
        return {}
    held = json.loads(path.read_text())
    if "scores" not in held or held.get("reward_digest") != digest:
        given = f"{held['reward']}, as it was then" if "reward" in held else "a reward model it does not name"
        raise SystemExit(f"{path} holds the scores of {given}, not of --reward {reward} as it is now: give another "
                         "WORK folder, or remove the file to score again")
    return held["scores"]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("work", help="folder for the validation sets, their revisions and gate.json")
    ap.add_argument("--critic", default="models/critic")
    ap.add_argument("--reward", default="models/reward", help="a `redline train reward` run (its held-out prompts); "
                    "its scores are cached in WORK/scores.json, which another (or a retrained) reward model is refused")
    ap.add_argument("--data", default="data/simulated/rankings.jsonl", help="the rankings that run read")
    ap.add_argument("--replay", action="append", default=[], metavar="NAME=FOLDER",
                    help="an ungated `revise --iterations 1` output to replay the bars on (not used to choose)")
    args = ap.parse_args(argv)
    replays = {}
    for spec in args.replay:
        name, sep, folder = spec.partition("=")
        if not sep or not (Path(folder) / "iteration_1.jsonl").is_file():
            ap.error(f"--replay {spec}: expected NAME=FOLDER with FOLDER/iteration_1.jsonl (a `redline revise` output)")
        replays[name] = folder

    from redline.config import input_digest
    from redline.judges.reward import RewardJudge
    from redline.records import prompt_key

    work = Path(args.work)
    answers, good = validation_sets(args.data, args.reward)
    sets = {"validation answers": revise(args.critic, answers, work / "val_answers"),
            "validation good": revise(args.critic, good, work / "val_good"),
            **{name: Path(folder) / "iteration_1.jsonl" for name, folder in replays.items()}}
    judge = RewardJudge(args.reward)
    cache_path = work / "scores.json"  # a rerun (another --replay) scores only what is new
    reward_digest = input_digest(args.reward)
    cache = read_cache(cache_path, args.reward, reward_digest)
    table = {}
    for name, path in sets.items():
        rows = [json.loads(line) for line in open(path, encoding="utf-8")]
        keyed = {(r["id"], t): (json.dumps([prompt_key(r["prompt"]), t]), (r["prompt"], t))
                 for r in rows for t in (r["response_0"], r["response"])}
        todo = dict(v for v in keyed.values() if v[0] not in cache)
        cache.update(zip(todo, judge.score(list(todo.values()))))
        cache_path.write_text(json.dumps({"reward": args.reward, "reward_digest": reward_digest, "scores": cache}))
        scores = {k: cache[key] for k, (key, _) in keyed.items()}
        table[name] = [replay(rows, scores, bar) for bar in BARS]
    bar = choose(table["validation answers"], table["validation good"])
    out = {"chosen_bar": bar, "rule": rule(table["validation good"]), "critic": args.critic, "reward": args.reward,
           "validation_items": {"answers": len(answers), "good": len(good)}, "sets": table}
    (work / "gate.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"| bar | {' | '.join(table)} |\n|---|{'---|' * len(table)}")
    for i, b in enumerate(BARS):
        cells = [f"{r[i]['wins']}/{r[i]['ties']}/{r[i]['losses']} {r[i]['win_rate']:.1%}" for r in table.values()]
        print(f"| {b:g}{' (chosen)' if b == bar else ''} | {' | '.join(cells)} |")
    return out


if __name__ == "__main__":
    main()
