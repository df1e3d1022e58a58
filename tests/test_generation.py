"""The transformers engine on the tiny random Llama (real tokenizer): behaviour, not numbers.

A random model's text is gibberish, but it is deterministic gibberish: every test compares the
engine with itself (alone vs. batched, with vs. without a stop string) or with ``model.generate``.
"""

import concurrent.futures
import contextlib
import threading
import time

import pytest

torch = pytest.importorskip("torch")

from redline import RedlineError  # noqa: E402
from redline.generation import SamplingError, SamplingParams, as_chat, load_engine  # noqa: E402

PROMPTS = [
    "Hello",
    "The quick brown fox jumps over the lazy dog, and then it runs far away into the",
    "Once upon a time",
    as_chat("Write a haiku about autumn."),
]
SAMPLED = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=24, seed=3)


@pytest.fixture(scope="module")
def engine():
    # One thread: the suite runs beside other processes on few cores, where OpenMP threads that
    # wait for each other are many times slower than one.
    return load_engine("tiny-random", max_batch=8, threads=1)


def texts(completions):
    return [c.text for c in completions]


@contextlib.contextmanager
def options(engine, **values):
    """Change engine options for one block (loading another engine takes seconds)."""
    saved = {k: getattr(engine, k) for k in values}
    for k, v in values.items():
        setattr(engine, k, v)
    try:
        yield engine
    finally:
        for k, v in saved.items():
            setattr(engine, k, v)


def test_same_seed_same_completion_alone_or_in_any_batch(engine):
    alone = [engine.generate([p], SAMPLED, seeds=[40 + i], progress=False)[0] for i, p in enumerate(PROMPTS)]
    batched = engine.generate(PROMPTS, SAMPLED, seeds=[40, 41, 42, 43], progress=False)
    assert texts(batched) == texts(alone)
    # reversed order, extra prompts of other lengths around them, and a batch too small for all
    others = ["x " * 50, "y", "z z z"]
    mixed = engine.generate(others + PROMPTS[::-1], SAMPLED, seeds=[1, 2, 3, 43, 42, 41, 40], progress=False)
    assert texts(mixed[3:]) == texts(alone)[::-1]
    with options(engine, max_batch=2):
        assert texts(engine.generate(PROMPTS, SAMPLED, seeds=[40, 41, 42, 43], progress=False)) == texts(alone)


def test_a_shared_prompt_prefix_is_computed_once_and_changes_nothing(engine):
    head = "You are a careful critic. Read the question and the response, then critique and revise. " * 2
    prompts = [as_chat(head + f"Question {i}: " + "why? " * (3 * i)) for i in range(5)]
    batched = engine.generate(prompts, SAMPLED, progress=False)
    assert engine.last_stats.shared_prompt_tokens >= 4 * 40  # items 2..5 copy the head from item 1
    alone = [engine.generate([p], SAMPLED, seeds=[SAMPLED.seed + i], progress=False)[0] for i, p in enumerate(prompts)]
    assert engine.last_stats.shared_prompt_tokens == 0
    assert [c.token_ids for c in batched] == [c.token_ids for c in alone]
    with options(engine, share_prefix=False):
        assert [c.token_ids for c in engine.generate(prompts, SAMPLED, progress=False)] == [c.token_ids for c in alone]
        assert engine.last_stats.shared_prompt_tokens == 0


def test_each_prompt_its_own_params_in_one_call_gives_what_separate_calls_give(engine):
    # revise's budgets: nearly every answer has its own cap, and the rows must still decode together
    caps = [5, 24, 11, 17]
    params = [SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=m, seed=3) for m in caps]
    params[2] = SamplingParams(temperature=0, max_new_tokens=11)  # greedy beside sampled rows
    seeds = [40, 41, 42, 43]
    alone = [engine.generate([p], q, seeds=[s], progress=False)[0] for p, q, s in zip(PROMPTS, params, seeds)]
    together = engine.generate(PROMPTS, params, seeds=seeds, progress=False)
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    assert [c.completion_tokens for c in together] == [c.completion_tokens for c in alone]
    assert all(c.completion_tokens <= m for c, m in zip(together, caps)) and together[0].finish_reason == "length"
    assert [c.seed for c in engine.generate(PROMPTS[:2], params[:2], progress=False)] == [3, 4]  # params' seed + index
    with pytest.raises(ValueError, match="3 sampling params for 4 prompts"):
        engine.generate(PROMPTS, params[:3], progress=False)


def test_a_long_shared_prefix_copied_or_computed_gives_the_same_bits(engine):
    # A row that copies a shared prefix computes the rest of its prompt in tiles that start where the
    # copy ends, so its attention sums run over other spans than alone; one float32 matmul over a span
    # let the BLAS split the sum by the span's length, and past a few hundred positions the bits
    # changed (revise's template and answers: 10 of 32 outputs differed between two batchings).
    head = "Below is a question and a response written by an assistant. Critique it, then revise it. " * 14
    prompts = [head + f"Question {i}: " + "why is it so? " * (20 + 17 * i) for i in range(4)]
    params = SamplingParams(temperature=0.7, max_new_tokens=48, seed=5, logprobs=True)
    batched = engine.generate(prompts, params, progress=False)
    assert engine.last_stats.shared_prompt_tokens >= 3 * 250 and min(c.prompt_tokens for c in batched) > 350
    alone = [engine.generate([p], params, seeds=[params.seed + i], progress=False)[0] for i, p in enumerate(prompts)]
    assert [c.logprobs for c in batched] == [c.logprobs for c in alone]
    assert [c.token_ids for c in batched] == [c.token_ids for c in alone]


