"""PIT training on tiny-random: SFT's examples, the round-0 episodes, the whole curriculum (SFT, BASE's
references, round 0, round 1 with the KL to PIT SFT) through run_ppo with the gap reward, resume by
stage, the manifest `improve` reads, and bad input refused before any work."""

import json

import pytest

from redline import RedlineError
from redline.cli import main
from redline.models import ModelCard, chat_text, load_reward_model, load_tokenizer, run_info, save_model, score_texts
from redline.prompts import PIT_TEMPLATE
from redline.records import Preference, read_jsonl_prefix
from redline.train.pit import (PITConfig, build_prompt, pit_policy, pit_sft_examples, round0_records, select_sft_pairs,
                               train_pit)


pytestmark = pytest.mark.usefixtures("one_thread")


PREFS = [{"prompt": f"Write about topic {i}.", "chosen": f"Topic {i} is good, and here is why.", "rejected": "no", "id": f"p{i}"}
         for i in range(4)] + [{"prompt": "Say hi.", "chosen": "hi", "rejected": "hi", "id": "same"}]


def save_tiny(run, kind, cls=load_reward_model):
    save_model(cls("tiny-random", device="cpu"), load_tokenizer("tiny-random"), run, ModelCard(kind=kind, base_model="tiny-random"))
    return str(run)


@pytest.fixture(scope="module")
def gap_run(tmp_path_factory):
    """A gap-reward run: tiny-random with a (random) score head, as `train gap-reward` saves it."""
    return save_tiny(tmp_path_factory.mktemp("gap") / "gap", "gap-reward")


def test_sft_examples_put_the_worse_response_in_the_prompt_and_the_better_in_the_completion():
    prefs = [Preference(prompt="Name a colour.", chosen="Blue, the colour of the sky.", rejected="blu"),
             Preference(prompt="p", chosen="same", rejected="same")]
    examples, skipped = pit_sft_examples(prefs)
    assert skipped == 1 and len(examples) == 1
    (user,), (assistant,) = examples[0]["prompt"], examples[0]["completion"]
    assert user == {"role": "user", "content": PIT_TEMPLATE.format(prompt="Name a colour.", response="blu")}
    assert assistant == {"role": "assistant", "content": "Blue, the colour of the sky."}
    assert "Blue" not in user["content"]


def test_sft_pairs_keeps_the_edits_or_the_others_and_refuses_pairs_that_do_not_say():
    edit = Preference(prompt="a", chosen="Blue.", rejected="blue", id="e", meta={"edit": True})
    other = Preference(prompt="b", chosen="Red, like a rose.", rejected="Green.", id="o", meta={"edit": False})
    unmarked = Preference(prompt="c", chosen="x", rejected="y", id="u")
    assert select_sft_pairs([edit, other, unmarked], "all", "f.jsonl") == [edit, other, unmarked]
    assert select_sft_pairs([edit, other], "edits", "f.jsonl") == [edit]
    assert select_sft_pairs([edit, other], "no-edits", "f.jsonl") == [other]
    with pytest.raises(RedlineError, match=r"f.jsonl: --sft-pairs edits reads meta.edit .* which 1 of 3 .*'u'"):
        select_sft_pairs([edit, other, unmarked], "edits", "f.jsonl")


def test_the_sft_stage_takes_the_lora_settings_given_to_pit():
    sft = PITConfig(policy="p", gap_reward="g", data="d", lora_r=4, lora_alpha=8, lora_dropout=0.1, bf16_base=True).sft_settings()
    assert (sft.lora_r, sft.lora_alpha, sft.lora_dropout, sft.bf16_base) == (4, 8, 0.1, True)
    # --report-to logs the SFT stage too (it reached the RL rounds only: SFT went unlogged under wandb)
    assert PITConfig(policy="p", data="d", report_to="tensorboard").sft_settings().report_to == "tensorboard"


