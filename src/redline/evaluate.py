"""Win rates: judge two sets of responses pair by pair, and say how sure the number is.

``redline evaluate --a A --b B --judge JUDGE --out OUT`` reads two files of ``response`` records,
matches them by ``id`` (by prompt when some record has no id), asks the judge about every pair
and writes, in OUT:

    config.json       the resolved ``EvaluateConfig``: the run can be repeated from its folder
    judgments.jsonl   one ``judgment`` record a pair, appended as they come; a rerun resumes
                      (and retries pairs whose call failed for good). ``winner`` is in A/B terms;
                      ``order`` says which was shown first (``ab``, ``ba``, or ``both`` for judges
                      that ask twice) and ``meta`` keeps the judge's details in the order shown
    summary.json      the numbers below
    report.md         the same, for people

The numbers: wins, ties and losses of A, the win rate of A (a tie counts ½, an invalid verdict
is left out: a judge that could not answer is no evidence either way), the invalid rate, a
percentile-bootstrap 95% interval over pairs (none from a single valid verdict; a Wilson score interval where every
verdict is the same, whose bootstrap is a point), position consistency (LLM judges ask in both
orders: the share of pairs whose two answers agree), the mean lengths of A and B in words, and a
**length-controlled win rate** after AlpacaEval 2 (Dubois et al. 2024, "Length-Controlled
AlpacaEval", arXiv 2404.04475): a logistic regression of the verdict on the tanh-squashed,
standardised length difference, read at zero difference. AlpacaEval's model also has a term per
instruction, estimated across many models' outputs; with two sets of responses there is nothing
to estimate it from, so it is left out. Judges that answer once (oracle, reward model) see the
two responses in a random order per pair (``order`` in the judgment), so a position bias
averages out instead of favouring one side.

**Iterations.** ``--a`` may be the output folder of ``redline revise`` / ``improve`` / ``refine``::

    DIR/iteration_1.jsonl ... DIR/iteration_N.jsonl
        {"id": "q1", "prompt": "...", "response": "<the iteration's output>",
         "response_0": "<the original response>", "meta": {...}}

one file per iteration, each a JSONL of records with at least ``id``, ``prompt`` and ``response``
(what that iteration wrote); the original response the loop started from is in ``response_0``
(or ``meta.response_0``). Other fields are ignored, and so is ``iteration_0.jsonl`` (the loop's
copy of its input, the original itself); ``improve/loop.py`` writes this layout. Every iteration is judged against the original (or against ``--b``
when given); each gets ``OUT/iteration_K/`` with its judgments and summary, and the top level
holds ``summary.json``, ``report.md`` and ``win_rate_curve.png``, the win rate by iteration with
its intervals. An iteration file with fewer rows than ``iteration_0.jsonl`` (a run stopped, or still
running, mid-iteration) is left out and said, in the report and in ``summary.json``'s ``unfinished``.

``--export-alpaca-eval FILE`` also writes the judgments in AlpacaEval's annotation format (a JSON
list, ``alpaca_eval_annotations``), so its tools read them: ``output_1``/``generator_1`` are B (its
reference), ``output_2``/``generator_2`` are A, and ``preference`` is 2 when A wins, 1 when B does,
1.5 for a tie and null when the verdict is invalid; ``alpaca_eval.metrics.get_winrate`` of the rows
is then this win rate. For a folder, every iteration's rows are in FILE, ``generator_2`` naming it.

``redline evaluate agreement`` measures how often two judges agree on the same pairs: the raw
agreement rate and Cohen's kappa over a/b/tie, on pairs both judged validly.

**How much better, beside how often.** Judges that score each response (the oracle's quality, a reward
model's score; kept in each judgment's ``meta``) also give the mean score of A and of B and the paired
difference A − B with a bootstrap interval over pairs (``score_difference``): a win rate says nothing of
the size of a gain, and with many ties (both answers at the same quality) the difference is what moves.
``redline evaluate table`` sets finished evaluations side by side (``table.md``, ``table.json``,
``win_rates.png``), each summarised again from its judgments with its own seed and resamples.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from redline import RedlineError
from redline.config import check_required, seed_field, write_config
from redline.judges import Item, Judge, check_records, swap_winner
from redline.records import (
    FieldError,
    Judgment,
    Response,
    append_records,
    numbered_jsonl_prefix,
    prompt_key,
    prompt_text,
    read_records,
    read_reports,
    write_records,
    write_text_atomic,
)

MIN_RESAMPLES = 50  # fewer: a 95% interval's ends are little more than the most extreme resamples (one gave a point)
# The resampled indices drawn at once, in all (rows x pairs): 256 rows of 200k pairs were 400 MB of indices and as much
# again of scores. Drawn in fewer rows a chunk, the generator gives the same indices in the same order.
RESAMPLE_CHUNK = 1 << 21
SCORE = {"a": 1.0, "tie": 0.5, "b": 0.0}  # the win of A; invalid has no score
ITERATION_RE = re.compile(r"^iteration_(\d+)\.jsonl$")
MAX_MISMATCHES = 5


# ============================================================================ statistics
# Pure functions of verdict lists and arrays; tests/test_evaluate_stats.py checks each by hand.


def count_verdicts(winners: Sequence[str]) -> dict[str, int]:
    c = Counter(winners)
    return {"wins": c["a"], "ties": c["tie"], "losses": c["b"], "invalid": c["invalid"], "pairs": len(winners)}


def scores_of(winners: Sequence[str]) -> np.ndarray:
    """A's score per valid verdict: 1 win, ½ tie, 0 loss (invalid verdicts left out)."""
    return np.array([SCORE[w] for w in winners if w != "invalid"], dtype=float)


def win_rate(winners: Sequence[str]) -> float | None:
    """(wins + ½ ties) / valid verdicts; None when no verdict is valid."""
    s = scores_of(winners)
    return float(s.mean()) if len(s) else None


def bootstrap_interval(
    scores: np.ndarray, resamples: int = 2000, seed: int = 0, level: float = 0.95, statistic=None
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``statistic`` (default: the mean) over resampled pairs.

    ``statistic`` takes an array of indices into the data and returns a number, so the same
    resampling serves the win rate and the length-controlled rate. None for fewer than two values.
    """
    n = len(scores)
    if n < 2 or resamples <= 0:  # one pair has no spread to resample: its "interval" would be a point, read as certainty
        return None
    rng = np.random.default_rng(seed)
    values = []
    rows = max(1, min(256, RESAMPLE_CHUNK // n))  # in chunks: resamples x n indices can be large
    for start in range(0, resamples, rows):
        idx = rng.integers(0, n, size=(min(rows, resamples - start), n))
        if statistic is None:
            values.append(scores[idx].mean(axis=1))
        else:
            values.append(np.array([statistic(row) for row in idx]))
    values = np.concatenate(values)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def win_rate_interval(scores: np.ndarray, resamples: int = 2000, seed: int = 0) -> tuple[float, float] | None:
    """The win rate's 95% interval: the percentile bootstrap over pairs, except where every verdict is the same (all
    wins, all losses or all ties), whose resamples are all one value and whose bootstrap is a point ([100, 100] from
    20 wins, read as certainty). There it is the Wilson score interval of that rate over the n verdicts (a tie a
    half), which 20 wins puts at [83.9, 100]."""
    n = len(scores)
    if n < 2 or resamples <= 0 or scores.min() != scores.max():
        return bootstrap_interval(scores, resamples, seed)
    return wilson_interval(float(scores[0]), n)


def wilson_interval(p: float, n: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a rate ``p`` observed over ``n`` independent trials: where a bootstrap's
    resamples are all one value (every verdict or comparison the same), the interval the bootstrap cannot give."""
    z = 1.959963984540054
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(np.clip(round(centre - half, 12), 0, 1)), float(np.clip(round(centre + half, 12), 0, 1))  # 1e-18 is 0


