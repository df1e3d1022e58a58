"""scripts/reward_errors.py: a reward model's accuracy split by what the oracle says separates the two answers."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("reward_errors", ROOT / "scripts" / "reward_errors.py")
reward_errors = importlib.util.module_from_spec(_spec)
sys.modules["reward_errors"] = reward_errors
_spec.loader.exec_module(reward_errors)

BODY = "Owls hunt at night and their soft feathers let them fly without a sound over the fields and woods"
META = {"topic": "owls", "instructions": [{"type": "uppercase"}, {"type": "no_commas"}],
        "oracle_quality": [1.0, 0.5, 0.5], "policy": ["fixed", "sample", "sample"], "edit_of": [1, None, None]}


def test_errors_are_counted_by_the_one_check_that_separates_the_answers(tmp_path, capsys):
    # 0 meets both; 1 breaks uppercase only (an edit pair with 0); 2 breaks no_commas only. The model orders 0 over 1
    # rightly, 0 under 2 wrongly, and ties 1 and 2 (a labelled tie: not scored).
    record = {"prompt": "Write about owls in capitals with no commas.", "meta": META,
              "responses": [BODY.upper(), BODY, BODY.upper().replace(" AND ", ", AND ")],
              "ranks": [0, 1, 1], "scores": [2.0, 1.0, 3.0]}
    scores = tmp_path / "scores.jsonl"
    scores.write_text(json.dumps(record) + "\n")
    reward_errors.main(str(scores), str(tmp_path / "out.json"))
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["all"]["all"]["comparisons"] == 2 and result["all"]["all"]["accuracy"] == 0.5
    assert result["difference"]["uppercase"] == {"comparisons": 1, "accuracy": 1.0, "oracle_comparisons": 1,
                                                 "oracle_accuracy": 1.0, "labels_vs_oracle": 1.0}
    assert result["difference"]["no_commas"]["accuracy"] == 0.0
    assert set(result["made"]) == {"edit (one repairs the other)", "fixed / sample"}
    assert result["oracle gap"] == {"0.3–0.6": result["all"]["all"]}
    assert "| no_commas | 1 | 0.0% |" in capsys.readouterr().out


def test_a_scores_file_with_no_decisive_comparison_is_refused_by_name(tmp_path):
    record = {"prompt": "Write about owls in capitals with no commas.", "meta": META,
              "responses": [BODY.upper(), BODY, BODY], "ranks": [0, 0, 0], "scores": [2.0, 1.0, 3.0]}
    scores = tmp_path / "scores.jsonl"
    scores.write_text(json.dumps(record) + "\n")
    with pytest.raises(SystemExit, match="no comparison the labels decide"):
        reward_errors.main(str(scores), str(tmp_path / "out.json"))
    assert not (tmp_path / "out.json").exists()


def test_rankings_without_the_simulated_meta_are_refused_with_their_line(tmp_path):
    scores = tmp_path / "scores.jsonl"
    scores.write_text(json.dumps({"prompt": "p", "meta": META, "responses": ["a", "b", "c"], "ranks": [0, 1, 2],
                                  "scores": [1, 2, 3]}) + "\n" + json.dumps({"prompt": "p", "responses": ["a", "b"],
                                                                             "ranks": [0, 1], "scores": [1, 2]}) + "\n")
    with pytest.raises(SystemExit, match=r"scores.jsonl:2: meta has no instructions \(what the oracle reads\)"):
        reward_errors.main(str(scores))


def test_pairs_keep_only_those_one_named_check_separates_with_the_oracles_better_answer_chosen(tmp_path):
    meta = {**{k: META[k] for k in ("topic", "instructions")}, "oracle_quality": [1.0, 0.5, 0.5]}
    rankings = tmp_path / "rankings.jsonl"
    rankings.write_text("".join(json.dumps({"id": f"r{n}", "prompt": f"Write about owls, {n}.", "meta": meta,
                                            # the annotator ranked the broken answer first: the oracle decides
                                            "responses": [BODY.upper(), BODY, BODY.upper().replace(" AND ", ", AND ")],
                                            "ranks": [2, 0, 1]}) + "\n" for n in range(10)))
    reward_errors.write_pairs(str(rankings), "uppercase", str(tmp_path / "out"))
    train = [json.loads(x) for x in open(tmp_path / "out" / "train.jsonl")]
    held = [json.loads(x) for x in open(tmp_path / "out" / "eval.jsonl")]
    assert len(train) == 7 and len(held) == 3 and not {r["prompt"] for r in train} & {r["prompt"] for r in held}
    for r in train + held:  # only the uppercase pair (0 against 1); 0 against 2 is separated by no_commas,
        # and the oracle ties 1 with 2
        assert r["chosen"] == BODY.upper() and r["rejected"] == BODY and r["meta"]["separator"] == "uppercase"
        assert r["meta"]["oracle_quality"][0] > r["meta"]["oracle_quality"][1]


OWLS = ("Owls hunt at night over the quiet fields. Their soft feathers let them fly without a sound. "
        "They eat mice and voles in the dark. Many owls live for years in the same woods.")
KEYWORD = {"topic": "owls", "instructions": [{"type": "keyword_include", "keywords": ["patience"]}]}


def test_content_edits_fix_one_check_alone_and_add_a_decoy_the_oracle_finds_no_better():
    import random

    row = {"prompt": "Write about owls. Include the keyword patience.", "meta": KEYWORD,
           "responses": [OWLS, OWLS.replace("Owls hunt", "At dusk owls hunt")]}
    edits, described = reward_errors.content_edits(["garden", "patience"])
    out = edits(row, random.Random(0))
    assert sorted(name for _, _, name in out) == ["decoy_keyword_include"] * 2 + ["fix_keyword_include"] * 2
    for i, text, name in out:
        before = row["responses"][i]
        assert text.startswith(before[:-1])  # the answer kept, a sentence added
        sep = reward_errors.separators(KEYWORD, row["prompt"], text, before)
        if name.startswith("fix"):
            assert "patience" in text and sep == ["keyword_include"]  # that check, and nothing else, now differs
        else:  # the same added sentence naming an unasked word: the oracle sees no difference from the answer
            assert "patience" not in text and "garden" in text and sep == []
    assert described() == "content edits added: decoy_keyword_include 2, fix_keyword_include 2"


def test_swap_added_leaves_the_words_the_answer_had_and_keeps_case():
    before = "Patience is a virtue. Owls wait."
    after = "Patience is a virtue. Owls wait. Patience wins and patience pays."
    assert reward_errors.swap_added(before, after, "patience", "garden") == \
        "Patience is a virtue. Owls wait. Garden wins and garden pays."


def test_content_augment_trains_on_the_runs_training_prompts_only_and_says_how_to_rank(tmp_path, capsys):
    rows = [{"id": f"r{i}", "prompt": f"Write about owls, take {i}. Include the keyword patience.", "meta":
             {**KEYWORD, "policy": ["sample", "sample"], "annotator": "a"},
             "responses": [OWLS, OWLS.replace("Owls hunt", f"Owls hunt {i}")], "ranks": [0, 1]} for i in range(10)]
    data = tmp_path / "rankings.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "rm"
    run.mkdir()
    (run / "train_config.json").write_text(json.dumps({"data": str(data), "eval_data": None, "limit": None,
                                                       "eval_split": 0.2, "seed": 0}))
    reward_errors.augment(str(data), str(run), "5", str(tmp_path / "aug"), "2")
    members = [json.loads(x) for f in sorted((tmp_path / "aug").glob("responses_*.jsonl")) for x in open(f)]
    held = {json.loads(x)["id"] for x in open(tmp_path / "aug" / "held_out.jsonl")}
    kept = {json.loads(x)["id"] for x in open(tmp_path / "aug" / "originals.jsonl")}
    assert len(held) == 2 and len(kept) == 2 and len({m["id"] for m in members}) == 5
    assert not ({m["id"] for m in members} | kept) & held  # nothing it held out is trained on
    # each prompt: its two answers and each one fixed; no decoys, as the decoys' words are those the file's tasks
    # name and this file names none but the asked keyword
    sources = sorted(m["source"] for m in members)
    assert sources == ["sample"] * 10 + ["sample-fix_keyword_include"] * 10
    assert "next: redline simulate rank --responses" in capsys.readouterr().out


def test_help_prints_the_usage_and_exits_0():
    """--help was read as the scores file to open: a FileNotFoundError traceback."""
    import subprocess

    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "reward_errors.py"), "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "Where a reward model errs" in done.stdout and "Traceback" not in done.stderr


def test_bad_scores_files_and_an_output_folder_are_refused_in_one_line(tmp_path):
    """A missing scores file, a line that is not JSON, a record without scores, and --out a folder (found only after
    every pair was read) were tracebacks."""
    with pytest.raises(SystemExit, match=r"none\.jsonl:0: <file>: cannot read: No such file"):
        reward_errors.main(str(tmp_path / "none.jsonl"))
    scores = tmp_path / "scores.jsonl"
    scores.write_text(json.dumps({"prompt": "p", "meta": META, "responses": ["a", "b"], "ranks": [0, 0],
                                  "scores": [1, 2]}) + "\n{\"prompt\"\n")
    with pytest.raises(SystemExit, match=r"scores\.jsonl:2: <line>: not JSON"):
        reward_errors.main(str(scores))
    scores.write_text(json.dumps({"prompt": "p", "meta": META, "responses": ["a", "b"], "ranks": [0, 1]}) + "\n")
    with pytest.raises(SystemExit, match=r"scores\.jsonl:1: scores: missing"):
        reward_errors.main(str(scores))  # the rankings, not `evaluate rankings`' scores of them
    with pytest.raises(SystemExit, match="is a folder: give the path of the JSON file"):
        reward_errors.main(str(scores), str(tmp_path))


def test_the_command_line_refuses_bad_rankings_with_their_line_not_a_traceback(tmp_path):
    """`pairs` on a file `train reward`'s reader refuses raised its RecordError as a traceback."""
    import subprocess

    rankings = tmp_path / "rankings.jsonl"
    rankings.write_text(json.dumps({"responses": ["a", "b"], "ranks": [0, 1]}) + "\n")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "reward_errors.py"), "pairs", str(rankings),
                           "keyword_include", str(tmp_path / "kw")], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"{rankings}:1: prompt: missing" in done.stderr
