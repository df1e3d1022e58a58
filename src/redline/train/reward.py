"""Train a reward model on K-way rankings, the InstructGPT way.

Ouyang et al. 2022, "Training language models to follow instructions with human feedback",
arXiv 2203.02155, §3.5: labelers rank K = 4…9 responses to a prompt. All C(K,2) comparisons of
one prompt form ONE batch element, each completion gets one forward pass, and the element's loss
is −1/C(K,2) · Σ log σ(r(x, y_w) − r(x, y_l)); ties are dropped. Shuffling the comparisons as
independent pairs instead made the model overfit within an epoch (``--pairs`` does that, so the
claim can be checked). One epoch, lr 9e-6, cosine decay to 10%. Before RL a bias is added so that
labelers' demonstrations score a mean of 0 (``--normalize-with demonstrations.jsonl``).

    redline train reward --data rankings.jsonl --model embedded --out runs/rm

Steps:
  1. read rankings (or preferences, as K = 2) and split off held-out prompts (``--eval-split``);
  2. format each completion as the chat (prompt, response) and tokenise it once;
  3. train with ``ranking_loss`` (ops/losses.py) in a ``transformers.Trainer`` whose batch is a
     list of prompts, each with all its completions;
  4. measure held-out pairwise accuracy, and on simulated data the accuracy of the noisy
     annotators against the oracle on the same pairs: the ceiling a reward model can reach;
  5. with ``--normalize-with``, set ``config.reward_bias`` so demonstrations score 0 on average;
  6. save a plain sequence-classification model (LoRA merged), loadable by
     ``AutoModelForSequenceClassification``, with its card and training curve.

Deviations from the paper:
  1. The bias of step 5 is stored as ``config.reward_bias`` and added by redline's scoring
     (``models.score_texts``): a Llama classification head has no bias term to fold it into. It does not
     change which response ranks higher, so any other loader still ranks correctly.
  2. LoRA by default (the head trains fully); ``--no-lora`` trains all weights. The default lr is
     1e-4 for LoRA; 9e-6 (the paper's) for full training.
  3. The scalar head reads the last token of the chat-formatted (prompt, response), as
     transformers' sequence-classification models do; the paper took the final token too.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from redline import RedlineError
from redline.models import REWARD, chat_text, score_texts
from redline.records import Preference, Ranking, Record, iter_raw, prompt_key, read_records
from redline.train.sft import SFTSettings, run_trainer, save_training_curve


@dataclass
class RewardConfig(SFTSettings):
    """`redline train reward`: the data, then the training knobs (see SFTSettings)."""

    data: str = field(default="", metadata={"required": True, "help": "ranking or preference records"})
    eval_data: str | None = field(default=None, metadata={"help": "held-out rankings (default: split from --data)"})
    eval_split: float = field(default=0.1, metadata={"help": "share of prompts held out when --eval-data is not given"})
    normalize_with: str | None = field(default=None, metadata={"help": "demonstrations whose mean reward is set to 0"})
    pairs: bool = field(default=False, metadata={"help": "train on comparisons shuffled as independent pairs (the ablation)"})
    limit: int | None = field(default=None, metadata={"min": 1, "help": "train on the first N records"})
    skip_invalid: bool = field(default=False, metadata={"help": "skip bad records instead of stopping"})
    max_length: int = field(default=512, metadata={"help": "tokens per (prompt, response); longer ones are cut"})
    batch_size: int = field(default=4, metadata={"min": 1, "help": "prompts per step (each with all its completions)"})
    grad_accum: int = field(default=1, metadata={"min": 1, "help": "forward passes accumulated per optimiser step"})
    lr_scheduler: str = field(default="cosine_with_min_lr", metadata={"help": "transformers scheduler name"})

    def lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else (1e-4 if self.lora else 9e-6)


def read_comparisons(path: str, *, limit=None, skip_invalid=False) -> list[Ranking]:
    """Rankings from a file of rankings or of preferences (a preference is a ranking with K = 2)."""
    kind = "ranking"
    for _, obj in iter_raw(path):  # the first record that says which it is: a bad first line does not decide
        if isinstance(obj, dict) and ("chosen" in obj or "responses" in obj):
            kind = "preference" if "chosen" in obj else "ranking"
            break
    records: list[Record] = read_records(path, kind, limit=limit, skip_invalid=skip_invalid)
    if kind == "ranking":
        return records  # type: ignore[return-value]
    rankings, identical = [], 0
    for r in records:
        assert isinstance(r, Preference)
        if r.identical:
            identical += 1  # no comparison to learn from
            continue
        rankings.append(Ranking(prompt=r.prompt, responses=[r.chosen, r.rejected], ranks=[0, 1], id=r.id, meta=r.meta))
    if identical:
        print(f"redline: {path}: {identical} preference(s) with chosen identical to rejected hold no comparison; "
              "the reward model skips them", file=sys.stderr)
    return rankings


def split_by_prompt(rankings: list[Ranking], share: float, seed: int) -> tuple[list[Ranking], list[Ranking]]:
    """Hold out a share of prompts (never a prompt in both parts)."""
    prompts = sorted({prompt_key(r.prompt) for r in rankings})
    random.Random(seed).shuffle(prompts)
    held = set(prompts[: round(share * len(prompts))])
    return [r for r in rankings if prompt_key(r.prompt) not in held], [r for r in rankings if prompt_key(r.prompt) in held]


def encode_groups(rankings: list[Ranking], tokenizer, max_length: int, as_pairs: bool) -> list[dict]:
    """Step 2: one group per prompt (all completions, all comparisons), or one per comparison."""
    groups = []
    for r in rankings:
        ids = tokenizer([chat_text(tokenizer, r.prompt, y) for y in r.responses], add_special_tokens=False,
                        truncation=True, max_length=max_length)["input_ids"]
        comparisons = r.comparisons()
        if as_pairs:
            groups.extend({"input_ids": [ids[w], ids[l]], "pairs": [(0, 1)]} for w, l in comparisons)
        elif comparisons:
            groups.append({"input_ids": ids, "pairs": comparisons})
    return groups


class GroupCollator:
    """Pads every completion of every group in the batch; comparisons become flat index tensors."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, groups: list[dict]) -> dict:
        import torch

        sequences, winners, losers, owner = [], [], [], []
        for g, group in enumerate(groups):
            offset = len(sequences)
            sequences.extend(group["input_ids"])
            for w, l in group["pairs"]:
                winners.append(offset + w)
                losers.append(offset + l)
                owner.append(g)
        width = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for i, s in enumerate(sequences):
            input_ids[i, : len(s)] = torch.tensor(s)
            attention_mask[i, : len(s)] = 1
        return {
            "input_ids": input_ids,  # (N, T) every completion of the batch
            "attention_mask": attention_mask,  # (N, T)
            "winners": torch.tensor(winners),  # (C,) index of the better completion
            "losers": torch.tensor(losers),  # (C,)
            "groups": torch.tensor(owner),  # (C,) prompt of each comparison
            "n_groups": torch.tensor(len(groups)),
        }


