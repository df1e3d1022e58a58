"""Model loading and saving on tiny-random: no network, seconds."""

import json
import re

import pytest
import torch

from redline import RedlineError
from redline.models import (
    LoraSettings,
    ModelCard,
    add_lora,
    load_causal_lm,
    load_reward_model,
    load_tokenizer,
    resolve,
    save_model,
)


def test_tiny_random_is_a_two_layer_llama_with_the_embedded_tokenizer():
    model = load_causal_lm("tiny-random", device="cpu")
    tokenizer = load_tokenizer("tiny-random")
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    assert model.config.vocab_size == len(tokenizer) == 49152
    assert tokenizer.pad_token is not None
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat.endswith("<|im_start|>assistant\n")
    assert not model.training


def test_tiny_random_weights_are_fixed():
    a = load_causal_lm("tiny-random", device="cpu").state_dict()
    b = load_causal_lm("tiny-random", device="cpu").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_dtype_is_honoured():
    model = load_causal_lm("tiny-random", dtype="bfloat16", device="cpu")
    assert next(model.parameters()).dtype == torch.bfloat16


@pytest.mark.parametrize("native", [True, False])
def test_auto_dtype_is_bfloat16_only_where_it_runs_natively_and_a_slow_bfloat16_is_said_once(native, monkeypatch, capsys):
    import redline.models as models

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    monkeypatch.setattr(models, "_SLOW_BF16_SAID", False)
    assert models.fast_bfloat16("cpu") is native
    assert models.resolve_dtype("auto", "cpu") == ("bfloat16" if native else "float32")
    assert models.resolve_dtype("float16", "cpu") == "float16"  # a dtype given is kept
    load_causal_lm("tiny-random", dtype="bfloat16", device="cpu")
    load_causal_lm("tiny-random", dtype="bfloat16", device="cpu")
    said = capsys.readouterr().err.count("this CPU has no native bfloat16")
    assert said == (0 if native else 1)


def test_reward_model_has_one_output_and_knows_its_pad_token():
    model = load_reward_model("tiny-random", device="cpu")
    tokenizer = load_tokenizer("tiny-random")
    batch = tokenizer(["a short one", "a somewhat longer text here"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, 1)
    assert model.config.pad_token_id == tokenizer.pad_token_id


def test_unknown_names_are_clear_errors(tmp_path):
    with pytest.raises(RedlineError, match="is not a folder, a hub id"):
        resolve("no-such-model")
    with pytest.raises(RedlineError, match="dtype 'float8'"):
        load_causal_lm("tiny-random", dtype="float8")
    unfinished = tmp_path / "run"  # killed before its first save: checkpoints, no model yet
    (unfinished / "checkpoints" / "checkpoint-50").mkdir(parents=True)
    (unfinished / "train_config.json").write_text("{}")
    with pytest.raises(RedlineError, match="has not finished .* rerun its command"):
        load_causal_lm(str(unfinished))


def test_lora_trains_only_adapters_and_saves_a_loadable_run(tmp_path):
    model = add_lora(load_causal_lm("tiny-random", device="cpu").train(), LoraSettings(r=4, alpha=8))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # One step so the adapter is not the identity, then save and reload through the run folder.
    tokenizer = load_tokenizer("tiny-random")
    batch = tokenizer(["hello world"], return_tensors="pt")
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    model(**batch, labels=batch["input_ids"]).loss.backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        expected = model(**batch).logits
    card = ModelCard(kind="sft", base_model="tiny-random", data=["demos.jsonl"], command="redline train sft")
    out = save_model(model, tokenizer, tmp_path / "run", card)
    info = json.loads((out / "redline.json").read_text())
    assert info["adapter"] is True and info["base_model"] == "tiny-random"
    assert "redline train sft" in (out / "README.md").read_text()
    assert not list(out.glob("*.bin")) and list(out.glob("*.safetensors"))
    reloaded = load_causal_lm(str(out), device="cpu")
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, expected, atol=1e-5)


