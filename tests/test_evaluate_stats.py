"""The statistics of evaluate.py against cases worked out by hand."""

import numpy as np
import pytest

from redline.evaluate import (
    agreement,
    bootstrap_interval,
    cohen_kappa,
    count_verdicts,
    fit_logistic,
    length_controlled_win_rate,
    length_features,
    scores_of,
    summarize,
    win_rate,
    word_count,
)
from redline.records import Judgment


def test_ties_count_half_and_invalid_is_left_out():
    # 3 wins, 2 ties, 1 loss, 2 invalid: (3 + 2/2) / 6 = 4/6
    winners = ["a", "a", "a", "tie", "tie", "b", "invalid", "invalid"]
    assert win_rate(winners) == pytest.approx(4 / 6)
    assert count_verdicts(winners) == {"wins": 3, "ties": 2, "losses": 1, "invalid": 2, "pairs": 8}
    assert list(scores_of(winners)) == [1, 1, 1, 0.5, 0.5, 0]


def test_all_ties_is_one_half_and_all_invalid_is_none():
    assert win_rate(["tie"] * 5) == 0.5
    assert win_rate(["invalid"] * 4) is None
    assert win_rate([]) is None
    s = summarize([_j("invalid")] * 3)
    assert s["win_rate"] is None and s["ci95"] is None and s["lc_win_rate"] is None
    assert s["invalid_rate"] == 1.0


def test_bootstrap_interval_covers_the_true_rate_on_simulated_verdicts():
    # 400 verdicts drawn with P(A wins) = 0.7: the 95% interval should hold 0.7 (and be about
    # ±1.96·sqrt(.7·.3/400) = ±0.045 wide); 20 independent draws, at least 17 must cover it.
    rng = np.random.default_rng(1)
    covered = 0
    for trial in range(20):
        scores = (rng.random(400) < 0.7).astype(float)
        lo, hi = bootstrap_interval(scores, resamples=1000, seed=trial)
        assert 0.06 < hi - lo < 0.12
        covered += lo <= 0.7 <= hi
    assert covered >= 17


def test_bootstrap_interval_of_constant_scores_is_a_point():
    assert bootstrap_interval(np.ones(10), 200) == (1.0, 1.0)
    assert bootstrap_interval(np.array([]), 200) is None


def test_a_win_rate_of_one_verdict_throughout_has_an_interval_not_a_point():
    """20 wins of 20 gave [100, 100] (a bootstrap of one value), read as certainty: the Wilson score interval there."""
    from redline.evaluate import summarize, win_rate_interval

    low, high = win_rate_interval(np.ones(20))
    assert high == 1.0 and 0.83 < low < 0.84  # 20 / (20 + 1.96²) = 0.839
    low, high = win_rate_interval(np.zeros(200))
    assert low == 0.0 and 0.018 < high < 0.020
    low, high = win_rate_interval(np.full(20, 0.5))  # all ties: a half each
    assert low < 0.5 < high and high - low > 0.3
    mixed = np.array([1.0] * 15 + [0.0] * 5)  # any spread: the bootstrap, as before
    assert win_rate_interval(mixed, 500, 3) == bootstrap_interval(mixed, 500, 3)
    assert win_rate_interval(np.ones(1)) is None
    wins = [Judgment(id=str(i), prompt="p", a="x", b="y", winner="a", judge="t", order="ab") for i in range(20)]
    assert summarize(wins)["ci95"][0] < 0.84


def test_cohen_kappa_on_a_small_table():
    # Judge 1 vs judge 2 on 10 pairs:      j2=a  j2=b
    #                              j1=a      4     1
    #                              j1=b      2     3
    # p_o = 7/10; p_e = (5/10)(6/10) + (5/10)(4/10) = 0.5; kappa = (0.7 - 0.5)/(1 - 0.5) = 0.4
    x = ["a"] * 5 + ["b"] * 5
    y = ["a", "a", "a", "a", "b", "a", "a", "b", "b", "b"]
    assert cohen_kappa(x, y) == pytest.approx(0.4)
    assert cohen_kappa(x, x) == pytest.approx(1.0)
    assert cohen_kappa(["a"] * 3, ["a"] * 3) is None  # p_e = 1: undefined
    assert cohen_kappa([], []) is None


