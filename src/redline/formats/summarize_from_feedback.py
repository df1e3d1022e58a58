"""OpenAI summarize-from-feedback comparisons -> preference records.

Origin: Stiennon et al. 2020, "Learning to summarize from human feedback" (arXiv 2009.01325); the
``comparisons`` files of openai/summarize-from-feedback, also on the hub as
``openai/summarize_from_feedback`` (config ``comparisons``)::

    {"info": {"id": "t3_1b2c3d", "post": "My cat ...", "title": "Cat help", "subreddit": "pets"},
     "summaries": [{"text": " cat sad", "policy": "sup2"}, {"text": " my cat hides", "policy": "ref"}],
     "choice": 1, "worker": "w17", "batch": "batch5", "split": "train", "extra": {"confidence": 8}}

becomes::

    {"prompt": "SUBREDDIT: r/pets\\n\\nTITLE: Cat help\\n\\nPOST: My cat ...\\n\\nTL;DR:",
     "chosen": "my cat hides", "rejected": "cat sad",
     "meta": {"source_format": "summarize-from-feedback", "post_id": "t3_1b2c3d", "batch": "batch5",
              "split": "train", "worker": "w17", "chosen_policy": "ref", "rejected_policy": "sup2",
              "confidence": 8}}

1. The prompt is the paper's query format: ``SUBREDDIT/TITLE/POST ... TL;DR:`` for Reddit posts, and
   for the CNN/DM rows (``info.article`` instead of ``info.post``) ``TITLE ... TL;DR:`` as TRL's
   ``tldr_preference`` script writes it.
2. ``summaries[choice]`` is chosen, the other one rejected; summaries are stripped (they start with
   the space that followed ``TL;DR:``).
3. ``info.id`` names the post, which several comparisons share, so it goes to ``meta.post_id``, not to
   the record's id (which must be unique in a file); a row's own ``id``, if any, is kept as the id.
   What no step reads is kept in meta, not dropped (nulls left out): ``info``'s other keys (the news rows'
   ``site``) in ``meta.info``, ``extra``'s other than confidence in ``meta.extra``, and each summary's other
   keys (its ``note``) in ``meta.chosen_summary`` / ``meta.rejected_summary``.
"""

from __future__ import annotations

from redline.records import FieldError, Preference, Record, meta_field, text_field

NAME = "summarize-from-feedback"
KINDS = ("preference",)
COLUMNS = ("info", "summaries", "choice", "worker", "batch", "split", "extra", "id", "meta")

REDDIT_PROMPT = "SUBREDDIT: r/{subreddit}\n\nTITLE: {title}\n\nPOST: {post}\n\nTL;DR:"
NEWS_PROMPT = "TITLE: {title}\n\n{article}\n\nTL;DR:"
INFO_READ = ("id", "post", "title", "subreddit", "article")  # the rest of info goes to meta.info


def convert(row: dict) -> list[Record]:
    """One comparison -> one preference record."""
    info = _object(row, "info")
    # step 1
    try:
        if info.get("post") is not None:
            prompt = REDDIT_PROMPT.format(
                subreddit=text_field(info, "subreddit").strip(),
                title=text_field(info, "title").strip(),
                post=text_field(info, "post").strip(),
            )
        elif info.get("article") is not None:
            prompt = NEWS_PROMPT.format(title=text_field(info, "title").strip(), article=text_field(info, "article").strip())
        else:
            raise FieldError("post", "missing (and no article either: neither a Reddit nor a CNN/DM row)")
    except FieldError as e:
        raise FieldError(f"info.{e.field}", e.reason) from None
    # step 2
    summaries = row.get("summaries")
    if not isinstance(summaries, list) or len(summaries) != 2:
        got = f"{len(summaries)} items" if isinstance(summaries, list) else type(summaries).__name__
        raise FieldError("summaries", f"expected a list of 2 summaries, got {got}")
    texts = []
    for i, summary in enumerate(summaries):
        if not isinstance(summary, dict):
            raise FieldError(f"summaries[{i}]", f"expected an object, got {type(summary).__name__}")
        try:
            texts.append(text_field(summary, "text").strip())
        except FieldError as e:
            raise FieldError(f"summaries[{i}].{e.field}", e.reason) from None
    choice = row.get("choice")
    if not isinstance(choice, int) or isinstance(choice, bool) or choice not in (0, 1):
        raise FieldError("choice", f"expected 0 or 1, got {choice!r}")
    # step 3
    extra = row.get("extra") if isinstance(row.get("extra"), dict) else {}
    meta = {
        "post_id": info.get("id"),
        "batch": row.get("batch"),
        "split": row.get("split"),
        "worker": row.get("worker"),
        "chosen_policy": summaries[choice].get("policy"),
        "rejected_policy": summaries[1 - choice].get("policy"),
        "confidence": extra.get("confidence"),
    }
    # what the steps above did not read is kept, not dropped: the news rows' info.site, a summary's note, extra.*
    rest = {"info": {k: v for k, v in info.items() if k not in INFO_READ},
            "extra": {k: v for k, v in extra.items() if k != "confidence"},
            "chosen_summary": {k: v for k, v in summaries[choice].items() if k not in ("text", "policy")},
            "rejected_summary": {k: v for k, v in summaries[1 - choice].items() if k not in ("text", "policy")}}
    meta.update({name: {k: v for k, v in kept.items() if v is not None} for name, kept in rest.items()})
    record = {
        "prompt": prompt,
        "chosen": texts[choice],
        "rejected": texts[1 - choice],
        "id": row.get("id"),
        "meta": {**meta_field(row), **{k: v for k, v in meta.items() if v not in (None, {})}, "source_format": NAME},
    }
    return [Preference.from_dict(record)]


def _object(row: dict, name: str) -> dict:
    if name not in row:
        raise FieldError(name, "missing")
    if not isinstance(row[name], dict):
        raise FieldError(name, f"expected an object, got {type(row[name]).__name__}")
    return row[name]
