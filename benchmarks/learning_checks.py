"""Planted-signal learning checks: each learner in redline, on a signal that is in its data by construction.

A result at chance means one of two things: the learner cannot learn, or the data holds nothing to
learn. These checks tell them apart. Each trains one learner, through redline's own trainers, on
data whose signal is certain, measures it on held-out data, and prints the threshold and whether it
passed (issue 13):

  reward-revision      reward model (train/reward.py) on the annotators' revision (chosen) against
                       the response it revises (rejected); held-out pairwise accuracy
  reward-oracle-gap    reward model on two of a prompt's ranked responses whose oracle quality differs
                       by at least --min-gap (meta.oracle_quality); held-out accuracy
  gap-revision         PIT's reward-gap model (train/gap_reward.py) on the revision pairs: held-out share
                       of pairs with r_gap(x, chosen, rejected) > r_gap(x, rejected, chosen)
  gap-oracle-gap       the same on the oracle-gap pairs
  critic               a critic trained on feedback records that break one instruction type and nothing
                       else; `revise` (one iteration, greedy) on held-out responses that break it; the share
                       the oracle finds fixed (it is 0 before, by selection)
  ppo-oracle           PPO (train/ppo.py ``run_ppo``) with the oracle's quality as the reward, on prompts
                       with one instruction of an easy type: the rollouts' mean score over the last
                       iterations minus the first, against twice its standard error
  sft                  supervised fine-tuning (train/sft.py) on demonstrations: the per-example loss on
                       held-out demonstrations, before and after, and the drop against twice its standard error

Every held-out split is by prompt (no prompt on both sides). The data are the record files of a
simulated set (``--data``: feedback.jsonl, rankings.jsonl, demonstrations.jsonl); the checks read
only the record fields and ``meta`` keys that ``redline simulate`` writes, so a rebuilt set needs no
change here. Learning rates are passed explicitly (``--lr-scale 10`` multiplies every one: the first
thing to try when a check fails).

    OMP_NUM_THREADS=1 python benchmarks/learning_checks.py --data data/simulated \\
        --out benchmarks/results/learning_checks.json [--checks reward-revision,sft] [--scale reduced]

Scales: ``embedded`` (the default: the embedded SmolLM2-135M, sizes for a few CPU minutes a check),
``reduced`` (the same checks, smaller: the ``slow`` tests). The default test suite runs a tiny-random
version of each check on data planted so strongly that a 2-layer random model must learn it, and a
control that must fail (tests/test_learning_checks.py).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ("reward-revision", "reward-oracle-gap", "gap-revision", "gap-oracle-gap", "critic", "ppo-oracle", "sft")


@dataclass
class Settings:
    """Every knob of every check; ``SCALES`` holds the embedded and reduced sizes."""

    model: str = "embedded"
    data: str = str(ROOT / "data" / "simulated")
    device: str = "cpu"
    seed: int = 0
    lora: bool = True
    bf16_base: bool = False  # PPO: frozen bases in bfloat16 under float32 adapters (`train ppo --bf16-base`)
    # reward and gap-reward models
    pairs_train: int = 120
    pairs_eval: int = 40
    min_gap: float = 0.5  # oracle-gap pairs: quality difference at least this
    reward_steps: int = 40
    reward_batch: int = 2  # prompts (pairs) per optimiser step
    reward_lr: float = 1e-3
    reward_max_length: int = 512
    gap_max_length: int = 1024  # a gap text holds the prompt and both responses
    pairs_max_words: int = 150  # pairs whose longer text has more words are left out (training time)
    revision_threshold: float = 0.80  # held-out accuracy a learner must reach on revision pairs
    oracle_gap_threshold: float = 0.65  # ... and on oracle-gap pairs
    # critic
    critic_type: str = "end_phrase"
    critic_train: int = 48
    critic_eval: int = 12
    critic_max_words: int = 150  # responses longer than this are left out (generation time)
    critic_steps: int = 72  # 3 epochs of the 48 records: 24 steps (1 epoch) fixed 2 of 12 (RESULTS)
    critic_grad_accum: int = 2  # examples per optimiser step
    critic_lr: float = 1e-3
    critic_max_new_tokens: int = 384
    critic_threshold: float = 0.5  # share of held-out responses whose instruction the revision meets
    # PPO with the oracle as reward
    # prompts with exactly one instruction, of one of these types; no_commas: one token to avoid, met by
    # chance in short answers often enough for PPO to have something to climb
    ppo_types: str = "no_commas"
    ppo_iterations: int = 12
    ppo_batch: int = 32
    ppo_max_new_tokens: int = 48
    ppo_lr: float = 3e-4
    ppo_temperature: float = 0.7  # rollout temperature (`train ppo`'s default)
    ppo_window: int = 4  # iterations averaged at each end
    # rloo: GAE at 16 episodes x 12 iterations rose 0.103 against a 2-SE bar of 0.135 (RESULTS); or gae
    ppo_advantage: str = "rloo"  # `train ppo --advantage`: rloo (K samples a prompt, no value model) or gae
    ppo_rloo_k: int = 4
    ppo_beta: float = 0.02  # per-token KL penalty (`train ppo --beta`)
    # SFT
    sft_train: int = 64
    sft_eval: int = 24
    sft_steps: int = 16
    sft_batch: int = 4  # examples per optimiser step
    sft_lr: float = 5e-4
    sft_max_length: int = 512
    # a rise (PPO) or a drop (SFT) passes when it exceeds this many standard errors
    z: float = 2.0

    def scaled(self, factor: float) -> "Settings":
        """Every learning rate times ``factor``."""
        return replace(self, **{f.name: getattr(self, f.name) * factor for f in fields(self) if f.name.endswith("_lr")})


SCALES: dict[str, dict[str, Any]] = {
    "embedded": {},
    "reduced": dict(pairs_train=80, pairs_eval=30, reward_steps=30, critic_train=32, critic_eval=8, critic_steps=16,
                    ppo_iterations=6, ppo_batch=12, ppo_window=2, sft_train=48, sft_eval=16, sft_steps=12),
}


def result(check: str, learner: str, signal: str, metric: str, value: float, threshold: float, passed: bool,
           how: str, **details: Any) -> dict[str, Any]:
    """One row of the table. ``how``: the threshold in words (``>= 0.80``, ``> 2 SE (0.031)``)."""
    return {"check": check, "learner": learner, "signal": signal, "metric": metric,
            "value": round(value, 4) if isinstance(value, float) else value, "threshold": round(threshold, 4),
            "rule": how, "passed": bool(passed), "details": details}


# ----------------------------------------------------------------------------- data


def numbered(path: str | Path, kind: str) -> list[tuple[int, Any]]:
    """(line, record) of a record file, parsed by redline's reader (a bad record stops with FILE:LINE: FIELD)."""
    from redline.records import iter_raw, read_records

    return list(zip((line for line, _ in iter_raw(path)), read_records(path, kind)))


