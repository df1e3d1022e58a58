"""`redline evaluate` end to end: the oracle judge, matching, order, resuming, iterations, agreement."""

import json
from pathlib import Path
import random
import re

import pytest

from redline import RedlineError
from redline.cli import main
from redline.evaluate import (EvaluateConfig, evaluate, evaluate_agreement, judge_pairs, match_pairs, pair_order,
                              read_judgments)
from redline.judges import Item, Verdict, parse_judge
from redline.records import Response, read_records
from redline.simulate.instructions import fix_all
from redline.simulate.oracle import quality
from redline.simulate.tasks import make_tasks, template_response


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def response_files(tmp_path):
    """A: the template responder's answers with every instruction fixed; B: the raw answers."""
    tasks = make_tasks(8, seed=0)
    a, b = [], []
    for t in tasks:
        raw = template_response(t, random.Random(t.id))
        a.append({"id": t.id, "prompt": t.prompt, "response": fix_all(t.instructions, raw, t.topic), "meta": t.meta()})
        b.append({"id": t.id, "prompt": t.prompt, "response": raw, "meta": t.meta()})
    return _write(tmp_path / "a.jsonl", a), _write(tmp_path / "b.jsonl", b), tasks


def test_evaluate_cli_with_the_oracle(response_files, tmp_path, capsys):
    a, b, tasks = response_files
    out = tmp_path / "eval"
    assert main(["evaluate", "--a", a, "--b", b, "--judge", "oracle", "--out", str(out), "--bootstrap", "200"]) == 0
    assert "win rate of A" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    judgments = read_records(out / "judgments.jsonl", "judgment")
    assert summary["pairs"] == len(judgments) == 8
    assert summary["wins"] + summary["ties"] + summary["losses"] + summary["invalid"] == 8
    # Each verdict is the oracle's: the higher quality wins, whichever side was shown first.
    records_a = {r["id"]: r for r in map(json.loads, open(a))}
    records_b = {r["id"]: r for r in map(json.loads, open(b))}
    for j in judgments:
        qa = quality(records_a[j.id]["meta"], j.a, j.prompt)
        qb = quality(records_b[j.id]["meta"], j.b, j.prompt)
        assert j.winner == ("tie" if qa == qb else "a" if qa > qb else "b")
        assert j.order in ("ab", "ba") and j.judge == "oracle"
    assert summary["wins"] > summary["losses"]  # fixing instructions makes responses better
    assert (out / "report.md").read_text().startswith("# Win rate of A against B")
    assert json.loads((out / "config.json").read_text())["judge"] == "oracle"


def test_rerun_resumes_without_judging_again(response_files, tmp_path):
    a, b, _ = response_files
    config = EvaluateConfig(a=a, b=b, judge="oracle", out=str(tmp_path / "eval"), bootstrap=100, progress=False)
    evaluate(config)
    lines = (tmp_path / "eval" / "judgments.jsonl").read_text()
    counter = CountingJudge(parse_judge("oracle"))
    evaluate(config, judge=counter)
    assert counter.calls == 0
    assert (tmp_path / "eval" / "judgments.jsonl").read_text() == lines


class CountingJudge:
    """Wraps a judge and counts the items it is asked about."""

    def __init__(self, judge):
        self.judge, self.name, self.both_orders, self.calls = judge, judge.name, judge.both_orders, 0

    def check(self):
        self.judge.check()

    def judge_many(self, items):
        self.calls += len(items)
        return self.judge.judge_many(items)

    def close(self):
        pass


class FirstShownJudge:
    """Always prefers the response shown first: the worst position bias there is."""

    name = "first-shown"
    both_orders = False

    def __init__(self, fail_after=None):
        self.fail_after, self.calls = fail_after, 0

    def check(self):
        pass

    def judge_many(self, items):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt  # as if the run were killed
        return [Verdict("a", raw="first") for _ in items]

    def close(self):
        pass


def _pairs(n):
    a = [Response(prompt=f"p{i}", response=f"a{i}", id=str(i)) for i in range(n)]
    b = [Response(prompt=f"p{i}", response=f"b{i}", id=str(i)) for i in range(n)]
    return match_pairs(a, b)[0]


def test_random_order_turns_a_first_position_judge_into_a_coin(tmp_path):
    pairs = _pairs(400)
    judgments = judge_pairs(pairs, FirstShownJudge(), tmp_path / "j.jsonl", seed=3, progress=False)
    wins = sum(j.winner == "a" for j in judgments)
    # Without shuffling A would win 400 of 400; shuffled, A wins where it was shown first,
    # about 200 (binomial sd 10).
    assert 150 < wins < 250
    assert all((j.winner == "a") == (j.order == "ab") for j in judgments)
    # The order is a function of (seed, id): the same on a rerun or a shorter run.
    assert [j.order for j in judgments] == [pair_order(3, p.id) for p in pairs]


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path):
    pairs = _pairs(10)
    path = tmp_path / "j.jsonl"
    with pytest.raises(KeyboardInterrupt):
        judge_pairs(pairs, FirstShownJudge(fail_after=2), path, chunk=3, progress=False)
    assert len(read_judgments(path)) == 6  # two chunks of 3 were written
    judge = FirstShownJudge()
    judgments = judge_pairs(pairs, judge, path, chunk=3, progress=False)
    assert judge.calls == 2  # the remaining 4 pairs: chunks of 3 and 1
    assert [j.id for j in judgments] == [p.id for p in pairs]
    assert len(path.read_text().splitlines()) == 10


def test_pairs_that_failed_for_good_are_retried_on_rerun(tmp_path):
    pairs = _pairs(4)
    path = tmp_path / "j.jsonl"

    class Failing(FirstShownJudge):
        def judge_many(self, items):
            return [Verdict("invalid", raw="error", detail={"error": "HTTP 503"}) for _ in items]

    judge_pairs(pairs, Failing(), path, progress=False)
    judgments = judge_pairs(pairs, FirstShownJudge(), path, progress=False)
    assert all(j.winner in ("a", "b") for j in judgments)
    assert len(read_judgments(path)) == 4  # the later lines replace the failures


