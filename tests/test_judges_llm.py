"""The LLM judge against a real `redline serve` on loopback (no mock of the HTTP layer)."""

import json
import socket

import pytest

from redline import RedlineError
from redline.cli import main
from redline.generation import ScriptedEngine
from redline.judges import Item, parse_judge
from redline.judges.llm import OpenAIJudge, ResponseCache
from redline.serve import FlakyEngine, make_app, start_server


def shown(messages):
    """(Output (a), Output (b)) as the judge's template shows them."""
    user = messages[-1]["content"]
    first = user.split("## Output (a)\n", 1)[1].split("\n\n## Output (b)\n", 1)[0]
    second = user.split("## Output (b)\n", 1)[1].split("\n\n## Your answer", 1)[0]
    return first, second


def prefers_good(prompt, seed):
    """A judge model that knows quality: the output with GOOD in it wins."""
    first, second = shown(prompt)
    return "Output (a)" if "GOOD" in first else "Output (b)" if "GOOD" in second else "Output (a)"


@pytest.fixture
def serve_engine(tmp_path):
    """Start a server over an engine; yields a function engine -> (server, judge); stops them after."""
    running = []

    def start(engine, key=None, **judge_options):
        server = start_server(make_app(engine, "judge", api_key=key, batch_wait_ms=2))
        options = {"cache": str(tmp_path / "cache.sqlite"), "backoff": 0.01, "concurrency": 4, **judge_options}
        judge = OpenAIJudge("judge", server.url, **options)
        running.append((server, judge))
        return server, judge

    yield start
    for server, judge in running:
        judge.close()
        server.stop()


ITEMS = [Item(f"prompt {i}", f"answer {i} GOOD" if i % 2 else f"answer {i}", f"answer {i} GOOD" if i % 2 == 0 else f"other {i}")
         for i in range(6)]


def test_a_judge_that_knows_quality_is_consistent_in_both_orders(serve_engine):
    server, judge = serve_engine(ScriptedEngine(prefers_good))
    verdicts = judge.judge_many(ITEMS)
    assert [v.winner for v in verdicts] == ["b", "a", "b", "a", "b", "a"]
    assert all(v.detail["orders"]["ab"] == v.detail["orders"]["ba"] for v in verdicts)
    raw = json.loads(verdicts[0].raw)
    assert raw == {"ab": "Output (b)", "ba": "Output (a)"}
    assert server.app.state.stats["requests"] == 12  # two orders a pair


def test_the_order_swap_cancels_a_judge_that_always_answers_a(serve_engine, tmp_path):
    _, judge = serve_engine(ScriptedEngine(lambda prompt, seed: "A"))
    verdicts = judge.judge_many(ITEMS)
    assert [v.winner for v in verdicts] == ["tie"] * len(ITEMS)
    assert all(v.detail["orders"] == {"ab": "a", "ba": "b"} for v in verdicts)


def test_retries_ride_out_a_server_that_fails_first(serve_engine):
    flaky = FlakyEngine(ScriptedEngine(prefers_good), failures=2)
    server, judge = serve_engine(flaky, concurrency=1)
    verdicts = judge.judge_many(ITEMS[:1])
    assert verdicts[0].winner == "b"
    assert judge.stats["retries"] == 2 and flaky.calls == 4  # 2 failures, then both orders
    assert server.app.state.stats["requests"] == 4


def test_a_call_that_fails_for_good_is_invalid_not_a_loss(serve_engine):
    flaky = FlakyEngine(ScriptedEngine(["A"]), failures=1000)
    _, judge = serve_engine(flaky, retries=2)
    verdict = judge.judge_many(ITEMS[:1])[0]
    assert verdict.winner == "invalid"
    assert "503" in verdict.detail["error"] and "injected failure" in json.loads(verdict.raw)["ab"]
    assert judge.stats["failures"] == 2


def test_an_answer_that_does_not_parse_is_invalid(serve_engine):
    _, judge = serve_engine(ScriptedEngine(["I would rather not say."]))
    verdict = judge.judge_many(ITEMS[:1])[0]
    assert verdict.winner == "invalid" and "error" not in verdict.detail
    assert json.loads(verdict.raw)["ab"] == "I would rather not say."


