"""The K-way reward model on tiny-random: batching, the loss falls, accuracy is reported, the bias
normalises demonstrations, and the result loads as a plain sequence-classification model."""

import json

import pytest
import torch

import redline.models

from redline import RedlineError
from redline.cli import main
from redline.models import load_reward_model, load_tokenizer
from redline.records import Ranking
from redline.train.reward import GroupCollator, encode_groups, split_by_prompt


def rankings(n=24):
    # The best response is long and says "good"; the worst is short: learnable by a tiny model.
    return [
        {"prompt": f"Question {i}?", "responses": [f"good answer {i} " * 4, f"answer {i}", "no"], "ranks": [0, 1, 2]}
        for i in range(n)
    ]


def test_groups_keep_every_comparison_of_a_prompt_in_one_element():
    tok = load_tokenizer("tiny-random")
    r = Ranking(prompt="p", responses=["a", "b", "c", "d"], ranks=[0, 1, 1, 2])
    groups, counts = encode_groups([r], tok, 64, as_pairs=False)
    assert len(groups) == 1 and len(groups[0]["input_ids"]) == 4
    assert groups[0]["pairs"] == [(0, 1), (0, 2), (0, 3), (1, 3), (2, 3)]  # the tie (1, 2) is dropped
    assert counts == {"cut_sequences": 0, "dropped_sequences": 0, "identical_after_cut": 0, "dropped_prompts": 0}
    pairs, _ = encode_groups([r], tok, 64, as_pairs=True)
    assert len(pairs) == 5 and all(len(g["input_ids"]) == 2 for g in pairs)  # a forward pass per side


def test_long_chats_lose_the_prompts_start_and_a_response_that_cannot_fit_is_dropped():
    tok = load_tokenizer("tiny-random")
    long_prompt = "Tell me about the sea. " * 40
    r = Ranking(prompt=long_prompt, responses=["short yes", "short no", "word " * 80], ranks=[0, 1, 2])
    groups, counts = encode_groups([r], tok, 48, as_pairs=False)
    # the two short ones are cut (their prompt's start goes), the long one fills 48 tokens alone: dropped
    assert counts == {"cut_sequences": 2, "dropped_sequences": 1, "identical_after_cut": 0, "dropped_prompts": 0}
    (group,) = groups
    assert group["pairs"] == [(0, 1)] and [len(x) for x in group["input_ids"]] == [48, 48]
    assert tok.decode(group["input_ids"][0]).rstrip().endswith("short yes<|im_end|>")  # the response whole
    # right-cutting would have made these two identical; cutting the prompt keeps them apart
    assert group["input_ids"][0] != group["input_ids"][1]
    _, counts = encode_groups([Ranking(prompt=long_prompt, responses=["word " * 80, "word " * 90], ranks=[0, 1])],
                              tok, 48, as_pairs=True)
    assert counts["dropped_prompts"] == 1


def test_collator_offsets_indices_per_group():
    batch = GroupCollator(pad_id=0)([
        {"input_ids": [[5, 6], [7]], "pairs": [(0, 1)]},
        {"input_ids": [[1], [2], [3, 4, 5]], "pairs": [(2, 0), (2, 1)]},
    ])
    assert batch["input_ids"].shape == (5, 3)
    assert batch["winners"].tolist() == [0, 4, 4] and batch["losers"].tolist() == [1, 2, 3]
    assert batch["groups"].tolist() == [0, 1, 1] and int(batch["n_groups"]) == 2
    assert batch["attention_mask"][1].tolist() == [1, 0, 0]


def test_split_never_puts_a_prompt_in_both_parts():
    rs = [Ranking(prompt=f"p{i % 10}", responses=["a", "b"], ranks=[0, 1]) for i in range(40)]
    train, held = split_by_prompt(rs, 0.2, seed=0)
    assert {r.prompt for r in train}.isdisjoint({r.prompt for r in held}) and len(held) == 8


@pytest.mark.parametrize("prompts, share, held_prompts", [(4, 0.1, 1), (2, 0.1, 1), (1, 0.1, 0), (4, 0.0, 0), (20, 0.1, 2)])
def test_a_share_too_small_to_round_to_a_prompt_still_holds_one_out(prompts, share, held_prompts):
    # 0.1 of four prompts rounded to none: the held-out accuracy asked for was n/a; one prompt is never all of them
    rs = [Ranking(prompt=f"p{i % prompts}", responses=["a", "b"], ranks=[0, 1]) for i in range(2 * prompts)]
    train, held = split_by_prompt(rs, share, seed=0)
    assert len({r.prompt for r in held}) == held_prompts and len(train) + len(held) == len(rs)


