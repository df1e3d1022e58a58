"""The iteration loop shared by revise, improve and refine: layout, stop rules, parse failures, resume."""

import json

import pytest

from redline import RedlineError
from redline.improve.loop import StepOutput, item_seed, run_iterations
from redline.judges import Verdict
from redline.records import Response, read_jsonl_prefix


def responses(n=5):
    return [Response(id=f"r{i}", prompt=f"prompt {i}", response="x" * (i + 1), source="m", meta={"i": i}) for i in range(n)]


def shorten(rows, iteration):
    """A step that cuts one character each time, and finds nothing to fix at one character."""
    return [StepOutput(feedback=f"too long at {iteration}", revision=row["response"][:-1] or row["response"]) for row in rows]


def rows_of(out, k):
    return read_jsonl_prefix(out / f"iteration_{k}.jsonl")


def test_fixed_iterations_write_the_whole_chain(tmp_path):
    summary = run_iterations(responses(), shorten, iterations=3, out=tmp_path, progress=False)
    assert [r["response"] for r in rows_of(tmp_path, 0)] == ["x", "xx", "xxx", "xxxx", "xxxxx"]
    last = rows_of(tmp_path, 3)
    assert [r["response"] for r in last] == ["x", "x", "x", "x", "xx"]
    assert all(r["response_0"] == "x" * (i + 1) and r["meta"] == {"i": i} and r["source"] == "m" for i, r in enumerate(last))
    assert last[0]["feedback"] == "too long at 3" and last[0]["changed"] is False
    assert [it["changed"] for it in summary["iterations"]] == [4, 3, 2]
    assert json.loads((tmp_path / "summary.json").read_text())["iterations"][2]["changed"] == 2


def test_stop_when_nothing_changes_carries_the_item_over(tmp_path):
    calls = []

    def step(rows, k):
        calls.append([r["id"] for r in rows])
        return shorten(rows, k)

    summary = run_iterations(responses(3), step, iterations=4, out=tmp_path, stop="nothing", progress=False)
    assert calls == [["r0", "r1", "r2"], ["r1", "r2"], ["r2"]]  # a stopped item is never stepped again
    assert [it["stopped"] for it in summary["iterations"]] == [0, 1, 2, 3]
    assert [r["response"] for r in rows_of(tmp_path, 4)] == ["x", "x", "x"]


def test_a_parse_failure_leaves_the_response_and_is_counted(tmp_path):
    def step(rows, k):
        return [StepOutput(feedback="?", revision=None if row["id"] == "r1" else row["response"] + "!") for row in rows]

    summary = run_iterations(responses(3), step, iterations=1, out=tmp_path, progress=False)
    r1 = rows_of(tmp_path, 1)[1]
    assert r1["response"] == "xx" and r1["parsed"] is False and r1["changed"] is False
    assert summary["iterations"][0]["failures"] == {"parse": 1, "budget": 0, "loop": 0}


class PreferShorter:
    name = "shorter"

    def judge_many(self, items):
        return [Verdict("a" if len(i.a) < len(i.b) else "b" if len(i.b) < len(i.a) else "tie") for i in items]


def test_keep_best_by_a_judge_rejects_worse_revisions(tmp_path):
    def lengthen_odd(rows, k):
        return [StepOutput("", row["response"] + "y" if row["meta"]["i"] % 2 else row["response"][:-1] or "z") for row in rows]

    run_iterations(responses(4), lengthen_odd, iterations=2, out=tmp_path, stop="best", judge=PreferShorter(), progress=False)
    after = rows_of(tmp_path, 1)
    assert [r["response"] for r in after] == ["x", "xx", "xx", "xxxx"]  # odd ones kept, even ones shortened
    assert [r["halted"] for r in after] == [True, True, False, True]  # r0: "z" ties "x", so it stops


class LengthReward(PreferShorter):
    """A reward model's stand-in: shorter is better (reward −length); pairs compare like the reward judge."""

    name = "reward:length"

    def __init__(self):
        self.scored = []

    def score(self, pairs):
        self.scored.extend(r for _, r in pairs)
        return [-float(len(r)) for _, r in pairs]


def test_leave_above_spends_no_step_on_responses_the_reward_model_rates_high(tmp_path):
    stepped = []

    def shorten_seen(rows, k):
        stepped.append((k, [r["id"] for r in rows]))
        return shorten(rows, k)

    judge = LengthReward()
    summary = run_iterations(responses(4), shorten_seen, iterations=2, out=tmp_path, judge=judge, leave_above=-2,
                             progress=False)
    # rewards −1 −2 −3 −4: r0 and r1 are at or above the bar and never stepped; r2 reaches it after one cut
    assert stepped == [(1, ["r2", "r3"]), (2, ["r3"])]
    first, second = rows_of(tmp_path, 1), rows_of(tmp_path, 2)
    assert [(r["left"], r["reward"], r["changed"]) for r in first] == [(True, -1, False), (True, -2, False),
                                                                       (False, -3, True), (False, -4, True)]
    assert [r["response"] for r in second] == ["x", "xx", "xx", "xx"]
    assert [r["stopped"] for r in second] == [True, True, False, False] and second[2]["left"] is True
    assert [it["left"] for it in summary["iterations"]] == [2, 1]
    assert judge.scored == ["x", "xx", "xxx", "xxxx", "xx", "xxx"]  # each active response once an iteration


