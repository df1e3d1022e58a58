"""DPO on tiny-random: it trains, saves a run that peft's AutoPeftModelForCausalLM and redline load,
resumes, and refuses a file without pairs or a reward run as the policy before a model loads."""

import json

import pytest
import torch
from safetensors.torch import load_file

from redline import RedlineError
from redline.cli import main
from redline.models import ModelCard, load_causal_lm, load_reward_model, load_tokenizer, save_model
from redline.records import RecordError
from redline.train.dpo import DPOSettings, read_pairs, train_dpo

PAIRS = [{"prompt": f"Write about topic {i}.", "chosen": f"Topic {i} is good, and here is why: it helps.",
          "rejected": "no", "id": f"p{i}"} for i in range(6)] + [{"prompt": "Say hi.", "chosen": "hi", "rejected": "hi"}]


pytestmark = pytest.mark.usefixtures("one_thread")


def settings(data, **changes) -> DPOSettings:
    values = dict(model="tiny-random", data=str(data), device="cpu", max_steps=3, grad_accum=2, lora_r=4,
                  learning_rate=1e-2, logging_steps=1, save_steps=2, max_length=64)
    values.update(changes)
    return DPOSettings(**values)


def test_dpo_trains_and_saves_a_run_that_peft_loads(jsonl, tmp_path, capsys):
    run = tmp_path / "dpo"
    metrics = train_dpo(settings(jsonl(PAIRS)), run)
    assert metrics["steps"] == 3 and metrics["pairs"] == 6 and metrics["identical_pairs_skipped"] == 1
    # it learnt the preference: the loss fell from log 2 and the chosen answers now out-score the rejected
    assert metrics["first_loss"] == pytest.approx(0.6931, abs=1e-3) and metrics["final_loss"] < metrics["first_loss"]
    assert metrics["final_reward_margin"] > 0
    # the adapter moved: LoRA B starts at zero
    adapter = load_file(str(run / "adapter_model.safetensors"))
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in adapter.items())
    info = json.loads((run / "redline.json").read_text())
    assert info["kind"] == "dpo" and info["adapter"] and info["metrics"]["steps"] == 3
    assert json.loads((run / "train_config.json").read_text())["beta"] == 0.1
    rows = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert any("rewards/margins" in row for row in rows)
    assert (run / "training_curve.png").is_file()

    from peft import AutoPeftModelForCausalLM

    model = AutoPeftModelForCausalLM.from_pretrained(str(run))
    ids = load_tokenizer("tiny-random")("hello", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        with model.disable_adapter():
            base = model(input_ids=ids).logits
    assert not torch.allclose(logits, base, atol=1e-4)  # the saved adapter is the trained one

    from redline.generation import SamplingParams, load_engine

    engine = load_engine(str(run), device="cpu")
    assert engine.generate(["hi"], SamplingParams(max_new_tokens=3), progress=False)[0].completion_tokens >= 1

    # A second run of the same command with more steps resumes from the last checkpoint; --push-to-hub with a
    # local folder publishes the finished run there (no checkpoints).
    logged = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    capsys.readouterr()
    more = train_dpo(settings(jsonl(PAIRS), max_steps=4, push_to_hub=str(tmp_path / "published")), run)
    assert more["steps"] == 4
    assert f"resuming from {run / 'checkpoints'}" in capsys.readouterr().err  # not started over
    assert [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()][:2] == logged[:2]
    assert (tmp_path / "published" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "published" / "checkpoints").exists()


def test_cli_refuses_a_file_without_pairs_and_a_reward_run_before_loading(jsonl, tmp_path, capsys):
    args = ["train", "dpo", "--model", "tiny-random", "--out", str(tmp_path / "run")]
    rankings = jsonl([{"prompt": "p", "responses": ["a", "b"], "ranking": [0, 1]}], "rankings.jsonl")
    assert main(args + ["--data", str(rankings)]) == 2
    assert "rankings.jsonl:1: DPO needs preference pairs" in capsys.readouterr().err
    same = jsonl([PAIRS[-1]], "same.jsonl")
    assert main(args + ["--data", str(same)]) == 2
    assert "no preference pair whose chosen differs" in capsys.readouterr().err
    rm = tmp_path / "rm"
    save_model(load_reward_model("tiny-random", device="cpu"), load_tokenizer("tiny-random"), rm,
               ModelCard(kind="reward", base_model="tiny-random"))
    assert main(["train", "dpo", "--model", str(rm), "--data", str(jsonl(PAIRS)), "--out", str(tmp_path / "run")]) == 2
    assert "is a reward model, not a policy" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_first_line_that_is_not_json_is_reported_as_such_or_skipped(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text("{not json\n" + "".join(json.dumps(p) + "\n" for p in PAIRS))
    with pytest.raises(RecordError, match="prefs.jsonl:1: <line>: not JSON"):  # its own fault, not the file's kind
        read_pairs(str(path))
    pairs, _ = read_pairs(str(path), skip_invalid=True)
    assert len(pairs) == 6


def test_a_skipped_line_is_reported_once(tmp_path, capsys):
    # read_records reports its skips; read_pairs printed the same summary a second time
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PAIRS) + "{not json\n")
    read_pairs(str(path), skip_invalid=True)
    assert capsys.readouterr().err.count("skipped 1 invalid (1× <line>: not JSON)") == 1


def test_read_pairs_builds_chat_pairs_and_counts_identical_ones(jsonl):
    pairs, skipped = read_pairs(str(jsonl(PAIRS)))
    assert skipped == 1 and len(pairs) == 6
    assert pairs[0] == {"prompt": [{"role": "user", "content": "Write about topic 0."}],
                        "chosen": [{"role": "assistant", "content": PAIRS[0]["chosen"]}],
                        "rejected": [{"role": "assistant", "content": "no"}]}
    with pytest.raises(RedlineError, match="DPO needs preference pairs"):
        read_pairs(str(jsonl([{"prompt": "p", "response": "r"}], "demos.jsonl")))