def test_seeds_default_to_params_seed_plus_index(engine):
    out = engine.generate([PROMPTS[0]] * 3, SAMPLED, progress=False)
    assert [c.seed for c in out] == [3, 4, 5]
    again = engine.generate([PROMPTS[0]], SAMPLED, seeds=[4], progress=False)
    assert again[0].text == out[1].text
    assert len(set(texts(out))) > 1  # different seeds, different samples


def test_greedy_equals_model_generate(engine):
    tok, model = engine.tokenizer, engine.model
    params = SamplingParams(temperature=0, max_new_tokens=16)
    out = engine.generate(PROMPTS, params, progress=False)
    for prompt, completion in zip(PROMPTS, out):
        ids = torch.tensor([engine.encode(prompt)])
        ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False)
        new = ref[0, ids.shape[1] :].tolist()
        if new and new[-1] in engine.eos_ids:
            new = new[:-1]
        assert completion.text == tok.decode(new, skip_special_tokens=True)
        assert completion.prompt_tokens == ids.shape[1]


def test_chat_prompts_get_the_chat_template(engine):
    chat = as_chat("Hi there")
    text = engine.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert engine.encode(chat) == engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert engine.encode(chat) != engine.encode("Hi there")


def test_stop_strings_cut_where_they_should(engine):
    params = SamplingParams(temperature=1.0, max_new_tokens=40, seed=7)
    full = engine.generate(PROMPTS, params, progress=False)
    for prompt, c in zip(PROMPTS, full):
        assert c.finish_reason == "length" and c.completion_tokens == 40
        stop = c.text[len(c.text) // 2 : len(c.text) // 2 + 3]  # three characters from the middle
        cut = engine.generate([prompt], SamplingParams(**{**params.__dict__, "stop": [stop]}), seeds=[c.seed], progress=False)[0]
        assert cut.finish_reason == "stop"
        assert cut.text == c.text[: c.text.find(stop)]
        assert stop not in cut.text
        # counted up to the token that completed the stop string, not up to the step that saw it
        n = cut.completion_tokens
        assert cut.token_ids == c.token_ids[:n]
        assert stop in engine.tokenizer.decode(c.token_ids[:n]) and stop not in engine.tokenizer.decode(c.token_ids[: n - 1])


def test_eos_ends_a_completion(engine):
    params = SamplingParams(temperature=0, max_new_tokens=12)
    ids = engine.generate([PROMPTS[2]], params, progress=False)[0].token_ids
    saved = engine.eos_ids
    engine.eos_ids = sorted(set(saved) | {ids[2]})  # pretend the third token is EOS
    try:
        c = engine.generate([PROMPTS[2]], params, progress=False)[0]
    finally:
        engine.eos_ids = saved
    end = ids.index(ids[2])
    assert c.finish_reason == "stop"
    assert c.completion_tokens == end + 1 and c.token_ids == ids[: end + 1]  # the EOS counts, its text does not
    assert c.text == engine.tokenizer.decode(ids[:end], skip_special_tokens=True)


def test_an_engine_over_a_model_in_memory_gives_the_model_back_as_it_was(engine):
    from redline.generation import Engine
    from redline.generation.transformers_engine import TransformersEngine

    model = engine.model
    model.train()
    try:
        live = TransformersEngine(model, engine.tokenizer, ignore_eos=True)
        assert isinstance(live, Engine) and live.eos_ids == []
        out = live.generate(PROMPTS[:2], SamplingParams(temperature=0, max_new_tokens=5), progress=False)
        assert model.training  # PPO's policy stays in train mode
        assert all(c.finish_reason == "length" and c.completion_tokens == 5 for c in out)
        assert config_attention(model) != "redline_slots"  # our attention is plugged in only during a call
    finally:
        model.eval()


def test_generation_uses_no_deprecated_transformers_api(engine):
    """transformers renames forward's ``past_key_values`` to ``cache`` (5.24; the old name goes in 5.40)
    and warns with a FutureWarning on each use: the engine must pass what the installed version takes,
    on a plain model and under a PEFT wrapper (whose forward takes ``**kwargs``)."""
    import inspect
    import warnings

    from peft import LoraConfig, get_peft_model

    from redline.generation.transformers_engine import TransformersEngine, _cache_keyword

    model = engine.model
    takes = inspect.signature(type(model).forward).parameters
    assert _cache_keyword(model) == ("cache" if "cache" in takes else "past_key_values")
    params = SamplingParams(temperature=0, max_new_tokens=6)
    want = texts(engine.generate(PROMPTS[:2], params, progress=False))
    peft = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=True))
    try:
        live = TransformersEngine(peft, engine.tokenizer)
        assert live._cache_keyword == _cache_keyword(model)
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            warnings.simplefilter("error", DeprecationWarning)
            assert texts(engine.generate(PROMPTS[:2], params, progress=False)) == want
            assert texts(live.generate(PROMPTS[:2], params, progress=False)) == want  # zero-initialised LoRA B
    finally:
        peft.unload()
    assert config_attention(model) != "redline_slots"