def test_leave_above_with_keep_best_and_a_resume(tmp_path):
    def lengthen(rows, k):  # the reward (−length) prefers every original to its revision
        return [StepOutput("", row["response"] + "y") for row in rows]

    def killed(rows, k):
        raise KeyboardInterrupt

    args = dict(iterations=1, out=tmp_path, stop="best", leave_above=-2, chunk_size=2, progress=False)
    with pytest.raises(KeyboardInterrupt):  # the first chunk (r0, r1: both left) is written, then a kill
        run_iterations(responses(4), lambda rows, k: killed(rows, k) if rows else [], judge=LengthReward(), **args)
    assert [r["id"] for r in rows_of(tmp_path, 1)] == ["r0", "r1"]
    summary = run_iterations(responses(4), lengthen, judge=LengthReward(), **args)
    after = rows_of(tmp_path, 1)
    assert [r["response"] for r in after] == ["x", "xx", "xxx", "xxxx"]  # left, left, worse twice: kept
    assert [(r["left"], r["changed"], r["halted"]) for r in after] == [(True, False, True), (True, False, True),
                                                                       (False, False, True), (False, False, True)]
    assert summary["iterations"][0]["left"] == 2 and summary["iterations"][0]["changed"] == 0


def test_leave_above_needs_a_judge_that_scores(tmp_path):
    with pytest.raises(RedlineError, match="--leave-above needs a reward-model judge"):
        run_iterations(responses(), shorten, iterations=1, out=tmp_path, leave_above=0.0)
    with pytest.raises(RedlineError, match="got 'shorter'"):
        run_iterations(responses(), shorten, iterations=1, out=tmp_path, judge=PreferShorter(), leave_above=0.0)


def test_killed_run_resumes_without_losing_or_duplicating(tmp_path):
    seen = []

    def flaky(rows, k):
        seen.extend((k, r["id"]) for r in rows)
        if len(seen) > 9:
            raise KeyboardInterrupt  # ctrl-c during iteration 2's second chunk
        return shorten(rows, k)

    with pytest.raises(KeyboardInterrupt):
        run_iterations(responses(6), flaky, iterations=2, out=tmp_path, chunk_size=2, progress=False)
    assert [r["id"] for r in rows_of(tmp_path, 2)] == ["r0", "r1"]
    seen.clear()
    run_iterations(responses(6), flaky, iterations=2, out=tmp_path, chunk_size=2, progress=False)
    assert seen == [(2, "r2"), (2, "r3"), (2, "r4"), (2, "r5")]  # nothing done twice
    assert sorted(r["id"] for r in rows_of(tmp_path, 2)) == [f"r{i}" for i in range(6)]  # nothing lost
    fresh = tmp_path / "fresh"
    run_iterations(responses(6), shorten, iterations=2, out=fresh, progress=False)
    assert {r["id"]: r["response"] for r in rows_of(tmp_path, 2)} == {r["id"]: r["response"] for r in rows_of(fresh, 2)}


def test_bad_settings_are_refused_before_any_work(tmp_path):
    with pytest.raises(RedlineError, match="unique id"):
        run_iterations([Response(prompt="p", response="r")], shorten, iterations=1, out=tmp_path)
    with pytest.raises(RedlineError, match="needs a judge"):
        run_iterations(responses(), shorten, iterations=1, out=tmp_path, stop="best")
    with pytest.raises(RedlineError, match="not one of"):
        run_iterations(responses(), shorten, iterations=1, out=tmp_path, stop="sometimes")
    run_iterations(responses(2), shorten, iterations=1, out=tmp_path / "a", progress=False)
    with pytest.raises(RedlineError, match="other inputs"):
        run_iterations(responses(3), shorten, iterations=1, out=tmp_path / "a", progress=False)


def test_item_seed_depends_on_item_and_iteration_only():
    assert item_seed(0, "a", 1) == item_seed(0, "a", 1)
    assert len({item_seed(0, "a", 1), item_seed(0, "a", 2), item_seed(0, "b", 1), item_seed(1, "a", 1)}) == 4


