"""The oracle: how good a response is, known exactly, because its instructions are verifiable.

It stands in for the human evaluators of the papers (and, with noise, for the labelers: see
``annotators``). The score is the share of instructions met, scaled down by penalties that make
it impossible to game with text that satisfies checkers without answering::

    quality = met / n_instructions
              × substance     0 below 5 words; min(1, words / 25) above
              × (1 − repetition penalty)   r = 1 − distinct 4-grams / all 4-grams (lowercased words);
                                           no penalty up to r = 0.15, rising linearly to 1 at r = 0.5
              × topic         1 if the topic word appears (stem + up to 4 letters), else 0.25
              × (1 − copy penalty)  c = share of the response's word 5-grams found in the prompt (no
                              5-gram spans a required literal such as a closing phrase); no penalty
                              up to c = 0.1, rising linearly to 1 at c = 0.5; only when the prompt
                              is given

An empty answer, a loop that repeats one sentence, text about something else, or the prompt
pasted back all score near 0 even where they happen to meet a format instruction. A response
that meets every instruction and has none of these faults scores 1.

``check_all`` gives the same verdict in parts (each instruction met or broken, with details, and
each penalty), which is what the simulated annotators' critiques are written from. ``repair``
undoes the penalties (for revisions): it drops repeated and copied sentences, adds a sentence
that names the topic, and writes a fresh draft where nothing usable is left.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from redline.simulate import topics as T
from redline.simulate.instructions import (
    Check,
    Instruction,
    _insertions,
    check,
    parse_instructions,
)
from redline.simulate.text import content_start, line_kind, match_case, open_shell, sentence_spans, sentences, tidy, words

MIN_WORDS = 5
FULL_WORDS = 25
REPEAT_N = 4
REPEAT_FREE = 0.15
REPEAT_ZERO = 0.5
OFF_TOPIC = 0.25
COPY_N = 5
COPY_FREE = 0.1
COPY_ZERO = 0.5


@dataclass
class Report:
    """Every verdict of the oracle on one response."""

    checks: list[Check]
    penalties: dict[str, float]  # name → multiplier in [0, 1]; 1 means no penalty
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> list[Check]:
        return [c for c in self.checks if c.met]

    @property
    def broken(self) -> list[Check]:
        return [c for c in self.checks if not c.met]

    @property
    def all_met(self) -> bool:
        return not self.broken

    @property
    def faults(self) -> list[str]:
        """The penalties that apply (multiplier below 1), in a fixed order."""
        return [name for name, factor in self.penalties.items() if factor < 1]

    @property
    def quality(self) -> float:
        share = len(self.met) / len(self.checks) if self.checks else 1.0
        for factor in self.penalties.values():
            share *= factor
        return max(0.0, min(1.0, share))


def _unpack(task: Any) -> tuple[tuple[Instruction, ...], str | None, str | None]:
    """Instructions, topic and prompt from a Task, a record ``meta`` dict, or a list of instructions."""
    if hasattr(task, "instructions") and hasattr(task, "topic"):
        return tuple(task.instructions), task.topic, getattr(task, "prompt", None)
    if isinstance(task, dict):
        if "instructions" not in task:
            raise ValueError("meta has no 'instructions'")
        return parse_instructions(task["instructions"]), task.get("topic"), None
    return parse_instructions(list(task)), None, None


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def repetition(text: str) -> float:
    """1 − distinct/all word 4-grams: 0 for varied text, near 1 for a loop."""
    grams = ngrams([w.lower() for w in words(text)], REPEAT_N)
    if len(grams) < 8:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def on_topic(text: str, topic: str) -> bool:
    return T.mentions(text, topic)


def _grams(text: str, literals: Iterable[str]) -> list[tuple[str, ...]]:
    """Word 5-grams of ``text``, none spanning a required literal (a closing phrase, a keyword)."""
    pattern = "|".join(re.escape(x) for x in sorted(literals, key=len, reverse=True) if x)
    segments = re.split(pattern, text, flags=re.IGNORECASE) if pattern else [text]
    return [g for segment in segments for g in ngrams([w.lower() for w in words(segment)], COPY_N)]


def _literals(instructions: Iterable[Instruction]) -> list[str]:
    return [x for inst in instructions for x in (inst.phrase, inst.keyword, *inst.keywords) if x]


def copied(text: str, prompt: str, instructions: Iterable[Instruction] = ()) -> float:
    """Share of the response's word 5-grams that also occur in the prompt (required literals aside)."""
    literals = _literals(instructions)
    grams = _grams(text, literals)
    if not grams:
        return 0.0
    source = set(_grams(prompt, literals))
    return sum(g in source for g in grams) / len(grams)