def test_round0_improves_both_responses_of_a_pair_and_an_identical_one_once():
    records = round0_records([Preference(prompt="x", chosen="W", rejected="L", id="a"), Preference(prompt="y", chosen="S", rejected="S")])
    assert [(r["id"], r["reference"]) for r in records] == [("a:l", "L"), ("a:w", "W"), ("1:l", "S")]
    assert build_prompt(records[0])[0]["content"] == PIT_TEMPLATE.format(prompt="x", response="L")
    rejected = round0_records([Preference(prompt="x", chosen="W", rejected="L", id="a"), Preference(prompt="y", chosen="S",
                                                                                                   rejected="S")], "rejected")
    assert [(r["id"], r["reference"]) for r in rejected] == [("a:l", "L"), ("1:l", "S")]  # y_w left out


def config(gap_run, data, **changes) -> PITConfig:
    settings = dict(policy="tiny-random", gap_reward=gap_run, data=str(data), device="cpu", max_steps=1,
                    sft_batch_size=2, iterations=1, batch_size=2, minibatch_size=2, micro_batch_size=2, max_new_tokens=4,
                    reference_max_new_tokens=6, lora_r=4, learning_rate=1e-3, value_learning_rate=1e-3, save_every=1,
                    logging_steps=1, value_warmup_iterations=0)
    settings.update(changes)
    return PITConfig(**settings)


def test_the_curriculum_runs_round0_then_round1_and_a_rerun_skips_every_stage(gap_run, jsonl, tmp_path, capsys):
    data = jsonl(PREFS)
    run = tmp_path / "pit"
    manifest = train_pit(config(gap_run, data), run)
    assert manifest["policy"] == "rl-0-1" and manifest["rounds"] == [0, 1]
    assert run_info(run / "sft")["kind"] == "pit-sft" and manifest["stages"]["sft"]["identical_pairs_skipped"] == 1
    assert run_info(run / "sft")["notes"] == ""  # not split: the card's data is all it read, and it says no more
    gap, tok = load_reward_model(gap_run, device="cpu"), load_tokenizer(gap_run)
    for stage in ("rl-0", "rl-0-1"):
        info = run_info(run / stage)
        assert info["kind"] == "pit" and info["metrics"]["iterations"] == 1
        row = json.loads((run / stage / "ppo_log.jsonl").read_text().splitlines()[0])
        assert row["ptx_loss"] is None
        # the gap model scored the episodes: r_gap(x, y, y_ref) read again from each rollout's PIT chat
        episodes = [json.loads(line) for line in (run / stage / "rollouts.jsonl").read_text().splitlines()]
        texts = [chat_text(tok, e["prompt"], e["response"]) for e in episodes]
        assert [e["score"] for e in episodes] == pytest.approx(score_texts(gap, tok, texts, max_length=768), abs=1e-3)
    # round 1's references: one per prompt, sampled from BASE, and round 1's card names them
    refs = read_jsonl_prefix(run / "references.jsonl")
    assert len(refs) == 5 and all(r["source"] == "tiny-random" for r in refs)
    assert str(run / "references.jsonl") in run_info(run / "rl-0-1")["data"]
    # round 1 started from round 0's policy, with a frozen PIT SFT as its KL reference
    saved = json.loads((run / "rl-0-1" / "train_config.json").read_text())
    assert saved["policy"] == str(run / "rl-0") and saved["ptx_coef"] == 0
    first_kl = [json.loads((run / s / "ppo_log.jsonl").read_text().splitlines()[0])["kl"] for s in ("rl-0", "rl-0-1")]
    # round 0 starts at PIT SFT, its reference: 0 but for the sampler's and the learner's numerics (since a one-step
    # PIT SFT trains at its peak rate, 721f711, its merged weights are not the base's and the two differ by ~1e-6)
    assert abs(first_kl[0]) < 1e-4
    assert abs(first_kl[1]) > 1e-4  # round 1 starts at round 0's policy, and its KL is still measured against PIT SFT
    assert pit_policy(run) == str(run / "rl-0-1") and pit_policy(run / "sft") == str(run / "sft")
    # each round says which it is (both rounds' PPO lines read 'ppo iteration 1/1'), and round 1's references are
    # sampled under a bar, not in silence
    err = capsys.readouterr().err
    assert f"RL round 0, improving 9 references, in {run / 'rl-0'}" in err  # both answers of each pair, an identical one once
    assert f"RL round 1, improving 5 references, in {run / 'rl-0-1'}" in err  # BASE's, one a prompt
    assert "answers to 5 prompts, round 1's references" in err and "generate: 100%" in err

    again = train_pit(config(gap_run, data, iterations=3), run)  # every stage is complete: nothing trains again
    err = capsys.readouterr().err
    assert "skipping PIT SFT" in err and "skipping RL round 0" in err and "skipping RL round 1" in err
    # a finished round is not extended by a larger --iterations (free to change for an unfinished one): it says so
    assert f"{run / 'rl-0'} is done after 1 iterations (not --iterations 3); skipping RL round 0" in err
    assert again == manifest  # the manifest of a resumed run is the straight run's, every stage's metrics included


