"""Records: every kind parses, and every kind of bad input is refused with FILE:LINE: FIELD."""

import json

import pytest

from redline.records import (
    Feedback,
    Preference,
    Ranking,
    ReadReport,
    RecordError,
    append_records,
    read_jsonl_prefix,
    read_records,
    write_hf_dataset,
    write_records,
    write_text_atomic,
)

GOOD = {
    "demonstration": {"prompt": "Say hi.", "response": "Hi!"},
    "ranking": {"prompt": "Pick.", "responses": ["a", "b", "c"], "ranks": [1, 0, 1]},
    "preference": {"prompt": [{"role": "user", "content": "Pick."}], "chosen": "good", "rejected": "bad"},
    "feedback": {"prompt": "Q", "response": "R", "critique": "Too short.", "revision": "A longer R."},
    "response": {"id": "r1", "prompt": "Q", "response": "", "source": "gpt-3.5"},
    "judgment": {"id": "j1", "prompt": "Q", "a": "x", "b": "y", "winner": "tie", "judge": "oracle"},
}


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_every_kind_round_trips_through_jsonl_and_parquet(kind, tmp_path, jsonl):
    path = jsonl([GOOD[kind], {**GOOD[kind], "id": "second", "meta": {"k": 1}}])
    records = read_records(path, kind)
    assert len(records) == 2 and records[1].meta == {"k": 1}
    for suffix in (".jsonl", ".jsonl.gz", ".parquet"):  # a .gz name is written gzipped, as it is read
        out = tmp_path / f"out{suffix}"
        write_records(out, records)
        again = read_records(out, kind)
        assert [r.to_dict() for r in again] == [r.to_dict() for r in records]


def test_a_gz_name_is_written_gzipped_and_the_same_records_give_the_same_bytes(tmp_path):
    import gzip
    import time

    records = [Feedback(prompt="Q", response="R", critique="Too short.", revision=None, id="1")]
    out = tmp_path / "out.jsonl.gz"
    write_records(out, records)
    assert json.loads(gzip.decompress(out.read_bytes()))["id"] == "1"
    assert [r.to_dict() for r in read_records(out, "feedback")] == [r.to_dict() for r in records]
    first = out.read_bytes()
    time.sleep(1.1)  # a gzip header's mtime counts seconds
    write_records(out, records)
    assert out.read_bytes() == first  # a rewrite of the same records keeps the file's digest


def test_hf_dataset_folder_round_trips(tmp_path):
    records = [Preference(prompt="p", chosen="c", rejected="r", id=str(i)) for i in range(3)]
    write_hf_dataset(tmp_path / "ds", records)
    assert [r.id for r in read_records(tmp_path / "ds", "preference")] == ["0", "1", "2"]


def test_ranking_comparisons_drop_ties():
    r = Ranking(prompt="p", responses=["a", "b", "c"], ranks=[1, 0, 1])
    assert r.comparisons() == [(1, 0), (1, 2)]
    assert r.n_ties() == 1


@pytest.mark.parametrize(
    "row, field, reason",
    [
        ('{"prompt": "x", "response": ', "<line>", "not JSON"),
        ('["a list"]', "<record>", "expected a JSON object"),
        ({"response": "r"}, "prompt", "missing"),
        ({"prompt": 3, "response": "r"}, "prompt", "expected a string or a list of messages"),
        ({"prompt": "p", "response": 7}, "response", "expected a string"),
        ({"prompt": "p", "response": "   "}, "response", "empty string"),
        ({"prompt": [{"role": "robot", "content": "x"}], "response": "r"}, "prompt[0].role", "unknown role 'robot'"),
        ({"prompt": [], "response": "r"}, "prompt", "empty list"),
        # the chat form of "": it was taken, and a model asked nothing but its template
        ({"prompt": [{"role": "system", "content": ""}, {"role": "user", "content": " "}], "response": "r"}, "prompt",
         "no message holds any text"),
        ({"prompt": "p", "response": "r", "meta": "x"}, "meta", "expected an object"),
    ],
)
def test_bad_demonstration_is_refused_with_line_and_field(row, field, reason, jsonl):
    path = jsonl([GOOD["demonstration"], row])
    with pytest.raises(RecordError) as err:
        read_records(path, "demonstration")
    assert f"{path}:2: {field}: " in str(err.value)
    assert reason in str(err.value)


