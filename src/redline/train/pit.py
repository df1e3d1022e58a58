"""Train a PIT policy: a model that improves a reference response, learnt from preference pairs alone.

Wang et al. 2023, "Enabling language models to implicitly learn self-improvement" (PIT),
arXiv 2310.00898 (ICLR 2024). From pairs (x, y_w, y_l) and a reward-gap model r_gap(x, y, y_ref)
(``redline train gap-reward``), PIT learns to write a response better than a given one:

  * PIT SFT maximises log p(y_w | x, y_l): the better response given the prompt and the worse one;
  * RL maximises E[r_gap(x, y, y_ref)] − β·KL(π ‖ π_SFT) in a curriculum: round 0 improves the
    references of the data (y_l and y_w), round 1 improves references sampled from the ordinary
    policy, which are better and so harder to improve. Dropping either round loses most of the gain.

    redline train pit --policy runs/sft --gap-reward runs/gap --data preferences.jsonl --out runs/pit \\
        [--rounds 0,1] [--split-thirds]

Steps (the same numbers mark ``train_pit``):
  1. Check everything before a model loads: the gap model's kind, the policy's kind, their
     tokenizers, the rounds, the records; split the data (``--split-thirds``: refused if the gap model
     trained on a prompt of the other two thirds) and build every
     round-0 prompt, refusing the run if one does not fit ``--max-prompt-length``.
  2. PIT SFT (``train_sft``, kind ``pit-sft``) on chat pairs: the PIT template (prompts.py) with
     (x, y_l) as the user turn, y_w as the completion. Pairs whose chosen equals rejected are skipped
     and counted (they would teach copying). ``--sft-pairs edits|no-edits`` keeps only the pairs whose
     chosen is (or is not) an edit of the rejected (``meta.edit``): "better given the worse" is an
     edit in the one and an independent sample in the other.
  3. Round-1 references: one response per RL prompt, sampled from BASE (``--policy``) with the
     generation engine; kept in RUN/references.jsonl. Round 1's prompts are built and checked against
     ``--max-prompt-length`` here, before any RL round trains.
  4. RL, round by round with the shared ``run_ppo``: the prompt of an episode is the PIT template
     with (x, y_ref); the reward is r_gap(x, y, y_ref); the KL is to the PIT SFT model in every round;
     the value model starts from the gap model. Each round starts from the previous round's policy.
  5. Write RUN/pit.json: which folder holds the final policy (what ``redline improve`` loads), and
     every stage's metrics; ``--push-to-hub REPO`` publishes that folder (less its checkpoints).

What a run folder holds::

    RUN/train_config.json   the resolved PITConfig (``--config`` repeats the run)
    RUN/sft/                PIT SFT (kind pit-sft)
    RUN/references.jsonl    round 1's references, sampled from BASE
    RUN/rl-0/  RUN/rl-0-1/  the policy after the rounds it has been through (kind pit); ``--rounds 1``
    RUN/rl-1/               alone gives rl-1 (round 1 straight from SFT)
    RUN/pit.json            the final policy's folder and the metrics of every stage

Resuming: a stage whose folder holds its redline.json is done and is skipped; an unfinished RL
round resumes from its own checkpoints (``run_ppo``), under the ``--iterations`` given now; the SFT
stage from its Trainer checkpoints. A finished round is never extended (a note says when
``--iterations`` now differs from its count). The command line refuses a RUN begun with other
settings, ``--rounds`` included: an ablation (say ``--rounds 1``) gets a RUN of its own, into which
a copy of sft/ and references.jsonl may be placed first to share them (scripts/pit_simulated.sh).

Splitting the data: the paper splits each data set in three equal parts (SFT, reward model, RL).
``--split-thirds`` (here and in ``train gap-reward``, with the same ``--split-seed``) does that on one
file. Without it every stage reads all of ``--data``: split the file yourself, or pass
``--rl-data`` for RL prompts of their own.

Deviations from the paper:
  1. Sizes for a CPU: 4 PPO iterations per round, LoRA; every other RL setting is ``RLSettings``,
     shared with `train ppo` (its flags, defaults and deviations from InstructGPT all apply, RLOO
     included). The paper's scale is not in reach.
  2. Round 1's references come from BASE, the policy PIT SFT starts from (the paper: "the ordinary
     RLHF policy"); pass a PPO run as ``--policy`` to match the paper exactly.
  3. Round 0 uses both references of a pair as separate episodes (the paper: "y_l and y_w"; the mix
     is not stated). A pair whose chosen equals rejected gives one episode. ``--round0-references
     rejected`` keeps y_l only: on the simulated world a third of round 0's references were already at
     the oracle's top, which a rewrite can only tie or spoil (RESULTS "PIT").
  4. Round 1 keeps the KL to PIT SFT, so its reference is a frozen copy of the SFT model (round 0
     shares the policy's weights with its adapter off); the value model starts from the gap model
     again in each round rather than from round 0's value model, since its rewards change.
  5. PIT's template is ours (the paper's is not public), and the gap model reads the same chat.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from redline import RedlineError
from redline.config import write_config
from redline.records import json_text, write_text_atomic
from redline.train.ppo import RLSettings

MANIFEST = "pit.json"
REFERENCES = "references.jsonl"
ROUNDS = (0, 1)
POLICY_KINDS = ("pit", "pit-sft")
SFT_PAIRS = ("all", "edits", "no-edits")
ROUND0_REFERENCES = ("both", "rejected")


@dataclass
class PITConfig(RLSettings):
    """`redline train pit`: the RL knobs of RLSettings (every `train ppo` RL flag, for each round), then the
    models, the data, the stages and the PIT SFT knobs. Defaults fit a CPU."""

    # --- RL settings whose default differs from PPO's: PIT's prompts hold a reference answer too
    iterations: int = field(default=4, metadata={"min": 1, "result": False, "help": "PPO iterations per round"})
    max_prompt_length: int = field(default=512, metadata={"help": "tokens per RL prompt (template, request and reference)"})
    reward_max_length: int = field(default=768, metadata={"min": 1, "help": "tokens the gap model reads per (prompt, reference, response)"})
    # --- models
    policy: str = field(default="", metadata={"required": True, "help": "BASE: the policy PIT SFT starts from (an SFT or PPO run, or any causal LM); round 1's references are its samples"})
    gap_reward: str = field(default="", metadata={"help": "the reward-gap model (redline train gap-reward): the RL reward, and the value model's start (needed by every --rounds but none)"})
    # --- data
    data: str = field(default="", metadata={"required": True, "help": "preference records (prompt, chosen, rejected)"})
    rl_data: str | None = field(default=None, metadata={"help": "preference records for RL (default: --data, or its RL third)"})
    split_thirds: bool = field(default=False, metadata={"help": "SFT on the first third of --data and RL on the last (the paper's split; `train gap-reward --split-thirds` takes the middle one)"})
    split_seed: int = field(default=0, metadata={"help": "seed of the three-way split (the same as the gap model's)"})
    limit: int | None = field(default=None, metadata={"min": 1, "help": "use the first N records of each file"})
    skip_invalid: bool = field(default=False, metadata={"help": "skip bad records instead of stopping"})
    # --- stages
    rounds: str = field(default="0,1", metadata={"help": "RL rounds in curriculum order: 0,1 (the paper), 0, 1, or none (PIT SFT only)"})
    round0_references: str = field(default="both", metadata={"choices": ROUND0_REFERENCES, "help": (
        "the answers round 0 improves: both of each pair (y_l and y_w, the paper's) or the rejected ones only (an "
        "answer that already meets everything can only be tied or spoiled)")})
    # --- PIT SFT
    epochs: float = field(default=1.0, metadata={"min": 0.01, "help": "passes over the data in the PIT SFT stage (RL runs --iterations)"})
    max_steps: int | None = field(default=None, metadata={"min": 1, "help": "stop the PIT SFT stage after N optimiser steps (RL runs --iterations)"})
    sft_batch_size: int = field(default=8, metadata={"min": 1, "help": "PIT SFT sequences per optimiser step (one per forward pass)"})
    sft_learning_rate: float | None = field(default=None, metadata={"min": 0, "help": "PIT SFT peak lr (default: 2e-4 LoRA, 2e-5 full)"})
    sft_max_length: int = field(default=1024, metadata={"min": 1, "help": "PIT SFT tokens per sequence (prompt, y_l and y_w); longer ones are cut"})
    lora_dropout: float = field(default=0.0, metadata={"min": 0, "max": 0.99, "help": (
        "dropout on the LoRA path in the PIT SFT stage (the RL rounds run without: their log-probabilities "
        "must be the sampler's)")})
    sft_pairs: str = field(default="all", metadata={"choices": SFT_PAIRS, "help": (
        "PIT SFT on every pair, on the edits only (pairs whose meta.edit is true: the chosen answer is the "
        "rejected one corrected, as `simulate build` marks them) or on the other pairs only (the ablation)")})
    # --- round 1's references
    reference_temperature: float = field(default=0.7, metadata={"min": 0, "help": "sampling temperature of BASE's references"})
    reference_max_new_tokens: int = field(default=256, metadata={"min": 1, "help": "tokens per reference"})
    # --- PIT SFT bookkeeping
    logging_steps: int = field(default=5, metadata={"min": 1, "result": False, "help": "PIT SFT: log every N steps"})
    save_steps: int = field(default=50, metadata={"min": 1, "result": False, "help": "PIT SFT: checkpoint every N steps"})

    def rounds_list(self) -> list[int]:
        text = self.rounds.strip().lower()
        if text in ("", "none"):
            return []
        try:
            rounds = [int(r) for r in text.split(",")]
        except ValueError:
            rounds = [-1]
        if any(r not in ROUNDS for r in rounds) or rounds != sorted(set(rounds)):
            raise RedlineError(f"--rounds wants 0,1, 0, 1 or none (in curriculum order), got {self.rounds!r}")
        return rounds

    def sft_settings(self):
        from redline.train.sft import SFTSettings

        return SFTSettings(model=self.policy, lora=self.lora, lora_r=self.lora_r, lora_alpha=self.lora_alpha,
                           lora_dropout=self.lora_dropout,
                           dtype=self.dtype, bf16_base=self.bf16_base, device=self.device, threads=self.threads,
                           learning_rate=self.sft_learning_rate,
                           epochs=self.epochs, max_steps=self.max_steps, batch_size=1, grad_accum=self.sft_batch_size,
                           max_length=self.sft_max_length, seed=self.seed, logging_steps=self.logging_steps,
                           save_steps=self.save_steps, report_to=self.report_to)

    def ppo_config(self, start: str, prompts: str, final: bool = True):
        """The PPOConfig of one round: every RLSettings field as given, the policy starting from ``start``,
        the gap model as PPO's reward, no pretraining mix. Only the ``final`` round, the one published,
        keeps ``push_to_hub`` (its card's usage snippet names the repo)."""
        from redline.train.ppo import PPOConfig

        rl = {f.name: getattr(self, f.name) for f in fields(RLSettings)}
        rl["push_to_hub"] = self.push_to_hub if final else None
        return PPOConfig(**rl, policy=start, reward=self.gap_reward, prompts=prompts, ptx_coef=0.0)


# ----------------------------------------------------------------------------- data


def pit_sft_examples(prefs) -> tuple[list[dict], int]:
    """Step 2's chat pairs: the PIT template with (x, y_l) as the prompt, y_w as the completion.

    Returns the examples and how many identical pairs (chosen equal to rejected) were skipped.
    """
    from redline.prompts import pit_messages

    examples = [{"prompt": pit_messages(p.prompt, p.rejected), "completion": [{"role": "assistant", "content": p.chosen}]}
                for p in prefs if not p.identical]
    return examples, len(prefs) - len(examples)


def select_sft_pairs(prefs, which: str, source: str) -> list:
    """Step 2's pairs under ``--sft-pairs``: all of them, or those whose ``meta.edit`` is true (edits) or
    false (no-edits). A selection refuses records that do not say (``meta.edit`` missing or not a bool)."""
    if which == "all":
        return prefs
    unsure = [p for p in prefs if not isinstance(p.meta.get("edit"), bool)]
    if unsure:
        first = unsure[0].id or unsure[0].prompt
        raise RedlineError(f"{source}: --sft-pairs {which} reads meta.edit (true or false), which {len(unsure)} of "
                           f"{len(prefs)} PIT SFT pairs lack (the first: {str(first)[:60]!r})")
    return [p for p in prefs if p.meta["edit"] == (which == "edits")]


def round0_records(prefs, which: str = "both") -> list[dict]:
    """Round 0's episodes: each pair's prompt with y_l, and with y_w unless ``which`` is "rejected", as the
    reference to improve."""
    records = []
    for i, p in enumerate(prefs):
        refs = [("l", p.rejected)] + ([] if p.identical or which == "rejected" else [("w", p.chosen)])
        for side, ref in refs:
            records.append({"id": f"{p.id or i}:{side}", "prompt": p.prompt, "reference": ref})
    return records


def unique_prompts(prefs) -> list:
    from redline.records import prompt_key

    seen, prompts = set(), []
    for p in prefs:
        if prompt_key(p.prompt) not in seen:
            seen.add(prompt_key(p.prompt))
            prompts.append(p.prompt)
    return prompts


def build_prompt(record: dict) -> list[dict]:
    """An RL episode's prompt: improve ``reference`` as an answer to ``prompt``."""
    from redline.prompts import pit_messages

    return pit_messages(record["prompt"], record["reference"])


def is_complete(folder: Path) -> bool:
    """A stage is done when its model card is written (``save_model`` writes it last); never in a launched process
    given --overwrite that may see the earlier run's (``overwriting_worker``)."""
    from redline.train.sft import overwriting_worker

    return (folder / "redline.json").is_file() and not overwriting_worker()


def stage_name(rounds: list[int]) -> str:
    return "rl-" + "-".join(str(r) for r in rounds)


def pit_policy(path: str | os.PathLike) -> str:
    """The PIT policy a path names (a `train pit` folder: its final stage), or one clear error."""
    from redline.models import run_info

    path = Path(path)
    if (path / MANIFEST).is_file():
        try:
            return str(path / json.loads((path / MANIFEST).read_text())["policy"])
        except (ValueError, KeyError, TypeError) as e:
            raise RedlineError(f"{path / MANIFEST}: not a `train pit` manifest ({type(e).__name__}: {e}); rerun "
                               "`redline train pit` into this folder to write it again") from None
    kind = run_info(path).get("kind") if path.is_dir() else None
    if kind in POLICY_KINDS:
        return str(path)
    what = f"a {kind} run" if kind else "not a redline run" if not path.is_dir() else "a folder with no redline.json"
    raise RedlineError(f"{path} is {what}, not a PIT policy; train one with `redline train pit` "
                       "(a `train pit` folder, or one of its sft/ or rl-*/ stages)")


def refuse_gap_model_prompts(config: PITConfig, prefs) -> None:
    """Under ``--split-thirds`` the gap model's third is its own: PIT SFT or RL prompts that it trained on (its
    ``--split-seed`` another, its run not split, or another file's limit) are refused before a model loads."""
    from redline.records import prompt_key, prompt_text
    from redline.train.reward import start_training_prompts

    trained, _ = start_training_prompts(config.gap_reward)  # a run whose data is gone cannot be checked
    shared = [p for p in prefs if prompt_key(p.prompt) in trained]
    if shared:
        raise RedlineError(
            f"{config.data} (--split-thirds, --split-seed {config.split_seed}): {len({prompt_key(p.prompt) for p in shared})} "
            f"of the PIT SFT and RL prompts were trained on by the gap model {config.gap_reward} (the first: "
            f"{prompt_text(shared[0].prompt)[:60]!r}); train it with `train gap-reward --split-thirds` and the same "
            "--data, --limit and --split-seed")


def split_note(config, third: str, part: list, read: list, what: str = "",
               rest: str = "; the middle third is the gap model's.") -> str:
    """What a stage's card says of its data under ``--split-thirds`` (a PITConfig or the gap model's config): which
    third of ``--data`` it learnt from, and how much of it (the card's data names the whole file, and its reads count
    every record of it)."""
    count = lambda prefs: len(unique_prompts(prefs))
    limit = f", --limit {config.limit}" if config.limit else ""
    return (f"Data: {what}the {third} third of `{config.data}` (--split-thirds, --split-seed {config.split_seed}{limit}): "
            f"{len(part)} of the {len(read)} preference records read, on {count(part)} of their {count(read)} prompts"
            f"{rest}")


# ----------------------------------------------------------------------------- stages


def sample_references(config: PITConfig, prompts: list, path: Path) -> list[dict]:
    """Step 3: one response per prompt from BASE, written as response records (atomically). A file already there
    (a resumed run's, or one copied in to share) is reused when it answers exactly these prompts and BASE wrote it."""
    from redline.generation import SamplingParams, as_chat, load_engine
    from redline.records import prompt_key, read_jsonl_prefix, write_records
    from redline.train.sft import main_process, overwriting_worker

    if path.is_file() and not overwriting_worker():
        rows = read_jsonl_prefix(path)
        # the count alone would pass a copy from another split of the same size (thirds are equal by design)
        if ([prompt_key(r.get("prompt")) for r in rows] == [prompt_key(p) for p in prompts]
                and all(same_model(r.get("source"), config.policy) for r in rows)):  # a copy from another BASE: resampled
            return rows
    main = main_process()  # under a launcher every process samples them; one says so, and draws the bar
    if main:
        print(f"redline: sampling {config.policy}'s answers to {len(prompts)} prompts, round 1's references "
              f"({path})", file=sys.stderr)
    engine = load_engine(config.policy, dtype=config.dtype, device=config.device)
    params = SamplingParams(temperature=config.reference_temperature, max_new_tokens=config.reference_max_new_tokens,
                            seed=config.seed)
    completions = engine.generate([as_chat(p) for p in prompts], params, progress=main)  # minutes on a CPU
    rows = [{"id": f"ref-{i}", "prompt": p, "response": c.text, "source": config.policy}
            for i, (p, c) in enumerate(zip(prompts, completions))]
    del engine
    gc.collect()
    write_records(path, rows)  # atomically, each process through a file of its own
    return rows


def same_model(a, b: str) -> bool:
    """Two spellings of one model: the same name, or paths to the same folder."""
    return a == b or (isinstance(a, str) and os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b))


