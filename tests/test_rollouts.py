"""`redline evaluate rollouts`: an RL run's episodes read by the oracle, by iteration and block, and two runs paired."""

import json
import random

import pytest

from redline import RedlineError
from redline.cli import main
from redline.prompts import pit_messages, pit_parts
from redline.rollouts import RolloutsConfig, evaluate_rollouts
from redline.simulate.instructions import fix_all
from redline.simulate.oracle import quality
from redline.simulate.tasks import make_tasks, template_response

POOR, PLAIN, FIXED = 0, 1, 2  # which answer an episode carries


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def world(tmp_path):
    """Four prompts with their instructions, and three answers to each with the oracle's qualities: a poor one (the
    template's first words: too short to score), the template's answer as it is (0 or 1 by prompt: it meets every
    instruction of two prompts and not of the other two), and the template's answer with every instruction fixed."""
    tasks = make_tasks(4, seed=1)
    data = _write(tmp_path / "prompts.jsonl", [{"id": t.id, "prompt": t.prompt, "meta": t.meta()} for t in tasks])
    answers = []
    for t in tasks:
        template = template_response(t, random.Random(t.id))
        texts = (" ".join(template.split()[:3]), template, fix_all(t.instructions, template, t.topic))
        answers.append((t, texts, [quality(t.meta(), text, t.prompt) for text in texts]))
    assert [q for *_, q in answers] == [[0, 0, 1], [0, 1, 1], [0, 1, 1], [0, 0, 1]]  # the gains differ by prompt
    return data, answers


def _run(tmp_path, name, data, episodes, max_new_tokens=50, **settings):
    """A run folder as `train ppo` leaves it: train_config.json and rollouts.jsonl."""
    run = tmp_path / name
    run.mkdir()
    (run / "train_config.json").write_text(json.dumps({"prompts": data, "max_new_tokens": max_new_tokens, "seed": 0,
                                                       "batch_size": 4, "advantage": "gae", **settings}))
    _write(run / "rollouts.jsonl", episodes)
    return str(run)


def _episodes(answers, which, iterations, tokens=10):
    """Each iteration, every prompt once (as chat messages, as PPO logs them), with answer ``which(iteration)``;
    the score is 2 × the oracle's quality, so reward and oracle agree."""
    return [{"iteration": it, "prompt": [{"role": "user", "content": t.prompt}], "response": texts[which(it)],
             "score": 2 * q[which(it)], "kl": 0.0, "tokens": tokens}
            for it in iterations for t, texts, q in answers]


def test_each_iteration_and_block_carries_the_oracles_quality_and_the_cut_share(world, tmp_path):
    data, answers = world
    rows = _episodes(answers, lambda it: POOR if it < 3 else PLAIN, range(1, 5))
    rows[0]["tokens"] = 50  # one episode of iteration 1 hit the cap, by its token count (runs before `truncated`)
    rows[5]["truncated"] = True  # one of iteration 2 by the flag PPO logs now, below the cap
    run = _run(tmp_path, "ppo", data, rows)
    summary = evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "out"), run=run, block=2))
    per = {r["iteration"]: r for r in summary["per_iteration"]}
    assert per[1]["quality"] == 0 and per[4]["quality"] == 0.5 and per[4]["perfect"] == 0.5
    assert per[1]["cut"] == 0.25 and per[2]["cut"] == 0.25 and per[3]["cut"] == 0.0
    assert [b["iterations"] for b in summary["blocks"]] == [[1, 2], [3, 4]]
    assert [b["quality"] for b in summary["blocks"]] == [0.0, 0.5]
    assert summary["score_quality_r"] == pytest.approx(1.0)  # the score is the quality, doubled
    assert summary["episodes"] == 16 and summary["data"] == data  # the run's own prompt file by default
    episodes = [json.loads(line) for line in (tmp_path / "out" / "episodes.jsonl").read_text().splitlines()]
    assert [e["quality"] for e in episodes[-4:]] == [0, 1, 1, 0] and episodes[-1]["line"] == 16
    assert (tmp_path / "out" / "rollouts.png").stat().st_size > 0
    assert "| 3–4 | 8 | 1.000 | 0.500 |" in (tmp_path / "out" / "rollouts.md").read_text()
    only = evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "late"), run=run, iterations="3-4"))
    assert only["episodes"] == 8 and only["iterations"] == [3, 4] and only["quality"] == 0.5


