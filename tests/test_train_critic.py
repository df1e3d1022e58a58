"""The critic trainer on tiny-random: the loss covers only critique and revision, it falls, and a
killed run resumes from its checkpoint (kill -9: tests/test_integrity.py)."""

import json

import pytest
import torch

from redline.cli import main
from redline.prompts import critic_messages, critic_target, finds_nothing_to_fix, has_loop, parse_critic_output
from redline.records import Feedback
from redline.train.critic import critic_examples

FEEDBACK = [
    {
        "prompt": f"Write a sentence about topic {i}, all in lowercase.",
        "response": f"The Topic {i} Is Interesting.",
        "critique": "It is one clear sentence, but it uses capital letters; the prompt asked for all lowercase.",
        "revision": f"the topic {i} is interesting.",
    }
    for i in range(16)
]


def test_examples_put_critique_then_revision_in_the_completion_only():
    records = [Feedback(**FEEDBACK[0]), Feedback(prompt="q", response="r", critique="Too short.")]
    full, critique_only = critic_examples(records)
    assert FEEDBACK[0]["response"] in full["prompt"][0]["content"]
    assert full["completion"][0]["content"] == critic_target(FEEDBACK[0]["critique"], FEEDBACK[0]["revision"])
    assert "Revision:" not in critique_only["completion"][0]["content"]
    assert critique_only["prompt"] == critic_messages("q", "r", critique_only=True)
    assert "revision" not in critique_only["prompt"][0]["content"].lower()


@pytest.mark.parametrize(
    "text, critique, revision",
    [
        ("Critique: Too long.\n\nRevision:\nshort one", "Too long.", "short one"),
        ("Critique: Good.\nRevision: same text", "Good.", "same text"),
        ("Critique: no revision follows", "no revision follows", None),
        ("Critique: empty one\nRevision:\n   \n", "empty one", None),
        ("The word Revision: inside a line does not count", "The word Revision: inside a line does not count", None),
        # a critic trained on CRLF text: the revision opened with "\r\n" and ended with a stray "\r"
        ("Critique: Too long.\r\n\r\nRevision: \r\nshort\r\none\r\n", "Too long.", "short\r\none"),
    ],
)
def test_parse_critic_output(text, critique, revision):
    out = parse_critic_output(text)
    assert (out.critique, out.revision, out.parsed) == (critique, revision, revision is not None)


def test_parse_inverts_the_target():
    out = parse_critic_output(critic_target("Fine, but too long.", "line one\n- bullet\nP.S. end"))
    assert out.critique == "Fine, but too long." and out.revision == "line one\n- bullet\nP.S. end"
    assert parse_critic_output(critic_target("Fine.", "line one\r\nline two\r\n")).revision == "line one\r\nline two"


def test_train_critic_cli_loss_falls_adapter_changes_and_a_rerun_with_other_steps_is_refused(jsonl, tmp_path, capsys):
    from safetensors.torch import load_file

    data = jsonl(FEEDBACK)
    run = tmp_path / "run"
    common = ["train", "critic", "--data", str(data), "--model", "tiny-random", "--out", str(run),
              "--batch-size", "4", "--learning-rate", "3e-3", "--logging-steps", "1", "--save-steps", "4", "--warmup", "0"]
    assert main(common + ["--max-steps", "8"]) == 0
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in log if "loss" in row]
    assert losses[-1] < losses[0]
    adapter = load_file(run / "adapter_model.safetensors")
    assert any(("lora_B" in k) and v.abs().sum() > 0 for k, v in adapter.items())  # B starts at zero
    info = json.loads((run / "redline.json").read_text())
    assert info["kind"] == "critic" and info["base_model"] == "tiny-random" and info["adapter"]
    assert info["metrics"]["critique_only_records"] == 0 and info["metrics"]["examples"] == 16  # the card has both
    assert json.loads((run / "train_config.json").read_text())["max_steps"] == 8
    assert (run / "training_curve.png").stat().st_size > 0

    # A rerun with another --max-steps would mix two schedules in one run: refused, naming the difference.
    assert main(common + ["--max-steps", "12"]) == 2
    assert "--max-steps: 12 here, 8 in the run" in capsys.readouterr().err
    assert json.loads((run / "redline.json").read_text())["metrics"]["steps"] == 8


