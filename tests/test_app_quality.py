"""The app's quality measures against figures worked out by hand or published."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from redline.app.quality import (
    gold_score,
    krippendorff_alpha,
    pair_agreement_kappa,
    project_quality,
    ranking_agreement,
)

# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", section C: 4 observers, 12 units,
# missing values left out. Published: nominal 0.743, ordinal 0.815, interval 0.849.
RELIABILITY_DATA = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]
UNITS = [[row[u] for row in RELIABILITY_DATA if row[u] is not None] for u in range(12)]


@pytest.mark.parametrize("metric,published", [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_krippendorff_alpha_matches_the_published_example(metric, published):
    assert krippendorff_alpha(UNITS, metric) == pytest.approx(published, abs=5e-4)


def test_krippendorff_alpha_by_hand_and_its_limits():
    # Two coders, units (1,1), (2,2), (1,2). Coincidences: o11 = 2, o22 = 2, o12 = o21 = 1; n1 = n2 = 3, n = 6.
    # Nominal: D_o = (1 + 1) / 6 = 1/3; D_e = (3*3 + 3*3) / (6*5) = 18/30 = 0.6; alpha = 1 - (1/3)/0.6 = 4/9.
    assert krippendorff_alpha([[1, 1], [2, 2], [1, 2]], "nominal") == pytest.approx(4 / 9)
    assert krippendorff_alpha([[1, 1], [2, 2]], "ordinal") == 1.0
    assert krippendorff_alpha([[1], [2]]) is None  # nothing pairable
    assert krippendorff_alpha([[3, 3], [3, 3]]) is None  # no variation: undefined
    with pytest.raises(ValueError, match="unknown metric"):
        krippendorff_alpha(UNITS, "ratio-ish")


def test_ranking_agreement_pools_pairs_of_annotators():
    # Item 1: ann and bob agree on all 3 pairs of [0,1,2]; item 2: bob swaps the top two (2 of 3 pairs agree);
    # a lone ranking (item 3) adds nothing. Pooled: 5 / 6.
    items = [{"ann": [0, 1, 2], "bob": [0, 1, 2]}, {"ann": [0, 1, 2], "bob": [1, 0, 2]}, {"cat": [0, 1]}]
    out = ranking_agreement(items)
    assert out["pairwise_agreement"] == pytest.approx(5 / 6) and out["answer_pairs"] == 6
    assert 0 < out["krippendorff_alpha"] < 1
    assert ranking_agreement([{"ann": [0, 1, 1], "bob": [0, 1, 1]}])["pairwise_agreement"] == 1.0  # a tie agrees with a tie


def test_pair_kappa_by_hand():
    # ann vs bob on 4 items: a/a, b/b, a/b, a/a -> p_o = 3/4; ann: 3 a, 1 b; bob: 2 a, 2 b;
    # p_e = (3*2 + 1*2) / 16 = 1/2; kappa = (3/4 - 1/2) / (1/2) = 1/2.
    items = [{"ann": "a", "bob": "a"}, {"ann": "b", "bob": "b"}, {"ann": "a", "bob": "b"}, {"ann": "a", "bob": "a"}]
    out = pair_agreement_kappa(items)
    assert out["kappa"] == pytest.approx(0.5) and out["agreement"] == 0.75 and out["judged_twice"] == 4
    assert out["pairs_of_annotators"]["ann / bob"]["items"] == 4
    assert pair_agreement_kappa([{"ann": "a"}])["kappa"] is None


def test_gold_scores():
    assert gold_score("pair", {"choice": "a"}, {"choice": "a"}) == 1.0
    assert gold_score("pair", {"choice": "a"}, {"choice": "b"}) == 0.0
    assert gold_score("rank", {"ranks": [0, 1, 2]}, {"ranks": [1, 0, 2]}) == pytest.approx(2 / 3)


def test_project_quality_counts_time_gold_and_drafts():
    def row(name, status, payload=None, info=None, seconds=10.0, gold=None, item_id=1):
        return (SimpleNamespace(status=status, payload=payload or {}, info=info or {}, seconds=seconds),
                SimpleNamespace(id=item_id, gold=gold), name)

    rows = [row("ann", "submitted", {"choice": "a"}, seconds=4, gold={"choice": "a"}),
            row("bob", "submitted", {"choice": "b"}, seconds=8, gold={"choice": "a"}),
            row("ann", "submitted", {"choice": "b"}, seconds=6, item_id=2),
            row("bob", "skipped", item_id=2)]
    q = project_quality(rows, "pair")
    assert q["annotators"]["ann"] == {"submitted": 2, "skipped": 0, "flagged": 0, "seconds_total": 10, "seconds_median": 5.0,
                                      "gold_items": 1, "gold_accuracy": 1.0}
    assert q["annotators"]["bob"]["gold_accuracy"] == 0.0 and q["annotators"]["bob"]["skipped"] == 1
    assert q["agreement"]["agreement"] == 0.0
    crit = [row("ann", "submitted", {}, {"draft_used": True, "draft_edit_distance": {"critique": 2, "revision": 3},
                                         "revision_edit_distance": 4}),
            row("bob", "submitted", {}, {"draft_used": False, "revision_edit_distance": 6})]
    drafts = project_quality(crit, "critique")["drafts"]
    assert drafts == {"offered": 1, "used": 1, "mean_draft_edit_distance": 5, "mean_revision_edit_distance": 5}
    assert not math.isnan(drafts["mean_revision_edit_distance"])