def test_a_rerun_with_another_judge_is_refused(tmp_path):
    pairs = _pairs(2)
    judge_pairs(pairs, FirstShownJudge(), tmp_path / "j.jsonl", progress=False)
    other = FirstShownJudge()
    other.name = "another"
    with pytest.raises(RedlineError, match="holds judgments by 'first-shown'"):
        judge_pairs(pairs, other, tmp_path / "j.jsonl", progress=False)


def test_a_reward_judge_spelt_another_way_resumes_its_judgments(tmp_path, monkeypatch):
    """`--judge reward:rm`, then `--judge reward:/abs/rm`: the fingerprint takes them as one judge (the same folder),
    and the judgments file refused the resume; it resumes, and the file keeps naming one judge."""
    monkeypatch.chdir(tmp_path)
    Path("rm").mkdir()
    pairs, path = _pairs(4), tmp_path / "j.jsonl"
    first = FirstShownJudge()
    first.name = "reward:rm"
    judge_pairs(pairs[:2], first, path, progress=False)
    again = FirstShownJudge()
    again.name = f"reward:{tmp_path}/rm"
    judgments = judge_pairs(pairs, again, path, progress=False)
    assert again.calls == 1 and {j.judge for j in read_judgments(path)} == {"reward:rm"} == {j.judge for j in judgments}
    other = FirstShownJudge()
    other.name = "reward:./rm?margin=1"  # another margin: another judge
    with pytest.raises(RedlineError, match="holds judgments by 'reward:rm'"):
        judge_pairs(pairs, other, path, progress=False)


