"""`redline demo`: the first run on a laptop — load the embedded model and answer a few prompts.

Everything goes through the generation engine, as every other command does, so the demo also
shows that the engine, the model cache and the tokenizer's chat template work on this machine.
"""

from __future__ import annotations

import sys


def answer_prompts(model: str, prompts: list[str], args) -> list[str]:
    from redline.generation import SamplingParams, as_chat, load_engine

    engine = load_engine(model, dtype=args.dtype, device=args.device)
    params = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens, seed=args.seed)
    completions = engine.generate([as_chat(p) for p in prompts], params, progress=True)
    tokens = sum(c.completion_tokens for c in completions)
    seconds = max(c.seconds for c in completions) if completions else 0.0
    print(f"redline: {len(completions)} answers, {tokens} tokens in {seconds:.1f} s", file=sys.stderr)
    return [c.text.strip() for c in completions]
