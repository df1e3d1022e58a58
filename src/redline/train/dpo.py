"""Direct preference optimisation: the policy learns from preference pairs with no reward model and no RL.

Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a Reward
Model", arXiv 2305.18290. With π_ref the SFT policy and (x, y_w, y_l) a pair, DPO minimises

    −log σ( β · [ log π(y_w|x) − log π_ref(y_w|x) − log π(y_l|x) + log π_ref(y_l|x) ] )

the Bradley–Terry loss of the implicit reward β·log(π/π_ref). It is the baseline most users reach
for; here it sits beside PPO, PPO-ptx and PIT on the same preference data and compute.

    redline train dpo --model runs/sft --data preferences.jsonl --out runs/dpo

Steps (the same numbers mark ``train_dpo``):
  1. Check before a model loads: the policy (``--model``) is a causal LM (a reward run is refused), the file holds
     preference pairs (prompt, chosen, rejected), and at least one whose chosen differs from rejected;
     identical pairs carry no preference and are skipped and counted.
  2. Chat pairs: the prompt as the user turn, each response as the assistant turn (TRL's
     conversational preference format), so the policy's own chat template is applied.
  3. TRL's ``DPOTrainer``: with LoRA (the default) the reference is the policy with its adapter off,
     so one copy of the model is held; without LoRA a frozen copy is loaded. A LoRA SFT run is
     merged first, so the DPO adapter sits on the SFT policy and the adapter-off model *is* π_ref.
  4. Save the policy as a redline run (kind ``dpo``): loadable by ``load_causal_lm``, the generation
     engine and, when the SFT run was a full model, ``peft.AutoPeftModelForCausalLM``.

The paper's settings: β = 0.1, RMSprop at lr 1e-6 with a 150-step warm-up, batch 64, full training.

Deviations from the paper:
  1. LoRA by default, lr 1e-4 (LoRA on a 135M model; ``--no-lora --learning-rate 1e-6`` is the
     paper's), cosine decay after a 3% warm-up, AdamW (the Trainer's), 8 pairs per optimiser step.
  2. A pair whose chosen equals rejected is dropped (its loss is a constant log 2 with no gradient).

What a run folder holds (as every Trainer-based command's)::

    RUN/train_config.json      the resolved DPOSettings (``--config`` repeats the run)
    RUN/adapter_model.safetensors  the policy (or model.safetensors), tokenizer, README.md, redline.json
    RUN/train_log.jsonl        every logged step: loss, rewards/accuracies, rewards/margins, lr
    RUN/training_curve.png     the loss against the step
    RUN/checkpoints/           the Trainer's checkpoints; a rerun of the same command resumes from the last
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redline import RedlineError
from redline.config import write_config
from redline.train.sft import (
    SFTSettings, as_chat, base_dtype, check_report_to, check_scheduler, finished_run, run_trainer, save_run, training_device,
    trl_arguments,
)

POLICY_ROLE = "a policy: --model wants the SFT run (a causal language model)"
# TRL's DPOTrainer losses, checked before a model loads (TRL names a wrong one only at the first step). Its
# 'exo_pair' is left out: it needs a label smoothing > 0, which redline does not pass.
LOSS_TYPES = ("sigmoid", "hinge", "ipo", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
              "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")


@dataclass
class DPOSettings(SFTSettings):
    """`redline train dpo`: the policy and the pairs, then DPO's knobs and every SFT knob (see SFTSettings)."""

    model: str = field(default="embedded", metadata={
        "help": "the policy to start from, also the frozen reference π_ref: the SFT run, or any causal LM"})
    learning_rate: float | None = field(default=None, metadata={"min": 0, "help": "peak lr (default: 1e-4 LoRA, 1e-6 full)"})
    data: str = field(default="", metadata={"required": True, "help": "preference records (prompt, chosen, rejected)"})
    limit: int | None = field(default=None, metadata={"min": 1, "help": "train on the first N records"})
    skip_invalid: bool = field(default=False, metadata={"help": "skip bad records instead of stopping"})
    beta: float = field(default=0.1, metadata={"help": "β, the strength of the KL to π_ref (the paper: 0.1)"})
    loss_type: str = field(default="sigmoid", metadata={"choices": LOSS_TYPES,
                                                        "help": "TRL's DPO loss: sigmoid (the paper's), ipo, hinge ..."})

    def lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else (1e-4 if self.lora else 1e-6)


def read_pairs(path: str, *, limit: int | None = None, skip_invalid: bool = False) -> tuple[list[dict], int]:
    """Step 1–2: chat pairs from preference records, and how many identical pairs were skipped.

    A file that is not made of preference pairs (rankings, demonstrations ...) is refused with one line.
    """
    from redline.records import FieldError, iter_raw, read_records

    for number, obj in iter_raw(path):  # the first record that parses says what the file holds
        if isinstance(obj, FieldError):
            continue  # a line that is not JSON: read_records reports it (or skips it with --skip-invalid) below
        if not (isinstance(obj, dict) and ("chosen" in obj or "rejected" in obj)):  # one of them: a bad pair, below
            keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            raise RedlineError(f"{path}:{number}: DPO needs preference pairs (prompt, chosen, rejected); this record "
                               f"has {keys} (for simulated answers, `redline simulate rank --pairs` writes a pair per decisive comparison)")
        break
    prefs = read_records(path, "preference", limit=limit, skip_invalid=skip_invalid)  # prints what it skipped
    pairs = [{"prompt": as_chat(p.prompt), "chosen": [{"role": "assistant", "content": p.chosen}],
              "rejected": [{"role": "assistant", "content": p.rejected}]} for p in prefs if not p.identical]
    if not pairs:
        raise RedlineError(f"{path}: no preference pair whose chosen differs from its rejected ({len(prefs)} records); "
                           "DPO has nothing to learn")
    return pairs, len(prefs) - len(pairs)


