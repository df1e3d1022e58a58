"""The importers: small fixtures in each real format, checked field by field (no network)."""

from __future__ import annotations

import json

import pytest

from redline import RedlineError
from redline.cli import main
from redline.formats import FORMATS, ImportReport, beside, hh_rlhf, import_file, trl, ultrafeedback
from redline.records import FieldError, RecordError, dense_ranks, read_records


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


# ----------------------------------------------------------------------------- hh-rlhf

HH_SINGLE = {
    "chosen": "\n\nHuman: What is 2+2?\n\nAssistant: 4.",
    "rejected": "\n\nHuman: What is 2+2?\n\nAssistant: 5.",
}
HH_MULTI = {
    "chosen": "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: Tell me a joke."
    "\n\nAssistant: Why did the chicken cross the road?",
    "rejected": "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: Tell me a joke.\n\nAssistant: No.",
}
HH_DIVERGING = {
    "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Bye\n\nAssistant: Goodbye.",
    "rejected": "\n\nHuman: Hi\n\nAssistant: Go away.\n\nHuman: Bye\n\nAssistant: Fine.",
}


def test_hh_rlhf_multi_turn_prompt_is_the_shared_conversation(tmp_path):
    src = write_jsonl(tmp_path / "hh.jsonl", [HH_SINGLE, HH_MULTI])
    out = tmp_path / "out.jsonl"

    written = import_file("hh-rlhf", str(src), out)

    assert written == {out: ("preference", 2)}
    single, multi = read_jsonl(out)
    assert single == {
        "prompt": [user("What is 2+2?")],
        "chosen": "4.",
        "rejected": "5.",
        "meta": {"source_format": "hh-rlhf"},
    }
    assert multi["prompt"] == [user("Hi"), assistant("Hello! How can I help?"), user("Tell me a joke.")]
    assert multi["chosen"] == "Why did the chicken cross the road?"
    assert multi["rejected"] == "No."
    assert len(read_records(out, "preference")) == 2  # what the trainers read back


def test_hh_rlhf_refuses_transcripts_that_diverge_before_the_last_turn(tmp_path):
    src = write_jsonl(tmp_path / "hh.jsonl", [HH_SINGLE, HH_DIVERGING])
    out = tmp_path / "out.jsonl"

    with pytest.raises(RecordError) as e:
        import_file("hh-rlhf", str(src), out)

    assert e.value.errors == [
        f"{src}:2: rejected: diverges from chosen at turn 2, before the final Assistant turn "
        "(only the final turn may differ)"
    ]
    assert not out.exists()


def test_hh_rlhf_transcript_parsing():
    assert hh_rlhf.parse_transcript("Human: a\n\nAssistant: b", "chosen") == [user("a"), assistant("b")]
    with pytest.raises(ValueError, match="ends with a Human turn"):
        hh_rlhf.parse_transcript("\n\nHuman: a\n\nAssistant: b\n\nHuman: c", "chosen")
    with pytest.raises(ValueError, match="not an HH transcript"):
        hh_rlhf.parse_transcript("just some text", "chosen")
    # Windows line breaks: the whole chat was one Human turn, refused as "ends with a Human turn"
    assert hh_rlhf.parse_transcript("\r\n\r\nHuman: a\r\nb\r\n\r\nAssistant: c", "chosen") == [user("a\r\nb"), assistant("c")]


# ----------------------------------------------------------------------------- trl


