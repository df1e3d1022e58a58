"""PPO-ptx on tiny-random: a run trains and logs, resume equals an uninterrupted run to the bit, the
pretraining mix is computed (and off at γ = 0), the shared reference is the SFT policy, RLOO trains
without a value model, the value warm-up holds the policy, bad input is refused."""

import json
import shutil
from pathlib import Path

import redline.models

import pytest
import torch
from safetensors.torch import load_file

from redline import RedlineError
from redline.cli import main
from redline.models import ModelCard, load_causal_lm, load_reward_model, load_tokenizer, save_model
from redline.train.ppo import (
    PPOConfig,
    Rollout,
    fit_prompts,
    instructgpt_reward,
    load_ppo_models,
    response_logits,
    run_ppo,
    stream_indices,
    _gradient_parts,
    trainable,
)
from redline.train.sft import as_chat

LOG_FIELDS = {
    "iteration", "episodes", "reward", "reward_std", "kl", "kl_k3", "non_score_reward", "entropy", "response_length",
    "truncated", "value_mean", "return_mean", "policy_loss", "clipfrac", "approx_kl", "value_loss", "value_clipfrac",
    "ptx_loss", "grad_norm", "policy_grad_norm", "ptx_grad_norm", "grad_cosine", "beta", "lr", "generate_s", "score_s",
    "evaluate_s", "train_s",
}
SPLIT = {"ptx_loss", "policy_grad_norm", "ptx_grad_norm", "grad_cosine"}  # measured only with a pretraining mix
PROMPTS = [{"prompt": f"Write a sentence about topic {i}.", "id": str(i)} for i in range(8)]
PTX = [{"text": f"Topic {i} is a fine thing to write about, and here is why."} for i in range(8)]


pytestmark = pytest.mark.usefixtures("one_thread")


def count_e(prompts, responses, records):
    """A scripted reward: how often the letter e appears in the response."""
    return [float(r.count("e")) for r in responses]


@pytest.fixture(scope="module")
def rm_run(tmp_path_factory):
    """A reward-model run folder: tiny-random with a (random) score head, as `train reward` saves it."""
    run = tmp_path_factory.mktemp("rm") / "rm"
    save_model(load_reward_model("tiny-random", device="cpu"), load_tokenizer("tiny-random"), run,
               ModelCard(kind="reward", base_model="tiny-random"))
    return run


def config(rm_run, **changes) -> PPOConfig:
    settings = dict(policy="tiny-random", reward=str(rm_run), prompts="-", device="cpu", iterations=2, batch_size=4,
                    minibatch_size=2, micro_batch_size=2, max_new_tokens=8, warmup_iterations=1, learning_rate=1e-3,
                    value_learning_rate=1e-3, save_every=1, lora_r=4, ppo_epochs=1, value_warmup_iterations=0)
    settings.update(changes)
    return PPOConfig(**settings)


def ppo(cfg: PPOConfig, out, ptx=None):
    return run_ppo(cfg, load_ppo_models(cfg, "cpu"), PROMPTS, count_e, lambda r: as_chat(r["prompt"]), out, ptx)


