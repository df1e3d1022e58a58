"""scripts/critic_weight.py: the critique's and the revision's held-out losses are split where the weighted
trainer splits them, whatever the tokenizer, and a prompt longer than --max-length is measured, not a crash."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from redline.records import Feedback
from tests.test_train_critic import FEEDBACK, LLAMA3_SPLIT

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("critic_weight", ROOT / "scripts" / "critic_weight.py")
critic_weight = importlib.util.module_from_spec(_spec)
sys.modules["critic_weight"] = critic_weight
_spec.loader.exec_module(critic_weight)

RECORDS = [Feedback(**r) for r in FEEDBACK[:3]]


def _use(monkeypatch, tokenizer):
    import redline.models
    from redline.models import load_causal_lm

    model = load_causal_lm("tiny-random", device="cpu")
    monkeypatch.setattr(redline.models, "load_tokenizer", lambda name: tokenizer)
    monkeypatch.setattr(redline.models, "load_causal_lm", lambda *a, **k: model)


def test_the_revision_is_measured_apart_from_the_critique_with_a_tokenizer_that_joins_the_markers_colon(monkeypatch):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from redline.models import load_tokenizer
    from redline.prompts import REVISION_MARK, critic_target

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([critic_target(r.critique, r.revision) for r in RECORDS],
                            trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe)
    tokenizer.chat_template = load_tokenizer("tiny-random").chat_template
    alone = tokenizer(REVISION_MARK, add_special_tokens=False)["input_ids"]
    in_place = tokenizer(critic_target("x.", "y."), add_special_tokens=False)["input_ids"]
    assert not any(in_place[i:i + len(alone)] == alone for i in range(len(in_place)))  # the case this is about
    _use(monkeypatch, tokenizer)
    losses = critic_weight.part_losses(Path("unused"), RECORDS, max_length=1024)
    revision_tokens = sum(len(tokenizer(f"{r.revision}", add_special_tokens=False)["input_ids"]) for r in RECORDS)
    assert losses["revision_tokens"] >= revision_tokens  # the revision (and its end-of-turn), not folded into the critique
    assert losses["critique_tokens"] > 0 and losses["revision"] > 0


def test_a_prompt_longer_than_max_length_leaves_nothing_to_measure_rather_than_crashing(monkeypatch):
    from redline.models import load_tokenizer

    _use(monkeypatch, load_tokenizer("tiny-random"))
    losses = critic_weight.part_losses(Path("unused"), RECORDS, max_length=8)
    assert losses["critique_tokens"] == losses["revision_tokens"] == 0
    assert losses["critique"] is None and losses["revision"] is None  # nothing measured: not a loss of 0.0


def test_a_finished_weight_run_is_reused_only_for_the_settings_and_records_that_trained_it(tmp_path):
    """A rerun with another --train, --epochs or --data found weight_1/redline.json and reused the first run's critic."""
    import pytest

    from redline.train.critic import CriticConfig

    config = CriticConfig(model="tiny-random", data="f.jsonl", epochs=1.0, critique_weight=1.0)
    run = tmp_path / "weight_1"
    run.mkdir()
    made_of = critic_weight.run_inputs(config, RECORDS[:2])
    (run / critic_weight.MADE_OF).write_text(json.dumps(made_of))
    critic_weight.check_reused(run, made_of)  # the same: reused
    with pytest.raises(SystemExit, match="other settings or records than these"):
        critic_weight.check_reused(run, critic_weight.run_inputs(config, RECORDS[:3]))  # --train 3
    with pytest.raises(SystemExit, match="other settings or records"):
        critic_weight.check_reused(run, critic_weight.run_inputs(CriticConfig(model="tiny-random", data="f.jsonl",
                                                                              epochs=2.0, critique_weight=1.0), RECORDS[:2]))
    (run / critic_weight.MADE_OF).unlink()  # a run from before the record
    with pytest.raises(SystemExit, match="no record of what trained it"):
        critic_weight.check_reused(run, made_of)


