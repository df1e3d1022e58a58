"""The planted-signal learning checks (benchmarks/learning_checks.py) on tiny-random.

Each check runs on data in the simulated set's record formats whose signal is planted so strongly
that a 2-layer random model must learn it (a marker word on every chosen answer, one fixed revision,
one fixed demonstration, a reward for half the vocabulary), and each has a control with the signal
removed that must fail: the checks can tell "learnt" from "not learnt".
"""

import importlib.util
import json
import random
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from redline import RedlineError

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("learning_checks", ROOT / "benchmarks" / "learning_checks.py")
lc = importlib.util.module_from_spec(_spec)
sys.modules["learning_checks"] = lc  # dataclasses look their module up there
_spec.loader.exec_module(lc)

WORDS = ("river stone cloud apple window garden silver morning paper bridge candle forest ocean pencil "
         "music winter yellow basket rocket doctor").split()
MARKER = " zebra"
PHRASE = "Thank you."
END = {"type": "end_phrase", "phrase": PHRASE}


def words(rng, n=6) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def write(folder: Path, name: str, rows) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


def planted_set(folder: Path, n: int = 48) -> Path:
    """Feedback, rankings and demonstrations whose signals are planted:

    - feedback: the revision is the response with a marker word appended (revision pairs); a
      response that breaks end_phrase, revised to the phrase alone (the critic's one fix);
    - rankings: the response the oracle scores best carries the marker;
    - demonstrations: one fixed answer to every prompt.
    """
    rng = random.Random(0)
    feedback, rankings, demos = [], [], []
    for i in range(n):
        prompt = f"Note {i} about {rng.choice(WORDS)}. End your response with this exact phrase: {PHRASE}"
        meta = {"instructions": [END], "broken": ["end_phrase"]}
        response = words(rng)
        feedback.append({"id": f"f{i}", "prompt": prompt, "response": response, "meta": meta,
                         "critique": "Add the phrase.", "revision": PHRASE})
        feedback.append({"id": f"m{i}", "prompt": prompt, "response": response, "meta": {**meta, "broken": []},
                         "critique": "Fine.", "revision": response + MARKER})
        responses = [words(rng) for _ in range(4)]
        best = rng.randrange(4)
        responses[best] += MARKER
        quality = [1.0 if k == best else rng.choice([0.0, 0.25]) for k in range(4)]
        rankings.append({"id": f"r{i}", "prompt": prompt, "responses": responses, "ranks": [0, 1, 2, 3],
                         "meta": {"instructions": [END], "oracle_quality": quality}})
        demos.append({"id": f"d{i}", "prompt": prompt, "response": "The answer is always the same."})
    write(folder, "feedback.jsonl", feedback)
    write(folder, "rankings.jsonl", rankings)
    write(folder, "demonstrations.jsonl", demos)
    return folder


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return planted_set(tmp_path_factory.mktemp("planted"))


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(data: Path, **changes) -> "lc.Settings":
    settings = lc.Settings(model="tiny-random", data=str(data), lora=False, pairs_train=40, pairs_eval=24,
                           revision_threshold=0.9, oracle_gap_threshold=0.9,
                           reward_steps=30, reward_batch=4, reward_lr=3e-3, reward_max_length=64,
                           gap_max_length=256,
                           critic_type="end_phrase", critic_train=40, critic_eval=4, critic_steps=80, critic_grad_accum=1,
                           critic_lr=1e-2,
                           critic_max_new_tokens=24, ppo_iterations=6, ppo_batch=16, ppo_max_new_tokens=16,
                           ppo_lr=1e-2, ppo_temperature=0.1, ppo_window=2, sft_train=32, sft_eval=12, sft_steps=10, sft_lr=3e-3,
                           sft_max_length=64)
    return replace(settings, **changes)


# ----------------------------------------------------------------------------- data selection


def test_revision_pairs_take_records_whose_revision_changes_the_response(planted):
    pairs = lc.revision_pairs(planted / "feedback.jsonl")
    assert len(pairs) == 96  # every record here changes its response
    assert all(p["chosen"] != p["rejected"] for p in pairs)
    marked = [p for p in pairs if p["chosen"].endswith(MARKER)]
    assert len(marked) == 48 and all(p["chosen"] == p["rejected"] + MARKER for p in marked)


def test_oracle_gap_pairs_take_best_and_worst_when_the_gap_is_wide(jsonl):
    rows = [{"prompt": "a", "responses": ["x", "y", "z"], "ranks": [0, 1, 2], "meta": {"oracle_quality": [0.2, 0.9, 0.5]}},
            {"prompt": "b", "responses": ["x", "y"], "ranks": [0, 1], "meta": {"oracle_quality": [0.5, 0.2]}}]
    pairs = lc.oracle_gap_pairs(jsonl(rows), 0.5)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("y", "x")]  # b's gap is 0.3
    assert abs(pairs[0]["meta"]["gap"] - 0.7) < 1e-9


