"""`redline evaluate rollouts`: an RL run's episodes read by the oracle, by iteration and block, and two runs paired."""

import json
import random

import pytest

from redline import RedlineError
from redline.cli import main
from redline.rollouts import RolloutsConfig, evaluate_rollouts
from redline.simulate.instructions import fix_all
from redline.simulate.oracle import quality
from redline.simulate.tasks import make_tasks, template_response


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def world(tmp_path):
    """Four prompts with their instructions, and for each a poor answer (the template's first words: too short to
    score) and a good one (the template's answer with every instruction fixed), with the oracle's qualities."""
    tasks = make_tasks(4, seed=1)
    data = _write(tmp_path / "prompts.jsonl", [{"id": t.id, "prompt": t.prompt, "meta": t.meta()} for t in tasks])
    answers = []
    for t in tasks:
        template = template_response(t, random.Random(t.id))
        raw, fixed = " ".join(template.split()[:3]), fix_all(t.instructions, template, t.topic)
        answers.append((t, raw, fixed, quality(t.meta(), raw, t.prompt), quality(t.meta(), fixed, t.prompt)))
    assert all(qf > qr for *_, qr, qf in answers)  # the fixed answer is the better one
    return data, answers


def _run(tmp_path, name, data, episodes, max_new_tokens=50):
    """A run folder as `train ppo` leaves it: train_config.json and rollouts.jsonl."""
    run = tmp_path / name
    run.mkdir()
    (run / "train_config.json").write_text(json.dumps({"prompts": data, "max_new_tokens": max_new_tokens, "seed": 0}))
    _write(run / "rollouts.jsonl", episodes)
    return str(run)


def _episodes(answers, iterations, fixed_from, tokens=10):
    """Each iteration, every prompt once (as chat messages, as PPO logs them): the raw answer before ``fixed_from``,
    the fixed one from it on; the score is 2 × the oracle's quality, so reward and oracle agree."""
    rows = []
    for it in range(1, iterations + 1):
        for t, raw, fixed, qr, qf in answers:
            text, q = (fixed, qf) if it >= fixed_from else (raw, qr)
            rows.append({"iteration": it, "prompt": [{"role": "user", "content": t.prompt}], "response": text,
                         "score": 2 * q, "kl": 0.0, "tokens": tokens})
    return rows


def test_each_iteration_and_block_carries_the_oracles_quality_and_the_cut_share(world, tmp_path):
    data, answers = world
    rows = _episodes(answers, 4, fixed_from=3)
    rows[0]["tokens"] = 50  # one episode of iteration 1 hit the cap
    run = _run(tmp_path, "ppo", data, rows)
    summary = evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "out"), run=run, block=2))
    raw_q = sum(a[3] for a in answers) / 4
    fixed_q = sum(a[4] for a in answers) / 4
    per = {r["iteration"]: r for r in summary["per_iteration"]}
    assert per[1]["quality"] == pytest.approx(raw_q, abs=1e-4) and per[4]["quality"] == pytest.approx(fixed_q, abs=1e-4)
    assert per[1]["cut"] == 0.25 and per[2]["cut"] == 0.0
    assert per[3]["perfect"] == pytest.approx(sum(a[4] == 1.0 for a in answers) / 4)
    assert [b["iterations"] for b in summary["blocks"]] == [[1, 2], [3, 4]]
    assert summary["blocks"][1]["quality"] - summary["blocks"][0]["quality"] == pytest.approx(fixed_q - raw_q, abs=1e-3)
    assert summary["score_quality_r"] == pytest.approx(1.0)  # the score is the quality, doubled
    assert summary["episodes"] == 16 and summary["data"] == data  # the run's own prompt file by default
    episodes = [json.loads(line) for line in (tmp_path / "out" / "episodes.jsonl").read_text().splitlines()]
    assert len(episodes) == 16 and episodes[-1]["quality"] == pytest.approx(answers[-1][4], abs=1e-4)
    assert (tmp_path / "out" / "rollouts.png").stat().st_size > 0
    assert "| 3–4 | 8 |" in (tmp_path / "out" / "rollouts.md").read_text()


