"""The transformers backend: our own decode loop over a ``transformers`` model, built for CPU throughput.

Why not ``model.generate``: its DynamicCache concatenates every layer's K/V on every step (three
quarters of a batch-32 step of the embedded model on this CPU), a batch is padded to its longest prompt
and finished rows keep computing until the longest is done, and sampling draws from one global RNG,
so a completion depends on its batch. The loop here runs the model's own ``forward`` (any decoder that
uses transformers' attention interface and cache API, LoRA adapters included), with two things of
ours plugged in: a ``SlotCache`` that gives every sequence its own row of a preallocated K/V cache,
and an attention function (``slot_attention``) that lets each row attend to its own columns only.

``generate`` in five steps (the same numbers mark the code):

1. Tokenize; order the items longest prompt first, so the rows that share a batch have similar
   lengths and little attention is spent on columns that a shorter row masks out.
2. Admit items into free rows of the cache. A prompt prefix that an active row already holds (a
   chat template, a revise instruction, few-shot examples) is copied from that row; the rest of the
   admitted prompts are prefilled together, a few blocks per forward (``_prefill``), and each row's
   first token is sampled from its prompt's last logits.
3. Decode one token for every active row in one forward: row b writes its K/V at column ``pos[b]``
   and attends to columns ``0..pos[b]`` of its own row.
4. Sample with each row's own uniform stream (``sampling.sample``).
5. Retire rows that produced EOS, reached ``max_new_tokens``, or (checked every ``stop_every`` steps
   on the decoded tail only) a stop string; the last active row moves into the hole, so the active
   rows stay contiguous, and the free rows are refilled from step 2 at once (continuous batching).

Steps 2 to 5 live in ``_DecodeBatch``, where every item carries its own sampling settings, seed and
length: ``generate`` feeds it one call's prompts, and ``ContinuousBatcher`` (``redline serve``) feeds
it requests as they arrive, from its own thread, so a request joins the running batch at the next
step instead of waiting for the batch to finish.

What holds bit for bit. Every operation is row-wise: a GEMM row's result depends only on that row,
provided no row falls in a partial micro-kernel block (or a one-row GEMV), which compute with another
summation order, so with ``exact=True`` (the default) GEMMs always get a multiple of
``ROW_MULTIPLE`` rows: decode batches are padded with idle rows, prompt blocks with pad tokens, and
prompt logits with copies of the last row. The attention is two matmuls and a softmax per row, which
unlike SDPA's CPU kernel give a row the same bits wherever it sits in the batch; in float32 the
second (weights·V) sums the key columns in ``ATTEND_BLOCK``-column matmuls, since one matmul over the
whole span let the BLAS split its sum by the span's length, and a row's bits then changed past a few
hundred positions when the call's span (or, after a copied prefix, its prefill tiles) changed (the
blocks cost ~7% of the float32 revise workload's speed). A completion is therefore the same, token
for token, alone or in any batch, and whether or not its prompt prefix was copied from another row:
tested on tiny-random and on the embedded model, and measured for the embedded model's GEMM shapes
with MKL/oneDNN on an AVX-512 CPU. Another BLAS or
CPU may block differently. With ``exact=False`` (no padding) outputs agree only up to float rounding,
and a near-tie can flip a token; greedy decoding matches ``model.generate`` up to that rounding.

That holds in float32. bfloat16 keeps one weights·V matmul (its CPU matmul copies a sliced operand,
which is why decode reads the whole cache width there), and that matmul splits its reduction over
the columns in blocks chosen from the width and the batch: past a few hundred positions a row's bits
can depend on the call (measured: `benchmarks/generation.py --workload budgets`, 10 of 32 revise
outputs differ after 138–354 tokens between one call and one call per budget). A bf16 run is
reproduced by the same calls (a resumed ``run_iterations`` re-forms the same chunks), not by any
batching; a block-major V cache would make bf16 exact too (not built).

On CUDA none of this is bit-exact: cuBLAS chooses a matmul's kernel (tiles, split-K) by its shape,
so a row's logits round differently with the batch and prompt blocks it shares (an H200 broke the
promise in float32 and bf16 on tiny-random, whose near-uniform logits a nucleus sample reorders:
docs/gpu.md). What holds there, tested in tests/test_gpu.py: the same call gives the same tokens
again, and a greedy completion alone and in a batch part only at a near-tie of its top two logits.
So on a GPU a resumed run reproduces an uninterrupted one where it re-forms the same calls, and
otherwise agrees with it up to rounding, as with ``exact=False``.

Measured and dropped (numbers in benchmarks/RESULTS.md, "## Generation"): SDPA for the attention (slower on this CPU
and not batch-invariant), ``torch.compile`` of the forward (minutes of recompiles, no faster).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import threading
import time
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Callable

import torch

from redline import RedlineError
from redline.generation import (
    Completion, GenerationStats, Progress, Prompt, SamplingParams, check_prompts, cut_at_stop, encode_prompt, has_room,
    item_seeds, per_prompt, progress_bar, prompt_beginning,
)
from redline.generation.sampling import GREEDY_BELOW, sample, uniform_stream

ATTENTION = "redline_slots"
ROW_MULTIPLE = 4  # GEMM rows are padded to this: the micro-kernel height of MKL/oneDNN fp32 on AVX-512
SPAN_MULTIPLE = 64  # attention reads a multiple of this many columns
# float32: weights·V sums its key columns in blocks of this many, one matmul each, so a row's sum is
# split the same way however wide the call's span is (the module doc); blocks of 256 cost 17%
ATTEND_BLOCK = SPAN_MULTIPLE
PREFILL_BLOCK = 512  # tokens of one prompt per prefill forward (bounds the attention scores' memory)
PREFILL_TOKENS = 2048  # tokens of all prompts per prefill forward
PREFILL_TILE = 64  # query rows per attention tile in prefill (a multiple of ROW_MULTIPLE)
MIN_SHARED = 16  # a shorter common prefix is computed again rather than copied


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


# ----------------------------------------------------------------------------- cache and attention


class SlotCache:
    """Preallocated K/V for ``slots`` sequences, one row each, for transformers' attention layers.

    It duck-types the part of ``transformers.Cache`` that attention layers call (``update``).
    ``k[layer]``: (slots, kv_heads, width, head_dim), allocated on the first ``update`` of a layer.
    Before each forward the engine sets ``span`` (the columns attention reads) and either
    ``prefill`` (one (slot, start, rows) per batch row: a block of a prompt, written into row ``slot``
    from column ``start``) or ``pos`` (n,): the column where each of the rows 0..n-1 writes its one
    new token.
    """

    def __init__(self, slots: int, width: int):
        self.slots = slots
        self.width = width
        self.k: dict[int, torch.Tensor] = {}
        self.v: dict[int, torch.Tensor] = {}
        self.prefill: list[tuple[int, int, int]] | None = None
        self.pos: torch.Tensor | None = None
        self.span = 0
        self._rows = torch.arange(slots)

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        if layer_idx not in self.k:
            _, heads, _, dim = key_states.shape
            shape = (self.slots, heads, self.width, dim)
            # Zeros, not empty: a masked column's weight is exactly 0, and 0 * NaN would be NaN.
            self.k[layer_idx] = key_states.new_zeros(shape)
            self.v[layer_idx] = value_states.new_zeros(shape)
        k, v = self.k[layer_idx], self.v[layer_idx]
        if self.prefill is not None:
            for b, (slot, start, rows) in enumerate(self.prefill):
                k[slot, :, start : start + rows] = key_states[b, :, :rows]
                v[slot, :, start : start + rows] = value_states[b, :, :rows]
            slots = [slot for slot, _, _ in self.prefill]
            return k[slots, :, : self.span], v[slots, :, : self.span]
        n = key_states.shape[0]
        rows = self._rows[:n].to(k.device)
        k[rows, :, self.pos] = key_states[:, :, 0]
        v[rows, :, self.pos] = value_states[:, :, 0]
        return k[:n, :, : self.span], v[:n, :, : self.span]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0  # positions are always passed explicitly

    def move(self, src: int, dst: int) -> None:
        """Row ``src`` becomes row ``dst`` (compacting the active rows)."""
        for layer in self.k:
            self.k[layer][dst] = self.k[layer][src]
            self.v[layer][dst] = self.v[layer][src]

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        """Columns 0..length-1 of row ``src`` into row ``dst``: a shared prompt prefix, computed once."""
        for layer in self.k:
            self.k[layer][dst, :, :length] = self.k[layer][src, :, :length]
            self.v[layer][dst, :, :length] = self.v[layer][src, :, :length]


def slot_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, position_ids=None, **kwargs):
    """Attention over ``SlotCache`` rows: two matmuls and a softmax, each row on its own columns.

    query (n, heads, q, d): q = 1 in decode, a prompt block in prefill; key/value (n, kv_heads,
    span, d); attention_mask (n, 1, q, span), additive 0 / -inf. Returns (n, q, heads, d) as
    transformers expects. Not SDPA: its CPU kernel gives a row different bits depending on where the
    row sits in the batch, and these matmuls do not (module doc).

    A prompt block is done ``PREFILL_TILE`` query rows at a time, each tile against the keys up to
    its last position only (known from ``position_ids``, which Llama-style layers pass on): the scores
    stay small enough for the CPU's caches and the masked upper triangle is never computed. Untiled,
    the prefill attention of the embedded model cost more than its linear layers.
    """
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    n, heads, q, dim = query.shape
    if q <= PREFILL_TILE or position_ids is None:
        return _attend(query, key, value, attention_mask, scaling), None
    out = query.new_empty(n, q, heads, dim)
    first = position_ids[:, 0].tolist()
    for b in range(n):
        for t0 in range(0, q, PREFILL_TILE):
            t1 = min(q, t0 + PREFILL_TILE)
            end = min(_round_up(first[b] + t1, SPAN_MULTIPLE), key.shape[2])
            out[b : b + 1, t0:t1] = _attend(
                query[b : b + 1, :, t0:t1], key[b : b + 1, :, :end], value[b : b + 1, :, :end],
                attention_mask[b : b + 1, :, t0:t1, :end], scaling,
            )
    return out, None


def _attend(query, key, value, mask, scaling):
    """softmax(q k^T * scaling + mask) v for (n, heads, q, d) queries on (n, kv_heads, span, d) keys.

    In float32 weights·V is a sum of ``ATTEND_BLOCK``-column matmuls in column order: one matmul over
    the whole span lets the BLAS split its reduction by the span's length, which gave a row other bits
    past ~500 positions when another row widened the call. A block past a row's position adds exact
    zeros. bf16 keeps one matmul (its slices would be copied: the module doc), and so does CUDA (the
    GPU check's batch-independence test passes there with one matmul; the blocks are not measured)."""
    n, heads, q, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    # The query heads that share a K/V head are stacked as extra query rows: no repeat_kv copy.
    stacked = query.reshape(n, kv_heads, group * q, dim)
    scores = torch.matmul(stacked, key.transpose(-1, -2)) * scaling
    scores = scores.view(n, kv_heads, group, q, -1) + mask[:, :, None]
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype).view(n, kv_heads, group * q, -1)
    span = weights.shape[-1]
    if value.dtype != torch.float32 or value.device.type != "cpu" or span <= ATTEND_BLOCK:
        out = torch.matmul(weights, value)
    else:
        out = torch.matmul(weights[..., :ATTEND_BLOCK], value[:, :, :ATTEND_BLOCK])
        for b0 in range(ATTEND_BLOCK, span, ATTEND_BLOCK):
            out += torch.matmul(weights[..., b0 : b0 + ATTEND_BLOCK], value[:, :, b0 : b0 + ATTEND_BLOCK])
    return out.view(n, heads, q, dim).transpose(1, 2)