def test_without_per_row_logits_to_keep_the_completions_are_the_same(engine, monkeypatch):
    """transformers before the per-row ``logits_to_keep`` (5.17): every prompt position is projected
    and the rows picked afterwards, bit for bit the same completions."""
    from redline.generation import transformers_engine

    want = texts(engine.generate(PROMPTS, SAMPLED, progress=False))
    monkeypatch.setattr(transformers_engine, "_logits_per_row", lambda: False)
    assert texts(engine.generate(PROMPTS, SAMPLED, progress=False)) == want


def test_a_model_that_cannot_switch_attention_is_refused(engine, monkeypatch):
    from redline import RedlineError

    monkeypatch.setattr(type(engine.model), "_can_set_attn_implementation", classmethod(lambda cls: False))
    with pytest.raises(RedlineError, match="cannot switch its attention"):
        engine.generate(["Hello"], SamplingParams(max_new_tokens=2), progress=False)
    assert config_attention(engine.model) != "redline_slots"


def config_attention(model):
    return model.config._attn_implementation


def test_one_long_prompt_and_many_short_come_back_in_order(engine):
    long = "word " * 600
    prompts = [f"short prompt {i}" for i in range(5)] + [long] + [f"p{i}" for i in range(6)]
    params = SamplingParams(temperature=0.8, max_new_tokens=10)
    with options(engine, max_batch=4):
        out = engine.generate(prompts, params, progress=False)
    assert [c.prompt_tokens for c in out] == [len(engine.encode(p)) for p in prompts]
    assert [c.seed for c in out] == list(range(len(prompts)))
    assert all(c.finish_reason in ("stop", "length") for c in out)
    assert engine.last_stats.items == len(prompts)
    assert engine.last_stats.completion_tokens == sum(c.completion_tokens for c in out)
    alone = [engine.generate([p], params, seeds=[i], progress=False)[0].text for i, p in enumerate(prompts)]
    assert texts(out) == alone
    # a K/V budget that holds only 3 rows as wide as the long item needs: fewer rows, same completions
    width = -(-(len(engine.encode(long)) + 10 + 8) // 64) * 64  # prompt + max_new_tokens + padding rows
    with options(engine, kv_budget=3 * width * engine._kv_bytes_per_token()):
        assert texts(engine.generate(prompts, params, progress=False)) == alone


def test_max_new_tokens_is_respected(engine):
    for m in (1, 2, 7):
        out = engine.generate(PROMPTS, SamplingParams(temperature=1.0, max_new_tokens=m), progress=False)
        for c in out:
            assert 1 <= c.completion_tokens <= m and len(c.token_ids) == c.completion_tokens
            if c.finish_reason == "length":
                assert c.completion_tokens == m
        assert sum(c.completion_tokens for c in out) == engine.last_stats.completion_tokens


def test_empty_batch_and_timings(engine):
    assert engine.generate([], SAMPLED, progress=False) == []
    out = engine.generate(PROMPTS[:2], SAMPLED, progress=True)
    assert all(c.seconds > 0 for c in out)
    stats = engine.last_stats
    assert stats.items == 2 and stats.seconds > 0 and stats.tokens_per_s > 0


def test_not_exact_still_generates_the_same_shape_of_output(engine):
    with options(engine, exact=False, max_batch=3):
        out = engine.generate(PROMPTS, SAMPLED, progress=False)
    assert len(out) == len(PROMPTS) and all(0 < c.completion_tokens <= 24 for c in out)


@pytest.mark.slow
def test_embedded_greedy_equals_generate_and_batches_do_not_matter():
    engine = load_engine("embedded", max_batch=16, threads=1)
    prompts = [as_chat("Name three colors."), as_chat("What is the capital of France? Answer in one word."), "1, 2, 3,"]
    params = SamplingParams(temperature=0, max_new_tokens=24)
    out = engine.generate(prompts, params, progress=False)
    for prompt, completion in zip(prompts, out):
        ids = torch.tensor([engine.encode(prompt)])
        ref = engine.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False)
        assert completion.text == engine.tokenizer.decode(ref[0, ids.shape[1] :], skip_special_tokens=True)
    sampled = SamplingParams(temperature=0.7, max_new_tokens=24)
    alone = [engine.generate([p], sampled, seeds=[i], progress=False)[0].text for i, p in enumerate(prompts)]
    assert texts(engine.generate(prompts * 3, sampled, seeds=[0, 1, 2] * 3, progress=False)) == alone * 3