def test_two_runs_paired_by_iteration_and_prompt(world, tmp_path):
    """Only episodes both runs hold are paired: the first run's fourth iteration (poor answers) and the prompt the
    second run lacks at iteration 2 are left out, or the difference would not be the fixed answers' gain."""
    data, answers = world
    better = _run(tmp_path, "better", data, _episodes(answers, lambda it: FIXED if it < 4 else POOR, range(1, 5)))
    worse_rows = _episodes(answers, lambda it: PLAIN, range(1, 4))
    del worse_rows[5]  # iteration 2's second prompt (a gain of 0)
    worse = _run(tmp_path, "worse", data, worse_rows)
    summary = evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "out"), run=better, against=worse))
    paired = summary["paired"]
    assert paired["pairs"] == 11 and paired["iterations"] == [1, 3]
    assert paired["quality"] == 1.0 and paired["difference"] == pytest.approx(6 / 11, abs=1e-4)  # gains 1,0,0,1 a round
    lo, hi = paired["difference_ci95"]
    assert 0 < lo < paired["difference"] < hi < 1  # resampled (iteration, prompt) groups of gain 0 or 1
    assert summary["against_quality"] == pytest.approx(5 / 11, abs=1e-4)  # its episodes in this run's iterations
    assert summary["blocks"][0]["against_quality"] == summary["against_quality"]  # iterations 1–5: all of them
    assert "paired with" in (tmp_path / "out" / "rollouts.md").read_text()
    same = evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "same"), run=better, against=better))["paired"]
    assert same["difference"] == 0 and same["difference_ci95"] == [0.0, 0.0]


def test_rloo_samples_pair_by_their_order_within_a_prompt(world, tmp_path):
    data, answers = world
    rows = lambda first, second: [  # noqa: E731  two samples of each prompt in iteration 1
        {"iteration": 1, "prompt": t.prompt, "response": texts[k], "score": 0.0}
        for t, texts, _ in answers for k in (first, second)]
    a = _run(tmp_path, "a", data, rows(FIXED, POOR), advantage="rloo", rloo_k=2)
    b = _run(tmp_path, "b", data, rows(POOR, PLAIN), advantage="rloo", rloo_k=2)
    paired = evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "out"), run=a, against=b))["paired"]
    assert paired["pairs"] == 8 and paired["quality"] == 0.5 and paired["against_quality"] == 0.25
    c = _run(tmp_path, "c", data, rows(POOR, PLAIN), advantage="rloo", rloo_k=4)
    with pytest.raises(RedlineError, match="--rloo-k 2 against 4: the two runs drew other prompts"):
        evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "o"), run=a, against=c))