def _register_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, slot_attention)


@contextlib.contextmanager
def _attention_of(model, name: str):
    """Run the model's forward with our attention function, and give the model back as it was.

    ``set_attn_implementation`` is transformers' public switch (it walks every module, so it is called
    once per ``generate``, not per forward). A model that cannot switch (one that does not route its
    attention through ``AttentionInterface``) is only warned about by transformers: refuse it here,
    because ``SlotCache`` would then be read by an attention that does not know its rows.
    """
    before = model.config._attn_implementation
    model.set_attn_implementation(name)
    try:
        if model.config._attn_implementation != name:
            raise RedlineError(
                f"{type(model).__name__} cannot switch its attention implementation; the transformers engine needs "
                "a model whose attention goes through transformers' AttentionInterface"
            )
        yield
    finally:
        model.set_attn_implementation(before)


@functools.cache
def _logits_per_row() -> bool:
    """Whether ``logits_to_keep`` may be (batch, k) positions, one list per row (transformers' helper
    ``slice_logits_to_keep``, newer than 5.17, where a tensor indexes every row alike)."""
    try:
        from transformers.modeling_utils import slice_logits_to_keep
    except ImportError:
        return False
    hidden = torch.arange(6.0).view(2, 3, 1)
    try:
        return slice_logits_to_keep(hidden, torch.tensor([[0], [2]])).flatten().tolist() == [0.0, 5.0]
    except (IndexError, RuntimeError):
        return False


