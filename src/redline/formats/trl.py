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

The H4 shape (``HuggingFaceH4/ultrafeedback_binarized``): a string ``prompt`` beside conversational
``chosen``/``rejected`` that repeat it as their first turn::

    H4                 {"prompt": "What colour is the sky?", "chosen": [<user>, <assistant "Blue.">],
                        "rejected": [<user>, <assistant "Green.">]}

1. ``chosen``/``rejected`` -> preference, by TRL's ``maybe_extract_prompt`` rule: an explicit
   ``prompt`` is used when it and ``chosen`` are of one style (both strings or both conversations),
   when it is a conversation beside string replies (redline's own layout, as ``as_kind`` reads it), and
   when it is a string beside conversational replies that open with the assistant (no turn to split off);
   otherwise (no prompt, or the H4 shape) the prompt is the messages both conversations share, as
   TRL's ``extract_prompt`` splits them, and what follows must be one assistant message on each side.
   A reply is the string itself, or the content of the one assistant message of a conversational reply.
2. ``prompt``/``completion`` -> demonstration.
3. ``messages`` -> demonstration: the response is the last assistant message, the prompt is every
   message before it (earlier assistant turns included: ``train sft`` trains on every one of them).

Refused, with the reason: a *standard* implicit prompt (two strings): split at their common prefix
they would be cut inside a word, not between turns; unpaired preference (``label``), prompt-only and
``text`` rows, which hold no response or no comparison; a reply of more than one message. Strings are
kept exactly: TRL's standard fields are concatenated, so their spaces matter.

``as_kind`` applies the same rules when a trainer or ``data validate`` reads a TRL file directly
(``records.read_records``), so a TRL data set needs no import step; a row of another layout than the
kind asked for is refused with the layout it has and the kind that reads it.
"""

from __future__ import annotations

from redline.records import Demonstration, FieldError, Preference, Record, meta_field, prompt_field, text_field

NAME = "trl"
KINDS = ("preference", "demonstration")
COLUMNS = ("prompt", "chosen", "rejected", "completion", "messages", "id", "meta")


def used_columns(row: dict) -> tuple[str, ...]:
    """The columns a row's layout reads; another layout's beside them is not read (``messages`` beside
    ``chosen``, as in H4's rows; ``prompt`` beside ``messages``, as in ultrachat's)."""
    if "chosen" in row and "rejected" in row:
        return ("prompt", "chosen", "rejected", "id", "meta")
    if "prompt" in row and "completion" in row:
        return ("prompt", "completion", "id", "meta")
    return ("messages", "id", "meta")


def extra_meta(row: dict) -> dict:
    """Columns beside the layout's that hold one value (a score, a source, a data set's name): kept in
    ``meta`` by their names. Others (H4's ``messages`` beside ``chosen``) are dropped and named."""
    return {k: v for k, v in row.items() if k not in COLUMNS and isinstance(v, (str, int, float, bool))}


def convert(row: dict) -> list[Record]:
    """One TRL row -> one preference or demonstration record, by its keys."""
    base = {"id": row.get("id"), "meta": {**extra_meta(row), **meta_field(row), "source_format": NAME}}
    if "chosen" in row and "rejected" in row:  # step 1
        return [Preference.from_dict({**preference_fields(row), **base})]
    if ("prompt" in row and "completion" in row) or "messages" in row:  # steps 2 and 3
        return [Demonstration.from_dict({**demonstration_fields(row), **base})]
    keys = ", ".join(sorted(row)) or "none"
    raise FieldError(
        "<record>",
        f"no TRL format has these keys ({keys}): expected prompt/chosen/rejected, chosen/rejected, "
        "prompt/completion or messages",
    )


def is_conversational(value) -> bool:
    """TRL's test of a field's style: a list whose first item is a message (a dict with a role)."""
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict) and "role" in value[0]


