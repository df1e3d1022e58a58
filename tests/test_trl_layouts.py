"""TRL's dataset layouts read as they are: by `data validate` and by the trainers, no import step."""

from __future__ import annotations

import json

import pytest

from redline.cli import main
from redline.formats.trl import as_kind
from redline.records import FieldError, RecordError, read_records


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


Q = [user("Sky colour?")]
PREFERENCE_LAYOUTS = {
    "standard": {"prompt": "Sky colour?", "chosen": "Blue.", "rejected": "Green."},
    "conversational": {"prompt": Q, "chosen": [assistant("Blue.")], "rejected": [assistant("Green.")]},
    "implicit": {"chosen": Q + [assistant("Blue.")], "rejected": Q + [assistant("Green.")]},
    # HuggingFaceH4/ultrafeedback_binarized: a string prompt, conversations that repeat it (maybe_extract_prompt)
    "h4": {"prompt": "Sky colour?", "chosen": Q + [assistant("Blue.")], "rejected": Q + [assistant("Green.")],
           "score_chosen": 8.0, "score_rejected": 3.0},
}
DEMONSTRATION_LAYOUTS = {
    "standard": {"prompt": "Sky colour?", "completion": "Blue."},
    "conversational": {"prompt": Q, "completion": [assistant("Blue.")]},
    "messages": {"messages": [user("Hi"), assistant("Hello."), user("Sky colour?"), assistant("Blue.")]},
}


@pytest.mark.parametrize("name", list(PREFERENCE_LAYOUTS))
def test_every_trl_preference_layout_reads_as_a_preference(name):
    (record,) = [as_kind(PREFERENCE_LAYOUTS[name], "preference")]
    assert (record["chosen"], record["rejected"]) == ("Blue.", "Green.")
    assert record["prompt"] == ("Sky colour?" if name == "standard" else Q)


def test_a_string_prompt_beside_replies_of_one_assistant_message_is_the_prompt(tmp_path):
    # No turn to split off the replies: it was refused as "prompt: missing" while the row held one.
    row = {"prompt": "Sky colour?", "chosen": [assistant("Blue.")], "rejected": [assistant("Green.")]}
    (record,) = read_records(write(tmp_path / "p.jsonl", [row]), "preference")
    assert (record.prompt, record.chosen, record.rejected) == ("Sky colour?", "Blue.", "Green.")


def test_trl_demonstration_layouts_read_as_demonstrations(tmp_path):
    rows = [{**row, "id": name} for name, row in DEMONSTRATION_LAYOUTS.items()]
    records = read_records(write(tmp_path / "d.jsonl", rows), "demonstration")
    assert [r.response for r in records] == ["Blue."] * 3
    assert records[2].prompt == [user("Hi"), assistant("Hello."), user("Sky colour?")]
    assert [r.id for r in records] == list(DEMONSTRATION_LAYOUTS)


def test_redline_layout_is_untouched():
    row = {"prompt": Q, "chosen": "a", "rejected": "b", "meta": {"x": 1}}
    assert as_kind(row, "preference") is row
    row = {"prompt": "p", "response": "r"}
    assert as_kind(row, "demonstration") is row