@pytest.mark.parametrize(
    "row, field, reason",
    [
        ({"prompt": "p", "responses": ["a", "b"], "ranks": [0]}, "ranks", "1 ranks for 2 responses"),
        ({"prompt": "p", "responses": ["a", "b"], "ranks": [0, -1]}, "ranks", ">= 0"),
        ({"prompt": "p", "responses": ["a"], "ranks": [0]}, "responses", "at least 2"),
        ({"prompt": "p", "responses": ["a", ""], "ranks": [0, 1]}, "responses[1]", "empty string"),
        ({"prompt": "p", "responses": ["a", "b"], "ranks": [0, "1"]}, "ranks", "list of integers"),
    ],
)
def test_ranks_that_do_not_fit_are_refused(row, field, reason, jsonl):
    path = jsonl([row])
    with pytest.raises(RecordError) as err:
        read_records(path, "ranking")
    assert str(err.value).startswith(f"{path}:1: {field}: ")
    assert reason in str(err.value)


def test_a_judgment_shown_in_an_order_redline_does_not_know_is_refused(jsonl):
    row = {"prompt": "Q", "a": "x", "b": "y", "winner": "a", "judge": "oracle", "order": "BA"}
    path = jsonl([row])
    with pytest.raises(RecordError, match=f"{path}:1: order: 'BA' is not one of ab, ba, both"):
        read_records(path, "judgment")
    assert read_records(jsonl([{**row, "order": "ba"}], "ok.jsonl"), "judgment")[0].order == "ba"


def test_duplicate_id_names_both_lines(jsonl):
    path = jsonl([{**GOOD["response"], "id": "a"}, {**GOOD["response"], "id": "b"}, {**GOOD["response"], "id": "a"}])
    with pytest.raises(RecordError, match=r":3: id: duplicate id 'a' \(first on line 1\)"):
        read_records(path, "response")


def test_all_errors_of_a_file_are_reported_not_only_the_first(jsonl):
    path = jsonl([{"prompt": "p"}, GOOD["demonstration"], "not json", {"prompt": "", "response": "r"}])
    with pytest.raises(RecordError) as err:
        read_records(path, "demonstration")
    assert [e.split(": ")[0] for e in err.value.errors] == [f"{path}:1", f"{path}:3", f"{path}:4"]


def test_error_list_is_capped_but_counts_everything(jsonl):
    path = jsonl([{"prompt": "p"}] * 50)
    with pytest.raises(RecordError) as err:
        read_records(path, "demonstration")
    assert len(err.value.errors) == 20 and err.value.total == 50
    assert "and 30 more" in str(err.value)


def test_unreadable_and_non_utf8_files_are_clear_errors(tmp_path):
    with pytest.raises(RecordError, match=r"missing.jsonl:0: <file>: cannot read"):
        read_records(tmp_path / "missing.jsonl", "demonstration")
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"prompt": "caf\xe9", "response": "r"}\n')
    with pytest.raises(RecordError, match="not UTF-8"):
        read_records(bad, "demonstration")


def test_a_byte_order_mark_that_opens_a_later_line_is_read_as_the_first_lines_is(tmp_path):
    """Files saved with a BOM (Notepad) and joined with `cat`: line 3 opened with the BOM too, and was 'not JSON:
    Expecting value at column 1', a line that looks whole."""
    one = b'\xef\xbb\xbf{"prompt": "p", "response": "r"}\r\n{"prompt": "q", "response": "s"}\r\n'
    path = tmp_path / "joined.jsonl"
    path.write_bytes(one + one.replace(b'"p"', b'"p2"').replace(b'"q"', b'"q2"'))
    assert [r.prompt for r in read_records(path, "demonstration")] == ["p", "q", "p2", "q2"]
    path.write_bytes(one + b'\xef\xbb\xbf{"prompt": "caf\xe9", "response": "r"}\n')  # the byte counts the BOM's
    with pytest.raises(RecordError, match=r"joined.jsonl:3: <line>: not UTF-8 text \(byte 19: b'\\xe9'\)"):
        read_records(path, "demonstration")


