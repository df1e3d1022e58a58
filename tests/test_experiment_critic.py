"""`redline experiment critic` end to end on tiny-random and the template simulator: a critic per
size, revisions of the test responses and of a second responder's, a table, a plot, and a rerun
that resumes instead of redoing."""

import json

import pytest

from redline import RedlineError
from redline.cli import main
from redline.simulate.build import BuildConfig, build


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sim")
    build(BuildConfig(out=folder, responder="template", prompts=8, test_prompts=4, k=2, seed=0, progress=False))
    return folder


def test_sizes_iterations_and_both_responders_are_judged_then_a_rerun_resumes(data, tmp_path, capsys):
    out = tmp_path / "exp"
    argv = ["experiment", "critic", "--data", str(data), "--model", "tiny-random", "--sizes", "2,4",
            "--iterations", "2", "--test-limit", "3", "--second-model", "tiny-random", "--max-steps", "1",
            "--revise-max-new-tokens", "8", "--response-max-new-tokens", "8", "--out", str(out)]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["sizes"]) == ["2", "4"]
    for sets in results["sizes"].values():
        assert set(sets) == {"test", "second"}
        for rows in sets.values():
            assert [r["iteration"] for r in rows] == [1, 2]
            assert all(r["wins"] + r["ties"] + r["losses"] + r["invalid"] == 3 for r in rows)
            assert all(0 <= r["parse_failures"] <= 3 for r in rows)
    second = [json.loads(line) for line in (out / "second_responses.jsonl").read_text().splitlines()]
    assert len(second) == 3 and all(r["source"] == "tiny-random@T=1.0" for r in second)
    assert "| test | 2 | 1 |" in (out / "results.md").read_text()
    assert (out / "win_rates.png").stat().st_size > 0

    # A rerun trains nothing and generates nothing again.
    stamps = [(out / f"size_{n}" / "critic" / "redline.json").stat().st_mtime for n in (2, 4)]
    second_text = (out / "second_responses.jsonl").read_text()
    assert main(argv) == 0
    assert [(out / f"size_{n}" / "critic" / "redline.json").stat().st_mtime for n in (2, 4)] == stamps
    assert (out / "second_responses.jsonl").read_text() == second_text


def test_a_size_larger_than_the_data_is_refused_before_any_training(data, tmp_path):
    with pytest.raises(RedlineError, match="--sizes asks for 999 records"):
        main(["--debug", "experiment", "critic", "--data", str(data), "--model", "tiny-random", "--sizes", "999",
              "--out", str(tmp_path / "exp")])
    assert not (tmp_path / "exp").exists()