def _cache_keyword(model) -> str:
    """The name under which the model's ``forward`` takes a cache: ``cache`` since transformers 5.24, where
    ``past_key_values`` is deprecated (removed in 5.40); only ``past_key_values`` before. Read from the
    signature of the model's (or a PEFT wrapper's base model's) ``forward``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


# ----------------------------------------------------------------------------- the engine


@dataclass
class _Item:
    index: int
    ids: list[int]
    seed: int
    params: SamplingParams
    max_new: int  # params.max_new_tokens, cut to what the model's context leaves after the prompt
    start: float = 0.0  # when its prefill began
    shared: int = 0  # prompt tokens copied from another row instead of computed
    # Online items only (``ContinuousBatcher``): where the text and the result go, and a cancel flag.
    on_text: Callable[[str], None] | None = None
    on_done: Callable[[Completion | BaseException], None] | None = None
    cancelled: bool = False
    decoded: tuple[int, int] = (0, 0)  # incremental detokenization: (prefix offset, read offset)
    prompt_grams: set | None = None  # SamplingParams.prompt_ngrams: the prompt's n-grams, built on first use
    # SamplingParams.logprobs: filled when the item finishes (``_DecodeBatch.retire``)
    logprobs: list[float] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)


class TransformersEngine:
    """A batch of prompts in, completions out, over a ``transformers`` causal LM (see module doc).

    Built from a model and tokenizer in memory (``TransformersEngine(policy, tokenizer)``, as PPO
    rollouts do: every forward reads the live weights, so nothing needs re-syncing after an update;
    the model is put in eval mode and on our attention for the call and given back in the mode and
    with the attention implementation it had) or by name
    (``load_engine``). Options: ``max_batch`` rows decoded together; ``kv_budget_gb`` caps the K/V cache (fewer rows for
    long items); ``stop_every`` steps between stop-string checks; ``exact`` pads decode rows for
    bit-exact batch independence; ``threads`` sets ``torch.set_num_threads``; ``ignore_eos`` keeps
    generating after EOS (benchmarks, so that every method generates the same number of tokens);
    ``share_prefix`` copies a prompt prefix that an active row already holds instead of computing it.

    On a CPU shared with other busy processes, ``threads=1`` (or ``OMP_WAIT_POLICY=PASSIVE`` in the
    environment, which the ``redline`` command sets unless the user did) keeps OpenMP threads from
    spinning while they wait for each other: with the load average at 4.5 on 2 cores, 64 rollouts ran
    at 89 tokens/s on one thread, 71 with the passive policy and 15 with the default two threads.
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
        ignore_eos: bool = False,
        share_prefix: bool = True,
    ):
        self.model = model
        self.share_prefix = share_prefix
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
        eos = {int(e) for e in eos} | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())
        self.eos_ids = [] if ignore_eos else sorted(eos)
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        # On CPU, bf16/fp16 batched matmuls copy a non-contiguous operand (10x slower on a sliced
        # cache here) while fp32 ones take it as is: the half types read the whole cache width.
        self.full_span = self.device.type == "cpu" and self.dtype != torch.float32
        self._check_supported()
        self._cache_keyword = _cache_keyword(model)
        _register_attention()

    @classmethod
    def load(cls, model: str, dtype: str = "float32", device: str = "auto", **options) -> "TransformersEngine":
        from redline.models import load_causal_lm, load_tokenizer

        # A LoRA run is merged: the engine only infers, and merged weights decode as fast as the base.
        return cls(load_causal_lm(model, dtype, device, merge_lora=True), load_tokenizer(model), **options)

    def _check_supported(self) -> None:
        c = self.config
        if getattr(c, "attn_logit_softcapping", None):
            raise RedlineError(f"the transformers engine does not implement attention softcapping ({c.model_type})")

    def _check_window(self, tokens: int) -> None:
        """``slot_attention`` attends to every earlier token: refuse where a sliding window would cut some.
        ``tokens``: the longest row's prompt and new tokens (a row's padding is never attended to, so the batch's
        padded width is not what the window limits)."""
        c = self.config
        window = getattr(c, "sliding_window", None) if getattr(c, "use_sliding_window", True) else None
        if window and tokens > window:
            raise RedlineError(
                f"{c.model_type} attends within a sliding window of {window} tokens, and this batch needs "
                f"{tokens}; the transformers engine does not implement sliding windows (use backend='vllm')"
            )

    # ------------------------------------------------------------------ helpers

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt: raw text as the tokenizer does by default, messages through the chat template."""
        return encode_prompt(self.tokenizer, prompt)

    def _kv_bytes_per_token(self) -> int:
        c = self.config
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        element = next(self.model.parameters()).element_size()
        return 2 * c.num_hidden_layers * kv_heads * head_dim * element

    def _forward(self, cache: SlotCache, ids, positions, mask, keep: torch.Tensor | None = None):
        """Logits (rows, V) at the last position of each row, or with ``keep`` (rows, k) at the last of the
        positions listed for each row. Where transformers cannot slice per row (``_logits_per_row``), every
        position is projected and the rows are picked afterwards: the same result, more vocabulary work."""
        per_row = keep is not None and _logits_per_row()
        out = self.model(
            input_ids=ids,
            position_ids=positions,
            attention_mask=mask,
            use_cache=True,
            logits_to_keep=1 if keep is None else keep if per_row else 0,
            **{self._cache_keyword: cache},
        )
        logits = out.logits
        if keep is not None and not per_row:
            logits = logits.gather(1, keep[..., None].expand(-1, -1, logits.shape[-1]))
        return logits[:, -1].float()

    def _mask(self, positions: torch.Tensor, span: int) -> torch.Tensor:
        """(rows, 1, q, span) additive mask: the query at position p sees columns 0..p of its own row."""
        visible = torch.arange(span, device=self.device) <= positions[..., None]
        mask = torch.zeros(visible.shape, dtype=self.dtype, device=self.device).masked_fill_(~visible, float("-inf"))
        return mask[:, None]

    def _prefill(self, cache: SlotCache, jobs: list[tuple[int, list[int], int]]) -> torch.Tensor:
        """Prompts into the cache: ``jobs`` are (slot, ids, done), where columns ``0..done-1`` of the slot
        already hold a shared prefix. Returns the logits (len(jobs), V) after each prompt's last token.

        Each forward takes the next block (at most ``PREFILL_BLOCK`` tokens) of several prompts, up to
        ``PREFILL_TOKENS`` tokens in all: one read of the weights serves them all, which is most of
        the cost of a short prompt. With ``exact``, a block is padded with pad tokens to a multiple of
        ``ROW_MULTIPLE`` rows (and the last-token logits to ``ROW_MULTIPLE`` copies), so every row is
        computed the same way whatever shares its forward and however much of its prompt was shared.
        The padding rows' K/V land past the prompt, where decoding overwrites them before reading.
        """
        pad = self.tokenizer.pad_token_id or 0
        multiple = ROW_MULTIPLE if self.exact else 1
        logits: list[torch.Tensor | None] = [None] * len(jobs)
        done = [d for _, _, d in jobs]
        while True:
            todo = [j for j, (_, ids, _) in enumerate(jobs) if done[j] < len(ids)]
            if not todo:
                break
            group: list[int] = []
            for j in todo:  # as many blocks as fit the token budget (at least one)
                rows = max(_round_up(min(PREFILL_BLOCK, len(jobs[i][1]) - done[i]), multiple) for i in (*group, j))
                if group and rows * (len(group) + 1) > PREFILL_TOKENS:
                    break
                group.append(j)
            sizes = [min(PREFILL_BLOCK, len(jobs[j][1]) - done[j]) for j in group]
            rows = max(_round_up(c, multiple) for c in sizes)
            tokens = torch.tensor(
                [jobs[j][1][done[j] : done[j] + c] + [pad] * (rows - c) for j, c in zip(group, sizes)], device=self.device
            )
            positions = torch.tensor([done[j] for j in group], device=self.device)[:, None] + torch.arange(rows, device=self.device)
            cache.prefill = [(jobs[j][0], done[j], _round_up(c, multiple)) for j, c in zip(group, sizes)]
            cache.span = min(_round_up(max(done[j] + _round_up(c, multiple) for j, c in zip(group, sizes)), SPAN_MULTIPLE), cache.width)
            keep = torch.tensor([[c - 1] * multiple for c in sizes], device=self.device)
            out = self._forward(cache, tokens, positions, self._mask(positions, cache.span), keep)
            for b, (j, c) in enumerate(zip(group, sizes)):
                done[j] += c
                if done[j] == len(jobs[j][1]):
                    logits[j] = out[b]
        cache.prefill = None
        return torch.stack(logits)

    def _stop_in(self, tokens: list[int], stop: list[str]) -> bool:
        return cut_at_stop(self.tokenizer.decode(tokens, skip_special_tokens=True), stop)[1]

    # ------------------------------------------------------------------ generate

    def generate(
        self,
        prompts: list[Prompt],
        params: SamplingParams | Sequence[SamplingParams],
        seeds: list[int] | None = None,
        progress: Progress = True,
    ) -> list[Completion]:
        """One completion per prompt, in input order (see the module doc for how); ``params`` one set for
        all or one per prompt (rows with other settings decode together); ``progress`` as ``Engine.generate``."""
        training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(), _attention_of(self.model, ATTENTION):
                return self._generate(prompts, params, seeds, progress)
        finally:
            self.model.train(training)

    def _generate(self, prompts, params, seeds, progress) -> list[Completion]:
        start = time.perf_counter()
        check_prompts(prompts)
        params = per_prompt(params, len(prompts))
        seeds = item_seeds(len(prompts), params, seeds)
        if not prompts:
            self.last_stats = GenerationStats()
            return []
        # Step 1: tokenize; longest prompt first (pending is popped from the end).
        items = []
        for i, (p, q, s) in enumerate(zip(prompts, params, seeds)):
            try:
                items.append(self._item(i, self.encode(p), q, s))
            except RedlineError as e:  # which of a batch's prompts: a loop's caller holds only the batch
                raise RedlineError(f"{e}: prompt {i + 1} of {len(prompts)}, {prompt_beginning(p)!r}") from None
        max_new = max(it.max_new for it in items)
        pending = sorted(items, key=lambda it: len(it.ids))
        # Room for the longest item, its generated tokens and the padding rows of its last prefill block.
        longest = max(len(it.ids) + it.max_new for it in items)
        self._check_window(longest)
        width = _round_up(longest + ROW_MULTIPLE, SPAN_MULTIPLE)
        batch = _DecodeBatch(self, self._rows_cap(width, len(items)), width, max_new)
        results: list[Completion | None] = [None] * len(items)

        bar = _progress(len(items), progress)
        while pending or batch.n:
            finished = batch.step(pending)  # steps 2 to 5
            _advance(bar, batch.decoded / max_new)
            for item, ids in finished:
                results[item.index] = self._completion(item, ids)
                _advance(bar, 1 - (len(ids) - 1) / max_new)  # what this item had left (see _progress)
            if finished:
                bar.set_postfix_str(f"{batch.generated / (time.perf_counter() - start):.0f} tok/s", refresh=False)
        if bar is not progress:  # its own; a caller's bar stays open for its next call
            bar.close()
        out = [r for r in results if r is not None]
        self.last_stats = GenerationStats(
            items=len(out),
            prompt_tokens=sum(c.prompt_tokens for c in out),
            completion_tokens=sum(c.completion_tokens for c in out),
            seconds=time.perf_counter() - start,
            prefill_seconds=batch.prefill_seconds,
            shared_prompt_tokens=sum(it.shared for it in items),
        )
        return out

    def _item(self, index: int, ids: list[int], params: SamplingParams, seed: int) -> _Item:
        """An item to generate; a prompt that leaves the model no room for one token is refused."""
        max_positions = getattr(self.config, "max_position_embeddings", None) or 1 << 30
        if not ids:  # nothing to prefill: its first token had no logits (a TypeError that failed the whole call)
            raise RedlineError("a prompt has no tokens (an empty prompt, with a tokenizer that adds no BOS)")
        if not has_room(len(ids), max_positions):
            raise RedlineError(f"a prompt has {len(ids)} tokens; the model takes at most {max_positions}")
        return _Item(index, ids, seed, params, min(params.max_new_tokens, max_positions - len(ids)))

    def _rows_cap(self, width: int, items: int) -> int:
        """Rows decoded together: ``max_batch``, fewer where the K/V budget cannot hold that many rows of ``width``."""
        # Every row is as wide as the longest item needs: one long outlier means fewer rows for all.
        budget_rows = self.kv_budget // (width * self._kv_bytes_per_token())
        rows_cap = max(1, min(self.max_batch, items, budget_rows))
        if self.exact and rows_cap == budget_rows > ROW_MULTIPLE:
            rows_cap -= rows_cap % ROW_MULTIPLE  # the padding rows must fit the budget too
        return rows_cap

    def _completion(self, item: _Item, ids: list[int]) -> Completion:
        """The text of a finished row: EOS dropped, cut before a stop string; count tokens up to the end."""
        stop = item.params.stop
        reason = "length" if len(ids) >= item.max_new else "stop"
        body = ids
        if ids and ids[-1] in self.eos_ids:
            body, reason = ids[:-1], "stop"
        text, hit = cut_at_stop(self.tokenizer.decode(body, skip_special_tokens=True), stop)
        n = len(ids)
        if hit:
            # The stop string may have been seen a few steps late: count up to the token that completed it.
            n = len(body)
            while n > 1 and self._stop_in(body[: n - 1], stop):
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
            logprobs=item.logprobs[:n],
            entropies=item.entropies[:n],
        )

    def continuous(self, max_prompt_tokens: int, max_new_tokens: int) -> "ContinuousBatcher":
        """A decode loop in its own thread that takes requests while it runs (``redline serve``)."""
        return ContinuousBatcher(self, max_prompt_tokens, max_new_tokens)


class _DecodeBatch:
    """Steps 2 to 5 of ``generate`` over one preallocated cache: the rows, and the items they hold.

    Each item carries its own sampling settings, seed and ``max_new``, so ``generate`` (one set of
    settings for all or one per prompt) and ``ContinuousBatcher`` (each request its own) run this same loop. ``step``
    admits from ``pending`` (popped from the end) into free rows, decodes one token for every active
    row, and returns the items that finished with their token ids.
    """

    def __init__(self, engine: TransformersEngine, rows_cap: int, width: int, max_new: int):
        self.engine, self.rows_cap, self.width = engine, rows_cap, width
        self.slots = slots = _round_up(rows_cap, ROW_MULTIPLE) if engine.exact else rows_cap
        self.cache = SlotCache(slots, width)
        dev = self.dev = engine.device
        self.pos = torch.zeros(slots, dtype=torch.long, device=dev)  # column of the token fed next
        self.last = torch.zeros(slots, dtype=torch.long, device=dev)  # the token fed next
        self.n_gen = torch.zeros(slots, dtype=torch.long)  # tokens generated so far
        self.limit = torch.zeros(slots, dtype=torch.long)  # each row's max_new
        self.out_tokens = torch.zeros(slots, max_new, dtype=torch.long)
        self.uniforms = torch.zeros(slots, max_new, dtype=torch.float64)
        # SamplingParams.logprobs: each sampled token's log-probability and its distribution's entropy
        self.out_logprobs = torch.zeros(slots, max_new, dtype=torch.float32)
        self.out_entropy = torch.zeros(slots, max_new, dtype=torch.float32)
        self.prompt_ids = torch.full((slots, width), -1, dtype=torch.long)  # for finding shared prefixes
        self.eos = torch.tensor(engine.eos_ids, dtype=torch.long)
        self.row_item: list[_Item | None] = [None] * slots
        self.admitting: list[_Item] = []  # taken from pending, not yet in a row: a fault in their prefill fails them too
        self.retired: list[tuple[_Item, list[int]]] = []  # finished at this step's admission (``step``)
        self.n = 0  # active rows are 0..n-1
        self.steps = self.generated = self.decoded = 0  # decoded: rows decoded by the last step
        self.prefill_seconds = 0.0

    def step(self, pending: list[_Item]) -> list[tuple[_Item, list[int]]]:
        # Rows that their first token finishes are retired, and the rest decode in the same step: decoding only
        # when no admitted row finished let a stream of one-token requests stop every long row (serve).
        self.retired = []  # finished this step: a fault in the step's decode must not lose them (ContinuousBatcher)
        self.retired = finished = self.retire(self._admit(pending))
        self.decoded = 0
        if self.n:
            finished += self.retire(self._decode())
        return finished

    def _admit(self, pending: list[_Item]) -> list[int]:
        """Step 2: admit items into free rows; returns the rows that their first token already finishes.

        A prompt prefix that an active row already holds is copied, not computed; an item that shares
        a prefix with a newcomer only (the first items of a batch with a common template) waits for
        the next prefill forward, to copy it.
        """
        engine, cache, n = self.engine, self.cache, self.n
        admitted: list[tuple[_Item, int]] = []  # (item, tokens shared)
        self.admitting = []
        while pending and n + len(admitted) < self.rows_cap:
            item = pending[-1]
            ids = torch.tensor(item.ids)
            shared, source = 0, -1
            if engine.share_prefix and n:
                same = (self.prompt_ids[:n, : len(ids)] == ids).cumprod(dim=1).sum(dim=1)
                source = int(same.argmax())
                shared = min(int(same[source]), len(ids) - 1)
            if engine.share_prefix and admitted and shared < MIN_SHARED:
                if max(_common_prefix(item.ids, other.ids) for other, _ in admitted) >= MIN_SHARED:
                    break
            if shared < MIN_SHARED:
                shared = 0
            else:
                cache.copy_prefix(source, n + len(admitted), shared)
            self.admitting.append(pending.pop())
            row = n + len(admitted)
            self.prompt_ids[row] = -1
            self.prompt_ids[row, : len(ids)] = ids
            item.shared = shared
            admitted.append((item, shared))
        if not admitted:
            return []
        t0 = time.perf_counter()
        for item, _ in admitted:
            item.start = t0
        logits = engine._prefill(cache, [(n + i, item.ids, shared) for i, (item, shared) in enumerate(admitted)])
        self.prefill_seconds += time.perf_counter() - t0
        rows_new = torch.arange(n, n + len(admitted))
        for i, (item, _) in enumerate(admitted):
            self.uniforms[n + i, : item.max_new] = uniform_stream(item.seed, item.max_new)
            self.limit[n + i] = item.max_new
            self.row_item[n + i] = item
        self.n_gen[rows_new] = 0  # a freed row keeps its last occupant's count until now
        first = self._sample(logits, [item for item, _ in admitted], self.uniforms[rows_new, 0], rows_new).cpu()
        self._record(rows_new, logits, first, [item for item, _ in admitted])
        self.out_tokens[rows_new, 0] = first
        self.n_gen[rows_new] = 1
        self.last[n : n + len(admitted)] = first.to(self.dev)
        self.pos[n : n + len(admitted)] = torch.tensor([len(item.ids) for item, _ in admitted], device=self.dev)
        self.n += len(admitted)
        self.admitting = []
        # Rows whose first token already finishes them (EOS, or max_new == 1).
        return [n + i for i, t in enumerate(first.tolist()) if t in engine.eos_ids or admitted[i][0].max_new == 1]

    def _decode(self) -> list[int]:
        """Steps 3 to 5: one token for rows 0..n-1; returns the rows that are finished."""
        engine, cache, n = self.engine, self.cache, self.n
        # Step 3: one decode step for rows 0..n-1, padded with idle rows (module doc).
        rows = min(_round_up(n, ROW_MULTIPLE), self.slots) if engine.exact else n
        pos = self.pos
        cache.pos = pos[:rows]
        if engine.full_span:
            cache.span = self.width  # a sliced cache is not contiguous: bf16 matmuls would copy it
        else:
            cache.span = min(_round_up(int(pos[:rows].max()) + 1, SPAN_MULTIPLE), self.width)
        mask = engine._mask(pos[:rows, None], cache.span)
        logits = engine._forward(cache, self.last[:rows, None], pos[:rows, None], mask)[:n]
        # Step 4: sample with each row's own uniforms.
        step_u = self.uniforms[:n].gather(1, self.n_gen[:n, None]).squeeze(1)
        nxt = self._sample(logits, self.row_item[:n], step_u, torch.arange(n)).cpu()
        self._record(torch.arange(n), logits, nxt, self.row_item[:n])
        self.out_tokens[torch.arange(n), self.n_gen[:n]] = nxt
        self.n_gen[:n] += 1
        self.last[:n] = nxt.to(self.dev)
        pos[:n] += 1
        self.steps += 1
        self.generated += n
        self.decoded = n
        # Step 5: which rows are finished? Stop strings are looked for in the decoded tail only.
        finished = torch.isin(nxt, self.eos) | (self.n_gen[:n] >= self.limit[:n])
        done = set(finished.nonzero().flatten().tolist())
        if self.steps % engine.stop_every == 0:
            with_stop = [b for b in range(n) if self.row_item[b].params.stop and b not in done]
            if with_stop:
                tails = []
                for b in with_stop:
                    # tokens decoded per check: enough to hold the longest stop string, counted in UTF-8 bytes (at
                    # least its tokens under a byte-level or byte-fallback tokenizer; an emoji is 2 tokens here)
                    tail = engine.stop_every + max(len(s.encode()) for s in self.row_item[b].params.stop) + 4
                    g = int(self.n_gen[b])
                    tails.append(self.out_tokens[b, max(0, g - tail) : g].tolist())
                texts = engine.tokenizer.batch_decode(tails, skip_special_tokens=True)
                done |= {b for b, t in zip(with_stop, texts) if cut_at_stop(t, self.row_item[b].params.stop)[1]}
        return sorted(done)

    def _ban_repeats(self, logits: torch.Tensor, items: list[_Item], rows: torch.Tensor) -> torch.Tensor:
        """``SamplingParams.no_repeat_ngram``: in each row that sets it, the tokens that would complete
        an n-gram already in that row's completion get -inf (row by row: batch independence holds), but
        with ``prompt_ngrams`` not an n-gram the row's prompt holds.
        ``logits[b]`` and ``items[b]`` belong to cache row ``rows[b]`` (admitted rows start at n)."""
        for b, item in enumerate(items):
            row = int(rows[b])
            n, g = item.params.no_repeat_ngram, int(self.n_gen[row])
            if not n or g < n:
                continue
            done = self.out_tokens[row, :g]
            grams = done.unfold(0, n, 1)  # (g - n + 1, n)
            seen = (grams[:, :-1] == done[g - n + 1 :]).all(dim=1)
            if not seen.any():
                continue
            banned = grams[seen, -1]
            if item.params.prompt_ngrams:  # a repeat the prompt holds is a copy, not a loop
                if item.prompt_grams is None:
                    item.prompt_grams = {tuple(item.ids[i : i + n]) for i in range(len(item.ids) - n + 1)}
                prefix = tuple(done[g - n + 1 :].tolist())
                banned = torch.tensor([t for t in banned.tolist() if prefix + (t,) not in item.prompt_grams],
                                      dtype=banned.dtype)
            logits[b, banned.to(logits.device)] = float("-inf")
        return logits

    def _sample(self, logits: torch.Tensor, items: list[_Item], uniforms: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Next token ids for rows whose items may differ in temperature and top_p: one call per setting.
        ``rows``: the cache row of each logits row."""
        if any(it.params.no_repeat_ngram for it in items):
            logits = self._ban_repeats(logits, items, rows)
        settings = [(it.params.temperature, it.params.top_p) for it in items]
        uniforms = uniforms.to(self.dev)
        if len(set(settings)) == 1:
            return sample(logits, *settings[0], uniforms)
        out = torch.empty(len(items), dtype=torch.long, device=logits.device)
        for setting in set(settings):
            rows = torch.tensor([b for b, s in enumerate(settings) if s == setting], device=logits.device)
            out[rows] = sample(logits[rows], *setting, uniforms[rows])  # row-wise: same bits as in one call
        return out

    def _record(self, rows: torch.Tensor, logits: torch.Tensor, tokens: torch.Tensor, items: list[_Item]) -> None:
        """``SamplingParams.logprobs``: the sampled tokens' log-probabilities and the entropies, at the
        rows' next column (before ``n_gen`` counts the token). Rows that did not ask are skipped."""
        wanted = [b for b, it in enumerate(items) if it.params.logprobs]
        if not wanted:
            return
        pick = torch.tensor(wanted)
        # a greedy row (temperature under GREEDY_BELOW) reads temperature 1, as SamplingParams.logprobs says
        temps = torch.tensor([t if (t := items[b].params.temperature) >= GREEDY_BELOW else 1.0 for b in wanted],
                             dtype=torch.float32)
        logp = torch.log_softmax(logits[pick.to(logits.device)].float() / temps.to(logits.device)[:, None], dim=-1)
        chosen = logp.gather(1, tokens[pick].to(logits.device)[:, None]).squeeze(1)
        entropy = -(logp.exp() * logp).nansum(dim=-1)  # a banned token (-inf) adds nothing
        at = rows[pick]
        self.out_logprobs[at, self.n_gen[at]] = chosen.cpu()
        self.out_entropy[at, self.n_gen[at]] = entropy.cpu()

    def tokens(self, b: int) -> list[int]:
        return self.out_tokens[b, : int(self.n_gen[b])].tolist()

    def retire(self, done: list[int]) -> list[tuple[_Item, list[int]]]:
        """Step 5 (cont.): free rows, highest first, moving the last active row into each hole."""
        finished = []
        for b in sorted(done, reverse=True):
            item = self.row_item[b]
            if item.params.logprobs:
                g = int(self.n_gen[b])
                item.logprobs, item.entropies = self.out_logprobs[b, :g].tolist(), self.out_entropy[b, :g].tolist()
            finished.append((item, self.tokens(b)))
            self.n -= 1
            n = self.n
            if b != n:
                self.cache.move(n, b)
                for t in (self.pos, self.last, self.n_gen, self.limit, self.out_tokens, self.uniforms, self.prompt_ids,
                          self.out_logprobs, self.out_entropy):
                    t[b] = t[n]
                self.row_item[b] = self.row_item[n]
            self.row_item[n] = None
            self.pos[n] = 0
            self.last[n] = 0
        return finished


