r"""Anthropic HH-RLHF transcripts -> preference records.

Origin: the ``Anthropic/hh-rlhf`` data set, from Bai et al. 2022, "Training a Helpful and Harmless
Assistant with Reinforcement Learning from Human Feedback" (arXiv 2204.05862). A row holds two whole
transcripts that share every turn but the last::

    {"chosen":   "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: A joke?\n\nAssistant: Why did ...",
     "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: A joke?\n\nAssistant: No."}

becomes::

    {"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "A joke?"}],
     "chosen": "Why did ...", "rejected": "No.", "meta": {"source_format": "hh-rlhf"}}

Steps, numbered the same in ``convert``:
1. Split each transcript at ``\n\nHuman:`` / ``\n\nAssistant:`` (``\r\n\r\n`` in a transcript written with
   Windows line breaks) into messages (user / assistant); the text of each turn is stripped, its surrounding
   whitespace belongs to the separators.
2. The prompt is every turn before the final Assistant turn; it must end with a Human turn.
3. Transcripts that differ before the final Assistant turn are refused (``rejected: diverges from
   chosen at turn N``): the annotator then compared replies in two different conversations, and no
   single prompt is right for both; guessing one would teach the reward model a preference nobody
   gave. ``--skip-invalid`` skips and counts them.
"""

from __future__ import annotations

import re

from redline.records import FieldError, Preference, Record, meta_field, text_field

NAME = "hh-rlhf"
KINDS = ("preference",)
COLUMNS = ("chosen", "rejected", "id", "meta")  # what a row may hold; the import names any other it drops

_TURN = re.compile(r"\r?\n\r?\n(Human|Assistant):")  # CRLF read a whole chat as one Human turn, "ends with a Human turn"
_ROLES = {"Human": "user", "Assistant": "assistant"}


def convert(row: dict) -> list[Record]:
    """One HH-RLHF row -> one preference record (``FieldError`` names the bad field)."""
    # step 1
    chosen = parse_transcript(text_field(row, "chosen"), "chosen")
    rejected = parse_transcript(text_field(row, "rejected"), "rejected")
    # step 2
    prompt = chosen[:-1]
    if prompt[-1]["role"] != "user":
        raise FieldError("chosen", "the final Assistant turn follows another Assistant turn, not a Human one")
    # step 3
    if rejected[:-1] != prompt:
        turn = next(
            (i for i, (a, b) in enumerate(zip(prompt, rejected[:-1])) if a != b),
            min(len(prompt), len(rejected) - 1),
        )
        raise FieldError(
            "rejected",
            f"diverges from chosen at turn {turn + 1}, before the final Assistant turn "
            f"(only the final turn may differ)",
        )
    record = {
        "prompt": prompt,
        "chosen": chosen[-1]["content"],
        "rejected": rejected[-1]["content"],
        "id": row.get("id"),
        "meta": {**meta_field(row), "source_format": NAME},
    }
    return [Preference.from_dict(record)]


def parse_transcript(text: str, field: str) -> list[dict[str, str]]:
    """``"\\n\\nHuman: a\\n\\nAssistant: b"`` -> user/assistant messages, ending with the assistant."""
    # A transcript that starts with "Human:" without the leading blank line is read the same way.
    parts = _TURN.split("\n\n" + text.lstrip())
    # parts = [text before the first turn, role, content, role, content, ...]
    if len(parts) < 3 or parts[0].strip():
        raise FieldError(field, "not an HH transcript: expected it to open with '\\n\\nHuman:'")
    messages = [{"role": _ROLES[role], "content": content.strip()} for role, content in zip(parts[1::2], parts[2::2])]
    if messages[0]["role"] != "user":
        raise FieldError(field, "opens with an Assistant turn; a transcript opens with 'Human:'")
    if messages[-1]["role"] != "assistant":
        raise FieldError(field, "ends with a Human turn: there is no final Assistant reply to compare")
    return messages
