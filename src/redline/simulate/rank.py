"""``redline simulate rank``: the simulated annotators rank any model's responses, several to a prompt.

InstructGPT (Ouyang et al. 2022, arXiv 2203.02155, §3.2 and Appendix A.2) collected its comparisons on
the outputs of the models it was training as well as the first ones, so the reward model keeps judging
answers like the ones the policy now writes. A reward model trained only on the first policies' answers
orders a moved policy's answers worse: `models/reward` is 83.5% right on held-out rankings but orders two
of PPO-ptx's own rollouts as the oracle does in 71.2% of pairs (RESULTS "InstructGPT"). This command puts
a policy's answers in front of the same annotator pool ``simulate build`` uses, so a reward model can be
trained on them (``train reward --model models/reward --data THESE`` goes on from the shipped one)::

    redline generate --model runs/ppo_ptx --prompts data/simulated/rankings.jsonl --seed 0 --out s0.jsonl
    redline generate --model runs/ppo_ptx --prompts data/simulated/rankings.jsonl --seed 100000 --out s1.jsonl
    redline simulate rank --responses s0.jsonl,s1.jsonl --out runs/ppo_ptx_rankings.jsonl

or straight from what an RL run trained on (RUN/rollouts.jsonl: with ``--advantage rloo`` each iteration holds K
samples of each of its prompts, ranked together; a `train pit` stage's rewrites, ranked with the reference they
rewrote, for a reward-gap model on the policy's own rewrites, ``--pairs``)::

    redline simulate rank --rollouts runs/ppo_ptx --iterations 1-19 --out runs/ppo_ptx_rankings.jsonl

Steps:
  1. read the response records of every file (``generate`` writes them; each needs the instructions
     in ``meta``, as the simulated prompts carry them), and group them by ``id`` (by prompt for records
     without one) across the files, in the order first seen; or with ``--rollouts``, each run's episodes
     by (iteration, prompt), a PIT stage's rewrites by (iteration, reference) with the reference, the
     prompt and task from ``--data``;
  2. for each group, one annotator of the pool (chosen by ``--seed`` and the group's key, as ``build``
     chooses one per prompt) ranks the non-empty responses from their oracle quality with its own noise:
     jitter, ties within its resolution, neighbouring groups swapped; copies of one text tie;
  3. write a ``ranking`` record per group (``meta``: the instructions, the annotator, each response's
     oracle quality and source), or with ``--pairs`` a ``preference`` record per decisive comparison
     (for DPO and the reward-gap model), and report what the labels teach, as ``build`` does: labelled
     ties, oracle ties broken by noise, decisive labels right. A group of fewer than two non-empty responses,
     or whose responses all tie, gives no comparison and is counted, not written; so are the empty responses
     left out of their groups (a ranking holds text only), which a policy that falls silent writes.

Deviations from the paper: the labellers are ``simulate.annotators``' noisy oracle, not people; the paper
ranked 4 to 9 outputs of several models per prompt, here any number from any files.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from redline import RedlineError
from redline.config import seed_field
from redline.records import (MAX_ERRORS, FieldError, Preference, Ranking, RecordError, Response, _parse_rows, prompt_key,
                             prompt_text, write_records)
from redline.simulate.annotators import make_pool
from redline.simulate.build import label_figures, record_task
from redline.simulate.oracle import check_all


@dataclass
class RankConfig:
    """`redline simulate rank`: whose responses, who ranks them, where the rankings go."""

    responses: str = field(default="", metadata={"help": (
        "response files (JSONL, as `redline generate` writes), comma-separated: records of one id (else one "
        "prompt) across them are ranked together (this or --rollouts)")})
    rollouts: str | None = field(default=None, metadata={"help": (
        "RL run folders (their rollouts.jsonl), comma-separated, in place of --responses: an iteration's samples of "
        "one prompt are ranked together (RLOO's K), a `train pit` stage's rewrites with the reference they rewrote")})
    data: str | None = field(default=None, metadata={"help": "with --rollouts: the prompt records with "
        "meta.instructions (default: the prompt file each run trained on; for a PIT stage give the preference file)"})
    iterations: str | None = field(default=None, metadata={"help": "with --rollouts: FIRST-LAST, the iterations whose "
        "episodes are ranked (default: all)"})
    pairs: bool = field(default=False, metadata={"help": "write preference pairs (prompt, chosen, rejected), one per "
        "decisive comparison of each ranking, in place of rankings: what `train dpo` and `train gap-reward` read"})
    seed: int = seed_field("chooses each prompt's annotator and its noise")
    annotators: int = field(default=5, metadata={"min": 1, "help": "annotators in the pool (simulate build's default)"})
    noise_scale: float = field(default=1.0, metadata={"min": 0, "help": "their default noise times this (0: noise-free)"})
    limit: int | None = field(default=None, metadata={"min": 1, "help": "with --responses: rank only the first N records "
                                                                           "of each file (as `generate --limit N` wrote them)"})
    skip_invalid: bool = field(default=False, metadata={"help": "with --responses: skip bad records (counted, the first "
                                                                 "named on stderr) instead of stopping"})


TASK_FIELDS = ("topic", "form", "instructions")  # what a prompt's meta says of its task; the rest was another ranking's


@dataclass
class _Group:
    key: str  # the records' id, or the prompt's key where they have none
    prompt: object
    meta: dict  # the task's fields of the first record's meta, written into the ranking
    task: dict  # the same, as check_all takes it
    responses: list[str]
    sources: list[str | None]
    first: str  # FILE:LINE of its first record
    has_id: bool = True


def read_groups(paths: list[str], *, limit: int | None = None, skip_invalid: bool = False) -> list[_Group]:
    """Step 1: every file's response records (the first ``limit`` of each), checked (FILE:LINE: FIELD: reason for
    each bad one, or skipped and counted with ``skip_invalid``), grouped. An empty file is refused, as every
    reader of records refuses one: a sample file that came out empty is a failed run, not a smaller group."""
    groups: dict[str, _Group] = {}
    errors: list[str] = []
    n_errors = 0
    for path in paths:
        if not Path(path).is_file():
            raise RedlineError(f"no such response file: {path}")
        ids: dict[str, int] = {}

        def parse(obj, number: int, path: str = path, ids: dict[str, int] = ids) -> Response:
            """Checks a record against its file and the groups so far, and joins it to its group."""
            if not isinstance(obj, dict):
                raise FieldError("<record>", f"expected a JSON object, got {type(obj).__name__}")
            record = Response.from_dict(obj)
            meta = record.meta or {}
            task = record_task(meta)  # the annotators rank by the instructions the prompt carries
            if record.id is not None and record.id in ids:
                raise FieldError("id", f"duplicate id {record.id!r} in one file (first on line {ids[record.id]}): "
                                       "samples of one prompt go in separate files")
            key = record.id if record.id is not None else prompt_key(record.prompt)
            group = groups.get(key)
            if group is not None and prompt_key(group.prompt) != prompt_key(record.prompt):
                raise FieldError("prompt", f"differs from the prompt of id {key!r} at {group.first}")
            if group is not None and any(meta.get(name) != group.meta.get(name) for name in TASK_FIELDS):
                raise FieldError("meta.instructions", f"another task than the one of id {key!r} at {group.first}")
            if record.id is not None:
                ids[record.id] = number
            if group is None:
                groups[key] = _Group(key, record.prompt, {name: meta[name] for name in TASK_FIELDS if name in meta}, task,
                                     [record.response], [record.source], f"{path}:{number}", has_id=record.id is not None)
            else:
                group.responses.append(record.response)
                group.sources.append(record.source)
            return record

        # Every file is read before a bad one stops the run, so one error lists the bad lines of all of them; the
        # groups joined meanwhile are then never used.
        try:
            _parse_rows(path, parse, skip_invalid=skip_invalid, limit=limit, report=None, what="response records")
        except RecordError as e:
            errors += e.errors[:MAX_ERRORS - len(errors)]
            n_errors += e.total
    if n_errors:
        raise RecordError(errors, n_errors)
    return list(groups.values())


def read_rollout_groups(config: RankConfig) -> list[_Group]:
    """Step 1 for ``--rollouts``: each run's episodes (``rollouts``' reader: a bad line refused by number), grouped
    by (iteration, prompt) for a policy's samples, or by (iteration, reference) for a PIT stage's rewrites, the
    reference first; each group's prompt, id and task from the prompt record the episode's request came from. A run
    is named by its folder, or by its path as given where two runs' folders share a name, so two runs' episodes are
    never ranked together."""
    from redline.rollouts import ROLLOUTS, iteration_range, oracle_records, read_rollouts, resolve_requests

    span = iteration_range(config.iterations)
    runs = path_list(config.rollouts, "--rollouts")
    names = Counter(Path(run).name for run in runs)
    shared = oracle_records(runs[0], config.data) if config.data else None  # one --data: read once for every run
    groups: dict[str, _Group] = {}
    for run in runs:
        data, records = shared or oracle_records(run, None)
        record_names = {text: r["id"] if r["id"] is not None else f"prompt-{i}" for i, (text, r) in enumerate(records.items())}
        episodes = read_rollouts(run, span)
        resolve_requests(episodes, records, run, data)
        tag = Path(run).name if names[Path(run).name] == 1 else run
        reference_number: dict[tuple, int] = {}  # (iteration, request, reference) -> its number among the request's
        per_request: Counter = Counter()
        for e in episodes:
            record, source = records[e.request], f"{tag}-it{e.iteration}"
            key = f"{record_names[e.request]}@{source}"
            if e.reference is not None:  # rewrites: ranked with the reference they rewrote (RLOO: its K rewrites)
                which = (e.iteration, e.request, e.reference)
                if which not in reference_number:
                    per_request[which[:2]] += 1
                    reference_number[which] = per_request[which[:2]]
                key = f"{key}-{reference_number[which]}"
            group = groups.get(key)
            if group is None:
                meta = record["meta"]
                groups[key] = group = _Group(key, record["prompt"], {name: meta[name] for name in TASK_FIELDS if name in meta},
                                             record_task(meta), [], [], f"{Path(run) / ROLLOUTS}:{e.line}")
                if e.reference is not None:
                    group.responses.append(e.reference)
                    group.sources.append("reference")
            group.responses.append(e.response)
            group.sources.append(source)
    return list(groups.values())


def rank_groups(groups: list[_Group], config: RankConfig) -> tuple[list[Ranking], Counter]:
    """Step 2: one annotator per group ranks its non-empty responses; the groups that give no comparison, counted."""
    pool = make_pool(config.annotators, noise_scale=config.noise_scale)
    rankings: list[Ranking] = []
    dropped: Counter = Counter()
    for group in groups:
        rng = random.Random(f"redline-simulate-rank:{config.seed}:{group.key}")
        annotator = pool[rng.randrange(len(pool))]
        usable = [i for i, text in enumerate(group.responses) if text.strip()]
        if len(usable) < 2:
            dropped["fewer than 2 non-empty responses"] += 1
            continue
        texts = [group.responses[i] for i in usable]
        qualities = [check_all(group.task, text, prompt_text(group.prompt)).quality for text in texts]
        ranks = annotator.rank_qualities(qualities, rng, texts=texts)
        if len(set(ranks)) < 2:
            dropped["every response tied"] += 1
            continue
        rankings.append(Ranking(
            prompt=group.prompt, responses=texts, ranks=ranks, id=group.key if group.has_id else None,
            meta={**group.meta, "annotator": annotator.name, "oracle_quality": [round(q, 4) for q in qualities],
                  "policy": [group.sources[i] for i in usable]}))
    return rankings, dropped


def as_pairs(rankings: list[Ranking]) -> list[Preference]:
    """Each decisive comparison of each ranking as a preference pair (InstructGPT's K-choose-2, ties left out), its
    meta the ranking's with the pair's positions, policies and oracle qualities."""
    pairs = []
    for r in rankings:
        for w, l in r.comparisons():
            pairs.append(Preference(
                prompt=r.prompt, chosen=r.responses[w], rejected=r.responses[l],
                id=None if r.id is None else f"{r.id}:{w}>{l}",
                meta={**r.meta, "pair": [w, l], "policy": [r.meta["policy"][w], r.meta["policy"][l]],
                      "oracle_quality": [r.meta["oracle_quality"][w], r.meta["oracle_quality"][l]]}))
    return pairs


def path_list(value: str, flag: str) -> list[str]:
    """The paths of a comma-separated flag, as given; a path named twice (under any spelling) refused: a response file
    given twice put each answer beside its own copy in one ranking (a tie the annotators were made to label), and a
    run folder given twice ranked its episodes twice."""
    paths = [p.strip() for p in value.split(",") if p.strip()]
    seen: dict[Path, str] = {}
    for path in paths:
        key = Path(path).resolve()
        if key in seen:
            raise RedlineError(f"{flag}: {path} is given twice ({seen[key]} and {path}): name each once")
        seen[key] = path
    return paths


def rank(config: RankConfig, out: str | Path) -> dict:
    """Steps 1-3: write the rankings to ``out`` (JSONL); return what was written and what the labels teach."""
    paths = path_list(config.responses, "--responses")
    if bool(paths) == bool(config.rollouts):
        raise RedlineError("give --responses (response files) or --rollouts (RL run folders), one of the two")
    if not config.rollouts and (config.data or config.iterations):
        raise RedlineError("--data and --iterations read --rollouts; response files carry their own meta")
    if config.rollouts and (config.limit is not None or config.skip_invalid):
        raise RedlineError("--limit and --skip-invalid read --responses; with --rollouts, --iterations chooses what is ranked")
    groups = (read_groups(paths, limit=config.limit, skip_invalid=config.skip_invalid) if paths
              else read_rollout_groups(config))
    rankings, dropped = rank_groups(groups, config)
    if not rankings:
        alone = dropped["fewer than 2 non-empty responses"] == sum(dropped.values())
        advice = ("a run of --advantage gae samples each prompt once an iteration: nothing to rank" if config.rollouts
                  and alone else "rank several samples of each prompt, from separate files" if alone
                  else "the annotators tied every group")
        raise RedlineError(f"no prompt of {config.rollouts or ', '.join(paths)} has two responses the annotators tell "
                           f"apart ({dict(dropped)}): {advice}")
    pairs = as_pairs(rankings) if config.pairs else None
    write_records(out, pairs if pairs is not None else rankings)
    sizes = Counter(len(r.responses) for r in rankings)
    empty = sum(not text.strip() for group in groups for text in group.responses)  # a ranking holds text only
    return {"rankings": len(rankings), **({"pairs": len(pairs)} if pairs is not None else {}),
            "responses_per_ranking": dict(sorted(sizes.items())), "dropped": dict(dropped), "empty_responses_left_out": empty,
            "labels": label_figures(rankings), "mean_oracle_quality_ranked": round(  # of the responses ranked, not dropped
                sum(q for r in rankings for q in r.meta["oracle_quality"]) / sum(len(r.responses) for r in rankings), 4)}
