"""Reading a response the way the checkers do: its wrappers, lines, blocks, sentences and words.

A response may come wrapped, as a JSON object (``{"response": "..."}``, fenced in ``````json``
or not) and/or in double quotation marks. The *core* is the text inside both wrappers; structure
(bullets, sections, paragraphs, sentences, words, keywords) is read from the core, so wrapping an
answer does not change its counts. Surface rules read the raw text: commas and the wrappers
as they are, case in the raw text or, for JSON, in its strings (a key is structure, and ``\n``
escapes are not letters).

Conventions, fixed here so that checkers and fixers agree:

- a *line* is a title (``<<...>>`` alone), a section header (``SECTION 2``), a bullet (``* `` or
  ``- `` then text), a postscript (starts with ``P.S.``, any case), blank, or prose;
- a *block* is a run of non-blank lines; a *paragraph* is a block with words in it that is
  neither a lone title nor a postscript;
- a *sentence* ends at ``.``, ``!`` or ``?`` (then closing marks such as ``*`` or ``"``) followed by
  a space or the end of the line; no sentence runs across lines; titles and ``SECTION k`` markers
  are not sentences (text after a marker is), a bullet is at least one, ``P.S.`` is not one;
- a *word* is a run of letters or digits (an apostrophe inside keeps it whole); ``P.S.`` is two.

Most of this follows IFEval's checkers (Zhou et al. 2023, arXiv 2311.07911); IFEval counts
paragraphs between ``***`` markers, here they are separated by blank lines, as people write them.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass

WORD_RE = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
TITLE_RE = re.compile(r"<<[^\n<>]*[^\s<>][^\n<>]*>>")  # "<< >>" holds no title (IFEval's rule)
# Case-blind, so lowercasing keeps the structure; text after the marker ("SECTION 1: Sharks are
# ...") is part of the section, not of its header.
HEADER_RE = re.compile(r"^\s*SECTION\s+\d+\b[ \t]*[:.)\-–—]*[ \t]*", re.IGNORECASE)
BULLET_RE = re.compile(r"^\s*[*-]\s+(?=\S)")
RULE_RE = re.compile(r"^\s*(?:[*_-]\s*){3,}$")  # "* * *" is a horizontal rule, not a bullet
PS_RE = re.compile(r"^\s*p\.\s?s\.\s*", re.IGNORECASE)
HIGHLIGHT_RE = re.compile(r"\*[^\n*]*[^\s*][^\n*]*\*")
PLACEHOLDER_RE = re.compile(r"\[[^\[\]\n]*[^\s\[\]][^\[\]\n]*\]")
# A sentence: anything up to terminal punctuation (and closing marks) before a space or the end.
SENTENCE_RE = re.compile(r"\S.*?(?:[.!?]+[\"'’”*)\]]*(?=\s|$)|$)")
TERMINAL_RE = re.compile(r"[.!?][\"'’”*)\]]*\s*$")
FENCE_RE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?```$", re.DOTALL)


def words(text: str) -> list[str]:
    return WORD_RE.findall(text)


@functools.lru_cache(maxsize=1 << 15)
def pattern(source: str, flags: int = 0) -> re.Pattern:
    """``re.compile(source, flags)``, kept: the world builds a pattern per topic, keyword and template (some 16k),
    which overflowed ``re``'s own cache of 512 and were compiled again and again (30% of a build's time)."""
    return re.compile(source, flags)


def count_word(text: str, word: str) -> int:
    """Occurrences of ``word`` as a whole word, any case (IFEval's keyword rule)."""
    return len(pattern(rf"\b{re.escape(word)}\b", re.IGNORECASE).findall(text))


# ----------------------------------------------------------------------------- the wrappers


def json_object(text: str) -> dict | None:
    """The JSON object a text consists of (optionally fenced), or None."""
    s = text.strip()
    fenced = FENCE_RE.match(s)
    if fenced:
        s = fenced.group(1).strip()
    if not s.startswith("{"):
        return None
    try:
        obj = json.loads(s)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def surface_text(raw: str) -> str:
    """The text that case rules read: a JSON object's strings (not its keys or escapes), else the raw text."""
    obj = json_object(raw)
    return raw if obj is None else "\n".join(_strings(obj))


def _strings(obj) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return []


@dataclass(frozen=True)
class Shell:
    """How a core was wrapped, so a fixer can edit the core and put the wrappers back."""

    raw: str
    core: str
    json_key: str | None = None  # the text was a JSON object; rewrapped under this key
    quoted: bool = False  # the text (inside the JSON, if any) was wrapped in double quotes

    def wrap(self, core: str) -> str:
        if core == self.core:
            return self.raw  # unchanged: keep the original formatting byte for byte
        body = f'"{core}"' if self.quoted else core
        if self.json_key is not None:
            return json.dumps({self.json_key: body}, ensure_ascii=False)
        return body


def is_quoted(text: str) -> bool:
    s = text.strip()
    return len(s) >= 2 and s[0] == '"' and s[-1] == '"'


def open_shell(text: str) -> Shell:
    """Unwrap a JSON object (its strings, joined by blank lines) and then double quotes."""
    key = None
    body = text
    obj = json_object(text)
    if obj is not None:
        strings = _strings(obj)
        key = next(iter(obj)) if len(obj) == 1 and isinstance(next(iter(obj.values())), str) else "response"
        body = "\n\n".join(strings)
    quoted = is_quoted(body)
    core = body.strip()[1:-1] if quoted else body
    return Shell(raw=text, core=core, json_key=key, quoted=quoted)


def core_of(text: str) -> str:
    return open_shell(text).core


# ----------------------------------------------------------------------------- lines and blocks


def line_kind(line: str) -> str:
    if not line.strip():
        return "blank"
    if TITLE_RE.fullmatch(line.strip()):
        return "title"
    if HEADER_RE.match(line):
        return "header"
    if PS_RE.match(line):
        return "ps"
    if BULLET_RE.match(line) and not RULE_RE.match(line):
        return "bullet"
    return "prose"


def content_start(line: str, kind: str) -> int:
    """Where the text of a line begins, after a bullet or P.S. marker."""
    if kind == "bullet":
        return BULLET_RE.match(line).end()
    if kind == "ps":
        return PS_RE.match(line).end()
    if kind == "header":
        return HEADER_RE.match(line).end()
    if kind in ("title", "blank"):
        return len(line)
    return len(line) - len(line.lstrip())


def sentence_spans(line: str, kind: str | None = None) -> list[tuple[int, int]]:
    """(start, end) of each sentence of one line; titles inside a line are not part of any."""
    kind = kind or line_kind(line)
    start = content_start(line, kind)
    masked = TITLE_RE.sub(lambda m: " " * len(m.group()), line)
    spans = []
    for m in SENTENCE_RE.finditer(masked, start):
        if WORD_RE.search(m.group()):
            spans.append((m.start(), m.end()))
    return spans


def sentences(core: str) -> list[str]:
    out = []
    for line in core.split("\n"):
        out += [line[a:b] for a, b in sentence_spans(line)]
    return out


def blocks(core: str) -> list[list[int]]:
    """Line indices of each run of non-blank lines."""
    out, current = [], []
    for i, line in enumerate(core.split("\n")):
        if line.strip():
            current.append(i)
        elif current:
            out.append(current)
            current = []
    if current:
        out.append(current)
    return out


def block_kind(lines: list[str], block: list[int]) -> str:
    """'title' (only titles), 'ps' (starts with P.S.), 'header' (only bare headers), 'paragraph'."""
    kinds = [line_kind(lines[i]) for i in block]
    if all(k == "title" for k in kinds):
        return "title"
    if kinds[0] == "ps":
        return "ps"
    text = "\n".join(lines[i][content_start(lines[i], k) :] if k == "header" else lines[i] for i, k in zip(block, kinds))
    if WORD_RE.search(TITLE_RE.sub(" ", text)):
        return "paragraph"
    return "header" if "header" in kinds else "empty"


def paragraphs(core: str) -> list[str]:
    lines = core.split("\n")
    return ["\n".join(lines[i] for i in b) for b in blocks(core) if block_kind(lines, b) == "paragraph"]


def bullet_lines(core: str) -> list[int]:
    return [i for i, line in enumerate(core.split("\n")) if line_kind(line) == "bullet"]


def header_lines(core: str) -> list[int]:
    return [i for i, line in enumerate(core.split("\n")) if line_kind(line) == "header"]


def highlights(core: str) -> list[str]:
    """``*highlighted*`` spans; a bullet's leading ``* `` marker is not the start of one."""
    out = []
    for line in core.split("\n"):
        if line_kind(line) == "bullet":
            line = line[content_start(line, "bullet"):]
        out += HIGHLIGHT_RE.findall(line)
    return out


def placeholders(core: str) -> list[str]:
    return PLACEHOLDER_RE.findall(core)


def has_postscript(core: str) -> bool:
    return any(line_kind(line) == "ps" for line in core.split("\n"))


# ----------------------------------------------------------------------------- small edits


def match_case(sentence: str, core: str) -> str:
    """Write an added sentence in the case the text already keeps (all lower or all upper)."""
    letters = [c for c in core if c.isalpha()]
    if letters and core == core.lower():
        return sentence.lower()
    if letters and core == core.upper():
        return sentence.upper()
    return sentence


def append_sentence(line: str, sentence: str) -> str:
    """A line with a sentence added at its end; a full stop first if the line lacks an ending."""
    head = line.rstrip()
    if not TERMINAL_RE.search(head):
        head += "."
    return f"{head} {sentence}"


def tidy(core: str) -> str:
    """Collapse the runs of blank lines an edit can leave, and trailing spaces on lines."""
    core = re.sub(r"[ \t]+\n", "\n", core)
    core = re.sub(r"\n[ \t]*\n(?:[ \t]*\n)+", "\n\n", core)
    return core.strip("\n")
