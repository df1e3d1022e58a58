"""Judges: for a prompt and two responses, which is better, A or B, or a tie?

One interface for every judge. A judge has a ``name`` (written into each judgment), a flag
``both_orders`` (True when it asks in both orders itself, so the caller must not shuffle), and

    judge.check()               # fail early with a RedlineError (a server that does not answer ...)
    check_records(judge, recs)  # ... and for records it cannot judge (the oracle: no meta.instructions)
    judge.judge_many(items)     # list[Item] -> list[Verdict], one per item, in order
    judge.close()

An ``Item`` holds the prompt, the response shown first (``a``) and second (``b``), and the meta
of the records (the oracle reads its instructions there). A ``Verdict`` is ``a``, ``b``, ``tie``
or ``invalid`` with the judge's raw output kept. Invalid means the judge could not say (a call
that failed for good, an answer that does not parse): it is never counted as a loss.

Judges, built from a spec string by ``parse_judge`` (options after ``?``, joined by ``&``):

    oracle                         the simulated annotators' oracle, noise off
    oracle:noisy                   ... with the annotators' noise (also ``oracle?noise=0.25&seed=1``)
    reward:RUN_OR_MODEL            a reward model (``?margin=0.1&batch_size=16&device=cpu&max_length=384``)
    openai:MODEL@BASE_URL          an LLM behind an OpenAI-compatible API, asked in both orders
                                   (``?key_env=NAME&concurrency=4&retries=5&timeout=60&cache=PATH``)

``openai:MODEL`` without ``@BASE_URL`` talks to ``https://api.openai.com/v1``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from redline import RedlineError
from redline.records import Prompt

WINNERS = ("a", "b", "tie", "invalid")


@dataclass
class Item:
    """One comparison as the judge sees it: ``a`` is shown first, ``b`` second."""

    prompt: Prompt
    a: str
    b: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Verdict:
    winner: str  # a, b, tie or invalid (in the item's a/b)
    raw: str = ""  # what the judge said, as it said it
    detail: dict[str, Any] = field(default_factory=dict)  # judge-specific: scores, both orders ...

    def __post_init__(self):
        if self.winner not in WINNERS:
            raise ValueError(f"verdict {self.winner!r} is not one of {', '.join(WINNERS)}")


class Judge(Protocol):
    name: str
    both_orders: bool

    def check(self) -> None: ...

    def judge_many(self, items: Sequence[Item]) -> list[Verdict]: ...

    def close(self) -> None: ...


def check_records(judge: Judge, records: Sequence[Any], where: str = "") -> None:
    """Before any model loads: records (anything with ``meta`` and ``id``) the judge cannot judge are one error.
    A judge says what it needs of a record by a ``needs(meta) -> str | None`` method (the oracle's
    instructions); judges without one take any record."""
    needs = getattr(judge, "needs", None)
    if needs is None:
        return
    missing = [(r, why) for r in records if (why := needs(r.meta or {}))]
    if missing:
        first, why = missing[0]
        raise RedlineError(f"{where + ': ' if where else ''}{len(missing)} of {len(records)} records cannot be judged by "
                           f"{judge.name}: {why} (first: id {first.id!r})")


def swap_winner(winner: str) -> str:
    """The same verdict with the two sides exchanged (a <-> b; tie and invalid stay)."""
    return {"a": "b", "b": "a"}.get(winner, winner)


def _split_options(rest: str, spec: str, allowed: dict[str, type]) -> tuple[str, dict[str, Any]]:
    body, _, query = rest.partition("?")
    options: dict[str, Any] = {}
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if key not in allowed:
            raise RedlineError(
                f"judge {spec!r}: unknown option {key!r} (this judge takes {', '.join(sorted(allowed)) or 'no options'})"
            )
        if not eq:
            raise RedlineError(f"judge {spec!r}: option {key!r} needs a value ({key}=...)")
        try:
            options[key] = allowed[key](value)
        except ValueError:
            raise RedlineError(f"judge {spec!r}: option {key}={value!r} is not a {allowed[key].__name__}") from None
        if allowed[key] is float and not math.isfinite(options[key]):  # nan passes every range check below it
            raise RedlineError(f"judge {spec!r}: option {key}={value!r} is not a finite number")
    return body, options


JUDGE_SPECS = "oracle, oracle:noisy, reward:RUN_OR_MODEL, openai:MODEL@BASE_URL"


def parse_judge(spec: str, **overrides: Any) -> Judge:
    """Build the judge a spec string names; ``overrides`` (from CLI options) win over the spec's own.

    Raises ``RedlineError`` for a spec that does not parse. Nothing is loaded or called here
    beyond constructing the judge; ``check()`` is where a server is asked whether it is there.
    """
    match = re.match(r"^([a-z]+)(?::(.*)|(\?.*))?$", spec.strip(), re.DOTALL)
    if not match:
        raise RedlineError(f"judge {spec!r} does not parse; expected one of: {JUDGE_SPECS}")
    kind, rest = match.group(1), match.group(2) or match.group(3) or ""
    if kind == "oracle":
        body, options = _split_options(rest, spec, {"noise": float, "seed": int})
        if body not in ("", "noisy"):
            raise RedlineError(f"judge {spec!r}: the oracle takes 'oracle' or 'oracle:noisy', not {body!r}")
        from redline.judges.oracle import OracleJudge

        options = {**options, **overrides}
        if body == "noisy" and "noise" not in options:
            options["noise"] = None  # the annotators' own default noise
        elif body == "":
            options.setdefault("noise", 0.0)
        return OracleJudge(**options)
    if kind == "reward":
        body, options = _split_options(rest, spec, {"margin": float, "batch_size": int, "device": str, "dtype": str,
                                                      "max_length": int})
        if not body:
            raise RedlineError(f"judge {spec!r}: name a reward model or run folder (reward:PATH)")
        from redline.judges.reward import RewardJudge

        return RewardJudge(body, **{**options, **overrides})
    if kind == "openai":
        model, base_url, options = _openai_spec(rest, spec)
        from redline.judges.llm import OpenAIJudge

        return OpenAIJudge(model, base_url, **{**options, **overrides})
    raise RedlineError(f"judge {spec!r} does not parse; expected one of: {JUDGE_SPECS}")


def _openai_spec(rest: str, spec: str) -> tuple[str, str, dict[str, Any]]:
    """``MODEL@BASE_URL?options`` of an ``openai:`` spec: the model, the base URL and the options."""
    body, options = _split_options(
        rest,
        spec,
        {
            "key_env": str, "concurrency": int, "retries": int, "timeout": float, "backoff": float,
            "cache": str, "temperature": float, "max_tokens": int, "token_param": str,
        },
    )
    model, _, base_url = body.partition("@")
    if not model:
        raise RedlineError(f"judge {spec!r}: name the model (openai:MODEL@BASE_URL)")
    return model, base_url or "https://api.openai.com/v1", options


def judge_name(spec: str) -> str:
    """The name of the judge ``parse_judge(spec)`` builds (what a judgments file keeps and a rerun compares), without
    the LLM judge's client, cache or key: ``oracle:noisy?seed=0`` and ``oracle:noisy`` name one judge. Raises
    ``RedlineError`` for a spec that does not parse."""
    if spec.strip().startswith("openai:"):
        from redline.judges.llm import openai_name

        model, base_url, options = _openai_spec(spec.strip()[len("openai:"):], spec)
        return openai_name(model, base_url, **{k: options[k] for k in ("temperature", "max_tokens") if k in options})
    judge = parse_judge(spec)
    judge.close()
    return judge.name