def test_trl_detects_each_format_by_its_keys():
    q = [{"role": "system", "content": "Be brief."}, user("Sky colour?")]
    cases = [
        # standard preference: strings kept exactly, spaces included
        ({"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}, "preference",
         {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}),
        # conversational preference
        ({"prompt": q, "chosen": [assistant("Blue.")], "rejected": [assistant("Green.")]}, "preference",
         {"prompt": q, "chosen": "Blue.", "rejected": "Green."}),
        # implicit prompt: the shared messages are the prompt
        ({"chosen": q + [assistant("Blue.")], "rejected": q + [assistant("Green.")]}, "preference",
         {"prompt": q, "chosen": "Blue.", "rejected": "Green."}),
        # implicit prompt, identical replies: kept (an anchor pair for PIT), the prompt ends before the reply
        ({"chosen": q + [assistant("Blue.")], "rejected": q + [assistant("Blue.")]}, "preference",
         {"prompt": q, "chosen": "Blue.", "rejected": "Blue."}),
        # a chat prompt beside string replies: redline's own layout (what `--from hh-rlhf` writes), read as it is
        ({"prompt": q, "chosen": "Blue.", "rejected": "Green."}, "preference",
         {"prompt": q, "chosen": "Blue.", "rejected": "Green."}),
        # standard and conversational prompt-completion
        ({"prompt": "The sky is", "completion": " blue."}, "demonstration",
         {"prompt": "The sky is", "response": " blue."}),
        ({"prompt": q, "completion": [assistant("Blue.")]}, "demonstration", {"prompt": q, "response": "Blue."}),
        # language modeling conversation: everything before the last assistant message is the prompt
        ({"messages": [user("Hi"), assistant("Hello."), user("Sky colour?"), assistant("Blue.")]}, "demonstration",
         {"prompt": [user("Hi"), assistant("Hello."), user("Sky colour?")], "response": "Blue."}),
    ]
    for row, kind, fields in cases:
        (record,) = trl.convert(row)
        assert record.kind == kind, row
        assert record.to_dict() == {**fields, "meta": {"source_format": "trl"}}, row


@pytest.mark.parametrize(
    "row, field, reason",
    [
        ({"chosen": "The sky is blue.", "rejected": "The sky is green."}, "prompt",
         "can only be split off conversations"),
        ({"prompt": "q", "completion": "a", "label": True}, "label", "unpaired preference"),
        ({"text": "Once upon a time"}, "<record>", "no TRL format has these keys (text)"),
        ({"prompt": [user("q")], "chosen": [assistant("a"), user("more?")], "rejected": [assistant("b")]},
         "chosen", "expected one assistant message, got 2"),
        ({"messages": [user("q")]}, "messages", "no assistant message"),
        # a messages column stored as JSON text: one clear error, not a TypeError
        ({"messages": json.dumps([user("q"), assistant("a")])}, "messages", "expected a list of messages, got str"),
        ({"messages": [user("q"), assistant("a"), user("and?")]}, "messages", "after the last assistant reply"),
        # an empty last reply is named where it is, not as a "response" field the row does not have
        ({"messages": [user("q"), assistant(" ")]}, "messages[1].content", "empty string"),
        ({"prompt": [{"role": "robot", "content": "q"}], "completion": "a"}, "prompt[0].role", "unknown role"),
    ],
)
def test_trl_refuses_rows_it_cannot_convert(row, field, reason):
    with pytest.raises(ValueError) as e:
        trl.convert(row)
    assert e.value.field == field
    assert reason in e.value.reason


def test_a_blank_conversational_reply_is_not_called_an_empty_prompt():
    # prompt_field reads replies too: "chosen: ... an empty prompt" named a field that is no prompt
    with pytest.raises(ValueError) as e:
        trl.convert({"prompt": "q", "chosen": [assistant(" ")], "rejected": [assistant("b")]})
    assert (e.value.field, e.value.reason) == ("chosen", "no message holds any text")


def test_trl_files_of_two_kinds_go_to_two_files(tmp_path):
    rows = [
        {"id": "p1", "prompt": "2+2?", "chosen": "4", "rejected": "5"},
        {"id": "d1", "prompt": "2+3?", "completion": "5"},
    ]
    src = write_jsonl(tmp_path / "trl.jsonl", rows)
    out = tmp_path / "out.jsonl"

    written = import_file("trl", str(src), out)

    assert written == {out: ("preference", 1), tmp_path / "out.demonstration.jsonl": ("demonstration", 1)}
    assert read_jsonl(out)[0]["id"] == "p1"

    # Imported again to the same OUTPUT from a file of preferences alone: the earlier import's demonstrations
    # stayed beside the new preferences, to be read as theirs.
    assert import_file("trl", str(write_jsonl(tmp_path / "prefs.jsonl", rows[:1])), out) == {out: ("preference", 1)}
    assert not (tmp_path / "out.demonstration.jsonl").exists()


def test_trl_names_another_layouts_column_beside_a_demonstration_as_dropped(tmp_path):
    # ultrachat_200k's prompt beside its messages; a messages column beside prompt/completion: neither is read,
    # and neither was named (both are TRL column names), so a conversation was dropped without a word.
    rows = [{"prompt": "Hi", "messages": [user("Hi"), assistant("Hello.")]},
            {"prompt": "q", "completion": "a", "messages": [user("other"), assistant("b")]}]
    report = ImportReport("")
    import_file("trl", str(write_jsonl(tmp_path / "in.jsonl", rows)), tmp_path / "out.jsonl", report=report)
    assert report.dropped_columns == {"prompt": 1, "messages": 1}


def test_a_null_column_is_not_named_as_dropped(tmp_path):
    # a data set's column missing from some rows is null there: nothing was dropped, and it was counted as dropped
    rows = [{"prompt": "q", "chosen": "a", "rejected": "b", "source": "x", "tags": None},
            {"prompt": "q2", "chosen": "a", "rejected": "b", "source": None, "tags": ["t"]}]
    report = ImportReport("")
    import_file("trl", str(write_jsonl(tmp_path / "in.jsonl", rows)), tmp_path / "out.jsonl", report=report)
    assert report.dropped_columns == {"tags": 1}


def test_a_second_import_whose_only_kind_goes_to_output_removes_the_earlier_file_of_that_kind_beside_it(tmp_path):
    rows = [{"prompt": "2+2?", "chosen": "4", "rejected": "5"}, {"prompt": "2+3?", "completion": "5"}]
    out = tmp_path / "out.jsonl"
    import_file("trl", str(write_jsonl(tmp_path / "both.jsonl", rows)), out)
    # Demonstrations alone go to OUTPUT itself: the earlier OUT.demonstration.jsonl stayed beside them, to be
    # read as this import's second file.
    written = import_file("trl", str(write_jsonl(tmp_path / "demos.jsonl", [{"prompt": "1+1?", "completion": "2"}])), out)
    assert written == {out: ("demonstration", 1)}
    assert not (tmp_path / "out.demonstration.jsonl").exists()


# ----------------------------------------------------------------------------- shepherd


def test_shepherd_rows_become_critique_only_feedback(tmp_path):
    rows = [
        {
            "id": 0,
            "question": "Ryan has 40 balls, 11 blue, twice as many red as blue. How many green?",
            "answer": "There are 20 red balls. 40 - 20 - 11 = 9. The answer is 9.\n\n",
            "feedback": "Twice as many red as blue is 22, not 20.",
            "meta": {"domain": "human annotation"},
        },
        {"id": 1, "question": "2+2?", "answer": "5", "feedback": "It is 4."},
    ]
    src = write_jsonl(tmp_path / "shepherd.jsonl", rows)
    out = tmp_path / "critiques.jsonl"

    assert import_file("shepherd", str(src), out) == {out: ("feedback", 2)}

    first, second = read_jsonl(out)
    assert first == {
        "id": "0",
        "prompt": rows[0]["question"],
        "response": "There are 20 red balls. 40 - 20 - 11 = 9. The answer is 9.",
        "critique": "Twice as many red as blue is 22, not 20.",
        "revision": None,
        "meta": {"domain": "human annotation", "source_format": "shepherd", "critique_only": True},
    }
    assert second["id"] == "1"
    (record, _) = read_records(out, "feedback")
    assert record.critique_only


# Row 1 of data/human_data_for_model.jsonl in facebookresearch/Shepherd, verbatim (CC BY-NC 4.0,
# https://github.com/facebookresearch/Shepherd): every real row carries `dataset`, the task it came from.
SHEPHERD_REAL = {
    "id": 1, "dataset": "GSM8K",
    "question": "Ryan has 40 balls. There are twice as many red balls as blue while the rest are green. "
                "If there are 11 blue balls, how many green balls are there?",
    "answer": "Ryan has 40 balls. There are twice as many red balls as blue. So there are 20 red balls. "
              "The rest are green. 40 - 20 - 11 = 19. The answer is 19.\n\n",
    "feedback": "Saying that there are twice as many red balls as blue doesn't tell us what the total of red balls "
                "is, so the deduction that there are 20 is wrongly based. From this wrong premise, the rest of the "
                "answer is wrong",
}


def test_shepherd_keeps_the_source_task_of_a_real_row(tmp_path):
    src = write_jsonl(tmp_path / "shepherd.jsonl", [SHEPHERD_REAL])
    out = tmp_path / "critiques.jsonl"
    report = ImportReport("")

    assert import_file("shepherd", str(src), out, report=report) == {out: ("feedback", 1)}

    (record,) = read_jsonl(out)
    assert record["meta"] == {"dataset": "GSM8K", "source_format": "shepherd", "critique_only": True}
    assert record["response"].endswith("The answer is 19.")
    assert not report.dropped_columns  # nothing of the row is lost


# ----------------------------------------------------------------------------- ultrafeedback


def completion(model, response, ratings, overall, critique="Good, but add detail."):
    annotations = {
        aspect: {"Rating": rating, "Rationale": "..."}
        for aspect, rating in zip(("instruction_following", "honesty", "truthfulness", "helpfulness"), ratings)
    }
    return {
        "model": model,
        "principle": "helpfulness",
        "custom_system_prompt": "Be helpful.",
        "response": response,
        "annotations": annotations,
        "critique": critique,
        "overall_score": overall,
        "fine-grained_score": None,  # filled in by uf_row, or left None to test the fallback
    }


def uf_row(instruction, completions, fill_fine_grained=True):
    for c in completions:
        if fill_fine_grained:
            ratings = [float(a["Rating"]) for a in c["annotations"].values() if a["Rating"] != "N/A"]
            c["fine-grained_score"] = sum(ratings) / len(ratings)
    return {"source": "evol_instruct", "instruction": instruction, "models": [c["model"] for c in completions],
            "completions": completions, "correct_answers": ["None"], "incorrect_answers": ["None"]}


UF_RANKED = uf_row("Name a prime.", [
    completion("gpt-4", "2 is prime.", ["5", "5", "5", "5"], 9.0),           # mean 5.0
    completion("alpaca-7b", "9 is prime.", ["2", "1", "1", "N/A"], 2.0),     # mean 4/3
    completion("vicuna-33b", "7 is a prime.", ["5", "5", "5", "5"], 8.5),    # mean 5.0: ties with gpt-4
    completion("falcon-40b", "", ["1", "1", "1", "1"], 1.0),                 # empty response: left out
])
UF_ALL_TIED = uf_row("Say hi.", [
    completion("gpt-4", "Hi!", ["5", "5", "5", "5"], 9.0),
    completion("bard", "Hello!", ["5", "5", "5", "5"], 8.0),
])
UF_ONE = uf_row("Say bye.", [completion("gpt-4", "Bye!", ["4", "4", "4", "4"], 7.0, critique="")])


def test_ultrafeedback_ranks_with_ties_and_writes_critiques_beside(tmp_path):
    src = write_jsonl(tmp_path / "uf.jsonl", [UF_RANKED, UF_ALL_TIED, UF_ONE])
    out = tmp_path / "rm.jsonl"
    report = ImportReport("")

    written = import_file("ultrafeedback", str(src), out, report=report)

    feedback_path = tmp_path / "rm.feedback.jsonl"
    assert written == {out: ("ranking", 1), feedback_path: ("feedback", 5)}
    (ranking,) = read_jsonl(out)
    assert ranking["prompt"] == "Name a prime."
    assert ranking["responses"] == ["2 is prime.", "9 is prime.", "7 is a prime."]
    assert ranking["ranks"] == [0, 1, 0]  # gpt-4 and vicuna tie at 5.0; "N/A" is left out of alpaca's mean
    assert ranking["meta"]["models"] == ["gpt-4", "alpaca-7b", "vicuna-33b"]
    assert ranking["meta"]["score"] == "fine-grained_score"
    assert ranking["meta"]["prompt_source"] == "evol_instruct"
    feedback = read_jsonl(feedback_path)
    assert [f["response"] for f in feedback] == ["2 is prime.", "9 is prime.", "7 is a prime.", "Hi!", "Hello!"]
    assert feedback[1]["critique"] == "Good, but add detail."
    assert feedback[1]["revision"] is None
    assert feedback[1]["meta"]["critique_only"] is True
    assert feedback[1]["meta"]["model"] == "alpaca-7b"
    assert feedback[1]["meta"]["overall_score"] == 2.0
    # the system prompt the response was written under is not in the prompt: the docstring keeps it in meta
    assert feedback[1]["meta"]["custom_system_prompt"] == "Be helpful."
    assert report.read == 3
    assert report.left_out == {
        "completions with an empty response": 1,
        "prompts whose completions all tie": 1,
        "prompts with fewer than 2 scored completions": 1,
        "completions with no critique": 1,
    }


def test_ultrafeedback_scores():
    assert dense_ranks([4.5, 3.0, 4.5, 2.0], highest_best=True) == [0, 1, 0, 2]
    # fine-grained_score absent: computed from the ratings, "N/A" left out: (3 + 4) / 2
    row = uf_row("q", [completion("a", "x", ["3", "N/A", "4", "N/A"], 9.0),
                       completion("b", "y", ["5", "5", "5", "5"], 2.0)], fill_fine_grained=False)
    ranking = ultrafeedback.convert(row)[0]
    assert ranking.meta["scores"] == [3.5, 5.0]
    assert ranking.ranks == [1, 0]
    # by the critique's overall grade instead
    assert ultrafeedback.convert(row, score="overall")[0].ranks == [0, 1]
    # a score that is not a finite number (JSON's NaN parses in Python; so does the rating "nan") is refused by field
    nan = uf_row("q", [completion("a", "x", ["3", "3", "3", "3"], 9.0), completion("b", "y", ["5", "5", "5", "5"], 2.0)])
    nan["completions"][0]["fine-grained_score"] = float("nan")
    with pytest.raises(FieldError, match=r"completions\[0\]\.fine-grained_score: not a finite number"):
        ultrafeedback.convert(nan)
    inf = uf_row("q", [completion("a", "x", ["inf", "3", "3", "3"], 9.0), completion("b", "y", ["5", "5", "5", "5"], 2.0)],
                 fill_fine_grained=False)
    with pytest.raises(FieldError, match="Rating: not a finite number: 'inf'"):
        ultrafeedback.convert(inf)


def test_ultrafeedback_binarized_rows_are_preferences(tmp_path):
    rows = [
        {"prompt": "Name a prime.", "prompt_id": "abc",
         "chosen": [user("Name a prime."), assistant("2.")], "rejected": [user("Name a prime."), assistant("9.")],
         "messages": [user("Name a prime."), assistant("2.")], "score_chosen": 9.0, "score_rejected": 2.0},
    ]
    src = write_jsonl(tmp_path / "bin.jsonl", rows)
    out = tmp_path / "prefs.jsonl"

    assert import_file("ultrafeedback", str(src), out) == {out: ("preference", 1)}
    assert read_jsonl(out) == [{
        "id": "abc", "prompt": "Name a prime.", "chosen": "2.", "rejected": "9.",
        "meta": {"source_format": "ultrafeedback", "score_chosen": 9.0, "score_rejected": 2.0},
    }]


def test_ultrafeedback_binarized_reply_to_another_conversation_than_the_prompt_is_refused():
    # The last message was taken as the reply to the prompt whatever came before it: here an answer to "Name
    # an even number." would have been imported as the chosen reply to "Name a prime.".
    multi = [user("Name a prime."), assistant("2."), user("Name an even number."), assistant("4.")]
    row = {"prompt": "Name a prime.", "chosen": multi, "rejected": [user("Name a prime."), assistant("9.")]}
    with pytest.raises(FieldError, match="chosen: the 3 message.* before the reply are not the prompt's user turn"):
        ultrafeedback.convert(row)
    other = {**row, "chosen": [user("Name a square."), assistant("4.")]}
    with pytest.raises(FieldError, match="chosen: .*--from trl"):
        ultrafeedback.convert(other)
    (pref,) = ultrafeedback.convert({**row, "chosen": [assistant("2.")]})  # the reply alone is the reply
    assert (pref.prompt, pref.chosen, pref.rejected) == ("Name a prime.", "2.", "9.")


def test_ultrafeedback_binarized_ties_are_left_out_and_counted_not_imported_as_preferences(tmp_path):
    # HuggingFaceH4/ultrafeedback_binarized drew the rejected reply at random, so some pairs score the same
    # (its discussion #5): which one is "chosen" is then an accident of order, not an annotator's preference.
    def row(pid, chosen, rejected, score_chosen, score_rejected):
        return {"prompt": "Name a prime.", "prompt_id": pid, "chosen": [user("Name a prime."), assistant(chosen)],
                "rejected": [user("Name a prime."), assistant(rejected)],
                "score_chosen": score_chosen, "score_rejected": score_rejected}

    rows = [row("a", "2.", "9.", 9.0, 2.0), row("b", "3.", "5.", 7.0, 7.0), row("c", "7.", "7.", 6.0, 6.0)]
    src = write_jsonl(tmp_path / "bin.jsonl", rows)
    out = tmp_path / "prefs.jsonl"
    report = ImportReport("")

    assert import_file("ultrafeedback", str(src), out, report=report) == {out: ("preference", 2)}

    assert [p["id"] for p in read_jsonl(out)] == ["a", "c"]  # the tie is out; the identical pair stays an anchor
    assert report.read == 3
    assert report.left_out == {"binarized pairs whose scores tie": 1}
    assert report.identical_pairs == 1
    assert "left out 1 binarized pairs whose scores tie" in report.summary()


def test_ultrafeedback_from_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "uf.parquet"
    # Parquet unifies the struct of every aspect, so absent keys come back as None.
    pq.write_table(pa.Table.from_pylist([UF_RANKED, UF_ALL_TIED]), src)
    out = tmp_path / "rm.parquet"

    written = import_file("ultrafeedback", str(src), out)

    assert written == {out: ("ranking", 1), tmp_path / "rm.feedback.parquet": ("feedback", 5)}
    (ranking,) = read_records(out, "ranking")
    assert ranking.ranks == [0, 1, 0]


# ----------------------------------------------------------------------------- summarize-from-feedback

TLDR_REDDIT = {
    "info": {"id": "t3_abc", "post": "My cat hides all day.", "title": "Cat help", "subreddit": "pets",
             "site": None, "article": None},
    "summaries": [{"text": " cat sad", "policy": "sup2", "note": None},
                  {"text": " my cat hides all day", "policy": "ref", "note": None}],
    "choice": 1, "worker": "w17", "batch": "batch5", "split": "train", "extra": {"confidence": 8},
}
TLDR_NEWS = {
    "info": {"id": "cnn-1", "post": None, "title": "Storm hits", "subreddit": None, "site": "cnn",
             "article": "A storm hit the coast on Monday."},
    "summaries": [{"text": " storm hit coast", "policy": "a"}, {"text": " weather", "policy": "b"}],
    "choice": 0, "worker": "w2", "batch": "cnndm0", "split": "valid1", "extra": {"confidence": None},
}


def test_summarize_from_feedback_comparisons(tmp_path):
    src = write_jsonl(tmp_path / "comparisons.jsonl", [TLDR_REDDIT, TLDR_NEWS])
    out = tmp_path / "out.jsonl"

    assert import_file("summarize-from-feedback", str(src), out) == {out: ("preference", 2)}

    reddit, news = read_jsonl(out)
    assert reddit == {
        "prompt": "SUBREDDIT: r/pets\n\nTITLE: Cat help\n\nPOST: My cat hides all day.\n\nTL;DR:",
        "chosen": "my cat hides all day",
        "rejected": "cat sad",
        "meta": {"post_id": "t3_abc", "batch": "batch5", "split": "train", "worker": "w17",
                 "chosen_policy": "ref", "rejected_policy": "sup2", "confidence": 8,
                 "source_format": "summarize-from-feedback"},
    }
    assert news["prompt"] == "TITLE: Storm hits\n\nA storm hit the coast on Monday.\n\nTL;DR:"
    assert (news["chosen"], news["rejected"]) == ("storm hit coast", "weather")
    assert "confidence" not in news["meta"]
    assert news["meta"]["info"] == {"site": "cnn"}  # what no step reads is kept (it was dropped without a word)


def test_summarize_from_feedback_keeps_a_summarys_note_and_extras_in_meta(tmp_path):
    row = {**TLDR_REDDIT, "extra": {"confidence": 8, "axis": "coverage"},
           "summaries": [{"text": " cat sad", "policy": "sup2", "note": "too short"},
                         {"text": " my cat hides all day", "policy": "ref", "note": None}]}
    out = tmp_path / "out.jsonl"
    import_file("summarize-from-feedback", str(write_jsonl(tmp_path / "c.jsonl", [row])), out)
    (meta,) = [r["meta"] for r in read_jsonl(out)]
    assert meta["rejected_summary"] == {"note": "too short"} and "chosen_summary" not in meta  # a null note: nothing
    assert meta["extra"] == {"axis": "coverage"} and meta["confidence"] == 8


# ----------------------------------------------------------------------------- bad input, skips, limits


def test_bad_rows_are_all_listed_with_row_and_field_and_nothing_is_written(tmp_path):
    bad_choice = {**TLDR_REDDIT, "choice": 2}
    no_info = {k: v for k, v in TLDR_REDDIT.items() if k != "info"}
    src = tmp_path / "c.jsonl"
    src.write_text(
        json.dumps(TLDR_REDDIT) + "\n" + json.dumps(bad_choice) + "\n{not json\n" + json.dumps(no_info) + "\n"
        + json.dumps({**TLDR_REDDIT, "summaries": [{"text": "x"}, {"text": 3}]}) + "\n",
        encoding="utf-8",
    )
    out = tmp_path / "out.jsonl"

    with pytest.raises(RecordError) as e:
        import_file("summarize-from-feedback", str(src), out)

    assert e.value.errors == [
        f"{src}:2: choice: expected 0 or 1, got 2",
        f"{src}:3: <line>: not JSON: Expecting property name enclosed in double quotes at column 2",
        f"{src}:4: info: missing",
        f"{src}:5: summaries[1].text: expected a string, got int",
    ]
    assert list(tmp_path.iterdir()) == [src]


def test_skip_invalid_goes_on_and_counts(tmp_path, capsys):
    same = {"chosen": HH_SINGLE["chosen"], "rejected": HH_SINGLE["chosen"]}
    src = write_jsonl(tmp_path / "hh.jsonl", [HH_SINGLE, HH_DIVERGING, {"chosen": 3, "rejected": "x"}, same, HH_MULTI])
    out = tmp_path / "out.jsonl"

    written = import_file("hh-rlhf", str(src), out, skip_invalid=True)

    assert written == {out: ("preference", 3)}
    err = capsys.readouterr().err
    assert f"{src}: imported 3 rows, skipped 2 invalid" in err
    assert "1× chosen: expected a string, got int" in err
    assert "kept 1 preference(s) with chosen identical to rejected" in err
    kept = read_records(out, "preference")
    assert sum(p.chosen == p.rejected for p in kept) == 1  # kept, for PIT's anchors
    assert f"skipped {src}:2: rejected: diverges from chosen at turn 2" in err
    # every row skipped, or none there: refused, with why, and no empty file an importer's user must debug later
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"chosen": 3, "rejected": "x"}])
    with pytest.raises(RedlineError, match="bad.jsonl: every one of its 1 rows is invalid: nothing left to use"):
        import_file("hh-rlhf", str(bad), tmp_path / "none.jsonl", skip_invalid=True)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(RedlineError, match=r"empty.jsonl: no rows \(the file is empty or holds only blank lines\)"):
        import_file("hh-rlhf", str(tmp_path / "empty.jsonl"), tmp_path / "none.jsonl")
    assert not (tmp_path / "none.jsonl").exists()