@pytest.mark.parametrize(
    "row, kind, field, reason",
    [
        ({"prompt": "q", "completion": "a"}, "preference", "chosen",
         "TRL's prompt-completion layout, not a preference; redline reads it as demonstration records"),
        ({"prompt": "q", "chosen": "a", "rejected": "b"}, "demonstration", "response",
         "TRL's preference layout, not a demonstration; redline reads it as preference records (--kind preference)"),
        ({"text": "Once upon a time"}, "demonstration", "response", "language modeling layout"),
        ({"text": "Once upon a time"}, "preference", "prompt", "language modeling layout, not a preference; no redline kind"),
        ({"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "\n\nHuman: hi\n\nAssistant: b"}, "preference",
         "prompt", "--from hh-rlhf"),
    ],
)
def test_a_row_of_another_layout_says_which_it_is(row, kind, field, reason):
    with pytest.raises(FieldError) as e:
        as_kind(row, kind)
    assert e.value.field == field and reason in e.value.reason


def test_validate_reads_each_layout_and_names_the_line_of_a_mismatch(tmp_path, capsys):
    prefs = write(tmp_path / "p.jsonl", list(PREFERENCE_LAYOUTS.values()))
    assert main(["data", "validate", str(prefs), "--kind", "preference"]) == 0
    assert "4 valid preference records" in capsys.readouterr().out
    demos = write(tmp_path / "d.jsonl", list(DEMONSTRATION_LAYOUTS.values()))
    assert main(["data", "validate", str(demos), "--kind", "demonstration"]) == 0
    with pytest.raises(RecordError) as e:
        read_records(demos, "preference")
    assert e.value.errors[0].startswith(f"{demos}:1: chosen: missing (this row is in TRL's prompt-completion layout")


def test_sft_trains_every_assistant_turn_of_a_messages_row():
    from redline.models import load_tokenizer
    from redline.train.sft import tokenize_turns

    tok = load_tokenizer("tiny-random")
    chat = DEMONSTRATION_LAYOUTS["messages"]["messages"]
    out = tokenize_turns(tok, chat)
    ids, mask = out["input_ids"], out["completion_mask"]
    trained = tok.decode([t for t, m in zip(ids, mask) if m])
    assert "Hello." in trained and "Blue." in trained
    assert "Hi" not in trained and "Sky colour?" not in trained
    # the last turn is masked exactly as TRL masks a prompt-completion pair's completion
    prompt_ids = tok.apply_chat_template(chat[:3], tokenize=True, return_dict=True, add_generation_prompt=True)["input_ids"]
    assert mask[len(prompt_ids):] == [1] * (len(ids) - len(prompt_ids))
    assert ids[: len(prompt_ids)] == prompt_ids


@pytest.mark.parametrize("layouts", ["preference", "demonstration"])
def test_two_step_trainers_read_trl_files(tmp_path, layouts):
    rows = PREFERENCE_LAYOUTS if layouts == "preference" else DEMONSTRATION_LAYOUTS
    data = write(tmp_path / "data.jsonl", [row for row in rows.values() for _ in range(2)])
    common = ["--model", "tiny-random", "--max-steps", "2", "--device", "cpu", "--save-steps", "100"]
    if layouts == "preference":
        run = tmp_path / "rm"
        assert main(["train", "reward", "--data", str(data), "--out", str(run), "--eval-split", "0", *common]) == 0
        assert json.loads((run / "redline.json").read_text())["metrics"]["train_comparisons"] == 8
        run = tmp_path / "gap"
        assert main(["train", "gap-reward", "--data", str(data), "--out", str(run), "--eval-split", "0", *common]) == 0
        assert json.loads((run / "redline.json").read_text())["metrics"]["train_pairs"] == 8
    else:
        run = tmp_path / "sft"
        assert main(["train", "sft", "--data", str(data), "--out", str(run), "--batch-size", "1", "--grad-accum", "1",
                     *common]) == 0
        assert json.loads((run / "redline.json").read_text())["metrics"]["examples"] == 6


def test_a_messages_column_that_is_not_a_list_is_a_bad_line_not_a_traceback(tmp_path, capsys):
    # Some exports store the conversation as JSON text; it must name the file, line and field.
    path = write(tmp_path / "d.jsonl", [DEMONSTRATION_LAYOUTS["messages"],
                                        {"messages": json.dumps(DEMONSTRATION_LAYOUTS["messages"]["messages"])}])
    assert main(["data", "validate", str(path), "--kind", "demonstration"]) == 2
    assert capsys.readouterr().err.strip() == f"redline: error: {path}:2: messages: expected a list of messages, got str"
