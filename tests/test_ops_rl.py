"""PPO maths against values worked out by hand (each test's comment shows the working)."""

import math

import pytest
import torch

from redline.ops.rl import (
    adaptive_kl_beta,
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    gae,
    kl_k1,
    kl_k3,
    kl_penalized_rewards,
    logprobs_from_logits,
    masked_mean,
    masked_var,
    masked_whiten,
    rloo_advantages,
)

X = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
M = torch.tensor([[1, 1, 0], [1, 0, 0]])


def test_masked_mean_and_var():
    # kept values 1, 2, 4: mean 7/3; per row: (1+2)/2 = 1.5 and 4/1 = 4.
    assert masked_mean(X, M).item() == pytest.approx(7 / 3)
    assert masked_mean(X, M, dim=1).tolist() == pytest.approx([1.5, 4.0])
    # deviations −4/3, −1/3, 5/3; squares 16/9, 1/9, 25/9; mean 42/27 = 14/9.
    assert masked_var(X, M).item() == pytest.approx(14 / 9)


def test_masked_whiten():
    # (1 − 7/3)/√(14/9) = (−4/3)/1.24722 = −1.06904; padding comes back 0.
    w = masked_whiten(X, M)
    assert w[0, 0].item() == pytest.approx(-1.06904, abs=1e-5)
    assert w[0, 2].item() == 0 and w[1, 1].item() == 0
    assert masked_mean(w, M).item() == pytest.approx(0, abs=1e-6)
    assert masked_var(w, M).item() == pytest.approx(1, abs=1e-5)
    # without the shift the mean 7/3 is kept: −1.06904 + 7/3 = 1.26429
    assert masked_whiten(X, M, shift_mean=False)[0, 0].item() == pytest.approx(1.26429, abs=1e-5)


def test_logprobs_and_entropy_from_logits():
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, math.log(3), -math.inf, -math.inf]]])  # (1, 2, 4)
    # row 0 uniform over 4: log p = −log 4, H = log 4 = 1.38629.
    # row 1 p = (1/4, 3/4): log p[1] = log 0.75 = −0.28768; H = 0.25·1.38629 + 0.75·0.28768 = 0.56233.
    lp = logprobs_from_logits(logits, torch.tensor([[2, 1]]))
    assert lp[0].tolist() == pytest.approx([-1.38629, -0.28768], abs=1e-5)
    assert entropy_from_logits(logits[:, :1])[0].tolist() == pytest.approx([1.38629], abs=1e-5)
    # −inf logits have p = 0 and add nothing (0·−inf would be NaN; softmax·logits must not be).
    h = entropy_from_logits(torch.tensor([[[0.0, math.log(3), -1e9, -1e9]]]))
    assert h.item() == pytest.approx(0.56233, abs=1e-5)


def test_kl_estimators():
    # π(a) = 0.5, π_ref(a) = 0.25: k1 = log 0.5 − log 0.25 = log 2 = 0.69315;
    # r = π_ref/π = 0.5, k3 = (r − 1) − log r = −0.5 + 0.69315 = 0.19315.
    lp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    assert kl_k1(lp, ref).item() == pytest.approx(0.69315, abs=1e-5)
    assert kl_k3(lp, ref).item() == pytest.approx(0.19315, abs=1e-5)
    # k3 is never negative, k1 can be: swap the two.
    assert kl_k1(ref, lp).item() < 0 < kl_k3(ref, lp).item()
    assert kl_k3(lp, lp).item() == 0


def test_kl_penalized_rewards():
    # β = 0.1. row 0: k1 = (0.5, 0, −1) → −β·k1 = (−0.05, 0, 0.1), + score 2 on the last token → 2.1.
    # row 1: k1 = (1, 0, pad) → (−0.1, 0, 0); the last real token is index 1: 0 + (−1) = −1.
    scores = torch.tensor([2.0, -1.0])
    lp = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, 5.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0], [-2.0, -1.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    r = kl_penalized_rewards(scores, lp, ref, mask, beta=0.1)
    assert r.tolist() == [pytest.approx([-0.05, 0.0, 2.1]), pytest.approx([-0.1, -1.0, 0.0])]


def test_gae_by_hand():
    # γ = 1, λ = 0.5, rewards (0, 0, 1), values (0.5, 0.5, 0.5):
    # t=2: δ = 1 + 0 − 0.5 = 0.5, Â = 0.5; t=1: δ = 0 + 0.5 − 0.5 = 0, Â = 0 + 0.5·0.5 = 0.25;
    # t=0: δ = 0, Â = 0.5·0.25 = 0.125. returns = Â + V = (0.625, 0.75, 1.0).
    adv, ret = gae(torch.tensor([[0.0, 0.0, 1.0]]), torch.full((1, 3), 0.5), torch.ones(1, 3), gamma=1.0, lam=0.5)
    assert adv[0].tolist() == pytest.approx([0.125, 0.25, 0.5])
    assert ret[0].tolist() == pytest.approx([0.625, 0.75, 1.0])


def test_gae_padding_is_terminal_and_gamma_discounts():
    # mask (1, 1, 0), garbage in the pad: rewards (0, 2, 9), values (1, 1, 7), γ = λ = 1.
    # t=1 is the last real token: δ = 2 + 0 − 1 = 1, Â = 1; t=0: δ = 0 + 1 − 1 = 0, Â = 0 + 1 = 1.
    adv, ret = gae(torch.tensor([[0.0, 2.0, 9.0]]), torch.tensor([[1.0, 1.0, 7.0]]), torch.tensor([[1, 1, 0]]), 1.0, 1.0)
    assert adv[0].tolist() == pytest.approx([1.0, 1.0, 0.0])
    assert ret[0].tolist() == pytest.approx([2.0, 2.0, 0.0])
    # γ = 0.5, λ = 1, rewards (1, 1), values 0: t=1: Â = 1; t=0: δ = 1, Â = 1 + 0.5·1 = 1.5.
    adv, _ = gae(torch.tensor([[1.0, 1.0]]), torch.zeros(1, 2), torch.ones(1, 2), gamma=0.5, lam=1.0)
    assert adv[0].tolist() == pytest.approx([1.5, 1.0])


def test_rloo_advantages_by_hand():
    # Two prompts, k = 3 samples each: rewards (1, 2, 6) and (0, 0, 3).
    # Prompt 1: baselines (2+6)/2 = 4, (1+6)/2 = 3.5, (1+2)/2 = 1.5 → advantages −3, −1.5, 4.5.
    # Prompt 2: baselines 1.5, 1.5, 0 → advantages −1.5, −1.5, 3.
    # (Check: k/(k−1)·(R − mean): mean 3 → 1.5·(−2, −1, 3) = (−3, −1.5, 4.5).)
    adv = rloo_advantages(torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0]), k=3)
    assert adv.tolist() == pytest.approx([-3.0, -1.5, 4.5, -1.5, -1.5, 3.0])
    # k = 2: each sample's baseline is the other one: (5, 1) → (4, −4).
    assert rloo_advantages(torch.tensor([5.0, 1.0]), k=2).tolist() == pytest.approx([4.0, -4.0])
    # Equal rewards in a group carry no signal: advantage 0 (whatever the level).
    assert rloo_advantages(torch.tensor([7.0, 7.0, 7.0, 7.0]), k=4).tolist() == [0.0] * 4
    with pytest.raises(ValueError, match="k >= 2"):
        rloo_advantages(torch.tensor([1.0, 2.0]), k=1)
    with pytest.raises(ValueError, match="fill the batch"):
        rloo_advantages(torch.tensor([1.0, 2.0, 3.0]), k=2)


