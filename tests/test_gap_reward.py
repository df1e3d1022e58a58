"""PIT's reward-gap model: the five-term loss by hand, the four texts of a pair, the collator, the
three-way split, training on tiny-random (the loss falls, per-ordering accuracy is reported, the
result is a plain classifier of kind gap-reward), identical pairs, and run kinds refused both ways."""

import json
import math
import re

import pytest
import torch

from redline import RedlineError
from redline.cli import main
from redline.models import (
    ModelCard,
    check_gap_reward_model,
    check_reward_model,
    load_reward_model,
    load_tokenizer,
    save_model,
)
from redline.ops.gap import ORDERING_NAMES, anchor_loss, gap_ranking_loss, gap_terms, ordering_accuracies
from redline.records import Preference
from redline.train.gap_reward import (
    GapCollator,
    encode_pairs,
    gap_quad,
    gap_reward,
    split_thirds,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def sp(d):  # −log σ(d) = log(1 + e^−d)
    return math.log1p(math.exp(-d))


# ----------------------------------------------------------------------------- the loss, by hand


def test_five_terms_by_hand():
    # columns (w,l), (w,w), (l,l), (l,w) = 2, 1, 1, 0
    # orderings wl>ww d=1, wl>ll d=1, wl>lw d=2, ww>lw d=1, ll>lw d=1
    # terms: sp(1) = 0.313262 four times, sp(2) = 0.126928 once; mean = 1.379974 / 5 = 0.275995
    gaps = torch.tensor([[2.0, 1.0, 1.0, 0.0]])
    assert torch.allclose(gap_terms(gaps).squeeze(1), torch.tensor([sp(1), sp(1), sp(2), sp(1), sp(1)]), atol=1e-6)
    assert abs(gap_ranking_loss(gaps).item() - 0.275995) < 1e-5
    # equal scores: every term is log 2, so is the loss (a plain reward model's starting loss)
    assert abs(gap_ranking_loss(torch.zeros(3, 4)).item() - math.log(2)) < 1e-6


def test_weights_and_the_mean_over_pairs_by_hand():
    gaps = torch.tensor([[2.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 3.0]])
    # weights (0,0,1,0,0): only wl>lw; pair 0: sp(2) = 0.126928; pair 1: sp(-3) = 3.048587 → mean 1.587757
    assert abs(gap_ranking_loss(gaps, (0, 0, 1, 0, 0)).item() - (sp(2) + sp(-3)) / 2) < 1e-6
    # weights (2,0,0,0,1) on pair 0: (2·sp(1) + 1·sp(1)) / 3 = sp(1)
    assert abs(gap_ranking_loss(gaps[:1], (2, 0, 0, 0, 1)).item() - sp(1)) < 1e-6
    with pytest.raises(ValueError):
        gap_ranking_loss(gaps, (0, 0, 0, 0, 0))
    with pytest.raises(ValueError):
        gap_ranking_loss(gaps, (1, 1, 1))


def test_gradient_raises_wl_lowers_lw_and_balances_the_self_comparisons():
    # At equal scores each term's gradient is ∓σ(0)/5 = ∓0.1 on its two sides. (w,l) is the higher side
    # of three terms: −0.3; (l,w) the lower side of three: +0.3; (w,w) and (l,l) are lower once and
    # higher once: 0. Descent raises (w,l), lowers (l,w), leaves the self-comparisons.
    gaps = torch.zeros(1, 4, requires_grad=True)
    gap_ranking_loss(gaps).backward()
    assert torch.allclose(gaps.grad, torch.tensor([[-0.3, 0.0, 0.0, 0.3]]), atol=1e-6)


def test_anchor_loss_and_accuracies_by_hand():
    assert abs(anchor_loss(torch.tensor([1.0, -2.0])).item() - 2.5) < 1e-6  # (1 + 4) / 2
    assert anchor_loss(torch.tensor([])).item() == 0
    # pair 0 holds every ordering; pair 1 = (1, 1, 0, 0): wl>ww tie (no), wl>ll yes, wl>lw yes, ww>lw yes, ll>lw tie (no)
    acc = ordering_accuracies(torch.tensor([[2.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]]))
    assert list(acc) == list(ORDERING_NAMES)
    assert [acc[n] for n in ORDERING_NAMES] == [0.5, 1.0, 1.0, 1.0, 0.5]


# ----------------------------------------------------------------------------- data


def test_the_four_texts_put_the_reference_in_the_user_turn_and_the_candidate_in_the_assistant_turn():
    tok = load_tokenizer("tiny-random")
    wl, ww, ll, lw = gap_quad(tok, Preference(prompt="Name a colour.", chosen="WINNER", rejected="LOSER"))
    for text, candidate, reference in ((wl, "WINNER", "LOSER"), (ww, "WINNER", "WINNER"), (ll, "LOSER", "LOSER"),
                                       (lw, "LOSER", "WINNER")):
        user, assistant = text.split("<|im_start|>assistant\n")
        assert f"### Response\n{reference}" in user and "Name a colour." in user
        assert assistant.startswith(candidate)


def test_collator_and_identical_pairs_as_anchors_or_skipped():
    tok = load_tokenizer("tiny-random")
    prefs = [Preference(prompt="p", chosen="good", rejected="bad"), Preference(prompt="q", chosen="same", rejected=" same")]
    items, counts = encode_pairs(prefs, tok, 512, anchors=True)
    assert counts == {"pairs": 1, "identical_pairs": 1, "anchors": 1, "sequences": 5, "cut_sequences": 0,
                      "dropped_sequences": 0, "dropped_pairs": 0}
    assert [len(it["input_ids"]) for it in items] == [4, 1]
    batch = GapCollator(tok.pad_token_id)(items)
    assert batch["input_ids"].shape[0] == 5
    assert batch["quads"].tolist() == [[0, 1, 2, 3]] and batch["selfs"].tolist() == [1, 2, 4]
    items, counts = encode_pairs(prefs, tok, 8, anchors=False)  # skipped, counted; 8 tokens cut all four
    assert len(items) == 1 and counts["identical_pairs"] == 1 and counts["anchors"] == 0
    assert counts["cut_sequences"] == 4 and all(len(x) == 8 for x in items[0]["input_ids"])
    # the prompt's start goes, never the response's end: (w,l) still ends with w, (l,w) with l
    assert tok.decode(items[0]["input_ids"][0]).rstrip().endswith("good<|im_end|>")
    assert tok.decode(items[0]["input_ids"][3]).rstrip().endswith("bad<|im_end|>")
    items, counts = encode_pairs(prefs[:1], tok, 3, anchors=False)  # the response alone fills 3 tokens
    assert items == [] and counts["dropped_pairs"] == 1 and counts["dropped_sequences"] == 4
    assert counts["sequences"] == 4  # a dropped pair's four texts were encoded too: the report's total counts them


def test_thirds_are_equal_disjoint_and_the_same_for_both_commands():
    prefs = [Preference(prompt=f"p{i % 30}", chosen="a", rejected="b") for i in range(60)]
    sft, reward, rl = split_thirds(prefs, seed=3)
    keys = [{p.prompt for p in part} for part in (sft, reward, rl)]
    assert [len(k) for k in keys] == [10, 10, 10] and not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    assert [p.prompt for p in split_thirds(prefs, seed=3)[1]] == [p.prompt for p in reward]


# ----------------------------------------------------------------------------- training


def preferences(n=24):
    # The better response is long and says "good"; the worse is short: learnable by a tiny model.
    rows = [{"prompt": f"Question {i}?", "chosen": f"good answer {i} " * 4, "rejected": "no"} for i in range(n)]
    return rows + [{"prompt": "Same?", "chosen": "same", "rejected": "same"}]


def test_train_gap_reward_cli(jsonl, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification

    run = tmp_path / "gap"
    assert main(["train", "gap-reward", "--data", str(jsonl(preferences())), "--model", "tiny-random", "--out", str(run),
                 "--no-lora", "--learning-rate", "3e-3", "--max-steps", "12", "--batch-size", "4", "--logging-steps", "1",
                 "--warmup", "0", "--eval-split", "0.25", "--save-steps", "100", "--device", "cpu"]) == 0
    info = json.loads((run / "redline.json").read_text())
    m = info["metrics"]
    assert info["kind"] == "gap-reward" and not info["adapter"]
    assert m["identical_pairs"] == 1 and m["train_pairs"] + m["eval_pairs"] == 24
    assert m["final_loss"] < m["first_loss"]  # the loss falls on separable data
    assert abs(m["first_loss"] - math.log(2)) < 0.05  # ... from about log 2
    for name in ORDERING_NAMES:
        assert 0 <= m[f"eval_accuracy_{name}"] <= 1
    assert m["eval_accuracy_wl>lw"] == 1.0  # the easiest ordering, learned in 12 steps
    assert (f"held-out: r_gap(w,l) > r_gap(l,w) on 100.0% of {m['eval_pairs']} pairs (mean of PIT's five orderings "
            f"{m['eval_accuracy']:.1%})") in capsys.readouterr().err
    model = AutoModelForSequenceClassification.from_pretrained(run)
    assert model.config.num_labels == 1 and model.config.redline_kind == "gap-reward"
    # the RL reward reads it: a good answer over a bad reference beats the reverse
    tok = load_tokenizer(str(run))
    reward = gap_reward(model.eval(), tok)
    records = [{"prompt": "Question 1?", "reference": "no"}, {"prompt": "Question 1?", "reference": "good answer 1 " * 4}]
    better, worse = reward([[], []], ["good answer 1 " * 4, "no"], records)
    assert better > worse
    # a gap-reward run is not a plain reward model for PPO-ptx, and the reverse
    with pytest.raises(RedlineError, match="gap-reward model"):
        check_reward_model(str(run))
    check_gap_reward_model(str(run))


def test_a_plain_reward_model_or_no_run_is_refused_as_a_gap_model(tmp_path):
    rm = tmp_path / "rm"
    save_model(load_reward_model("tiny-random", device="cpu"), load_tokenizer("tiny-random"), rm,
               ModelCard(kind="reward", base_model="tiny-random"))
    with pytest.raises(RedlineError, match="plain reward model"):
        check_gap_reward_model(str(rm))
    with pytest.raises(RedlineError, match="not a redline run"):
        check_gap_reward_model("tiny-random")


def test_bad_settings_and_data_are_refused(jsonl, tmp_path, capsys):
    data = jsonl(preferences(2))
    assert main(["train", "gap-reward", "--data", str(data), "--model", "tiny-random", "--out", str(tmp_path / "a"),
                 "--term-weights", "1,1"]) == 2
    assert "--term-weights" in capsys.readouterr().err
    for weights in ("1,1,nan,1,1", "1,inf,1,1,1"):  # a non-finite weight made every loss nan
        assert main(["train", "gap-reward", "--data", str(data), "--model", "tiny-random", "--out", str(tmp_path / "a"),
                     "--term-weights", weights]) == 2
        assert "--term-weights wants five finite" in capsys.readouterr().err, weights
    same = jsonl([{"prompt": "p", "chosen": "x", "rejected": "x"}], "same.jsonl")
    assert main(["train", "gap-reward", "--data", str(same), "--model", "tiny-random", "--out", str(tmp_path / "b")]) == 2
    assert "no preference pair" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_pairs_all_dropped_for_their_length_are_said_to_be_not_blamed_on_identical_pairs(jsonl, tmp_path, capsys):
    data = jsonl(preferences(2))
    assert main(["train", "gap-reward", "--data", str(data), "--model", "tiny-random", "--out", str(tmp_path / "c"),
                 "--eval-split", "0", "--max-length", "3"]) == 2
    assert "to train on (2 dropped: a response alone does not fit --max-length 3)" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_held_out_pairs_must_be_held_out(jsonl, tmp_path, capsys):
    data = jsonl(preferences(4))
    args = ["train", "gap-reward", "--data", str(data), "--model", "tiny-random", "--device", "cpu"]
    for share in ("-0.3", "1.5"):  # a negative share held out most prompts; one over 1 all of them
        with pytest.raises(SystemExit):
            main([*args, "--out", str(tmp_path / "a"), "--eval-split", share])
        assert "--eval-split: must be at" in capsys.readouterr().err
    # --eval-data with prompts the model trains on: its "held-out" accuracy would be on training pairs
    other = jsonl([{"prompt": "Another?", "chosen": "yes, another", "rejected": "no"}, preferences(4)[2]], "eval.jsonl")
    assert main([*args, "--out", str(tmp_path / "b"), "--eval-data", str(other)]) == 2
    assert "eval.jsonl: 1 of its prompts are also in the training records" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_cut_report_counts_every_sequence_encoded(jsonl, tmp_path, capsys):
    from redline.train.gap_reward import GapRewardConfig, train_gap_reward

    rows = [{"prompt": "p", "chosen": "good", "rejected": "bad"}, {"prompt": "q", "chosen": "a long answer " * 10, "rejected": "no"}]
    data = jsonl(rows)  # a Path, as a Python caller may give: the run's train_config.json holds it as text
    train_gap_reward(GapRewardConfig(data=data, model="tiny-random", max_steps=1, batch_size=1, max_length=20,
                                     eval_split=0.0, device="cpu", save_steps=100), tmp_path / "gap")
    # pair q's long answer alone overflows 20 tokens: its four texts were encoded (two cut, two dropped), then dropped
    err = capsys.readouterr().err
    assert "6 of 8 sequences lost their prompt's start" in err and "2 whose response alone does not fit" in err
    assert json.loads((tmp_path / "gap" / "train_config.json").read_text())["data"] == str(data)


def test_lora_is_merged_and_identical_pairs_feed_the_anchor_term_when_asked(jsonl, tmp_path):
    from redline.train.gap_reward import GapRewardConfig, train_gap_reward

    def train(weight: float, run):
        return train_gap_reward(GapRewardConfig(data=str(jsonl(preferences(6))), model="tiny-random", max_steps=2,
                                                batch_size=4, anchor_weight=weight, eval_split=0.0, device="cpu",
                                                logging_steps=1, save_steps=100), run)

    run = tmp_path / "gap"
    m = train(1.0, run)
    assert m["anchors"] == 1 and m["identical_pairs"] == 1 and m["train_pairs"] == 6 and m["eval_pairs"] == 0
    # the anchor term reaches the loss: the same elements and first batch with a vanishing weight lose it (it is a
    # square, so the loss with it is the larger)
    faint = train(1e-9, tmp_path / "faint")
    assert faint["anchors"] == 1 and m["first_loss"] > faint["first_loss"] + 1e-6
    info = json.loads((run / "redline.json").read_text())
    assert info["kind"] == "gap-reward" and not info["adapter"]  # a plain classifier, LoRA folded in
    assert load_reward_model(str(run), device="cpu").config.num_labels == 1


def test_gap_oracle_figures_are_the_reward_model_s_on_the_wl_lw_ordering():
    """Hand-made: each pair scored (r_gap(w,l), r_gap(l,w)); the figures and the printed line."""
    from redline.cli import gap_accuracy_summary
    from redline.train.gap_reward import oracle_accuracy

    meta = {"instructions": [{"type": "lowercase"}], "topic": "tea"}
    pairs = [
        Preference(prompt="p1", chosen="a", rejected="b", meta={**meta, "oracle_quality": [1.0, 0.0]}),  # label right
        Preference(prompt="p2", chosen="a", rejected="b", meta={**meta, "oracle_quality": [0.0, 0.5]}),  # label wrong
        Preference(prompt="p3", chosen="a", rejected="b", meta={**meta, "oracle_quality": [0.5, 0.5]}),  # oracle tie
    ]
    figures = oracle_accuracy(pairs, [[2.0, 1.0], [0.0, 1.0], [3.0, 3.0]])  # the model follows the oracle
    # the oracle against the labels: right, wrong, tie (half) = 1.5 / 3; on the 2 pairs it can tell
    # apart the model is right on both, the labels on one.
    assert figures == {"eval_label_ceiling": 0.5, "eval_oracle_comparisons": 2, "eval_oracle_accuracy": 1.0,
                       "eval_annotator_oracle_accuracy": 0.5}
    assert oracle_accuracy([Preference(prompt="q", chosen="a", rejected="b")], [[1.0, 0.0]]) == {}  # not simulated
    m = {"eval_pairs": 3, "eval_accuracy_wl>lw": 0.3333, "eval_accuracy": 0.6, **figures}
    assert gap_accuracy_summary(m) == (
        "held-out: r_gap(w,l) > r_gap(l,w) on 33.3% of 3 pairs (mean of PIT's five orderings 60.0%); the oracle itself "
        "scores 50.0% against these labels; against the oracle: 100.0% on the 2 pairs it can tell apart, where the "
        "annotators' labels are 50.0% right")
    assert gap_accuracy_summary({"eval_pairs": 0}) == "held-out: no pair to score"


def test_held_out_pairs_with_chosen_identical_to_rejected_are_counted_and_said():
    from redline.cli import gap_accuracy_summary
    from redline.train.gap_reward import held_out_accuracies

    same = Preference(prompt="q", chosen="a", rejected="a")
    m = held_out_accuracies(None, None, [same, same], max_length=16)  # nothing to score: no model is read
    assert m == {"eval_pairs": 0, "eval_identical_pairs": 2}
    assert gap_accuracy_summary(m) == ("held-out: no pair to score (2 held-out pairs with chosen identical to "
                                       "rejected left out: no ordering to score)")
    m = {"eval_pairs": 3, "eval_identical_pairs": 1, "eval_accuracy_wl>lw": 0.3333, "eval_accuracy": 0.6}
    assert gap_accuracy_summary(m).startswith("held-out: r_gap(w,l) > r_gap(l,w) on 33.3% of 3 pairs (1 held-out pair "
                                              "with chosen identical to rejected left out: no ordering to score)")


def test_a_reward_run_as_the_start_leaves_no_bias_on_the_gap_model(jsonl, tmp_path):
    """A normalised reward run's bias centres r(x, y) on its demonstrations; kept in the gap model's config, every
    r_gap that score_texts reads (PIT's RL reward, the card's snippet) was shifted by it, r_gap(y, y) no longer at 0."""
    from redline.train.gap_reward import GapRewardConfig, train_gap_reward

    rm = tmp_path / "rm"
    model = load_reward_model("tiny-random", device="cpu")
    model.config.reward_bias = 5.0
    save_model(model, load_tokenizer("tiny-random"), rm,
               ModelCard(kind="reward", base_model="tiny-random", metrics={"reward_bias": 5.0}))
    run = tmp_path / "gap"
    train_gap_reward(GapRewardConfig(data=str(jsonl(preferences(4))), model=str(rm), max_steps=1, batch_size=2,
                                     eval_split=0.0, device="cpu", save_steps=100), run)
    assert not hasattr(load_reward_model(str(run), device="cpu").config, "reward_bias")


def test_going_on_from_a_gap_run_refuses_held_out_prompts_it_trained_on(jsonl, tmp_path, capsys):
    """As train reward: a gap model started from a run that trained on some of the held-out prompts would report
    the start's memory as held-out accuracy. Refused before any model loads (a reward run as the start is read as
    train reward reads it; a gap-reward run by its preferences, its third of them under --split-thirds)."""
    data = jsonl(preferences(12))
    start = tmp_path / "gap"
    args = ["train", "gap-reward", "--data", str(data), "--max-steps", "1", "--batch-size", "2", "--save-steps", "100",
            "--eval-split", "0.25"]
    assert main(args + ["--model", "tiny-random", "--out", str(start)]) == 0
    capsys.readouterr()
    # the same prompts split with another seed: some of the start's training prompts are held out
    assert main(args + ["--model", str(start), "--seed", "1", "--out", str(tmp_path / "leak")]) == 2
    err = capsys.readouterr().err
    assert "of the held-out prompts were trained on by the start model" in err and str(start) in err
    assert not (tmp_path / "leak").exists()
    # the start's own split: its held-out prompts are held out here too
    assert main(args + ["--model", str(start), "--out", str(tmp_path / "ok")]) == 0


def test_split_thirds_of_fewer_than_three_prompts_is_refused_naming_the_file(jsonl, tmp_path, capsys):
    """Two prompts left the reward third empty (one, the SFT third too): the error then said no pair had chosen
    different from rejected."""
    from redline.train.pit import PITConfig, train_pit

    data = jsonl(preferences(1))  # two prompts
    assert main(["train", "gap-reward", "--data", str(data), "--model", "tiny-random", "--out", str(tmp_path / "a"),
                 "--split-thirds"]) == 2
    assert f"{data} (--split-thirds): 2 records leave a third empty (SFT 1, reward model 0, RL 1)" in capsys.readouterr().err
    with pytest.raises(RedlineError, match=r"leave a third empty \(SFT 0, reward model 0, RL 1\)"):
        train_pit(PITConfig(policy="tiny-random", data=str(jsonl(preferences(1)[:1], "one.jsonl")), split_thirds=True,
                            rounds="none"), tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert [len(part) for part in split_thirds([Preference(**r) for r in preferences(2)])] == [1, 1, 1]  # three prompts


def test_an_eval_split_that_holds_out_every_prompt_is_refused_naming_the_file(jsonl, tmp_path, capsys):
    """The gap model loaded its tokenizer and then said no pair had chosen different from rejected."""
    data = jsonl([{"prompt": f"p{i}", "chosen": "a good one", "rejected": "no"} for i in range(2)])
    assert main(["train", "gap-reward", "--data", str(data), "--model", "tiny-random", "--out", str(tmp_path / "gm"),
                 "--eval-split", "1"]) == 2
    assert f"{data}: --eval-split 1 holds out every one of its 2 prompts" in capsys.readouterr().err


def test_a_split_thirds_gap_models_card_says_it_read_the_middle_third(jsonl, tmp_path):
    # under --split-thirds the gap model's card named the whole --data file as its data, though it read one third
    from redline.models import run_info
    from redline.train.gap_reward import GapRewardConfig, train_gap_reward

    data = str(jsonl(preferences(6)))
    train_gap_reward(GapRewardConfig(data=data, model="tiny-random", max_steps=1, batch_size=1, eval_split=0.0,
                                     split_thirds=True, device="cpu", save_steps=100), tmp_path / "gap")
    card = run_info(tmp_path / "gap")
    assert card["data"] == [data]
    assert re.search(re.escape(f"Data: the middle (reward-gap model) third of `{data}` (--split-thirds, --split-seed 0): ")
                     + r"2 of the 7 preference records read, on 2 of their 7 prompts; PIT SFT learns from the first third "
                     r"and its RL from the last\.$", card["notes"])  # 6 questions and the identical pair, by three
    assert "the middle (reward-gap model) third" in (tmp_path / "gap" / "README.md").read_text()


def test_held_out_pairs_scored_nan_are_refused_not_counted_wrong(monkeypatch):
    """NaN compares false both ways: each ordering counted a diverged model's pairs wrong, 0% right on every one."""
    import redline.train.gap_reward as gap

    pairs = [Preference(prompt=f"q{i}", chosen="a", rejected="b") for i in range(3)]
    scores = torch.tensor([[1.0, 0.0, 0.0, -1.0], [1.0, 0.0, 0.0, float("nan")], [1.0, 0.0, 0.0, -1.0]])
    monkeypatch.setattr(gap, "gap_scores", lambda model, tokenizer, prefs, max_length: scores)
    with pytest.raises(RedlineError, match=r"^held.jsonl: the trained model scored 1 of the 3 held-out pairs NaN or "
                                           r"infinity \(first: the prompt 'q1'\)"):
        gap.held_out_accuracies(None, None, pairs, max_length=16, source="held.jsonl")
    monkeypatch.setattr(gap, "gap_scores", lambda model, tokenizer, prefs, max_length: scores[[0, 2]])
    assert gap.held_out_accuracies(None, None, pairs[::2], max_length=16)["eval_accuracy_wl>lw"] == 1.0