def test_agreement_leaves_invalid_pairs_out():
    x = ["a", "b", "tie", "invalid", "a"]
    y = ["a", "a", "tie", "b", "invalid"]
    result = agreement(x, y)
    # 3 pairs valid in both: (a,a) (b,a) (tie,tie) -> 2/3 agree
    assert result["both_valid"] == 3 and result["agreement"] == pytest.approx(2 / 3)
    assert result["table"]["b"]["a"] == 1
    # p_e = P1(a)P2(a) + P1(b)P2(b) + P1(tie)P2(tie) = (1/3)(2/3) + (1/3)(0) + (1/3)(1/3) = 1/3
    # kappa = (2/3 - 1/3) / (1 - 1/3) = 0.5
    assert result["kappa"] == pytest.approx(0.5)


def test_length_controlled_rate_equals_the_raw_rate_when_lengths_are_equal():
    scores = np.array([1, 1, 0, 0.5, 1, 0, 1])
    lc, slope = length_controlled_win_rate(scores, np.full(7, 10), np.full(7, 10))
    assert lc == pytest.approx(scores.mean(), abs=1e-9)
    assert slope == 0.0


def test_length_controlled_rate_removes_a_length_effect():
    # A wins exactly when it is longer, and it is longer in 3 of 4 pairs: raw 75%. Read at zero
    # length difference the rate moves toward ½ (the penalty keeps the slope finite).
    scores = np.array([1.0, 1.0, 1.0, 0.0] * 10)
    len_a = np.array([30, 30, 30, 10] * 10)
    len_b = np.array([10, 10, 10, 30] * 10)
    lc, slope = length_controlled_win_rate(scores, len_a, len_b)
    assert slope > 0
    assert 0.5 <= lc < 0.75


def test_length_controlled_rate_of_all_wins_is_one():
    assert length_controlled_win_rate(np.ones(5), np.arange(5), np.zeros(5))[0] == 1.0


def test_logistic_fit_recovers_known_coefficients():
    # Data drawn from sigmoid(0.5 + 2x): the fit should find them to within sampling error.
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 20000)
    y = (rng.random(20000) < 1 / (1 + np.exp(-(0.5 + 2 * x)))).astype(float)
    b0, b1 = fit_logistic(x, y, l2=0.0)
    assert b0 == pytest.approx(0.5, abs=0.06) and b1 == pytest.approx(2.0, abs=0.12)


def test_length_features_are_tanh_of_standardised_differences():
    # differences 2 and -2, sd 2: tanh(1), tanh(-1)
    assert np.allclose(length_features(np.array([3, 1]), np.array([1, 3])), [np.tanh(1), np.tanh(-1)])


def test_word_count():
    # It's | a | test | isn't | it | 3 | words | no | 9: apostrophes keep a word whole
    assert word_count("It's a test, isn't it? 3 words... no: 9") == 9


def _j(winner, order="ab", a="one two", b="three", meta=None):
    return Judgment(prompt="p", a=a, b=b, winner=winner, judge="t", order=order, meta=meta or {})


def test_summary_position_numbers():
    both = [
        _j("a", "both", meta={"orders": {"ab": "a", "ba": "a"}}),
        _j("tie", "both", meta={"orders": {"ab": "a", "ba": "b"}}),
        _j("invalid", "both", meta={"orders": {"ab": "a", "ba": "invalid"}}),
    ]
    s = summarize(both, resamples=100)
    assert s["position_consistency"] == 0.5  # 1 of the 2 pairs with both answers valid
    assert s["first_shown_win_rate"] is None
    # Shown first: A (ab, A won), B (ba, B won), A (ab, B won) -> first won 2 of 3
    once = [_j("a", "ab"), _j("b", "ba"), _j("b", "ab")]
    s = summarize(once, resamples=100)
    assert s["first_shown_win_rate"] == pytest.approx(2 / 3)
    assert s["position_consistency"] is None
    assert s["mean_words_a"] == 2 and s["mean_words_b"] == 1


