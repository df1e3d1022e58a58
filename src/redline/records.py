"""The six data records of redline, and reading, validating and writing them.

Formats, detected by the path: JSON Lines (``.jsonl``, also ``.json`` holding one object per
line, either gzipped as ``.jsonl.gz``), Parquet (``.parquet``), and Hugging Face ``datasets`` (a
local folder saved with ``save_to_disk``, or a hub id such as ``org/name``; ``FOLDER:split`` or
``org/name:split`` names a split, which a folder of several splits requires).

Literal examples, one per kind (``id`` and ``meta`` are optional on every record)::

    demonstration  {"prompt": "Write a haiku.", "response": "Cold wind ..."}
    ranking        {"prompt": "...", "responses": ["a", "b", "c"], "ranks": [1, 0, 1]}
    preference     {"prompt": "...", "chosen": "better", "rejected": "worse"}
    feedback       {"prompt": "...", "response": "...", "critique": "...", "revision": "..."}
    response       {"id": "q17", "prompt": "...", "response": "...", "source": "gpt-3.5"}
    judgment       {"id": "q17", "prompt": "...", "a": "...", "b": "...", "winner": "a",
                    "judge": "oracle", "order": "ab", "raw": "..."}

A prompt is a string or a list of chat messages ``{"role": "user", "content": "..."}``.
Demonstrations and preferences are also read in TRL's layouts as they are (prompt/completion,
``messages``, conversational or implicit-prompt preferences, the H4 shape): ``formats/trl.py``.
A feedback record whose ``revision`` is null is *critique-only* (imported from Shepherd or
UltraFeedback): it trains the critique part of a critic and nothing else.

Every error names ``FILE:LINE: FIELD: reason``; a file is read whole and all its errors (up to
``MAX_ERRORS``) are reported together, unless ``skip_invalid`` is set, in which case bad lines
are skipped and counted with their reasons.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import tempfile
import zlib
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator, Sequence, TypeVar, Union

from redline import RedlineError

R = TypeVar("R", bound="Record")

Message = dict[str, str]
Prompt = Union[str, list[Message]]

ROLES = ("system", "user", "assistant")
WINNERS = ("a", "b", "tie", "invalid")
MAX_ERRORS = 20
BOM = b"\xef\xbb\xbf"  # UTF-8's byte order mark, which Notepad and Excel open a file with


class RecordError(ValueError):
    """One or more records are bad; ``errors`` holds one ``FILE:LINE: FIELD: reason`` each."""

    def __init__(self, errors: list[str], total: int | None = None):
        self.errors = errors
        self.total = total if total is not None else len(errors)
        more = f"\n... and {self.total - len(errors)} more" if self.total > len(errors) else ""
        super().__init__("\n".join(errors) + more)


class FieldError(ValueError):
    """A single field of a single record is wrong (the reader adds file and line)."""

    def __init__(self, field_name: str, reason: str):
        self.field = field_name
        self.reason = reason
        super().__init__(f"{field_name}: {reason}")


# ----------------------------------------------------------------------------- field checks


def text_field(obj: dict, name: str, *, allow_empty: bool = False) -> str:
    if name not in obj:
        raise FieldError(name, "missing")
    value = obj[name]
    if not isinstance(value, str):
        raise FieldError(name, f"expected a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise FieldError(name, "empty string where text is needed")
    return value


def prompt_field(obj: dict, name: str = "prompt") -> Prompt:
    if name not in obj:
        raise FieldError(name, "missing")
    value = obj[name]
    if isinstance(value, str):
        if not value.strip():
            raise FieldError(name, "empty string where text is needed")
        return value
    if isinstance(value, list):
        if not value:
            raise FieldError(name, "empty list of messages")
        for i, message in enumerate(value):
            where = f"{name}[{i}]"
            if not isinstance(message, dict):
                raise FieldError(where, f"expected a message object, got {type(message).__name__}")
            role = message.get("role")
            if role not in ROLES:
                raise FieldError(f"{where}.role", f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
            content = message.get("content")
            if not isinstance(content, str):
                raise FieldError(f"{where}.content", "expected a string")
        if not any(m["content"].strip() for m in value):  # as empty as "": a model was asked nothing
            raise FieldError(name, "no message holds any text" + (", an empty prompt" if name == "prompt" else ""))  # or a reply
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise FieldError(name, f"expected a string or a list of messages, got {type(value).__name__}")


ORDERS = ("ab", "ba", "both")  # how a judge was shown a pair: A first, B first, or both ways


def optional_id(obj: dict) -> str | None:
    value = obj.get("id")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise FieldError("id", f"expected a string, got {type(value).__name__}")
    value = str(value)
    if not value.strip():
        raise FieldError("id", "empty string where an id is needed")
    return value


def meta_field(obj: dict) -> dict:
    value = obj.get("meta")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FieldError("meta", f"expected an object, got {type(value).__name__}")
    return value


def prompt_text(prompt: Prompt) -> str:
    """The text of a prompt: the string itself, or the last user message of a chat."""
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m["role"] == "user"]
    return users[-1] if users else prompt[-1]["content"]


def prompt_key(prompt: Prompt) -> str:
    """A hashable key that identifies a prompt, for matching records across files."""
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, ensure_ascii=False)


# ----------------------------------------------------------------------------- the records


@dataclass
class Record:
    kind: ClassVar[str] = ""
    id: str | None = field(default=None, kw_only=True)
    meta: dict[str, Any] = field(default_factory=dict, kw_only=True)

    @classmethod
    def from_dict(cls, obj: Any) -> "Record":
        if not isinstance(obj, dict):
            raise FieldError("<record>", f"expected a JSON object, got {type(obj).__name__}")
        return cls._parse(obj)

    @classmethod
    def _parse(cls, obj: dict) -> "Record":  # pragma: no cover - every kind overrides it
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data; ``id`` and ``meta`` only where set."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "id" and value is None:
                continue
            if f.name == "meta" and not value:
                continue
            out[f.name] = value
        return out


@dataclass
class Demonstration(Record):
    kind: ClassVar[str] = "demonstration"
    prompt: Prompt
    response: str

    @classmethod
    def _parse(cls, obj):
        return cls(prompt=prompt_field(obj), response=text_field(obj, "response"), id=optional_id(obj), meta=meta_field(obj))


@dataclass
class Ranking(Record):
    kind: ClassVar[str] = "ranking"
    prompt: Prompt
    responses: list[str]
    ranks: list[int]

    @classmethod
    def _parse(cls, obj):
        prompt = prompt_field(obj)
        responses = obj.get("responses")
        if "responses" not in obj:
            raise FieldError("responses", "missing")
        if not isinstance(responses, list):
            raise FieldError("responses", f"expected a list of strings, got {type(responses).__name__}")
        if len(responses) < 2:
            raise FieldError("responses", f"a ranking needs at least 2 responses, got {len(responses)}")
        for i, r in enumerate(responses):
            if not isinstance(r, str):
                raise FieldError(f"responses[{i}]", f"expected a string, got {type(r).__name__}")
            if not r.strip():
                raise FieldError(f"responses[{i}]", "empty string where text is needed")
        if "ranks" not in obj:
            raise FieldError("ranks", "missing")
        ranks = obj["ranks"]
        if not isinstance(ranks, list) or not all(isinstance(r, int) and not isinstance(r, bool) for r in ranks):
            raise FieldError("ranks", "expected a list of integers")
        if len(ranks) != len(responses):
            raise FieldError("ranks", f"{len(ranks)} ranks for {len(responses)} responses")
        if any(r < 0 for r in ranks):
            raise FieldError("ranks", "ranks must be >= 0 (0 = best)")
        # Every response tied is a valid label (the annotator could not tell them apart); it holds no
        # comparison, so the reward model skips it and says so.
        return cls(prompt=prompt, responses=list(responses), ranks=list(ranks), id=optional_id(obj), meta=meta_field(obj))

    def comparisons(self) -> list[tuple[int, int]]:
        """Every (better, worse) pair of indices; ties are dropped, as InstructGPT does."""
        k = len(self.responses)
        return [(i, j) for i in range(k) for j in range(k) if self.ranks[i] < self.ranks[j]]

    def n_ties(self) -> int:
        """How many pairs of responses share a rank."""
        counts = Counter(self.ranks)
        return sum(c * (c - 1) // 2 for c in counts.values())


def dense_ranks(values: list[float], *, highest_best: bool = False) -> list[int]:
    """A ``Ranking``'s ranks (0 = best, ties shared, no gaps) of ``values``, the lowest best unless ``highest_best``:
    ``[1, 1, 3] -> [0, 0, 1]``; ``[4.5, 3.0, 4.5, 2.0]`` with ``highest_best`` -> ``[0, 1, 0, 2]``."""
    order = sorted(set(values), reverse=highest_best)
    return [order.index(v) for v in values]


@dataclass
class Preference(Record):
    kind: ClassVar[str] = "preference"
    prompt: Prompt
    chosen: str
    rejected: str

    @classmethod
    def _parse(cls, obj):
        return cls(
            prompt=prompt_field(obj),
            chosen=text_field(obj, "chosen"),
            rejected=text_field(obj, "rejected"),
            id=optional_id(obj),
            meta=meta_field(obj),
        )

    @property
    def identical(self) -> bool:
        """Chosen and rejected are the same text (up to surrounding space): no preference to learn;
        importers keep such pairs and count them, and PIT's gap loss can use them as anchors."""
        return self.chosen.strip() == self.rejected.strip()


