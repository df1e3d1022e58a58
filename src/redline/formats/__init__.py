"""Import public feedback data sets as redline records.

    redline data import --from FORMAT INPUT OUTPUT [--limit N] [--skip-invalid]

INPUT is JSON Lines, a ``.json`` file holding one JSON array (either gzipped: ``.jsonl.gz``,
``.json.gz``), Parquet, a ``datasets`` folder or a hub id; ``FOLDER:split`` or ``org/name:split``
(or ``--split``) names a split. Each format's module documents its rows with an example:

    hh-rlhf                  Anthropic HH-RLHF transcripts        -> preference
    trl                      TRL's preference, prompt-completion  -> preference or demonstration
                             and messages rows
    shepherd                 Shepherd question/answer/feedback    -> feedback (critique-only)
    ultrafeedback            openbmb/UltraFeedback completions    -> ranking, and feedback (critique-only)
                             HuggingFaceH4/ultrafeedback_binarized -> preference
    summarize-from-feedback  OpenAI TL;DR comparisons             -> preference

Where an input yields two kinds, OUTPUT gets the first of them in the order above and each other kind
goes beside it, named by its kind: ``out.jsonl`` holds UltraFeedback's rankings and ``out.feedback.jsonl``
its critiques. Every record keeps ``meta.source_format``, and the row's own ``id`` and ``meta``; columns
that carry meaning beyond the record (scores, sources, reference answers) go to ``meta``, and every
column the import drops is named with the number of rows it was dropped from.

A bad row stops the import: every bad row is listed as ``FILE:ROW: FIELD: reason`` (up to 20) and no
file is written. With ``--skip-invalid`` bad rows are skipped, and how many and why is printed. What a
valid row holds that no record can carry (UltraFeedback's ties, unscored completions) is counted and
printed too. ``--limit N`` imports the first N valid rows. A repeated id is refused like any bad row; a
preference whose chosen and rejected replies are the same is kept and counted (the trainers skip it;
``train gap-reward --anchor-weight`` uses it as an anchor). Rows of a Parquet file, a data set or a JSON
array are numbered from 1, like lines. Reading that takes over a second shows a bar of the rows read on stderr,
with the rate and the time left, and so does writing JSON Lines (of the records written).
"""

from __future__ import annotations

import codecs
import gzip
import json
import os
import sys
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from redline import RedlineError
from redline.formats import hh_rlhf, shepherd, summarize_from_feedback, trl, ultrafeedback
from redline.records import (MAX_ERRORS, UNIQUE_KEYS, FieldError, ReadReport, Record, RecordError, _refuse_lone_surrogates,
                              iter_raw, json_value_error, open_bytes, refuse_empty, write_records)

BAR_DELAY = 1.0  # seconds of reading (or writing) before a bar shows

# The format name -> its module, which holds ``convert(row) -> list[Record]`` and ``KINDS``.
FORMATS = {
    "hh-rlhf": hh_rlhf,
    "trl": trl,
    "shepherd": shepherd,
    "ultrafeedback": ultrafeedback,
    "summarize-from-feedback": summarize_from_feedback,
}


@dataclass
class ImportConfig:
    """`redline data import`: the format, where from and where to, and how much to read."""

    format: str = field(default="", metadata={"required": True, "choices": tuple(sorted(FORMATS)), "aliases": ("--from",),
                                              "help": f"the input format: {', '.join(sorted(FORMATS))}"})
    input: str = field(default="", metadata={"required": True, "positional": True,
                                             "help": "JSONL/JSON/Parquet file, a datasets folder or a hub id"})
    output: Path | None = field(default=None, metadata={"required": True, "positional": True, "help":
        "JSONL or Parquet output; importers that yield two kinds write a second file beside it"})
    split: str | None = field(default=None, metadata={"help": "the split of a datasets folder or hub id (same as INPUT:SPLIT)"})
    limit: int | None = field(default=None, metadata={"min": 1, "help": "import only the first N valid rows"})
    skip_invalid: bool = field(default=False, metadata={"help": "skip bad rows (reporting how many and why) instead of stopping"})