def test_round1_alone_starts_from_sft_in_its_own_folder(gap_run, jsonl, tmp_path):
    run = tmp_path / "pit"
    assert main(["train", "pit", "--policy", "tiny-random", "--gap-reward", gap_run, "--data", str(jsonl(PREFS)),
                 "--out", str(run), "--rounds", "1", "--device", "cpu", "--max-steps", "1", "--sft-batch-size", "2",
                 "--iterations", "1", "--batch-size", "2", "--minibatch-size", "2", "--max-new-tokens", "4",
                 "--reference-max-new-tokens", "4", "--lora-r", "4", "--split-thirds",
                 "--push-to-hub", str(tmp_path / "published")]) == 0
    assert json.loads((run / "pit.json").read_text())["policy"] == "rl-1" and not (run / "rl-0").exists()
    # --push-to-hub (a local folder here) publishes the final policy the manifest names, less its checkpoints
    published = tmp_path / "published"
    assert run_info(published) == run_info(run / "rl-1") and run_info(published)["kind"] == "pit"
    assert (run / "rl-1" / "checkpoints").is_dir() and not (published / "checkpoints").exists()
    assert f'from_pretrained("{published}")' in (published / "README.md").read_text()
    assert pit_policy(published) == str(published)  # `redline improve --model` takes it
    assert json.loads((run / "rl-1" / "train_config.json").read_text())["policy"] == str(run / "sft")
    # the RL third: of 5 prompts, SFT gets round(5/3) = 2, the gap model round(3/2) = 2, RL the last one
    assert len(read_jsonl_prefix(run / "references.jsonl")) == 1
    # and the cards say so: each named the whole --data file, though each stage read one third of it
    note = run_info(run / "rl-1")["notes"]
    assert (f"Data: BASE's answers in references.jsonl to the prompts of the last (RL) third of `{jsonl(PREFS)}` "
            "(--split-thirds, --split-seed 0): 1 of the 5 preference records read, on 1 of their 5 prompts") in note
    assert "the last (RL) third" in (run / "rl-1" / "README.md").read_text()


def test_split_thirds_cards_say_which_third_of_the_data_each_stage_read(jsonl, tmp_path):
    # under --split-thirds a stage's card named the whole --data file as its data; PIT SFT read the first third
    data = jsonl(PREFS)
    train_pit(config("", data, rounds="none", split_thirds=True, limit=4), tmp_path / "run")
    card = run_info(tmp_path / "run" / "sft")
    assert card["data"] == [str(data)]
    assert card["notes"] == (f"Data: the first (PIT SFT) third of `{data}` (--split-thirds, --split-seed 0, --limit 4): "
                             "1 of the 4 preference records read, on 1 of their 4 prompts; the middle third is the gap "
                             "model's.")
    assert card["notes"] in (tmp_path / "run" / "sft" / "README.md").read_text()


