"""`redline generate`: any model's responses to the prompts of a record file, as response records.

This is how a policy is put in front of a judge: sample the SFT, PPO or PIT policy (or any hub
model) on held-out prompts, then ``redline evaluate --a ppo.jsonl --b sft.jsonl --judge oracle --out ppo_vs_sft``.

    redline generate --model runs/ppo --prompts data/simulated/test.jsonl --out ppo.jsonl

Steps:
  1. read the prompts: any record with a ``prompt`` (test, demonstration, ranking ...), keeping
     its ``id`` and ``meta`` (the simulated annotators' oracle reads the instructions from meta);
  2. skip the records OUT already holds (a killed run resumes where it stopped);
  3. generate in chunks through the generation engine and append each chunk to OUT as it is done.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from redline import RedlineError
from redline.config import seed_field
from redline.models import DTYPES as DTYPE_CHOICES


@dataclass
class GenerateConfig:
    """`redline generate`: the model, the prompts, then how to sample."""

    model: str = field(default="embedded", metadata={"help": "hub id, path, embedded, tiny-random or a run folder"})
    prompts: str = field(default="", metadata={"required": True, "help": "records with a prompt (any kind)"})
    source: str | None = field(default=None, metadata={"help": "the records' source field (default: the model)"})
    limit: int | None = field(default=None, metadata={"min": 1, "result": False, "help": "the first N prompts"})
    skip_invalid: bool = field(default=False, metadata={"help": "skip bad records instead of stopping"})
    temperature: float = field(default=0.7, metadata={"min": 0, "help": "sampling temperature (0 = greedy)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling"})
    max_new_tokens: int = field(default=256, metadata={"min": 1, "help": "tokens per response"})
    seed: int = seed_field("prompt i samples with seed + i")
    chunk: int = field(default=64, metadata={"min": 1, "result": False, "help": "prompts per engine call (each chunk is saved at once)"})
    backend: str = field(default="transformers", metadata={"choices": ("transformers", "vllm"), "help": "transformers or vllm"})
    dtype: str = field(default="float32", metadata={"choices": DTYPE_CHOICES, "help": "weights dtype"})
    device: str = field(default="auto", metadata={"result": False, "help": "cpu, cuda or auto"})
    threads: int | None = field(default=None, metadata={"min": 1, "result": False, "help": "torch threads (CPU) (default: torch's choice)"})


def generate_responses(config: GenerateConfig, out: str | Path) -> Path:
    """Steps 1–3; returns OUT (response records, JSONL, appended chunk by chunk)."""
    from redline.config import check_required
    from redline.generation import as_chat, load_engine, progress_bar, sampling_from_flags
    from redline.records import Response, append_records, read_prompt_records

    out = Path(out)
    check_required(config)  # built in Python: flags and config files were checked as they were read
    records = read_prompt_records(config.prompts, limit=config.limit, skip_invalid=config.skip_invalid)  # step 1
    if config.chunk < 1:
        raise RedlineError(f"--chunk must be at least 1, got {config.chunk}")
    if out.suffix in (".gz", ".parquet"):  # appended chunk by chunk and resumed from its lines: plain JSONL only
        raise RedlineError(f"--out {out}: generate appends JSONL as it goes, which a {out.suffix} file cannot take; "
                           f"write {out.with_suffix('').name if out.suffix == '.gz' else out.stem + '.jsonl'}, then "
                           "compress or convert it")
    # SamplingParams' own bounds (--top-p 0), named by their flags before the model loads, not after
    params = sampling_from_flags(temperature=config.temperature, top_p=config.top_p,
                                 max_new_tokens=config.max_new_tokens, seed=config.seed)
    done = check_done(out, records, config.prompts)  # step 2
    if done >= len(records):
        print(f"redline: {out} already holds all {len(records)} responses", file=sys.stderr)
        return out
    if done:
        print(f"redline: resuming: {done} of {len(records)} responses are in {out}", file=sys.stderr)

    options = {"threads": config.threads} if config.threads and config.backend == "transformers" else {}
    engine = load_engine(config.model, backend=config.backend, dtype=config.dtype, device=config.device, **options)
    refuse_too_long(engine, records, done, config.prompts)
    source = config.source or resumed_source(out, done) or config.model
    out.parent.mkdir(parents=True, exist_ok=True)
    with progress_bar(len(records), initial=done) as bar:  # one bar for the file, the engine's calls a chunk each under it
        for start in range(done, len(records), config.chunk):  # step 3
            chunk = records[start:start + config.chunk]
            seeds = [config.seed + start + i for i in range(len(chunk))]  # the same seed for a prompt on resume
            completions = engine.generate([as_chat(r["prompt"]) for r in chunk], params, seeds=seeds, progress=bar)
            append_records(out, [
                Response(prompt=r["prompt"], response=c.text.strip(), source=source, id=r["id"], meta=r["meta"])
                for r, c in zip(chunk, completions)
            ])
            bar.n = start + len(chunk)  # whole items written (the engine advances it by fractions of one)
            bar.set_postfix_str(f"{engine.last_stats.tokens_per_s:.0f} tok/s, {bar.n:.0f} in {out.name}")
    print(f"redline: {len(records)} responses in {out}", file=sys.stderr)
    return out


def refuse_too_long(engine, records: list[dict], done: int, prompts: str) -> None:
    """A prompt left to answer that leaves the model no room for one token, refused before any is generated: the
    engine refused it only when its chunk came, the chunks before it generated and written."""
    from redline.generation import as_chat, has_room
    from redline.improve.revise import token_counter

    _, count_prompt, context = token_counter(engine)
    if context is None:
        return
    for number, record in enumerate(records[done:], start=done + 1):
        tokens = count_prompt(as_chat(record["prompt"]))
        if not has_room(tokens, context):
            raise RedlineError(f"{prompts}: record {number} (id {record['id']}): prompt: {tokens} tokens in the model's "
                               f"chat template, past the {context - 1} it takes with room for one new token; shorten it "
                               "or leave it out (nothing more was generated)")


def resumed_source(out: Path, done: int) -> str | None:
    """The source the responses OUT holds name, where they all name one: a resumed run without ``--source`` takes it,
    as the model they name is this run's (its fingerprint compared the folder's content), however it is spelt now
    (``./runs/ppo``): one file named its model two ways, and read as two generators."""
    from redline.records import read_jsonl_prefix

    if not done:
        return None
    sources = {row.get("source") for row in read_jsonl_prefix(out)}
    return sources.pop() if len(sources) == 1 and isinstance(next(iter(sources)), str) else None


def check_done(out: Path, records: list[dict], prompts: str) -> int:
    """How many responses OUT already holds, after checking that each answers the record in its
    place (a file of another run, or of other prompts, is refused rather than appended to)."""
    from redline.records import read_jsonl_prefix

    if not out.exists():
        return 0
    rows = read_jsonl_prefix(out)
    for number, (row, record) in enumerate(zip(rows, records), start=1):
        if not isinstance(row, dict):
            raise RedlineError(f"{out}:{number}: not a response record (a JSON {type(row).__name__}): another "
                               "program's file? (remove it or choose another --out)")
        for name in ("id", "prompt"):
            if row.get(name) != record[name]:
                raise RedlineError(f"{out}:{number}: {name}: differs from record {number} of {prompts}: "
                                   "another run's file? (remove it or choose another --out)")
    return len(rows)
