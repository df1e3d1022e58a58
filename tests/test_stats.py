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
