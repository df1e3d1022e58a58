"""Losses as pure functions of tensors.

``ranking_loss`` is InstructGPT's reward-model loss (Ouyang et al. 2022, arXiv 2203.02155, eq. 1):
all C(K,2) comparisons of one prompt form one batch element, each completion gets one forward
pass, and the loss of the element is the mean over its comparisons of −log σ(r_w − r_l).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ranking_loss(scores: torch.Tensor, winners: torch.Tensor, losers: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Mean over groups of the mean over each group's comparisons of −log σ(r_w − r_l).

    scores   (N,)  one reward per completion in the batch (all groups flattened)
    winners  (C,)  index into ``scores`` of the better completion of each comparison
    losers   (C,)  index of the worse one
    groups   (C,)  which group (prompt) each comparison belongs to, in [0, n_groups)
    """
    per_comparison = -F.logsigmoid(scores[winners] - scores[losers])  # (C,)
    sums = torch.zeros(n_groups, dtype=scores.dtype, device=scores.device).index_add(0, groups, per_comparison)
    counts = torch.zeros(n_groups, dtype=scores.dtype, device=scores.device).index_add(0, groups, torch.ones_like(per_comparison))
    present = counts > 0
    return (sums[present] / counts[present]).mean()


def pairwise_accuracy(scores: torch.Tensor, winners: torch.Tensor, losers: torch.Tensor) -> float:
    """Share of comparisons where the better completion scores strictly higher."""
    if winners.numel() == 0:
        return float("nan")
    return (scores[winners] > scores[losers]).float().mean().item()