def run_round(config: PITConfig, start: str, sft: str, records: list[dict], out: Path, source: str,
              final: bool, notes: str = "") -> dict[str, Any]:
    """Step 4, one round: PPO from ``start`` with the gap reward, the KL to PIT SFT.

    ``records`` carry ``prompt`` and ``reference``; ``source`` names the file they came from (the card says it, with
    ``notes`` on what part of it they are); ``final``: this round's policy is the run's.
    """
    from accelerate import PartialState

    from redline.models import load_causal_lm, on_cpu
    from redline.train.gap_reward import gap_reward
    from redline.train.ppo import check_resume_processes, load_ppo_models, run_ppo

    ppo = config.ppo_config(start, prompts=source, final=final)
    state = PartialState(cpu=on_cpu(config.device))
    check_resume_processes(out, state.num_processes, ppo.iterations)  # before the models load, as train ppo
    models = load_ppo_models(ppo, str(state.device))
    if start != sft:  # the KL anchor stays PIT SFT after round 0
        models.reference = load_causal_lm(sft, config.base_dtype(), str(state.device), merge_lora=True).requires_grad_(False)  # eval mode already
    scorer, adapter_off = models.scorer()
    reward_fn = gap_reward(scorer, models.scorer_tokenizer, config.reward_max_length, adapter_off=adapter_off)
    metrics = run_ppo(ppo, models, records, reward_fn, build_prompt, out, kind="pit", data=[source, config.gap_reward],
                      notes=notes)
    del models
    gc.collect()
    return metrics


