"""`redline simulate rank`: a policy's responses ranked by the simulated annotators, and a reward model going on from
another on them; bad input named by file, line and field."""

from __future__ import annotations

import json
import random

import pytest

from redline import RedlineError
from redline.cli import main
from redline.records import read_records
from redline.simulate.instructions import fix_all
from redline.simulate.oracle import quality
from redline.simulate.rank import RankConfig, rank
from redline.simulate.tasks import make_tasks, template_response


def _samples(tmp_path, tasks, name, respond):
    """One response file, one sample a prompt, as `redline generate` writes them (id, prompt, meta, source)."""
    path = tmp_path / name
    path.write_text("".join(json.dumps({"id": t.id, "prompt": t.prompt, "response": respond(t), "source": name,
                                        "meta": {**t.meta(), "annotator": "of another ranking", "edit_of": [None]}}) + "\n"
                            for t in tasks))
    return str(path)


@pytest.fixture
def three_files(tmp_path):
    tasks = make_tasks(12, seed=3)
    raw = {t.id: template_response(t, random.Random(t.id)) for t in tasks}
    files = [_samples(tmp_path, tasks, "raw.jsonl", lambda t: raw[t.id]),
             _samples(tmp_path, tasks, "fixed.jsonl", lambda t: fix_all(t.instructions, raw[t.id], t.topic)),
             _samples(tmp_path, tasks, "short.jsonl", lambda t: "No.")]
    return tasks, files


