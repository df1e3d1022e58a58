"""The sampling maths of redline.generation.sampling, on hand-computed tensors."""

import pytest

torch = pytest.importorskip("torch")

from redline.generation.sampling import inverse_cdf, nucleus, sample, uniform_stream  # noqa: E402


def test_inverse_cdf_picks_by_cumulative_weight_and_never_a_zero_weight():
    # weights 1/8, 0, 1/2, 3/8 -> cumulative 1/8, 1/8, 5/8, 1 (exact in binary)
    w = torch.tensor([[0.125, 0.0, 0.5, 0.375]] * 6)
    u = torch.tensor([0.0, 0.1, 0.125, 0.6, 0.625, 0.999], dtype=torch.float64)
    # u=0.125 sits on the first boundary: the first cumulative weight > 0.125 is index 2, not the zero at 1
    assert inverse_cdf(w, u).tolist() == [0, 0, 2, 2, 3, 3]


def test_a_uniform_that_rounds_to_one_never_picks_a_zero_weight_tail():
    """u = 1 - 2^-30 is below 1 in float64 and 1.0 in float32: the target was the total, which only the zero tail
    after a nucleus reached, and the last token of the vocabulary (the least likely) came out."""
    w = torch.zeros(1, 2048)
    w[0, 0] = 1.0  # the nucleus: one token; every block after the first holds zeros
    u = torch.tensor([1 - 2**-30], dtype=torch.float64)
    assert float(u.float()) == 1.0
    assert inverse_cdf(w, u).tolist() == [0]
    probs = torch.full((1, 2048), 0.1 / 2047)
    probs[0, 0] = 0.9
    assert sample(torch.log(probs), 1.0, 0.5, u).tolist() == [0]  # only token 0 is in the top-p 0.5 nucleus


def test_inverse_cdf_normalizes_by_the_row_total():
    w = torch.tensor([[2.0, 2.0], [1.0, 3.0]])
    u = torch.tensor([0.49, 0.26], dtype=torch.float64)
    assert inverse_cdf(w, u).tolist() == [0, 1]  # 0.49*4 = 1.96 < 2; 0.26*4 = 1.04 > 1


def test_nucleus_keeps_the_token_that_crosses_top_p():
    probs = torch.tensor([[0.125, 0.5, 0.125, 0.25]])
    kept, order = nucleus(probs, 0.6)
    # sorted: 0.5 (id 1), 0.25 (id 3), 0.125, 0.125; mass above each: 0, 0.5, 0.75, 0.875 -> keep 2
    assert order[0, :2].tolist() == [1, 3]
    assert kept.tolist() == [[0.5, 0.25, 0.0, 0.0]]
    kept, _ = nucleus(probs, 0.5)
    assert kept.tolist() == [[0.5, 0.0, 0.0, 0.0]]
    kept, _ = nucleus(probs, 1.0)
    assert kept.sum().item() == 1.0


def test_sample_greedy_is_argmax():
    logits = torch.tensor([[0.0, 3.0, 1.0], [5.0, -1.0, 4.9]])
    assert sample(logits, 0.0, 1.0, torch.zeros(2, dtype=torch.float64)).tolist() == [1, 0]


def test_sample_top_p_maps_back_to_token_ids():
    # probs after softmax at T=1: id 2 dominates; with top_p tiny only id 2 can come out
    logits = torch.tensor([[0.0, 1.0, 8.0, 2.0]] * 3)
    u = torch.tensor([0.0, 0.5, 0.999], dtype=torch.float64)
    assert sample(logits, 1.0, 0.01, u).tolist() == [2, 2, 2]


def test_sample_follows_the_softmax_distribution():
    logits = torch.tensor([1.0, 0.0, -1.0, 2.0]).repeat(40000, 1)
    u = torch.rand(40000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    counts = torch.bincount(sample(logits, 0.5, 1.0, u), minlength=4).double() / 40000
    expected = torch.softmax(logits[0] / 0.5, -1).double()
    assert torch.allclose(counts, expected, atol=0.01)


def test_uniform_stream_depends_on_the_seed_only():
    a, b, c = uniform_stream(3, 10), uniform_stream(3, 10), uniform_stream(4, 10)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(uniform_stream(3, 4), a[:4])  # a prefix of the same stream
    assert ((a >= 0) & (a < 1)).all()


def test_inverse_cdf_in_blocks_equals_the_flat_cumulative_sum():
    g = torch.Generator().manual_seed(1)
    w = torch.rand(50, 3000, generator=g) ** 8  # spiky, with many near-zero weights
    w[:, ::7] = 0.0
    u = torch.rand(50, generator=g, dtype=torch.float64)
    flat = torch.searchsorted(w.double().cumsum(-1), (u * w.double().sum(-1)).unsqueeze(-1), right=True).squeeze(-1)
    for block in (64, 1000, 1024, 4096):  # 1000 and 1024 leave a padded last block
        got = inverse_cdf(w, u, block=block)
        assert (w.gather(1, got[:, None]) > 0).all()
        assert (got == flat).float().mean() > 0.95  # equal but for float rounding at a boundary


def test_a_temperature_too_small_to_divide_by_is_greedy_not_the_last_token():
    """logits / 1e-45 overflowed to inf, softmax gave NaN, and the NaN row picked the vocabulary's last token."""
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.5], [0.0, -1.0, 4.0, 3.9]])
    u = torch.tensor([0.3, 0.9], dtype=torch.float64)
    for t in (1e-45, 1e-30, 1e-6):
        assert sample(logits, t, 1.0, u).tolist() == [1, 2]
        assert sample(logits, t, 0.9, u).tolist() == [1, 2]
