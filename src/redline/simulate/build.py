"""``redline simulate build`` and ``redline simulate score``: feedback data from simulated annotators.

``build`` writes, into one folder, every kind of feedback the trainers take, for prompts whose
truth is known (see ``oracle``):

- ``rankings.jsonl``: the K responses of each training prompt, ranked by one annotator of the pool.
  The K responses come from several policies of the world (``--policies``, recorded per response
  in ``meta.policy``), as InstructGPT's labelers ranked outputs of several models: ``sample`` (the
  responder at ``--temperature``), ``hot`` (the responder at ``--hot-temperature``), ``partial``
  (a sample with about half of its problems fixed by the annotators' fixers) and ``fixed`` (another
  sample with every problem fixed); ``meta.edit_of`` names the response a derived one edits (its
  position in ``responses``). Annotators tie what they cannot tell apart
  (``annotators.Annotator.resolution``), and two copies of one text always;
- ``preferences.jsonl``: from each ranking, the best against the worst response, plus (the default
  ``--pairs best-worst+edit``) one pair where the annotator preferred a partial or fixed response
  to the sample it edits; ``--pairs best-worst`` gives only the first, ``--pairs all`` every
  ordered pair (InstructGPT's C(K,2) comparisons, which are not independent). ``meta.edit`` says
  whether the chosen response is an edit of the rejected one (PIT's "better given the worse"), so
  an ablation can drop those pairs; ``meta.pair`` gives their positions in the prompt's ranking;
- ``feedback.jsonl``: one record per (prompt, distinct response) of every policy but ``fixed``:
  the annotator's critique and revision.
  Records where nothing is broken are kept: the critique praises and the revision equals the
  response. A critic must learn to leave a good answer alone (Self-Refine's stop condition), so
  these are data, not noise; ``meta.all_met`` marks them for anyone who wants to drop them;
- ``demonstrations.jsonl``: the annotator's best-ranked response with every problem fixed, so it
  reads like the responder (a model's own words, made right);
- ``test.jsonl``: held-out prompts with one initial response each, as ``response`` records;
  ``test_partial.jsonl`` the same responses with about half their problems fixed (a stronger
  responder) and ``test_fixed.jsonl`` with every problem fixed (answers a critic must leave alone);
- ``manifest.json``: the configuration and command line, versions, annotator noise, counts,
  measured annotator agreement, mean oracle quality and the share meeting all instructions (of
  responses, revisions, demonstrations and test responses), and the build time.

Every record carries ``meta = {"topic", "form", "instructions", ...}``, so any of them can be
scored later (``score_file``). Splits are by prompt: a test prompt never appears in training.

Steps (numbered the same in ``build``):
1. check the configuration; every error a user can act on comes before any work;
2. draw the tasks (or read them with ``--tasks``); test prompts first, so a larger ``--prompts``
   keeps the same test set;
3. load the responder: ``template`` (no model), or a model through ``redline.generation``;
4. sample K responses per training prompt and one per test prompt, appending each batch to
   ``DIR/.responses.jsonl`` as it is made, so a killed build resumes where it stopped;
5. annotate: rank, compare, critique, revise, demonstrate (one annotator per prompt, chosen by a
   seeded RNG, which is why the same seed gives the same files);
6. write the record files (each atomically) and the manifest (kept as it is where a rerun built the same set).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import platform
import random
import shlex
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from statistics import mean
from typing import Callable, Sequence

from redline import RedlineError, __version__
from redline.config import seed_field
from redline.records import (
    Demonstration,
    FieldError,
    Feedback,
    Preference,
    Ranking,
    ReadReport,
    Response,
    _parse_rows,
    append_records,
    prompt_field,
    prompt_text,
    read_jsonl_prefix,
    write_records,
    write_text_atomic,
)
from redline.simulate.annotators import make_pool, measure_agreement
from redline.simulate.instructions import TYPES, InstructionError, check, fix_all, parse_instructions
from redline.simulate.oracle import check_all, repair
from redline.simulate.tasks import Task, load_tasks, make_tasks, template_response

SIMULATE_VERSION = 1  # bump when tasks, checkers or fixers change what a seed produces
PAIRS = ("best-worst+edit", "best-worst", "all")
POLICIES = ("sample", "hot", "partial", "fixed")
SAMPLED = ("sample", "hot")  # the policies a model writes; the others are edits of a sample
DEFAULT_POLICIES = "sample:2,hot:1,partial:1,fixed:1"
Respond = Callable[[list[tuple[Task, int | str]], float], list[str]]


def parse_policies(spec: str) -> tuple[str, ...]:
    """'sample:2,hot:1,partial:1' → ('sample', 'sample', 'hot', 'partial'); errors name the part."""
    slots: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, _, count = part.partition(":")
        if name not in POLICIES:
            raise RedlineError(f"--policies {spec!r}: unknown policy {name!r} (known: {', '.join(POLICIES)})")
        try:
            n = int(count) if count else 1
        except ValueError:
            raise RedlineError(f"--policies {spec!r}: {part!r} needs a whole count, as in 'sample:2'") from None
        if n < 0:
            raise RedlineError(f"--policies {spec!r}: {part!r} has a negative count")
        slots += [name] * n
    return tuple(slots)


@dataclass
class BuildConfig:
    """Everything a build depends on; written into ``manifest.json`` so it can be repeated.

    What to build:
        out: the folder for the files.
        responder: who writes responses: 'template' (no model), 'embedded' or a model name.
        prompts: training prompts (each gets K responses).
        test_prompts: held-out prompts (each gets one response).
        policies: who writes each training prompt's K responses, 'name:count,...' over sample, hot,
            partial, fixed (K is the sum; the default mixes all four).
        k: responses per training prompt, the old way: K samples (the same as --policies sample:K).
        seed: one seed for tasks, sampling and annotators.
        tasks: a JSONL file of tasks to use instead of drawing them (first the test tasks).
        types: draw only these instruction types.
    Sampling (model responders):
        temperature, top_p, max_new_tokens, dtype, device, batch_size; hot_temperature for 'hot'.
    Annotators:
        annotators: pool size; noise_scale: their default noise times this (0 = noise-free);
        pairs: comparisons per ranking for the preference file: 'best-worst+edit' (best against
            worst, plus one chosen edit of its rejected), 'best-worst' or 'all'.
    """

    out: Path = field(metadata={"required": True, "result": False, "help": "output folder"})
    responder: str = field(default="embedded", metadata={"aliases": ("--model",), "help":
        "who writes the responses: 'template' (no model), 'embedded' or a model name"})
    prompts: int = field(default=600, metadata={"min": 1, "help": "training prompts"})
    test_prompts: int = field(default=100, metadata={"min": 0, "help": "held-out prompts"})
    k: int | None = field(default=None, metadata={"min": 2, "help":
        "K samples per prompt and no other policy (the v1 world: the same as --policies sample:K)"})
    policies: str | None = field(default=None, metadata={"help":
        "who writes each prompt's K responses, 'name:count,...' over sample (the model at --temperature), hot (at "
        "--hot-temperature), partial (a sample with half its problems fixed), fixed (a sample with all fixed); K is the "
        "sum (default: sample:2,hot:1,partial:1,fixed:1)"})
    seed: int = seed_field("one seed for tasks, sampling and annotators")
    tasks: Path | None = field(default=None, metadata={"help": "JSONL of tasks {topic, instructions[, form, prompt, id]} instead of drawing them"})
    types: tuple[str, ...] | None = field(default=None, metadata={"help": "comma-separated instruction types to draw from (default: all)"})
    temperature: float = field(default=0.7, metadata={"min": 0, "help": "sampling temperature"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling"})
    max_new_tokens: int = field(default=256, metadata={"min": 1, "help": "tokens per response"})
    hot_temperature: float = field(default=1.0, metadata={"min": 0, "help": "temperature of 'hot' samples"})
    dtype: str = field(default="float32", metadata={"choices": ("float32", "bfloat16", "float16"), "help": "weights dtype"})
    device: str = field(default="auto", metadata={"result": False, "help": "cpu, cuda, cuda:1, mps or auto"})
    batch_size: int = field(default=32, metadata={"min": 1, "help": "prompts per generation call"})
    annotators: int = field(default=5, metadata={"min": 1, "help": "annotators in the pool"})
    noise_scale: float = field(default=1.0, metadata={"min": 0, "help": "annotator noise times this; 0 = noise-free"})
    pairs: str = field(default="best-worst+edit", metadata={"choices": PAIRS, "help":
        "preferences per ranking: best against worst, plus one edit pair (chosen edits rejected) where the ranking has one"})
    progress: bool = field(default=True, metadata={"result": False, "help": "show a progress bar"})

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["out"] = str(self.out)
        out["tasks"] = str(self.tasks) if self.tasks else None
        out["types"] = list(self.types) if self.types else None
        return out

    def slots(self) -> tuple[str, ...]:
        """The policy of each of a training prompt's K responses."""
        if self.policies is None:
            return ("sample",) * self.k if self.k is not None else parse_policies(DEFAULT_POLICIES)
        return parse_policies(self.policies)

    def command(self) -> str:
        """The command line that repeats this build."""
        args = ["redline", "simulate", "build", "--responder", self.responder, "--prompts", str(self.prompts),
                "--test-prompts", str(self.test_prompts)]
        args += ["--k", str(self.k)] if self.policies is None and self.k is not None else ["--policies", self.policy_spec()]
        args += ["--seed", str(self.seed), "--out", str(self.out)]
        if self.responder != "template":
            args += ["--temperature", str(self.temperature), "--top-p", str(self.top_p),
                     "--max-new-tokens", str(self.max_new_tokens), "--dtype", self.dtype, "--device", self.device]
            if self.batch_size != BuildConfig.batch_size:  # a bfloat16 engine's numbers depend on the batch's shape
                args += ["--batch-size", str(self.batch_size)]
            if "hot" in self.slots():
                args += ["--hot-temperature", str(self.hot_temperature)]
        if self.tasks:
            args += ["--tasks", str(self.tasks)]
        if self.types:
            args += ["--types", ",".join(self.types)]
        if self.annotators != 5:
            args += ["--annotators", str(self.annotators)]
        if self.noise_scale != 1.0:
            args += ["--noise-scale", str(self.noise_scale)]
        if self.pairs != "best-worst+edit":
            args += ["--pairs", self.pairs]
        return shlex.join(args)

    def policy_spec(self) -> str:
        slots = self.slots()
        return ",".join(f"{p}:{slots.count(p)}" for p in POLICIES if p in slots)

    def check(self) -> None:
        """Raise ``RedlineError`` for a configuration that cannot work (step 1)."""
        if self.k is not None and self.k < 2:
            raise RedlineError(f"--k must be at least 2 (a ranking compares responses), got {self.k}")
        slots = self.slots()
        if self.policies is not None and self.k is not None and self.k != len(slots):
            raise RedlineError(f"--k {self.k} and --policies {self.policies!r} ({len(slots)} responses) disagree; give one")
        if len(slots) < 2:
            raise RedlineError(f"--policies {self.policy_spec() or self.policies!r} gives {len(slots)} responses per prompt; "
                               "a ranking compares at least 2")
        if not any(p in SAMPLED for p in slots):
            raise RedlineError(f"--policies {self.policies!r} has no sampled response (sample or hot) for partial or "
                               "fixed ones to edit")
        if self.hot_temperature < 0:
            raise RedlineError(f"--hot-temperature must be 0 or more, got {self.hot_temperature}")
        if self.prompts < 1:
            raise RedlineError(f"--prompts must be at least 1, got {self.prompts}")
        if self.test_prompts < 0:
            raise RedlineError(f"--test-prompts must be 0 or more, got {self.test_prompts}")
        if self.pairs not in PAIRS:
            raise RedlineError(f"--pairs must be one of {', '.join(PAIRS)}, got {self.pairs!r}")
        if self.annotators < 1:
            raise RedlineError(f"--annotators must be at least 1, got {self.annotators}")
        if self.noise_scale < 0:
            raise RedlineError(f"--noise-scale must be 0 or more, got {self.noise_scale}")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.max_new_tokens < 1:
            raise RedlineError(
                f"sampling needs --temperature >= 0, 0 < --top-p <= 1 and --max-new-tokens >= 1; got "
                f"{self.temperature}, {self.top_p}, {self.max_new_tokens}"
            )
        if self.batch_size < 1:
            raise RedlineError(f"batch size must be at least 1, got {self.batch_size}")
        if self.types is not None:
            if not self.types:  # "--types ''" or ",": it said "unknown instruction type(s)  (known: ...)", naming none
                raise RedlineError(f"--types names no instruction type (known: {', '.join(TYPES)}); leave it out to draw from all")
            unknown = [t for t in self.types if t not in TYPES]
            if unknown:
                raise RedlineError(f"unknown instruction type(s) {', '.join(map(repr, unknown))} (known: {', '.join(TYPES)})")
        if self.out.exists() and not self.out.is_dir():
            raise RedlineError(f"--out {self.out} exists and is not a folder")