def _need_meta(row: dict, key: str, path: str | Path, line: int) -> Any:
    from redline import RedlineError

    meta = row.get("meta") or {}
    if key not in meta:
        raise RedlineError(f"{path}:{line}: meta.{key}: missing (the checks need a set written by `redline simulate`)")
    return meta[key]


def revision_pairs(path: str | Path) -> list[dict]:
    """Preference rows (chosen = the annotator's revision, rejected = the response) from feedback records
    whose revision differs from the response."""
    rows = []
    for _, r in numbered(path, "feedback"):
        if r.revision is not None and r.revision.strip() != r.response.strip():
            rows.append({"id": r.id, "prompt": r.prompt, "chosen": r.revision, "rejected": r.response, "meta": r.meta})
    return rows


def oracle_gap_pairs(path: str | Path, min_gap: float) -> list[dict]:
    """One preference row per ranking whose best and worst responses (by meta.oracle_quality) differ by
    at least ``min_gap``: chosen = the best, rejected = the worst."""
    from redline import RedlineError

    rows = []
    for line, r in numbered(path, "ranking"):
        quality = _need_meta(r.to_dict(), "oracle_quality", path, line)
        if not isinstance(quality, list) or len(quality) != len(r.responses):
            raise RedlineError(f"{path}:{line}: meta.oracle_quality: expected one number per response")
        best = max(range(len(quality)), key=lambda i: quality[i])
        worst = min(range(len(quality)), key=lambda i: quality[i])
        if quality[best] - quality[worst] >= min_gap and r.responses[best].strip() != r.responses[worst].strip():
            rows.append({"id": r.id, "prompt": r.prompt, "chosen": r.responses[best], "rejected": r.responses[worst],
                         "meta": {**r.meta, "gap": quality[best] - quality[worst]}})
    return rows