@pytest.mark.parametrize("prompts, share, held_prompts", [(2, 0.8, 1), (3, 0.9, 2), (10, 0.99, 9)])
def test_a_share_that_rounds_to_every_prompt_still_leaves_one_to_train_on(prompts, share, held_prompts):
    # 0.8 of two prompts held out both: the trainers then said the file had no comparison to train on
    rs = [Ranking(prompt=f"p{i % prompts}", responses=["a", "b"], ranks=[0, 1]) for i in range(2 * prompts)]
    train, held = split_by_prompt(rs, share, seed=0)
    assert len({r.prompt for r in held}) == held_prompts and len(train) + len(held) == len(rs)


def test_a_share_that_holds_out_every_prompt_is_refused_naming_the_file(jsonl, tmp_path, capsys):
    data = jsonl(rankings(2))
    for share, prompts in (("1", "2 prompts"), ("0.6", "1 prompt")):
        source = data if share == "1" else jsonl(rankings(1), "one.jsonl")
        assert main(["train", "reward", "--data", str(source), "--model", "tiny-random", "--out", str(tmp_path / "rm"),
                     "--eval-split", share]) == 2
        assert (f"{source}: --eval-split {share} holds out every one of its {prompts}, so none is left to train on"
                in capsys.readouterr().err)
    assert not (tmp_path / "rm").exists()


