"""improve: the PIT loop through an engine — the iteration layout, the prompt it was trained on, no
feedback, parse failures, resuming, stopping, the PIT-policy check, and the CLI on a tiny PIT run."""

import json

import pytest

from redline import RedlineError
from redline.cli import main
from redline.generation import ScriptedEngine, per_prompt
from redline.improve.pit import ImproveConfig, improve
from redline.models import ModelCard, load_causal_lm, load_reward_model, load_tokenizer, save_model
from redline.prompts import PIT_TEMPLATE
from redline.records import Response, read_jsonl_prefix


pytestmark = pytest.mark.usefixtures("one_thread")


def add_detail(prompt, seed):
    """A scripted PIT policy: improves a response by adding one more detail, up to three."""
    response = prompt[-1]["content"].split("### Response\n", 1)[1]
    return response if response.count("+") >= 3 else f"### Response\n{response} +"


def inputs(n=3):
    return [Response(id=f"q{i}", prompt=f"Describe topic {i}.", response=f"Topic {i}.", source="base") for i in range(n)]


def test_iterations_write_the_layout_with_no_feedback(tmp_path):
    engine = ScriptedEngine(add_detail)
    summary = improve(ImproveConfig(model="scripted", iterations=2), tmp_path, engine=engine, responses=inputs())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iteration_0.jsonl", "iteration_1.jsonl", "iteration_2.jsonl", "summary.json"]
    second = read_jsonl_prefix(tmp_path / "iteration_2.jsonl")
    assert [r["response"] for r in second] == ["Topic 0. + +", "Topic 1. + +", "Topic 2. + +"]  # echoed heading dropped
    assert all(r["feedback"] == "" and r["changed"] and r["response_0"] == f"Topic {i}." and r["source"] == "base"
               for i, r in enumerate(second))
    assert [it["changed"] for it in summary["iterations"]] == [3, 3]
    # the policy saw the template it was trained on, with the current response as the one to improve
    assert engine.calls[0][0] == [{"role": "user", "content": PIT_TEMPLATE.format(prompt="Describe topic 0.", response="Topic 0.")}]
    assert engine.calls[3][0][0]["content"].endswith("### Response\nTopic 0. +")
    assert json.loads((tmp_path / "summary.json").read_text())["settings"]["temperature"] == 0.5


def test_an_interrupted_run_resumes_without_redoing_finished_items(tmp_path):
    improve(ImproveConfig(model="scripted", iterations=2), tmp_path, engine=ScriptedEngine(add_detail), responses=inputs())
    last = tmp_path / "iteration_2.jsonl"
    lines = last.read_text().splitlines(keepends=True)
    last.write_text("".join(lines[:2]) + lines[2][:10])  # the run died while writing the third record
    engine = ScriptedEngine(add_detail)
    improve(ImproveConfig(model="scripted", iterations=2), tmp_path, engine=engine, responses=inputs())
    assert len(engine.calls) == 1 and engine.calls[0][0][0]["content"].endswith("Topic 2. +")
    assert [r["id"] for r in read_jsonl_prefix(last)] == ["q0", "q1", "q2"]


def test_empty_outputs_are_parse_failures_and_stop_nothing_ends_unchanged_items(tmp_path):
    engine = ScriptedEngine(["", "### Response\n", "Topic 2."])
    summary = improve(ImproveConfig(model="scripted", iterations=2, stop="nothing"), tmp_path, engine=engine, responses=inputs())
    first = read_jsonl_prefix(tmp_path / "iteration_1.jsonl")
    assert [r["parsed"] for r in first] == [False, False, True] and all(r["response"] == r["response_0"] for r in first)
    assert [r["halted"] for r in first] == [False, False, True]  # q2's rewrite changed nothing: it stops
    assert summary["iterations"][0]["failures"]["parse"] == 2 and summary["iterations"][1]["stopped"] == 1


