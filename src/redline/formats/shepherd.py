"""Shepherd's question/answer/feedback rows -> critique-only feedback records.

Origin: Wang et al. 2023, "Shepherd: A Critic for Language Model Generation" (arXiv 2308.04592),
whose human-annotated data is ``data/human_data_for_model.jsonl`` in facebookresearch/Shepherd::

    {"id": 0, "dataset": "GSM8K", "question": "Jolene and Phil have four children ...",
     "answer": "The first child ...", "feedback": "Firstly, The math is off in the previous to last sentence ..."}

becomes::

    {"id": "0", "prompt": "Jolene and Phil ...", "response": "The first child ...",
     "critique": "Firstly, The math is off ...", "revision": null,
     "meta": {"dataset": "GSM8K", "source_format": "shepherd", "critique_only": true}}

Shepherd has no revisions, so every record is critique-only: it trains the critique half of a critic.
``dataset`` names the task the question came from (GSM8K, PIQA, proofwriter, ... 20 of them) and goes
to meta, so a run can be split or balanced by it. Texts are stripped (Shepherd's answers end with a
blank line left by the generator).
"""

from __future__ import annotations

from redline.records import Feedback, Record, meta_field, text_field

NAME = "shepherd"
KINDS = ("feedback",)
COLUMNS = ("question", "answer", "feedback", "dataset", "id", "meta")  # the import names any other column it drops


def convert(row: dict) -> list[Record]:
    """One Shepherd row -> one critique-only feedback record."""
    source = {"dataset": row["dataset"]} if isinstance(row.get("dataset"), str) else {}
    record = {
        "prompt": text_field(row, "question").strip(),
        "response": text_field(row, "answer").strip(),
        "critique": text_field(row, "feedback").strip(),
        "revision": None,
        "id": row.get("id"),
        "meta": {**source, **meta_field(row), "source_format": NAME, "critique_only": True},
    }
    return [Feedback.from_dict(record)]