# ----------------------------------------------------------------------------- steps 2–3: tasks, responder


def build_tasks(cfg: BuildConfig) -> tuple[list[Task], list[Task]]:
    """(train, test) tasks; no prompt is in both."""
    if cfg.tasks is not None:
        tasks = load_tasks(cfg.tasks)
        prompts = [t.prompt for t in tasks]
        if len(set(prompts)) != len(prompts):
            raise RedlineError(f"tasks file {cfg.tasks} repeats a prompt; prompts must be distinct to split by prompt")
        test = tasks[: cfg.test_prompts]
        train = tasks[cfg.test_prompts : cfg.test_prompts + cfg.prompts]
        if len(test) < cfg.test_prompts or len(train) < cfg.prompts:
            raise RedlineError(f"tasks file {cfg.tasks} has {len(tasks)} tasks; --test-prompts {cfg.test_prompts} and "
                               f"--prompts {cfg.prompts} ask for {cfg.test_prompts + cfg.prompts}")
        return train, test
    test = make_tasks(cfg.test_prompts, cfg.seed, "test", cfg.types)
    train = make_tasks(cfg.prompts, cfg.seed, "train", cfg.types, exclude={t.prompt for t in test})
    return train, test


def sample_seed(seed: int, task_id: str, j: int | str) -> int:
    return random.Random(f"redline-simulate:{seed}:{task_id}:{j}").getrandbits(31)


