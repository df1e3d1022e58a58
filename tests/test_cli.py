"""The `redline` command: help everywhere, shared option names, one-line errors with exit code 2."""

import argparse
import json

import pytest

from redline import RedlineError
from redline.cli import _refuse_a_launch_that_would_repeat, build_parser, main


def _all_subparsers(parser, path=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield path + (name,), sub
                yield from _all_subparsers(sub, path + (name,))


def _leaf_commands():
    subs = list(_all_subparsers(build_parser()))
    parents = {p[:-1] for p, _ in subs}
    return [(p, s) for p, s in subs if p not in parents]


@pytest.mark.parametrize("path", [p for p, _ in _leaf_commands()], ids=" ".join)
def test_every_command_has_help(path, capsys):
    with pytest.raises(SystemExit) as exit:
        main([*path, "--help"])
    assert exit.value.code == 0
    assert "usage: redline " + " ".join(path) in capsys.readouterr().out


def test_shared_options_are_spelled_the_same_everywhere():
    readers = 0
    for path, sub in _leaf_commands():
        options = {o for a in sub._actions for o in a.option_strings}
        if "--limit" in options:
            readers += 1
            assert "--skip-invalid" in options, path
        if "--max-steps" in options or "--epochs" in options:
            assert {"--max-steps", "--epochs", "--out", "--seed"} <= options, path
        assert not options & {"--output", "--output-dir", "--model-name", "--random-seed", "--n", "--max_steps"}, path
    assert readers >= 3


def test_validate_reports_count_and_exit_0(jsonl, capsys):
    path = jsonl([{"prompt": "p", "chosen": "a", "rejected": "b"}] * 3)
    assert main(["data", "validate", str(path), "--kind", "preference"]) == 0
    assert "3 valid preference records" in capsys.readouterr().out


def test_validate_bad_file_prints_every_bad_line_and_exits_2(jsonl, capsys):
    path = jsonl([{"prompt": "p", "chosen": "a"}, "nope", {"prompt": "p", "chosen": "a", "rejected": "b"}])
    assert main(["data", "validate", str(path), "--kind", "preference"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:1: rejected: missing" in err
    assert f"{path}:2: <line>: not JSON" in err
    assert "Traceback" not in err


def test_missing_file_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["data", "validate", str(tmp_path / "none.jsonl"), "--kind", "feedback"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none.jsonl:0: <file>: cannot read" in err[0]


def test_debug_shows_the_traceback(tmp_path):
    from redline.records import RecordError

    with pytest.raises(RecordError):
        main(["--debug", "data", "validate", str(tmp_path / "none.jsonl"), "--kind", "feedback"])


def test_skip_invalid_reports_on_stderr(jsonl, capsys):
    path = jsonl([{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p"}])
    assert main(["data", "validate", str(path), "--kind", "preference", "--skip-invalid"]) == 0
    out = capsys.readouterr()
    assert "1 valid preference records" in out.out and "skipped 1 invalid" in out.err


def test_stats_counts_ties_duplicates_and_token_lengths(jsonl, capsys):
    rows = [
        {"prompt": "p1", "responses": ["a b c", "d", "e"], "ranks": [0, 1, 1]},
        {"prompt": "p1", "responses": ["a b c", "d", "e"], "ranks": [0, 1, 1]},
        {"prompt": "p2", "responses": ["x", "y"], "ranks": [1, 0]},
    ]
    assert main(["data", "stats", str(jsonl(rows)), "--kind", "ranking", "--tokenizer", "tiny-random"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["records"] == 3 and stats["unique_prompts"] == 2
    assert stats["duplicate_prompts"] == 1 and stats["duplicate_records"] == 1
    assert stats["tied_pairs"] == 2 and stats["rankings_with_ties"] == 2
    assert stats["comparisons"] == 2 + 2 + 1
    assert stats["responses_per_ranking"] == {"2": 1, "3": 2}
    assert stats["tokens"]["responses"]["max"] >= 3 and stats["tokens"]["prompt"]["min"] >= 1


def test_openmp_threads_wait_passively_unless_the_user_chose(jsonl, monkeypatch):
    """Spinning OpenMP waits collapse beside another busy process (RESULTS "Training"); libgomp reads the policy
    once, when torch loads, so the command must set it before anything imports torch."""
    import os
    import subprocess
    import sys

    path = jsonl([{"prompt": "p", "chosen": "a", "rejected": "b"}])
    for unset in (None, ""):  # absent, or empty (which libgomp reads as absent)
        monkeypatch.setenv("OMP_WAIT_POLICY", "restored after the test")
        if unset is None:
            monkeypatch.delenv("OMP_WAIT_POLICY")
        else:
            monkeypatch.setenv("OMP_WAIT_POLICY", unset)
        assert main(["data", "validate", str(path), "--kind", "preference"]) == 0
        assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert main(["data", "validate", str(path), "--kind", "preference"]) == 0
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    # nothing loads torch before main's first line: importing the command and building its parser
    loaded = subprocess.run([sys.executable, "-c", "import sys; from redline.cli import build_parser; build_parser(); "
                             "print('torch' in sys.modules)"], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "False"


def test_stats_p90_is_the_nearest_rank():
    # Nearest rank: the ceil(0.9 n)-th smallest. Of 1..10 that is 9 (not the maximum); of 1..100, 90.
    from redline.stats import _distribution

    assert _distribution(list(range(1, 11)))["p90"] == 9
    assert _distribution(list(range(1, 101)))["p90"] == 90
    assert _distribution([7])["p90"] == 7 and _distribution([1, 2, 3, 4, 5])["p90"] == 5


@pytest.mark.parametrize("before", [["--seed", "5"], ["--overwrite"], ["--judge=oracle:noisy"], ["--a", "x.jsonl"]])
def test_flags_given_to_evaluate_before_its_subcommand_are_refused_not_dropped(before, tmp_path, capsys):
    """argparse let the subcommand's defaults overwrite them: `evaluate --seed 5 agreement` ran with seed None."""
    with pytest.raises(SystemExit) as exit:
        main(["evaluate", *before, "agreement", "--a", "a.jsonl", "--b", "b.jsonl", "--judges", "oracle,oracle:noisy",
              "--out", str(tmp_path / "o")])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert f"{before[0].split('=')[0]} given before `evaluate agreement`" in err
    assert not (tmp_path / "o").exists()
    # after the subcommand they are its own, as before (here: on to the missing file)
    assert main(["evaluate", "agreement", "--seed", "5", "--a", str(tmp_path / "a.jsonl"), "--b", "b.jsonl",
                 "--judges", "oracle,oracle:noisy", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "given before" not in err and "a.jsonl" in err


def test_out_may_come_from_the_config_a_run_wrote(tmp_path, monkeypatch, capsys):
    """simulate build and evaluate rankings/rollouts/table write `out` into their config.json, but argparse
    required --out: `--config RUN/config.json` did not repeat the run (evaluate itself took it from the file)."""
    monkeypatch.chdir(tmp_path)
    assert main(["simulate", "build", "--responder", "template", "--prompts", "4", "--test-prompts", "2",
                 "--no-progress", "--out", "sim"]) == 0
    first = (tmp_path / "sim" / "test.jsonl").read_text()
    capsys.readouterr()
    assert main(["simulate", "build", "--config", "sim/config.json"]) == 0  # the same run: resumed, nothing new
    assert "wrote 2 records to sim/test.jsonl" in capsys.readouterr().out
    assert (tmp_path / "sim" / "test.jsonl").read_text() == first
    for command in (["simulate", "build"], ["evaluate", "rankings", "--model", "m", "--data", "d.jsonl"],
                    ["evaluate", "table", "--runs", "e"]):
        assert main(command) == 2  # neither --out nor a config's out: one line, as before
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("redline: error: --out is required"), err


@pytest.mark.parametrize("command", [["train", "sft"], ["train", "reward"], ["train", "ppo", "--policy", "tiny-random", "--reward", "oracle"]])
def test_a_push_target_that_cannot_take_the_run_is_refused_before_it_trains(command, tmp_path, capsys):
    # it was checked when the finished run was published: after the training it could not be published from
    data = tmp_path / "data.jsonl"
    data.write_text('{"prompt": "p", "response": "r"}\n')
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    flags = {"sft": ["--data", str(data)], "reward": ["--data", str(data)], "ppo": ["--prompts", str(data)]}[command[1]]
    for target, message in ((str(stray), "the folder holds files that are not a published run"),
                            ("not a repo!", "is not a hub repo id")):
        out = tmp_path / f"run-{command[1]}"
        assert main([*command, *flags, "--out", str(out), "--push-to-hub", target]) == 2
        assert message in capsys.readouterr().err
        assert not out.exists()


@pytest.mark.parametrize("command", [["generate", "--model", "tiny-random", "--prompts"],
                                     ["revise", "--critic", "tiny-random", "--input"],
                                     ["refine", "--model", "tiny-random", "--input"],
                                     ["train", "sft", "--model", "tiny-random", "--data"]])
def test_a_device_that_is_not_here_is_refused_before_a_model_loads(command, tmp_path, monkeypatch, capsys):
    # generate, revise, improve, refine, simulate build and serve loaded the model's weights (a hub model: downloaded
    # them) and only then were told that --device foo is not a device, or that this machine has no cuda:99
    import redline.models

    def loaded(*args, **kwargs):
        raise AssertionError("a model loaded")

    monkeypatch.setattr(redline.models, "_load", loaded)
    data = tmp_path / "data.jsonl"
    data.write_text('{"id": "1", "prompt": "p", "response": "r"}\n')
    out = tmp_path / ("out.jsonl" if command[0] == "generate" else "out")
    for device in ("foo", "cuda:99"):
        assert main([*command, str(data), "--device", device, "--out", str(out)]) == 2
        assert f"--device {device}: " in capsys.readouterr().err
        assert not out.exists()


@pytest.mark.parametrize("flags, message", [
    (["app", "--port", "-1"], "argument --port: must be from 0 to 65535, got -1"),  # a traceback once the database opened
    (["app", "--port", "99999"], "argument --port: must be from 0 to 65535, got 99999"),
    (["app", "simulate", "--project", "p", "--noise-scale", "nan"], "argument --noise-scale: expected a finite number"),
    (["app", "simulate", "--project", "p", "--noise-scale", "-1"], "argument --noise-scale: must be at least 0"),
    (["app", "simulate", "--project", "p", "--annotators", "0"], "argument --annotators: must be at least 1"),
    (["app", "simulate", "--project", "p", "--max-submissions", "-2"], "argument --max-submissions: must be at least 1"),
    (["app", "simulate", "--project", "p", "--seed", "-1"], "argument --seed: must be from 0 to 4294967295"),
])
def test_the_app_commands_numbers_are_refused_as_they_are_read(flags, message, capsys):
    # the bots ranked with a noise of nan (rankings in arbitrary order) and --max-submissions -2 submitted nothing,
    # without a word; --port -1 was an OverflowError traceback once the app had opened its database
    with pytest.raises(SystemExit) as exit:
        build_parser().parse_args(flags)
    assert exit.value.code == 2
    assert message in capsys.readouterr().err


def test_experiment_critic_help_does_not_offer_what_it_refuses(capsys):
    # its --help took train critic's texts ('train on N records ...', 'publish the finished run ...') for two flags
    # it always refuses (refuse_unread)
    with pytest.raises(SystemExit):
        main(["experiment", "critic", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "train on N records" not in text and "publish the finished run" not in text
    assert "--limit LIMIT refused here" in text and "--push-to-hub PUSH_TO_HUB refused here" in text


def _option_helps(parser):
    formatter = parser._get_formatter()
    return [(a.option_strings or [a.dest], formatter._expand_help(a)) for a in parser._actions
            if a.help and a.help is not argparse.SUPPRESS]


def test_no_option_of_any_command_says_its_default_is_none():
    # "(default: None)" on --limit, --max-steps, --push-to-hub ... and "(default: )" on train pit --gap-reward named
    # no value a user could give: an unset option says nothing, or its help says what unset means ("default: all")
    bad = [(" ".join(path), flags, text) for path, sub in [((), build_parser()), *_all_subparsers(build_parser())]
           for flags, text in _option_helps(sub)
           if "default: None" in text or "(default: )" in text or text.count("default:") > 1]
    assert not bad
    helps = dict((tuple(f), t) for f, t in _option_helps(dict(_leaf_commands())[("train", "pit")]))
    assert helps[("--limit",)] == "use the first N records of each file"  # unset says nothing
    assert helps[("--rounds",)].endswith("(default: 0,1)")  # a set default is still shown


def test_a_command_that_does_not_share_its_work_is_refused_under_a_launcher(jsonl, tmp_path, monkeypatch, capsys):
    """Under torchrun every process ran `generate` whole into one file: each response written twice."""
    prompts = jsonl([{"id": "a", "prompt": "Say a."}])
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    out = tmp_path / "out.jsonl"
    assert main(["generate", "--model", "tiny-random", "--prompts", str(prompts), "--max-new-tokens", "2",
                 "--out", str(out)]) == 2
    assert "`redline generate` runs in one process: under a launcher (WORLD_SIZE=2)" in capsys.readouterr().err
    assert not list(tmp_path.glob("out.jsonl*"))
    with pytest.raises(RedlineError, match="`redline simulate build` runs in one process"):
        _refuse_a_launch_that_would_repeat(argparse.Namespace(command="simulate", simulate_command="build"))
    _refuse_a_launch_that_would_repeat(argparse.Namespace(command="train", train_command="sft"))  # shares its work
    monkeypatch.setenv("WORLD_SIZE", "1")  # accelerate launch --num_processes 1: one process, as without a launcher
    _refuse_a_launch_that_would_repeat(argparse.Namespace(command="generate"))
