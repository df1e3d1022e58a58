"""Simulated annotators: noisy people who rank, compare, critique, revise and demonstrate.

In the spirit of AlpacaFarm (Dubois et al. 2023, arXiv 2305.14387), which replaced human
labelers with a pool of simulated ones whose injected noise makes them disagree about as often as
people do. AlpacaFarm's annotators are LLM prompts with random label flips; ours see the oracle's
exact quality (``oracle.quality``) through two kinds of noise, so their disagreement is a
measured, tunable figure:

- ``jitter``: Gaussian noise (standard deviation σ) added to each response's quality before
  ranking, so close calls go either way;
- ``resolution``: the smallest difference in perceived quality the annotator can tell; two
  responses closer than that get equal ranks (a tie), as InstructGPT's labelers could mark ties,
  instead of a coin flip dressed up as a preference (world v2; before it, 40% of the shipped
  comparisons were oracle ties broken by jitter alone);
- ``flip``: the probability of reversing a preference (for a ranking: each neighbouring pair of
  tie groups in the ranked list is swapped with this probability, pairs taken top to bottom, never
  two in a row);
- ``miss``: the probability that a critique overlooks a broken instruction (its revision then
  leaves it broken, so the revision still changes only what the critique names). 0 by default.

The default pool (``make_pool``) has five annotators from careful to careless, each with a
resolution of twice its jitter, so each ties about 84% of pairs of equal quality (erf(1)). Of two
answers a third of the quality scale apart, the three careful ones tie fewer than 1%, the two
careless ones about 6% and 17% (5% over the pool). ``measure_agreement`` counts a tie as a label
of its own: two annotators agree on a pair when both tie it or both order it the same way
(InstructGPT's labelers agreed 72.6%, Ouyang et al. 2022, arXiv 2203.02155).
``measure_agreement`` reports the figure for any pool and data. With zero noise every annotator
agrees with every other and with the oracle, always.

Everything random takes a ``random.Random`` from the caller, so a build is reproducible from its
seed and independent of the order in which prompts are processed.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Sequence

from redline.simulate.instructions import check, fix_all
from redline.simulate.oracle import check_all, fault_sentence, repair

# (flip, jitter) of the default pool, careful to careless; each resolution is RESOLUTION_PER_JITTER × jitter.
DEFAULT_NOISE: tuple[tuple[float, float], ...] = ((0.02, 0.04), (0.04, 0.05), (0.06, 0.06), (0.08, 0.08), (0.10, 0.10))
RESOLUTION_PER_JITTER = 2.0


@dataclass(frozen=True)
class Critique:
    """A critique and what it says: the broken instructions and faults it names, what it praises."""

    text: str
    named: tuple[str, ...]  # instruction types it says are broken
    faults: tuple[str, ...]  # oracle penalties it names (repetition, off_topic, ...)
    praised: tuple[str, ...]  # instruction types it says are met


@dataclass(frozen=True)
class Annotator:
    name: str
    flip: float = 0.0
    jitter: float = 0.0
    miss: float = 0.0
    resolution: float = 0.0

    def noise(self) -> dict:
        return {"name": self.name, "flip": self.flip, "jitter": self.jitter, "resolution": self.resolution, "miss": self.miss}

    def _perceive(self, quality: float, rng: random.Random) -> float:
        return round(quality + (rng.gauss(0.0, self.jitter) if self.jitter else 0.0), 9)

    # ------------------------------------------------------------------ preferences

    def rank_qualities(self, qualities: Sequence[float], rng: random.Random, texts: Sequence[str] | None = None) -> list[int]:
        """Ranks (0 = best, equal = tie) this annotator gives to responses of these qualities.

        Perceived scores (quality + jitter) closer than ``resolution`` to the next one down fall in
        one tie group (chained: a, b, c each within resolution of the next are one group). Then
        neighbouring groups swap with probability ``flip``, never two swaps in a row. With
        ``texts``, responses of the same text are perceived once, so they always tie: an annotator
        shown one answer twice does not rank it above itself.
        """
        if texts is None:
            scores = [self._perceive(q, rng) for q in qualities]
        else:
            seen: dict[str, float] = {}
            scores = [seen[t] if t in seen else seen.setdefault(t, self._perceive(q, rng)) for q, t in zip(qualities, texts)]
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        group_of: dict[int, int] = {}
        group = 0
        for rank_position, i in enumerate(order):
            if rank_position and scores[order[rank_position - 1]] - scores[i] >= max(self.resolution, 1e-12):
                group += 1
            group_of[i] = group
        groups = list(range(group + 1))
        i = 0
        while i < len(groups) - 1:
            if self.flip and rng.random() < self.flip:
                groups[i], groups[i + 1] = groups[i + 1], groups[i]
                i += 2
            else:
                i += 1
        place = {g: rank for rank, g in enumerate(groups)}
        return [place[group_of[i]] for i in range(len(scores))]

    def prefer_qualities(self, qa: float, qb: float, rng: random.Random) -> str:
        """'a', 'b' or 'tie' (perceived qualities closer than ``resolution``, or exactly equal)."""
        sa, sb = self._perceive(qa, rng), self._perceive(qb, rng)
        winner = "tie" if abs(sa - sb) < max(self.resolution, 1e-12) else "a" if sa > sb else "b"
        if winner != "tie" and self.flip and rng.random() < self.flip:
            winner = "b" if winner == "a" else "a"
        return winner

    def rank(self, task, responses: Sequence[str], rng: random.Random) -> list[int]:
        return self.rank_qualities([check_all(task, r).quality for r in responses], rng, texts=responses)

    def prefer(self, task, a: str, b: str, rng: random.Random) -> str:
        if a == b:
            return "tie"  # the same answer twice, whatever the noise
        return self.prefer_qualities(check_all(task, a).quality, check_all(task, b).quality, rng)

    # ------------------------------------------------------------------ language feedback

    def critique(self, task, response: str, rng: random.Random) -> Critique:
        """Strengths and weaknesses with specifics, in a varied order and wording."""
        report = check_all(task, response)
        strengths = [(c.instruction.type, c.sentence(rng)) for c in report.met]
        weaknesses = [(c.instruction.type, c.sentence(rng)) for c in report.broken if not (self.miss and rng.random() < self.miss)]
        faults = [(f, fault_sentence(report, f, rng)) for f in report.faults]
        rng.shuffle(strengths)
        rng.shuffle(weaknesses)
        problems = faults + weaknesses  # a fault (a loop, the wrong topic) is the bigger news
        form, topic = getattr(task, "form", "response"), getattr(task, "topic", "the topic")

        parts: list[str] = []
        if rng.random() < 0.6:
            if not problems:
                openers = (f"This {form} about {topic} does everything the prompt asked.",
                           "A clean answer that follows every instruction.", f"This is a well-made {form}.")
            elif strengths:
                openers = (f"This {form} about {topic} gets some things right and some wrong.",
                           f"A reasonable attempt, with {_count(len(problems), 'issue')} to fix.",
                           "Not every instruction is followed here.")
            else:
                openers = (f"This {form} misses what the prompt asked for.", "This attempt falls short of the prompt.",
                           f"The {form} does not follow the prompt's instructions.")
            parts.append(rng.choice(openers))
        good = [s for _, s in strengths]
        bad = [_also(s, rng) if i else s for i, (_, s) in enumerate(problems)]
        if good and bad:
            if rng.random() < 0.6:
                parts += good + [_join(rng.choice(("However,", "But", "On the other hand,", "Still,")), bad[0])] + bad[1:]
            else:
                parts += bad + [_join(rng.choice(("On the plus side,", "That said,", "To its credit,")), good[0])] + good[1:]
        else:
            parts += good + bad
        if rng.random() < 0.5:
            if bad:
                parts.append(rng.choice(("Fixing " + ("this" if len(bad) == 1 else "these") + " would make it meet every instruction.",
                                         "With " + ("that change" if len(bad) == 1 else "those changes") + " it would be complete.",
                                         "Everything else can stay as it is.")))
            else:
                parts.append(rng.choice(("I would not change anything.", "It needs no revision.", "Nothing needs to change.")))
        return Critique(
            text=" ".join(parts),
            named=tuple(kind for kind, _ in weaknesses),
            faults=tuple(f for f, _ in faults),
            praised=tuple(kind for kind, _ in strengths),
        )

    def revise(self, task, response: str, critique: Critique) -> str:
        """The response with exactly what the critique names fixed (the fixers, minimal edits).

        Nothing named: the response comes back unchanged. A fix that would disturb an
        instruction already met is avoided or undone (``fix_all``).
        """
        named = [i for i in task.instructions if i.type in critique.named]
        met = [i for i in task.instructions if check(i, response).met]
        text = repair(task, response, critique.faults) if critique.faults else response
        return fix_all(task.instructions, text, task.topic, only=named + met)

    def demonstrate(self, task, response: str) -> str:
        """A demonstration that reads like the responder: its response with every problem fixed."""
        report = check_all(task, response)
        text = repair(task, response, report.faults) if report.faults else response
        return fix_all(task.instructions, text, task.topic)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _join(connector: str, sentence: str) -> str:
    return f"{connector} {sentence[:1].lower()}{sentence[1:]}"


def _also(sentence: str, rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.2:
        return _join("Also,", sentence)
    if roll < 0.3:
        return _join("In addition,", sentence)
    return sentence


def make_pool(n: int = 5, noise_scale: float = 1.0, miss: float = 0.0) -> list[Annotator]:
    """``n`` annotators with the default noise times ``noise_scale`` (0: all noise-free)."""
    if n < 1:
        raise ValueError("a pool needs at least one annotator")
    if noise_scale < 0:
        raise ValueError("noise_scale must be >= 0")
    pool = []
    for i in range(n):
        flip, jitter = DEFAULT_NOISE[i % len(DEFAULT_NOISE)]
        pool.append(Annotator(f"annotator-{i + 1}", flip=min(0.5, flip * noise_scale), jitter=jitter * noise_scale, miss=miss,
                              resolution=RESOLUTION_PER_JITTER * jitter * noise_scale))
    return pool


# ----------------------------------------------------------------------------- agreement


def pair_agreement(ranks_a: Sequence[int], ranks_b: Sequence[int]) -> tuple[int, int]:
    """(agreeing pairs, pairs): two rankings agree on a pair if they order it the same way."""
    agree = total = 0
    for i, j in itertools.combinations(range(len(ranks_a)), 2):
        sign_a = (ranks_a[i] > ranks_a[j]) - (ranks_a[i] < ranks_a[j])
        sign_b = (ranks_b[i] > ranks_b[j]) - (ranks_b[i] < ranks_b[j])
        agree += sign_a == sign_b
        total += 1
    return agree, total


def measure_agreement(pool: Sequence[Annotator], items: Sequence[Sequence[float]], seed: int = 0) -> dict:
    """How often annotators agree with each other and with the oracle, over response pairs.

    ``items`` holds the oracle qualities of each prompt's responses. Every annotator ranks every
    item (its own noise, from a seeded RNG); for two annotators, agreement is the share of pairs
    of responses they label the same way (both tie it, or both order it the same way), as
    InstructGPT measured its labelers. ``with_oracle`` is each annotator's accuracy on the pairs
    whose qualities differ and that it did not tie; ``labels`` breaks its labels down: of the
    oracle-decisive pairs, the share right, tied and wrong; of the oracle ties, the share it broke
    by noise (labels a reward model would learn as signal but that are none). A figure with no pair to
    count is None, not a perfect 1: ``mean`` of a pool of one annotator, ``with_oracle`` of one that
    decided no pair the oracle tells apart.
    """
    rankings = {
        a.name: [a.rank_qualities(q, random.Random(f"agreement:{seed}:{k}:{a.name}")) for k, q in enumerate(items)]
        for a in pool
    }
    matrix: dict[str, dict[str, float]] = {a.name: {} for a in pool}
    agree_all = total_all = 0
    for a, b in itertools.combinations(pool, 2):
        agree = total = 0
        for ra, rb in zip(rankings[a.name], rankings[b.name]):
            x, y = pair_agreement(ra, rb)
            agree, total = agree + x, total + y
        share = round(agree / total, 4) if total else None  # no pair to agree on (one response a prompt): no figure
        matrix[a.name][b.name] = matrix[b.name][a.name] = share
        agree_all, total_all = agree_all + agree, total_all + total
    with_oracle, labels = {}, {}
    for a in pool:
        right = wrong = tied = ties = ties_broken = 0
        for q, r in zip(items, rankings[a.name]):
            for i, j in itertools.combinations(range(len(q)), 2):
                if q[i] == q[j]:
                    ties += 1
                    ties_broken += r[i] != r[j]
                elif r[i] == r[j]:
                    tied += 1
                elif (q[i] > q[j]) == (r[i] < r[j]):
                    right += 1
                else:
                    wrong += 1
        # Accuracy on the pairs the annotator decided and the oracle can tell apart: its labels' worth.
        with_oracle[a.name] = round(right / (right + wrong), 4) if right + wrong else None
        decisive = right + wrong + tied
        labels[a.name] = {
            "oracle_decisive_pairs": decisive,
            "right": round(right / decisive, 4) if decisive else None,
            "tied": round(tied / decisive, 4) if decisive else None,
            "wrong": round(wrong / decisive, 4) if decisive else None,
            "oracle_ties": ties,
            "oracle_ties_broken_by_noise": round(ties_broken / ties, 4) if ties else None,
        }
    return {
        "mean": round(agree_all / total_all, 4) if total_all else None,  # one annotator: nobody to agree with
        "pairs": total_all,
        "matrix": matrix,
        "with_oracle": with_oracle,
        "labels": labels,
    }