def test_records_without_the_simulated_meta_are_refused_with_file_and_line(jsonl):
    path = jsonl([{"prompt": "a", "responses": ["x", "y"], "ranks": [0, 1], "meta": {"oracle_quality": [1, 0]}},
                  {"prompt": "b", "responses": ["x", "y"], "ranks": [0, 1]}])
    with pytest.raises(RedlineError, match=r"data\.jsonl:2: meta\.oracle_quality: missing"):
        lc.oracle_gap_pairs(path, 0.5)


def test_split_keeps_prompts_apart_and_respects_the_sizes():
    rows = [{"prompt": f"p{i % 10}", "chosen": "a", "rejected": "b"} for i in range(50)]
    train, held = lc.split_prompts(rows, 20, 12, seed=0)
    assert len(train) == 20 and len(held) == 12
    assert {r["prompt"] for r in train}.isdisjoint({r["prompt"] for r in held})
    assert lc.split_prompts(rows, 20, 12, seed=0) == (train, held)  # seeded


def test_shuffled_labels_swap_about_half():
    rows = [{"prompt": str(i), "chosen": "w", "rejected": "l"} for i in range(200)]
    swapped = sum(r["chosen"] == "l" for r in lc.shuffled_labels(rows, 0))
    assert 70 < swapped < 130


def test_rise_is_last_minus_first_with_the_standard_error_of_two_samples():
    rollouts = [{"iteration": it, "prompt": f"p{k}", "score": s}
                for it, scores in ((1, [0, 1]), (2, [1, 1]), (3, [2, 4])) for k, s in enumerate(scores)]
    r = lc.rise(rollouts, window=1)
    # first: [0, 1], mean 0.5, var 0.5; last: [2, 4], mean 3, var 2; se = sqrt(0.5/2 + 2/2) = sqrt(1.25)
    assert r["rise"] == 2.5 and abs(r["se"] - 1.25 ** 0.5) < 1e-12


def test_rise_counts_the_samples_of_one_prompt_in_one_iteration_as_one_unit():
    # RLOO's two samples of a prompt: first window a: [0, 0], b: [1, 1]. Two units with means 0 and 1, mean 0.5,
    # var 0.5, se = sqrt(0.5 / 2) = 0.5 (as four independent episodes: sqrt((1/3) / 4) = 0.289); the last window
    # scores 1 everywhere (se 0). A rise of 0.5 is one SE, not 1.7.
    rollouts = [{"iteration": it, "prompt": p, "score": s}
                for it, scores in ((1, {"a": 0, "b": 1}), (2, {"a": 1, "b": 1})) for p, s in scores.items() for _ in range(2)]
    r = lc.rise(rollouts, window=1)
    assert r["rise"] == 0.5 and abs(r["se"] - 0.5) < 1e-12


def test_critic_records_train_on_one_broken_type_whose_revision_fixes_it(planted):
    train, held = lc.critic_records(planted / "feedback.jsonl", "end_phrase", max_words=50)
    assert len(train) == 48 and len(held) == 48
    assert all(r["revision"] == PHRASE for r in train)
    assert lc.instruction_met({"instructions": [END]}, "end_phrase", "Some words. Thank you.")
    assert not lc.instruction_met({"instructions": [END]}, "end_phrase", "Thank you. Some words.")


def test_settings_scale_every_learning_rate():
    s = lc.Settings().scaled(10)
    assert s.reward_lr == 1e-2 and s.sft_lr == 5e-3 and s.pairs_train == lc.Settings().pairs_train


def test_an_unknown_check_is_refused(capsys):
    with pytest.raises(SystemExit):
        lc.main(["--checks", "reward,nope"])
    assert "unknown check(s) reward, nope" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the checks, planted and controlled


@pytest.mark.parametrize("signal", ["revision", "oracle-gap"])
def test_reward_model_learns_a_marker_and_not_shuffled_labels(planted, tmp_path, signal):
    s = tiny(planted)
    learnt = lc.check_reward(s, signal, tmp_path / "a")
    assert learnt["passed"] and learnt["value"] >= 0.9, learnt
    control = lc.check_reward(s, signal, tmp_path / "b", control=True)
    assert not control["passed"], control