def lora_sft_run(tmp_path):
    """A LoRA run of kind sft on tiny-random whose adapter is not the identity (one SGD step)."""
    model = add_lora(load_causal_lm("tiny-random", device="cpu").train(), LoraSettings(r=4, alpha=8))
    tokenizer = load_tokenizer("tiny-random")
    batch = tokenizer(["hello world"], return_tensors="pt")
    model(**batch, labels=batch["input_ids"]).loss.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0).step()
    card = ModelCard(kind="sft", base_model="tiny-random", data=["demos.jsonl"], command="redline train sft")
    return save_model(model.eval(), tokenizer, tmp_path / "sft", card), batch


def test_a_lora_sft_run_starts_a_reward_model_and_another_run(jsonl, tmp_path):
    """InstructGPT's reward model starts from SFT: a LoRA SFT run's adapter is folded into the body under the new
    score head (PEFT cannot put a causal-LM adapter on a classifier), and a run trained on top of a LoRA run loads."""
    from redline.cli import main

    sft, batch = lora_sft_run(tmp_path)
    with torch.no_grad():
        body = load_reward_model(str(sft), device="cpu").base_model(**batch).last_hidden_state
        merged = load_causal_lm(str(sft), device="cpu", merge_lora=True).base_model(**batch).last_hidden_state
        base = load_causal_lm("tiny-random", device="cpu").base_model(**batch).last_hidden_state
    assert torch.allclose(body, merged, atol=1e-5) and not torch.allclose(body, base, atol=1e-3)

    rankings = [{"prompt": f"Write about item {i}.", "responses": ["A fine answer.", "bad"], "ranks": [1, 2]} for i in range(4)]
    assert main(["train", "reward", "--data", str(jsonl(rankings)), "--model", str(sft), "--out", str(tmp_path / "rm"),
                 "--max-steps", "1", "--eval-split", "0", "--device", "cpu"]) == 0
    demos = [{"prompt": f"Say hi {i}.", "response": f"Hi there {i}."} for i in range(4)]
    # lr 0: the new adapter stays the identity, so the run on top of the SFT run is the SFT model, loaded through both
    assert main(["train", "sft", "--data", str(jsonl(demos, "demos.jsonl")), "--model", str(sft), "--out",
                 str(tmp_path / "sft2"), "--max-steps", "1", "--learning-rate", "0", "--device", "cpu"]) == 0
    with torch.no_grad():
        again = load_causal_lm(str(tmp_path / "sft2"), device="cpu")(**batch).logits
        expected = load_causal_lm(str(sft), device="cpu")(**batch).logits
    assert torch.allclose(again, expected, atol=1e-4)


def test_a_classifier_head_goes_on_the_language_models_own_body():
    """No second copy of the weights: the classifier's body is the language model's modules, the head fresh."""
    from transformers import AutoModelForSequenceClassification

    from redline.models import head_on_body

    lm = load_causal_lm("tiny-random", dtype="bfloat16", device="cpu")
    model = head_on_body(AutoModelForSequenceClassification, lm, num_labels=1)
    assert model.base_model is lm.base_model and model.config.num_labels == 1
    assert model.score.weight.shape == (1, lm.config.hidden_size) and model.score.weight.dtype == torch.bfloat16
    assert not any(p.is_meta for p in model.parameters()) and 0 < model.score.weight.float().std() < 0.1


def test_a_reward_run_is_refused_where_a_language_model_is_expected(tmp_path):
    model = load_reward_model("tiny-random", device="cpu")
    save_model(model, load_tokenizer("tiny-random"), tmp_path / "rm", ModelCard(kind="reward", base_model="tiny-random"))
    with pytest.raises(RedlineError, match="is a reward model, not a causal language model"):
        load_causal_lm(str(tmp_path / "rm"))
    assert load_reward_model(str(tmp_path / "rm"), device="cpu").config.num_labels == 1


@pytest.mark.slow
def test_embedded_model_answers_in_its_chat_format():
    model = load_causal_lm("embedded", device="cpu")
    tokenizer = load_tokenizer("embedded")
    assert model.config.num_hidden_layers == 30
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids["input_ids"].shape[1]:])