def test_the_cli_prints_the_block_table(world, tmp_path, capsys):
    data, answers = world
    run = _run(tmp_path, "ppo", data, _episodes(answers, lambda it: POOR if it == 1 else FIXED, range(1, 3)))
    assert main(["evaluate", "rollouts", "--run", run, "--block", "1", "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "| 1 | 4 | 0.000 | 0.000 |" in printed and "| 2 | 4 | 2.000 | 1.000 |" in printed and "| all | 8 |" in printed
    assert json.loads((tmp_path / "out" / "rollouts.json").read_text())["block"] == 1


def test_the_table_is_written_as_utf8_under_a_locale_that_is_not(world, tmp_path):
    """rollouts.md was written in the locale's encoding: under LANG=C (PYTHONUTF8=0) its "reward–oracle r" was a
    UnicodeEncodeError after every episode was read, and on Windows cp1252 bytes, not the UTF-8 of every other file."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    data, answers = world
    run = _run(tmp_path, "ppo", data, _episodes(answers, lambda it: PLAIN, range(1, 2)))
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0", "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run([str(Path(sys.executable).with_name("redline")), "evaluate", "rollouts", "--run", run,
                           "--out", str(tmp_path / "out")], env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-500:]
    assert "reward\u2013oracle r" in (tmp_path / "out" / "rollouts.md").read_text(encoding="utf-8")


def test_a_run_still_writing_is_read_up_to_its_last_whole_line(world, tmp_path, capsys):
    data, answers = world
    run = _run(tmp_path, "ppo", data, _episodes(answers, lambda it: FIXED, range(1, 3)))
    path = tmp_path / "ppo" / "rollouts.jsonl"
    path.write_text(path.read_text() + '{"iteration": 3, "prompt": "Wri')  # torn mid-line
    summary = evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "out"), run=run))
    assert summary["episodes"] == 8 and "rollouts.jsonl:9: a line without its end" in capsys.readouterr().err


def test_bad_input_is_refused_with_its_line(world, tmp_path):
    data, answers = world
    rows = _episodes(answers, lambda it: FIXED, [1])
    del rows[2]["score"]
    run = _run(tmp_path, "no-score", data, rows)
    with pytest.raises(RedlineError, match=r"rollouts.jsonl:3: field `score`"):
        evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "o1"), run=run))
    rows = _episodes(answers, lambda it: FIXED, [1])
    rows[1]["prompt"] = "a request the prompt file does not hold"
    run = _run(tmp_path, "stranger", data, rows)
    path = tmp_path / "stranger" / "rollouts.jsonl"
    path.write_text("\n" + path.read_text())  # a blank first line: the numbers stay the file's
    with pytest.raises(RedlineError, match=r"rollouts.jsonl:3: its request 'a request the prompt file"):
        evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "o2"), run=run))
    path.write_text(path.read_text().replace('"iteration": 1, "prompt": "a request', '"iteration": 1 "prompt": "a request'))
    with pytest.raises(RedlineError, match=r"rollouts.jsonl:3: not JSON"):
        evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "o3"), run=run))
    plain = _write(tmp_path / "plain.jsonl", [{"prompt": t.prompt} for t, *_ in answers])
    run = _run(tmp_path, "plain-run", plain, _episodes(answers, lambda it: FIXED, [1]))
    with pytest.raises(RedlineError, match="no record has meta.instructions.*give --data"):
        evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "o4"), run=run))
    with pytest.raises(RedlineError, match="no rollouts.jsonl"):
        evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "o5"), run=str(tmp_path), data=data))
    with pytest.raises(RedlineError, match="expected FIRST-LAST"):
        evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "o6"), run=run, data=data, iterations="2"))


def test_runs_that_drew_other_prompts_cannot_be_paired(world, tmp_path):
    data, answers = world
    first = _run(tmp_path, "a", data, _episodes(answers[:2], lambda it: FIXED, [1, 2]))
    second = _run(tmp_path, "b", data, _episodes(answers[2:], lambda it: FIXED, [1, 2]))
    with pytest.raises(RedlineError, match="share no \\(iteration, prompt\\)"):
        evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "o"), run=first, against=second))
    other_seed = _run(tmp_path, "c", data, _episodes(answers, lambda it: FIXED, [1]), seed=1)
    with pytest.raises(RedlineError, match="--seed 0 against 1"):
        evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "o2"), run=first, against=other_seed))
    # Another order of the same prompts draws others at each iteration; one --data for the oracle changes nothing
    shuffled = _write(tmp_path / "shuffled.jsonl", [json.loads(line) for line in open(data)][::-1])
    other_file = _run(tmp_path, "d", shuffled, _episodes(answers, lambda it: FIXED, [1, 2]))
    for given in (None, data):
        with pytest.raises(RedlineError, match="prompt files .*prompts.jsonl against .*shuffled.jsonl"):
            evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "o3"), run=first, against=other_file, data=given))


def test_pit_rewrites_are_read_with_their_reference(world, tmp_path):
    """A PIT stage's episodes: the prompt holds the request and the answer to improve; the oracle reads both."""
    assert pit_parts("a request, not a PIT turn") is None
    data, answers = world
    rows = []
    for it, (reference, rewrite) in enumerate([(PLAIN, FIXED), (FIXED, POOR)], start=1):
        for t, texts, q in answers:
            rows.append({"iteration": it, "prompt": pit_messages(t.prompt, texts[reference]), "response": texts[rewrite],
                         "score": q[rewrite] - q[reference], "tokens": 10})
    run = _run(tmp_path, "pit-rl-0", data, rows)
    summary = evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "out"), run=run, block=1))
    first, second = summary["blocks"]
    assert first["better"] == 0.5 and first["worse"] == 0.0 and first["reference_quality"] == 0.5  # two already met all
    assert first["gain"] == 0.5 and second["gain"] == -1.0
    assert summary["better_worse_auc"] == 1.0  # every better rewrite outscores every worse one (the reward is the gain)
    assert second["better"] == 0.0 and second["worse"] == 1.0
    assert summary["score_gain_r"] == pytest.approx(1.0)  # the reward is the gain
    assert "| reference's quality | gain | better than it |" in (tmp_path / "out" / "rollouts.md").read_text()
    episode = json.loads((tmp_path / "out" / "episodes.jsonl").read_text().splitlines()[0])
    assert episode["prompt"] == answers[0][0].prompt and episode["reference_quality"] == 0