def test_two_runs_paired_by_iteration_and_prompt(world, tmp_path):
    data, answers = world
    better = _run(tmp_path, "better", data, _episodes(answers, 4, fixed_from=1))
    worse = _run(tmp_path, "worse", data, _episodes(answers, 3, fixed_from=99))  # one iteration fewer
    summary = evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "out"), run=better, against=worse))
    paired = summary["paired"]
    gain = sum(a[4] - a[3] for a in answers) / 4
    assert paired["pairs"] == 12 and paired["iterations"] == [1, 3]
    assert paired["difference"] == pytest.approx(gain, abs=1e-3)
    lo, hi = paired["difference_ci95"]
    assert 0 < lo <= paired["difference"] <= hi  # every prompt gains, so every resample does
    same = evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "same"), run=better, against=better))["paired"]
    assert same["difference"] == 0 and same["difference_ci95"] == [0.0, 0.0]


def test_the_cli_prints_the_block_table(world, tmp_path, capsys):
    data, answers = world
    run = _run(tmp_path, "ppo", data, _episodes(answers, 2, fixed_from=2))
    assert main(["evaluate", "rollouts", "--run", run, "--block", "1", "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "| 1 | 4 |" in printed and "| 2 | 4 |" in printed and "| all | 8 |" in printed
    assert json.loads((tmp_path / "out" / "rollouts.json").read_text())["block"] == 1


def test_bad_input_is_refused_with_its_line(world, tmp_path):
    data, answers = world
    rows = _episodes(answers, 1, fixed_from=1)
    del rows[2]["score"]
    run = _run(tmp_path, "no-score", data, rows)
    with pytest.raises(RedlineError, match=r"rollouts.jsonl:3: field `score`"):
        evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "o1"), run=run))
    rows = _episodes(answers, 1, fixed_from=1)
    rows[1]["prompt"] = "a request the prompt file does not hold"
    run = _run(tmp_path, "stranger", data, rows)
    with pytest.raises(RedlineError, match=r"rollouts.jsonl:2: its request 'a request the prompt file"):
        evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "o2"), run=run))
    plain = _write(tmp_path / "plain.jsonl", [{"prompt": a[0].prompt} for a in answers])
    with pytest.raises(RedlineError, match="no record has meta.instructions"):
        evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "o3"), run=run, data=plain))
    with pytest.raises(RedlineError, match="no rollouts.jsonl"):
        evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "o4"), run=str(tmp_path), data=data))


def test_runs_that_drew_other_prompts_cannot_be_paired(world, tmp_path):
    data, answers = world
    first = _run(tmp_path, "a", data, _episodes(answers[:2], 2, fixed_from=1))
    second = _run(tmp_path, "b", data, _episodes(answers[2:], 2, fixed_from=1))
    with pytest.raises(RedlineError, match="share no \\(iteration, prompt\\)"):
        evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "o"), run=first, against=second))


def test_pit_rewrites_are_read_with_their_reference(world, tmp_path):
    """A PIT stage's episodes: the prompt holds the request and the answer to improve; the oracle reads both."""
    from redline.prompts import pit_messages, pit_parts

    assert pit_parts("a request, not a PIT turn") is None
    data, answers = world
    rows = []
    for it, (reference, rewrite, score) in enumerate([("raw", "fixed", 1.0), ("fixed", "raw", -1.0)], start=1):
        for t, raw, fixed, *_ in answers:
            text = {"raw": raw, "fixed": fixed}
            rows.append({"iteration": it, "prompt": pit_messages(t.prompt, text[reference]), "response": text[rewrite],
                         "score": score, "tokens": 10})
    run = _run(tmp_path, "pit-rl-0", data, rows)
    summary = evaluate_rollouts(RolloutsConfig(out=str(tmp_path / "out"), run=run, block=1))
    first, second = summary["blocks"]
    assert first["better"] == 1.0 and first["worse"] == 0.0  # every rewrite fixed its reference
    assert second["better"] == 0.0 and second["worse"] == 1.0
    assert first["reference_quality"] == pytest.approx(sum(a[3] for a in answers) / 4, abs=1e-4)
    assert summary["score_gain_r"] == pytest.approx(1.0)  # the reward's sign is the gain's
    assert "| reference's quality | better than it |" in (tmp_path / "out" / "rollouts.md").read_text()
    episode = json.loads((tmp_path / "out" / "episodes.jsonl").read_text().splitlines()[0])
    assert episode["prompt"] == answers[0][0].prompt and "reference_quality" in episode