def _ranking_trainer_class():
    from transformers import Trainer

    from redline.ops.losses import ranking_loss

    class RankingTrainer(Trainer):
        """A Trainer whose loss is InstructGPT's K-way ranking loss."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            scores = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits.squeeze(-1)
            loss = ranking_loss(scores, inputs["winners"], inputs["losers"], inputs["groups"], int(inputs["n_groups"]))
            return (loss, scores) if return_outputs else loss

    return RankingTrainer


def held_out_accuracy(model, tokenizer, rankings: list[Ranking], max_length: int) -> dict[str, Any]:
    """Step 4: pairwise accuracy on held-out comparisons, and the annotators' ceiling where known."""
    correct = total = 0
    for r in rankings:
        scores = score_texts(model, tokenizer, [chat_text(tokenizer, r.prompt, y) for y in r.responses], max_length=max_length)
        for w, l in r.comparisons():
            total += 1
            correct += scores[w] > scores[l]
    result: dict[str, Any] = {"eval_comparisons": total, "eval_accuracy": round(correct / total, 4) if total else None}
    ceiling = annotator_ceiling(rankings)
    if ceiling is not None:
        result["annotator_accuracy_vs_oracle"] = ceiling
    return result


def annotator_ceiling(rankings: list[Ranking]) -> float | None:
    """How often the (noisy) ranks agree with the oracle on pairs the oracle does not tie.

    Only for simulated data (instructions in ``meta``); a reward model trained on these labels
    cannot be expected to beat the labels' own accuracy against the truth.
    """
    if not rankings or "instructions" not in rankings[0].meta:
        return None
    from redline.records import prompt_text
    from redline.simulate.oracle import quality

    agree = total = 0
    for r in rankings:
        q = [quality(r.meta, y, prompt_text(r.prompt)) for y in r.responses]
        for w, l in r.comparisons():
            if q[w] != q[l]:
                total += 1
                agree += q[w] > q[l]
    return round(agree / total, 4) if total else None