@pytest.mark.slow
def test_shipped_embedded_files_are_those_of_the_converted_gguf(tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    from redline.models import embedded_dir, embedded_files

    shipped, converted = embedded_files(tmp_path / "shipped"), embedded_dir()
    config = [AutoConfig.from_pretrained(f).to_dict() | {"_name_or_path": ""} for f in (shipped, converted)]
    assert config[0] == config[1]
    a, b = AutoTokenizer.from_pretrained(shipped), AutoTokenizer.from_pretrained(converted)
    assert a.get_vocab() == b.get_vocab() and a.chat_template == b.chat_template
    text = "Héllo <|im_start|>user\nworld  42 émoji 🙂<|im_end|>"
    assert a(text)["input_ids"] == b(text)["input_ids"]


def test_a_checkpoint_that_does_not_fit_its_model_says_so_in_one_line(tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    load_causal_lm("tiny-random", device="cpu")
    load_reward_model("tiny-random", device="cpu")  # a new score head, the LM head dropped: expected, no line
    assert "redline:" not in capsys.readouterr().err
    run = tmp_path / "cut"
    save_model(load_causal_lm("tiny-random", device="cpu"), load_tokenizer("tiny-random"), run, ModelCard(kind="sft", base_model="tiny-random"))
    weights = load_file(run / "model.safetensors")
    lost = next(k for k in weights if "layers.1.mlp.up_proj" in k)
    save_file({k: v for k, v in weights.items() if k != lost}, run / "model.safetensors", metadata={"format": "pt"})
    load_causal_lm(str(run), device="cpu")
    line = [e for e in capsys.readouterr().err.splitlines() if e.startswith("redline:")]
    assert line == [f"redline: {run}: 1 weights not in the checkpoint start random ({lost})"]


def test_a_cuda_device_where_there_is_none_is_one_error(monkeypatch):
    from redline.models import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RedlineError, match="--device cuda:1: torch finds no CUDA device"):
        pick_device("cuda:1")
    with pytest.raises(RedlineError, match="no CUDA device"):
        load_causal_lm("tiny-random", device="cuda")
    assert pick_device("cpu") == "cpu"
    # a device torch does not know was a RuntimeError traceback (exit 1), not the README's one line
    for bogus in ("bogus", "cpu:x", "gpu"):
        with pytest.raises(RedlineError, match=f"--device {bogus}: not a device"):
            pick_device(bogus)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(RedlineError, match="--device mps: torch finds no MPS device"):
        pick_device("mps")


def test_bfloat16_a_gpu_only_emulates_is_not_native_and_a_numbered_cuda_device_is_a_gpu(monkeypatch):
    import redline.models as models

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)  # a T4
    assert models.fast_bfloat16("cuda:1") is False and models.resolve_dtype("auto", "cuda") == "float32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # an H200
    assert models.fast_bfloat16("cuda:1") is True


def test_a_damaged_run_file_is_refused_naming_the_file_and_what_it_is(tmp_path):
    """A torn or hand-edited train_config.json, fingerprint or checkpoint file gave a bare JSONDecodeError (or an
    AttributeError on a list) that named no file: every run file is read by one reader that names it."""
    from redline.config import claim_output
    from redline.judges.reward import trained_length
    from redline.models import run_config
    from redline.train.sft import DemonstrationConfig

    run = tmp_path / "rm"
    run.mkdir()
    assert run_config(run) == {} and trained_length(str(run), 77) == 77  # no settings file: nothing recorded
    (run / "train_config.json").write_text('{"max_length": 300}')
    assert run_config(run) == {"max_length": 300} and trained_length(str(run)) == 300
    (run / "train_config.json").write_text('{"max_length": 3')
    with pytest.raises(RedlineError, match=re.escape(f"{run / 'train_config.json'}: not JSON (") +
                       ".*the run's settings is damaged; rerun the command that wrote the run"):
        trained_length(str(run))
    (run / "train_config.json").write_text("[300]")
    with pytest.raises(RedlineError, match="the run's settings should be a JSON object"):
        run_config(run)
    out = tmp_path / "sft"
    config = DemonstrationConfig(model="tiny-random", data=str(tmp_path / "d.jsonl"))
    (tmp_path / "d.jsonl").write_text('{"prompt": "p", "response": "r"}\n')
    claim_output(out, config, command="train sft", config_name="train_config.json")
    (out / "redline.json").write_text("{}")  # the run holds results: a rerun compares its fingerprint
    (out / "fingerprint.json").write_text("{torn")
    with pytest.raises(RedlineError, match=re.escape(f"{out / 'fingerprint.json'}: not JSON (") +
                       ".*the run's fingerprint is damaged; torn, or not redline's; pass --overwrite to start over"):
        claim_output(out, config, command="train sft", config_name="train_config.json")