def test_import_help_says_what_happens_to_identical_pairs(capsys):
    # `data import --help` prints this module's docstring: it must not promise a refusal the import does not make
    with pytest.raises(SystemExit):
        main(["data", "import", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "same, and a repeated id, are refused" not in text
    assert "same is kept and counted" in text


def test_duplicate_ids_are_refused(tmp_path):
    rows = [{"id": "a", "question": "q", "answer": "a", "feedback": "f"}] * 2
    src = write_jsonl(tmp_path / "s.jsonl", rows)
    with pytest.raises(RecordError, match=r":2: id: duplicate id 'a' \(first on row 1\)"):
        import_file("shepherd", str(src), tmp_path / "out.jsonl")
    # after a bad row, a repeated id is listed with it (it was found only on the run after the first was mended)
    src = write_jsonl(tmp_path / "s.jsonl", [{"id": "x", "question": "q", "answer": "a"}, *rows])
    with pytest.raises(RecordError) as e:
        import_file("shepherd", str(src), tmp_path / "out.jsonl")
    assert [m.split(": ", 1)[1] for m in e.value.errors] == ["feedback: missing", "id: duplicate id 'a' (first on row 2)"]


def test_limit_keeps_the_first_valid_rows_and_json_arrays_are_read(tmp_path):
    src = tmp_path / "hh.json"
    src.write_text(json.dumps([HH_MULTI, HH_SINGLE, HH_SINGLE], indent=2), encoding="utf-8")
    out = tmp_path / "out.jsonl"

    assert import_file("hh-rlhf", str(src), out, limit=2) == {out: ("preference", 2)}
    assert read_jsonl(out)[0]["chosen"] == "Why did the chicken cross the road?"


def test_a_pretty_printed_json_object_is_one_clear_error_not_one_per_line(tmp_path):
    src = tmp_path / "squad.json"
    src.write_text(json.dumps({"version": "1", "data": [HH_SINGLE]}, indent=2), encoding="utf-8")
    with pytest.raises(RecordError) as e:  # each of its lines was "not JSON"
        import_file("hh-rlhf", str(src), tmp_path / "out.jsonl")
    assert e.value.errors == [f"{src}:1: <file>: holds one JSON object, not rows: expected a JSON array of rows "
                              "or one row per line"]
    src.write_text(json.dumps(HH_SINGLE) + "\n" + json.dumps(HH_SINGLE) + "\n", encoding="utf-8")  # JSONL named .json
    assert import_file("hh-rlhf", str(src), tmp_path / "out.jsonl") == {tmp_path / "out.jsonl": ("preference", 2)}


def test_half_a_surrogate_pair_in_a_json_array_is_a_bad_row_not_a_failure_at_write(tmp_path):
    # JSON reads "\ud800" alone; writing the records then failed with a bare UnicodeEncodeError naming no row
    src = tmp_path / "hh.json"
    src.write_text(json.dumps([HH_SINGLE, {**HH_SINGLE, "chosen": HH_SINGLE["chosen"] + "\ud800"}]), encoding="utf-8")
    with pytest.raises(RecordError, match=r"hh.json:2: chosen: holds half of a UTF-16 surrogate pair"):
        import_file("hh-rlhf", str(src), tmp_path / "out.jsonl")
    report = ImportReport("")
    assert import_file("hh-rlhf", str(src), tmp_path / "out.jsonl", skip_invalid=True, report=report)
    assert (report.read, report.skipped) == (1, 1)


def test_a_json_arrays_row_with_a_key_twice_or_a_huge_integer_is_a_bad_row(tmp_path):
    """json.loads of the whole array kept a repeated key's last value silently, and raised a bare ValueError (no
    file, no row) for an integer of over 4300 digits."""
    src = tmp_path / "hh.json"
    twice = json.dumps(HH_SINGLE)[:-1] + ', "chosen": "\\n\\nHuman: What is 2+2?\\n\\nAssistant: 22."}'
    huge = json.dumps(HH_SINGLE)[:-1] + ', "score": ' + "9" * 5000 + "}"
    src.write_text(f"[{json.dumps(HH_SINGLE)},\n {twice},\n {huge}]", encoding="utf-8")
    with pytest.raises(RecordError) as e:
        import_file("hh-rlhf", str(src), tmp_path / "out.jsonl")
    assert e.value.errors == [f"{src}:2: chosen: the key is given twice in one object: keep one",
                              f"{src}:3: <row>: holds an integer of more than 4300 digits, which Python does not read"]
    report = ImportReport("")
    assert import_file("hh-rlhf", str(src), tmp_path / "out.jsonl", skip_invalid=True, report=report)
    assert (report.read, report.skipped) == (1, 2)
    for bad in ("[1,]", "[1 2]", "[1] x", "["):  # what json.loads refuses, the row by row reader refuses too
        src.write_text(bad, encoding="utf-8")
        with pytest.raises(RecordError, match="<file>: not JSON"):
            import_file("hh-rlhf", str(src), tmp_path / "out.jsonl")


def test_a_second_kind_beside_a_gzipped_output_keeps_its_jsonl_gz_suffix(tmp_path):
    src = write_jsonl(tmp_path / "uf.jsonl", [UF_RANKED])
    out = tmp_path / "rm.v1.jsonl.gz"
    written = import_file("ultrafeedback", str(src), out)
    assert written == {out: ("ranking", 1), tmp_path / "rm.v1.feedback.jsonl.gz": ("feedback", 3)}
    assert len(read_records(tmp_path / "rm.v1.feedback.jsonl.gz", "feedback")) == 3
    assert beside(tmp_path / "rm.parquet", "feedback") == tmp_path / "rm.feedback.parquet"


def test_an_output_that_is_the_input_is_refused_before_anything_is_written(tmp_path):
    src = write_jsonl(tmp_path / "hh.jsonl", [HH_SINGLE])
    with pytest.raises(RedlineError, match="hh.jsonl is the input file: the import would write over"):
        import_file("hh-rlhf", str(src), src)  # the transcripts were replaced by their preferences
    assert read_jsonl(src) == [HH_SINGLE]
    # nor the file beside OUTPUT, which a TRL import writes its demonstrations to (or removes)
    src = write_jsonl(tmp_path / "out.demonstration.jsonl", [{"prompt": "q", "completion": "a"}])
    with pytest.raises(RedlineError, match="is the input file"):
        import_file("trl", str(src), tmp_path / "out.jsonl")
    assert src.exists()


def test_an_output_that_cannot_be_written_is_refused_before_reading(tmp_path):
    src = write_jsonl(tmp_path / "hh.jsonl", [HH_SINGLE])
    (tmp_path / "folder").mkdir()
    # the rows were read and converted, then the write failed naming a temporary file ("Is a directory: .folder.x.tmp")
    with pytest.raises(RedlineError, match=r"OUTPUT .*folder is a folder: name the file to write \(such as .*out.jsonl"):
        import_file("hh-rlhf", str(src), tmp_path / "folder")
    with pytest.raises(RedlineError, match=r"OUTPUT .*hh.jsonl/out.jsonl is under .*hh.jsonl, which is a file"):
        import_file("hh-rlhf", str(src), src / "out.jsonl")


def test_unknown_format():
    with pytest.raises(ValueError, match="unknown format 'anthropic'"):
        import_file("anthropic", "x.jsonl", "out.jsonl")
    assert sorted(FORMATS) == ["hh-rlhf", "shepherd", "summarize-from-feedback", "trl", "ultrafeedback"]


# ----------------------------------------------------------------------------- the command


def test_cli_imports_end_to_end(tmp_path, capsys):
    src = write_jsonl(tmp_path / "uf.jsonl", [UF_RANKED])
    out = tmp_path / "rm.jsonl"

    assert main(["data", "import", "--from", "ultrafeedback", str(src), str(out)]) == 0

    stdout = capsys.readouterr().out
    assert f"wrote 1 ranking records to {out}" in stdout
    assert f"wrote 3 feedback records to {tmp_path / 'rm.feedback.jsonl'}" in stdout
    assert main(["data", "validate", "--kind", "ranking", str(out)]) == 0


def test_cli_split_of_a_file_says_a_file_has_no_splits(tmp_path, capsys):
    src = write_jsonl(tmp_path / "hh.jsonl", [HH_SINGLE])
    assert main(["data", "import", "--from", "hh-rlhf", str(src), str(tmp_path / "out.jsonl"), "--split", "test"]) == 2
    # it said "hh.jsonl:test: cannot read: No such file or directory", of a file that is there
    assert capsys.readouterr().err.strip() == f"redline: error: --split test: {src} is a file, which has no splits " \
                                              "(a datasets folder or a hub data set has them)"


def test_cli_bad_file_exits_2_with_the_error_on_stderr(tmp_path, capsys):
    src = write_jsonl(tmp_path / "hh.jsonl", [HH_SINGLE, {"chosen": HH_SINGLE["chosen"]}])
    out = tmp_path / "out.jsonl"

    assert main(["data", "import", "--from", "hh-rlhf", str(src), str(out)]) == 2

    assert capsys.readouterr().err.strip() == f"redline: error: {src}:2: rejected: missing"
    assert not out.exists()
