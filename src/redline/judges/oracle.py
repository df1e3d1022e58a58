"""The oracle judge: the simulated annotators' exact quality score decides.

Each record's ``meta`` carries its verifiable instructions (``{"topic": ..., "instructions":
[...]}``, as ``redline.simulate`` writes them); ``simulate.oracle.quality`` scores each response
in [0, 1] and the higher score wins; equal scores are a tie. It stands in for the human
evaluators of the papers, so it is noiseless by default.

With noise (``oracle:noisy``, or ``noise=S``) each pair goes to one annotator drawn from the
simulated pool (``simulate.annotators.make_pool(noise_scale=S)``; S = 1 is the pool's own
noise, under which two annotators agree more often than InstructGPT's labelers did: 85.2% on the shipped
rankings against their 72.6%, data/README.md), who sees
the qualities through its jitter and flips: AlpacaFarm's pool of noisy simulated annotators
(Dubois et al. 2023). The draw is seeded by the pair itself, so a rerun gives the same verdicts.
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Sequence

from redline import RedlineError
from redline.judges import Item, Verdict
from redline.records import prompt_key, prompt_text

DEFAULT_NOISE = 1.0  # the simulated pool's own noise


class OracleJudge:
    """``oracle`` / ``oracle:noisy``: the simulated environment's oracle as a pairwise judge."""

    both_orders = False  # the score of one response does not depend on the other's position

    def __init__(self, noise: float | None = 0.0, seed: int = 0):
        noise = DEFAULT_NOISE if noise is None else noise
        if not 0 <= noise < float("inf"):  # nan too: it made every verdict B's
            raise RedlineError(f"oracle noise (a scale of the annotators' noise) must be a number >= 0, got {noise}")
        self.noise, self.seed = noise, seed
        self.name = "oracle" if noise == 0 else f"oracle:noisy?noise={noise:g}&seed={seed}"

    def check(self) -> None:
        from redline.simulate.oracle import quality  # noqa: F401  (fails here if simulate is missing)

    def needs(self, meta: dict) -> str | None:
        """Why a record with this meta cannot be judged, or None (``judges.check_records``)."""
        return None if "instructions" in meta else "the oracle reads each record's meta.instructions, and it has none"

    def judge_many(self, items: Sequence[Item]) -> list[Verdict]:
        from redline.simulate.annotators import make_pool
        from redline.simulate.oracle import quality

        pool = make_pool(noise_scale=self.noise) if self.noise else []
        verdicts = []
        for item in items:
            why = self.needs(item.meta)
            if why:
                raise RedlineError(f"{why}: the record with prompt {prompt_text(item.prompt)[:60]!r}")
            text = prompt_text(item.prompt)
            qa, qb = quality(item.meta, item.a, text), quality(item.meta, item.b, text)
            winner = "tie" if qa == qb else ("a" if qa > qb else "b")
            detail: dict = {"quality": [qa, qb]}
            if pool and item.a != item.b:  # the same text twice is a tie to any annotator (Annotator.prefer's rule)
                key = json.dumps([self.seed, prompt_key(item.prompt), item.a, item.b])
                rng = random.Random(hashlib.sha256(key.encode()).hexdigest())
                annotator = rng.choice(pool)
                winner = annotator.prefer_qualities(qa, qb, rng)
                detail["annotator"] = annotator.name
            verdicts.append(Verdict(winner, raw=f"quality {qa:.4f} vs {qb:.4f}", detail=detail))
        return verdicts

    def close(self) -> None:
        pass
