"""How much a project's annotators agree, how fast they work, and how often they match gold items.

The measures, each a small pure function with a hand-worked test (tests/test_app_quality.py):

- **pairwise agreement** on rankings: for two annotators who ranked the same answers, the share of
  answer pairs they order the same way (a tie agrees only with a tie), as InstructGPT measured its
  labelers (72.6% ± 1.5%); pooled over every pair of annotators on every item;
- **Krippendorff's α** (ordinal) on rankings: each (item, answer) is a unit, each annotator's rank
  a value, a tie's answers all at the mean of the places they share (mid-ranks: [0, 0, 1] and [0, 0, 2]
  are one ranking, whose last answer is third, as in [0, 1, 2]); α = 1 − D_o / D_e from the coincidence
  matrix (Krippendorff 2011, "Computing Krippendorff's alpha-reliability"). 1 is perfect agreement, 0
  what chance gives;
- **Cohen's κ** on pairs: for every two annotators, over the items both judged; the project's
  figure is their mean (Light's κ) over the pairs whose κ is defined, with the raw agreement rate
  beside it. κ is undefined for two annotators who gave one and the same label to everything they
  shared (always so when they agree on a single shared item), so with sparse overlap the mean
  leaves out exactly the agreeing pairs; hence also **Krippendorff's α** (nominal), which takes
  every item judged twice or more, whoever judged it;
- **gold accuracy**: per annotator, on items whose answer is known: a pair right or wrong, a
  ranking scored by its pairwise agreement with the gold ranks (a gold tie is matched only by a
  tie); a gold ranking that ties every answer is not scored: the form refuses that answer;
- per annotator: submitted, skipped, flagged, total and median time (an imported annotation
  without a time is not timed: ``seconds_spent``); for critique projects, how often a critic's
  draft was used and how much it was changed (words).
"""

from __future__ import annotations

import itertools
import statistics
from collections import Counter, defaultdict
from typing import Callable, Sequence

from redline.evaluate import cohen_kappa
from redline.simulate.annotators import pair_agreement


def krippendorff_alpha(units: Sequence[Sequence], metric: str = "ordinal") -> float | None:
    """Krippendorff's α over units, each the values the coders gave it (missing ones left out).

    Units with fewer than two values cannot be paired and are dropped. ``metric`` is ``nominal``
    (values may be any sortable labels, such as 'a' and 'b'), ``ordinal`` or ``interval``. None when
    no unit is pairable or the values never vary (D_e = 0).
    """
    pairable = [list(u) for u in units if len(u) >= 2]
    if not pairable:
        return None
    values = sorted({v for u in pairable for v in u})
    index = {v: i for i, v in enumerate(values)}
    size = len(values)
    o = [[0.0] * size for _ in range(size)]  # the coincidence matrix
    for unit in pairable:
        m = len(unit)
        for a, b in itertools.permutations(range(m), 2):
            o[index[unit[a]]][index[unit[b]]] += 1.0 / (m - 1)
    n_c = [sum(row) for row in o]
    n = sum(n_c)
    delta = _metric(metric, values, n_c)
    d_o = sum(o[c][k] * delta(c, k) for c in range(size) for k in range(size)) / n
    d_e = sum(n_c[c] * n_c[k] * delta(c, k) for c in range(size) for k in range(size)) / (n * (n - 1))
    return None if d_e == 0 else 1.0 - d_o / d_e


def _metric(metric: str, values: list[float], n_c: list[float]) -> Callable[[int, int], float]:
    if metric == "nominal":
        return lambda c, k: float(c != k)
    if metric == "interval":
        return lambda c, k: float(values[c] - values[k]) ** 2
    if metric == "ordinal":
        def ordinal(c: int, k: int) -> float:
            lo, hi = min(c, k), max(c, k)
            return (sum(n_c[lo:hi + 1]) - (n_c[c] + n_c[k]) / 2) ** 2
        return ordinal
    raise ValueError(f"unknown metric {metric!r} (nominal, ordinal or interval)")


def mid_ranks(ranks: Sequence[int]) -> list[float]:
    """Each answer's place, 0 the best, a tie's answers at the mean of the places they share: [0, 0, 1] and
    [0, 0, 2] (one ranking, numbered two ways) both give [0.5, 0.5, 2.0]."""
    return [sum(y < x for y in ranks) + (sum(y == x for y in ranks) - 1) / 2 for x in ranks]


def ranking_agreement(items: Sequence[dict[str, list[int]]]) -> dict:
    """items: per item, annotator → ranks. Pooled pairwise agreement and ordinal α (over ``mid_ranks``, so that
    a tie moves no answer below it: the answer two annotators both put last is one value, tie above it or not)."""
    agree = total = 0
    units: list[list[float]] = []  # mid-ranks
    for by_annotator in items:
        rankings = list(by_annotator.values())
        for a, b in itertools.combinations(rankings, 2):
            x, y = pair_agreement(a, b)
            agree, total = agree + x, total + y
        if len(rankings) >= 2:
            places = [mid_ranks(r) for r in rankings]
            units += [[p[i] for p in places] for i in range(len(places[0]))]
    return {"pairwise_agreement": agree / total if total else None, "answer_pairs": total,
            "krippendorff_alpha": krippendorff_alpha(units, "ordinal")}