class ContinuousBatcher:
    """Continuous batching by step for a server: requests join and leave the running batch between steps.

    One thread owns the model and runs ``_DecodeBatch.step`` in a loop; ``submit`` (from any thread)
    queues a request, which takes a free row at the next step, so a short request never waits for a
    long one to finish (it waits at most one step, plus its own prefill, while rows are free). Every
    row is ``max_prompt_tokens + max_new_tokens`` wide, so the K/V budget fixes the rows at start.
    ``on_text`` gets the text as it is decoded (deltas, whole characters only); ``on_done`` gets the
    ``Completion`` or the exception that ended the request, once for every request submitted. A request
    whose prompt is too long fails alone; an error inside a step fails the requests in that step (the rows
    are reset) and the loop goes on. A handle's ``cancelled = True`` frees the request's row at the next
    step (a client that went away) and answers it with ``concurrent.futures.CancelledError``, unless it
    finished first. ``engine.generate`` must not be called while the loop runs: both would use the one model.
    """

    def __init__(self, engine: TransformersEngine, max_prompt_tokens: int, max_new_tokens: int):
        import queue

        max_positions = getattr(engine.config, "max_position_embeddings", None) or 1 << 30
        if max_prompt_tokens < 1 or max_new_tokens < 1:
            raise RedlineError("max_prompt_tokens and max_new_tokens must be at least 1")
        self.engine = engine
        self.max_prompt_tokens = min(max_prompt_tokens, max_positions - 1)
        self.max_new_tokens = max_new_tokens
        longest = min(self.max_prompt_tokens + max_new_tokens, max_positions)
        engine._check_window(longest)
        self.width = _round_up(longest + ROW_MULTIPLE, SPAN_MULTIPLE)
        self.rows = engine._rows_cap(self.width, engine.max_batch)
        self.inbox: queue.Queue[_Item] = queue.Queue()
        self._tokenizer, self._encode_lock = copy.deepcopy(engine.tokenizer), threading.Lock()
        self.steps = 0
        self.batch: _DecodeBatch | None = None  # the rows now decoding (set by the loop's thread)
        self._stopping = False
        # submit's check and queueing, and the final drain of the inbox, one at a time: a request queued after the
        # drain would never be answered
        self._closing = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="redline-decode", daemon=True)

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt, for a server to call from its worker threads, never in the decode loop.

        On a copy of the tokenizer, one call at a time: a fast tokenizer used from two threads at
        once can fail with "Already borrowed".
        """
        with self._encode_lock:
            return encode_prompt(self._tokenizer, prompt)

    def check(self, ids: list[int], params: SamplingParams) -> None:
        """Refuse a request this loop cannot take (a ``RedlineError`` naming the limit)."""
        if not ids:
            raise RedlineError("the prompt has no tokens")
        if len(ids) > self.max_prompt_tokens:
            raise RedlineError(f"the prompt has {len(ids)} tokens; this server takes at most {self.max_prompt_tokens}")
        if params.max_new_tokens > self.max_new_tokens:
            raise RedlineError(
                f"max_tokens {params.max_new_tokens} is over this server's limit of {self.max_new_tokens}"
            )

    def submit(self, ids: list[int], params: SamplingParams, seed: int, on_done, on_text=None) -> _Item:
        """Queue a request; the returned handle's ``cancelled = True`` drops it at the next step."""
        self.check(ids, params)
        item = self.engine._item(0, ids, params, seed)
        item.on_done, item.on_text = on_done, on_text
        with self._closing:
            if self._stopping or not self._thread.is_alive():
                raise RuntimeError("the decode loop is not running")
            self.inbox.put(item)
        return item

    def start(self) -> "ContinuousBatcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the loop; every request not yet answered gets ``on_done(RuntimeError)`` (a caller waiting on it
        would wait forever)."""
        self._stopping = True
        self._thread.join(timeout=30)

    def _run(self) -> None:
        pending: list[_Item] = []  # popped from the end: oldest last
        try:
            self._loop(pending)
        finally:  # stopped, or the loop itself failed: answer what is left, in rows, pending or still in the inbox
            with self._closing:
                self._stopping = True  # no request queued after this drain
                left = pending + ([self.batch.row_item[b] for b in range(self.batch.n)] + self.batch.admitting
                                  if self.batch is not None else []) + self._take_inbox()
            stopped = RuntimeError("the decode loop stopped before this request finished")
            for item in left:
                _call(item.on_done, _cancelled() if item.cancelled else stopped)

    def _loop(self, pending: list[_Item]) -> None:
        import queue

        engine = self.engine
        engine.model.eval()
        batch = self.batch = _DecodeBatch(engine, self.rows, self.width, self.max_new_tokens)
        with torch.inference_mode(), _attention_of(engine.model, ATTENTION):
            while not self._stopping:
                try:  # wait for work only when there is none
                    new = [self.inbox.get(timeout=0.05)] if not pending and not batch.n else []
                except queue.Empty:
                    continue
                pending[:0] = reversed(new + self._take_inbox())
                for item in [it for it in pending if it.cancelled]:
                    _call(item.on_done, _cancelled())
                pending[:] = [it for it in pending if not it.cancelled]
                try:
                    for item, _ in batch.retire([b for b in range(batch.n) if batch.row_item[b].cancelled]):
                        _call(item.on_done, _cancelled())
                    if not pending and not batch.n:
                        continue
                    finished = batch.step(pending)
                except Exception as e:  # an engine fault: fail the rows of this step and its newcomers, start afresh
                    self._answer(batch.retired)  # finished at admission, before the fault: answered as they are
                    for item in [batch.row_item[b] for b in range(batch.n)] + batch.admitting:
                        _call(item.on_done, e)
                    # answered: out of reach of the final answers, and the old cache freed before the new one is made
                    batch = self.batch = None
                    batch = self.batch = _DecodeBatch(engine, self.rows, self.width, self.max_new_tokens)
                    continue
                self.steps += 1
                self._answer(finished)
                for b in range(batch.n):
                    item = batch.row_item[b]
                    if item.on_text is not None:
                        delta = self._delta(item, batch.tokens(b))
                        if delta:
                            _call(item.on_text, delta)

    def _take_inbox(self) -> list[_Item]:
        """Every request queued so far, oldest first, without waiting."""
        import queue

        taken = []
        while True:
            try:
                taken.append(self.inbox.get_nowait())
            except queue.Empty:
                return taken

    def _answer(self, finished: list[tuple[_Item, list[int]]]) -> None:
        for item, ids in finished:
            try:
                completion = self.engine._completion(item, ids)
            except Exception as e:
                completion = e
            _call(item.on_done, completion)

    def _delta(self, item: _Item, ids: list[int]) -> str:
        """The text that ``ids`` adds since the last call, in whole characters (TGI's incremental decode)."""
        decode = self.engine.tokenizer.decode
        prefix, read = item.decoded
        before = decode(ids[prefix:read], skip_special_tokens=True)
        now = decode(ids[prefix:], skip_special_tokens=True)
        if len(now) > len(before) and not now.endswith("\ufffd"):
            item.decoded = (read, len(ids))
            return now[len(before):]
        return ""


def _cancelled() -> Exception:
    import concurrent.futures

    return concurrent.futures.CancelledError("the request was cancelled")


def _call(callback, value) -> None:
    """A callback of the server's: its failure must not stop the decode loop of every other request."""
    if callback is None:
        return
    with contextlib.suppress(Exception):
        callback(value)


def _advance(bar, amount: float) -> None:
    bar.update(min(amount, bar.total - bar.n))  # float sums may overshoot the total by a hair


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _progress(total: int, enabled: Progress):
    """A tqdm bar over items, with the rate and the time left (a no-op when disabled; the caller's own bar where
    ``enabled`` is one: see ``Engine.generate``).

    Each decode step moves it by 1/max_new_tokens of an item per active row, and a finished item by
    what it had left: items of one batch tend to finish together, and a bar that only counted
    finished items would sit at 0 with no estimate until they do.
    """
    return enabled if not isinstance(enabled, bool) else progress_bar(total, enabled=enabled)
