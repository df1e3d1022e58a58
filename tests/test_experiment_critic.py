"""`redline experiment critic` end to end on tiny-random and the template simulator: a critic per
size, revisions of the test responses and of a second responder's, a table, a plot, and a rerun
that resumes instead of redoing."""

import json
import re

import pytest

from redline import RedlineError
from redline.cli import main
from redline.records import RecordError
from redline.simulate.build import BuildConfig, build


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sim")
    build(BuildConfig(out=folder, responder="template", prompts=8, test_prompts=4, k=2, seed=0, progress=False))
    return folder


def test_sizes_iterations_and_both_responders_are_judged_then_a_rerun_resumes(data, tmp_path, capsys):
    out = tmp_path / "exp"
    argv = ["experiment", "critic", "--data", str(data), "--model", "tiny-random", "--sizes", "2,4",
            "--iterations", "2", "--test-limit", "3", "--second-model", "tiny-random", "--second-best-of", "2", "--good",
            "--max-steps", "1", "--revise-max-new-tokens", "8", "--response-max-new-tokens", "8",
            "--revise-no-repeat-ngram", "3", "--out", str(out)]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["sizes"]) == ["2", "4"]
    for sets in results["sizes"].values():
        assert set(sets) == {"test", "second", "good"}
        for curve in sets.values():
            rows = curve["iterations"]
            assert [r["iteration"] for r in rows] == [1, 2]
            assert all(r["wins"] + r["ties"] + r["losses"] + r["invalid"] == 3 for r in rows)
            # 8 new tokens cut every critique: each output is a budget (or loop) failure, and none is applied
            assert all(sum(r["failures"].values()) == 3 and r["failures"]["parse"] == 0 and r["changed"] == 0 for r in rows)
            assert all(r["mean_quality"] == curve["original_quality"] for r in rows)
        assert sets["good"]["original_quality"] >= 0.95  # every problem fixed (test_fixed.jsonl, or by an annotator)
        assert sets["good"]["original_quality"] > sets["test"]["original_quality"]
    second = [json.loads(line) for line in (out / "second_responses.jsonl").read_text().splitlines()]
    assert len(second) == 3 and all(r["source"] == "tiny-random@T=1.0" for r in second)
    assert len((out / "second_responses_1.jsonl").read_text().splitlines()) == 3  # the second of 2 samples a prompt
    table = (out / "results.md").read_text()
    assert "| test | 2 | 1 |" in table and "| good | 4 | 2 |" in table
    assert (out / "win_rates.png").stat().st_size > 0
    assert json.loads((out / "config.json").read_text())["sizes"] == "2,4"  # the settings, written once
    assert not (out / "experiment_config.json").exists()
    for n in (2, 4):  # the revise settings reach every size's revisions
        assert json.loads((out / f"size_{n}" / "revise_test" / "summary.json").read_text())["settings"]["no_repeat_ngram"] == 3

    # A rerun trains nothing and generates nothing again.
    stamps = [(out / f"size_{n}" / "critic" / "redline.json").stat().st_mtime for n in (2, 4)]
    second_text = (out / "second_responses.jsonl").read_text()
    assert main(argv) == 0
    assert [(out / f"size_{n}" / "critic" / "redline.json").stat().st_mtime for n in (2, 4)] == stamps
    assert (out / "second_responses.jsonl").read_text() == second_text


@pytest.mark.parametrize("flags, message", [
    (["--iterations", "0"], "--iterations: must be at least 1"),
    (["--apply", "never"], "--apply: 'never' is not one of"),
    (["--second-best-of", "0"], "--second-best-of: must be at least 1"),
    # each names this command's flag: revise's own check named --temperature, --critique-tokens, --max-new-tokens
    (["--revise-temperature", "-1"], "--revise-temperature: must be at least 0"),
    (["--revise-critique-tokens", "0"], "--revise-critique-tokens: must be at least 1"),
    (["--revise-max-new-tokens", "0"], "--revise-max-new-tokens: must be at least 1"),
    (["--second-temperature", "-1"], "--second-temperature: must be at least 0"),
    (["--response-max-new-tokens", "0"], "--response-max-new-tokens: must be at least 1"),
])
def test_bad_revise_settings_are_refused_before_any_training(data, tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit):
        main(["experiment", "critic", "--data", str(data), "--model", "tiny-random", "--sizes", "2",
              "--out", str(tmp_path / "exp")] + flags)
    assert message in capsys.readouterr().err
    assert not (tmp_path / "exp").exists()