def load_responder(cfg: BuildConfig) -> Respond:
    """A function from (task, sample index) pairs to response texts; loads the model now."""
    if cfg.responder == "template":
        return lambda batch, temperature: [template_response(t, random.Random(sample_seed(cfg.seed, t.id, j))) for t, j in batch]
    try:
        from redline.generation import SamplingParams, load_engine
    except ImportError as e:
        raise RedlineError(f"responder {cfg.responder!r} needs the generation engine (redline.generation): {e}") from e
    try:
        engine = load_engine(cfg.responder, backend="transformers", dtype=cfg.dtype, device=cfg.device)
    except RedlineError:
        raise
    except (OSError, ValueError, ImportError, RuntimeError, KeyError) as e:
        raise RedlineError(f"cannot load responder {cfg.responder!r}: {e}") from e
    params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)

    def respond(batch: list[tuple[Task, int | str]], temperature: float) -> list[str]:
        chats = [[{"role": "user", "content": t.prompt}] for t, _ in batch]
        seeds = [sample_seed(cfg.seed, t.id, j) for t, j in batch]
        batch_params = dataclasses.replace(params, temperature=temperature)
        return [c.text.strip() for c in engine.generate(chats, batch_params, seeds=seeds, progress=False)]

    return respond


# ----------------------------------------------------------------------------- step 4: responses, resumable