def test_bad_input_is_refused_before_any_work(gap_run, jsonl, tmp_path):
    data = jsonl(PREFS)
    rm = save_tiny(tmp_path / "rm", "reward")
    with pytest.raises(RedlineError, match="plain reward model"):
        train_pit(config(rm, data), tmp_path / "a")
    with pytest.raises(RedlineError, match="--rounds"):
        train_pit(config(gap_run, data, rounds="1,0"), tmp_path / "a")
    with pytest.raises(RedlineError, match="is a gap-reward model"):
        train_pit(config(gap_run, data, policy=gap_run), tmp_path / "a")
    with pytest.raises(RedlineError, match="no preference pair"):
        train_pit(config(gap_run, jsonl([PREFS[-1]], "same.jsonl")), tmp_path / "a")
    with pytest.raises(RedlineError, match="meta.edit"):  # the shipped-style PREFS do not mark their edits
        train_pit(config(gap_run, data, sft_pairs="edits"), tmp_path / "a")
    marked = jsonl([{**p, "meta": {"edit": False}} for p in PREFS], "marked.jsonl")
    with pytest.raises(RedlineError, match="no preference pair .* among --sft-pairs edits"):
        train_pit(config(gap_run, marked, sft_pairs="edits"), tmp_path / "a")
    with pytest.raises(RedlineError, match="prompts have more than 8 tokens"):
        train_pit(config(gap_run, data, max_prompt_length=8), tmp_path / "a")
    assert not (tmp_path / "a").exists()
    with pytest.raises(RedlineError, match="is a reward run, not a PIT policy"):
        pit_policy(rm)


def test_round1_prompts_that_do_not_fit_are_refused_before_round0_trains(gap_run, jsonl, tmp_path):
    from redline.train.ppo import encode_prompt

    data = jsonl(PREFS)
    tok = load_tokenizer("tiny-random")
    longest = max(len(encode_prompt(tok, build_prompt(r))) for r in round0_records([Preference(**p) for p in PREFS]))
    # round 0's prompts fit; BASE's references (tiny-random writes all 40 tokens) make round 1's longer
    with pytest.raises(RedlineError, match=r"round 1 .*references.jsonl.* prompts have more than"):
        train_pit(config(gap_run, data, max_prompt_length=longest + 2, reference_max_new_tokens=40), tmp_path / "run")
    assert (tmp_path / "run" / "references.jsonl").is_file() and not (tmp_path / "run" / "rl-0").exists()


def test_a_torn_or_foreign_manifest_is_refused_naming_it(tmp_path):
    (tmp_path / "pit.json").write_text('{"policy": "rl-')  # a run killed while writing it (before it was atomic)
    with pytest.raises(RedlineError, match=r"pit.json: not a `train pit` manifest .*rerun `redline train pit`"):
        pit_policy(tmp_path)
    (tmp_path / "pit.json").write_text('{"rounds": [0]}')
    with pytest.raises(RedlineError, match=r"pit.json: not a `train pit` manifest \(KeyError"):
        pit_policy(tmp_path)


@pytest.mark.parametrize("flag", ["--sft-batch-size", "--sft-max-length", "--reference-max-new-tokens"])
def test_pit_sizes_below_one_are_refused_at_parse_time(flag, capsys):
    # --sft-batch-size 0 was a ZeroDivisionError inside the Trainer; the reference flags failed only after PIT SFT
    with pytest.raises(SystemExit):
        main(["train", "pit", "--policy", "p", "--data", "d", "--out", "o", flag, "0"])
    assert f"{flag}: must be at least 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["train", "pit", "--policy", "p"], ["train", "sft", "--model", "p"]])
def test_negative_epochs_are_refused_not_trained_as_none(command, capsys):
    with pytest.raises(SystemExit):  # -1 passes over the data trained 0 steps and saved the start as trained
        main(command + ["--data", "d", "--out", "o", "--epochs", "-1"])
    assert "--epochs: must be at least 0.01, got -1" in capsys.readouterr().err