@pytest.mark.parametrize("signal", ["revision", "oracle-gap"])
def test_gap_model_learns_a_marker_and_not_shuffled_labels(planted, tmp_path, signal):
    s = tiny(planted)
    learnt = lc.check_gap(s, signal, tmp_path / "a")
    assert learnt["passed"] and learnt["value"] >= 0.9, learnt
    control = lc.check_gap(s, signal, tmp_path / "b", control=True)
    assert not control["passed"], control


def test_critic_learns_its_one_fix_and_not_from_unrevised_records(planted, tmp_path):
    s = tiny(planted)
    learnt = lc.check_critic(s, tmp_path / "a")
    assert learnt["passed"] and learnt["details"]["met_before"] == 0, learnt
    control = lc.check_critic(s, tmp_path / "b", control=True)
    assert not control["passed"], control


def planted_reward(tokenizer):
    """Share of the response's tokens with an even id: half the vocabulary is rewarded.

    The check samples at temperature 0.1: a random model's logits are nearly flat (std 0.16), so at
    temperature 1 it spreads over 49k tokens, no choice recurs and nothing is reinforced twice."""
    def reward_fn(prompts, responses, records):
        ids = tokenizer(responses, add_special_tokens=False)["input_ids"]
        return [sum(t % 2 == 0 for t in x) / max(1, len(x)) for x in ids]
    return reward_fn


def noise_reward():
    rng = random.Random(0)
    return lambda prompts, responses, records: [rng.random() for _ in responses]


@pytest.mark.parametrize("advantage", ["gae", "rloo"])
def test_ppo_climbs_a_planted_reward_and_not_noise(tmp_path, advantage, monkeypatch):
    import redline.models
    from redline.models import load_tokenizer

    prompts = [{"id": str(i), "prompt": f"Say something about {w}."} for i, w in enumerate(WORDS)]
    # lr 3e-3 over 8 iterations: at 1e-2 this full fine-tuning moved ~3 nats an update and float-level
    # differences between the padded and the row-at-a-time passes decided the outcome. β 0 for RLOO:
    # once every sample scores 1.0 its advantages are the KL terms alone, which threw the policy back.
    # β 0.005 for GAE: at temperature 0.1 a larger penalty swamps the planted score (RESULTS "Learning checks").
    s = replace(tiny(tmp_path), ppo_advantage=advantage, ppo_beta=0.005 if advantage == "gae" else 0.0,
                ppo_iterations=8, ppo_lr=3e-3)
    reward = planted_reward(load_tokenizer("tiny-random"))
    for unpadded in (False, True):
        monkeypatch.setattr(redline.models, "UNPADDED_ON_CPU", unpadded)
        learnt = lc.check_ppo(s, tmp_path / f"a{unpadded}", reward_fn=reward, prompts=prompts, name="ppo-planted")
        assert learnt["passed"] and learnt["details"]["advantage"] == advantage, (unpadded, learnt)
    monkeypatch.setattr(redline.models, "UNPADDED_ON_CPU", True)  # the control on the default CPU path
    control = lc.check_ppo(s, tmp_path / "b", reward_fn=noise_reward(), prompts=prompts, name="ppo-noise")
    assert not control["passed"], control


def test_ppo_check_reads_one_instruction_prompts_of_the_asked_types(jsonl):
    rows = [{"prompt": "a", "meta": {"instructions": [{"type": "title"}]}},
            {"prompt": "b", "meta": {"instructions": [{"type": "title"}, {"type": "lowercase"}]}},
            {"prompt": "c", "meta": {"instructions": [{"type": "lowercase"}]}}]
    assert [r["prompt"] for r in lc.ppo_prompts(jsonl(rows), ["title"])] == ["a"]


def test_sft_lowers_held_out_loss_and_not_on_random_tokens(planted, tmp_path):
    s = tiny(planted)
    learnt = lc.check_sft(s, tmp_path / "a")
    assert learnt["passed"] and learnt["details"]["loss_after"] < learnt["details"]["loss_before"], learnt
    # Held-out text nothing in training predicts: 40 random tokens each.
    from redline.models import load_tokenizer

    tokenizer, rng = load_tokenizer("tiny-random"), random.Random(1)
    unrelated = [{"prompt": f"Question {i}?", "response": tokenizer.decode([rng.randrange(1000, 40000) for _ in range(40)])}
                 for i in range(12)]
    control = lc.check_sft(s, tmp_path / "b", held_out=unrelated)
    assert not control["passed"], control


