"""The catalogue of verifiable writing instructions: phrasings, checkers, critiques and fixers.

Modelled on IFEval (Zhou et al. 2023, arXiv 2311.07911): every instruction is something a program
can verify ("exactly 3 bullet points", "no commas"). Each of the 20 types below is plain data in
``SPECS`` (a dict of type → ``Spec``) plus two small functions:

- ``check(inst, text)`` → ``Check``: met or broken, with the facts a critique needs
  ("5 bullet points" where 3 were asked for);
- a fixer that edits the text as little as possible until the check passes.

An ``Instruction`` is a frozen dataclass and travels as JSON in a record's ``meta``::

    {"type": "bullets_exact", "n": 3}
    {"type": "keyword_include", "keywords": ["budget", "morning"]}
    {"type": "end_phrase", "phrase": "Thank you for reading."}

``parse_instructions`` turns that JSON back into instructions and refuses an unknown type, a bad
parameter or a conflicting set (``CONFLICTS``: lowercase with capitals, JSON with bullets, ...).

How fixers compose (``fix_all``):
1. Instructions are fixed in ``FIX_ORDER``: what restructures the text first (forbidden words,
   commas, title, sections, paragraphs, bullets, highlights), then what adds a sentence
   (placeholders, keywords, the postscript, the closing phrase), then lengths (which trim or pad
   around everything already placed), then case, then the wrappers (quotes, JSON) last.
2. Each fixer gets a guard: a candidate edit is taken only if every other instruction that is
   met stays met. Additions are tried at several places (the end of each paragraph, between
   sentences, a new paragraph), removals from the last sentence backwards, so the guard
   usually finds one.
3. Where no edit can keep everything (a postscript must push a text already at its word limit
   over it), the guard is relaxed to the instructions *before* this one in the order; the later
   one is broken and then restored in its own turn. So a fix never breaks an instruction fixed
   before it, and after one pass every instruction of a compatible set is met
   (``tests/test_simulate_instructions.py`` checks this on generated texts).
4. An instruction that is already met is never touched: ``fix`` returns the text unchanged.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from redline import RedlineError
from redline.simulate import topics as T
from redline.simulate.text import (
    HEADER_RE,
    TITLE_RE,
    WORD_RE,
    append_sentence,
    block_kind,
    blocks,
    bullet_lines,
    content_start,
    count_word,
    has_postscript,
    header_lines,
    highlights,
    is_quoted,
    json_object,
    line_kind,
    match_case,
    open_shell,
    paragraphs,
    pattern,
    placeholders,
    sentence_spans,
    sentences,
    surface_text,
    tidy,
    words,
)


class InstructionError(RedlineError):
    """An instruction (or a set of them) that cannot be used: unknown, malformed or conflicting."""


@dataclass(frozen=True)
class Instruction:
    """One verifiable instruction. Only the fields its type uses are set."""

    type: str
    n: int | None = None
    keywords: tuple[str, ...] = ()
    keyword: str | None = None
    phrase: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.n is not None:
            out["n"] = self.n
        if self.keywords:
            out["keywords"] = list(self.keywords)
        if self.keyword is not None:
            out["keyword"] = self.keyword
        if self.phrase is not None:
            out["phrase"] = self.phrase
        return out


@dataclass(frozen=True)
class Check:
    """The verdict on one instruction, with the facts that critiques quote."""

    instruction: Instruction
    met: bool
    facts: dict[str, Any] = field(default_factory=dict)

    def sentence(self, rng: random.Random | None = None) -> str:
        """A critique sentence: praise if met, the specific problem if not (varied by ``rng``)."""
        spec = SPECS[self.instruction.type]
        options = spec.met if self.met else spec.broken
        template = options[0] if rng is None else rng.choice(options)
        return template.format(**_fields(self.instruction, self.facts))

    @property
    def detail(self) -> str:
        return self.sentence(None)


# ----------------------------------------------------------------------------- formatting helpers


def _plural(n: int, unit: str) -> str:
    if n == 1:
        return f"1 {unit}"
    if unit.endswith("s"):
        return f"{n} {unit}"
    return f"{n} {unit}s"


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def _quoted(items: Iterable[str]) -> str:
    items = [f"'{w}'" for w in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _fields(inst: Instruction, facts: dict) -> dict[str, Any]:
    """Everything a phrasing may name: the parameters, the facts, and their plural forms."""
    unit = SPECS[inst.type].unit
    f: dict[str, Any] = {"n": inst.n, "keyword": inst.keyword, "phrase": inst.phrase}
    if inst.keywords:
        many = len(inst.keywords) > 1
        f.update(
            kw=_quoted(inst.keywords),
            kw_noun="keywords" if many else "keyword",
            word_words="words" if many else "word",
            is_are="are" if many else "is",
        )
    if inst.n is not None:
        f["N"] = _plural(inst.n, unit) if unit else inst.n
        f["times"] = _times(inst.n)
    f.update(facts)
    if "count" in facts:
        f["C"] = _plural(facts["count"], unit) if unit else facts["count"]
        f["count_times"] = _times(facts["count"])
        if inst.n is not None:
            diff = abs(facts["count"] - inst.n)
            f["diff"] = diff
            f["D"] = _plural(diff, unit) if unit else diff
    return f


# ----------------------------------------------------------------------------- fixing machinery


@dataclass
class _Ctx:
    topic: str
    ok: Callable[[str], bool]  # does this core keep every protected instruction met?


def _first_ok(candidates: Iterable[str], ctx: _Ctx) -> str | None:
    for candidate in candidates:
        if ctx.ok(candidate):
            return candidate
    return None


def _replace_line(lines: list[str], i: int, new: str | None) -> str:
    out = lines[:i] + ([] if new is None else [new]) + lines[i + 1 :]
    return "\n".join(out)


def _block_insertions(core: str, block: str) -> Iterator[str]:
    """``core`` with a new block added: before a trailing P.S., between blocks (last first), at the top."""
    lines = core.split("\n")
    found = blocks(core)
    if not found:
        yield block
        return
    end = len(found)
    while end > 0 and block_kind(lines, found[end - 1]) == "ps":
        end -= 1
    top = 0
    while top < len(found) and block_kind(lines, found[top]) == "title":
        top += 1
    for index in range(end, top - 1, -1):
        if index == len(found):
            yield core.rstrip() + "\n\n" + block
            continue
        at = found[index][0]
        head = "\n".join(lines[:at]).rstrip()
        yield (head + "\n\n" if head else "") + block + "\n\n" + "\n".join(lines[at:])


def _insertions(core: str, sentence: str) -> Iterator[str]:
    """``core`` with one sentence added: at the end of a paragraph line (last first), between two
    sentences, at the end of a bullet or P.S., or as a new paragraph."""
    lines = core.split("\n")
    kinds = [line_kind(line) for line in lines]
    prose = [i for i, k in enumerate(kinds) if k == "prose"]
    for i in reversed(prose):
        yield _replace_line(lines, i, append_sentence(lines[i], sentence))
    for i in prose:
        for _, end in sentence_spans(lines[i], "prose")[:-1]:
            yield _replace_line(lines, i, lines[i][:end] + " " + sentence + lines[i][end:])
    for i, kind in enumerate(kinds):
        if kind in ("bullet", "ps"):
            yield _replace_line(lines, i, append_sentence(lines[i], sentence))
    yield from _block_insertions(core, sentence)


def _insert(core: str, sentence: str, ctx: _Ctx) -> str | None:
    return _first_ok(_insertions(core, match_case(sentence, core)), ctx)


def _fresh(templates: tuple[str, ...], core: str, topic: str, keyword: str = "", *keys) -> list[str]:
    """The templates not yet used in ``core`` with any keyword (the same frame twice with two keywords reads as
    repetition to the oracle), filled in, in an order that varies by topic."""
    out = []
    for template in T.rotated(templates, topic, keyword, *keys):
        frame = re.escape(T.fill(template, topic or "it", "\x00")).replace("\x00", r"[\w'-]+(?: [\w'-]+)*?")
        if not pattern(frame, re.IGNORECASE).search(core):
            out.append(T.fill(template, topic or "it", keyword))
    return out


def _removals(core: str) -> Iterator[str]:
    """``core`` less one sentence of a paragraph (last first), then less one bullet (last first).

    Text after a "SECTION k:" marker is paragraph text too; the marker stays when its text goes."""
    lines = core.split("\n")
    for i in reversed(range(len(lines))):
        kind = line_kind(lines[i])
        if kind not in ("prose", "header"):
            continue
        for start, end in reversed(sentence_spans(lines[i], kind)):
            rest = re.sub(r"[ \t]{2,}", " ", lines[i][:start] + lines[i][end:]).rstrip()
            yield tidy(_replace_line(lines, i, rest if rest.strip() else None))
    for i in reversed(bullet_lines(core)):
        yield tidy(_replace_line(lines, i, None))


def _truncations(core: str, excess: int) -> Iterator[str]:
    """``core`` with one paragraph sentence cut short (to no fewer than 4 words)."""
    lines = core.split("\n")
    for i in reversed(range(len(lines))):
        kind = line_kind(lines[i])
        if kind not in ("prose", "header"):
            continue
        for start, end in reversed(sentence_spans(lines[i], kind)):
            found = list(WORD_RE.finditer(lines[i], start, end))
            keep = max(4, len(found) - excess)
            if keep >= len(found):
                continue
            cut = found[keep - 1].end()
            yield _replace_line(lines, i, lines[i][:cut] + "." + lines[i][end:])


def _merges(core: str) -> Iterator[str]:
    """``core`` with two neighbouring sentences of one line joined by a semicolon (last first)."""
    lines = core.split("\n")
    for i in reversed(range(len(lines))):
        kind = line_kind(lines[i])
        if kind not in ("prose", "header", "bullet", "ps"):
            continue
        spans = sentence_spans(lines[i], kind)
        for start, end in reversed(spans[:-1]):
            ending = re.search(r"[.!?]+$", lines[i][start:end])
            if ending:
                cut = start + ending.start()
                yield _replace_line(lines, i, lines[i][:cut] + ";" + lines[i][end:])


def _grow(core: str, ctx: _Ctx, done: Callable[[str], bool], sentences_: list[str]) -> str:
    """Add sentences one at a time (each where the guard allows) until ``done``."""
    for sentence in sentences_:
        if done(core):
            break
        grown = _insert(core, sentence, ctx)
        if grown is not None:
            core = grown
    return core


def _shrink(core: str, ctx: _Ctx, done: Callable[[str], bool], steps: Callable[[str], Iterable[Iterator[str]]]) -> str:
    """Apply the first allowed edit of the first kind that has one, until ``done``."""
    for _ in range(500):
        if done(core):
            break
        for candidates in steps(core):
            smaller = _first_ok(candidates, ctx)
            if smaller is not None:
                core = smaller
                break
        else:
            break
    return core


# ----------------------------------------------------------------------------- length


def _check_words_at_most(inst, raw, core):
    count = len(words(core))
    return count <= inst.n, {"count": count}


def _check_words_at_least(inst, raw, core):
    count = len(words(core))
    return count >= inst.n, {"count": count}


def _check_sentences_at_most(inst, raw, core):
    count = len(sentences(core))
    return count <= inst.n, {"count": count}


def _check_sentences_at_least(inst, raw, core):
    count = len(sentences(core))
    return count >= inst.n, {"count": count}


def _check_paragraphs_exact(inst, raw, core):
    count = len(paragraphs(core))
    return count == inst.n, {"count": count}


def _fix_words_at_most(inst, core, ctx):
    def steps(c):
        yield _removals(c)
        yield _truncations(c, len(words(c)) - inst.n)

    return _shrink(core, ctx, lambda c: len(words(c)) <= inst.n, steps)


def _fix_words_at_least(inst, core, ctx):
    return _grow(core, ctx, lambda c: len(words(c)) >= inst.n, _fresh(T.FILLERS, core, ctx.topic))


def _fix_sentences_at_most(inst, core, ctx):
    return _shrink(core, ctx, lambda c: len(sentences(c)) <= inst.n, lambda c: (_removals(c), _merges(c)))


def _fix_sentences_at_least(inst, core, ctx):
    return _grow(core, ctx, lambda c: len(sentences(c)) >= inst.n, _fresh(T.FILLERS, core, ctx.topic))


def _split_candidates(core: str) -> Iterator[str]:
    """``core`` with one paragraph split in two: between its lines, or mid-line at a sentence end.

    Paragraphs with more sentences are split first, at their middle."""
    lines = core.split("\n")
    options = []
    for block in blocks(core):
        if block_kind(lines, block) != "paragraph":
            continue
        if len(block) > 1:
            options.append((len(block), block[len(block) // 2], None))
        for i in block:
            spans = sentence_spans(lines[i])
            if len(spans) > 1:
                options.append((len(spans), i, spans[len(spans) // 2][0]))
    for _, i, at in sorted(options, key=lambda o: -o[0]):
        if at is not None and HEADER_RE.match(lines[i][at:]):
            continue  # a split must not turn text into a section header
        if at is None:  # a blank line before line i
            yield "\n".join(lines[:i] + [""] + lines[i:])
        else:
            yield _replace_line(lines, i, lines[i][:at].rstrip() + "\n\n" + lines[i][at:])


def _merge_paragraph_candidates(core: str) -> Iterator[str]:
    """``core`` with two neighbouring paragraphs joined (last pair first)."""
    lines = core.split("\n")
    found = blocks(core)
    for a, b in reversed(list(zip(found, found[1:]))):
        if block_kind(lines, a) != "paragraph" or block_kind(lines, b) != "paragraph":
            continue
        last, first = lines[a[-1]], lines[b[0]]
        if line_kind(last) == "prose" and line_kind(first) == "prose":
            joined = lines[: a[-1]] + [append_sentence(last, first.strip())] + lines[b[0] + 1 :]
        else:
            joined = lines[: a[-1] + 1] + lines[b[0] :]
        yield "\n".join(joined)


def _fix_paragraphs_exact(inst, core, ctx):
    fillers = iter(_fresh(T.FILLERS, core, ctx.topic, "", "paragraph"))
    for _ in range(50):
        count = len(paragraphs(core))
        if count == inst.n:
            break
        if count > inst.n:
            options = list(_merge_paragraph_candidates(core))
        else:
            options = list(_split_candidates(core))
            filler = next(fillers, None)
            if filler is not None:
                options += list(_block_insertions(core, match_case(filler, core)))
        step = _first_ok(options, ctx) or (options[0] if options else None)
        if step is None:
            break
        core = step
    return core


# ----------------------------------------------------------------------------- keywords


def _check_keyword_include(inst, raw, core):
    missing = [k for k in inst.keywords if not count_word(core, k)]
    many = len(missing) > 1
    return not missing, {
        "missing": _quoted(missing) if missing else "",
        "missing_noun": "keywords" if many else "keyword",
        "missing_is_are": "are" if many else "is",
        "it_them": "them" if many else "it",
    }


def _fix_keyword_include(inst, core, ctx):
    for keyword in inst.keywords:
        if count_word(core, keyword):
            continue
        for sentence in _fresh(T.KEYWORD_SENTENCES, core, ctx.topic, keyword):
            added = _insert(core, sentence, ctx)
            if added is not None:
                core = added
                break
    return core


def _check_keyword_avoid(inst, raw, core):
    found = {k: count_word(core, k) for k in inst.keywords}
    found = {k: c for k, c in found.items() if c}
    many = len(found) > 1
    return not found, {
        "found": " and ".join(f"'{k}' ({_times(c)})" for k, c in found.items()),
        "found_noun": "words" if many else "word",
        "appear_s": "appear" if many else "appears",
    }


def _fix_keyword_avoid(inst, core, ctx):
    for keyword in inst.keywords:
        replacement = T.AVOIDABLE.get(keyword.lower(), "")
        if replacement:
            core = re.sub(rf"\b({re.escape(keyword)})\b", lambda m: _same_case(m.group(1), replacement), core, flags=re.IGNORECASE)
            continue
        # Delete the word with a comma and the space after it ("Really, it is" → "It is"); a
        # capitalised word hands its capital to the next one.
        mark = "\x00"  # where a capitalised word was deleted
        core = re.sub(
            rf"\b({re.escape(keyword)})\b,?[ \t]*",
            lambda m: mark if m.group(1)[0].isupper() and not m.group(1).isupper() else "",
            core,
            flags=re.IGNORECASE,
        )
        core = re.sub(f"{mark}+(\\w?)", lambda m: m.group(1).upper(), core)
    return re.sub(r"(?<=\S)[ \t]{2,}", " ", core)


def _same_case(word: str, replacement: str) -> str:
    if word.isupper() and len(word) > 1:
        return replacement.upper()
    if word[0].isupper():
        return replacement[0].upper() + replacement[1:]
    return replacement


def _check_keyword_frequency(inst, raw, core):
    count = count_word(core, inst.keyword)
    return count >= inst.n, {"count": count}


def _fix_keyword_frequency(inst, core, ctx):
    options = _fresh(T.KEYWORD_SENTENCES, core, ctx.topic, inst.keyword, "frequency")
    return _grow(core, ctx, lambda c: count_word(c, inst.keyword) >= inst.n, options)


# ----------------------------------------------------------------------------- case


def _first_word_with(text: str, test: Callable[[str], bool]) -> str:
    for word in WORD_RE.findall(text):
        if any(test(c) for c in word):
            return word
    return ""


def _check_lowercase(inst, raw, core):
    raw = surface_text(raw)
    capitals = sum(c.isupper() for c in raw)
    has_letters = any(c.isalpha() for c in raw)
    return has_letters and raw == raw.lower(), {
        "count": capitals,
        "count_caps": _plural(capitals, "capital letter"),
        "example": _first_word_with(raw, str.isupper),
    }


def _check_uppercase(inst, raw, core):
    raw = surface_text(raw)
    lower = sum(c.islower() for c in raw)
    has_letters = any(c.isalpha() for c in raw)
    return has_letters and raw == raw.upper(), {
        "count": lower,
        "count_lower": _plural(lower, "lowercase letter"),
        "example": _first_word_with(raw, str.islower),
    }


def _with_letters(core: str, ctx: _Ctx) -> str:
    """A case rule needs letters to hold: an answer without any gets a sentence first."""
    has_letters = lambda c: any(ch.isalpha() for ch in c)
    return core if has_letters(core) else _grow(core, ctx, has_letters, _fresh(T.FILLERS, core, ctx.topic))


def _fix_lowercase(inst, core, ctx):
    return _with_letters(core, ctx).lower()


def _fix_uppercase(inst, core, ctx):
    return _with_letters(core, ctx).upper()


# ----------------------------------------------------------------------------- format


def _check_bullets_exact(inst, raw, core):
    count = len(bullet_lines(core))
    return count == inst.n, {"count": count}


def _fix_bullets_exact(inst, core, ctx):
    lines = core.split("\n")
    found = bullet_lines(core)
    if len(found) > inst.n:
        # The extra points become plain lines: their words stay, only the markers go.
        for i in found[inst.n :]:
            lines[i] = re.sub(r"^(?:\s*[*-]\s+)+", "", lines[i])  # every marker: "* - x" must not stay a bullet
        return "\n".join(lines)
    marker = lines[found[-1]].lstrip()[:1] if found else "*"
    items = [match_case(f"{marker} {s}", core) for s in _fresh(T.BULLET_ITEMS, core, ctx.topic)]
    items = items[: inst.n - len(found)]
    if found:
        candidates = [_replace_line(lines, i, lines[i] + "\n" + "\n".join(items)) for i in (found[-1], found[0])]
    else:
        candidates = list(_block_insertions(core, "\n".join(items)))
    return _first_ok(candidates, ctx) or candidates[0]


def _check_title(inst, raw, core):
    found = TITLE_RE.search(core)
    return found is not None, {"found": found.group() if found else ""}


def _fix_title(inst, core, ctx):
    title = T.pick(T.TITLES, ctx.topic).format(T=T.title_case(ctx.topic or "a few thoughts"))
    title = match_case(f"<<{title}>>", core)
    return f"{title}\n\n{core.lstrip()}" if core.strip() else title


def _check_highlights_at_least(inst, raw, core):
    count = len(highlights(core))
    return count >= inst.n, {"count": count}


def _highlight_candidates(core: str) -> Iterator[str]:
    """``core`` with one more sentence wrapped in asterisks: paragraphs first, then bullets, P.S."""
    lines = core.split("\n")
    order = {"prose": 0, "bullet": 1, "ps": 2}
    indices = sorted((i for i, line in enumerate(lines) if line_kind(line) in order), key=lambda i: order[line_kind(lines[i])])
    for i in indices:
        for start, end in sentence_spans(lines[i]):
            sentence = lines[i][start:end]
            if "*" in sentence:
                continue
            body = re.sub(r"[\s.!?\"'’”)\]]+$", "", sentence)
            if not WORD_RE.search(body):
                continue
            wrapped = f"*{body}*{sentence[len(body):]}"
            yield _replace_line(lines, i, lines[i][:start] + wrapped + lines[i][end:])


def _fix_highlights_at_least(inst, core, ctx):
    fillers = iter(_fresh(T.FILLERS, core, ctx.topic, "", "highlight"))
    for _ in range(20):
        if len(highlights(core)) >= inst.n:
            break
        step = _first_ok(_highlight_candidates(core), ctx)
        if step is None:  # nothing left to highlight: add a sentence that comes highlighted
            filler = next(fillers, None)
            if filler is None:
                break
            step = _insert(core, f"*{filler[:-1]}*.", ctx)
            if step is None:
                break
        core = step
    return core


def _check_json_format(inst, raw, core):
    ok = json_object(raw) is not None
    start = raw.strip()[:24]
    return ok, {"start": start + ("..." if len(raw.strip()) > 24 else "")}


def _fix_json_format(inst, raw, ctx):
    return json.dumps({"response": raw.strip()}, ensure_ascii=False)


def _check_sections(inst, raw, core):
    count = len(header_lines(core))
    return count == inst.n, {"count": count}


def _unhead(line: str) -> str:
    """A header line without its "SECTION k" markers; text after them stays, on its own line.

    Every marker goes: "SECTION 1- SECTION 2" less its first marker would still be a header."""
    rest = line
    while line_kind(rest) == "header":
        rest = rest[content_start(rest, "header") :]
    return "\n" + rest if rest.strip() else ""


def _fix_sections(inst, core, ctx):
    lines = core.split("\n")
    heads = header_lines(core)
    if len(heads) > inst.n:  # unmark the last extra headers: their sections join the one before
        for i in heads[inst.n :]:
            lines[i] = _unhead(lines[i]).strip("\n")
        return tidy("\n".join(lines))
    # Fewer than asked: unmark the headers (a blank line keeps each old section a block of its
    # own), cut the body into n parts at block boundaries, and head each part.
    for i in heads:
        lines[i] = _unhead(lines[i])
    core = tidy("\n".join(lines))
    fillers = iter(_fresh(T.FILLERS, core, ctx.topic, "", "sections"))
    for _ in range(50):
        lines = core.split("\n")
        body = [b for b in blocks(core) if block_kind(lines, b) not in ("title", "ps")]
        if len(body) >= inst.n:
            break
        split = next(_split_candidates(core), None)
        if split is None:
            filler = next(fillers, None)
            if filler is None:
                break
            options = list(_block_insertions(core, match_case(filler, core)))
            split = _first_ok(options, ctx) or options[0]
        core = split
    lines = core.split("\n")
    body = [b for b in blocks(core) if block_kind(lines, b) not in ("title", "ps")]
    # Group the body blocks into n sections, as evenly as possible, and put a header on each.
    per, extra = divmod(len(body), inst.n)
    starts, at = [], 0
    for s in range(inst.n):
        if at < len(body):
            starts.append(body[at][0])
        at += per + (1 if s < extra else 0)
    for number, i in reversed(list(enumerate(starts, start=1))):
        lines.insert(i, f"SECTION {number}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- start and end


def _check_end_phrase(inst, raw, core):
    text = core.rstrip()
    tail = " ".join(text.split()[-len(inst.phrase.split()) - 2 :])
    return text.endswith(inst.phrase), {"ending": tail}


def _fix_end_phrase(inst, core, ctx):
    if not core.strip():
        return inst.phrase
    lines = core.rstrip().split("\n")
    candidates = [core.rstrip() + "\n\n" + inst.phrase]  # a line of its own
    if line_kind(lines[-1]) not in ("title", "header"):  # or the last sentence of the last line
        candidates.insert(0, _replace_line(lines, len(lines) - 1, append_sentence(lines[-1], inst.phrase)))
    return _first_ok(candidates, ctx) or candidates[0]


def _check_quotes(inst, raw, core):
    s = raw.strip()
    return is_quoted(raw), {"first": s[:1], "last": s[-1:]}


def _fix_quotes(inst, raw, ctx):
    # Quotes and JSON never go together: a JSON answer is unwrapped, so its lines stay lines.
    shell = open_shell(raw)
    inner = (shell.core if shell.json_key is not None else raw).strip()
    if not words(inner):  # quotes around nothing are no answer: say something inside them
        inner = (inner + " " + T.fill(T.FILLERS[0], ctx.topic or "it")).strip()
    return f'"{inner}"'


def _check_postscript(inst, raw, core):
    return has_postscript(core), {}


def _fix_postscript(inst, core, ctx):
    note = match_case("P.S. " + (_fresh(T.POSTSCRIPTS, core, ctx.topic) or [T.fill(T.POSTSCRIPTS[0], ctx.topic)])[0], core)
    candidates = [core.rstrip() + "\n\n" + note if core.strip() else note]
    # A closing phrase already in place must stay last: the P.S. goes just before it.
    lines = core.rstrip().split("\n")
    spans = sentence_spans(lines[-1]) if lines else []
    if spans:
        start, end = spans[-1]
        before = lines[-1][:start].rstrip()
        moved = lines[:-1] + ([before] if before.strip() else [])
        candidates.append(tidy("\n".join(moved)) + "\n\n" + note + " " + lines[-1][start:end])
    return _first_ok(candidates, ctx) or candidates[0]


# ----------------------------------------------------------------------------- punctuation and placeholders


def _check_no_commas(inst, raw, core):
    count = raw.count(",")
    return count == 0, {"count": count}


def _fix_no_commas(inst, raw, ctx):
    # The checker reads the raw text, so a JSON object's own commas (between its fields) count: its
    # strings are written back as one field, as every edit of a JSON answer's core does.
    shell = open_shell(raw)
    core = re.sub(r"(?<=\d),(?=\d{3}\b)", "", shell.core)  # 1,000 → 1000, not "1 000"
    core = re.sub(r"[ \t]*,[ \t]*", " ", core)
    core = re.sub(r"[ \t]+\n", "\n", core).rstrip(" ")
    if shell.json_key is None:
        return shell.wrap(core)
    key = shell.json_key if "," not in shell.json_key else "response"
    return json.dumps({key: f'"{core}"' if shell.quoted else core}, ensure_ascii=False)


def _check_placeholders(inst, raw, core):
    found = placeholders(core)
    return len(found) >= inst.n, {"count": len(found), "example": found[0] if found else ""}


def _fix_placeholders(inst, core, ctx):
    options = _fresh(T.PLACEHOLDER_SENTENCES, core, ctx.topic)
    return _grow(core, ctx, lambda c: len(placeholders(c)) >= inst.n, options)


# ----------------------------------------------------------------------------- the catalogue


@dataclass(frozen=True)
class Spec:
    """One instruction type: how prompts ask for it, how it is checked, praised, criticised, fixed."""

    group: str
    params: tuple[str, ...]  # the Instruction fields this type uses
    prompts: tuple[str, ...]  # phrasings for the prompt (str.format over the fields)
    met: tuple[str, ...]  # critique sentences when it is met
    broken: tuple[str, ...]  # critique sentences when it is broken, with specifics
    check: Callable  # (inst, raw, core) -> (met, facts)
    fix: Callable  # (inst, core, ctx) -> core; or (inst, raw, ctx) -> raw when fixes_raw
    sample: Callable  # (rng, topic, used words) -> Instruction
    unit: str = ""  # what `n` counts, for "3 bullet points"
    fixes_raw: bool = False  # the fixer works on the whole text (the wrappers), not the core


def _n(kind: str, choices: tuple[int, ...]):
    return lambda rng, topic, used: Instruction(kind, n=rng.choice(choices))


def _plain(kind: str):
    return lambda rng, topic, used: Instruction(kind)


def _fresh_keywords(rng: random.Random, used: set[str], k: int) -> tuple[str, ...]:
    pool = [w for w in T.KEYWORDS if w not in used]
    return tuple(rng.sample(pool, k))


SPECS: dict[str, Spec] = {
    "words_at_most": Spec(
        group="length", params=("n",), unit="word",
        prompts=("Answer with at most {n} words.", "Keep your response to {n} words or fewer.",
                 "Your entire response should contain no more than {n} words."),
        met=("At {C} it stays within the limit of {n}.", "It respects the {n}-word limit ({C}).",
             "The length is right: {C} against a maximum of {n}."),
        broken=("It runs to {C}; the prompt asked for at most {n}.",
                "At {C} it is {diff} over the {n}-word limit.",
                "It is too long: {C} where the prompt allowed no more than {n}."),
        check=_check_words_at_most, fix=_fix_words_at_most, sample=_n("words_at_most", (100, 120, 150, 200)),
    ),
    "words_at_least": Spec(
        group="length", params=("n",), unit="word",
        prompts=("Answer with at least {n} words.", "Your response should be {n} words or longer.",
                 "Write no fewer than {n} words."),
        met=("At {C} it meets the minimum of {n}.", "It is long enough: {C} where at least {n} were asked for.",
             "It clears the {n}-word minimum with {C}."),
        broken=("It has only {C}; the prompt asked for at least {n}.",
                "At {C} it falls {diff} short of the {n}-word minimum.",
                "It is too short: {C} where the prompt asked for no fewer than {n}."),
        check=_check_words_at_least, fix=_fix_words_at_least, sample=_n("words_at_least", (120, 150, 200, 250)),
    ),
    "sentences_at_most": Spec(
        group="length", params=("n",), unit="sentence",
        prompts=("Use at most {N}.", "Your answer must not have more than {N}.", "Keep it to {n} sentences or fewer."),
        met=("It keeps to {C}, within the limit of {n}.", "With {C} it stays within the cap of {n}.",
             "The sentence count is fine: {count} of at most {n}."),
        broken=("It has {C}; the prompt asked for at most {n}.", "It uses {C}, {diff} more than the {n} allowed.",
                "There are {C} where no more than {n} were allowed."),
        check=_check_sentences_at_most, fix=_fix_sentences_at_most, sample=_n("sentences_at_most", (8, 10, 12)),
    ),
    "sentences_at_least": Spec(
        group="length", params=("n",), unit="sentence",
        prompts=("Write at least {N}.", "Your response should contain {n} or more sentences.", "Use no fewer than {N}."),
        met=("It has {C}, meeting the minimum of {n}.", "With {C} it clears the minimum of {n}.",
             "The sentence count is fine: {count} where at least {n} were asked for."),
        broken=("It has only {C}; the prompt asked for at least {n}.", "It has {C}, {diff} short of the minimum of {n}.",
                "There are {C} where at least {n} were asked for."),
        check=_check_sentences_at_least, fix=_fix_sentences_at_least, sample=_n("sentences_at_least", (6, 8, 10, 12)),
    ),
    "paragraphs_exact": Spec(
        group="length", params=("n",), unit="paragraph",
        prompts=("There should be exactly {N}, separated from each other by a blank line.",
                 "Write exactly {n} paragraphs with a blank line between them.",
                 "Organise your answer in {N}; separate paragraphs with an empty line."),
        met=("It has exactly {N}, as asked.", "The structure is right: {N}, separated by blank lines.",
             "It is laid out in the requested {N}."),
        broken=("It has {C}; the prompt asked for exactly {n}.", "The prompt asked for exactly {N}, but it has {count}.",
                "It is laid out in {C} instead of {n}."),
        check=_check_paragraphs_exact, fix=_fix_paragraphs_exact, sample=_n("paragraphs_exact", (2, 3, 4, 5)),
    ),
    "keyword_include": Spec(
        group="keywords", params=("keywords",),
        prompts=("Include the {kw_noun} {kw} in the response.", "Make sure to use the {kw_noun} {kw}.",
                 "Your answer must mention {kw}."),
        met=("It works in the required {kw_noun} {kw}.", "It uses {kw} as asked.",
             "The {kw_noun} {kw} {is_are} there, as the prompt required."),
        broken=("It never uses {missing}, which the prompt required.",
                "The required {missing_noun} {missing} {missing_is_are} missing.",
                "It leaves out {missing}, although the prompt asked for {it_them}."),
        check=_check_keyword_include, fix=_fix_keyword_include,
        sample=lambda rng, topic, used: Instruction("keyword_include", keywords=_fresh_keywords(rng, used, rng.choice((1, 2)))),
    ),
    "keyword_avoid": Spec(
        group="keywords", params=("keywords",),
        prompts=("Do not include the {kw_noun} {kw} in the response.", "Avoid the {word_words} {kw}.",
                 "Do not use {kw} anywhere in your answer."),
        met=("It avoids {kw}, as asked.", "It steers clear of the forbidden {word_words} {kw}.",
             "None of the banned words ({kw}) appear."),
        broken=("It uses {found}, which the prompt forbade.", "The forbidden {found_noun} {found} {appear_s} despite the instruction.",
                "It should not contain {found}, but it does."),
        check=_check_keyword_avoid, fix=_fix_keyword_avoid,
        sample=lambda rng, topic, used: Instruction("keyword_avoid", keywords=tuple(rng.sample(sorted(T.AVOIDABLE), rng.choice((1, 2))))),
    ),
    "keyword_frequency": Spec(
        group="keywords", params=("keyword", "n"),
        prompts=("Use the word '{keyword}' at least {times}.", "The word '{keyword}' should appear {times} or more.",
                 "Mention '{keyword}' at least {times} in your answer."),
        met=("It uses '{keyword}' {count_times}, as asked.", "The word '{keyword}' appears {count_times}, meeting the minimum of {n}.",
             "It repeats '{keyword}' often enough ({count_times})."),
        broken=("The word '{keyword}' appears {count_times}; the prompt asked for at least {n}.",
                "It uses '{keyword}' {count_times} where at least {n} were needed.",
                "'{keyword}' should appear at least {times}, but it appears {count_times}."),
        check=_check_keyword_frequency, fix=_fix_keyword_frequency,
        sample=lambda rng, topic, used: Instruction("keyword_frequency", keyword=_fresh_keywords(rng, used, 1)[0], n=rng.choice((2, 3, 4))),
    ),
    "lowercase": Spec(
        group="case", params=(),
        prompts=("Your entire response should be in English and in all lowercase letters. No capital letters are allowed.",
                 "Write everything in lowercase, with no capital letters at all.",
                 "Use only lowercase letters throughout your answer."),
        met=("It is written entirely in lowercase, as asked.", "It keeps to lowercase letters throughout.",
             "There are no capital letters, as the prompt required."),
        broken=("It uses capital letters (for example '{example}'), but the prompt asked for all lowercase.",
                "It is not all lowercase: {count_caps}, such as in '{example}'.",
                "The prompt asked for no capital letters, yet it has {count_caps}, starting with '{example}'."),
        check=_check_lowercase, fix=_fix_lowercase, sample=_plain("lowercase"),
    ),
    "uppercase": Spec(
        group="case", params=(),
        prompts=("Your entire response should be in English and in all capital letters.",
                 "Write your whole answer in CAPITAL LETTERS.", "Use only capital letters in your response."),
        met=("It is written entirely in capital letters, as asked.", "It keeps to capitals throughout.",
             "Every letter is a capital, as the prompt required."),
        broken=("It uses lowercase letters (for example '{example}'), but the prompt asked for all capitals.",
                "It is not all capitals: {count_lower}, such as in '{example}'.",
                "The prompt asked for capital letters only, yet it has {count_lower}, starting with '{example}'."),
        check=_check_uppercase, fix=_fix_uppercase, sample=_plain("uppercase"),
    ),
    "bullets_exact": Spec(
        group="format", params=("n",), unit="bullet point",
        prompts=("Your answer must contain exactly {N}. Use markdown bullet points such as: * This is a point.",
                 "Include exactly {n} bullet points in markdown format (lines starting with '* ').",
                 "Make a list of exactly {N}, each line starting with '* '."),
        met=("It has exactly {N}, as asked.", "The list is right: {N}.", "It sticks to the requested {N}."),
        broken=("It has {C}; the prompt asked for exactly {n}.", "The prompt asked for exactly {N}, but it has {count}.",
                "There should be exactly {N} here, not {count}."),
        check=_check_bullets_exact, fix=_fix_bullets_exact, sample=_n("bullets_exact", (2, 3, 4, 5)),
    ),
    "title": Spec(
        group="format", params=(),
        prompts=("Your answer must contain a title, wrapped in double angular brackets, such as <<poem of joy>>.",
                 "Give your response a title in double angular brackets, like <<my title>>.",
                 "Include a title wrapped in << and >>."),
        met=("It has a title in double angular brackets ({found}).", "The title {found} is formatted as asked.",
             "It gives itself a proper title, {found}."),
        broken=("It has no title in double angular brackets (<<like this>>).",
                "The prompt asked for a title wrapped in << >>, and there is none.",
                "It is missing the title in <<double angular brackets>>."),
        check=_check_title, fix=_fix_title, sample=_plain("title"),
    ),
    "highlights_at_least": Spec(
        group="format", params=("n",), unit="highlighted section",
        prompts=("Highlight at least {N} with markdown, i.e. *highlighted section*.",
                 "Mark at least {N} of your answer with asterisks, *like this*.",
                 "Use markdown to highlight at least {N}, like *this*."),
        met=("It highlights {C} with asterisks, meeting the minimum of {n}.", "The *highlighted* parts are there ({count}).",
             "It marks {C}, as asked."),
        broken=("It has {C}; the prompt asked for at least {n}.",
                "The prompt asked for at least {N} in *asterisks*, but it has {count}.",
                "It marks only {C}, short of the {n} asked for."),
        check=_check_highlights_at_least, fix=_fix_highlights_at_least, sample=_n("highlights_at_least", (1, 2, 3)),
    ),
    "json_format": Spec(
        group="format", params=(), fixes_raw=True,
        prompts=("Entire output should be wrapped in JSON format.", "Format your whole answer as a JSON object.",
                 "Reply with a valid JSON object only, nothing outside it."),
        met=("It is valid JSON, as asked.", "The whole answer is a well-formed JSON object.", "It keeps to the JSON format throughout."),
        broken=("It is not valid JSON: it starts with '{start}'.",
                "The prompt asked for the whole answer as a JSON object, but it begins '{start}'.",
                "It is not a JSON object (it opens with '{start}'), though the prompt required one."),
        check=_check_json_format, fix=_fix_json_format, sample=_plain("json_format"),
    ),
    "sections": Spec(
        group="format", params=("n",), unit="section",
        prompts=("Your response must have {N}. Mark the beginning of each section with SECTION X, such as: SECTION 1.",
                 "Divide your answer into {N}, each starting with a line 'SECTION X' (SECTION 1, SECTION 2, ...).",
                 "Organise the answer in exactly {N}, headed SECTION 1 to SECTION {n}."),
        met=("It is divided into {N}, each headed 'SECTION X'.", "The {n} SECTION headers are there, as asked.",
             "The structure follows the prompt: {N}."),
        broken=("It has {count} SECTION headers; the prompt asked for exactly {n}.",
                "The prompt asked for {N} marked 'SECTION X', but it has {count}.",
                "It is divided into {C} instead of {n}."),
        check=_check_sections, fix=_fix_sections, sample=_n("sections", (2, 3, 4)),
    ),
    "end_phrase": Spec(
        group="startend", params=("phrase",),
        prompts=("Finish your response with this exact phrase: '{phrase}'. No other words should follow it.",
                 "End your answer with the exact phrase '{phrase}'.",
                 "Your response must end with '{phrase}', with nothing after it."),
        met=("It ends with the exact phrase '{phrase}', as asked.", "The closing line '{phrase}' is exactly right.",
             "It finishes on the required phrase."),
        broken=("It ends with '{ending}' instead of the exact phrase '{phrase}'.",
                "The prompt asked it to end with '{phrase}', but it ends with '{ending}'.",
                "It does not finish with the required phrase '{phrase}'; its last words are '{ending}'."),
        check=_check_end_phrase, fix=_fix_end_phrase,
        sample=lambda rng, topic, used: Instruction("end_phrase", phrase=rng.choice(T.END_PHRASES)),
    ),
    "quotes": Spec(
        group="startend", params=(), fixes_raw=True,
        prompts=("Wrap your entire response with double quotation marks.", "Put your whole answer inside double quotes.",
                 "Enclose the entire response in double quotation marks."),
        met=("It is wrapped in double quotation marks, as asked.", "The whole answer sits inside double quotes.",
             "It keeps the required double quotes around everything."),
        broken=("It is not wrapped in double quotation marks: it starts with '{first}' and ends with '{last}'.",
                "The prompt asked for the whole answer inside double quotes, and they are missing.",
                "It lacks the double quotation marks around the entire response."),
        check=_check_quotes, fix=_fix_quotes, sample=_plain("quotes"),
    ),
    "no_commas": Spec(
        group="punctuation", params=(), unit="comma",
        prompts=("In your entire response, refrain from the use of any commas.", "Do not use any commas.",
                 "Write without a single comma."),
        met=("It uses no commas at all, as asked.", "There is not a single comma, as the prompt required.",
             "It avoids commas throughout."),
        broken=("It uses {C}; the prompt asked for none.", "There are {C} in it, though commas were not allowed.",
                "It should have no commas, but it has {count}."),
        check=_check_no_commas, fix=_fix_no_commas, sample=_plain("no_commas"), fixes_raw=True,
    ),
    "postscript": Spec(
        group="detectable", params=(),
        prompts=("At the end of your response, please explicitly add a postscript starting with P.S.",
                 "Add a postscript at the end that starts with 'P.S.'.", "Finish with a short postscript beginning 'P.S.'."),
        met=("It adds a postscript starting with P.S., as asked.", "The P.S. at the end is there.", "It remembers the postscript."),
        broken=("It has no postscript starting with P.S.", "The prompt asked for a postscript beginning 'P.S.', and there is none.",
                "It is missing the P.S. at the end."),
        check=_check_postscript, fix=_fix_postscript, sample=_plain("postscript"),
    ),
    "placeholders": Spec(
        group="detectable", params=("n",), unit="placeholder",
        prompts=("The response must contain at least {N} represented by square brackets, such as [address].",
                 "Include at least {N} in square brackets, like [name].",
                 "Use at least {N} in square brackets (for example [date])."),
        met=("It includes {C} in square brackets, such as {example}.", "The placeholders in square brackets are there ({count}).",
             "It has enough [placeholders]: {count}."),
        broken=("It has {C} in square brackets; the prompt asked for at least {n}.",
                "The prompt asked for at least {N} like [address], but it has {count}.",
                "Only {C} in square brackets; it needs at least {n}."),
        check=_check_placeholders, fix=_fix_placeholders, sample=_n("placeholders", (1, 2, 3)),
    ),
}

TYPES: tuple[str, ...] = tuple(SPECS)

# Pairs that are never drawn together: they contradict each other, or one makes the other
# meaningless (a JSON object has no bullets), or together they leave no room (many sentences in
# few words).
_CONFLICTING_PAIRS = [
    ("lowercase", "uppercase"),
    ("lowercase", "sections"),  # the headers are written "SECTION X"
    ("lowercase", "end_phrase"),  # the phrase is exact, capitals included
    ("uppercase", "end_phrase"),
    ("words_at_most", "words_at_least"),
    ("sentences_at_most", "sentences_at_least"),
    ("words_at_least", "sentences_at_most"),
    ("words_at_most", "sentences_at_least"),
    ("paragraphs_exact", "sections"),
    ("paragraphs_exact", "bullets_exact"),
] + [
    ("json_format", other)
    for other in ("bullets_exact", "sections", "title", "quotes", "highlights_at_least", "end_phrase", "postscript",
                  "paragraphs_exact", "uppercase")
]
CONFLICTS: dict[str, frozenset[str]] = {
    kind: frozenset(b for a, b in _CONFLICTING_PAIRS if a == kind) | frozenset(a for a, b in _CONFLICTING_PAIRS if b == kind)
    for kind in SPECS
}

FIX_ORDER: tuple[str, ...] = (
    "keyword_avoid",  # first: nothing added later may bring a forbidden word back
    "no_commas",
    "title",
    "sections",
    "paragraphs_exact",
    "bullets_exact",
    "highlights_at_least",
    "placeholders",
    "keyword_include",
    "keyword_frequency",
    "postscript",
    "end_phrase",  # after the P.S.: the phrase must stay the last words
    "sentences_at_least",
    "sentences_at_most",
    "words_at_least",
    "words_at_most",  # lengths after every addition, trimming around what the others placed
    "lowercase",
    "uppercase",  # case changes no count, so it can come after the lengths
    "quotes",
    "json_format",  # the wrappers last
)
assert set(FIX_ORDER) == set(SPECS)
_RANK = {kind: i for i, kind in enumerate(FIX_ORDER)}


# ----------------------------------------------------------------------------- parsing, drawing, describing


def _conflict(a: Instruction, b: Instruction) -> str | None:
    """Why two instructions cannot be drawn together, or None."""
    if a.type == b.type:
        return f"'{a.type}' appears twice"
    if b.type in CONFLICTS[a.type]:
        return f"'{a.type}' and '{b.type}' conflict"
    words_of = lambda i: {w.lower() for w in i.keywords} | ({i.keyword.lower()} if i.keyword else set())
    for avoid, other in ((a, b), (b, a)):
        if avoid.type != "keyword_avoid":
            continue
        clash = words_of(avoid) & (words_of(other) if other.type != "keyword_avoid" else set())
        if other.phrase:
            clash |= {w for w in words_of(avoid) if count_word(other.phrase, w)}
        if clash:
            return f"'{avoid.type}' forbids {_quoted(sorted(clash))}, which '{other.type}' needs"
    return None


def check_compatible(instructions: Iterable[Instruction]) -> None:
    """Raise ``InstructionError`` if any two instructions of the set conflict."""
    instructions = list(instructions)
    for i, a in enumerate(instructions):
        for b in instructions[i + 1 :]:
            reason = _conflict(a, b)
            if reason:
                raise InstructionError(f"conflicting instructions: {reason}")


def _positive_int(kind: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InstructionError(f"instruction '{kind}': 'n' must be a whole number >= 1, got {value!r}")
    return value


def _word(kind: str, name: str, value: Any) -> str:
    # The whole value must be the word: "budget." was taken, and no text could ever contain it as a word
    # (the checkers match whole words), so it could never be included, and an avoided one never found.
    if not isinstance(value, str) or not WORD_RE.fullmatch(value.strip()):
        raise InstructionError(f"instruction '{kind}': {name} must be a single word (letters and digits), got {value!r}")
    return value.strip()


def parse_instruction(obj: Any) -> Instruction:
    """One instruction from its JSON form; a clear ``InstructionError`` if it is not one."""
    if isinstance(obj, Instruction):
        return obj
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise InstructionError(f"an instruction must be an object with a 'type', got {obj!r}")
    kind = obj["type"]
    if kind not in SPECS:
        raise InstructionError(f"unknown instruction type {kind!r} (known: {', '.join(TYPES)})")
    spec = SPECS[kind]
    unknown = set(obj) - {"type", *spec.params}
    if unknown:
        raise InstructionError(f"instruction '{kind}' takes {', '.join(spec.params) or 'no parameters'}; got {', '.join(sorted(unknown))}")
    missing = [p for p in spec.params if p not in obj]
    if missing:
        raise InstructionError(f"instruction '{kind}' needs {', '.join(missing)}")
    fields_: dict[str, Any] = {}
    if "n" in spec.params:
        fields_["n"] = _positive_int(kind, obj["n"])
    if "keywords" in spec.params:
        value = obj["keywords"]
        if not isinstance(value, list) or not value:
            raise InstructionError(f"instruction '{kind}': keywords must be a non-empty list of words")
        fields_["keywords"] = tuple(_word(kind, "each keyword", w) for w in value)
    if "keyword" in spec.params:
        fields_["keyword"] = _word(kind, "keyword", obj["keyword"])
    if "phrase" in spec.params:
        phrase = obj["phrase"]
        if not isinstance(phrase, str) or not phrase.strip():
            raise InstructionError(f"instruction '{kind}': phrase must be a non-empty string")
        fields_["phrase"] = phrase.strip()
    return Instruction(kind, **fields_)


def parse_instructions(items: Any) -> tuple[Instruction, ...]:
    """A compatible set of instructions from JSON (a list of objects), or ``InstructionError``."""
    if not isinstance(items, (list, tuple)) or not items:
        raise InstructionError(f"instructions must be a non-empty list, got {items!r}")
    parsed = tuple(parse_instruction(obj) for obj in items)
    check_compatible(parsed)
    return parsed


def sample_instructions(
    rng: random.Random, topic: str = "", k: int | None = None, types: Iterable[str] | None = None
) -> tuple[Instruction, ...]:
    """Draw 1–3 compatible instructions (``k`` of them if given) with their parameters."""
    pool = list(types) if types is not None else list(TYPES)
    for kind in pool:
        if kind not in SPECS:
            raise InstructionError(f"unknown instruction type {kind!r} (known: {', '.join(TYPES)})")
    k = k if k is not None else rng.choices((1, 2, 3), weights=(3, 4, 3))[0]
    rng.shuffle(pool)
    chosen: list[Instruction] = []
    used: set[str] = set()
    for kind in pool:
        if len(chosen) == k:
            break
        inst = SPECS[kind].sample(rng, topic, used)
        if any(_conflict(inst, other) for other in chosen):
            continue
        chosen.append(inst)
        used |= set(inst.keywords) | ({inst.keyword} if inst.keyword else set())
    return tuple(chosen)


def describe(inst: Instruction, rng: random.Random | None = None) -> str:
    """How a prompt asks for this instruction (one of its phrasings)."""
    options = SPECS[inst.type].prompts
    template = options[0] if rng is None else rng.choice(options)
    return template.format(**_fields(inst, {}))


# ----------------------------------------------------------------------------- checking and fixing


def check(inst: Instruction, text: str) -> Check:
    met, facts = SPECS[inst.type].check(inst, text, open_shell(text).core)
    return Check(inst, bool(met), facts)


def fix(inst: Instruction, text: str, topic: str = "", keep: Iterable[Instruction] = ()) -> str:
    """Edit ``text`` as little as possible so ``inst`` is met, trying to keep ``keep`` met.

    A met instruction returns the text unchanged. The result may still break ``inst`` where no
    edit could satisfy it (callers check); ``fix_all`` composes fixers safely.
    """
    if check(inst, text).met:
        return text
    spec = SPECS[inst.type]
    keep = [k for k in keep if k != inst]
    if spec.fixes_raw:
        return spec.fix(inst, text, _Ctx(topic, lambda raw: True))
    shell = open_shell(text)
    # A fix must not take an answer off its topic (the oracle's penalty), whatever else it keeps.
    on_topic = bool(topic) and T.mentions(shell.core, topic)

    def ok(core: str) -> bool:
        candidate = shell.wrap(core)
        return all(check(k, candidate).met for k in keep) and (not on_topic or T.mentions(core, topic))

    return shell.wrap(spec.fix(inst, shell.core, _Ctx(topic, ok)))


def _fix_guarded(inst: Instruction, text: str, topic: str, instructions: list[Instruction]) -> str:
    met = [j for j in instructions if j != inst and check(j, text).met]
    earlier = [j for j in met if _RANK[j.type] < _RANK[inst.type]]
    on_topic = bool(topic) and T.mentions(text, topic)
    for keep in (met, earlier) if len(earlier) < len(met) else (met,):
        fixed = fix(inst, text, topic, keep)
        if check(inst, fixed).met and all(check(j, fixed).met for j in keep) and (not on_topic or T.mentions(fixed, topic)):
            return fixed
    return text


def fix_all(
    instructions: Iterable[Instruction], text: str, topic: str = "", only: Iterable[Instruction] | None = None
) -> str:
    """Apply fixers in ``FIX_ORDER`` so every instruction (or every one in ``only``) is met.

    Instructions outside ``only`` that are met on entry are kept met: if a fix breaks one of them
    (a postscript pushing a word limit), it is restored in its turn. Steps as in the module
    docstring; two more passes catch the rare case a later fix disturbs an earlier one.
    """
    ordered = sorted(instructions, key=lambda i: _RANK[i.type])
    targets = set(ordered if only is None else only) | {i for i in ordered if check(i, text).met}
    for _ in range(3):
        changed = False
        for inst in ordered:
            if inst not in targets or check(inst, text).met:
                continue
            fixed = _fix_guarded(inst, text, topic, ordered)
            changed |= fixed != text
            text = fixed
        if not changed:
            break
    return text


def check_set(instructions: Iterable[Instruction], text: str) -> list[Check]:
    return [check(i, text) for i in instructions]
