"""The maths of PPO for language models, as pure functions of tensors.

Shapes: B sequences, A response tokens (right-padded; ``mask`` is 1 on real tokens, and a row's
real tokens come first), V vocabulary. Every function here is tested against values worked out by
hand in tests/test_ops_rl.py; ``train/ppo.py`` composes them and never re-derives them inline.

- ``logprobs_from_logits``, ``entropy_from_logits``: per-token log π(a|s) and H(π(·|s));
- ``kl_k1``, ``kl_k3``: per-token estimates of KL(π ‖ π_ref) from samples of π (Schulman,
  "Approximating KL divergence", 2020): k1 = log π − log π_ref is the one InstructGPT puts in the
  reward (unbiased, but single samples can be negative); k3 = (r − 1) − log r with
  r = π_ref/π is unbiased too, never negative and lower-variance, so it is logged beside k1;
- ``kl_penalized_rewards``: InstructGPT's per-token reward, −β·k1 on every token plus the reward
  model's score on the last one;
- ``gae``: generalised advantage estimation (Schulman et al. 2016, arXiv 1506.02438);
- ``rloo_advantages``: REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al. 2024, arXiv
  2402.14740): K samples per prompt, each one's baseline the mean reward of the other K − 1;
- ``masked_mean``, ``masked_var``, ``masked_whiten``: statistics over real tokens only (the variance is
  the population's, divided by n; TRL's divides by n − 1: ``train/ppo.py``'s deviation 18);
- ``clipped_policy_loss``, ``clipped_value_loss``: PPO's objectives (Schulman et al. 2017,
  arXiv 1707.06347), with the clip fractions that show how far an update moved;
- ``adaptive_kl_beta``: the KL controller of Ziegler et al. 2019 (arXiv 1909.08593, §2.2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is 1 (over all of them, or along ``dim``)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Variance of the masked values (the population variance: divided by n, not n − 1)."""
    mean = masked_mean(x, mask)
    return masked_mean((x - mean) ** 2, mask)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """``x`` scaled to unit variance over the masked values (and to mean 0 with ``shift_mean``);
    masked-out positions come back as 0."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(x.dtype)


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[label] per position: logits (B, A, V), labels (B, A) → (B, A)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """H(softmax(logits)) per position, in nats: (B, A, V) → (B, A).

    H = logsumexp(z) − Σ p·z, which needs no log of a probability that may underflow to 0.
    """
    logits = logits.float()
    p = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (p * logits).sum(-1)


def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """log π(a|s) − log π_ref(a|s) per sampled token: the penalty InstructGPT puts in the reward."""
    return logprobs - ref_logprobs


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """(r − 1) − log r with r = π_ref(a|s)/π(a|s): unbiased like k1, never negative; for logging."""
    log_ratio = ref_logprobs - logprobs
    return torch.expm1(log_ratio) - log_ratio


def kl_penalized_rewards(
    scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, beta: float
) -> torch.Tensor:
    """InstructGPT's reward per token: −β·(log π − log π_ref) on every response token, and the
    score of the whole response added on its last token.

    scores (B,), logprobs/ref_logprobs/mask (B, A) → rewards (B, A), 0 on padding.
    """
    rewards = -beta * kl_k1(logprobs, ref_logprobs) * mask.to(logprobs.dtype)
    last = (mask.sum(dim=1) - 1).clamp(min=0).long()  # index of each row's last real token
    rewards[torch.arange(rewards.shape[0], device=rewards.device), last] += scores.to(rewards.dtype)
    return rewards


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns, (B, A) each.

    δ_t = r_t + γ·V_{t+1} − V_t,  Â_t = δ_t + γλ·Â_{t+1},  return_t = Â_t + V_t.
    The state after a row's last real token is terminal (V = 0): padding is zeroed before the
    recursion, so it adds nothing. Right padding only (a row's real tokens come first).
    """
    mask = mask.to(values.dtype)
    values, rewards = values * mask, rewards * mask
    steps = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(steps)):
        next_value = values[:, t + 1] if t + 1 < steps else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def rloo_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """REINFORCE leave-one-out: each sample's reward less the mean reward of the other samples of its prompt.

    ``rewards`` (B,) holds B/k consecutive groups of k samples of one prompt each; returns (B,)
    advantages A_i = R_i − 1/(k−1)·Σ_{j≠i} R_j = k/(k−1)·(R_i − mean of the group). Needs k ≥ 2.
    """
    if k < 2 or rewards.shape[0] % k:
        raise ValueError(f"RLOO needs groups of k >= 2 samples that fill the batch; got k={k} for {rewards.shape[0]}")
    groups = rewards.view(-1, k)
    baseline = (groups.sum(dim=1, keepdim=True) - groups) / (k - 1)
    return (groups - baseline).reshape(-1)


def clipped_policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate, to minimise: mean over tokens of max(−Â·ρ, −Â·clip(ρ, 1 ± ε)), ρ = π/π_old.

    Returns (loss, clip fraction: share of tokens where the clipped term won, approx KL(π_old ‖ π) as
    mean ½(log ρ)², a second-order estimate used for monitoring only).
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).to(logprobs.dtype), mask)
    approx_kl = masked_mean(0.5 * log_ratio**2, mask)
    return loss, clipfrac.detach(), approx_kl.detach()


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor]:
    """½ · mean over tokens of max((V − R)², (V_clipped − R)²), V_clipped = V_old + clip(V − V_old, ±ε).

    Returns (loss, clip fraction: share of tokens where the clipped error was the larger).
    """
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    unclipped = (values - returns) ** 2
    clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).to(values.dtype), mask)
    return loss, clipfrac.detach()


def adaptive_kl_beta(beta: float, kl: float, target: float, horizon: int, n_steps: int) -> float:
    """Ziegler et al.'s controller: β ← β·(1 + clip(KL/target − 1, ±0.2) · n_steps/horizon).

    ``kl`` is the measured KL per episode (summed over its tokens), ``n_steps`` the episodes since the
    last update; β grows when the policy drifts past the target and shrinks when it stays inside.
    """
    error = min(max(kl / target - 1.0, -0.2), 0.2)
    return beta * (1.0 + error * n_steps / horizon)