def preference_fields(row: dict) -> dict:
    """Step 1: prompt, chosen and rejected of a TRL preference row, explicit or implicit prompt."""
    # A chat prompt beside string replies is redline's own layout (``as_kind`` reads it as it is), not TRL's:
    # TRL would split string replies at their common prefix, which step 1 refuses.
    # Replies that open with the assistant hold no prompt turn to split off: the prompt is the explicit one.
    if "prompt" in row and (is_conversational(row["prompt"]) or not is_conversational(row["chosen"])
                            or row["chosen"][0]["role"] == "assistant"):
        return {"prompt": prompt_field(row), "chosen": _reply(row, "chosen"), "rejected": _reply(row, "rejected")}
    return _split_implicit_prompt(row)


def demonstration_fields(row: dict) -> dict:
    """Steps 2 and 3: prompt and response of a prompt-completion or messages row."""
    if "prompt" in row and "completion" in row:
        if "label" in row:
            raise FieldError("label", "unpaired preference (KTO) rows have no redline record; pair them first")
        return {"prompt": prompt_field(row), "response": _reply(row, "completion")}
    if "messages" in row and not isinstance(row["messages"], list):  # a string would read as a one-text prompt
        raise FieldError("messages", f"expected a list of messages, got {type(row['messages']).__name__}")
    messages = prompt_field(row, "messages")
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        raise FieldError("messages", "no assistant message to learn from")
    if last == 0:
        raise FieldError("messages", "nothing before the assistant message to use as the prompt")
    if last < len(messages) - 1:
        raise FieldError("messages", f"{len(messages) - 1 - last} message(s) after the last assistant reply")
    if not messages[last]["content"].strip():  # else refused as the "response" field, which the row does not have
        raise FieldError(f"messages[{last}].content", "empty string where text is needed (the last assistant reply)")
    return {"prompt": messages[:last], "response": messages[last]["content"]}


# What each kind's own layout needs; a row without them may be in a TRL layout.
_OWN_KEYS = {"demonstration": ("response",), "preference": ("prompt", "chosen", "rejected")}


def layout(row: dict) -> tuple[str, str | None]:
    """(TRL's name for the row's layout, the redline kind that reads it or None), by its keys."""
    if "chosen" in row and "rejected" in row:
        return "preference", "preference"
    if "prompt" in row and "completion" in row:
        return ("unpaired preference", None) if "label" in row else ("prompt-completion", "demonstration")
    if "messages" in row:
        return "conversational language modeling", "demonstration"
    if "text" in row:
        return "language modeling", None
    if "prompt" in row:
        return "prompt-only", None
    return "", None


def as_kind(row, kind: str):
    """A row as the fields of ``kind``: a TRL layout is converted (``id`` and ``meta`` kept), a row in
    redline's own layout comes back unchanged, and a row of another layout is one clear error."""
    if not isinstance(row, dict) or kind not in _OWN_KEYS:
        return row
    name, reads_as = layout(row)
    own = all(k in row for k in _OWN_KEYS[kind])
    if kind == "preference" and own and not (is_conversational(row["chosen"]) or is_conversational(row["rejected"])):
        return row
    if kind == "demonstration" and own:
        return row
    if reads_as == kind:
        fields = preference_fields(row) if kind == "preference" else demonstration_fields(row)
        return {**row, **fields}
    if name and name != "prompt-only":  # a prompt alone is more likely a record missing a field
        what = f"redline reads it as {reads_as} records (--kind {reads_as})" if reads_as else "no redline kind reads it"
        missing = next(k for k in _OWN_KEYS[kind] if k not in row)
        raise FieldError(missing, f"missing (this row is in TRL's {name} layout, not a {kind}; {what})")
    return row


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
    if not (is_conversational(row.get("chosen")) and is_conversational(row.get("rejected"))):
        hh = isinstance(row.get("chosen"), str) and row["chosen"].lstrip().startswith("Human:")
        raise FieldError(
            "prompt",
            "missing; an implicit prompt can only be split off conversations (chosen and rejected as "
            "lists of messages), not off strings"
            + (" (these are HH-RLHF transcripts: `redline data import --from hh-rlhf`)" if hh else ""),
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
