"""Tasks (a topic, a kind of writing and 1–3 verifiable instructions) and the template responder.

A task's prompt reads like a user's request, IFEval style::

    Write a short blog post about coffee. Do not use any commas. Include exactly 3 bullet points
    in markdown format (lines starting with '* ').

Its ``meta`` (``{"topic", "form", "instructions"}``) travels with every record built from it, so
the oracle can score any of them later.

The template responder writes responses without a model, for tests and quick runs: an on-topic
first draft (``topics.write_prose``), then the fixers for all but 0–2 of the instructions, then
a small edit that breaks each of those 0–2 (``_break``). A few responses are degenerate on purpose
(a loop, the prompt pasted back, another topic) so that the oracle's penalties have work too.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from redline import RedlineError
from redline.simulate import topics as T
from redline.simulate.instructions import (
    Instruction,
    InstructionError,
    describe,
    fix_all,
    parse_instructions,
    sample_instructions,
)
from redline.simulate.text import (
    HIGHLIGHT_RE,
    PLACEHOLDER_RE,
    TITLE_RE,
    bullet_lines,
    content_start,
    header_lines,
    line_kind,
    open_shell,
    paragraphs,
    pattern,
    sentence_spans,
    sentences,
    tidy,
    words,
)

LEADS = (
    "Write a short {form} about {topic}.",
    "Please write a {form} about {topic}.",
    "Compose a brief {form} on the subject of {topic}.",
    "I need a short {form} about {topic}.",
    "Can you write a {form} about {topic}?",
)


@dataclass(frozen=True)
class Task:
    id: str
    topic: str
    form: str
    instructions: tuple[Instruction, ...]
    prompt: str

    def meta(self) -> dict:
        return {"topic": self.topic, "form": self.form, "instructions": [i.to_dict() for i in self.instructions]}


def render_prompt(topic: str, form: str, instructions: Iterable[Instruction], rng: random.Random) -> str:
    lead = rng.choice(LEADS).format(form=form, topic=topic)
    return " ".join([lead] + [describe(i, rng) for i in instructions])


def make_tasks(n: int, seed: int, split: str = "train", types: Iterable[str] | None = None, exclude: Iterable[str] = ()) -> list[Task]:
    """``n`` tasks with distinct prompts (none of them in ``exclude``), the same for the same seed.

    More than the settings can make (a few instruction types allow tens of thousands) is an error once
    ten draws for every prompt held so far (at least 10,000) in a row bring none new: it looped forever.
    """
    rng = random.Random(f"redline-simulate:{seed}:{split}")
    types = list(types) if types is not None else None
    seen = set(exclude)
    tasks: list[Task] = []
    misses = 0
    while len(tasks) < n:
        topic = rng.choice(T.TOPICS)
        form = rng.choice(T.FORMS)
        instructions = sample_instructions(rng, topic, types=types)
        prompt = render_prompt(topic, form, instructions, rng)
        if prompt in seen:
            misses += 1
            if misses > max(10_000, 10 * len(seen)):
                raise RedlineError(f"only {len(tasks)} distinct {split} prompts of the {n} asked could be drawn "
                                   f"(instruction types: {', '.join(types) if types else 'all'}; {len(seen) - len(tasks)} "
                                   f"excluded): ask for fewer prompts or allow more instruction types")
            continue
        misses = 0
        seen.add(prompt)
        tasks.append(Task(f"{split}-{len(tasks):05d}", topic, form, instructions, prompt))
    return tasks


def load_tasks(path: str | Path, split: str = "train") -> list[Task]:
    """Tasks from a JSONL file of ``{"topic", "instructions"[, "form"][, "prompt"][, "id"]}``.

    Every line is checked before any is used; an unknown instruction type, a bad parameter, a
    conflicting set, a ``form``, ``prompt`` or ``id`` that is not text, or an id given twice is an
    error that names the line (a repeated id shared its responses: one task was ranked on another's).
    """
    from redline.records import FieldError, iter_raw

    tasks, errors = [], []
    ids: dict[str, int] = {}
    # the records' reader: a BOM, a line that is not UTF-8 (one bad line, not the file), a key given twice
    for number, obj in iter_raw(path):
        try:
            if isinstance(obj, FieldError):
                raise obj
            if not isinstance(obj, dict) or not isinstance(obj.get("topic"), str) or not obj["topic"].strip():
                raise InstructionError("each task needs a 'topic' string and an 'instructions' list")
            instructions = parse_instructions(obj.get("instructions"))
            for name in ("form", "prompt"):
                if obj.get(name) not in (None, "") and (not isinstance(obj[name], str) or not obj[name].strip()):
                    raise InstructionError(f"{name}: expected a non-empty string, got {obj[name]!r}")
            given = obj.get("id") not in (None, "")  # "" is no id, as for form and prompt: one is drawn (as it was)
            if given and (isinstance(obj["id"], bool) or not isinstance(obj["id"], (str, int)) or not str(obj["id"]).strip()):
                raise InstructionError(f"id: expected a non-empty string, got {obj['id']!r}")
            form = obj.get("form") or "piece of writing"
            rng = random.Random(f"redline-simulate:tasks:{number}")
            prompt = obj.get("prompt") or render_prompt(obj["topic"], form, instructions, rng)
            task_id = str(obj["id"]) if given else f"{split}-{len(tasks):05d}"
            if task_id in ids:
                raise InstructionError(f"id: duplicate id {task_id!r} (first on line {ids[task_id]})")
            ids[task_id] = number
            tasks.append(Task(task_id, obj["topic"], form, instructions, prompt))
        except (ValueError, InstructionError) as e:
            errors.append(f"{path}:{number}: {e}")
    if errors:
        raise RedlineError("bad tasks file:\n" + "\n".join(errors[:20]))
    if not tasks:
        raise RedlineError(f"tasks file {path} holds no tasks")
    return tasks


# ----------------------------------------------------------------------------- the template responder


def template_response(task: Task, rng: random.Random) -> str:
    """A response of varied quality: usually on-topic prose meeting all but 0–2 instructions."""
    roll = rng.random()
    if roll < 0.03:  # a loop: one sentence over and over
        sentence = T.fill(rng.choice(T.PROSE), task.topic)
        return " ".join([sentence] * rng.randint(6, 10))
    if roll < 0.05:  # the prompt pasted back, with a line of its own
        return task.prompt + " " + T.fill(rng.choice(T.PROSE), task.topic)
    topic = task.topic
    if roll < 0.08:  # about something else
        topic = rng.choice([t for t in T.TOPICS if T.topic_word(t) != T.topic_word(task.topic)])
    draft = T.write_prose(topic, rng)
    n_broken = min(len(task.instructions), rng.choices((0, 1, 2), weights=(40, 40, 20))[0])
    broken = rng.sample(list(task.instructions), n_broken)
    meet = [i for i in task.instructions if i not in broken]
    text = fix_all(task.instructions, draft, topic, only=meet)
    for inst in broken:
        text = _break(inst, text, topic, rng)
    return text


def _in_core(text: str, edit) -> str:
    shell = open_shell(text)
    return shell.wrap(edit(shell.core))


def _add_sentences(core: str, topic: str, rng: random.Random, until) -> str:
    pool = [T.fill(s, topic) for s in T.PROSE if T.fill(s, topic) not in core]
    rng.shuffle(pool)
    for sentence in pool:
        if until(core):
            break
        core = core.rstrip() + " " + sentence
    return core


def _drop_last_sentences(core: str, until) -> str:
    for _ in range(200):
        if until(core):
            break
        lines = core.split("\n")
        prose = [i for i, line in enumerate(lines) if line_kind(line) == "prose" and sentence_spans(line, "prose")]
        if not prose:
            break
        i = prose[-1]
        start, _ = sentence_spans(lines[i], "prose")[-1]
        lines[i] = lines[i][:start].rstrip()
        core = tidy("\n".join(lines))
    return core


def _break(inst: Instruction, text: str, topic: str, rng: random.Random) -> str:
    """A small edit that breaks ``inst`` the way a careless writer would (may break others too)."""
    kind, n = inst.type, inst.n
    margin = rng.randint(0, 20)  # how far past a word limit the careless writer goes

    if kind == "words_at_most":
        return _in_core(text, lambda c: _add_sentences(c, topic, rng, lambda x: len(words(x)) > n + margin))
    if kind == "words_at_least":
        return _in_core(text, lambda c: _drop_last_sentences(c, lambda x: len(words(x)) < n - margin))
    if kind == "sentences_at_most":
        return _in_core(text, lambda c: _add_sentences(c, topic, rng, lambda x: len(sentences(x)) > n))
    if kind == "sentences_at_least":
        return _in_core(text, lambda c: _drop_last_sentences(c, lambda x: len(sentences(x)) < n))
    if kind == "paragraphs_exact":
        # One paragraph too few (the last two joined) or one too many (a new one at the end).
        def edit(c):
            if len(paragraphs(c)) > 1 and rng.random() < 0.5:
                parts = c.rsplit("\n\n", 1)
                return parts[0] + " " + parts[1]
            return c.rstrip() + "\n\n" + T.fill(rng.choice(T.PROSE), topic)
        return _in_core(text, edit)
    if kind == "keyword_include":
        return _in_core(text, lambda c: pattern(rf"\b{re.escape(inst.keywords[0])}\b", re.IGNORECASE).sub("it", c))
    if kind == "keyword_avoid":
        word = inst.keywords[0]
        return _in_core(text, lambda c: c.rstrip() + f" Honestly, {word} is the word for it.")
    if kind == "keyword_frequency":
        def edit(c):
            keep = rng.randint(0, n - 1)
            seen = iter(range(10**6))
            return pattern(rf"\b{re.escape(inst.keyword)}\b", re.IGNORECASE).sub(lambda m: m.group() if next(seen) < keep else "that", c)
        return _in_core(text, edit)
    if kind == "lowercase":
        return _in_core(text, lambda c: re.sub(r"(^|[.!?]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), c))
    if kind == "uppercase":
        return _in_core(text, lambda c: c[: len(c) // 2] + c[len(c) // 2 :].lower())
    if kind == "bullets_exact":
        def edit(c):
            lines = c.split("\n")
            found = bullet_lines(c)
            if found and rng.random() < 0.5:
                i = found[-1]
                lines[i] = lines[i][content_start(lines[i], "bullet") :]
                return "\n".join(lines)
            extra = "* " + T.fill(rng.choice(T.BULLET_ITEMS), topic)
            if found:
                lines.insert(found[-1] + 1, extra)
                return "\n".join(lines)
            return c.rstrip() + "\n\n" + extra
        return _in_core(text, edit)
    if kind == "title":
        return _in_core(text, lambda c: tidy(TITLE_RE.sub("", c)))
    if kind == "highlights_at_least":
        def edit(c):
            lines = c.split("\n")
            for i, line in enumerate(lines):
                at = content_start(line, "bullet") if line_kind(line) == "bullet" else 0
                lines[i] = line[:at] + HIGHLIGHT_RE.sub(lambda m: m.group()[1:-1], line[at:])
            return "\n".join(lines)
        return _in_core(text, edit)
    if kind == "json_format":
        return open_shell(text).core
    if kind == "sections":
        def edit(c):
            heads = header_lines(c)
            lines = c.split("\n")
            if heads:
                del lines[heads[-1]]
                return tidy("\n".join(lines))
            return "SECTION 1\n" + c
        return _in_core(text, edit)
    if kind == "end_phrase":
        return _in_core(text, lambda c: c.rstrip() + " " + T.fill(rng.choice(T.FILLERS), topic))
    if kind == "quotes":
        return open_shell(text).core if open_shell(text).quoted else text
    if kind == "no_commas":
        return _in_core(text, lambda c: re.sub(r"\.(\s|$)", ", honestly.\\1", c, count=1) if "." in c else c + ", honestly")
    if kind == "postscript":
        return _in_core(text, lambda c: tidy("\n".join(line for line in c.split("\n") if line_kind(line) != "ps")))
    if kind == "placeholders":
        return _in_core(text, lambda c: PLACEHOLDER_RE.sub(lambda m: m.group()[1:-1], c))
    raise AssertionError(kind)  # pragma: no cover - every type has a breaker
