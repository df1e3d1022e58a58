"""Judge specs, the verdict parser, the two-order rule and the reward-model judge (tiny-random)."""

import pytest

from redline import RedlineError
from redline.judges import Item, Verdict, parse_judge, swap_winner
from redline.judges.llm import combine_orders
from redline.judges.oracle import OracleJudge
from redline.judges.reward import RewardJudge
from redline.prompts import pairwise_messages, parse_pairwise_verdict


@pytest.mark.parametrize(
    "text, verdict",
    [
        ("Output (a)", "a"), ("Output (b)", "b"), ("output (B)", "b"), ("A", "a"), ("b", "b"), ("(b)", "b"),
        ("[[A]]", "a"), ("[[B]]", "b"), ("[[C]]", "tie"), ("**Output (b)**", "b"), ('"Output (a)"', "a"),
        ("Response B is better.", "b"), ("Response B is better than Response A.", "b"),
        ("Output (a) is better than Output (b)", "a"), ("The better response is B", "b"),
        ("I prefer Output 2", "b"), ("Verdict: A", "a"), ("Answer: Output (b)", "b"), ("Assistant A", "a"),
        ("A. It follows every instruction.", "a"), ("Output (a)\n\nOutput (b) misses the keyword.", "a"),
        ("<think>a or b? a, surely</think>Output (b)", "b"), ("Tie", "tie"), ("Both are equally good.", "tie"),
        ("<think>\nFirst, Output (a) uses", "invalid"),  # reasoning cut before it closed: no verdict yet
        ("Output (a) is better, at first sight.\n</think>\n\nOutput (b)", "b"),  # the template opened the block
        ("", "invalid"), ("I cannot decide.", "invalid"), ("A good answer needs more.", "invalid"),
        ("Output (a) or Output (b)", "invalid"), ("[[A]] is better than [[B]]", "invalid"),
        # the loser named: the other wins (read as the loser's win before)
        ("Output (b) is worse.", "a"), ("Response A is clearly worse than Response B.", "b"),
        ("Output (a) is less helpful: it misses the keyword.", "b"),
        ("Output (a) is better; Output (b) is worse.", "a"), ("Output (a) is worse and Output (b) is worse", "invalid"),
        # a claim the words before it deny is no verdict (each read as a win before)
        ("Neither Output (a) nor Output (b) is worse.", "tie"), ("Neither Output (a) nor Output (b) is better.", "tie"),
        ("Neither response is better than the other.", "tie"), ("I do not think Output (b) is worse.", "invalid"),
        ("I don't think Response A is better.", "invalid"), ("It is not true that Output (a) is better.", "invalid"),
        ("I don't think Output (a) is better; Output (b) is better.", "b"),  # the claim not denied decides
        ("Output (a) is not perfect, nor is it short; Output (b) is better.", "b"),
        ("A. I don't think Output (b) is better.", "a"),  # the opening label decides; the denial names no winner
        # the second output named short: no claim matched it, and the bare mention of the first read as its win
        ("Neither Output A nor B is better.", "tie"), ("Neither response 1 nor 2 is better", "tie"),
        ("Neither output (a) nor (b) is better, but I prefer Output (a).", "a"),
        ("Neither output is better, but Output (a) is more concise.", "a"),
    ],
)
def test_verdict_parser(text, verdict):
    assert parse_pairwise_verdict(text) == verdict


def test_the_template_shows_first_as_a_and_second_as_b():
    messages = pairwise_messages([{"role": "user", "content": "Write a haiku."}], "FIRST", "SECOND")
    user = messages[-1]["content"]
    assert messages[0]["role"] == "system"
    assert "Write a haiku." in user and user.index("## Output (a)\nFIRST") < user.index("## Output (b)\nSECOND")


def test_two_orders_agreeing_decide_and_disagreeing_tie():
    assert combine_orders("a", "a") == "a"
    assert combine_orders("b", "b") == "b"
    assert combine_orders("a", "b") == "tie"  # a judge that always picks the first position
    assert combine_orders("tie", "a") == "tie"
    assert combine_orders("a", "invalid") == "invalid"  # one order alone would carry its bias
    assert swap_winner("a") == "b" and swap_winner("tie") == "tie" and swap_winner("invalid") == "invalid"


def test_a_verdict_must_be_one_of_four():
    with pytest.raises(ValueError):
        Verdict("maybe")