def test_a_sliding_window_refuses_only_rows_longer_than_it_not_the_padded_width(engine, monkeypatch):
    """The check compared the batch's padded width (a multiple of 64, beyond the prefill rows) with the window: a model
    with a 4096-token window was refused a 4090-token row that it attends to whole."""
    prompt = "one two three four five six seven"
    window = len(engine.encode(prompt)) + 10  # far under the padded width of 64
    monkeypatch.setattr(engine.config, "sliding_window", window, raising=False)
    monkeypatch.setattr(engine.config, "use_sliding_window", True, raising=False)
    assert engine.generate([prompt], SamplingParams(max_new_tokens=10), progress=False)[0].completion_tokens >= 1
    with pytest.raises(RedlineError, match=f"sliding window of {window} tokens, and this batch needs {window + 1}"):
        engine.generate([prompt], SamplingParams(max_new_tokens=11), progress=False)
    engine.continuous(max_prompt_tokens=window - 10, max_new_tokens=10)
    with pytest.raises(RedlineError, match=f"needs {window + 1}"):
        engine.continuous(max_prompt_tokens=window - 9, max_new_tokens=10)


# ----------------------------------------------------------------------------- continuous batching (redline serve)


def _collect(batcher, ids, params, seed):
    """Submit one request; returns (handle, done event, result holder, streamed deltas)."""
    done, result, deltas = threading.Event(), [], []
    handle = batcher.submit(ids, params, seed, lambda r: (result.append(r), done.set()), deltas.append)
    return handle, done, result, deltas


def test_continuous_batching_gives_what_generate_gives_with_each_request_its_own_settings(engine):
    """Requests with other temperatures, stops and lengths share steps; each gets generate()'s exact reply."""
    settings = [SAMPLED, SamplingParams(temperature=0, max_new_tokens=12), SamplingParams(temperature=0.7, max_new_tokens=30,
                                                                                     stop=["e"])]
    jobs = [(p, settings[i % 3], 50 + i) for i, p in enumerate(PROMPTS * 2)]
    expected = [engine.generate([p], s, seeds=[seed], progress=False)[0] for p, s, seed in jobs]
    batcher = engine.continuous(max_prompt_tokens=256, max_new_tokens=64).start()
    try:
        running = [_collect(batcher, batcher.encode(p), s, seed) for p, s, seed in jobs]
        for _, done, _, _ in running:
            assert done.wait(60)
    finally:
        batcher.stop()
    got = [result[0] for _, _, result, _ in running]
    assert [(c.text, c.finish_reason, c.token_ids) for c in got] == [(c.text, c.finish_reason, c.token_ids) for c in expected]
    assert batcher.steps < sum(c.completion_tokens for c in expected)  # they shared steps
    for (_, _, _, deltas), c in zip(running, got):
        # Streamed text is the reply's beginning; the engine may decode past a stop string before it
        # sees it (checked every few steps), which the server holds back (test_serve.py).
        streamed = "".join(deltas)
        assert c.text.startswith(streamed) or (c.finish_reason == "stop" and streamed.startswith(c.text))


def test_continuous_batching_refuses_a_request_over_its_limits_alone_and_cancels(engine):
    batcher = engine.continuous(max_prompt_tokens=16, max_new_tokens=2000).start()
    try:
        with pytest.raises(RedlineError, match="the prompt has 30 tokens; this server takes at most 16"):
            batcher.submit(list(range(10, 40)), SAMPLED, 1, lambda r: None)
        with pytest.raises(RedlineError, match="max_tokens 2001 is over this server's limit of 2000"):
            batcher.submit([10, 11], SamplingParams(max_new_tokens=2001), 1, lambda r: None)
        long, long_done, long_result, _ = _collect(batcher, batcher.encode("Hello"),
                                                   SamplingParams(temperature=0, max_new_tokens=2000), 1)
        _, short_done, short_result, _ = _collect(batcher, batcher.encode("Hi"), SamplingParams(max_new_tokens=4), 2)
        assert short_done.wait(60) and short_result[0].completion_tokens <= 4  # not behind the long one
        assert not long_done.is_set()
        long.cancelled = True  # a client that went away: its row is freed, and the request answered as cancelled
        assert long_done.wait(30) and batcher.batch.n == 0
        assert isinstance(long_result[0], concurrent.futures.CancelledError)
    finally:
        batcher.stop()


def test_rows_that_their_first_token_finishes_do_not_stop_the_long_rows(engine):
    """A step decoded only when no newcomer finished at admission: a stream of one-token requests froze every long
    row of `redline serve` (300 of them moved a 1024-token request by one token)."""
    from redline.generation.transformers_engine import _DecodeBatch

    long = engine._item(0, engine.encode("Hello"), SamplingParams(temperature=0, max_new_tokens=200), 1)
    batch = _DecodeBatch(engine, 8, 256, 200)
    batch.step([long])
    for i in range(6):
        before = int(batch.n_gen[0])
        short = engine._item(1 + i, engine.encode("Hi"), SamplingParams(temperature=0, max_new_tokens=1), 2)
        finished = batch.step([short])
        assert [item.index for item, _ in finished] == [1 + i]  # the one-token request is answered at once
        assert batch.row_item[0] is long and int(batch.n_gen[0]) == before + 1  # and the long row went on