@pytest.mark.parametrize("flags, message", [
    (["--revise-no-repeat-ngram", "1"], "--revise-no-repeat-ngram must be 0 (off) or at least 2, got 1"),
    (["--critique-weight", "0"], "--critique-weight must be above 0 (got 0.0)"),  # refused at the first size's training
])
def test_bad_revise_sampling_is_refused_before_any_training(data, tmp_path, flags, message):
    # these failed at the first revise call, after every critic had been trained
    with pytest.raises(RedlineError, match=re.escape(message)):
        main(["--debug", "experiment", "critic", "--data", str(data), "--model", "tiny-random", "--sizes", "2",
              "--out", str(tmp_path / "exp")] + flags)
    assert not (tmp_path / "exp").exists()

@pytest.mark.parametrize("flags, message", [
    (["--limit", "3"], "--limit 3: experiment critic does not read it; --sizes gives"),
    (["--push-to-hub", "me/critic"], "--push-to-hub me/critic: experiment critic trains a critic per size"),
    (["--second", "other.jsonl", "--second-best-of", "2"], "--second-best-of 2 samples --second-model; with --second"),
    (["--second-model", "none", "--second-best-of", "3"],  # no second responder: the 3 was dropped without a word
     "--second-best-of 3 samples --second-model; with --second-model none there is no second responder"),
])
def test_a_flag_the_experiment_would_drop_or_misread_is_refused_before_any_training(data, tmp_path, flags, message):
    # --limit was replaced by each size, --push-to-hub published every size's critic over the last one's,
    # --second-best-of was not read beside --second
    with pytest.raises(RedlineError, match=re.escape(message)):
        main(["--debug", "experiment", "critic", "--data", str(data), "--model", "tiny-random", "--sizes", "2",
              "--out", str(tmp_path / "exp")] + flags)
    assert not (tmp_path / "exp").exists()


def test_more_iterations_go_on_and_fewer_than_a_size_revised_are_refused_before_any_training(data, tmp_path):
    """--iterations was part of the fingerprint: an experiment of 5 rounds rerun with 7 was refused as a run with
    other settings, though each size's revisions go on from the last (as `revise --iterations` does); fewer than
    a size revised are refused before anything trains, not once the critic has loaded."""
    from redline.config import claim_output
    from redline.experiments.critic import CriticExperimentConfig

    out = tmp_path / "exp"
    config = CriticExperimentConfig(data=str(data), model="tiny-random", sizes="2", iterations=2)
    claim_output(out, config, command="experiment critic")
    revised = out / "size_2" / "revise_test"
    revised.mkdir(parents=True)
    for k in range(3):
        (revised / f"iteration_{k}.jsonl").write_text("")
    claim_output(out, CriticExperimentConfig(data=str(data), model="tiny-random", sizes="2", iterations=3),
                 command="experiment critic")
    with pytest.raises(RedlineError, match="revise_test holds 2 iterations, past --iterations 1"):
        main(["--debug", "experiment", "critic", "--data", str(data), "--model", "tiny-random", "--sizes", "2",
              "--iterations", "1", "--out", str(out)])
    assert not (out / "size_2" / "critic").exists()