def test_train_reward_cli(jsonl, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification

    # beside them two rankings all tied: one of a held-out prompt, held out with it; one of a prompt of its own
    _, held = split_by_prompt([Ranking(**r) for r in rankings()], 0.25, seed=0)
    tied = [{"prompt": held[0].prompt, "responses": ["x", "y", "z"], "ranks": [1, 1, 1]},
            {"prompt": "Tied?", "responses": ["x", "y"], "ranks": [0, 0]}]
    data = jsonl(rankings() + tied)
    demos = jsonl([{"prompt": f"Question {i}?", "response": f"good answer {i}"} for i in range(4)], "demos.jsonl")
    run = tmp_path / "rm"
    assert main(["train", "reward", "--data", str(data), "--model", "tiny-random", "--out", str(run), "--no-lora",
                 "--learning-rate", "3e-3", "--max-steps", "12", "--batch-size", "4", "--logging-steps", "1",
                 "--warmup", "0", "--eval-split", "0.25", "--normalize-with", str(demos), "--save-steps", "100"]) == 0
    info = json.loads((run / "redline.json").read_text())
    m = info["metrics"]
    assert info["kind"] == "reward" and m["mode"] == "groups" and m["eval_comparisons"] == 6 * 3
    assert info["data"] == [str(data), str(demos)]  # every file it read (the demonstrations set its bias)
    assert (m["eval_ties"], m["eval_all_tied_rankings"], m["eval_all_tied_comparisons"]) == (0, 1, 3)
    assert (m["train_prompts"], m["train_all_tied_rankings"]) == (18, 1)
    assert m["eval_accuracy"] >= 0.9  # learnt: the held-out prompts ordered as their labels (an untrained head: ~0.5)
    ci = m["eval_accuracy_ci95"]
    assert (f"held-out: {m['eval_accuracy']:.1%} [{ci[0]:.1%}, {ci[1]:.1%}] right on 18 decisive comparisons "
            "(0 labelled ties not scored; 1 ranking all tied, with 3 comparisons, left out)") in capsys.readouterr().err
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in log if "loss" in row]
    assert losses[-1] < losses[0]
    # A plain transformers load works, and with the stored bias demonstrations average 0.
    model = AutoModelForSequenceClassification.from_pretrained(run)
    assert model.config.num_labels == 1
    from redline.models import chat_text, score_texts

    tok = load_tokenizer(str(run))
    bar = type("Bar", (), {"n": 0, "update": lambda self, k: setattr(self, "n", self.n + k)})()
    scores = score_texts(model, tok, [chat_text(tok, f"Question {i}?", f"good answer {i}") for i in range(4)],
                         batch_size=3, bar=bar)
    assert abs(sum(scores) / 4) < 1e-3 and bar.n == 4  # the progress bar advances by every text scored
    assert abs(model.config.reward_bias - m["reward_bias"]) < 1e-3
    # Gone on with (this run as the start, as runs/rm_aug went on from models/reward): normalised afresh, not on top
    # of the start's own bias, so the demonstrations again average 0.
    more = tmp_path / "more"
    assert main(["train", "reward", "--data", str(data), "--model", str(run), "--out", str(more), "--max-steps", "2",
                 "--batch-size", "4", "--eval-split", "0.25", "--normalize-with", str(demos), "--save-steps", "100"]) == 0
    again = load_reward_model(str(more), device="cpu")
    scores = score_texts(again, tok, [chat_text(tok, f"Question {i}?", f"good answer {i}") for i in range(4)])
    assert abs(sum(scores) / 4) < 1e-3
    capsys.readouterr()
    # `evaluate rankings --held-out-of` scores the same held-out prompts and reports the same figures.
    assert main(["evaluate", "rankings", "--model", str(run), "--data", str(data), "--held-out-of", str(run),
                 "--out", str(tmp_path / "ev")]) == 0
    again = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert {k: again[k] for k in m if k.startswith("eval_")} == {k: v for k, v in m.items() if k.startswith("eval_")}
    assert again["prompts"] == 6 and again["max_length"] == json.loads((run / "train_config.json").read_text())["max_length"]
    assert capsys.readouterr().out.startswith(f"held-out: {m['eval_accuracy']:.1%}")
    scored = [json.loads(line) for line in (tmp_path / "ev" / "scores.jsonl").read_text().splitlines()]
    assert len(scored) == again["rankings"] and all(len(r["scores"]) == len(r["responses"]) for r in scored)
    # --against: a second model on the very same texts, and the paired difference (here the model itself: 0).
    assert main(["evaluate", "rankings", "--model", str(run), "--against", str(run), "--data", str(data),
                 "--held-out-of", str(run), "--out", str(tmp_path / "vs")]) == 0
    vs = json.loads((tmp_path / "vs" / "summary.json").read_text())
    assert vs["against"]["eval_accuracy"] == vs["eval_accuracy"] == m["eval_accuracy"]
    assert vs["eval_accuracy_difference"] == 0.0 and vs["eval_accuracy_difference_ci95"] == [0.0, 0.0]
    assert f"{run} minus {run}: +0.0 points [+0.0, +0.0] on the labels' decisive comparisons" in capsys.readouterr().out
    assert all(r["against_scores"] == r["scores"] for r in
               map(json.loads, (tmp_path / "vs" / "scores.jsonl").read_text().splitlines()))
    assert main(["evaluate", "rankings", "--model", str(run), "--against", str(data), "--data", str(data),
                 "--out", str(tmp_path / "bad")]) == 2
    assert "--against" in capsys.readouterr().err and not (tmp_path / "bad" / "summary.json").exists()
    assert main(["evaluate", "rankings", "--model", str(run), "--data", str(data), "--out", str(tmp_path / "all")]) == 0
    assert json.loads((tmp_path / "all" / "summary.json").read_text())["eval_comparisons"] == 24 * 3  # every prompt
    assert capsys.readouterr().out.startswith(f"on all 24 prompts of {data} (not only held-out ones): ")
    other = jsonl(rankings(8), "other.jsonl")
    assert main(["evaluate", "rankings", "--model", str(run), "--data", str(other), "--held-out-of", str(run),
                 "--out", str(tmp_path / "x")]) == 2
    assert "held out prompts of" in capsys.readouterr().err
    assert main(["evaluate", "rankings", "--model", str(run), "--data", str(data), "--held-out-of", str(tmp_path),
                 "--out", str(tmp_path / "y")]) == 2
    assert "not a `redline train reward` run folder" in capsys.readouterr().err


def test_preferences_train_as_k_equals_2(jsonl, tmp_path):
    data = jsonl([{"prompt": f"q{i}", "chosen": "good good good", "rejected": "bad"} for i in range(8)])
    run = tmp_path / "rm"
    assert main(["train", "reward", "--data", str(data), "--model", "tiny-random", "--out", str(run),
                 "--max-steps", "2", "--batch-size", "4"]) == 0
    m = json.loads((run / "redline.json").read_text())["metrics"]
    assert m["mode"] == "pairs" and m["train_comparisons"] == 7 and m["eval_comparisons"] == 1  # without --pairs
    # `evaluate rankings` on a preferences file with two pairs a prompt counts prompts, not records, and
    # reads at the length the run trained at
    twice = jsonl([{"prompt": f"q{i}", "chosen": "good good good", "rejected": r} for i in range(3) for r in ("bad", "worse")]
                  + [{"prompt": "q0", "chosen": "same", "rejected": "same"}], "twice.jsonl")
    assert main(["evaluate", "rankings", "--model", str(run), "--data", str(twice), "--out", str(tmp_path / "ev")]) == 0
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert (summary["prompts"], summary["rankings"], summary["eval_comparisons"]) == (3, 6, 6)
    assert (summary["eval_all_tied_rankings"], summary["eval_all_tied_comparisons"]) == (1, 1)  # the identical pair
    assert summary["max_length"] == json.loads((run / "train_config.json").read_text())["max_length"]


