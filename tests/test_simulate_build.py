"""The builder and the CLI: determinism, splits, valid records, resuming, model responders, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from redline import RedlineError
from redline.cli import main
from redline.records import read_records
from redline.simulate.build import BuildConfig, build, build_tasks, generate_responses, load_responder, sample_requests
from redline.simulate.oracle import check_all

FILES = {
    "demonstrations.jsonl": "demonstration",
    "rankings.jsonl": "ranking",
    "preferences.jsonl": "preference",
    "feedback.jsonl": "feedback",
    "test.jsonl": "response",
}


def _config(out: Path, **kw) -> BuildConfig:
    base = dict(out=out, responder="template", prompts=12, test_prompts=4, k=3, seed=5, progress=False)
    return BuildConfig(**{**base, **kw})


def _contents(folder: Path) -> dict[str, str]:
    return {name: (folder / name).read_text() for name in FILES}


def _stable(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k not in ("build_seconds", "created", "command", "config")}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "a"
    return out, build(_config(out))


def test_every_file_is_written_and_every_record_is_valid(built):
    out, manifest = built
    for name, kind in FILES.items():
        records = read_records(out / name, kind)
        assert len(records) == manifest["counts"][name.removesuffix(".jsonl")]
        for record in records:
            assert record.meta["instructions"] and record.meta["topic"]
    assert manifest["counts"]["feedback"] == 12 * 3 and manifest["counts"]["test"] == 4
    for key in ("seed", "responder", "versions", "annotators", "agreement", "quality", "all_met", "build_seconds", "command"):
        assert key in manifest
    assert manifest["command"].startswith("redline simulate build --responder template --prompts 12")


def test_revisions_and_demonstrations_meet_their_instructions(built):
    out, manifest = built
    assert manifest["all_met"]["revisions"] == 1.0 and manifest["all_met"]["demonstrations"] == 1.0
    assert manifest["quality"]["revisions"] >= manifest["quality"]["responses"]
    for f in read_records(out / "feedback.jsonl", "feedback"):
        assert (f.revision == f.response) == f.meta["all_met"]
    for p in read_records(out / "preferences.jsonl", "preference"):
        # scorable from the record alone: the oracle reads both answers as the build scored them
        chosen, rejected = p.meta["oracle_quality"]
        assert check_all(p.meta, p.chosen, p.prompt).quality == pytest.approx(chosen, abs=1e-3)
        assert check_all(p.meta, p.rejected, p.prompt).quality == pytest.approx(rejected, abs=1e-3)


def test_splits_are_by_prompt(built):
    out, _ = built
    test_prompts = {r.prompt for r in read_records(out / "test.jsonl", "response")}
    for name, kind in FILES.items():
        if name != "test.jsonl":
            assert not test_prompts & {r.prompt for r in read_records(out / name, kind)}


def test_the_same_seed_gives_the_same_files_and_another_seed_does_not(built, tmp_path):
    out, manifest = built
    again = build(_config(tmp_path / "b"))
    assert _contents(tmp_path / "b") == _contents(out)
    assert _stable(again) == _stable(manifest)
    build(_config(tmp_path / "c", seed=6))
    assert _contents(tmp_path / "c") != _contents(out)


def test_more_prompts_keep_the_test_set(built, tmp_path):
    out, _ = built
    build(_config(tmp_path / "more", prompts=15))
    assert (tmp_path / "more" / "test.jsonl").read_text() == (out / "test.jsonl").read_text()


def test_a_killed_build_resumes_without_redoing_work(built, tmp_path):
    out, _ = built
    config = _config(tmp_path / "resumed", batch_size=5)
    respond = load_responder(config)
    calls = []

    def dies_after_two_batches(batch, temperature):
        calls.append(len(batch))
        if len(calls) > 2:
            raise KeyboardInterrupt
        return respond(batch, temperature)

    train, test = build_tasks(config)
    requests = sample_requests(config, train, test)
    config.out.mkdir(parents=True)
    with pytest.raises(KeyboardInterrupt):
        generate_responses(config, requests, dies_after_two_batches)
    with open(config.out / ".responses.jsonl", "a") as f:
        f.write('{"key": "torn')  # the line being written when the process died
    calls.clear()
    counted = lambda batch, temperature: (calls.append(len(batch)), respond(batch, temperature))[1]
    generate_responses(config, requests, counted)
    assert sum(calls) == len(requests) - 10
    build(config)  # uses the cache for everything
    assert _contents(config.out) == _contents(out)
    # a cached response counts only for the prompt it answered (say the catalogue's wording changed)
    cache = config.out / ".responses.jsonl"
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    rows[1]["prompt_sha"] = "another"
    cache.write_text("".join(json.dumps(r) + "\n" for r in rows))
    calls.clear()
    generate_responses(config, requests, counted)
    assert sum(calls) == 1


def test_a_cache_from_another_build_is_refused(built):
    out, _ = built
    with pytest.raises(RedlineError, match="different build"):
        build(_config(out, seed=99))


def test_a_model_cache_made_under_another_dtype_is_refused(tmp_path, monkeypatch):
    # The cache's identity left out --dtype: a build resumed under bfloat16 mixed in float32 samples.
    import redline.generation as generation

    monkeypatch.setattr(generation, "load_engine", lambda model, backend="transformers", dtype="float32", device="auto":
                        generation.ScriptedEngine(lambda prompt, seed: f"Coffee in {dtype}, seed {seed}."))
    config = _config(tmp_path / "m", responder="some/model", prompts=2, test_prompts=1, k=2)
    build(config)
    with pytest.raises(RedlineError, match="different build"):
        build(_config(tmp_path / "m", responder="some/model", prompts=2, test_prompts=1, k=2, dtype="bfloat16"))
    # a cache written before the identity held the dtype (the shipped data set's) is still resumed
    cache = tmp_path / "m" / ".responses.jsonl"
    lines = cache.read_text().splitlines()
    header = json.loads(lines[0])
    del header["header"]["dtype"]
    cache.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    build(config)


def test_a_model_responder_goes_through_the_engine(tmp_path, monkeypatch):
    import redline.generation as generation

    seen = {}

    def fake_load_engine(model, backend="transformers", dtype="float32", device="auto"):
        seen["load"] = (model, backend, dtype, device)
        return generation.ScriptedEngine(lambda prompt, seed: f"  Coffee and {prompt[-1]['content'][:20]} seed {seed}.  ")

    monkeypatch.setattr(generation, "load_engine", fake_load_engine)
    config = _config(tmp_path / "m", responder="some/model", prompts=3, test_prompts=1, k=2, max_new_tokens=40)
    manifest = build(config)
    assert seen["load"] == ("some/model", "transformers", "float32", "auto")
    rankings = read_records(tmp_path / "m" / "rankings.jsonl", "ranking") if manifest["counts"]["rankings"] else []
    responses = [json.loads(line)["text"] for line in (tmp_path / "m" / ".responses.jsonl").read_text().splitlines()[1:]]
    assert len(responses) == 3 * 2 + 1 and all(r.startswith("Coffee and") for r in responses)  # chat prompts, stripped
    assert len({r.rsplit("seed", 1)[1] for r in responses}) == len(responses)  # one seed per sample
    assert all(len(r.responses) == 2 for r in rankings)
    assert "--max-new-tokens 40" in manifest["command"]


def test_a_real_model_responder_builds_end_to_end(tmp_path):
    """tiny-random through the real engine: gibberish, which the annotators critique and repair."""
    config = _config(tmp_path / "tiny", responder="tiny-random", prompts=2, test_prompts=1, k=2, max_new_tokens=12)
    manifest = build(config)
    assert manifest["counts"]["feedback"] + manifest["counts"]["skipped"].get("empty response", 0) == 4
    assert manifest["all_met"]["demonstrations"] == 1.0
    again = build(_config(tmp_path / "tiny2", responder="tiny-random", prompts=2, test_prompts=1, k=2, max_new_tokens=12))
    assert _contents(tmp_path / "tiny2") == _contents(tmp_path / "tiny")  # seeded sampling: the same files


def test_a_responder_that_cannot_load_fails_before_any_work(tmp_path, monkeypatch):
    import redline.generation as generation

    def broken(*args, **kwargs):
        raise OSError("no such model: nope/nope")

    monkeypatch.setattr(generation, "load_engine", broken)
    with pytest.raises(RedlineError, match="cannot load responder 'nope/nope'"):
        build(_config(tmp_path / "x", responder="nope/nope"))
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------- the command line


def test_the_cli_builds_and_scores(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["simulate", "build", "--responder", "template", "--prompts", "6", "--test-prompts", "2", "--k", "2",
                 "--seed", "1", "--out", str(out), "--no-progress"])
    assert code == 0
    assert "wrote 6 records to" in capsys.readouterr().out
    assert main(["simulate", "score", "--input", str(out / "test.jsonl")]) == 0
    line = capsys.readouterr().out.strip()
    result = json.loads(line)
    assert set(result) == {"n", "mean_quality", "all_met"} and result["n"] == 2 and "\n" not in line
    assert main(["simulate", "score", "--input", str(out / "feedback.jsonl"), "--field", "revision"]) == 0
    assert json.loads(capsys.readouterr().out) == {"n": 12, "mean_quality": pytest.approx(1.0, abs=0.05), "all_met": 1.0}
    assert main(["simulate", "score", "--input", str(out / "rankings.jsonl"), "--field", "responses", "--limit", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 4


def test_a_pool_of_one_annotator_reports_no_agreement_rather_than_a_perfect_one(tmp_path, capsys):
    """One annotator has nobody to agree with: the manifest said 1.0 over 0 pairs, and the command printed 1.000."""
    out = tmp_path / "one"
    assert main(["simulate", "build", "--responder", "template", "--prompts", "4", "--test-prompts", "1", "--k", "2",
                 "--annotators", "1", "--out", str(out), "--no-progress"]) == 0
    assert "annotator agreement –;" in capsys.readouterr().out
    agreement = json.loads((out / "manifest.json").read_text())["agreement"]
    assert agreement["pairs"] == 0 and agreement["mean"] is None


def test_a_labels_share_with_nothing_to_count_is_a_dash_not_zero():
    """A ranking whose one decided comparison is an oracle tie broken by noise has no decisive label to be right on."""
    from redline.cli import _labels_line
    from redline.records import Ranking
    from redline.simulate.build import label_figures

    broken = Ranking(prompt="p", responses=["x", "y"], ranks=[0, 1], meta={"oracle_quality": [0.5, 0.5]})
    assert _labels_line(label_figures([broken]), "comparisons").endswith("decisive labels right –")
    assert _labels_line(label_figures([]), "comparisons") == (
        "0 comparisons: – labelled ties, – oracle ties broken by noise, decisive labels right –")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--k", "1"], "argument --k: must be at least 2, got 1"),  # ranges: refused by the parser (usage above it)
        (["--types", "lowercase,haiku"], "unknown instruction type(s) 'haiku'"),
        (["--types", ","], "--types names no instruction type"),
        (["--prompts", "0"], "argument --prompts: must be at least 1, got 0"),
        (["--top-p", "0"], "0 < --top-p <= 1"),
    ],
)
def test_bad_build_options_are_one_clear_line(tmp_path, capsys, args, message):
    out = tmp_path / "bad"
    try:
        code = main(["simulate", "build", "--responder", "template", "--out", str(out), "--no-progress", *args])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and message in err.splitlines()[-1] and (err.count("\n") == 1 or err.startswith("usage:"))
    assert not out.exists()


def test_a_bad_tasks_file_names_its_lines(tmp_path, capsys):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        json.dumps({"topic": "tea", "instructions": [{"type": "title"}]}) + "\n"
        + json.dumps({"topic": "tea", "instructions": [{"type": "sonnet"}]}) + "\n"
        + json.dumps({"topic": "tea", "instructions": [{"type": "lowercase"}, {"type": "uppercase"}]}) + "\n"
    )
    code = main(["simulate", "build", "--responder", "template", "--tasks", str(tasks), "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{tasks}:2: unknown instruction type 'sonnet'" in err
    assert f"{tasks}:3: conflicting instructions: 'lowercase' and 'uppercase' conflict" in err


def test_a_tasks_file_with_a_repeated_id_or_a_field_not_text_names_its_lines(tmp_path):
    # A repeated id shared its responses: the tea task was ranked on the answers to the coffee one
    # (the cache is keyed by id); a prompt given as a number crashed with an AttributeError.
    lines = [
        {"topic": "coffee", "instructions": [{"type": "title"}], "id": "a"},
        {"topic": "tea", "instructions": [{"type": "postscript"}], "id": "a"},
        {"topic": "chess", "instructions": [{"type": "title"}], "prompt": 123},
        {"topic": "jazz", "instructions": [{"type": "title"}], "form": ["poem"]},
        {"topic": "owls", "instructions": [{"type": "title"}], "id": {"n": 1}},
        {"topic": "cats", "instructions": [{"type": "title"}]},
        {"topic": "dogs", "instructions": [{"type": "title"}], "id": "", "form": "", "prompt": ""},  # "": not given
    ]
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(RedlineError) as e:
        build(_config(tmp_path / "t", tasks=tasks, test_prompts=1, prompts=2))
    message = str(e.value)
    assert f"{tasks}:2: id: duplicate id 'a' (first on line 1)" in message
    assert f"{tasks}:3: prompt: expected a non-empty string, got 123" in message
    assert f"{tasks}:4: form: expected a non-empty string" in message
    assert f"{tasks}:5: id: expected a non-empty string" in message
    assert f"{tasks}:6" not in message and f"{tasks}:7" not in message


def test_a_tasks_file_is_read_as_the_record_files_are(tmp_path):
    """A BOM was 'Unexpected UTF-8 BOM', a line not UTF-8 a bare UnicodeDecodeError naming no file, and a key
    given twice took its last value silently."""
    tasks = tmp_path / "tasks.jsonl"
    good = json.dumps({"topic": "tea", "instructions": [{"type": "title"}]}).encode()
    tasks.write_bytes(b"\xef\xbb\xbf" + good + b"\r\n"
                      + b'{"topic": "caf\xe9", "instructions": [{"type": "title"}]}\n'
                      + b'{"topic": "tea", "instructions": [{"type": "title"}], "topic": "coffee"}\n')
    with pytest.raises(RedlineError) as e:
        build(_config(tmp_path / "t", tasks=tasks, test_prompts=1, prompts=1))
    assert str(e.value).splitlines() == ["bad tasks file:", f"{tasks}:2: <line>: not UTF-8 text (byte 15: b'\\xe9')",
                                         f"{tasks}:3: topic: the key is given twice in one object: keep one"]


def test_a_good_tasks_file_is_used_as_given(tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    lines = [{"topic": "tea", "form": "haiku", "instructions": [{"type": "bullets_exact", "n": i}]} for i in range(1, 5)]
    tasks.write_text("".join(json.dumps(x) + "\n" for x in lines))
    manifest = build(_config(tmp_path / "t", tasks=tasks, test_prompts=1, prompts=3))
    assert manifest["counts"]["train_prompts"] == 3 and manifest["counts"]["test_prompts"] == 1
    test = read_records(tmp_path / "t" / "test.jsonl", "response")
    assert test[0].meta["instructions"] == [{"type": "bullets_exact", "n": 1}]


def test_asking_for_more_prompts_than_a_tasks_file_holds_is_refused_before_sampling(tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"topic": "tea", "instructions": [{"type": "bullets_exact", "n": i}]}) + "\n" for i in range(1, 5)))
    with pytest.raises(RedlineError, match="has 4 tasks; --test-prompts 1 and --prompts 10 ask for 11"):
        build(_config(tmp_path / "t", tasks=tasks, test_prompts=1, prompts=10))
    assert not (tmp_path / "t").exists()


def test_scoring_records_without_instructions_is_an_error(tmp_path, capsys):
    bare = tmp_path / "bare.jsonl"
    bare.write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n")
    assert main(["simulate", "score", "--input", str(bare)]) == 2
    assert "meta.instructions" in capsys.readouterr().err
    assert main(["simulate", "score", "--input", str(bare), "--skip-invalid"]) == 2  # none left: refused, not n 0
    assert "nothing left to use" in capsys.readouterr().err


def test_scoring_a_record_whose_topic_is_not_text_names_the_line_and_field(tmp_path, capsys):
    # It crashed in the oracle with an AttributeError ('int' object has no attribute 'split').
    bad = tmp_path / "bad.jsonl"
    meta = {"instructions": [{"type": "title"}]}
    bad.write_text("".join(json.dumps({"prompt": "p", "response": "a short answer about tea", "meta": {**meta, "topic": t}})
                           + "\n" for t in ("tea", 5, ["tea"])))
    assert main(["simulate", "score", "--input", str(bad)]) == 2
    err = capsys.readouterr().err
    assert ":2: meta.topic: expected a string, got int" in err and ":3: meta.topic: expected a string, got list" in err
    assert "Traceback" not in err


def test_scoring_a_record_with_a_malformed_chat_prompt_names_the_line_and_field(tmp_path, capsys):
    # The prompt is optional (it enables the copy penalty); a malformed chat crashed prompt_text with a traceback.
    bad = tmp_path / "bad.jsonl"
    meta = {"topic": "tea", "instructions": [{"type": "title"}]}
    prompts = ["Write about tea.", [1], [{"role": "user"}], ["a"]]
    bad.write_text("".join(json.dumps({"prompt": p, "response": "a short answer about tea", "meta": meta}) + "\n" for p in prompts))
    assert main(["simulate", "score", "--input", str(bad)]) == 2
    err = capsys.readouterr().err
    assert ":2: prompt[0]:" in err and ":3: prompt[0].content:" in err and ":4: prompt[0]:" in err and ":1:" not in err
    assert "Traceback" not in err


def test_score_refuses_an_empty_file_and_names_the_lines_it_skips(tmp_path, capsys):
    # It read its own way once: an empty file scored {"n": 0} with exit 0, and a skip was a bare count.
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["simulate", "score", "--input", str(empty)]) == 2
    assert "no records (the file is empty" in capsys.readouterr().err
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(json.dumps({"prompt": "p", "response": "- a", "meta": {"instructions": [{"type": "title"}]}}) + "\nnot json\n")
    assert main(["simulate", "score", "--input", str(mixed), "--skip-invalid"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"n": 1, "mean_quality": 0.0, "all_met": 0.0}
    assert "skipped 1 invalid (1× <line>: not JSON)" in captured.err and f"{mixed}:2: <line>: not JSON" in captured.err


def test_rankings_mix_policies_and_derived_responses_edit_their_base(tmp_path):
    manifest = build(_config(tmp_path / "v2", k=None, prompts=20))
    slots = ["sample", "sample", "hot", "partial", "fixed"]
    assert manifest["policies"]["slots"] == slots
    rankings = read_records(tmp_path / "v2" / "rankings.jsonl", "ranking")
    for r in rankings:
        assert r.meta["policy"] == slots
        q = r.meta["oracle_quality"]
        for i, base in enumerate(r.meta["edit_of"]):
            assert (base is None) == (slots[i] in ("sample", "hot"))
            if base is not None:
                assert slots[base] in ("sample", "hot") and q[i] >= q[base]  # an edit that fixes, never breaks
        assert q[slots.index("fixed")] == 1.0 or "copied" in r.responses[slots.index("fixed")]
    prefs = read_records(tmp_path / "v2" / "preferences.jsonl", "preference")
    edits = [p for p in prefs if p.meta["edit"]]
    assert edits and any(not p.meta["edit"] for p in prefs)
    for p in edits:  # the chosen one is the rejected one edited by the fixers
        assert p.meta["policy"][0] in ("partial", "fixed") and p.meta["policy"][1] in ("sample", "hot")
    feedback = read_records(tmp_path / "v2" / "feedback.jsonl", "feedback")
    assert {f.meta["policy"] for f in feedback} == {"sample", "hot", "partial"}
    assert manifest["labels"]["comparisons"] == sum(len(r.ranks) * (len(r.ranks) - 1) // 2 for r in rankings)
    for name in ("test_partial", "test_fixed"):
        assert manifest["counts"][name] == 4
    assert manifest["all_met"]["test_fixed"] >= manifest["all_met"]["test_partial"] >= manifest["all_met"]["test_responses"]


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(k=None, policies="sample:1"), "gives 1 responses per prompt"),
        (dict(k=None, policies="sample:0,partial:0"), "gives 0 responses"),
        (dict(k=None, policies="partial:2,fixed:1"), "no sampled response"),
        (dict(k=None, policies="sample:2,best:1"), "unknown policy 'best'"),
        (dict(k=None, policies="sample:x"), "needs a whole count"),
        (dict(k=4, policies="sample:2,fixed:1"), "disagree"),
    ],
)
def test_policy_mixes_that_cannot_work_are_refused_before_sampling(tmp_path, kw, message):
    with pytest.raises(RedlineError, match=message):
        build(_config(tmp_path / "bad", **kw))
    assert not (tmp_path / "bad").exists()


def _tasks_with(want_problems: bool, n: int = 1):
    """Training tasks whose first template response has problems (or none), with that response."""
    import random

    from redline.simulate.tasks import make_tasks, template_response

    found = []
    for task in make_tasks(200, seed=11):
        text = template_response(task, random.Random(task.id))
        report = check_all(task, text)
        if bool(report.broken or report.faults) == want_problems:
            found.append((task, text))
        if len(found) == n:
            return found
    raise AssertionError("no such task among 200")


def test_a_derived_copy_of_its_base_ties_with_it_and_is_critiqued_once():
    """K = 2, one sample and one fixed: a sample with nothing to fix gives two copies of one text,
    which every annotator ties (noise or not), so the prompt yields no ranking and no preference."""
    from redline.simulate.annotators import make_pool
    from redline.simulate.build import annotate, policy_responses

    slots = ("sample", "fixed")
    pool = make_pool(noise_scale=3.0)  # noisy enough to break most ties between two separate perceptions
    for task, text in _tasks_with(False, n=10):
        responses, edit_of = policy_responses(task, slots, {"sample": [text], "hot": []}, seed=0)
        assert responses == [text, text] and edit_of == [None, 0]
        for seed in range(5):
            out = annotate(task, responses, pool, seed, "best-worst+edit", policies=slots, edit_of=edit_of)
            assert out.ranking is None and out.preferences == [] and out.skipped == ["every response tied"]
            assert len(out.feedback) == 1 and out.feedback[0].meta["policy"] == "sample"


def test_k2_sample_and_fixed_gives_one_edit_pair_not_two():
    from redline.simulate.annotators import make_pool
    from redline.simulate.build import annotate, policy_responses

    slots = ("sample", "fixed")
    for task, text in _tasks_with(True, n=5):
        responses, edit_of = policy_responses(task, slots, {"sample": [text], "hot": []}, seed=0)
        assert responses[1] != text and check_all(task, responses[1]).quality > check_all(task, text).quality
        out = annotate(task, responses, make_pool(noise_scale=0), 0, "best-worst+edit", policies=slots, edit_of=edit_of)
        assert out.ranking.ranks == [1, 0] and out.ranking.meta["edit_of"] == [None, 0]
        [pair] = out.preferences  # best-worst is the edit pair: it is not added twice
        assert pair.meta["edit"] and pair.meta["pair"] == [1, 0] and pair.meta["policy"] == ["fixed", "sample"]


def test_empty_responses_shift_no_index_the_records_carry():
    """An empty sample is dropped from the ranking; edit_of, pair and from_response index the
    ranking's responses, and no derived response edits the empty one."""
    from redline.simulate.annotators import make_pool
    from redline.simulate.build import annotate, policy_responses

    slots = ("sample", "sample", "partial", "fixed")
    for task, text in _tasks_with(True, n=5):
        responses, edit_of = policy_responses(task, slots, {"sample": ["", text], "hot": []}, seed=0)
        assert edit_of == [None, None, 1, 1]  # both edit the sample with text
        for pairs in ("best-worst+edit", "all"):
            out = annotate(task, responses, make_pool(noise_scale=0), 0, pairs, policies=slots, edit_of=edit_of)
            r = out.ranking
            assert out.skipped[0] == "empty response" and r.meta["policy"] == list(slots[1:])
            assert r.meta["edit_of"] == [None, 0, 0]
            for p in out.preferences:
                w, l = p.meta["pair"]
                assert (r.responses[w], r.responses[l]) == (p.chosen, p.rejected)
                assert p.meta["policy"] == [r.meta["policy"][w], r.meta["policy"][l]]
                assert p.meta["edit"] == (r.meta["edit_of"][w] == l)
            assert any(p.meta["edit"] for p in out.preferences)
            favourite = out.demonstration.meta["from_response"]
            assert r.ranks[favourite] == 0 and r.meta["policy"][favourite] == out.demonstration.meta["from_policy"]
    # Every sample empty: nothing to edit, so the derived responses are empty too.
    responses, edit_of = policy_responses(task, slots, {"sample": ["", " "], "hot": []}, seed=0)
    assert [t.strip() for t in responses] == ["", "", "", ""] and edit_of == [None] * 4


