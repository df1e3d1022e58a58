"""Train PIT's reward-gap model: how much better a response is than a reference, from preference pairs.

Wang et al. 2023, "Enabling language models to implicitly learn self-improvement" (PIT),
arXiv 2310.00898 (ICLR 2024), §3: from the pairs (x, y_w, y_l) a reward model is trained on, learn
``r_gap(x, y, y_ref)`` with the target order r_gap(w,l) > r_gap(w,w) ≈ r_gap(l,l) > r_gap(l,w)
and five Bradley–Terry terms (``redline.ops.gap``). PIT's RL maximises it, with y_ref a response to
improve; no rubric is ever written down.

    redline train gap-reward --data preferences.jsonl --model embedded --out runs/gap [--split-thirds]

Steps:
  1. read preference records; with ``--split-thirds`` keep the reward-model third (``split_thirds``:
     the paper splits each data set in three equal parts, SFT / reward model / RL); hold out a share
     of prompts (``--eval-split``) or read ``--eval-data`` (refused if it shares a prompt with the
     training pairs); count pairs whose chosen equals rejected;
  2. write each pair as four texts — (w,l), (w,w), (l,l), (l,w) — each the PIT chat (prompts.py:
     the request and the reference as the user turn, the candidate as the assistant turn), and
     tokenise them once;
  3. train with ``gap_ranking_loss`` in a ``transformers.Trainer`` whose batch element is one pair
     with its four forward passes (``GapCollator`` reuses the reward trainer's ``GroupCollator``);
  4. measure held-out accuracy on each of the five orderings (and their mean), and on simulated
     pairs the reward model's figures for the (w,l) > (l,w) ordering: the labels' ceiling, and on
     the pairs the oracle can tell apart, accuracy against the oracle beside the labels' own on
     exactly those pairs (``oracle_accuracy``); a held-out pair scored NaN or infinity is refused (NaN
     orders nothing: each ordering would count it wrong);
  5. save a plain sequence-classification model (LoRA merged) with ``kind="gap-reward"`` in its card.

Deviations from the paper:
  1. The five terms are averaged with equal weights (``--term-weights`` changes them); the paper's
     weighting is not in reach. At equal scores the loss is log 2, a plain reward model's scale.
  2. Pairs whose chosen equals rejected carry no (w,l) ordering: they are skipped and counted. With
     ``--anchor-weight A > 0`` they, and every pair's (w,w) and (l,l), feed a term A·r_gap(y,y)²
     that pins "no better than the reference" at 0 (ours; off by default, so the paper's loss).
  3. The gap model reads the PIT policy's own prompt: a chat whose user turn is the improvement
     template with (x, y_ref) and whose assistant turn is y. So the RL reward scores exactly what the
     policy saw and wrote, and PPO's value model, started from this model, reads the same text.
  4. LoRA by default (the head trains fully), lr 1e-3 (at 1e-4 the LoRA gap model stayed near
     chance, loss near ln 2: the reward model's lesson, benchmarks/learning_checks.py);
     ``--no-lora`` trains all weights at 9e-6.
  5. Texts longer than ``--max-length`` lose their prompt's start, never the response's end (as in the
     reward trainer); a pair with a response that alone does not fit is dropped; both are counted.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redline import RedlineError
from redline.config import write_config
from redline.prompts import pit_messages
from redline.records import Preference, Ranking, read_records
from redline.models import GAP_REWARD, chat_text, score_texts
from redline.train.reward import (GroupCollator, completion_scores, encode_chats, refuse_nonfinite, refuse_shared_prompts,
                                  refuse_start_prompts, report_cuts, split_by_prompt, start_training_prompts,
                                  training_arguments)
from redline.train.sft import (
    SFTSettings, base_dtype, check_report_to, check_scheduler, finished_run, float32_adapters, run_trainer, save_run,
    training_device,
)

KIND = GAP_REWARD


@dataclass
class GapRewardConfig(SFTSettings):
    """`redline train gap-reward`: the data, the loss, then the training knobs (see SFTSettings)."""

    # --- data
    learning_rate: float | None = field(default=None, metadata={"min": 0, "help": "peak lr (default: 1e-3 LoRA, 9e-6 full)"})
    data: str = field(default="", metadata={"required": True, "help": "preference records (prompt, chosen, rejected)"})
    eval_data: str | None = field(default=None, metadata={"help": "held-out preferences (default: split from --data)"})
    eval_split: float = field(default=0.1, metadata={"min": 0, "max": 1, "unless": "eval_data",
                                                     "help": "share of prompts held out when --eval-data is not given"})
    split_thirds: bool = field(default=False, metadata={
        "help": "train on the reward-model third of --data (the paper's SFT / reward / RL split; "
                "`train pit --split-thirds` with the same --split-seed takes the other two)"})
    split_seed: int = field(default=0, metadata={"help": "seed of the three-way split (the same in both commands)"})
    limit: int | None = field(default=None, metadata={"min": 1, "help": "use the first N records"})
    skip_invalid: bool = field(default=False, metadata={"help": "skip bad records instead of stopping"})
    # --- loss
    term_weights: str = field(default="1,1,1,1,1", metadata={
        "help": "weights of the orderings wl>ww, wl>ll, wl>lw, ww>lw, ll>lw (the loss is their weighted mean)"})
    anchor_weight: float = field(default=0.0, metadata={
        "help": "weight of r_gap(y,y)^2 on self-comparisons, identical pairs included (0: off, the paper's loss)"})
    # --- training (the rest: SFTSettings)
    batch_size: int = field(default=2, metadata={"min": 1, "help": "preference pairs per step (four sequences each)"})
    grad_accum: int = field(default=1, metadata={"min": 1, "help": "forward passes accumulated per optimiser step"})
    lr_scheduler: str = field(default="cosine_with_min_lr", metadata={"help": "transformers scheduler name"})

    def lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else (1e-3 if self.lora else 9e-6)

    def weights(self) -> tuple[float, ...]:
        try:
            w = tuple(float(x) for x in self.term_weights.split(","))
        except ValueError:
            w = ()
        if len(w) != 5 or not all(map(math.isfinite, w)) or min(w) < 0 or sum(w) <= 0:
            raise RedlineError(f"--term-weights wants five finite non-negative numbers, not all 0, like 1,1,1,1,1; "
                               f"got {self.term_weights!r}")
        return w


# ----------------------------------------------------------------------------- data


def read_preferences(path: str, *, limit: int | None = None, skip_invalid: bool = False) -> list[Preference]:
    """Preference records; with ``skip_invalid`` the skipped ones are reported (by ``read_records``)."""
    records = read_records(path, "preference", limit=limit, skip_invalid=skip_invalid)
    return records  # type: ignore[return-value]


def split_thirds(records: list, seed: int = 0, source: str = "the records") -> tuple[list, list, list]:
    """(SFT, reward model, RL): three parts of near-equal numbers of prompts, never a prompt in two.

    A pure function of the records and the seed, so `train gap-reward` and `train pit` given the same
    file and ``--split-seed`` agree on who gets which third. Fewer than three prompts are refused, naming
    ``source``: a third would be empty (and the run's error then blamed its pairs).
    """
    rest, sft = split_by_prompt(records, 1 / 3, seed)
    rl, reward = split_by_prompt(rest, 1 / 2, seed + 1)
    if not (sft and reward and rl):
        n = len(sft) + len(reward) + len(rl)
        raise RedlineError(f"{source} (--split-thirds): {n} records leave a third empty (SFT {len(sft)}, reward model "
                           f"{len(reward)}, RL {len(rl)}); the split needs records of at least three prompts")
    return sft, reward, rl


def gap_text(tokenizer, prompt, reference: str, response: str) -> str:
    """What r_gap(x, y, y_ref) reads: the PIT chat, (x, y_ref) as the user turn, y as the assistant's."""
    return chat_text(tokenizer, pit_messages(prompt, reference), response)


def gap_quad(tokenizer, p: Preference) -> list[str]:
    """The four texts of a pair, in the order of ``ops.gap``'s columns: (w,l), (w,w), (l,l), (l,w)."""
    w, l = p.chosen, p.rejected
    return [gap_text(tokenizer, p.prompt, ref, y) for y, ref in ((w, l), (w, w), (l, l), (l, w))]


def encode_pairs(prefs: list[Preference], tokenizer, max_length: int, anchors: bool) -> tuple[list[dict], dict[str, int]]:
    """Step 2: one element per pair (four token lists), and with ``anchors`` one per identical pair.

    Returns the elements and counts: pairs, identical pairs, anchors used, sequences encoded, sequences
    cut (they lose their prompt's start, as in the reward trainer's ``encode_chats``), sequences whose
    response alone does not fit, and pairs dropped for them (all four texts or none).
    """
    items = []
    counts = {"pairs": 0, "identical_pairs": 0, "anchors": 0, "sequences": 0, "cut_sequences": 0,
              "dropped_sequences": 0, "dropped_pairs": 0}
    for p in prefs:
        if p.identical:
            counts["identical_pairs"] += 1
            if not anchors:
                continue
            chats, anchor = [(pit_messages(p.prompt, p.chosen), p.chosen)], True
        else:
            w, l = p.chosen, p.rejected
            chats, anchor = [(pit_messages(p.prompt, ref), y) for y, ref in ((w, l), (w, w), (l, l), (l, w))], False
        ids, cut = encode_chats(tokenizer, chats, max_length)
        counts["sequences"] += len(ids)
        counts["cut_sequences"] += cut
        if any(x is None for x in ids):
            counts["dropped_sequences"] += sum(x is None for x in ids)
            counts["dropped_pairs"] += 1
            continue
        items.append({"input_ids": ids, "anchor": anchor})
        counts["anchors" if anchor else "pairs"] += 1
    return items, counts


class GapCollator:
    """Pads the batch with the reward trainer's ``GroupCollator``; says where each pair's four are."""

    def __init__(self, pad_id: int):
        self.pad = GroupCollator(pad_id)

    def __call__(self, items: list[dict]) -> dict:
        import torch

        padded = self.pad([{"input_ids": it["input_ids"], "pairs": []} for it in items])
        quads, selfs, offset = [], [], 0
        for it in items:
            if it["anchor"]:
                selfs.append(offset)
            else:
                quads.append(list(range(offset, offset + 4)))
                selfs.extend([offset + 1, offset + 2])  # (w,w) and (l,l)
            offset += len(it["input_ids"])
        return {
            "input_ids": padded["input_ids"],  # (N, T) every sequence of the batch
            "attention_mask": padded["attention_mask"],  # (N, T)
            "quads": torch.tensor(quads, dtype=torch.long).reshape(-1, 4),  # (P, 4) rows of (w,l), (w,w), (l,l), (l,w)
            "selfs": torch.tensor(selfs, dtype=torch.long),  # (M,) self-comparisons, for the anchor term
        }


def _gap_trainer_class():
    from transformers import Trainer

    from redline.ops.gap import anchor_loss, gap_ranking_loss

    class GapTrainer(Trainer):
        """A Trainer whose loss is PIT's five-term reward-gap loss (plus the optional anchor)."""

        term_weights: tuple[float, ...] = (1.0,) * 5
        anchor_weight: float = 0.0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            scores = completion_scores(model, inputs["input_ids"], inputs["attention_mask"])  # (N,)
            quads = inputs["quads"]
            loss = gap_ranking_loss(scores[quads], self.term_weights) if len(quads) else scores.sum() * 0
            if self.anchor_weight > 0:
                loss = loss + self.anchor_weight * anchor_loss(scores[inputs["selfs"]])
            return (loss, scores) if return_outputs else loss

    return GapTrainer


# ----------------------------------------------------------------------------- scoring


def gap_scores(model, tokenizer, prefs: list[Preference], max_length: int = 512):
    """(P, 4) r_gap of (w,l), (w,w), (l,l), (l,w) for each pair, in one batched scoring pass."""
    import torch
    from tqdm import tqdm

    texts = [t for p in prefs for t in gap_quad(tokenizer, p)]
    with tqdm(total=len(texts), desc="scoring the held-out pairs", unit="text", file=sys.stderr) as bar:
        return torch.tensor(score_texts(model, tokenizer, texts, max_length=max_length, bar=bar)).reshape(-1, 4)


def held_out_accuracies(model, tokenizer, prefs: list[Preference], max_length: int,
                        source: str = "the held-out pairs") -> dict[str, Any]:
    """Step 4: accuracy of each ordering on held-out pairs (identical pairs have none), and the mean. A score that
    is NaN or infinite is refused (``reward.refuse_nonfinite``), naming ``source``."""
    from redline.ops.gap import ordering_accuracies

    pairs = [p for p in prefs if not p.identical]
    result: dict[str, Any] = {"eval_pairs": len(pairs), "eval_identical_pairs": len(prefs) - len(pairs)}  # counted, not scored
    if not pairs:
        return result
    scores = gap_scores(model, tokenizer, pairs, max_length)
    refuse_nonfinite(scores.tolist(), pairs, source, "held-out pairs",
                     "which each ordering's accuracy would count wrong (NaN orders nothing)")
    accuracy = ordering_accuracies(scores)
    result.update({f"eval_accuracy_{name}": round(v, 4) for name, v in accuracy.items()})
    result["eval_accuracy"] = round(sum(accuracy.values()) / len(accuracy), 4)
    result.update(oracle_accuracy(pairs, scores[:, [0, 3]].tolist()))
    return result


def oracle_accuracy(pairs: list[Preference], wl_lw: list[list[float]]) -> dict[str, Any]:
    """The reward model's ceilings (``reward.comparison_accuracy``) for the (w,l) > (l,w) ordering.

    Each pair is a ranking of (chosen, rejected) scored (r_gap(w,l), r_gap(l,w)). On simulated pairs:
    ``eval_label_ceiling`` (how often the oracle orders them as the labels do), and on the pairs the
    oracle can tell apart ``eval_oracle_accuracy`` beside ``eval_annotator_oracle_accuracy``, the
    labels' own accuracy on exactly those pairs. The ordering's own accuracy is ``eval_accuracy_wl>lw``.
    """
    from redline.train.reward import comparison_accuracy

    rankings = [Ranking(prompt=p.prompt, responses=[p.chosen, p.rejected], ranks=[0, 1], meta=p.meta) for p in pairs]
    figures = comparison_accuracy(rankings, wl_lw)
    # The intervals are left out: "eval_accuracy_ci95" here would be the (w,l) > (l,w) ordering's, under
    # the name the gap model gives the mean of its five orderings.
    return {k: v for k, v in figures.items()
            if k not in ("eval_comparisons", "eval_ties", "eval_all_tied_rankings", "eval_all_tied_comparisons",
                         "eval_accuracy") and not k.endswith("_ci95")}


def gap_reward(model, tokenizer, max_length: int = 512, adapter_off: bool = False):
    """PIT's RL reward ``(prompts, responses, records) -> r_gap(x, y, y_ref)`` for ``run_ppo``.

    Each record carries ``prompt`` (x) and ``reference`` (y_ref). ``adapter_off``: the gap model is
    PPO's value model read with its LoRA adapter off, which gives the gap model's own weights back.
    """

    def reward_fn(prompts: list[list[dict]], responses: list[str], records: list[dict]) -> list[float]:
        texts = [gap_text(tokenizer, r["prompt"], r["reference"], y) for r, y in zip(records, responses)]
        with model.disable_adapter() if adapter_off else contextlib.nullcontext():
            return score_texts(model, tokenizer, texts, max_length=max_length)

    return reward_fn


# ----------------------------------------------------------------------------- the command


def train_gap_reward(config: GapRewardConfig, out: str | os.PathLike) -> dict[str, Any]:
    """Steps 1–5 of the module docstring; returns the run's metrics."""
    import torch

    from redline.config import check_required, check_unless
    from redline.models import LoraSettings, ModelCard, add_lora, command_line, load_reward_model, load_tokenizer

    check_required(config)
    check_unless(config)
    weights = config.weights()
    check_report_to(config.report_to)  # before anything loads
    check_scheduler(config.lr_scheduler)
    if config.anchor_weight < 0:
        raise RedlineError(f"--anchor-weight must be >= 0, got {config.anchor_weight}")
    out = Path(out)
    finished = finished_run(out, config.push_to_hub, config)
    if finished is not None:
        return finished

    # Step 1: the data, its reward-model third, the held-out prompts (the start's data first, as train reward).
    start = start_training_prompts(config.model)
    prefs = read_preferences(config.data, limit=config.limit, skip_invalid=config.skip_invalid)
    third_note = ""
    if config.split_thirds:
        from redline.train.pit import split_note

        read, prefs = prefs, split_thirds(prefs, config.split_seed, config.data)[1]
        third_note = " " + split_note(config, "middle (reward-gap model)", prefs, read, rest="; PIT SFT learns from the "
                                      "first third and its RL from the last.")
    if config.eval_data:
        train, held = prefs, read_preferences(config.eval_data, skip_invalid=config.skip_invalid)
        refuse_shared_prompts(train, held, config.data, config.eval_data)
    else:
        train, held = split_by_prompt(prefs, config.eval_split, config.seed, config.data)
    refuse_start_prompts(config.model, start, held, config.eval_data or f"{config.data} (--eval-split {config.eval_split})")

    device = training_device(config)
    torch.manual_seed(config.seed)
    tokenizer = load_tokenizer(config.model)

    # Step 2: four texts per pair, tokenised once.
    tokenizer.truncation_side = "left"  # scoring cuts as training does: the prompt's start, never the response
    items, counts = encode_pairs(train, tokenizer, config.max_length, anchors=config.anchor_weight > 0)
    if not counts["pairs"]:
        dropped = (f" ({counts['dropped_pairs']} dropped: a response alone does not fit --max-length {config.max_length})"
                   if counts["dropped_pairs"] else "")
        raise RedlineError(f"{config.data}: no preference pair with chosen different from rejected to train on{dropped}")
    if counts["identical_pairs"]:
        use = "used as (y, y) anchors" if config.anchor_weight > 0 else "skipped (no ordering to learn; see --anchor-weight)"
        print(f"redline: {counts['identical_pairs']} pairs with chosen identical to rejected: {use}", file=sys.stderr)
    report_cuts(counts, config.max_length, counts["sequences"], "pairs")

    out.mkdir(parents=True, exist_ok=True)
    write_config(out / "train_config.json", config)
    # a LoRA run as the start (SFT, or a shipped model) is folded into plain weights under the new adapter
    model = load_reward_model(config.model, dtype=base_dtype(config), device=device, merge_lora=True).train()
    if hasattr(model.config, "reward_bias"):  # a reward run as the start: its bias centres r(x, y), not r_gap, and
        del model.config.reward_bias  # score_texts would add it to every gap (r_gap(y, y) no longer read at 0)
    if config.lora:
        lora = LoraSettings(r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout)
        model = float32_adapters(add_lora(model, lora, task_type="SEQ_CLS"))

    # Step 3: the five-term loss, one pair (four forward passes) per batch element.
    trainer = _gap_trainer_class()(model=model, args=training_arguments(config, out, device), train_dataset=items,
                                   data_collator=GapCollator(tokenizer.pad_token_id))
    trainer.term_weights, trainer.anchor_weight = weights, config.anchor_weight
    result = run_trainer(trainer, out)
    model = trainer.model.merge_and_unload() if config.lora else trainer.model
    model.eval()

    # Step 4: held-out accuracy per ordering.
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    metrics: dict[str, Any] = {
        "train_pairs": counts["pairs"],
        "identical_pairs": counts["identical_pairs"],
        "anchors": counts["anchors"],
        "cut_sequences": counts["cut_sequences"],
        "dropped_pairs": counts["dropped_pairs"],
        "term_weights": config.term_weights,
        "anchor_weight": config.anchor_weight,
        "steps": trainer.state.global_step,
        "first_loss": round(losses[0], 4) if losses else None,
        "final_loss": round(losses[-1], 4) if losses else None,
        "train_seconds": round(result.metrics.get("train_runtime", 0.0), 1),
    }
    metrics.update(held_out_accuracies(model, tokenizer, held, config.max_length,
                                       config.eval_data or f"{config.data} (--eval-split {config.eval_split:g})"))

    # Step 5: a plain sequence-classification model that says what it is.
    model.config.redline_kind = KIND
    notes = ("Reward-gap model of PIT (Wang et al. 2023): r_gap(x, y, y_ref) is the score of the chat whose user turn is "
             "redline's PIT template with the request x and the reference y_ref, and whose assistant turn is y "
             "(redline.train.gap_reward.gap_text). Higher: y improves more on y_ref." + third_note)
    data = [config.data] + ([config.eval_data] if config.eval_data else [])
    card = ModelCard(kind=KIND, base_model=config.model, data=data, command=command_line(), metrics=metrics, notes=notes)
    save_run(model, tokenizer, out, card, trainer.state.log_history, f"gap reward model: {config.model}", config.push_to_hub)
    return metrics