def test_a_size_given_twice_is_refused_as_the_flag_is_read(tmp_path, capsys):
    # --sizes 2,4,2 ran size 2 twice (the second pass resumed the first) and reported it once, without a word
    with pytest.raises(SystemExit) as exit:
        main(["experiment", "critic", "--data", str(tmp_path / "none"), "--sizes", "2,4,2", "--out", str(tmp_path / "exp")])
    assert exit.value.code == 2
    assert "argument --sizes: 2 is given twice in '2,4,2'" in capsys.readouterr().err
    (tmp_path / "c.yaml").write_text("sizes: '3, 3'\n")  # a config file's value too, naming the file
    with pytest.raises(RedlineError, match=re.escape("c.yaml: sizes: 3 is given twice in '3, 3'")):
        main(["--debug", "experiment", "critic", "--config", str(tmp_path / "c.yaml"), "--data", str(tmp_path),
              "--out", str(tmp_path / "exp")])
    from redline.experiments.critic import CriticExperimentConfig

    with pytest.raises(RedlineError, match=re.escape("--sizes '5,5': 5 is given twice")):  # built in Python
        CriticExperimentConfig(data="d", sizes="5,5").size_list()
    assert CriticExperimentConfig(data="d", sizes="4, 2").size_list() == [4, 2]
    assert not (tmp_path / "exp").exists()


def test_a_size_larger_than_the_data_is_refused_before_any_training(data, tmp_path):
    with pytest.raises(RedlineError, match="--sizes asks for 999 records"):
        main(["--debug", "experiment", "critic", "--data", str(data), "--model", "tiny-random", "--sizes", "999",
              "--out", str(tmp_path / "exp")])
    assert not (tmp_path / "exp").exists()


def test_good_answers_come_from_the_sets_fixed_file_or_an_annotator(data, tmp_path):
    from redline.experiments.critic import _mean_quality, good_responses
    from redline.records import read_records

    test = read_records(data / "test.jsonl", "response")
    shipped = good_responses(test, data / "test_fixed.jsonl")
    assert [r.id for r in shipped] == [r.id for r in test] and all(r.source != "annotator-fixed" for r in shipped)
    fixed_here = good_responses(test, tmp_path / "no-such-file.jsonl")  # a set without one: fixed by an annotator
    assert all(r.source == "annotator-fixed" for r in fixed_here)
    rows = lambda records: [r.to_dict() for r in records]  # noqa: E731
    assert _mean_quality(rows(fixed_here)) >= 0.95 > _mean_quality(rows(test))


def test_unchanged_share_reaches_every_size_s_training_records(data, tmp_path, monkeypatch):
    """`--unchanged-share` is a CriticConfig field, so the experiment takes it: each size's critic trains on
    records of which that share have nothing to fix."""
    import redline.train.critic as critic

    seen = {}

    def fake_train(config, out, records=None):
        seen[config.limit] = sum(r.revision is not None and r.revision.strip() == r.response.strip() for r in records)
        raise RedlineError("stop after the selection")

    monkeypatch.setattr(critic, "train_critic", fake_train)
    unchanged = sum(json.loads(line)["revision"] == json.loads(line)["response"]
                    for line in (data / "feedback.jsonl").read_text().splitlines())
    assert unchanged >= 2  # the template world has answers with nothing to fix
    with pytest.raises(RedlineError, match="stop after the selection"):
        main(["--debug", "experiment", "critic", "--data", str(data), "--model", "tiny-random", "--sizes", "4",
              "--unchanged-share", "0.5", "--second-model", "none", "--out", str(tmp_path / "exp")])
    assert seen == {4: 2}


def test_each_size_s_critic_config_repeats_with_train_critic(data, tmp_path, monkeypatch):
    # OUT/size_N/critic/train_config.json held the experiment's own fields (sizes, judge ...): `train critic
    # --config` refused it ("unknown field 'sizes'"), though its help says the file repeats the run
    import argparse

    import redline.train.critic as critic
    from redline.config import settings_from_args, write_config
    from redline.train.critic import CriticConfig

    def fake_train(config, out, records=None):
        write_config(tmp_path / "train_config.json", config)  # as train_sft writes it into the critic's folder
        raise RedlineError("stop before training")

    monkeypatch.setattr(critic, "train_critic", fake_train)
    with pytest.raises(RedlineError, match="stop before training"):
        main(["--debug", "experiment", "critic", "--data", str(data), "--model", "tiny-random", "--sizes", "4",
              "--unchanged-share", "0.5", "--lora-r", "4", "--second-model", "none", "--out", str(tmp_path / "exp")])
    repeated = settings_from_args(CriticConfig, argparse.Namespace(config=str(tmp_path / "train_config.json")))
    assert (repeated.data, repeated.limit, repeated.unchanged_share, repeated.lora_r) == (
        str(data / "feedback.jsonl"), 4, 0.5, 4)


