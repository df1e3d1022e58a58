"""`--report-to` a logger that is not installed: one line naming the extra, in every trainer alike."""

from __future__ import annotations

import importlib.util
import json

import pytest

from redline import RedlineError
from redline.cli import main
from redline.train.sft import check_report_to

real_find_spec = importlib.util.find_spec


@pytest.fixture
def no_loggers(monkeypatch):
    """As on a machine without tensorboard or wandb, whatever this one has."""
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tensorboard", "wandb") else real_find_spec(name, *a))


def supervised_trainers(tmp_path, flags: list[str]) -> tuple:
    """A one-record demonstrations file and preferences file, and every supervised trainer's command on them
    with ``flags``; returns the preferences file and the commands."""
    demos = tmp_path / "d.jsonl"
    demos.write_text(json.dumps({"prompt": "q", "response": "a", "critique": "c", "revision": "r"}) + "\n")
    prefs = tmp_path / "p.jsonl"
    prefs.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
    common = ["--model", "tiny-random", "--max-steps", "1", "--device", "cpu", *flags]
    return prefs, [
        ["train", "sft", "--data", str(demos), *common],
        ["train", "critic", "--data", str(demos), *common],
        ["train", "reward", "--data", str(prefs), "--eval-split", "0", *common],
        ["train", "gap-reward", "--data", str(prefs), "--eval-split", "0", *common],
        ["train", "dpo", "--data", str(prefs), *common],
    ]


@pytest.mark.parametrize("logger", ["tensorboard", "wandb"])
def test_every_trainer_says_which_extra_to_install(no_loggers, logger, tmp_path, capsys):
    prefs, commands = supervised_trainers(tmp_path, ["--report-to", logger])
    commands.append(["train", "ppo", "--policy", "tiny-random", "--reward", "tiny-random", "--prompts", str(prefs),
                     "--report-to", logger])
    for i, command in enumerate(commands):
        assert main([*command, "--out", str(tmp_path / f"run{i}")]) == 2, command
        err = capsys.readouterr().err.strip()
        assert err == (f"redline: error: --report-to {logger} needs the {logger} package: pip install "
                       f"'redline[{logger}]' (or --report-to none; every run also writes its log to the run folder)"), command


def test_an_unknown_logger_is_refused():
    with pytest.raises(RedlineError, match="must be one of none, tensorboard, wandb"):
        check_report_to("mlflow")
    check_report_to("none")


def test_every_trainer_sets_the_threads_it_is_given(monkeypatch, tmp_path, capsys):
    """`--threads N` reaches torch in every trainer, before any model loads (stopped there, so nothing trains)."""
    import torch

    def stop(n):
        raise RedlineError(f"stopped at set_num_threads({n})")

    monkeypatch.setattr(torch, "set_num_threads", stop)
    prefs, commands = supervised_trainers(tmp_path, ["--threads", "3"])
    from redline.models import ModelCard, load_reward_model, load_tokenizer, save_model

    gap = tmp_path / "gap"
    save_model(load_reward_model("tiny-random", device="cpu"), load_tokenizer("tiny-random"), gap,
               ModelCard(kind="gap-reward", base_model="tiny-random"))
    capsys.readouterr()  # loading it printed a progress bar
    commands.append(["train", "pit", "--policy", "tiny-random", "--gap-reward", str(gap), "--data", str(prefs),
                     "--threads", "3"])  # its SFT stage; PPO and PIT's rounds set theirs in run_ppo
    for i, command in enumerate(commands):
        assert main([*command, "--out", str(tmp_path / f"run{i}")]) == 2, command
        assert capsys.readouterr().err.strip() == "redline: error: stopped at set_num_threads(3)", command