def split_prompts(rows: list[dict], n_train: int, n_eval: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Up to ``n_train`` and ``n_eval`` rows on disjoint prompts: prompts in a seeded order, the first
    ones held out until ``n_eval`` rows are, the rest for training."""
    from redline.records import prompt_key

    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(prompt_key(r["prompt"]), []).append(r)
    prompts = sorted(groups)
    random.Random(seed).shuffle(prompts)
    held, train = [], []
    for key in prompts:
        if len(held) < n_eval:
            held.extend(groups[key][: n_eval - len(held)])
        else:
            train.extend(groups[key])
    return train[:n_train], held


def shuffled_labels(rows: list[dict], seed: int) -> list[dict]:
    """A control: chosen and rejected swapped in a random half of the rows (the signal is gone)."""
    rng = random.Random(seed)
    return [{**r, "chosen": r["rejected"], "rejected": r["chosen"]} if rng.random() < 0.5 else r for r in rows]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps({k: v for k, v in row.items() if v is not None}) + "\n")
    return path


def fresh(folder: Path) -> Path:
    """An empty folder: a check never resumes an earlier run's checkpoints."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def _enough(rows: list, n: int, what: str, where: str) -> None:
    from redline import RedlineError

    if len(rows) < n:
        raise RedlineError(f"{where}: {len(rows)} {what}; the check needs at least {n}")


# ----------------------------------------------------------------------------- reward and gap-reward models


def check_reward(s: Settings, signal: str, work: Path, control: bool = False) -> dict[str, Any]:
    """Train the K-way reward model on pairs of ``signal`` (revision or oracle-gap); held-out accuracy."""
    from redline.models import chat_text, load_reward_model, load_tokenizer, score_texts
    from redline.train.reward import RewardConfig, train_reward

    train, held = _pairs(s, signal, control)
    work = fresh(work)
    config = RewardConfig(data=str(write_jsonl(work / "train.jsonl", train)), eval_split=0.0, model=s.model,
                          lora=s.lora, learning_rate=s.reward_lr, max_steps=s.reward_steps, batch_size=s.reward_batch,
                          max_length=s.reward_max_length, warmup=0.1, seed=s.seed, device=s.device,
                          logging_steps=5, save_steps=10_000)
    start, cpu = time.perf_counter(), time.process_time()
    metrics = train_reward(config, work / "run")
    model, tokenizer = load_reward_model(str(work / "run"), device=s.device).eval(), load_tokenizer(str(work / "run"))
    texts = [chat_text(tokenizer, r["prompt"], y) for r in held for y in (r["chosen"], r["rejected"])]
    scores = score_texts(model, tokenizer, texts, max_length=s.reward_max_length)
    right = [scores[2 * i] > scores[2 * i + 1] for i in range(len(held))]
    accuracy = sum(right) / len(right)
    threshold = s.revision_threshold if signal == "revision" else s.oracle_gap_threshold
    return result(f"reward-{signal}", "reward model", _signal_words(signal, s), "held-out accuracy", accuracy,
                  threshold, accuracy >= threshold, f">= {threshold:.2f}", train_pairs=len(train), eval_pairs=len(held),
                  steps=metrics.get("steps"), lr=s.reward_lr, shuffled_labels=control,
                  seconds=round(time.perf_counter() - start, 1),
                  cpu_seconds=round(time.process_time() - cpu, 1))


def check_gap(s: Settings, signal: str, work: Path, control: bool = False) -> dict[str, Any]:
    """Train PIT's reward-gap model on the same pairs; held-out share with r_gap(w, l) > r_gap(l, w)."""
    from redline.models import load_reward_model, load_tokenizer
    from redline.ops.gap import ordering_accuracies
    from redline.records import Preference
    from redline.train.gap_reward import GapRewardConfig, gap_scores, train_gap_reward

    train, held = _pairs(s, signal, control)
    work = fresh(work)
    config = GapRewardConfig(data=str(write_jsonl(work / "train.jsonl", train)), eval_split=0.0, model=s.model,
                             lora=s.lora, learning_rate=s.reward_lr, max_steps=s.reward_steps,
                             batch_size=max(1, s.reward_batch // 2), max_length=s.gap_max_length, warmup=0.1,
                             seed=s.seed, device=s.device, logging_steps=5, save_steps=10_000)
    start, cpu = time.perf_counter(), time.process_time()
    metrics = train_gap_reward(config, work / "run")
    model, tokenizer = load_reward_model(str(work / "run"), device=s.device).eval(), load_tokenizer(str(work / "run"))
    prefs = [Preference(prompt=r["prompt"], chosen=r["chosen"], rejected=r["rejected"]) for r in held]
    orderings = ordering_accuracies(gap_scores(model, tokenizer, prefs, s.gap_max_length))
    accuracy = orderings["wl>lw"]
    threshold = s.revision_threshold if signal == "revision" else s.oracle_gap_threshold
    return result(f"gap-{signal}", "reward-gap model", _signal_words(signal, s), "held-out r_gap(w,l) > r_gap(l,w)",
                  accuracy, threshold, accuracy >= threshold, f">= {threshold:.2f}", train_pairs=len(train),
                  eval_pairs=len(held), steps=metrics.get("steps"), lr=s.reward_lr, shuffled_labels=control,
                  orderings={k: round(v, 4) for k, v in orderings.items()}, seconds=round(time.perf_counter() - start, 1),
                  cpu_seconds=round(time.process_time() - cpu, 1))


def _pairs(s: Settings, signal: str, control: bool) -> tuple[list[dict], list[dict]]:
    if signal == "revision":
        path = Path(s.data) / "feedback.jsonl"
        rows = revision_pairs(path)
    else:
        path = Path(s.data) / "rankings.jsonl"
        rows = oracle_gap_pairs(path, s.min_gap)
    rows = [r for r in rows if max(len(r["chosen"].split()), len(r["rejected"].split())) <= s.pairs_max_words]
    train, held = split_prompts(rows, s.pairs_train, s.pairs_eval, s.seed)
    _enough(train, min(s.pairs_train, 8), f"{signal} pairs to train on", str(path))
    _enough(held, min(s.pairs_eval, 4), f"held-out {signal} pairs", str(path))
    if control:  # labels independent of the texts everywhere, so no fixed feature of the texts can score well
        return shuffled_labels(train, s.seed), shuffled_labels(held, s.seed + 1)
    return train, held


def _signal_words(signal: str, s: Settings) -> str:
    if signal == "revision":
        return "revision > original"
    return f"oracle gap >= {s.min_gap:g}"


# ----------------------------------------------------------------------------- critic


def critic_records(path: str | Path, kind: str, max_words: int) -> tuple[list[dict], list[dict]]:
    """(training rows, candidate held-out rows) for a critic of one instruction type.

    Training: feedback records whose response breaks ``kind`` and nothing else, and whose revision
    meets it. Held-out candidates: responses that break ``kind`` (and maybe more). Both: responses of
    at most ``max_words`` words.
    """
    train, held = [], []
    for line, r in numbered(path, "feedback"):
        broken = _need_meta(r.to_dict(), "broken", path, line)
        if kind not in broken or len(r.response.split()) > max_words:
            continue
        row = {"id": r.id or f"line-{line}", "prompt": r.prompt, "response": r.response, "meta": r.meta,
               "critique": r.critique, "revision": r.revision}
        held.append(row)
        if broken == [kind] and r.revision is not None and instruction_met(r.meta, kind, r.revision):
            train.append(row)
    return train, held


def instruction_met(meta: dict, kind: str, text: str) -> bool:
    """Whether ``text`` meets the instruction of type ``kind`` among ``meta.instructions`` (the oracle's check)."""
    from redline.simulate.instructions import check, parse_instructions

    return all(check(i, text).met for i in parse_instructions(meta["instructions"]) if i.type == kind)


def check_critic(s: Settings, work: Path, control: bool = False) -> dict[str, Any]:
    """Train a critic on one instruction type; one greedy revision of held-out responses; the share fixed.

    ``control``: the training revisions are replaced by the unrevised responses (the critic learns to
    change nothing), which must fail.
    """
    from redline.improve.revise import ReviseConfig, revise
    from redline.records import Feedback, Response, prompt_key
    from redline.simulate.oracle import quality
    from redline.train.critic import CriticConfig, train_critic

    path = Path(s.data) / "feedback.jsonl"
    train_rows, candidates = critic_records(path, s.critic_type, s.critic_max_words)
    # held-out prompts first, then training rows on the other prompts
    prompts = sorted({prompt_key(r["prompt"]) for r in candidates})
    random.Random(s.seed).shuffle(prompts)
    held_prompts, held = set(), []
    for key in prompts:
        rows = [r for r in candidates if prompt_key(r["prompt"]) == key]
        if len(held) >= s.critic_eval:
            break
        held_prompts.add(key)
        held.extend(rows[: s.critic_eval - len(held)])
    train = [r for r in train_rows if prompt_key(r["prompt"]) not in held_prompts][: s.critic_train]
    _enough(train, min(s.critic_train, 4), f"{s.critic_type} records to train on (one broken instruction, "
            f"a revision that meets it, at most {s.critic_max_words} words)", str(path))
    _enough(held, min(s.critic_eval, 2), f"held-out {s.critic_type} responses", str(path))

    work = fresh(work)
    records = [Feedback(prompt=r["prompt"], response=r["response"], critique=r["critique"],
                        revision=r["response"] if control else r["revision"], id=r["id"], meta=r["meta"]) for r in train]
    config = CriticConfig(data=str(path), model=s.model, lora=s.lora, learning_rate=s.critic_lr, max_steps=s.critic_steps,
                          batch_size=1, grad_accum=s.critic_grad_accum, seed=s.seed, device=s.device, logging_steps=4, save_steps=10_000)
    start, cpu = time.perf_counter(), time.process_time()
    metrics = train_critic(config, work / "critic", records=records)
    responses = [Response(prompt=r["prompt"], response=r["response"], id=r["id"], meta=r["meta"]) for r in held]
    revise(ReviseConfig(critic=str(work / "critic"), iterations=1, max_new_tokens=s.critic_max_new_tokens,
                        temperature=0.0, device=s.device, seed=s.seed), work / "revise", responses=responses)
    revised = [json.loads(line) for line in (work / "revise" / "iteration_1.jsonl").read_text().splitlines()]
    fixed = [instruction_met(r["meta"], s.critic_type, r["response"]) for r in revised]
    before = [instruction_met(r["meta"], s.critic_type, r["response"]) for r in held]
    share = sum(fixed) / len(fixed)
    q_before = [quality(r["meta"], r["response"], _text(r["prompt"])) for r in held]
    q_after = [quality(r["meta"], r["response"], _text(r["prompt"])) for r in revised]
    return result("critic", "critic + revise", f"one instruction type: {s.critic_type}",
                  f"held-out responses fixed ({s.critic_type} met)", share, s.critic_threshold,
                  share >= s.critic_threshold, f">= {s.critic_threshold:.2f}", train_records=len(train),
                  eval_responses=len(held), met_before=sum(before), parsed=sum(bool(r["parsed"]) for r in revised),
                  changed=sum(bool(r["changed"]) for r in revised), quality_before=round(_mean(q_before), 4),
                  quality_after=round(_mean(q_after), 4), steps=metrics.get("steps"), lr=s.critic_lr,
                  final_loss=metrics.get("final_loss"), unrevised_control=control,
                  seconds=round(time.perf_counter() - start, 1),
                  cpu_seconds=round(time.process_time() - cpu, 1))


def _text(prompt) -> str:
    from redline.records import prompt_text

    return prompt_text(prompt)


# ----------------------------------------------------------------------------- PPO with the oracle as reward


def ppo_prompts(path: str | Path, types: list[str]) -> list[dict]:
    """Prompt records with exactly one instruction, of one of ``types``."""
    from redline.records import iter_raw, read_prompt_records

    rows = []
    for (line, _), row in zip(iter_raw(path), read_prompt_records(str(path))):
        instructions = _need_meta(row, "instructions", path, line)
        if len(instructions) == 1 and instructions[0].get("type") in types:
            rows.append({"id": row.get("id"), "prompt": row["prompt"], "meta": row["meta"]})
    return rows


def rise(rollouts: list[dict], window: int) -> dict[str, float]:
    """Mean score of the last ``window`` iterations minus the first ``window``, and its standard error
    (two independent samples). A prompt's samples in one iteration (RLOO draws ``--rloo-k`` of each) share
    the prompt, so they are one unit of the error, not independent episodes (which understated it)."""
    last = max(r["iteration"] for r in rollouts)
    first, se_first = _clustered_mean([r for r in rollouts if r["iteration"] <= window])
    final, se_final = _clustered_mean([r for r in rollouts if r["iteration"] > last - window])
    return {"first": first, "last": final, "rise": final - first, "se": math.sqrt(se_first ** 2 + se_final ** 2)}


def _clustered_mean(episodes: list[dict]) -> tuple[float, float]:
    """Mean score of the episodes and its standard error with each (iteration, prompt) one cluster: the
    sample variance of cluster means over their number where clusters are equal, of episodes where each is alone."""
    clusters: dict[tuple, list[float]] = {}
    for r in episodes:
        clusters.setdefault((r["iteration"], json.dumps(r["prompt"], sort_keys=True)), []).append(r["score"])
    n, total = len(clusters), len(episodes)
    mean = sum(r["score"] for r in episodes) / total
    if n < 2:
        return mean, 0.0
    spread = sum((sum(c) - len(c) * mean) ** 2 for c in clusters.values())
    return mean, math.sqrt(n / (n - 1) * spread) / total


def check_ppo(s: Settings, work: Path, reward_fn: Callable | None = None, prompts: list[dict] | None = None,
              name: str = "ppo-oracle") -> dict[str, Any]:
    """PPO on prompts with one easy instruction; passes when the mean score rises by more than z SE.

    ``reward_fn`` defaults to the oracle's quality (``--score oracle``); the tiny tests pass planted ones.
    """
    from redline import RedlineError
    from redline.train.ppo import PPOConfig, load_ppo_models, oracle_reward, run_ppo
    from redline.train.sft import as_chat

    if not 1 <= s.ppo_window <= s.ppo_iterations // 2:  # 0: a division by zero after training; more: the ends overlap
        raise RedlineError(f"ppo_window {s.ppo_window}: the iterations averaged at each end must be 1 to half of "
                           f"ppo_iterations ({s.ppo_iterations}), so the first and last do not overlap")
    types = [t.strip() for t in s.ppo_types.split(",") if t.strip()]
    if prompts is None:
        path = Path(s.data) / "rankings.jsonl"
        prompts = ppo_prompts(path, types)
        _enough(prompts, 4, f"prompts with one instruction of type {', '.join(types)}", str(path))
    reward_fn = reward_fn or oracle_reward(prompts)
    work = fresh(work)
    config = PPOConfig(policy=s.model, reward=s.model, score="oracle", lora=s.lora, device=s.device,
                       iterations=s.ppo_iterations, batch_size=s.ppo_batch, minibatch_size=max(1, s.ppo_batch // 2),
                       micro_batch_size=max(1, s.ppo_batch // 4), max_new_tokens=s.ppo_max_new_tokens,
                       temperature=s.ppo_temperature, learning_rate=s.ppo_lr, value_learning_rate=s.ppo_lr, warmup_iterations=1,
                       advantage=s.ppo_advantage, rloo_k=s.ppo_rloo_k, beta=s.ppo_beta, bf16_base=s.bf16_base,
                       save_every=s.ppo_iterations, seed=s.seed)
    start, cpu = time.perf_counter(), time.process_time()
    run_ppo(config, load_ppo_models(config, s.device), prompts, reward_fn, lambda r: as_chat(r["prompt"]), work / "run")
    rollouts = [json.loads(line) for line in (work / "run" / "rollouts.jsonl").read_text().splitlines()]
    per_iteration = {}
    for r in rollouts:
        per_iteration.setdefault(r["iteration"], []).append(r["score"])
    r = rise(rollouts, s.ppo_window)
    bar = s.z * r["se"]
    return result(name, "PPO", "oracle quality as reward" if name == "ppo-oracle" else "planted reward",
                  f"mean score, last {s.ppo_window} its. - first {s.ppo_window}", r["rise"], bar, r["rise"] > bar,
                  f"> {s.z:g} SE ({bar:.3f})", prompts=len(prompts), types=types, iterations=s.ppo_iterations,
                  episodes_per_iteration=s.ppo_batch, advantage=s.ppo_advantage, beta=s.ppo_beta, first=round(r["first"], 4), last=round(r["last"], 4),
                  se=round(r["se"], 4), per_iteration=[round(_mean(v), 4) for _, v in sorted(per_iteration.items())],
                  lr=s.ppo_lr, seconds=round(time.perf_counter() - start, 1),
                  cpu_seconds=round(time.process_time() - cpu, 1))


# ----------------------------------------------------------------------------- SFT


def completion_losses(model, tokenizer, rows: list[dict], max_length: int) -> list[float]:
    """Mean token loss of each demonstration's response given its prompt (chat template, as SFT trains); nan for a
    row whose prompt leaves no response token within ``max_length`` (nothing to measure)."""
    import torch

    from redline.train.sft import as_chat

    losses = []
    device = next(model.parameters()).device
    with torch.no_grad():
        for r in rows:
            prompt = as_chat(r["prompt"])
            head = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
            full = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": r["response"]}], tokenize=False)
            n_head = len(tokenizer(head, add_special_tokens=False)["input_ids"])
            ids = tokenizer(full, add_special_tokens=False)["input_ids"][:max_length]
            if len(ids) <= n_head:  # labels longer than the ids crashed; none at all gave nan
                losses.append(math.nan)
                continue
            labels = [-100] * n_head + ids[n_head:]
            out = model(input_ids=torch.tensor([ids], device=device), labels=torch.tensor([labels], device=device))
            losses.append(out.loss.item())
    return losses


def check_sft(s: Settings, work: Path, held_out: list[dict] | None = None) -> dict[str, Any]:
    """SFT on demonstrations; the held-out loss must fall by more than z standard errors (paired).

    ``held_out``: other demonstrations to measure on (the tiny tests' control passes unrelated ones).
    """
    from redline.models import load_causal_lm, load_tokenizer
    from redline.train.sft import DemonstrationConfig, train_demonstrations

    path = Path(s.data) / "demonstrations.jsonl"
    rows = [{"prompt": r.prompt, "response": r.response} for r in _read(path, "demonstration")]
    train, held = split_prompts(rows, s.sft_train, s.sft_eval, s.seed)
    held = held_out if held_out is not None else held
    _enough(train, min(s.sft_train, 4), "demonstrations to train on", str(path))
    _enough(held, min(s.sft_eval, 2), "held-out demonstrations", str(path))
    work = fresh(work)
    start, cpu = time.perf_counter(), time.process_time()
    tokenizer = load_tokenizer(s.model)
    before = completion_losses(load_causal_lm(s.model, device=s.device).eval(), tokenizer, held, s.sft_max_length)
    config = DemonstrationConfig(data=str(write_jsonl(work / "train.jsonl", train)), model=s.model, lora=s.lora,
                                 learning_rate=s.sft_lr, max_steps=s.sft_steps, batch_size=1, grad_accum=s.sft_batch,
                                 max_length=s.sft_max_length, seed=s.seed, device=s.device, logging_steps=4,
                                 save_steps=10_000)
    metrics = train_demonstrations(config, work / "run")
    after = completion_losses(load_causal_lm(str(work / "run"), device=s.device).eval(), tokenizer, held,
                              s.sft_max_length)
    measured = [(b, a) for b, a in zip(before, after) if not math.isnan(b)]  # a prompt filling --sft-max-length: none
    _enough(measured, min(s.sft_eval, 2), f"held-out demonstrations with a response token within {s.sft_max_length}",
            str(path))
    before, after = [b for b, _ in measured], [a for _, a in measured]
    drops = [b - a for b, a in measured]
    se = math.sqrt(_var(drops) / len(drops))
    drop, bar = _mean(drops), s.z * se
    return result("sft", "SFT", "held-out demonstrations", "held-out loss drop (nats/token)", drop, bar,
                  drop > bar, f"> {s.z:g} SE ({bar:.3f})", train_examples=len(train), eval_examples=len(drops),
                  loss_before=round(_mean(before), 4), loss_after=round(_mean(after), 4), se=round(se, 4),
                  steps=metrics.get("steps"), lr=s.sft_lr, seconds=round(time.perf_counter() - start, 1),
                  cpu_seconds=round(time.process_time() - cpu, 1))


def _read(path: Path, kind: str):
    from redline.records import read_records

    return read_records(path, kind)


# ----------------------------------------------------------------------------- running and reporting


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _var(xs: list[float]) -> float:
    """Sample variance (n − 1)."""
    if len(xs) < 2:
        return 0.0
    m = _mean(xs)
    return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)


def run_check(name: str, s: Settings, work: Path) -> dict[str, Any]:
    if name == "reward-revision":
        return check_reward(s, "revision", work / name)
    if name == "reward-oracle-gap":
        return check_reward(s, "oracle-gap", work / name)
    if name == "gap-revision":
        return check_gap(s, "revision", work / name)
    if name == "gap-oracle-gap":
        return check_gap(s, "oracle-gap", work / name)
    if name == "critic":
        return check_critic(s, work / name)
    if name == "ppo-oracle":
        return check_ppo(s, work / name)
    if name == "sft":
        return check_sft(s, work / name)
    raise ValueError(f"unknown check {name!r}; the checks: {', '.join(CHECKS)}")


def table(rows: list[dict], ran: list[str] | None = None) -> str:
    """The rows as Markdown; a row of a check not in ``ran`` (kept from an earlier run in --out) says so, with its
    command, so it is not read as this run's."""
    lines = ["| check | learner | signal | metric | value | threshold | passed | seconds (CPU) |", "|" + " --- |" * 8]
    for r in rows:
        value = f"{r['value']:.3f}" if isinstance(r["value"], float) else str(r["value"])
        check = r["check"] if ran is None or r["check"] in ran else f"{r['check']} (earlier run: `{r.get('command', '?')}`)"
        lines.append(f"| {check} | {r['learner']} | {r['signal']} | {r['metric']} | {value} | {r['rule']} | "
                     f"{'yes' if r['passed'] else 'NO'} | {r['details'].get('seconds', '')} ({r['details'].get('cpu_seconds', '')}) |")
    return "\n".join(lines)


def overrides(pairs: list[str], ap: argparse.ArgumentParser) -> dict[str, Any]:
    """``--set FIELD=VALUE`` pairs as Settings fields, each value converted as redline's flags are."""
    from redline.config import field_value

    names = sorted(f.name for f in fields(Settings))
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in names:
            ap.error(f"--set {pair!r}: expected FIELD=VALUE with FIELD one of {', '.join(names)}")
        try:
            out[name] = field_value(Settings, name, value)
        except ValueError as e:
            ap.error(f"--set {pair!r}: {e}")
    return out


def earlier_rows(out: Path, ap: argparse.ArgumentParser) -> list[dict]:
    """The rows already in ``--out`` ([] where there is none); a file that is not this script's JSON (another
    benchmark's, a torn write) is refused in one line, not a JSONDecodeError or KeyError traceback."""
    if not out.exists():
        return []
    try:
        rows = json.loads(out.read_text(encoding="utf-8"))["checks"]
        if not (isinstance(rows, list) and all(isinstance(r, dict) and "check" in r for r in rows)):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        ap.error(f"--out {out}: not a learning checks JSON (an object whose checks are rows); "
                 "give another path or remove it")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated, of: {', '.join(CHECKS)}")
    ap.add_argument("--scale", default="embedded", choices=sorted(SCALES), help="sizes of every check")
    ap.add_argument("--data", default=Settings.data, help="a simulated set: feedback.jsonl, rankings.jsonl, demonstrations.jsonl")
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--lr-scale", type=float, default=1.0, help="multiply every learning rate (10: when a check fails)")
    ap.add_argument("--critic-type", default=None, help="the critic's instruction type (default: end_phrase)")
    ap.add_argument("--ppo-types", default=None, help="the PPO prompts' instruction types, comma-separated (default: no_commas)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override one setting, e.g. critic_steps=72 or ppo_iterations=12 (repeatable; "
                         "the fields are those of the JSON's settings)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--work", default=None, help="folder for the checks' runs (default: a temporary one)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "learning_checks.json"))
    args = ap.parse_args(argv)
    names = [c.strip() for c in args.checks.split(",") if c.strip()]
    unknown = [c for c in names if c not in CHECKS]
    if unknown or not names:
        ap.error(f"unknown check(s) {', '.join(unknown) or '(none given)'}; the checks: {', '.join(CHECKS)}")
    if args.threads < 1:
        ap.error(f"--threads {args.threads}: at least 1")
    out = Path(args.out)
    previous = earlier_rows(out, ap)

    import tempfile

    import torch

    from redline import RedlineError

    torch.set_num_threads(args.threads)
    s = replace(Settings(model=args.model, data=args.data, device=args.device), **SCALES[args.scale]).scaled(args.lr_scale)
    if args.critic_type:
        s = replace(s, critic_type=args.critic_type)
    if args.ppo_types:
        s = replace(s, ppo_types=args.ppo_types)
    s = replace(s, **overrides(args.set, ap))
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="redline-checks-"))
    out.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python benchmarks/learning_checks.py"] + (argv if argv is not None else sys.argv[1:]))
    # Rows of other checks already in --out stay (checks can run one process at a time); this run's replace theirs.
    report: dict[str, Any] = {"checks": [r for r in previous if r["check"] not in names]}
    for name in names:
        print(f"== {name}", file=sys.stderr, flush=True)
        try:
            row = run_check(name, s, work)
        except RedlineError as e:
            print(f"redline: {name}: {e}", file=sys.stderr)
            return 2
        row.update(command=command, scale=args.scale, settings=asdict(s))
        report["checks"].append(row)
        out.write_text(json.dumps(report, indent=2) + "\n")  # after each check: a long run keeps what it has
        print(f"{name}: {row['metric']} = {row['value']} (threshold {row['rule']}): "
              f"{'passed' if row['passed'] else 'FAILED'}", flush=True)
    print(table(report["checks"], names))
    print(f"wrote {out}")
    return 0 if all(r["passed"] for r in report["checks"] if r["check"] in names) else 1


if __name__ == "__main__":
    sys.exit(main())
