"""redline used as a library: the documented functions called from Python, with configs built in Python (no
flags, no config file), refuse what the command line refuses, in one line, before anything loads or is written."""

import re

import pytest

from redline import RedlineError


def _configs():
    from redline.improve.revise import ReviseConfig, revise
    from redline.respond import GenerateConfig, generate_responses
    from redline.train.critic import CriticConfig, train_critic
    from redline.train.reward import RewardConfig, train_reward
    from redline.train.sft import DemonstrationConfig, train_demonstrations

    return [
        (lambda out: train_demonstrations(DemonstrationConfig(model="tiny-random"), out), "--data is required"),
        (lambda out: train_reward(RewardConfig(model="tiny-random"), out), "--data is required"),
        (lambda out: train_critic(CriticConfig(model="tiny-random"), out), "--data is required"),
        (lambda out: generate_responses(GenerateConfig(model="tiny-random"), out / "r.jsonl"), "--prompts is required"),
        (lambda out: revise(ReviseConfig(critic="tiny-random"), out), "--input is required"),
    ]


@pytest.mark.parametrize("case", range(5))
def test_a_config_built_in_python_without_its_required_input_names_the_field_before_anything_is_written(
        case, tmp_path, monkeypatch):
    import redline.models

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(redline.models, "load_causal_lm", no_loading)
    monkeypatch.setattr(redline.models, "load_reward_model", no_loading)
    call, message = _configs()[case]
    with pytest.raises(RedlineError, match=message):
        call(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_revise_without_a_critic_or_an_engine_names_the_field(tmp_path, jsonl):
    from redline.improve.revise import ReviseConfig, revise

    responses = jsonl([{"id": "1", "prompt": "p", "response": "r"}])
    with pytest.raises(RedlineError, match="--critic is required"):
        revise(ReviseConfig(input=str(responses)), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_critic_trained_on_records_passed_in_needs_no_data_file(tmp_path, monkeypatch):
    """``train_critic(config, out, records=...)`` reads no file, so ``data`` may be left empty."""
    from redline.records import Feedback
    from redline.train import critic

    seen = {}
    monkeypatch.setattr(critic, "train_sft", lambda examples, *args, **kwargs: seen.setdefault("n", len(examples)))
    records = [Feedback(prompt="p", response="R", critique="Use lowercase.", revision="r")]
    assert critic.train_critic(critic.CriticConfig(model="tiny-random"), tmp_path / "out", records=records) == 1


@pytest.fixture(scope="module")
def tiny_engine(one_thread):
    from redline.generation import load_engine

    return load_engine("tiny-random", device="cpu")


@pytest.mark.parametrize("prompts, message", [("Once upon a time", "got one string"),
                                              ([{"role": "user", "content": "Hi"}], "got a message alone")])
def test_generate_refuses_one_prompt_not_in_a_list(prompts, message, tiny_engine):
    """One string was four completions for "abcd", one per character; one chat's messages were prompts of their own
    (transformers' "Chat messages should be dicts ..., but got 'role'")."""
    from redline.generation import SamplingParams, ScriptedEngine

    params = SamplingParams(temperature=0, max_new_tokens=2)
    for engine in (ScriptedEngine(lambda prompt, seed: "x"), tiny_engine):
        with pytest.raises(TypeError, match=message):
            engine.generate(prompts, params)
        assert len(engine.generate([prompts], params)) == 1  # the same prompt in a list is one completion


def _trainers():
    from redline.train.dpo import DPOSettings, train_dpo
    from redline.train.gap_reward import GapRewardConfig, train_gap_reward
    from redline.train.reward import RewardConfig, train_reward
    from redline.train.sft import DemonstrationConfig, train_demonstrations

    return [(train_demonstrations, DemonstrationConfig, "demonstration"), (train_reward, RewardConfig, "preference"),
            (train_dpo, DPOSettings, "preference"), (train_gap_reward, GapRewardConfig, "preference")]


RECORDS = {"demonstration": {"prompt": "p", "response": "r"},
           "preference": {"prompt": "p", "chosen": "good", "rejected": "bad"}}


@pytest.mark.parametrize("case", range(4))
def test_an_unknown_lr_scheduler_is_refused_before_the_model_loads(case, jsonl, tmp_path, monkeypatch):
    """transformers refused it as the trainer's arguments were built, once the model had loaded."""
    import redline.models

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(redline.models, "load_causal_lm", no_loading)
    monkeypatch.setattr(redline.models, "load_reward_model", no_loading)
    train, config, kind = _trainers()[case]
    data = jsonl([{**RECORDS[kind], "prompt": f"p{i}"} for i in range(6)])
    with pytest.raises(RedlineError, match="--lr-scheduler 'cosin' is not one of transformers' schedulers: linear, cosine"):
        train(config(model="tiny-random", data=str(data), lr_scheduler="cosin", max_steps=1), tmp_path / "out")


@pytest.mark.parametrize("reward, shape", [(lambda p, r, rec: [1.0], "(1,)"),
                                           (lambda p, r, rec: [[1.0]] * len(r), "(3, 1)")])
def test_a_reward_function_that_does_not_give_one_score_a_response_is_named(reward, shape):
    """``run_ppo``'s ``reward_fn`` is a caller's: a score short was an IndexError deep in the advantages."""
    from types import SimpleNamespace

    from redline.train.ppo import score

    samples = SimpleNamespace(prompts=[[{"role": "user", "content": "p"}]] * 3, texts=["a", "b", "c"],
                              records=[{}] * 3, truncated=[False] * 3)
    assert score(lambda p, r, rec: [0.5] * len(r), samples, "cpu").tolist() == [0.5] * 3
    with pytest.raises(RedlineError, match=re.escape(f"scores of shape {shape} for 3 responses")):
        score(reward, samples, "cpu")


def test_run_ppo_without_prompts_says_so(tmp_path):
    """It was a ZeroDivisionError drawing the first iteration's prompts, after the models had loaded."""
    from redline.train.ppo import PPOConfig, run_ppo

    config = PPOConfig(policy="tiny-random", reward="rm", prompts="-", device="cpu")
    with pytest.raises(RedlineError, match="no prompt records"):
        run_ppo(config, None, [], lambda p, r, rec: [0.0] * len(r), lambda record: [], tmp_path / "run")
