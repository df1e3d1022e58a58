"""The vLLM backend, for users with a GPU: the same ``generate`` as every engine, on ``vllm.LLM``.

Imported only by ``load_engine(..., backend="vllm")``, so redline never needs vLLM to import.

Prompts are tokenized here, by the same rules as the transformers engine (raw text as the tokenizer
does by default, messages through the tokenizer's chat template with the generation prompt), and
handed to ``LLM.generate`` as token ids: both backends then see the same tokens, and ``prompt_tokens``
means the same thing. (``LLM.chat`` would apply the same template; going through ids keeps one path
for both kinds of prompt.) Each item gets its own ``vllm.SamplingParams`` with its own ``seed``: vLLM
then samples that request from its own generator, so a completion is reproducible from its seed in any
batch; vLLM's kernels are not batch-invariant by default, so equal seeds can still differ by a
near-tie token across batch compositions. ``Completion.seconds`` is the whole call's wall time: vLLM
runs all items together.
"""

from __future__ import annotations

import time
from typing import Any

from redline import RedlineError
from redline.generation import Completion, GenerationStats, Prompt, SamplingParams, item_seeds


def vllm_sampling_kwargs(params: SamplingParams, seed: int) -> dict[str, Any]:
    """The ``vllm.SamplingParams`` arguments for one item (a pure function, tested without vLLM)."""
    return dict(
        n=1,
        temperature=params.temperature,
        top_p=params.top_p,
        max_tokens=params.max_new_tokens,
        stop=list(params.stop),
        seed=seed,
        include_stop_str_in_output=False,
        skip_special_tokens=True,
    )


class VLLMEngine:
    """An ``Engine`` over ``vllm.LLM`` (see module doc)."""

    def __init__(self, llm):
        self.llm = llm
        self.tokenizer = llm.get_tokenizer()
        self.last_stats = GenerationStats()

    @classmethod
    def load(cls, model: str, dtype: str = "float32", device: str = "auto", **options) -> "VLLMEngine":
        from redline.models import resolve, run_info

        if device not in ("auto", "cuda"):
            raise RedlineError(f"the vllm backend runs on a GPU; device {device!r} is not supported (use backend='transformers')")
        path = resolve(model)
        if run_info(path).get("adapter"):
            raise RedlineError(f"{model} is a LoRA adapter; merge it into its base model to serve it with vLLM")
        try:
            import vllm
        except ImportError as e:
            raise RedlineError("backend='vllm' needs vLLM on a machine with a GPU: pip install 'redline[vllm]'") from e
        return cls(vllm.LLM(model=path, dtype=dtype, trust_remote_code=False, **options))

    def encode(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenizer(prompt)["input_ids"]
        text = self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def generate(
        self,
        prompts: list[Prompt],
        params: SamplingParams,
        seeds: list[int] | None = None,
        progress: bool = True,
    ) -> list[Completion]:
        import vllm

        start = time.perf_counter()
        seeds = item_seeds(len(prompts), params, seeds)
        if not prompts:
            self.last_stats = GenerationStats()
            return []
        requests = [{"prompt_token_ids": self.encode(p)} for p in prompts]
        sampling = [vllm.SamplingParams(**vllm_sampling_kwargs(params, s)) for s in seeds]
        outputs = self.llm.generate(requests, sampling, use_tqdm=progress)
        seconds = time.perf_counter() - start
        out = []
        for request, result, seed in zip(requests, outputs, seeds):
            o = result.outputs[0]
            out.append(
                Completion(
                    text=o.text,
                    prompt_tokens=len(request["prompt_token_ids"]),
                    completion_tokens=len(o.token_ids),
                    finish_reason="length" if o.finish_reason == "length" else "stop",
                    seconds=seconds,
                    seed=seed,
                    token_ids=list(o.token_ids),
                )
            )
        self.last_stats = GenerationStats(
            items=len(out),
            prompt_tokens=sum(c.prompt_tokens for c in out),
            completion_tokens=sum(c.completion_tokens for c in out),
            seconds=seconds,
        )
        return out