def training_arguments(config, out: Path, device: str):
    """The Trainer's arguments of a reward-style trainer (this one, and the gap model's in gap_reward.py)."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(out / "checkpoints"),
        learning_rate=config.lr(),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps if config.max_steps is not None else -1,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        lr_scheduler_type=config.lr_scheduler,
        lr_scheduler_kwargs={"min_lr_rate": 0.1} if config.lr_scheduler == "cosine_with_min_lr" else None,
        warmup_steps=config.warmup,
        adam_beta2=0.95,
        gradient_checkpointing=config.gradient_checkpointing,
        bf16=config.bf16,
        use_cpu=device == "cpu",
        seed=config.seed,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        save_steps=config.save_steps,
        save_total_limit=2,
        report_to=config.report_to,
        remove_unused_columns=False,
    )


def train_reward(config: RewardConfig, out: str | Path) -> dict[str, Any]:
    """Steps 1–6 of the module docstring; returns the run's metrics."""
    import torch

    from redline.models import (
        LoraSettings, ModelCard, add_lora, command_line, load_reward_model, load_tokenizer, pick_device,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    # step 1
    rankings = read_comparisons(config.data, limit=config.limit, skip_invalid=config.skip_invalid)
    if config.eval_data:
        train, held = rankings, read_comparisons(config.eval_data)
    else:
        train, held = split_by_prompt(rankings, config.eval_split, config.seed)
    if not train:
        raise RedlineError(f"{config.data}: no comparisons to train on")
    demos = read_records(config.normalize_with, "demonstration") if config.normalize_with else None  # before any compute

    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    tokenizer = load_tokenizer(config.model)
    model = load_reward_model(config.model, dtype=config.dtype, device=device).train()
    if config.lora:
        model = add_lora(model, LoraSettings(r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout), task_type="SEQ_CLS")
    # step 2
    groups = encode_groups(train, tokenizer, config.max_length, as_pairs=config.pairs)
    # step 3
    args = training_arguments(config, out, device)
    trainer = _ranking_trainer_class()(model=model, args=args, train_dataset=groups,
                                       data_collator=GroupCollator(tokenizer.pad_token_id))
    result = run_trainer(trainer, out)

    model = trainer.model
    if config.lora:
        model = model.merge_and_unload()  # step 6 wants a plain classification model
    model.eval()
    # step 4
    metrics: dict[str, Any] = {
        "train_prompts": len(train),
        "train_comparisons": sum(len(g["pairs"]) for g in groups),
        "mode": "pairs" if config.pairs else "groups",
        "steps": trainer.state.global_step,
        "train_seconds": round(result.metrics.get("train_runtime", 0.0), 1),
    }
    metrics.update(held_out_accuracy(model, tokenizer, held, config.max_length))
    # step 5
    if demos:
        rewards = score_texts(model, tokenizer, [chat_text(tokenizer, d.prompt, d.response) for d in demos], max_length=config.max_length)
        model.config.reward_bias = -sum(rewards) / len(rewards)
        metrics["reward_bias"] = round(model.config.reward_bias, 4)
    # step 6
    model.config.redline_kind = REWARD
    card = ModelCard(kind=REWARD, base_model=config.model, data=[config.data], command=command_line(), metrics=metrics)
    from redline.models import save_model

    save_model(model, tokenizer, out, card)
    save_training_curve(trainer.state.log_history, out, f"reward model: {config.model}")
    return metrics