def test_pit_sft_alone_needs_no_gap_model_and_rl_rounds_are_refused_without_one(jsonl, tmp_path):
    data = jsonl(PREFS)
    with pytest.raises(RedlineError, match="--gap-reward is required for RL rounds"):
        train_pit(config("", data, rounds="0"), tmp_path / "a")
    assert not (tmp_path / "a").exists()
    manifest = train_pit(config("", data, rounds="none"), tmp_path / "sft-only")
    assert manifest["policy"] == "sft" and manifest["rounds"] == [] and manifest["gap_reward"] == ""
    assert run_info(tmp_path / "sft-only" / "sft")["kind"] == "pit-sft"


def _other_value(f) -> tuple[list[str], object]:
    """The command-line words that give an RLSettings field a value other than its default, and that value."""
    flag, kind = f.name.replace("_", "-"), str(f.type)
    if kind == "bool":
        return ([f"--no-{flag}"], False) if f.default else ([f"--{flag}"], True)
    choices = {"advantage": "rloo", "dtype": "bfloat16", "device": "cpu", "report_to": "tensorboard",
               "push_to_hub": "org/name"}
    if f.name in choices:
        return [f"--{flag}", choices[f.name]], choices[f.name]
    if "float" in kind:
        return [f"--{flag}", "0.123"], 0.123
    if "int" in kind:
        return [f"--{flag}", "7"], 7
    raise AssertionError(f"no test value for {f.name} ({kind}): teach _other_value about it")


def test_every_rl_setting_is_a_flag_of_both_commands_and_reaches_each_pit_rounds_ppo_config():
    """Walk RLSettings: every field is a flag of `train ppo` and of `train pit`, and a value given to
    `train pit` (not the default) is what its rounds' PPOConfig holds."""
    from dataclasses import fields

    from redline.cli import build_parser
    from redline.config import settings_from_args
    from redline.train.ppo import PPOConfig, RLSettings

    parser = build_parser()
    pit_inputs = ["--out", "o", "--policy", "p", "--gap-reward", "g", "--data", "d"]
    ppo_inputs = ["--out", "o", "--policy", "p", "--reward", "r", "--prompts", "x"]
    names = {f.name for f in fields(RLSettings)}
    assert {"clip_range", "lam", "gamma", "value_clip", "adaptive_kl", "ema_decay", "max_grad_norm", "top_p",
            "whiten_advantages", "advantage", "rloo_k", "temperature", "value_warmup_iterations"} <= names
    for f in fields(RLSettings):
        words, value = _other_value(f)
        assert value != getattr(PITConfig(), f.name), f.name
        pit = settings_from_args(PITConfig, parser.parse_args(["train", "pit", *pit_inputs, *words]))
        assert getattr(pit.ppo_config("start", prompts="x"), f.name) == value, f.name
        if f.name == "push_to_hub":  # only the final round is published, so only its card names the repo
            assert pit.ppo_config("start", prompts="x", final=False).push_to_hub is None
        ppo = settings_from_args(PPOConfig, parser.parse_args(["train", "ppo", *ppo_inputs, *words]))
        assert getattr(ppo, f.name) == value, f.name
    # the rest of a round comes from PIT itself: the gap model is the reward, no pretraining mix
    round_config = PITConfig(gap_reward="g").ppo_config("start", prompts="x")
    assert round_config.reward == "g" and round_config.policy == "start" and round_config.ptx_coef == 0


def test_references_are_reused_only_for_the_same_prompts(tmp_path):
    from redline.records import write_records
    from redline.train.pit import sample_references

    path = tmp_path / "references.jsonl"
    settings = PITConfig(policy="tiny-random", data="d", device="cpu", reference_max_new_tokens=2)
    # a copy from another split: as many prompts (the thirds are equal), not these ones; it was taken for them
    write_records(path, [{"id": f"ref-{i}", "prompt": f"other {i}", "response": "old", "source": "tiny-random"}
                         for i in range(2)])
    rows = sample_references(settings, ["Say a.", "Say b."], path)
    assert [r["prompt"] for r in rows] == ["Say a.", "Say b."]
    assert read_jsonl_prefix(path) == rows  # written in its place
    assert sample_references(settings, ["Say a.", "Say b."], path) == rows  # this run's own file is reused as is


