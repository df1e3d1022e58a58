"""scripts/reward_habits.py: the rewrites it judges, the probe's split by whether a prompt asked for the habit, and
where the habits sit in ranking records."""

import importlib.util
import json
import sys
from pathlib import Path

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
    # Judgments as `redline evaluate` writes them: scores in the order shown, "ba" showing B first.
    for name in reward_habits.REWRITES:
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