def test_train_prompts_counts_prompts_not_records(jsonl, tmp_path):
    """A preferences file holds several pairs a prompt: train_prompts counted the records (8 here, of 4 prompts)."""
    data = jsonl([{"prompt": f"q{i}", "chosen": "good good good", "rejected": r} for i in range(4) for r in ("bad", "worse")])
    run = tmp_path / "rm"
    assert main(["train", "reward", "--data", str(data), "--model", "tiny-random", "--out", str(run), "--eval-split", "0",
                 "--max-steps", "1", "--batch-size", "4", "--save-steps", "100"]) == 0
    m = json.loads((run / "redline.json").read_text())["metrics"]
    assert (m["train_prompts"], m["train_rankings"], m["train_comparisons"]) == (4, 8, 8)


def test_identical_preferences_are_counted_and_skipped(jsonl, capsys):
    from redline.train.reward import read_comparisons

    data = jsonl([{"prompt": "q1", "chosen": "good", "rejected": "bad"},
                  {"prompt": "q2", "chosen": "same", "rejected": "same "}])
    rankings = read_comparisons(str(data))
    assert [r.responses for r in rankings] == [["good", "bad"]]
    assert "1 preference(s) with chosen identical to rejected" in capsys.readouterr().err


META = {"instructions": [{"type": "lowercase"}], "topic": "tea"}
HAND_MADE = [
    # labels: 0 > 1 (tie 1 = 2); oracle agrees on 0 > 1 and ties 1, 2.
    Ranking(prompt="p1", responses=["a", "b", "c"], ranks=[0, 1, 1], meta={**META, "oracle_quality": [1.0, 0.0, 0.0]}),
    # labels: 0 > 1, but the oracle says 1 > 0 (a flipped label); the model follows the oracle.
    Ranking(prompt="p2", responses=["a", "b"], ranks=[0, 1], meta={**META, "oracle_quality": [0.0, 0.5]}),
    # labels: 0 > 1 where the oracle ties them (noise); the model scores them equal.
    Ranking(prompt="p3", responses=["a", "b"], ranks=[0, 1], meta={**META, "oracle_quality": [0.5, 0.5]}),
]
HAND_MADE_SCORES = [[2.0, 1.0, 0.0], [0.0, 1.0], [3.0, 3.0]]


def test_held_out_accuracy_counts_ties_and_sets_each_figure_beside_its_ceiling():
    """A hand-made set where the strict, decisive and oracle accuracies all differ."""
    from redline.train.reward import comparison_accuracy

    rs, scores = HAND_MADE, HAND_MADE_SCORES
    m = comparison_accuracy(rs, scores)
    # decisive labelled comparisons: p1 (0,1), (0,2); p2 (0,1); p3 (0,1) = 4; one labelled tie (p1: 1, 2).
    assert m["eval_comparisons"] == 4 and m["eval_ties"] == 1
    # the model: right, right, wrong (vs label), half (equal scores) = 2.5 / 4
    assert m["eval_accuracy"] == 0.625
    # the oracle against the labels: right, right, wrong, half = 2.5 / 4
    assert m["eval_label_ceiling"] == 0.625
    # oracle-decidable among them: p1 (0,1), (0,2), p2 (0,1) = 3; the model is right on all three,
    # the annotators' labels on two.
    assert m["eval_oracle_comparisons"] == 3 and m["eval_oracle_accuracy"] == 1.0
    assert m["eval_annotator_oracle_accuracy"] == round(2 / 3, 4)
    # Without oracle knowledge only the label figures are reported.
    plain = [Ranking(prompt="q", responses=["a", "b"], ranks=[0, 1])]
    assert set(comparison_accuracy(plain, [[1.0, 0.0]])) == {"eval_comparisons", "eval_ties", "eval_all_tied_rankings",
                                                             "eval_all_tied_comparisons", "eval_accuracy", "eval_accuracy_ci95"}
    low, high = m["eval_accuracy_ci95"]
    assert 0 <= low < m["eval_accuracy"] < high <= 1
    assert m["eval_oracle_accuracy_ci95"] == [0.3424, 1.0]  # right on all: Wilson's over the 2 prompts, not a point


