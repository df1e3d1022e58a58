"""refine (Self-Refine): feedback then refinement by one model; an item stops when its feedback says
NO ISSUES; malformed feedback and refinements are parse failures; the stop phrase is read strictly;
the CLI on tiny-random."""

import json

import pytest

from redline import RedlineError
from redline.cli import main
from redline.generation import ScriptedEngine
from redline.improve.self_refine import RefineConfig, refine
from redline.models import ModelCard, load_reward_model, load_tokenizer, save_model
from redline.prompts import FEEDBACK_TEMPLATE, ITERATE_TEMPLATE, parse_feedback
from redline.records import Response, read_jsonl_prefix


pytestmark = pytest.mark.usefixtures("one_thread")


def lowercase_model(prompt, seed):
    """A scripted model: its feedback names capital letters (or says NO ISSUES); its refinement lowercases."""
    text = prompt[-1]["content"]
    response = text.split("### Response\n", 1)[1].split("\n\n### Feedback", 1)[0]
    if text.startswith("Below is a request and a response to it. Give feedback"):
        return "NO ISSUES" if response == response.lower() else "- It uses capital letters; the request asked for lowercase."
    return response.lower()


def inputs(n=2):
    return [Response(id=f"q{i}", prompt=f"Write about topic {i} in lowercase.", response=f"Topic {i} Is Great.") for i in range(n)]


def test_an_item_stops_when_its_feedback_finds_nothing_to_fix(tmp_path):
    engine = ScriptedEngine(lowercase_model)
    summary = refine(RefineConfig(model="scripted", iterations=3), tmp_path, engine=engine, responses=inputs())
    first, second, third = (read_jsonl_prefix(tmp_path / f"iteration_{k}.jsonl") for k in (1, 2, 3))
    assert [r["response"] for r in first] == ["topic 0 is great.", "topic 1 is great."]
    assert all("capital letters" in r["feedback"] and r["changed"] and not r["halted"] for r in first)
    assert all(r["feedback"] == "NO ISSUES" and not r["changed"] and r["halted"] for r in second)
    assert all(r["stopped"] and r["response"] == "topic 0 is great." for r in third[:1])
    assert len(engine.calls) == 2 + 2 + 2  # feedback and refinement, then feedback only, then nothing
    assert [it["stopped"] for it in summary["iterations"]] == [0, 0, 2]
    # the prompts: feedback on the response, then the refinement sees the feedback
    assert engine.calls[0][0][0]["content"] == FEEDBACK_TEMPLATE.format(prompt="Write about topic 0 in lowercase.",
                                                                        response="Topic 0 Is Great.")
    assert engine.calls[2][0][0]["content"] == ITERATE_TEMPLATE.format(
        prompt="Write about topic 0 in lowercase.", response="Topic 0 Is Great.",
        feedback="- It uses capital letters; the request asked for lowercase.")


def test_malformed_feedback_and_refinements_leave_the_response_and_are_counted(tmp_path):
    # q0: empty feedback (a parse failure: nothing to refine with, no stop phrase), so no refinement is asked;
    # q1: the phrase inside a sentence is feedback, not a stop; its refinement is empty (a parse failure);
    # q2: feedback, then a refinement that echoes a heading (dropped).
    replies = {"q0": ["   "], "q1": ["It has no issues with tone, but it is too long.", "\n"],
               "q2": ["- Too short.", "**Refined response:**\nTopic 2 is great, and long."]}

    def by_item(prompt, seed):  # "Write about topic 1 ..." is item q1; its replies come in order
        return replies["q" + prompt[-1]["content"].split("topic ", 1)[1][0]].pop(0)

    engine = ScriptedEngine(by_item)
    summary = refine(RefineConfig(model="scripted", iterations=1), tmp_path, engine=engine, responses=inputs(3))
    rows = read_jsonl_prefix(tmp_path / "iteration_1.jsonl")
    assert [r["parsed"] for r in rows] == [False, False, True]
    assert [r["response"] for r in rows] == ["Topic 0 Is Great.", "Topic 1 Is Great.", "Topic 2 is great, and long."]
    assert rows[1]["feedback"].startswith("It has no issues") and not rows[1]["halted"]
    assert summary["iterations"][0]["failures"]["parse"] == 2 and len(engine.calls) == 3 + 2