def test_main_writes_json_and_a_table_and_exits_1_on_a_failed_check(planted, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(lc, "SCALES", {**lc.SCALES, "tiny": {
        f: getattr(tiny(planted), f) for f in ("pairs_train", "pairs_eval", "reward_steps", "reward_batch", "lora",
                                               "reward_max_length")}})
    out = tmp_path / "checks.json"
    code = lc.main(["--checks", "reward-revision", "--scale", "tiny", "--model", "tiny-random", "--data", str(planted),
                    "--lr-scale", "0", "--work", str(tmp_path / "w"), "--out", str(out)])
    report = json.loads(out.read_text())
    [row] = report["checks"]
    assert row["check"] == "reward-revision" and row["rule"] == ">= 0.80" and row["details"]["lr"] == 0
    assert not row["passed"] and code == 1  # an untrained reward model does not find the marker
    printed = capsys.readouterr().out
    assert "| reward-revision | reward model |" in printed and "threshold >= 0.80" in printed


@pytest.mark.slow
@pytest.mark.parametrize("check", lc.CHECKS)
def test_embedded_learns_each_planted_signal_at_reduced_size(check, tmp_path):
    s = replace(lc.Settings(), **lc.SCALES["reduced"])
    row = lc.run_check(check, s, tmp_path)
    assert row["passed"], row


def test_set_overrides_cast_to_the_field_type_and_refuse_unknown_fields():
    import argparse

    ap = argparse.ArgumentParser()
    got = lc.overrides(["critic_steps=72", "reward_lr=0.003", "lora=false", "ppo_types=no_commas,lowercase"], ap)
    assert got == {"critic_steps": 72, "reward_lr": 0.003, "lora": False, "ppo_types": "no_commas,lowercase"}
    for bad in ("critic_stepz=3", "critic_steps", "critic_steps=many", "lora=maybe"):
        with pytest.raises(SystemExit):
            lc.overrides([bad], ap)


def test_a_held_out_prompt_that_fills_max_length_is_unmeasured_not_a_crash():
    """Its labels (-100 for each prompt token) outgrew the cut ids: a shape error, or nan where it filled it exactly."""
    import math

    from redline.models import load_causal_lm, load_tokenizer

    tokenizer, model = load_tokenizer("tiny-random"), load_causal_lm("tiny-random", device="cpu").eval()
    rows = [{"prompt": " ".join(WORDS * 4), "response": "river stone"}, {"prompt": "Say hi.", "response": "hi there"}]
    long, short = lc.completion_losses(model, tokenizer, rows, max_length=60)
    assert math.isnan(long) and math.isfinite(short)


def test_an_out_file_that_is_not_a_checks_json_no_check_and_no_threads_are_refused_in_one_line(tmp_path, capsys):
    for text in ("{\"runs\": []}\n", "{\"checks\": [1]}\n", "{\"checks\": [\n"):  # another benchmark's; torn
        out = tmp_path / "other.json"
        out.write_text(text)
        with pytest.raises(SystemExit):
            lc.main(["--checks", "sft", "--out", str(out)])
        err = capsys.readouterr().err
        assert f"--out {out}: not a learning checks JSON" in err and "Traceback" not in err
        assert out.read_text() == text  # left as it was
    with pytest.raises(SystemExit):  # ran nothing and exited 0
        lc.main(["--checks", " , ", "--out", str(tmp_path / "x.json")])
    assert "(none given)" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # was torch's RuntimeError traceback
        lc.main(["--checks", "sft", "--threads", "0", "--out", str(tmp_path / "x.json")])
    assert "--threads 0: at least 1" in capsys.readouterr().err


def test_the_table_marks_the_rows_kept_from_an_earlier_run():
    kept = lc.result("sft", "SFT", "s", "m", 0.07, 0.01, True, "> 2 SE (0.010)")
    kept["command"] = "python benchmarks/learning_checks.py --checks sft --scale reduced"
    now = lc.result("critic", "critic + revise", "s", "m", 0.5, 0.5, True, ">= 0.50")
    lines = lc.table([kept, now], ["critic"]).splitlines()
    assert lines[2].startswith("| sft (earlier run: `python benchmarks/learning_checks.py --checks sft --scale reduced`) |")
    assert lines[3].startswith("| critic | critic + revise |")


@pytest.mark.parametrize("window", [0, 4])
def test_a_ppo_window_that_is_empty_or_overlaps_is_refused_before_training(tmp_path, window):
    # 0 divided by zero once PPO had run; 4 of 6 iterations compared iterations 3-4 with themselves
    s = replace(tiny(tmp_path), ppo_iterations=6, ppo_window=window)
    with pytest.raises(RedlineError, match=f"ppo_window {window}: .* 1 to half of ppo_iterations \\(6\\)"):
        lc.check_ppo(s, tmp_path / "w", reward_fn=noise_reward(), prompts=[{"prompt": "Hi."}] * 4)
    assert not (tmp_path / "w").exists()
