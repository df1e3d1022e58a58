"""revise: the critic loop through an engine — chain files, parse failures, the critic check."""

import json

import pytest

from redline import RedlineError
from redline.cli import main
from redline.generation import ScriptedEngine, per_prompt
from redline.improve.loop import StepOutput, read_jsonl_prefix
from redline.improve.revise import ReviseConfig, revise, revision_budget
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
    assert summary["iterations"][0]["failures"] == {"parse": 2, "budget": 0, "loop": 0}


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


# ---------------------------------------------------------------- budgets, failures by cause, --apply


class RecordingEngine(ScriptedEngine):
    """A ScriptedEngine that also records each call's max_new_tokens and its prompts' responses."""

    def __init__(self, replies):
        super().__init__(replies)
        self.budgets: dict[str, int] = {}
        self.call_sizes: list[int] = []

    def generate(self, prompts, params, seeds=None, progress=True):
        self.call_sizes.append(len(prompts))
        for p, q in zip(prompts, per_prompt(params, len(prompts))):
            self.budgets[p[-1]["content"].split("### Response\n", 1)[1]] = q.max_new_tokens
        return super().generate(prompts, params, seeds=seeds, progress=progress)


def test_budget_follows_the_response_rounds_up_and_stops_at_the_context_and_the_cap():
    # 64 + max(128, 1.5 x 100 = 150) = 214 -> 256; a 10-token response gets the 128-token floor: 192 -> 256
    assert revision_budget(100, 50, 64) == 256 and revision_budget(10, 50, 64) == 256
    assert revision_budget(300, 50, 256) == 768  # 256 + 450 = 706 -> 768
    assert revision_budget(300, 7900, 256, context=8192) == 292  # what the context leaves after the prompt
    assert revision_budget(300, 50, 256, cap=500) == 500


def test_a_revision_cut_by_the_budget_or_looping_is_never_applied_and_is_counted_by_cause(tmp_path):
    cut = "Critique: Too short.\n\nRevision:\n" + " ".join(f"w{i}" for i in range(400))  # runs past 256 words
    loop = "Critique: Too short.\n\nRevision:\nIt was " + "of the section " * 20 + "and that is all."
    endless = "Critique: Fine.\n\nRevision:\n" + "the section of the " * 100  # ends by the budget, in a loop
    fine = "Critique: Capitals; asked for lowercase.\n\nRevision:\ntopic 3 is great."
    engine = RecordingEngine([cut, loop, endless, fine])
    summary = revise(ReviseConfig(critic="scripted", iterations=1, critique_tokens=16), tmp_path, engine=engine,
                     responses=inputs(4))
    rows = read_jsonl_prefix(tmp_path / "iteration_1.jsonl")
    assert [r["response"] for r in rows] == ["Topic 0 Is Great.", "Topic 1 Is Great.", "Topic 2 Is Great.", "topic 3 is great."]
    assert [r["failure"] for r in rows] == ["budget", "loop", "loop", None]
    assert rows[0]["revision"].startswith("w0 w1") and rows[0]["revision"].endswith("w251")  # 256 words in all; kept for reading, not applied
    assert [r["budget"] for r in rows] == [256] * 4  # 16 + max(128, 1.5 x 4 words) -> 256
    assert summary["iterations"][0]["failures"] == {"parse": 0, "budget": 1, "loop": 2}
    assert summary["iterations"][0]["changed"] == 1


def test_a_loop_the_response_already_had_is_not_a_failure(tmp_path):
    looping = "An essay of the section of the section of the section of the section of the section of the section"
    engine = ScriptedEngine([f"Critique: Repetitive, but fine.\n\nRevision:\n{looping} of the section"])
    revise(ReviseConfig(critic="scripted", iterations=1), tmp_path, engine=engine,
           responses=[Response(id="a", prompt="p", response=looping)])
    row = read_jsonl_prefix(tmp_path / "iteration_1.jsonl")[0]
    assert row["failure"] is None and row["changed"]


def test_each_item_gets_the_budget_of_its_own_response(tmp_path):
    long = " ".join(f"word{i}" for i in range(300))
    engine = RecordingEngine(lambda prompt, seed: "Critique: ok\n\nRevision:\nnew")
    responses = [Response(id="short", prompt="p", response="a short one"), Response(id="long", prompt="p", response=long)]
    revise(ReviseConfig(critic="scripted", iterations=1, critique_tokens=100), tmp_path, engine=engine, responses=responses)
    assert engine.budgets == {"a short one": 256, long: 640}  # 100 + 128 -> 256; 100 + 450 -> 640
    assert engine.call_sizes == [2]  # both budgets in one call: the rows decode together
    rows = read_jsonl_prefix(tmp_path / "iteration_1.jsonl")
    assert [r["budget"] for r in rows] == [256, 640]


