"""`redline generate` on tiny-random: response records keep the prompts' ids and meta, and a run
stopped part-way resumes to exactly what one uninterrupted run writes."""

import json

import pytest

from redline import RedlineError
from redline.cli import main
from redline.respond import GenerateConfig, generate_responses

PROMPTS = [{"id": f"t{i}", "prompt": f"Write about topic {i}.", "response": "old", "meta": {"topic": f"topic {i}"}} for i in range(5)]


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_generate_cli_writes_response_records(jsonl, tmp_path):
    out = tmp_path / "out.jsonl"
    assert main(["generate", "--model", "tiny-random", "--prompts", str(jsonl(PROMPTS)), "--out", str(out),
                 "--max-new-tokens", "6", "--source", "policy"]) == 0
    rows = lines(out)
    assert [r["id"] for r in rows] == [p["id"] for p in PROMPTS]
    assert all(r["source"] == "policy" and r["meta"]["topic"] for r in rows)
    assert all(r["response"] != "old" for r in rows)  # sampled anew, not copied


def test_a_stopped_run_resumes_to_what_one_run_writes(jsonl, tmp_path):
    prompts = str(jsonl(PROMPTS))
    config = GenerateConfig(model="tiny-random", prompts=prompts, max_new_tokens=6, chunk=2, seed=3)
    generate_responses(config, tmp_path / "whole.jsonl")

    part = tmp_path / "part.jsonl"
    generate_responses(GenerateConfig(**{**config.__dict__, "limit": 3}), part)  # "killed" after 3
    assert len(lines(part)) == 3
    generate_responses(config, part)
    assert lines(part) == lines(tmp_path / "whole.jsonl")


def test_a_file_generated_in_chunks_shows_one_bar_over_the_file_from_what_a_resume_holds(jsonl, tmp_path, capsys):
    """Each chunk's engine call drew a bar of its own (0/2, 0/2, 0/1 for five prompts), with no time left for the
    file, and a line after each; one bar now counts the file, from the records a resumed file already holds."""
    config = GenerateConfig(model="tiny-random", prompts=str(jsonl(PROMPTS)), max_new_tokens=4, chunk=2)
    out = tmp_path / "out.jsonl"
    generate_responses(GenerateConfig(**{**config.__dict__, "limit": 1}), out)
    capsys.readouterr()
    generate_responses(config, out)
    bars = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.startswith("generate")]
    counts = [line.split("|")[2].split("[")[0].strip() for line in bars]
    assert counts[0] == "1/5" and counts[-1] == "5/5", bars  # from the record the file held, to the file's end
    assert all(count.endswith("/5") for count in counts), bars  # no bar of a chunk's own
    assert len(lines(out)) == 5


def test_a_resume_naming_its_model_folder_another_way_keeps_one_source(jsonl, tmp_path, monkeypatch):
    """`--model runs/ppo`, then `--model ./runs/ppo` (the same folder; the fingerprint lets it resume): the records'
    source, the model as typed, named one generator two ways in one file."""
    from dataclasses import replace

    from redline.models import tiny_random_dir

    folder = tiny_random_dir()
    config = GenerateConfig(model=str(folder), prompts=str(jsonl(PROMPTS)), max_new_tokens=4, chunk=2)
    part = tmp_path / "part.jsonl"
    generate_responses(replace(config, limit=2), part)
    monkeypatch.chdir(folder.parent)
    generate_responses(replace(config, model=f"./{folder.name}"), part)
    assert len(lines(part)) == 5 and {r["source"] for r in lines(part)} == {str(folder)}


def test_a_file_of_other_prompts_is_refused_and_a_longer_one_of_the_same_is_kept(jsonl, tmp_path):
    prompts = str(jsonl(PROMPTS))
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"id": "t0", "prompt": "something else", "response": "r"}) + "\n")
    with pytest.raises(RedlineError, match=r"out.jsonl:1: prompt: differs from record 1 of"):
        generate_responses(GenerateConfig(model="tiny-random", prompts=prompts), out)

    config = GenerateConfig(model="tiny-random", prompts=prompts, max_new_tokens=4)
    generate_responses(config, tmp_path / "all.jsonl")
    before = (tmp_path / "all.jsonl").read_text()
    generate_responses(GenerateConfig(**{**config.__dict__, "limit": 2}), tmp_path / "all.jsonl")  # a smaller run
    assert (tmp_path / "all.jsonl").read_text() == before