def _identity(cfg: BuildConfig) -> dict:
    """What the cached responses depend on; a cache made under another identity is refused (``_same_build``)."""
    tasks_sha = hashlib.sha256(Path(cfg.tasks).read_bytes()).hexdigest()[:16] if cfg.tasks else None
    sampling = {} if cfg.responder == "template" else {
        "temperature": cfg.temperature, "top_p": cfg.top_p, "max_new_tokens": cfg.max_new_tokens, "dtype": cfg.dtype}
    return {"version": SIMULATE_VERSION, "responder": cfg.responder, "seed": cfg.seed,
            "types": list(cfg.types) if cfg.types else None, "tasks_sha": tasks_sha, **sampling}


def _same_build(header, identity: dict) -> bool:
    """Whether a cache's header is this build's identity. A header without ``dtype`` was written before the
    identity held it (the shipped data set's cache): it is compared on what it recorded."""
    if not isinstance(header, dict):
        return False
    return header == {k: v for k, v in identity.items() if k != "dtype" or "dtype" in header}


def _key(task: Task, j: int | str) -> str:
    return f"{task.id}:{j}"


def _hot_slot(j: int, temperature: float) -> str:
    """The cache key's sample index of hot sample ``j``: 'hot0@1', 'hot1@1.2'.

    The temperature is in the key, written short (``:g``) where that is exact and in full where
    it is not, so two temperatures never share a key (1 and 1.0000001 would under ``:g``).
    """
    short = f"{temperature:g}"
    return f"hot{j}@{short if float(short) == temperature else repr(float(temperature))}"


def sample_requests(cfg: BuildConfig, train: list[Task], test: list[Task]) -> list[tuple[Task, int | str, float]]:
    """(task, sample index, temperature) of every response a model writes.

    ``sample`` slots are indices 0, 1, … (the v1 cache keys, so an old cache is reused);
    ``hot`` slots are 'hot0@T', 'hot1@T', … with the temperature in the key (``_hot_slot``), so
    changing ``--hot-temperature`` samples anew rather than reusing responses of another temperature.
    """
    slots = cfg.slots()
    requests: list[tuple[Task, int | str, float]] = []
    for t in train:
        requests += [(t, j, cfg.temperature) for j in range(slots.count("sample"))]
        requests += [(t, _hot_slot(j, cfg.hot_temperature), cfg.hot_temperature) for j in range(slots.count("hot"))]
    return requests + [(t, 0, cfg.temperature) for t in test]


def _prompt_sha(task: Task) -> str:
    return hashlib.sha256(task.prompt.encode()).hexdigest()[:12]


def generate_responses(cfg: BuildConfig, requests: list[tuple[Task, int | str, float]], respond: Respond) -> dict[str, str]:
    """Every requested response, from the cache where a previous run made it."""
    from tqdm.auto import tqdm

    path = cfg.out / ".responses.jsonl"
    identity = _identity(cfg)
    rows = read_jsonl_prefix(path)
    if rows and not _same_build(rows[0].get("header"), identity):
        raise RedlineError(
            f"{path} holds responses of a different build ({rows[0].get('header')}); use another --out or delete it"
        )
    if not rows:
        append_records(path, [{"header": identity}])
    # A cached response counts only for the very prompt it answered.
    cached = {row["key"]: (row.get("prompt_sha"), row["text"]) for row in rows[1:] if "key" in row}
    done = {_key(t, j): cached[_key(t, j)][1] for t, j, _ in requests if cached.get(_key(t, j), (None,))[0] == _prompt_sha(t)}
    todo = [(t, j, temp) for t, j, temp in requests if _key(t, j) not in done]
    by_temperature: dict[float, list[tuple[Task, int | str]]] = {}
    for t, j, temperature in todo:
        by_temperature.setdefault(temperature, []).append((t, j))
    batches = [(temperature, items[i : i + cfg.batch_size])
               for temperature, items in by_temperature.items() for i in range(0, len(items), cfg.batch_size)]
    with tqdm(total=len(requests), initial=len(requests) - len(todo), desc="responses", unit="resp",
              disable=not cfg.progress) as bar:
        for temperature, batch in batches:
            texts = respond(batch, temperature)
            if len(texts) != len(batch):
                raise RedlineError(f"the responder returned {len(texts)} responses for {len(batch)} prompts")
            rows = [{"key": _key(t, j), "prompt_sha": _prompt_sha(t), "text": text} for (t, j), text in zip(batch, texts)]
            append_records(path, rows)
            done.update((row["key"], row["text"]) for row in rows)
            bar.update(len(batch))
    return done