def test_half_a_surrogate_pair_is_refused_by_line_and_field_and_a_whole_pair_is_text(tmp_path):
    """json reads "\\ud800" into a string that UTF-8 cannot write: it crashed far from the file (the pair order's
    hash of an id, a tokenizer, the writer of the run's outputs)."""
    path = tmp_path / "surrogates.jsonl"
    path.write_text('{"id": "ok", "prompt": "smile \\ud83d\\ude00", "response": "r"}\n'
                    '{"id": "x\\ud800", "prompt": "p", "response": "r"}\n'
                    '{"prompt": "p", "response": "r", "meta": {"tags": ["fine", "\\udc00"]}}\n')
    with pytest.raises(RecordError) as err:
        read_records(path, "demonstration")
    assert err.value.errors == [
        f"{path}:2: id: holds half of a UTF-16 surrogate pair (\\ud800 at character 2), which is not text: mend the escape",
        f"{path}:3: meta.tags[1]: holds half of a UTF-16 surrogate pair (\\udc00 at character 1), which is not text: "
        "mend the escape"]
    path.write_text(path.read_text().splitlines()[0] + "\n")
    assert read_records(path, "demonstration")[0].prompt == "smile \U0001f600"


def test_a_key_given_twice_in_one_object_is_refused_by_line_and_key_not_read_as_its_last_value(tmp_path):
    """json.loads keeps the last of two "prompt"s silently: the record trained on another text than the first a
    reader of the file sees."""
    path = tmp_path / "twice.jsonl"
    path.write_text('{"prompt": "p", "response": "r"}\n'
                    '{"prompt": "first", "response": "r", "prompt": "second"}\n'
                    '{"prompt": "p", "response": "r", "meta": {"k": 1, "k": 2}}\n')
    with pytest.raises(RecordError) as err:
        read_records(path, "demonstration")
    assert err.value.errors == [f"{path}:2: prompt: the key is given twice in one object: keep one",
                                f"{path}:3: k: the key is given twice in one object: keep one"]
    report = ReadReport(str(path))
    assert len(read_records(path, "demonstration", skip_invalid=True, report=report)) == 1 and report.skipped == 2


def test_an_integer_longer_than_python_reads_is_a_bad_line_not_a_bare_valueerror(tmp_path):
    """json.loads raises a plain ValueError (Python's 4300-digit limit) for it: the error named no file or line."""
    path = tmp_path / "huge.jsonl"
    path.write_text('{"prompt": "p", "response": "r"}\n{"prompt": "p", "response": "r", "meta": {"n": ' + "9" * 5000 + "}}\n")
    with pytest.raises(RecordError) as err:
        read_records(path, "demonstration")
    assert err.value.errors == [f"{path}:2: <line>: holds an integer of more than 4300 digits, which Python does not read"]
    report = ReadReport(str(path))
    assert len(read_records(path, "demonstration", skip_invalid=True, report=report)) == 1 and report.skipped == 1