def test_noise_free_annotators_rank_by_the_oracle_across_files(three_files, tmp_path, capsys):
    tasks, files = three_files
    out = tmp_path / "rankings.jsonl"
    assert main(["simulate", "rank", "--responses", ",".join(files), "--noise-scale", "0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rankings = read_records(out, "ranking")
    by_id = {t.id: t for t in tasks}
    assert rankings and all(r.id in by_id for r in rankings)
    for r in rankings:
        task = by_id[r.id]
        assert r.prompt == task.prompt and len(r.responses) == 3
        assert r.meta["policy"] == ["raw.jsonl", "fixed.jsonl", "short.jsonl"]
        # Only the task's own meta is kept: the annotator is this one, no field of the ranking the prompt came from.
        assert r.meta["annotator"].startswith("annotator-") and "edit_of" not in r.meta
        q = [quality(task.meta(), text, task.prompt) for text in r.responses]
        assert r.meta["oracle_quality"] == [round(x, 4) for x in q]
        for i in range(3):
            for j in range(3):
                if q[i] > q[j]:
                    assert r.ranks[i] < r.ranks[j]  # noise-free: the better always above the worse
    assert "decisive labels right 100.0%" in printed
    assert f"wrote {len(rankings)} rankings" in printed


def test_a_reward_model_goes_on_from_another_on_a_policys_rankings(three_files, tmp_path):
    tasks, files = three_files
    first = tmp_path / "first.jsonl"
    rank(RankConfig(responses=",".join(files[:2])), first)
    assert main(["train", "reward", "--data", str(first), "--model", "tiny-random", "--out", str(tmp_path / "rm"),
                 "--max-steps", "2", "--batch-size", "2", "--eval-split", "0"]) == 0
    second = tmp_path / "second.jsonl"
    summary = rank(RankConfig(responses=",".join(files), seed=1), second)
    assert summary["rankings"] == len(read_records(second, "ranking"))
    assert main(["train", "reward", "--data", str(second), "--model", str(tmp_path / "rm"), "--out", str(tmp_path / "rm2"),
                 "--max-steps", "2", "--batch-size", "2", "--eval-split", "0"]) == 0
    info = json.loads((tmp_path / "rm2" / "redline.json").read_text())
    assert info["kind"] == "reward" and info["metrics"]["train_comparisons"] > 0


def test_bad_response_files_are_named_by_file_line_and_field(three_files, tmp_path):
    from redline import RedlineError
    from redline.records import RecordError

    tasks, files = three_files
    rows = [json.loads(line) for line in open(files[0])]
    del rows[2]["meta"]["instructions"]
    rows[4]["id"] = rows[3]["id"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    with pytest.raises(RecordError) as e:
        rank(RankConfig(responses=str(bad)), tmp_path / "r.jsonl")
    text = str(e.value)
    assert f"{bad}:3: meta.instructions: missing" in text
    assert f"{bad}:5: id: duplicate id {rows[3]['id']!r} in one file (first on line 4)" in text
    assert f"{bad}:13:" in text
    other = [json.loads(line) for line in open(files[1])]
    other[0]["prompt"] = "another prompt"
    moved = tmp_path / "moved.jsonl"
    moved.write_text("".join(json.dumps(r) + "\n" for r in other))
    with pytest.raises(RecordError, match=f"{moved}:1: prompt: differs from the prompt of id"):
        rank(RankConfig(responses=f"{files[0]},{moved}"), tmp_path / "r.jsonl")
    other = [json.loads(line) for line in open(files[1])]
    other[1]["meta"]["instructions"] = other[0]["meta"]["instructions"]
    moved.write_text("".join(json.dumps(r) + "\n" for r in other))
    with pytest.raises(RecordError, match=f"{moved}:2: meta.instructions: another task than the one of id"):
        rank(RankConfig(responses=f"{files[0]},{moved}"), tmp_path / "r.jsonl")
    with pytest.raises(RedlineError, match="no prompt of .* has two responses the annotators tell apart"):
        rank(RankConfig(responses=files[0]), tmp_path / "r.jsonl")  # one sample a prompt: nothing to compare
    assert not (tmp_path / "r.jsonl").exists()


def _rollout_run(tmp_path, name, tasks, episodes, prompts_file):
    """A run folder as `train ppo` leaves it (train_config.json naming its prompts, rollouts.jsonl)."""
    run = tmp_path / name
    run.mkdir()
    (run / "train_config.json").write_text(json.dumps({"prompts": prompts_file}))
    (run / "rollouts.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
    return str(run)


@pytest.fixture
def prompts(tmp_path):
    tasks = make_tasks(6, seed=4)
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": t.id, "prompt": t.prompt, "meta": t.meta()}) + "\n" for t in tasks))
    answers = {t.id: (" ".join(template_response(t, random.Random(t.id)).split()[:3]),  # too short to score
                      fix_all(t.instructions, template_response(t, random.Random(t.id)), t.topic)) for t in tasks}
    return tasks, str(path), answers


def test_a_policys_rollouts_are_ranked_by_iteration_and_prompt(prompts, tmp_path, capsys):
    """RLOO's K samples of a prompt in an iteration form one ranking; noise-free annotators put the good one first."""
    tasks, data, answers = prompts
    episodes = [{"iteration": it, "prompt": [{"role": "user", "content": t.prompt}], "response": answers[t.id][k],
                 "score": 0.0, "tokens": 9} for it in (1, 2, 3) for t in tasks for k in (0, 1)]
    run = _rollout_run(tmp_path, "ppo", tasks, episodes, data)
    out = tmp_path / "rankings.jsonl"
    assert main(["simulate", "rank", "--rollouts", run, "--iterations", "2-3", "--noise-scale", "0", "--out", str(out)]) == 0
    assert "wrote 12 rankings" in capsys.readouterr().out  # 6 prompts × iterations 2 and 3
    rankings = read_records(out, "ranking")
    assert {r.id for r in rankings} == {f"{t.id}@ppo-it{it}" for t in tasks for it in (2, 3)}
    for r in rankings:
        assert r.responses == list(answers[r.id.split("@")[0]]) and r.ranks == [1, 0]  # the fixed answer first
        assert r.meta["policy"] == [r.id.split("@")[1]] * 2 and "instructions" in r.meta


def test_a_pit_stages_rewrites_are_ranked_against_their_references(prompts, tmp_path):
    from redline.prompts import pit_messages

    tasks, data, answers = prompts
    episodes = [{"iteration": 1, "prompt": pit_messages(t.prompt, answers[t.id][0]), "response": answers[t.id][1],
                 "score": 1.0} for t in tasks]
    # each reference rewritten twice (RLOO's K = 2), and a second reference of each request (the fixed answer, rewritten
    # into the poor one), as round 0 rewrites a pair's y_l and y_w
    worse = [{**e, "prompt": pit_messages(t.prompt, answers[t.id][1]), "response": answers[t.id][0]}
             for e, t in zip(episodes, tasks)]
    run = _rollout_run(tmp_path, "rl-0", tasks, episodes * 2 + worse, "references.jsonl")
    out = tmp_path / "rankings.jsonl"
    result = rank(RankConfig(rollouts=run, data=data, noise_scale=0), out)
    rankings = {r.id: r for r in read_records(out, "ranking")}
    assert result["rankings"] == 12 and set(rankings) == {f"{t.id}@rl-0-it1-{n}" for t in tasks for n in (1, 2)}
    for t in tasks:
        improved, spoiled = rankings[f"{t.id}@rl-0-it1-1"], rankings[f"{t.id}@rl-0-it1-2"]
        assert improved.meta["policy"] == ["reference", "rl-0-it1", "rl-0-it1"] and improved.ranks == [1, 0, 0]
        assert spoiled.responses == list(answers[t.id])[::-1] and spoiled.ranks == [0, 1]  # the reference was better


def test_rollouts_bad_settings_are_one_clear_error(prompts, three_files, tmp_path):
    tasks, data, answers = prompts
    once = [{"iteration": 1, "prompt": t.prompt, "response": answers[t.id][1], "score": 0.0} for t in tasks]
    run = _rollout_run(tmp_path, "gae", tasks, once, data)
    out = tmp_path / "r.jsonl"
    with pytest.raises(RedlineError, match="one of the two"):
        rank(RankConfig(), out)
    with pytest.raises(RedlineError, match="one of the two"):
        rank(RankConfig(responses=three_files[1][0], rollouts=run), out)
    with pytest.raises(RedlineError, match="expected FIRST-LAST"):
        rank(RankConfig(rollouts=run, iterations="3"), out)
    with pytest.raises(RedlineError, match="--data and --iterations read --rollouts"):
        rank(RankConfig(responses=three_files[1][0], iterations="1-2"), out)
    with pytest.raises(RedlineError, match="samples each prompt once an iteration"):
        rank(RankConfig(rollouts=run), out)
    with pytest.raises(RedlineError, match="no episode in iterations 5-9"):
        rank(RankConfig(rollouts=run, iterations="5-9"), out)
    # a file or run named twice (another spelling too): each answer was ranked beside its own copy
    first, second = three_files[1][:2]
    again = first.replace("/raw.jsonl", "/./raw.jsonl")
    with pytest.raises(RedlineError, match=r"--responses: .* is given twice"):
        rank(RankConfig(responses=f"{first},{second},{again}"), out)
    with pytest.raises(RedlineError, match=r"--rollouts: .* is given twice"):
        rank(RankConfig(rollouts=f"{run},{run}/"), out)
    assert not out.exists()


def test_two_runs_with_one_folder_name_are_never_ranked_together(prompts, tmp_path):
    tasks, data, answers = prompts
    once = lambda k: [{"iteration": 1, "prompt": t.prompt, "response": answers[t.id][k], "score": 0.0} for t in tasks]  # noqa: E731
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    runs = [_rollout_run(tmp_path / "a", "ppo", tasks, once(0), data), _rollout_run(tmp_path / "b", "ppo", tasks, once(1), data)]
    with pytest.raises(RedlineError, match="samples each prompt once an iteration"):  # one sample each: nothing to rank
        rank(RankConfig(rollouts=",".join(runs)), tmp_path / "r.jsonl")


def test_pairs_are_each_rankings_decisive_comparisons(three_files, tmp_path, capsys):
    """--pairs: what DPO and the gap model read; noise-free, fixed beats raw beats "No." in every group."""
    from redline.train.dpo import read_pairs

    tasks, files = three_files
    out = tmp_path / "pairs.jsonl"
    assert main(["simulate", "rank", "--responses", ",".join(files), "--noise-scale", "0", "--pairs", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    prefs = read_records(out, "preference")
    assert f"wrote {len(prefs)} preference pairs from" in printed
    by_task = {t.id: t for t in tasks}
    for p in prefs:
        task_id, pair = p.id.split(":")
        w, l = p.meta["pair"]
        assert pair == f"{w}>{l}" and p.meta["oracle_quality"][0] > p.meta["oracle_quality"][1]
        assert quality(by_task[task_id].meta(), p.chosen, p.prompt) == pytest.approx(p.meta["oracle_quality"][0], abs=1e-4)
        assert p.meta["policy"][0] != p.meta["policy"][1]
    pairs, identical = read_pairs(str(out))
    assert len(pairs) == len(prefs) and identical == 0  # DPO reads them as they are


def test_a_gap_model_goes_on_from_another_on_a_pit_stages_rewrites(prompts, tmp_path):
    """PIT's counterpart of the on-policy reward model: a stage's rewrites, ranked against their references and
    written as pairs, train a gap model that starts from another."""
    from redline.prompts import pit_messages

    tasks, data, answers = prompts
    episodes = [{"iteration": 1, "prompt": pit_messages(t.prompt, answers[t.id][0]), "response": answers[t.id][1],
                 "score": 1.0} for t in tasks]
    run = _rollout_run(tmp_path, "rl-1", tasks, episodes, "references.jsonl")
    pairs = tmp_path / "pairs.jsonl"
    assert rank(RankConfig(rollouts=run, data=data, noise_scale=0, pairs=True), pairs)["pairs"] == 6
    train = ["train", "gap-reward", "--data", str(pairs), "--max-steps", "2", "--batch-size", "2", "--eval-split", "0",
             "--device", "cpu"]
    assert main([*train, "--model", "tiny-random", "--out", str(tmp_path / "gap")]) == 0
    assert main([*train, "--model", str(tmp_path / "gap"), "--out", str(tmp_path / "gap2")]) == 0
    info = json.loads((tmp_path / "gap2" / "redline.json").read_text())
    assert info["kind"] == "gap-reward" and info["metrics"]["train_pairs"] == 6
    assert info["base_model"] == str(tmp_path / "gap")  # went on from the first gap model


def test_limit_and_skip_invalid_read_the_response_files_as_every_reader_does(three_files, tmp_path, capsys):
    from redline.records import RecordError

    tasks, files = three_files
    rows = [json.loads(line) for line in open(files[0])]
    del rows[1]["meta"]["instructions"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "r.jsonl"
    # Skipped: the bad line is named on stderr and its prompt ranks without that file's sample.
    assert main(["simulate", "rank", "--responses", f"{bad},{files[1]},{files[2]}", "--skip-invalid",
                 "--noise-scale", "0", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"{bad}: 11 records, skipped 1 invalid" in err and f"skipped {bad}:2: meta.instructions: missing" in err
    sizes = {r.id: len(r.responses) for r in read_records(out, "ranking")}
    assert sizes[rows[1]["id"]] == 2 and all(n == 3 for i, n in sizes.items() if i != rows[1]["id"])
    # The first N of each file: N groups.
    rank(RankConfig(responses=",".join(files), limit=5, noise_scale=0), tmp_path / "five.jsonl")
    assert {r.id for r in read_records(tmp_path / "five.jsonl", "ranking")} <= {t.id for t in tasks[:5]}
    # Without --skip-invalid, one error names the bad lines of every file.
    other = [json.loads(line) for line in open(files[1])]
    other[3]["response"] = 7
    worse = tmp_path / "worse.jsonl"
    worse.write_text("".join(json.dumps(r) + "\n" for r in other))
    with pytest.raises(RecordError) as e:
        rank(RankConfig(responses=f"{bad},{worse}"), tmp_path / "y.jsonl")
    assert f"{bad}:2: meta.instructions" in str(e.value) and f"{worse}:4: response" in str(e.value)
    with pytest.raises(RedlineError, match="--limit and --skip-invalid read --responses"):
        rank(RankConfig(rollouts=str(tmp_path), skip_invalid=True), tmp_path / "x.jsonl")


def test_empty_responses_left_out_of_their_rankings_are_counted_not_dropped_silently(three_files, tmp_path, capsys):
    """A ranking holds text only, so a policy's empty answers cannot be ranked; the user must be told how many there
    were, or "every response tied" hides that the worst answer of each group was never shown to the annotator."""
    tasks, files = three_files
    rows = [json.loads(line) for line in open(files[2])]
    for row in rows[:4]:
        row["response"] = ""
    silent = tmp_path / "silent.jsonl"
    silent.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "r.jsonl"
    assert main(["simulate", "rank", "--responses", f"{files[0]},{files[1]},{silent}", "--noise-scale", "0",
                 "--out", str(out)]) == 0
    assert "empty responses left out: 4)" in capsys.readouterr().out
    assert rank(RankConfig(responses=",".join(files), noise_scale=0), tmp_path / "all.jsonl")["empty_responses_left_out"] == 0