def test_a_run_stopped_part_way_is_not_resumed_on_other_records(tmp_path, monkeypatch):
    """Only a finished run was checked: one killed before its redline.json was resumed from its checkpoints on
    another --train's records, and then recorded as trained on those."""
    import pytest

    import redline.train.critic as critic

    data = tmp_path / "feedback.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in FEEDBACK[:4]))
    trained = []

    def stopped(config, run, records):  # killed after its first checkpoint
        trained.append(len(records))
        (run / "checkpoints").mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(critic, "train_critic", stopped)
    argv = ["critic_weight.py", str(tmp_path / "out"), "--data", str(data), "--model", "tiny-random", "--weights", "1",
            "--held-out", "1"]
    monkeypatch.setattr(sys, "argv", argv + ["--train", "2"])
    from redline import RedlineError

    with pytest.raises(RedlineError, match="has not finished"):  # nothing to measure: the stand-in stopped it
        critic_weight.main()
    monkeypatch.setattr(sys, "argv", argv + ["--train", "3"])
    with pytest.raises(SystemExit, match="other settings or records than these"):
        critic_weight.main()
    assert trained == [2]


def _main(monkeypatch, tmp_path, *args, prompts=4):
    """critic_weight.main() on ``prompts`` distinct prompts with ``args``; training is refused (nothing may train)."""
    import redline.train.critic as critic

    data = tmp_path / "feedback.jsonl"
    data.write_text("".join(json.dumps({**FEEDBACK[0], "prompt": f"Question {i}?"}) + "\n" for i in range(prompts)))
    monkeypatch.setattr(critic, "train_critic", lambda *a, **k: pytest.fail("trained"))
    monkeypatch.setattr(sys, "argv", ["critic_weight.py", str(tmp_path / "out"), "--data", str(data), *args])
    return critic_weight.main()


@pytest.mark.parametrize("args, message", [
    (["--train", "0"], "--train 0: expected a number of prompts of at least 1"),  # spread() took 0 as every prompt
    (["--held-out", "-1"], "--held-out -1: expected a number of prompts of at least 1"),
    (["--weights", "1,x"], "--weights '1,x': expected numbers above 0"),
    (["--weights", "1,0"], "--weights '1,0': 0 is not above 0"),  # refused by the trainer after weight 1 trained
    (["--weights", "nan"], "--weights 'nan': nan is not above 0"),
    (["--weights", "1,1.0"], "--weights '1,1.0': a weight named twice"),
    (["--train", "4"], "4 distinct prompts, none left to hold out after --train 4"),  # losses of 0.0 over no record
])
def test_arguments_that_would_train_on_every_prompt_or_measure_nothing_are_refused_before_training(
        monkeypatch, tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as stop:
        _main(monkeypatch, tmp_path, *args)
    assert message in str(stop.value) + capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_out_that_is_a_file_is_refused_in_one_line(monkeypatch, tmp_path, capsys):
    """OUT an existing file was a FileExistsError traceback, after the records were read."""
    (tmp_path / "out").write_text("keep me")
    with pytest.raises(SystemExit):
        _main(monkeypatch, tmp_path)
    assert "exists and is not a folder" in capsys.readouterr().err and (tmp_path / "out").read_text() == "keep me"


def test_results_say_how_many_prompts_there_were_and_write_a_nan_loss_as_null(monkeypatch, tmp_path, capsys):
    """Fewer prompts than --train and --held-out asked for was silent; a diverged critic's NaN was written as NaN,
    which strict JSON readers refuse."""
    run = tmp_path / "out" / "weight_1"
    run.mkdir(parents=True)
    (run / "redline.json").write_text("{}")
    monkeypatch.setattr(critic_weight, "check_reused", lambda run, made_of: None)
    monkeypatch.setattr(critic_weight, "part_losses", lambda run, records, n: {"critique": float("nan"), "revision": 1.0})
    assert _main(monkeypatch, tmp_path, "--train", "3", "--weights", "1", prompts=5) == 0
    assert "5 distinct prompts: 3 to train on, 2 held out (asked for 3 and 32)" in capsys.readouterr().err
    results = json.loads((tmp_path / "out" / "results.json").read_text(), parse_constant=pytest.fail)
    assert results["held_out"] == 2 and results["runs"]["1"] == {"critique": None, "revision": 1.0}


def test_a_bad_data_file_is_one_line_not_a_traceback(tmp_path):
    """A record that is not feedback in --data was a RecordError traceback."""
    import subprocess

    bad = tmp_path / "feedback.jsonl"
    bad.write_text('{"prompt": "p"}\n')
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "critic_weight.py"), str(tmp_path / "out"), "--data",
                           str(bad)], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 2 and done.stderr.startswith("critic_weight: ") and "Traceback" not in done.stderr
    assert "feedback.jsonl" in done.stderr and not (tmp_path / "out").exists()