def test_a_run_killed_while_it_saved_is_unfinished_not_a_model(tmp_path):
    """save_model writes the card last: a run killed after its weights (perhaps half of them) but before its card held
    config.json beside its checkpoints, and was loaded as a model (safetensors' 'incomplete metadata' traceback, or
    the half-written weights themselves). It is a run that has not finished, as one killed before its save is."""
    run = tmp_path / "sft"
    (run / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    load_causal_lm("tiny-random", device="cpu").save_pretrained(run)
    weights = run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    for load in (load_causal_lm, load_tokenizer, load_reward_model):
        with pytest.raises(RedlineError, match=r"has not finished \(checkpoints, no redline.json.*cut short\): rerun"):
            load(str(run))


@pytest.mark.parametrize("edit, field, said", [
    ({"base_model": 5}, "base_model", "should be a string, not 5"),
    ({"base_path": 3}, "base_path", "should be a string, not 3"),
    ({"adapter": "false"}, "adapter", 'should be true or false, not "false"'),
    ({"kind": ["sft"]}, "kind", 'should be a string, not \\["sft"\\]'),
    ({"metrics": [1]}, "metrics", "should be an object, not \\[1\\]"),
])
def test_a_hand_edited_run_card_is_refused_naming_the_file_and_field(tmp_path, edit, field, said):
    """A card edited by hand gave a TypeError traceback naming no file ('expected str, bytes or
    os.PathLike object, not int'), or was misread ("false" is a true string: an adapter looked for)."""
    run = save_model(load_causal_lm("tiny-random", device="cpu"), load_tokenizer("tiny-random"), tmp_path / "run",
                     ModelCard(kind="sft", base_model="tiny-random"))
    card = json.loads((run / "redline.json").read_text())
    (run / "redline.json").write_text(json.dumps({**card, **edit}))
    for load in (load_causal_lm, load_tokenizer):
        with pytest.raises(RedlineError, match=f"{re.escape(str(run / 'redline.json'))}: field {field}: {said}; mend it"):
            load(str(run))


def test_an_adapter_run_whose_base_is_gone_or_unnamed_is_refused_naming_its_card(tmp_path):
    """A LoRA run on a base folder, moved without its base (or the base deleted): the error named the base folder as a
    model that 'is not a folder, a hub id', not the run or its card; a card with no base_model was a KeyError."""
    import shutil

    base = save_model(load_causal_lm("tiny-random", device="cpu"), load_tokenizer("tiny-random"), tmp_path / "base",
                      ModelCard(kind="sft", base_model="tiny-random"))
    run = save_model(add_lora(load_causal_lm(str(base), device="cpu"), LoraSettings(r=2, alpha=4)), None,
                     tmp_path / "lora", ModelCard(kind="sft", base_model=str(base)))
    assert load_causal_lm(str(run), device="cpu") is not None and load_tokenizer(str(run)) is not None
    shutil.rmtree(base)
    card = re.escape(str(run / "redline.json"))
    for load in (load_causal_lm, load_tokenizer, load_reward_model):
        with pytest.raises(RedlineError, match=f"{card}: field base_model: the adapter's base, the folder "
                           f"{re.escape(str(base))}, is not there, nor is its base_path ../base there"):
            load(str(run))
    info = json.loads((run / "redline.json").read_text())
    (run / "redline.json").write_text(json.dumps({**info, "base_model": "", "base_path": ""}))
    with pytest.raises(RedlineError, match=f"{card}: field base_model: an adapter run names the model its adapter sits on"):
        load_causal_lm(str(run))


def test_a_cuda_device_past_the_last_one_is_one_error(monkeypatch):
    """cuda:1 on a machine with one GPU passed, and failed once the model had loaded ('invalid device ordinal')."""
    from redline.models import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert pick_device("cuda") == "cuda" and pick_device("cuda:0") == "cuda:0"
    with pytest.raises(RedlineError, match=re.escape("--device cuda:1: torch finds 1 CUDA device here (cuda:0, or cuda)")):
        pick_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("cuda:1") == "cuda:1"
    with pytest.raises(RedlineError, match=re.escape("torch finds 2 CUDA devices here (cuda:0 to cuda:1, or cuda)")):
        pick_device("cuda:2")


def test_a_local_push_inside_the_run_or_over_a_folder_that_holds_it_is_refused_and_nothing_moves(tmp_path):
    """--push-to-hub RUN/pub copied the run into itself (the copy held its own half-built temporary folder, and the
    next push a copy of the copy); --push-to-hub PARENT over a parent that was itself a run (RUN/value pushed to RUN)
    swapped the copy in and deleted PARENT, the run being published with it."""
    from redline.models import push_to_hub

    parent = tmp_path / "ppo"
    run = parent / "value"
    run.mkdir(parents=True)
    for folder in (parent, run):
        (folder / "redline.json").write_text(json.dumps({"kind": "sft", "base_model": "tiny-random"}))
        (folder / "model.safetensors").write_text(folder.name)
    with pytest.raises(RedlineError, match=re.escape(f"--push-to-hub {run / 'pub'} is inside the run folder {run}")):
        push_to_hub(run, str(run / "pub"))
    with pytest.raises(RedlineError, match=re.escape(f"--push-to-hub {parent} is a folder that holds the run folder")):
        push_to_hub(run, str(parent))
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "ppo", "ppo/model.safetensors", "ppo/redline.json", "ppo/value", "ppo/value/model.safetensors",
        "ppo/value/redline.json"]
    assert push_to_hub(run, str(tmp_path / "pub")) == str(tmp_path / "pub")  # beside it: copied
    assert (tmp_path / "pub" / "model.safetensors").read_text() == "value"


