"""Choosing the next token from logits: greedy, temperature and nucleus (top-p) sampling.

Pure functions of tensors, so they are tested by hand. Sampling is by inverse CDF with one uniform
number per row and step, drawn from that row's own ``torch.Generator``: a row's token depends only on
its own logits and its own seed, never on which other rows share the batch. (Gumbel-max would need a
vocabulary's worth of random numbers per row and step; ``torch.multinomial`` takes one generator per
call, so it would need a Python call per row.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# A temperature under this decodes greedily: logits / T overflows float32 to inf for T near 1e-38, inf - inf is NaN,
# and a NaN row picked the last token of the vocabulary at every step. Below it a sample is all but always the argmax
# anyway (vLLM raises any temperature under 0.01 to 0.01 instead: vllm_engine's doc).
GREEDY_BELOW = 1e-5


def uniform_stream(seed: int, n: int) -> torch.Tensor:
    """The first ``n`` uniforms in [0, 1) of the stream for ``seed``: token t of a row uses element t. The seed is
    taken modulo 2**64, as torch reads a negative one (-1 is 2**64 - 1), so an item's ``seed + i`` past the top wraps
    (torch refused it once the model had loaded)."""
    generator = torch.Generator(device="cpu").manual_seed(seed % 2**64)
    return torch.rand(n, generator=generator, dtype=torch.float64)


def nucleus(probs: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The smallest set of most likely tokens whose probability reaches ``top_p``, per row.

    probs: (n, V) rows that sum to 1. Returns (kept, order): ``kept`` (n, V) the probabilities sorted
    descending with every token outside the nucleus set to 0, and ``order`` (n, V) the token ids in
    that sorted order. The token that crosses ``top_p`` is kept, so no row is ever empty.
    """
    sorted_probs, order = probs.sort(dim=-1, descending=True, stable=True)
    before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass strictly above each token
    kept = sorted_probs.masked_fill(before >= top_p, 0.0)
    return kept, order


def inverse_cdf(weights: torch.Tensor, uniforms: torch.Tensor, block: int = 1024) -> torch.Tensor:
    """Index i of each row with probability weights[i] / sum(weights), chosen by the uniform u of the row.

    weights: (n, V) non-negative; uniforms: (n,) in [0, 1). The first index whose cumulative weight
    exceeds u * total; a zero weight never adds to the cumulative sum, so it is never chosen.
    Two levels, because a cumulative sum is a sequential scan: sums of ``block`` weights locate the
    block, and only that block of each row is scanned (a full (64, 49152) cumsum took a tenth of a
    decode step of the embedded model).
    """
    n, vocab = weights.shape
    pad = -vocab % block
    blocks = F.pad(weights, (0, pad)).view(n, -1, block) if pad else weights.view(n, -1, block)
    block_cdf = blocks.sum(dim=-1).cumsum(dim=-1)  # (n, blocks)
    total = block_cdf[:, -1:]
    # A uniform within 2^-25 of 1 rounds to 1.0 in float32 and made the target the total, which only a zero-weight
    # tail block reaches (a token outside the nucleus); kept strictly below the total.
    target = torch.minimum(uniforms.to(block_cdf.dtype).unsqueeze(-1) * total, torch.nextafter(total, torch.zeros_like(total)))
    chosen = torch.searchsorted(block_cdf, target, right=True).clamp_(max=block_cdf.shape[1] - 1)
    before = torch.where(chosen > 0, block_cdf.gather(1, (chosen - 1).clamp_(min=0)), 0.0)
    local = blocks[torch.arange(n, device=weights.device), chosen.squeeze(-1)]  # (n, block)
    local_cdf = local.cumsum(dim=-1) + before
    index = torch.searchsorted(local_cdf, target, right=True).squeeze(-1)
    # Rounding can leave the target past the block's last cumulative value: take its last nonzero weight.
    last_nonzero = block - 1 - (local.flip(-1) > 0).to(torch.uint8).argmax(dim=-1)
    index = torch.where(index >= block, last_nonzero, index)
    return (chosen.squeeze(-1) * block + index).clamp_(max=vocab - 1)


def sample(logits: torch.Tensor, temperature: float, top_p: float, uniforms: torch.Tensor) -> torch.Tensor:
    """Next token ids (n,) from logits (n, V); temperature 0 (under ``GREEDY_BELOW``) is greedy (argmax, uniforms
    unused)."""
    if temperature < GREEDY_BELOW:
        return logits.argmax(dim=-1)
    scaled = logits.float() if temperature == 1.0 else logits.float() / temperature
    probs = torch.softmax(scaled, dim=-1)
    if top_p >= 1.0:
        return inverse_cdf(probs, uniforms)
    kept, order = nucleus(probs, top_p)
    return order.gather(-1, inverse_cdf(kept, uniforms).unsqueeze(-1)).squeeze(-1)