@dataclass
class Feedback(Record):
    kind: ClassVar[str] = "feedback"
    prompt: Prompt
    response: str
    critique: str
    revision: str | None = None  # None: critique-only (trains the critique part only)

    @property
    def critique_only(self) -> bool:
        return self.revision is None

    @property
    def unchanged(self) -> bool:
        """The annotator found nothing to fix: the revision is the response (whitespace aside)."""
        return self.revision is not None and " ".join(self.revision.split()) == " ".join(self.response.split())

    @classmethod
    def _parse(cls, obj):
        revision = obj.get("revision")
        if revision is not None:
            revision = text_field(obj, "revision")
        elif "revision" not in obj and not meta_field(obj).get("critique_only"):
            raise FieldError("revision", "missing (write null and meta.critique_only = true for a critique-only record)")
        return cls(
            prompt=prompt_field(obj),
            response=text_field(obj, "response"),
            critique=text_field(obj, "critique"),
            revision=revision,
            id=optional_id(obj),
            meta=meta_field(obj),
        )

    def to_dict(self):
        out = super().to_dict()
        if self.revision is None:
            out["meta"] = {**self.meta, "critique_only": True}
        return out


@dataclass
class Response(Record):
    kind: ClassVar[str] = "response"
    prompt: Prompt
    response: str
    source: str | None = None

    @classmethod
    def _parse(cls, obj):
        source = obj.get("source")
        if source is not None and not isinstance(source, str):
            raise FieldError("source", f"expected a string, got {type(source).__name__}")
        # An empty response is legal here: it is what a model wrote, and the judges must see it.
        return cls(
            prompt=prompt_field(obj),
            response=text_field(obj, "response", allow_empty=True),
            source=source,
            id=optional_id(obj),
            meta=meta_field(obj),
        )


