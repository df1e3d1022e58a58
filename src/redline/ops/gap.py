"""The reward-gap model's loss: five Bradley–Terry terms over the four ways to pair y_w and y_l.

Wang et al. 2023, "Enabling language models to implicitly learn self-improvement" (PIT),
arXiv 2310.00898, §3: ``r_gap(x, y1, y2)`` says how much better y1 is than the reference y2. For a
preference pair (y_w better than y_l) the target order is

    r_gap(w,l) > r_gap(w,w) ≈ r_gap(l,l) > r_gap(l,w)

and the loss is one Bradley–Terry term −log σ(a − b) per ordering a > b:

    (w,l)>(w,w)   (w,l)>(l,l)   (w,l)>(l,w)   (w,w)>(l,w)   (l,l)>(l,w)

Deviations:
  1. The paper (as reported) sums the five terms with no stated weights. Here the loss of a pair is
     their weighted mean, Σ_k w_k·term_k / Σ_k w_k, equal weights by default: at equal scores it is
     log 2, the same scale as a plain reward model's loss, so the same learning rates work.
  2. ``anchor_loss`` (off unless asked for) is ours: the five terms only compare gaps, so a constant
     added to every gap changes nothing and r_gap(y, y) floats. A squared pull of self-comparisons
     toward 0 pins "no better than the reference" at 0, which makes the gap's sign readable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Columns of a (P, 4) gap matrix: r_gap of (candidate, reference) for one preference pair.
WL, WW, LL, LW = 0, 1, 2, 3
# (higher, lower) column for each of the five orderings, in the paper's order.
ORDERINGS: tuple[tuple[int, int], ...] = ((WL, WW), (WL, LL), (WL, LW), (WW, LW), (LL, LW))
ORDERING_NAMES = ("wl>ww", "wl>ll", "wl>lw", "ww>lw", "ll>lw")


def gap_terms(gaps: torch.Tensor) -> torch.Tensor:
    """(5, P) the Bradley–Terry term −log σ(a − b) of each ordering for each pair.

    gaps  (P, 4)  r_gap(w,l), r_gap(w,w), r_gap(l,l), r_gap(l,w) of P preference pairs
    """
    hi = gaps[:, [a for a, _ in ORDERINGS]]  # (P, 5)
    lo = gaps[:, [b for _, b in ORDERINGS]]  # (P, 5)
    return -F.logsigmoid(hi - lo).T


def gap_ranking_loss(gaps: torch.Tensor, weights: tuple[float, ...] | list[float] = (1.0,) * 5) -> torch.Tensor:
    """Mean over pairs of the weighted mean of the five terms (deviation 1).

    gaps     (P, 4)  as in ``gap_terms``; P ≥ 1
    weights  (5,)    one weight per ordering of ``ORDERING_NAMES``; not all zero
    """
    w = torch.as_tensor(weights, dtype=gaps.dtype, device=gaps.device)  # (5,)
    if w.shape != (5,) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be 5 non-negative numbers, not all zero; got {list(weights)}")
    per_pair = (w[:, None] * gap_terms(gaps)).sum(0) / w.sum()  # (P,)
    return per_pair.mean()


def anchor_loss(self_gaps: torch.Tensor) -> torch.Tensor:
    """Mean of r_gap(y, y)² over self-comparisons (deviation 2); 0 for none.

    self_gaps  (M,)  r_gap of responses compared with themselves
    """
    return (self_gaps**2).mean() if self_gaps.numel() else self_gaps.new_zeros(())


def ordering_accuracies(gaps: torch.Tensor) -> dict[str, float]:
    """Share of pairs where each ordering holds strictly (a tie is not a success).

    gaps  (P, 4)  as in ``gap_terms``
    """
    if gaps.shape[0] == 0:
        return {name: float("nan") for name in ORDERING_NAMES}
    return {name: (gaps[:, a] > gaps[:, b]).float().mean().item() for name, (a, b) in zip(ORDERING_NAMES, ORDERINGS)}
