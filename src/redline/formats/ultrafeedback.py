"""UltraFeedback -> ranking records, and critique-only feedback records beside them.

Origin: Cui et al. 2023, "UltraFeedback: Boosting Language Models with High-quality Feedback"
(arXiv 2310.01377); the data set ``openbmb/UltraFeedback`` (as fixed on 2023-12-29). A row::

    {"source": "sharegpt", "instruction": "I am going to Cairo ...",
     "completions": [{"model": "gpt-4", "principle": "helpfulness", "custom_system_prompt": "...",
                      "response": "In Cairo for 4-5 days ...",
                      "annotations": {"instruction_following": {"Rating": "5", "Rationale": "..."},
                                      "honesty": {"Rating": "5", ...}, "truthfulness": {...},
                                      "helpfulness": {"Rating": "4", "Type": [...], ...}},
                      "critique": "Your answer is ...", "overall_score": 8.5, "fine-grained_score": 4.75},
                     ... three more completions ...]}

becomes one ranking (to OUTPUT) and a feedback record per completion (to OUTPUT.feedback.jsonl)::

    {"prompt": "I am going to Cairo ...", "responses": ["Cairo is ...", "In Cairo ...", ...],
     "ranks": [2, 0, 1, 0], "meta": {"source_format": "ultrafeedback", "prompt_source": "sharegpt",
                                     "score": "fine-grained_score", "scores": [...], "models": [...]}}
    {"prompt": "I am going to Cairo ...", "response": "In Cairo ...", "critique": "Your answer is ...",
     "revision": null, "meta": {"source_format": "ultrafeedback", "model": "gpt-4", "critique_only": true, ...}}

Steps, numbered the same in ``convert``:
1. Each completion's score is its ``fine-grained_score`` by default: the mean of the four aspect
   ratings ("N/A" left out), computed from ``annotations`` where the field is absent. The paper's
   UltraRM learns from these ratings, and ``overall_score`` (the critique's 1-10 grade) had to be
   repaired once (UltraFeedback issue #8). ``score="overall"`` ranks by ``overall_score`` instead.
2. Ranks are dense: 0 for the highest score, equal scores share a rank.
3. A completion with an empty response or no score is left out of the ranking, and a prompt with
   fewer than 2 ranked completions, or whose completions all tie, yields no ranking; each is counted
   in ``left_out`` (the import prints the counts).
4. Each completion with a critique yields a critique-only feedback record. Its prompt is the
   instruction alone: the principle's system prompt differed per completion, so it stays in meta.
Texts are stripped.

The binarized variant ``HuggingFaceH4/ultrafeedback_binarized`` (splits ``train_prefs`` and
``test_prefs``), told by ``chosen``/``rejected`` in place of ``completions``, is a preference already::

    {"prompt": "...", "prompt_id": "0a1b", "chosen": [<user>, <assistant "Sure ...">],
     "rejected": [<user>, <assistant "No.">], "score_chosen": 8.0, "score_rejected": 5.0}
    -> {"id": "0a1b", "prompt": "...", "chosen": "Sure ...", "rejected": "No.",
        "meta": {"source_format": "ultrafeedback", "score_chosen": 8.0, "score_rejected": 5.0}}

A reply is the last message of its conversation, after the prompt's user turn (or alone); a pair with other
turns before it (multi-turn) is refused: ``--from trl`` splits off the turns both sides share.

H4 drew the rejected completion at random from the other three, so some pairs score the same
(``score_chosen == score_rejected``; the data set's discussion #5): a tie, not a preference. Such a pair
is left out and counted in ``left_out``, as a prompt whose completions all tie is; a pair whose two
replies are the same text is kept (an anchor, counted by the import).
"""

from __future__ import annotations

import math
from collections import Counter

from redline.records import FieldError, Feedback, Preference, Ranking, Record, dense_ranks, meta_field, prompt_field, text_field

NAME = "ultrafeedback"
KINDS = ("ranking", "preference", "feedback")
SCORES = {"fine-grained": "fine-grained_score", "overall": "overall_score"}
# What a row may hold (both variants); the import names any other column it drops. ``models``
# repeats each completion's own ``model``; TruthfulQA's reference answers go to meta.
COLUMNS = ("source", "instruction", "completions", "models", "correct_answers", "incorrect_answers",
           "prompt", "prompt_id", "chosen", "rejected", "score_chosen", "score_rejected", "id", "meta")


