"""The transformers backend: our own decode loop over a ``transformers`` model, built for CPU throughput.

Why not ``model.generate``: its DynamicCache concatenates every layer's K/V on every step (three
quarters of a batch-32 step of the embedded model on this CPU), a batch is padded to its longest prompt
and finished rows keep computing until the longest is done, and sampling draws from one global RNG,
so a completion depends on its batch. The loop here runs the model's own ``forward`` (any decoder that
uses transformers' attention interface and cache API, LoRA adapters included), with two things of
ours plugged in: a ``SlotCache`` that gives every sequence its own row of a preallocated K/V cache,
and an attention function that lets each row attend to its own columns only.

``generate`` in five steps (the same numbers mark the code):

1. Tokenize; order the items longest prompt first, so the rows that share a batch have similar
   lengths and little attention is spent on columns that a shorter row masks out.
2. Admit items into free rows of the cache. Each prompt is prefilled alone: its K/V fill its own row
   from column 0, and its first token is sampled from the prefill's last logits.
3. Decode one token for every active row in one forward: row b writes its K/V at column ``pos[b]``
   and attends to columns ``0..pos[b]`` of its own row.
4. Sample with each row's own uniform stream (``sampling.sample``).
5. Retire rows that produced EOS, reached ``max_new_tokens``, or (checked every ``stop_every`` steps
   on the decoded tail only) a stop string; the last active row moves into the hole, so the active
   rows stay contiguous, and the free rows are refilled from step 2 at once (continuous batching).

What holds bit for bit. A row's prefill depends only on its prompt; in a decode step every row's
numbers come from row-wise operations (the attention is two matmuls and a softmax per row, which
unlike SDPA's CPU kernel gives the same bits whatever the row's position and the cache's width), and
the linear layers are padded with idle rows to a multiple of ``ROW_MULTIPLE`` rows, because a CPU
GEMM computes the rows of a partial micro-kernel block (and a one-row GEMV) with a different
summation order. With ``exact=True`` (the default) a completion is therefore the same, token for
token, alone or in any batch: tested on tiny-random, and measured for the GEMM shapes of the embedded
model with MKL/oneDNN on an AVX-512 CPU. Another BLAS may block differently; ``exact=False`` drops
the padding rows, and then outputs agree only up to float rounding (a near-tie can flip a token).
Greedy decoding matches ``model.generate`` up to the same rounding.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from redline import RedlineError
from redline.generation import Completion, GenerationStats, Prompt, SamplingParams, cut_at_stop, item_seeds
from redline.generation.sampling import sample, uniform_stream

ATTENTION = "redline_slots"
ROW_MULTIPLE = 8  # decode rows are padded to this; covers 4-row micro-kernels (MKL/oneDNN on AVX-512)
SPAN_MULTIPLE = 64  # attention reads this many columns at a time (fewer distinct shapes)


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


# ----------------------------------------------------------------------------- cache and attention


class SlotCache:
    """Preallocated K/V for ``slots`` sequences, one row each, for transformers' attention layers.

    It duck-types the part of ``transformers.Cache`` that attention layers call (``update``).
    ``k[layer]``: (slots, kv_heads, width, head_dim), allocated on the first ``update`` of a layer.
    Before each forward the engine sets either ``prefill_slot`` (one prompt, written from column 0)
    or ``pos`` (n,): the column where each of the rows 0..n-1 writes its new token.
    """

    def __init__(self, slots: int, width: int):
        self.slots = slots
        self.width = width
        self.k: dict[int, torch.Tensor] = {}
        self.v: dict[int, torch.Tensor] = {}
        self.prefill_slot: int | None = None
        self.pos: torch.Tensor | None = None
        self.span = 0  # columns the decode attention reads
        self._rows = torch.arange(slots)

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        if layer_idx not in self.k:
            _, heads, _, dim = key_states.shape
            shape = (self.slots, heads, self.width, dim)
            # Zeros, not empty: a masked column's weight is exactly 0, and 0 * NaN would be NaN.
            self.k[layer_idx] = key_states.new_zeros(shape)
            self.v[layer_idx] = value_states.new_zeros(shape)
        k, v = self.k[layer_idx], self.v[layer_idx]
        if self.prefill_slot is not None:
            length = key_states.shape[2]
            k[self.prefill_slot, :, :length] = key_states[0]
            v[self.prefill_slot, :, :length] = value_states[0]
            return key_states, value_states  # the prompt attends to itself only
        n = key_states.shape[0]
        rows = self._rows[:n].to(k.device)
        k[rows, :, self.pos] = key_states[:, :, 0]
        v[rows, :, self.pos] = value_states[:, :, 0]
        return k[:n, :, : self.span], v[:n, :, : self.span]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0  # positions are always passed explicitly

    def move(self, src: int, dst: int) -> None:
        for layer in self.k:
            self.k[layer][dst] = self.k[layer][src]
            self.v[layer][dst] = self.v[layer][src]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.k.values(), *self.v.values()))


def slot_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention for the ``SlotCache``: causal over one prompt (no mask), or one decode token per row.

    query (n, heads, q_len, d); key/value (n, kv_heads, span, d); attention_mask (n, 1, 1, span)
    additive (0 or -inf) in decode. Returns (n, q_len, heads, d) as transformers expects.
    """
    n, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    if scaling is None:
        scaling = dim**-0.5
    if attention_mask is None:  # prefill: one prompt, causal over itself
        out = F.scaled_dot_product_attention(
            query, key, value, is_causal=q_len > 1, scale=scaling, enable_gqa=kv_heads != heads
        )
        return out.transpose(1, 2).contiguous(), None
    # Decode: the query heads that share a K/V head become that head's "positions" (no repeat_kv).
    q = query.reshape(n, kv_heads, heads // kv_heads, dim)
    scores = torch.matmul(q, key.transpose(-1, -2)) * scaling + attention_mask
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    out = torch.matmul(weights, value)  # (n, kv_heads, group, d)
    return out.reshape(n, 1, heads, dim), None


def _register_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, slot_attention)