def deterministic(calls):
    """A step whose output depends on (prompt, response) only, as a greedy one does: r0 is cut to one
    character, r1 always runs out of budget, r2 has nothing to fix; every call is logged."""
    def step(rows, k):
        calls.append([r["id"] for r in rows])
        outs = []
        for row in rows:
            if row["id"] == "r1":
                outs.append(StepOutput(feedback="long", revision=row["response"][:1], failure="budget", budget=8))
            elif row["id"] == "r2":
                outs.append(StepOutput(feedback="fine", revision=row["response"], keep=True))
            else:
                outs.append(StepOutput(feedback=f"cut {row['response']}", revision=row["response"][:-1] or row["response"]))
        return outs
    return step


def test_greedy_runs_reuse_the_output_of_an_unchanged_response_and_write_the_same_files(tmp_path):
    items = [Response(id=f"r{i}", prompt=f"p{i}", response="xxx") for i in range(3)]
    again, once = [], []
    run_iterations(items, deterministic(again), iterations=5, out=tmp_path / "again", progress=False)
    summary = run_iterations(items, deterministic(once), iterations=5, out=tmp_path / "once", progress=False, reuse=True)
    # r0 changes at 1 and 2 and is stepped again at 3 (its new response is new input), then never; r1's budget
    # failure and r2's "nothing to fix" are not generated again
    assert once == [["r0", "r1", "r2"], ["r0"], ["r0"]] and len(again) == 5
    assert [it["reused"] for it in summary["iterations"]] == [0, 2, 2, 3, 3]
    assert summary["iterations"][4]["failures"]["budget"] == 1 and summary["iterations"][4]["changed"] == 0
    for k in range(6):  # the files are the same but for the mark
        mine = [{key: v for key, v in r.items() if key != "reused"} for r in rows_of(tmp_path / "once", k)]
        assert mine == rows_of(tmp_path / "again", k), k
    assert [r.get("reused", False) for r in rows_of(tmp_path / "once", 3)] == [False, True, True]


def test_run_method_reuses_only_when_decoding_is_greedy(tmp_path):
    from redline.improve.loop import IterateSettings, run_method

    items = [Response(id=f"r{i}", prompt=f"p{i}", response="xxx") for i in range(3)]
    for temperature, reuse, steps in ((0.0, True, 3), (0.7, True, 4), (0.0, False, 4)):
        calls = []
        config = IterateSettings(input="-", iterations=4, temperature=temperature, reuse=reuse)
        run_method(config, "scripted", lambda engine: deterministic(calls), tmp_path / f"{temperature}-{reuse}",
                   engine=object(), responses=items)
        assert len(calls) == steps, (temperature, reuse)


class FailsOnFirstCall(PreferShorter):
    """A judge that could not say at its first call (an API that failed for good), then prefers the shorter."""

    def __init__(self):
        self.calls = 0

    def judge_many(self, items):
        self.calls += 1
        return [Verdict("invalid") for _ in items] if self.calls == 1 else super().judge_many(items)


def test_keep_best_does_not_stop_an_item_on_a_verdict_the_judge_could_not_give(tmp_path):
    summary = run_iterations(responses(2), shorten, iterations=2, out=tmp_path, stop="best", judge=FailsOnFirstCall(),
                             progress=False)
    first, second = rows_of(tmp_path, 1), rows_of(tmp_path, 2)
    # no verdict is no preference for the current response: it is kept, and the item is tried again
    assert [(r["response"], r["changed"], r["halted"]) for r in first] == [("x", False, True), ("xx", False, False)]
    assert [(r["response"], r["changed"]) for r in second] == [("x", False), ("x", True)]
    assert [it["stopped"] for it in summary["iterations"]] == [0, 1]


def test_a_rerun_with_fewer_iterations_than_out_holds_is_refused_before_the_model_loads(tmp_path):
    """It went through: summary.json said 2 iterations while iteration_3.jsonl stayed, and `evaluate --a OUT`
    judged all three as the run's. More iterations go on from the last; fewer are refused."""
    from redline.improve.loop import IterateSettings, run_method

    run_iterations(responses(), shorten, iterations=3, out=tmp_path, progress=False)
    with pytest.raises(RedlineError, match=r"holds 3 iterations, past --iterations 2: .*Pass --iterations 3"):
        run_iterations(responses(), shorten, iterations=2, out=tmp_path, progress=False)

    def loaded(*args, **kwargs):
        raise AssertionError("the model loaded before the check")

    config = IterateSettings(input="-", iterations=1)
    with pytest.raises(RedlineError, match="holds 3 iterations, past --iterations 1"):
        run_method(config, "scripted", loaded, tmp_path, responses=responses())  # no engine given: it would load one
    summary = run_iterations(responses(), shorten, iterations=4, out=tmp_path, progress=False)
    assert [it["iteration"] for it in summary["iterations"]] == [1, 2, 3, 4]