def test_dpo_without_lora_from_a_lora_sft_run_trains_the_whole_model_and_saves_it_on_the_sft_base(jsonl, tmp_path):
    """The paper's setting (no LoRA) on redline's default SFT run (a LoRA adapter): the SFT run is merged on load,
    so the model trained and saved is whole, its card naming the SFT's own base."""
    demos = jsonl([{"prompt": p["prompt"], "response": p["chosen"]} for p in PAIRS[:4]], "demos.jsonl")
    sft = tmp_path / "sft"
    assert main(["train", "sft", "--model", "tiny-random", "--data", str(demos), "--max-steps", "1", "--device", "cpu",
                 "--out", str(sft)]) == 0
    assert json.loads((sft / "redline.json").read_text())["adapter"]
    run = tmp_path / "dpo"
    metrics = train_dpo(settings(jsonl(PAIRS), model=str(sft), lora=False, max_steps=2, learning_rate=1e-3), run)
    assert metrics["steps"] == 2  # the first at a warm-up learning rate of 0, the second moves the weights
    info = json.loads((run / "redline.json").read_text())
    assert info["base_model"] == "tiny-random" and not info["adapter"]
    trained = load_causal_lm(str(run), device="cpu")
    merged = load_causal_lm(str(sft), device="cpu", merge_lora=True)
    assert any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(), merged.state_dict().values()))


def test_what_truncation_cuts_drops_and_empties_is_counted_and_said(jsonl, tmp_path, capsys):
    long_prompt = {"prompt": "tell me " * 80, "chosen": "yes, gladly", "rejected": "no"}  # fills 64 tokens alone
    same_start = {"prompt": "Say it.", "chosen": "word " * 60 + "good", "rejected": "word " * 60 + "bad"}
    metrics = train_dpo(settings(jsonl(PAIRS + [long_prompt, same_start]), max_steps=1), tmp_path / "dpo")
    assert metrics["pairs"] == 8 and metrics["dropped_pairs"] == 1  # the long prompt: TRL drops it
    assert metrics["cut_pairs"] == 1 and metrics["identical_after_cut"] == 1  # the two answers differ past the cut
    err = capsys.readouterr().err
    assert "--max-length 64: 1 of 8 pairs lost their answers' ends; 1 whose prompt alone fills it were dropped" in err


def test_a_wrong_loss_type_or_a_beta_not_above_0_is_refused_before_a_model_loads(jsonl, tmp_path, capsys):
    # a mistyped --loss-type was named by TRL only at the first step, after the model loaded, and left checkpoints/
    # behind: the corrected rerun was then refused as "a run with other settings"
    args = ["train", "dpo", "--model", "tiny-random", "--data", str(jsonl(PAIRS)), "--out", str(tmp_path / "run")]
    for loss in ("sigmod", "exo_pair"):  # exo_pair needs a label smoothing redline does not pass
        with pytest.raises(SystemExit):
            main(args + ["--loss-type", loss])
        assert f"--loss-type: {loss!r} is not one of sigmoid" in capsys.readouterr().err
    # --beta 0 trained at a constant log 2 and saved the start as a DPO run (ipo divided by it); below 0 the reverse
    for beta in ("0", "-0.1"):
        assert main(args + ["--beta", beta]) == 2
        assert f"--beta must be above 0, got {float(beta)}" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_first_pair_missing_a_field_is_reported_by_its_field_or_skipped(jsonl):
    # only a record of another kind (no chosen, no rejected) says the file is not pairs; a pair missing one field is
    # a bad record like any other: named by its field, or skipped with --skip-invalid
    path = jsonl([{"prompt": "p", "chosen": "a"}] + PAIRS)
    with pytest.raises(RecordError, match=r"data.jsonl:1: rejected"):
        read_pairs(str(path))
    pairs, identical = read_pairs(str(path), skip_invalid=True)
    assert len(pairs) == 6 and identical == 1


def test_bf16_base_loads_the_policy_in_bfloat16_under_lora(jsonl, tmp_path, monkeypatch):
    import redline.models

    class Loaded(Exception):
        pass

    def spy(model, dtype="float32", *args, **kwargs):  # records what the policy is loaded in, and stops there
        raise Loaded(dtype)

    monkeypatch.setattr(redline.models, "load_causal_lm", spy)
    with pytest.raises(Loaded, match="bfloat16"):
        train_dpo(settings(jsonl(PAIRS), bf16_base=True), tmp_path / "a")
    with pytest.raises(Loaded, match="float32"):  # without LoRA the whole model trains: --dtype as given
        train_dpo(settings(jsonl(PAIRS), bf16_base=True, lora=False), tmp_path / "b")


def test_every_trainers_learning_rate_help_states_the_default_it_trains_at():
    # train dpo's help said SFT's "2e-4 LoRA, 2e-5 full" (the field was inherited) while it trains at 1e-4 and 1e-6
    import re
    from dataclasses import fields

    from redline.train.critic import CriticConfig
    from redline.train.dpo import DPOSettings
    from redline.train.gap_reward import GapRewardConfig
    from redline.train.reward import RewardConfig
    from redline.train.sft import SFTSettings

    for cls in (SFTSettings, CriticConfig, RewardConfig, GapRewardConfig, DPOSettings):
        help_text = next(f.metadata["help"] for f in fields(cls) if f.name == "learning_rate")
        lora, full = map(float, re.search(r"default: (\S+) LoRA, (\S+) full", help_text).groups())
        assert (cls(lora=True).lr(), cls(lora=False).lr()) == (lora, full), cls.__name__
