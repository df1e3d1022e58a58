"""What a policy wrote while it learned: an RL run's rollouts read by the simulated oracle, iteration by iteration.

    redline evaluate rollouts --run runs/ppo --out runs/ppo-rollouts [--against runs/ppo2] [--block 5]

A `redline train ppo` run logs every episode it trained on (RUN/rollouts.jsonl: iteration, prompt, response,
the reward's score, tokens, whether it ran into the token cap). On simulated data the oracle (the annotators' own
quality, ``simulate.oracle``) can read the same answers, so the reader sees whether the score the policy climbed is
the quality it stands for: the reward model's over-optimisation that InstructGPT (Ouyang et al. 2022, §4 and Figure 13's held-out labelers)
and Gao et al. 2023 measured, here per iteration, with the share of answers cut at the token cap beside it, and
how often the reward orders two samples of one prompt as the oracle does (the signal RLOO's baseline leaves).
Where the run's reward was the oracle itself (``--score oracle``) score and quality agree, as they should.
The RL stages of `redline train pit` (RUN/rl-0, rl-0-1, ...) log rewrites: each episode's prompt holds a request
and the reference answer to improve (``prompts.pit_parts`` reads them back), so the oracle reads both and the table
adds the references' quality and how often the rewrite is better or worse than its reference: what the reward-gap
model's score stands for.

Two runs with the same ``--seed``, prompts (and ``--limit``), batch size and samples per prompt draw the same prompts
at each iteration (``train.ppo.stream_indices`` is a pure function of the iteration), so ``--against`` pairs their episodes
(iteration, prompt, k-th sample) and gives the difference in oracle quality with a 95% bootstrap interval that
resamples (iteration, prompt) groups (for PIT the prompt holds the reference, so round 0's rewrites of a pair's y_l
and y_w are two groups). Runs that differ in those settings are refused: their episodes would pair by chance.

Writes OUT/rollouts.json (per iteration, per block, the difference), OUT/rollouts.md (the block table),
OUT/episodes.jsonl (each episode's score and quality) and OUT/rollouts.png. A score that is NaN or infinite (a
reward model that diverged or overflowed) stays in: the means and correlations over it are null in the JSON ("nan"
in the table), ``nonfinite_scores`` counts such episodes, and the orderings by reward leave them out.

Our own, not a library's: TRL and OpenRLHF log rollouts' rewards, and nothing but this world's oracle can say
what they were worth.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from redline import RedlineError
from redline.config import check_required
from redline.evaluate import percent
from redline.models import run_config
from redline.records import json_text, prompt_text, read_prompt_records, write_records
from redline.train.ppo import ROLLOUTS


@dataclass
class RolloutsConfig:
    """`redline evaluate rollouts`: an RL run's rollouts read by the oracle, iteration by iteration."""

    out: str = field(metadata={"required": True, "result": False, "help":
        "output folder (rollouts.json, rollouts.md, episodes.jsonl, rollouts.png)"})
    run: str = field(default="", metadata={"required": True, "help": "a `redline train ppo` run folder (its rollouts.jsonl)"})
    data: str | None = field(default=None, metadata={"help": "the prompt records with meta.instructions (simulated "
        "data; default: the --prompts the run trained on; a PIT stage's references carry none: give the preference file)"})
    against: str | None = field(default=None, metadata={"help": "a second run on the same prompts and --seed: its "
        "qualities beside, and the paired difference (--run minus this) with a 95% interval"})
    block: int = field(default=5, metadata={"min": 1, "help": "iterations per row of the table (1: one row an iteration)"})
    iterations: str | None = field(default=None, metadata={"help": "FIRST-LAST: read these iterations only (a run that "
        "goes on is read as it was at LAST; default: all)"})


@dataclass
class Episode:
    iteration: int
    prompt: str  # the episode's prompt text (the last user message): the request, or PIT's request and reference
    response: str
    score: float  # the run's own reward (NaN where it was none: a reward model that diverged or overflowed)
    tokens: int | None
    truncated: bool | None  # ran into the token cap (runs before it was logged: None)
    line: int  # its line in RUN/rollouts.jsonl
    request: str = ""  # the request the oracle reads the response against
    reference: str | None = None  # PIT: the answer the response rewrites
    quality: float = 0.0  # the oracle's, of the response
    reference_quality: float | None = None  # and of the reference