@dataclass
class ImportReport(ReadReport):
    """A ``ReadReport`` of input rows, plus what valid rows held that no record carries."""

    left_out: Counter = field(default_factory=Counter)
    dropped_columns: Counter = field(default_factory=Counter)  # source column -> rows it was dropped from
    identical_pairs: int = 0  # preferences whose chosen equals rejected: kept, usable only as anchors

    def summary(self) -> str:
        line = f"{self.path}: imported {self.read} rows"
        if self.skipped:
            why = "; ".join(f"{n}× {r}" for r, n in self.reasons.most_common(5))
            line += f", skipped {self.skipped} invalid ({why})"
        if self.identical_pairs:
            line += (f", kept {self.identical_pairs} preference(s) with chosen identical to rejected "
                     "(no preference: trainers skip them; `train gap-reward --anchor-weight` uses them as anchors)")
        if self.left_out:
            line += ", left out " + "; ".join(f"{n} {what}" for what, n in self.left_out.most_common())
        if self.dropped_columns:
            line += ", dropped the source columns " + ", ".join(
                f"{name} ({n} rows)" for name, n in self.dropped_columns.most_common())
        return line


def import_file(
    fmt: str,
    source: str | os.PathLike,
    output: Path,
    *,
    limit: int | None = None,
    skip_invalid: bool = False,
    report: ImportReport | None = None,
    progress: bool = False,
) -> dict[Path, tuple[str, int]]:
    """Convert ``source`` from format ``fmt`` and write the records; return {path: (kind, count)}.

    Raises ``RecordError`` listing every bad row (and writes nothing) unless ``skip_invalid``. Pass a
    ``report`` to receive the counts; without one, skips and left-out parts are printed to stderr.
    ``progress`` shows a bar of the rows read, and one of the records written, on stderr (rate, time left) once
    either takes over BAR_DELAY seconds: 160k rows take a minute.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    module = FORMATS[fmt]
    _check_output(Path(output))
    _refuse_writing_over(source, [Path(output)] + [beside(Path(output), kind) for kind in module.KINDS[1:]])
    printing = report is None
    report = report if report is not None else ImportReport(str(source))
    report.path = str(source)
    by_kind: dict[str, list[Record]] = {}
    seen_ids: dict[tuple[str, str], int] = {}  # (kind, id) -> row number
    errors: list[str] = []
    n_errors = 0
    rows, total = _counted_rows(source)
    for number, row in _with_bar(rows, min(total, limit) if total and limit else total, progress):
        try:
            if isinstance(row, FieldError):
                raise row
            if not isinstance(row, dict):
                raise FieldError("<record>", f"expected a JSON object, got {type(row).__name__}")
            # Only UltraFeedback drops parts of a valid row (ties, unscored completions); count them.
            left_out = Counter()
            records = module.convert(row, left_out=left_out) if module is ultrafeedback else module.convert(row)
            for record in records:
                _check(record, seen_ids, number)
        except FieldError as e:
            message = f"{source}:{number}: {e.field}: {e.reason}"
            if skip_invalid:
                report.skip(message, e)
                continue
            n_errors += 1
            if len(errors) < MAX_ERRORS:
                errors.append(message)
            continue
        for record in records:  # also after an error: a later repeat of this id is listed with the rest
            if record.id is not None:
                seen_ids[record.kind, record.id] = number
        if n_errors:
            continue  # keep looking for errors; nothing will be written
        for record in records:
            by_kind.setdefault(record.kind, []).append(record)
        report.left_out.update(left_out)
        used = module.used_columns(row) if hasattr(module, "used_columns") else module.COLUMNS
        report.dropped_columns.update(k for k, v in row.items()  # a null (a data set's missing value) held nothing
                                      if v is not None and k not in used and not any(k in r.meta for r in records))
        report.read += 1
        if limit is not None and report.read >= limit:
            break
    if n_errors:
        raise RecordError(errors, n_errors)
    if not by_kind:  # an empty file no reader accepts: said here, where the cause is known
        if report.read:  # UltraFeedback rows that all left their parts out (ties, unscored completions)
            raise RedlineError(f"{source}: its {report.read} rows gave no record ({dict(report.left_out)})")
        refuse_empty(source, report, "rows")

    kinds = [kind for kind in module.KINDS if kind in by_kind] or [module.KINDS[0]]
    written = {}
    for i, kind in enumerate(kinds):
        path = Path(output) if i == 0 else beside(Path(output), kind)
        written[path] = (kind, write_records(path, by_kind.get(kind, []), bar_after=BAR_DELAY if progress else None))
    # An earlier import to OUTPUT wrote a kind beside it that this one does not write there (it has none, or
    # its first kind is that one and goes to OUTPUT itself): not left to be read as this import's.
    for kind in module.KINDS[1:]:  # the first kind, when there, always goes to OUTPUT: never beside it
        stale = beside(Path(output), kind)
        if stale not in written and stale.is_file():
            stale.unlink()
            print(f"redline: removed {stale}, an earlier import's {kind} records (this import writes none there)",
                  file=sys.stderr)
    report.identical_pairs += sum(1 for r in by_kind.get("preference", []) if r.identical)
    if printing and (report.skipped or report.left_out or report.identical_pairs or report.dropped_columns):
        print(report.summary(), file=sys.stderr)
        for example in report.examples[:5]:
            print(f"  skipped {example}", file=sys.stderr)
    return written


def beside(output: Path, kind: str) -> Path:
    """Where a second kind of record goes: ``out.jsonl`` -> ``out.feedback.jsonl`` (``.jsonl.gz`` kept whole)."""
    suffix = "".join(output.suffixes[-2:]) if output.suffix == ".gz" else output.suffix
    return output.with_name(f"{output.name[: len(output.name) - len(suffix)]}.{kind}{suffix}")


def _check_output(output: Path) -> None:
    """Before reading: OUTPUT can be written (not a folder, nor under a file), not after every row is converted."""
    above = next((p for p in output.absolute().parents if p.exists()), None)
    if output.is_dir():
        raise RedlineError(f"OUTPUT {output} is a folder: name the file to write (such as {output / 'out.jsonl'})")
    if above is not None and not above.is_dir():
        raise RedlineError(f"OUTPUT {output} is under {above}, which is a file, not a folder")


def _refuse_writing_over(source: str | os.PathLike, paths: list[Path]) -> None:
    """Before reading: an OUTPUT (or the file beside it, written or removed) that is the input itself would
    replace the public data with its import."""
    if not Path(source).is_file():
        return
    for path in paths:
        if path.is_file() and path.samefile(source):
            raise RedlineError(f"{path} is the input file: the import would write over {source}; name another OUTPUT")


def _check(record: Record, seen_ids: dict[tuple[str, str], int], number: int) -> None:
    """What no single record class can see: a repeated id. (A preference between equal replies is
    kept and counted: PIT's gap loss can use it as a (y, y) anchor.)"""
    if record.id is not None and (record.kind, record.id) in seen_ids:
        raise FieldError("id", f"duplicate id {record.id!r} (first on row {seen_ids[record.kind, record.id]})")


def _with_bar(rows: Iterable[tuple[int, Any]], total: int | None, show: bool) -> Iterable[tuple[int, Any]]:
    """``rows``, moving a bar on stderr to each row's number (a blank line counts too, as in the numbering). It
    shows from BAR_DELAY seconds on: a small file's import prints only its own lines."""
    from tqdm.auto import tqdm

    with tqdm(total=total, desc="importing", unit="row", disable=not show, file=sys.stderr, delay=BAR_DELAY) as bar:
        for number, row in rows:
            bar.update(number - bar.n)
            yield number, row


def _counted_rows(source: str | os.PathLike) -> tuple[Iterable[tuple[int, Any]], int | None]:
    """``_rows`` and the last row's number, for the bar's time left: a JSON Lines file's lines counted in one
    pass over its bytes, a Parquet file's rows from its footer; a JSON array, a datasets folder and a hub data
    set are read whole by the reader anyway, so they are read here. None where the file cannot be counted (the
    reader names what is wrong with it)."""
    rows = _rows(source)
    path = Path(source)
    if not path.is_file() or isinstance(rows, list):  # a data set, or a JSON array (read already)
        rows = list(rows)
        return rows, len(rows)
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return rows, pq.ParquetFile(path).metadata.num_rows
        lines, last = 0, b"\n"
        with open_bytes(path) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                lines, last = lines + block.count(b"\n"), block[-1:]
        return rows, lines + (last != b"\n")
    except Exception:  # pyarrow and gzip raise several unrelated types; the reader refuses the file by name
        return rows, None


def _rows(source: str | os.PathLike) -> Iterable[tuple[int, Any]]:
    """``iter_raw``, plus ``.json`` files holding one JSON array (as many data sets are published)."""
    path = Path(source)
    gzipped = path.suffix == ".gz"
    if (path.suffixes[-2:] != [".json", ".gz"] if gzipped else path.suffix != ".json") or not path.is_file():
        return iter_raw(source)
    try:
        with gzip.open(path, "rb") if gzipped else open(path, "rb") as f:
            head = f.read(4096).removeprefix(codecs.BOM_UTF8).lstrip()  # a BOM, as the JSONL reader allows
        if head.startswith(b"{") and _one_object(path, gzipped):
            raise RecordError([f"{source}:1: <file>: holds one JSON object, not rows: expected a JSON array of rows "
                               "or one row per line"])
        if not head.startswith(b"["):
            return iter_raw(source)
        with gzip.open(path, "rt", encoding="utf-8-sig") if gzipped else open(path, encoding="utf-8-sig") as f:
            text = f.read()
        items = _array_rows(text)
    except json.JSONDecodeError as e:
        raise RecordError([f"{source}:{e.lineno}: <file>: not JSON: {e.msg} at column {e.colno}"]) from e
    except UnicodeDecodeError as e:
        raise RecordError([f"{source}:0: <file>: not UTF-8 text: {e}"]) from e
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise RecordError([f"{source}:0: <file>: cannot read: {e}"]) from e
    if "\\ud" in text.lower():  # a "\ud800" escape may be half a surrogate pair: a bad row, as the JSONL reader has it
        items = [_refuse_lone_surrogates(item, "\\ud") if isinstance(item, (dict, list)) else item for item in items]
    return list(enumerate(items, start=1))


_LENIENT = json.JSONDecoder(parse_int=len)  # reads past any row to find its end (its values are not kept)
_WHITESPACE = json.decoder.WHITESPACE


def _array_rows(text: str) -> list:
    """The rows of a JSON array, read one by one: a row with a key given twice or an integer longer than
    Python reads is that row's ``FieldError`` (json.loads of the whole kept the key's last value, or raised
    a bare ValueError for the file); JSON that does not parse raises ``JSONDecodeError`` for the file."""
    rows: list = []
    i = _WHITESPACE.match(text, 0).end()
    if not text.startswith("[", i):
        raise json.JSONDecodeError("Expecting '['", text, i)
    i = _WHITESPACE.match(text, i + 1).end()
    while not text.startswith("]", i):
        try:
            row, end = UNIQUE_KEYS.raw_decode(text, i)
        except json.JSONDecodeError:
            raise
        except RecursionError:  # nested too deep: the lenient reader cannot find the row's end either
            raise json.JSONDecodeError("arrays or objects nested deeper than Python reads", text, i) from None
        except ValueError as e:  # DuplicateKey, or int()'s digit limit
            row, end = json_value_error(e, "<row>"), _LENIENT.raw_decode(text, i)[1]
        rows.append(row)
        i = _WHITESPACE.match(text, end).end()
        if text.startswith(",", i):
            i = _WHITESPACE.match(text, i + 1).end()
            if text.startswith("]", i):  # a trailing comma, which json refuses
                raise json.JSONDecodeError("Expecting value", text, i)
        elif not text.startswith("]", i):
            raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
    end = _WHITESPACE.match(text, i + 1).end()
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return rows


def _one_object(path: Path, gzipped: bool) -> bool:
    """The file is one JSON object spread over lines (pretty-printed), whose every line the JSONL reader refused."""
    with gzip.open(path, "rb") if gzipped else open(path, "rb") as f:
        try:
            json.loads(f.readline())
            return False  # its first line is a row: JSON Lines
        except (ValueError, RecursionError):  # not JSON, not UTF-8, an integer longer or nesting deeper than Python reads
            f.seek(0)
        try:
            return isinstance(json.loads(f.read()), dict)
        except (ValueError, RecursionError):
            return False
