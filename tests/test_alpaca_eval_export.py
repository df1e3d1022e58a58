"""`evaluate --export-alpaca-eval FILE`: judgments in AlpacaEval's annotation format."""

import json
import random

import pytest

from redline.cli import main
from redline.evaluate import alpaca_eval_annotations
from redline.records import Judgment, read_records
from redline.simulate.instructions import fix_all
from redline.simulate.tasks import make_tasks, template_response


def alpaca_eval_win_rate(rows):
    """AlpacaEval's head-to-head win rate (metrics.helpers.AbsoluteScoringRule.describe_head2head):
    rows whose preference is not a number in [1, 2] are dropped, the rest give mean(preference - 1)."""
    kept = [r["preference"] - 1 for r in rows if isinstance(r["preference"], float) and 1 <= r["preference"] <= 2]
    return 100 * sum(kept) / len(kept)


def test_export_holds_every_pair_with_b_as_alpaca_evals_reference(tmp_path, capsys):
    a, b = [], []
    for t in make_tasks(8, seed=0):
        raw = template_response(t, random.Random(t.id))
        a.append({"id": t.id, "prompt": t.prompt, "response": fix_all(t.instructions, raw, t.topic), "meta": t.meta(),
                  "source": "fixed"})
        b.append({"id": t.id, "prompt": t.prompt, "response": raw, "meta": t.meta()})
    paths = []
    for name, rows in (("a.jsonl", a), ("raw.jsonl", b)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths.append(str(tmp_path / name))
    out, export = tmp_path / "eval", tmp_path / "annotations.json"
    assert main(["evaluate", "--a", paths[0], "--b", paths[1], "--judge", "oracle", "--out", str(out),
                 "--bootstrap", "100", "--export-alpaca-eval", str(export)]) == 0
    rows = json.loads(export.read_text())
    judgments = {j.id: j for j in read_records(out / "judgments.jsonl", "judgment")}
    assert len(rows) == 8
    for row in rows:
        j = judgments[row["id"]]
        assert set(row) >= {"instruction", "output_1", "generator_1", "output_2", "generator_2", "annotator", "preference"}
        assert (row["output_2"], row["output_1"]) == (j.a, j.b) and row["instruction"] == j.prompt
        assert (row["generator_2"], row["generator_1"], row["annotator"]) == ("fixed", "raw", "oracle")
        assert row["preference"] == {"a": 2.0, "b": 1.0, "tie": 1.5}[j.winner]
    summary = json.loads((out / "summary.json").read_text())
    assert alpaca_eval_win_rate(rows) == pytest.approx(100 * summary["win_rate"])


def test_invalid_verdicts_are_null_and_a_chat_prompt_keeps_its_turns():
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Sky?"}]
    rows = alpaca_eval_annotations([
        Judgment(prompt=chat, a="Blue.", b="Red.", winner="invalid", judge="openai:m@u", id="1"),
        Judgment(prompt="q", a="x", b="y", winner="tie", judge="openai:m@u", id="2"),
    ], "mine", "base")
    assert rows[0]["preference"] is None and rows[0]["instruction"] == "Sky?" and rows[0]["prompt"] == chat
    assert rows[1]["preference"] == 1.5 and "prompt" not in rows[1]
    assert alpaca_eval_win_rate(rows) == 50.0
