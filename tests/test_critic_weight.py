"""scripts/critic_weight.py: the critique's and the revision's held-out losses are split where the weighted
trainer splits them, whatever the tokenizer, and a prompt longer than --max-length is measured, not a crash."""

import importlib.util
import json
import sys
from pathlib import Path

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
