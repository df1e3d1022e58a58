"""`redline generate` on tiny-random: response records keep the prompts' ids and meta, and a run
stopped part-way resumes to exactly what one uninterrupted run writes."""

import json

import pytest

from redline import RedlineError
from redline.cli import main
from redline.respond import GenerateConfig, generate_responses

PROMPTS = [{"id": f"t{i}", "prompt": f"Write about topic {i}.", "response": "old", "meta": {"topic": f"topic {i}"}} for i in range(5)]


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_generate_cli_writes_response_records(jsonl, tmp_path):
    out = tmp_path / "out.jsonl"
    assert main(["generate", "--model", "tiny-random", "--prompts", str(jsonl(PROMPTS)), "--out", str(out),
                 "--max-new-tokens", "6", "--source", "policy"]) == 0
    rows = lines(out)
    assert [r["id"] for r in rows] == [p["id"] for p in PROMPTS]
    assert all(r["source"] == "policy" and r["meta"]["topic"] for r in rows)
    assert all(r["response"] != "old" for r in rows)  # sampled anew, not copied


def test_a_stopped_run_resumes_to_what_one_run_writes(jsonl, tmp_path):
    prompts = str(jsonl(PROMPTS))
    config = GenerateConfig(model="tiny-random", prompts=prompts, max_new_tokens=6, chunk=2, seed=3)
    generate_responses(config, tmp_path / "whole.jsonl")

    part = tmp_path / "part.jsonl"
    generate_responses(GenerateConfig(**{**config.__dict__, "limit": 3}), part)  # "killed" after 3
    assert len(lines(part)) == 3
    generate_responses(config, part)
    assert lines(part) == lines(tmp_path / "whole.jsonl")


def test_more_responses_than_prompts_is_refused(jsonl, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("\n".join(json.dumps({"prompt": "p", "response": "r"}) for _ in range(9)) + "\n")
    with pytest.raises(RedlineError, match="holds 9 responses but .* only 5 prompts"):
        generate_responses(GenerateConfig(model="tiny-random", prompts=str(jsonl(PROMPTS))), out)
