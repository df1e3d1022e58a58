"""The vLLM backend: everything around vLLM runs here without it (argument mapping, prompts as token
ids, seeds, stops, outputs, LoRA adapters, the missing-vLLM error); generation only where vLLM and a GPU are."""

import json
import sys
from types import SimpleNamespace

import pytest

from redline import RedlineError
from redline.generation import SamplingParams, as_chat, load_engine
from redline.generation.vllm_engine import (
    VLLMEngine,
    completion_from_output,
    vllm_load_kwargs,
    vllm_sampling_kwargs,
)


def test_sampling_params_map_to_vllm_per_item():
    p = SamplingParams(temperature=0.0, top_p=0.9, max_new_tokens=12, stop=["\n\n"], seed=1)
    kw = vllm_sampling_kwargs(p, seed=17)
    assert kw["temperature"] == 0.0 and kw["top_p"] == 0.9 and kw["max_tokens"] == 12
    assert kw["stop"] == ["\n\n"] and kw["seed"] == 17 and kw["n"] == 1
    assert kw["include_stop_str_in_output"] is False and kw["skip_special_tokens"] is True


def test_a_negative_seed_is_a_seed_to_vllm_not_its_unseeded_minus_one():
    """vllm.SamplingParams turns seed -1 into None: `--seed -1` (or -3, for the third prompt) sampled unseeded."""
    seeds = [vllm_sampling_kwargs(SamplingParams(), seed=s)["seed"] for s in (-1, -2, 0, 7, 2**64 - 1)]
    assert seeds == [2**64 - 1, 2**64 - 2, 0, 7, 2**64 - 1] and -1 not in seeds


class RecordingLLM:
    """Stands in for ``vllm.LLM``: records what ``generate`` gets and answers each request with the
    text and finish reason the test scripted, in the order vLLM returns them (input order)."""

    def __init__(self, replies):
        self.replies = replies
        self.calls = []

    def generate(self, prompts, sampling_params, *, use_tqdm=True, lora_request=None):
        self.calls.append(dict(prompts=prompts, sampling_params=sampling_params, use_tqdm=use_tqdm, lora_request=lora_request))
        return [
            SimpleNamespace(outputs=[SimpleNamespace(text=text, token_ids=list(range(n)), finish_reason=reason)])
            for text, n, reason in self.replies[: len(prompts)]
        ]


@pytest.fixture(scope="module")
def tokenizer():
    from redline.models import load_tokenizer

    return load_tokenizer("tiny-random")


def test_generate_sends_token_ids_one_sampling_params_per_seed_and_keeps_order(tokenizer):
    llm = RecordingLLM([("one", 3, "stop"), ("two two", 16, "length"), ("three", 1, "stop")])
    engine = VLLMEngine(llm, tokenizer, sampling_params=dict, lora_request="the-adapter")
    prompts = ["Hello", as_chat("Write a haiku."), "x " * 20]
    params = SamplingParams(temperature=0.8, max_new_tokens=16, stop=["\n"], seed=5)
    out = engine.generate(prompts, params, progress=False)

    call = llm.calls[0]
    chat = tokenizer.apply_chat_template(prompts[1], tokenize=False, add_generation_prompt=True)
    assert call["prompts"][0] == {"prompt_token_ids": tokenizer("Hello")["input_ids"]}
    assert call["prompts"][1] == {"prompt_token_ids": tokenizer(chat, add_special_tokens=False)["input_ids"]}
    assert [sp["seed"] for sp in call["sampling_params"]] == [5, 6, 7]
    assert all(sp["stop"] == ["\n"] and sp["max_tokens"] == 16 for sp in call["sampling_params"])
    assert call["lora_request"] == "the-adapter" and call["use_tqdm"] is False

    assert [c.text for c in out] == ["one", "two two", "three"]
    assert [c.finish_reason for c in out] == ["stop", "length", "stop"]
    assert [c.completion_tokens for c in out] == [3, 16, 1] and out[1].token_ids == list(range(16))
    assert [c.prompt_tokens for c in out] == [len(p["prompt_token_ids"]) for p in call["prompts"]]
    assert [c.seed for c in out] == [5, 6, 7]
    assert engine.last_stats.items == 3 and engine.last_stats.completion_tokens == 20

    engine.generate(prompts[:2], params, seeds=[40, 2], progress=False)
    assert [sp["seed"] for sp in llm.calls[1]["sampling_params"]] == [40, 2]
    assert engine.generate([], params) == [] and len(llm.calls) == 2
    caps = [SamplingParams(max_new_tokens=m, seed=9) for m in (8, 300)]  # one set per prompt, as vLLM takes them
    engine.generate(prompts[:2], caps, progress=False)
    assert [(sp["max_tokens"], sp["seed"]) for sp in llm.calls[2]["sampling_params"]] == [(8, 9), (300, 10)]
    with pytest.raises(ValueError, match="seeds"):
        engine.generate(prompts, params, seeds=[1])


