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