def test_the_cache_saves_every_repeated_call(serve_engine):
    server, judge = serve_engine(ScriptedEngine(prefers_good))
    first = judge.judge_many(ITEMS)
    assert server.app.state.stats["requests"] == 12
    second = judge.judge_many(ITEMS)
    assert server.app.state.stats["requests"] == 12 and judge.stats["cache_hits"] == 12
    assert [v.winner for v in first] == [v.winner for v in second]
    # a new judge on the same cache file (a rerun) pays nothing either
    fresh = OpenAIJudge("judge", server.url, cache=judge.cache.path)
    fresh.judge_many(ITEMS)
    fresh.close()
    assert server.app.state.stats["requests"] == 12


def test_failures_are_not_cached(serve_engine):
    flaky = FlakyEngine(ScriptedEngine(prefers_good), failures=2)
    server, judge = serve_engine(flaky, retries=0, concurrency=1)
    assert judge.judge_many(ITEMS[:1])[0].winner == "invalid"
    assert judge.judge_many(ITEMS[:1])[0].winner == "b"


def test_cache_is_a_persistent_key_value_store(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    cache.put("k", "v")
    cache.put("k", "w")
    cache.close()
    again = ResponseCache(tmp_path / "c.sqlite")
    assert again.get("k") == "w" and again.get("missing") is None and len(again) == 1


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_server_is_one_clear_error_before_judging(tmp_path):
    judge = OpenAIJudge("judge", f"http://127.0.0.1:{_closed_port()}/v1", cache="off", timeout=2)
    with pytest.raises(RedlineError, match="is not reachable"):
        judge.check()
    judge.close()


def test_evaluate_cli_stops_before_judging_when_the_server_is_down(tmp_path, capsys):
    a = tmp_path / "a.jsonl"
    a.write_text(json.dumps({"id": "1", "prompt": "p", "response": "x"}) + "\n")
    judge = f"openai:judge@http://127.0.0.1:{_closed_port()}/v1?cache=off&timeout=2"
    assert main(["evaluate", "--a", str(a), "--b", str(a), "--judge", judge, "--out", str(tmp_path / "o")]) == 2
    assert "is not reachable" in capsys.readouterr().err
    assert not (tmp_path / "o" / "judgments.jsonl").exists()


def test_check_asks_a_busy_server_again_and_says_what_it_answered_last(tmp_path):
    import httpx

    answers = iter([httpx.Response(503, text="warming up"), httpx.Response(429, headers={"Retry-After": "0"}),
                    httpx.Response(200, json={"data": [{"id": "judge"}]})])
    judge = OpenAIJudge("judge", "http://judge.test/v1", cache="off", backoff=0.01)
    judge._client = httpx.Client(transport=httpx.MockTransport(lambda request: next(answers)))
    judge.check()  # a server at its concurrency bound or still loading was a failed evaluation
    assert judge.stats["retries"] == 2
    always = OpenAIJudge("judge", "http://judge.test/v1", cache="off", backoff=0.01, retries=2)
    always._client = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(503, text="down")))
    with pytest.raises(RedlineError, match="answered HTTP 503: down"):
        always.check()
    assert always.stats["retries"] == 2


def test_check_names_a_refused_key_and_an_unknown_model(serve_engine, tmp_path, monkeypatch):
    server, _ = serve_engine(ScriptedEngine(["A"]), key="sesame", api_key="sesame")
    monkeypatch.setenv("MY_JUDGE_KEY", "wrong")
    wrong = OpenAIJudge("judge", server.url, key_env="MY_JUDGE_KEY", cache="off")
    with pytest.raises(RedlineError, match="refused the API key.*MY_JUDGE_KEY"):
        wrong.check()
    wrong.close()
    other = OpenAIJudge("gpt-5", server.url, api_key="sesame", cache="off")
    with pytest.raises(RedlineError, match="does not serve 'gpt-5'; it serves: judge"):
        other.check()
    other.close()
    monkeypatch.delenv("MY_JUDGE_KEY")
    with pytest.raises(RedlineError, match="MY_JUDGE_KEY .* is not set"):
        OpenAIJudge("judge", server.url, key_env="MY_JUDGE_KEY")


def test_the_key_comes_from_the_environment(serve_engine, monkeypatch):
    server, _ = serve_engine(ScriptedEngine(["A"]), key="sesame", api_key="sesame")
    monkeypatch.setenv("OPENAI_API_KEY", "sesame")
    judge = parse_judge(f"openai:judge@{server.url}?cache=off")
    judge.check()
    judge.close()