def test_an_empty_prompt_is_refused_by_generate_not_a_type_error(engine):
    with pytest.raises(RedlineError, match="a prompt has no tokens.*: prompt 1 of 2, ''"):
        engine.generate(["", "Hello"], SamplingParams(max_new_tokens=2), progress=False)


def test_chat_messages_to_a_tokenizer_without_a_chat_template_are_one_clear_error(engine, monkeypatch):
    """A base model's tokenizer has no chat template: transformers' ValueError was a traceback after the model loaded
    (generate gives every prompt as messages); raw text still goes through."""
    monkeypatch.setattr(engine.tokenizer, "chat_template", None)
    assert engine.generate(["Hello"], SamplingParams(max_new_tokens=2), progress=False)[0].completion_tokens
    with pytest.raises(RedlineError, match=r"its tokenizer has no chat template.*: prompt 2 of 2, 'Write a haiku"):
        engine.generate(["Hello", as_chat("Write a haiku.")], SamplingParams(max_new_tokens=2), progress=False)


def test_a_prompt_too_long_for_the_model_is_named_by_its_place_and_first_words(engine, monkeypatch):
    """One prompt too long failed a whole revise/improve/refine call saying only 'a prompt has N tokens'."""
    monkeypatch.setattr(engine.config, "max_position_embeddings", 24)
    long = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Write about rivers " + "and the sea " * 20}]
    with pytest.raises(RedlineError, match=r"the model takes at most 24: prompt 2 of 3, "
                                           r"'Write about rivers and the sea and the sea and the sea \.\.\.'"):
        engine.generate(["Hi", long, "Hello"], SamplingParams(max_new_tokens=2), progress=False)


def test_a_prompt_one_token_short_of_the_context_is_generated_and_one_of_the_context_is_refused(engine, monkeypatch):
    """The engines and the token-budgeting steps share one rule (``has_room``): a prompt of ``context - 1`` tokens
    leaves room for one new token, a prompt of ``context`` tokens none."""
    from redline.generation import has_room

    ids = engine.encode(as_chat("Write about rivers and the sea."))
    monkeypatch.setattr(engine.config, "max_position_embeddings", len(ids) + 1)
    [out] = engine.generate([as_chat("Write about rivers and the sea.")], SamplingParams(max_new_tokens=5), progress=False)
    assert out.completion_tokens == 1  # the one position left
    monkeypatch.setattr(engine.config, "max_position_embeddings", len(ids))
    with pytest.raises(RedlineError, match=f"a prompt has {len(ids)} tokens; the model takes at most {len(ids)}"):
        engine.generate([as_chat("Write about rivers and the sea.")], SamplingParams(max_new_tokens=5), progress=False)
    assert has_room(len(ids), len(ids) + 1) and not has_room(len(ids), len(ids)) and has_room(10**9, None)


def test_a_stop_string_of_multi_token_characters_stops_the_row_early(engine, monkeypatch):
    """The check read as many tokens as the stop string has characters: an emoji is two tokens here, so a
    ten-emoji stop string was never seen and the row decoded to its cap (the text was cut right afterwards)."""
    import redline.generation.transformers_engine as te

    stop = "\U0001f642" * 20
    script = engine.tokenizer.encode("Sure, here it is " + stop + " and more" * 60, add_special_tokens=False)
    assert len(engine.tokenizer.encode(stop, add_special_tokens=False)) > len(stop) + 4 + engine.stop_every

    def scripted(logits, temperature, top_p, uniforms):  # the row's next token from the script, whatever the model says
        return torch.tensor([script[min(int(g), len(script) - 1)] for g in steps], device=logits.device)

    steps, decoded = [0], []
    original = te._DecodeBatch._decode

    def decode(self):
        steps[0] = int(self.n_gen[0])
        decoded.append(1)
        return original(self)

    monkeypatch.setattr(te, "sample", scripted)
    monkeypatch.setattr(te._DecodeBatch, "_decode", decode)
    out = engine.generate(["Hello"], SamplingParams(temperature=1.0, max_new_tokens=200, stop=[stop]), progress=False)[0]
    assert out.text == "Sure, here it is " and out.finish_reason == "stop"
    assert len(decoded) < 60  # stopped within a check or two of the string, not decoded on to 200


def test_stopping_the_loop_answers_every_request_not_yet_finished(engine):
    batcher = engine.continuous(max_prompt_tokens=16, max_new_tokens=2000).start()
    running = [_collect(batcher, batcher.encode("Hello"), SamplingParams(temperature=0, max_new_tokens=2000), i)
               for i in range(12)]  # 8 in rows, 4 waiting
    time.sleep(0.5)
    batcher.stop()
    assert all(done.wait(10) for _, done, _, _ in running)
    assert all(isinstance(result[0], RuntimeError) and "stopped" in str(result[0]) for _, _, result, _ in running)
    with pytest.raises(RuntimeError, match="not running"):
        batcher.submit(batcher.encode("Hi"), SamplingParams(max_new_tokens=2), 1, lambda r: None)


