"""Choosing the next token from logits: greedy, temperature and nucleus (top-p) sampling.

Pure functions of tensors, so they are tested by hand. Sampling is by inverse CDF with one uniform
number per row and step, drawn from that row's own ``torch.Generator``: a row's token depends only on
its own logits and its own seed, never on which other rows share the batch. (Gumbel-max would need a
vocabulary's worth of random numbers per row and step; ``torch.multinomial`` takes one generator per
call, so it would need a Python call per row.)
"""

from __future__ import annotations

import torch


def uniform_stream(seed: int, n: int) -> torch.Tensor:
    """The first ``n`` uniforms in [0, 1) of the stream for ``seed``: token t of a row uses element t."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
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


def inverse_cdf(weights: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Index i of each row with probability weights[i] / sum(weights), chosen by the uniform u of the row.

    weights: (n, V) non-negative; uniforms: (n,) in [0, 1). The first index whose cumulative weight
    exceeds u * total; a zero weight never adds to the cumulative sum, so it is never chosen.
    """
    cdf = weights.cumsum(dim=-1)
    target = uniforms.to(cdf.dtype).unsqueeze(-1) * cdf[:, -1:]
    index = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    return index.clamp_(max=weights.shape[-1] - 1)


def sample(logits: torch.Tensor, temperature: float, top_p: float, uniforms: torch.Tensor) -> torch.Tensor:
    """Next token ids (n,) from logits (n, V); temperature 0 is greedy (argmax, uniforms unused)."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p >= 1.0:
        return inverse_cdf(probs, uniforms)
    kept, order = nucleus(probs, top_p)
    return order.gather(-1, inverse_cdf(kept, uniforms).unsqueeze(-1)).squeeze(-1)