# ----------------------------------------------------------------------------- step 5: annotation


@dataclass
class Annotated:
    """The records made from one training prompt."""

    ranking: Ranking | None
    preferences: list[Preference]
    feedback: list[Feedback]
    demonstration: Demonstration
    qualities: list[float]  # oracle quality of each response
    revision_qualities: list[float]
    all_met: list[bool]
    revision_all_met: list[bool]
    skipped: list[str]
    policies: list[str]  # the policy of each response


def fix_some(task: Task, response: str, share: float, rng: random.Random) -> str:
    """``response`` with a random ``share`` of its problems (broken instructions and faults) fixed.

    At least one problem is fixed when there is one; share 1 fixes all (a demonstration). The
    fixers are the annotators' minimal edits, so the result is an edit of the response.
    """
    report = check_all(task, response)
    problems = [("inst", c.instruction.type) for c in report.broken] + [("fault", f) for f in report.faults]
    if not problems:
        return response
    chosen = rng.sample(problems, max(1, round(share * len(problems))) if share < 1 else len(problems))
    named = {name for kind, name in chosen if kind == "inst"}
    faults = [name for kind, name in chosen if kind == "fault"]
    met = [i for i in task.instructions if check(i, response).met]
    text = repair(task, response, faults) if faults else response
    return fix_all(task.instructions, text, task.topic, only=[i for i in task.instructions if i.type in named] + met)


def policy_responses(task: Task, slots: Sequence[str], sampled: dict[str, list[str]], seed: int) -> tuple[list[str], list[int | None]]:
    """The K responses of one training prompt, slot by slot, and which response each derived one edits.

    ``sampled`` holds the model's texts per sampled policy ('sample', 'hot'), in slot order. A
    ``partial`` response edits a sample with problems (preferring one with two or more, so half of
    them can stay); a ``fixed`` one edits another sample where there is one, so the ranking holds
    distinct texts. Only samples with text are edited; where every sample is empty, so are the
    derived responses (``edit_of`` None), and ``annotate`` skips them all. A derived response can
    equal its base (nothing to fix, or a fix that did not take); ``annotate`` ties such copies.
    """
    rng = random.Random(f"redline-simulate:{seed}:{task.id}:policies")
    texts: list[str | None] = []
    cursor = {name: 0 for name in SAMPLED}
    for policy in slots:
        if policy in SAMPLED:
            texts.append(sampled[policy][cursor[policy]])
            cursor[policy] += 1
        else:
            texts.append(None)
    bases = [i for i, p in enumerate(slots) if p in SAMPLED and texts[i].strip()]
    reports = {i: check_all(task, texts[i]) for i in bases}
    problems = {i: len(reports[i].broken) + len(reports[i].faults) for i in bases}
    edit_of: list[int | None] = [None] * len(slots)
    used: list[int] = []
    for i, policy in enumerate(slots):
        if policy in SAMPLED:
            continue
        if not bases:
            texts[i] = ""  # nothing to edit
            continue
        fresh = [b for b in bases if b not in used] or bases
        want = 2 if policy == "partial" else 1
        eligible = [b for b in fresh if problems[b] >= want] or [b for b in fresh if problems[b] >= 1] or fresh
        base = rng.choice(eligible)
        used.append(base)
        edit_of[i] = base
        texts[i] = fix_some(task, texts[base], 0.5 if policy == "partial" else 1.0, rng)
    return [t or "" for t in texts], edit_of


