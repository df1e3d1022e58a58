"""The generation interface's plain parts: SamplingParams, helpers, and the ScriptedEngine stand-in."""

import sys

import pytest

from redline.generation import (
    Completion,
    Engine,
    SamplingParams,
    ScriptedEngine,
    as_chat,
    cut_at_stop,
    item_seeds,
    load_engine,
)


def test_importing_generation_does_not_import_torch():
    import subprocess

    code = "import redline.generation, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_sampling_params_defaults_and_checks():
    p = SamplingParams()
    assert (p.temperature, p.top_p, p.max_new_tokens, p.stop, p.seed) == (0.7, 1.0, 256, [], 0)
    assert SamplingParams(stop="\n").stop == ["\n"]
    assert SamplingParams(stop=["", "x"]).stop == ["x"]
    for bad in (dict(temperature=-1), dict(top_p=0), dict(top_p=1.5), dict(max_new_tokens=0)):
        with pytest.raises(ValueError):
            SamplingParams(**bad)


def test_helpers():
    assert as_chat("hi") == [{"role": "user", "content": "hi"}]
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert as_chat(msgs) == msgs and as_chat(msgs) is not msgs
    assert item_seeds(3, SamplingParams(seed=10), None) == [10, 11, 12]
    assert item_seeds(2, SamplingParams(seed=10), [7, 7]) == [7, 7]
    with pytest.raises(ValueError):
        item_seeds(2, SamplingParams(), [1])
    assert cut_at_stop("abc END def STOP", ["STOP", "END"]) == ("abc ", True)  # the earliest wins
    assert cut_at_stop("abc", ["x"]) == ("abc", False)


def test_unknown_backend_is_a_clear_error():
    from redline import RedlineError

    with pytest.raises(RedlineError, match="backend"):
        load_engine("tiny-random", backend="nope")


def test_scripted_engine_is_an_engine_and_uses_per_item_seeds():
    engine = ScriptedEngine(lambda prompt, seed: f"reply to {prompt} with {seed}")
    assert isinstance(engine, Engine)
    out = engine.generate(["a", "b"], SamplingParams(seed=5))
    assert [c.text for c in out] == ["reply to a with 5", "reply to b with 6"]
    assert [c.seed for c in out] == [5, 6]
    assert all(isinstance(c, Completion) and c.finish_reason == "stop" for c in out)
    assert out[0].prompt_tokens == 1 and out[0].completion_tokens == 5
    assert engine.calls == [("a", 5), ("b", 6)]
    assert engine.last_stats.items == 2 and engine.last_stats.completion_tokens == 10
    assert engine.generate(["a"], SamplingParams(), seeds=[42])[0].text.endswith("42")


def test_scripted_engine_counts_words_as_tokens_for_max_new_tokens():
    engine = ScriptedEngine(["one two  three\nfour five"])
    c = engine.generate(["p"], SamplingParams(max_new_tokens=3))[0]
    assert (c.text, c.completion_tokens, c.finish_reason) == ("one two  three", 3, "length")
    c = engine.generate(["p"], SamplingParams(max_new_tokens=5))[0]
    assert (c.text, c.completion_tokens, c.finish_reason) == ("one two  three\nfour five", 5, "stop")


def test_scripted_engine_cuts_at_stop_strings():
    engine = ScriptedEngine(["Critique: too long.\nRevision: short. ###"])
    c = engine.generate(["p"], SamplingParams(stop=["\nRevision:"]))[0]
    assert (c.text, c.finish_reason) == ("Critique: too long.", "stop")
    assert c.completion_tokens == 4  # up to and including the words that complete the stop string
    # a stop string after the max_new_tokens-th word is never reached
    c = engine.generate(["p"], SamplingParams(stop=["###"], max_new_tokens=4))[0]
    assert (c.text, c.finish_reason) == ("Critique: too long.\nRevision:", "length")


def test_scripted_engine_lists_cycle_and_dicts_match_prompts():
    engine = ScriptedEngine(["x", "y"])
    assert [c.text for c in engine.generate(["1", "2", "3"], SamplingParams())] == ["x", "y", "x"]
    engine = ScriptedEngine({"What is 2+2?": "4"}, default="no idea")
    chat = as_chat("What is 2+2?")
    out = engine.generate(["What is 2+2?", chat, "other"], SamplingParams())
    assert [c.text for c in out] == ["4", "4", "no idea"]
    with pytest.raises(KeyError, match="no reply"):
        ScriptedEngine({"a": "b"}).generate(["c"], SamplingParams())
    with pytest.raises(TypeError):
        ScriptedEngine("one string")
