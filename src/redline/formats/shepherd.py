"""Shepherd's question/answer/feedback rows -> critique-only feedback records.

Origin: Wang et al. 2023, "Shepherd: A Critic for Language Model Generation" (arXiv 2308.04592),
whose human-annotated data is ``data/human_data_for_model.jsonl`` in facebookresearch/Shepherd::

    {"id": 0, "question": "Jolene and Phil have four children ...", "answer": "The first child ...",
     "feedback": "The math is off in the previous to last sentence ...", "meta": {"domain": "..."}}

becomes::

    {"id": "0", "prompt": "Jolene and Phil ...", "response": "The first child ...",
     "critique": "The math is off ...", "revision": null,
     "meta": {"domain": "...", "source_format": "shepherd", "critique_only": true}}

Shepherd has no revisions, so every record is critique-only: it trains the critique half of a critic.
Texts are stripped (Shepherd's answers end with a blank line left by the generator).
"""

from __future__ import annotations

from redline.records import Feedback, Record, meta_field, text_field

NAME = "shepherd"
KINDS = ("feedback",)
COLUMNS = ("question", "answer", "feedback", "id", "meta")  # the import names any other column it drops


def convert(row: dict) -> list[Record]:
    """One Shepherd row -> one critique-only feedback record."""
    record = {
        "prompt": text_field(row, "question").strip(),
        "response": text_field(row, "answer").strip(),
        "critique": text_field(row, "feedback").strip(),
        "revision": None,
        "id": row.get("id"),
        "meta": {**meta_field(row), "source_format": NAME, "critique_only": True},
    }
    return [Feedback.from_dict(record)]