def pair_agreement_kappa(items: Sequence[dict[str, str]]) -> dict:
    """items: per item, annotator → 'a' | 'b'. Mean pairwise Cohen's κ (Light's κ), raw agreement, nominal α."""
    by_pair: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for by_annotator in items:
        for x, y in itertools.combinations(sorted(by_annotator), 2):
            by_pair[(x, y)].append((by_annotator[x], by_annotator[y]))
    kappas = {}
    agree = total = 0
    for pair, labels in sorted(by_pair.items()):
        kappas[f"{pair[0]} / {pair[1]}"] = {"items": len(labels), "kappa": cohen_kappa([a for a, _ in labels], [b for _, b in labels]),
                                            "agreement": sum(a == b for a, b in labels) / len(labels)}
        agree += sum(a == b for a, b in labels)
        total += len(labels)
    defined = [k["kappa"] for k in kappas.values() if k["kappa"] is not None]
    return {"kappa": statistics.fmean(defined) if defined else None, "kappa_pairs": len(defined),
            "agreement": agree / total if total else None, "judged_twice": total, "pairs_of_annotators": kappas,
            "krippendorff_alpha": krippendorff_alpha([list(by.values()) for by in items], "nominal")}


def gold_score(task_type: str, gold: dict, payload: dict) -> float | None:
    """1 or 0 for a pair; for a ranking, the share of answer pairs ordered as the gold ranks order them.

    None (not scored) for a gold ranking that ties every answer: the form refuses that ranking.
    """
    if task_type == "pair":
        return float(payload["choice"] == gold["choice"])
    if len(set(gold["ranks"])) < 2:
        return None
    agree, total = pair_agreement(payload["ranks"], gold["ranks"])
    return agree / total


def seconds_spent(annotation) -> float | None:
    """An annotation's time in seconds; None where nobody timed it: an import without ``meta.seconds`` is
    stored as None (imports before schema revision 0004 stored 0.0, read as unknown too)."""
    if annotation.seconds is None or (not annotation.seconds and annotation.imported):
        return None
    return annotation.seconds


def project_quality(rows: Sequence[tuple], task_type: str) -> dict:
    """rows: (annotation, item, annotator name) for every annotation of one project."""
    people: dict[str, dict] = defaultdict(lambda: {"submitted": 0, "skipped": 0, "flagged": 0, "seconds": [], "gold": []})
    per_item: dict[int, dict] = defaultdict(dict)
    drafts = Counter()
    draft_edits: list[int] = []
    revision_edits: list[int] = []
    for annotation, item, name in rows:
        person = people[name]
        person[annotation.status] += 1
        if annotation.status != "submitted":
            continue
        seconds = seconds_spent(annotation)
        if seconds is not None:
            person["seconds"].append(seconds)
        payload, info = annotation.payload, annotation.info or {}
        score = gold_score(task_type, item.gold, payload) if item.gold is not None else None
        if score is not None:
            person["gold"].append(score)
        if task_type == "rank":
            per_item[item.id][name] = payload["ranks"]
        elif task_type == "pair":
            per_item[item.id][name] = payload["choice"]
        elif task_type == "critique":
            if "draft_edit_distance" in info:
                drafts["offered"] += 1
                drafts["used"] += bool(info.get("draft_used"))
                draft_edits.append(info["draft_edit_distance"]["critique"] + info["draft_edit_distance"]["revision"])
            if "revision_edit_distance" in info:
                revision_edits.append(info["revision_edit_distance"])
    annotators = {}
    for name, p in sorted(people.items()):
        seconds = p["seconds"]
        annotators[name] = {"submitted": p["submitted"], "skipped": p["skipped"], "flagged": p["flagged"],
                            "seconds_total": round(sum(seconds), 1) if seconds else None,
                            "seconds_median": round(statistics.median(seconds), 1) if seconds else None,
                            "gold_items": len(p["gold"]),
                            "gold_accuracy": round(statistics.fmean(p["gold"]), 4) if p["gold"] else None}
    out: dict = {"annotators": annotators}
    if task_type == "rank":
        out["agreement"] = ranking_agreement(list(per_item.values()))
    elif task_type == "pair":
        out["agreement"] = pair_agreement_kappa(list(per_item.values()))
    elif task_type == "critique":
        out["drafts"] = {"offered": drafts["offered"], "used": drafts["used"],
                         "mean_draft_edit_distance": statistics.fmean(draft_edits) if draft_edits else None,
                         "mean_revision_edit_distance": statistics.fmean(revision_edits) if revision_edits else None}
    return out