@dataclass
class Judgment(Record):
    kind: ClassVar[str] = "judgment"
    prompt: Prompt
    a: str
    b: str
    winner: str
    judge: str
    order: str = "ab"
    raw: str = ""

    @classmethod
    def _parse(cls, obj):
        winner = text_field(obj, "winner")
        if winner not in WINNERS:
            raise FieldError("winner", f"{winner!r} is not one of {', '.join(WINNERS)}")
        order = obj.get("order", "ab")
        if order not in ORDERS:  # "BA" would read as "ab" and swap the scores a judge gave
            raise FieldError("order", f"{order!r} is not one of {', '.join(ORDERS)}")
        raw = obj.get("raw", "")
        if not isinstance(raw, str):
            raise FieldError("raw", "expected a string")
        return cls(
            prompt=prompt_field(obj),
            a=text_field(obj, "a", allow_empty=True),
            b=text_field(obj, "b", allow_empty=True),
            winner=winner,
            judge=text_field(obj, "judge"),
            order=order,
            raw=raw,
            id=optional_id(obj),
            meta=meta_field(obj),
        )


KINDS: dict[str, type[Record]] = {
    cls.kind: cls for cls in (Demonstration, Ranking, Preference, Feedback, Response, Judgment)
}


def record_class(kind: str) -> type[Record]:
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown record kind {kind!r} (expected one of {', '.join(KINDS)})") from None


# ----------------------------------------------------------------------------- reading


@dataclass
class ReadReport:
    """What a read kept and what it skipped (with ``skip_invalid``)."""

    path: str
    read: int = 0
    skipped: int = 0
    reasons: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def skip(self, message: str, error: "FieldError") -> None:
        """Count a bad record that ``skip_invalid`` passes over, keeping its reason and an example."""
        self.skipped += 1
        self.reasons[f"{error.field}: {error.reason.split(' (')[0].split(': ')[0]}"] += 1  # "not JSON: ..." is one reason
        if len(self.examples) < MAX_ERRORS:
            self.examples.append(message)

    def summary(self) -> str:
        if not self.skipped:
            return f"{self.path}: {self.read} records"
        why = "; ".join(f"{n}× {r}" for r, n in self.reasons.most_common(5))
        return f"{self.path}: {self.read} records, skipped {self.skipped} invalid ({why})"

    def to_dict(self) -> dict[str, Any]:
        return {"read": self.read, "skipped": self.skipped, "reasons": dict(self.reasons.most_common()),
                "examples": self.examples[:5]}


# Every read of this process, by path (the last read of a path wins): a run's redline.json and
# summary.json carry the reports of the files they name, so a skip is never silent after the fact.
_READS: dict[str, ReadReport] = {}


def read_reports(paths: Iterable[str | os.PathLike | None]) -> dict[str, dict[str, Any]]:
    """What each of ``paths`` gave when this process read it: records read, skipped, and why."""
    return {str(p): _READS[str(p)].to_dict() for p in paths if p is not None and str(p) in _READS}


def _is_hub_id(source: str) -> bool:
    path = source.split(":")[0]
    return not os.path.exists(path) and path.count("/") == 1 and not path.startswith((".", "/")) and "." not in Path(path).name


def _check_hub_source(source: str) -> None:
    """Refuse at once a name that looks like a hub id but is a typo of a local path (its folder exists
    here), or a hub id when the hub is switched off: no 25 seconds of retries to learn either."""
    owner = source.split(":")[0].split("/")[0]
    if os.path.isdir(owner):
        raise RecordError([f"{source}:0: <file>: no such file or folder (and not a hub data set: {owner}/ is a local folder)"])
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or \
            os.environ.get("HF_DATASETS_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise RecordError([f"{source}:0: <file>: neither a file nor a folder here, and the hub is offline "
                           "(HF_HUB_OFFLINE): cannot read it as a hub data set"])