def test_references_another_base_wrote_are_sampled_again(tmp_path):
    """A copy from a run with another --policy (the same prompts, another BASE's answers) was taken as this BASE's."""
    from redline.records import write_records
    from redline.train.pit import sample_references

    path = tmp_path / "references.jsonl"
    settings = PITConfig(policy="tiny-random", data="d", device="cpu", reference_max_new_tokens=2)
    write_records(path, [{"id": f"ref-{i}", "prompt": p, "response": "old", "source": "another-base"}
                         for i, p in enumerate(["Say a.", "Say b."])])
    assert [r["source"] for r in sample_references(settings, ["Say a.", "Say b."], path)] == ["tiny-random"] * 2
    assert [r["source"] for r in read_jsonl_prefix(path)] == ["tiny-random"] * 2


def test_a_round_checkpointed_over_other_processes_is_refused_before_its_models_load(gap_run, jsonl, tmp_path, monkeypatch):
    """As train ppo: a round's checkpoint written by two processes is not resumed on one (whitening, minibatch shares
    and pretraining draws are per process); the refusal came only after the round's three models had loaded."""
    from redline.train import ppo, pit

    stage = tmp_path / "rl-0"
    (stage / "checkpoints" / "iter-000001").mkdir(parents=True)
    (stage / "checkpoints" / "iter-000001" / "state.json").write_text(json.dumps({"iteration": 1, "processes": 2}))

    def loaded(*args, **kwargs):
        raise AssertionError("the models loaded before the check")

    monkeypatch.setattr(ppo, "load_ppo_models", loaded)
    records = [{"prompt": "Say hi.", "reference": "hi", "id": "p0"}]
    with pytest.raises(RedlineError, match="written by a run on 2 processes; this one has 1"):
        pit.run_round(config(gap_run, jsonl(PREFS), iterations=3), "tiny-random", "tiny-random", records, stage,
                      "prefs.jsonl", final=True)


def test_a_pit_run_folder_or_an_empty_one_as_base_is_refused_naming_it(jsonl, tmp_path):
    """A `train pit` folder holds its models in its stages: as --policy (or any command's --model) it met a
    transformers error about sentencepiece and tiktoken instead of one line naming the folder."""
    run = tmp_path / "pit run"
    run.mkdir()
    (run / "pit.json").write_text('{"policy": "rl-0-1"}')
    with pytest.raises(RedlineError, match=r"pit run is a folder that holds no model \(a `train pit` run: its models are its stages"):
        train_pit(PITConfig(policy=str(run), data=jsonl(PREFS), rounds="none"), tmp_path / "a")
    (run / "pit.json").unlink()
    with pytest.raises(RedlineError, match="holds no model .no config.json or adapter_config.json"):
        load_tokenizer(str(run))
    assert not (tmp_path / "a").exists()


def test_split_thirds_refuses_a_gap_model_that_trained_on_pit_s_thirds(gap_run, jsonl, tmp_path):
    """`--split-thirds` promises the gap model's third is its own: a gap run split with another --split-seed (or not
    split) had trained on PIT's SFT and RL prompts, and PIT ran on, its reward scoring prompts it had learnt."""
    import shutil

    from redline.train.gap_reward import read_preferences, split_thirds
    from redline.train.pit import refuse_gap_model_prompts

    data = str(jsonl([{"prompt": f"Question {i}?", "chosen": f"Answer {i}.", "rejected": "no"} for i in range(12)]))
    gap = tmp_path / "gap"
    shutil.copytree(gap_run, gap)
    (gap / "train_config.json").write_text(json.dumps({"data": data, "split_thirds": True, "split_seed": 0, "eval_split": 0.0}))
    with pytest.raises(RedlineError, match=r"--split-seed 1\): \d+ of the PIT SFT and RL prompts were trained on by the gap model"):
        train_pit(config(str(gap), data, split_thirds=True, split_seed=1, rounds="none"), tmp_path / "a")
    assert not (tmp_path / "a").exists()
    sft, _, rl = split_thirds(read_preferences(data), 0)
    refuse_gap_model_prompts(config(str(gap), data, split_thirds=True), sft + rl)  # the same seed: disjoint thirds
    (gap / "train_config.json").write_text(json.dumps({"data": data, "eval_split": 0.0}))  # trained on all of it
    with pytest.raises(RedlineError, match="of the PIT SFT and RL prompts were trained on"):
        refuse_gap_model_prompts(config(str(gap), data, split_thirds=True), sft + rl)