def test_score_difference_reads_the_scores_in_the_order_shown():
    from redline.evaluate import score_difference

    # A reward judge's scores as shown: ab -> [A, B]; ba -> [B, A]. A: 2, 1, 3; B: 0, 2, 1 -> means 2 and 1, A - B 1.
    shown = [_j("a", "ab", meta={"scores": [2.0, 0.0]}), _j("a", "ba", meta={"scores": [2.0, 1.0]}),
             _j("a", "ab", meta={"scores": [3.0, 1.0]})]
    s = score_difference(shown, resamples=200)
    assert s["score"] == "scores" and s["mean_score_a"] == 2.0 and s["mean_score_b"] == 1.0
    assert s["score_difference"] == 1.0
    low, high = s["score_difference_ci95"]
    assert -1.0 <= low <= 1.0 <= high <= 2.0  # the per-pair differences are 2, -1, 2
    oracle = summarize([_j("b", "ba", meta={"quality": [1.0, 0.5]}), _j("tie", "ab", meta={"quality": [0.0, 0.0]})], 100)
    assert (oracle["score"], oracle["mean_score_a"], oracle["mean_score_b"]) == ("quality", 0.25, 0.5)
    # A judgment that keeps no score (an LLM judge asked both orders) leaves the difference out altogether.
    assert score_difference(shown + [_j("a", "both", meta={"orders": {"ab": "a", "ba": "a"}})]) == {}
    assert "score_difference" not in summarize([_j("a")], 100)


def test_one_verdict_gives_no_interval():
    # One pair has no spread to resample: a bootstrap "interval" of it is the point itself, which reads as certainty.
    assert bootstrap_interval(np.array([1.0]), 200) is None
    s = summarize([_j("a", meta={"quality": [1.0, 0.0]}), _j("invalid")], 100)
    assert s["win_rate"] == 1.0 and s["ci95"] is None and s["lc_ci95"] is None
    assert s["score_difference"] == 1.0 and s["score_difference_ci95"] is None
    assert bootstrap_interval(np.array([1.0, 0.0]), 200) is not None


def test_the_intervals_do_not_depend_on_the_order_of_the_pairs():
    # The same judgments in another order (a reordered --a file, a judgments file whose retried pairs come last)
    # are the same evaluation: every number, intervals included, must come out the same.
    rng = np.random.default_rng(0)
    judgments = [_j(str(rng.choice(["a", "b", "tie"])), str(rng.choice(["ab", "ba"])), a="w " * int(rng.integers(1, 9)),
                    meta={"quality": [float(rng.random()), float(rng.random())]}) for _ in range(60)]
    for i, j in enumerate(judgments):
        j.id = f"q{i}"
    forward, backward = summarize(judgments, 500), summarize(judgments[::-1], 500)
    for key in ("ci95", "lc_ci95", "score_difference_ci95"):
        assert forward[key] == backward[key], key


def test_an_accuracy_interval_over_one_prompt_is_none_not_a_point():
    """Resampling prompts, one prompt (or one that holds a comparison beside ones of ties only) has no spread: its
    interval was [x, x] (67% [67%, 67%] from one held-out prompt), read as certainty. Two prompts, by hand: one
    all right, one all wrong, of 3 comparisons each: every resample is 0, 1/2 or 1, so the interval is [0, 1]."""
    from redline.records import Ranking
    from redline.train.reward import accuracy_difference, comparison_accuracy, prompt_interval

    three = lambda p: Ranking(prompt=p, responses=list("abc"), ranks=[0, 1, 2])
    one = comparison_accuracy([three("p")], [[3.0, 1.0, 2.0]])
    assert one["eval_accuracy"] == round(2 / 3, 4) and one["eval_accuracy_ci95"] is None
    tied = Ranking(prompt="q", responses=["a", "b"], ranks=[0, 0])  # a prompt of ties only: nothing to count
    assert comparison_accuracy([three("p"), tied], [[3.0, 1.0, 2.0], [1.0, 0.0]])["eval_accuracy_ci95"] is None
    assert accuracy_difference([three("p")], [[3.0, 2.0, 1.0]], [[1.0, 2.0, 3.0]])["eval_accuracy_difference_ci95"] is None
    assert prompt_interval([], 0, 1) is None and prompt_interval([[1.0, 3.0]], 0, 1) is None
    assert prompt_interval([[3.0, 3.0], [0.0, 3.0]], 0, 1) == [0.0, 1.0]