def split_source(source: str) -> tuple[str, str | None]:
    """(path or hub id, split or None): ``data/hh:test`` names the split ``test`` of the folder ``data/hh``."""
    if os.path.exists(source) or ":" not in source:
        return source, None
    head, _, split = source.rpartition(":")
    return (head, split) if os.path.isdir(head) or _is_hub_id(head) else (source, None)


def iter_raw(source: str | os.PathLike) -> Iterable[tuple[int, Any]]:
    """Yield (line number, raw object) from a JSONL file (gzipped or not), a Parquet file or a HF dataset.

    A line that is no row (not JSON, not UTF-8, a key given twice, an integer longer than Python
    reads) is yielded as a ``FieldError`` in place of the object, so the caller can count it with
    the others; a file whose first row is not JSON but whose whole is JSON pretty-printed over lines
    (Alpaca's array) is one ``RecordError`` for the file. Parquet and dataset rows are numbered from
    1 like lines.
    """
    source = str(source)
    path = Path(source)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        if not path.is_file():  # pyarrow's message is the bare path
            raise RecordError([f"{source}:0: <file>: cannot read: {'Is a directory' if path.is_dir() else 'No such file or directory'}"])
        try:
            table = pq.read_table(path)
        except Exception as e:  # pyarrow raises several unrelated types
            raise RecordError([f"{source}:0: <file>: cannot read Parquet: {e}"]) from e
        json_columns = json.loads((table.schema.metadata or {}).get(PARQUET_JSON_COLUMNS, b"[]"))
        for number, row in enumerate(table.to_pylist(), start=1):
            # Arrow fills a key missing from a row with None; a record never holds a null field.
            row = {k: v for k, v in row.items() if v is not None}
            bad = None
            for k in json_columns:
                if isinstance(row.get(k), str):
                    raw = row[k]
                    try:
                        row[k] = UNIQUE_KEYS.decode(raw)
                    except json.JSONDecodeError as e:
                        bad = FieldError(k, f"not JSON (a JSON column of this Parquet file): {e.msg} at column {e.colno}")
                        break
                    except (ValueError, RecursionError) as e:
                        bad = json_value_error(e, k)
                        break
                    checked = _refuse_lone_surrogates({k: row[k]}, raw)
                    if isinstance(checked, FieldError):
                        bad = checked
                        break
            yield number, bad if bad is not None else row
        return
    if Path(split_source(source)[0]).is_dir() or _is_hub_id(source):
        if not Path(split_source(source)[0]).is_dir():
            _check_hub_source(source)
        yield from enumerate(_read_hf_dataset(source), start=1)
        return
    try:
        handle = open_bytes(path)
    except OSError as e:
        raise RecordError([f"{source}:0: <file>: cannot read: {e.strerror or e}"]) from e
    seen_row = False
    with handle:
        # Bytes, decoded line by line: a line that is not UTF-8 is one bad line (with its number), not a bad file.
        try:
            for number, raw in enumerate(handle, start=1):
                # a BOM opens a file, or a line where `cat` joined files that each opened with one
                bom = len(BOM) if raw.startswith(BOM) else 0
                try:
                    line = raw[bom:].decode("utf-8")
                except UnicodeDecodeError as e:
                    at = bom + e.start
                    yield number, FieldError("<line>", f"not UTF-8 text (byte {at + 1}: {raw[at:at + 1]!r})")
                    continue
                if not line.strip():
                    continue
                row = parse_json_row(line)
                if isinstance(row, FieldError) and row.reason.startswith("not JSON") and not seen_row:
                    _refuse_spread_json(path, source, number)
                seen_row = True
                yield number, row
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            raise RecordError([f"{source}:0: <file>: not a whole gzip file: {e}"]) from e