def test_two_models_differ_pair_by_pair_with_a_paired_interval():
    """The hand-made set scored by a second model that gets p1's two label-decisive pairs wrong and p2's flipped
    label right: 2.5 - 1.5 of 4 on the labels (+0.25), 3 - 0 of 3 against the oracle (+1.0, in every resample)."""
    from redline.train.reward import accuracy_difference, comparison_accuracy

    other = [[0.0, 1.0, 2.0], [1.0, 0.0], [3.0, 3.0]]
    assert comparison_accuracy(HAND_MADE, other)["eval_accuracy"] == 0.375
    d = accuracy_difference(HAND_MADE, HAND_MADE_SCORES, other)
    assert d["eval_accuracy_difference"] == 0.25 and d["eval_oracle_accuracy_difference"] == 1.0
    low, high = d["eval_accuracy_difference_ci95"]
    assert -1.0 <= low < 0.25 < high <= 1.0  # p2 alone gives -1, p1 alone +1
    assert d["eval_oracle_accuracy_difference_ci95"] == [1.0, 1.0]
    same = accuracy_difference(HAND_MADE, HAND_MADE_SCORES, HAND_MADE_SCORES)
    assert same["eval_accuracy_difference"] == 0.0 and same["eval_accuracy_difference_ci95"] == [0.0, 0.0]
    plain = [Ranking(prompt="q", responses=["a", "b"], ranks=[0, 1])]  # no oracle: the label figure only
    assert accuracy_difference(plain, [[1.0, 0.0]], [[0.0, 1.0]]) == {"eval_accuracy_difference": 1.0,
                                                                      "eval_accuracy_difference_ci95": None}  # one prompt


def test_the_interval_resamples_prompts_not_comparisons():
    """Two prompts of ten comparisons each, one all right and one all wrong: 50%, and the two prompts
    cannot say more (resampled comparisons would give about ±22 points; resampled prompts 0 to 100%)."""
    from redline.train.reward import comparison_accuracy

    five = lambda p: Ranking(prompt=p, responses=list("abcde"), ranks=[0, 1, 2, 3, 4])
    m = comparison_accuracy([five("p"), five("q")], [[5, 4, 3, 2, 1], [1, 2, 3, 4, 5]])
    assert m["eval_comparisons"] == 20 and m["eval_accuracy"] == 0.5 and m["eval_accuracy_ci95"] == [0.0, 1.0]
    # Preferences: ten records of one prompt are one unit, not ten.
    pairs = [Ranking(prompt=p, responses=["a", "b"], ranks=[0, 1]) for p in "pq" for _ in range(10)]
    m = comparison_accuracy(pairs, [[1.0, 0.0]] * 10 + [[0.0, 1.0]] * 10)
    assert m["eval_accuracy"] == 0.5 and m["eval_accuracy_ci95"] == [0.0, 1.0]


def test_all_tied_rankings_are_skipped_with_a_count(jsonl, capsys):
    from redline.train.reward import read_comparisons

    rows = rankings(3) + [{"prompt": "tied?", "responses": ["x", "y"], "ranks": [0, 0]}]
    kept = read_comparisons(str(jsonl(rows)))
    assert len(kept) == 3
    assert "skipped 1 of 4 prompts whose responses are all tied" in capsys.readouterr().err