def test_an_accuracy_interval_with_every_comparison_right_is_not_a_point():
    """A reward model right on every held-out comparison had the interval [100, 100] (each resampled prompt is 100%),
    read as certainty: the Wilson score interval over the prompts counted, as the win rate's."""
    from redline.evaluate import wilson_interval
    from redline.records import Ranking
    from redline.train.reward import comparison_accuracy, prompt_interval

    rankings = [Ranking(prompt=f"p{i}", responses=list("abc"), ranks=[0, 1, 2]) for i in range(20)]
    right = [[3.0, 2.0, 1.0]] * 20
    low, high = comparison_accuracy(rankings, right)["eval_accuracy_ci95"]
    assert high == 1.0 and 0.83 < low < 0.84  # 20 prompts: 20 / (20 + 1.96²), not 60 comparisons' 0.94
    assert prompt_interval([[0.0, 3.0], [0.0, 2.0]], 0, 1) == [0.0, round(wilson_interval(0.0, 2)[1], 4)]
    assert prompt_interval([[1.0, 2.0], [2.0, 4.0]], 0, 1)[0] < 0.5 < prompt_interval([[1.0, 2.0], [2.0, 4.0]], 0, 1)[1]
    mixed = [[3.0, 2.0, 1.0]] * 10 + [[1.0, 2.0, 3.0]] * 10  # any spread: the bootstrap, as before
    assert comparison_accuracy(rankings, mixed)["eval_accuracy_ci95"] == prompt_interval([[3, 3]] * 10 + [[0, 3]] * 10, 0, 1)


def test_the_length_controlled_interval_of_one_verdict_throughout_is_not_a_point():
    """After the plain rate's interval became Wilson's for 20 wins of 20, the LC rate beside it (the same 100%: a fit
    of one verdict is that verdict) kept the bootstrap's point, [100, 100], in the report's table and the curve."""
    from redline.evaluate import summarize

    def judged(winner, n=20):
        return [Judgment(id=str(i), prompt="p", a="x " * (i % 5 + 1), b="y " * (i % 3 + 1), winner=winner, judge="t",
                         order="ab") for i in range(n)]

    for winner in ("a", "b", "tie"):
        summary = summarize(judged(winner))
        assert summary["lc_win_rate"] == summary["win_rate"]
        assert summary["lc_ci95"] == summary["ci95"] and summary["ci95"][1] - summary["ci95"][0] > 0.1
    assert summarize(judged("a"), resamples=0)["lc_ci95"] is None  # --bootstrap 0: no intervals, as before
    mixed = judged("a")[:15] + judged("b")[15:]
    assert summarize(mixed)["lc_ci95"] != summarize(mixed)["ci95"]  # any spread: its own bootstrap, as before


def test_bootstrap_draws_a_bounded_chunk_of_indices_and_gives_the_interval_of_one_whole_draw(monkeypatch):
    """200k pairs drew 256 x 200k indices at once (800 MB with their scores); the chunk is bounded by
    RESAMPLE_CHUNK, and the generator's stream is the same in any chunks, so the interval is that of one draw."""
    import redline.evaluate as E

    scores = np.random.default_rng(5).choice([0.0, 0.5, 1.0], size=300)
    whole = np.random.default_rng(7).integers(0, 300, size=(100, 300))
    means = scores[whole].mean(axis=1)
    expected = (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))
    sizes = []
    real = np.random.default_rng

    class Recording:
        def __init__(self, seed):
            self.rng = real(seed)

        def integers(self, low, high, size):
            sizes.append(size)
            return self.rng.integers(low, high, size=size)

    monkeypatch.setattr(E, "RESAMPLE_CHUNK", 1000)
    monkeypatch.setattr(E.np.random, "default_rng", Recording)
    assert bootstrap_interval(scores, resamples=100, seed=7) == expected
    assert all(rows * n <= 1000 for rows, n in sizes) and sum(rows for rows, _ in sizes) == 100