def iteration_range(spec: str | None) -> tuple[int, int] | None:
    """``--iterations FIRST-LAST`` as a pair; None for all."""
    if spec is None:
        return None
    first, sep, last = spec.partition("-")
    if not sep or not first.strip().isdigit() or not last.strip().isdigit() or int(first) > int(last):
        raise RedlineError(f"--iterations {spec!r}: expected FIRST-LAST, two iteration numbers, the first not above the last")
    return int(first), int(last)


def read_rollouts(run: str | Path, iterations: tuple[int, int] | None = None) -> list[Episode]:
    """RUN/rollouts.jsonl as episodes (those of ``iterations`` only, when given); a bad line is refused with its
    number and field. A last line without its newline is a run still writing (or killed mid-line): left out, said."""
    path = Path(run) / ROLLOUTS
    if not path.is_file():
        raise RedlineError(f"{run}: no {ROLLOUTS}: not the folder of a `redline train ppo` run (or it has not "
                           "finished an iteration)")
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines[-1].strip():
        print(f"redline: {path}:{len(lines)}: a line without its end (a run still writing): left out", file=sys.stderr)
    episodes = []
    for number, line in enumerate(lines[:-1], start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise RedlineError(f"{where}: not JSON: {e.msg} at column {e.colno}") from None
        if not isinstance(obj, dict):
            raise RedlineError(f"{where}: not a JSON object of an episode")
        if "score" in obj and obj["score"] is None:  # a NaN or infinite score, as redline's JSON writes it
            obj["score"] = float("nan")
        for name, kind in (("iteration", int), ("response", str), ("score", (int, float))):
            if not isinstance(obj.get(name), kind) or isinstance(obj.get(name), bool):
                raise RedlineError(f"{where}: field `{name}`: missing or not a {getattr(kind, '__name__', 'number')}")
        prompt = obj.get("prompt")
        if not (isinstance(prompt, str) or (isinstance(prompt, list) and prompt and all(
                isinstance(m, dict) and isinstance(m.get("content"), str) and "role" in m for m in prompt))):
            raise RedlineError(f"{where}: field `prompt`: neither a string nor chat messages")
        if iterations and not iterations[0] <= obj["iteration"] <= iterations[1]:
            continue
        tokens, truncated = obj.get("tokens"), obj.get("truncated")
        episodes.append(Episode(obj["iteration"], prompt_text(prompt), obj["response"], float(obj["score"]),
                                tokens if isinstance(tokens, int) else None,
                                truncated if isinstance(truncated, bool) else None, number))
    if not episodes:
        raise RedlineError(f"{path}: no episode" + (f" in iterations {iterations[0]}-{iterations[1]}" if iterations else ""))
    return episodes


def read_oracle_records(data: str, run: str | Path | None = None) -> dict[str, dict]:
    """Each prompt's text → its first record carrying meta.instructions (as `redline simulate` writes them);
    ``run``: the run whose train_config.json named ``data`` (the error then says to give --data)."""
    records = {}
    for record in read_prompt_records(data):
        if "instructions" in record["meta"]:
            records.setdefault(prompt_text(record["prompt"]), record)
    if not records:
        raise RedlineError(
            f"{data}: no record has meta.instructions, which the oracle reads: "
            + (f"it is the prompt file {run} trained on; give --data the simulated records its prompts came from (for "
               "a PIT round-1 stage, whose prompts are its references, the preference file)" if run is not None
               else "this works on simulated data (`redline simulate`) only"))
    return records


def resolve_requests(episodes: list[Episode], records: dict[str, dict], run: str | Path, data: str) -> None:
    """Each episode's request (and, for a PIT rewrite, its reference: ``prompts.pit_parts``), in place; an episode
    whose request is not in ``data`` is refused by line."""
    from redline.prompts import pit_parts

    for e in episodes:
        e.request, e.reference = e.prompt, None
        if e.prompt not in records and (parts := pit_parts(e.prompt)) is not None:
            e.request, e.reference = parts
        if e.request not in records:
            raise RedlineError(f"{Path(run) / ROLLOUTS}:{e.line}: its request {e.request[:60]!r} is not in {data} (with "
                               "meta.instructions): give the prompt file the run trained on (for a PIT stage, the "
                               "preference file) with --data")


def score_episodes(episodes: list[Episode], records: dict[str, dict], run: str | Path, data: str) -> None:
    """Each episode's oracle quality (and its PIT reference's), in place."""
    from redline.simulate.oracle import quality

    resolve_requests(episodes, records, run, data)
    for e in episodes:
        meta = records[e.request]["meta"]
        e.quality = quality(meta, e.response, e.request)
        if e.reference is not None:
            e.reference_quality = quality(meta, e.reference, e.request)


def oracle_records(run: str | Path, data: str | None) -> tuple[str, dict[str, dict]]:
    """The prompt file (``data``, else the one the run recorded in its train_config.json) and its records by text."""
    if data:
        return data, read_oracle_records(data)
    recorded = run_config(run).get("prompts")
    if not recorded:
        raise RedlineError(f"{run}: its train_config.json names no prompt file: give --data")
    if not Path(recorded).is_file():
        raise RedlineError(f"{recorded}: no such file (the prompt file {run} recorded; give --data)")
    return recorded, read_oracle_records(recorded, run)


def correlation(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson's r; None when either side is constant or there are fewer than 3 points."""
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return round(float(np.corrcoef(x, y)[0, 1]), 4)


def separation(higher: Sequence[float], lower: Sequence[float]) -> float | None:
    """The chance that a score drawn from ``higher`` exceeds one drawn from ``lower`` (ties half): the area under the
    ROC curve of the score as a test of which group an episode is in; a score that is not a number (NaN, infinite)
    is left out, as it orders nothing; None when a group is then empty."""
    higher, lower = [x for x in higher if np.isfinite(x)], [x for x in lower if np.isfinite(x)]
    if not higher or not lower:
        return None
    a, b = np.asarray(higher, dtype=float)[:, None], np.asarray(lower, dtype=float)[None, :]
    return round(float(((a > b) + 0.5 * (a == b)).mean()), 4)


def within_prompt_agreement(episodes: Sequence[Episode]) -> tuple[float | None, int]:
    """How often the reward orders two samples of one prompt (same iteration, same prompt: RLOO's K) as the oracle
    does, over the pairs the oracle tells apart (a tie in reward counts half): the part of the reward an RLOO
    baseline leaves, which says nothing of prompts' own difficulty. A sample whose score is not a number orders
    nothing, and is left out. (None, 0) when no prompt has two such samples."""
    groups: dict[tuple, list[Episode]] = defaultdict(list)
    for e in episodes:
        if np.isfinite(e.score):
            groups[(e.iteration, e.prompt)].append(e)
    agree, pairs = 0.0, 0
    for group in groups.values():
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                if a.quality != b.quality:
                    pairs += 1
                    agree += 1.0 if (a.score - b.score) * (a.quality - b.quality) > 0 else 0.5 if a.score == b.score else 0.0
    return (round(agree / pairs, 4) if pairs else None), pairs


def summarize_episodes(episodes: Sequence[Episode], cap: int | None) -> dict[str, Any]:
    """Mean reward and oracle quality, the share at quality 1, the share cut at the token cap, and how well the
    reward tracks the oracle: Pearson's r over the episodes, and within a prompt's samples (``within_prompt_agreement``).
    ``nonfinite_scores`` counts the episodes whose score is NaN or infinite (a reward model that diverged or
    overflowed): the mean score and the correlations over them are NaN (null in rollouts.json)."""
    scores, qualities = [e.score for e in episodes], [e.quality for e in episodes]
    cut = [e.truncated if e.truncated is not None else e.tokens >= cap  # older runs logged tokens only
           for e in episodes if e.truncated is not None or (cap and e.tokens is not None)]
    row = {"episodes": len(episodes), "score": round(float(np.mean(scores)), 4),
           "nonfinite_scores": int(np.sum(~np.isfinite(scores))),
           "quality": round(float(np.mean(qualities)), 4),
           "perfect": round(float(np.mean([q == 1.0 for q in qualities])), 4),
           "cut": round(float(np.mean(cut)), 4) if cut else None,
           "score_quality_r": correlation(scores, qualities)}
    row["within_prompt_agreement"], row["within_prompt_pairs"] = within_prompt_agreement(episodes)
    rewrites = [e for e in episodes if e.reference_quality is not None]
    if rewrites:  # PIT: the references' quality, how often the rewrite beats or loses to its reference, and how
        # well the reward (a gap: better than the reference by how much) tracks the oracle's gain: as a correlation, and
        # as how often a rewrite the oracle finds better outscores one it finds worse
        row.update(reference_quality=round(float(np.mean([e.reference_quality for e in rewrites])), 4),
                   gain=round(float(np.mean([e.quality - e.reference_quality for e in rewrites])), 4),
                   better=round(float(np.mean([e.quality > e.reference_quality for e in rewrites])), 4),
                   worse=round(float(np.mean([e.quality < e.reference_quality for e in rewrites])), 4),
                   score_gain_r=correlation([e.score for e in rewrites], [e.quality - e.reference_quality for e in rewrites]),
                   better_worse_auc=separation([e.score for e in rewrites if e.quality > e.reference_quality],
                                               [e.score for e in rewrites if e.quality < e.reference_quality]))
    return row


def grouped(episodes: Sequence[Episode], size: int) -> list[tuple[int, int, list[Episode]]]:
    """(first iteration, last iteration, episodes) for blocks of ``size`` iterations: 1..size, size+1..2 size, ..."""
    blocks: dict[int, list[Episode]] = defaultdict(list)
    for e in episodes:
        blocks[(e.iteration - 1) // size].append(e)
    return [(min(e.iteration for e in b), max(e.iteration for e in b), b) for _, b in sorted(blocks.items())]


def paired_difference(first: Sequence[Episode], second: Sequence[Episode]) -> dict[str, Any]:
    """Episodes of two runs paired by (iteration, prompt, k-th sample of that prompt): the mean oracle quality of
    each and the difference (first minus second) with a 95% bootstrap interval over (iteration, prompt) groups."""
    from redline.train.reward import prompt_interval

    def keyed(episodes):
        seen: dict[tuple, int] = defaultdict(int)
        out = {}
        for e in episodes:
            k = (e.iteration, e.prompt)
            out[(*k, seen[k])] = e
            seen[k] += 1
        return out

    a, b = keyed(first), keyed(second)
    shared = sorted(set(a) & set(b))
    if not shared:
        raise RedlineError("the two runs share no (iteration, prompt): they share no iteration, or drew other prompts "
                           "(another --seed, prompt file, --batch-size or --rloo-k), so their episodes cannot be paired")
    groups: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for k in shared:
        row = groups[k[:2]]
        row[0] += a[k].quality
        row[1] += b[k].quality
        row[2] += 1
    rows = list(groups.values())
    n = sum(r[2] for r in rows)
    qa, qb = sum(r[0] for r in rows) / n, sum(r[1] for r in rows) / n
    iterations = sorted({k[0] for k in shared})
    return {"pairs": int(n), "iterations": [iterations[0], iterations[-1]], "quality": round(qa, 4),
            "against_quality": round(qb, 4), "difference": round(qa - qb, 4),
            # one group has no spread to resample: its "interval" would be a point, read as certainty
            "difference_ci95": prompt_interval(rows, hits=0, total=2, minus=1) if len(rows) > 1 else None}


# with the prompt file, what decides an iteration's prompts (--limit: how many of its records are drawn from)
PAIRING = ("seed", "batch_size", "advantage", "rloo_k", "limit")


def check_pairable(run: str, against: str, data: str, their_data: str) -> None:
    """Refuse two runs whose iterations drew other prompts: their episodes would pair by chance, not by design.
    The prompt files compared are those the runs recorded (``data``, ``their_data`` where they recorded none): one
    --data the oracle reads for both says nothing of what each run drew."""
    from redline.config import input_digest

    mine, theirs = run_config(run), run_config(against)
    keys = [k for k in PAIRING if k != "rloo_k" or mine.get("advantage") == "rloo"]  # K groups prompts with RLOO only
    differ = [f"--{k.replace('_', '-')} {mine.get(k)} against {theirs.get(k)}" for k in keys if mine.get(k) != theirs.get(k)]
    drawn, their_drawn = mine.get("prompts") or data, theirs.get("prompts") or their_data
    digests = input_digest(drawn), input_digest(their_drawn)  # None: a file gone since, which cannot be compared
    if drawn != their_drawn and None not in digests and digests[0] != digests[1]:  # one content under two paths is fine
        differ.append(f"prompt files {drawn} against {their_drawn}")
    if differ:
        raise RedlineError(f"--against {against}: {'; '.join(differ)}: the two runs drew other prompts at each iteration, "
                           "so their episodes cannot be paired")


def evaluate_rollouts(config: RolloutsConfig) -> dict[str, Any]:
    """Read the run's (and ``against``'s) rollouts with the oracle and write the outputs of the module docstring."""
    check_required(config)  # built in Python: flags and config files were checked as they were read
    span = iteration_range(config.iterations)
    data, records = oracle_records(config.run, config.data)
    episodes = read_rollouts(config.run, span)
    score_episodes(episodes, records, config.run, data)
    cap = run_config(config.run).get("max_new_tokens")
    summary = {"run": config.run, "data": data, "max_new_tokens": cap, "block": config.block,
               "iterations": [min(e.iteration for e in episodes), max(e.iteration for e in episodes)],
               **summarize_episodes(episodes, cap),
               "per_iteration": [{"iteration": lo, **summarize_episodes(b, cap)} for lo, _, b in grouped(episodes, 1)],
               "blocks": [{"iterations": [lo, hi], **summarize_episodes(b, cap)}
                          for lo, hi, b in grouped(episodes, config.block)]}
    if config.against:
        # one --data serves both runs; without it each run's own prompt file
        their_data, their_records = (data, records) if config.data else oracle_records(config.against, None)
        check_pairable(config.run, config.against, data, their_data)
        other = read_rollouts(config.against, span)
        score_episodes(other, their_records, config.against, their_data)
        their_cap = run_config(config.against).get("max_new_tokens")
        mine = {e.iteration for e in episodes}
        for row in summary["blocks"]:  # the other run's quality beside each row, over the same iterations
            lo, hi = row["iterations"]
            theirs = [e.quality for e in other if lo <= e.iteration <= hi]
            row["against_quality"] = round(float(np.mean(theirs)), 4) if theirs else None
        theirs = [e.quality for e in other if e.iteration in mine]
        summary["against_quality"] = round(float(np.mean(theirs)), 4) if theirs else None
        summary["against"] = {
            "run": config.against, "data": their_data, "max_new_tokens": their_cap, **summarize_episodes(other, their_cap),
            "per_iteration": [{"iteration": lo, **summarize_episodes(b, their_cap)} for lo, _, b in grouped(other, 1)],
            "blocks": [{"iterations": [lo, hi], **summarize_episodes(b, their_cap)}
                       for lo, hi, b in grouped(other, config.block)]}
        summary["paired"] = paired_difference(episodes, other)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    write_records(out / "episodes.jsonl", [
        {"iteration": e.iteration, "line": e.line, "prompt": e.request, "score": e.score, "quality": round(e.quality, 4),
         "tokens": e.tokens, "truncated": e.truncated,
         **({"reference_quality": round(e.reference_quality, 4)} if e.reference is not None else {})}
        for e in episodes])
    (out / "rollouts.json").write_text(json_text(summary, indent=2) + "\n")  # NaN as null: valid JSON
    (out / "rollouts.md").write_text("\n".join(rollout_lines(summary)) + "\n", encoding="utf-8")  # "–": not the locale's
    plot_rollouts(summary, out / "rollouts.png")
    return summary


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def _signed3(x: float | None) -> str:
    return "–" if x is None else f"{x:+.3f}"


def _signed(x: float | None) -> str:
    return "–" if x is None else f"{x:+.2f}"


def rollout_lines(summary: dict[str, Any]) -> list[str]:
    """The block table in markdown (PIT's reference columns where its episodes have them), and the paired
    difference under it."""
    columns = [("episodes", "episodes", str), ("reward", "score", _num), ("oracle quality", "quality", _num)]
    if "reference_quality" in summary:
        columns += [("reference's quality", "reference_quality", _num), ("gain", "gain", _signed3),
                    ("better than it", "better", percent),
                    ("worse", "worse", percent), ("reward–gain r", "score_gain_r", _signed),
                    ("reward separates better from worse (AUC)", "better_worse_auc", percent)]
    columns += [("at quality 1", "perfect", percent), ("cut at the cap", "cut", percent),
                ("reward–oracle r", "score_quality_r", _signed),
                ("reward orders a prompt's samples as the oracle", "within_prompt_agreement", percent)]
    if summary.get("nonfinite_scores"):  # a reward that diverged: how many of each row's scores are no number
        columns.append(("reward not a number", "nonfinite_scores", str))
    if "against" in summary:
        columns.append(("--against's quality", "against_quality", _num))
    lines = [f"# rollouts of {summary['run']}, read by the oracle", "",
             "| iterations | " + " | ".join(head for head, _, _ in columns) + " |",
             "| --- " + "| ---: " * len(columns) + "|"]
    for span, row in [(_span(b["iterations"]), b) for b in summary["blocks"]] + [("all", summary)]:
        lines.append(f"| {span} | " + " | ".join(show(row.get(key)) for _, key, show in columns) + " |")
    if "against" in summary:
        p = summary["paired"]
        ci = p["difference_ci95"]
        lines += ["", f"paired with {summary['against']['run']}: {p['pairs']} of {summary['episodes']} and "
                  f"{summary['against']['episodes']} episodes (the same prompt at the same iteration, iterations "
                  f"{p['iterations'][0]}–{p['iterations'][1]}): oracle quality {p['quality']:.3f} "
                  f"against {p['against_quality']:.3f}, difference {p['difference']:+.3f}"
                  + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")]
    return lines


def _span(iterations: list[int]) -> str:
    first, last = iterations
    return str(first) if first == last else f"{first}–{last}"


def plot_rollouts(summary: dict[str, Any], path: Path) -> Path:
    """Left: the oracle's quality per iteration (dots) and per block of the table (line), the --against run beside it
    (a PIT stage's: the rewrite's quality minus its reference's);
    right: each run's own reward per iteration (their scales differ when their reward models do)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), dpi=120)
    runs = [(summary["run"], summary, "C0")] + ([(summary["against"]["run"], summary["against"], "C1")]
                                                if "against" in summary else [])
    measure = "gain" if "gain" in summary else "quality"  # PIT: the rewrite's quality over its reference's
    for name, s, color in runs:
        its = [r["iteration"] for r in s["per_iteration"]]
        left.plot(its, [r[measure] for r in s["per_iteration"]], "o", color=color, alpha=0.35, markersize=3)
        left.plot([sum(b["iterations"]) / 2 for b in s["blocks"]], [b[measure] for b in s["blocks"]], "-", color=color,
                  label=f"{Path(name).name or name} (blocks of {summary['block']}, as the table)")
        right.plot(its, [r["score"] for r in s["per_iteration"]], "o-", color=color, markersize=3, label=Path(name).name or name)
    left.set_xlabel("iteration")
    left.set_ylabel("oracle quality of the rollouts (mean)" if measure == "quality"
                    else "oracle gain: rewrite − reference (mean)")
    if measure == "gain":
        left.axhline(0, color="grey", linestyle=":", linewidth=1)
    left.legend(fontsize=7)
    right.set_xlabel("iteration")
    right.set_ylabel("the run's own reward (mean)")
    right.legend(fontsize=7)
    fig.suptitle("what the policy wrote while it learned: its reward and the oracle's quality", x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path)
    plt.close(fig)
    return path
