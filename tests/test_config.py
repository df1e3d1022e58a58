"""One config dataclass per command (issue 18, item 7): every command takes --config in YAML or JSON,
flag types come from the annotations, required fields and ranges are checked by config.py, and the
resolved config a run writes beside its outputs repeats the run."""

import dataclasses
import json
from dataclasses import dataclass
import typing
from pathlib import Path

import pytest
import yaml

from redline import RedlineError
from redline.cli import build_parser, main
from redline.config import (FINGERPRINT, FOLDER_DIGEST, _base_type, _digest_folder, _sequence_item, claim_output, differences,
                            fingerprint, input_digest, named_path, settings_from_args, write_config)


def commands():
    from redline.cli import ServeConfig
    from redline.demo import DemoConfig
    from redline.evaluate import AgreementConfig, EvaluateConfig
    from redline.experiments.critic import CriticExperimentConfig
    from redline.improve.pit import ImproveConfig
    from redline.improve.revise import ReviseConfig
    from redline.improve.self_refine import RefineConfig
    from redline.formats import ImportConfig
    from redline.records import ValidateConfig
    from redline.respond import GenerateConfig
    from redline.simulate.build import BuildConfig, ScoreConfig
    from redline.stats import StatsConfig
    from redline.train.critic import CriticConfig
    from redline.train.dpo import DPOSettings
    from redline.train.gap_reward import GapRewardConfig
    from redline.train.pit import PITConfig
    from redline.train.ppo import PPOConfig
    from redline.train.reward import RewardConfig
    from redline.train.sft import DemonstrationConfig

    return [(["train", "sft"], DemonstrationConfig), (["train", "critic"], CriticConfig), (["train", "reward"], RewardConfig),
            (["train", "ppo"], PPOConfig), (["train", "dpo"], DPOSettings), (["train", "gap-reward"], GapRewardConfig), (["train", "pit"], PITConfig),
            (["revise"], ReviseConfig), (["improve"], ImproveConfig), (["refine"], RefineConfig),
            (["generate"], GenerateConfig), (["evaluate"], EvaluateConfig), (["evaluate", "agreement"], AgreementConfig), (["experiment", "critic"], CriticExperimentConfig),
            (["simulate", "build"], BuildConfig), (["demo"], DemoConfig), (["serve"], ServeConfig),
            (["data", "validate"], ValidateConfig), (["data", "stats"], StatsConfig), (["data", "import"], ImportConfig),
            (["simulate", "score"], ScoreConfig)]


NO_OUT = (["serve"], ["data", "validate"], ["data", "stats"], ["data", "import"], ["simulate", "score"])  # no --out


def other_value(f: dataclasses.Field, annotation):
    """A value of the field's type that is not its default, inside its declared range and choices."""
    kind, _ = _base_type(annotation)
    default = None if f.default is dataclasses.MISSING else f.default
    if f.metadata.get("choices"):
        return next(c for c in f.metadata["choices"] if c != default)
    if _sequence_item(kind) is not None:
        return ["one", "two"]
    if kind is bool:
        return not default
    if kind is int:
        low, high = f.metadata.get("min", 0), f.metadata.get("max", 10**6)
        return next(v for v in (low + 1, low, high) if v != default and low <= v <= high)
    if kind is float:
        low, high = f.metadata.get("min", 0), f.metadata.get("max", 10.0)
        return next(v for v in ((low + high) / 2, 0.25 * high, high) if v != default)
    if kind is Path:
        return "some/path"
    if f.metadata.get("list_of") is int:  # a comma-separated list of whole numbers (--sizes), each in range
        low = f.metadata.get("min", 0)
        return next(v for v in (f"{low + 1},{low + 2}", f"{low + 2},{low + 3}") if v != default)
    return f"value-of-{f.name}"


@pytest.mark.parametrize("command, cls", commands(), ids=lambda x: " ".join(x) if isinstance(x, list) else "")
def test_every_command_takes_a_yaml_config_and_its_resolved_config_round_trips(command, cls, tmp_path):
    hints = typing.get_type_hints(cls)
    # a field moot beside another (--eval-split beside --eval-data) stays at its default: the two are refused together
    values = {f.name: other_value(f, hints[f.name]) for f in dataclasses.fields(cls)
              if f.name != "out" and not f.metadata.get("unless")}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(values))
    out = [] if command in NO_OUT else ["--out", str(tmp_path / "out")]
    args = build_parser().parse_args([*command, "--config", str(path), *out])
    config = settings_from_args(cls, args)
    for name, value in values.items():
        got = getattr(config, name)
        assert (list(got) if isinstance(got, tuple) else str(got) if isinstance(got, Path) else got) == value, name

    # the resolved config a run writes beside its outputs gives the same config back, and flags override it
    saved = write_config(tmp_path / "resolved.json", config)
    again = settings_from_args(cls, build_parser().parse_args([*command, "--config", str(saved), *out]))
    assert dataclasses.asdict(again) == {**dataclasses.asdict(config), **({"out": again.out} if "out" in hints else {})}
    seed_flag = ["--seed", "12345"] if "seed" in hints else []
    if seed_flag:
        over = settings_from_args(cls, build_parser().parse_args([*command, "--config", str(saved), *seed_flag, *out]))
        assert over.seed == 12345