def test_held_out_rankings_all_tied_are_counted_so_the_comparisons_add_up(jsonl, capsys):
    """A held-out ranking whose responses are all tied holds no comparison to score, and is left out of the
    figures; it is counted and said, so that decisive + labelled ties + all-tied comparisons are all of them."""
    from redline.cli import accuracy_summary
    from redline.train.reward import comparison_accuracy, read_comparisons_and_all_tied

    rows = [*(dict(prompt=r.prompt, responses=r.responses, ranks=r.ranks, meta=r.meta) for r in HAND_MADE),
            {"prompt": "p4", "responses": ["a", "b", "c"], "ranks": [2, 2, 2]}]
    kept, tied = read_comparisons_and_all_tied(str(jsonl(rows)))
    assert [r.prompt for r in kept] == ["p1", "p2", "p3"] and [r.prompt for r in tied] == ["p4"]
    m = comparison_accuracy(kept, HAND_MADE_SCORES, tied)
    assert (m["eval_comparisons"], m["eval_ties"]) == (4, 1)
    assert (m["eval_all_tied_rankings"], m["eval_all_tied_comparisons"]) == (1, 3)
    assert m["eval_comparisons"] + m["eval_ties"] + m["eval_all_tied_comparisons"] == 3 + 1 + 1 + 3  # every C(K, 2)
    # not scored, and not a prompt the interval resamples: every figure as without it
    assert {k: v for k, v in m.items() if "all_tied" not in k} == {
        k: v for k, v in comparison_accuracy(kept, HAND_MADE_SCORES).items() if "all_tied" not in k}
    assert accuracy_summary(m).startswith(
        f"held-out: 62.5% [{m['eval_accuracy_ci95'][0]:.1%}, {m['eval_accuracy_ci95'][1]:.1%}] right on 4 decisive "
        "comparisons (1 labelled tie not scored; 1 ranking all tied, with 3 comparisons, left out); the oracle")
    assert accuracy_summary(comparison_accuracy([], [], tied)) == (
        "held-out: no decisive comparison to score (0 labelled ties not scored; 1 ranking all tied, with 3 comparisons, "
        "left out)")
    # a preference whose chosen is its rejected is a ranking of two equal texts: one comparison, left out
    _, same = read_comparisons_and_all_tied(str(jsonl([{"prompt": "q", "chosen": "x", "rejected": "x"}], "p.jsonl")))
    assert comparison_accuracy([], [], same)["eval_all_tied_comparisons"] == 1


def test_the_summary_line_sets_each_figure_beside_its_ceiling():
    from redline.cli import accuracy_summary
    from redline.train.reward import comparison_accuracy

    m = comparison_accuracy(HAND_MADE, HAND_MADE_SCORES)
    assert accuracy_summary(m) == (
        f"held-out: 62.5% [{m['eval_accuracy_ci95'][0]:.1%}, {m['eval_accuracy_ci95'][1]:.1%}] right on 4 decisive "
        "comparisons (1 labelled tie not scored); the oracle itself scores 62.5% against these labels; against the "
        "oracle: 100.0% [34.2%, 100.0%] on the 3 pairs it can tell apart, where the annotators' labels are 66.7% right")
    plain = comparison_accuracy([Ranking(prompt="q", responses=["a", "b", "c"], ranks=[0, 1, 1])], [[1.0, 0.0, 0.0]])
    assert accuracy_summary(plain) == ("held-out: 100.0% right on 2 decisive comparisons "  # one prompt: no interval
                                       "(1 labelled tie not scored)")
    assert accuracy_summary(comparison_accuracy([], [])) == "held-out: no decisive comparison to score (0 labelled ties not scored)"
    only_oracle_ties = comparison_accuracy(HAND_MADE[2:], HAND_MADE_SCORES[2:])
    assert accuracy_summary(only_oracle_ties).endswith("the oracle itself scores 50.0% against these labels; "
                                                       "the oracle ties every one of them")