def annotate(task: Task, responses: Sequence[str], pool, seed: int, pairs: str = "best-worst",
             policies: Sequence[str] | None = None, edit_of: Sequence[int | None] | None = None) -> Annotated:
    """Step 5 for one training prompt: one annotator of ``pool`` ranks, compares, critiques and demonstrates.

    ``responses`` are the K slots (``policies``, ``edit_of`` as ``policy_responses`` gives them);
    empty ones are dropped, so every index the records carry (``meta.edit_of`` of the ranking,
    ``meta.pair`` of a preference, ``meta.from_response`` of the demonstration) is a position in
    the ranking's ``responses``, not a slot. Copies of one text tie.
    """
    rng = random.Random(f"redline-simulate:{seed}:{task.id}:annotate")
    annotator = pool[rng.randrange(len(pool))]
    meta = {**task.meta(), "annotator": annotator.name}
    policies = list(policies) if policies is not None else ["sample"] * len(responses)
    edit_of = list(edit_of) if edit_of is not None else [None] * len(responses)
    reports = [check_all(task, r) for r in responses]
    qualities = [r.quality for r in reports]
    skipped: list[str] = []

    # Rank the responses that have text (a record cannot hold an empty one).
    usable = [i for i, r in enumerate(responses) if r.strip()]
    skipped += ["empty response"] * (len(responses) - len(usable))
    position = {i: n for n, i in enumerate(usable)}
    ranks = annotator.rank_qualities([qualities[i] for i in usable], rng, texts=[responses[i] for i in usable])
    ranking, preferences = None, []
    if len(usable) >= 2 and len(set(ranks)) >= 2:
        ranking = Ranking(prompt=task.prompt, responses=[responses[i] for i in usable], ranks=ranks, id=task.id,
                          meta={**meta, "oracle_quality": [round(qualities[i], 4) for i in usable],
                                "policy": [policies[i] for i in usable],
                                "edit_of": [position.get(edit_of[i]) if edit_of[i] is not None else None for i in usable]})
        comparisons = ranking.comparisons()
        ids = [f"{task.id}-{n}" for n in range(len(comparisons))]
        if pairs.startswith("best-worst"):
            best = min(range(len(ranks)), key=lambda i: (ranks[i], i))
            worst = max(range(len(ranks)), key=lambda i: (ranks[i], -i))
            comparisons, ids = [(best, worst)], [task.id]
        if pairs == "best-worst+edit":
            # PIT's "better given the worse" needs pairs whose chosen edits the rejected: add one.
            edits = [(position[i], position[edit_of[i]]) for i in usable
                     if edit_of[i] in position and ranks[position[i]] < ranks[position[edit_of[i]]]]
            edits = [pair for pair in edits if pair not in comparisons]
            if edits:
                comparisons, ids = comparisons + edits[:1], ids + [f"{task.id}-edit"]
        for (w, l), record_id in zip(comparisons, ids):
            preferences.append(Preference(prompt=task.prompt, chosen=ranking.responses[w], rejected=ranking.responses[l],
                                          id=record_id,
                                          meta={**meta, "pair": [w, l],
                                                "policy": [policies[usable[w]], policies[usable[l]]],
                                                "edit": edit_of[usable[w]] == usable[l],
                                                "oracle_quality": [round(qualities[usable[w]], 4), round(qualities[usable[l]], 4)]}))
    elif len(usable) >= 2:
        skipped.append("every response tied")
    else:
        skipped.append("fewer than 2 non-empty responses")

    # Critique and revise every distinct text once, but the fully fixed ones (their base's record covers them).
    feedback, revision_qualities, revision_all_met = [], [], []
    critiqued: set[str] = set()
    for i in usable:
        if policies[i] == "fixed" or responses[i] in critiqued:
            continue
        critiqued.add(responses[i])
        critique = annotator.critique(task, responses[i], rng)
        revision = annotator.revise(task, responses[i], critique)
        after = check_all(task, revision)
        revision_qualities.append(after.quality)
        revision_all_met.append(after.all_met)
        feedback.append(Feedback(
            prompt=task.prompt, response=responses[i], critique=critique.text, revision=revision, id=f"{task.id}-{i}",
            meta={**meta, "broken": list(critique.named), "faults": list(critique.faults),
                  "all_met": not critique.named and not critique.faults, "policy": policies[i],
                  "oracle_quality": [round(qualities[i], 4), round(after.quality, 4)]},
        ))

    # Demonstrate from the annotator's favourite.
    favourite = min(range(len(usable)), key=lambda n: (ranks[n], n)) if usable else None
    best = usable[favourite] if favourite is not None else 0
    demonstration = Demonstration(prompt=task.prompt, response=annotator.demonstrate(task, responses[best]), id=task.id,
                                  meta={**meta, "from_response": favourite, "from_policy": policies[best]})
    return Annotated(ranking, preferences, feedback, demonstration, qualities, revision_qualities,
                     [r.all_met for r in reports], revision_all_met, skipped, policies)


def label_figures(rankings: Sequence[Ranking]) -> dict:
    """What the rankings' comparisons teach a reward model, measured against the oracle.

    Of all C(K,2) comparisons: labelled ties (dropped by the reward model), oracle ties the
    annotator broke by noise (labels that are no signal), and on the comparisons the annotator
    decided where the oracle can tell: the share it got right.
    """
    total = ties = broken = right = wrong = 0
    for r in rankings:
        q = r.meta.get("oracle_quality") if r.meta else None
        if not q:
            continue
        for i, j in itertools.combinations(range(len(r.ranks)), 2):
            total += 1
            if r.ranks[i] == r.ranks[j]:
                ties += 1
            elif q[i] == q[j]:
                broken += 1
            elif (q[i] > q[j]) == (r.ranks[i] < r.ranks[j]):
                right += 1
            else:
                wrong += 1
    return {
        "comparisons": total,
        "labelled_ties": ties,
        "labelled_ties_share": round(ties / total, 4) if total else None,
        "oracle_ties_broken_by_noise": broken,
        "oracle_ties_broken_by_noise_share": round(broken / total, 4) if total else None,
        "decisive_labels_right": round(right / (right + wrong), 4) if right + wrong else None,
    }


# ----------------------------------------------------------------------------- the build


