"""`redline demo` end to end on tiny-random: data, critic, revisions, the oracle's report."""

import json
import warnings

import pytest

import redline.demo
from redline import RedlineError
from redline.cli import main


def test_demo_runs_the_whole_loop_and_resumes(tmp_path, monkeypatch, capsys):
    # Without the shipped set (an installed wheel has no data/simulated) the demo builds a small
    # template set itself; point it at a missing folder to exercise that path.
    monkeypatch.setattr(redline.demo, "SHIPPED", tmp_path / "no-such-data")
    out = tmp_path / "demo"
    argv = ["demo", "--model", "tiny-random", "--out", str(out), "--train-records", "8", "--test-items", "4",
            "--good-items", "3", "--iterations", "2", "--max-steps", "1", "--max-new-tokens", "8"]
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")  # what the demo lets through would be recorded here
        assert main(argv) == 0
    assert not [w for w in shown if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    captured = capsys.readouterr()
    report = captured.out
    assert "iteration 1" in report and "iteration 2" in report
    assert report.startswith("# Win rate")  # the table only: no trainer log lines on stdout
    steps = [line for line in captured.err.splitlines() if line.startswith("redline demo: step")]
    assert [s.split(":")[1].strip() for s in steps] == [f"step {i}/5" for i in range(1, 6)]
    assert "Warning" not in captured.err and "Loading weights" not in captured.err
    assert (out / "data" / "manifest.json").exists() and (out / "critic" / "redline.json").exists()
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert [s["iteration"] for s in summary["iterations"]] == [1, 2]
    assert all(s["pairs"] == 4 for s in summary["iterations"])
    # the no-harm set: answers that meet every instruction, revised by the same critic and judged apart
    good = json.loads((out / "eval_good" / "summary.json").read_text())
    assert all(s["pairs"] == 3 for s in good["iterations"])
    assert report.count("# Win rate") == 2 and "revise_good" in report
    assert "the revisions use" not in captured.err  # tiny-random: the critic trained here revises
    assert (out / "eval" / "win_rate_curve.png").stat().st_size > 0
    # A rerun skips what is done: the critic is not trained again.
    stamp = (out / "critic" / "redline.json").stat().st_mtime
    assert main(argv) == 0
    assert (out / "critic" / "redline.json").stat().st_mtime == stamp


def test_the_shipped_set_is_found_in_a_checkout(tmp_path):
    assert (redline.demo.SHIPPED / "feedback.jsonl").exists() and (redline.demo.SHIPPED / "test.jsonl").exists()
    assert redline.demo.find_data(tmp_path) == redline.demo.SHIPPED
    assert not (tmp_path / "data").exists()  # nothing was built


def test_auto_takes_the_shipped_critic_with_the_embedded_model_only(tmp_path, monkeypatch):
    from redline.demo import DemoConfig, pick_critic

    shipped = tmp_path / "models" / "critic"
    shipped.mkdir(parents=True)
    (shipped / "redline.json").write_text(json.dumps({"kind": "critic", "base_model": "embedded"}))
    monkeypatch.setattr(redline.demo, "SHIPPED_CRITIC", shipped)
    trained = tmp_path / "out" / "critic"
    assert pick_critic(DemoConfig(), trained) == shipped
    assert pick_critic(DemoConfig(model="tiny-random"), trained) == trained  # the shipped one is for embedded
    assert pick_critic(DemoConfig(critic="train"), trained) == trained
    monkeypatch.setattr(redline.demo, "SHIPPED_CRITIC", tmp_path / "none")  # an installed wheel
    assert pick_critic(DemoConfig(), trained) == trained


def test_auto_gates_with_the_shipped_reward_model_with_the_embedded_model_only(tmp_path, monkeypatch):
    from redline import RedlineError
    from redline.demo import DemoConfig, pick_gate

    shipped = tmp_path / "models" / "reward"
    shipped.mkdir(parents=True)
    (shipped / "redline.json").write_text(json.dumps({"kind": "reward", "base_model": "embedded"}))
    monkeypatch.setattr(redline.demo, "SHIPPED_REWARD", shipped)
    assert pick_gate(DemoConfig()) == str(shipped)
    assert pick_gate(DemoConfig(model="tiny-random")) is None
    assert pick_gate(DemoConfig(gate="none")) is None
    assert pick_gate(DemoConfig(model="tiny-random", gate=str(shipped))) == str(shipped)
    monkeypatch.setattr(redline.demo, "SHIPPED_REWARD", tmp_path / "none")  # an installed wheel
    assert pick_gate(DemoConfig()) is None
    with pytest.raises(RedlineError, match="not a reward run folder"):
        pick_gate(DemoConfig(gate=str(tmp_path)))
    out = tmp_path / "demo"  # a bar with no gate to apply it is refused before any work
    assert main(["demo", "--model", "tiny-random", "--leave-above", "1", "--out", str(out)]) == 2
    assert not (out / "critic").exists() and not (out / "data").exists()


def test_the_demo_gate_leaves_what_the_reward_model_rates_high(tmp_path, capsys):
    from redline.judges.reward import RewardJudge
    from redline.records import read_jsonl_prefix

    data = redline.demo.SHIPPED
    rankings = tmp_path / "rankings.jsonl"
    rankings.write_text("\n".join(json.dumps({"prompt": f"Write about item {i}.", "responses": ["Fine.", "bad", "Ok."],
                                               "ranks": [1, 3, 2]}) for i in range(4)) + "\n")
    reward = tmp_path / "rm"
    assert main(["train", "reward", "--data", str(rankings), "--model", "tiny-random", "--out", str(reward),
                 "--max-steps", "1"]) == 0
    items = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()[:4]]
    scores = RewardJudge(str(reward)).score([(r["prompt"], r["response"]) for r in items])
    bar = sorted(scores)[1]  # three of the four at or above it
    out = tmp_path / "demo"
    assert main(["demo", "--model", "tiny-random", "--out", str(out), "--train-records", "8", "--test-items", "4",
                 "--good-items", "0", "--max-steps", "1", "--max-new-tokens", "8", "--gate", str(reward),
                 "--leave-above", repr(bar)]) == 0
    err = capsys.readouterr().err
    assert "behind the critic, the reward model" in err and "3 left alone by the reward model" in err
    rows = read_jsonl_prefix(out / "revise" / "iteration_1.jsonl")
    settings = json.loads((out / "revise" / "summary.json").read_text())["settings"]
    assert settings["stop"] == "best" and settings["judge"] == f"reward:{reward}?device=auto"
    assert [r["left"] for r in rows] == [s >= bar for s in scores] and sum(r["left"] for r in rows) == 3
    assert all(r["response"] == r["response_0"] and r["feedback"] == "" for r in rows if r["left"])