def test_an_aborted_request_is_an_error_not_a_stop():
    aborted = SimpleNamespace(outputs=[SimpleNamespace(text="", token_ids=[], finish_reason="abort")])
    with pytest.raises(RedlineError, match="abort"):
        completion_from_output(aborted, prompt_tokens=3, seed=0, seconds=0.1)


def run_folder(tmp_path, adapter_config):
    (tmp_path / "redline.json").write_text(json.dumps({"adapter": True, "base_model": "tiny-random", "kind": "sft"}))
    (tmp_path / "adapter_config.json").write_text(json.dumps(adapter_config))
    return str(tmp_path)


def test_a_full_model_loads_as_is_and_options_win():
    kwargs, adapter = vllm_load_kwargs("/models/m", "bfloat16", {"gpu_memory_utilization": 0.5, "dtype": "float16"})
    assert adapter is None
    assert kwargs == {"model": "/models/m", "dtype": "float16", "trust_remote_code": False, "gpu_memory_utilization": 0.5}


def test_a_lora_run_is_served_on_its_base_with_the_smallest_vllm_rank_that_holds_it(tmp_path):
    from redline.models import resolve

    path = run_folder(tmp_path, {"r": 12, "target_modules": ["q_proj", "v_proj"]})
    kwargs, adapter = vllm_load_kwargs(path, "bfloat16", {})
    assert adapter == path
    assert kwargs["model"] == resolve("tiny-random") and kwargs["enable_lora"] is True and kwargs["max_lora_rank"] == 16


def test_lora_adapters_vllm_cannot_load_are_refused_naming_the_file(tmp_path):
    with pytest.raises(RedlineError, match="adapter_config.json.*modules_to_save"):
        vllm_load_kwargs(run_folder(tmp_path, {"r": 8, "modules_to_save": ["score"]}), "bfloat16", {})
    with pytest.raises(RedlineError, match="adapter_config.json: field r: LoRA rank 1024"):
        vllm_load_kwargs(run_folder(tmp_path, {"r": 1024}), "bfloat16", {})


def test_vllm_backend_refuses_cpu_devices_before_importing_vllm():
    with pytest.raises(RedlineError, match="GPU"):
        load_engine("tiny-random", backend="vllm", device="cpu")
    # a GPU by index is a GPU: the error says how vLLM is given one (it said to use backend='transformers')
    with pytest.raises(RedlineError, match=r"^device 'cuda:1': vLLM takes no GPU index; run with CUDA_VISIBLE_DEVICES=1"):
        load_engine("tiny-random", backend="vllm", device="cuda:1")


def test_without_vllm_installed_the_error_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError
    with pytest.raises(RedlineError, match=r"pip install 'redline\[vllm\]'"):
        load_engine("tiny-random", backend="vllm")


def _gpu_and_vllm():
    try:
        import torch
        import vllm  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(not _gpu_and_vllm(), reason="needs vLLM and a GPU")
def test_vllm_engine_generates_in_order_with_seeds_and_stops():
    engine = load_engine("tiny-random", backend="vllm", dtype="float32", gpu_memory_utilization=0.2)
    prompts = ["Hello", as_chat("Write a haiku."), "x " * 200]
    params = SamplingParams(temperature=1.0, max_new_tokens=16, seed=5)
    out = engine.generate(prompts, params, progress=False)
    assert [c.seed for c in out] == [5, 6, 7]
    assert [c.prompt_tokens for c in out] == [len(engine.encode(p)) for p in prompts]
    assert all(c.completion_tokens <= 16 for c in out)
    again = engine.generate([prompts[1]], params, seeds=[6], progress=False)[0]
    assert again.text == out[1].text
    stop = out[0].text[4:7]
    if stop:
        cut = engine.generate([prompts[0]], SamplingParams(temperature=1.0, max_new_tokens=16, stop=[stop]), seeds=[5], progress=False)[0]
        assert cut.finish_reason == "stop" and stop not in cut.text


