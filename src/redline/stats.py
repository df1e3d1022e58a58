"""`redline data stats`: what a record file holds, in numbers.

Counts, token-length distributions of every text field (in tokens of the embedded model's
tokenizer by default), ties in rankings, critique-only feedback, and duplicates (repeated prompts,
repeated whole records, preferences whose chosen equals rejected).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from redline.records import Feedback, Preference, Ranking, Record, ValidateConfig, prompt_key


@dataclass
class StatsConfig(ValidateConfig):
    """`redline data stats`: the record file as `data validate` reads it, and the tokenizer that counts lengths."""

    tokenizer: str = field(default="embedded", metadata={"help": "tokenizer for lengths (a model name, 'embedded', 'tiny-random')"})


def _distribution(lengths: list[int]) -> dict[str, float]:
    if not lengths:
        return {}
    ordered = sorted(lengths)
    return {
        "min": ordered[0],
        "mean": round(statistics.fmean(ordered), 1),
        "median": statistics.median(ordered),
        "p90": ordered[(9 * len(ordered) + 9) // 10 - 1],  # nearest rank: the ceil(0.9 n)-th smallest
        "max": ordered[-1],
    }


def _texts(record: Record) -> dict[str, list[str]]:
    """The text fields of a record, by field name (a ranking's responses pooled under one name)."""
    out: dict[str, list[str]] = {}
    for name, value in record.to_dict().items():
        if name in ("id", "meta", "judge", "winner", "order", "source", "ranks"):
            continue
        if name == "prompt" and isinstance(value, list):
            value = "\n".join(m["content"] for m in value)
        if isinstance(value, str):
            out[name] = [value]
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            out[name] = value
    return out


def record_stats(records: Sequence[Record], tokenizer: Any = "embedded", progress: bool = True) -> dict[str, Any]:
    """Numbers that describe ``records``; ``tokenizer`` is a model name or a tokenizer object. Counting the tokens
    shows a bar on stderr (``progress``): 200k preferences take minutes."""
    from tqdm.auto import tqdm

    if isinstance(tokenizer, str):
        from redline.models import load_tokenizer

        tokenizer = load_tokenizer(tokenizer)
    kind = records[0].kind if records else None
    lengths: dict[str, list[int]] = {}
    for record in tqdm(records, desc="counting tokens", unit="record", disable=not progress, file=sys.stderr):
        for name, texts in _texts(record).items():
            ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
            lengths.setdefault(name, []).extend(len(x) for x in ids)

    prompts = Counter(prompt_key(r.prompt) for r in records)
    whole = Counter(json.dumps({k: v for k, v in r.to_dict().items() if k != "id"}, sort_keys=True) for r in records)
    stats: dict[str, Any] = {
        "kind": kind,
        "records": len(records),
        "unique_prompts": len(prompts),
        "duplicate_prompts": sum(c - 1 for c in prompts.values() if c > 1),
        "duplicate_records": sum(c - 1 for c in whole.values() if c > 1),
        "tokens": {name: _distribution(v) for name, v in lengths.items()},
    }
    rankings = [r for r in records if isinstance(r, Ranking)]
    if rankings:
        stats["responses_per_ranking"] = dict(sorted(Counter(len(r.responses) for r in rankings).items()))
        stats["comparisons"] = sum(len(r.comparisons()) for r in rankings)
        stats["tied_pairs"] = sum(r.n_ties() for r in rankings)
        stats["rankings_with_ties"] = sum(1 for r in rankings if r.n_ties())
    preferences = [r for r in records if isinstance(r, Preference)]
    if preferences:
        stats["chosen_equals_rejected"] = sum(1 for r in preferences if r.identical)
    feedback = [r for r in records if isinstance(r, Feedback)]
    if feedback:
        stats["critique_only"] = sum(1 for r in feedback if r.critique_only)
        # as `train critic --unchanged-share` counts them: whitespace aside (a trailing newline is no edit)
        stats["revision_equals_response"] = sum(1 for r in feedback if r.unchanged)
    return stats