def check_all(task: Any, response: str, prompt: str | None = None) -> Report:
    """Each instruction met or broken (with details), and each penalty.

    ``task`` is a ``Task``, a record's ``meta`` (``{"topic": ..., "instructions": [...]}``) or a
    list of instructions (then there is no topic penalty). ``prompt`` enables the copy penalty
    (a ``Task`` brings its own).
    """
    instructions, topic, task_prompt = _unpack(task)
    prompt = prompt if prompt is not None else task_prompt
    core = open_shell(response).core
    n_words = len(words(core))
    rep = repetition(core)
    penalties = {
        "short": 0.0 if n_words < MIN_WORDS else min(1.0, n_words / FULL_WORDS),
        "repetition": 1.0 - min(1.0, max(0.0, rep - REPEAT_FREE) / (REPEAT_ZERO - REPEAT_FREE)),
    }
    facts: dict[str, Any] = {"words": n_words, "repetition": round(rep, 3)}
    if topic:
        facts["on_topic"] = on_topic(core, topic)
        penalties["off_topic"] = 1.0 if facts["on_topic"] else OFF_TOPIC
        facts["topic"] = topic
    if prompt:
        share = copied(core, prompt, instructions)
        facts["copied"] = round(share, 3)
        penalties["copied"] = 1.0 - min(1.0, max(0.0, share - COPY_FREE) / (COPY_ZERO - COPY_FREE))
    return Report([check(i, response) for i in instructions], penalties, facts)


def quality(task: Any, response: str, prompt: str | None = None) -> float:
    """The oracle's score in [0, 1]; the formula is in the module docstring."""
    return check_all(task, response, prompt).quality


# ----------------------------------------------------------------------------- critique sentences for faults

FAULT_SENTENCES: dict[str, tuple[str, ...]] = {
    "short": (
        "It is too short to answer the prompt: only {words} words.",
        "There is next to nothing here ({words} words).",
        "With only {words} words it does not really answer the prompt.",
    ),
    "repetition": (
        "It repeats itself: {repeat}% of its four-word phrases are repeats.",
        "It goes round in circles, repeating the same phrases ({repeat}% repeated).",
        "Much of it is repetition ({repeat}% of its phrases occur more than once).",
    ),
    "off_topic": (
        "It never mentions {topic}, the subject it was asked to write about.",
        "It drifts away from {topic}, which it was supposed to be about.",
        "The prompt asked for a piece about {topic}, but the response never mentions it.",
    ),
    "copied": (
        "It copies {copy}% of its text from the prompt instead of answering it.",
        "Much of it ({copy}%) is the prompt repeated back.",
        "It echoes the prompt ({copy}% copied) rather than writing something new.",
    ),
}


def fault_sentence(report: Report, fault: str, rng: random.Random | None = None) -> str:
    options = FAULT_SENTENCES[fault]
    template = options[0] if rng is None else rng.choice(options)
    facts = report.facts
    return template.format(
        words=facts.get("words", 0),
        repeat=round(100 * facts.get("repetition", 0)),
        topic=facts.get("topic", "the topic"),
        copy=round(100 * facts.get("copied", 0)),
    )


