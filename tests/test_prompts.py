"""Templates and parsers of redline.prompts not covered with their callers (the verdict parser's table is in
test_judges.py)."""

import pytest

from redline.prompts import parse_pairwise_verdict


@pytest.mark.parametrize("text", [
    "Output (a) and Output (b) are equally good.",
    "It is a tie between Output (a) and Output (b).",
    "Both Output (a) and Output (b) are equally bad: each misses the keyword.",
])
def test_a_tie_that_names_both_outputs_is_a_tie_not_invalid(text):
    """Naming both outputs made any answer invalid before the tie phrase was read."""
    assert parse_pairwise_verdict(text) == "tie"


@pytest.mark.parametrize("text, verdict", [
    ("Output (a) or Output (b)", "invalid"),  # both named, no tie said
    ("Output (a) is better than Output (b); they are not equally good.", "a"),  # a claim decides before any tie
])
def test_both_named_without_a_tie_is_still_invalid_and_a_claim_still_decides(text, verdict):
    assert parse_pairwise_verdict(text) == verdict