def test_the_manifest_of_a_stage_that_diverged_is_json_with_null_for_its_nan(jsonl, tmp_path, monkeypatch):
    """PIT SFT's final_loss NaN (a run that diverged) went into OUT/pit.json as NaN, which jq and JSON.parse refuse,
    while its card and the printed result hold null."""
    import redline.train.sft as sft

    monkeypatch.setattr(sft, "train_sft", lambda *a, **k: {"final_loss": float("nan"), "steps": 1})
    train_pit(config("", jsonl(PREFS), rounds="none"), tmp_path / "pit")

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    manifest = json.loads((tmp_path / "pit" / "pit.json").read_text(), parse_constant=refuse)
    assert manifest["stages"]["sft"]["final_loss"] is None and manifest["stages"]["sft"]["steps"] == 1


def test_a_rerun_naming_the_base_another_way_leaves_the_manifest_as_it_was(jsonl, tmp_path, monkeypatch):
    """pit.json named BASE and the gap model as typed: a rerun with `--policy ./base` (the same folder) rewrote it,
    which changed RUN's digest, so an `improve --model RUN` begun before refused to resume. Folders are named whole."""
    import redline.train.sft as sft
    from redline.models import load_causal_lm

    monkeypatch.setattr(sft, "train_sft", lambda *a, **k: {"final_loss": 1.0, "steps": 1})
    base, data = save_tiny(tmp_path / "base", "sft", cls=load_causal_lm), jsonl(PREFS)
    train_pit(config("", data, rounds="none", policy=base), tmp_path / "pit")
    before = (tmp_path / "pit" / "pit.json").read_bytes()
    monkeypatch.chdir(tmp_path)
    train_pit(config("", data, rounds="none", policy="./base"), tmp_path / "pit")
    assert (tmp_path / "pit" / "pit.json").read_bytes() == before and json.loads(before)["base"] == base


def test_a_manifest_an_older_redline_wrote_with_the_base_as_typed_is_left_by_a_rerun_of_that_command(jsonl, tmp_path,
                                                                                                     monkeypatch):
    """pit.json now names a local BASE by its absolute path, and an older redline's named it as typed (`base`): the
    same command rerun on a finished run rewrote it, which changed RUN's digest once, so every `improve --model RUN`
    begun before refused to resume. A manifest that names the same folders another way is left as it is."""
    import redline.train.sft as sft
    from redline.models import load_causal_lm

    monkeypatch.setattr(sft, "train_sft", lambda *a, **k: {"final_loss": 1.0, "steps": 1})
    save_tiny(tmp_path / "base", "sft", cls=load_causal_lm)
    data = jsonl(PREFS)
    monkeypatch.chdir(tmp_path)
    train_pit(config("", data, rounds="none", policy="base"), tmp_path / "pit")
    older = json.loads((tmp_path / "pit" / "pit.json").read_text())
    (tmp_path / "pit" / "pit.json").write_text(json.dumps({**older, "base": "base"}, indent=2) + "\n")
    before = (tmp_path / "pit" / "pit.json").read_bytes()
    train_pit(config("", data, rounds="none", policy="base"), tmp_path / "pit")
    assert (tmp_path / "pit" / "pit.json").read_bytes() == before
    save_tiny(tmp_path / "other", "sft", cls=load_causal_lm)  # another base: named, whole
    train_pit(config("", data, rounds="none", policy="other"), tmp_path / "pit")
    assert json.loads((tmp_path / "pit" / "pit.json").read_text())["base"] == str(tmp_path / "other")