def test_a_config_file_with_a_bad_value_an_unknown_field_or_bad_yaml_is_one_line_naming_the_file(tmp_path, capsys):
    cases = {
        "bad.yaml": ("data: f.jsonl\nlora_r: lots\n", "bad.yaml: lora_r: expected an integer, got 'lots'"),
        "range.yaml": ("data: f.jsonl\nmax_steps: 0\n", "range.yaml: max_steps: must be at least 1, got 0"),
        "inf.yaml": ("data: f.jsonl\ncritique_weight: .inf\n", "inf.yaml: critique_weight: expected a finite number"),
        "nan.yaml": ("data: f.jsonl\nlearning_rate: nan\n", "nan.yaml: learning_rate: expected a finite number"),
        "unknown.yml": ("data: f.jsonl\nlearning_rat: 0.1\n", "unknown.yml: unknown field 'learning_rat'"),
        "broken.yaml": ("data: [f.jsonl\n", "broken.yaml:2: not valid YAML"),
        "list.json": ("[1, 2]", "list.json: a config file holds a mapping"),
        "twice.yaml": ("data: f.jsonl\nmodel: tiny-random\nlora_r: 4\nmodel: embedded\n",
                       "twice.yaml:4: not valid YAML: the field 'model' is given twice"),
        "twice.json": ('{"data": "f.jsonl", "lora_r": 4, "lora_r": 8}', "twice.json: the field 'lora_r' is given twice"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        assert main(["train", "critic", "--config", str(tmp_path / name), "--out", str(tmp_path / "o")]) == 2
        assert message in capsys.readouterr().err, name
    assert not (tmp_path / "o").exists()


def test_a_number_flag_refuses_inf_and_nan_which_would_make_every_loss_nan(tmp_path, capsys):
    for flag, value in (("--critique-weight", "inf"), ("--learning-rate", "nan"), ("--learning-rate", "Infinity")):
        with pytest.raises(SystemExit) as exit:
            main(["train", "critic", "--data", "f.jsonl", flag, value, "--out", str(tmp_path / "o")])
        assert exit.value.code == 2
        assert f"{flag}: expected a finite number" in capsys.readouterr().err, (flag, value)
    assert not (tmp_path / "o").exists()


def test_a_yaml_merge_key_is_not_a_field_given_twice(tmp_path):
    from redline.config import load_config_file

    (tmp_path / "m.yaml").write_text("base: &b {model: tiny-random, seed: 1}\n<<: *b\nseed: 3\n")
    assert load_config_file(tmp_path / "m.yaml") == {"base": {"model": "tiny-random", "seed": 1}, "model": "tiny-random",
                                                     "seed": 3}


def test_required_fields_are_checked_whichever_way_the_values_come(tmp_path, capsys):
    assert main(["train", "critic", "--out", str(tmp_path / "o")]) == 2
    assert "--data is required: feedback records" in capsys.readouterr().err
    (tmp_path / "c.yaml").write_text("critic: runs/critic\n")
    assert main(["revise", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "--input is required" in capsys.readouterr().err
    assert main(["evaluate", "--a", "x.jsonl", "--judge", "oracle"]) == 2
    assert "--out is required" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["train", "reward"], ["train", "gap-reward"]], ids=" ".join)
def test_eval_split_beside_eval_data_is_refused_however_the_two_are_given(command, tmp_path, capsys, monkeypatch):
    """--eval-split holds out a share of --data only when --eval-data is not given: given with it, it was ignored.
    Both given are refused before anything loads or is written, whether by flags, in a config file or in Python;
    a default in a run's resolved config is not given, and a flag of one replaces the file's choice of the other."""
    from redline.train.gap_reward import GapRewardConfig, train_gap_reward
    from redline.train.reward import RewardConfig, train_reward

    cls, train = {"reward": (RewardConfig, train_reward), "gap-reward": (GapRewardConfig, train_gap_reward)}[command[1]]
    monkeypatch.setattr("redline.models.load_reward_model", lambda *a, **k: pytest.fail("a model loaded"))
    data, held = str(tmp_path / "d.jsonl"), str(tmp_path / "h.jsonl")
    base = [*command, "--data", data, "--out", str(tmp_path / "o")]
    for extra in (["--eval-split", "0.1"], ["--eval-split", "0"]):  # even the default, given as a flag
        assert main([*base, "--eval-data", held, *extra]) == 2
        assert ("give --eval-data or --eval-split, not both (--eval-data on the command line; --eval-split on the "
                "command line): --eval-split is the share of prompts held out when --eval-data is not given"
                in capsys.readouterr().err)
    (tmp_path / "both.yaml").write_text(f"data: {data}\neval_data: {held}\neval_split: 0.2\n")
    assert main([*command, "--config", str(tmp_path / "both.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert f"(--eval-data in {tmp_path / 'both.yaml'}; --eval-split in {tmp_path / 'both.yaml'})" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(RedlineError, match=r"give --eval-data or --eval-split, not both \(--eval-data = '.*h.jsonl'; "
                                           r"--eval-split = 0.2\)"):
        train(cls(data=data, eval_data=held, eval_split=0.2), tmp_path / "py")

    parsed = lambda *flags: settings_from_args(cls, build_parser().parse_args([*command, *flags, "--out", "o"]))
    # a run's resolved config holds every field, eval_split at its default beside its eval_data: not given
    resolved = write_config(tmp_path / "held.json", cls(data=data, eval_data=held))
    assert (parsed("--config", str(resolved)).eval_data, parsed("--config", str(resolved)).eval_split) == (held, 0.1)
    # flags override the file: --eval-split replaces the file's --eval-data, and --eval-data the file's share
    assert (parsed("--config", str(resolved), "--eval-split", "0.3").eval_data,) == (None,)
    split = write_config(tmp_path / "split.json", cls(data=data, eval_split=0.3))
    again = parsed("--config", str(split), "--eval-data", held)
    assert (again.eval_data, again.eval_split) == (held, 0.1)


def test_yaml_numbers_that_pyyaml_reads_as_strings_still_parse(tmp_path):
    from redline.train.critic import CriticConfig

    (tmp_path / "c.yaml").write_text("data: f.jsonl\nlearning_rate: 1e-3\n")  # YAML 1.1: '1e-3' is a string
    args = build_parser().parse_args(["train", "critic", "--config", str(tmp_path / "c.yaml"), "--out", "o"])
    assert settings_from_args(CriticConfig, args).learning_rate == pytest.approx(1e-3)


def test_a_run_writes_its_resolved_config_and_fingerprint_beside_its_outputs(jsonl, tmp_path):
    prompts = jsonl([{"id": "a", "prompt": "p"}])
    out = tmp_path / "folder"
    (tmp_path / "g.yaml").write_text(f"model: tiny-random\nprompts: {prompts}\nmax_new_tokens: 2\n")
    assert main(["generate", "--config", str(tmp_path / "g.yaml"), "--out", str(out / "responses")]) == 0
    resolved = json.loads((out / "responses.config.json").read_text())
    assert resolved["max_new_tokens"] == 2 and resolved["model"] == "tiny-random"
    stamp = json.loads((out / "responses.fingerprint.json").read_text())
    assert stamp["command"] == "generate" and stamp["inputs"]["prompts"]["digest"].startswith("sha256:")
    assert "threads" in stamp["free"] and "limit" in stamp["free"]
    # repeating the run from its own config resumes it (nothing new to write)
    before = (out / "responses").read_text()
    assert main(["generate", "--config", str(out / "responses.config.json"), "--out", str(out / "responses")]) == 0
    assert (out / "responses").read_text() == before


def test_a_setting_added_since_a_run_began_resumes_at_its_default_and_refuses_another_value(jsonl, tmp_path, capsys):
    prompts = jsonl([{"id": "a", "prompt": "p"}])
    out = tmp_path / "responses.jsonl"
    argv = ["generate", "--model", "tiny-random", "--prompts", str(prompts), "--max-new-tokens", "2", "--out", str(out)]
    assert main(argv) == 0
    stamp = out.with_name(out.name + ".fingerprint.json")
    older = json.loads(stamp.read_text())
    assert older["settings"]["top_p"] == older["defaults"]["top_p"] == 1.0
    del older["settings"]["top_p"], older["defaults"]  # as an older redline, before --top-p existed, wrote it
    stamp.write_text(json.dumps(older))
    assert main(argv) == 0  # --top-p at its default: what the run did before the setting existed
    stamp.write_text(json.dumps(older))
    assert main(argv + ["--top-p", "0.9"]) == 2
    assert "--top-p: 0.9 here, None in the run" in capsys.readouterr().err


# ----------------------------------------------------------------------------- data and simulate score


PAIRS = [{"prompt": f"p{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(3)]


def yaml_file(path: Path, values: dict) -> str:
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_data_validate_and_stats_take_their_file_and_kind_from_yaml_and_flags_override_it(jsonl, tmp_path, capsys):
    data = jsonl(PAIRS)
    config = yaml_file(tmp_path / "v.yaml", {"file": str(data), "kind": "preference", "limit": 2})
    assert main(["data", "validate", "--config", config]) == 0
    assert capsys.readouterr().out.strip() == f"{data}: 2 valid preference records"
    assert main(["data", "validate", "--config", config, "--limit", "3"]) == 0  # a flag over the file
    assert "3 valid preference records" in capsys.readouterr().out
    elsewhere = yaml_file(tmp_path / "w.yaml", {"file": str(tmp_path / "none.jsonl"), "kind": "demonstration"})
    assert main(["data", "validate", "--config", elsewhere, str(data), "--kind", "preference"]) == 0  # the positional too
    assert f"{data}: 3 valid preference records" in capsys.readouterr().out

    stats = yaml_file(tmp_path / "s.yaml", {"file": str(data), "kind": "preference", "limit": 2, "tokenizer": "tiny-random"})
    assert main(["data", "stats", "--config", stats]) == 0
    assert json.loads(capsys.readouterr().out)["records"] == 2
    assert main(["data", "stats", "--config", stats, "--limit", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["records"] == 1
    assert not list(tmp_path.glob("*config.json"))  # these two write nothing


def test_data_import_from_yaml_writes_its_resolved_config_beside_the_records_and_that_config_repeats_it(jsonl, tmp_path, capsys):
    source = jsonl(PAIRS, "trl.jsonl")
    out = tmp_path / "imported" / "prefs.jsonl"
    config = yaml_file(tmp_path / "i.yaml", {"format": "trl", "input": str(source), "output": str(out), "limit": 2})
    assert main(["data", "import", "--config", config]) == 0
    assert f"wrote 2 preference records to {out}" in capsys.readouterr().out
    resolved = json.loads((tmp_path / "imported" / "prefs.jsonl.config.json").read_text())
    assert resolved == {"format": "trl", "input": str(source), "output": str(out), "split": None, "limit": 2,
                        "skip_invalid": False}
    out.unlink()
    assert main(["data", "import", "--config", str(tmp_path / "imported" / "prefs.jsonl.config.json")]) == 0
    assert len(out.read_text().splitlines()) == 2  # the same import again, from the config it wrote
    # flags and positionals override the file: --from, the output, the limit
    other = tmp_path / "other.jsonl"
    assert main(["data", "import", "--config", config, "--from", "trl", str(source), str(other), "--limit", "3"]) == 0
    assert len(other.read_text().splitlines()) == 3
    assert json.loads((tmp_path / "other.jsonl.config.json").read_text())["limit"] == 3
    assert main(["data", "import", "--from", "trl", str(source), str(other)]) == 0  # the old command line still works


def test_simulate_score_takes_its_input_and_field_from_yaml(tmp_path, capsys):
    meta = {"instructions": [{"type": "bullets_exact", "n": 2}]}
    records = tmp_path / "scored.jsonl"
    records.write_text("".join(json.dumps({"prompt": "p", "response": r, "revision": "- x\n- y", "meta": meta}) + "\n"
                               for r in ("- a\n- b", "- a")))
    config = yaml_file(tmp_path / "score.yaml", {"input": str(records), "field": "revision"})
    assert main(["simulate", "score", "--config", config]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["n"], result["all_met"]) == (2, 1.0)  # both revisions have the two bullets asked for
    assert main(["simulate", "score", "--config", config, "--field", "response"]) == 0  # the flag wins
    assert json.loads(capsys.readouterr().out)["all_met"] == 0.5
    assert main(["simulate", "score", "--config", config, "--field", "response", "--limit", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["n"], result["all_met"]) == (1, 1.0)


@pytest.mark.parametrize("command, values, message", [
    (["data", "validate"], {"file": "f.jsonl"}, "--kind is required: the records' kind"),
    (["data", "stats"], {"kind": "ranking"}, "FILE is required: JSONL, Parquet"),
    (["data", "import"], {"format": "trl", "input": "in.jsonl"}, "OUTPUT is required: JSONL or Parquet output"),
    (["data", "import"], {"input": "in.jsonl", "output": "o.jsonl"}, "--format is required: the input format"),
    (["simulate", "score"], {"field": "revision"}, "--input is required: record file"),
])
def test_a_required_field_missing_from_the_config_file_is_one_line_naming_it(command, values, message, tmp_path, capsys,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = yaml_file(tmp_path / "c.yaml", values)
    assert main([*command, "--config", config]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"redline: error: {message}") and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]  # nothing written


def test_a_model_card_edited_after_a_run_began_does_not_stop_it_resuming(tmp_path, capsys):
    from dataclasses import dataclass

    from redline import RedlineError
    from redline.config import FINGERPRINT, FOLDER_DIGEST, _digest_folder, claim_output

    @dataclass
    class Job:
        model: str = ""
        steps: int = 1

    model = tmp_path / "model"
    model.mkdir()
    (model / "adapter_model.safetensors").write_bytes(b"w" * 64)
    (model / "README.md").write_text("card\n")
    out = tmp_path / "run"
    claim_output(out, Job(str(model)), command="job")
    (out / "result.txt").write_text("half done")  # a run with results: the next claim is a resume
    (model / "README.md").write_text("card, with the figures measured since\n")
    claim_output(out, Job(str(model)), command="job")  # resumes
    (model / "adapter_model.safetensors").write_bytes(b"w" * 65)  # the weights themselves changed: refused
    with pytest.raises(RedlineError, match="--model: .* is not what the run read"):
        claim_output(out, Job(str(model)), command="job")
    # A run begun under the older digest (which counted the card) resumes while the folder is as it read it,
    # and from then on carries the new form.
    stamp = out / FINGERPRINT
    older = json.loads(stamp.read_text())
    older["inputs"]["model"]["digest"] = _digest_folder(model, form=1)
    stamp.write_text(json.dumps(older))
    claim_output(out, Job(str(model)), command="job")
    assert json.loads(stamp.read_text())["inputs"]["model"]["digest"].startswith(FOLDER_DIGEST)
    older["inputs"]["model"]["digest"] = _digest_folder(model, form=1)
    stamp.write_text(json.dumps(older))
    (model / "README.md").write_text("card edited again\n")  # the older digest cannot leave the card out
    with pytest.raises(RedlineError, match="not what the run read"):
        claim_output(out, Job(str(model)), command="job")


def test_a_data_folder_edited_in_place_is_another_input_even_at_its_size(tmp_path):
    """`experiment critic --data DIR` reads DIR/test.jsonl: an answer edited to one of the same length is other data
    (the second form of the folder digest read only JSON files' content). A run that recorded it resumes."""
    from dataclasses import dataclass

    from redline import RedlineError
    from redline.config import FINGERPRINT, _digest_folder, claim_output

    @dataclass
    class Job:
        data: str = ""
        steps: int = 1

    data = tmp_path / "data"
    data.mkdir()
    (data / "test.jsonl").write_text('{"id": "1", "prompt": "p", "response": "yes"}\n')
    (data / "adapter_model.safetensors").write_bytes(b"w" * 64)
    out = tmp_path / "run"
    claim_output(out, Job(str(data)), command="job")
    (out / "result.txt").write_text("half done")
    stamp = out / FINGERPRINT
    recorded = json.loads(stamp.read_text())
    older = {**recorded, "inputs": {"data": {**recorded["inputs"]["data"], "digest": _digest_folder(data, form=2)}}}
    stamp.write_text(json.dumps(older))
    claim_output(out, Job(str(data)), command="job")  # a run that recorded the second form resumes on the same folder
    (data / "test.jsonl").write_text('{"id": "1", "prompt": "p", "response": "no!"}\n')  # the same size
    with pytest.raises(RedlineError, match="--data: .* is not what the run read"):
        claim_output(out, Job(str(data)), command="job")


def test_a_reward_model_judge_retrained_in_place_is_another_judge(tmp_path, monkeypatch):
    """--judge reward:RUN names a model: a run resumed after RUN was retrained would mix two judges' verdicts."""
    from dataclasses import dataclass

    from redline import RedlineError
    from redline.config import FINGERPRINT, claim_output, fingerprint

    @dataclass
    class Job:
        judge: str = ""
        steps: int = 1

    monkeypatch.chdir(tmp_path)
    Path("rm").mkdir()
    Path("rm/model.safetensors").write_bytes(b"w" * 64)
    out = tmp_path / "run"
    claim_output(out, Job("reward:rm?device=cpu"), command="job")
    (out / "result.txt").write_text("half done")
    claim_output(out, Job("reward:rm?device=cuda"), command="job")  # the same model on another device: resumes
    Path("rm/model.safetensors").write_bytes(b"w" * 65)  # retrained in place
    with pytest.raises(RedlineError, match="--judge: reward:rm\\?device=cuda is not what the run read"):
        claim_output(out, Job("reward:rm?device=cuda"), command="job")
    # a run begun when the spec was recorded as text resumes under the same spec, and is refused another
    stamp = out / FINGERPRINT
    older = json.loads(stamp.read_text())
    del older["inputs"]["judge"]
    older["settings"]["judge"] = "reward:rm?device=cuda"
    stamp.write_text(json.dumps(older))
    claim_output(out, Job("reward:rm?device=cuda"), command="job")
    stamp.write_text(json.dumps(older))
    with pytest.raises(RedlineError, match="--judge: 'reward:rm' here, 'reward:rm\\?device=cuda' in the run"):
        claim_output(out, Job("reward:rm"), command="job")
    hub = fingerprint(Job("reward:org/hub-model"), "job")  # not on this machine: compared as text
    assert hub["settings"]["judge"] == "reward:org/hub-model" and "judge" not in hub["inputs"]


def test_a_reward_judges_options_that_change_its_verdicts_are_part_of_the_fingerprint(tmp_path, monkeypatch):
    """`--judge reward:rm?margin=1` (or dtype, max_length) is another judge than `reward:rm`: a revise run resumed
    under the other mixed two judges' stop decisions, as the model's digest left the options out."""
    from dataclasses import dataclass

    from redline import RedlineError
    from redline.config import claim_output

    @dataclass
    class Job:
        judge: str = ""
        judges: str = ""

    monkeypatch.chdir(tmp_path)
    Path("rm").mkdir()
    Path("rm/model.safetensors").write_bytes(b"w" * 64)
    out = tmp_path / "run"
    claim_output(out, Job("reward:rm?margin=1&max_length=64", "oracle,reward:rm?margin=1"), command="job")
    (out / "result.txt").write_text("half done")
    # the same judge, spelt another way (order, 1.0, the path, a free option): resumes
    claim_output(out, Job(f"reward:{tmp_path}/rm?max_length=64&margin=1.0&device=cpu", "oracle,reward:./rm?margin=1"),
                 command="job")
    for judge, judges in (("reward:rm?max_length=64", "oracle,reward:rm?margin=1"),
                          ("reward:rm?margin=1&max_length=64&dtype=bfloat16", "oracle,reward:rm?margin=1"),
                          ("reward:rm?margin=1&max_length=64", "oracle,reward:rm")):
        with pytest.raises(RedlineError, match="other settings or inputs: --judges?: "):
            claim_output(out, Job(judge, judges), command="job")


def test_a_judges_options_that_change_no_verdict_may_change_on_resume(tmp_path):
    """An LLM judge rate-limited at concurrency=8 resumed at 2 (or with a longer timeout, another cache) was refused
    as a run with other settings, though its judgments file (which keeps the judge's name) takes it; the options
    that change verdicts (temperature, max_tokens, a reward model's margin) are still compared."""
    from dataclasses import dataclass

    from redline import RedlineError
    from redline.config import claim_output

    @dataclass
    class Job:
        judge: str = ""
        judges: str = ""

    url = "openai:gpt@http://127.0.0.1:9/v1"
    out = tmp_path / "run"
    claim_output(out, Job(f"{url}?concurrency=8", f"oracle,{url}"), command="job")
    (out / "result.txt").write_text("half done")
    claim_output(out, Job(f"{url}?timeout=120&concurrency=2&cache=off", f"oracle, {url}?retries=9"), command="job")
    for judge, judges in ((f"{url}?temperature=1", f"oracle,{url}"), (url, f"oracle,{url}?max_tokens=64"),
                          (url, f"oracle:noisy,{url}")):
        with pytest.raises(RedlineError, match="other settings or inputs: --judges?: "):
            claim_output(out, Job(judge, judges), command="job")



def test_a_judge_option_given_at_its_default_is_the_same_judge_on_resume(tmp_path):
    """`--judge openai:gpt@URL?temperature=0` resumed a run begun as `--judge openai:gpt@URL` (and `oracle:noisy?seed=0`
    one of `oracle:noisy`): parse_judge gives the same judge, but the spec's text was compared, so the rerun was
    refused as a run with other settings. The judge as parsed is compared; one that differs is still refused."""
    from dataclasses import dataclass

    from redline import RedlineError
    from redline.config import claim_output

    @dataclass
    class Job:
        judge: str = ""
        judges: str = ""

    url = "openai:gpt@http://127.0.0.1:9/v1"
    out = tmp_path / "run"
    claim_output(out, Job(url, "oracle:noisy,reward:org/hub-rm"), command="job")
    (out / "result.txt").write_text("half done")
    claim_output(out, Job(f"{url}/?temperature=0&max_tokens=32",
                          "oracle:noisy?seed=0, reward:org/hub-rm?margin=0&dtype=float32"), command="job")
    claim_output(out, Job("openai:gpt@http://127.0.0.1:9/v1?key_env=NOT_SET_HERE", "oracle:noisy,reward:org/hub-rm"),
                 command="job")  # a key named but not set here: a free option, no error from the comparison
    for judge, judges in ((f"{url}?temperature=0.5", "oracle:noisy,reward:org/hub-rm"),
                          (url, "oracle:noisy?seed=1,reward:org/hub-rm"),
                          (url, "oracle:noisy,reward:org/hub-rm?margin=0.5")):
        with pytest.raises(RedlineError, match="other settings or inputs: --judges?: "):
            claim_output(out, Job(judge, judges), command="job")
    from redline.judges import judge_name, parse_judge

    for spec in (f"{url}/?temperature=0.5&max_tokens=64&retries=2", "oracle:noisy?noise=0.5", "reward:rm?margin=0"):
        overrides = {"api_key": "-", "cache": "off"} if spec.startswith("openai:") else {}
        assert judge_name(spec) == parse_judge(spec, **overrides).name


# ----------------------------------------------------------------------------- what a fingerprint reads


@dataclass
class Job:
    """A command's config as claim_output sees it: inputs by field, one setting."""

    data: str = ""
    model: str = ""
    judges: str = ""
    steps: int = 1


def run_folder(path: Path, date: str = "2026-01-01", threads: int = 2) -> Path:
    """A finished training run as a reader of its model finds it, with what the run writes about itself."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.safetensors").write_bytes(b"w" * 64)
    (path / "redline.json").write_text(json.dumps({"kind": "sft", "date": date, "command": f"redline train --threads {threads}",
                                                   "metrics": {"final_loss": 1.5}}, indent=2))
    (path / "train_config.json").write_text(json.dumps({"threads": threads}))
    (path / "fingerprint.json").write_text(json.dumps({"free": ["threads"], "given": f"./{date}"}))
    (path / "train_log.jsonl").write_text(f'{{"loss": 1.5, "date": "{date}"}}\n')
    (path / "training_curve.png").write_bytes(date.encode())
    return path


def test_a_data_folder_rerun_with_free_settings_keeps_its_digest(tmp_path, monkeypatch):
    """`simulate build` writes its config.json into the data folder: a rerun that built nothing new under another
    --device, --no-progress or --out spelling rewrote it, and every run that read the folder (`experiment critic
    --data`) refused to resume as if the data had changed. Its settings still count; a model's config.json whole."""
    from redline.config import input_digest
    from redline.simulate.build import BuildConfig

    monkeypatch.chdir(tmp_path)
    data = tmp_path / "w"
    claim_output(data, BuildConfig(out=Path("w"), responder="template", prompts=4), command="simulate build")
    (data / "test.jsonl").write_text('{"id": "1", "prompt": "p", "response": "r"}\n')
    digest = input_digest("w")
    claim_output(data, BuildConfig(out=data, responder="template", prompts=4, device="cpu", progress=False),
                 command="simulate build")
    assert input_digest("w") == digest and digest.startswith("folder-sha256/5:")
    claim_output(data, BuildConfig(out=data, responder="template", prompts=5), command="simulate build", overwrite=True)
    (data / "test.jsonl").write_text('{"id": "1", "prompt": "p", "response": "r"}\n')  # the same data, other settings
    assert input_digest("w") not in (digest, None)

    model = run_folder(tmp_path / "model")  # its fingerprint.json beside a model's config.json: read whole
    (model / "config.json").write_text('{"hidden_size": 64}')
    before = input_digest(str(model))
    (model / "config.json").write_text('{"hidden_size": 65}')
    assert before.startswith(FOLDER_DIGEST) and input_digest(str(model)) != before


def test_overwrite_refuses_an_output_that_is_or_holds_the_runs_own_input(jsonl, tmp_path, capsys):
    """`generate --prompts p.jsonl --out p.jsonl --overwrite` removed p.jsonl, then failed to read it. An OUT that
    is an input, or a folder holding one, is refused before anything is refused or removed, naming flag and path."""
    prompts = jsonl([{"id": "a", "prompt": "p"}], "p.jsonl")
    before = prompts.read_text()
    assert main(["generate", "--model", "tiny-random", "--prompts", str(prompts), "--out", str(prompts), "--overwrite"]) == 2
    assert f"--out {prompts} is the run's input --prompts {prompts}: --overwrite would remove it" in capsys.readouterr().err
    assert prompts.read_text() == before

    out = tmp_path / "run"
    claim_output(out, Job(data=str(jsonl([{"id": "a"}], "d.jsonl"))), command="job")
    (out / "result.txt").write_text("done")
    inside = jsonl([{"id": "b"}], "run/d.jsonl")  # the input now lies inside OUT
    for overwrite in (True, False):
        with pytest.raises(RedlineError, match=f"--out {out} holds the run's input --data {inside}"):
            claim_output(out, Job(data=str(inside)), command="job", overwrite=overwrite)
    assert inside.is_file() and (out / "result.txt").is_file()
    with pytest.raises(RedlineError, match="holds the run's input --judges reward:"):  # one of a list of inputs
        claim_output(tmp_path, Job(judges=f"oracle,reward:{out}"), command="job", overwrite=True)
    assert (out / "result.txt").is_file()


def test_a_noop_rerun_of_an_upstream_run_keeps_its_digest(tmp_path):
    """A rerun rewrites the run's notes about itself (fingerprint.json and train_config.json with the free --threads
    and the path as typed, train_log.jsonl, training_curve.png, the card's date and command): the runs that read it
    must still resume. What the card says of the model, and the model, still count."""
    upstream = run_folder(tmp_path / "up")
    digest = input_digest(str(upstream))
    run_folder(upstream, date="2026-02-02", threads=1)
    assert input_digest(str(upstream)) == digest
    card = json.loads((upstream / "redline.json").read_text())
    (upstream / "redline.json").write_text(json.dumps(card, sort_keys=True))  # rewritten in another layout: the same
    assert input_digest(str(upstream)) == digest
    (upstream / "redline.json").write_text(json.dumps({**card, "metrics": {"final_loss": 2.5}}))
    assert input_digest(str(upstream)) != digest

    # claiming the finished run again, with another --threads and the data spelled otherwise, leaves its digest
    from redline.train.sft import DemonstrationConfig

    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "p", "response": "r"}\n')
    run = run_folder(tmp_path / "sft")
    (run / FINGERPRINT).unlink()  # the first claim writes the run's own
    (run / "train_config.json").unlink()
    claim = dict(command="train sft", config_name="train_config.json")
    claim_output(run, DemonstrationConfig(model="tiny-random", data=str(data), max_steps=2, threads=2), **claim)
    digest = input_digest(str(run))
    claim_output(run, DemonstrationConfig(model="tiny-random", data=f"{tmp_path}/./d.jsonl", max_steps=2, threads=1), **claim)
    assert input_digest(str(run)) == digest


def test_a_run_that_recorded_the_third_form_resumes_on_the_unchanged_folder(tmp_path):
    """Runs begun before the fourth form recorded "folder-sha256/3:" (bookkeeping counted): they resume while the
    folder they read is as it was, and from then on carry the fourth form; a rewritten fingerprint.json is a change
    the third form cannot leave out."""
    model = run_folder(tmp_path / "model")
    out = tmp_path / "run"
    claim_output(out, Job(model=str(model)), command="job")
    (out / "result.txt").write_text("half done")
    stamp = out / FINGERPRINT
    older = json.loads(stamp.read_text())
    older["inputs"]["model"]["digest"] = _digest_folder(model, form=3)
    assert older["inputs"]["model"]["digest"].startswith("folder-sha256/3:")
    stamp.write_text(json.dumps(older))
    claim_output(out, Job(model=str(model)), command="job")
    assert json.loads(stamp.read_text())["inputs"]["model"]["digest"].startswith(FOLDER_DIGEST)
    stamp.write_text(json.dumps(older))
    run_folder(model, threads=1)
    with pytest.raises(RedlineError, match="--model: .* is not what the run read"):
        claim_output(out, Job(model=str(model)), command="job")


def test_weights_replaced_by_others_of_the_same_size_are_another_input(tmp_path, monkeypatch):
    """Weights (and any file over READ_WHOLE) are known by a sample of their bytes, not only name and size."""
    import redline.config

    model = tmp_path / "model"
    model.mkdir()
    weights = model / "model.safetensors"
    size = (3 << 20) + 12345
    weights.write_bytes(b"a" * size)
    digest = input_digest(str(model))
    weights.write_bytes(b"b" * size)  # a retrain: every tensor's bytes change
    assert input_digest(str(model)) != digest
    middle = bytearray(weights.read_bytes())
    at = size * 8 // 17 + 100  # in the eighth of the sixteen blocks between the two ends
    middle[at: at + 8] = b"12345678"
    digest = input_digest(str(model))
    weights.write_bytes(bytes(middle))
    assert input_digest(str(model)) != digest

    monkeypatch.setattr(redline.config, "READ_WHOLE", 1024)
    big = model / "corpus.txt"
    big.write_bytes(b"x" * 4096)
    digest = input_digest(str(model))
    big.write_bytes(b"y" * 4096)
    assert input_digest(str(model)) != digest


def test_a_data_folder_with_a_split_is_digested_and_its_split_compared(tmp_path, monkeypatch):
    """`--data FOLDER:split` (records.split_source) names the folder: its content is compared, and the split."""
    monkeypatch.chdir(tmp_path)
    Path("hf/train").mkdir(parents=True)
    Path("hf/train/data.arrow").write_bytes(b"rows")
    first = fingerprint(Job(data="hf:train"), "job")
    assert first["inputs"]["data"]["digest"].startswith(FOLDER_DIGEST) and first["inputs"]["data"]["split"] == "train"
    assert differences(first, fingerprint(Job(data="./hf:train"), "job")) == []
    assert differences(first, fingerprint(Job(data="hf:test"), "job")) == ["--data: 'hf:test' here, 'hf:train' in the run"]
    Path("hf/train/data.arrow").write_bytes(b"other rows")
    assert differences(first, fingerprint(Job(data="hf:train"), "job")) == [
        "--data: hf:train is not what the run read (hf:train, other content)"]
    assert fingerprint(Job(data="gone:train"), "job")["settings"]["data"] == "gone:train"  # no such folder: text


def test_the_built_in_model_names_are_never_a_folder_of_that_name(tmp_path, monkeypatch):
    """models.resolve never reads a folder called tiny-random or embedded: one in the working folder is not the input."""
    monkeypatch.chdir(tmp_path)
    for name in ("tiny-random", "embedded"):
        Path(name).mkdir()
        Path(name, "model.safetensors").write_bytes(b"w")
        stamp = fingerprint(Job(model=name), "job")
        assert named_path(name) is None and stamp["settings"]["model"] == name and "model" not in stamp["inputs"]
        assert "model" in fingerprint(Job(model=f"./{name}"), "job")["inputs"]  # the folder, spelled as one


def test_a_judge_spec_recorded_in_an_older_form_is_compared_on_its_model(tmp_path, monkeypatch):
    """An older-form digest is recomputed on the folder the value names: for `reward:rm`, rm (not `reward:rm`)."""
    monkeypatch.chdir(tmp_path)
    run_folder(Path("rm"))
    out = tmp_path / "run"
    claim_output(out, Job(judges="reward:rm"), command="job")
    (out / "result.txt").write_text("half done")
    stamp = out / FINGERPRINT
    older = json.loads(stamp.read_text())
    older["inputs"]["judges"]["digest"] = _digest_folder(Path("rm"), form=2)
    stamp.write_text(json.dumps(older))
    claim_output(out, Job(judges="reward:rm"), command="job")  # resumes


def test_a_list_of_inputs_is_digested_item_by_item(tmp_path, monkeypatch):
    """`--judges reward:rm,oracle`, `--responses a.jsonl,b.jsonl`: each item that names something here is compared by
    content, the others as text, and the difference names the item. A single path is recorded as before."""
    monkeypatch.chdir(tmp_path)
    run_folder(Path("rm"))
    Path("a.jsonl").write_text("a\n")
    Path("b.jsonl").write_text("b\n")
    out = tmp_path / "run"
    claim_output(out, Job(data="a.jsonl,b.jsonl", judges="reward:rm,oracle"), command="job")
    (out / "result.txt").write_text("half done")
    claim_output(out, Job(data=f"{tmp_path}/a.jsonl, b.jsonl", judges="reward:rm,oracle"), command="job")  # resumes
    Path("rm/model.safetensors").write_bytes(b"v" * 64)  # retrained in place
    Path("b.jsonl").write_text("c\n")
    with pytest.raises(RedlineError) as refused:
        claim_output(out, Job(data="a.jsonl,b.jsonl", judges="reward:rm,oracle"), command="job")
    assert "--data: b.jsonl is not what the run read (of a.jsonl,b.jsonl)" in str(refused.value)
    assert "--judges: reward:rm is not what the run read (of reward:rm,oracle)" in str(refused.value)
    with pytest.raises(RedlineError, match=r"--judges: reward:rm, scripted are not what the run read \(of reward:rm,scr"):
        claim_output(out, Job(data="a.jsonl,b.jsonl", judges="reward:rm,scripted"), command="job")
    with pytest.raises(RedlineError, match="--data: 'a.jsonl' here, '.*a.jsonl, b.jsonl' in the run"):
        claim_output(out, Job(data="a.jsonl", judges="reward:rm,oracle"), command="job")

    # a run that recorded the list as text (before lists were digested) resumes under the same text
    stamp = out / FINGERPRINT
    older = json.loads(stamp.read_text())
    del older["inputs"]["judges"]
    older["settings"]["judges"] = "reward:rm,oracle"
    stamp.write_text(json.dumps(older))
    Path("b.jsonl").write_text("b\n")
    claim_output(out, Job(data="a.jsonl,b.jsonl", judges="reward:rm,oracle"), command="job")

    single = fingerprint(Job(data="a.jsonl"), "job")["inputs"]["data"]
    assert single == {"path": str(tmp_path / "a.jsonl"), "digest": input_digest("a.jsonl"), "given": "a.jsonl"}
    Path("x,y.jsonl").write_text("xy\n")  # a file whose name holds a comma is one input
    assert set(fingerprint(Job(data="x,y.jsonl"), "job")["inputs"]["data"]) == {"path", "digest", "given"}


def test_a_config_built_in_python_is_held_to_its_fields_ranges_and_choices(tmp_path):
    """Flags and config files were checked as they were read; a config built in Python was not: ImproveConfig with
    max_new_tokens=0 gave every item a one-token budget, and every trainer took a learning rate of nan."""
    import math

    from redline.config import check_values
    from redline.improve.loop import run_method
    from redline.improve.pit import ImproveConfig
    from redline.train.sft import DemonstrationConfig, train_demonstrations

    with pytest.raises(RedlineError, match="--max-new-tokens must be at least 1, got 0"):  # revise, improve, refine
        run_method(ImproveConfig(model="tiny-random", input=str(tmp_path / "r.jsonl"), max_new_tokens=0), "tiny-random",
                   lambda engine: None, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(RedlineError, match="--learning-rate must be .*got nan"):
        train_demonstrations(DemonstrationConfig(model="tiny-random", data="d.jsonl", learning_rate=math.nan),
                             tmp_path / "sft")
    with pytest.raises(RedlineError, match="--stop: 'never' is not one of"):
        check_values(ImproveConfig(model="tiny-random", input="r.jsonl", stop="never"))
    check_values(ImproveConfig(model="tiny-random", input="r.jsonl"))  # the defaults pass


def test_a_help_text_that_names_its_default_is_not_followed_by_another():
    # "--types ... (default: all) (default: None)": argparse's suffix contradicted the help's own default.
    import argparse

    from redline.config import add_settings_arguments
    from redline.simulate.build import BuildConfig

    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, BuildConfig)
    helps = {a.dest: a.help for a in parser._actions}
    assert helps["types"].endswith("(default: all)") and helps["types"].count("default") == 1
    assert helps["policies"].count("(default:") == 1
    assert helps["prompts"].endswith("(default: 600)")  # a help that does not name its default gets the field's


def seeded_commands():
    from redline.simulate.rank import RankConfig

    return [(command, cls) for command, cls in [*commands(), (["simulate", "rank"], RankConfig)]
            if "seed" in {f.name for f in dataclasses.fields(cls)}]


@pytest.mark.parametrize("command, cls", seeded_commands(), ids=lambda x: " ".join(x) if isinstance(x, list) else "")
def test_every_seed_flag_takes_the_same_range_and_refuses_the_rest_at_parse_time(command, cls, tmp_path, capsys):
    # A seed outside numpy's 0..2**32-1 failed once the model had loaded ('Seed must be between 0 and 2**32 - 1',
    # transformers.set_seed in every trainer), or, in evaluate, once every pair was judged ('expected non-negative
    # integer'), each naming no flag; generate took -1 and 2**40. One range, refused naming --seed, everywhere.
    for value in ("-1", str(2**32)):
        with pytest.raises(SystemExit) as exit:
            build_parser().parse_args([*command, "--seed", value])
        assert exit.value.code == 2
        assert "argument --seed: must be" in capsys.readouterr().err, value
    out = [] if command in NO_OUT else ["--out", str(tmp_path / "o")]
    (tmp_path / "c.json").write_text(json.dumps({"seed": -1}))
    with pytest.raises(RedlineError, match="seed: must be at least 0"):
        settings_from_args(cls, build_parser().parse_args([*command, "--config", str(tmp_path / "c.json"), *out]))
    assert build_parser().parse_args([*command, "--seed", str(2**32 - 1), *out]).seed == 2**32 - 1


def test_a_switch_says_which_of_its_two_flags_is_the_default():
    # `--lora` and `--no-lora`, `--progress` and `--no-progress`: neither said which one a run gets unless given.
    import argparse

    from redline.config import add_settings_arguments
    from redline.train.ppo import PPOConfig

    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, PPOConfig)
    helps = {a.option_strings[0]: a.help for a in parser._actions if a.option_strings}
    assert helps["--lora"].endswith("(default)") and "(default" not in helps["--no-lora"]
    assert helps["--no-adaptive-kl"].endswith("(default)") and "(default" not in helps["--adaptive-kl"]
    assert sum("(default)" in helps[f] for f in ("--whiten-advantages", "--no-whiten-advantages")) == 1


def test_a_flag_that_several_commands_share_takes_the_same_range_in_each():
    # `train reward --max-length 0` loaded the model, then found no comparison that fits, where every other trainer
    # refuses it at parse time; `train ppo --batch-size 0` or `--max-new-tokens 0` was refused only once torch had
    # loaded, `generate`'s at parse time. A flag several commands take is held to one range.
    from redline.simulate.rank import RankConfig

    ranges: dict[str, dict[tuple, list[str]]] = {}
    for command, cls in [*commands(), (["simulate", "rank"], RankConfig)]:
        for f in dataclasses.fields(cls):
            kind, _ = _base_type(typing.get_type_hints(cls)[f.name])
            if kind in (int, float) and not f.metadata.get("choices"):
                bounds = (f.metadata.get("min"), f.metadata.get("max"))
                ranges.setdefault(f.name, {}).setdefault(bounds, []).append(" ".join(command))
    differing = {name: found for name, found in ranges.items() if len(found) > 1}
    assert differing == {}, differing


def test_a_list_flag_refuses_an_item_given_twice(capsys):
    # one rule for every list flag, as --rounds 0,0 is refused: --types a,a drew a twice as often without a word
    import argparse

    from redline.config import add_settings_arguments
    from redline.simulate.build import BuildConfig

    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, BuildConfig)
    with pytest.raises(SystemExit):
        parser.parse_args(["--types", "title,word_limit,title"])
    assert "argument --types: title is given twice in 'title,word_limit,title'" in capsys.readouterr().err
    assert parser.parse_args(["--types", "title,word_limit"]).types == ("title", "word_limit")


def test_an_overwrite_cut_short_leaves_no_half_removed_run_that_refuses_the_next(tmp_path, monkeypatch):
    """Ctrl-C while --overwrite removed a large run (checkpoints: seconds) left OUT with some of its files and
    perhaps none of the files that mark a redline run: the rerun was refused (no fingerprint: '--overwrite if it is a
    redline run') and so was --overwrite ('holds files that no redline run wrote'). OUT is moved aside first: the
    removal cut short leaves no OUT, and what it left beside is removed by the next claim."""
    import shutil

    @dataclass
    class Job:
        steps: int = 1

    out = tmp_path / "run"
    claim_output(out, Job(1), command="job")
    for name in ("redline.json", "a.bin", "b.bin"):
        (out / name).write_text("x")
    real_rmtree = shutil.rmtree

    def cut_short(path, *args, **kwargs):  # the run's markers go first, then Ctrl-C
        if kwargs.get("ignore_errors"):
            return real_rmtree(path, *args, **kwargs)
        for name in (FINGERPRINT, "config.json", "redline.json"):
            (Path(path) / name).unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", cut_short)
    with pytest.raises(KeyboardInterrupt):
        claim_output(out, Job(2), command="job", overwrite=True)
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    claim_output(out, Job(2), command="job")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert sorted(p.name for p in out.iterdir()) == ["config.json", FINGERPRINT]