def cohen_kappa(x: Sequence[str], y: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters on the same items: (p_o - p_e) / (1 - p_e).

    None when it is undefined (no items, or both raters always give the same single label).
    """
    if len(x) != len(y):
        raise ValueError(f"kappa needs paired labels, got {len(x)} and {len(y)}")
    n = len(x)
    if n == 0:
        return None
    p_o = sum(a == b for a, b in zip(x, y)) / n
    cx, cy = Counter(x), Counter(y)
    p_e = sum(cx[k] * cy[k] for k in cx) / n**2
    if p_e == 1:
        return None
    return (p_o - p_e) / (1 - p_e)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iterations: int = 100) -> tuple[float, float]:
    """(intercept, slope) of P(y=1) = sigmoid(intercept + slope * x), y in [0, 1] (soft labels).

    Newton's method on the cross-entropy with an L2 penalty on the slope only: the penalty keeps
    a perfectly separating length term finite, and leaving the intercept free keeps the fit exact
    when x carries no information (then sigmoid(intercept) is the mean of y). numpy, not
    scikit-learn: two parameters are ten lines, not a dependency.
    """
    X = np.stack([np.ones_like(x), x], axis=1)
    theta = np.zeros(2)
    penalty = np.array([0.0, l2])
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-(X @ theta)))
        grad = X.T @ (p - y) + penalty * theta
        hess = (X * (p * (1 - p))[:, None]).T @ X + np.diag(penalty) + 1e-12 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        step *= min(1.0, 5.0 / max(np.abs(step).max(), 1e-300))  # damp wild first steps
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(theta[0]), float(theta[1])


def length_features(len_a: np.ndarray, len_b: np.ndarray) -> np.ndarray:
    """AlpacaEval 2's length term: tanh of the length difference over its standard deviation."""
    d = np.asarray(len_a, float) - np.asarray(len_b, float)
    sd = d.std()
    return np.tanh(d / sd) if sd > 0 else np.zeros_like(d)


def length_controlled_win_rate(scores: np.ndarray, len_a: np.ndarray, len_b: np.ndarray) -> tuple[float | None, float]:
    """(win rate at zero length difference, the length coefficient), after AlpacaEval 2.

    ``scores`` are A's scores (1, ½, 0) of valid verdicts and the lengths of those same pairs.
    """
    scores = np.asarray(scores, float)
    if len(scores) == 0:
        return None, 0.0
    if np.all(scores == scores[0]):  # all wins (or all losses): the fit would run off to infinity
        return float(scores[0]), 0.0
    intercept, slope = fit_logistic(length_features(len_a, len_b), scores)
    return float(1 / (1 + np.exp(-intercept))), slope


def agreement(x: Sequence[str], y: Sequence[str]) -> dict[str, Any]:
    """How two judges' verdicts on the same pairs agree; pairs either judged invalid are left out."""
    if len(x) != len(y):
        raise ValueError(f"agreement needs paired verdicts, got {len(x)} and {len(y)}")
    both = [(a, b) for a, b in zip(x, y) if a != "invalid" and b != "invalid"]
    labels = ["a", "tie", "b"]
    table = {a: {b: sum(1 for p in both if p == (a, b)) for b in labels} for a in labels}
    return {
        "pairs": len(x),
        "both_valid": len(both),
        "agreement": sum(a == b for a, b in both) / len(both) if both else None,
        "kappa": cohen_kappa([a for a, _ in both], [b for _, b in both]),
        "table": table,
    }


def word_count(text: str) -> int:
    return len(re.findall(r"[^\W_]+(?:['’][^\W_]+)*", text))


def summarize(judgments: Sequence[Judgment], resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Every number of the report, from judgments (winner in A/B terms).

    The judgments are taken in one fixed order (by id, then texts), so the bootstrap draws the same pairs
    however they came: a reordered --a file, or a judgments file whose retried pairs come last, gives the
    same intervals."""
    judgments = sorted(judgments, key=lambda j: (j.id or "", prompt_key(j.prompt), j.a, j.b, j.order, j.winner))
    winners = [j.winner for j in judgments]
    out: dict[str, Any] = count_verdicts(winners)
    valid = [j for j in judgments if j.winner != "invalid"]
    scores = scores_of(winners)
    out["win_rate"] = win_rate(winners)
    out["ci95"] = win_rate_interval(scores, resamples, seed)
    out["invalid_rate"] = out["invalid"] / len(winners) if winners else None
    len_a = np.array([word_count(j.a) for j in valid], float)
    len_b = np.array([word_count(j.b) for j in valid], float)
    lc, slope = length_controlled_win_rate(scores, len_a, len_b)
    out["lc_win_rate"] = lc
    out["length_coefficient"] = slope
    if lc is not None and len(scores) > 1:
        feats = length_features(len_a, len_b)

        def lc_of(idx):
            s = scores[idx]
            if np.all(s == s[0]):
                return float(s[0])
            return 1 / (1 + np.exp(-fit_logistic(feats[idx], s)[0]))

        # Fewer resamples than the plain rate: each is a fit, and an interval to 2 digits needs few. Every verdict the
        # same: every resample's fit is that verdict, a point ([100, 100] from 20 wins); the LC rate is the plain one
        # there, and so is its interval (Wilson's)
        same = scores.min() == scores.max()
        out["lc_ci95"] = out["ci95"] if same else bootstrap_interval(scores, min(resamples, 500), seed, statistic=lc_of)
    else:
        out["lc_ci95"] = None
    out["mean_words_a"] = float(np.mean([word_count(j.a) for j in judgments])) if judgments else None
    out["mean_words_b"] = float(np.mean([word_count(j.b) for j in judgments])) if judgments else None
    # Position: judges that ask both orders report how often the two agree; judges that answer
    # once report how often the response shown first won (½ is no bias).
    both = [j.meta["orders"] for j in judgments if j.order == "both" and isinstance(j.meta.get("orders"), dict)]
    both = [o for o in both if "invalid" not in o.values()]
    out["position_consistency"] = sum(o["ab"] == o["ba"] for o in both) / len(both) if both else None
    once = [j for j in valid if j.order in ("ab", "ba")]
    first = [SCORE[j.winner if j.order == "ab" else swap_winner(j.winner)] for j in once]
    out["first_shown_win_rate"] = float(np.mean(first)) if first else None
    out.update(score_difference(valid, resamples, seed))
    out["bootstrap_resamples"] = resamples
    return out


# The judges' own scores each verdict keeps, in the order shown: the oracle's quality, a reward model's score.
SCORE_DETAILS = ("quality", "scores")


def score_difference(judgments: Sequence[Judgment], resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Where every verdict keeps the judge's two scores (``meta.quality``: the oracle; ``meta.scores``: a reward
    model), their means for A and B and the paired difference A − B with a bootstrap 95% interval over pairs:
    how much better, beside how often. Nothing for judges that keep no scores (an LLM's verdict)."""
    for key in SCORE_DETAILS:
        shown = [j.meta.get(key) for j in judgments]
        if not judgments or not all(isinstance(s, list) and len(s) == 2 for s in shown):
            continue
        # meta is in the order shown: the first score is B's when B was shown first.
        a = np.array([s[0] if j.order != "ba" else s[1] for j, s in zip(judgments, shown)], float)
        b = np.array([s[1] if j.order != "ba" else s[0] for j, s in zip(judgments, shown)], float)
        return {"score": key, "mean_score_a": float(a.mean()), "mean_score_b": float(b.mean()),
                "score_difference": float((a - b).mean()),
                "score_difference_ci95": bootstrap_interval(a - b, resamples, seed)}
    return {}


# ============================================================================ pairs


@dataclass
class Pair:
    id: str
    prompt: Any
    a: str
    b: str
    meta: dict[str, Any] = field(default_factory=dict)


def pair_texts(pair) -> tuple[str, str, str]:
    """What a verdict answers: its prompt and its two responses (a ``Pair`` or a ``Judgment``)."""
    return prompt_key(pair.prompt), pair.a, pair.b


def _short(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def match_pairs(
    a: Sequence[Response], b: Sequence[Response], *, a_name: str = "A", b_name: str = "B", skip_invalid: bool = False
) -> tuple[list[Pair], list[str]]:
    """Pair the records of A and B by id (by prompt when a record has no id), in A's order.

    Returns (pairs, problems). A record without a partner, or an id whose prompts differ, is a
    problem: a ``RedlineError`` listing the first few, unless ``skip_invalid`` (then skipped).
    """
    by_id = all(r.id is not None for r in a) and all(r.id is not None for r in b)
    problems: list[str] = []

    def key(r: Response) -> str:
        return r.id if by_id else prompt_key(r.prompt)

    if not by_id:
        for records, name in ((a, a_name), (b, b_name)):
            seen = Counter(key(r) for r in records)
            prompts = {key(r): r.prompt for r in records}  # a text prompt may start with "[": the key is no chat to parse
            for k, n in seen.items():
                if n > 1:
                    problems.append(f"{name}: the prompt {_short(prompt_text(prompts[k]))!r} "
                                    f"appears {n} times; give the records ids to match them")
        if problems:
            raise RedlineError("cannot match records by prompt:\n  " + "\n  ".join(problems[:MAX_MISMATCHES]))
    b_by_key = {key(r): r for r in b}
    a_keys = {key(r) for r in a}
    what = "id" if by_id else "prompt"
    pairs = []
    for r in a:
        k = key(r)
        other = b_by_key.get(k)
        label = repr(k) if by_id else repr(_short(prompt_text(r.prompt)))
        if other is None:
            problems.append(f"{what} {label} is in {a_name} but not in {b_name}")
            continue
        if by_id and prompt_key(other.prompt) != prompt_key(r.prompt):
            problems.append(
                f"id {label}: the prompts differ: {_short(prompt_text(r.prompt))!r} in {a_name}, "
                f"{_short(prompt_text(other.prompt))!r} in {b_name}"
            )
            continue
        pid = r.id if by_id else "p" + hashlib.sha1(k.encode()).hexdigest()[:12]
        pairs.append(Pair(pid, r.prompt, r.response, other.response, {**other.meta, **r.meta}))
    for r in b:
        if key(r) not in a_keys:
            label = repr(key(r)) if by_id else repr(_short(prompt_text(r.prompt)))
            problems.append(f"{what} {label} is in {b_name} but not in {a_name}")
    if problems and not skip_invalid:
        more = f"\n  ... {len(problems) - MAX_MISMATCHES} more" if len(problems) > MAX_MISMATCHES else ""
        raise RedlineError(
            f"{a_name} and {b_name} do not match ({len(problems)} problems; --skip-invalid judges the "
            f"{len(pairs)} pairs that do):\n  " + "\n  ".join(problems[:MAX_MISMATCHES]) + more
        )
    return pairs, problems


def pair_order(seed: int, pair_id: str) -> str:
    """Which side a single-order judge sees first: random, but fixed by (seed, pair), so a
    resumed or shortened run shows every pair the way it did before."""
    return random.Random(f"{seed}:{pair_id}").choice(["ab", "ba"])


# ============================================================================ judging


def same_judge(recorded: str, name: str) -> bool:
    """Whether judgments by ``recorded`` are by the judge named ``name``: the same name, or a reward model's folder
    spelt another way (``reward:rm``, ``reward:./rm``, its absolute path) with the same options (``spec_options``).
    The run's fingerprint compared the folder's content; the name keeps the path as it was typed."""
    from redline.config import MODEL_SPECS, named_path, spec_options

    if recorded == name:
        return True
    if not (recorded.startswith(MODEL_SPECS) and name.startswith(MODEL_SPECS)):
        return False
    if spec_options(recorded) != spec_options(name):
        return False
    then, now = named_path(recorded), named_path(name)
    try:
        return then is not None and now is not None and os.path.samefile(then, now)
    except OSError:  # not there (a path relative to another folder): another judge, as far as can be told
        return False


def _read_done(path: Path, judge: Judge, pairs: Sequence[Pair]) -> tuple[dict[str, Judgment], str]:
    """Judgments an earlier run of this evaluation left in ``path``, by pair id, and the judge's name as the file
    holds it (``judge.name`` for a new file), which new judgments take so that the file names one judge."""
    wanted = {p.id: p for p in pairs}
    done: dict[str, Judgment] = {}
    name = judge.name
    for number, row in numbered_jsonl_prefix(path):
        try:
            j = Judgment.from_dict(row)
        except FieldError as e:
            raise RedlineError(f"{path}:{number}: {e}; delete the file to start over") from None
        if not same_judge(j.judge, judge.name):
            raise RedlineError(
                f"{path} holds judgments by {j.judge!r}, not {judge.name!r}: use another --out, or delete it"
            )
        name = j.judge
        pair = wanted.get(j.id)
        if pair is None:
            continue  # a pair of an earlier, larger run (--limit): kept in the file, left out here
        # a verdict answers its prompt as well as its two responses
        if pair_texts(j) != pair_texts(pair):
            raise RedlineError(
                f"{path}: pair {j.id!r} was judged on another prompt or other responses than these: use another --out, "
                "or delete it"
            )
        done[j.id] = j  # a later line (a retried failure) replaces an earlier one
    return done, name


def judge_pairs(
    pairs: Sequence[Pair], judge: Judge, out_file: Path, *, seed: int = 0, chunk: int = 64, progress: bool = True,
    label: str = "",
) -> list[Judgment]:
    """Judge every pair not already in ``out_file``, appending as it goes; return all, in pair order. ``label``
    opens the bar's description (``iteration 2/5: ``), where one command judges several sets.

    Pairs an earlier run could not judge because a call failed for good (``meta.error``) are
    tried again; answers that did not parse are kept (asking again would cost and say the same).
    """
    done, name = _read_done(out_file, judge, pairs)
    todo = [p for p in pairs if p.id not in done or (done[p.id].winner == "invalid" and "error" in done[p.id].meta)]
    if todo:
        judge.check()
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=f"{label}judging with {judge.name}", unit="pair", file=sys.stderr)
    for start in range(0, len(todo), chunk):
        batch = todo[start:start + chunk]
        orders = ["both" if judge.both_orders else pair_order(seed, p.id) for p in batch]
        items = [
            Item(p.prompt, p.b, p.a, p.meta) if order == "ba" else Item(p.prompt, p.a, p.b, p.meta)
            for p, order in zip(batch, orders)
        ]
        verdicts = judge.judge_many(items)
        if len(verdicts) != len(items):
            raise RuntimeError(f"judge {judge.name} returned {len(verdicts)} verdicts for {len(items)} pairs")
        new = []
        for p, order, v in zip(batch, orders, verdicts):
            winner = swap_winner(v.winner) if order == "ba" else v.winner
            new.append(Judgment(prompt=p.prompt, a=p.a, b=p.b, winner=winner, judge=name, order=order,
                                raw=v.raw, id=p.id, meta=v.detail))
        append_records(out_file, new)
        done.update((j.id, j) for j in new)
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    return [done[p.id] for p in pairs]


# ============================================================================ the command


@dataclass
class EvaluateConfig:
    """`redline evaluate`: everything a run needs; written to OUT/config.json.

    The judgments file checks itself on a rerun (the judge's name, each pair's two texts), so the
    responses and ``--limit`` may change between runs: a grown revise folder or a longer file is judged
    where it is new and read back where it is not."""

    a: str = field(metadata={"required": True, "result": False,
                             "help": "response records (file), or a revise/improve/refine output folder"})
    judge: str = field(metadata={"required": True, "help": "oracle, oracle:noisy, reward:RUN_OR_MODEL, openai:MODEL@BASE_URL"})
    out: str = field(metadata={"required": True, "result": False, "help": "output folder"})
    b: str | None = field(default=None, metadata={"result": False, "help": "response records to compare with (optional for a folder)"})
    seed: int = seed_field("order of each pair, bootstrap resamples")
    limit: int | None = field(default=None, metadata={"min": 1, "result": False, "help": "judge only the first N pairs"})
    skip_invalid: bool = field(default=False, metadata={"result": False, "help": "skip bad records and unmatched pairs"})
    bootstrap: int = field(default=2000, metadata={"min": 0, "max": 1_000_000, "result": False,
                                                   "help": "bootstrap resamples for the 95% interval (0: none; "
                                                           f"else at least {MIN_RESAMPLES})"})
    max_invalid: float = field(default=0.1, metadata={"min": 0, "max": 1, "result": False, "help":
        "the largest share of invalid verdicts (a judge that failed or answered nothing usable) that still exits 0"})
    progress: bool = field(default=True, metadata={"result": False, "help": "show a progress bar"})
    export_alpaca_eval: str | None = field(default=None, metadata={"result": False,
        "help": "also write the judgments to this JSON file in AlpacaEval's annotation format"})


def read_responses(path: str, skip_invalid: bool = False) -> list[Response]:
    return read_records(path, "response", skip_invalid=skip_invalid)  # type: ignore[return-value]


def iteration_files(folder: str | Path) -> list[tuple[int, Path]]:
    """(k, path) of every ``iteration_K.jsonl`` in a folder with K >= 1, by k; [] if it has none.

    ``iteration_0.jsonl`` (the loop's copy of its input) is the original itself: not judged."""
    folder = Path(folder)
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := ITERATION_RE.match(p.name)) and int(m.group(1)) > 0]
    return sorted(found)


