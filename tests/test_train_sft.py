"""``train_sft``'s speed paths on tiny-random: the loss from the completion's hidden states alone equals
the loss from full logits (value and gradient), and a bfloat16 base under float32 adapters trains the
adapters only."""

import json

import pytest

torch = pytest.importorskip("torch")

from redline.train import sft  # noqa: E402

EXAMPLES = [
    {
        "prompt": [{"role": "user", "content": f"Write a sentence about topic {i}, all in lowercase. " * (1 + i % 3)}],
        "completion": [{"role": "assistant", "content": f"the topic {i} is interesting."}],
    }
    for i in range(8)
]


def make_trainer(tmp_path, batch_size=2, bf16_base=False):
    from datasets import Dataset
    from trl import SFTConfig

    from redline.models import LoraSettings, add_lora, load_causal_lm, load_tokenizer

    torch.manual_seed(0)
    model = add_lora(load_causal_lm("tiny-random", "bfloat16" if bf16_base else "float32", "cpu").train(), LoraSettings(dropout=0.0))
    with torch.no_grad():  # B starts at zero; make the adapters matter to the loss and its gradient
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    sft.float32_adapters(model)
    args = SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=batch_size, completion_only_loss=True,
                     use_cpu=True, report_to="none", max_length=256)
    trainer = sft.completion_sft_trainer()(model=model, args=args, train_dataset=Dataset.from_list(EXAMPLES),
                                           processing_class=load_tokenizer("tiny-random"))
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    return trainer, model, batch