def test_within_a_prompts_samples_the_reward_is_read_pair_by_pair(world, tmp_path):
    """RLOO's signal: two samples of a prompt, the poor and the fixed answer; the reward orders three prompts' pairs
    as the oracle does and the fourth's the other way (a reward tie would count half)."""
    data, answers = world
    rows = []
    for n, (t, texts, q) in enumerate(answers):
        sign = -1 if n == 3 else 1
        rows += [{"iteration": 1, "prompt": t.prompt, "response": texts[k], "score": sign * q[k]} for k in (POOR, FIXED)]
    run = _run(tmp_path, "rloo", data, rows, advantage="rloo", rloo_k=2)
    summary = evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "out"), run=run))
    assert summary["within_prompt_agreement"] == 0.75 and summary["within_prompt_pairs"] == 4
    tied = _run(tmp_path, "tied", data, [{**r, "score": 0.0} for r in rows])
    assert evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "o2"), run=tied))["within_prompt_agreement"] == 0.5
    once = _run(tmp_path, "once", data, rows[::2])  # one sample a prompt: nothing to compare within
    assert evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "o3"), run=once))["within_prompt_agreement"] is None


def test_runs_that_read_another_limit_of_the_prompt_file_cannot_be_paired(world, tmp_path):
    """--limit changes how many records each pass is shuffled from, so the same seed draws other prompts."""
    data, answers = world
    first = _run(tmp_path, "a", data, _episodes(answers, lambda it: FIXED, [1, 2]))
    second = _run(tmp_path, "b", data, _episodes(answers, lambda it: PLAIN, [1, 2]), limit=3)
    with pytest.raises(RedlineError, match="--limit None against 3"):
        evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "o"), run=first, against=second))


def test_one_paired_group_gives_no_interval(world, tmp_path):
    """One (iteration, prompt) group has no spread to resample: no interval, not a point read as certainty."""
    data, answers = world
    first = _run(tmp_path, "a", data, _episodes(answers[:1], lambda it: FIXED, [1]))
    second = _run(tmp_path, "b", data, _episodes(answers[:1], lambda it: POOR, [1]))
    summary = evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "o"), run=first, against=second))
    assert summary["paired"]["pairs"] == 1 and summary["paired"]["difference"] == 1.0
    assert summary["paired"]["difference_ci95"] is None
    assert "difference +1.000\n" in (tmp_path / "o" / "rollouts.md").read_text() + "\n"


def test_a_reward_that_diverged_is_null_in_valid_json_and_counted(world, tmp_path):
    """A diverged run's NaN scores (as `train ppo` logged them: Python's json writes NaN; now null) made rollouts.json
    hold NaN, which strict JSON readers refuse; the mean is null there, "nan" in the table, and the episodes counted."""
    data, answers = world
    rows = _episodes(answers, lambda it: FIXED, [1, 2])
    for row in rows[4:]:
        row["score"] = float("nan")  # iteration 2 diverged
    rows[-1]["score"] = None  # as redline's own writer now logs a NaN score
    run = _run(tmp_path, "ppo", data, rows)
    summary = evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "out"), run=run, block=1))
    text = (tmp_path / "out" / "rollouts.json").read_text()
    written = json.loads(text, parse_constant=lambda name: pytest.fail(f"rollouts.json holds {name}"))
    first, second = written["blocks"]
    assert first["score"] == 2.0 and first["nonfinite_scores"] == 0
    assert second["score"] is None and second["nonfinite_scores"] == 4 and second["quality"] == 1.0
    assert written["nonfinite_scores"] == 4 and written["score"] is None and summary["episodes"] == 8
    episodes = (tmp_path / "out" / "episodes.jsonl").read_text()
    assert "NaN" not in episodes and json.loads(episodes.splitlines()[-1])["score"] is None
    assert "| 2 | 4 | nan | 1.000 |" in (tmp_path / "out" / "rollouts.md").read_text()


def test_a_nan_score_orders_no_pair_of_a_prompts_samples(world, tmp_path):
    """NaN compares false both ways, so a NaN-scored sample counted as a disordering: it is left out instead."""
    data, answers = world
    rows = []
    for n, (t, texts, q) in enumerate(answers):
        score = (lambda k: float("nan")) if n == 3 else (lambda k: q[k])
        rows += [{"iteration": 1, "prompt": t.prompt, "response": texts[k], "score": score(k)} for k in (POOR, FIXED)]
    run = _run(tmp_path, "rloo", data, rows, advantage="rloo", rloo_k=2)
    summary = evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "out"), run=run))
    assert summary["within_prompt_agreement"] == 1.0 and summary["within_prompt_pairs"] == 3
    assert summary["nonfinite_scores"] == 2 and summary["score"] != summary["score"]  # NaN in memory, null on disk
