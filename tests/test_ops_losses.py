"""Loss maths against values worked out by hand."""

import math

import torch

from redline.ops.losses import pairwise_accuracy, ranking_loss


def test_ranking_loss_one_group_by_hand():
    # K = 3, ranks best→worst: c0 > c1 > c2, scores 2, 1, 0 → comparisons (0,1) d=1, (0,2) d=2, (1,2) d=1
    # loss = mean(-log σ(1), -log σ(2), -log σ(1)) = (0.31326 + 0.12693 + 0.31326) / 3 = 0.25115
    scores = torch.tensor([2.0, 1.0, 0.0])
    w, l, g = torch.tensor([0, 0, 1]), torch.tensor([1, 2, 2]), torch.tensor([0, 0, 0])
    expected = (2 * math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-2))) / 3
    assert abs(ranking_loss(scores, w, l, g, 1).item() - expected) < 1e-6


def test_each_group_weighs_the_same_whatever_its_number_of_comparisons():
    # group 0: one comparison with d = 0 → log 2; group 1: three comparisons each d = 0 → log 2
    # per-group means are both log 2, so the loss is log 2 (a flat mean over 4 pairs would be too,
    # so make group 1's differences large: its mean → ~0, the loss → log 2 / 2).
    scores = torch.tensor([0.0, 0.0, 50.0, 25.0, 0.0])
    w, l, g = torch.tensor([0, 2, 2, 3]), torch.tensor([1, 3, 4, 4]), torch.tensor([0, 1, 1, 1])
    assert abs(ranking_loss(scores, w, l, g, 2).item() - math.log(2) / 2) < 1e-6


def test_gradient_pushes_winner_up_and_loser_down():
    scores = torch.tensor([0.0, 0.0], requires_grad=True)
    ranking_loss(scores, torch.tensor([0]), torch.tensor([1]), torch.tensor([0]), 1).backward()
    assert scores.grad[0] < 0 < scores.grad[1]  # descent raises the winner, lowers the loser


def test_pairwise_accuracy():
    scores = torch.tensor([3.0, 1.0, 2.0, 2.0])
    # (0,1): 3 > 1 yes; (1,2): 1 > 2 no; (2,3): 2 > 2 no (a tie is not a win) → 1/3
    assert abs(pairwise_accuracy(scores, torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3])) - 1 / 3) < 1e-6