def read_iteration(path: Path, skip_invalid: bool = False) -> tuple[list[Response], list[Response]]:
    """(the iteration's responses, the originals) of one ``iteration_K.jsonl`` (layout: module docstring)."""
    from redline.records import _parse_rows

    first_line: dict[str, int] = {}

    def parse(obj: Any, number: int) -> tuple[Response, Response]:
        record = Response.from_dict(obj)
        if record.id is None:
            raise FieldError("id", "missing (every record of an iteration file needs one)")
        original = obj.get("response_0", record.meta.get("response_0"))
        if not isinstance(original, str):
            raise FieldError("response_0", "missing: the original response goes in response_0 or meta.response_0")
        if first_line.setdefault(record.id, number) != number:  # pairs are matched by id: a second would take its place
            raise FieldError("id", f"{record.id!r} again (first on line {first_line[record.id]})")
        return record, Response(prompt=record.prompt, response=original, id=record.id, meta=record.meta)

    rows = _parse_rows(path, parse, skip_invalid=skip_invalid, limit=None, report=None)
    return [r for r, _ in rows], [o for _, o in rows]


def _write_outputs(out: Path, summary: dict[str, Any], report: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")  # `evaluate table` reads it
    write_text_atomic(out / "report.md", report)


def percent(x: float | None) -> str:
    """A share as "12.3%", "–" when there is none."""
    return "–" if x is None else f"{100 * x:.1f}%"


def _ci(ci) -> str:
    return "–" if not ci else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _score_cell(s: dict[str, Any]) -> str:
    """The mean scores and their paired difference: ``0.287 → 0.341, +0.054 [+0.017, +0.093]``. (A noisy oracle
    judge keeps the oracle's own quality, not what its annotator perceived.)"""
    if s.get("score_difference") is None:
        return "–"
    ci = s.get("score_difference_ci95")
    interval = f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else ""
    return f"{s['mean_score_b']:.3f} → {s['mean_score_a']:.3f}, {s['score_difference']:+.3f}{interval}"


# the numbers of a table's row (``_cells``): a row of an earlier table.json must hold them
TABLE_NUMBERS = ("wins", "ties", "losses", "invalid", "win_rate", "ci95", "lc_win_rate", "position_consistency",
                 "mean_words_a", "mean_words_b")


def _cells(s: dict[str, Any]) -> str:
    return (
        f"{s['wins']} | {s['ties']} | {s['losses']} | {s['invalid']} | {percent(s['win_rate'])} | "
        f"{_ci(s['ci95'])} | {percent(s['lc_win_rate'])} | {percent(s['position_consistency'])} | "
        f"{_words(s['mean_words_a'])} / {_words(s['mean_words_b'])} | {_score_cell(s)} |"
    )


def _words(x: float | None) -> str:
    """A mean word count, "–" when there is none (not 0: no response measured is not an empty one)."""
    return "–" if x is None else f"{x:.0f}"


def table_row(label: str, s: dict[str, Any]) -> str:
    return f"| {label} | {_cells(s)}"


_HEADS = ("A wins | ties | B wins | invalid | win rate of A | 95% CI | LC win rate | position consistency | words A / B "
          "| score (oracle quality or reward) B → A, A − B [95% CI] |")
_RULE = "---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- | --- |"
TABLE_HEAD = f"| | {_HEADS}\n| --- | {_RULE}"

REPORT_NOTES = """
Win rate = (wins + ½ ties) / valid verdicts; invalid verdicts (the judge could not answer) are left
out and counted apart. The 95% interval is a percentile bootstrap over pairs ({resamples} resamples; – with
fewer than two valid verdicts; a Wilson score interval where every verdict is the same, whose bootstrap is a point).
The length-controlled (LC) win rate follows AlpacaEval 2 (arXiv 2404.04475): a logistic regression
of the verdict on tanh(length difference / its sd), read at zero difference. Position consistency
(judges that ask in both orders) is the share of pairs whose two answers agree; a disagreement is
scored a tie. Judges that answer once saw each pair in a random order (first-shown win rate: {first}).
Where the judge keeps a score per response (the oracle's quality, a reward model's score), the last
column gives their means and the paired difference A − B, with a bootstrap interval over pairs.
"""


def _report(title: str, lines: list[str], rows: list[str], summary: dict[str, Any], first: str | None = None) -> str:
    """``first``: the first-shown win rate as the notes give it (default: ``summary``'s own)."""
    first = percent(summary.get("first_shown_win_rate")) if first is None else first
    notes = REPORT_NOTES.format(resamples=summary["bootstrap_resamples"], first=first)
    return f"# {title}\n\n" + "".join(f"- {line}\n" for line in lines) + f"\n{TABLE_HEAD}\n" + "\n".join(rows) + "\n" + notes


def evaluate(config: EvaluateConfig, judge: Judge | None = None) -> dict[str, Any]:
    """Run one evaluation (or an iteration curve, for a folder) and write OUT; return the summary.

    The judge spec is parsed first, the files are read and matched next, then the judge is
    checked (a server that does not answer fails here), and only then does judging start; nothing
    is judged twice across reruns. A judge passed in is the caller's: it is not closed here.
    """
    check_required(config)  # built in Python: flags and config files were checked as they were read
    if 0 < config.bootstrap < MIN_RESAMPLES:  # one resample's "95% interval" was a point beside another win rate
        raise RedlineError(f"--bootstrap {config.bootstrap}: a 95% interval needs at least {MIN_RESAMPLES} resamples "
                           "(0 for none)")
    if config.export_alpaca_eval:
        check_export_path(config.export_alpaca_eval)
    owned = judge is None
    judge = judge if judge is not None else _parse(config.judge)
    try:
        if Path(config.a).is_dir() and iteration_files(config.a):
            return _evaluate_curve(config, judge)
        return _evaluate_files(config, judge)
    finally:
        if owned:
            judge.close()


def evaluate_iterations(config: EvaluateConfig, judge: Judge | None = None) -> dict[str, Any]:
    """Judge every ``iteration_K.jsonl`` of the folder ``config.a`` against the original; draw the curve."""
    if not (Path(config.a).is_dir() and iteration_files(config.a)):
        raise RedlineError(f"{config.a} is not a folder of iteration_K.jsonl files (K >= 1)")
    return evaluate(config, judge)


def _parse(spec: str) -> Judge:
    from redline.judges import parse_judge

    return parse_judge(spec)


def _start(config: EvaluateConfig) -> Path:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    write_config(out / "config.json", config)
    return out


def files_pairs(a_path: str, b_path: str, skip_invalid: bool, limit: int | None
                ) -> tuple[list[Response], list[Response], list[Pair], list[str]]:
    """A's and B's records, the first ``limit`` pairs matched between them, and what did not match."""
    a, b = read_responses(a_path, skip_invalid), read_responses(b_path, skip_invalid)
    pairs, problems = match_pairs(a, b, a_name=a_path, b_name=b_path, skip_invalid=skip_invalid)
    return a, b, pairs[:limit] if limit is not None else pairs, problems


def _evaluate_files(config: EvaluateConfig, judge: Judge) -> dict[str, Any]:
    if config.b is None:
        raise RedlineError("--b is needed unless --a is a folder of iteration_K.jsonl files")
    a, b, pairs, problems = files_pairs(config.a, config.b, config.skip_invalid, config.limit)
    if problems:
        print(f"skipped {len(problems)} unmatched records (first: {problems[0]})", file=sys.stderr)
    if not pairs:
        raise RedlineError(f"no pairs to judge between {config.a} and {config.b}")
    judge.check()
    check_records(judge, pairs, config.a)
    out = _start(config)
    judgments = judge_pairs(pairs, judge, out / "judgments.jsonl", seed=config.seed, progress=config.progress)
    summary = {"judge": judge.name, "a": config.a, "b": config.b, "seed": config.seed,
               **summarize(judgments, config.bootstrap, config.seed), "reads": read_reports([config.a, config.b]),
               "unmatched": len(problems), "unmatched_first": problems[0] if problems else None}
    lines = [f"A: `{config.a}`", f"B: `{config.b}`", f"judge: `{judge.name}`",
             f"pairs: {summary['pairs']} (invalid: {summary['invalid']}, {percent(summary['invalid_rate'])})"]
    if problems:  # --skip-invalid: what was not judged, kept beside the figures it did not enter
        lines.append(f"unmatched records skipped: {len(problems)} (first: {problems[0]})")
    _write_outputs(out, summary, _report("Win rate of A against B", lines, [table_row("A vs B", summary)], summary))
    if config.export_alpaca_eval:
        write_alpaca_eval(config.export_alpaca_eval,
                          alpaca_eval_annotations(judgments, generator_name(a, config.a), generator_name(b, config.b)))
    return summary


def unfinished_iterations(folder: str | Path) -> dict[int, tuple[int, int]]:
    """{k: (rows, rows of the input)} for each ``iteration_K.jsonl`` holding fewer rows than the loop's input
    (``iteration_0.jsonl``): an iteration a stopped run, or one still running, has not finished."""
    from redline.records import iter_raw

    def rows(path: Path) -> int:  # a torn last line (the loop killed mid-append) is no record yet
        raw = [row for _, row in iter_raw(path)]
        return len(raw) - bool(raw and isinstance(raw[-1], FieldError))

    given = Path(folder) / "iteration_0.jsonl"
    if not given.exists():
        return {}
    expected = rows(given)
    counts = {k: rows(path) for k, path in iteration_files(folder)}
    return {k: (n, expected) for k, n in counts.items() if n < expected}


def _evaluate_curve(config: EvaluateConfig, judge: Judge) -> dict[str, Any]:
    unfinished = unfinished_iterations(config.a)
    files = [(k, path) for k, path in iteration_files(config.a) if k not in unfinished]
    for k, (n, expected) in unfinished.items():
        print(f"redline: iteration {k} is unfinished ({n} of {expected} records in iteration_{k}.jsonl): left out; "
              "judge it when its run has finished: rerun this command (it judges only what is new)", file=sys.stderr)
    if not files:
        raise RedlineError(f"{config.a}: no finished iteration to judge (iteration 1 holds "
                           f"{unfinished[min(unfinished)][0]} of {unfinished[min(unfinished)][1]} records)")
    baseline = read_responses(config.b, config.skip_invalid) if config.b else None
    plan = []
    for k, path in files:  # read and match everything before judging anything
        responses, originals = read_iteration(path, config.skip_invalid)
        b_name = config.b or f"{path.name} (response_0)"
        pairs, problems = match_pairs(responses, baseline or originals, a_name=str(path), b_name=b_name,
                                      skip_invalid=config.skip_invalid)
        if problems:
            print(f"iteration {k}: skipped {len(problems)} unmatched records", file=sys.stderr)
        pairs = pairs[: config.limit] if config.limit is not None else pairs
        if not pairs:
            raise RedlineError(f"{path}: no pairs to judge")
        plan.append((k, pairs))
    judge.check()
    for k, pairs in plan:
        check_records(judge, pairs, str(dict(files)[k]))
    out = _start(config)
    curve, annotations = [], []
    for k, pairs in plan:
        sub = out / f"iteration_{k}"
        judgments = judge_pairs(pairs, judge, sub / "judgments.jsonl", seed=config.seed, progress=config.progress,
                                label=f"iteration {k}/{plan[-1][0]}: ")
        b_name = generator_name(baseline, config.b) if baseline else f"{Path(config.a).name}/iteration_0"
        annotations += alpaca_eval_annotations(judgments, f"{Path(config.a).name}/iteration_{k}", b_name)
        s = {"iteration": k, **summarize(judgments, config.bootstrap, config.seed)}
        _write_outputs(sub, s, _report(f"Iteration {k} against the original", [f"judge: `{judge.name}`"],
                                        [table_row(f"iteration {k}", s)], s))
        curve.append(s)
    against = config.b or "the original responses (response_0)"
    summary = {"judge": judge.name, "a": config.a, "b": config.b, "seed": config.seed, "iterations": curve,
               "reads": read_reports([config.b, *(str(path) for _, path in files)]),
               "unfinished": {str(k): {"records": n, "of": expected} for k, (n, expected) in unfinished.items()}}
    plot_curve(curve, out / "win_rate_curve.png",
               title=f"win rate against {Path(config.b).name if config.b else 'the original'}")
    lines = [f"iterations: `{config.a}` ({len(curve)} files)", f"against: {against}", f"judge: `{judge.name}`",
             "curve: `win_rate_curve.png`"]
    if unfinished:
        lines.append(f"left out, unfinished: iteration {', '.join(str(k) for k in unfinished)}")
    rows = [table_row(f"iteration {s['iteration']}", s) for s in curve]
    _write_outputs(out, summary, _report("Win rate of each iteration against the original", lines, rows, curve[-1],
                                         first="per iteration, in iteration_K/summary.json"))
    if config.export_alpaca_eval:
        write_alpaca_eval(config.export_alpaca_eval, annotations)
    return summary


# ============================================================================ AlpacaEval's format

ALPACA_EVAL_PREFERENCE = {"a": 2.0, "b": 1.0, "tie": 1.5, "invalid": None}


def alpaca_eval_annotations(judgments: Sequence[Judgment], generator_a: str, generator_b: str) -> list[dict[str, Any]]:
    """Judgments as AlpacaEval's annotations: B is ``output_1`` (its reference), A is ``output_2``.

    A chat prompt's ``instruction`` is its last user message (AlpacaEval's instructions are single
    turns); the whole prompt stays in ``prompt``, beside the record's ``id``.
    """
    rows = []
    for j in judgments:
        row = {"instruction": prompt_text(j.prompt), "output_1": j.b, "generator_1": generator_b,
               "output_2": j.a, "generator_2": generator_a, "annotator": j.judge,
               "preference": ALPACA_EVAL_PREFERENCE[j.winner], "raw_completion": j.raw, "id": j.id}
        if not isinstance(j.prompt, str):
            row["prompt"] = j.prompt
        rows.append(row)
    return rows


def generator_name(responses: Sequence[Response], path: str) -> str:
    """Who wrote a set of responses: their one ``source`` if they agree on it, else the file's name."""
    sources = {r.source for r in responses}
    return sources.pop() if len(sources) == 1 and None not in sources else Path(path).stem


def check_export_path(path: str | Path) -> None:
    """Before judging: a file can be written at ``path`` (not a folder, nor under a file), not after every verdict."""
    path = Path(path)
    above = next((p for p in path.absolute().parents if p.exists()), None)
    if path.is_dir() or (above is not None and not above.is_dir()):
        where = f"is a folder: name the file to write (such as {path / 'annotations.json'})" if path.is_dir() else \
            f"is under {above}, which is a file, not a folder"
        raise RedlineError(f"--export-alpaca-eval {path} {where}")


def write_alpaca_eval(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write atomically (a temporary file renamed into place), as AlpacaEval writes annotations: a JSON list."""
    write_text_atomic(path, json.dumps(rows, indent=2, ensure_ascii=False))


def curve_series(curve: Sequence[dict[str, Any]], key: str, ci_key: str) -> tuple[list[float], list[float], list[float]]:
    """One series of the curve in percent: the values, and the distances down and up to their 95% interval's ends.

    NaN where there is nothing to draw: a missing value breaks the line (not bridged to the next iteration), a missing
    interval draws no bar (a zero-width bar with its caps read as a certain point)."""
    nan = float("nan")
    y = [nan if s[key] is None else 100 * s[key] for s in curve]
    lo = [100 * (s[key] - s[ci_key][0]) if s[key] is not None and s[ci_key] else nan for s in curve]
    hi = [100 * (s[ci_key][1] - s[key]) if s[key] is not None and s[ci_key] else nan for s in curve]
    return y, lo, hi


def plot_curve(curve: Sequence[dict[str, Any]], path: Path, title: str = "win rate") -> Path:
    """The win rate (and the length-controlled rate) by iteration, with 95% intervals, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    ks = [s["iteration"] for s in curve]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    series = (("win_rate", "ci95", "win rate", "o-", 0.0), ("lc_win_rate", "lc_ci95", "length-controlled", "s--", 0.06))
    drawn = False
    for key, ci_key, label, style, shift in series:  # shifted a little so the two intervals stay apart
        y, lo, hi = curve_series(curve, key, ci_key)
        if np.isnan(y).all():
            continue
        ax.errorbar([k + shift for k in ks], y, yerr=[lo, hi], fmt=style, capsize=4, label=label)
        drawn = True
    ax.axhline(50, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("win rate (%)")
    ax.set_xticks(ks)
    ax.set_ylim(0, 100)
    ax.set_title(title)
    if drawn:
        ax.legend()
    else:  # every verdict invalid: an empty legend was a matplotlib warning, and the blank plot said nothing of why
        ax.text(0.5, 0.75, "no valid verdict: no win rate to draw", transform=ax.transAxes, ha="center", color="grey")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# ============================================================================ agreement


def read_judgments(path: str | Path, *, own: bool = True) -> list[Judgment]:
    """The judgments of a file; where a pair appears twice (a retried failure), the later line wins.

    ``own``: a file this redline writes as it judges (an evaluation folder's), whose torn last line a kill left is
    cut off so that judging resumes cleanly; a user's file (``own=False``) is only read, never changed, and a line
    that is not JSON is refused with its line number."""
    from redline.records import iter_raw

    latest: dict[Any, Judgment] = {}
    rows = numbered_jsonl_prefix(path) if own else iter_raw(path)
    for number, row in rows:
        try:
            if isinstance(row, FieldError):
                raise row
            j = Judgment.from_dict(row)
        except FieldError as e:
            raise RedlineError(f"{path}:{number}: {e}") from None
        latest[(j.judge, j.id if j.id is not None else prompt_key(j.prompt))] = j
    return list(latest.values())


def judgments_by_judge(paths: Sequence[str | Path], *, own: bool = False) -> dict[str, dict[str, Judgment]]:
    """Judgments from one or more files, grouped by judge, then by pair id (the prompt if none); ``own`` as
    ``read_judgments``'s (a user's files are read, never changed)."""
    grouped: dict[str, dict[str, Judgment]] = {}
    for path in paths:
        if not Path(path).is_file():
            raise RedlineError(f"no such judgments file: {path}")
        for j in read_judgments(path, own=own):
            grouped.setdefault(j.judge, {})[j.id if j.id is not None else prompt_key(j.prompt)] = j
    return grouped


def agreement_of(first: dict[str, Judgment], second: dict[str, Judgment]) -> dict[str, Any]:
    """Agreement of two judges on the pairs both judged (by id)."""
    ids = [i for i in first if i in second]
    if not ids:
        raise RedlineError("the two judges share no pairs (no id in common)")
    # one id over other texts (two evaluations of other files, both numbered q1, q2 ...) is two questions, not one
    other = [i for i in ids if pair_texts(first[i]) != pair_texts(second[i])]
    if other:
        raise RedlineError(f"{len(other)} of the {len(ids)} ids the two judges share name other prompts or responses "
                           f"in each (first: {other[0]!r}): agreement is measured on the same pairs")
    return agreement([first[i].winner for i in ids], [second[i].winner for i in ids])


@dataclass
class AgreementConfig:
    """`redline evaluate agreement`: two judges on the same pairs, or two judges' judgments files."""

    out: str = field(metadata={"required": True, "result": False, "help": "output folder"})
    judges: str | None = field(default=None, metadata={"help": "two judge specs, comma-separated: J1,J2"})
    a: str | None = field(default=None, metadata={"result": False, "help": "response records"})
    b: str | None = field(default=None, metadata={"result": False, "help": "response records to compare with"})
    judgments: str | None = field(default=None, metadata={
        "help": "instead of judging: judgments file(s), FILE[,FILE], by exactly two judges"})
    seed: int = seed_field("order of each pair")
    limit: int | None = field(default=None, metadata={"min": 1, "result": False, "help": "judge only the first N pairs"})
    skip_invalid: bool = field(default=False, metadata={"result": False, "help": "skip bad records and unmatched pairs"})


def evaluate_agreement(
    judges: Sequence[str] | None = None,
    a: str | None = None,
    b: str | None = None,
    out: str | Path = "agreement",
    *,
    judgments: Sequence[str] | None = None,
    seed: int = 0,
    limit: int | None = None,
    skip_invalid: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Agreement of two judges: judge A vs B with each (``out/judge_1``, ``out/judge_2``, resumable),
    or read existing judgments files (each path stripped of the spaces around it: ``--judgments "a, b"``);
    write ``out/agreement.json``."""
    out = Path(out)
    judgments = [p for p in (str(x).strip() for x in judgments or ()) if p]
    if judgments:
        given = [flag for flag, value in (("--judges", judges), ("--a", a), ("--b", b), ("--limit", limit),
                                          ("--skip-invalid", skip_invalid)) if value]
        if given:  # they judge anew; read beside files of verdicts already made, they were left unused without a word
            raise RedlineError(f"--judgments reads verdicts already made; {', '.join(given)} "
                               f"{'is' if len(given) == 1 else 'are'} for judging anew: give one or the other")
        grouped = judgments_by_judge(judgments)
        if len(grouped) != 2:
            raise RedlineError(f"agreement needs judgments by exactly two judges; found {len(grouped)}: {', '.join(grouped)}")
        (n1, first), (n2, second) = grouped.items()
    else:
        if not judges or len(judges) != 2 or not a or not b:
            raise RedlineError("agreement needs --judges J1,J2 with --a and --b, or --judgments FILE[,FILE]")
        pairs = files_pairs(a, b, skip_invalid, limit)[2]
        built: list[Judge] = []
        try:  # both judges parsed and checked, and the records checked for both, before the first judges anything
            for spec in judges:
                built.append(_parse(spec))
                built[-1].check()
                check_records(built[-1], pairs, a)
            results = []
            for i, (spec, judge) in enumerate(zip(judges, built), start=1):
                config = EvaluateConfig(a=a, b=b, judge=spec, out=str(out / f"judge_{i}"), seed=seed, limit=limit,
                                        skip_invalid=skip_invalid, bootstrap=0, progress=progress)
                evaluate(config, judge)
                (name, by_id), = judgments_by_judge([Path(config.out) / "judgments.jsonl"], own=True).items()
                results.append((name, by_id))
        finally:
            for judge in built:
                judge.close()
        # this run's pairs only: a judgments file that an earlier, longer run (a larger --limit) left holds more
        ids = {p.id for p in pairs}  # every pair has one (match_pairs)
        results = [(name, {k: j for k, j in by_id.items() if k in ids}) for name, by_id in results]
        (n1, first), (n2, second) = results
    result = {"judges": [n1, n2], **agreement_of(first, second)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "agreement.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


# ----------------------------------------------------------------------------- a reward model on rankings


@dataclass
class RankingsEvalConfig:
    """`redline evaluate rankings`: a reward model's accuracy on ranked (or preference) data."""

    out: str = field(metadata={"required": True, "result": False, "help": "output folder (summary.json)"})
    model: str = field(default="", metadata={"required": True, "help": "reward model: a `redline train reward` run or a hub "
        "sequence-classification model with one output"})
    data: str = field(default="", metadata={"required": True, "help": "rankings or preferences (.jsonl)"})
    held_out_of: str | None = field(default=None, metadata={"help": "a `redline train reward` run on this file: score only "
        "the prompts it held out (its --eval-split and --seed), at its --max-length"})
    max_length: int | None = field(default=None, metadata={"min": 8, "help": "tokens a scored text keeps (its end; "
        "default: the length a redline run trained at, 2048 for other models); --held-out-of takes that run's"})
    against: str | None = field(default=None, metadata={"help": "a second reward model scored on the same texts: its "
        "figures, and the difference (--model minus this) with a paired interval over prompts"})
    limit: int | None = field(default=None, metadata={"min": 1, "result": False, "help": "the first N records"})
    skip_invalid: bool = field(default=False, metadata={"result": False, "help": "skip bad records instead of stopping"})


def evaluate_rankings(config: RankingsEvalConfig) -> dict[str, Any]:
    """Score every response of every ranking and count how often the model orders a decisive pair
    as the labels do, each figure beside its ceiling, with intervals over prompts
    (``train.reward.comparison_accuracy``: what `train reward` reports on its held-out prompts); with
    ``against``, a second model's figures on the same texts and the paired difference
    (``train.reward.accuracy_difference``). Writes OUT/summary.json, and OUT/scores.jsonl: each ranking with
    its responses' scores (``against_scores`` too), to read beside the figures."""
    from redline.judges.reward import RewardJudge
    from redline.models import check_reward_model, run_config, run_info
    from redline.train.reward import (accuracy_difference, comparison_accuracy, read_comparisons_and_all_tied,
                                      split_of_run, tied_beside)

    check_required(config)  # built in Python: flags and config files were checked as they were read
    check_reward_model(config.model, "--model")
    if config.against:
        check_reward_model(config.against, "--against")
    max_length = config.max_length
    rankings, tied = read_comparisons_and_all_tied(config.data, limit=config.limit, skip_invalid=config.skip_invalid)
    if config.held_out_of:
        trained = run_config(config.held_out_of) if run_info(config.held_out_of).get("kind") == "reward" else {}
        if not trained:
            raise RedlineError(f"--held-out-of {config.held_out_of}: not a `redline train reward` run folder")
        if not Path(trained["data"]).exists():
            raise RedlineError(f"--held-out-of {config.held_out_of}: that run read {trained['data']}, which is not there "
                               "from here; run this where that run was trained (its data path is relative to it)")
        if not os.path.samefile(trained["data"], config.data) or trained.get("eval_data"):
            raise RedlineError(f"--held-out-of {config.held_out_of}: that run held out prompts of {trained['data']}"
                               f"{' (it was given --eval-data)' if trained.get('eval_data') else ''}, not of {config.data}")
        if trained.get("limit") != config.limit:
            raise RedlineError(f"--held-out-of {config.held_out_of}: that run read --limit {trained.get('limit')}, "
                               f"this one {config.limit}; the held-out prompts are chosen from what was read")
        _, rankings = split_of_run(rankings, trained, run_info(config.held_out_of).get("metrics", {}))
        if not rankings:
            raise RedlineError(f"--held-out-of {config.held_out_of}: that run held out no prompt of {config.data} (its "
                               f"--eval-split {trained['eval_split']}): there is no held-out ranking to score")
        tied = tied_beside(tied, rankings)[1]  # as that run counted its held-out all-tied ones
        max_length = trained["max_length"]
    if not rankings:
        raise RedlineError(f"{config.data}: no ranking to score")

    def scored(model: str, length: int | None) -> tuple[list[list[float]], int]:  # each ranking's scores, the length read at
        from tqdm import tqdm

        judge = RewardJudge(model, max_length=length)
        judge.check()
        per_ranking = []
        with tqdm(total=sum(len(r.responses) for r in rankings), desc=f"scoring with {model}", unit="text",
                  file=sys.stderr) as bar:
            for start in range(0, len(rankings), 16):
                chunk = rankings[start:start + 16]
                flat = judge.score([(r.prompt, y) for r in chunk for y in r.responses])
                for r in chunk:
                    per_ranking.append(flat[:len(r.responses)])
                    flat = flat[len(r.responses):]
                bar.update(sum(len(r.responses) for r in chunk))
        bad = [i for i, s in enumerate(per_ranking) if not all(np.isfinite(s))]
        if bad:  # NaN compares false both ways: each of its comparisons counted wrong, an accuracy that means nothing
            raise RedlineError(f"{model} scored NaN or infinity on {len(bad)} of {len(rankings)} rankings of {config.data} "
                               f"(first: the prompt {_short(prompt_text(rankings[bad[0]].prompt))!r}): its weights give no number (a training run that "
                               "diverged?), so it has no accuracy to measure")
        return per_ranking, judge.max_length

    scores, read_at = scored(config.model, max_length)
    summary = {"model": config.model, "data": config.data, "held_out_of": config.held_out_of,
               "prompts": len({prompt_key(r.prompt) for r in rankings}), "rankings": len(rankings),
               "max_length": read_at, **comparison_accuracy(rankings, scores, tied)}
    other = None
    if config.against:
        other, _ = scored(config.against, read_at)  # the very texts the first model read
        summary["against"] = {"model": config.against, **comparison_accuracy(rankings, other, tied)}
        summary.update(accuracy_difference(rankings, scores, other))
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    write_records(out / "scores.jsonl", [
        {"prompt": r.prompt, "responses": r.responses, "ranks": r.ranks, "scores": [round(x, 6) for x in s],
         **({"against_scores": [round(x, 6) for x in other[i]]} if other is not None else {}),
         **({"meta": r.meta} if r.meta else {})}
        for i, (r, s) in enumerate(zip(rankings, scores))])
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


# ============================================================================ tables


@dataclass
class TableConfig:
    """`redline evaluate table`: finished evaluations side by side, as a table and a plot."""

    out: str = field(metadata={"required": True, "result": False, "help": "output folder (table.md, table.json, win_rates.png)"})
    runs: str = field(default="", metadata={"required": True, "read_first": True, "help": (
        "output folders of `redline evaluate`, comma-separated, one row each (a folder of iterations: a row per "
        "iteration); FOLDER=LABEL names the row (no comma in it; default: the folder's name, or its path as given where "
        "two folders share a name), FOLDER#K keeps iteration K only (a folder whose own name holds = or # is read as it "
        "is); an earlier table's table.json brings its rows as they were summarised (their evaluation folders need not "
        "exist any more)")})
    title: str = field(default="win rates", metadata={"help": "the plot's title"})


@dataclass
class TableRow:
    label: str
    judge: str
    a: str
    b: str  # what A was judged against ("the original" for an iteration folder without --b)
    summary: dict[str, Any]  # summarize()'s numbers, recomputed from the folder's judgments


def _parse_table_entry(entry: str) -> tuple[Path, int | None, str | None]:
    if Path(entry).is_dir():  # a folder whose name holds = or #
        return Path(entry), None, None
    spec, _, label = entry.partition("=")
    folder, hashed, k = spec.partition("#")
    if hashed and not k.strip().isdecimal():  # "e1#" read every iteration without a word
        raise RedlineError(f"--runs {entry!r}: the iteration after # must be a number, got {k!r}")
    return Path(folder.strip()), int(k) if hashed else None, label.strip() or None


def _rows_of_table(path: Path) -> list[TableRow]:
    """The rows of an earlier ``evaluate table`` (its table.json) as they were summarised: a table goes on growing
    after the evaluation folders it was built from are gone (a moved or cleaned runs folder, another machine)."""
    try:
        rows = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RedlineError(f"--runs {path}: not readable as an earlier table's table.json ({exc})") from None
    if not isinstance(rows, list) or not rows:
        raise RedlineError(f"--runs {path}: an earlier table's table.json holds a list of rows, this holds "
                           f"{'no row' if isinstance(rows, list) else type(rows).__name__}")
    known = {f.name for f in fields(TableRow)}
    out = []
    for i, row in enumerate(rows, 1):
        missing = known - set(row) if isinstance(row, dict) else known
        if not missing:  # the numbers a row of the table shows
            summary = row["summary"]
            missing = {f"summary.{k}" for k in TABLE_NUMBERS if k not in summary} if isinstance(summary, dict) \
                else {"summary"}
        if missing:
            raise RedlineError(f"{path}: row {i} is not a row of `redline evaluate table` (missing "
                               f"{', '.join(sorted(missing))})")
        out.append(TableRow(**{k: row[k] for k in known}))
    return out


def _rows_of(folder: Path, only: int | None, label: str | None, name: str | None = None) -> list[TableRow]:
    """An evaluation folder's rows, summarised again from its judgments with the folder's own seed and resamples
    (so the numbers equal its summary.json's, and evaluations older than a column of the table gain it); an
    unlabelled row is called ``name`` (default: the folder's name)."""
    if folder.is_file() and folder.suffix == ".json":
        if only is not None or label is not None:
            raise RedlineError(f"--runs {folder}: an earlier table's rows keep their labels and iterations (no =LABEL or #K)")
        return _rows_of_table(folder)
    if not (folder / "summary.json").is_file():
        raise RedlineError(f"{folder} is not a finished evaluation (no summary.json): run `redline evaluate --out "
                           f"{folder}` (a rerun resumes) first")
    try:
        saved = json.loads((folder / "summary.json").read_text())
    except json.JSONDecodeError as exc:
        raise RedlineError(f"{folder / 'summary.json'}: not JSON ({exc.msg} at line {exc.lineno}): rerun `redline "
                           f"evaluate --config {folder / 'config.json'} --out {folder}` (it judges nothing again) to "
                           "write it whole") from None
    if not isinstance(saved, dict) or "judge" not in saved or not ("pairs" in saved or "iterations" in saved):
        raise RedlineError(f"{folder / 'summary.json'}: not a summary of `redline evaluate` (no judge and pairs): "
                           "only its output folders go in a table")
    name = label or name or folder.name
    against = saved.get("b") or "the original"
    if only is not None and "iterations" not in saved:
        raise RedlineError(f"{folder}#{only}: not a folder of iterations (one evaluation of two files)")
    if "iterations" not in saved:
        parts = [(None, folder, saved)]
    else:
        parts = [(s["iteration"], folder / f"iteration_{s['iteration']}", s) for s in saved["iterations"]]
        if only is not None:
            known = [k for k, _, _ in parts]
            parts = [p for p in parts if p[0] == only]
            if not parts:
                raise RedlineError(f"{folder}#{only}: no iteration {only} (it has {', '.join(map(str, known))})")
    rows = []
    for k, where, part in parts:
        if not (where / "judgments.jsonl").is_file():  # read as an empty file: "holds 0 verdicts ... was cut"
            raise RedlineError(f"{where / 'judgments.jsonl'} is not there (its summary.json counts {part['pairs']} "
                               "verdicts): the folder was moved or cleaned after the evaluation; put it back or rerun "
                               "the evaluation into a new folder")
        judgments = read_judgments(where / "judgments.jsonl")
        if len(judgments) < part["pairs"]:
            raise RedlineError(f"{where / 'judgments.jsonl'} holds {len(judgments)} verdicts where its summary.json counts "
                               f"{part['pairs']}: the file was cut or edited after the evaluation; rerun it into a new folder")
        if len(judgments) == part["pairs"]:
            summary = summarize(judgments, part.get("bootstrap_resamples", 2000), saved.get("seed", 0))
        else:  # a rerun with a smaller --limit summarised the first pairs and kept the other verdicts: its numbers as saved
            summary = part
            print(f"redline: {where}: {len(judgments)} verdicts, {part['pairs']} summarised (a smaller --limit): "
                  "its summary.json's numbers as they are", file=sys.stderr)
        rows.append(TableRow(label=(label if label and only is not None else name if k is None else f"{name}, iteration {k}"),
                             judge=saved["judge"], a=saved["a"] if k is None else f"{saved['a']}/iteration_{k}.jsonl",
                             b=against, summary=summary))
    return rows


def table_rows(config: TableConfig) -> list[TableRow]:
    """The rows of every evaluation (or earlier table) named in ``config.runs``, in order."""
    entries = [e for e in (x.strip() for x in config.runs.split(",")) if e]
    if not entries:
        raise RedlineError("--runs names no evaluation folder")
    parsed = [_parse_table_entry(entry) for entry in entries]
    seen: dict[tuple, str] = {}
    for entry, (folder, only, label) in zip(entries, parsed):  # one entry twice gave its rows twice, without a word
        key = (folder.resolve(), only, label)
        if key in seen:
            raise RedlineError(f"--runs: {entry!r} names the rows of {seen[key]!r} again: name each once (another "
                               "label, =NAME, or iteration, #K, makes another row)")
        seen[key] = entry
    # an unlabelled row is named by its folder ("." by the folder it is), or by its path as given where two folders
    # share a name (runs/ppo/eval and runs/sft/eval would be two rows called "eval", told apart by nothing)
    own = {folder: folder.name or folder.resolve().name for folder, _, _ in parsed}
    shared = Counter(own[f] for f in {f.resolve(): f for f, _, label in parsed if label is None}.values())
    return [row for folder, only, label in parsed
            for row in _rows_of(folder, only, label, own[folder] if shared[own[folder]] < 2 else str(folder))]


def evaluate_table(config: TableConfig, rows: list[TableRow] | None = None) -> list[TableRow]:
    """Read every evaluation named in ``config.runs`` (or take ``rows``, read before OUT was claimed: an earlier
    table in OUT may be one of them) and write OUT/table.md, OUT/table.json and OUT/win_rates.png (each row's win
    rate with its interval and, where the judge keeps scores, the paired score difference)."""
    rows = table_rows(config) if rows is None else rows
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    resamples = {row.summary.get("bootstrap_resamples") for row in rows}
    write_text_atomic(out / "table.md", "\n".join(table_lines(rows, config.title)) + "\n" + REPORT_NOTES.format(
        resamples=resamples.pop() if len(resamples) == 1 else "each row's own number of", first="per row in table.json"))
    # whole or not at all: a later table reads it, and it may be all that is left of rows whose folders are gone
    write_text_atomic(out / "table.json", json.dumps([asdict(row) for row in rows], indent=2) + "\n")
    plot_table(rows, out / "win_rates.png", config.title)
    return rows


def table_lines(rows: Sequence[TableRow], title: str) -> list[str]:
    """The table of ``evaluate table`` in markdown: a title, then a row an evaluation (or iteration)."""
    def cell(text: str) -> str:  # a label's "|" ended its cell and shifted the row's numbers under other heads
        return " ".join(str(text).split()).replace("|", "\\|")

    return [f"# {title}", "", f"| A | against B | judge | {_HEADS}", f"| --- | --- | --- | {_RULE}",
            *(f"| {cell(row.label)} | {cell(row.b)} | {cell(row.judge)} | {_cells(row.summary)}" for row in rows)]


def plot_table(rows: Sequence[TableRow], path: Path, title: str) -> Path:
    """One line a row: the win rate with its 95% interval against 50%, and beside it, a panel per kind of score
    (the oracle's quality, a reward model's score: one scale an axis), the paired score difference with its interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in SCORE_DETAILS if any(r.summary.get("score") == k for r in rows)]
    fig, axes = plt.subplots(1, 1 + len(kinds), figsize=(5 + 3.5 * (1 + len(kinds)), 1.2 + 0.42 * len(rows)), dpi=120,
                             squeeze=False, sharey=True)
    y = np.arange(len(rows))[::-1]
    judges = sorted({r.judge for r in rows})
    colors = {j: f"C{i}" for i, j in enumerate(judges)}

    def bars(ax, value_key, ci_key, scale, kind=None):
        for yi, r in zip(y, rows):
            v, ci = r.summary.get(value_key), r.summary.get(ci_key)
            if v is None or (kind is not None and r.summary.get("score") != kind):
                continue
            err = [[scale * (v - ci[0])], [scale * (ci[1] - v)]] if ci else None
            ax.errorbar(scale * v, yi, xerr=err, fmt="o", capsize=3, color=colors[r.judge])

    bars(axes[0][0], "win_rate", "ci95", 100)
    axes[0][0].axvline(50, color="grey", linestyle=":", linewidth=1)
    axes[0][0].set_xlabel("win rate of A (%), 95% interval")
    axes[0][0].set_yticks(y, [r.label for r in rows], fontsize=8)
    for ax, kind in zip(axes[0][1:], kinds):
        bars(ax, "score_difference", "score_difference_ci95", 1, kind)
        ax.axvline(0, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel(f"{'oracle quality' if kind == 'quality' else 'reward-model score'}, A − B (paired), 95% interval")
    handles = [axes[0][0].plot([], [], "o", color=colors[j])[0] for j in judges]
    fig.legend(handles, [f"judge: {j}" for j in judges], fontsize=7, loc="upper right", ncol=len(judges))
    fig.suptitle(title, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path)
    plt.close(fig)
    return path