def absolute_folders(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` with BASE and the gap model by their absolute paths where they are local folders, as the cards
    name a base: a rerun with `--policy ./runs/sft` wrote another pit.json, and so another digest of RUN, which every
    ``improve --model RUN`` begun before refused to resume on."""
    from redline.models import local_folder

    return {**manifest, **{k: os.path.abspath(manifest[k]) for k in ("base", "gap_reward")
                           if isinstance(manifest.get(k), str) and local_folder(manifest[k])}}


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """pit.json, which `redline improve` reads (a stage that diverged, NaN loss or reward, is null there, as in its
    card), left as it is where it already says the same but for how it spelt a local folder: an older redline named
    BASE and the gap model as typed (``runs/sft``), and the same command rerun on the finished run rewrote it with
    the absolute path (``absolute_folders``), which changed RUN's digest."""
    text = json_text(manifest, indent=2, default=str) + "\n"
    try:
        before = json.loads(path.read_bytes())
    except (OSError, ValueError):
        before = None
    if not (isinstance(before, dict) and absolute_folders(before) == absolute_folders(json.loads(text))):
        write_text_atomic(path, text)


def train_pit(config: PITConfig, out: str | os.PathLike) -> dict[str, Any]:
    """Steps 1–5 of the module docstring; returns every stage's metrics."""
    from redline.models import check_gap_reward_model, check_language_model, load_tokenizer, run_info
    from redline.train.gap_reward import read_preferences, split_thirds
    from redline.train.ppo import POLICY_ROLE, fit_prompts
    from redline.train.sft import main_process, train_sft

    from redline.config import check_required

    # Step 1: every check before a model loads.
    check_required(config)
    rounds = config.rounds_list()
    if rounds and not config.gap_reward:
        raise RedlineError(f"--gap-reward is required for RL rounds (--rounds {config.rounds}): the reward-gap model "
                           "scores them; --rounds none trains PIT SFT alone without one")
    if config.gap_reward:
        check_gap_reward_model(config.gap_reward)
    check_language_model(config.policy, POLICY_ROLE)
    tokenizer = load_tokenizer(config.policy)
    if config.gap_reward and load_tokenizer(config.gap_reward).get_vocab() != tokenizer.get_vocab():
        raise RedlineError(f"the gap model {config.gap_reward} has another tokenizer than {config.policy}: the value "
                           "model reads the policy's tokens (train the gap model on the same base)")
    prefs = read_preferences(config.data, limit=config.limit, skip_invalid=config.skip_invalid)
    sft_prefs, rl_prefs = prefs, prefs
    sft_note = rl_note = references_note = ""  # under --split-thirds the cards say which third of --data each stage read
    if config.split_thirds:
        sft_prefs, _, rl_prefs = split_thirds(prefs, config.split_seed, config.data)  # the middle third is the gap model's
        sft_note = split_note(config, "first (PIT SFT)", sft_prefs, prefs)
        rl_note = split_note(config, "last (RL)", rl_prefs, prefs)
        references_note = split_note(config, "last (RL)", rl_prefs, prefs, f"BASE's answers in {REFERENCES} to the prompts of ")
    if config.rl_data:
        rl_prefs = read_preferences(config.rl_data, limit=config.limit, skip_invalid=config.skip_invalid)
        rl_note = references_note = ""  # RL reads all of --rl-data, which its card names
    if config.split_thirds and config.gap_reward:
        refuse_gap_model_prompts(config, sft_prefs + rl_prefs)
    examples, n_identical = pit_sft_examples(select_sft_pairs(sft_prefs, config.sft_pairs, config.data))
    if not examples:
        which = "" if config.sft_pairs == "all" else f" among --sft-pairs {config.sft_pairs}"
        raise RedlineError(f"{config.data}: no preference pair with chosen different from rejected for PIT SFT{which}")
    if n_identical:
        print(f"redline: PIT SFT skips {n_identical} pairs whose chosen equals rejected", file=sys.stderr)
    first = round0_records(rl_prefs, config.round0_references)
    if 0 in rounds:
        fit_prompts(tokenizer, [build_prompt(r) for r in first], config.max_prompt_length, config.truncate_prompts)
    if rounds:
        config.ppo_config(config.policy, prompts="-").check()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_config(out / "train_config.json", config)
    stages: dict[str, Any] = {}
    rl_source = config.rl_data or config.data

    # Step 2: PIT SFT, log p(y_w | x, y_l).
    sft = out / "sft"
    if is_complete(sft):
        print(f"redline: {sft} is done; skipping PIT SFT", file=sys.stderr)
        stages["sft"] = run_info(sft).get("metrics", {})
    else:
        stages["sft"] = train_sft(examples, config.sft_settings(), sft, kind="pit-sft", data=[config.data], notes=sft_note)
        gc.collect()
    stages["sft"]["identical_pairs_skipped"] = n_identical  # not in the stage's card: a resumed run counts it again

    # Step 3: round 1's references, sampled from BASE.
    second = []  # round 1's records: each RL prompt with BASE's answer as its reference
    if 1 in rounds and not is_complete(out / stage_name(rounds)):
        second = [{"id": row["id"], "prompt": row["prompt"], "reference": row["response"]}
                  for row in sample_references(config, unique_prompts(rl_prefs), out / REFERENCES)]
        try:  # now, not after round 0 has trained
            fit_prompts(tokenizer, [build_prompt(r) for r in second], config.max_prompt_length, config.truncate_prompts)
        except RedlineError as e:
            raise RedlineError(f"round 1 ({out / REFERENCES}, BASE's answers of up to --reference-max-new-tokens "
                               f"{config.reference_max_new_tokens} tokens): {e}. Those settings are the run's: to keep "
                               f"PIT SFT and the references, copy {out / 'sft'} and {out / REFERENCES} into a new --out "
                               "and run there with them") from None

    # Step 4: the RL curriculum, each round from the last one's policy, the KL to PIT SFT.
    start = str(sft)
    for k, r in enumerate(rounds):
        stage = out / stage_name(rounds[: k + 1])
        if is_complete(stage):
            stages[stage.name] = run_info(stage).get("metrics", {})
            done = stages[stage.name].get("iterations", config.iterations)
            # --iterations may change on a rerun (it extends an unfinished round), never a finished one
            other = f" after {done} iterations (not --iterations {config.iterations})" if done != config.iterations else ""
            print(f"redline: {stage} is done{other}; skipping RL round {r}", file=sys.stderr)
        else:
            records = first if r == 0 else second
            source = str(out / REFERENCES) if r == 1 else rl_source
            if main_process():  # its PPO lines say 'ppo iteration k/N', the same in every round
                print(f"redline: RL round {r}, improving {len(records)} references, in {stage}", file=sys.stderr)
            stages[stage.name] = run_round(config, start, str(sft), records, stage, source, final=k == len(rounds) - 1,
                                           notes=references_note if r == 1 else rl_note)
        start = str(stage)

    # Step 5: the manifest `redline improve` reads.
    final = Path(start).name
    manifest = {"policy": final, "rounds": rounds, "stages": stages, "base": config.policy, "gap_reward": config.gap_reward}
    write_manifest(out / MANIFEST, absolute_folders(manifest))
    print(f"redline: PIT policy in {out / final}", file=sys.stderr)
    if config.push_to_hub:
        from accelerate import PartialState

        from redline.train.sft import publish

        if PartialState().is_main_process:
            publish(out / final, config.push_to_hub)
    return manifest
