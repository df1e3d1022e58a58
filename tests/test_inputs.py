"""Inputs users have: gzipped JSONL, a datasets folder of several splits, importers that say what
they dropped."""

from __future__ import annotations

import gzip
import json

import pytest

from redline.cli import main
from redline.formats import ImportReport, import_file
from redline.records import RecordError, read_records

DEMOS = [{"prompt": f"q{i}", "response": f"a{i}"} for i in range(3)]


def gz(path, rows, array=False):
    text = json.dumps(rows) if array else "".join(json.dumps(r) + "\n" for r in rows)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(text)
    return path


def test_gzipped_jsonl_reads_everywhere_a_jsonl_does(tmp_path, capsys):
    path = gz(tmp_path / "d.jsonl.gz", DEMOS)
    assert [r.response for r in read_records(path, "demonstration")] == ["a0", "a1", "a2"]
    assert main(["data", "validate", str(path), "--kind", "demonstration"]) == 0
    assert "3 valid demonstration records" in capsys.readouterr().out
    # the importers too, and a gzipped JSON array
    prefs = [{"prompt": "q", "chosen": "a", "rejected": "b"}]
    for name, array in (("p.jsonl.gz", False), ("p.json.gz", True)):
        written = import_file("trl", str(gz(tmp_path / name, prefs, array)), tmp_path / "out.jsonl")
        assert list(written.values()) == [("preference", 1)]


def test_a_broken_gzip_is_one_clear_error(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"prompt": "q", "response": "a"}\n' * 50)[:40])
    with pytest.raises(RecordError, match="not a whole gzip file"):
        read_records(path, "demonstration")


def test_a_broken_gzipped_json_array_is_one_clear_error_naming_the_file(tmp_path):
    for name, data in (("not.json.gz", b"not gzip at all"),
                       ("cut.json.gz", gzip.compress(json.dumps(DEMOS * 50).encode())[:40])):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(RecordError, match=f"{name}:0: <file>: cannot read"):
            import_file("trl", str(tmp_path / name), tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


def test_a_json_array_that_opens_with_a_byte_order_mark_is_read(tmp_path):
    prefs = [{"prompt": "q", "chosen": "a", "rejected": "b"}]
    (tmp_path / "p.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(prefs, indent=2).encode())
    with gzip.open(tmp_path / "p.json.gz", "wb") as f:
        f.write(b"\xef\xbb\xbf" + json.dumps(prefs).encode())
    for name in ("p.json", "p.json.gz"):
        written = import_file("trl", str(tmp_path / name), tmp_path / "out.jsonl")
        assert list(written.values()) == [("preference", 1)]


@pytest.fixture
def splits(tmp_path):
    import datasets

    folder = tmp_path / "ds"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_list(DEMOS),
        "test": datasets.Dataset.from_list(DEMOS[:1]),
    }).save_to_disk(str(folder))
    return folder


def test_a_folder_of_several_splits_wants_one_named(splits, capsys):
    with pytest.raises(RecordError) as e:
        read_records(splits, "demonstration")
    assert e.value.errors == [f"{splits}:0: <file>: holds the splits train, test: name one, as {splits}:train "
                              "(or --split on the data commands)"]
    assert len(read_records(f"{splits}:test", "demonstration")) == 1
    assert len(read_records(f"{splits}:train", "demonstration")) == 3
    with pytest.raises(RecordError, match="no split 'dev' \\(it holds train, test\\)"):
        read_records(f"{splits}:dev", "demonstration")
    assert main(["data", "validate", str(splits), "--split", "test", "--kind", "demonstration"]) == 0
    assert "1 valid demonstration records" in capsys.readouterr().out


def test_a_folder_of_one_split_and_a_plain_dataset(tmp_path):
    import datasets

    datasets.DatasetDict({"test": datasets.Dataset.from_list(DEMOS)}).save_to_disk(str(tmp_path / "one"))
    assert len(read_records(tmp_path / "one", "demonstration")) == 3
    datasets.Dataset.from_list(DEMOS).save_to_disk(str(tmp_path / "plain"))
    with pytest.raises(RecordError, match="no splits; drop ':train'"):
        read_records(f"{tmp_path / 'plain'}:train", "demonstration")