def test_examples_longer_than_max_length_are_counted_and_a_length_that_leaves_nothing_is_refused(jsonl, tmp_path, capsys):
    from redline.models import load_tokenizer
    from redline.train.sft import count_truncated

    records = [Feedback(**row) for row in FEEDBACK]
    examples = critic_examples(records)
    tokenizer = load_tokenizer("tiny-random")
    prompt_len = len(tokenizer.apply_chat_template(examples[0]["prompt"], add_generation_prompt=True, tokenize=False))
    assert count_truncated(examples, tokenizer, 10_000) == (0, 0)
    assert count_truncated(examples, tokenizer, 40) == (16, 16)  # the prompts alone are longer than 40 tokens
    cut, dropped = count_truncated(examples, tokenizer, 120)  # past the prompt, inside the completion
    assert cut == 16 and dropped == 0, prompt_len

    data = jsonl(FEEDBACK)
    run = tmp_path / "run"
    common = ["train", "critic", "--data", str(data), "--model", "tiny-random", "--out", str(run), "--max-steps", "1", "--batch-size", "2"]
    assert main(common + ["--max-length", "120"]) == 0
    metrics = json.loads((run / "redline.json").read_text())["metrics"]
    assert metrics["truncated_examples"] == 16 and metrics["dropped_examples"] == 0
    assert "16 of 16 examples are longer than --max-length 120" in capsys.readouterr().err
    assert main(common + ["--max-length", "40", "--overwrite"]) == 2
    assert "no completion is left to learn: raise --max-length" in capsys.readouterr().err


def test_bf16_autocast_trains_float32_weights(jsonl, tmp_path):
    from safetensors.torch import load_file

    run = tmp_path / "run"
    assert main(["train", "critic", "--data", str(jsonl(FEEDBACK)), "--model", "tiny-random", "--out", str(run),
                 "--max-steps", "2", "--bf16", "--learning-rate", "3e-3", "--warmup", "0"]) == 0
    adapter = load_file(run / "adapter_model.safetensors")
    assert all(v.dtype == torch.float32 for v in adapter.values())  # autocast leaves the weights float32
    assert any(("lora_B" in k) and v.abs().sum() > 0 for k, v in adapter.items())  # it trained
    assert json.loads((run / "train_config.json").read_text())["bf16"] is True

    from accelerate import Accelerator

    assert Accelerator(cpu=True).mixed_precision == "no"  # PPO later in this process must not inherit bf16


def test_a_limit_beyond_the_file_names_the_file_before_the_model_loads(jsonl, tmp_path, capsys, monkeypatch):
    import redline.models

    data = jsonl(FEEDBACK)
    monkeypatch.setattr(redline.models, "load_causal_lm", lambda *a, **k: pytest.fail("the model loaded"), raising=False)
    assert main(["train", "critic", "--data", str(data), "--model", "tiny-random", "--out", str(tmp_path / "run"),
                 "--limit", "17"]) == 2
    assert f"asked for 17 records; {data} (--limit) holds 16" in capsys.readouterr().err


@pytest.mark.parametrize("critique, nothing", [
    ("This essay about rivers does everything the prompt asked. It is all lowercase, as asked.", True),
    ("A clean answer that follows every instruction.", True),
    ("It has 3 bullet points, as asked. I would not change anything.", True),
    ("It needs no revision.", True),
    ("Nothing needs to change.", True),
    ("No changes are needed.", True),
    ("It uses capitals. Fixing this would make it meet every instruction.", False),
    ("It does not follow every instruction: the title is missing.", False),
    ("The response is too short; nothing else to fix after that.", False),
    ("It uses commas, which the prompt forbids.", False),
    ("It follows every instruction except the word limit: 130 words.", False),  # was read as nothing to fix
    ("It meets every instruction, but the title is missing.", False),
    ("Nothing needs to change except the title.", False),
    ("It needs no changes except the title.", False),  # not "needs no change" with "s except" after it
    ("The answer needs no fixes, but the title is missing.", False),
])
def test_finds_nothing_to_fix(critique, nothing):
    assert finds_nothing_to_fix(critique) is nothing