def loss_and_grads(trainer, model, batch, monkeypatch=None):
    model.zero_grad()
    loss = trainer.compute_loss(model, dict(batch))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def full_logits_loss(model, batch):
    """The textbook loss: every position's logits, cross-entropy on the label tokens."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(), ignore_index=-100)


def test_the_completion_only_projection_gives_the_full_logits_loss_and_gradient(tmp_path, monkeypatch):
    trainer, model, batch = make_trainer(tmp_path)
    labels = batch["labels"][:, 1:]
    assert 0 < int((labels != -100).sum()) < labels.numel() // 2  # most positions are prompt (or padding)
    assert sft._sliceable(trainer, model, batch) is not None

    sliced, sliced_grads = loss_and_grads(trainer, model, batch)
    model.zero_grad()
    full = full_logits_loss(model, batch)
    full.backward()
    full_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    monkeypatch.setattr(sft, "_sliceable", lambda *args: None)
    trl_loss, trl_grads = loss_and_grads(trainer, model, batch)

    assert torch.allclose(sliced, full.detach(), rtol=1e-5, atol=1e-6)
    assert torch.allclose(sliced, trl_loss, rtol=1e-5, atol=1e-6)
    for name, grad in full_grads.items():
        assert torch.allclose(sliced_grads[name], grad, rtol=1e-4, atol=1e-7), name
        assert torch.allclose(trl_grads[name], grad, rtol=1e-4, atol=1e-7), name
    logged = trainer._metrics["train"]
    assert len(logged["entropy"]) == 2 and logged["mean_token_accuracy"][0] == logged["mean_token_accuracy"][1]
    assert logged["entropy"][0] == pytest.approx(logged["entropy"][1], rel=1e-4)


def test_a_bfloat16_base_trains_float32_adapters_and_nothing_else(tmp_path, monkeypatch):
    from redline.models import load_causal_lm

    trained = {}
    make = sft.completion_sft_trainer

    def capturing():
        class Capturing(make()):
            def train(self, *args, **kwargs):
                trained["model"] = self.model
                return super().train(*args, **kwargs)

        return Capturing

    monkeypatch.setattr(sft, "completion_sft_trainer", capturing)
    settings = sft.SFTSettings(model="tiny-random", max_steps=3, grad_accum=1, learning_rate=3e-3, warmup=0,
                               save_steps=1000, logging_steps=1, bf16_base=True)
    metrics = sft.train_sft(EXAMPLES, settings, tmp_path / "run", kind="sft", data=["x"])
    assert metrics["steps"] == 3

    model = trained["model"]
    before = dict(load_causal_lm("tiny-random", "bfloat16", "cpu").named_parameters())
    adapters = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert adapters and all(p.dtype == torch.float32 for p in adapters.values())
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in adapters.items())  # B starts at zero: it trained
    base = {n: p for n, p in model.named_parameters() if not p.requires_grad}
    assert len(base) == len(before)
    for name, p in base.items():
        key = name.replace("base_model.model.", "").replace(".base_layer", "")
        assert p.dtype == torch.bfloat16 and torch.equal(p, before[key]), name


def test_a_reward_models_trained_head_reads_the_bfloat16_base_and_scores_in_float32():
    from redline.models import add_lora, load_reward_model

    model = sft.float32_adapters(add_lora(load_reward_model("tiny-random", "bfloat16", "cpu").train(), task_type="SEQ_CLS"))
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert any("score" in n for n in trainable) and all(p.dtype == torch.float32 for p in trainable.values())
    assert all(p.dtype == torch.bfloat16 for p in model.parameters() if not p.requires_grad)
    scores = model(input_ids=torch.tensor([[1, 2, 3, 4]]), attention_mask=torch.ones(1, 4, dtype=torch.long)).logits
    assert scores.dtype == torch.float32
    scores.sum().backward()
    assert all(p.grad is not None for n, p in trainable.items() if "score" in n or "lora_A" in n)


@pytest.mark.parametrize("on", [False, True])
def test_checkpointing_reaches_the_trainer_without_the_deprecated_name_warning(tmp_path, on):
    import warnings

    from transformers import TrainingArguments
    from trl import SFTConfig

    settings = sft.SFTSettings(gradient_checkpointing=on)
    for config in (TrainingArguments, SFTConfig):  # TRL's configs default the old name to True
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            args = config(**sft.trainer_arguments(settings, tmp_path, "cpu"))
        assert args.gradient_checkpointing is on and args.disable_tqdm is False


def small_settings(**changes):
    return sft.SFTSettings(**{"model": "tiny-random", "grad_accum": 1, "learning_rate": 3e-2, "warmup": 0,
                              "save_steps": 1000, "device": "cpu", **changes})


def test_the_last_step_is_logged_so_the_cards_final_loss_is_the_last(tmp_path):
    """With --logging-steps 2 and 3 steps the Trainer logs steps 1 and 2 only: the card's final_loss was step 2's."""
    metrics = sft.train_sft(EXAMPLES, small_settings(max_steps=3, logging_steps=2), tmp_path / "run", kind="sft", data=["x"])
    rows = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    logged = {row["step"]: row["loss"] for row in rows if "loss" in row}
    assert sorted(logged) == [1, 2, 3]
    assert metrics["final_loss"] == round(logged[3], 4)
    assert json.loads((tmp_path / "run" / "redline.json").read_text())["metrics"]["final_loss"] == round(logged[3], 4)


def test_a_lora_run_started_from_a_lora_run_is_saved_whole_and_loads_with_plain_transformers(tmp_path, monkeypatch):
    """The start's adapter is folded into weights that exist nowhere on disk: an adapter saved on them named the bare
    base in adapter_config.json, so AutoPeftModelForCausalLM (and vLLM) loaded it without the start's adapter."""
    from transformers import AutoModelForCausalLM

    from redline.models import load_causal_lm, load_tokenizer

    sft.train_sft(EXAMPLES, small_settings(max_steps=1), tmp_path / "first", kind="sft", data=["x"])
    trained = {}
    make = sft.completion_sft_trainer

    def capturing():
        class Capturing(make()):
            def train(self, *args, **kwargs):
                out = super().train(*args, **kwargs)
                trained["model"] = self.model
                return out

        return Capturing

    monkeypatch.setattr(sft, "completion_sft_trainer", capturing)
    second = tmp_path / "second"
    sft.train_sft(EXAMPLES, small_settings(model=str(tmp_path / "first"), max_steps=1), second, kind="sft", data=["x"])
    info = json.loads((second / "redline.json").read_text())
    assert info["adapter"] is False and info["base_model"] == "tiny-random"  # the start's base; its adapter is folded in
    assert not (second / "adapter_config.json").exists() and (second / "model.safetensors").exists()

    batch = load_tokenizer("tiny-random")(["hello world"], return_tensors="pt")
    with torch.no_grad():
        expected = trained["model"].eval()(**batch).logits  # the model that trained: both adapters
        plain = AutoModelForCausalLM.from_pretrained(second)(**batch).logits
        first = load_causal_lm(str(tmp_path / "first"), device="cpu")(**batch).logits
    assert torch.allclose(plain, expected, atol=1e-5)
    assert not torch.allclose(plain, first, atol=1e-3)  # the second adapter is in it


