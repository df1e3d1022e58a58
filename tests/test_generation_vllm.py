"""The vLLM backend: the parameter mapping everywhere; generation only where vLLM and a GPU are."""

import pytest

from redline.generation import SamplingParams, as_chat, load_engine
from redline.generation.vllm_engine import vllm_sampling_kwargs


def test_sampling_params_map_to_vllm_per_item():
    p = SamplingParams(temperature=0.0, top_p=0.9, max_new_tokens=12, stop=["\n\n"], seed=1)
    kw = vllm_sampling_kwargs(p, seed=17)
    assert kw["temperature"] == 0.0 and kw["top_p"] == 0.9 and kw["max_tokens"] == 12
    assert kw["stop"] == ["\n\n"] and kw["seed"] == 17 and kw["n"] == 1
    assert kw["include_stop_str_in_output"] is False


def test_vllm_backend_refuses_cpu_devices_before_importing_vllm():
    from redline import RedlineError

    with pytest.raises(RedlineError, match="GPU"):
        load_engine("tiny-random", backend="vllm", device="cpu")


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