def test_a_critic_path_that_is_not_a_critic_is_refused_before_any_work(tmp_path):
    reward = tmp_path / "rm"
    reward.mkdir()
    (reward / "redline.json").write_text(json.dumps({"kind": "reward", "base_model": "embedded"}))
    out = tmp_path / "demo"
    assert main(["demo", "--model", "tiny-random", "--critic", str(reward), "--out", str(out)]) == 2
    assert not (out / "critic").exists() and not (out / "data").exists()
    # a sampling setting the engine would refuse only at the first revision, after the critic trained
    assert main(["demo", "--model", "tiny-random", "--no-repeat-ngram", "1", "--out", str(out)]) == 2
    assert not (out / "critic").exists() and not (out / "data").exists()


def test_a_critic_or_gate_path_that_is_missing_or_no_run_says_so(tmp_path):
    """A mistyped --critic or --gate path read 'its redline.json says kind None': there is no redline.json."""
    from redline import RedlineError
    from redline.demo import DemoConfig, pick_critic, pick_gate

    plain = tmp_path / "plain"
    plain.mkdir()
    for flag, pick in (("critic", lambda c: pick_critic(c, tmp_path / "trained")), ("gate", pick_gate)):
        with pytest.raises(RedlineError, match=rf"^--{flag} \S*missing: not a \w+ run folder \(no such folder\)"):
            pick(DemoConfig(**{flag: str(tmp_path / "missing")}))
        with pytest.raises(RedlineError, match=rf"\(no redline.json in it: not a redline run\)"):
            pick(DemoConfig(**{flag: str(plain)}))


def test_steps_whose_inputs_changed_since_out_was_made_start_over(tmp_path, capsys):
    """The demo's fingerprint holds 'auto', not the critic, reward model and data it chose: after a pull that ships
    new ones, the finished steps' old results were printed again. Now the steps that read a changed input go."""
    from redline.demo import start_over_where_changed

    data, out = tmp_path / "data", tmp_path / "demo"
    data.mkdir()
    for name in ("feedback.jsonl", "test.jsonl", "test_fixed.jsonl"):
        (data / name).write_text('{"prompt": "p", "response": "r"}\n')
    shipped = tmp_path / "critic"
    shipped.mkdir()
    (shipped / "adapter_config.json").write_text('{"r": 8}')
    trained = out / "critic"

    def made(*names):
        for name in names:
            (out / name).mkdir(parents=True, exist_ok=True)

    start_over_where_changed(out, shipped, trained, None, data)  # an OUT from before the record: kept as it is
    made("critic", "revise", "eval")
    start_over_where_changed(out, shipped, trained, None, data)  # nothing changed: every step kept
    assert all((out / n).is_dir() for n in ("critic", "revise", "eval")) and "changed" not in capsys.readouterr().err
    (shipped / "adapter_config.json").write_text('{"r": 16}')  # a pull brings another shipped critic
    start_over_where_changed(out, shipped, trained, None, data)
    assert "critic changed since" in capsys.readouterr().err
    assert not (out / "revise").exists() and not (out / "eval").exists() and (out / "critic").is_dir()
    # the critic trained here: its feedback records changed, so it trains again too
    start_over_where_changed(out, trained, trained, None, data)
    made("revise", "eval")
    (data / "feedback.jsonl").write_text('{"prompt": "p", "response": "other"}\n')
    start_over_where_changed(out, trained, trained, None, data)
    assert "feedback changed since" in capsys.readouterr().err
    assert not any((out / n).exists() for n in ("critic", "revise", "eval"))
    (out / "inputs.json").write_text('{"critic": ')  # torn by hand: one error naming it, not a JSONDecodeError
    with pytest.raises(RedlineError, match=r"inputs.json: not JSON .*rerun with --overwrite"):
        start_over_where_changed(out, trained, trained, None, data)