def test_a_damaged_adapter_config_is_named_by_its_file_and_field(tmp_path):
    (tmp_path / "redline.json").write_text(json.dumps({"adapter": True, "base_model": "tiny-random", "kind": "sft"}))
    (tmp_path / "adapter_config.json").write_text("[8]")  # was an AttributeError that named no file
    with pytest.raises(RedlineError, match="adapter_config.json: the LoRA adapter's config should be a JSON object"):
        vllm_load_kwargs(str(tmp_path), "bfloat16", {})
    for rank in ("16", None, True, 0):  # were a ValueError or TypeError from int(), or rank 0 taken as fitting 8
        with pytest.raises(RedlineError, match=r"adapter_config.json: field r: the LoRA rank should be a positive integer"):
            vllm_load_kwargs(run_folder(tmp_path, {"r": rank}), "bfloat16", {})


def test_a_lora_run_on_a_lora_run_is_refused_naming_its_base(tmp_path):
    (tmp_path / "inner").mkdir()
    (outer := tmp_path / "outer").mkdir()
    inner = run_folder(tmp_path / "inner", {"r": 8})
    (outer / "redline.json").write_text(json.dumps({"adapter": True, "base_model": inner, "kind": "sft"}))
    (outer / "adapter_config.json").write_text(json.dumps({"r": 8}))
    # vLLM was handed the inner run's folder as the model: no config.json there
    with pytest.raises(RedlineError, match=r"outer/redline.json: field base_model: .*inner is itself a LoRA run"):
        vllm_load_kwargs(str(outer), "bfloat16", {})


def test_an_empty_prompt_is_refused_before_vllm_takes_any_of_the_batch(tokenizer):
    llm = RecordingLLM([("one", 1, "stop"), ("two", 1, "stop")])
    engine = VLLMEngine(llm, tokenizer, sampling_params=dict)
    assert tokenizer("")["input_ids"] == []  # a tokenizer that adds no BOS
    with pytest.raises(RedlineError, match=r"a prompt has no tokens .*: prompt 2 of 2"):
        engine.generate(["Hello", ""], SamplingParams(), progress=False)
    assert llm.calls == []


def test_a_prompt_too_long_for_vllm_is_named_by_its_place_before_vllm_takes_any_of_the_batch(tokenizer):
    """vLLM refuses a prompt with no room for one token mid-batch, naming only its length (VLLMValidationError)."""
    llm = RecordingLLM([("one", 1, "stop"), ("two", 1, "stop"), ("three", 1, "stop")])
    engine = VLLMEngine(llm, tokenizer, sampling_params=dict)
    llm.llm_engine = SimpleNamespace(model_config=SimpleNamespace(max_model_len=8))
    fits = "one two three four"
    assert len(tokenizer(fits)["input_ids"]) < 8
    long = as_chat("Write about rivers " + "and the sea " * 10)
    with pytest.raises(RedlineError, match=r"tokens; the model takes at most 8 \(vLLM's max_model_len\): prompt 2 of 3, "
                                           r"'Write about rivers and the sea and the sea and the sea \.\.\.'"):
        engine.generate([fits, long, "Hello"], SamplingParams(), progress=False)
    assert llm.calls == []
    assert [c.text for c in engine.generate([fits, "Hello"], SamplingParams(), progress=False)] == ["one", "two"]


def test_a_lora_run_whose_base_is_gone_or_unnamed_is_refused_naming_its_card(tmp_path):
    # as the transformers backend refuses it: a KeyError, or resolve's "not a folder" naming no run, before
    path = run_folder(tmp_path, {"r": 8})
    card = json.loads((tmp_path / "redline.json").read_text())
    (tmp_path / "redline.json").write_text(json.dumps({**card, "base_model": str(tmp_path / "moved-base")}))
    with pytest.raises(RedlineError, match=r"redline.json: field base_model: the adapter's base, the folder .*moved-base, is not there"):
        vllm_load_kwargs(path, "bfloat16", {})
    (tmp_path / "redline.json").write_text(json.dumps({k: v for k, v in card.items() if k != "base_model"}))
    with pytest.raises(RedlineError, match=r"redline.json: field base_model: an adapter run names the model"):
        vllm_load_kwargs(path, "bfloat16", {})
