"""Integrity drills (issue 20): nothing mixed, nothing dropped in silence. Each test reproduces a drill
a user ran and asserts the fixed behaviour; the item number of the issue is in the test's name."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from redline import RedlineError
from redline.cli import main

FEEDBACK = [
    {"prompt": f"Write a sentence about topic {i}, all in lowercase.", "response": f"The Topic {i} Is Interesting.",
     "critique": "It uses capital letters; the prompt asked for all lowercase.", "revision": f"the topic {i} is interesting."}
    for i in range(12)
]
RESPONSES = [{"id": f"r{i}", "prompt": f"Say something about {i}.", "response": f"Something about {i}."} for i in range(3)]


def critic_command(data, run, *extra):
    return ["train", "critic", "--data", str(data), "--model", "tiny-random", "--out", str(run), "--batch-size", "2",
            "--grad-accum", "1", "--warmup", "0", "--max-length", "256", *extra]


# ----------------------------------------------------------------------------- item 3 and 8: fingerprints


def test_item3_8_a_critic_rerun_with_other_data_lr_or_lora_rank_is_refused_and_overwrite_starts_over(jsonl, tmp_path, capsys):
    data = jsonl(FEEDBACK, "feedback.jsonl")
    other = jsonl(FEEDBACK[:6], "other.jsonl")
    run = tmp_path / "run"
    assert main(critic_command(data, run, "--max-steps", "2", "--save-steps", "1")) == 0
    card, config = (run / "redline.json").read_text(), (run / "train_config.json").read_text()
    capsys.readouterr()

    assert main(critic_command(other, run, "--max-steps", "2", "--save-steps", "1", "--learning-rate", "0.5")) == 2
    err = capsys.readouterr().err
    assert "holds a run with other settings or inputs" in err
    assert "--data:" in err and str(other) in err and "--learning-rate: 0.5 here, None in the run" in err
    assert "--overwrite" in err
    # nothing of the run was touched: it still claims what it was trained with
    assert (run / "redline.json").read_text() == card and (run / "train_config.json").read_text() == config

    # item 8: another LoRA rank is the same refusal, not a "size mismatch" traceback
    assert main(critic_command(data, run, "--max-steps", "2", "--save-steps", "1", "--lora-r", "4")) == 2
    assert "--lora-r: 4 here, 16 in the run" in capsys.readouterr().err

    # settings that do not change results may differ; the same data under another path is the same input
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(data.read_bytes())
    assert main(critic_command(copy, run, "--max-steps", "2", "--save-steps", "1", "--logging-steps", "7")) == 0

    # --overwrite starts over with the new settings
    assert main(critic_command(other, run, "--max-steps", "1", "--learning-rate", "0.5", "--overwrite")) == 0
    assert json.loads((run / "train_config.json").read_text())["learning_rate"] == 0.5
    assert json.loads((run / "redline.json").read_text())["metrics"]["steps"] == 1
    assert json.loads((run / "fingerprint.json").read_text())["inputs"]["data"]["path"] == str(other.resolve())


def test_item3_generate_refuses_another_models_partial_file_and_a_file_it_did_not_write(jsonl, tmp_path, capsys):
    prompts = jsonl([{"id": f"p{i}", "prompt": f"Write about {i}."} for i in range(4)], "prompts.jsonl")
    out = tmp_path / "out.jsonl"
    common = ["generate", "--prompts", str(prompts), "--out", str(out), "--max-new-tokens", "3"]
    assert main(common + ["--model", "tiny-random", "--limit", "2"]) == 0  # a partial run
    assert (tmp_path / "out.jsonl.fingerprint.json").is_file() and (tmp_path / "out.jsonl.config.json").is_file()
    capsys.readouterr()
    assert main(common + ["--model", "tiny-random", "--temperature", "0.2"]) == 2
    assert "--temperature: 0.2 here, 0.7 in the run" in capsys.readouterr().err
    assert len(out.read_text().splitlines()) == 2  # not appended to
    assert main(common + ["--model", "tiny-random"]) == 0  # the same run, longer: resumes
    assert len(out.read_text().splitlines()) == 4

    # a response file with the same ids that this command did not write is not "already done"
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text(out.read_text())
    assert main(["generate", "--prompts", str(prompts), "--out", str(foreign), "--model", "tiny-random"]) == 2
    assert "has no foreign.jsonl.fingerprint.json beside it" in capsys.readouterr().err
    assert main(["generate", "--prompts", str(prompts), "--out", str(foreign), "--model", "tiny-random",
                 "--max-new-tokens", "3", "--overwrite"]) == 0
    assert len(foreign.read_text().splitlines()) == 4


def test_a_folder_of_other_files_is_refused_as_an_output_and_a_seeded_stage_is_taken(jsonl, tmp_path, capsys):
    from redline.config import claim_output
    from redline.train.pit import PITConfig

    responses = jsonl(RESPONSES, "responses.jsonl")
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    argv = ["revise", "--critic", "tiny-random", "--input", str(responses), "--out", str(folder), "--max-new-tokens", "4"]
    assert main(argv) == 2
    assert "notes exists and has no fingerprint.json beside it (not written by this redline, or by an older one; it holds notes.txt)" \
        in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]  # nothing written into it
    # a stage a script placed to start from (PIT's SFT, copied from another run) is taken as the run's own
    seeded = tmp_path / "pit-r1"
    (seeded / "sft").mkdir(parents=True)
    config = PITConfig(policy="tiny-random", gap_reward="gap", data=str(responses))
    claim_output(seeded, config, command="train pit", config_name="train_config.json", seeded=("sft", "references.jsonl"))
    assert (seeded / "fingerprint.json").is_file()
    (seeded / "notes.txt").write_text("mine")
    for name in ("fingerprint.json", "train_config.json"):  # as before the claim, with a file of another kind beside
        (seeded / name).unlink()
    with pytest.raises(RedlineError, match="it holds notes.txt"):
        claim_output(seeded, config, command="train pit", config_name="train_config.json", seeded=("sft", "references.jsonl"))


def test_a_run_refused_on_a_seeded_folder_leaves_no_fingerprint_to_refuse_the_corrected_rerun(jsonl, tmp_path, capsys):
    prefs = jsonl([{"prompt": f"Q{i}?", "chosen": "good", "rejected": "bad"} for i in range(6)], "prefs.jsonl")
    run = tmp_path / "pit-r1"
    (run / "sft").mkdir(parents=True)
    (run / "sft" / "redline.json").write_text("{}")  # a stage copied in by a script
    argv = ["train", "pit", "--policy", "tiny-random", "--data", str(prefs), "--rounds", "1", "--out", str(run)]
    assert main(argv + ["--gap-reward", str(tmp_path / "nowhere")]) == 2
    capsys.readouterr()
    assert sorted(p.name for p in run.iterdir()) == ["sft"]  # nothing of the refused run is left
    assert (run / "sft" / "redline.json").read_text() == "{}"


def test_a_models_config_json_is_never_taken_for_a_runs_and_an_older_run_still_resumes(jsonl, tmp_path):
    from redline.config import claim_output
    from redline.improve.revise import ReviseConfig

    config = ReviseConfig(critic="tiny-random", input=str(jsonl(RESPONSES, "responses.jsonl")))
    model = {"hidden_size": 64, "model_type": "llama"}
    for extra in ({}, {"redline.json": "{}"}):  # a model folder of a config.json alone, and a redline model run
        folder = tmp_path / f"model{len(extra)}"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(model))
        for name, text in extra.items():
            (folder / name).write_text(text)
        with pytest.raises(RedlineError, match="it holds config.json"):
            claim_output(folder, config, command="revise")
        assert json.loads((folder / "config.json").read_text()) == model and not (folder / "fingerprint.json").exists()
    # an older redline's revise run (no fingerprint, no config) resumes as it did; so does a folder with a .gitkeep
    for name in ("iteration_0.jsonl", ".gitkeep"):
        folder = tmp_path / f"older-{name.strip('.')}"
        folder.mkdir()
        (folder / name).write_text("")
        claim_output(folder, config, command="revise")
        assert (folder / "fingerprint.json").is_file()
    # a fingerprint torn by a kill is named, not a bare JSON error
    (folder / "fingerprint.json").write_text('{"command": "revi')
    (folder / "iteration_0.jsonl").write_text("{}\n")
    with pytest.raises(RedlineError, match=r"fingerprint.json: not JSON .*--overwrite"):
        claim_output(folder, config, command="revise")


def test_item3_revise_refuses_old_iterations_under_new_sampling_settings(jsonl, tmp_path, capsys):
    responses = jsonl(RESPONSES, "responses.jsonl")
    out = tmp_path / "revised"
    common = ["revise", "--critic", "tiny-random", "--input", str(responses), "--out", str(out), "--max-new-tokens", "4"]
    assert main(common) == 0
    for flag, value in (("--temperature", "0.9"), ("--seed", "3"), ("--max-new-tokens", "5")):
        argv = [a for a in common if a not in ("--max-new-tokens", "4")] + [flag, value]
        argv += [] if flag == "--max-new-tokens" else ["--max-new-tokens", "4"]
        assert main(argv) == 2
        assert f"{flag}: " in capsys.readouterr().err
    # more iterations extend the same run (iteration k depends only on k-1): allowed
    assert main(common + ["--iterations", "2"]) == 0
    assert (out / "iteration_2.jsonl").is_file()


def test_item3_ppo_resume_with_another_reward_beta_lr_or_limit_is_refused_before_loading(jsonl, tmp_path, capsys):
    from redline.config import claim_output
    from redline.train.ppo import PPOConfig

    prompts = jsonl([{"prompt": f"p{i}"} for i in range(4)], "prompts.jsonl")
    run = tmp_path / "ppo"
    # a run that stopped after its first checkpoint: its fingerprint and a checkpoint folder
    claim_output(run, PPOConfig(policy="tiny-random", reward="rm-a", prompts=str(prompts)), command="train ppo",
                 config_name="train_config.json")
    (run / "checkpoints" / "iter-000001").mkdir(parents=True)
    common = ["train", "ppo", "--policy", "tiny-random", "--prompts", str(prompts), "--out", str(run)]
    for extra, named in ((["--reward", "rm-b"], "--reward"), (["--reward", "rm-a", "--beta", "0.1"], "--beta"),
                         (["--reward", "rm-a", "--learning-rate", "1e-3"], "--learning-rate"),
                         (["--reward", "rm-a", "--limit", "2"], "--limit")):
        assert main(common + extra) == 2
        assert f"{named}: " in capsys.readouterr().err  # refused at once: no model named rm-a exists to load


# ----------------------------------------------------------------------------- items 4 and 12, and kill -9


def test_item4_skip_invalid_is_reported_on_stderr_and_in_redline_json(jsonl, tmp_path, capsys):
    rows = FEEDBACK[:4] + ["{not json", {"prompt": "p", "response": "r"}] + FEEDBACK[4:6]
    data = jsonl(rows, "feedback.mixed.jsonl")
    run = tmp_path / "run"
    assert main(critic_command(data, run, "--max-steps", "1", "--skip-invalid")) == 0
    err = capsys.readouterr().err
    assert "6 records, skipped 2 invalid" in err and "<line>: not JSON" in err and "revision: missing" in err
    assert f"skipped {data}:5: <line>" in err
    reads = json.loads((run / "redline.json").read_text())["reads"][str(data)]
    assert reads["read"] == 6 and reads["skipped"] == 2
    assert reads["reasons"] == {"<line>: not JSON": 1, "revision: missing": 1}


def test_item4_every_reader_reports_skips_evaluate_and_prompt_records(jsonl, capsys):
    from redline.evaluate import read_iteration, read_responses
    from redline.records import RecordError, read_prompt_records

    bad = jsonl([RESPONSES[0], {"id": "x", "prompt": 3, "response": "r"}, RESPONSES[1]], "bad.jsonl")
    assert len(read_responses(str(bad), skip_invalid=True)) == 2
    assert "skipped 1 invalid (1× prompt: expected a string or a list of messages" in capsys.readouterr().err
    assert len(read_prompt_records(str(bad), skip_invalid=True)) == 2
    assert "skipped 1 invalid" in capsys.readouterr().err
    iteration = jsonl([{**RESPONSES[0], "response_0": "o"}, RESPONSES[1]], "iteration_1.jsonl")
    responses, originals = read_iteration(Path(iteration), skip_invalid=True)
    assert [r.id for r in responses] == ["r0"] and originals[0].response == "o"
    assert "response_0: missing" in capsys.readouterr().err
    # a second row with an id already read would take the first's place in the pairing: refused with both lines
    twice = jsonl([{**RESPONSES[0], "response_0": "o"}, {**RESPONSES[0], "response_0": "p"}], "iteration_2.jsonl")
    with pytest.raises(RecordError, match=r"iteration_2.jsonl:2: id: 'r0' again \(first on line 1\)"):
        read_iteration(Path(twice))


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.2)


def test_item12_kill_9_mid_run_resumes_to_the_same_adapter_and_counts_every_stretch(jsonl, tmp_path):
    from safetensors.torch import load_file

    data = jsonl(FEEDBACK, "feedback.jsonl")
    flags = ["--max-steps", "6", "--save-steps", "2", "--logging-steps", "1"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert main(critic_command(data, straight, *flags)) == 0

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "redline.cli", *critic_command(data, killed, *flags)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(killed / "checkpoints" / "checkpoint-4" / "redline_progress.json", proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (killed / "redline.json").exists()
    stretch = json.loads((killed / "checkpoints" / "checkpoint-4" / "redline_progress.json").read_text())
    assert main(critic_command(data, killed, *flags)) == 0  # the same command resumes from checkpoint-4

    a, b = load_file(straight / "adapter_model.safetensors"), load_file(killed / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)  # bitwise the same adapter
    whole = json.loads((straight / "redline.json").read_text())["metrics"]
    resumed = json.loads((killed / "redline.json").read_text())["metrics"]
    assert resumed["steps"] == whole["steps"] == 6
    assert resumed["tokens"] == whole["tokens"]  # every stretch's tokens, not only the last one's
    assert resumed["train_seconds"] >= stretch["seconds"] - 0.1 > 0


# ----------------------------------------------------------------------------- items 5, 6, 7


def test_item5_reward_data_kind_comes_from_the_first_parseable_record(jsonl, capsys):
    from redline.records import RecordError
    from redline.train.reward import read_comparisons

    prefs = [{"prompt": f"p{i}", "chosen": "good", "rejected": "bad"} for i in range(3)]
    path = jsonl(["{broken", *prefs], "prefs.jsonl")
    with pytest.raises(RecordError) as e:
        read_comparisons(str(path))
    assert e.value.errors == [f"{path}:1: <line>: not JSON: Expecting property name enclosed in double quotes at column 2"]
    rankings = read_comparisons(str(path), skip_invalid=True)
    assert len(rankings) == 3 and all(r.ranks == [0, 1] for r in rankings)


@pytest.mark.parametrize("verdict, code", [("I would rather not say.", 2), ("Output (a)", 0)])
def test_item6_evaluate_fails_when_too_many_verdicts_are_invalid(jsonl, tmp_path, capsys, verdict, code):
    from redline.generation import ScriptedEngine
    from redline.serve import make_app, start_server

    a = jsonl(RESPONSES, "a.jsonl")
    b = jsonl([{**r, "response": "other"} for r in RESPONSES], "b.jsonl")
    server = start_server(make_app(ScriptedEngine([verdict]), "judge", batch_wait_ms=2))
    try:
        spec = f"openai:judge@{server.url}?cache=off"
        assert main(["evaluate", "--a", str(a), "--b", str(b), "--judge", spec, "--out", str(tmp_path / "e"),
                     "--bootstrap", "100"]) == code
    finally:
        server.stop()
    err = capsys.readouterr().err
    if code:
        assert "3 of 3 verdicts are invalid (100%, more than --max-invalid 10%)" in err
    assert (tmp_path / "e" / "summary.json").is_file()  # the judgments are kept either way


def test_item7_ppo_resume_recovers_a_torn_last_line_of_its_logs(tmp_path):
    from redline.train.ppo import _truncate_log

    log = tmp_path / "ppo_log.jsonl"
    log.write_text('{"iteration": 1, "reward": 0.5}\n{"iteration": 2, "reward": 0.6}\n{"iteration": 3, "rew')
    _truncate_log(log, 2)
    assert [json.loads(line)["iteration"] for line in log.read_text().splitlines()] == [1, 2]
    _truncate_log(log, 1)
    assert log.read_text() == '{"iteration": 1, "reward": 0.5}\n'


# ----------------------------------------------------------------------------- items 9, 10, 11, 13


def test_item9_bad_normalize_with_and_revise_settings_fail_before_any_model_loads(jsonl, tmp_path, capsys):
    prefs = jsonl([{"prompt": f"p{i}", "chosen": "good", "rejected": "bad"} for i in range(4)], "prefs.jsonl")
    bad = jsonl([{"prompt": "p"}], "bad.jsonl")
    started = time.monotonic()
    assert main(["train", "reward", "--data", str(prefs), "--model", "no-such/model-anywhere", "--out",
                 str(tmp_path / "rm"), "--normalize-with", str(bad)]) == 2
    assert "bad.jsonl:1: response: missing" in capsys.readouterr().err
    assert not (tmp_path / "rm" / "checkpoints").exists() and time.monotonic() - started < 30
    responses = jsonl(RESPONSES, "responses.jsonl")
    assert main(["revise", "--critic", "no-such/critic-anywhere", "--input", str(responses), "--out",
                 str(tmp_path / "r"), "--stop", "best"]) == 2
    assert "--stop best needs a judge" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["data", "validate", "F", "--kind", "response", "--limit", "0"],
    ["data", "validate", "F", "--kind", "response", "--limit", "-1"],
    ["train", "critic", "--data", "F", "--out", "o", "--max-steps", "0"],
    ["train", "critic", "--data", "F", "--out", "o", "--limit", "0"],
    ["train", "critic", "--data", "F", "--out", "o", "--lora-r", str(10**30)],
    ["evaluate", "--a", "F", "--judge", "oracle", "--out", "o", "--bootstrap", "-5"],
    ["generate", "--prompts", "F", "--out", "o.jsonl", "--limit", "-1"],
    ["revise", "--critic", "c", "--input", "F", "--out", "o", "--iterations", "0"],
    ["revise", "--critic", "c", "--input", "F", "--out", "o", "--stop", "never"],
])
def test_item10_out_of_range_values_are_refused_at_parse_time(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "must be at least" in err or "must be at most" in err or "is not one of" in err, err


def test_item10_messages_name_the_flag_and_the_bound(capsys):
    with pytest.raises(SystemExit):
        main(["train", "critic", "--data", "F", "--out", "o", "--max-steps", "0"])
    assert "--max-steps: must be at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "critic", "--data", "F", "--out", "o", "--lora-r", str(10**30)])
    assert f"--lora-r: must be at most 4096, got {10**30}" in capsys.readouterr().err


def test_item11_generate_refuses_duplicate_prompt_ids_before_writing(jsonl, tmp_path, capsys):
    prompts = jsonl([{"id": "a", "prompt": "p"}, {"id": "b", "prompt": "q"}, {"id": "a", "prompt": "r"}])
    out = tmp_path / "out.jsonl"
    assert main(["generate", "--model", "tiny-random", "--prompts", str(prompts), "--out", str(out)]) == 2
    assert "data.jsonl:3: id: duplicate id 'a' (first on line 1)" in capsys.readouterr().err
    assert not out.exists()


def test_item13_a_line_that_is_not_utf8_is_one_bad_line_and_can_be_skipped(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    good = [json.dumps(r).encode() for r in RESPONSES]
    path.write_bytes(good[0] + b"\n" + b'{"id": "x", "prompt": "caf\xe9"}\n' + good[1] + b"\n")
    assert main(["data", "validate", str(path), "--kind", "response"]) == 2
    assert f"{path}:2: <line>: not UTF-8 text" in capsys.readouterr().err
    assert main(["data", "validate", str(path), "--kind", "response", "--skip-invalid"]) == 0
    out = capsys.readouterr()
    assert "2 valid response records" in out.out and "skipped 1 invalid" in out.err


def test_item13_empty_inputs_are_refused_everywhere(tmp_path, capsys):
    blank = tmp_path / "blank.jsonl"
    blank.write_text("  \n\n \t\n")
    assert main(["data", "validate", str(blank), "--kind", "response"]) == 2
    assert "blank.jsonl: no records (the file is empty" in capsys.readouterr().err
    assert main(["revise", "--critic", "tiny-random", "--input", str(blank), "--out", str(tmp_path / "r")]) == 2
    assert "no records" in capsys.readouterr().err
    assert not (tmp_path / "r" / "iteration_0.jsonl").exists()


def test_item13_parquet_with_a_bad_json_column_names_the_row(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from redline.records import PARQUET_JSON_COLUMNS, write_records

    path = tmp_path / "r.parquet"
    write_records(path, [{**RESPONSES[0], "meta": {"k": 1}}, {**RESPONSES[1], "meta": {"k": 2}}])
    table = pq.read_table(path)
    meta = table.column("meta").to_pylist()
    table = table.set_column(table.schema.get_field_index("meta"), "meta", pa.array([meta[0], "{not json"]))
    pq.write_table(table.replace_schema_metadata({PARQUET_JSON_COLUMNS: b'["meta"]'}), path)
    assert main(["data", "validate", str(path), "--kind", "response"]) == 2
    assert f"{path}:2: meta: not JSON" in capsys.readouterr().err


def test_item13_a_typo_of_a_local_path_is_not_tried_on_the_hub(tmp_path, monkeypatch, capsys):
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    assert main(["data", "validate", "data/feedbck", "--kind", "feedback"]) == 2
    assert "data/feedbck:0: <file>: no such file or folder (and not a hub data set: data/ is a local folder)" in \
        capsys.readouterr().err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["data", "validate", "someone/dataset", "--kind", "feedback"]) == 2
    assert "the hub is offline" in capsys.readouterr().err
    assert time.monotonic() - started < 5


# ----------------------------------------------------------------------------- item 14


def test_item14_a_seeded_revise_gives_the_same_records_under_load_and_another_thread_count(jsonl, tmp_path):
    """The demo's revise step, greedy and sampled, run once quietly on one thread and once on two threads
    while two busy processes compete for the cores: the iteration files are byte for byte the same."""
    responses = jsonl(RESPONSES, "responses.jsonl")
    src = str(Path(__file__).resolve().parents[1] / "src")

    def revise(out: Path, threads: int) -> None:
        env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": str(threads)}
        argv = ["revise", "--critic", "tiny-random", "--input", str(responses), "--out", str(out), "--iterations", "2",
                "--max-new-tokens", "12", "--temperature", "0.8", "--dtype", "bfloat16"]
        subprocess.run([sys.executable, "-m", "redline.cli", *argv], env=env, check=True, capture_output=True)

    revise(tmp_path / "quiet", 1)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        revise(tmp_path / "loaded", 2)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    for k in (1, 2):
        name = f"iteration_{k}.jsonl"
        assert (tmp_path / "quiet" / name).read_bytes() == (tmp_path / "loaded" / name).read_bytes()


def test_item3_a_run_of_an_older_redline_is_compared_by_the_config_it_recorded(tmp_path, capsys):
    from redline.config import claim_output
    from redline.train.critic import CriticConfig

    run = tmp_path / "old"
    (run / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (run / "train_config.json").write_text(json.dumps({"data": "f.jsonl", "learning_rate": 0.01, "lora_r": 16}))
    claim_output(run, CriticConfig(data="f.jsonl", learning_rate=0.01), command="train critic", config_name="train_config.json")
    assert (run / "fingerprint.json").is_file()  # adopted: the settings it recorded agree
    (run / "fingerprint.json").unlink()
    with pytest.raises(RedlineError, match=r"--learning-rate: 0.5 here, 0.01 in the run"):
        claim_output(run, CriticConfig(data="f.jsonl", learning_rate=0.5), command="train critic",
                     config_name="train_config.json")


def test_item3_overwrite_never_removes_the_current_folder_or_a_folder_redline_did_not_write(tmp_path, monkeypatch):
    from redline.config import claim_output
    from redline.evaluate import EvaluateConfig

    monkeypatch.chdir(tmp_path)
    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("mine")
    config = EvaluateConfig(a="a.jsonl", judge="oracle", out=".")
    with pytest.raises(RedlineError, match="holds the current folder"):
        claim_output(Path("."), config, command="evaluate", overwrite=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(RedlineError, match="holds files that no redline run wrote"):
        claim_output(other, config, command="evaluate", overwrite=True)
    assert (other / "notes.txt").read_text() == "mine" and (tmp_path / "notes.txt").exists()


def test_a_checkpoint_cut_short_by_a_kill_is_passed_over_on_resume(tmp_path):
    from redline.train.sft import last_checkpoint

    assert last_checkpoint(tmp_path) is None
    for step, complete in ((2, True), (4, True), (6, False)):  # killed while checkpoint-6 was being written
        folder = tmp_path / "checkpoints" / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoints" / "checkpoint-x").mkdir()  # not a checkpoint of ours
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoints" / "checkpoint-4")


def test_a_checkpoint_killed_before_its_progress_file_is_passed_over_on_resume(tmp_path):
    from redline.train.sft import PROGRESS, last_checkpoint

    for step in (4, 6):
        folder = tmp_path / "checkpoints" / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoints" / "checkpoint-6")  # a run without the file
    # killed after the Trainer wrote checkpoint-6 and before redline counted its time and tokens into it
    (tmp_path / "checkpoints" / "checkpoint-4" / PROGRESS).write_text('{"seconds": 0.4, "tokens": 1099}')
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoints" / "checkpoint-4")
    (tmp_path / "checkpoints" / "checkpoint-6" / PROGRESS).write_text('{"seconds": 0.6, "tokens": 1650}')
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoints" / "checkpoint-6")


def test_a_run_killed_before_its_first_progress_file_starts_over(tmp_path):
    from redline.train.sft import COUNTED, PROGRESS, last_checkpoint

    folder = tmp_path / "checkpoints" / "checkpoint-2"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == str(folder)  # a run from before the progress file resumes as it was
    (tmp_path / "checkpoints" / COUNTED).touch()  # a run that counts its progress, killed before the first count
    assert last_checkpoint(tmp_path) is None
    (folder / PROGRESS).write_text('{"seconds": 0.2, "tokens": 548}')
    assert last_checkpoint(tmp_path) == str(folder)


def test_only_a_run_that_starts_under_progress_counting_is_marked_as_counting(tmp_path):
    from types import SimpleNamespace

    from redline.train.sft import COUNTED, last_checkpoint, run_trainer

    class Trainer:  # what run_trainer reads of a transformers Trainer: its step count, and three calls
        args = SimpleNamespace(max_steps=5)

        def add_callback(self, callback):
            pass

        def pop_callback(self, callback):
            return None

        def train(self, resume_from_checkpoint=None):
            self.resumed = resume_from_checkpoint
            return SimpleNamespace(metrics={"train_runtime": 1.0})

    fresh, old = tmp_path / "fresh", tmp_path / "old"
    run_trainer(Trainer(), fresh)
    assert (fresh / "checkpoints" / COUNTED).exists()
    (old / "checkpoints" / "checkpoint-2").mkdir(parents=True)  # a run from before the progress file
    (old / "checkpoints" / "checkpoint-2" / "trainer_state.json").write_text("{}")
    trainer = Trainer()
    run_trainer(trainer, old)
    assert trainer.resumed == str(old / "checkpoints" / "checkpoint-2")
    assert not (old / "checkpoints" / COUNTED).exists()  # so a later resume still finds its checkpoints
    assert last_checkpoint(old) == str(old / "checkpoints" / "checkpoint-2")
