"""The vLLM backend, for users with a GPU: the same ``generate`` as every engine, on ``vllm.LLM``.

Imported only by ``load_engine(..., backend="vllm")``, and vLLM itself only inside ``load``, so
redline never needs vLLM to import. Checked against vLLM's current sources (``entrypoints/llm.py``,
``inputs``, ``sampling_params.py``, ``lora/request.py``, ``config/lora.py``), its offline API:
``LLM(model, dtype=..., enable_lora=..., max_lora_rank=...)``, ``LLM.generate(prompts, sampling_params,
*, use_tqdm, lora_request)`` with ``TokensPrompt``-style ``{"prompt_token_ids": [...]}`` prompts and one
``SamplingParams`` per prompt, ``LoRARequest(lora_name, lora_int_id, lora_path)``, and each
``RequestOutput.outputs[0]`` giving ``text``, ``token_ids`` and ``finish_reason``.

Prompts are tokenized here, with redline's tokenizer and by the same rules as the transformers engine
(raw text as the tokenizer does by default, messages through the chat template with the generation
prompt), and handed to vLLM as token ids: both backends see the same tokens, and ``prompt_tokens``
means the same thing. Each item gets its own ``SamplingParams`` with its own ``seed``: vLLM then
samples that request from its own generator, so a completion is reproducible from its seed in any
batch; vLLM's kernels are not batch-invariant by default, so equal seeds can still differ by a
near-tie token across batch compositions. vLLM raises a temperature below 0.01 to 0.01 (0 stays
greedy). ``Completion.seconds`` is the whole call's wall time: vLLM runs all items together.

A LoRA run folder is served unmerged: its base model is loaded with ``enable_lora`` and every request
carries a ``LoRARequest`` for the adapter (vLLM allows ranks 8, 16, 32, 64, 128, 256, 320 and 512
as ``max_lora_rank``; the smallest that holds the adapter's rank is asked for).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from collections.abc import Sequence
from typing import Any, Callable

from redline import RedlineError
from redline.generation import (
    Completion, GenerationStats, Progress, Prompt, SamplingParams, check_prompts, encode_prompt, has_room, item_seeds,
    per_prompt, prompt_beginning,
)

VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # vllm.config.lora.MaxLoRARanks (1 too since 2025)


def vllm_sampling_kwargs(params: SamplingParams, seed: int) -> dict[str, Any]:
    """The ``vllm.SamplingParams`` arguments for one item (a pure function, tested without vLLM)."""
    return dict(
        n=1,
        temperature=params.temperature,
        top_p=params.top_p,
        max_tokens=params.max_new_tokens,
        stop=list(params.stop),
        seed=seed % 2**64,  # vLLM reads a seed of -1 as none (an unseeded, unrepeatable sample): negatives wrap
        include_stop_str_in_output=False,
        skip_special_tokens=True,
    )


def vllm_load_kwargs(path: str, dtype: str, options: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The ``vllm.LLM`` arguments for a resolved model path, and the adapter folder to request per
    prompt (None for a full model). ``options`` (any ``vllm.LLM`` argument) win over ours."""
    from redline.models import adapter_base, resolve, run_info

    info = run_info(path)
    if not info.get("adapter"):
        return {"model": path, "dtype": dtype, "trust_remote_code": False, **options}, None
    config_file = Path(path) / "adapter_config.json"
    try:
        adapter = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RedlineError(f"{config_file}: cannot read the LoRA adapter's config ({e})") from e
    if not isinstance(adapter, dict):  # a damaged file was an AttributeError that named none
        raise RedlineError(f"{config_file}: the LoRA adapter's config should be a JSON object")
    if adapter.get("modules_to_save"):
        raise RedlineError(
            f"{config_file}: modules_to_save {adapter['modules_to_save']} are trained whole, which vLLM's LoRA "
            "does not load; merge the adapter into its base model to serve it with vLLM"
        )
    rank = adapter.get("r")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise RedlineError(f"{config_file}: field r: the LoRA rank should be a positive integer, got {rank!r}")
    fits = [r for r in VLLM_LORA_RANKS if r >= rank]
    if not fits:
        raise RedlineError(f"{config_file}: field r: LoRA rank {rank} is above vLLM's largest, {VLLM_LORA_RANKS[-1]}")
    base = resolve(adapter_base(path, info))  # a card with no base, or a base folder gone: one error naming the field
    if run_info(base).get("adapter"):  # vLLM was handed a folder with no model in it
        raise RedlineError(f"{Path(path) / 'redline.json'}: field base_model: {info['base_model']} is itself a LoRA "
                           "run, and vLLM serves one adapter on a whole model: use backend='transformers' (it merges "
                           "both), or a run saved whole")
    kwargs = {
        "model": base,
        "dtype": dtype,
        "trust_remote_code": False,
        "enable_lora": True,
        "max_lora_rank": fits[0],
        **options,
    }
    return kwargs, path


def completion_from_output(output, prompt_tokens: int, seed: int, seconds: float) -> Completion:
    """A ``Completion`` from one ``vllm.RequestOutput`` (its single sample)."""
    o = output.outputs[0]
    if o.finish_reason not in ("stop", "length"):
        raise RedlineError(f"vLLM ended a request with finish_reason {o.finish_reason!r} (expected 'stop' or 'length')")
    return Completion(
        text=o.text,
        prompt_tokens=prompt_tokens,
        completion_tokens=len(o.token_ids),
        finish_reason=o.finish_reason,
        seconds=seconds,
        seed=seed,
        token_ids=list(o.token_ids),
    )