@pytest.mark.parametrize("change, error, message", [
    (lambda row: row.update(meta={}), RedlineError, "cannot be judged by oracle: the oracle reads each record's meta"),
    (lambda row: row.pop("id"), RecordError, "test.jsonl:1: id: missing (records are matched by id)"),
])
def test_test_responses_revise_or_the_judge_cannot_read_are_refused_before_any_training(
        data, tmp_path, monkeypatch, change, error, message):
    """A user's own data with the default oracle judge, or without ids: found only when the first critic had been
    trained and had revised everything, and the corrected rerun then met a run it was refused to resume."""
    import shutil

    import redline.train.critic as critic

    def no_training(*args, **kwargs):
        raise AssertionError("a critic was trained before the test responses were checked")

    monkeypatch.setattr(critic, "train_critic", no_training)
    own = tmp_path / "own"
    own.mkdir()
    shutil.copy(data / "feedback.jsonl", own / "feedback.jsonl")
    rows = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()]
    for row in rows:
        change(row)
    (own / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(error, match=re.escape(message)):
        main(["--debug", "experiment", "critic", "--data", str(own), "--model", "tiny-random", "--sizes", "2",
              "--second-model", "none", "--out", str(tmp_path / "exp")])
    assert not (tmp_path / "exp").exists()


def test_a_second_file_is_matched_to_the_test_prompts_by_id_not_by_line(data, tmp_path, monkeypatch):
    """A --second file in another order (or longer, or missing an id: test_partial.jsonl has no edit of an empty
    answer) gave its first lines, answers to other prompts than the test responses beside them."""
    import redline.generation as generation
    import redline.improve.revise as revise_module
    import redline.train.critic as critic

    seen = {}

    def fake_revise(config, out, engine=None, judge=None, responses=None, progress=False):
        seen[out.name] = [r.id for r in responses]
        if out.name == "revise_second":
            raise RedlineError("stop after the sets")
        return {"iterations": []}

    monkeypatch.setattr(critic, "train_critic", lambda *args, **kwargs: None)
    monkeypatch.setattr(generation, "load_engine", lambda *args, **kwargs: object())
    monkeypatch.setattr(revise_module, "revise", fake_revise)
    monkeypatch.setattr("redline.evaluate.evaluate_iterations", lambda *args, **kwargs: {"iterations": []})
    rows = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()]
    second = tmp_path / "second.jsonl"
    second.write_text("".join(json.dumps({**row, "response": "other " + row["response"]}) + "\n"
                              for row in reversed(rows[1:])))  # no answer to the first test prompt
    argv = ["--debug", "experiment", "critic", "--data", str(data), "--model", "tiny-random", "--sizes", "2",
            "--test-limit", "3", "--second", str(second)]
    with pytest.raises(RedlineError, match="stop after the sets"):
        main(argv + ["--out", str(tmp_path / "exp")])
    assert seen == {"revise_test": [r["id"] for r in rows[:3]], "revise_second": [r["id"] for r in rows[1:3]]}

    second.write_text("".join(json.dumps({**row, "id": "x" + row["id"]}) + "\n" for row in rows))
    with pytest.raises(RedlineError, match="has no response for any of the 3 test ids"):
        main(argv + ["--out", str(tmp_path / "exp2")])