def test_a_request_cancelled_before_it_takes_a_row_is_answered_as_cancelled(engine):
    """A cancelled request was dropped without an answer: a caller waiting on it (all but the server) waited forever."""
    batcher = engine.continuous(max_prompt_tokens=16, max_new_tokens=2000).start()
    try:
        busy = [_collect(batcher, batcher.encode("Hello"), SamplingParams(temperature=0, max_new_tokens=2000), i)
                for i in range(batcher.rows)]  # every row taken: the next waits
        waiting, done, result, _ = _collect(batcher, batcher.encode("Hi"), SamplingParams(max_new_tokens=4), 99)
        waiting.cancelled = True
        assert done.wait(30) and isinstance(result[0], concurrent.futures.CancelledError)
        for handle, *_ in busy:
            handle.cancelled = True
        assert all(d.wait(30) and isinstance(r[0], concurrent.futures.CancelledError) for _, d, r, _ in busy)
    finally:
        batcher.stop()


def test_a_request_submitted_as_the_loop_stops_is_answered(engine, monkeypatch):
    """`submit` checked that the loop ran, then queued: a stop between the two drained the inbox first, and the
    request queued after it was never answered."""
    batcher = engine.continuous(max_prompt_tokens=16, max_new_tokens=8).start()
    put = batcher.inbox.put

    def put_as_the_loop_stops(item):
        threading.Thread(target=batcher.stop).start()
        time.sleep(0.5)  # the loop sees the stop and drains its inbox meanwhile, unless it must wait for this put
        put(item)

    monkeypatch.setattr(batcher.inbox, "put", put_as_the_loop_stops)
    _, done, result, _ = _collect(batcher, batcher.encode("Hi"), SamplingParams(max_new_tokens=4), 1)
    assert done.wait(10) and isinstance(result[0], RuntimeError) and "stopped" in str(result[0])


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the loop ends on the second fault
def test_a_fault_in_the_decode_answers_every_request_once_and_those_already_finished_with_their_text(engine, monkeypatch):
    """A request finished at its first token was retired, then the same step's decode failed: nobody answered it.
    And a fault while making the fresh batch answered the failed rows a second time on the way out."""
    import redline.generation.transformers_engine as te

    batcher = engine.continuous(max_prompt_tokens=16, max_new_tokens=200).start()
    try:
        _, long_done, long_result, _ = _collect(batcher, batcher.encode("Hello"), SamplingParams(temperature=0, max_new_tokens=200), 1)
        deadline = time.monotonic() + 30
        while not (batcher.batch and batcher.batch.n) and time.monotonic() < deadline:  # the long one decoding
            time.sleep(0.01)
        decode, init = te._DecodeBatch._decode, te._DecodeBatch.__init__
        faults = {"decode": 1, "init": 1}

        def failing_decode(self):
            if faults["decode"] and self.retired:  # the step that admitted the one-token request
                faults["decode"] -= 1
                raise RuntimeError("decode fault")
            return decode(self)

        def failing_init(self, *args, **kwargs):
            if not faults["decode"] and faults["init"]:
                faults["init"] -= 1
                raise RuntimeError("no memory for a fresh batch")
            return init(self, *args, **kwargs)

        monkeypatch.setattr(te._DecodeBatch, "_decode", failing_decode)
        monkeypatch.setattr(te._DecodeBatch, "__init__", failing_init)
        answers = []
        short = batcher.submit(batcher.encode("Hi"), SamplingParams(temperature=0, max_new_tokens=1), 2, answers.append)
        assert long_done.wait(30)
        deadline = time.monotonic() + 30
        while not answers and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [type(a).__name__ for a in answers] == ["Completion"] and answers[0].completion_tokens == 1
        assert short.on_done is not None
    finally:
        batcher.stop()
    assert [str(r) for r in long_result] == ["decode fault"]  # once: not again when the loop ended


def test_a_fault_in_a_newcomers_prefill_answers_it_and_the_loop_goes_on(engine, monkeypatch):
    batcher = engine.continuous(max_prompt_tokens=16, max_new_tokens=8).start()
    try:
        with pytest.raises(RedlineError, match="the prompt has no tokens"):
            batcher.submit([], SAMPLED, 1, lambda r: None)
        prefill = engine._prefill

        def fails(*args, **kwargs):  # the first prefill dies (out of memory, say), later ones work
            monkeypatch.setattr(engine, "_prefill", prefill)
            raise RuntimeError("prefill failed")

        monkeypatch.setattr(engine, "_prefill", fails)
        _, done, result, _ = _collect(batcher, batcher.encode("Hello"), SamplingParams(max_new_tokens=4), 1)
        assert done.wait(30) and isinstance(result[0], RuntimeError)  # answered with the fault, not left waiting
        _, done, result, _ = _collect(batcher, batcher.encode("Hello"), SamplingParams(max_new_tokens=4), 1)
        assert done.wait(30) and result[0].completion_tokens <= 4
    finally:
        batcher.stop()


