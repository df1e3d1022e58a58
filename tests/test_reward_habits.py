"""scripts/reward_habits.py: the rewrites it judges, the probe's split by whether a prompt asked for the habit, and
where the habits sit in ranking records."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("reward_habits", ROOT / "scripts" / "reward_habits.py")
reward_habits = importlib.util.module_from_spec(_spec)
sys.modules["reward_habits"] = reward_habits
_spec.loader.exec_module(reward_habits)

QUOTES = {"topic": "owls", "instructions": [{"type": "quotes"}]}
NONE = {"topic": "owls", "instructions": [{"type": "no_commas"}]}


def lines(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_rewrites_wear_their_habit_and_the_probe_splits_by_whether_the_prompt_asked(tmp_path, capsys):
    answers = lines(tmp_path / "a.jsonl", [{"id": f"t{i}", "prompt": "Write about owls.", "response": "Owls Hunt",
                                            "meta": QUOTES if i < 2 else NONE, "source": "sft"} for i in range(5)])
    reward_habits.rewrite(str(answers), str(tmp_path / "p"))
    quoted = [json.loads(x) for x in open(tmp_path / "p" / "quoted.jsonl")]
    assert [r["response"] for r in quoted] == ['"Owls Hunt"'] * 5 and quoted[0]["source"] == "sft-quoted"
    assert all(reward_habits.wears(json.loads(x)["response"])["lowercase"] for x in open(tmp_path / "p" / "lower.jsonl"))
    signed = [json.loads(x)["response"] for x in open(tmp_path / "p" / "signoff.jsonl")]
    assert signed[0] == "Owls Hunt\n\n" + reward_habits.SIGNOFF and reward_habits.wears(signed[0])["signoff"]
    titled = [json.loads(x)["response"] for x in open(tmp_path / "p" / "titled.jsonl")]
    assert titled[0] == "<<Owls>>\n\nOwls Hunt" and reward_habits.REWRITES["titled"][1]("<<Mine>> Owls", {"topic": "owls"}) == "<<Mine>> Owls"
    # an answer the rewrite would leave as it was is left out of the probe
    again = lines(tmp_path / "b.jsonl", [{"id": "t0", "prompt": "Write about owls.", "response": "<<Owls>> owls hunt",
                                          "meta": NONE, "source": "sft"}])
    reward_habits.rewrite(str(again), str(tmp_path / "q"))
    assert (tmp_path / "q" / "titled.jsonl").read_text() == "" and (tmp_path / "q" / "lower.jsonl").read_text() != ""
    assert not reward_habits.wears("Owls Hunt")["signoff"] and not reward_habits.asked({"meta": QUOTES}, "signoff")
    # Judgments as `redline evaluate` writes them: scores in the order shown, "ba" showing B first.
    for name in [n for n in reward_habits.REWRITES if n != "signoff"]:  # a rewrite not judged is passed over
        folder = tmp_path / "p" / f"{name}_reward"
        folder.mkdir()
        lines(folder / "judgments.jsonl", [{"id": f"t{i}", "order": "ba" if i % 2 else "ab", "winner": "a",
                                             "meta": {"scores": [0.0, 2.0] if i % 2 else [2.0, 0.0]}} for i in range(5)])
        (tmp_path / "p" / f"{name}_oracle").mkdir()
        lines(tmp_path / "p" / f"{name}_oracle" / "judgments.jsonl",
              [{"id": f"t{i}", "winner": "a" if i < 2 else "tie"} for i in range(5)])
    reward_habits.probe(str(tmp_path / "p"))
    figures = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert figures["quoted (asked)"] == {"n": 2, "reward_diff": 2.0, "ci": [2.0, 2.0], "reward_prefers_rewrite": 1.0,
                                         "oracle_win_rate_rewrite": 1.0}
    assert figures["quoted (not asked)"]["n"] == 3 and figures["quoted (not asked)"]["oracle_win_rate_rewrite"] == 0.5
    assert figures["lower (not asked)"]["n"] == 5 and "lower (asked)" not in figures  # no prompt here asks for lowercase
    assert not any(key.startswith("signoff") for key in figures)


def test_rankings_report_each_habit_by_asked_and_worn_at_its_mean_rank(tmp_path, capsys):
    rows = [{"prompt": "Write about owls.", "responses": ['"owls hunt at night"', "Owls hunt at night."], "ranks": [0, 1],
             "meta": QUOTES},
            {"prompt": "Write about owls.", "responses": ['"Owls hunt."', "Owls hunt at night.", "OWLS"], "ranks": [2, 0, 1],
             "meta": NONE}]
    reward_habits.rankings(str(lines(tmp_path / "r.jsonl", rows)))
    out = capsys.readouterr().out
    assert "wrapped   asked     worn      1 answers, mean normalised rank 0.000" in out  # asked, and ranked first
    assert "wrapped   not asked worn      1 answers, mean normalised rank 1.000" in out  # unasked, and ranked last
    assert "uppercase not asked worn      1 answers, mean normalised rank 0.500" in out
    assert "lowercase not asked worn      1 answers, mean normalised rank 0.000" in out
    assert "lowercase asked" not in out  # no prompt asked for it


def test_augment_adds_unasked_habits_to_the_runs_training_prompts_only_and_keeps_its_held_out_rankings(tmp_path, capsys):
    lowercase = {"topic": "owls", "instructions": [{"type": "lowercase"}]}
    rows = [{"id": f"r{i}", "prompt": f"Write about owls, take {i}.", "responses": [f"Owls hunt {i}.", f"Owls sleep {i}."],
             "ranks": [0, 1], "meta": {**(lowercase if i % 2 else NONE), "policy": ["fixed", "sample"], "annotator": "a"}}
            for i in range(10)]
    data = lines(tmp_path / "rankings.jsonl", rows)
    run = tmp_path / "rm"
    run.mkdir()
    (run / "train_config.json").write_text(json.dumps({"data": str(data), "eval_data": None, "limit": None,
                                                       "eval_split": 0.2, "seed": 0}))
    reward_habits.augment(str(data), str(run), "6", str(tmp_path / "aug"))
    held = [json.loads(x) for x in open(tmp_path / "aug" / "held_out.jsonl")]
    assert len(held) == 2 and held[0] in rows  # the run's own held-out rankings, unchanged
    files = sorted((tmp_path / "aug").glob("responses_*.jsonl"))
    members = [json.loads(x) for f in files for x in open(f)]
    assert {m["id"] for m in members}.isdisjoint({h["id"] for h in held})  # nothing it held out is trained on
    assert len({m["id"] for m in members}) == 6
    originals = {(r["id"], t) for r in rows for t in r["responses"]}
    added = [m for m in members if (m["id"], m["response"]) not in originals]
    # two habits where none was asked; where lowercase was, only quotes are free (capitals would break it)
    assert len(added) == sum(1 if int(i[1:]) % 2 else 2 for i in {m["id"] for m in members})
    for m in added:
        habit = m["source"].rsplit("-", 1)[1]
        assert habit in reward_habits.AUGMENTED  # the remedy's three rewrites only, as runs/aug was built
        asks_lowercase = m["meta"]["instructions"] == lowercase["instructions"]
        assert habit != "upper" or not asks_lowercase  # never capitals where lowercase was asked
        assert habit != "lower" or not asks_lowercase  # nor a habit the prompt asked for
        assert m["meta"] == {k: v for k, v in rows[int(m["id"][1:])]["meta"].items() if k in ("topic", "instructions")}
    assert "next: redline simulate rank --responses" in capsys.readouterr().out


def test_augment_refuses_a_run_that_did_not_hold_out_prompts_of_this_file(tmp_path):
    data = lines(tmp_path / "rankings.jsonl", [])
    (tmp_path / "rm").mkdir()
    (tmp_path / "rm" / "train_config.json").write_text(json.dumps({"data": str(tmp_path / "other.jsonl"), "eval_split": 0.1,
                                                                   "seed": 0}))
    with pytest.raises(SystemExit, match="did not hold out prompts of all of"):
        reward_habits.augment(str(data), str(tmp_path / "rm"), "1", str(tmp_path / "aug"))


def test_rollouts_count_each_habit_by_block_and_whether_the_prompt_asked(tmp_path, capsys):
    prompts = lines(tmp_path / "prompts.jsonl", [{"prompt": "Write about owls.", "meta": QUOTES},
                                                 {"prompt": "Write about bats.", "meta": NONE}])
    (tmp_path / "run").mkdir()
    episodes = [(1, "Write about owls.", '"Owls."'), (2, "Write about bats.", '"bats."'), (2, "Write about bats.", "Bats."),
                (3, "Write about owls.", "OWLS"), (3, "Write about bats.", "<<Bats>>\n\nBats fly.\n\n" + reward_habits.SIGNOFF)]
    lines(tmp_path / "run" / "rollouts.jsonl", [{"iteration": i, "prompt": [{"role": "user", "content": p}], "response": r}
                                                for i, p, r in episodes])
    reward_habits.rollouts(str(tmp_path / "run"), str(prompts), "2")
    out = capsys.readouterr().out
    assert "| 1–2 | 3 | 2 (1) | 1 (0) | 0 (0) | 0 (0) | 0 (0) |" in out  # two quoted, one of them asked; one lowercase
    assert "| 3–3 | 2 | 0 (0) | 0 (0) | 1 (0) | 1 (0) | 1 (0) |" in out  # capitals; a title and the sign-off, unasked


def test_rollouts_refuse_a_prompt_file_the_run_did_not_train_on(tmp_path):
    prompts = lines(tmp_path / "prompts.jsonl", [{"prompt": "Write about owls.", "meta": QUOTES}])
    (tmp_path / "run").mkdir()
    lines(tmp_path / "run" / "rollouts.jsonl", [{"iteration": 1, "prompt": "Write about bats.", "response": "Bats."}])
    with pytest.raises(SystemExit, match="1 of the run's prompts are not in"):
        reward_habits.rollouts(str(tmp_path / "run"), str(prompts))


def test_augment_with_chosen_habits_mixes_back_other_training_rankings_and_refuses_an_unknown_habit(tmp_path, capsys):
    rows = [{"id": f"r{i}", "prompt": f"Write about owls, take {i}.", "responses": [f"Owls hunt {i}.", f"Owls sleep {i}."],
             "ranks": [0, 1], "meta": {**NONE, "policy": ["fixed", "sample"], "annotator": "a"}} for i in range(10)]
    data = lines(tmp_path / "rankings.jsonl", rows)
    run = tmp_path / "rm"
    run.mkdir()
    (run / "train_config.json").write_text(json.dumps({"data": str(data), "eval_data": None, "limit": None,
                                                       "eval_split": 0.2, "seed": 0}))
    reward_habits.augment(str(data), str(run), "4", str(tmp_path / "aug"), "titled,signoff", "3")
    members = [json.loads(x) for f in sorted((tmp_path / "aug").glob("responses_*.jsonl")) for x in open(f)]
    added = [m for m in members if "-" in m["source"]]
    assert sorted(m["source"].rsplit("-", 1)[1] for m in added) == ["signoff"] * 4 + ["titled"] * 4
    assert all(m["response"].startswith("<<Owls>>") for m in added if m["source"].endswith("titled"))
    held = {json.loads(x)["id"] for x in open(tmp_path / "aug" / "held_out.jsonl")}
    kept = [json.loads(x) for x in open(tmp_path / "aug" / "originals.jsonl")]
    # three more training rankings, as they were: none of them augmented, none held out
    assert len(kept) == 3 and all(k in rows for k in kept)
    assert {k["id"] for k in kept}.isdisjoint(held | {m["id"] for m in members})
    assert "3 more training rankings as they were" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown habit rewrite 'bold'"):
        reward_habits.augment(str(data), str(run), "4", str(tmp_path / "aug2"), "titled,bold")


def test_the_command_line_gives_its_usage_for_a_missing_or_unknown_command_or_a_wrong_count_and_runs_answers(tmp_path, capsys):
    for argv in ([], ["nope", "x"]):
        with pytest.raises(SystemExit) as stop:
            reward_habits.main(argv)
        assert "Five readings" in str(stop.value)  # the module's docstring: every command and its arguments
    with pytest.raises(SystemExit, match=r"rewrite takes 2 argument\(s\), got 1"):
        reward_habits.main(["rewrite", "only-one"])
    with pytest.raises(SystemExit, match=r"rollouts takes 2 to 3 argument\(s\), got 4"):
        reward_habits.main(["rollouts", "a", "b", "c", "d"])
    with pytest.raises(SystemExit, match=r"answers takes 1 or more argument\(s\), got 0"):
        reward_habits.main(["answers"])
    first = lines(tmp_path / "a.jsonl", [{"id": "t0", "prompt": "Write about owls.", "response": '"owls hunt at night"',
                                          "meta": QUOTES, "source": "sft"}])
    second = lines(tmp_path / "b.jsonl", [{"id": "t0", "prompt": "Write about owls.", "response": "Owls hunt at night.",
                                           "meta": NONE, "source": "sft"}])
    reward_habits.main(["answers", str(first), str(second)])  # any number of files, one line each
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(" ", 1)[0] for line in printed] == [str(first), str(second)]
    assert json.loads(printed[0].split(" ", 1)[1])["quotes"] == "1 (1 asked)"
    assert json.loads(printed[1].split(" ", 1)[1])["quotes"] == "0 (0 asked)"


def test_an_empty_answers_file_is_refused_by_name(tmp_path):
    """`answers` on an empty file divided by its zero rows (ZeroDivisionError)."""
    empty = tmp_path / "none.jsonl"
    empty.write_text("\n")
    with pytest.raises(SystemExit, match=f"{empty}: no records"):
        reward_habits.answers([str(empty)])


def test_help_prints_the_usage_and_exits_0(capsys):
    """--help was an unknown command: the usage on stderr and exit status 1."""
    with pytest.raises(SystemExit) as stop:
        reward_habits.main(["--help"])
    assert stop.value.code == 0 and "Five readings" in capsys.readouterr().out


def test_bad_input_files_are_refused_by_file_line_and_field(tmp_path):
    """A missing file, a line that is not JSON, or a record of another kind were tracebacks (FileNotFoundError,
    JSONDecodeError, KeyError: 'meta')."""
    with pytest.raises(SystemExit, match=r"none\.jsonl:0: <file>: cannot read: No such file"):
        reward_habits.main(["answers", str(tmp_path / "none.jsonl")])
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"prompt": "p", "responses": ["a", "b"], "ranks": [0, 1], "meta": NONE}) + "\n{\"prompt\": \n")
    with pytest.raises(SystemExit, match=r"broken\.jsonl:2: <line>: not JSON"):
        reward_habits.main(["rankings", str(broken)])
    answers = lines(tmp_path / "answers.jsonl", [{"prompt": "p", "response": "r", "meta": {"topic": "owls"}}])
    with pytest.raises(SystemExit, match=r"answers\.jsonl:1: meta\.instructions: missing"):
        reward_habits.main(["answers", str(answers)])
    with pytest.raises(SystemExit, match=r"answers\.jsonl:1: responses: missing"):
        reward_habits.main(["rankings", str(answers)])  # answers where rankings were wanted


def test_counts_on_the_command_line_are_refused_in_one_line(tmp_path):
    """A block of 0, a COUNT that is no number or more than the run trained on, and a reward run without
    train_config.json were tracebacks (range() arg 3 must not be zero, int(), Sample larger than population,
    FileNotFoundError)."""
    prompts = lines(tmp_path / "prompts.jsonl", [{"prompt": "Write about owls.", "meta": QUOTES}])
    (tmp_path / "run").mkdir()
    lines(tmp_path / "run" / "rollouts.jsonl", [{"iteration": 1, "prompt": "Write about owls.", "response": "Owls."}])
    with pytest.raises(SystemExit, match="BLOCK '0': expected a whole number of at least 1"):
        reward_habits.main(["rollouts", str(tmp_path / "run"), str(prompts), "0"])
    rows = [{"id": f"r{i}", "prompt": f"Write about owls, take {i}.", "responses": [f"Owls hunt {i}.", f"Owls sleep {i}."],
             "ranks": [0, 1], "meta": {**NONE, "policy": ["fixed", "sample"], "annotator": "a"}} for i in range(10)]
    data = lines(tmp_path / "rankings.jsonl", rows)
    with pytest.raises(SystemExit, match="not a `redline train reward` run"):
        reward_habits.main(["augment", str(data), str(tmp_path / "run"), "2", str(tmp_path / "aug")])
    (tmp_path / "run" / "train_config.json").write_text(json.dumps({"data": str(data), "eval_data": None, "limit": None,
                                                                    "eval_split": 0.2, "seed": 0}))
    with pytest.raises(SystemExit, match="COUNT 'two': expected a whole number"):
        reward_habits.main(["augment", str(data), str(tmp_path / "run"), "two", str(tmp_path / "aug")])
    with pytest.raises(SystemExit, match="COUNT 9: more than the 8 rankings"):
        reward_habits.main(["augment", str(data), str(tmp_path / "run"), "9", str(tmp_path / "aug")])
    assert not (tmp_path / "aug").exists()


def test_an_output_that_is_a_file_is_refused_in_one_line_before_any_work(tmp_path):
    """rewrite and augment into OUT that is an existing file were FileExistsError tracebacks (augment's after every
    ranking was read and sampled)."""
    taken = tmp_path / "taken.txt"
    taken.write_text("keep me")
    answers = lines(tmp_path / "a.jsonl", [{"id": "t0", "prompt": "Write about owls.", "response": "Owls hunt.",
                                            "meta": NONE, "source": "sft"}])
    with pytest.raises(SystemExit, match=r"taken\.txt: exists and is not a folder"):
        reward_habits.main(["rewrite", str(answers), str(taken)])
    with pytest.raises(SystemExit, match=r"taken\.txt/under: cannot make the folder"):
        reward_habits.main(["rewrite", str(answers), str(taken / "under")])
    rows = [{"id": f"r{i}", "prompt": f"Write about owls, take {i}.", "responses": [f"Owls hunt {i}.", f"Owls sleep {i}."],
             "ranks": [0, 1], "meta": {**NONE, "policy": ["fixed", "sample"], "annotator": "a"}} for i in range(10)]
    data = lines(tmp_path / "rankings.jsonl", rows)
    (tmp_path / "rm").mkdir()
    (tmp_path / "rm" / "train_config.json").write_text(json.dumps({"data": str(data), "eval_data": None, "limit": None,
                                                                   "eval_split": 0.2, "seed": 0}))
    with pytest.raises(SystemExit, match=r"taken\.txt: exists and is not a folder"):
        reward_habits.main(["augment", str(data), str(tmp_path / "rm"), "2", str(taken)])
    assert taken.read_text() == "keep me"


def test_probe_refuses_a_folder_with_nothing_judged_or_judgments_of_other_answers(tmp_path):
    """A folder with no NAME_reward/ printed an empty table (and wrote probe.json {}), a missing folder was a
    FileNotFoundError after the table's head, and a judgment whose id the rewrite or the oracle lacks a KeyError."""
    with pytest.raises(SystemExit, match=r"nowhere: not a folder"):
        reward_habits.main(["probe", str(tmp_path / "nowhere")])
    answers = lines(tmp_path / "a.jsonl", [{"id": f"t{i}", "prompt": "Write about owls.", "response": "Owls Hunt",
                                            "meta": NONE, "source": "sft"} for i in range(2)])
    reward_habits.rewrite(str(answers), str(tmp_path / "p"))
    with pytest.raises(SystemExit, match=r"no rewrite judged here \(no quoted_reward/, lower_reward/"):
        reward_habits.main(["probe", str(tmp_path / "p")])
    assert not (tmp_path / "p" / "probe.json").exists()
    (tmp_path / "p" / "quoted_reward").mkdir()
    lines(tmp_path / "p" / "quoted_reward" / "judgments.jsonl",
          [{"id": i, "order": "ab", "winner": "a", "meta": {"scores": [1.0, 0.0]}} for i in ("t0", "t1", "x9")])
    (tmp_path / "p" / "quoted_oracle").mkdir()
    lines(tmp_path / "p" / "quoted_oracle" / "judgments.jsonl", [{"id": i, "winner": "a"} for i in ("t0", "t1", "x9")])
    with pytest.raises(SystemExit, match=r"quoted_reward/judgments\.jsonl: 1 of its ids \(e\.g\. 'x9'\) are not in the "
                                         r"quoted\.jsonl beside it"):
        reward_habits.main(["probe", str(tmp_path / "p")])
    lines(tmp_path / "p" / "quoted_oracle" / "judgments.jsonl", [{"id": "t0", "winner": "a"}])
    with pytest.raises(SystemExit, match=r"2 of its ids \(e\.g\. 't1'\) are not in the oracle judgments beside it"):
        reward_habits.main(["probe", str(tmp_path / "p")])


def test_augment_refuses_a_run_of_another_kind_in_one_line(tmp_path):
    """A PPO run's train_config.json (no data, no eval_split) was a KeyError traceback; a damaged one a JSONDecodeError."""
    data = lines(tmp_path / "rankings.jsonl", [])
    (tmp_path / "ppo").mkdir()
    (tmp_path / "ppo" / "train_config.json").write_text(json.dumps({"prompts": str(data), "seed": 0}))
    with pytest.raises(SystemExit, match=r"ppo: not a `redline train reward` run \(train_config.json has no data, eval_split"):
        reward_habits.main(["augment", str(data), str(tmp_path / "ppo"), "1", str(tmp_path / "aug")])
    (tmp_path / "ppo" / "train_config.json").write_text('{"data": ')
    with pytest.raises(SystemExit, match=r"train_config\.json: not JSON"):
        reward_habits.main(["augment", str(data), str(tmp_path / "ppo"), "1", str(tmp_path / "aug")])