def test_a_run_that_is_not_a_pit_policy_is_refused_before_any_work(tmp_path, jsonl):
    data = jsonl([r.to_dict() for r in inputs(1)], "responses.jsonl")
    runs = {"sft": load_causal_lm, "gap-reward": load_reward_model}
    for kind, load in runs.items():
        run = tmp_path / kind
        save_model(load("tiny-random", device="cpu"), load_tokenizer("tiny-random"), run, ModelCard(kind=kind, base_model="tiny-random"))
        with pytest.raises(RedlineError, match=f"is a {kind} run, not a PIT policy"):
            improve(ImproveConfig(model=str(run), input=str(data)), tmp_path / "out")
    with pytest.raises(RedlineError, match="not a redline run, not a PIT policy"):
        improve(ImproveConfig(model="tiny-random", input=str(data)), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_improve_cli_on_a_tiny_pit_policy(tmp_path, jsonl, capsys):
    run = tmp_path / "pit-sft"
    save_model(load_causal_lm("tiny-random", device="cpu"), load_tokenizer("tiny-random"), run,
               ModelCard(kind="pit-sft", base_model="tiny-random"))
    data = jsonl([r.to_dict() for r in inputs(2)], "responses.jsonl")
    out = tmp_path / "improved"
    args = ["improve", "--model", str(run), "--input", str(data), "--iterations", "2", "--max-new-tokens", "4",
            "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    assert [it["items"] for it in json.loads(capsys.readouterr().out)] == [2, 2]
    assert len(read_jsonl_prefix(out / "iteration_2.jsonl")) == 2
    assert main(args) == 0  # a rerun of a finished run changes nothing
    assert len(read_jsonl_prefix(out / "iteration_2.jsonl")) == 2


def test_a_rewrite_cut_by_its_budget_or_looping_keeps_the_answer_and_is_counted_by_cause(tmp_path):
    # Budgets follow the response (1.5 x its words, at least 128, rounded up to 128): the scripted engine
    # counts words as tokens. q0's rewrite runs past 128 words (cut), q1's loops, q2's is a proper rewrite,
    # q3's answer already loops and its rewrite keeps the loop (not the rewrite's fault, so it is applied).
    long = " ".join(f"word{i}" for i in range(200))
    loop = "Topic 1 is good. " + "and then the same thing again " * 6
    looping_answer = "so so so so so so so so so so so so so so so so"
    replies = {"Describe topic 0.": long, "Describe topic 1.": loop, "Describe topic 2.": "Topic 2, in full.",
               "Describe topic 3.": looping_answer + " more"}

    def rewrite(prompt, seed):
        return next(reply for request, reply in replies.items() if request in prompt[-1]["content"])

    items = inputs(3) + [Response(id="q3", prompt="Describe topic 3.", response=looping_answer, source="base")]
    summary = improve(ImproveConfig(model="scripted"), tmp_path, engine=ScriptedEngine(rewrite), responses=items)
    rows = read_jsonl_prefix(tmp_path / "iteration_1.jsonl")
    assert [r["failure"] for r in rows] == ["budget", "loop", None, None]
    assert [r["response"] for r in rows[:2]] == ["Topic 0.", "Topic 1."]  # kept as they were
    assert rows[0]["revision"] == " ".join(long.split()[:128]) and rows[0]["budget"] == 128  # the cut text, not applied
    assert rows[2]["response"] == "Topic 2, in full." and rows[3]["changed"]
    assert summary["iterations"][0]["failures"] == {"parse": 0, "budget": 1, "loop": 1}


def test_budgets_follow_the_response_and_max_new_tokens_caps_them(tmp_path):
    seen = []

    class Recording(ScriptedEngine):
        def generate(self, prompts, params, seeds=None, progress=False):
            seen.append([q.max_new_tokens for q in per_prompt(params, len(prompts))])
            return super().generate(prompts, params, seeds=seeds, progress=progress)

    items = inputs(2) + [Response(id="q9", prompt="Describe topic 9.", response=" ".join(["w"] * 100), source="base")]
    improve(ImproveConfig(model="scripted"), tmp_path / "a", engine=Recording(lambda p, s: "New."), responses=items)
    assert seen == [[128, 128, 256]]  # one call; 1.5 x 100 words = 150 → 256; the short answers get the minimum 128
    seen.clear()
    improve(ImproveConfig(model="scripted", max_new_tokens=64), tmp_path / "b", engine=Recording(lambda p, s: "New."),
            responses=items)
    assert seen == [[64, 64, 64]]
