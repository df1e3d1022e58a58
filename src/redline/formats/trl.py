"""TRL's dataset formats -> preference or demonstration records.

Origin: Hugging Face TRL, "Dataset formats and types" (https://huggingface.co/docs/trl/dataset_formats).
The type is told by the keys, and the style by the values, as TRL's ``is_conversational`` does: a
field is *standard* when it is a string and *conversational* when it is a list of messages::

    preference         {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}
                       {"prompt": [{"role": "user", "content": "What colour is the sky?"}],
                        "chosen": [{"role": "assistant", "content": "Blue."}],
                        "rejected": [{"role": "assistant", "content": "Green."}]}
    implicit prompt    {"chosen": [<user>, <assistant "Blue.">], "rejected": [<user>, <assistant "Green.">]}
    prompt-completion  {"prompt": "The sky is", "completion": " blue."}            (or conversational)
    language modeling  {"messages": [<system>, <user>, <assistant>, ..., <user>, <assistant>]}

1. ``prompt``/``chosen``/``rejected`` -> preference; a reply is the string itself, or the content of
   the one assistant message of a conversational reply.
2. ``chosen``/``rejected`` alone (implicit prompt) -> preference whose prompt is the messages both
   conversations share, as TRL's ``extract_prompt`` splits them; what follows must be one assistant
   message on each side.
3. ``prompt``/``completion`` -> demonstration.
4. ``messages`` -> demonstration: the response is the last assistant message, the prompt is every
   message before it.

Refused, with the reason: a *standard* implicit prompt (two strings): split at their common prefix
they would be cut inside a word, not between turns; unpaired preference (``label``), prompt-only and
``text`` rows, which hold no response or no comparison; a reply of more than one message. Strings are
kept exactly: TRL's standard fields are concatenated, so their spaces matter.
"""

from __future__ import annotations

from redline.records import Demonstration, FieldError, Preference, Record, meta_field, prompt_field, text_field

NAME = "trl"
KINDS = ("preference", "demonstration")


def convert(row: dict) -> list[Record]:
    """One TRL row -> one preference or demonstration record, by its keys."""
    base = {"id": row.get("id"), "meta": {**meta_field(row), "source_format": NAME}}
    if "chosen" in row and "rejected" in row:
        if "prompt" in row:  # step 1
            record = {"prompt": prompt_field(row), "chosen": _reply(row, "chosen"), "rejected": _reply(row, "rejected")}
        else:  # step 2
            record = _split_implicit_prompt(row)
        return [Preference.from_dict({**record, **base})]
    if "prompt" in row and "completion" in row:  # step 3
        if "label" in row:
            raise FieldError("label", "unpaired preference (KTO) rows have no redline record; pair them first")
        return [Demonstration.from_dict({"prompt": prompt_field(row), "response": _reply(row, "completion"), **base})]
    if "messages" in row:  # step 4
        messages = prompt_field(row, "messages")
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is None:
            raise FieldError("messages", "no assistant message to learn from")
        if last == 0:
            raise FieldError("messages", "nothing before the assistant message to use as the prompt")
        if last < len(messages) - 1:
            raise FieldError("messages", f"{len(messages) - 1 - last} message(s) after the last assistant reply")
        return [Demonstration.from_dict({"prompt": messages[:last], "response": messages[last]["content"], **base})]
    keys = ", ".join(sorted(row)) or "none"
    raise FieldError(
        "<record>",
        f"no TRL format has these keys ({keys}): expected prompt/chosen/rejected, chosen/rejected, "
        "prompt/completion or messages",
    )


def _reply(row: dict, name: str) -> str:
    """A standard reply (a string) or a conversational one (a list of one assistant message)."""
    if not isinstance(row.get(name), list):
        return text_field(row, name)
    messages = prompt_field(row, name)
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        roles = ", ".join(m["role"] for m in messages)
        raise FieldError(name, f"expected one assistant message, got {len(messages)} ({roles})")
    return messages[0]["content"]


def _split_implicit_prompt(row: dict) -> dict:
    if not (isinstance(row.get("chosen"), list) and isinstance(row.get("rejected"), list)):
        raise FieldError(
            "prompt",
            "missing; an implicit prompt can only be split off conversations (chosen and rejected as "
            "lists of messages), not off strings",
        )
    chosen, rejected = prompt_field(row, "chosen"), prompt_field(row, "rejected")
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if chosen == rejected:  # an identical pair (kept and counted): the prompt ends before the last turn
        shared = len(chosen) - 1
    if shared == 0:
        raise FieldError("prompt", "missing, and chosen and rejected share no opening message to use as one")
    for name, conversation in (("chosen", chosen), ("rejected", rejected)):
        rest = conversation[shared:]
        if len(rest) != 1 or rest[0]["role"] != "assistant":
            raise FieldError(name, f"{len(rest)} message(s) after the shared prompt; expected one assistant reply")
    return {"prompt": chosen[:shared], "chosen": chosen[shared]["content"], "rejected": rejected[shared]["content"]}
