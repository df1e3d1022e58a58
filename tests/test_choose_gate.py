"""scripts/choose_gate.py: the gate replayed over one ungated iteration (the loop's own rules), the choice of bar
by its rule, and the validation sets drawn from the prompts the reward run held out."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("choose_gate", ROOT / "scripts" / "choose_gate.py")
choose_gate = importlib.util.module_from_spec(_spec)
sys.modules["choose_gate"] = choose_gate
_spec.loader.exec_module(choose_gate)

LOWER = {"instructions": [{"type": "lowercase"}]}  # the oracle scores 1.0 all lowercase, else less


def row(i, original, revision, changed=True):
    return {"id": f"r{i}", "prompt": f"Write about thing {i} in lowercase.", "meta": LOWER, "response_0": original,
            "response": revision, "changed": changed}


WORDS = ("every word here differs from the next one so that nothing repeats while the answer runs on long enough "
         "for the oracle to count it as a real reply about the thing it was asked to describe today").split()
LOWER_TEXT = " ".join(WORDS)
TITLE_TEXT = " ".join(w.title() for w in WORDS)


def test_replay_leaves_answers_at_the_bar_and_keeps_only_revisions_the_reward_model_prefers():
    from redline.simulate.oracle import quality

    assert quality(LOWER, LOWER_TEXT) > quality(LOWER, TITLE_TEXT)
    rows = [row(0, TITLE_TEXT, LOWER_TEXT),   # a fix the reward model scores higher: kept below the bar, a win
            row(1, TITLE_TEXT, LOWER_TEXT),   # a fix it scores lower: not kept, a tie
            row(2, LOWER_TEXT, TITLE_TEXT),   # a harm it scores higher: kept only where the bar lets it through
            row(3, TITLE_TEXT, TITLE_TEXT, changed=False)]  # nothing changed
    scores = {("r0", TITLE_TEXT): -3.0, ("r0", LOWER_TEXT): 1.0,
              ("r1", TITLE_TEXT): -3.0, ("r1", LOWER_TEXT): -4.0,
              ("r2", LOWER_TEXT): -1.0, ("r2", TITLE_TEXT): 2.0,
              ("r3", TITLE_TEXT): -3.0}
    low = choose_gate.replay(rows, scores, bar=-2.0)  # row 2 scores -1, at or above the bar: left alone
    assert (low["wins"], low["ties"], low["losses"], low["changed"], low["left"]) == (1, 3, 0, 1, 1)
    assert low["win_rate"] == 0.625 and low["ci95"][0] <= 0.625 <= low["ci95"][1]
    high = choose_gate.replay(rows, scores, bar=0.0)  # row 2 is below this bar: its harm is kept
    assert (high["wins"], high["ties"], high["losses"], high["changed"], high["left"]) == (1, 2, 1, 2, 0)
    lowest = choose_gate.replay(rows, scores, bar=-5.0)  # everything left alone: all ties
    assert (lowest["ties"], lowest["changed"], lowest["left"]) == (4, 0, 4)


def test_the_rule_takes_the_best_answers_rate_among_bars_that_spare_good_answers():
    def rates(*pairs):
        return ([{"bar": b, "win_rate": a} for b, a, _ in pairs], [{"bar": b, "win_rate": g} for b, _, g in pairs])

    answers, good = rates((-2.0, 0.60, 0.50), (-1.0, 0.65, 0.495), (0.0, 0.70, 0.47))
    assert choose_gate.choose(answers, good) == -1.0  # 0.0 harms good answers below 49%
    answers, good = rates((-2.0, 0.65, 0.50), (-1.0, 0.65, 0.495))
    assert choose_gate.choose(answers, good) == -2.0  # a tie goes to the lower bar
    answers, good = rates((-2.0, 0.60, 0.48), (-1.0, 0.65, 0.46))
    assert choose_gate.choose(answers, good) == -2.0  # no bar spares them: the one that harms them least
    assert choose_gate.rule(good).startswith("no bar kept")  # and gate.json says that rule chose it
    assert choose_gate.rule(rates((-2.0, 0.60, 0.50))[1]).startswith("highest validation-answers win rate")


def test_validation_sets_are_the_held_out_prompts_sample_and_perfect_fixed_answers(tmp_path):
    from redline.records import prompt_key
    from redline.train.reward import read_comparisons, split_by_prompt

    rankings = tmp_path / "rankings.jsonl"
    rows = [{"id": f"train-{i}", "prompt": f"Write about thing {i} in lowercase.", "responses": ["a b", "A B", "x"],
             "ranks": [1, 2, 3], "meta": {**LOWER, "topic": "things", "policy": ["hot", "sample", "fixed"],
                                          "oracle_quality": [1.0, 0.0, 1.0 if i % 2 else 0.5]}} for i in range(10)]
    rankings.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "rm"
    run.mkdir()
    (run / "train_config.json").write_text(json.dumps({"eval_split": 0.4, "seed": 3, "limit": None}))
    answers, good = choose_gate.validation_sets(str(rankings), str(run))
    _, held = split_by_prompt(read_comparisons(str(rankings)), 0.4, 3)
    held_prompts = {prompt_key(r.prompt) for r in held}
    assert len(answers) == 4 and {prompt_key(a["prompt"]) for a in answers} == held_prompts
    assert all(a["response"] == "A B" and a["meta"] == {**LOWER, "topic": "things"} for a in answers)
    assert [g["id"] for g in good] == [a["id"].replace("sample", "fixed") for a in answers if int(a["id"].split("-")[1]) % 2]


def test_validation_sets_are_refused_where_the_reward_run_held_out_nothing_of_the_file(tmp_path):
    import pytest

    rankings = tmp_path / "rankings.jsonl"
    rankings.write_text(json.dumps({"id": "r0", "prompt": "Write about thing 0.", "responses": ["a", "b"],
                                    "ranks": [0, 1], "meta": {**LOWER, "policy": ["sample", "fixed"],
                                                              "oracle_quality": [0.0, 1.0]}}) + "\n")
    run = tmp_path / "rm"
    run.mkdir()
    # trained on every prompt of this file, held out another file's: a "validation" split of it was trained on
    (run / "train_config.json").write_text(json.dumps({"data": str(rankings), "eval_data": str(tmp_path / "held.jsonl"),
                                                       "eval_split": 0.1, "seed": 0, "limit": None}))
    with pytest.raises(SystemExit, match="trained on every prompt of its --data"):
        choose_gate.validation_sets(str(rankings), str(run))
    # split another file than the one given: its held-out prompts are not these
    (run / "train_config.json").write_text(json.dumps({"data": str(tmp_path / "other.jsonl"), "eval_data": None,
                                                       "eval_split": 0.1, "seed": 0, "limit": None}))
    with pytest.raises(SystemExit, match="give --data the file it trained on"):
        choose_gate.validation_sets(str(rankings), str(run))


def test_scores_of_another_or_a_retrained_reward_model_are_refused(tmp_path):
    """WORK/scores.json was read whatever --reward was: a rerun with another reward model chose the bar by the first
    model's scores. The file names the model and its digest; a mismatch is refused, naming the file."""
    from redline.config import input_digest

    rm = tmp_path / "rm"
    rm.mkdir()
    (rm / "model.safetensors").write_bytes(b"weights one")
    cache = tmp_path / "scores.json"
    assert choose_gate.read_cache(cache, str(rm), input_digest(str(rm))) == {}  # no file yet
    cache.write_text(json.dumps({"reward": str(rm), "reward_digest": input_digest(str(rm)), "scores": {"k": 1.5}}))
    assert choose_gate.read_cache(cache, str(rm), input_digest(str(rm))) == {"k": 1.5}
    (rm / "model.safetensors").write_bytes(b"weights two")  # retrained in place
    with pytest.raises(SystemExit, match=f"{cache} holds the scores of {rm}, as it was then, not of --reward {rm}"):
        choose_gate.read_cache(cache, str(rm), input_digest(str(rm)))
    cache.write_text(json.dumps({"k": 1.5}))  # an older file: which model, it does not say
    with pytest.raises(SystemExit, match="a reward model it does not name"):
        choose_gate.read_cache(cache, str(rm), input_digest(str(rm)))