@contextlib.contextmanager
def _attention_of(config, name: str):
    """Run the model's forward with our attention function, and give the model back as it was."""
    before = config._attn_implementation_internal
    config._attn_implementation_internal = name
    try:
        yield
    finally:
        config._attn_implementation_internal = before


# ----------------------------------------------------------------------------- the engine


@dataclass
class _Item:
    index: int
    ids: list[int]
    seed: int
    start: float = 0.0


class TransformersEngine:
    """A batch of prompts in, completions out, over a ``transformers`` causal LM (see module doc).

    Options: ``max_batch`` rows decoded together; ``kv_budget_gb`` caps the K/V cache (fewer rows for
    long items); ``stop_every`` steps between stop-string checks; ``exact`` pads decode rows for
    bit-exact batch independence; ``threads`` sets ``torch.set_num_threads``.
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        max_batch: int = 64,
        kv_budget_gb: float = 2.0,
        stop_every: int = 4,
        exact: bool = True,
        threads: int | None = None,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.max_batch = max_batch
        self.kv_budget = int(kv_budget_gb * 2**30)
        self.stop_every = max(1, stop_every)
        self.exact = exact
        self.last_stats = GenerationStats()
        if threads:
            torch.set_num_threads(threads)
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
        self.eos_ids = sorted({int(e) for e in eos} | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()))
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self._check_supported()
        _register_attention()

    @classmethod
    def load(cls, model: str, dtype: str = "float32", device: str = "auto", **options) -> "TransformersEngine":
        from redline.models import load_causal_lm, load_tokenizer

        return cls(load_causal_lm(model, dtype, device), load_tokenizer(model), **options)

    def _check_supported(self) -> None:
        c = self.config
        for attr in ("attn_logit_softcapping", "sliding_window"):
            if getattr(c, attr, None):
                raise RedlineError(
                    f"the transformers engine does not implement {attr} ({c.model_type}); use backend='vllm'"
                )

    # ------------------------------------------------------------------ helpers

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt: raw text as the tokenizer does by default, messages through the chat template."""
        if isinstance(prompt, str):
            return self.tokenizer(prompt)["input_ids"]
        text = self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _kv_bytes_per_token(self) -> int:
        c = self.config
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        element = next(self.model.parameters()).element_size()
        return 2 * c.num_hidden_layers * kv_heads * head_dim * element

    def _forward(self, cache: SlotCache, ids, positions, mask, logits_to_keep: int = 0):
        with _attention_of(self.config, ATTENTION):
            out = self.model(
                input_ids=ids,
                position_ids=positions,
                attention_mask=mask,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=logits_to_keep,
            )
        return out.logits[:, -1].float()

    def _stop_in(self, tokens: list[int], stop: list[str]) -> bool:
        return cut_at_stop(self.tokenizer.decode(tokens, skip_special_tokens=True), stop)[1]

    # ------------------------------------------------------------------ generate

    @torch.inference_mode()
    def generate(
        self,
        prompts: list[Prompt],
        params: SamplingParams,
        seeds: list[int] | None = None,
        progress: bool = True,
    ) -> list[Completion]:
        start = time.perf_counter()
        seeds = item_seeds(len(prompts), params, seeds)
        if not prompts:
            self.last_stats = GenerationStats()
            return []
        # Step 1: tokenize; longest prompt first.
        items = [_Item(i, self.encode(p), s) for i, (p, s) in enumerate(zip(prompts, seeds))]
        max_positions = getattr(self.config, "max_position_embeddings", None) or 1 << 30
        longest = max(len(it.ids) for it in items)
        if longest + 1 > max_positions:
            raise RedlineError(f"a prompt has {longest} tokens; the model takes at most {max_positions}")
        max_new = min(params.max_new_tokens, max_positions - longest)
        pending = sorted(items, key=lambda it: -len(it.ids))
        pending.reverse()  # pop() from the end takes the longest first

        width = min(_round_up(longest + max_new, SPAN_MULTIPLE), _round_up(max_positions, SPAN_MULTIPLE))
        rows_cap = max(1, min(self.max_batch, len(items), self.kv_budget // (width * self._kv_bytes_per_token())))
        slots = _round_up(rows_cap, ROW_MULTIPLE) if self.exact else rows_cap
        cache = SlotCache(slots, width)
        dev = self.device
        pos = torch.zeros(slots, dtype=torch.long, device=dev)  # column of the token fed next
        last = torch.zeros(slots, dtype=torch.long, device=dev)  # the token fed next
        n_gen = torch.zeros(slots, dtype=torch.long)  # tokens generated so far
        out_tokens = torch.zeros(slots, max_new, dtype=torch.long)
        uniforms = torch.zeros(slots, max_new, dtype=torch.float64)
        eos = torch.tensor(self.eos_ids, dtype=torch.long)
        row_item: list[_Item | None] = [None] * slots
        results: list[Completion | None] = [None] * len(items)
        tail = self.stop_every + max((len(s) for s in params.stop), default=0) + 4  # tokens decoded per check

        bar = _progress(len(items), progress)
        n = 0  # active rows are 0..n-1
        steps = 0
        generated = 0
        while pending or n:
            # Step 2: admit items into free rows, prefilling each alone.
            while pending and n < rows_cap:
                item = pending.pop()
                item.start = time.perf_counter()
                cache.prefill_slot = n
                ids = torch.tensor([item.ids], device=dev)
                logits = self._forward(cache, ids, torch.arange(len(item.ids), device=dev)[None], None, 1)
                cache.prefill_slot = None
                uniforms[n] = uniform_stream(item.seed, max_new)
                first = sample(logits, params.temperature, params.top_p, uniforms[n, :1]).cpu()
                out_tokens[n, 0] = first[0]
                n_gen[n] = 1
                last[n] = first[0]
                pos[n] = len(item.ids)
                row_item[n] = item
                n += 1
            # Retire what the first token already finished (EOS, or max_new_tokens == 1).
            done = [b for b in range(n) if n_gen[b] == 1 and (int(out_tokens[b, 0]) in self.eos_ids or max_new == 1)]
            if not done:
                # Step 3: one decode step for rows 0..n-1 (padded with idle rows, see module doc).
                rows = min(_round_up(n, ROW_MULTIPLE), slots) if self.exact else n
                span = min(_round_up(int(pos[:rows].max()) + 1, SPAN_MULTIPLE), width)
                cache.pos, cache.span = pos[:rows], span
                visible = torch.arange(span, device=dev)[None, :] <= pos[:rows, None]
                mask = torch.zeros(visible.shape, dtype=self.dtype, device=dev).masked_fill_(~visible, float("-inf"))
                logits = self._forward(cache, last[:rows, None], pos[:rows, None], mask[:, None, None, :])[:n]
                # Step 4: sample with each row's own uniforms.
                step_u = uniforms[:n].gather(1, n_gen[:n, None]).squeeze(1)
                nxt = sample(logits, params.temperature, params.top_p, step_u).cpu()
                out_tokens[torch.arange(n), n_gen[:n]] = nxt
                n_gen[:n] += 1
                last[:n] = nxt.to(dev)
                pos[:n] += 1
                steps += 1
                generated += n
                # Step 5: which rows are finished?
                finished = torch.isin(nxt, eos) | (n_gen[:n] >= max_new)
                done = finished.nonzero().flatten().tolist()
                if params.stop and steps % self.stop_every == 0:
                    lengths = n_gen[:n].tolist()
                    tails = [out_tokens[b, max(0, g - tail) : g].tolist() for b, g in enumerate(lengths)]
                    texts = self.tokenizer.batch_decode(tails, skip_special_tokens=True)
                    done = sorted(set(done) | {b for b, t in enumerate(texts) if cut_at_stop(t, params.stop)[1]})
            # Step 5 (cont.): retire, highest row first, moving the last active row into each hole.
            for b in sorted(done, reverse=True):
                item = row_item[b]
                results[item.index] = self._completion(item, out_tokens[b, : int(n_gen[b])].tolist(), params, max_new)
                bar.update(1)
                n -= 1
                if b != n:
                    cache.move(n, b)
                    for t in (pos, last, n_gen, out_tokens, uniforms):
                        t[b] = t[n]
                    row_item[b] = row_item[n]
                row_item[n] = None
                pos[n] = 0
                last[n] = 0
            if done:
                bar.set_postfix_str(f"{generated / (time.perf_counter() - start):.0f} tok/s", refresh=False)
        bar.close()
        out = [r for r in results if r is not None]
        self.last_stats = GenerationStats(
            items=len(out),
            prompt_tokens=sum(c.prompt_tokens for c in out),
            completion_tokens=sum(c.completion_tokens for c in out),
            seconds=time.perf_counter() - start,
        )
        return out

    def _completion(self, item: _Item, ids: list[int], params: SamplingParams, max_new: int) -> Completion:
        """The text of a finished row: EOS dropped, cut before a stop string; count tokens up to the end."""
        reason = "length" if len(ids) >= max_new else "stop"
        body = ids
        if ids and ids[-1] in self.eos_ids:
            body, reason = ids[:-1], "stop"
        text, hit = cut_at_stop(self.tokenizer.decode(body, skip_special_tokens=True), params.stop)
        n = len(ids)
        if hit:
            # The stop string may have been seen a few steps late: count up to the token that completed it.
            n = len(body)
            while n > 1 and self._stop_in(body[: n - 1], params.stop):
                n -= 1
            reason = "stop"
        return Completion(
            text=text,
            prompt_tokens=len(item.ids),
            completion_tokens=n,
            finish_reason=reason,
            seconds=time.perf_counter() - item.start,
            seed=item.seed,
            token_ids=ids[:n],
        )


def _progress(total: int, enabled: bool):
    """A tqdm bar over items, with the rate and the time left (a no-op when disabled)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="item", desc="generate", file=sys.stderr, dynamic_ncols=True, disable=not enabled)