def test_importers_name_the_columns_they_drop_and_keep_scalars_in_meta(tmp_path, capsys):
    user = {"role": "user", "content": "Sky?"}
    h4 = {"prompt": "Sky?", "prompt_id": "p1", "chosen": [user, {"role": "assistant", "content": "Blue."}],
          "rejected": [user, {"role": "assistant", "content": "Red."}], "messages": [user],
          "score_chosen": 8.0, "score_rejected": 3.0, "dataset": "h4"}
    src = tmp_path / "h4.jsonl"
    src.write_text(json.dumps(h4) + "\n")
    report = ImportReport(str(src))
    import_file("trl", str(src), tmp_path / "out.jsonl", report=report)
    (record,) = read_records(tmp_path / "out.jsonl", "preference")
    assert record.prompt == [user] and (record.chosen, record.rejected) == ("Blue.", "Red.")
    assert record.meta == {"prompt_id": "p1", "score_chosen": 8.0, "score_rejected": 3.0, "dataset": "h4",
                           "source_format": "trl"}
    assert report.dropped_columns == {"messages": 1}
    assert "dropped the source columns messages (1 rows)" in report.summary()

    # UltraFeedback (openbmb): TruthfulQA's reference answers kept, a column no one reads named
    row = {"source": "truthful_qa", "instruction": "Is the earth flat?", "correct_answers": ["No"], "incorrect_answers": ["Yes"],
           "models": ["a", "b"], "extra_column": 1,
           "completions": [{"model": m, "response": r, "critique": "ok", "fine-grained_score": s}
                           for m, r, s in (("a", "No.", 5.0), ("b", "Yes.", 1.0))]}
    src = tmp_path / "uf.jsonl"
    src.write_text(json.dumps(row) + "\n")
    assert main(["data", "import", "--from", "ultrafeedback", str(src), str(tmp_path / "uf_out.jsonl")]) == 0
    assert "dropped the source columns extra_column (1 rows)" in capsys.readouterr().err
    (ranking,) = read_records(tmp_path / "uf_out.jsonl", "ranking")
    assert ranking.meta["correct_answers"] == ["No"] and ranking.meta["prompt_source"] == "truthful_qa"


@pytest.mark.parametrize("name, rows", [("p.jsonl", 5), ("p.jsonl.gz", 4), ("p.json", 4), ("p.parquet", 4), ("folder", 4)])
def test_data_import_shows_a_bar_of_the_rows_read_and_writes_the_same_files(name, rows, tmp_path, capsys, monkeypatch):
    # 160k hh-rlhf rows read and written for 30 s with nothing on the terminal; the totals are known first: time left
    from redline import formats

    prefs = [{"prompt": f"q{i}", "chosen": "a", "rejected": "b"} for i in range(4)]
    src = tmp_path / name
    if name == "p.jsonl":  # a blank line is numbered, and counted, as a row
        src.write_text("".join(json.dumps(r) + "\n" + ("\n" if i == 1 else "") for i, r in enumerate(prefs)))
    elif name == "p.parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(prefs), src)
    elif name == "folder":
        import datasets

        datasets.Dataset.from_list(prefs).save_to_disk(str(src))
    else:
        gz(src, prefs) if name.endswith(".gz") else src.write_text(json.dumps(prefs, indent=2))
    capsys.readouterr()  # datasets' own bar of saving the folder
    monkeypatch.setattr(formats, "BAR_DELAY", 3600, raising=False)
    import_file("trl", str(src), tmp_path / "quiet.jsonl", progress=True)
    assert capsys.readouterr().err == ""  # done in under BAR_DELAY: no bar
    monkeypatch.setattr(formats, "BAR_DELAY", 0, raising=False)
    assert main(["data", "import", "--from", "trl", str(src), str(tmp_path / "out.jsonl")]) == 0
    err = capsys.readouterr().err
    assert "importing: 100%" in err and f"| {rows}/{rows} [" in err and "row/s]" in err
    assert "writing: 100%" in err and "| 4/4 [" in err and "record/s]" in err
    assert (tmp_path / "out.jsonl").read_bytes() == (tmp_path / "quiet.jsonl").read_bytes()
