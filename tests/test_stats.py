"""`redline data stats`: the figures of a record file mean what the trainers that read it take them to mean."""

import json

from redline.cli import main


def test_an_unchanged_revision_is_counted_as_the_critic_trainer_counts_it(jsonl, capsys):
    """`train critic --unchanged-share` takes a revision that differs from the response only in whitespace (a
    trailing newline, another editor's line ends) as one with nothing to fix; stats counts the same records, or the
    share a user reads there is not the one the trainer draws."""
    rows = [
        {"prompt": "p1", "response": "Line one.\nLine two.", "critique": "Fine.", "revision": "Line one.\r\nLine two.\n"},
        {"prompt": "p2", "response": "Short.", "critique": "Fine.", "revision": "Short."},
        {"prompt": "p3", "response": "Short.", "critique": "Too short.", "revision": "Longer now."},
        {"prompt": "p4", "response": "Short.", "critique": "Too short.", "revision": None, "meta": {"critique_only": True}},
    ]
    assert main(["data", "stats", str(jsonl(rows)), "--kind", "feedback", "--tokenizer", "tiny-random"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["revision_equals_response"] == 2 and stats["critique_only"] == 1


def test_counting_tokens_shows_a_bar_on_stderr_and_the_figures_alone_on_stdout(jsonl, capsys):
    """200k preferences took five minutes of tokenizing with nothing on the terminal; the bar goes to stderr, so the
    JSON on stdout is what it was."""
    rows = [{"prompt": f"p{i}", "chosen": "Yes.", "rejected": "No."} for i in range(3)]
    assert main(["data", "stats", str(jsonl(rows)), "--kind", "preference", "--tokenizer", "tiny-random"]) == 0
    captured = capsys.readouterr()
    assert "counting tokens" in captured.err and "3/3" in captured.err
    assert json.loads(captured.out)["records"] == 3