def test_scores_a_row_at_a_time_equal_the_padded_batch_and_so_do_their_gradients(monkeypatch):
    from redline.models import load_reward_model
    from redline.train import reward

    torch.manual_seed(0)
    model = load_reward_model("tiny-random", device="cpu")
    rows = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17]]  # unequal lengths: two of three padded
    batch = GroupCollator(model.config.pad_token_id)([{"input_ids": rows, "pairs": [(0, 1), (0, 2)]}])
    grads, scores = [], []
    for unpadded in (False, True):
        monkeypatch.setattr(redline.models, "UNPADDED_ON_CPU", unpadded)
        model.zero_grad()
        s = reward.completion_scores(model, batch["input_ids"], batch["attention_mask"])
        (s * torch.tensor([1.0, -2.0, 3.0])).sum().backward()
        scores.append(s.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert scores[0].shape == scores[1].shape == (3,)
    torch.testing.assert_close(scores[1], scores[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)


def test_eval_data_is_scored_as_given_and_must_hold_other_prompts(jsonl, tmp_path, capsys):
    tied = {"prompt": "Tied?", "responses": ["x", "y"], "ranks": [0, 0]}
    data, held = jsonl(rankings(8)), jsonl(rankings(12)[8:] + [tied], "held.jsonl")
    run = tmp_path / "rm"
    assert main(["train", "reward", "--data", str(data), "--eval-data", str(held), "--model", "tiny-random",
                 "--out", str(run), "--max-steps", "1", "--batch-size", "4", "--save-steps", "100"]) == 0
    m = json.loads((run / "redline.json").read_text())["metrics"]
    assert m["eval_comparisons"] == 4 * 3  # its 4 prompts
    assert (m["eval_all_tied_rankings"], m["eval_all_tied_comparisons"], m["train_all_tied_rankings"]) == (1, 1, 0)
    # held-out rankings that share prompts with the training data would not be held out: refused before any model
    overlap = jsonl(rankings(10)[6:], "overlap.jsonl")
    args = ["train", "reward", "--data", str(data), "--model", "tiny-random", "--max-steps", "1"]
    capsys.readouterr()
    assert main(args + ["--eval-data", str(overlap), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "overlap.jsonl: 2 of its prompts are also in" in err and "(the first: 'Question 6?')" in err
    with pytest.raises(SystemExit) as refused:  # argparse's own refusal of a share outside [0, 1]
        main(args + ["--eval-split", "-0.1", "--out", str(tmp_path / "c")])
    assert refused.value.code == 2 and "--eval-split: must be at least 0" in capsys.readouterr().err


def test_going_on_from_a_reward_run_refuses_held_out_prompts_it_trained_on(jsonl, tmp_path, capsys):
    """As README's `train reward --model models/reward --data runs/policy_rankings.jsonl`: new answers to the start's
    prompts, split afresh, would hold out prompts the start model learnt, and report its memory as held-out accuracy."""
    data = jsonl(rankings(12))
    start = tmp_path / "rm"
    assert main(["train", "reward", "--data", str(data), "--model", "tiny-random", "--out", str(start), "--max-steps", "1",
                 "--batch-size", "4", "--eval-split", "0.25", "--save-steps", "100"]) == 0
    _, held = split_by_prompt([Ranking(**r) for r in rankings(12)], 0.25, seed=0)
    # other answers to the same prompts, split with another seed: some of the start's training prompts held out
    policy = jsonl([{**r, "responses": [y + " again" for y in r["responses"]]} for r in rankings(12)], "policy.jsonl")
    args = ["train", "reward", "--model", str(start), "--data", str(policy), "--max-steps", "1", "--batch-size", "4",
            "--save-steps", "100"]
    capsys.readouterr()
    assert main(args + ["--eval-split", "0.25", "--seed", "1", "--out", str(tmp_path / "leak")]) == 2
    err = capsys.readouterr().err
    assert "of the held-out prompts were trained on by the start model" in err and str(start) in err
    assert not (tmp_path / "leak" / "redline.json").exists()
    # new answers to the start's training prompts, held out on the prompts the start held out: scored as held out
    held_prompts = {h.prompt for h in held}
    kept = jsonl([r for r in rankings(12) if r["prompt"] in held_prompts], "kept.jsonl")
    policy = jsonl([{**r, "responses": [y + " again" for y in r["responses"]]} for r in rankings(12)
                    if r["prompt"] not in held_prompts], "policy.jsonl")
    assert main(args + ["--eval-data", str(kept), "--out", str(tmp_path / "ok")]) == 0
    assert json.loads((tmp_path / "ok" / "redline.json").read_text())["metrics"]["eval_comparisons"] == 3 * 3
    # the start's data no longer where it was read: not checked, and said so
    data.rename(tmp_path / "moved.jsonl")
    capsys.readouterr()
    assert main(args + ["--eval-split", "0.25", "--seed", "1", "--out", str(tmp_path / "unchecked")]) == 0
    assert f"could not read what {start} ({data}) trained on from here" in capsys.readouterr().err


def test_skip_invalid_covers_the_normalising_demonstrations_too(jsonl, tmp_path, capsys):
    """--skip-invalid skips bad records wherever the command reads them: a bad line of --normalize-with is skipped
    and reported, the bias set on the others; without the flag it stops the run naming its file, line and field."""
    data = jsonl(rankings(8))
    demos = jsonl([{"prompt": "Question 1?", "response": "good answer 1"}, {"prompt": "Question 2?", "response": ""}],
                  "demos.jsonl")
    args = ["train", "reward", "--data", str(data), "--model", "tiny-random", "--max-steps", "1", "--batch-size", "4",
            "--normalize-with", str(demos), "--save-steps", "100"]
    assert main(args + ["--out", str(tmp_path / "stop")]) == 2
    assert "demos.jsonl:2: response: empty string" in capsys.readouterr().err
    assert main(args + ["--skip-invalid", "--out", str(tmp_path / "rm")]) == 0
    assert "demos.jsonl: 1 records, skipped 1 invalid" in capsys.readouterr().err
    assert "reward_bias" in json.loads((tmp_path / "rm" / "redline.json").read_text())["metrics"]


@pytest.mark.parametrize("train_prompts, trained", [(4, 4), (3, 3)])
def test_a_run_made_before_a_small_share_held_out_a_prompt_is_read_as_it_split(tmp_path, capsys, train_prompts, trained):
    """0.1 of four prompts held out none before split_by_prompt held out at least one: such a run's card counts every
    prompt trained on (4). Its held-out prompt is none, so a start model's training prompts are all four, and
    evaluate --held-out-of scores none of them as held out; a run made since (3 trained on) held one out."""
    from redline.train.reward import start_training_prompts

    data = tmp_path / "rankings.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rankings(4)))
    run = tmp_path / "rm"
    run.mkdir()
    (run / "redline.json").write_text(json.dumps({"kind": "reward", "base_model": "tiny-random",
                                                  "metrics": {"train_prompts": train_prompts}}))
    (run / "train_config.json").write_text(json.dumps({"model": "tiny-random", "data": str(data), "eval_split": 0.1,
                                                       "seed": 0, "limit": None, "max_length": 64}))
    assert len(start_training_prompts(str(run))[0]) == trained
    if trained == 4:  # before the model loads (this run has no weights)
        assert main(["evaluate", "rankings", "--model", str(run), "--data", str(data), "--held-out-of", str(run),
                     "--out", str(tmp_path / "eval")]) == 2
        assert "that run held out no prompt of" in capsys.readouterr().err


def test_normalising_on_demonstrations_scored_nan_is_refused_not_saved_as_a_nan_bias(jsonl, tmp_path, monkeypatch):
    """A model that overflowed scored a demonstration NaN: the bias, their mean negated, was NaN, saved into the model,
    and every score the run gave afterwards was NaN."""
    from types import SimpleNamespace

    import redline.train.reward as reward

    data = jsonl(rankings(4))
    demos = jsonl([{"prompt": f"Question {i}?", "response": f"good answer {i}"} for i in range(3)], "demos.jsonl")
    monkeypatch.setattr(reward, "score_texts", lambda model, tok, texts, **k: [0.5, float("nan"), 1.0][:len(texts)])
    monkeypatch.setattr(reward, "run_trainer", lambda trainer, out: SimpleNamespace(metrics={}))  # the step is not the point
    with pytest.raises(RedlineError, match=r"demos.jsonl: the trained model scored 1 of the 3 demonstrations NaN or "
                                           r"infinity \(first: the prompt 'Question 1\?'\)"):
        reward.train_reward(reward.RewardConfig(data=str(data), model="tiny-random", eval_split=0.0, max_steps=1,
                                                normalize_with=str(demos), save_steps=100), tmp_path / "rm")
    assert not (tmp_path / "rm" / "model.safetensors").exists()


def test_held_out_rankings_scored_nan_are_refused_not_reported_zero_accurate(jsonl, tmp_path, monkeypatch):
    """A run that diverged scored every held-out response NaN: NaN compares false both ways, so each comparison counted
    wrong and the card said 0.0% right [0, 49] (and saved the model), as if it ordered every pair backwards."""
    from types import SimpleNamespace

    import redline.train.reward as reward

    data = jsonl(rankings(8))
    monkeypatch.setattr(reward, "score_texts", lambda model, tok, texts, **k: [float("nan")] * len(texts))
    monkeypatch.setattr(reward, "run_trainer", lambda trainer, out: SimpleNamespace(metrics={}))  # the step is not the point
    with pytest.raises(RedlineError, match=r"\(--eval-split 0.5\): the trained model scored 4 of the 4 held-out "
                                           r"rankings NaN or infinity \(first: the prompt 'Question \d\?'\)"):
        reward.train_reward(reward.RewardConfig(data=str(data), model="tiny-random", eval_split=0.5, max_steps=1,
                                                save_steps=100), tmp_path / "rm")
    assert not (tmp_path / "rm" / "model.safetensors").exists()