def _repeated_ngrams(ids, n):
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    return len(grams) - len(set(grams))


def test_no_repeat_ngram_forbids_repeats_within_a_completion_and_keeps_batch_independence(engine):
    free = SamplingParams(temperature=0, max_new_tokens=48)
    guarded = SamplingParams(temperature=0, max_new_tokens=48, no_repeat_ngram=3)
    loops = engine.generate(PROMPTS, free, progress=False)
    assert any(_repeated_ngrams(c.token_ids, 3) for c in loops)  # the random model loops without the guard
    out = engine.generate(PROMPTS, guarded, progress=False)
    assert all(_repeated_ngrams(c.token_ids, 3) == 0 for c in out)
    assert texts(out) != texts(loops)
    alone = [engine.generate([p], guarded, progress=False, seeds=[i])[0] for i, p in enumerate(PROMPTS)]
    assert texts(alone) == texts(out)


@pytest.mark.parametrize("settings, field, rule", [
    ({"no_repeat_ngram": 1}, "no_repeat_ngram", "must be 0 (off) or at least 2, got 1"),
    ({"temperature": -0.5}, "temperature", "must be a finite number, at least 0, got -0.5"),
    ({"temperature": float("inf")}, "temperature", "must be a finite number, at least 0, got inf"),  # NaN logits
    ({"temperature": float("nan")}, "temperature", "must be a finite number, at least 0, got nan"),
    ({"top_p": 0.0}, "top_p", "must be in (0, 1], got 0.0"),
    ({"max_new_tokens": 0}, "max_new_tokens", "must be at least 1, got 0"),
    ({"seed": 2**64}, "seed", f"must be within -2**63 and 2**64 - 1 (a 64-bit seed), got {2**64}"),  # torch's, late
])
def test_a_setting_out_of_bounds_is_refused_naming_its_field(settings, field, rule):
    # the field and rule apart: `revise`'s check_sampling names the flag (--top-p) with the same rule
    with pytest.raises(SamplingError) as refused:
        SamplingParams(**settings)
    assert (refused.value.field, refused.value.rule) == (field, rule)
    assert isinstance(refused.value, ValueError) and str(refused.value) == f"{field} {rule}"


def test_the_top_seed_samples_every_prompt_its_seed_plus_i_wrapping_as_torch_reads_negatives(engine):
    """SamplingParams takes seeds up to 2**64 - 1, but prompt i samples with seed + i: the second prompt's 2**64 was
    torch's 'Overflow when unpacking long long' once the model had loaded. It wraps to 0, as -1 is 2**64 - 1."""
    top = SamplingParams(temperature=1.0, max_new_tokens=6, seed=2**64 - 1)
    out = engine.generate(["Hello", "Hello"], top)
    assert [c.text for c in out] == [c.text for c in engine.generate(["Hello", "Hello"], top, seeds=[-1, 0])]


def _forward_logprobs(engine, prompt, token_ids, temperature=1.0):
    """log softmax(logits / temperature) at each completion position, from one forward pass of prompt + completion."""
    import torch.nn.functional as F

    ids = torch.tensor([engine.encode(prompt) + token_ids])
    with torch.no_grad():
        logits = engine.model(input_ids=ids).logits[0, -len(token_ids) - 1 : -1].float() / temperature
    return F.log_softmax(logits, dim=-1)


def test_logprobs_are_what_a_forward_pass_of_the_whole_sequence_gives(engine):
    """SamplingParams.logprobs: each token's log-probability at the row's temperature and the entropy, as
    one forward pass over prompt + completion computes them (PPO takes them as log π_old)."""
    for exact, temperature in ((True, 0.7), (False, 1.3), (False, 0.0)):
        with options(engine, exact=exact):
            params = SamplingParams(temperature=temperature, max_new_tokens=10, seed=2, logprobs=True)
            out = engine.generate(PROMPTS, params, progress=False)
        for prompt, c in zip(PROMPTS, out):
            assert len(c.logprobs) == len(c.entropies) == len(c.token_ids) == c.completion_tokens > 0
            logp = _forward_logprobs(engine, prompt, c.token_ids, temperature or 1.0)
            want = logp.gather(1, torch.tensor(c.token_ids)[:, None]).squeeze(1)
            assert torch.allclose(torch.tensor(c.logprobs), want, atol=1e-4)
            assert torch.allclose(torch.tensor(c.entropies), -(logp.exp() * logp).sum(-1), atol=1e-4)
    plain = engine.generate(PROMPTS, SamplingParams(max_new_tokens=10, seed=2), progress=False)
    with_logprobs = engine.generate(PROMPTS, SamplingParams(max_new_tokens=10, seed=2, logprobs=True), progress=False)
    assert texts(plain) == texts(with_logprobs)  # recording changes no token
    assert all(c.logprobs == [] and c.entropies == [] for c in plain)