def test_a_hot_sample_s_cache_key_names_its_temperature_exactly():
    from redline.simulate.build import _hot_slot

    assert _hot_slot(0, 1.0) == "hot0@1" and _hot_slot(1, 1.2) == "hot1@1.2"  # the keys caches already hold
    assert _hot_slot(0, 1.0000001) != _hot_slot(0, 1.0)  # ':g' alone would give both 'hot0@1'
    assert _hot_slot(0, 1.0000001) == "hot0@1.0000001"


def test_an_empty_test_response_is_kept_in_test_and_left_out_of_its_edits(tmp_path, monkeypatch):
    """The edited test files skip it, and every other edited response is scored against its own task."""
    import importlib

    build_module = importlib.import_module("redline.simulate.build")  # the package exports a build() function
    config = _config(tmp_path / "e", test_prompts=4, prompts=3)
    train, test = build_tasks(config)
    template = build_module.load_responder(config)
    silent = test[1].id

    def responder(cfg):
        return lambda batch, temperature: ["" if t.id == silent else text for (t, _), text in zip(batch, template(batch, temperature))]

    monkeypatch.setattr(build_module, "load_responder", responder)
    manifest = build(config)
    assert manifest["counts"]["test"] == 4 and manifest["counts"]["test_fixed"] == manifest["counts"]["test_partial"] == 3
    fixed = read_records(tmp_path / "e" / "test_fixed.jsonl", "response")
    assert silent not in {r.id for r in fixed}
    by_id = {t.id: t for t in test}
    met = [check_all(by_id[r.id], r.response).all_met for r in fixed]
    assert manifest["all_met"]["test_fixed"] == round(sum(met) / len(met), 4)