def convert(row: dict, *, score: str = "fine-grained", left_out: Counter | None = None) -> list[Record]:
    """One UltraFeedback row -> a ranking (if any) and its feedback records; a binarized row -> a preference.

    ``left_out``, when given, counts what the row held that no record carries (ties, unscored completions).
    """
    left_out = left_out if left_out is not None else Counter()
    if "completions" not in row and "chosen" in row and "rejected" in row:
        return _binarized(row, left_out)
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r} (expected one of {', '.join(SCORES)})")
    prompt = text_field(row, "instruction").strip()
    completions = row.get("completions")
    if not isinstance(completions, list):
        raise FieldError("completions", "missing" if completions is None else "expected a list of completions")
    meta = {**meta_field(row), "source_format": NAME}
    if isinstance(row.get("source"), str):
        meta["prompt_source"] = row["source"]
    for key in ("correct_answers", "incorrect_answers"):  # TruthfulQA's references: how to check an answer
        if row.get(key):
            meta[key] = row[key]

    responses, scores, models, feedback = [], [], [], []
    for i, completion in enumerate(completions):
        where = f"completions[{i}]"
        if not isinstance(completion, dict):
            raise FieldError(where, f"expected an object, got {type(completion).__name__}")
        response = _optional_text(completion, "response", where)
        if not response:
            left_out["completions with an empty response"] += 1
            continue
        # step 1
        value = _score(completion, SCORES[score], where)
        if value is None:
            left_out["completions with no score"] += 1
        else:
            responses.append(response)
            scores.append(value)
            models.append(completion.get("model"))
        # step 4
        critique = _optional_text(completion, "critique", where)
        if not critique:
            left_out["completions with no critique"] += 1
            continue
        feedback_meta = {**meta, "critique_only": True, "completion": i}
        for key in ("model", "principle", "custom_system_prompt", "overall_score", "fine-grained_score"):
            if completion.get(key) is not None:
                feedback_meta[key] = completion[key]
        feedback.append(
            Feedback.from_dict(
                {
                    "prompt": prompt,
                    "response": response,
                    "critique": critique,
                    "revision": None,
                    "id": None if row.get("id") is None else f"{row['id']}-{i}",
                    "meta": feedback_meta,
                }
            )
        )

    # steps 2 and 3
    ranking = []
    if len(responses) < 2:
        left_out["prompts with fewer than 2 scored completions"] += 1
    elif len(set(scores)) == 1:
        left_out["prompts whose completions all tie"] += 1
    else:
        ranking_meta = {**meta, "score": SCORES[score], "scores": scores, "models": models}
        record = {"prompt": prompt, "responses": responses, "ranks": dense_ranks(scores, highest_best=True), "id": row.get("id")}
        ranking = [Ranking.from_dict({**record, "meta": ranking_meta})]
    return ranking + feedback


def mean_rating(annotations: object, where: str) -> float | None:
    """The mean of the aspects' ``Rating`` ("N/A" and absent aspects left out), as UltraFeedback computes it."""
    if not isinstance(annotations, dict):
        return None
    ratings = []
    for aspect, value in annotations.items():
        if value is None:  # an aspect a Parquet schema holds but this completion lacks
            continue
        if not isinstance(value, dict):
            raise FieldError(f"{where}.annotations.{aspect}", f"expected an object, got {type(value).__name__}")
        rating = value.get("Rating")
        if rating is None or rating == "N/A":
            continue
        try:
            ratings.append(float(rating))
        except (TypeError, ValueError):
            raise FieldError(f"{where}.annotations.{aspect}.Rating", f"not a number: {rating!r}") from None
        if not math.isfinite(ratings[-1]):  # "nan" and "inf" parse, and would order the ranks at random
            raise FieldError(f"{where}.annotations.{aspect}.Rating", f"not a finite number: {rating!r}")
    return sum(ratings) / len(ratings) if ratings else None


def _score(completion: dict, field: str, where: str) -> float | None:
    value = completion.get(field)
    if value is None and field == "fine-grained_score":
        return mean_rating(completion.get("annotations"), where)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FieldError(f"{where}.{field}", f"expected a number, got {type(value).__name__}")
    if not math.isfinite(value):  # JSON's NaN and Infinity parse in Python, and would order the ranks at random
        raise FieldError(f"{where}.{field}", f"not a finite number: {value!r}")
    return float(value)


def _optional_text(obj: dict, name: str, where: str) -> str:
    """The stripped text of a field that must be there, but may be null or empty ('' then)."""
    if name not in obj:
        raise FieldError(f"{where}.{name}", "missing")
    value = obj[name]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise FieldError(f"{where}.{name}", f"expected a string, got {type(value).__name__}")
    return value.strip()


def _binarized(row: dict, left_out: Counter) -> list[Record]:
    meta = {**meta_field(row), "source_format": NAME}
    for key in ("score_chosen", "score_rejected"):
        if row.get(key) is not None:
            meta[key] = row[key]
    prompt = text_field(row, "prompt").strip()
    record = {
        "prompt": prompt,
        "chosen": _final_reply(row, "chosen", prompt),
        "rejected": _final_reply(row, "rejected", prompt),
        "id": row.get("id") if row.get("id") is not None else row.get("prompt_id"),
        "meta": meta,
    }
    preference = Preference.from_dict(record)
    # H4 took the best completion as chosen and a random other as rejected, which can score the same: a tie,
    # not a preference (as a prompt whose completions all tie yields no ranking). An identical pair stays an anchor.
    scores = [row.get("score_chosen"), row.get("score_rejected")]
    if all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scores) and scores[0] == scores[1] \
            and not preference.identical:
        left_out["binarized pairs whose scores tie"] += 1
        return []
    return [preference]


def _final_reply(row: dict, name: str, prompt: str) -> str:
    """The reply to ``prompt``: a plain string, or a conversation of the prompt's user turn (or none) and then
    the assistant's. Other turns before it would make the reply one to another conversation than the prompt."""
    if not isinstance(row.get(name), list):
        return text_field(row, name).strip()
    messages = prompt_field(row, name)
    if messages[-1]["role"] != "assistant":
        raise FieldError(name, f"the last message is the {messages[-1]['role']}'s, not the assistant's")
    before = messages[:-1]
    if before and (len(before) > 1 or before[0]["role"] != "user" or before[0]["content"].strip() != prompt):
        raise FieldError(name, f"the {len(before)} message(s) before the reply are not the prompt's user turn "
                         "(a multi-turn pair: `redline data import --from trl` splits off the turns both sides share)")
    return messages[-1]["content"].strip()