def test_clipped_policy_loss_by_hand():
    # ratios ρ = (1.5, 0.5, 0.5, 1.5), advantages (1, 1, −1, −1), ε = 0.2:
    #   tok0: −Âρ = −1.5, −Â·clip = −1.2 → max −1.2 (clipped)
    #   tok1: −0.5 vs −0.8 → −0.5;  tok2: 0.5 vs 0.8 → 0.8 (clipped);  tok3: 1.5 vs 1.2 → 1.5
    # loss = (−1.2 − 0.5 + 0.8 + 1.5)/4 = 0.15; clip fraction 2/4.
    # approx KL = mean ½(log ρ)²: ½(log 1.5)² = 0.082201, ½(log 0.5)² = 0.240227 → 0.161214.
    old = torch.zeros(1, 4)
    lp = torch.log(torch.tensor([[1.5, 0.5, 0.5, 1.5]])).requires_grad_()
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    loss, clipfrac, approx_kl = clipped_policy_loss(lp, old, adv, torch.ones(1, 4), clip=0.2)
    assert loss.item() == pytest.approx(0.15)
    assert clipfrac.item() == pytest.approx(0.5)
    assert approx_kl.item() == pytest.approx(0.161214, abs=1e-5)
    # d/d log π of −Âρ is −Âρ; clipped tokens get none: (0, −0.5, 0, 1.5)/4.
    loss.backward()
    assert lp.grad[0].tolist() == pytest.approx([0.0, -0.125, 0.0, 0.375])


def test_clipped_policy_loss_ignores_padding():
    lp = torch.log(torch.tensor([[1.5, 0.5]]))
    loss, clipfrac, _ = clipped_policy_loss(lp, torch.zeros(1, 2), torch.ones(1, 2), torch.tensor([[0, 1]]))
    assert loss.item() == pytest.approx(-0.5) and clipfrac.item() == 0  # tok1 only: −Âρ = −0.5


def test_clipped_value_loss_by_hand():
    # ε = 0.2. tok0: V 1.0, V_old 0, R 0.5: V_clip 0.2; (1 − 0.5)² = 0.25 vs (0.2 − 0.5)² = 0.09 → 0.25
    # tok1: V = V_old = 0, R 1: both 1 → 1.  tok2: V 0.5, V_old 0, R 1.5: V_clip 0.2;
    # (0.5 − 1.5)² = 1 vs (0.2 − 1.5)² = 1.69 → 1.69 (clipped). loss = ½·(0.25 + 1 + 1.69)/3 = 0.49.
    v = torch.tensor([[1.0, 0.0, 0.5]])
    loss, clipfrac = clipped_value_loss(v, torch.zeros(1, 3), torch.tensor([[0.5, 1.0, 1.5]]), torch.ones(1, 3), 0.2)
    assert loss.item() == pytest.approx(0.49)
    assert clipfrac.item() == pytest.approx(1 / 3)


def test_adaptive_kl_beta():
    # β = 0.1, target 6, horizon 1000, 100 episodes:
    # KL 12: error clip(12/6 − 1 = 1) = 0.2 → 0.1·(1 + 0.2·0.1) = 0.102
    # KL 3: error −0.5 → −0.2 → 0.098;  KL 6.6: error 0.1 → 0.101;  KL on target: unchanged.
    assert adaptive_kl_beta(0.1, 12.0, 6.0, 1000, 100) == pytest.approx(0.102)
    assert adaptive_kl_beta(0.1, 3.0, 6.0, 1000, 100) == pytest.approx(0.098)
    assert adaptive_kl_beta(0.1, 6.6, 6.0, 1000, 100) == pytest.approx(0.101)
    assert adaptive_kl_beta(0.1, 6.0, 6.0, 1000, 100) == pytest.approx(0.1)