def truncation_counts(dataset, n_pairs: int, max_length: int | None) -> dict[str, int]:
    """What TRL's ``keep_start`` truncation does to the pairs (its tokenized ``prompt_ids``, ``chosen_ids``,
    ``rejected_ids``), which it does not say: pairs cut, pairs dropped (the prompt alone fills ``max_length``)
    and pairs whose answers are the same within what is kept (a loss of log 2, no gradient)."""
    counts = {"cut_pairs": 0, "dropped_pairs": n_pairs - len(dataset), "identical_after_cut": 0}
    if max_length is None:
        return counts
    for row in dataset:
        room = max_length - len(row["prompt_ids"])
        chosen, rejected = row["chosen_ids"], row["rejected_ids"]
        if max(len(chosen), len(rejected)) > room:
            counts["cut_pairs"] += 1
            counts["identical_after_cut"] += chosen[:room] == rejected[:room]
    return counts


def train_dpo(config: DPOSettings, out) -> dict[str, Any]:
    """Steps 1–4 of the module docstring; returns the metrics written into the model card."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from redline.config import check_required
    from redline.models import (ModelCard, check_language_model, command_line, load_causal_lm, load_tokenizer,
                                run_info)

    # Step 1: every check before a model loads.
    check_required(config)
    check_report_to(config.report_to)
    check_scheduler(config.lr_scheduler)
    check_language_model(config.model, POLICY_ROLE)
    if config.beta <= 0:  # 0 leaves the loss at log 2 with no gradient (ipo divides by it); below 0 learns the reverse
        raise RedlineError(f"--beta must be above 0, got {config.beta}")
    out = Path(out)
    finished = finished_run(out, config.push_to_hub, config)
    if finished is not None:
        return finished
    pairs, n_identical = read_pairs(config.data, limit=config.limit, skip_invalid=config.skip_invalid)
    if n_identical:
        print(f"redline: DPO skips {n_identical} pairs whose chosen equals rejected", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    write_config(out / "train_config.json", config)

    # Steps 2-3: the policy (a LoRA SFT run merged, so that adapter-off is π_ref) and TRL's trainer.
    device = training_device(config)
    torch.manual_seed(config.seed)
    tokenizer = load_tokenizer(config.model)
    policy = load_causal_lm(config.model, base_dtype(config), device, merge_lora=True).train()  # --bf16-base
    reference = None if config.lora else load_causal_lm(config.model, config.dtype, device, merge_lora=True)
    peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                             target_modules="all-linear", task_type="CAUSAL_LM") if config.lora else None
    args = DPOConfig(**trl_arguments(config, out, device), beta=config.beta, loss_type=[config.loss_type])
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=Dataset.from_list(pairs),
                         processing_class=tokenizer, peft_config=peft_config)
    cuts = truncation_counts(trainer.train_dataset, len(pairs), config.max_length)
    if any(cuts.values()) and trainer.accelerator.is_main_process:
        print(f"redline: --max-length {config.max_length}: {cuts['cut_pairs']} of {len(pairs)} pairs lost their "
              f"answers' ends; {cuts['dropped_pairs']} whose prompt alone fills it were dropped; "
              f"{cuts['identical_after_cut']} whose two answers are the same once cut teach nothing", file=sys.stderr)
    result = run_trainer(trainer, out)

    # Step 4: the policy as a redline run.
    history = trainer.state.log_history
    logged = [row for row in history if "loss" in row]
    last = logged[-1] if logged else {}
    metrics = {
        "pairs": len(pairs),
        "identical_pairs_skipped": n_identical,
        **cuts,
        "steps": trainer.state.global_step,
        "first_loss": round(logged[0]["loss"], 4) if logged else None,
        "final_loss": round(last["loss"], 4) if logged else None,
        "final_reward_accuracy": round(last["rewards/accuracies"], 4) if "rewards/accuracies" in last else None,
        "final_reward_margin": round(last["rewards/margins"], 4) if "rewards/margins" in last else None,
        "train_seconds": round(result.metrics.get("train_runtime", math.nan), 1),
    }
    model, base = trainer.model, config.model
    info = run_info(config.model) if Path(config.model).is_dir() else {}
    if info.get("adapter"):  # it sits on a merged SFT model that exists nowhere on disk: saved whole, on the SFT's base
        base = info["base_model"]
        if config.lora:  # the DPO adapter merged in (with --no-lora the model trained whole already is)
            model = model.merge_and_unload()
    card = ModelCard(kind="dpo", base_model=base, data=[config.data], command=command_line(), metrics=metrics,
                     notes="Trained with `redline train dpo` (DPO, Rafailov et al. 2023); the log is train_log.jsonl.")
    save_run(model, tokenizer, out, card, history, f"dpo: {config.model}", config.push_to_hub)
    return metrics