def test_vllm_backend_refuses_logprobs_before_generating():
    from redline.generation.vllm_engine import VLLMEngine

    engine = object.__new__(VLLMEngine)  # no vLLM here: the refusal comes before the engine is used
    with pytest.raises(RedlineError, match="transformers backend only"):
        engine.generate(["hi"], SamplingParams(logprobs=True), progress=False)


def test_logprobs_follow_their_rows_when_rows_finish_apart_and_are_reused(engine):
    """Rows that end at different steps are freed and refilled (more prompts than rows): each
    completion's log-probabilities are still its own, as a forward pass gives them."""
    prompts = [f"Tell me about item {i}" + " please" * i for i in range(7)]
    first = engine.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=24, seed=4), progress=False)
    # a sampled completion is the same in any batch: make token k_i of completion i an end-of-sequence id
    ends = [c.token_ids[k] for c, k in zip(first, (9, 3, 14, 5, 20, 7, 11))]
    params = SamplingParams(temperature=1.0, max_new_tokens=24, seed=4, logprobs=True)
    with options(engine, max_batch=2, eos_ids=[*engine.eos_ids, *ends]):
        out = engine.generate(prompts, params, progress=False)
    assert len({c.completion_tokens for c in out}) > 4  # rows ended apart
    for prompt, c in zip(prompts, out):
        logp = _forward_logprobs(engine, prompt, c.token_ids)
        want = logp.gather(1, torch.tensor(c.token_ids)[:, None]).squeeze(1)
        assert torch.allclose(torch.tensor(c.logprobs), want, atol=1e-4)


def test_no_repeat_ngram_reads_each_admitted_row_own_tokens(engine):
    """With more prompts than rows, a row admitted into a freed slot bans only its own n-grams: each
    completion is what the prompt gives alone."""
    prompts = [f"Repeat after me {i}" + " again" * i for i in range(6)]
    params = SamplingParams(temperature=1.0, max_new_tokens=20, no_repeat_ngram=2, seed=7)
    first = engine.generate(prompts, params, progress=False)
    ends = [c.token_ids[k] for c, k in zip(first, (15, 4, 12, 6, 18, 9))]  # rows end apart, slots are reused
    with options(engine, eos_ids=[*engine.eos_ids, *ends]):
        alone = [engine.generate([p], params, seeds=[7 + i], progress=False)[0].token_ids for i, p in enumerate(prompts)]
        with options(engine, max_batch=2):
            together = [c.token_ids for c in engine.generate(prompts, params, progress=False)]
    assert len({len(t) for t in together}) > 3 and together == alone


def test_ban_repeats_reads_the_cache_row_it_is_given(engine):
    """A row admitted into slot 3 is judged by slot 3's tokens, not by slot 0's (position in the admitted list)."""
    from redline.generation.transformers_engine import _DecodeBatch, _Item

    batch = _DecodeBatch(engine, rows_cap=4, width=64, max_new=8)
    batch.out_tokens[0, :4] = torch.tensor([5, 6, 5, 6])  # slot 0: "5 6" then "5": banning would hit 6
    batch.n_gen[0] = 3
    item = _Item(0, [1], 0, SamplingParams(no_repeat_ngram=2), 8)
    logits = torch.zeros(1, engine.model.config.vocab_size)
    assert torch.isinf(batch._ban_repeats(logits.clone(), [item], torch.tensor([0]))[0, 6])
    assert not torch.isinf(batch._ban_repeats(logits.clone(), [item], torch.tensor([3]))).any()  # slot 3 is new


def test_prompt_ngrams_lets_a_copy_repeat_what_its_prompt_repeats_and_still_bans_new_loops(engine):
    """A revision copying an answer that restates a phrase must write it twice: with ``prompt_ngrams`` an
    n-gram the prompt holds is not banned; one the prompt does not hold still is."""
    from redline.generation.transformers_engine import _DecodeBatch, _Item

    batch = _DecodeBatch(engine, rows_cap=2, width=64, max_new=8)
    batch.out_tokens[0, :3] = torch.tensor([5, 6, 5])  # "5 6" then "5": a 6 would repeat the 2-gram (5, 6)
    batch.out_tokens[1, :3] = torch.tensor([7, 8, 7])  # "7 8" then "7": an 8 would repeat (7, 8)
    batch.n_gen[0] = batch.n_gen[1] = 3
    logits = torch.zeros(2, engine.model.config.vocab_size)
    prompt = [1, 5, 6, 9, 5, 6]  # the prompt repeats (5, 6), never holds (7, 8)
    old = [_Item(i, prompt, 0, SamplingParams(no_repeat_ngram=2), 8) for i in range(2)]
    new = [_Item(i, prompt, 0, SamplingParams(no_repeat_ngram=2, prompt_ngrams=True), 8) for i in range(2)]
    banned_old = torch.isinf(batch._ban_repeats(logits.clone(), old, torch.tensor([0, 1])))
    banned_new = torch.isinf(batch._ban_repeats(logits.clone(), new, torch.tensor([0, 1])))
    assert banned_old[0, 6] and banned_old[1, 8]
    assert not banned_new[0, 6] and banned_new[1, 8]
    assert int(banned_new.sum()) == 1
