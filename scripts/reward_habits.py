"""What a reward model pays for the surface of an instruction, asked for or not (RESULTS "InstructGPT", twentieth session).

The habits are the three whose look is cheap to copy: an answer wrapped in double quotes, all lowercase, all capitals;
and two the embedded model's own chat habits offer (twenty-third session): a title in double angular brackets opening
the answer (the rewrite titles it with its topic), and its closing line "I hope this helps! Let me know if you have
any other questions." (never asked for).
Five readings, each on simulated data (records whose meta carries the instructions):

    python scripts/reward_habits.py rewrite runs/test_sft.jsonl runs/probe      # SFT's answers, each rewritten 5 ways
    redline evaluate --a runs/probe/quoted.jsonl --b runs/test_sft.jsonl --judge reward:models/reward --out runs/probe/quoted_reward
    redline evaluate --a runs/probe/quoted.jsonl --b runs/test_sft.jsonl --judge oracle --out runs/probe/quoted_oracle
    ...                                                                          # and lower, upper, titled, signoff
    python scripts/reward_habits.py probe runs/probe                             # the table, split by asked / not asked
    python scripts/reward_habits.py answers runs/test_sft.jsonl runs/test_ppo.jsonl   # the oracle's reading, habits worn
    python scripts/reward_habits.py rankings data/simulated/rankings.jsonl      # where the habits sit in the rankings
    python scripts/reward_habits.py rollouts runs/ppo data/simulated/rankings.jsonl  # the habits an RL run's rollouts took up

And a remedy: rankings in which the habits sit on answers of every quality, for a reward model to go on with:

    python scripts/reward_habits.py augment data/simulated/rankings.jsonl models/reward 300 runs/aug
    # the same for the two chat habits, with 60 of the run's other training rankings to mix back in (twenty-third session):
    python scripts/reward_habits.py augment data/simulated/rankings.jsonl models/reward 120 runs/aug2 titled,signoff 60
    redline simulate rank --responses runs/aug/responses_0.jsonl,...,runs/aug/responses_6.jsonl --out runs/aug/rankings.jsonl
    redline train reward --model models/reward --data runs/aug/rankings.jsonl --eval-data runs/aug/held_out.jsonl ...

Our own few lines: the oracle (redline.simulate.oracle) reads each answer; nothing here is a library's job.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np

from redline.evaluate import bootstrap_interval
from redline.records import prompt_text
from redline.simulate.oracle import check_all

SIGNOFF = "I hope this helps! Let me know if you have any other questions."
# name: (habit, rewrite(answer, the record's meta)); an answer already titled keeps its one title
REWRITES = {"quoted": ("quotes", lambda t, m: f'"{t}"'), "lower": ("lowercase", lambda t, m: t.lower()),
            "upper": ("uppercase", lambda t, m: t.upper()),
            "titled": ("title", lambda t, m: t if t.lstrip().startswith("<<") else f"<<{m['topic'].capitalize()}>>\n\n{t}"),
            "signoff": ("signoff", lambda t, m: f"{t.rstrip()}\n\n{SIGNOFF}")}
HABITS = tuple(habit for habit, _ in REWRITES.values())  # quotes, lowercase, uppercase, title, signoff
AUGMENTED = ("quoted", "lower", "upper")  # the remedy's rewrites, as runs/aug was built (RESULTS "Closing the habit shortcut")


def wears(text: str) -> dict[str, bool]:
    """Which habits an answer wears (quotes: it opens with one, as a cut-off answer may not close it; wrapped: opens
    and closes with one)."""
    s = text.strip()
    letters = [c for c in s if c.isalpha()]
    return {"quotes": s.startswith('"'), "wrapped": len(s) > 1 and s.startswith('"') and s.endswith('"'), "lowercase": bool(letters) and all(c.islower() for c in letters),
            "uppercase": bool(letters) and all(c.isupper() for c in letters), "title": s.startswith("<<"),
            "signoff": "let me know if you have any other questions" in s.lower()}


def asked(record: dict, habit: str) -> bool:
    return {"wrapped": "quotes"}.get(habit, habit) in {i["type"] for i in record["meta"]["instructions"]}


def numbered(path: str | Path, *fields: str):
    """(line number, record) of a JSONL file, each record holding ``fields`` (``meta.topic`` names one inside meta); a
    file that cannot be read, a line that is no JSON object or lacks a field is refused as FILE:LINE: FIELD: why."""
    from redline.records import FieldError, RecordError, iter_raw

    try:
        for number, row in iter_raw(path):
            if not isinstance(row, dict):
                raise SystemExit(f"{path}:{number}: {row if isinstance(row, FieldError) else '<line>: not a JSON object'}")
            for name in fields:
                value = row
                for part in name.split("."):
                    if not isinstance(value, dict) or part not in value:
                        raise SystemExit(f"{path}:{number}: {name}: missing (is this the file the command reads?)")
                    value = value[part]
            yield number, row
    except RecordError as e:  # the file itself: missing, a folder, not gzip
        raise SystemExit(str(e)) from None


def read(path: str | Path, *fields: str) -> list[dict]:
    """The records of a JSONL file, as ``numbered`` checks them; an empty one is refused by name (every command
    divides by its count)."""
    rows = [row for _, row in numbered(path, *fields)]
    if not rows:
        raise SystemExit(f"{path}: no records")
    return rows


def refuse_a_file(out: str) -> None:
    """OUT refused in one line where it is anything but a folder (a file: mkdir's FileExistsError), before any work."""
    if Path(out).exists() and not Path(out).is_dir():
        raise SystemExit(f"{out}: exists and is not a folder: name a folder for the output files")


def folder(out: str) -> Path:
    """OUT as a folder, made where missing; a file, or a path through one, refused in one line."""
    refuse_a_file(out)
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SystemExit(f"{out}: cannot make the folder: {e.strerror}") from None
    return Path(out)


def whole(value: str, name: str, least: int = 0) -> int:
    """A command-line count, refused in one line where it is not a whole number of at least ``least``."""
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or number < least:
        raise SystemExit(f"{name} {value!r}: expected a whole number of at least {least}")
    return number


def rewrite(answers: str, out: str) -> None:
    """Each answer rewritten with each habit; an answer the rewrite leaves as it was (already titled, already all
    lowercase) is left out, as a pair of equal answers measures nothing (judge with --skip-invalid then)."""
    refuse_a_file(out)
    rows = read(answers, "response", "meta.topic")
    folder(out)
    for name, (_, change) in REWRITES.items():
        changed = [{**r, "response": text, "source": f"{r.get('source')}-{name}"} for r in rows
                   for text in [change(r["response"], r["meta"])] if text != r["response"]]
        with open(Path(out) / f"{name}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in changed)
        print(f"{out}/{name}.jsonl: {len(changed)} of {len(rows)} answers ({len(rows) - len(changed)} already wore it)")


def probe(folder: str) -> None:
    """Each rewrite's reward-model and oracle judgments (NAME_reward/, NAME_oracle/), split by whether the prompt asked;
    a folder with no rewrite judged is refused by name, not printed as an empty table."""
    if not Path(folder).is_dir():
        raise SystemExit(f"{folder}: not a folder (the rewrite command's OUT)")
    judged = [name for name in REWRITES if (Path(folder) / f"{name}_reward").is_dir()]
    if not judged:
        raise SystemExit(f"{folder}: no rewrite judged here (no {'_reward/, '.join(REWRITES)}_reward/ folder): "
                         "run `redline evaluate ... --out FOLDER/NAME_reward` first")
    out = {}
    print("| rewrite | prompts | reward A − B [95% CI] | reward model prefers the rewrite | oracle win rate of the rewrite |")
    print("| --- | --- | --- | --- | --- |")
    for name in judged:  # a rewrite not judged in this folder is passed over
        habit = REWRITES[name][0]
        reward = read(Path(folder) / f"{name}_reward" / "judgments.jsonl", "id", "order", "winner", "meta.scores")
        oracle = {j["id"]: j for j in read(Path(folder) / f"{name}_oracle" / "judgments.jsonl", "id", "winner")}
        rewritten = {r["id"]: r for r in read(Path(folder) / f"{name}.jsonl", "id", "meta.instructions")}
        for what, found in (("oracle judgments", oracle), (f"{name}.jsonl", rewritten)):
            lost = [j["id"] for j in reward if j["id"] not in found]
            if lost:
                raise SystemExit(f"{folder}/{name}_reward/judgments.jsonl: {len(lost)} of its ids (e.g. {lost[0]!r}) are "
                                 f"not in the {what} beside it: judged on another file?")
        for wanted in (False, True):
            rows = [j for j in reward if asked(rewritten[j["id"]], habit) == wanted]
            if not rows:
                continue
            # meta.scores are in the order shown: "ba" showed B first
            diffs = [(s[1] - s[0]) if j["order"] == "ba" else (s[0] - s[1]) for j in rows for s in [j["meta"]["scores"]]]
            mean, (lo, hi) = sum(diffs) / len(diffs), bootstrap_interval(np.array(diffs))
            prefers = sum(j["winner"] == "a" for j in rows) / len(rows)
            oracle_rate = sum({"a": 1, "tie": 0.5}.get(oracle[j["id"]]["winner"], 0) for j in rows) / len(rows)
            key = f"{name} ({'asked' if wanted else 'not asked'})"
            out[key] = {"n": len(rows), "reward_diff": round(mean, 3), "ci": [round(lo, 3), round(hi, 3)],
                        "reward_prefers_rewrite": round(prefers, 3), "oracle_win_rate_rewrite": round(oracle_rate, 3)}
            print(f"| {key} | {len(rows)} | {mean:+.3f} [{lo:+.3f}, {hi:+.3f}] | {100 * prefers:.1f}% | {100 * oracle_rate:.1f}% |")
    (Path(folder) / "probe.json").write_text(json.dumps(out, indent=1) + "\n")


def answers(paths: list[str]) -> None:
    """The oracle's reading of answer files: quality, instructions met, each fault, and the habits worn (asked)."""
    for path in paths:
        rows = read(path, "prompt", "response", "meta.topic", "meta.instructions")
        reports = [check_all(r["meta"], r["response"], prompt_text(r["prompt"])) for r in rows]
        line = {"answers": len(rows), "quality": round(sum(x.quality for x in reports) / len(rows), 3),
                "at_quality_1": sum(x.quality >= 0.999 for x in reports), "every_one_met": sum(x.all_met for x in reports),
                "met": f"{sum(len(x.met) for x in reports)} of {sum(len(x.checks) for x in reports)}",
                **{f: sum(f in x.faults for x in reports) for f in ("off_topic", "repetition", "short", "copied")}}
        for habit in HABITS:
            worn = [r for r in rows if wears(r["response"])[habit]]
            line[habit] = f"{len(worn)} ({sum(asked(r, habit) for r in worn)} asked)"
        print(path, json.dumps(line))


def rollouts(run: str, prompts: str, block: str = "5") -> None:
    """The habits an RL run's rollouts wear, by blocks of iterations: how many of its episodes wear each, and how
    many of those the prompt asked for (the prompts' instructions from the file the run trained on)."""
    size = whole(block, "BLOCK", 1)
    task = {prompt_text(r["prompt"]): r for r in read(prompts, "prompt", "meta.instructions")}
    episodes = read(Path(run) / "rollouts.jsonl", "prompt", "response", "iteration")
    missing = {prompt_text(e["prompt"]) for e in episodes} - task.keys()
    if missing:
        raise SystemExit(f"{len(missing)} of the run's prompts are not in {prompts}, e.g. {sorted(missing)[0][:80]!r}")
    habits = HABITS
    print(f"| iterations | episodes | {' | '.join(f'{h} (asked)' for h in habits)} |")
    print(f"| --- | ---: | {' | '.join('---:' for _ in habits)} |")
    last = max(e["iteration"] for e in episodes)
    for start in range(1, last + 1, size):
        rows = [e for e in episodes if start <= e["iteration"] < start + size]
        cells = []
        for habit in habits:
            worn = [e for e in rows if wears(e["response"])[habit]]
            cells.append(f"{len(worn)} ({sum(asked(task[prompt_text(e['prompt'])], habit) for e in worn)})")
        print(f"| {start}–{min(start + size - 1, last)} | {len(rows)} | {' | '.join(cells)} |")


def augment(path: str, reward_run: str, count: str, out: str, habits: str = ",".join(AUGMENTED), originals: str = "0",
            seed: int = 0) -> None:
    """Response files for `redline simulate rank`: ``count`` of the rankings a reward run trained on, each prompt's
    answers as they were plus two of them rewritten with a habit the prompt did not ask for (two of ``habits``, the
    rewrites' names, two members drawn at random, so a habit lands on answers of every quality); the rest as
    ``augment_with`` says.
    """
    names = habits.split(",")
    unknown = [n for n in names if n not in REWRITES]
    if unknown:
        raise SystemExit(f"unknown habit rewrite {unknown[0]!r}: choose from {', '.join(REWRITES)}")
    opposite = {"lowercase": "uppercase", "uppercase": "lowercase"}
    added = {REWRITES[name][0]: 0 for name in names}

    def rewrites(row: dict, rng: random.Random) -> list[tuple[int, str, str]]:
        # a habit the prompt did not ask for, and not the opposite of one it did (capitals where lowercase was asked)
        free = [name for name in names for habit in [REWRITES[name][0]]
                if not asked(row, habit) and not asked(row, opposite.get(habit, habit))]
        out = []
        for name in rng.sample(free, min(2, len(free))):
            habit, change = REWRITES[name]
            plain = [i for i, text in enumerate(row["responses"]) if not wears(text)[habit]]
            if plain:
                i = rng.choice(plain)
                out.append((i, change(row["responses"][i], row["meta"]), name))
                added[habit] += 1
        return out

    augment_with(path, reward_run, count, out, rewrites, lambda: f"habits added: {added}", originals, seed)


def augment_with(path: str, reward_run: str, count: str, out: str, edits, described, originals: str = "0",
                 seed: int = 0) -> None:
    """Response files for `redline simulate rank`: ``count`` of the rankings a reward run trained on, each prompt's
    answers as they were plus those ``edits(row, rng)`` adds (each an answer's index, its edited text and the edit's
    name, which ends the copy's source); that run's held-out rankings, as they were; and ``originals`` more of its
    training rankings, as they were (OUT/originals.jsonl), to mix in so a model going on from it keeps what it knew.
    ``described()`` says what was added, for the closing line.

    The split is the run's own (its train_config's --eval-split and --seed, over what `train reward` read), so a
    model that goes on from it never trains on a prompt it held out.
    """
    from redline.simulate.rank import TASK_FIELDS
    from redline.train.reward import read_comparisons, split_by_prompt

    wanted, more = whole(count, "COUNT", 1), whole(originals, "ORIGINALS")
    refuse_a_file(out)
    made = Path(reward_run) / "train_config.json"
    if not made.is_file():
        raise SystemExit(f"{reward_run}: not a `redline train reward` run (no {made.name}): its split cannot be read")
    try:
        trained = json.loads(made.read_bytes())
    except ValueError as e:
        raise SystemExit(f"{made}: not JSON ({e})") from None
    if not isinstance(trained, dict) or not {"data", "eval_split", "seed"} <= trained.keys():
        raise SystemExit(f"{reward_run}: not a `redline train reward` run ({made.name} has no data, eval_split and seed)")
    if Path(trained["data"]).resolve() != Path(path).resolve() or trained.get("eval_data") or trained.get("limit"):
        raise SystemExit(f"{reward_run} did not hold out prompts of all of {path}: its split cannot be recomputed here")
    train, held = split_by_prompt(read_comparisons(path), trained["eval_split"], trained["seed"])
    rows = {r["id"]: r for r in read(path, "id", "responses", "meta.policy")}
    if wanted > len(train):
        raise SystemExit(f"COUNT {wanted}: more than the {len(train)} rankings {reward_run} trained on")
    rng = random.Random(seed)
    chosen = rng.sample(sorted(r.id for r in train), wanted)
    rest = sorted({r.id for r in train} - set(chosen))
    kept = rng.sample(rest, min(more, len(rest))) if more else []
    files: dict[int, list[dict]] = {}
    for key in chosen:
        row = rows[key]
        task = {name: row["meta"][name] for name in TASK_FIELDS if name in row["meta"]}
        members = [dict(id=key, prompt=row["prompt"], response=text, source=policy, meta=task)
                   for text, policy in zip(row["responses"], row["meta"]["policy"])]
        members += [{**members[i], "response": text, "source": f"{members[i]['source']}-{name}"}
                    for i, text, name in edits(row, rng)]
        for position, member in enumerate(members):
            files.setdefault(position, []).append(member)
    folder(out)
    for position, members in files.items():
        with open(Path(out) / f"responses_{position}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(m) + "\n" for m in members)
    with open(Path(out) / "held_out.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(rows[r.id]) + "\n" for r in held)
    if kept:
        with open(Path(out) / "originals.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(rows[key]) + "\n" for key in kept)
    listed = ",".join(str(Path(out) / f"responses_{i}.jsonl") for i in sorted(files))
    mixed = f"; {len(kept)} more training rankings as they were in {out}/originals.jsonl" if kept else ""
    print(f"{len(chosen)} prompts of {len(train)} trained on, {described()}; {len(held)} held-out rankings in "
          f"{out}/held_out.jsonl{mixed}\nnext: redline simulate rank --responses {listed} --out {out}/rankings.jsonl"
          + (f"\nthen: cat {out}/rankings.jsonl {out}/originals.jsonl > {out}/train.jsonl (what to go on with)" if kept else ""))


def rankings(path: str) -> None:
    """Where the habits sit in ranking records: how many answers wear each, asked or not, at what mean rank (0 best)."""
    rows = read(path, "responses", "ranks", "meta.instructions")
    for habit in ("quotes", "wrapped", *HABITS[1:]):
        for wanted in (False, True):
            for worn in (False, True):
                ranks = [rank / (len(r["ranks"]) - 1) for r in rows if asked(r, habit) == wanted
                         for text, rank in zip(r["responses"], r["ranks"])
                         if wears(text)[habit] == worn]
                if ranks:
                    print(f"{habit:9s} {'asked' if wanted else 'not asked':9s} {'worn' if worn else 'plain':5s} "
                          f"{len(ranks):5d} answers, mean normalised rank {sum(ranks) / len(ranks):.3f}")


# each command: its function, and the fewest and most arguments it takes (None: any number from the fewest)
COMMANDS = {"rewrite": (rewrite, 2, 2), "probe": (probe, 1, 1), "answers": (lambda *paths: answers(list(paths)), 1, None),
            "rankings": (rankings, 1, 1), "augment": (augment, 4, 6), "rollouts": (rollouts, 2, 3)}


def main(argv: list[str]) -> None:
    """Run one command; --help prints the usage, and a missing or unknown command, or a wrong number of arguments,
    exits with it."""
    command, args = (argv[0], argv[1:]) if argv else ("", [])
    if command in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(0)
    if command not in COMMANDS:
        raise SystemExit(__doc__)
    function, fewest, most = COMMANDS[command]
    if len(args) < fewest or (most is not None and len(args) > most):
        raise SystemExit(f"{command} takes {fewest}{'' if most == fewest else f' to {most}' if most else ' or more'} "
                         f"argument(s), got {len(args)}\n\n{__doc__}")
    function(*args)


if __name__ == "__main__":
    main(sys.argv[1:])