def test_more_prompts_than_the_settings_can_make_is_an_error_not_a_loop(monkeypatch):
    from redline.simulate import topics
    from redline.simulate.tasks import make_tasks

    # one topic, one form and a parameterless instruction allow 15 distinct prompts: asking for 40 looped forever
    monkeypatch.setattr(topics, "TOPICS", topics.TOPICS[:1])
    monkeypatch.setattr(topics, "FORMS", topics.FORMS[:1])
    assert len({t.prompt for t in make_tasks(10, seed=0, types=["lowercase"])}) == 10
    with pytest.raises(RedlineError, match=r"only \d+ distinct train prompts of the 40 asked could be drawn "
                                           r"\(instruction types: lowercase; 0 excluded\)"):
        make_tasks(40, seed=0, types=["lowercase"])


def test_a_rerun_that_builds_nothing_new_leaves_the_folders_digest(tmp_path, monkeypatch):
    """A rerun rewrote manifest.json with its new time (and --out as now spelt): the folder's digest changed, so a run
    that read the folder (`experiment critic --data`) refused to resume, as if the data had changed. What the
    manifest says of the data still counts."""
    from redline.config import input_digest

    out = tmp_path / "w"
    build(_config(out, prompts=4, test_prompts=2))
    digest, manifest = input_digest(str(out)), (out / "manifest.json").read_bytes()
    monkeypatch.chdir(tmp_path)
    build(_config(Path("w"), prompts=4, test_prompts=2))
    assert input_digest(str(out)) == digest and (out / "manifest.json").read_bytes() == manifest
    build(_config(Path("w"), prompts=4, test_prompts=2, device="cpu", progress=True))  # settings that change no file
    assert input_digest(str(out)) == digest and (out / "manifest.json").read_bytes() == manifest
    build(_config(Path("w"), prompts=4, test_prompts=2, annotators=3))
    assert json.loads((out / "manifest.json").read_text())["config"]["annotators"] == 3
    assert input_digest(str(out)) != digest