def test_a_model_whose_weights_are_cut_short_is_one_error(tmp_path):
    """A folder whose safetensors file was cut short (a copy or download interrupted) gave safetensors' own
    'incomplete metadata' traceback; so did a LoRA run's adapter weights."""
    model = save_model(load_causal_lm("tiny-random", device="cpu"), load_tokenizer("tiny-random"), tmp_path / "full",
                       ModelCard(kind="sft", base_model="tiny-random"))
    adapter, _ = lora_sft_run(tmp_path)
    for folder, weights, what in ((model, "model.safetensors", "its weights"),
                                  (adapter, "adapter_model.safetensors", "its adapter's weights")):
        (folder / weights).write_bytes((folder / weights).read_bytes()[:1000])
        for load in (load_causal_lm, load_reward_model):
            with pytest.raises(RedlineError, match=f"cannot load model {re.escape(repr(str(folder)))}: {what} are damaged"):
                load(str(folder), device="cpu")


def test_a_cards_missing_metric_reads_as_a_dash_not_none():
    """DPO's final_reward_accuracy, absent when nothing logged it, printed 'None' in the card's table."""
    from redline.models import ModelCard

    text = ModelCard(kind="dpo", base_model="tiny-random", metrics={"final_reward_accuracy": None, "steps": 3}).markdown()
    assert "| final_reward_accuracy | – |" in text and "| steps | 3 |" in text and "None" not in text
