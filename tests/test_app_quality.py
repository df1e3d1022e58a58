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


def test_ranking_alpha_reads_ties_as_mid_ranks():
    # ann ties the top two answers, bob orders them; both put the third last. Mid-ranks: ann (0.5, 0.5, 2),
    # bob (0, 1, 2); units (0.5, 0), (0.5, 1), (2, 2). Coincidences o[0][.5] = o[.5][0] = o[.5][1] = o[1][.5] = 1,
    # o[2][2] = 2; n_0 = 1, n_.5 = 2, n_1 = 1, n_2 = 2, n = 6. Ordinal delta^2: (0,.5) = (.5,1) = (1,2) = 1.5^2 = 2.25,
    # (0,1) = 3^2 = 9, (.5,2) = 3^2 = 9, (0,2) = 4.5^2 = 20.25. D_o = 4 * 2.25 / 6 = 1.5;
    # D_e = 2 (2*2.25 + 9 + 2*20.25 + 2*2.25 + 4*9 + 2*2.25) / 30 = 6.6; alpha = 1 - 1.5 / 6.6.
    # Dense ranks (0, 0, 1) read the last answer as a disagreement (1 against 2): alpha was 0.528.
    expected = 1 - 1.5 / 6.6
    assert ranking_agreement([{"ann": [0, 0, 1], "bob": [0, 1, 2]}])["krippendorff_alpha"] == pytest.approx(expected)
    # one ranking numbered two legal ways ("equal ints = tie") is one figure
    assert ranking_agreement([{"ann": [0, 0, 2], "bob": [0, 1, 2]}])["krippendorff_alpha"] == pytest.approx(expected)


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


def test_gold_ranks_all_tied_score_nothing():
    # A gold ranking that ties every answer ([0, 0] after dense ranks) is a known answer the form refuses
    # ("every answer has the same rank ... or skip"): nobody can give it, so it must not count as a 0
    # (nor, with no ordered pair to score, as a 1). A partly tied gold still scores: [0, 0, 1] vs [0, 0, 1]
    # agrees on all 3 pairs; vs [0, 1, 2] on 2 of 3 (the gold tie of answers 1 and 2 is ordered).
    assert gold_score("rank", {"ranks": [0, 0]}, {"ranks": [0, 1]}) is None
    assert gold_score("rank", {"ranks": [0, 0, 1]}, {"ranks": [0, 0, 1]}) == 1.0
    assert gold_score("rank", {"ranks": [0, 0, 1]}, {"ranks": [0, 1, 2]}) == pytest.approx(2 / 3)
    rows = [(SimpleNamespace(status="submitted", payload={"ranks": [0, 1]}, info={}, seconds=5.0, imported=False),
             SimpleNamespace(id=1, gold={"ranks": [0, 0]}), "ann"),
            (SimpleNamespace(status="submitted", payload={"ranks": [0, 1]}, info={}, seconds=5.0, imported=False),
             SimpleNamespace(id=2, gold={"ranks": [0, 1]}), "ann")]
    ann = project_quality(rows, "rank")["annotators"]["ann"]
    assert ann["gold_items"] == 1 and ann["gold_accuracy"] == 1.0  # 1 of 1 scorable gold item, not 1 of 2


def test_pair_agreement_with_sparse_overlap():
    # Three annotators, each pair sharing one item: ann/bob a/a, ann/cat a/b, bob/cat b/b, and ann alone on a 4th.
    # Cohen's kappa of a pair on one item is undefined when they agree (p_e = 1) and 0 when they differ
    # (p_o = p_e = 0), so the mean over defined pairs is 0 from 1 of 3 pairs although 2 of 3 double
    # judgments agree. Krippendorff's alpha (nominal) takes missing values: units (a,a), (a,b), (b,b) are
    # the hand-worked 4/9 of test_krippendorff_alpha_by_hand_and_its_limits; the lone judgment drops out.
    items = [{"ann": "a", "bob": "a"}, {"ann": "a", "cat": "b"}, {"bob": "b", "cat": "b"}, {"ann": "b"}]
    out = pair_agreement_kappa(items)
    assert out["kappa"] == 0.0 and out["kappa_pairs"] == 1 and len(out["pairs_of_annotators"]) == 3
    assert out["agreement"] == pytest.approx(2 / 3) and out["judged_twice"] == 3
    assert out["krippendorff_alpha"] == pytest.approx(4 / 9)
    assert pair_agreement_kappa([{"ann": "a"}])["krippendorff_alpha"] is None


def test_imported_annotations_without_a_time_are_not_timed():
    # An imported record without meta.seconds is stored with None seconds (before schema revision 0004: 0.0):
    # unknown, not instant. ann's own answers took 4 and 8 seconds; the imported ones must not pull the median
    # to 4 or count in the total.
    def row(seconds, imported, item_id):
        return (SimpleNamespace(status="submitted", payload={"choice": "a"}, info={}, seconds=seconds, imported=imported),
                SimpleNamespace(id=item_id, gold=None), "ann")

    ann = project_quality([row(4.0, False, 1), row(8.0, False, 2), row(None, True, 3), row(0.0, True, 4)],
                          "pair")["annotators"]["ann"]
    assert ann["submitted"] == 4 and ann["seconds_total"] == 12.0 and ann["seconds_median"] == 6.0
    for untimed in (None, 0.0):
        only_imported = project_quality([row(untimed, True, 1)], "pair")["annotators"]["ann"]
        assert only_imported["seconds_total"] is None and only_imported["seconds_median"] is None
    timed_import = project_quality([row(30.0, True, 1)], "pair")["annotators"]["ann"]  # meta.seconds given: kept
    assert timed_import["seconds_total"] == 30.0


def test_project_page_says_what_its_kappa_averages():
    # The page of the sparse-overlap example above: the κ headline names how few pairs it averages, α beside it;
    # an annotator with no timed answer shows a dash, not 0 seconds.
    pytest.importorskip("fastapi")
    from pathlib import Path

    from jinja2 import Environment, FileSystemLoader

    import redline.app.web as web

    def row(name, choice, item_id, status="submitted"):
        return (SimpleNamespace(status=status, payload={"choice": choice}, info={}, seconds=5.0, imported=False),
                SimpleNamespace(id=item_id, gold=None), name)

    rows = [row("ann", "a", 1), row("bob", "a", 1), row("ann", "a", 2), row("cat", "b", 2), row("bob", "b", 3),
            row("cat", "b", 3), row("dan", None, 4, status="skipped")]
    env = Environment(loader=FileSystemLoader(str(Path(web.__file__).parent / "templates")), autoescape=True)
    env.filters["markdown"] = web.render_markdown
    project = SimpleNamespace(id=1, name="p", task_type="pair", overlap=2, status="ready", status_detail="", guidelines="",
                              critic=None)
    page = env.get_template("project.html").render(
        request=None, user=SimpleNamespace(name="root", role="admin"), csrf="x", project=project, n_gold=0, n_drafts=0,
        progress={"items": 4, "submitted": 6, "skipped": 1, "flagged": 0, "complete": 3, "needed": 8},
        quality=project_quality(rows, "pair"), export_kinds={"pair": ["preference"]}, error=None, notice=None)
    assert "the 1 of 3 pairs of annotators whose κ is defined): 0.000" in page
    assert "Krippendorff's α (nominal): 0.444" in page
    assert "<td>dan</td><td>0</td><td>1</td><td>0</td><td>–</td>" in page