def log(run):
    return [json.loads(line) for line in (run / "ppo_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def straight(rm_run, tmp_path_factory):
    """Two iterations in one go (checkpoints after each)."""
    run = tmp_path_factory.mktemp("straight") / "run"
    ppo(config(rm_run), run)
    return run


def test_two_iterations_train_log_every_field_and_save_a_loadable_policy(straight, rm_run):
    rows = log(straight)
    assert [r["iteration"] for r in rows] == [1, 2]
    for row in rows:
        assert set(row) == LOG_FIELDS
        assert all(row[k] is not None for k in LOG_FIELDS - SPLIT) and all(row[k] is None for k in SPLIT)
        assert row["grad_norm"] > 0
        assert 1 <= row["response_length"] <= 8 and row["beta"] == 0.02 and row["entropy"] > 0
    assert abs(rows[0]["kl"]) <= 1e-5  # LoRA starts as the identity: the first rollout is the SFT policy's (to ~1e-6)
    assert rows[1]["kl"] != 0  # ... and the update moved it
    # The trained adapter is no longer the fresh one (LoRA B starts at zero).
    adapter = load_file(str(straight / "adapter_model.safetensors"))
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in adapter.items())
    assert (straight / "ppo_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    info = json.loads((straight / "redline.json").read_text())
    assert info["kind"] == "ppo" and info["base_model"] == "tiny-random" and info["adapter"]
    assert info["metrics"]["iterations"] == 2 and info["metrics"]["episodes"] == 8
    saved = json.loads((straight / "train_config.json").read_text())
    assert saved["iterations"] == 2 and saved["beta"] == 0.02
    # load_causal_lm and the engine load the result; the value model loads as a reward model.
    from redline.generation import SamplingParams, load_engine

    assert load_causal_lm(str(straight), device="cpu") is not None
    engine = load_engine(str(straight), device="cpu")
    assert engine.generate(["hi"], SamplingParams(max_new_tokens=3), progress=False)[0].completion_tokens >= 1
    assert load_reward_model(str(straight / "value"), device="cpu").config.num_labels == 1


def test_resume_continues_as_if_never_stopped(straight, rm_run, tmp_path, capsys):
    run = tmp_path / "run"
    ppo(config(rm_run, iterations=1), run)  # stopped after one iteration ...
    first = log(run)[0]  # its timings too: a run started over would log iteration 1 again, in other seconds
    capsys.readouterr()
    ppo(config(rm_run, iterations=2), run)  # ... and started again: resumes from iter-000001
    assert f"resuming from {run / 'checkpoints' / 'iter-000001'} (iteration 1)" in capsys.readouterr().err
    assert log(run)[0] == first
    a = load_file(str(straight / "adapter_model.safetensors"))
    b = load_file(str(run / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)  # bitwise: the same rollouts, minibatches and Adam states
    value_a = load_file(str(straight / "value" / "adapter_model.safetensors"))
    value_b = load_file(str(run / "value" / "adapter_model.safetensors"))
    assert all(torch.equal(value_a[k], value_b[k]) for k in value_a)
    timings = ("generate_s", "score_s", "evaluate_s", "train_s")
    assert [{k: v for k, v in r.items() if k not in timings} for r in log(run)] == \
        [{k: v for k, v in r.items() if k not in timings} for r in log(straight)]
    responses = [(json.loads(line)["iteration"], json.loads(line)["response"]) for line in (run / "rollouts.jsonl").open()]
    assert responses == [(json.loads(line)["iteration"], json.loads(line)["response"]) for line in (straight / "rollouts.jsonl").open()]
    assert len(responses) == 2 * 4
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["iter-000001", "iter-000002"]


def test_a_checkpoint_resumes_only_over_the_number_of_processes_that_wrote_it(rm_run, tmp_path):
    """Whitening, minibatch shares and pretraining draws are per process: a checkpoint of a run on 2 processes resumed
    on 1 went on with other maths, silently. A checkpoint that does not say (an older redline's) resumes as before."""
    from redline.train.ppo import check_resume_processes

    run = tmp_path / "run"
    ppo(config(rm_run, iterations=1), run)
    state_file = run / "checkpoints" / "iter-000001" / "state.json"
    assert json.loads(state_file.read_text())["processes"] == 1
    check_resume_processes(run, 1)
    state_file.write_text(json.dumps({**json.loads(state_file.read_text()), "processes": 2}))
    with pytest.raises(RedlineError, match="written by a run on 2 processes; this one has 1"):
        check_resume_processes(run, 1)
    with pytest.raises(RedlineError, match="written by a run on 2 processes"):
        ppo(config(rm_run, iterations=2), run)
    assert [r["iteration"] for r in log(run)] == [1]  # refused before it logged or trained anything
    older = {k: v for k, v in json.loads(state_file.read_text()).items() if k != "processes"}
    state_file.write_text(json.dumps(older))
    ppo(config(rm_run, iterations=2), run)
    assert [r["iteration"] for r in log(run)] == [1, 2]
    # past the iterations asked for: it saved the policy as it stood at 2 as if at 1, without a word
    with pytest.raises(RedlineError, match=r"is at iteration 2, past --iterations 1: .* Give --iterations 2 or more"):
        ppo(config(rm_run, iterations=1), run)
    ppo(config(rm_run, iterations=2), run)  # a finished run rerun as it was: nothing to train, no error


def test_a_checkpoint_of_several_processes_copied_and_finished_at_its_iteration_saves_its_policy(rm_run, tmp_path):
    """scripts/instructgpt_ppo_aug.sh judges a run at iteration N by copying its iteration-N checkpoint into a folder
    and finishing it with --iterations N on one process: nothing is left to train, so the number of processes that
    wrote it does not matter (it was refused, and a run made with PROCS=2 was judged at none of its JUDGE_AT)."""
    run, copy = tmp_path / "run", tmp_path / "copy"
    ppo(config(rm_run, iterations=1), run)
    (copy / "checkpoints").mkdir(parents=True)
    shutil.copytree(run / "checkpoints" / "iter-000001", copy / "checkpoints" / "iter-000001")
    for kept in [*run.glob("*.jsonl"), *run.glob("*.json")]:  # its settings and logs, as the script's copy_at
        if kept.name != "redline.json":
            shutil.copy(kept, copy)
    state_file = copy / "checkpoints" / "iter-000001" / "state.json"
    state_file.write_text(json.dumps({**json.loads(state_file.read_text()), "processes": 2}))
    ppo(config(rm_run, iterations=1), copy)
    assert json.loads((copy / "redline.json").read_text())["kind"] == "ppo"
    with pytest.raises(RedlineError, match="written by a run on 2 processes"):  # with iterations left, refused
        ppo(config(rm_run, iterations=2), copy)


@pytest.mark.parametrize("lost", ["iter-000002", "."])
def test_a_resumed_run_logs_each_iteration_to_tensorboard_once(rm_run, tmp_path, lost):
    """Stopped after logging iteration 2 but before its checkpoint, a run resumes from iteration 1 and logs iteration 2
    again: TensorBoard showed that step twice (both event files read) until the resumed run purged it. Stopped before
    its first checkpoint (``.``: none kept), it starts over and logs both again: purged as well."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    ppo(config(rm_run, report_to="tensorboard"), run)
    shutil.rmtree(run / "checkpoints" / lost)  # killed between logging an iteration and saving it
    ppo(config(rm_run, report_to="tensorboard"), run)
    events = EventAccumulator(str(run / "redline-ppo"))  # both runs' event files (the settings in folders below)
    events.Reload()
    assert [e.step for e in events.Scalars("reward")] == [1, 2]
    assert events.Scalars("reward")[1].value == pytest.approx(log(run)[1]["reward"])  # the resumed run's, not the first's


def test_ptx_loss_is_computed_and_coefficient_zero_disables_it(straight, rm_run, tmp_path):
    texts = [r["text"] for r in PTX]
    ppo(config(rm_run, iterations=1, ptx_coef=0.0), tmp_path / "off", texts)
    ppo(config(rm_run, iterations=1, ptx_coef=1.0, ptx_ratio=2.0), tmp_path / "on", texts)
    plain = load_file(str(straight / "checkpoints" / "iter-000001" / "policy.safetensors"))
    off = load_file(str(tmp_path / "off" / "checkpoints" / "iter-000001" / "policy.safetensors"))
    on = load_file(str(tmp_path / "on" / "checkpoints" / "iter-000001" / "policy.safetensors"))
    assert all(torch.equal(plain[k], off[k]) for k in plain)  # γ = 0 is plain PPO, to the bit
    assert not all(torch.allclose(plain[k], on[k]) for k in plain)
    assert log(tmp_path / "off")[0]["ptx_loss"] is None
    assert log(tmp_path / "on")[0]["ptx_loss"] > 1.0  # a random model's LM loss is near log(49152) ≈ 10.8
    on_row = log(tmp_path / "on")[0]
    assert on_row["policy_grad_norm"] > 0 and on_row["ptx_grad_norm"] > 0 and -1 <= on_row["grad_cosine"] <= 1
    # γ = 0 is plain PPO in its logged gradient norm too
    assert log(tmp_path / "off")[0]["grad_norm"] == log(straight)[0]["grad_norm"]


def test_gradient_parts_are_the_norms_of_each_part_and_their_cosine():
    first = [torch.tensor([3.0, 0.0]), torch.tensor([0.0])]
    assert _gradient_parts(first, [torch.tensor([3.0, 4.0]), torch.tensor([0.0])]) == (3.0, 4.0, 0.0)  # orthogonal
    a, b, cos = _gradient_parts(first, [torch.tensor([1.0, 0.0]), torch.tensor([0.0])])  # the rest: (−2, 0)
    assert (a, b) == (3.0, 2.0) and cos == pytest.approx(-1.0)  # pulling straight against the first
    assert _gradient_parts(first, first)[1:] == (0.0, 0.0)  # no second part: no cosine


def test_shared_reference_is_the_sft_policy_and_shared_reward_is_the_reward_model(rm_run):
    cfg = config(rm_run)
    models = load_ppo_models(cfg, "cpu")
    policy, value, tokenizer = models.policy, models.value, models.tokenizer
    assert models.shared_reference and models.reference is None and models.reward_model is None  # no second copies
    assert models.scorer() == (value, True)  # the reward model is the value model with its adapter off
    with torch.no_grad():
        for p in list(trainable(policy).values()) + list(trainable(value).values()):
            p.add_(0.05)  # an adapter that changes the outputs
    q = torch.tensor([[0, 5, 6, 7]])
    r = torch.tensor([[8, 9, 10]])
    qm, rm = torch.tensor([[0, 1, 1, 1]]), torch.ones(1, 3, dtype=torch.long)
    base = load_causal_lm("tiny-random", device="cpu")
    with torch.no_grad():
        expected = response_logits(base, q, qm, r, rm)
        with policy.disable_adapter():
            shared = response_logits(policy, q, qm, r, rm)
        adapted = response_logits(policy, q, qm, r, rm)
    assert torch.allclose(shared, expected, atol=1e-5)
    assert not torch.allclose(adapted, expected, atol=1e-3)
    # The reward function on the value model with its adapter off scores as the reward model does.
    prompts, responses = [as_chat("a question")], ["an answer"]
    shared_scores = instructgpt_reward(value, tokenizer, adapter_off=True)(prompts, responses, [{}])
    rm_scores = instructgpt_reward(load_reward_model(str(rm_run), device="cpu"), tokenizer)(prompts, responses, [{}])
    assert shared_scores == pytest.approx(rm_scores, abs=1e-5)
    # Without sharing, frozen copies are loaded.
    models = load_ppo_models(config(rm_run, shared_reference=False), "cpu")
    assert not models.shared_reference and not any(p.requires_grad for p in models.reference.parameters())
    assert models.reward_model is not None and models.scorer() == (models.reward_model, False)
    # RLOO trains no value model: the reward model is loaded frozen, and the oracle needs none.
    models = load_ppo_models(config(rm_run, advantage="rloo"), "cpu")
    assert models.value is None and models.scorer()[1] is False
    assert not any(p.requires_grad for p in models.reward_model.parameters())
    assert load_ppo_models(config(rm_run, advantage="rloo", score="oracle"), "cpu").reward_model is None


def test_cli_end_to_end_with_separate_reference_and_ptx(rm_run, jsonl, tmp_path, capsys):
    prompts = jsonl(PROMPTS, "prompts.jsonl")
    ptx = jsonl([{"prompt": "Say hi.", "response": "Hi there."}, *PTX], "ptx.jsonl")
    run = tmp_path / "ppo"
    assert main(["train", "ppo", "--policy", "tiny-random", "--reward", str(rm_run), "--prompts", str(prompts),
                 "--out", str(run), "--device", "cpu", "--iterations", "1", "--batch-size", "2",
                 "--minibatch-size", "2", "--micro-batch-size", "1", "--max-new-tokens", "4", "--lora-r", "4",
                 "--no-shared-reference", "--ptx-data", str(ptx), "--ptx-coef", "0.5", "--adaptive-kl",
                 "--kl-horizon", "10", "--value-warmup-iterations", "0",
                 "--push-to-hub", str(tmp_path / "published")]) == 0
    row = log(run)[0]
    assert row["ptx_loss"] > 0 and row["response_length"] <= 4
    # the separate reference is a second copy of the policy it started from: no KL before the first update
    assert row["kl"] == pytest.approx(0, abs=1e-4)
    info = json.loads((run / "redline.json").read_text())
    # --adaptive-kl moved β: KL 0 against a target of 6 shrinks it by 0.2 · 2 episodes / a horizon of 10
    assert info["metrics"]["beta"] == pytest.approx(0.02 * (1 - 0.2 * 2 / 10))
    assert info["kind"] == "ppo" and str(ptx) in info["data"]
    assert json.loads((run / "train_config.json").read_text())["shared_reference"] is False
    # --push-to-hub (a local folder here): the final policy, less its checkpoints, its card naming where it went
    published = tmp_path / "published"
    assert (run / "checkpoints").is_dir() and not (published / "checkpoints").exists()
    assert json.loads((published / "redline.json").read_text()) == info
    assert f'from_pretrained("{published}")' in (published / "README.md").read_text()
    assert load_causal_lm(str(published), device="cpu") is not None


def one_iteration_args(rm_run, prompts, run) -> list[str]:
    """`train ppo` of one tiny iteration (the finished-run tests' command)."""
    return ["train", "ppo", "--policy", "tiny-random", "--reward", str(rm_run), "--prompts", str(prompts),
            "--out", str(run), "--device", "cpu", "--iterations", "1", "--batch-size", "2", "--minibatch-size", "2",
            "--micro-batch-size", "2", "--max-new-tokens", "4", "--lora-r", "4", "--threads", "1"]


def test_a_finished_run_rerun_with_its_settings_is_left_as_it_is(rm_run, jsonl, tmp_path, capsys, monkeypatch):
    """A finished run rerun with its command resumed from its last checkpoint, trained nothing and saved the policy
    again: PEFT writes adapter_config.json's target modules in hash order, so the folder's digest changed and every
    run that read the policy refused to resume. It says the run is finished and writes nothing; more --iterations
    go on."""
    import redline.train.ppo

    prompts = jsonl(PROMPTS, "prompts.jsonl")
    run = tmp_path / "ppo"
    args = one_iteration_args(rm_run, prompts, run)
    assert main(args) == 0
    files = lambda: {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.rglob("*") if p.is_file()}
    before = files()
    capsys.readouterr()
    assert main(args) == 0
    assert files() == before
    printed = capsys.readouterr()
    assert f"redline: {run} is finished; nothing to train" in printed.err
    assert json.loads(printed.out) == json.loads((run / "redline.json").read_text())["metrics"]

    def loaded(*a, **k):
        raise RuntimeError("went on to train")

    monkeypatch.setattr(redline.train.ppo, "load_ppo_models", loaded)
    with pytest.raises(RuntimeError, match="went on to train"):
        main([*args, "--iterations", "2"])


def test_a_finished_run_gone_on_past_its_card_is_not_taken_for_finished(rm_run, jsonl, tmp_path, capsys):
    """Finished at 1, gone on to 2 and stopped before its card: rerun with --iterations 1 it was 'finished' while its
    folder held iteration 2's checkpoint and log rows; it is refused as any run past --iterations is."""
    import shutil

    prompts = jsonl(PROMPTS, "prompts.jsonl")
    run = tmp_path / "ppo"
    args = one_iteration_args(rm_run, prompts, run)
    assert main(args) == 0
    card = (run / "redline.json").read_bytes()
    assert main([*args, "--iterations", "2"]) == 0
    (run / "redline.json").write_bytes(card)  # as if killed after iteration 2's checkpoint, before its card
    capsys.readouterr()
    assert main(args) != 0
    assert "is at iteration 2, past --iterations 1" in capsys.readouterr().err


@pytest.mark.parametrize("kind, message", [("sft", "is a sft run"),
                                           ("gap-reward", "is a gap-reward model: it scores a response against a "
                                                          "reference, r_gap(x, y, y_ref); --reward wants")])
def test_wrong_reward_model_kind_is_refused_before_training(kind, message, jsonl, tmp_path, capsys):
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "redline.json").write_text(json.dumps({"kind": kind, "base_model": "tiny-random"}))
    prompts = jsonl(PROMPTS, "prompts.jsonl")
    args = ["train", "ppo", "--policy", "tiny-random", "--prompts", str(prompts), "--out", str(tmp_path / "run")]
    assert main(args + ["--reward", str(wrong)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert main(args + ["--reward", "tiny-random"]) == 2  # a causal LM with no run card
    assert "is not a reward model" in capsys.readouterr().err


def test_long_prompts_are_refused_with_a_count_or_cut_and_counted():
    tok = load_tokenizer("tiny-random")
    prompts = [as_chat("short"), as_chat("word " * 300), as_chat("another " * 300 + "question?")]
    with pytest.raises(RedlineError, match="2 of 3 prompts have more than 64 tokens"):
        fit_prompts(tok, prompts, 64, truncate=False)
    fitted, cut = fit_prompts(tok, prompts, 64, truncate=True)
    assert cut == 2 and fitted[0] == prompts[0]
    from redline.train.ppo import encode_prompt

    assert all(len(encode_prompt(tok, p)) <= 64 for p in fitted)
    assert fitted[2][0]["content"].endswith("question?")  # the end of the message is kept


def test_stream_indices_cover_every_item_once_per_pass_and_depend_only_on_position():
    first_pass = stream_indices(5, 0, 5, seed=3)
    assert sorted(first_pass) == list(range(5))
    assert stream_indices(5, 2, 6, seed=3) == first_pass[2:] + stream_indices(5, 5, 3, seed=3)
    assert sorted(stream_indices(5, 5, 5, seed=3)) == list(range(5))


def test_rollout_select_takes_rows_of_every_field():
    b, a = 3, 2
    t = torch.arange(b * a).view(b, a)
    r = Rollout(query_ids=t, query_mask=t, response_ids=t, response_mask=t, logprobs=t.float(), ref_logprobs=t.float(),
                values=t.float(), scores=torch.arange(b).float(), rewards=t.float(), advantages=t.float(), returns=t.float())
    part = r.select(torch.tensor([2, 0]))
    assert part.scores.tolist() == [2.0, 0.0] and part.response_ids.tolist() == [[4, 5], [0, 1]]
    r.values = r.returns = None  # RLOO: no value model
    part = r.select(torch.tensor([1]))
    assert part.values is None and part.returns is None and part.advantages.tolist() == [[2.0, 3.0]]


def test_ema_weights_are_the_saved_policy(rm_run, tmp_path):
    run = tmp_path / "run"
    ppo(config(rm_run, iterations=1, ema_decay=0.5), run)
    saved = load_file(str(run / "adapter_model.safetensors"))
    ema = load_file(str(run / "checkpoints" / "iter-000001" / "ema.safetensors"))
    live = load_file(str(run / "checkpoints" / "iter-000001" / "policy.safetensors"))
    assert all(torch.equal(saved[k.replace(".default", "")], v) for k, v in ema.items())
    assert not all(torch.equal(live[k], ema[k]) for k in ema)  # two Adam steps, half-way each: behind the live weights


@pytest.mark.parametrize("lora", [True, False])
def test_an_sft_run_that_is_a_lora_adapter_is_the_reference_and_the_base_of_the_result(rm_run, tmp_path, lora):
    from redline.models import LoraSettings, add_lora

    torch.manual_seed(1)
    sft = add_lora(load_causal_lm("tiny-random", device="cpu"), LoraSettings(r=4))
    with torch.no_grad():
        for p in trainable(sft).values():
            p.add_(0.05)  # an SFT adapter that is not the identity
    save_model(sft, load_tokenizer("tiny-random"), tmp_path / "sft", ModelCard(kind="sft", base_model="tiny-random"))
    run = tmp_path / "run"
    ppo(config(rm_run, policy=str(tmp_path / "sft"), iterations=1, lora=lora), run)
    assert log(run)[0]["kl"] == pytest.approx(0, abs=1e-5)  # the first rollout is the SFT policy, and so is the reference
    info = json.loads((run / "redline.json").read_text())
    assert info["base_model"] == "tiny-random" and not info["adapter"]  # merged: an adapter cannot sit on an adapter
    assert load_causal_lm(str(run), device="cpu").config.num_hidden_layers == 2


def test_oracle_score_rewards_each_rollout_with_its_oracle_quality(rm_run, jsonl, tmp_path):
    from redline.simulate.oracle import quality

    meta = {"topic": "tea", "instructions": [{"type": "uppercase"}, {"type": "keyword_include", "keywords": ["tea"]}]}
    prompts = jsonl([{**p, "meta": meta} for p in PROMPTS], "prompts.jsonl")
    run = tmp_path / "ppo"
    assert main(["train", "ppo", "--policy", "tiny-random", "--reward", str(rm_run), "--prompts", str(prompts),
                 "--out", str(run), "--device", "cpu", "--iterations", "1", "--batch-size", "4", "--minibatch-size", "2",
                 "--micro-batch-size", "2", "--max-new-tokens", "6", "--lora-r", "4", "--score", "oracle"]) == 0
    rollouts = [json.loads(line) for line in (run / "rollouts.jsonl").read_text().splitlines()]
    assert len(rollouts) == 4
    for row in rollouts:
        assert row["score"] == pytest.approx(quality(meta, row["response"], row["prompt"][-1]["content"]), abs=1e-5)
    assert log(run)[0]["reward"] == pytest.approx(sum(r["score"] for r in rollouts) / 4, abs=1e-5)
    assert json.loads((run / "train_config.json").read_text())["score"] == "oracle"


def test_oracle_score_refuses_prompts_without_instructions_before_loading(rm_run, jsonl, tmp_path, capsys):
    prompts = jsonl(PROMPTS, "prompts.jsonl")
    assert main(["train", "ppo", "--policy", "tiny-random", "--reward", str(rm_run), "--prompts", str(prompts),
                 "--out", str(tmp_path / "run"), "--score", "oracle"]) == 2
    assert "--score oracle needs meta.instructions" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_rloo_samples_k_per_prompt_changes_the_adapter_logs_kl_and_resumes_exactly(rm_run, tmp_path, capsys):
    run = tmp_path / "rloo"
    ppo(config(rm_run, advantage="rloo", rloo_k=2), run)  # 4 episodes: 2 prompts × 2 samples
    rows = log(run)
    assert [r["iteration"] for r in rows] == [1, 2]
    # the first update moved the policy away from SFT; at the first, π_old is the sampler's log-probabilities, equal to
    # the reference's forward pass to ~1e-6 (an AVX2 CPU logged -1e-06 where an AVX-512 one logged 0)
    assert abs(rows[0]["kl"]) <= 1e-5 and abs(rows[1]["kl"]) > 1e-5
    assert all(r["value_loss"] is None and r["value_mean"] is None and r["policy_loss"] is not None for r in rows)
    rollouts = [json.loads(line) for line in (run / "rollouts.jsonl").read_text().splitlines()]
    for it in (1, 2):
        prompts = [r["prompt"][-1]["content"] for r in rollouts if r["iteration"] == it]
        assert len(prompts) == 4 and prompts[0] == prompts[1] and prompts[2] == prompts[3] and prompts[0] != prompts[2]
    # each episode says whether it ran into the cap (8 new tokens); one that did holds all 8
    assert all(isinstance(r["truncated"], bool) and (r["tokens"] == 8 or not r["truncated"]) for r in rollouts)
    adapter = load_file(str(run / "adapter_model.safetensors"))
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in adapter.items())
    assert not (run / "value").exists() and not (run / "checkpoints" / "iter-000001" / "value.safetensors").exists()
    assert "RLOO" in json.loads((run / "redline.json").read_text())["notes"]
    # Stopped after one iteration and started again: the same weights, to the bit.
    again = tmp_path / "again"
    ppo(config(rm_run, advantage="rloo", rloo_k=2, iterations=1), again)
    capsys.readouterr()
    ppo(config(rm_run, advantage="rloo", rloo_k=2), again)
    assert "(iteration 1)" in capsys.readouterr().err  # resumed, not started over
    b = load_file(str(again / "adapter_model.safetensors"))
    assert all(torch.equal(adapter[k], b[k]) for k in adapter)


def test_rloo_takes_a_reward_model_of_another_vocabulary_and_gae_refuses_it(tmp_path):
    """RLOO trains no value model, and its reward model reads each text in its own tokens: a reward model whose
    vocabulary differs from the policy's was refused with a message about per-token values there are none of."""
    tokenizer = load_tokenizer("tiny-random")
    tokenizer.add_tokens(["<an-extra-reward-token>"])
    model = load_reward_model("tiny-random", device="cpu")
    model.resize_token_embeddings(len(tokenizer))
    run = tmp_path / "rm"
    save_model(model, tokenizer, run, ModelCard(kind="reward", base_model="tiny-random"))
    models = load_ppo_models(config(run, advantage="rloo", rloo_k=2), "cpu")
    assert models.value is None and models.reward_model is not None
    assert len(models.scorer_tokenizer) == len(models.tokenizer) + 1
    reward_fn = instructgpt_reward(models.reward_model, models.scorer_tokenizer)
    assert len(reward_fn([as_chat("Say hi.")], ["Hi <an-extra-reward-token>"], [{}])) == 1
    with pytest.raises(RedlineError, match="per-token values need the policy's tokens"):
        load_ppo_models(config(run), "cpu")


def test_value_warmup_trains_the_value_model_and_holds_the_policy(rm_run, tmp_path):
    run = tmp_path / "run"
    ppo(config(rm_run, iterations=1, value_warmup_iterations=1), run)
    row = log(run)[0]
    assert row["policy_loss"] is None and row["value_loss"] is not None and row["lr"] == 0
    policy = load_file(str(run / "checkpoints" / "iter-000001" / "policy.safetensors"))
    assert all(v.abs().sum() == 0 for k, v in policy.items() if "lora_B" in k)  # LoRA B starts at zero and stayed
    value = load_file(str(run / "checkpoints" / "iter-000001" / "value.safetensors"))
    assert any(v.abs().sum() > 0 for k, v in value.items() if "lora_B" in k)


@pytest.mark.parametrize("flags, message", [
    (["--advantage", "rloo", "--rloo-k", "1"], "needs at least 2 samples per prompt"),
    (["--advantage", "rloo", "--rloo-k", "3", "--batch-size", "4"], "not a multiple of --rloo-k 3"),
    (["--lam", "1.5"], "--lam and --gamma must be in [0, 1]"),
    # each of these loaded the models and failed at the first rollout, or after a whole iteration
    (["--top-p", "0"], "--top-p must be in (0, 1]"),
    (["--adaptive-kl", "--kl-horizon", "0"], "--adaptive-kl needs --kl-target above 0 and --kl-horizon at least 1"),
    (["--clip-range", "-0.2"], "--clip-range cannot be negative"),
    # these loaded the models and failed in torch.optim.Adam, a bare ValueError; refused as the flag is read
    (["--learning-rate=-1e-4"], "--learning-rate: must be at least 0"),
    (["--advantage", "gae", "--value-learning-rate=-1e-4"], "--value-learning-rate: must be at least 0"),
    (["--adam-beta2", "1"], "--adam-beta2 must be in [0, 1), got 1.0"),
])
def test_bad_rl_settings_are_refused_before_models_load(flags, message, rm_run, jsonl, tmp_path, capsys):
    prompts = jsonl(PROMPTS, "prompts.jsonl")
    args = ["train", "ppo", "--policy", "tiny-random", "--reward", str(rm_run), "--prompts", str(prompts),
            "--out", str(tmp_path / "run")]
    try:
        code = main(args + flags)
    except SystemExit as exit:  # a flag out of its field's range
        code = exit.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_lora_alpha_of_0_is_refused(rm_run, tmp_path):
    """An alpha of 0 scales the adapter to nothing: a run that trained nothing, without a word."""
    with pytest.raises(RedlineError, match="--lora-alpha must be at least 1, got 0"):
        ppo(config(rm_run, iterations=1, lora_alpha=0), tmp_path / "run")
    with pytest.raises(SystemExit):  # the flag, as every ranged flag, is checked as it is read
        main(["train", "ppo", "--policy", "tiny-random", "--reward", str(rm_run), "--prompts", "p.jsonl", "--lora-alpha", "0",
              "--out", str(tmp_path / "cli")])


def test_missing_eos_penalty_lowers_the_score_of_a_cut_response_only():
    import torch

    from redline.train.ppo import Samples, score

    samples = Samples.__new__(Samples)
    samples.prompts, samples.texts, samples.records = ["p"] * 3, ["a", "b", "c"], [{}] * 3
    samples.truncated = [False, True, False]
    reward = lambda prompts, texts, records: [1.0, 2.0, 3.0]  # noqa: E731
    assert score(reward, samples, "cpu").tolist() == [1.0, 2.0, 3.0]  # off by default: the runs in RESULTS
    assert score(reward, samples, "cpu", missing_eos_penalty=1.5).tolist() == [1.0, 0.5, 3.0]


def test_an_unknown_advantage_estimator_is_refused_when_the_flags_are_read(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "ppo", "--policy", "p", "--reward", "r", "--prompts", "x", "--out", "o", "--advantage", "reinforce"])
    assert e.value.code == 2 and "'reinforce' is not one of gae, rloo" in capsys.readouterr().err
    with pytest.raises(RedlineError, match="--advantage: 'reinforce' is not one of gae, rloo"):  # built in Python
        PPOConfig(advantage="reinforce").check()


def test_rollout_select_drops_the_columns_that_are_padding_in_every_chosen_row():
    q = torch.tensor([[0, 0, 5, 6], [0, 7, 8, 9], [0, 0, 0, 4]])
    r = torch.tensor([[1, 2, 0], [3, 0, 0], [4, 5, 6]])
    f = r.float()
    rollout = Rollout(query_ids=q, query_mask=(q > 0).long(), response_ids=r, response_mask=(r > 0).long(), logprobs=f,
                      ref_logprobs=f, values=f, scores=torch.arange(3).float(), rewards=f, advantages=f, returns=f)
    part = rollout.select(torch.tensor([0, 1]))
    assert part.query_ids.tolist() == [[0, 5, 6], [7, 8, 9]] and part.response_ids.tolist() == [[1, 2], [3, 0]]
    assert part.advantages.shape == (2, 2) and part.scores.tolist() == [0.0, 1.0]
    part = rollout.select(torch.tensor([2, 0]))
    assert part.query_ids.tolist() == [[0, 4], [5, 6]] and part.returns.tolist() == [[4, 5, 6], [1, 2, 0]]


UNEVEN = [{"prompt": "Write about topic " + "and more " * i + "now.", "id": str(i)} for i in range(8)]


def test_rollout_logprobs_and_trimmed_micro_batches_evaluate_as_one_untrimmed_forward_pass(rm_run):
    """π_old and the entropy from the sampler (the default, float32) equal the policy's forward pass;
    reference log-probabilities and values from trimmed, length-sorted micro-batches equal the
    full-width batch's, put back in the episodes' order."""
    from dataclasses import replace

    from redline.generation.transformers_engine import TransformersEngine
    from redline.train.ppo import _prepare, evaluate, rollout

    cfg = config(rm_run, batch_size=8, micro_batch_size=3, max_new_tokens=12, temperature=0.9)
    models = load_ppo_models(cfg, "cpu")
    with torch.no_grad():  # the adapter starts at zero: make the policy differ from its reference
        for name, p in trainable(models.policy).items():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    learner = _prepare(cfg, models, [], None)
    engine = TransformersEngine(learner.policy, models.tokenizer, max_batch=8, exact=False)
    samples = rollout(cfg, engine, [as_chat(r["prompt"]) for r in UNEVEN], UNEVEN, 0, learner.accelerator)
    assert samples.logprobs is not None and samples.response_ids.shape[1] == 12
    # tiny-random never ends early: end the responses at 8 lengths, in no sorted order
    for i, n in enumerate([9, 12, 5, 7, 12, 6, 10, 8]):
        samples.response_mask[i, n:] = 0
        samples.response_ids[i, n:] = models.tokenizer.pad_token_id
        samples.logprobs[i, n:] = samples.entropy[i, n:] = 0
    fast = evaluate(cfg, learner, samples)
    slow = evaluate(replace(cfg, micro_batch_size=8), learner, replace(samples, logprobs=None, entropy=None))
    mask = samples.response_mask.bool()
    for name in ("logprobs", "entropy", "ref_logprobs", "values"):
        a, b = getattr(fast, name), getattr(slow, name)
        assert a.shape == b.shape == mask.shape
        assert torch.allclose(a[mask], b[mask], atol=1e-4), name
    assert (fast.ref_logprobs[mask] != fast.logprobs[mask]).any()  # the test can tell policy from reference
    assert float(fast.logprobs[~mask].abs().sum()) == 0.0 and float(fast.ref_logprobs[~mask].abs().sum()) == 0.0
    bf16 = replace(cfg, bf16_base=True)
    assert cfg.sampler_logprobs() and not bf16.sampler_logprobs()  # bfloat16's two paths differ: recomputed


def test_bf16_base_trains_float32_adapters_and_value_head_over_bfloat16_weights(rm_run, tmp_path):
    cfg = config(rm_run, bf16_base=True, iterations=1)
    models = load_ppo_models(cfg, "cpu")
    frozen = [p for p in models.policy.parameters() if not p.requires_grad]
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)
    assert all(p.dtype == torch.float32 for p in trainable(models.policy).values())
    assert all(p.dtype == torch.float32 for p in trainable(models.value).values())
    before = {n: p.detach().clone() for n, p in trainable(models.policy).items()}
    run_ppo(cfg, models, PROMPTS, count_e, lambda r: as_chat(r["prompt"]), tmp_path / "run")
    assert any(not torch.equal(before[n], p) for n, p in trainable(models.policy).items())  # it learned
    row = log(tmp_path / "run")[0]
    assert row["kl"] == 0  # π_old from the forward pass under bfloat16: the identity adapter gives KL 0 exactly
    assert json.loads((tmp_path / "run" / "train_config.json").read_text())["bf16_base"] is True


def test_each_episode_alone_gives_the_padded_micro_batchs_logits_values_and_gradients(rm_run, monkeypatch):
    """On a CPU response_logits and the value model take each row at its own length (no padding):
    the same log-probabilities, values and gradients on the real tokens as one padded forward pass."""
    from redline.ops import rl
    from redline.train import ppo
    from redline.train.ppo import _prepare, _sequence

    cfg = config(rm_run)
    learner = _prepare(cfg, load_ppo_models(cfg, "cpu"), [], None)
    with torch.no_grad():
        for name, p in trainable(learner.policy).items():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    g = torch.Generator().manual_seed(0)
    q_lens, r_lens = [3, 7, 5, 4], [6, 2, 4, 0]  # left-padded prompts, right-padded responses (one empty)
    q, qm = torch.full((4, 7), 0), torch.zeros((4, 7), dtype=torch.long)
    r, rm = torch.full((4, 6), 0), torch.zeros((4, 6), dtype=torch.long)
    for i, (a, b) in enumerate(zip(q_lens, r_lens)):
        q[i, 7 - a :], qm[i, 7 - a :] = torch.randint(5, 200, (a,), generator=g), 1
        r[i, :b], rm[i, :b] = torch.randint(5, 200, (b,), generator=g), 1
    mask = rm.bool()
    out = {}
    for unpadded in (False, True):
        monkeypatch.setattr(redline.models, "UNPADDED_ON_CPU", unpadded)
        learner.policy.zero_grad()
        learner.values_model.zero_grad()
        logprobs = rl.logprobs_from_logits(response_logits(learner.policy, q, qm, r, rm, 0.9), r)
        values = learner.values_model(*_sequence(q, qm, r, rm), n_last=r.shape[1])
        (logprobs[mask].sum() + values[mask].sum()).backward()
        grads = torch.cat([p.grad.flatten() for m in (learner.policy, learner.value) for p in trainable(m).values()])
        out[unpadded] = (logprobs.detach(), values.detach(), grads)
    for a, b in zip(out[False], out[True]):
        assert a.shape == b.shape
    torch.testing.assert_close(out[True][0][mask], out[False][0][mask], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out[True][1][mask], out[False][1][mask], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out[True][2], out[False][2], rtol=1e-3, atol=1e-5)
    assert float(out[True][2].abs().sum()) > 0


def test_the_card_names_the_method_that_trained_the_run():
    from redline.train.pit import PITConfig
    from redline.train.ppo import method

    mix = {"ptx_data": "demos.jsonl", "ptx_coef": 1.0}
    assert method(PPOConfig(**mix), "ppo") == "PPO-ptx, Ouyang et al. 2022"
    assert method(PPOConfig(**{**mix, "ptx_coef": 0.0}), "ppo") == "PPO, Ouyang et al. 2022"
    assert method(PPOConfig(ptx_coef=1.0), "ppo") == "PPO, Ouyang et al. 2022"  # no texts to mix in
    assert method(PPOConfig(advantage="rloo", **mix), "ppo") == "RLOO with the PPO clip and the pretraining mix of PPO-ptx"
    assert method(PPOConfig(advantage="rloo"), "ppo") == "RLOO with the PPO clip"
    pit_round = PITConfig(gap_reward="g").ppo_config("start", prompts="x")  # the gap model's reward, γ_ptx 0
    assert method(pit_round, "pit").startswith("PIT's RL on the reward gap") and "ptx" not in method(pit_round, "pit")


def test_a_resume_cut_short_while_it_trims_the_log_leaves_the_log_whole(tmp_path, monkeypatch):
    from redline.train.ppo import _truncate_log

    log = tmp_path / "ppo_log.jsonl"
    rows = [{"iteration": i, "kl": 0.1 * i} for i in (1, 2, 3)]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = log.read_text()
    write_text = Path.write_text

    def torn(self, text, *args, **kwargs):  # half the text, then the disk is full (or a kill)
        write_text(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", torn)
    with pytest.raises(OSError):
        _truncate_log(log, 2)
    assert log.read_text() == before  # not half of it: the iterations it kept are all there for the resume
    monkeypatch.setattr(Path, "write_text", write_text)
    _truncate_log(log, 2)
    assert [json.loads(line) for line in log.read_text().splitlines()] == rows[:2]


def test_a_resume_keeps_the_rows_before_its_checkpoint_byte_for_byte(tmp_path):
    """The rows a resume keeps were written again with \\u escapes, where the iterations after them are appended as
    UTF-8: a resumed run's rollouts.jsonl (a response with any accent, dash or emoji) was not the file one run
    writes, and mixed two encodings."""
    from redline.records import append_records
    from redline.train.ppo import _truncate_log

    rollouts = tmp_path / "rollouts.jsonl"
    for i, text in enumerate(["café — ok", "naïve 😀", "later"], start=1):
        append_records(rollouts, [{"iteration": i, "response": text}])
    whole = rollouts.read_bytes()
    _truncate_log(rollouts, 2)
    assert rollouts.read_bytes() == whole[: whole.index(b'{"iteration": 3')]


def test_a_pretraining_mix_line_that_is_not_json_is_said_so(tmp_path):
    from redline.train.ppo import read_ptx_texts

    ptx = tmp_path / "ptx.jsonl"
    ptx.write_text('{"text": "A sentence."}\n{"text": "cut off\n')
    with pytest.raises(RedlineError) as refused:
        read_ptx_texts(str(ptx), load_tokenizer("tiny-random"))
    assert str(refused.value).startswith(f"{ptx}:2: ") and "JSON" in str(refused.value)
    assert "needs `text`" not in str(refused.value)  # what was said before: as if the line were a record without it


@pytest.mark.parametrize("row, field, reason", [
    ({"prompt": 5, "response": "b"}, "prompt", "expected a string or a list of messages, got int"),  # was a TypeError
    ({"prompt": [{"role": "user"}], "response": "b"}, "prompt[0].content", "expected a string"),  # jinja's UndefinedError
    ({"prompt": [{"role": "robot", "content": "x"}], "response": "b"}, "prompt[0].role",
     "unknown role 'robot' (expected one of system, user, assistant)"),
    ({"prompt": "", "response": ""}, "prompt", "empty string where text is needed"),  # an empty chat, trained on
    ({"text": 5}, "text", "expected a string, got int"),
])
def test_a_pretraining_mix_demonstration_is_checked_as_any_demonstration(row, field, reason, tmp_path):
    from redline.train.ppo import read_ptx_texts

    ptx = tmp_path / "ptx.jsonl"
    ptx.write_text('{"text": "A sentence."}\n' + json.dumps(row) + "\n")
    with pytest.raises(RedlineError) as refused:
        read_ptx_texts(str(ptx), load_tokenizer("tiny-random"))
    assert str(refused.value) == f"{ptx}:2: {field}: {reason}"


def test_the_reward_model_reads_the_chat_in_its_own_template(jsonl, tmp_path, monkeypatch):
    """The reward was the score of the chat written in the policy's template, which need not be the one the reward
    model was trained on (a base and an instruct model share a vocabulary, not a template)."""
    import redline.train.ppo as ppo_module
    from redline.train.ppo import train_ppo

    tokenizer = load_tokenizer("tiny-random")
    tokenizer.chat_template = "{% for m in messages %}<<{{ m['role'] }}>> {{ m['content'] }}\n{% endfor %}"
    rm = tmp_path / "rm"
    save_model(load_reward_model("tiny-random", device="cpu"), tokenizer, rm, ModelCard(kind="reward", base_model="tiny-random"))
    seen = []

    class Stop(Exception):
        pass

    def reward(scorer, tok, max_length, adapter_off=False):
        seen.append(tok)
        raise Stop

    monkeypatch.setattr(ppo_module, "instructgpt_reward", reward)
    cfg = config(rm, prompts=str(jsonl(PROMPTS)), advantage="rloo", rloo_k=2)
    with pytest.raises(Stop):
        train_ppo(cfg, tmp_path / "run")
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    assert seen[0].apply_chat_template(messages, tokenize=False) == "<<user>> hi\n<<assistant>> yo\n"


@pytest.mark.parametrize("temperature", [0.0, 1e-6])
def test_a_temperature_the_engine_decodes_greedily_is_refused_for_rollouts(temperature):
    """Under sampling.GREEDY_BELOW the engine takes the argmax and records log-probs at temperature 1, while the
    learner reads the policy at --temperature: π_old and π would be of two temperatures (ratios far from 1)."""
    with pytest.raises(RedlineError, match=f"--temperature must be at least 1e-05 for rollouts .*got {temperature}"):
        PPOConfig(temperature=temperature).check()
    PPOConfig(temperature=1e-5).check()  # sampled, as the learner reads it


def test_a_resume_writes_an_older_logs_nan_rows_as_json(tmp_path):
    """An older redline logged a diverged iteration's NaN reward as NaN (not JSON); the rows a resume keeps were
    written back so, beside the null that the rows appended after it hold: now null too, one valid file."""
    from redline.records import append_records
    from redline.train.ppo import _truncate_log

    log = tmp_path / "ppo_log.jsonl"
    log.write_text("".join(json.dumps({"iteration": i, "reward": r}) + "\n" for i, r in ((1, 0.5), (2, float("nan")), (3, 0.1))))
    _truncate_log(log, 2)
    append_records(log, [{"iteration": 3, "reward": float("inf")}])
    rows = [json.loads(line, parse_constant=lambda name: pytest.fail(f"holds {name}")) for line in log.read_text().splitlines()]
    assert rows == [{"iteration": 1, "reward": 0.5}, {"iteration": 2, "reward": None}, {"iteration": 3, "reward": None}]


def test_a_nan_reward_stops_the_run_before_its_iteration_is_checkpointed(rm_run, tmp_path):
    """A reward model that scores NaN would give NaN advantages, weights and β to every later iteration (and to
    the checkpoint a resume reads): the run stops at that iteration, naming it, with the last good checkpoint kept."""
    calls = []

    def nan_on_second_call(prompts, responses, records):
        calls.append(1)
        return [float("nan") if len(calls) == 2 else float(r.count("e")) for r in responses]

    run = tmp_path / "run"
    cfg = config(rm_run, iterations=3)
    with pytest.raises(RedlineError, match=r"iteration 2's reward.* NaN or infinite: the reward model .*iter-000001"):
        run_ppo(cfg, load_ppo_models(cfg, "cpu"), PROMPTS, nan_on_second_call, lambda r: as_chat(r["prompt"]), run)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["iter-000001"]
    rows = log(run)
    assert [r["iteration"] for r in rows] == [1, 2] and rows[1]["reward"] is None  # written, to read; null as JSON
    assert json.loads((run / "checkpoints" / "iter-000001" / "state.json").read_text())["beta"] == 0.02
    ppo(cfg, run)  # a rerun with a finite reward resumes from the kept checkpoint and finishes
    assert [r["iteration"] for r in log(run)] == [1, 2, 3]


def test_a_diverged_update_is_named_as_the_policy_s_not_the_reward_s(tmp_path):
    from redline.train.ppo import check_finite

    with pytest.raises(RedlineError, match=r"iteration 5's kl, policy_loss were NaN .*update diverged.*checkpoint: none"):
        check_finite({"reward": 1.0, "kl": float("nan"), "policy_loss": float("inf"), "value_loss": None}, 5, tmp_path)
    check_finite({"reward": 1.0, "kl": 0.5, "value_loss": None}, 5, tmp_path)  # finite (None is not measured): no error


def test_each_iteration_line_says_how_long_the_rest_of_the_run_will_take(rm_run, tmp_path, capsys):
    """An iteration is one line and no bar spans the run: its line said what it took, never what was left."""
    from redline.train.ppo import time_left

    # 3 iterations in 87 s, 2 left: 58 s; in 300 s, 4 left: 400 s; 1 left after 2 in 7440 s: 62 min
    assert time_left(87, 3, 2) == "; ~58 s left" and time_left(300, 3, 4) == "; ~7 min left"
    assert time_left(7440, 2, 1) == "; ~1 h 02 min left" and time_left(30, 3, 0) == ""
    ppo(config(rm_run, batch_size=2, max_new_tokens=4, save_every=5), tmp_path / "run")
    lines = [line for line in capsys.readouterr().err.splitlines() if "ppo iteration" in line]
    assert len(lines) == 2 and lines[0].endswith(" left)") and "left" not in lines[1], lines