def test_mismatched_files_list_the_first_mismatches(tmp_path, capsys):
    a = _write(tmp_path / "a.jsonl", [{"id": f"q{i}", "prompt": f"p{i}", "response": "x"} for i in range(8)])
    b = _write(tmp_path / "b.jsonl", [{"id": f"q{i}", "prompt": f"p{i}", "response": "y"} for i in range(2, 10)]
               + [{"id": "q1", "prompt": "other", "response": "y"}])
    code = main(["evaluate", "--a", a, "--b", b, "--judge", "oracle", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert "do not match (4 problems" in err  # q0 only in A, q1 prompts differ, q8 and q9 only in B
    assert "id 'q0' is in" in err and "id 'q1': the prompts differ" in err and "id 'q8' is in" in err
    # --skip-invalid judges the pairs that do match (and the oracle then wants its meta)
    pairs, problems = match_pairs(read_records(a, "response"), read_records(b, "response"), skip_invalid=True)
    assert [p.id for p in pairs] == [f"q{i}" for i in range(2, 8)] and len(problems) == 4


def test_unmatched_records_skipped_are_counted_in_the_summary_and_the_report(response_files, tmp_path):
    a, b, _ = response_files
    fewer = tmp_path / "fewer.jsonl"
    fewer.write_text("".join(Path(b).read_text().splitlines(keepends=True)[2:]))  # the first two of B gone
    out = tmp_path / "o"
    assert main(["evaluate", "--a", a, "--b", str(fewer), "--judge", "oracle", "--skip-invalid", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs"] == 6 and summary["unmatched"] == 2 and "is in" in summary["unmatched_first"]
    assert "unmatched records skipped: 2 (first: id " in (out / "report.md").read_text()


def test_records_without_ids_match_by_prompt(tmp_path):
    a = [Response(prompt=[{"role": "user", "content": "hi"}], response="A1"), Response(prompt="two", response="A2")]
    b = [Response(prompt="two", response="B2"), Response(prompt=[{"role": "user", "content": "hi"}], response="B1")]
    pairs, _ = match_pairs(a, b)
    assert [(p.a, p.b) for p in pairs] == [("A1", "B1"), ("A2", "B2")]
    assert pairs[0].id.startswith("p") and pairs[0].id != pairs[1].id
    with pytest.raises(RedlineError, match="appears 2 times"):
        match_pairs(a + a[:1], b)


def test_a_repeated_prompt_that_starts_with_a_bracket_is_a_clear_error():
    # a plain-text prompt such as "[Task] ..." is no chat: the error names it, with no traceback
    for text in ("[Task] Write a haiku.", "[1, 2]"):
        a = [Response(prompt=text, response="A1"), Response(prompt=text, response="A2")]
        with pytest.raises(RedlineError, match=r"A: the prompt '\[.*' appears 2 times"):
            match_pairs(a, [Response(prompt=text, response="B")])


def test_bad_judge_spec_is_one_clear_error(response_files, tmp_path, capsys):
    a, b, _ = response_files
    assert main(["evaluate", "--a", a, "--b", b, "--judge", "gpt4", "--out", str(tmp_path / "o")]) == 2
    assert "judge 'gpt4' does not parse" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_oracle_needs_instructions_in_meta(response_files, tmp_path, capsys):
    with pytest.raises(RedlineError, match="meta.instructions"):
        parse_judge("oracle").judge_many([Item("p", "a", "b")])
    a, b, _ = response_files  # a file without them is refused before anything is judged or written
    bare = tmp_path / "bare.jsonl"
    bare.write_text("".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "meta"}) + "\n"
                            for line in Path(a).read_text().splitlines()))
    assert main(["evaluate", "--a", str(bare), "--b", str(bare), "--judge", "oracle", "--out", str(tmp_path / "o")]) == 2
    assert f"{bare}: 8 of 8 records cannot be judged by oracle: the oracle reads each record's meta.instructions" in (
        capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


def test_noisy_oracle_is_seeded_and_sometimes_disagrees(response_files):
    _, _, tasks = response_files

    def cut(text: str, i: int) -> str:  # the answer cut to i/11 of its words: pairs of every quality gap
        words = text.split()
        return " ".join(words[:max(3, len(words) * i // 11)])

    items = [Item(t.prompt, template_response(t, random.Random(i)), cut(template_response(t, random.Random(i)), i), t.meta())
             for t in tasks for i in range(1, 11)]
    assert not any(i.a == i.b for i in items)  # (a template answer and itself would be a tie to any annotator)
    exact = [v.winner for v in parse_judge("oracle").judge_many(items)]
    noisy = parse_judge("oracle:noisy")
    first = [v.winner for v in noisy.judge_many(items)]
    assert first == [v.winner for v in noisy.judge_many(items)]  # seeded by the pair: reproducible
    assert first != exact
    assert [v.winner for v in parse_judge("oracle?noise=0").judge_many(items)] == exact
    # the same text twice is a tie to a noisy annotator too (an unchanged revision beside its original)
    same = [Item(i.prompt, i.a, i.a, i.meta) for i in items]
    assert {v.winner for v in noisy.judge_many(same)} == {"tie"}
    # a reward judge's margin changes its verdicts, so it is in the name its judgments keep
    assert parse_judge("reward:tiny-random?margin=0.2").name == "reward:tiny-random?margin=0.2"
    assert parse_judge("reward:tiny-random").name == "reward:tiny-random"
    # a narrower dtype moves scores, so close verdicts: a judgments file of float32 is not resumed in bfloat16
    assert parse_judge("reward:tiny-random?dtype=bfloat16&margin=0.2").name == "reward:tiny-random?margin=0.2&dtype=bfloat16"
    assert parse_judge("reward:tiny-random?dtype=float32").name == "reward:tiny-random"
    assert noisy.name.startswith("oracle:noisy")


def _iteration_folder(tmp_path, tasks, n=2):
    folder = tmp_path / "revise"
    folder.mkdir()
    rows0 = []
    for t in tasks:
        raw = template_response(t, random.Random(t.id))
        rows0.append({"id": t.id, "prompt": t.prompt, "response": raw, "meta": t.meta()})
    _write(folder / "iteration_0.jsonl", rows0)  # the loop's copy of its input: not judged
    for k in range(1, n + 1):
        rows = []
        for r, t in zip(rows0, tasks):
            better = fix_all(t.instructions, r["response"], t.topic) if k > 1 else r["response"] + " More words here."
            rows.append({**r, "response": better, "response_0": r["response"], "feedback": "..."})
        _write(folder / f"iteration_{k}.jsonl", rows)
    return folder


def test_iterations_folder_gives_a_curve(response_files, tmp_path, capsys):
    _, _, tasks = response_files
    folder = _iteration_folder(tmp_path, tasks)
    out = tmp_path / "curve"
    assert main(["evaluate", "--a", str(folder), "--judge", "oracle", "--out", str(out), "--bootstrap", "100"]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "iteration 1" in printed and "iteration 2" in printed
    # each iteration's bar says which it is (two bars both called 'judging with oracle' did not)
    assert "iteration 1/2: judging with oracle: 100%" in captured.err
    assert "iteration 2/2: judging with oracle: 100%" in captured.err
    summary = json.loads((out / "summary.json").read_text())
    assert [s["iteration"] for s in summary["iterations"]] == [1, 2]
    assert summary["iterations"][1]["win_rate"] >= 0.5
    assert (out / "win_rate_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "iteration_2" / "judgments.jsonl").exists()


def test_the_curve_draws_no_bar_where_there_is_no_interval_and_no_line_across_a_missing_rate(tmp_path):
    """A missing interval was drawn as a zero-width bar with caps (read as a certain point), and a missing LC rate was
    bridged by the line from the iteration before to the one after."""
    import math
    from redline.evaluate import curve_series, plot_curve

    curve = [{"iteration": 1, "win_rate": 0.6, "ci95": [0.4, 0.8], "lc_win_rate": 0.55, "lc_ci95": [0.35, 0.75]},
             {"iteration": 2, "win_rate": 1.0, "ci95": None, "lc_win_rate": None, "lc_ci95": None}]
    y, lo, hi = curve_series(curve, "win_rate", "ci95")
    assert y == pytest.approx([60, 100]) and lo[0] == pytest.approx(20) and hi[0] == pytest.approx(20)
    assert math.isnan(lo[1]) and math.isnan(hi[1])
    y, lo, hi = curve_series(curve, "lc_win_rate", "lc_ci95")
    assert y[0] == pytest.approx(55) and math.isnan(y[1]) and math.isnan(lo[1])
    assert plot_curve(curve, tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_a_curve_with_no_valid_verdict_is_drawn_without_a_warning(tmp_path):
    """Every verdict invalid (a reward model scoring NaN): the legend of nothing was a matplotlib UserWarning."""
    import warnings

    from redline.evaluate import plot_curve

    curve = [{"iteration": k, "win_rate": None, "ci95": None, "lc_win_rate": None, "lc_ci95": None} for k in (1, 2)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert plot_curve(curve, tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_a_missing_mean_word_count_is_a_dash_in_the_table_not_zero():
    from redline.evaluate import table_row

    row = {"wins": 0, "ties": 0, "losses": 0, "invalid": 0, "win_rate": None, "ci95": None, "lc_win_rate": None,
           "position_consistency": None, "mean_words_a": None, "mean_words_b": 12.5}
    assert table_row("x", row) == "| x | 0 | 0 | 0 | 0 | – | – | – | – | – / 12 | – |"


def test_an_unfinished_last_iteration_is_left_out_and_said(response_files, tmp_path, capsys):
    """A run stopped (or still running) mid-iteration: its part-written file is not judged as if it were the whole."""
    _, _, tasks = response_files
    folder = _iteration_folder(tmp_path, tasks, n=3)
    last = folder / "iteration_3.jsonl"
    torn = "".join(last.read_text().splitlines(keepends=True)[:2]) + '{"id": "torn", "pro'
    last.write_text(torn)
    out = tmp_path / "curve"
    assert main(["evaluate", "--a", str(folder), "--judge", "oracle", "--out", str(out), "--bootstrap", "100"]) == 0
    n = len(tasks)
    err = capsys.readouterr().err
    assert f"iteration 3 is unfinished (2 of {n} records in iteration_3.jsonl): left out" in err
    summary = json.loads((out / "summary.json").read_text())
    assert [s["iteration"] for s in summary["iterations"]] == [1, 2]
    assert summary["unfinished"] == {"3": {"records": 2, "of": n}} and not (out / "iteration_3").exists()
    assert "left out, unfinished: iteration 3" in (out / "report.md").read_text()
    # finished, it is judged by the same command run again, the others read back: the message said --overwrite,
    # which would have thrown every verdict away
    assert "rerun this command" in err and "--overwrite" not in err
    last.write_text((folder / "iteration_2.jsonl").read_text())
    done = (out / "iteration_1" / "judgments.jsonl").read_text()
    assert main(["evaluate", "--a", str(folder), "--judge", "oracle", "--out", str(out), "--bootstrap", "0"]) == 0
    assert [s["iteration"] for s in json.loads((out / "summary.json").read_text())["iterations"]] == [1, 2, 3]
    assert (out / "iteration_1" / "judgments.jsonl").read_text() == done
    last.write_text(torn)
    for k in (1, 2):
        (folder / f"iteration_{k}.jsonl").unlink()
    with pytest.raises(RedlineError, match="no finished iteration to judge"):
        evaluate(EvaluateConfig(a=str(folder), judge="oracle", out=str(tmp_path / "o")))


def test_an_iteration_whose_last_record_is_torn_is_unfinished(response_files, tmp_path):
    """The loop killed while appending an iteration's last record: all its lines are there, the last one torn. It
    was counted a record, so the iteration passed for finished (an error on the torn line; with --skip-invalid, its
    other pairs summarised as the whole iteration)."""
    _, _, tasks = response_files
    folder = _iteration_folder(tmp_path, tasks, n=2)
    last = folder / "iteration_2.jsonl"
    lines = last.read_text().splitlines(keepends=True)
    last.write_text("".join(lines[:-1]) + lines[-1][:40])
    n = len(tasks)
    summary = evaluate(EvaluateConfig(a=str(folder), judge="oracle", out=str(tmp_path / "c"), bootstrap=0,
                                      progress=False, skip_invalid=True))
    assert [s["iteration"] for s in summary["iterations"]] == [1]
    assert summary["unfinished"] == {"2": {"records": n - 1, "of": n}}


def test_iteration_file_without_the_original_names_the_line(tmp_path):
    folder = tmp_path / "revise"
    folder.mkdir()
    _write(folder / "iteration_1.jsonl", [{"id": "x", "prompt": "p", "response": "r"}])
    with pytest.raises(Exception, match="iteration_1.jsonl:1: response_0: missing"):
        evaluate(EvaluateConfig(a=str(folder), judge="oracle", out=str(tmp_path / "o")))


def _two_judges_files(tmp_path, n: int) -> None:
    """one.jsonl and two.jsonl: n pairs judged by two first-shown judges under other seeds."""
    pairs = _pairs(n)
    judge_pairs(pairs, FirstShownJudge(), tmp_path / "one.jsonl", seed=1, progress=False)
    other = FirstShownJudge()
    other.name = "first-shown-seed-2"
    judge_pairs(pairs, other, tmp_path / "two.jsonl", seed=2, progress=False)


def test_agreement_of_two_judgment_files(tmp_path, capsys):
    _two_judges_files(tmp_path, 6)
    out = tmp_path / "agree"
    files = f"{tmp_path / 'one.jsonl'},{tmp_path / 'two.jsonl'}"
    assert main(["evaluate", "agreement", "--judgments", files, "--out", str(out)]) == 0
    result = json.loads((out / "agreement.json").read_text())
    one = {j.id: j.winner for j in read_judgments(tmp_path / "one.jsonl")}
    two = {j.id: j.winner for j in read_judgments(tmp_path / "two.jsonl")}
    assert result["agreement"] == pytest.approx(sum(one[i] == two[i] for i in one) / 6)
    assert "Cohen's kappa" in capsys.readouterr().out


def test_agreement_strips_the_spaces_around_judgments_files_and_refuses_flags_it_would_ignore(tmp_path, capsys):
    _two_judges_files(tmp_path, 4)
    files = f" {tmp_path / 'one.jsonl'} , {tmp_path / 'two.jsonl'} ,"  # as typed: a space after each comma, one too many
    assert main(["evaluate", "agreement", "--judgments", files, "--out", str(tmp_path / "agree")]) == 0
    assert json.loads((tmp_path / "agree" / "agreement.json").read_text())["pairs"] == 4
    # --judges, --a, --b and --limit judge anew: beside --judgments they went unused without a word
    with pytest.raises(RedlineError, match="--judges, --a, --limit are for judging anew"):
        evaluate_agreement(["oracle", "oracle:noisy"], a="a.jsonl", judgments=[str(tmp_path / "one.jsonl")], limit=2,
                           out=tmp_path / "mixed")


def test_agreement_reads_a_users_judgments_files_without_changing_them(tmp_path, capsys):
    _two_judges_files(tmp_path, 4)
    two = tmp_path / "two.jsonl"
    lines = two.read_text().splitlines(keepends=True)
    two.write_text("".join(lines[:2]) + "\n" + "".join(lines[2:]) + '{"id": "cut')  # a blank line, a bad last line
    before = two.read_bytes()
    files = f"{tmp_path / 'one.jsonl'},{two}"
    assert main(["evaluate", "agreement", "--judgments", files, "--out", str(tmp_path / "agree")]) == 2
    assert f"{two}:6: " in capsys.readouterr().err  # its line, counted as the file counts it (the blank line too)
    assert two.read_bytes() == before  # a user's file: read, never cut


def test_agreement_cli_runs_both_judges(response_files, tmp_path):
    a, b, _ = response_files
    out = tmp_path / "agree"
    assert main(["evaluate", "agreement", "--judges", "oracle,oracle:noisy", "--a", a, "--b", b, "--out", str(out)]) == 0
    result = json.loads((out / "agreement.json").read_text())
    assert result["judges"][0] == "oracle" and result["judges"][1].startswith("oracle:noisy")
    assert result["pairs"] == 8
    # the share of pairs whose two verdicts (each judge's own judgments file) are the same
    first, second = ({j.id: j.winner for j in read_judgments(out / f"judge_{i}" / "judgments.jsonl")} for i in (1, 2))
    assert first.keys() == second.keys() and len(first) == 8
    assert result["agreement"] == pytest.approx(sum(first[i] == second[i] for i in first) / 8)
    # rerun into the same folder on fewer pairs: those pairs only, not what the longer run left in its files
    assert main(["evaluate", "agreement", "--judges", "oracle,oracle:noisy", "--a", a, "--b", b, "--limit", "3",
                 "--out", str(out)]) == 0
    assert json.loads((out / "agreement.json").read_text())["pairs"] == 3


def test_evaluate_with_a_reward_model_judge(response_files, tmp_path, tiny_reward):
    a, b, _ = response_files
    out = tmp_path / "rm"
    summary = evaluate(EvaluateConfig(a=a, b=b, judge=f"reward:{tiny_reward}?device=cpu", out=str(out), limit=4,
                                      bootstrap=100, progress=False))
    assert summary["judge"] == f"reward:{tiny_reward}" and summary["pairs"] == 4
    for j in read_judgments(out / "judgments.jsonl"):
        first, second = j.meta["scores"]  # in the order shown
        score_a, score_b = (first, second) if j.order == "ab" else (second, first)
        assert j.winner == ("tie" if score_a == score_b else "a" if score_a > score_b else "b")


def test_the_oracles_summary_gives_the_paired_quality_difference(response_files, tmp_path):
    a, b, tasks = response_files
    summary = evaluate(EvaluateConfig(a=a, b=b, judge="oracle", out=str(tmp_path / "eval"), bootstrap=200, progress=False))
    qa = [quality(r["meta"], r["response"], r["prompt"]) for r in map(json.loads, open(a))]
    qb = [quality(r["meta"], r["response"], r["prompt"]) for r in map(json.loads, open(b))]
    # meta keeps the qualities in the order shown; the summary maps them back to A and B.
    assert {j.order for j in read_judgments(tmp_path / "eval" / "judgments.jsonl")} == {"ab", "ba"}
    assert summary["score"] == "quality"
    assert summary["mean_score_a"] == pytest.approx(sum(qa) / len(qa))
    assert summary["mean_score_b"] == pytest.approx(sum(qb) / len(qb))
    assert summary["score_difference"] == pytest.approx((sum(qa) - sum(qb)) / len(qa)) and summary["score_difference"] > 0
    low, high = summary["score_difference_ci95"]
    assert low <= summary["score_difference"] <= high
    assert "→" in (tmp_path / "eval" / "report.md").read_text()


def test_a_table_sets_evaluations_side_by_side(response_files, tmp_path, capsys):
    a, b, tasks = response_files
    assert main(["evaluate", "--a", a, "--b", b, "--judge", "oracle", "--out", str(tmp_path / "fixed"), "--bootstrap", "100"]) == 0
    assert main(["evaluate", "--a", str(_iteration_folder(tmp_path, tasks)), "--judge", "oracle",
                 "--out", str(tmp_path / "curve"), "--bootstrap", "100"]) == 0
    capsys.readouterr()
    runs = f"{tmp_path / 'fixed'}=all fixed,{tmp_path / 'curve'}#2=the loop's second | pass,{tmp_path / 'curve'}"
    assert main(["evaluate", "table", "--runs", runs, "--out", str(tmp_path / "table")]) == 0
    printed = capsys.readouterr().out
    rows = json.loads((tmp_path / "table" / "table.json").read_text())
    assert [r["label"] for r in rows] == ["all fixed", "the loop's second | pass", "curve, iteration 1", "curve, iteration 2"]
    fixed = json.loads((tmp_path / "fixed" / "summary.json").read_text())
    curve = json.loads((tmp_path / "curve" / "summary.json").read_text())["iterations"]
    # Summarised again from the judgments with each folder's seed and resamples: the same numbers.
    assert rows[0]["summary"]["win_rate"] == fixed["win_rate"] and rows[0]["summary"]["ci95"] == fixed["ci95"]
    assert rows[1]["summary"]["ci95"] == rows[3]["summary"]["ci95"] == curve[1]["ci95"]
    assert rows[2]["b"] == "the original" and rows[0]["b"] == b and rows[1]["a"].endswith("iteration_2.jsonl")
    assert "| all fixed |" in printed and "| the loop's second \\| pass |" in printed
    # a "|" in a label is escaped: every row of table.md has the header's number of cells
    lines = [line for line in (tmp_path / "table" / "table.md").read_text().splitlines() if line.startswith("|")]
    assert len({len(re.split(r"(?<!\\)\|", line)) for line in lines}) == 1
    assert (tmp_path / "table" / "win_rates.png").read_bytes()[:4] == b"\x89PNG"


def test_a_table_names_what_it_cannot_read(response_files, tmp_path):
    from redline.evaluate import TableConfig, evaluate_table

    a, b, tasks = response_files
    with pytest.raises(RedlineError, match="nowhere is not a finished evaluation"):
        evaluate_table(TableConfig(out=str(tmp_path / "t"), runs=str(tmp_path / "nowhere")))
    evaluate(EvaluateConfig(a=str(_iteration_folder(tmp_path, tasks)), judge="oracle", out=str(tmp_path / "curve"),
                            bootstrap=50, progress=False))
    # the curve's notes give no one iteration's position check as if it were the whole curve's
    assert "(first-shown win rate: per iteration, in iteration_K/summary.json)" in (tmp_path / "curve" / "report.md").read_text()
    with pytest.raises(RedlineError, match=r"curve#5: no iteration 5 \(it has 1, 2\)"):
        evaluate_table(TableConfig(out=str(tmp_path / "t"), runs=f"{tmp_path / 'curve'}#5"))
    with pytest.raises(RedlineError, match=r"curve#=last'?: the iteration after # must be a number, got ''"):
        evaluate_table(TableConfig(out=str(tmp_path / "t"), runs=f"{tmp_path / 'curve'}#=last"))  # read every one
    curve = tmp_path / "curve"  # one entry twice (another spelling too) gave its rows twice; another label is a row
    with pytest.raises(RedlineError, match=r"names the rows of .*curve#1=x'? again"):
        evaluate_table(TableConfig(out=str(tmp_path / "t"), runs=f"{curve}#1=x,{tmp_path}/./curve#1=x"))
    assert not (tmp_path / "t").exists()
    assert len(evaluate_table(TableConfig(out=str(tmp_path / "t2"), runs=f"{curve}#1=x,{curve}#1=y"))) == 2
    evaluate_rankings_folder = tmp_path / "rm-eval"
    evaluate_rankings_folder.mkdir()
    (evaluate_rankings_folder / "summary.json").write_text(json.dumps({"model": "m", "eval_accuracy": 0.8}))
    with pytest.raises(RedlineError, match=r"rm-eval/summary.json: not a summary of `redline evaluate`"):
        evaluate_table(TableConfig(out=str(tmp_path / "t"), runs=str(evaluate_rankings_folder)))
    judgments = tmp_path / "curve" / "iteration_1" / "judgments.jsonl"
    kept = judgments.read_text()
    judgments.unlink()  # read as an empty file, it was "holds 0 verdicts ...: the file was cut or edited"
    with pytest.raises(RedlineError, match=r"iteration_1/judgments.jsonl is not there \(its summary.json counts 8"):
        evaluate_table(TableConfig(out=str(tmp_path / "t"), runs=str(tmp_path / "curve")))
    judgments.write_text("".join(kept.splitlines(keepends=True)[:-1]))
    with pytest.raises(RedlineError, match="holds 7 verdicts where its summary.json counts 8: the file was cut"):
        evaluate_table(TableConfig(out=str(tmp_path / "t"), runs=str(tmp_path / "curve")))
    summary = tmp_path / "curve" / "summary.json"
    summary.write_text(summary.read_text()[:100])  # torn: which of the folders, and what to do, not a bare JSON error
    with pytest.raises(RedlineError, match=r"curve/summary.json: not JSON .*rerun `redline evaluate --config"):
        evaluate_table(TableConfig(out=str(tmp_path / "t"), runs=str(tmp_path / "curve")))


def test_a_table_keeps_a_smaller_limits_numbers_and_names_an_unlabelled_iteration(response_files, tmp_path, capsys):
    from redline.evaluate import TableConfig, evaluate_table

    a, b, tasks = response_files
    evaluate(EvaluateConfig(a=a, b=b, judge="oracle", out=str(tmp_path / "e"), bootstrap=50, progress=False))
    limited = evaluate(EvaluateConfig(a=a, b=b, judge="oracle", out=str(tmp_path / "e"), bootstrap=50, progress=False, limit=4))
    assert limited["pairs"] == 4 and len(read_judgments(tmp_path / "e" / "judgments.jsonl")) == 8
    evaluate(EvaluateConfig(a=str(_iteration_folder(tmp_path, tasks)), judge="oracle", out=str(tmp_path / "curve"),
                            bootstrap=50, progress=False))
    rows = evaluate_table(TableConfig(out=str(tmp_path / "t"), runs=f"{tmp_path / 'e'},{tmp_path / 'curve'}#2"))
    assert rows[0].summary["pairs"] == 4 and rows[0].summary["win_rate"] == limited["win_rate"]
    assert "8 verdicts, 4 summarised (a smaller --limit)" in capsys.readouterr().err
    assert rows[1].label == "curve, iteration 2"


def test_a_table_carries_an_earlier_tables_rows_after_their_folders_are_gone(response_files, tmp_path):
    import shutil

    from redline.evaluate import TableConfig, evaluate_table

    a, b, tasks = response_files
    evaluate(EvaluateConfig(a=a, b=b, judge="oracle", out=str(tmp_path / "first"), bootstrap=50, progress=False))
    evaluate_table(TableConfig(out=str(tmp_path / "old"), runs=f"{tmp_path / 'first'}=the first arm"))
    shutil.rmtree(tmp_path / "first")  # the runs folder the old table was built from is gone
    evaluate(EvaluateConfig(a=b, b=a, judge="oracle", out=str(tmp_path / "second"), bootstrap=50, progress=False))
    old = json.loads((tmp_path / "old" / "table.json").read_text())
    rows = evaluate_table(TableConfig(out=str(tmp_path / "new"), runs=f"{tmp_path / 'old' / 'table.json'},{tmp_path / 'second'}=swapped"))
    assert [r.label for r in rows] == ["the first arm", "swapped"]
    assert rows[0].summary == old[0]["summary"] and rows[0].a == a
    assert rows[1].summary["win_rate"] == pytest.approx(1 - rows[0].summary["win_rate"])
    assert "| the first arm |" in (tmp_path / "new" / "table.md").read_text()
    with pytest.raises(RedlineError, match="keep their labels and iterations"):
        evaluate_table(TableConfig(out=str(tmp_path / "t"), runs=f"{tmp_path / 'old' / 'table.json'}=renamed"))
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps([{"label": "x", "judge": "oracle", "a": "a", "b": "b"}]))
    with pytest.raises(RedlineError, match=r"broken.json: row 1 is not a row of `redline evaluate table` \(missing summary\)"):
        evaluate_table(TableConfig(out=str(tmp_path / "t"), runs=str(broken)))
    # an empty list (matplotlib failed: "number sections must be larger than 0"), a row short of a number (KeyError)
    broken.write_text("[]")
    with pytest.raises(RedlineError, match="holds a list of rows, this holds no row"):
        evaluate_table(TableConfig(out=str(tmp_path / "t"), runs=str(broken)))
    broken.write_text(json.dumps([{**old[0], "summary": {k: v for k, v in old[0]["summary"].items() if k != "ci95"}}]))
    with pytest.raises(RedlineError, match=r"row 1 is not a row of `redline evaluate table` \(missing summary.ci95\)"):
        evaluate_table(TableConfig(out=str(tmp_path / "t"), runs=str(broken)))


def test_a_table_grows_in_place_from_its_own_table_json(response_files, tmp_path, capsys):
    a, b, tasks = response_files
    assert main(["evaluate", "--a", a, "--b", b, "--judge", "oracle", "--out", str(tmp_path / "one"), "--bootstrap", "50"]) == 0
    assert main(["evaluate", "--a", b, "--b", a, "--judge", "oracle", "--out", str(tmp_path / "two"), "--bootstrap", "50"]) == 0
    table = tmp_path / "table"
    assert main(["evaluate", "table", "--runs", f"{tmp_path / 'one'}=first", "--out", str(table)]) == 0
    # The same OUT again, its own table.json among the inputs: read before --overwrite clears the folder.
    assert main(["evaluate", "table", "--runs", f"{table / 'table.json'},{tmp_path / 'two'}=second", "--out", str(table),
                 "--overwrite"]) == 0
    capsys.readouterr()
    assert [r["label"] for r in json.loads((table / "table.json").read_text())] == ["first", "second"]


def test_unlabelled_rows_are_told_apart_when_their_folders_share_a_name(response_files, tmp_path, monkeypatch):
    """runs/ppo/eval and runs/sft/eval: two rows called "eval" would be told apart by nothing in the table or the
    plot; each is named by its path as given. A folder's own name where it is the only one, "." included."""
    from redline.evaluate import TableConfig, evaluate_table

    a, b, tasks = response_files
    for arm, (x, y) in {"ppo": (a, b), "sft": (b, a)}.items():
        evaluate(EvaluateConfig(a=x, b=y, judge="oracle", out=str(tmp_path / arm / "eval"), bootstrap=50, progress=False))
    monkeypatch.chdir(tmp_path)
    rows = evaluate_table(TableConfig(out="t", runs="ppo/eval,sft/eval,ppo/eval=labelled"))
    assert [r.label for r in rows] == ["ppo/eval", "sft/eval", "labelled"]
    monkeypatch.chdir(tmp_path / "ppo" / "eval")
    assert [r.label for r in evaluate_table(TableConfig(out=str(tmp_path / "t2"), runs="."))] == ["eval"]


def test_a_write_cut_short_leaves_the_summary_and_the_table_as_they_were(response_files, tmp_path, monkeypatch):
    """A disk that fills mid-write (or a kill) leaves the summary.json a table reads, and the table.json that may be
    all that is left of its rows, whole: the old file until the new one is complete."""
    from redline.evaluate import TableConfig, evaluate_table

    a, b, tasks = response_files
    config = EvaluateConfig(a=a, b=b, judge="oracle", out=str(tmp_path / "e"), bootstrap=50, progress=False)
    evaluate(config)
    evaluate_table(TableConfig(out=str(tmp_path / "t"), runs=str(tmp_path / "e")))
    before = {name: path.read_text() for name, path in (("summary", tmp_path / "e" / "summary.json"),
                                                         ("table", tmp_path / "t" / "table.json"))}
    write_text = Path.write_text

    def torn(self, text, *args, **kwargs):  # half the text, then the disk is full
        if self.name.startswith(("summary.json", ".summary.json", "table.json", ".table.json")):
            write_text(self, text[: len(text) // 2], *args, **kwargs)
            raise OSError(28, "No space left on device")
        return write_text(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", torn)
    with pytest.raises(OSError):
        evaluate(config)
    with pytest.raises(OSError):
        evaluate_table(TableConfig(out=str(tmp_path / "t"), runs=f"{tmp_path / 'e'},{tmp_path / 'e'}=again"))
    assert (tmp_path / "e" / "summary.json").read_text() == before["summary"]
    assert (tmp_path / "t" / "table.json").read_text() == before["table"]


def test_a_rerun_on_another_prompt_with_the_same_responses_is_refused(tmp_path):
    """A verdict answers a prompt as well as two responses: the same id and texts under another prompt (regenerated
    data, a short answer such as "Yes." on both sides) is another question, not one already judged."""
    judge_pairs(_pairs(2), FirstShownJudge(), tmp_path / "j.jsonl", progress=False)
    a = [Response(prompt=f"another p{i}", response=f"a{i}", id=str(i)) for i in range(2)]
    b = [Response(prompt=f"another p{i}", response=f"b{i}", id=str(i)) for i in range(2)]
    with pytest.raises(RedlineError, match="pair '0' was judged on another prompt"):
        judge_pairs(match_pairs(a, b)[0], FirstShownJudge(), tmp_path / "j.jsonl", progress=False)


def test_agreement_refuses_a_bad_second_judge_before_the_first_judges_anything(response_files, tmp_path, monkeypatch):
    a, b, _ = response_files
    out = tmp_path / "agree"
    with pytest.raises(RedlineError, match="judge 'gpt4' does not parse"):  # it came once the oracle had judged all
        evaluate_agreement(["oracle", "gpt4"], a, b, out, progress=False)
    assert not (out / "judge_1").exists()
    # the second judge (the oracle) cannot judge records without instructions; the first takes any record
    monkeypatch.setattr("redline.evaluate._parse", lambda spec: FirstShownJudge() if spec == "first" else parse_judge(spec))
    bare = []
    for path in (a, b):
        bare.append(_write(tmp_path / f"bare-{Path(path).name}",
                           [{k: v for k, v in json.loads(line).items() if k != "meta"} for line in open(path)]))
    with pytest.raises(RedlineError, match="cannot be judged by oracle"):
        evaluate_agreement(["first", "oracle"], *bare, out, progress=False)
    assert not (out / "judge_1").exists()


def test_agreement_refuses_one_id_over_other_pairs(tmp_path):
    """Two judgments files that number their pairs alike (q1, q2 ...) but judged other responses share ids, not pairs."""
    judge_pairs(_pairs(3), FirstShownJudge(), tmp_path / "one.jsonl", progress=False)
    a = [Response(prompt=f"p{i}", response=f"other a{i}", id=str(i)) for i in range(3)]
    b = [Response(prompt=f"p{i}", response=f"b{i}", id=str(i)) for i in range(3)]
    other = FirstShownJudge()
    other.name = "another"
    judge_pairs(match_pairs(a, b)[0], other, tmp_path / "two.jsonl", progress=False)
    files = [str(tmp_path / "one.jsonl"), str(tmp_path / "two.jsonl")]
    with pytest.raises(RedlineError, match="3 of the 3 ids .* other prompts or responses .*first: '0'"):
        evaluate_agreement(judgments=files, out=tmp_path / "agree")


def _entries():
    from redline.demo import DemoConfig, run_demo
    from redline.evaluate import RankingsEvalConfig, evaluate_rankings
    from redline.experiments.critic import CriticExperimentConfig, run_critic_experiment
    from redline.rollouts import RolloutsConfig, evaluate_rollouts

    return [
        (lambda out: evaluate(EvaluateConfig(a="a.jsonl", b="b.jsonl", judge="oracle", out=str(out), bootstrap=-1)),
         "--bootstrap must be at least 0 and at most 1000000, got -1"),
        (lambda out: evaluate(EvaluateConfig(a="a.jsonl", b="b.jsonl", judge="", out=str(out))), "--judge is required"),
        (lambda out: evaluate_rankings(RankingsEvalConfig(model="rm", data="r.jsonl", out=str(out), limit=0)),
         "--limit must be at least 1, got 0"),
        (lambda out: evaluate_rollouts(RolloutsConfig(run="ppo", out=str(out), block=0)), "--block must be at least 1, got 0"),
        (lambda out: run_critic_experiment(CriticExperimentConfig(data="d", unchanged_share=2.0), out),
         "--unchanged-share must be .*got 2.0"),
        (lambda out: run_demo(DemoConfig(test_items=0), out), "--test-items must be at least 1, got 0"),
    ]


@pytest.mark.parametrize("case", range(6))
def test_a_config_built_in_python_is_checked_by_evaluate_rollouts_the_experiment_and_the_demo(tmp_path, case):
    """As revise and the trainers were (test_config.py): a config built in Python skipped the fields' ranges, choices
    and required values that flags and config files are held to (bootstrap=-1 reached the resampling)."""
    run, message = _entries()[case]
    with pytest.raises(RedlineError, match=message):
        run(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_export_path_that_cannot_be_written_is_refused_before_judging(response_files, tmp_path):
    a, b, _ = response_files
    (tmp_path / "folder").mkdir()
    for export, says in ((tmp_path / "folder", "is a folder: name the file"), (Path(a) / "x.json", "which is a file")):
        judge = CountingJudge(parse_judge("oracle"))
        config = EvaluateConfig(a=a, b=b, judge="oracle", out=str(tmp_path / "eval"), progress=False,
                                export_alpaca_eval=str(export))
        with pytest.raises(RedlineError, match=says):  # it failed on writing, once every pair was judged
            evaluate(config, judge=judge)
        assert judge.calls == 0 and not (tmp_path / "eval" / "judgments.jsonl").exists()


def test_a_bad_judgment_after_a_blank_line_is_named_by_its_line_in_the_file(tmp_path):
    path = tmp_path / "judgments.jsonl"
    good = {"judge": "oracle", "id": "p1", "prompt": "p", "a": "x", "b": "y", "winner": "a"}
    path.write_text("\n".join([json.dumps(good), "", json.dumps({**good, "id": "p2", "winner": "maybe"}), ""]))
    # the rows were numbered, not the lines: the error named line 2, the blank one
    with pytest.raises(RedlineError, match=r"judgments\.jsonl:3: "):
        read_judgments(path)


@pytest.mark.parametrize("resamples", ["1", "49"])
def test_too_few_bootstrap_resamples_are_refused_before_judging(response_files, tmp_path, capsys, resamples):
    """--bootstrap 1 printed a '95% interval' of one resample ([50.0, 50.0] beside a 33.3% win rate)."""
    a, b, _ = response_files
    out = tmp_path / "eval"
    assert main(["evaluate", "--a", a, "--b", b, "--judge", "oracle", "--out", str(out), "--bootstrap", resamples]) != 0
    assert f"--bootstrap {resamples}: a 95% interval needs at least 50 resamples (0 for none)" in capsys.readouterr().err
    assert not out.exists()


def test_evaluate_rankings_refuses_a_reward_model_that_scores_nan(tmp_path, jsonl, tiny_reward):
    """NaN compares false both ways: a model whose weights give NaN was 0% accurate on every comparison, with an
    interval, as if it had ordered each one wrong."""
    import torch

    from redline import RedlineError
    from redline.evaluate import RankingsEvalConfig, evaluate_rankings
    from redline.models import load_reward_model, load_tokenizer

    broken = tmp_path / "broken"
    model = load_reward_model(tiny_reward, device="cpu")
    with torch.no_grad():
        model.score.weight.fill_(float("nan"))
    model.save_pretrained(broken)
    load_tokenizer(tiny_reward).save_pretrained(broken)
    data = jsonl([{"prompt": f"Say {w}.", "responses": [w, f"{w} {w}"], "ranks": [0, 1]} for w in ("hi", "bye")])
    with pytest.raises(RedlineError, match=r"scored NaN or infinity on 2 of 2 rankings of .*data.jsonl \(first: the "
                                           r"prompt 'Say hi.'\)"):
        evaluate_rankings(RankingsEvalConfig(model=str(broken), data=str(data), out=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_evaluate_rankings_against_another_model_on_one_prompt_prints_the_difference_without_an_interval(
        tmp_path, jsonl, tiny_reward, capsys):
    """One prompt has no spread to resample, so the paired difference has no interval (None): the line unpacked it
    and the command ended in a TypeError after scoring both models."""
    from redline.cli import main

    data = jsonl([{"prompt": "Say hi.", "responses": ["hi", "hello there", "go"], "ranks": [0, 1, 2]}])
    assert main(["evaluate", "rankings", "--model", tiny_reward, "--against", tiny_reward, "--data", str(data),
                 "--out", str(tmp_path / "vs")]) == 0
    summary = json.loads((tmp_path / "vs" / "summary.json").read_text())
    assert summary["eval_accuracy_difference"] == 0.0 and summary["eval_accuracy_difference_ci95"] is None
    assert f"{tiny_reward} minus {tiny_reward}: +0.0 points on the labels' decisive comparisons" in capsys.readouterr().out


def test_a_reward_judge_scoring_nan_leaves_judgments_that_are_valid_json(tiny_reward, tmp_path, monkeypatch):
    """An invalid verdict keeps the judge's two scores in meta; a NaN or infinite one (a model overflowing in bf16)
    was written as NaN/Infinity, which strict JSON readers refuse: now null, and the file still resumes."""
    from redline.judges.reward import RewardJudge

    judge = RewardJudge(tiny_reward, device="cpu")
    monkeypatch.setattr(judge, "score", lambda pairs: [float("nan") if i % 2 else float("inf") for i in range(len(pairs))])
    path = tmp_path / "j.jsonl"
    judge_pairs(_pairs(2), judge, path, progress=False)
    rows = [json.loads(line, parse_constant=lambda name: pytest.fail(f"judgments.jsonl holds {name}"))
            for line in path.read_text().splitlines()]
    assert [row["winner"] for row in rows] == ["invalid", "invalid"]
    assert all(None in row["meta"]["scores"] and re.search("nan|inf", row["raw"]) for row in rows)  # raw says which
    assert [j.winner for j in judge_pairs(_pairs(2), judge, path, progress=False)] == ["invalid", "invalid"]