@pytest.mark.parametrize("critique", [
    "This essay about rivers does everything the prompt asked.",
    "It has exactly 3 paragraphs, as asked. I would not change anything.",
    "All lowercase, as asked. It needs no revision.",
    "Nothing needs to change.",
])
def test_a_critique_that_finds_nothing_to_fix_changes_nothing_under_when_critiqued(tmp_path, critique):
    engine = ScriptedEngine(lambda prompt, seed: f"Critique: {critique}\n\nRevision:\nA Rewritten Answer.")
    summary = revise(ReviseConfig(critic="scripted", iterations=2, stop="nothing"), tmp_path / "kept", engine=engine,
                     responses=inputs(2))
    rows = read_jsonl_prefix(tmp_path / "kept" / "iteration_1.jsonl")
    assert [r["response"] for r in rows] == ["Topic 0 Is Great.", "Topic 1 Is Great."]
    assert all(r["nothing_to_fix"] and not r["changed"] and r["halted"] for r in rows)  # --stop nothing ends them
    assert summary["iterations"][0]["nothing_to_fix"] == 2 and summary["iterations"][1]["stopped"] == 2
    assert len(engine.calls) == 2

    revise(ReviseConfig(critic="scripted", iterations=1, apply="always"), tmp_path / "always", engine=engine,
           responses=inputs(2))
    assert all(r["response"] == "A Rewritten Answer." for r in read_jsonl_prefix(tmp_path / "always" / "iteration_1.jsonl"))


def test_a_critique_that_names_a_problem_is_applied_under_when_critiqued(tmp_path):
    engine = ScriptedEngine(lowercase_critic)
    revise(ReviseConfig(critic="scripted", iterations=1), tmp_path, engine=engine, responses=inputs(1))
    row = read_jsonl_prefix(tmp_path / "iteration_1.jsonl")[0]
    assert row["changed"] and not row["nothing_to_fix"] and row["response"] == "topic 0 is great."


@pytest.mark.parametrize("flags, message", [
    (["--iterations", "0"], "--iterations: must be at least 1"),
    (["--apply", "sometimes"], "--apply: 'sometimes' is not one of when-critiqued, always"),
    (["--stop", "never"], "--stop: 'never' is not one of fixed, nothing, best"),
    (["--critique-tokens", "0"], "--critique-tokens: must be at least 1"),
])
def test_bad_flags_are_one_error_before_the_critic_loads(jsonl, tmp_path, capsys, flags, message):
    data = jsonl([r.to_dict() for r in inputs(2)], "responses.jsonl")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit:  # argparse refuses the value itself
        main(["revise", "--critic", str(tmp_path / "no-critic"), "--input", str(data), "--out", str(out)] + flags)
    assert exit.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]
    assert not out.exists()


