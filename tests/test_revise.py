"""revise: the critic loop through an engine — chain files, parse failures, the critic check."""

import json

import pytest

from redline import RedlineError
from redline.cli import main
from redline.generation import ScriptedEngine
from redline.improve.loop import read_jsonl_prefix
from redline.improve.revise import ReviseConfig, revise
from redline.models import ModelCard, load_causal_lm, load_tokenizer, save_model
from redline.prompts import CRITIC_TEMPLATE
from redline.records import Response


def lowercase_critic(prompt, seed):
    """A scripted critic: names the capitals it sees and revises them away; praises otherwise."""
    response = prompt[-1]["content"].split("### Response\n", 1)[1]
    if response == response.lower():
        return f"Critique: All lowercase, as asked.\n\nRevision:\n{response}"
    return f"Critique: It uses capital letters; the prompt asked for all lowercase.\n\nRevision:\n{response.lower()}"


def inputs(n=3):
    return [Response(id=f"q{i}", prompt=f"Write about topic {i} in lowercase.", response=f"Topic {i} Is Great.", source="other-model")
            for i in range(n)]


def test_two_iterations_write_the_chain_and_fix_what_the_critique_names(tmp_path):
    engine = ScriptedEngine(lowercase_critic)
    summary = revise(ReviseConfig(critic="scripted", iterations=2), tmp_path, engine=engine, responses=inputs())
    first, second = read_jsonl_prefix(tmp_path / "iteration_1.jsonl"), read_jsonl_prefix(tmp_path / "iteration_2.jsonl")
    assert [r["response"] for r in first] == ["topic 0 is great.", "topic 1 is great.", "topic 2 is great."]
    assert all("capital letters" in r["feedback"] and r["changed"] for r in first)
    assert all(r["response_0"].startswith("Topic") and r["source"] == "other-model" for r in second)
    assert all(r["feedback"] == "All lowercase, as asked." and not r["changed"] for r in second)
    assert [it["changed"] for it in summary["iterations"]] == [3, 0]
    # the critic saw the request and the current response in its template
    assert engine.calls[0][0][0]["content"] == CRITIC_TEMPLATE.format(prompt="Write about topic 0 in lowercase.", response="Topic 0 Is Great.")


def test_malformed_generations_leave_the_response_and_are_counted(tmp_path):
    engine = ScriptedEngine(["I think the response is fine.", "Critique: ok\nRevision:\n  ", "Critique: x\nRevision:\nnew text"])
    summary = revise(ReviseConfig(critic="scripted", iterations=1), tmp_path, engine=engine, responses=inputs())
    rows = read_jsonl_prefix(tmp_path / "iteration_1.jsonl")
    assert [r["response"] for r in rows] == ["Topic 0 Is Great.", "Topic 1 Is Great.", "new text"]
    assert [r["parsed"] for r in rows] == [False, False, True]
    assert summary["iterations"][0]["parse_failures"] == 2


def test_stop_when_the_critic_finds_nothing_to_fix(tmp_path):
    engine = ScriptedEngine(lowercase_critic)
    revise(ReviseConfig(critic="scripted", iterations=3, stop="nothing"), tmp_path, engine=engine, responses=inputs(2))
    assert len(engine.calls) == 2 + 2  # iteration 2 finds nothing; iteration 3 asks nobody
    assert all(r["stopped"] for r in read_jsonl_prefix(tmp_path / "iteration_3.jsonl"))


def test_a_run_that_is_not_a_critic_is_refused_before_any_work(tmp_path):
    run = tmp_path / "sft"
    save_model(load_causal_lm("tiny-random", device="cpu"), load_tokenizer("tiny-random"), run, ModelCard(kind="sft", base_model="tiny-random"))
    with pytest.raises(RedlineError, match="is a sft run, not a critic"):
        revise(ReviseConfig(critic=str(run), iterations=1), tmp_path / "out", responses=inputs())
    assert not (tmp_path / "out").exists()


def test_revise_cli_on_a_tiny_critic(jsonl, tmp_path, capsys):
    feedback = [{"prompt": "p", "response": "R", "critique": "c", "revision": "r"}] * 4
    critic = tmp_path / "critic"
    assert main(["train", "critic", "--data", str(jsonl(feedback, "fb.jsonl")), "--model", "tiny-random",
                 "--out", str(critic), "--max-steps", "1", "--batch-size", "2"]) == 0
    data = jsonl([r.to_dict() for r in inputs(2)], "responses.jsonl")
    out = tmp_path / "revised"
    assert main(["revise", "--critic", str(critic), "--input", str(data), "--iterations", "2",
                 "--max-new-tokens", "8", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [it["items"] for it in summary["iterations"]] == [2, 2]
    assert len(read_jsonl_prefix(out / "iteration_2.jsonl")) == 2
