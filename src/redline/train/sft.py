"""Supervised fine-tuning on (prompt, completion) chat pairs, with the loss on the completion only.

One routine serves every supervised trainer in redline: `redline train sft` (InstructGPT's SFT on
demonstrations), the critic (critique and revision given a prompt and a response) and PIT's SFT
(the better response given the prompt and the worse one). Each builds its chat pairs and calls
``train_sft``; TRL's ``SFTTrainer`` does the work (tokenising with the model's own chat template,
masking the prompt out of the loss, the training loop, checkpoints), with one change of ours: on a
CPU the vocabulary projection covers the completion's positions only (``completion_sft_trainer``).

What a run folder holds when it is done::

    RUN/train_config.json      the resolved config: `redline train ... --config RUN/train_config.json` repeats it
    RUN/model.safetensors      the weights (or adapter_model.safetensors for LoRA, unless the start is a
                               LoRA run: then whole) and the tokenizer
    RUN/README.md, redline.json  the model card: base model, data, command, date, metrics
    RUN/train_log.jsonl        every logged step (loss, learning rate, epoch)
    RUN/training_curve.png     the loss against the step
    RUN/checkpoints/           checkpoints; an interrupted run resumes from the last one, a finished one
                               (its redline.json written) is not trained again

InstructGPT's SFT (arXiv 2203.02155) trained 16 epochs with cosine decay and residual dropout 0.2
on 175B-scale models; the defaults here are for a 135M model on a CPU (1 epoch, LoRA, no dropout
change) and every one is a config field.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redline import RedlineError
from redline.config import seed_field, write_config
from redline.records import json_text, write_text_atomic


def threads_field():
    """``--threads``, as every trainer (SFTSettings and PPO's RLSettings) declares it."""
    return field(default=None, metadata={"min": 1, "result": False,
        "help": "torch CPU threads (default: torch's choice; 1 where another job shares the cores, RESULTS 'Training')"})


@dataclass
class SFTSettings:
    """Knobs every supervised trainer shares. Defaults fit the embedded 135M model on a CPU."""

    # --- model
    model: str = field(default="embedded", metadata={"help": "base model: hub id, path, embedded or tiny-random"})
    lora: bool = field(default=True, metadata={"help": "train LoRA adapters (False: full fine-tuning)"})
    lora_r: int = field(default=16, metadata={"min": 1, "max": 4096, "help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"min": 1, "help": "LoRA scaling numerator"})
    # 0, not PEFT's customary 0.05: dropout on the LoRA path costs 16% of training on this CPU (a mask and a
    # copy of every adapted layer's input), and the paired training loss came out 0.0011 +- 0.0003 a step
    # lower without it (RESULTS "Training"). Runs begun under 0.05 resume with --lora-dropout 0.05.
    lora_dropout: float = field(default=0.0, metadata={"min": 0, "max": 0.99, "help": "dropout on the LoRA path"})
    dtype: str = field(default="float32", metadata={"choices": ("float32", "bfloat16", "float16"), "help": "weights dtype while training"})
    # Opt-in: 1.33x alone and 1.8x with the completion-only projection on this CPU, but the loss after
    # 3 steps came out 1.4% higher than float32's (RESULTS "Training"), not yet shown equal within noise.
    bf16_base: bool = field(default=False, metadata={
        "help": "with LoRA, hold the frozen base weights in bfloat16 and train float32 adapters on them (RESULTS 'Training')"})
    device: str = field(default="auto", metadata={"result": False, "help": "cpu, cuda or auto"})
    threads: int | None = threads_field()
    # --- optimisation
    learning_rate: float | None = field(default=None, metadata={"min": 0, "help": "peak lr (default: 2e-4 LoRA, 2e-5 full)"})
    epochs: float = field(default=1.0, metadata={"min": 0.01, "help": "passes over the data"})
    max_steps: int | None = field(default=None, metadata={"min": 1, "help": "stop after N optimiser steps (overrides epochs)"})
    # One sequence per forward pass and 8 accumulated per optimiser step: on a CPU a padded batch of 4
    # trains at 1/1.6 the tokens/s of 4 single sequences, with 3x the memory (RESULTS.md, "Training").
    batch_size: int = field(default=1, metadata={"min": 1, "help": "sequences per forward pass, per device (raise it on a GPU)"})
    grad_accum: int = field(default=8, metadata={"min": 1, "help": "forward passes accumulated per optimiser step"})
    lr_scheduler: str = field(default="cosine", metadata={"help": "transformers scheduler name"})
    warmup: float = field(default=0.03, metadata={"min": 0, "help": "warm-up steps (int) or share of all steps (<1); a run of one step has none"})
    max_length: int = field(default=768, metadata={"min": 1, "help": "tokens per sequence; longer ones are cut"})
    gradient_checkpointing: bool = field(default=False, metadata={"result": False, "help": "trade compute for memory"})
    bf16: bool = field(default=False, metadata={
        "help": "bfloat16 autocast for forward and backward, float32 master weights (CPU or GPU; see RESULTS 'Training')"})
    # --- bookkeeping
    seed: int = seed_field("random seed")
    logging_steps: int = field(default=5, metadata={"min": 1, "result": False, "help": "log every N steps"})
    save_steps: int = field(default=50, metadata={"min": 1, "result": False, "help": "checkpoint every N steps"})
    report_to: str = field(default="none", metadata={"choices": ("none", "tensorboard", "wandb"), "result": False, "help": "none, tensorboard or wandb"})
    push_to_hub: str | None = field(default=None, metadata={"result": False,
        "help": "publish the finished run (less checkpoints) to this hub repo id, or copy it to a local folder"})

    def lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else (2e-4 if self.lora else 2e-5)


REPORT_TO = ("none", "tensorboard", "wandb")


def check_report_to(report_to: str) -> None:
    """``--report-to``: one of REPORT_TO, whose package is installed, or one line naming the extra to
    install (transformers would fail eleven frames deep; every trainer, PPO included, says this)."""
    import importlib.util

    if report_to not in REPORT_TO:
        raise RedlineError(f"--report-to must be one of {', '.join(REPORT_TO)}, got {report_to!r}")
    if report_to != "none" and importlib.util.find_spec(report_to) is None:
        raise RedlineError(f"--report-to {report_to} needs the {report_to} package: pip install 'redline[{report_to}]' "
                           "(or --report-to none; every run also writes its log to the run folder)")


def check_scheduler(name: str) -> None:
    """``--lr-scheduler``: a scheduler this transformers knows, refused in one line before a model loads (transformers
    refused it as its trainer's arguments were built, once the model had loaded)."""
    from transformers import SchedulerType

    if name not in {t.value for t in SchedulerType}:
        raise RedlineError(f"--lr-scheduler {name!r} is not one of transformers' schedulers: "
                           f"{', '.join(t.value for t in SchedulerType)}")


def last_checkpoint(out: Path) -> str | None:
    """The newest complete checkpoint of a run: one whose ``trainer_state.json`` (the Trainer writes
    it after the weights, optimizer and RNG states) exists. A checkpoint a kill cut short is passed
    over, where transformers' ``get_last_checkpoint`` would pick it by its name and the resume fail.
    Where the run writes redline's progress file (training time and tokens so far, written just after
    the Trainer's files; ``run_trainer`` marks such runs with ``COUNTED``), a checkpoint killed between
    the two is passed over too: resuming there would count the stretches before it as no time at all."""
    folder = out / "checkpoints"
    if not folder.is_dir():
        return None
    steps = [(int(p.name.split("-")[1]), p) for p in folder.glob("checkpoint-*")
             if p.is_dir() and p.name.split("-")[1].isdigit()]
    complete = [p for _, p in sorted(steps, reverse=True) if (p / "trainer_state.json").exists()]
    counted = [p for p in complete if (p / PROGRESS).exists()]
    if (folder / COUNTED).exists():
        return str(counted[0]) if counted else None
    return str((counted or complete)[0]) if complete else None  # a run from before the progress file


def save_training_curve(log_history: list[dict], out: Path, title: str) -> Path | None:
    """Write every logged step to train_log.jsonl and the loss curve to training_curve.png; say so where the loss
    was NaN or infinite (a run that diverged: null in the log, a gap in the curve, null as the card's loss).

    Each file is written whole beside itself and then renamed into place, so a kill leaves no torn file (under a
    launcher the main process alone calls this: ``save_run``)."""
    write_text_atomic(out / "train_log.jsonl", "".join(json_text(row) + "\n" for row in log_history))
    points = [(row["step"], row["loss"]) for row in log_history if "loss" in row and "step" in row]
    diverged = [step for step, loss in points if not math.isfinite(loss)]
    if diverged:
        print(f"redline: {out}: the training loss was NaN or infinite at {len(diverged)} of {len(points)} logged steps, "
              f"from step {diverged[0]}: the run diverged (a lower --learning-rate may help); its model is not one to use",
              file=sys.stderr)
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path, mine = out / "training_curve.png", out / f".training_curve.{os.getpid()}.png"
    fig.savefig(mine, dpi=120)
    plt.close(fig)
    os.replace(mine, path)
    return path


def checkpointing_argument(on: bool) -> dict:
    """Activation checkpointing under the name this transformers reads: ``activation_checkpointing`` where it
    exists (transformers 5.24 has it; ``gradient_checkpointing`` is then a deprecated alias that warns on every run, and TRL's
    configs set it to True unless the new name is given), else ``gradient_checkpointing``."""
    from dataclasses import fields

    from transformers import TrainingArguments

    new = "activation_checkpointing" in {f.name for f in fields(TrainingArguments)}
    return {"activation_checkpointing" if new else "gradient_checkpointing": on}


def set_threads(threads: int | None) -> None:
    """``--threads``: torch's intra-op CPU threads for this process (None leaves torch's choice)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def training_device(settings: SFTSettings) -> str:
    """Where a supervised trainer runs (``--device``), with its ``--threads`` applied before any model loads."""
    from redline.models import pick_device

    set_threads(settings.threads)
    return pick_device(settings.device)


def trainer_arguments(settings: SFTSettings, out: Path, device: str) -> dict:
    """The transformers ``TrainingArguments`` every redline trainer sets the same way."""
    return dict(
        output_dir=str(out / "checkpoints"),
        learning_rate=settings.lr(),
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps if settings.max_steps is not None else -1,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=settings.warmup,
        **checkpointing_argument(settings.gradient_checkpointing),
        use_cpu=device == "cpu",
        seed=settings.seed,
        logging_steps=settings.logging_steps,
        logging_first_step=True,
        logging_nan_inf_filter=False,  # its default logs a NaN step's loss as the window's mean so far: 0.0, a diverged run's "perfect" loss
        save_steps=settings.save_steps,
        save_total_limit=2,
        report_to=settings.report_to,
        disable_tqdm=False,  # a progress bar even where transformers' notices are silenced (console.quiet)
    )


def trl_arguments(settings: SFTSettings, out: Path, device: str) -> dict:
    """``trainer_arguments`` plus what TRL's SFTConfig and DPOConfig share."""
    return dict(
        **trainer_arguments(settings, out, device),
        max_length=settings.max_length,
        bf16=settings.bf16 or (settings.dtype == "bfloat16" and device.startswith("cuda")),
        fp16=False,
        dataset_num_proc=None,
    )


def train_sft(
    examples: list[dict],
    settings: SFTSettings,
    out: str | os.PathLike,
    *,
    kind: str,
    data: list[str],
    config: Any = None,
    all_turns: bool = False,
    trainer_class: Any = None,
    metrics: dict[str, Any] | None = None,
    notes: str = "",
) -> dict[str, Any]:
    """Fine-tune ``settings.model`` on chat pairs ``{"prompt": [messages], "completion": [messages]}``.

    The loss covers only the completion; with ``all_turns`` it also covers every assistant turn of
    the prompt (a multi-turn conversation trains each reply; ``tokenize_turns``). ``config`` (the command's resolved config dataclass) is
    written to RUN/train_config.json. Resumes from RUN/checkpoints when a checkpoint is there; a finished run (its
    card written) is left as it is, and its card's metrics returned (``--push-to-hub`` still publishes it). Returns
    the metrics written into the model card. ``trainer_class``: an ``SFTTrainer`` subclass with its
    own loss (the critic's critique weight). ``notes``: the card's (what of ``data`` the examples are, where not all).
    """
    import torch
    from datasets import Dataset
    from trl import SFTConfig

    from redline.config import check_values
    from redline.models import (LoraSettings, ModelCard, add_lora, command_line, load_causal_lm, load_tokenizer,
                                run_info)

    out = Path(out)
    check_values(settings)  # built in Python: flags and config files were checked as they were read
    check_report_to(settings.report_to)
    check_scheduler(settings.lr_scheduler)
    finished = finished_run(out, settings.push_to_hub, config or settings)
    if finished is not None:
        return finished
    out.mkdir(parents=True, exist_ok=True)
    if not examples:
        raise RedlineError("no training examples")
    write_config(out / "train_config.json", config or settings)

    device = training_device(settings)
    torch.manual_seed(settings.seed)
    tokenizer = load_tokenizer(settings.model)
    n_examples = len(examples)
    if all_turns and any(m["role"] == "assistant" for e in examples for m in e["prompt"]):
        # TRL masks a pair's prompt whole, so conversations are tokenised here, every reply unmasked.
        examples = [tokenize_turns(tokenizer, e["prompt"] + e["completion"]) for e in examples]
        truncated = sum(len(e["input_ids"]) > settings.max_length for e in examples)
        dropped = sum(1 not in e["completion_mask"][: settings.max_length] for e in examples)
    else:
        truncated, dropped = count_truncated(examples, tokenizer, settings.max_length)  # before the model loads
    if dropped == len(examples):
        raise RedlineError(f"every example's prompt is at least --max-length {settings.max_length} tokens long, "
                           "so no completion is left to learn: raise --max-length")
    if truncated:
        print(f"redline: {truncated} of {len(examples)} examples are longer than --max-length {settings.max_length} "
              f"tokens and are cut at the end (the model never sees where their completion stops); {dropped} of them "
              "lose the whole completion and are left out", file=sys.stderr)
    # a LoRA run as the start (SFT, or a shipped model) is folded into plain weights under the new adapter
    model = load_causal_lm(settings.model, dtype=base_dtype(settings), device=device, merge_lora=True).train()
    if settings.lora:
        model = float32_adapters(add_lora(model, LoraSettings(r=settings.lora_r, alpha=settings.lora_alpha, dropout=settings.lora_dropout)))

    args = SFTConfig(
        **trl_arguments(settings, out, device),
        completion_only_loss=True,
    )
    trainer = (trainer_class or completion_sft_trainer())(model=model, args=args, train_dataset=Dataset.from_list(examples), processing_class=tokenizer)
    result = run_trainer(trainer, out)

    history = trainer.state.log_history
    losses = [row["loss"] for row in history if "loss" in row]
    metrics = {
        **(metrics or {}),  # the caller's own figures about its data, for the card too
        "examples": n_examples,
        "steps": trainer.state.global_step,
        "first_loss": round(losses[0], 4) if losses else None,
        "final_loss": round(losses[-1], 4) if losses else None,
        "train_seconds": round(result.metrics.get("train_runtime", math.nan), 1),
        "truncated_examples": truncated,
        "dropped_examples": dropped,
        "tokens": max((int(row["num_tokens"]) for row in history if "num_tokens" in row), default=None),
    }
    model, base = trainer.model, settings.model
    start = run_info(settings.model) if os.path.isdir(settings.model) else {}
    if start.get("adapter"):
        # the start's adapter was folded into weights that exist nowhere on disk, so an adapter saved on them would
        # load (with PEFT, or vLLM) on the bare base: saved whole, on the start's base, as dpo and ppo save
        base = start["base_model"]
        if settings.lora:
            model = model.merge_and_unload()
    card = ModelCard(kind=kind, base_model=base, data=data, command=command_line(), metrics=metrics, notes=notes)
    save_run(model, tokenizer, out, card, history, f"{kind}: {settings.model}", settings.push_to_hub)
    return metrics


def main_process() -> bool:
    """Whether this is the main process of a multi-process run (torchrun, accelerate launch), or the only process.
    Before the trainer has set up the process group (``finished_run``'s publish) the launcher's ``RANK`` says."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


# Set by ``cli.configured`` in a launched process other than the main one, when the command is given --overwrite.
OVERWRITE_ENV = "REDLINE_OVERWRITE"


def overwriting_worker() -> bool:
    """Whether this is a process of a launch other than the main one, of a command given ``--overwrite``: the main
    process removes OUT's earlier run as it starts (``claim_output``), perhaps after this one has looked, so what this
    one finds there (a finished run or stage, a checkpoint) is not the run's, and it starts afresh as the main one
    does. Taking a finished run for done, it ended while the main process trained and hung at its first collective."""
    return os.environ.get(OVERWRITE_ENV) == "1" and not main_process()


def wait_for_everyone() -> None:
    """Every process of a multi-process run waits here for the others (nothing to wait for in one process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def save_run(model, tokenizer, out: Path, card, history: list[dict], title: str, repo: str | None) -> None:
    """A finished Trainer run's folder: its model and card (``save_model``), train_log.jsonl and its curve, then
    ``--push-to-hub``. Under a launcher the main process writes them while the others wait for it, as the Trainer
    saves its checkpoints: every process wrote the same weights at once, so one that went on first (PIT's next stage
    loads the PIT SFT it saved) could read a file another was rewriting, and every process pushed the folder."""
    from redline.models import save_model

    if main_process():
        save_model(model, tokenizer, out, card, hub_repo=repo)
        save_training_curve(history, out, title)
    wait_for_everyone()
    publish(out, repo)


def publish(out: Path, repo: str | None) -> None:
    """``--push-to-hub``: publish the finished run folder, and say where (the main process of a launch alone)."""
    if repo and main_process():
        from redline.models import push_to_hub

        print(f"redline: pushed {out} to {push_to_hub(out, repo)}", file=sys.stderr)


def finished_run(out: Path, repo: str | None, config=None) -> dict[str, Any] | None:
    """A finished run (its card, which ``save_model`` writes last, is there) rerun with its settings: said so,
    published again under ``--push-to-hub``, and its card's metrics returned; None when OUT is not finished, or when
    ``config`` (the command's resolved config) differs from the run's train_config.json in a setting that changes
    results (a Python caller giving more ``max_steps`` resumes the run and trains on; the command line refuses
    other settings before this).

    Without it a rerun (``claim_output`` refuses other settings) resumed from the last checkpoint, trained nothing, and
    saved it all again under a new date, recomputing the card's metrics. Every trainer that ends in ``save_model``
    (SFT and the critic, the reward, gap-reward and DPO models) asks this before anything loads.
    """
    from dataclasses import MISSING, fields

    from redline.config import config_dict, input_digest
    from redline.models import RUN_INFO, run_config, run_info

    def same(f, then: dict, now: dict) -> bool:
        if f.name not in then:  # a setting added since the run was made: at its default, what the run did
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            return default is not MISSING and now[f.name] == json.loads(json.dumps(default, default=str))
        if then[f.name] == now[f.name]:
            return True
        # an input spelt another way (a relative path from another folder): the same file, as claim_output reads it
        digest = input_digest(now[f.name]) if isinstance(now[f.name], str) and isinstance(then[f.name], str) else None
        return digest is not None and digest == input_digest(then[f.name])

    if not (out / RUN_INFO).is_file() or overwriting_worker():
        return None
    then = run_config(out) if config is not None else {}
    if then:
        now = config_dict(config)
        if not all(same(f, then, now) for f in fields(config) if f.metadata.get("result", True)):
            return None
    print(f"redline: {out} is finished; nothing to train (--overwrite trains it again)", file=sys.stderr)
    publish(out, repo)
    return run_info(out).get("metrics", {})


def base_dtype(settings: SFTSettings) -> str:
    """The dtype the base model is loaded in: bfloat16 under LoRA with ``bf16_base``, else ``settings.dtype``."""
    return "bfloat16" if settings.lora and settings.bf16_base else settings.dtype


def float32_adapters(model):
    """Trainable parameters in float32 over a frozen base in any dtype, and ``model`` back.

    Adam's updates on bfloat16 weights would round away. PEFT upcasts LoRA weights itself and casts
    their input; a trained head (a reward model's ``score``) gets a hook that casts its input, so it
    reads the bfloat16 hidden states and returns float32 scores.
    """
    import torch

    for module in model.modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if own and any(p.dtype != torch.float32 for p in own):
            for p in own:
                p.data = p.data.float()
            if isinstance(module, torch.nn.Linear):
                module.register_forward_pre_hook(lambda m, args: tuple(
                    a.to(m.weight.dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args))
    return model


def completion_sft_trainer():
    """TRL's ``SFTTrainer`` with the vocabulary projection done only where the loss is, on every device.

    TRL's fused LM head projects only the positions that carry a label on Triton devices (CUDA, XPU);
    elsewhere, the CPU included, it projects every position: with the loss on the completion only,
    most of a critic example's 49 152-word projections (and their softmax) are for prompt tokens that
    the loss then drops. Where that is so, this ``compute_loss`` runs the backbone, keeps the hidden
    states whose next token is a label, and projects those alone, in float32 (TRL's kernel keeps its
    products in float32 too); the loss is the same mean over label tokens, and the same metrics are
    logged (entropy, mean_token_accuracy, num_tokens). Every other case (a model wrapped for several
    processes, logit scaling or softcapping, MoE, label smoothing, a custom loss) goes to TRL's own.
    """
    import torch
    from trl import SFTTrainer

    class CompletionSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            causal_lm = _sliceable(self, model, inputs)
            if causal_lm is None or return_outputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            mode = "train" if self.model.training else "eval"
            labels = inputs["labels"][:, 1:]
            mask = labels != -100
            kwargs = {k: v for k, v in inputs.items() if k != "labels"} | {"use_cache": False}
            hidden = causal_lm.base_model(**kwargs).last_hidden_state[:, :-1][mask]
            head = causal_lm.get_output_embeddings()
            logits = torch.nn.functional.linear(hidden.float(), head.weight.float(), None if head.bias is None else head.bias.float())
            log_probs = logits.log_softmax(-1)
            target = labels[mask]
            token_log_probs = log_probs.gather(-1, target[:, None]).squeeze(-1)
            count = mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = -token_log_probs.sum() / torch.as_tensor(count).clamp(min=1)
            with torch.no_grad():  # the metrics TRL logs, on the same positions
                entropy = -(log_probs.exp() * log_probs).sum(-1).sum()
                correct = (logits.argmax(-1) == target).sum()
            valid = int(mask.sum())
            self._metrics[mode]["entropy"].append(entropy.item() / valid if valid else 0.0)
            self._metrics[mode]["mean_token_accuracy"].append(correct.item() / valid if valid else 0.0)
            if mode == "train":
                self._total_train_tokens += int(inputs["attention_mask"].sum())
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            return loss

    return CompletionSFTTrainer


def _sliceable(trainer, model, inputs):
    """The causal LM whose hidden states ``CompletionSFTTrainer`` may slice, or None where TRL's loss must run."""
    if trainer.accelerator.unwrap_model(model) is not model or trainer.accelerator.num_processes > 1:
        return None  # DDP and friends sync gradients in their own forward
    if "labels" not in inputs or "attention_mask" not in inputs or "shift_labels" in inputs:
        return None
    if trainer.compute_loss_func is not None or trainer.label_smoother is not None or trainer.args.loss_type != "nll":
        return None
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = causal_lm.config.get_text_config()
    scaled = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")
    if trainer.aux_loss_enabled or any(getattr(config, name, None) is not None for name in scaled):
        return None
    if inputs["labels"].device.type in ("cuda", "xpu"):
        return None  # TRL's Triton kernel projects the label positions only, in tiles
    return causal_lm


def run_trainer(trainer, out: Path):
    """``trainer.train()``, resuming from OUT's last checkpoint, then clear accelerate's process-wide state.

    The Trainer's ``Accelerator`` stores its mixed precision in a singleton that every later
    ``Accelerator()`` in the process inherits: after a ``--bf16`` SFT, PPO in the same process would
    silently run its forward passes under bf16 autocast. (``_reset_state`` is accelerate's own
    reset, used by its tests; there is no public one.)
    """
    from accelerate.state import AcceleratorState

    from redline.models import read_json_object

    resume = None if overwriting_worker() else last_checkpoint(out)
    # a run that starts here writes the progress file into every checkpoint; one from before the file
    # stays unmarked, so a later resume does not pass over all its checkpoints
    if resume is None:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        (out / "checkpoints" / COUNTED).touch()
        no_warmup_for_one_step(trainer)
    carried = {"seconds": 0.0, "tokens": 0}
    if resume:
        print(f"redline: resuming from {resume}", file=sys.stderr)
        progress = Path(resume) / PROGRESS
        if progress.is_file():
            carried.update(read_json_object(progress, "the checkpoint's progress"))
        if hasattr(trainer, "_total_train_tokens"):  # TRL counts tokens from 0 in every process
            trainer._total_train_tokens = carried["tokens"]
    trainer.add_callback(_progress_callback(trainer, carried["seconds"]))
    quiet_progress_bar(trainer)
    # anything else the Trainer prints goes where the bar goes: stdout is the command's result, one JSON line
    # that `> metrics.json` or `| jq` reads
    with contextlib.redirect_stdout(sys.stderr):
        try:
            result = trainer.train(resume_from_checkpoint=resume)
        except _Trained:  # resumed from the last step's checkpoint: its weights and log loaded, no step taken
            from transformers.trainer_utils import TrainOutput

            result = TrainOutput(trainer.state.global_step, math.nan, {"train_runtime": 0.0})
    # train_runtime covers this stretch only: add the stretches before the checkpoint resumed from.
    result.metrics["train_runtime"] = carried["seconds"] + result.metrics.get("train_runtime", 0.0)
    AcceleratorState._reset_state()
    return result


SHOWN_ON_BAR = ("loss", "eval_loss", "eval_accuracy")  # of a logged step's numbers, those the bar shows


def quiet_progress_bar(trainer) -> None:
    """transformers' progress bar, with the last logged loss on it, in place of its ``ProgressCallback``, which
    writes every logged step's numbers as a dict line under the bar (one every ``--logging-steps``: some ninety
    lines for a reward model's epoch, and a last one of runtimes). Every logged step is kept, in the run's
    ``train_log.jsonl`` and its curve."""
    from transformers.trainer_callback import ProgressCallback

    class BarProgress(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and self.training_bar is not None and logs:
                shown = {key: f"{logs[key]:.4g}" for key in SHOWN_ON_BAR if isinstance(logs.get(key), float | int)}
                if shown:
                    self.training_bar.set_postfix(shown, refresh=False)

    if trainer.pop_callback(ProgressCallback) is not None:  # absent where disable_tqdm is set
        trainer.add_callback(BarProgress)


def optimiser_steps(trainer) -> int | None:
    """The optimiser steps ``trainer.train()`` will take, as the Trainer counts them (None: a dataset of no length)."""
    args = trainer.args
    if args.max_steps > 0:
        return args.max_steps
    if not hasattr(trainer.train_dataset, "__len__"):
        return None
    batches = math.ceil(len(trainer.train_dataset) / (args.per_device_train_batch_size * args.world_size))
    return math.ceil(args.num_train_epochs * max(math.ceil(batches / args.gradient_accumulation_steps), 1))


def no_warmup_for_one_step(trainer) -> None:
    """A run of one optimiser step takes it at the peak learning rate. A warm-up starts at 0, so under any
    ``--warmup`` above 0 the one step (``--max-steps 1``, or a file of up to ``--grad-accum`` records) changed no
    weight, and the run was saved as trained."""
    if optimiser_steps(trainer) == 1 and trainer.args.get_warmup_steps(1) > 0:
        trainer.args.warmup_steps = 0
        print("redline: one optimiser step: no warm-up (a warm-up would take that one step at learning rate 0, and train nothing)", file=sys.stderr)


PROGRESS = "redline_progress.json"
COUNTED = ".redline_progress"  # in RUN/checkpoints: every checkpoint of this run carries PROGRESS


class _Trained(Exception):
    """A resume from a checkpoint at the run's last step (a kill while the finished run saved its model): the
    Trainer looks for the end only after a step, so it would take one past ``--max-steps`` (another update, another
    row in the log, the card's steps and final loss from it). Raised once the checkpoint is loaded, before any step."""


def _progress_callback(trainer, carried_seconds: float):
    """Writes into every checkpoint the training time and tokens of the whole run so far, so that a
    resumed run's redline.json counts every stretch, not only the last; has the last step logged; and stops a
    resume from the last step's checkpoint before it steps (``_Trained``)."""
    import time

    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.monotonic()
            if state.global_step >= state.max_steps > 0:
                raise _Trained

        def on_step_end(self, args, state, control, **kwargs):
            # the last step is logged too (the Trainer logs every logging_steps only): the card's final_loss is the
            # loss at the end, and the curve reaches it
            if state.global_step >= state.max_steps:
                control.should_log = True

        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir() and state.is_world_process_zero:
                seconds = carried_seconds + time.monotonic() - self.start
                tokens = int(getattr(trainer, "_total_train_tokens", 0))
                # whole or absent: a torn one was chosen as complete and refused on every resume after
                write_text_atomic(folder / PROGRESS, json.dumps({"seconds": round(seconds, 3), "tokens": tokens}) + "\n")

    return Progress()


def tokenize_turns(tokenizer, messages: list[dict]) -> dict[str, list[int]]:
    """A whole chat's token ids, and a completion mask of 1 on every assistant turn.

    Each turn is found as TRL finds a prompt-completion pair's completion: where the chat up to the
    turn (with the generation prompt) and the chat through the turn part from the whole chat's tokens.
    An assistant turn that opens the chat (a greeting) answers nothing and is context only, as TRL
    keeps it; the template cannot render the empty chat before it.
    """
    from trl.data_utils import common_prefix_length

    def ids(part: list[dict], generation_prompt: bool = False) -> list[int]:
        return tokenizer.apply_chat_template(part, tokenize=True, return_dict=True,
                                             add_generation_prompt=generation_prompt)["input_ids"]

    full = ids(messages)
    mask = [0] * len(full)
    for i, message in enumerate(messages):
        if message["role"] == "assistant" and i > 0:
            start = common_prefix_length(ids(messages[:i], True), full)
            end = common_prefix_length(ids(messages[: i + 1]), full)
            mask[start:end] = [1] * (end - start)
    return {"input_ids": full, "completion_mask": mask}


def count_truncated(examples: list[dict], tokenizer, max_length: int) -> tuple[int, int]:
    """How many chat pairs the trainer will cut (prompt and completion together, template included),
    and how many of those lose their whole completion (the trainer then drops them)."""
    def lengths(messages: list[list[dict]], generation_prompt: bool) -> list[int]:
        texts = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=generation_prompt) for m in messages]
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    whole = lengths([e["prompt"] + e["completion"] for e in examples], False)
    prompt = lengths([e["prompt"] for e in examples], True)
    return sum(n > max_length for n in whole), sum(n >= max_length for n in prompt)


@dataclass
class DemonstrationConfig(SFTSettings):
    """`redline train sft`: demonstrations, then every SFT knob (see SFTSettings)."""

    data: str = field(default="", metadata={"required": True, "help": "demonstration records (JSONL, Parquet or a datasets folder)"})
    limit: int | None = field(default=None, metadata={"min": 1, "help": "train on the first N records"})
    skip_invalid: bool = field(default=False, metadata={"help": "skip bad records instead of stopping"})
    all_turns: bool = field(default=True, metadata={
        "help": "also train on the assistant turns of a chat prompt (a TRL messages row trains every reply)"})


def train_demonstrations(config: DemonstrationConfig, out) -> dict[str, Any]:
    """InstructGPT step 1: the prompt as the user turn, the demonstration as the assistant turn. A chat
    prompt's own assistant turns (a multi-turn conversation) are trained too, unless ``all_turns`` is off."""
    from redline.config import check_required
    from redline.records import read_records

    check_required(config)  # before the data is read: a config built in Python may name no --data
    records = read_records(config.data, "demonstration", skip_invalid=config.skip_invalid, limit=config.limit)
    examples = [
        {"prompt": as_chat(r.prompt), "completion": [{"role": "assistant", "content": r.response}]} for r in records
    ]
    return train_sft(examples, config, out, kind="sft", data=[config.data], config=config, all_turns=config.all_turns)


def as_chat(prompt) -> list[dict[str, str]]:
    """A record prompt as chat messages: a string is one user message."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