def test_the_manifests_command_repeats_every_setting_of_a_model_build():
    """The manifest's command left out --batch-size, a setting of the build's fingerprint (a bfloat16 engine's numbers
    depend on the batch's shape): run as recorded, it built with 32."""
    import shlex

    from redline.cli import build_parser
    from redline.config import settings_from_args

    config = _config(Path("w"), responder="tiny-random", dtype="bfloat16", batch_size=8, top_p=0.9, annotators=3)
    args = build_parser().parse_args(shlex.split(config.command())[1:])
    again = settings_from_args(BuildConfig, args)
    assert {k: v for k, v in again.to_dict().items() if k != "progress"} == \
        {k: v for k, v in config.to_dict().items() if k != "progress"}


def test_the_annotation_step_shows_a_bar_and_no_progress_hides_it(tmp_path, capsys):
    """Annotating 20k prompts took 20 minutes after the responses' bar ended, with nothing on the terminal."""
    build(_config(tmp_path / "bar", prompts=3, test_prompts=1, progress=True))
    err = capsys.readouterr().err
    assert "annotating" in err and "3/3" in err
    build(_config(tmp_path / "quiet", prompts=3, test_prompts=1, progress=False))
    assert "annotating" not in capsys.readouterr().err


def test_a_rerun_naming_its_tasks_file_another_way_leaves_the_folders_digest(tmp_path, monkeypatch):
    """`--tasks /abs/tasks.jsonl`, then `--tasks tasks.jsonl` (the same file; the fingerprint takes it): the manifest
    kept the path as typed, so the rerun rewrote it and every run that read the folder refused to resume."""
    from redline.config import input_digest

    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"topic": t, "instructions": [{"type": "title"}]}) + "\n"
                             for t in ("tea", "owls", "jazz", "cats")))
    out = tmp_path / "w"
    build(_config(out, tasks=tasks, prompts=2, test_prompts=1))
    digest, manifest = input_digest(str(out)), (out / "manifest.json").read_bytes()
    monkeypatch.chdir(tmp_path)
    build(_config(Path("w"), tasks=Path("tasks.jsonl"), prompts=2, test_prompts=1))
    assert input_digest(str(out)) == digest and (out / "manifest.json").read_bytes() == manifest
    (tmp_path / "other.jsonl").write_bytes(tasks.read_bytes())  # another file: the manifest says so
    build(_config(Path("w"), tasks=Path("other.jsonl"), prompts=2, test_prompts=1))
    assert json.loads((out / "manifest.json").read_text())["config"]["tasks"] == "other.jsonl"