def test_specs_parse_to_judges():
    assert isinstance(parse_judge("oracle"), OracleJudge) and parse_judge("oracle").noise == 0
    assert parse_judge("oracle:noisy").noise == 1.0
    assert parse_judge("oracle?noise=0.5&seed=3").name == "oracle:noisy?noise=0.5&seed=3"
    reward = parse_judge("reward:runs/rm?margin=0.1&batch_size=4")
    assert isinstance(reward, RewardJudge) and (reward.model_name, reward.margin, reward.batch_size) == ("runs/rm", 0.1, 4)
    assert parse_judge("reward:tiny-random", margin=0.5).margin == 0.5  # an option from the CLI wins


def test_a_reward_judges_length_given_is_in_its_name():
    # the length moves verdicts, so a judgments file made at ?max_length=64 is not resumed by `reward:RUN` (and
    # reported under its name) at the run's own length; the default keeps the name every earlier run recorded
    assert parse_judge("reward:tiny-random?max_length=64").name == "reward:tiny-random?max_length=64"
    assert parse_judge("reward:tiny-random?margin=0.2&max_length=64").name == "reward:tiny-random?margin=0.2&max_length=64"
    assert parse_judge("reward:tiny-random").name == "reward:tiny-random"


@pytest.mark.parametrize(
    "spec, says",
    [
        ("gpt4", "does not parse"),
        ("oracle:loud", "'oracle' or 'oracle:noisy'"),
        ("oracle?noise=lots", "not a float"),
        ("reward:", "name a reward model"),
        ("reward:x?margn=1", "unknown option 'margn'"),
        ("reward:x?margin", "needs a value"),
        ("openai:@http://x/v1", "name the model"),
        ("openai:m@ftp://x", "http:// or https://"),
        ("openai:gpt-4o", "needs a key"),
        # nan passed every range check: the oracle gave B every verdict, a reward margin of nan no tie at all
        ("oracle?noise=nan", "noise='nan' is not a finite number"),
        ("oracle?noise=inf", "not a finite number"),
        ("reward:x?margin=nan", "not a finite number"),
        ("openai:m@http://x/v1?timeout=nan&cache=off", "not a finite number"),
        ("openai:m@http://x/v1?backoff=-1&cache=off", "backoff >= 0"),  # a retry's sleep failed mid-run
        ("openai:m@http://x/v1?max_tokens=0&cache=off", "max_tokens >= 1"),
    ],
)
def test_bad_specs_are_clear_errors(spec, says, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(RedlineError, match=says):
        parse_judge(spec)


def test_reward_judge_on_tiny_random(tiny_reward):
    judge = RewardJudge(tiny_reward, device="cpu", batch_size=2)
    items = [Item("Say hi.", "Hello there!", "Go away."), Item("Count.", "one two three", "one"),
             Item("Same.", "identical", "identical")]
    verdicts = judge.judge_many(items)
    scores = judge.score([(it.prompt, r) for it in items for r in (it.a, it.b)])
    for v, (sa, sb) in zip(verdicts, zip(scores[::2], scores[1::2])):
        assert v.detail["scores"] == [sa, sb]
        assert v.winner == ("tie" if sa == sb else "a" if sa > sb else "b")
    assert verdicts[2].winner == "tie"
    # swapping the sides swaps the verdict: the scores do not depend on the order
    swapped = judge.judge_many([Item(it.prompt, it.b, it.a) for it in items])
    assert [v.winner for v in swapped] == [swap_winner(v.winner) for v in verdicts]
    # a margin wider than any gap makes every verdict a tie
    wide = RewardJudge(tiny_reward, device="cpu", margin=1e6)
    assert {v.winner for v in wide.judge_many(items)} == {"tie"}


def test_a_reward_judge_score_that_is_no_number_is_an_invalid_verdict(tiny_reward, monkeypatch):
    """A model overflowing in bf16 scores NaN (or inf); NaN compares false both ways, which made every such verdict B's."""
    judge = RewardJudge(tiny_reward, device="cpu")
    nan, inf = float("nan"), float("inf")
    monkeypatch.setattr(judge, "score", lambda pairs: [nan, 1.0, inf, 2.0, 2.0, nan, inf, 0.5])
    items = [Item("p", f"a{i}", f"b{i}") for i in range(4)]
    verdicts = judge.judge_many(items)  # A's scores first, then B's: (nan, 2), (1, nan), (inf, inf), (2, 0.5)
    assert [v.winner for v in verdicts] == ["invalid", "invalid", "invalid", "a"]
    assert verdicts[0].raw == "nan vs 2"


def test_reward_judge_fails_early_on_a_bad_model(tmp_path):
    with pytest.raises(RedlineError, match="is not a folder"):
        RewardJudge(str(tmp_path / "missing" / "run"), device="cpu").check()


def test_reward_judge_refuses_a_language_model(capsys, tmp_path):
    # embedded, tiny-random or a hub chat model would load under a fresh, random head and judge at random
    with pytest.raises(RedlineError, match=r"tiny-random is not a reward model \(architectures \['LlamaForCausalLM'\]\)"):
        RewardJudge("tiny-random", device="cpu").check()
    a = tmp_path / "a.jsonl"
    a.write_text('{"id": "1", "prompt": "p", "response": "r"}\n')
    from redline.cli import main

    assert main(["evaluate", "--a", str(a), "--b", str(a), "--judge", "reward:tiny-random", "--out", str(tmp_path / "o")]) == 2
    assert "is not a reward model" in capsys.readouterr().err and not (tmp_path / "o" / "judgments.jsonl").exists()


def test_reward_judge_refuses_a_run_that_is_not_a_plain_reward_model(tmp_path):
    from redline import RedlineError
    from redline.judges import parse_judge
    from redline.models import ModelCard, load_reward_model, load_tokenizer, save_model

    run = tmp_path / "gap"
    save_model(load_reward_model("tiny-random", device="cpu"), load_tokenizer("tiny-random"), run,
               ModelCard(kind="gap-reward", base_model="tiny-random"))
    judge = parse_judge(f"reward:{run}")
    with pytest.raises(RedlineError, match="is a gap-reward model"):
        judge.check()


def test_reward_judge_reads_at_the_length_its_run_trained_at(tmp_path, tiny_reward):
    import json

    from redline.models import ModelCard, load_reward_model, load_tokenizer, save_model

    run = tmp_path / "rm"
    save_model(load_reward_model("tiny-random", device="cpu"), load_tokenizer("tiny-random"), run,
               ModelCard(kind="reward", base_model="tiny-random"))
    (run / "train_config.json").write_text(json.dumps({"model": "tiny-random", "max_length": 12}))
    # two responses whose last 12 tokens are the same: a judge reading 12 tokens cannot tell them apart
    ending = " and then the same ending follows, word for word, for rather more than twelve tokens"
    long_a, long_b = "apple " * 30 + ending, "pear " * 30 + ending
    trained = parse_judge(f"reward:{run}?device=cpu")
    a, b = trained.score([("Say.", long_a), ("Say.", long_b)])
    assert a == b and trained.max_length == 12
    wider = parse_judge(f"reward:{run}?device=cpu&max_length=2048")  # the spec's option wins
    a, b = wider.score([("Say.", long_a), ("Say.", long_b)])
    assert a != b and wider.max_length == 2048
    plain = RewardJudge(tiny_reward, device="cpu")  # not a redline run: 2048
    plain.check()
    assert plain.max_length == 2048
    with pytest.raises(RedlineError, match="max_length must be >= 1"):
        parse_judge(f"reward:{run}?max_length=0")


def test_an_encoder_reward_model_without_a_chat_template_reads_a_text_pair_with_its_special_tokens(tmp_path):
    """As a DeBERTa reward model of the hub is documented to be called: tokenizer(question, answer). Its head reads
    the first token, [CLS]; the text "question\\n\\nanswer" without special tokens would be read at a question word."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "write", "a", "poem", "about", "rain", "drops", "fall", "soft"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32, num_labels=1))
    folder = tmp_path / "deberta-like"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    pairs = [("write a poem about rain", "drops fall soft"), ("write a poem", "rain rain rain drops")]
    with torch.no_grad():
        expected = [model.eval()(**tokenizer(q, a, return_tensors="pt")).logits.item() for q, a in pairs]
    judge = RewardJudge(str(folder), device="cpu", batch_size=2)
    assert judge.score(pairs) == pytest.approx(expected, abs=1e-5)
    short = RewardJudge(str(folder), device="cpu", max_length=6)  # cut to fit, [CLS] and both [SEP] kept
    assert all(isinstance(s, float) for s in short.score(pairs))
    # as score_pairs says: the longer side loses its start, so a long response to a short prompt keeps its last
    # words and the prompt stays whole (its docstring said the prompt's start went first)
    with torch.no_grad():  # max_length 6: 3 special tokens and 3 words
        kept = model(**tokenizer("write", "rain drops", return_tensors="pt")).logits.item()
    assert short.score([("write", "rain drops fall soft rain drops")]) == pytest.approx([kept], abs=1e-5)


def test_a_judge_built_in_python_refuses_a_noise_or_margin_of_nan():
    with pytest.raises(RedlineError, match="must be a number >= 0"):
        OracleJudge(noise=float("nan"))
    with pytest.raises(RedlineError, match="must be a number >= 0"):
        RewardJudge("tiny-random", margin=float("nan"))
