"""What a command prints: the libraries' deprecation notices and dataset-preparation bars are hidden
unless --verbose, the training bar and redline's own lines always show, and the process is left as it
was."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

from redline.console import ENV, quiet

ROOT = Path(__file__).resolve().parents[1]


def _train(tmp_path, *flags):
    return subprocess.run([sys.executable, "-m", "redline.cli", *flags, "train", "sft", "--model", "tiny-random",
                           "--data", str(ROOT / "data/simulated/demonstrations.jsonl"), "--limit", "2", "--max-steps", "1",
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=600,
                          env={k: v for k, v in os.environ.items() if k not in ENV} | {"OMP_NUM_THREADS": "1"})


def test_a_command_shows_its_bar_and_not_the_libraries_notices_unless_verbose(tmp_path):
    done = _train(tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1/1 [" in done.stderr and "Loading weights" in done.stderr  # the trainer's and the loader's bars
    assert "Warning" not in done.stderr and "train dataset" not in done.stderr
    verbose = _train(tmp_path / "v", "--verbose")
    assert verbose.returncode == 0, verbose.stderr[-2000:]
    assert "Tokenizing train dataset" in verbose.stderr and "1/1 [" in verbose.stderr


def test_quiet_hides_the_libraries_deprecations_not_ours_and_puts_everything_back():
    saved = {name: os.environ.get(name) for name in ENV}
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet():
            assert all(os.environ.get(name) for name in ENV)
            warnings.warn_explicit("old name", FutureWarning, "x.py", 1, module="transformers.training_args")
            warnings.warn_explicit("old name", DeprecationWarning, "x.py", 1, module="peft.tuners")
            warnings.warn_explicit("ours", FutureWarning, "x.py", 1, module="redline.train.sft")
        warnings.warn_explicit("after", FutureWarning, "x.py", 1, module="transformers.training_args")
    assert [str(w.message) for w in seen] == ["ours", "after"]
    assert {name: os.environ.get(name) for name in ENV} == saved


def test_a_bar_in_a_log_is_redrawn_every_few_seconds_not_ten_times_a_second(tmp_path):
    """stderr to a file or pipe: tqdm's 0.1 s redraws were each a line in a CI or kubectl log."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(f'{{"id": "p{i}", "prompt": "Write about {i}."}}\n' for i in range(8)))
    done = subprocess.run([sys.executable, "-m", "redline.cli", "generate", "--model", "tiny-random", "--prompts",
                           str(prompts), "--out", str(tmp_path / "out.jsonl"), "--max-new-tokens", "160",
                           "--temperature", "0", "--chunk", "8"], capture_output=True, text=True, timeout=600,
                          env={k: v for k, v in os.environ.items() if k not in ENV and k != "TQDM_MININTERVAL"}
                          | {"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    redraws = [part for part in done.stderr.replace("\n", "\r").split("\r") if part.startswith("generate:")]
    assert redraws[-1].startswith("generate: 100%") and "8/8" in redraws[-1]  # the end is always drawn
    assert len(redraws) <= 4, redraws  # its start, its end, and at most a redraw every ten seconds between


def test_a_scoring_bar_shows_in_a_log_too(tiny_reward, capfd):
    """stderr to a file (capfd's, as nohup's): the held-out scoring and normalising bars had disable=None, which tqdm
    reads as 'off where stderr is not a terminal', so a log showed minutes of silence where every other bar shows."""
    import torch

    from redline.models import load_reward_model, load_tokenizer
    from redline.records import Preference, Ranking
    from redline.train.gap_reward import gap_scores
    from redline.train.reward import held_out_accuracy

    torch.set_num_threads(1)
    model, tokenizer = load_reward_model(tiny_reward, device="cpu"), load_tokenizer(tiny_reward)
    capfd.readouterr()
    held_out_accuracy(model, tokenizer, [Ranking(prompt="Say hi.", responses=["Hi.", "No."], ranks=[0, 1])], 64)
    gap_scores(model, tokenizer, [Preference(prompt="Say hi.", chosen="Hi.", rejected="No.")], 64)
    err = capfd.readouterr().err
    assert "scoring the held-out rankings: 100%" in err and "2/2" in err
    assert "scoring the held-out pairs: 100%" in err and "4/4" in err