class VLLMEngine:
    """An ``Engine`` over ``vllm.LLM`` (see module doc).

    ``sampling_params`` is the class each item's settings are built with (``vllm.SamplingParams``) and
    ``lora_request`` what every request carries (a ``vllm.lora.request.LoRARequest``, or None): ``load``
    passes vLLM's, tests pass stand-ins, so everything but vLLM itself is tested without it.
    """

    def __init__(self, llm, tokenizer, sampling_params: Callable[..., Any], lora_request=None):
        self.llm = llm
        self.tokenizer = tokenizer
        self.sampling_params = sampling_params
        self.lora_request = lora_request
        self.last_stats = GenerationStats()

    @classmethod
    def load(cls, model: str, dtype: str = "float32", device: str = "auto", **options) -> "VLLMEngine":
        from redline.models import load_tokenizer, resolve

        if device.startswith("cuda:"):  # a GPU all the same (the error below sent it to transformers)
            raise RedlineError(f"device {device!r}: vLLM takes no GPU index; run with CUDA_VISIBLE_DEVICES="
                               f"{device[len('cuda:'):]} and device 'cuda'")
        if device not in ("auto", "cuda"):
            raise RedlineError(f"the vllm backend runs on a GPU; device {device!r} is not supported (use backend='transformers')")
        kwargs, adapter = vllm_load_kwargs(resolve(model), dtype, options)
        try:
            import vllm
            from vllm.lora.request import LoRARequest
        except ImportError as e:
            raise RedlineError("backend='vllm' needs vLLM on a machine with a GPU: pip install 'redline[vllm]'") from e
        lora = LoRARequest("redline-adapter", 1, adapter) if adapter else None
        return cls(vllm.LLM(**kwargs), load_tokenizer(model), vllm.SamplingParams, lora)

    def _max_model_len(self) -> int | None:
        """The context vLLM serves (``max_model_len``, the model's own unless given smaller); None where the
        engine does not say (a stand-in)."""
        config = getattr(getattr(self.llm, "llm_engine", None), "model_config", None)
        return getattr(config, "max_model_len", None)

    def encode(self, prompt: Prompt) -> list[int]:
        return encode_prompt(self.tokenizer, prompt)

    def generate(
        self,
        prompts: list[Prompt],
        params: SamplingParams | Sequence[SamplingParams],
        seeds: list[int] | None = None,
        progress: Progress = True,
    ) -> list[Completion]:
        from redline import RedlineError

        check_prompts(prompts)
        params = per_prompt(params, len(prompts))
        if any(q.no_repeat_ngram for q in params):
            raise RedlineError("no_repeat_ngram (--no-repeat-ngram) is implemented by the transformers backend only; "
                               "vLLM's sampling has no such setting: use --backend transformers or leave it at 0")
        if any(q.logprobs for q in params):
            raise RedlineError("SamplingParams.logprobs (token log-probabilities and entropies for PPO) is implemented by "
                               "the transformers backend only")
        start = time.perf_counter()
        seeds = item_seeds(len(prompts), params, seeds)
        if not prompts:
            self.last_stats = GenerationStats()
            return []
        requests = [{"prompt_token_ids": self.encode(p)} for p in prompts]
        # Refused here, as the transformers engine does, before vLLM holds any of the batch: vLLM raised its own error
        # mid-batch, and until its PR 27420 (October 2025) kept the requests taken before it for the next call.
        empty = [i for i, r in enumerate(requests) if not r["prompt_token_ids"]]
        if empty:
            raise RedlineError("a prompt has no tokens (an empty prompt, with a tokenizer that adds no BOS): prompt "
                               f"{empty[0] + 1} of {len(prompts)}")  # as the transformers engine names it
        # vLLM refuses a prompt that leaves no room for one token, mid-batch, naming only its length
        limit = self._max_model_len()
        long = [i for i, r in enumerate(requests) if not has_room(len(r["prompt_token_ids"]), limit or None)]
        if long:
            i = long[0]
            raise RedlineError(f"a prompt has {len(requests[i]['prompt_token_ids'])} tokens; the model takes at most "
                               f"{limit} (vLLM's max_model_len): prompt {i + 1} of {len(prompts)}, "
                               f"{prompt_beginning(prompts[i])!r}")
        sampling = [self.sampling_params(**vllm_sampling_kwargs(q, s)) for q, s in zip(params, seeds)]
        outputs = self.llm.generate(requests, sampling, use_tqdm=progress is True, lora_request=self.lora_request)
        if len(outputs) != len(requests):
            raise RedlineError(f"vLLM returned {len(outputs)} outputs for {len(requests)} prompts")
        if not isinstance(progress, bool):  # the caller's bar (Engine.generate): vLLM's own shows no other
            progress.update(len(outputs))
        seconds = time.perf_counter() - start
        out = [
            completion_from_output(result, len(request["prompt_token_ids"]), seed, seconds)
            for request, result, seed in zip(requests, outputs, seeds)
        ]
        self.last_stats = GenerationStats(
            items=len(out),
            prompt_tokens=sum(c.prompt_tokens for c in out),
            completion_tokens=sum(c.completion_tokens for c in out),
            seconds=seconds,
        )
        return out