@pytest.mark.parametrize("name", ["second.jsonl", "test_fixed.jsonl"])
def test_a_second_or_fixed_file_whose_ids_name_other_prompts_is_refused_before_any_training(data, tmp_path, name):
    """Ids recur across data sets ("q0"): another set's answers were revised and judged as answers to the test prompts."""
    import shutil

    own = tmp_path / "own"
    own.mkdir()
    for part in ("feedback.jsonl", "test.jsonl"):
        shutil.copy(data / part, own / part)
    rows = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()]
    rows[1]["prompt"] = "Another set's request."
    (own / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    flags = ["--second", str(own / name)] if name == "second.jsonl" else ["--good", "--second-model", "none"]
    with pytest.raises(RedlineError, match=re.escape(f"id {rows[1]['id']!r} answers another prompt than the test record")):
        main(["--debug", "experiment", "critic", "--data", str(own), "--model", "tiny-random", "--sizes", "2",
              "--out", str(tmp_path / "exp")] + flags)
    assert not (tmp_path / "exp").exists()


def test_test_prompts_that_are_also_in_the_feedback_are_refused_before_any_training(data, tmp_path, monkeypatch):
    """A critic trained on the prompts it then revises measures recall, not improvement: feedback.jsonl and test.jsonl
    must hold other prompts, as a reward model's --eval-data must."""
    import shutil

    import redline.train.critic as critic

    def no_training(*args, **kwargs):
        raise AssertionError("a critic was trained on the test prompts")

    monkeypatch.setattr(critic, "train_critic", no_training)
    own = tmp_path / "own"
    own.mkdir()
    shutil.copy(data / "test.jsonl", own / "test.jsonl")
    feedback = [json.loads(line) for line in (data / "feedback.jsonl").read_text().splitlines()]
    feedback[0]["prompt"] = json.loads((data / "test.jsonl").read_text().splitlines()[1])["prompt"]
    (own / "feedback.jsonl").write_text("".join(json.dumps(row) + "\n" for row in feedback))
    with pytest.raises(RedlineError, match=r"test\.jsonl: 1 of its prompts are also in the training records of .*feedback\.jsonl"):
        main(["--debug", "experiment", "critic", "--data", str(own), "--model", "tiny-random", "--sizes", "2",
              "--second-model", "none", "--out", str(tmp_path / "exp")])
    assert not (tmp_path / "exp").exists()


def test_results_with_no_valid_verdict_are_written_without_a_warning(tmp_path):
    """A size whose every verdict was invalid (the judge could not answer): its plot's empty legend was a matplotlib
    UserWarning; the table says – for the rate."""
    import warnings

    from redline.experiments.critic import write_results

    row = {"iteration": 1, "win_rate": None, "ci95": None, "wins": 0, "ties": 0, "losses": 0}
    results = {"config": {"judge": "reward:rm", "model": "tiny-random", "iterations": 1},
               "sizes": {8: {"test": {"original_quality": None, "iterations": [row]}}}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_results(results, tmp_path)
    assert (tmp_path / "win_rates.png").read_bytes()[:4] == b"\x89PNG"
    assert "| test | 8 | 1 | – | – | 0 / 0 / 0 |" in (tmp_path / "results.md").read_text()


def test_results_are_written_and_printed_as_utf8_under_a_locale_that_is_not(tmp_path):
    """results.md was written (and printed back) in the locale's encoding: under LANG=C (PYTHONUTF8=0) its "–" was a
    UnicodeEncodeError once every size had trained and been judged, and on Windows cp1252 bytes."""
    import os
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import sys
        from pathlib import Path
        import redline.cli as cli
        import redline.experiments.critic as C
        row = {"iteration": 1, "win_rate": None, "ci95": None, "wins": 0, "ties": 0, "losses": 0}
        results = {"config": {"judge": "oracle", "model": "tiny-random", "iterations": 1},
                   "sizes": {8: {"test": {"original_quality": None, "iterations": [row]}}}}
        C.run_critic_experiment = lambda config, out: C.write_results(results, out)  # the experiment, done
        cli.configured = lambda *args: None
        cli._experiment_critic(type("Args", (), {"out": Path(sys.argv[1])}))
    """)
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0", "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-500:]
    row = "| test | 8 | 1 | \u2013 | \u2013 | 0 / 0 / 0 |"
    assert row in (tmp_path / "results.md").read_text(encoding="utf-8") and row in done.stdout.decode("utf-8")