def test_evaluate_end_to_end_over_http(serve_engine, tmp_path):
    server, _ = serve_engine(ScriptedEngine(prefers_good))
    rows_a = [{"id": str(i), "prompt": f"q{i}", "response": f"GOOD answer {i}" if i < 3 else f"meh {i}"} for i in range(4)]
    rows_b = [{"id": str(i), "prompt": f"q{i}", "response": f"plain answer {i}"} for i in range(4)]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps(r) + "\n" for r in rows_a))
    b.write_text("".join(json.dumps(r) + "\n" for r in rows_b))
    spec = f"openai:judge@{server.url}?cache={tmp_path / 'cache.sqlite'}"
    out = tmp_path / "eval"
    assert main(["evaluate", "--a", str(a), "--b", str(b), "--judge", spec, "--out", str(out), "--bootstrap", "100"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    # pairs 0-2: A has GOOD and wins both orders; pair 3: neither, the scripted judge says
    # "Output (a)" both times, the swap makes it a tie
    assert (summary["wins"], summary["ties"], summary["losses"]) == (3, 1, 0)
    assert summary["win_rate"] == pytest.approx(3.5 / 4)
    assert summary["position_consistency"] == pytest.approx(3 / 4)
    assert all(line and json.loads(line)["order"] == "both" for line in (out / "judgments.jsonl").read_text().splitlines())


def test_spec_options_reach_the_judge(tmp_path):
    judge = parse_judge(f"openai:gpt-4o-mini@http://localhost:9/v1?concurrency=2&retries=1&timeout=5&cache={tmp_path / 'c'}&max_tokens=8")
    assert (judge.model, judge.base_url, judge.concurrency, judge.retries, judge.max_tokens) == (
        "gpt-4o-mini", "http://localhost:9/v1", 2, 1, 8)
    assert judge.name == "openai:gpt-4o-mini@http://localhost:9/v1?max_tokens=8"  # it changes verdicts; the rest do not
    judge.close()
    plain = parse_judge("openai:gpt-4o-mini@http://localhost:9/v1?concurrency=2")
    assert plain.name == "openai:gpt-4o-mini@http://localhost:9/v1"
    plain.close()


def test_a_new_template_is_in_the_judge_s_name(monkeypatch):
    """A judgments file written under one template is not resumed under another (its answer cache was keyed by the
    template, its judgments file by the name only); the first template's files keep their names."""
    import redline.judges.llm as llm

    monkeypatch.setattr(llm, "PAIRWISE_VERSION", "pairwise-v2")
    judge = parse_judge("openai:gpt-4o-mini@http://localhost:9/v1?max_tokens=8")
    assert judge.name == "openai:gpt-4o-mini@http://localhost:9/v1?max_tokens=8&template=pairwise-v2"
    judge.close()
    plain = parse_judge("openai:gpt-4o-mini@http://localhost:9/v1")
    assert plain.name == "openai:gpt-4o-mini@http://localhost:9/v1?template=pairwise-v2"
    plain.close()


class SlowFirstEngine:
    """Takes ``delay`` seconds over its first call only: the judge's first ask times out."""

    def __init__(self, engine, delay):
        self.engine, self.delay, self.calls = engine, delay, 0

    def generate(self, prompts, params, seeds=None, progress=True):
        import time

        self.calls += 1
        if self.calls == 1:
            time.sleep(self.delay)
        return self.engine.generate(prompts, params, seeds=seeds, progress=progress)


def test_a_timed_out_call_is_retried(serve_engine):
    engine = SlowFirstEngine(ScriptedEngine(prefers_good), delay=1.0)
    _, judge = serve_engine(engine, concurrency=1, timeout=0.3, retries=8)
    verdict = judge.judge_many(ITEMS[:1])[0]
    assert verdict.winner == "b"
    assert judge.stats["retries"] >= 1 and judge.stats["failures"] == 0


def test_a_cache_path_that_is_no_sqlite_file_is_one_clear_error(tmp_path):
    # cache=FOLDER or cache=some.jsonl: a RedlineError naming the path, not sqlite3's traceback
    notes = tmp_path / "notes.jsonl"
    notes.write_text('{"not": "a database"}\n' * 100)
    for path in (tmp_path, notes):
        with pytest.raises(RedlineError, match=f"judge cache {path}: cannot use it as an sqlite file"):
            ResponseCache(path)
    assert notes.read_text() == '{"not": "a database"}\n' * 100
    with pytest.raises(RedlineError, match="cannot use it as an sqlite file"):
        parse_judge(f"openai:m@http://127.0.0.1:9/v1?cache={tmp_path}")