def read_text_file(path: str | os.PathLike, what: str) -> str:
    """A plain UTF-8 text file a flag names (an API key, guidelines), its BOM dropped; one error naming the file
    and ``what`` it is, with the line where the text is not UTF-8 (``str.read_text`` gave the codec's message
    alone, no file)."""
    path = Path(path)
    try:
        data = path.read_bytes().removeprefix(BOM)
    except OSError as e:
        raise RedlineError(f"{path}: cannot read {what}: {e.strerror or e}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise RedlineError(f"{path}: line {line}: {what} is not UTF-8 text") from None


def open_bytes(path: Path):
    """A JSON Lines file's bytes, gunzipped where it ends in .gz (``iter_raw`` reads it line by line, and
    ``_refuse_spread_json`` whole)."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _refuse_spread_json(path: Path, source: str, number: int) -> None:
    """A file whose first row (on line ``number``) is not JSON, but whose whole is one JSON array or object
    or a run of objects, pretty-printed (as Alpaca's data is published): one error for the file, not "not
    JSON" for each of its lines."""
    decoder = json.JSONDecoder()
    try:
        with open_bytes(path) as f:
            text = f.read().decode("utf-8-sig")
        values, i = [], json.decoder.WHITESPACE.match(text, 0).end()
        while i < len(text) and len(values) < 2:
            value, end = decoder.raw_decode(text, i)
            if not values and "\n" not in text[i:end]:  # the first ends on its line: two rows on one line, not spread
                return
            values.append(value)
            i = json.decoder.WHITESPACE.match(text, end).end()
    except (ValueError, RecursionError):  # not JSON as a whole either: its lines are reported one by one
        return
    what = "several JSON values" if len(values) > 1 else f"one JSON {'array' if isinstance(values[0], list) else 'object'}"
    raise RecordError([f"{source}:{number}: <file>: {what} spread over lines, not one record a line: write the "
                       "records as JSON Lines, one object a line"])


class DuplicateKey(ValueError):
    """A JSON object names one key twice (``args[0]``); ``json.loads`` alone keeps the last value silently."""


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json``'s ``object_pairs_hook`` that refuses a key given twice in one object."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        raise DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))  # type: ignore[func-returns-value]
    return obj


UNIQUE_KEYS = json.JSONDecoder(object_pairs_hook=unique_keys)  # one decoder: json.loads(hook=) builds one a call


def json_value_error(e: ValueError | RecursionError, where: str = "<line>") -> FieldError:
    """The ``FieldError`` of a row that is JSON but no value redline can hold: a key given twice in one object
    (which value holds?), arrays or objects nested deeper than Python reads (json's RecursionError, a traceback),
    or an integer longer than Python reads."""
    if isinstance(e, DuplicateKey):
        return FieldError(e.args[0], "the key is given twice in one object: keep one")
    if isinstance(e, RecursionError):
        return FieldError(where, "holds arrays or objects nested deeper than Python reads")
    return FieldError(where, f"holds an integer of more than {sys.get_int_max_str_digits()} digits, which Python "
                      "does not read")


def parse_json_row(line: str) -> Any:
    """One line of JSON Lines, or the ``FieldError`` that says why it is no row (not JSON, a key given twice,
    an integer too long, nesting too deep, half a surrogate pair)."""
    try:
        obj = UNIQUE_KEYS.decode(line)
    except json.JSONDecodeError as e:
        return FieldError("<line>", f"not JSON: {e.msg} at column {e.colno}{_line_break_note(line, e)}")
    except (ValueError, RecursionError) as e:  # the hook's DuplicateKey, int()'s digit limit, or the nesting
        return json_value_error(e)
    return _refuse_lone_surrogates(obj, line)


LINE_BREAKS = {"\r": "carriage return (\\r) alone", "\x0b": "vertical tab", "\x0c": "form feed",
               "\x1c": "file separator (U+001C)", "\x1d": "group separator (U+001D)", "\x1e": "record separator (U+001E)",
               "\x85": "next-line character (U+0085)", "\u2028": "line separator (U+2028)",
               "\u2029": "paragraph separator (U+2029)"}  # the breaks str.splitlines takes, less \n


def _line_break_note(line: str, e: json.JSONDecodeError) -> str:
    """Why a second value follows the first on one line, where a break other tools take for a new line (an editor,
    Python's splitlines) sits between them: JSON Lines ends a record at \\n only."""
    if e.msg != "Extra data":
        return ""
    before = line[:e.pos]
    gap = before[len(before.rstrip(" \t\r")):] + line[e.pos:e.pos + 1]
    found = next((c for c in gap if c in LINE_BREAKS), None)
    if found is None:
        return ""
    return f" (two records split by a {LINE_BREAKS[found]}: JSON Lines ends a record at \\n only)"


def _refuse_lone_surrogates(obj: Any, line: str) -> Any:
    """``obj``, or a ``FieldError`` naming its first string that holds half of a UTF-16 pair ("\\ud800" in the
    JSON): Python reads it, but it is no text, and it failed far from the file, when a tokenizer, a hash or a
    writer met it. Only a line with such an escape is walked."""
    if "\\ud" not in line.lower():
        return obj
    found = _lone_surrogate(obj, "")
    if found is None:
        return obj
    where, text, at = found
    return FieldError(where or "<line>", f"holds half of a UTF-16 surrogate pair (\\u{ord(text[at]):04x} at character "
                      f"{at + 1}), which is not text: mend the escape")


def _lone_surrogate(value: Any, where: str) -> tuple[str, str, int] | None:
    """(field, string, index) of the first string under ``value`` that UTF-8 cannot write, or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            return where, value, e.start
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            field = f"{where}.{key}" if where else key
            found = _lone_surrogate(key, f"{field} (the key)") or _lone_surrogate(item, field)
            if found:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _lone_surrogate(item, f"{where}[{i}]")
            if found:
                return found
    return None


def _read_hf_dataset(source: str) -> list[dict]:
    import datasets

    path, split = split_source(source)
    try:
        ds = datasets.load_from_disk(path) if Path(path).is_dir() else datasets.load_dataset(path, split=split or "train")
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as e:
        what = "a datasets folder" if Path(path).is_dir() else "a hub data set"
        raise RecordError([f"{source}:0: <file>: cannot read it as {what}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"]) from e
    if not Path(path).is_dir():
        return ds.to_list()
    if isinstance(ds, datasets.DatasetDict):
        names = ", ".join(ds)
        if split is None and len(ds) > 1:
            raise RecordError([f"{path}:0: <file>: holds the splits {names}: name one, as {path}:{next(iter(ds))} "
                               "(or --split on the data commands)"])
        split = split if split is not None else next(iter(ds))
        if split not in ds:
            raise RecordError([f"{path}:0: <file>: no split {split!r} (it holds {names})"])
        ds = ds[split]
    elif split is not None:
        raise RecordError([f"{path}:0: <file>: a single data set with no splits; drop ':{split}'"])
    return ds.to_list()


def read_records(
    source: str | os.PathLike,
    kind: str,
    *,
    skip_invalid: bool = False,
    limit: int | None = None,
    report: ReadReport | None = None,
    require_id: bool = False,
) -> list[Record]:
    """Read every record of ``kind`` from ``source``; raise ``RecordError`` listing all bad lines.

    With ``skip_invalid`` bad lines are skipped and counted in ``report`` (pass one to see them).
    ``limit`` keeps the first N valid records. Duplicate ids are an error like any other, and with
    ``require_id`` (readers that match records by id) so is a missing one.
    """
    return [record for _, record in iter_records(source, kind, skip_invalid=skip_invalid, limit=limit, report=report,
                                                 require_id=require_id)]


def iter_records(
    source: str | os.PathLike,
    kind: str,
    *,
    skip_invalid: bool = False,
    limit: int | None = None,
    report: ReadReport | None = None,
    require_id: bool = False,
) -> Iterator[tuple[int, Record]]:
    """``read_records`` one (line number, record) at a time, for a file too large to hold whole: the records
    before the first bad line are yielded, and the ``RecordError`` listing every bad line is raised once the
    whole file is read."""
    from redline.formats.trl import as_kind

    cls = record_class(kind)
    seen_ids: dict[str, int] = {}

    def parse(obj: Any, number: int) -> tuple[int, Record]:
        record = cls.from_dict(as_kind(obj, kind))  # TRL's layouts are read as they are
        if record.id is None and require_id:
            raise FieldError("id", "missing (records are matched by id)")
        if record.id is not None:
            if record.id in seen_ids:
                raise FieldError("id", f"duplicate id {record.id!r} (first on line {seen_ids[record.id]})")
            seen_ids[record.id] = number
        return number, record

    try:
        yield from _iter_rows(source, parse, skip_invalid=skip_invalid, limit=limit, report=report)
    except RecordError as err:
        other = other_kind(source, kind, err)
        if other is None:
            raise
        raise RecordError([*err.errors, f"{source}: its first record reads as a {other} record, not a {kind}: is it "
                                        "the right file?"], err.total + 1) from None


def other_kind(source: str | os.PathLike, kind: str, err: RecordError) -> str | None:
    """The kind a file's first row reads as, where every error of reading it as ``kind`` is a missing field (a
    preferences file given where rankings go gave one 'responses: missing' a record, naming no kind); None otherwise."""
    from redline.formats.trl import as_kind

    if not err.errors or not all(e.endswith(": missing") for e in err.errors):  # not where a hint names it already
        return None
    try:
        number, obj = next(iter(iter_raw(source)))
    except (StopIteration, RecordError, OSError, ValueError):
        return None
    for other in ("feedback", "judgment", "ranking", "preference", "demonstration", "response"):  # the most fields first
        if other == kind or isinstance(obj, FieldError):
            continue
        try:
            KINDS[other].from_dict(as_kind(obj, other))
        except (FieldError, ValueError, TypeError, KeyError):
            continue
        return other
    return None


@dataclass
class ValidateConfig:
    """`redline data validate`: a record file read as one kind (``data stats`` reads it the same way)."""

    file: str = field(default="", metadata={"required": True, "positional": True,
                                            "help": "JSONL, Parquet, a datasets folder or a hub id"})
    kind: str = field(default="", metadata={"required": True, "choices": tuple(KINDS), "help": f"the records' kind: {', '.join(KINDS)}"})
    split: str | None = field(default=None, metadata={"help": "the split of a datasets folder or hub id (same as FILE:SPLIT)"})
    limit: int | None = field(default=None, metadata={"min": 1, "help": "read only the first N valid records"})
    skip_invalid: bool = field(default=False, metadata={
        "help": "skip bad records (reporting how many and why) instead of stopping"})


def read_prompt_records(path: str, *, limit: int | None = None, skip_invalid: bool = False) -> list[dict]:
    """Records with a ``prompt`` (any kind: demonstration, ranking, preference ...), as dicts."""

    seen_ids: dict[str, int] = {}

    def parse(obj: Any, number: int) -> dict:
        if not isinstance(obj, dict):
            raise FieldError("<record>", f"expected an object, got {type(obj).__name__}")
        record = {**obj, "prompt": prompt_field(obj), "id": optional_id(obj), "meta": meta_field(obj)}
        if record["id"] is not None:
            if record["id"] in seen_ids:
                raise FieldError("id", f"duplicate id {record['id']!r} (first on line {seen_ids[record['id']]})")
            seen_ids[record["id"]] = number
        return record

    return _parse_rows(path, parse, skip_invalid=skip_invalid, limit=limit, report=None, what="prompt records")


def _parse_rows(source: str | os.PathLike, parse: Callable[[Any, int], Any], *, skip_invalid: bool,
                limit: int | None, report: ReadReport | None, what: str = "records") -> list:
    """``parse(obj, line number)`` on every row of ``source``; a ``FieldError`` is a bad line, listed
    (all of them, up to MAX_ERRORS shown) in one ``RecordError``, or skipped into ``report``.

    The one read path of redline's records: whatever it skipped is printed on stderr (how many, why,
    the first few lines) and kept for the run's redline.json or summary (``read_reports``); a source
    with no records at all, or none left after skipping, is refused.
    """
    return list(_iter_rows(source, parse, skip_invalid=skip_invalid, limit=limit, report=report, what=what))


def _iter_rows(source: str | os.PathLike, parse: Callable[[Any, int], Any], *, skip_invalid: bool,
               limit: int | None, report: ReadReport | None, what: str = "records") -> Iterator:
    """``_parse_rows`` one item at a time: those before the first bad line are yielded, its errors raised at the end."""
    if limit is not None and limit < 1:
        raise RedlineError(f"--limit must be at least 1, got {limit}")
    report = report if report is not None else ReadReport(str(source))
    report.path = str(source)
    n_read = 0
    errors: list[str] = []
    n_errors = 0
    for number, obj in iter_raw(source):
        try:
            if isinstance(obj, FieldError):
                raise obj
            item = parse(obj, number)
        except FieldError as e:
            message = f"{source}:{number}: {e.field}: {e.reason}"
            if skip_invalid:
                report.skip(message, e)
                continue
            n_errors += 1
            if len(errors) < MAX_ERRORS:
                errors.append(message)
            continue
        if n_errors:
            continue  # keep looking for errors; nothing more will be yielded
        n_read += 1
        yield item
        if limit is not None and n_read >= limit:
            break
    if n_errors:
        raise RecordError(errors, n_errors)
    report.read = n_read
    _READS[str(source)] = report
    if report.skipped:
        print(f"redline: {report.summary()}", file=sys.stderr)
        for example in report.examples[:5]:
            print(f"  skipped {example}", file=sys.stderr)
    if not n_read:
        refuse_empty(source, report, what)


def refuse_empty(source, report: ReadReport, what: str) -> None:
    """The one error for a file that gave nothing to use: every one of its records skipped, or none there."""
    if report.skipped:
        raise RedlineError(f"{source}: every one of its {report.skipped} {what} is invalid: nothing left to use")
    raise RedlineError(f"{source}: no {what} (the file is empty or holds only blank lines)")


# ----------------------------------------------------------------------------- writing


def spread_over_prompts(records: Sequence[R], n: int | None, source: str = "the set") -> list[R]:
    """``n`` records spread over as many distinct prompts as ``records`` hold.

    One record per prompt first (prompts in the order they first appear), then a second per
    prompt, and so on; within a prompt, records keep their file order. ``n`` None takes all, in
    that order. Taking the first N lines instead would give a 100-record critic four answers to
    each of 25 prompts (world v2's audit) and a critic that echoes those prompts everywhere.
    ``source`` names the records (a file) in the error for an ``n`` they cannot meet.
    """
    if n is None:
        n = len(records)
    if not 0 <= n <= len(records):
        raise RedlineError(f"asked for {n} records; {source} holds {len(records)}")
    by_prompt: dict[str, list[R]] = {}
    for record in records:
        by_prompt.setdefault(prompt_key(record.prompt), []).append(record)
    chosen: list[R] = []
    depth = 0
    while len(chosen) < n:
        for group in by_prompt.values():
            if depth < len(group):
                chosen.append(group[depth])
                if len(chosen) == n:
                    break
        depth += 1
    return chosen


def finite_json(value: Any) -> Any:
    """``value`` with each float that is NaN or infinite (in dicts, lists and tuples, at any depth) as None.

    Python's ``json`` writes those as ``NaN`` and ``Infinity``, which are not JSON: jq, JavaScript's
    ``JSON.parse`` and most other languages' readers refuse the whole file. A reader of redline's
    files meets null there (a diverged model's score, a loss that overflowed) instead.
    """
    if isinstance(value, float):
        return value if value - value == 0 else None  # inf - inf and nan - nan are nan
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def json_text(value: Any, **kwargs: Any) -> str:
    """``json.dumps(value, **kwargs)`` that writes JSON: NaN and infinities as null (``finite_json``)."""
    return json.dumps(finite_json(value), allow_nan=False, **kwargs)


def write_records(dest: str | os.PathLike, records: Iterable[Record | dict], bar_after: float | None = None) -> int:
    """Write records atomically (a temporary file renamed into place): JSONL (gzipped for a ``.gz`` name,
    as ``iter_raw`` reads it; NaN and infinities as null, ``json_text``), or Parquet by suffix.

    A crash or a bad record leaves no partial file behind. Returns how many were written. ``bar_after``:
    writing JSONL for longer than that many seconds shows a bar of the records written on stderr.
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    rows = [r.to_dict() if isinstance(r, Record) else r for r in records]

    def write(tmp: str) -> None:
        if dest.suffix == ".parquet":
            _write_parquet(tmp, rows)
            return
        shown = tqdm(rows, desc="writing", unit="record", disable=bar_after is None, delay=bar_after or 0, file=sys.stderr)
        if dest.suffix == ".gz":  # no name or time in the header: the same records give the same bytes (digests)
            with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
                for row in shown:
                    f.write((json_text(row, ensure_ascii=False) + "\n").encode("utf-8"))
        else:
            with open(tmp, "w", encoding="utf-8") as f:
                for row in shown:
                    f.write(json_text(row, ensure_ascii=False) + "\n")

    _atomically(dest, write)
    return len(rows)


def write_text_atomic(dest: str | os.PathLike, text: str) -> Path:
    """``text`` in ``dest``, whole or not at all: written beside it, then renamed into place, so neither a
    reader nor a kill -9 meets half a file, and two processes writing one file leave one of theirs whole."""
    return _atomically(Path(dest), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _atomically(dest: Path, write: Callable[[str], None]) -> Path:
    """``write(tmp)`` fills a temporary file of its own beside ``dest``, which is then renamed onto it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)  # unique to this process
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file what open() would
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return dest


PARQUET_JSON_COLUMNS = b"redline.json_columns"


def _write_parquet(path: str, rows: list[dict]) -> None:
    """Parquet wants one type a column: ``meta`` (free-form) and columns that mix a string prompt
    with a chat prompt are stored as JSON text (NaN and infinities as null, ``json_text``, as in JSONL), named in
    the schema metadata so reading undoes it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = list(dict.fromkeys(k for row in rows for k in row))
    json_columns = [
        k for k in keys
        if k == "meta" or len({type(row[k]) for row in rows if row.get(k) is not None}) > 1
    ]
    table = pa.Table.from_pylist(
        [{k: json_text(row[k]) if k in json_columns and k in row else row.get(k) for k in keys} for row in rows]
    )
    table = table.replace_schema_metadata({PARQUET_JSON_COLUMNS: json.dumps(json_columns).encode()})
    pq.write_table(table, path)


def append_records(dest: str | os.PathLike, records: Iterable[Record | dict]) -> None:
    """Append records to a JSONL file (NaN and infinities as null, ``json_text``) and flush, for runs that write
    as they go and resume.

    All the records go in one ``write`` call and are fsynced, so an interruption leaves the file
    without them or, rarely (a write cut short), with their first lines and a torn one that
    ``read_jsonl_prefix`` cuts off; a resumed run then redoes the batch, or its rest.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(json_text(r.to_dict() if isinstance(r, Record) else r, ensure_ascii=False) + "\n" for r in records)
    with open(dest, "a", encoding="utf-8") as f:
        f.write(lines)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl_prefix(path: str | os.PathLike) -> list[dict]:
    """The complete lines of a JSONL file that a killed run may have left half-written.

    A torn last line (no newline, or not JSON) is cut off the file, so appending goes on cleanly. A
    blank line is passed over, as the readers do; a line that is not JSON before the last is no run's
    torn write, and is refused with its line number rather than cut away with all that follows it.
    """
    return [row for _, row in numbered_jsonl_prefix(path)]


def numbered_jsonl_prefix(path: str | os.PathLike) -> list[tuple[int, Any]]:
    """``read_jsonl_prefix``'s rows with their line numbers in the file (blank lines counted), for errors
    that name a line: numbering the rows instead is off by one after each blank line."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    rows, good = [], 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            good += len(line)
            continue
        if not line.endswith(b"\n"):
            break
        try:
            rows.append((number, json.loads(line)))
        except (json.JSONDecodeError, UnicodeDecodeError):  # a line that is not UTF-8 is no JSON either
            if number == len(lines):
                break
            raise RedlineError(f"{path}:{number}: not JSON, and not the file's last line: not a torn write to cut "
                               "off; mend or remove the line, then run again") from None
        good += len(line)
    if good != len(data):
        with open(path, "r+b") as f:
            f.truncate(good)
    return rows


def write_hf_dataset(dest: str | os.PathLike, records: Iterable[Record | dict]) -> None:
    """Save records as a Hugging Face dataset folder (``datasets.load_from_disk`` reads it)."""
    import datasets

    rows = [r.to_dict() if isinstance(r, Record) else r for r in records]
    datasets.Dataset.from_list(rows).save_to_disk(str(dest))


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, at import, before any thread writes
    os.umask(mask)
    return mask


_UMASK = _read_umask()