@pytest.mark.parametrize("text, loops", [
    ("of the section " * 5, True),  # period 3, 15 words
    ("of the section " * 4, False),  # 12 words: too short to call a loop
    ("ha " * 15, True),
    ("It was " + "a long day and a longer night, " * 3 + "and then it ended.", True),  # period 7, 21 words
    ("Rivers carve valleys. Rivers feed cities. Rivers flood plains. Rivers " * 1, False),
    (" ".join(f"w{i}" for i in range(500)), False),
    ("- apples\n- pears\n- plums\n- figs\n- dates\n- limes", False),
])
def test_has_loop(text, loops):
    assert has_loop(text) is loops


def test_critique_token_weights_by_hand():
    from redline.train.critic import critique_token_weights

    labels = torch.tensor([[-100, -100, 5, 6, 7, 8, 9], [-100, 5, 5, -100, -100, -100, -100]])
    w = critique_token_weights(labels, marker=[6, 7], weight=3.0)
    # row 0: tokens 5, 6, 7 are the critique (the marker 6 7 included): 3, 3, 3, then 1, 1; sum 11
    # over 5 labelled tokens, so each is scaled by 5/11. Row 1 has no marker: all critique, all 1.
    expected = torch.tensor([[0, 0, 15 / 11, 15 / 11, 15 / 11, 5 / 11, 5 / 11], [0, 1, 1, 0, 0, 0, 0]])
    assert torch.allclose(w, expected)
    assert torch.allclose(w.sum(1), (labels != -100).sum(1).float())  # the loss keeps its scale
    assert torch.equal(critique_token_weights(labels, [6, 7], 1.0), (labels != -100).float())


def test_an_unchanged_revision_learns_a_critique_that_says_so():
    from redline.prompts import NOTHING_TO_FIX
    from redline.train.critic import critique_of

    kept = Feedback(prompt="p", response="All  fine.", critique="It is all lowercase, as asked.", revision="All fine.")
    assert critique_of(kept) == f"It is all lowercase, as asked. {NOTHING_TO_FIX}" and finds_nothing_to_fix(critique_of(kept))
    said = Feedback(prompt="p", response="x", critique="It needs no revision.", revision="x")
    fixed = Feedback(prompt="p", response="X", critique="Capitals.", revision="x")
    assert critique_of(said) == "It needs no revision." and critique_of(fixed) == "Capitals."


def test_critique_weight_trains_and_its_loss_falls(jsonl, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "critic", "--data", str(jsonl(FEEDBACK)), "--model", "tiny-random", "--out", str(run),
            "--batch-size", "4", "--learning-rate", "3e-3", "--logging-steps", "1", "--warmup", "0", "--max-steps", "6",
            "--critique-weight", "4"]
    assert main(argv) == 0

    def losses(folder):
        return [row["loss"] for row in map(json.loads, (folder / "train_log.jsonl").read_text().splitlines()) if "loss" in row]

    assert losses(run)[-1] < losses(run)[0]
    # the card counts the tokens trained on, and the log has TRL's token metrics, as without a weight (null, absent)
    assert json.loads((run / "redline.json").read_text())["metrics"]["tokens"] > 0
    assert all("mean_token_accuracy" in row for row in map(json.loads, (run / "train_log.jsonl").read_text().splitlines())
               if "loss" in row)
    # the weighted loss is the one trained: its first step, on the same batch, weighs the critique's tokens 4 to 1
    # (rescaled to the same total weight, so on a random model, whose tokens all cost about log V, it moves a
    # little; with the weight ignored the two would be equal to the bit, the same seed and batch)
    plain = argv[:-1] + ["1"]
    plain[plain.index("--out") + 1] = str(tmp_path / "plain")
    plain[plain.index("--max-steps") + 1] = "1"
    assert main(plain) == 0
    assert abs(losses(run)[0] - losses(tmp_path / "plain")[0]) > 1e-3
    capsys.readouterr()
    zero = argv[:-1] + ["0"]
    zero[zero.index("--out") + 1] = str(tmp_path / "zero")
    assert main(zero) == 2 and "--critique-weight must be above 0" in capsys.readouterr().err
    assert not (tmp_path / "zero").exists()