def test_bad_id_is_refused_with_its_line(jsonl, tmp_path):
    from redline.records import RecordError

    prompts = str(jsonl([{"prompt": "p"}, {"prompt": "q", "id": ["x"]}]))
    with pytest.raises(RecordError, match=r"data.jsonl:2: id: expected a string"):
        generate_responses(GenerateConfig(model="tiny-random", prompts=prompts), tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


def test_an_output_line_that_is_no_record_is_named_not_a_traceback(jsonl, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('["t0", "Write about topic 0."]\n')
    with pytest.raises(RedlineError, match=r"out.jsonl:1: not a response record \(a JSON list\)"):
        generate_responses(GenerateConfig(model="tiny-random", prompts=str(jsonl(PROMPTS))), out)


def test_a_sampling_setting_out_of_bounds_is_refused_by_its_flag_before_the_model_loads(jsonl, tmp_path, monkeypatch):
    import redline.generation

    def no_model(*args, **kwargs):
        raise AssertionError("the model loaded before the settings were checked")

    monkeypatch.setattr(redline.generation, "load_engine", no_model)
    with pytest.raises(RedlineError, match=r"^--top-p must be in \(0, 1\], got 0.0$"):
        generate_responses(GenerateConfig(model="tiny-random", prompts=str(jsonl(PROMPTS)), top_p=0.0), tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("name", ["out.jsonl.gz", "out.parquet"])
def test_an_output_that_cannot_be_appended_to_is_refused_before_the_model_loads(jsonl, tmp_path, monkeypatch, name):
    import redline.generation

    def no_model(*args, **kwargs):
        raise AssertionError("the model loaded before --out was checked")

    monkeypatch.setattr(redline.generation, "load_engine", no_model)
    with pytest.raises(RedlineError, match=f"--out .*{name}: generate appends JSONL"):  # was plain text under .gz
        generate_responses(GenerateConfig(model="tiny-random", prompts=str(jsonl(PROMPTS))), tmp_path / name)
    assert not (tmp_path / name).exists()


def test_an_out_that_is_a_folder_is_refused_as_one_not_offered_overwrite(jsonl, tmp_path, capsys):
    """generate writes one file: a folder was 'exists ... pass --overwrite to replace it', and --overwrite then
    failed with '[Errno 21] Is a directory'."""
    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    for extra in ([], ["--overwrite"]):
        assert main(["generate", "--model", "tiny-random", "--prompts", str(jsonl(PROMPTS)), "--out", str(folder),
                     *extra]) == 2
        err = capsys.readouterr().err
        assert f"--out {folder} is a folder" in err and "--overwrite" not in err and "Errno" not in err
    assert [p.name for p in folder.iterdir()] == ["keep.txt"]
    assert not list(tmp_path.glob("runs.*"))  # no fingerprint or config left beside it


def test_the_evaluate_command_generate_help_gives_runs():
    """--help said `redline evaluate --a OUT --b OTHER`, which evaluate refuses: --judge and --out are required."""
    import re

    from redline.cli import build_parser
    from redline.config import settings_from_args
    from redline.evaluate import EvaluateConfig

    parser = build_parser()
    generate = parser._subparsers._group_actions[0].choices["generate"]
    command = re.search(r"`redline (evaluate [^`]*)`", generate.description).group(1).split()
    settings_from_args(EvaluateConfig, parser.parse_args(command))  # raised '--judge is required'


def test_a_prompt_too_long_for_the_model_is_refused_before_any_chunk_is_generated(jsonl, tmp_path):
    # the engine refused it when its chunk came: the chunks before it had been generated and written
    huge = " ".join(f"word{i}" for i in range(2100))  # past tiny-random's 2048 positions
    prompts = jsonl(PROMPTS[:2] + [{"id": "huge", "prompt": huge}])
    out = tmp_path / "out.jsonl"
    with pytest.raises(RedlineError, match=r"record 3 \(id huge\): prompt: \d+ tokens in the model's chat template, "
                                           r"past the 2047 it takes"):
        generate_responses(GenerateConfig(model="tiny-random", prompts=str(prompts), max_new_tokens=4, chunk=1), out)
    assert not out.exists()