def test_bad_settings_are_one_error_before_the_critic_loads(jsonl, tmp_path, capsys):
    data = jsonl([r.to_dict() for r in inputs(2)], "responses.jsonl")
    out = tmp_path / "out"
    # a critic that does not exist: loading it would fail with another message
    assert main(["revise", "--critic", str(tmp_path / "no-critic"), "--input", str(data), "--out", str(out), "--stop", "best"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--stop best needs a judge" in err[0]
    assert not out.exists()
    assert main(["revise", "--critic", str(tmp_path / "no-critic"), "--input", str(data), "--out", str(out),
                 "--judge", "oracle", "--leave-above", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--leave-above needs a reward-model judge" in err[0] and "'oracle'" in err[0]
    assert not out.exists()
    # the oracle cannot judge records without their instructions: said before the critic loads, not at iteration 1
    assert main(["revise", "--critic", str(tmp_path / "no-critic"), "--input", str(data), "--out", str(out),
                 "--stop", "best", "--judge", "oracle"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{data}: 2 of 2 records cannot be judged by oracle" in err[0] and "id 'q0'" in err[0]
    assert not out.exists()
    for config, message in ((ReviseConfig(critic="c", apply="never"), "--apply 'never'"),
                            (ReviseConfig(critic="c", iterations=0), "--iterations must be at least 1")):
        with pytest.raises(RedlineError, match=message):
            revise(config, out, responses=inputs(2))
        assert not out.exists()



@pytest.mark.parametrize("flags, message", [
    (["--no-repeat-ngram", "1"], "--no-repeat-ngram must be 0 (off) or at least 2, got 1"),
    (["--top-p", "0"], "--top-p must be in (0, 1], got 0.0"),
    (["--top-p", "1.5"], "--top-p must be in (0, 1], got 1.5"),
    (["--no-repeat-ngram", "3", "--backend", "vllm"], "--no-repeat-ngram is implemented by the transformers backend only"),
])
def test_bad_sampling_settings_are_one_error_before_the_critic_loads(jsonl, tmp_path, capsys, flags, message):
    # they used to fail at the first generate call, after the critic loaded and iteration_0.jsonl was written:
    # the corrected rerun was then refused as "a run with other settings"
    data = jsonl([r.to_dict() for r in inputs(2)], "responses.jsonl")
    out = tmp_path / "out"
    assert main(["revise", "--critic", str(tmp_path / "no-critic"), "--input", str(data), "--out", str(out)] + flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists()


def test_responses_without_prompts_or_ids_are_refused_before_the_critic_loads(jsonl, tmp_path, capsys):
    no_prompt = jsonl([{"id": "a", "response": "r"}], "no_prompt.jsonl")
    out = tmp_path / "out"
    assert main(["revise", "--critic", str(tmp_path / "no-critic"), "--input", str(no_prompt), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no_prompt.jsonl:1: prompt: missing" in err
    no_id = jsonl([{"id": "a", "prompt": "p", "response": "r"}, {"prompt": "p", "response": "r"}], "no_id.jsonl")
    assert main(["revise", "--critic", str(tmp_path / "no-critic"), "--input", str(no_id), "--out", str(out)]) == 2
    assert "no_id.jsonl:2: id: missing" in capsys.readouterr().err  # the file, the line and the field
    assert not out.exists()


def test_a_response_without_an_id_is_skipped_with_skip_invalid(jsonl, tmp_path):
    from redline.improve.loop import IterateSettings, run_method

    data = jsonl([{"id": "a", "prompt": "p", "response": "r"}, {"prompt": "p", "response": "r"}], "no_id.jsonl")
    calls = []
    config = IterateSettings(input=str(data), skip_invalid=True)
    summary = run_method(config, "scripted", lambda engine: lambda rows, k: calls.append(rows) or [
        StepOutput("", row["response"] + "!") for row in rows], tmp_path / "out", engine=object())
    assert [r["id"] for r in calls[0]] == ["a"] and summary["iterations"][0]["items"] == 1
    assert summary["reads"][str(data)]["skipped"] == 1


def test_per_item_budgets_on_tiny_random(tmp_path):
    from redline.generation import load_engine

    engine = load_engine("tiny-random", device="cpu")
    long = " ".join(f"word{i}" for i in range(120))
    responses = [Response(id="short", prompt="Say hi.", response="Hi."), Response(id="long", prompt="Say a lot.", response=long)]
    config = ReviseConfig(critic="tiny-random", iterations=1, critique_tokens=8)
    summary = revise(config, tmp_path, engine=engine, responses=responses)
    rows = {r["id"]: r for r in read_jsonl_prefix(tmp_path / "iteration_1.jsonl")}
    long_tokens = len(engine.tokenizer(long, add_special_tokens=False)["input_ids"])
    assert rows["short"]["budget"] == 256  # 8 + 128, rounded up
    assert rows["long"]["budget"] == revision_budget(long_tokens, 0, 8) > 256
    # random weights never write a whole critique and revision: every output fails, none is applied
    assert all(r["failure"] in ("budget", "loop", "parse") and not r["changed"] for r in rows.values())
    assert sum(summary["iterations"][0]["failures"].values()) == 2


def test_a_prompt_past_the_models_context_fails_alone_as_a_budget_failure(tmp_path):
    """It stopped the whole iteration once the critic had loaded (the engine refuses a prompt with no room for a token,
    and with it the call's other items); now that item is kept as it was, budget 0, and the others are revised."""
    from redline.generation import load_engine

    engine = load_engine("tiny-random", device="cpu")
    context = engine.config.max_position_embeddings
    huge = " ".join(f"word{i}" for i in range(context))  # its critic prompt alone is past the context
    responses = [Response(id="fits", prompt="Say hi.", response="Hi."), Response(id="huge", prompt="Say a lot.", response=huge)]
    config = ReviseConfig(critic="tiny-random", iterations=1, critique_tokens=8, max_new_tokens=16)
    summary = revise(config, tmp_path, engine=engine, responses=responses)
    rows = {r["id"]: r for r in read_jsonl_prefix(tmp_path / "iteration_1.jsonl")}
    assert rows["huge"]["budget"] == 0 and rows["huge"]["failure"] == "budget" and rows["huge"]["response"] == huge
    assert rows["fits"]["budget"] == 16  # the other item was sent, with its budget
    assert summary["iterations"][0]["failures"]["budget"] >= 1 and summary["iterations"][0]["items"] == 2
    assert revision_budget(10, context, 8, context=context) == 0 and revision_budget(10, context - 1, 8, context=context) == 1