def test_validation_sets_read_the_rankings_as_utf8_whatever_the_locale(tmp_path):
    """The rankings were opened in the locale's encoding: under LANG=C (PYTHONUTF8=0) a prompt's "–" was a
    UnicodeDecodeError, after the split was computed."""
    import os
    import subprocess

    rankings = tmp_path / "rankings.jsonl"
    rows = [{"id": f"r{i}", "prompt": f"Write about thing {i} – in lowercase.", "responses": ["a b", "A B"],
             "ranks": [1, 2], "meta": {**LOWER, "topic": "things", "policy": ["fixed", "sample"],
                                       "oracle_quality": [1.0, 0.0]}} for i in range(10)]
    rankings.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (tmp_path / "rm").mkdir()
    (tmp_path / "rm" / "train_config.json").write_text(json.dumps({"eval_split": 0.4, "seed": 3, "limit": None}))
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import choose_gate; "
            "a, g = choose_gate.validation_sets(sys.argv[2], sys.argv[3]); print(len(a), len(g))")
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0", "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run([sys.executable, "-c", code, str(ROOT / "scripts"), str(rankings), str(tmp_path / "rm")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["4", "4"]


def test_a_reward_folder_that_is_no_reward_run_is_refused_in_one_line(tmp_path):
    """--reward a folder without train_config.json (a typo, a critic) was a FileNotFoundError traceback."""
    with pytest.raises(SystemExit, match=r"--reward .*nothere: not a `redline train reward` run \(no train_config.json\)"):
        choose_gate.validation_sets(str(tmp_path / "rankings.jsonl"), str(tmp_path / "nothere"))