def test_critique_mask_by_hand():
    from redline.train.critic import critique_mask

    labels = torch.tensor([[-100, 1, 6, 7, 6, 7, 2], [3, 6, -100, -100, -100, -100, -100]])
    assert critique_mask(labels, [6, 7]).tolist() == [[False, True, True, True, False, False, False],  # the first marker ends it
                                                     [True, True, False, False, False, False, False]]  # no marker: all critique


# Llama 3's (and Qwen2's) pre-tokenizer pattern: punctuation takes the newlines after it, so "Revision:\n" in a
# target holds a ":\n" token that "Revision:" tokenised alone does not.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def test_the_revision_marker_is_found_where_a_target_holds_it_whatever_the_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from redline.models import load_tokenizer
    from redline.train.critic import critique_mask, revision_marker

    targets = [critic_target(f"It is too long {i}.", f"A shorter answer {i}.") for i in range(20)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(targets, trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                         show_progress=False))
    for tokenizer in (PreTrainedTokenizerFast(tokenizer_object=bpe), load_tokenizer("tiny-random")):
        ids = tokenizer(targets[3], add_special_tokens=False)["input_ids"]
        mask = critique_mask(torch.tensor([ids]), revision_marker(tokenizer))[0].tolist()
        # the critique is every token up to and including the marker, and no more: the weight reaches both parts
        assert tokenizer.decode([i for i, m in zip(ids, mask) if m]).strip() == "Critique: It is too long 3.\n\nRevision:"
        assert tokenizer.decode([i for i, m in zip(ids, mask) if not m]).strip() == "A shorter answer 3."


def _feedback_mix(n_prompts: int) -> list[Feedback]:
    """Two records per prompt: one with an edit, one whose revision equals the response."""
    out = []
    for i in range(n_prompts):
        out.append(Feedback(prompt=f"q{i}", response=f"Answer {i}", critique="Capitals.", revision=f"answer {i}"))
        out.append(Feedback(prompt=f"q{i}", response=f"answer {i}", critique="Nothing to fix.", revision=f"answer {i}"))
    return out


def test_unchanged_share_sets_how_many_records_have_nothing_to_fix():
    from redline.train.critic import select_records

    records = _feedback_mix(10)
    plain = select_records(records, 10, None, "f.jsonl")  # one per prompt first: the file's order picks edits
    assert sum(r.revision == r.response for r in plain) == 0
    chosen = select_records(records, 10, 0.4, "f.jsonl")
    assert len(chosen) == 10 and len(set(map(id, chosen))) == 10
    assert sum(r.revision == r.response for r in chosen) == 4
    assert len({r.prompt for r in chosen if r.revision == r.response}) == 4  # each part spread over prompts
    assert [records.index(r) for r in chosen] == sorted(records.index(r) for r in chosen)  # file order kept


def test_unchanged_share_refuses_what_the_file_cannot_give(jsonl, tmp_path, capsys):
    from redline import RedlineError
    from redline.train.critic import select_records

    with pytest.raises(RedlineError, match="needs --limit"):
        select_records(_feedback_mix(3), None, 0.5, "f.jsonl")
    with pytest.raises(RedlineError, match=r"asked for 5 records; f.jsonl \(records with nothing to fix"):
        select_records(_feedback_mix(3), 6, 0.8, "f.jsonl")
    data = jsonl(FEEDBACK)  # every record has an edit
    assert main(["train", "critic", "--data", str(data), "--model", "tiny-random", "--out", str(tmp_path / "run"),
                 "--limit", "4", "--unchanged-share", "0.5"]) == 2
    assert "asked for 2 records" in capsys.readouterr().err
    with pytest.raises(SystemExit) as excinfo:  # argparse refuses it
        main(["train", "critic", "--data", str(data), "--model", "tiny-random", "--out", str(tmp_path / "run2"),
                 "--limit", "4", "--unchanged-share", "1.5"])
    assert excinfo.value.code == 2
    assert "--unchanged-share: must be at most 1, got 1.5" in capsys.readouterr().err