@pytest.mark.parametrize("name", ["alpaca.json", "alpaca.json.gz", "pretty.jsonl"])
def test_records_pretty_printed_over_lines_are_one_error_for_the_file_not_one_per_line(name, tmp_path):
    """Alpaca's data is one JSON array over many lines: each line was "not JSON", 20 errors and "N more"."""
    import gzip

    rows = [GOOD["demonstration"], GOOD["demonstration"]]
    text = "\n" + (json.dumps(rows, indent=2) if ".json" in name and "jsonl" not in name
                   else "\n".join(json.dumps(r, indent=2) for r in rows))
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    with pytest.raises(RecordError) as err:
        read_records(path, "demonstration")
    what = "several JSON values" if name == "pretty.jsonl" else "one JSON array"
    assert err.value.errors == [f"{path}:2: <file>: {what} spread over lines, not one record a line: write the "
                                "records as JSON Lines, one object a line"]
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "p",\n"response": "r"\n')  # not JSON as a whole: its lines, one by one
    with pytest.raises(RecordError) as err:
        read_records(broken, "demonstration")
    assert [e.split(": ")[1] for e in err.value.errors] == ["<line>", "<line>"]


def test_skip_invalid_goes_on_and_reports_how_many_and_why(jsonl):
    path = jsonl([GOOD["demonstration"], {"prompt": "p"}, {"prompt": "p"}, "{", GOOD["demonstration"]])
    report = ReadReport(str(path))
    records = read_records(path, "demonstration", skip_invalid=True, report=report)
    assert len(records) == 2 and report.skipped == 3
    assert report.reasons["response: missing"] == 2
    assert "skipped 3 invalid" in report.summary()


def test_limit_keeps_the_first_valid_records(jsonl):
    path = jsonl([{**GOOD["demonstration"], "id": str(i)} for i in range(10)])
    assert [r.id for r in read_records(path, "demonstration", limit=3)] == ["0", "1", "2"]


def test_feedback_without_revision_must_say_critique_only(jsonl):
    row = {"prompt": "p", "response": "r", "critique": "c"}
    with pytest.raises(RecordError, match="revision: missing"):
        read_records(jsonl([row]), "feedback")
    record = read_records(jsonl([{**row, "meta": {"critique_only": True}}], "b.jsonl"), "feedback")[0]
    assert record.critique_only and record.revision is None
    assert Feedback(prompt="p", response="r", critique="c").to_dict()["meta"] == {"critique_only": True}


def test_unknown_kind_is_refused(jsonl):
    with pytest.raises(ValueError, match="unknown record kind 'rankings'"):
        read_records(jsonl([GOOD["ranking"]]), "rankings")


def test_write_is_atomic_no_partial_file_on_failure(tmp_path):
    def rows():
        yield {"prompt": "p", "response": "r"}
        raise RuntimeError("interrupted")

    out = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError):
        write_records(out, rows())
    assert list(tmp_path.iterdir()) == []