# ----------------------------------------------------------------------------- repairs for revisions


def _drop_sentences(core: str, drop) -> str:
    """``core`` without the paragraph/bullet sentences for which ``drop(normalised, sentence)`` is true."""
    out = []
    for line in core.split("\n"):
        kind = line_kind(line)
        if kind not in ("prose", "bullet", "ps"):
            out.append(line)
            continue
        spans = sentence_spans(line, kind)
        kept, cursor = [], 0
        for start, end in spans:
            sentence = line[start:end]
            norm = " ".join(w.lower() for w in words(sentence))
            kept.append(line[cursor:start])
            if not drop(norm, sentence):
                kept.append(sentence)
            cursor = end
        kept.append(line[cursor:])
        new = re.sub(r"[ \t]{2,}", " ", "".join(kept)).rstrip()
        marker = line[: content_start(line, kind)] if kind != "prose" else ""
        if words(new[len(marker) :]):
            out.append(new)
    return tidy("\n".join(out))


def _before_the_loop(core: str) -> str:
    """The longest start of ``core``, cut after a sentence (else a word), that does not repeat itself."""
    cuts = [m.end() for m in re.finditer(r"[.!?][\"'’”*)\]]*(?=\s|$)", core)]
    for cut_points in (cuts, [m.end() for m in re.finditer(r"\S+", core)]):
        for cut in reversed(cut_points):
            if repetition(core[:cut]) <= REPEAT_FREE / 3 and len(words(core[:cut])) >= MIN_WORDS:  # well clear of the loop
                kept = tidy(core[:cut]).rstrip(" ,;:-")
                return kept if re.search(r"[.!?][\"'’”*)\]]*$", kept) else kept + "."
    return ""


def repair(task: Any, response: str, faults: Iterable[str], prompt: str | None = None) -> str:
    """Undo the named faults (``Report.faults``) with as small an edit as each allows."""
    instructions, topic, task_prompt = _unpack(task)
    prompt = prompt if prompt is not None else task_prompt
    faults = set(faults)
    shell = open_shell(response)
    core = shell.core
    fresh = lambda: T.write_prose(topic or "writing", random.Random(f"repair:{topic}"), paragraphs=2)
    if "copied" in faults and prompt:
        literals = _literals(instructions)
        source = set(_grams(prompt, literals))

        prompt_words = " " + " ".join(w.lower() for w in words(prompt)) + " "

        def pasted(norm: str, sentence: str) -> bool:
            grams = _grams(sentence, literals)
            if not grams:  # too short for 5-grams once the literals are set aside: copied whole?
                return f" {norm} " in prompt_words
            return sum(g in source for g in grams) > 0.5 * len(grams)

        core = _drop_sentences(core, pasted)
    if "repetition" in faults:
        seen: set[str] = set()

        def repeated(norm: str, sentence: str) -> bool:
            if norm in seen:
                return True
            seen.add(norm)
            return False

        core = _drop_sentences(core, repeated)
        if repetition(core) > REPEAT_FREE:  # a loop inside sentences: keep what came before it
            core = _before_the_loop(core)
    if len(words(core)) < FULL_WORDS:  # too short to escape the penalty, perhaps after the cuts above
        have = {" ".join(w.lower() for w in words(s)) for s in sentences(core)}
        more = _drop_sentences(fresh(), lambda norm, s: norm in have)  # nothing said twice
        core = (core.rstrip() + "\n\n" if words(core) else "") + more
    if topic and not on_topic(core, topic):
        met = [i for i in instructions if check(i, shell.wrap(core)).met]
        sentence = match_case(T.fill(T.pick(T.TOPIC_SENTENCES, topic), topic), core)
        options = list(_insertions(core, sentence))
        core = next((c for c in options if all(check(i, shell.wrap(c)).met for i in met)), options[0])
    return shell.wrap(core)