def _share(values: Sequence[bool]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _mean(values: Sequence[float]) -> float | None:
    return round(mean(values), 4) if values else None


def build(cfg: BuildConfig) -> dict:
    """Build the data set described by ``cfg`` into ``cfg.out``; return the manifest."""
    from tqdm.auto import tqdm

    started = time.time()
    cfg.check()  # step 1
    train, test = build_tasks(cfg)  # step 2
    respond = load_responder(cfg)  # step 3
    cfg.out.mkdir(parents=True, exist_ok=True)

    slots = cfg.slots()
    requests = sample_requests(cfg, train, test)  # step 4
    texts = generate_responses(cfg, requests, respond)

    pool = make_pool(cfg.annotators, cfg.noise_scale)  # step 5
    results = []
    # The annotators' checks and edits take as long as the template responder's answers (minutes for 20k prompts): a bar.
    for t in tqdm(train, desc="annotating", unit="prompt", disable=not cfg.progress):
        sampled = {"sample": [texts[_key(t, j)] for j in range(slots.count("sample"))],
                   "hot": [texts[_key(t, _hot_slot(j, cfg.hot_temperature))] for j in range(slots.count("hot"))]}
        responses, edit_of = policy_responses(t, slots, sampled, cfg.seed)
        results.append(annotate(t, responses, pool, cfg.seed, cfg.pairs, policies=slots, edit_of=edit_of))
    test_records = [
        Response(prompt=t.prompt, response=texts[_key(t, 0)], source=cfg.responder, id=t.id, meta=t.meta()) for t in test
    ]
    test_reports = [check_all(t, r.response) for t, r in zip(test, test_records)]
    # Stronger responders for the same test prompts, without sampling: the annotators' edits (of a response with text).
    edited = [(t, r) for t, r in zip(test, test_records) if r.response.strip()]
    stronger = {}
    for name, share in (("partial", 0.5), ("fixed", 1.0)):
        stronger[name] = [
            Response(prompt=t.prompt, response=fix_some(t, r.response, share, random.Random(f"redline-simulate:{cfg.seed}:{t.id}:test-{name}")),
                     source=f"{cfg.responder}+{name}", id=t.id, meta=t.meta())
            for t, r in edited
        ]
    stronger_reports = {name: [check_all(t, r.response) for (t, _), r in zip(edited, records)] for name, records in stronger.items()}

    files = {  # step 6
        "demonstrations.jsonl": [r.demonstration for r in results],
        "rankings.jsonl": [r.ranking for r in results if r.ranking is not None],
        "preferences.jsonl": [p for r in results for p in r.preferences],
        "feedback.jsonl": [f for r in results for f in r.feedback],
        "test.jsonl": test_records,
        "test_partial.jsonl": stronger["partial"],
        "test_fixed.jsonl": stronger["fixed"],
    }
    for name, records in files.items():
        write_records(cfg.out / name, records)

    skipped: dict[str, int] = {}
    for r in results:
        for reason in r.skipped:
            skipped[reason] = skipped.get(reason, 0) + 1
    demo_reports = [check_all(t, r.demonstration.response) for t, r in zip(train, results)]
    type_counts: dict[str, int] = {}
    for t in train:
        for inst in t.instructions:
            type_counts[inst.type] = type_counts.get(inst.type, 0) + 1
    manifest = {
        "kind": "redline-simulate",
        "command": cfg.command(),
        "config": cfg.to_dict(),
        "seed": cfg.seed,
        "responder": cfg.responder,
        "versions": {"redline": __version__, "simulate": SIMULATE_VERSION, "python": platform.python_version()},
        "annotators": [a.noise() for a in pool],
        "preferences_from": cfg.pairs,
        "feedback_policy": "one record per (prompt, distinct non-empty response) of every policy but 'fixed'; records where "
                           "nothing is broken are kept (the critique praises, the revision equals the response) and "
                           "marked meta.all_met",
        "policies": {"slots": list(slots), "temperature": cfg.temperature,
                     **({"hot_temperature": cfg.hot_temperature} if "hot" in slots else {})},
        "counts": {
            "train_prompts": len(train),
            "test_prompts": len(test),
            "responses": len(train) * len(slots),
            **{name.removesuffix(".jsonl"): len(records) for name, records in files.items()},
            "feedback_all_met": sum(f.meta["all_met"] for r in results for f in r.feedback),
            "feedback_prompts": len({f.prompt for r in results for f in r.feedback}),
            "preferences_edit": sum(bool(p.meta.get("edit")) for r in results for p in r.preferences),
            "skipped": skipped,
        },
        "instruction_types": dict(sorted(type_counts.items())),
        "agreement": measure_agreement(pool, [r.qualities for r in results], cfg.seed),
        "labels": label_figures(files["rankings.jsonl"]),
        "quality_by_policy": {
            policy: _mean([q for r in results for q, p in zip(r.qualities, r.policies) if p == policy]) for policy in dict.fromkeys(slots)
        },
        "quality": {
            "responses": _mean([q for r in results for q in r.qualities]),
            "revisions": _mean([q for r in results for q in r.revision_qualities]),
            "demonstrations": _mean([d.quality for d in demo_reports]),
            "test_responses": _mean([d.quality for d in test_reports]),
            **{f"test_{name}": _mean([d.quality for d in reports]) for name, reports in stronger_reports.items()},
        },
        "all_met": {
            "responses": _share([m for r in results for m in r.all_met]),
            "revisions": _share([m for r in results for m in r.revision_all_met]),
            "demonstrations": _share([d.all_met for d in demo_reports]),
            "test_responses": _share([d.all_met for d in test_reports]),
            **{f"test_{name}": _share([d.all_met for d in reports]) for name, reports in stronger_reports.items()},
        },
        "build_seconds": round(time.time() - started, 2),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_manifest(cfg.out / "manifest.json", manifest)
    return manifest


def write_manifest(path: Path, manifest: dict) -> None:
    """Step 6's manifest, left as it is where it already says the same but for when and how long the build ran and
    how ``--out`` was spelt, the settings that change no file (``--device``, ``--no-progress``), and how a file or
    folder it read was spelt (``--tasks ./tasks.jsonl``, a responder's folder; the fingerprint compares them by
    content): a rerun that builds nothing new (a script run again to resume the steps after it) rewrote it, which
    changed the folder's digest, so every run that read the folder (``experiment critic --data``) refused to resume
    as if the data had changed."""
    free = {f.name for f in dataclasses.fields(BuildConfig) if f.metadata.get("result", True) is False}  # out too

    def named(value):  # a path that is here, whole: ./tasks.jsonl and /abs/tasks.jsonl are one file
        return os.path.abspath(value) if isinstance(value, str) and value and os.path.exists(value) else value

    def lasting(m: dict) -> dict:
        kept = {k: v for k, v in m.items() if k not in ("created", "build_seconds", "command")}
        config = {k: named(v) if k in ("tasks", "responder") else v
                  for k, v in kept.get("config", {}).items() if k not in free}
        return {**kept, "responder": named(kept.get("responder")), "config": config}

    text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    try:
        before = json.loads(path.read_bytes())
    except (OSError, ValueError):
        before = None
    if isinstance(before, dict) and isinstance(before.get("config"), dict) and lasting(before) == lasting(json.loads(text)):
        return
    write_text_atomic(path, text)


# ----------------------------------------------------------------------------- scoring


@dataclass
class ScoreConfig:
    """`redline simulate score`: which records, and which of their fields the oracle scores."""

    input: str = field(default="", metadata={"required": True, "help": "record file (JSONL, Parquet, datasets folder)"})
    limit: int | None = field(default=None, metadata={"min": 1, "help": "score only the first N valid records"})
    skip_invalid: bool = field(default=False, metadata={"help": "skip bad records (counted) instead of stopping"})
    # last: in this class body the name shadows dataclasses.field from here on
    field: str = field(default="response", metadata={"help": "field to score: response, revision, chosen, responses..."})


def record_task(meta) -> dict:
    """The task a record's ``meta`` carries, as ``check_all`` takes it (topic, parsed instructions); a
    ``FieldError`` on ``meta.instructions`` when it has none or they do not parse, on ``meta.topic`` when it is
    not a string."""
    if not isinstance(meta, dict) or "instructions" not in meta:
        raise FieldError("meta.instructions", "missing (only records that carry their instructions can be scored)")
    try:
        instructions = parse_instructions(meta["instructions"])
    except InstructionError as e:
        raise FieldError("meta.instructions", str(e)) from None
    topic = meta.get("topic")
    if topic is not None and not isinstance(topic, str):  # the oracle reads its words (it crashed on a number)
        raise FieldError("meta.topic", f"expected a string, got {type(topic).__name__}")
    return {"topic": topic, "instructions": [i.to_dict() for i in instructions]}


def score_file(path: str | Path, field: str = "response", limit: int | None = None, skip_invalid: bool = False) -> dict:
    """Score the ``field`` of every record that carries its instructions in ``meta``.

    ``field`` may hold a string (``response``, ``revision``, ``chosen``...) or a list of strings
    (``responses`` of a ranking: each one is scored). Returns ``{"n", "mean_quality", "all_met"}``
    where ``all_met`` is the share of scored texts that meet every instruction (and ``skipped``,
    with ``skip_invalid``, when records were skipped). Read by ``records._parse_rows``, so an empty
    file, or one whose every record was skipped, is refused, and a skip is reported with its reasons.
    """

    def parse(obj, number: int) -> tuple[dict, list[str], str | None]:
        if not isinstance(obj, dict):
            raise FieldError("<record>", f"expected a JSON object, got {type(obj).__name__}")
        task = record_task(obj.get("meta"))
        value = obj.get(field)
        if field not in obj:
            raise FieldError(field, "missing")
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise FieldError(field, "expected a string or a list of strings" + (" (null: a critique-only record)" if value is None else ""))
        # Optional (it enables the copy penalty), but checked where given: a malformed chat crashed prompt_text.
        return task, texts, prompt_text(prompt_field(obj)) if obj.get("prompt") else None

    report = ReadReport(str(path))
    qualities: list[float] = []
    met: list[bool] = []
    for task, texts, prompt in _parse_rows(path, parse, skip_invalid=skip_invalid, limit=limit, report=report):
        for text in texts:
            checked = check_all(task, text, prompt)
            qualities.append(checked.quality)
            met.append(checked.all_met)
    result = {"n": len(qualities), "mean_quality": _mean(qualities), "all_met": _share(met)}
    if report.skipped:
        result["skipped"] = report.skipped
    return result