def test_a_text_written_atomically_is_whole_or_the_old_one_stays(tmp_path, monkeypatch):
    from pathlib import Path

    card = write_text_atomic(tmp_path / "run" / "redline.json", '{"kind": "sft"}\n')
    assert card.read_text() == '{"kind": "sft"}\n'
    real = Path.write_text

    def torn(self, text, **kwargs):  # the write dies halfway (a kill, a full disk)
        real(self, text[: len(text) // 2], **kwargs)
        raise OSError("No space left on device")

    monkeypatch.setattr(Path, "write_text", torn)
    with pytest.raises(OSError, match="No space"):
        write_text_atomic(card, '{"kind": "reward", "metrics": {}}\n')
    assert card.read_text() == '{"kind": "sft"}\n' and [p.name for p in card.parent.iterdir()] == ["redline.json"]


def test_written_file_gets_the_usual_permissions_not_mkstemps_0600(tmp_path):
    import os
    import stat

    write_records(tmp_path / "out.jsonl", [{"prompt": "p", "response": "r"}])
    (tmp_path / "plain").write_text("x")  # what open() gives under this process's umask
    mode = stat.S_IMODE((tmp_path / "out.jsonl").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain").stat().st_mode) and mode & 0o044  # others can read


def test_torn_last_line_is_cut_so_appends_resume_cleanly(tmp_path):
    out = tmp_path / "run.jsonl"
    append_records(out, [{"i": 0}, {"i": 1}])
    with open(out, "a") as f:
        f.write('{"i": 2, "half')  # a kill mid-write
    assert read_jsonl_prefix(out) == [{"i": 0}, {"i": 1}]
    append_records(out, [{"i": 2}])
    assert [json.loads(line)["i"] for line in out.read_text().splitlines()] == [0, 1, 2]


def test_a_blank_line_is_kept_and_a_bad_line_before_the_last_is_refused_not_cut_away(tmp_path):
    from redline import RedlineError

    out = tmp_path / "run.jsonl"
    out.write_text('{"i": 0}\n\n{"i": 1}\n{"i": 2, "torn')
    assert read_jsonl_prefix(out) == [{"i": 0}, {"i": 1}]
    assert out.read_text() == '{"i": 0}\n\n{"i": 1}\n'  # only the torn end went
    out.write_text('{"i": 0}\nnot json\n{"i": 1}\n')
    with pytest.raises(RedlineError, match="run.jsonl:2: not JSON, and not the file's last line"):
        read_jsonl_prefix(out)
    assert out.read_text() == '{"i": 0}\nnot json\n{"i": 1}\n'  # nothing cut
    out.write_bytes(b'{"i": 0}\n{"i": "\xff"}\n{"i": 1}\n')  # not UTF-8: not JSON either, named by its line
    with pytest.raises(RedlineError, match="run.jsonl:2: not JSON, and not the file's last line"):
        read_jsonl_prefix(out)


def test_spread_over_prompts_takes_one_record_per_prompt_first():
    from redline import RedlineError
    from redline.records import Feedback, spread_over_prompts

    rows = [Feedback(prompt=p, response=f"{p}{i}", critique="c", revision="r") for p, n in (("a", 3), ("b", 1), ("c", 2)) for i in range(n)]
    picked = lambda n: [r.response for r in spread_over_prompts(rows, n)]
    assert picked(2) == ["a0", "b0"]
    assert picked(3) == ["a0", "b0", "c0"]
    assert picked(5) == ["a0", "b0", "c0", "a1", "c1"]
    assert picked(None) == ["a0", "b0", "c0", "a1", "c1", "a2"]
    assert set(picked(3)) <= set(picked(5))  # nested: a larger size keeps the smaller one's records
    with pytest.raises(RedlineError, match="asked for 7 records; the set holds 6"):
        spread_over_prompts(rows, 7)
    with pytest.raises(RedlineError, match=r"asked for 7 records; feedback.jsonl \(--limit\) holds 6"):
        spread_over_prompts(rows, 7, "feedback.jsonl (--limit)")
    with pytest.raises(RedlineError, match="asked for -1 records"):
        spread_over_prompts(rows, -1)


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_a_missing_file_says_so_whatever_its_format(tmp_path, suffix):
    # a missing Parquet file was "cannot read Parquet: PATH", pyarrow's bare path, as if the file were bad
    with pytest.raises(RecordError, match=r"nope\.\w+:0: <file>: cannot read: No such file or directory"):
        read_records(tmp_path / f"nope{suffix}", "response")


def test_two_rows_run_together_on_the_first_line_are_one_bad_line_not_a_file_spread_over_lines(tmp_path):
    """Two records on line 1 (a newline lost between them) made the whole file "several JSON values spread over lines"
    and refused it, --skip-invalid or not: the file is JSON Lines but for that line, which is one bad line."""
    path = tmp_path / "joined.jsonl"
    row = json.dumps(GOOD["demonstration"])
    path.write_text(row + row + "\n" + row + "\n" + row + "\n")
    with pytest.raises(RecordError) as err:
        read_records(path, "demonstration")
    assert err.value.errors == [f"{path}:1: <line>: not JSON: Extra data at column {len(row) + 1}"]
    report = ReadReport(str(path))
    assert len(read_records(path, "demonstration", skip_invalid=True, report=report)) == 2 and report.skipped == 1


@pytest.mark.parametrize("sep, name", [("\r", "carriage return"), ("\u2028", "line separator (U+2028)")])
def test_two_rows_split_by_a_break_json_lines_does_not_end_a_line_at_say_which_break(tmp_path, sep, name):
    """A file whose records end in a lone CR (old Mac tools) or U+2028 reads in an editor as one record a line, and
    was refused as "Extra data at column N", which names the line but not the cause."""
    path = tmp_path / "cr.jsonl"
    row = json.dumps(GOOD["demonstration"])
    path.write_text(row + sep + row + "\n", newline="")
    with pytest.raises(RecordError) as err:
        read_records(path, "demonstration")
    assert err.value.errors[0].startswith(f"{path}:1: <line>: not JSON: Extra data at column ")
    assert f"two records split by a {name}" in err.value.errors[0] and "ends a record at \\n only" in err.value.errors[0]


def test_a_row_nested_deeper_than_python_reads_is_a_bad_line_not_a_recursion_error(tmp_path):
    """json raised a RecursionError (no file, no line: a traceback through the CLI) for arrays nested ~1000 deep."""
    from redline.formats import import_file

    deep = "[" * 100_000 + "]" * 100_000
    path = tmp_path / "deep.jsonl"
    path.write_text(json.dumps(GOOD["demonstration"]) + '\n{"prompt": "p", "response": "r", "meta": {"x": ' + deep + "}}\n")
    with pytest.raises(RecordError) as err:
        read_records(path, "demonstration")
    assert err.value.errors == [f"{path}:2: <line>: holds arrays or objects nested deeper than Python reads"]
    report = ReadReport(str(path))
    assert len(read_records(path, "demonstration", skip_invalid=True, report=report)) == 1 and report.skipped == 1
    array = tmp_path / "deep.json"  # a .json array (data import): one error for the file, naming the row's line
    array.write_text("[\n" + json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + ",\n" + deep + "\n]")
    with pytest.raises(RecordError) as err:
        import_file("trl", str(array), tmp_path / "out.jsonl")
    assert err.value.errors == [f"{array}:3: <file>: not JSON: arrays or objects nested deeper than Python reads "
                                "at column 1"]


def test_a_file_of_another_kind_says_which_kind_its_first_record_reads_as(tmp_path):
    """Preferences given where rankings go gave one 'responses: missing' a record, naming no kind."""
    path = tmp_path / "prefs.jsonl"
    path.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "q", "chosen": "c", "rejected": "d"}\n')
    with pytest.raises(RecordError) as err:
        read_records(path, "ranking")
    assert err.value.errors == [f"{path}:1: responses: missing", f"{path}:2: responses: missing",
                                f"{path}: its first record reads as a preference record, not a ranking: is it the right file?"]
    feedback = tmp_path / "feedback.jsonl"
    feedback.write_text('{"prompt": "p", "response": "r", "critique": "c", "revision": "v"}\n')
    with pytest.raises(RecordError, match="reads as a feedback record, not a preference"):
        read_records(feedback, "preference")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "p"}\n')  # no kind it could be: the errors alone
    with pytest.raises(RecordError) as err:
        read_records(broken, "ranking")
    assert err.value.errors == [f"{broken}:1: responses: missing"]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_a_nan_in_meta_is_written_as_null_whatever_the_format(tmp_path, suffix):
    """JSONL wrote null for a NaN (json_text) while Parquet's JSON text columns (meta) still held NaN, which a
    strict JSON reader of that column refuses; both write null, and finite numbers as they were."""
    from redline.records import write_records

    path = tmp_path / f"r{suffix}"
    write_records(path, [{"id": "a", "prompt": "p", "response": "r", "meta": {"scores": [float("nan"), 0.25]}}])
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        text = pq.read_table(path).column("meta").to_pylist()[0]
        assert json.loads(text, parse_constant=lambda name: pytest.fail(f"meta holds {name}")) == {"scores": [None, 0.25]}
    assert read_records(path, "response")[0].meta == {"scores": [None, 0.25]}