def test_a_conversation_that_opens_with_the_assistant_trains_its_replies_and_keeps_the_greeting_as_context():
    """The template cannot render the empty chat before an opening assistant turn: every such record stopped the run
    with "Cannot apply chat template to an empty conversation", naming no file or line."""
    from redline.models import load_tokenizer

    tokenizer = load_tokenizer("tiny-random")
    chat = [{"role": "assistant", "content": "Hello, how can I help?"}, {"role": "user", "content": "Say hi."},
            {"role": "assistant", "content": "Hi there."}]
    turns = sft.tokenize_turns(tokenizer, chat)
    learned = tokenizer.decode([t for t, m in zip(turns["input_ids"], turns["completion_mask"]) if m])
    assert learned == "Hi there.<|im_end|>\n"


@pytest.mark.parametrize("command", ["sft", "reward", "gap-reward", "dpo"])
def test_a_finished_run_rerun_with_its_settings_is_left_as_it_is(command, tmp_path, capsys):
    """`redline train sft` (and the other trainers that end in `save_model`) rerun on a finished run resumed from its
    last checkpoint, trained nothing and saved it all again (a new date in the card, another line in train_log.jsonl,
    the reward models' held-out figures recomputed), so every run that read it refused to resume. It says the run is
    finished, prints the card's metrics, and writes nothing."""
    from redline.cli import main

    data = tmp_path / "d.jsonl"
    rows = ([{"prompt": f"p{i}", "response": f"r{i}"} for i in range(2)] if command == "sft" else
            [{"prompt": f"Question {i}?", "chosen": f"good answer {i}", "rejected": "no"} for i in range(8)])
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "run"
    argv = ["train", command, "--model", "tiny-random", "--data", str(data), "--max-steps", "1",
            *(["--grad-accum", "1"] if command == "sft" else ["--batch-size", "2"]),
            "--save-steps", "1", "--device", "cpu", "--threads", "1", "--out", str(out)]
    assert main(argv) == 0
    files = lambda: {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    before = files()
    capsys.readouterr()
    assert main(argv) == 0
    assert files() == before
    printed = capsys.readouterr()
    assert f"redline: {out} is finished; nothing to train" in printed.err
    assert json.loads(printed.out) == json.loads((out / "redline.json").read_text())["metrics"]


def test_a_finished_run_is_finished_under_a_setting_added_since_it_and_its_data_spelt_another_way(tmp_path, capsys,
                                                                                                  monkeypatch):
    """finished_run compared train_config.json key by key: a run recorded before a setting existed (at its default now),
    or its data named by another relative path (which `claim_output` takes as the same file), read as other settings,
    so the finished run resumed from its last checkpoint and saved it all again, as before the check."""
    from dataclasses import replace

    from redline.train.sft import DemonstrationConfig, train_demonstrations

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"p{i}", "response": f"r{i}"}) + "\n" for i in range(2)))
    out = tmp_path / "run"
    config = DemonstrationConfig(model="tiny-random", data=str(data), max_steps=1, grad_accum=1, save_steps=1,
                                 device="cpu", threads=1)
    train_demonstrations(config, out)
    recorded = json.loads((out / "train_config.json").read_text())
    del recorded["bf16"]  # a run from before --bf16
    (out / "train_config.json").write_text(json.dumps(recorded))
    files = lambda: {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    before = files()
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    metrics = train_demonstrations(replace(config, data="d.jsonl"), out)
    assert f"redline: {out} is finished; nothing to train" in capsys.readouterr().err
    assert files() == before and metrics == json.loads((out / "redline.json").read_text())["metrics"]


def test_stdout_is_the_result_json_alone_and_the_logged_loss_is_on_the_bar(tmp_path, capfd):
    """The Trainer wrote each logged step's numbers to stdout (tqdm.write) before the result JSON, so
    `redline train sft ... > metrics.json` held Python dicts and `| jq` failed; on stderr they were a dict line
    under the bar every --logging-steps. The bar shows the last loss; every logged step is in train_log.jsonl."""
    from redline.cli import main

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say {i}.", "response": f"{i}."}) + "\n" for i in range(4)))
    assert main(["train", "sft", "--model", "tiny-random", "--data", str(data), "--max-steps", "2", "--logging-steps", "1",
                 "--out", str(tmp_path / "sft")]) == 0
    out, err = capfd.readouterr()
    assert json.loads(out)["steps"] == 2  # one JSON document, nothing else
    assert "loss=" in err  # the last logged loss, on the bar
    assert "{'loss'" not in err and "'train_runtime'" not in err  # no dict lines under it
    logged = [json.loads(line) for line in (tmp_path / "sft" / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logged if "loss" in row] == [1, 2]


@pytest.mark.parametrize("changes, examples", [({"max_steps": 1}, EXAMPLES), ({"grad_accum": 8}, EXAMPLES[:1])])
def test_a_run_of_one_step_trains_at_the_peak_rate_under_any_warmup(tmp_path, changes, examples, capsys):
    """A warm-up starts at learning rate 0: under --warmup 0.03 the one step of --max-steps 1, or of a one-record
    file, changed no weight (every lora_B stayed zero) and the run was saved as trained."""
    from safetensors.torch import load_file

    sft.train_sft(examples, small_settings(warmup=0.03, **changes), tmp_path / "run", kind="sft", data=["x"])
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [row["learning_rate"] for row in log if "learning_rate" in row] == [3e-2]
    adapter = load_file(tmp_path / "run" / "adapter_model.safetensors")
    assert all(p.abs().max() > 0 for name, p in adapter.items() if "lora_B" in name)
    assert "one optimiser step: no warm-up" in capsys.readouterr().err


def test_a_run_killed_while_it_saved_its_model_resumes_without_a_step_past_the_end(tmp_path, capsys):
    """Every run ends with a checkpoint at its last step; killed after it, while the model or card was being written,
    the rerun resumed there and the Trainer (which looks for the end only after a step) took one step past
    --max-steps: another update under a schedule that had not decayed to 0, a step 3 of 2 in train_log.jsonl, and
    the card's steps and final loss from it. It loads the checkpoint and takes no step."""
    from safetensors.torch import load_file

    from redline.train.sft import DemonstrationConfig, train_demonstrations

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"p{i}", "response": f"r{i}"}) + "\n" for i in range(4)))
    out = tmp_path / "run"
    config = DemonstrationConfig(model="tiny-random", data=str(data), max_steps=2, grad_accum=1, save_steps=2,
                                 lr_scheduler="constant", logging_steps=1, device="cpu", threads=1)
    whole = train_demonstrations(config, out)
    adapter = load_file(out / "adapter_model.safetensors")
    (out / "redline.json").unlink()  # killed before the card, which save_model writes last
    capsys.readouterr()
    resumed = train_demonstrations(config, out)
    assert f"resuming from {out / 'checkpoints' / 'checkpoint-2'}" in capsys.readouterr().err
    assert resumed["steps"] == 2 and resumed["final_loss"] == whole["final_loss"]
    again = load_file(out / "adapter_model.safetensors")
    assert all(adapter[k].equal(again[k]) for k in adapter)
    steps = [json.loads(line).get("step") for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert max(steps) == 2


def test_a_kill_while_a_checkpoint_counts_its_progress_leaves_no_torn_file_to_resume_from(tmp_path, monkeypatch):
    """The progress file was written in place: killed mid-write, a checkpoint held a torn one, was taken as complete,
    and every resume stopped on it ('not JSON ... rerun the command'), however often it was rerun. It is written
    whole or not at all, so the checkpoint is passed over as one killed before its count."""
    from pathlib import Path
    from types import SimpleNamespace

    from redline.train.sft import COUNTED, PROGRESS, _progress_callback, last_checkpoint

    folder = tmp_path / "checkpoints" / "checkpoint-2"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoints" / COUNTED).touch()
    callback = _progress_callback(SimpleNamespace(_total_train_tokens=548), 0.0)
    callback.on_train_begin(None, SimpleNamespace(global_step=0, max_steps=4), None)
    write_text = Path.write_text

    def torn(self, text, *args, **kwargs):  # half the text, then the kill (or a full disk)
        write_text(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", torn)
    with pytest.raises(OSError):
        callback.on_save(SimpleNamespace(output_dir=str(tmp_path / "checkpoints")),
                         SimpleNamespace(global_step=2, is_world_process_zero=True), None)
    monkeypatch.setattr(Path, "write_text", write_text)
    assert not (folder / PROGRESS).exists()
    assert last_checkpoint(tmp_path) is None


def test_a_run_that_diverged_logs_its_nan_loss_as_null_not_as_zero(tmp_path, capsys):
    """At 1e12 full fine-tuning's second step is NaN. transformers' logging_nan_inf_filter logged that loss as the
    window's mean so far, 0.0 (a "perfect" final_loss on the card), and grad_norm and entropy went into
    train_log.jsonl as NaN, which strict JSON readers refuse; now the loss is null in the log and on the card, said."""
    metrics = sft.train_sft(EXAMPLES, small_settings(max_steps=2, logging_steps=1, learning_rate=1e12, lora=False),
                            tmp_path / "run", kind="sft", data=["x"])
    refuse = lambda name: pytest.fail(f"holds {name}")  # noqa: E731
    rows = [json.loads(line, parse_constant=refuse) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    steps = {row["step"]: row for row in rows if "loss" in row}
    assert steps[1]["loss"] > 1 and steps[2]["loss"] is None and steps[2]["grad_norm"] is None
    card = json.loads((tmp_path / "run" / "redline.json").read_text(), parse_constant=refuse)
    assert card["metrics"]["final_loss"] is None and metrics["final_loss"] != metrics["final_loss"]  # NaN
    assert "the training loss was NaN or infinite at 1 of 2 logged steps, from step 2" in capsys.readouterr().err


def test_a_diverged_runs_result_on_stdout_is_json_that_jq_reads(tmp_path, capfd):
    """`redline train sft ... | jq`: a run whose loss went NaN printed "final_loss": NaN, which is not JSON."""
    from redline.cli import main

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say {i}.", "response": f"{i}."}) + "\n" for i in range(4)))
    assert main(["train", "sft", "--model", "tiny-random", "--data", str(data), "--max-steps", "2", "--logging-steps", "1",
                 "--no-lora", "--learning-rate", "1e12", "--warmup", "0", "--grad-accum", "1", "--out", str(tmp_path / "sft")]) == 0
    out, err = capfd.readouterr()
    metrics = json.loads(out, parse_constant=lambda name: pytest.fail(f"stdout holds {name}"))
    assert metrics["final_loss"] is None and "the run diverged" in err


@pytest.mark.parametrize("rank", [0, 1])
def test_under_a_launcher_the_main_process_alone_saves_and_publishes_the_run_and_every_process_waits(rank, tmp_path,
                                                                                                    monkeypatch):
    """Every process of a torchrun job wrote the same weights, card and log at once and pushed the folder: one that went
    on first (PIT's next stage loads the PIT SFT it saved) could read weights another was rewriting."""
    import torch.distributed as dist

    from redline.models import ModelCard, load_causal_lm, load_tokenizer

    model, tokenizer = load_causal_lm("tiny-random", "float32", "cpu"), load_tokenizer("tiny-random")
    waited = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: rank)
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: waited.append(rank))
    out, shipped = tmp_path / "run", tmp_path / "shipped"
    history = [{"step": 1}]
    sft.save_run(model, tokenizer, out, ModelCard(kind="sft", base_model="tiny-random"), history, "sft", str(shipped))
    assert waited == [rank]  # the others wait for the main process's files before they go on
    if rank == 0:
        assert (out / "redline.json").is_file() and (out / "train_log.jsonl").is_file() and (out / "model.safetensors").is_file()
        assert (shipped / "redline.json").is_file()
    else:
        assert not out.exists() and not shipped.exists()


def test_a_finished_run_rerun_under_a_launcher_is_published_by_the_main_process_alone(tmp_path, monkeypatch):
    """finished_run publishes before any trainer has set up the process group, where every process took itself for
    the main one: a finished run rerun under torchrun with --push-to-hub pushed the folder once a process."""
    out, shipped = tmp_path / "run", tmp_path / "shipped"
    out.mkdir()
    (out / "redline.json").write_text(json.dumps({"kind": "sft", "metrics": {"steps": 1}}))
    monkeypatch.setenv("RANK", "1")
    assert sft.finished_run(out, str(shipped)) == {"steps": 1} and not shipped.exists()
    monkeypatch.setenv("RANK", "0")
    assert sft.finished_run(out, str(shipped)) == {"steps": 1} and (shipped / "redline.json").is_file()


def test_under_a_launcher_with_overwrite_every_process_starts_afresh(tmp_path, monkeypatch):
    """`train sft --overwrite` under torchrun: a process other than the main one could find the finished run before the
    main process removed it, end ('is finished; nothing to train') and leave the main one hung at its first collective
    (a finished PIT stage skipped, an old checkpoint refused or resumed, the same). Given --overwrite it starts afresh,
    as the main process does once it has removed the run; without it, it decides on the run as the main one does."""
    from redline.cli import build_parser, configured
    from redline.train.pit import is_complete
    from redline.train.ppo import check_resume_processes

    out = tmp_path / "run"
    (out / "checkpoints" / "iter-000001").mkdir(parents=True)
    (out / "checkpoints" / "iter-000001" / "state.json").write_text(json.dumps({"iteration": 1, "processes": 4}))
    (out / "redline.json").write_text(json.dumps({"kind": "sft", "metrics": {"steps": 1}}))
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n")
    monkeypatch.setenv(sft.OVERWRITE_ENV, "")  # put back as it was after the test
    monkeypatch.setenv("RANK", "1")
    argv = ["train", "sft", "--model", "tiny-random", "--data", str(data), "--out", str(out)]
    for extra, afresh in (([], False), (["--overwrite"], True), ([], False)):
        config = configured(sft.DemonstrationConfig, build_parser().parse_args(argv + extra), "train sft")
        assert sft.finished_run(out, None, config) == (None if afresh else {"steps": 1})
        assert is_complete(out) is not afresh
        if afresh:
            check_resume_processes(out, 2, 5)
        else:
            with pytest.raises(sft.RedlineError, match="written by a run on 4 processes"):
                check_resume_processes(out, 2, 5)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "redline.json"]  # the main process removes it