@pytest.mark.parametrize("text, done, parsed", [
    ("NO ISSUES", True, True), ("**No issues.**", True, True), ("Feedback: NO ISSUES", True, True),
    ("- minor wording\n\nNO ISSUES", True, True), ("- Too long.\n- No title.", False, True),
    ("There are no issues with tone, but it is too long.", False, True), ("", False, False), ("\n \n", False, False),
])
def test_the_stop_phrase_is_read_on_its_own_line_only(text, done, parsed):
    f = parse_feedback(text)
    assert (f.done, f.parsed) == (done, parsed)


def test_refine_cli_on_tiny_random_and_a_reward_model_refused(tmp_path, jsonl, capsys):
    data = jsonl([r.to_dict() for r in inputs(2)], "responses.jsonl")
    out = tmp_path / "refined"
    assert main(["refine", "--model", "tiny-random", "--input", str(data), "--iterations", "1", "--max-new-tokens", "4",
                 "--feedback-max-new-tokens", "4", "--device", "cpu", "--out", str(out)]) == 0
    assert [it["items"] for it in json.loads(capsys.readouterr().out)] == [2]
    assert len(read_jsonl_prefix(out / "iteration_1.jsonl")) == 2
    rm = tmp_path / "rm"
    save_model(load_reward_model("tiny-random", device="cpu"), load_tokenizer("tiny-random"), rm,
               ModelCard(kind="reward", base_model="tiny-random"))
    with pytest.raises(RedlineError, match="is a reward model"):
        refine(RefineConfig(model=str(rm), input=str(data)), tmp_path / "out")
    assert not (tmp_path / "out").exists()



def test_a_refinement_cut_by_max_new_tokens_or_looping_is_never_applied(tmp_path):
    # q0's refinement runs past --max-new-tokens (a cut rewrite: a budget failure, as in revise and improve);
    # q1's repeats one phrase until it ends (a loop its response did not have); q2's is whole, and applied
    refinements = {"q0": " ".join(f"w{i}" for i in range(40)), "q1": "topic 1 " + "is great " * 12,
                   "q2": "topic 2 is great."}

    def model(prompt, seed):
        text = prompt[-1]["content"]
        if text.startswith("Below is a request and a response to it. Give feedback"):
            return "- It uses capital letters."
        return refinements["q" + text.split("topic ", 1)[1][0]]

    summary = refine(RefineConfig(model="scripted", iterations=1, max_new_tokens=30), tmp_path,
                     engine=ScriptedEngine(model), responses=inputs(3))
    rows = read_jsonl_prefix(tmp_path / "iteration_1.jsonl")
    assert [r["failure"] for r in rows] == ["budget", "loop", None]
    assert [r["response"] for r in rows] == ["Topic 0 Is Great.", "Topic 1 Is Great.", "topic 2 is great."]
    assert [r["changed"] for r in rows] == [False, False, True]
    assert rows[0]["revision"].startswith("w0 w1")  # kept in the record, never applied
    assert summary["iterations"][0]["failures"] == {"parse": 0, "budget": 1, "loop": 1}


def test_no_issues_is_recorded_and_counted_as_nothing_to_fix(tmp_path):
    summary = refine(RefineConfig(model="scripted", iterations=2, stop="fixed"), tmp_path,
                     engine=ScriptedEngine(lowercase_model), responses=inputs(2))
    second = read_jsonl_prefix(tmp_path / "iteration_2.jsonl")
    assert all(r["feedback"] == "NO ISSUES" and r["nothing_to_fix"] and not r["changed"] for r in second)
    assert [it["nothing_to_fix"] for it in summary["iterations"]] == [0, 2]


def test_an_item_past_the_models_context_fails_alone_as_a_budget_failure(tmp_path):
    """It stopped the whole iteration once the model had loaded (the engine refuses a prompt with no room for a token,
    and with it the call's other items); now that item is kept as it was, budget 0, and the other is refined."""
    from redline.generation import load_engine

    engine = load_engine("tiny-random", device="cpu")
    huge = " ".join(f"word{i}" for i in range(engine.config.max_position_embeddings))
    items = [Response(id="fits", prompt="Say hi.", response="Hi."), Response(id="huge", prompt="Say a lot.", response=huge)]
    summary = refine(RefineConfig(model="tiny-random", iterations=1, max_new_tokens=4, feedback_max_new_tokens=4),
                     tmp_path, engine=engine, responses=items)
    rows = {r["id"]: r for r in read_jsonl_prefix(tmp_path / "iteration_1.jsonl")}
    assert rows["huge"]["failure"] == "budget" and rows["huge"]["budget"] == 0 and rows["huge"]["response"] == huge
    assert rows["fits"].get("budget") != 0 and summary["iterations"][0]["items"] == 2
