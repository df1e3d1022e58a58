"""Train a critique-and-revision model ("critic") from natural-language feedback.

Jin et al. 2023, "Data-efficient alignment of large language models with human feedback through
natural language", arXiv 2311.14543: fine-tune one model on ≤1000 records of (prompt, response,
critique, revision) written by people; given a prompt and a response it writes a critique that names
strengths and weaknesses, then a revision. Training is supervised fine-tuning on that target.

    redline train critic --data feedback.jsonl --model embedded --out runs/critic

Steps:
  1. read the feedback records (``--limit N``: the paper's data-size axis; N records spread over
     as many distinct prompts as the file holds, one per prompt first, never the first N lines;
     ``--unchanged-share S``: S of them records with nothing to fix, the rest records with an edit);
  2. turn each into a chat pair: the critic template (prompts.py) with the prompt and the response
     as the user turn, "Critique: ... Revision: ..." as the assistant turn;
  3. fine-tune with the loss on the assistant turn only (``train_sft``: TRL's SFTTrainer); with
     ``--critique-weight W`` each critique token weighs W times a revision token
     (``critique_token_weights``), so the critique is not drowned by the revision's copy.

Deviations from the paper:
  1. The base is any causal LM (the paper: Falcon-40B-Instruct); LoRA is the default so a CPU can
     train the embedded 135M model; ``--no-lora`` trains all weights.
  2. Critique-only records (Shepherd, UltraFeedback imports) are used with a critique-only
     template and target, so they teach critiquing without teaching the model to stop before a
     revision. The paper's data always had both parts.
  3. The template and the "Critique:/Revision:" markers are ours; the paper's prompt is not public.
  4. A record whose revision equals its response (the annotator found nothing to fix) learns a
     critique that says so: NOTHING_TO_FIX is appended where the critique does not already say it
     in words ``finds_nothing_to_fix`` reads, so that ``revise --apply when-critiqued`` can tell.
  5. The per-token critique weight is ours (the paper: plain SFT loss).
  6. ``--unchanged-share`` is ours: the share of records whose answer needed nothing (the paper's data
     had no such control). At 0.4 the embedded critic stopped harming good answers and stopped helping
     (RESULTS "Critic": its "nothing to fix" is a prior, not a judgement, at this size).
  7. A multi-turn chat prompt is shown by its last user message (``critic_messages``), as ``revise`` shows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from redline import RedlineError
from redline.prompts import NOTHING_TO_FIX, REVISION_MARK, critic_messages, critic_target, finds_nothing_to_fix
from redline.records import Feedback
from redline.train.sft import SFTSettings, train_sft


@dataclass
class CriticConfig(SFTSettings):
    """`redline train critic`: the data, then every SFT knob (see SFTSettings)."""

    data: str = field(default="", metadata={"required": True, "help": "feedback records (JSONL, Parquet or a datasets folder)"})
    # A critic must learn a two-part format from a few hundred records: a higher LoRA rate and small
    # steps teach it in tens of steps (at 2e-4 and 8 per step, 16 steps left every output unparsed).
    learning_rate: float | None = field(default=None, metadata={"min": 0, "help": "peak lr (default: 1e-3 LoRA, 2e-5 full)"})
    grad_accum: int = field(default=2, metadata={"min": 1, "help": "forward passes accumulated per optimiser step"})
    warmup: float = field(default=0.1, metadata={"min": 0, "help": "warm-up steps (int) or share of all steps (<1); a run of one step has none"})
    max_length: int = field(default=1024, metadata={"min": 1, 
        "help": "tokens per example (the response appears twice: in the prompt and revised); longer ones are cut"})
    limit: int | None = field(default=None, metadata={"min": 1, "help": "train on N records spread over as many prompts as the file holds (one per prompt first)"})
    unchanged_share: float | None = field(default=None, metadata={"min": 0, "max": 1,
        "help": "with --limit, this share of the N records are ones whose revision equals the response "
                "(nothing to fix), each part spread over prompts; teaches the critic to leave good answers alone (default: none, the records as the spread over prompts picks them)"})
    critique_weight: float = field(default=1.0, metadata={"min": 0,
        "help": "loss weight of a critique token against a revision token (1: plain SFT loss)"})
    skip_invalid: bool = field(default=False, metadata={"help": "skip bad records instead of stopping"})

    def lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else (1e-3 if self.lora else 2e-5)


def select_records(records: list[Feedback], limit: int | None, unchanged_share: float | None, source: str) -> list[Feedback]:
    """Step 1's selection: ``limit`` records spread over prompts; with ``unchanged_share`` S, round(S × N)
    of them are records whose revision equals the response and the rest are the others (an edit, or a
    critique-only record), each
    part spread over prompts on its own (the shipped world holds 15% unchanged records, and a critic
    trained on that share invents faults in good answers: RESULTS "Critic")."""
    from redline.records import spread_over_prompts

    if unchanged_share is None:
        return spread_over_prompts(records, limit, f"{source} (--limit)")
    if limit is None:
        raise RedlineError("--unchanged-share needs --limit (the share is of the N records chosen)")
    unchanged = [r for r in records if r.unchanged]
    edited = [r for r in records if not r.unchanged]
    n_unchanged = round(unchanged_share * limit)
    chosen = (spread_over_prompts(unchanged, n_unchanged, f"{source} (records with nothing to fix, --unchanged-share)")
              + spread_over_prompts(edited, limit - n_unchanged, f"{source} (records with an edit, --unchanged-share)"))
    order = {id(r): i for i, r in enumerate(records)}
    return sorted(chosen, key=lambda r: order[id(r)])  # file order: the trainer shuffles, the card reads naturally


def critic_examples(records: list[Feedback]) -> list[dict]:
    """Chat pairs for ``train_sft``: the critic's prompt, and the critique (then revision) to learn."""
    return [
        {
            "prompt": critic_messages(r.prompt, r.response, critique_only=r.critique_only),
            "completion": [{"role": "assistant", "content": critic_target(critique_of(r), r.revision)}],
        }
        for r in records
    ]


def critique_of(r: Feedback) -> str:
    """The critique to learn: an unchanged revision's critique says that nothing needs to change."""
    if r.unchanged and not finds_nothing_to_fix(r.critique):
        return f"{r.critique.strip()} {NOTHING_TO_FIX}"
    return r.critique


def critique_mask(labels, marker: list[int]):
    """(B, T) bool: the labelled tokens of ``labels`` (B, T; -100 where a position is not learned)
    up to and including the first ``marker`` (the token ids of "Revision:"), the critique's. A row
    with no marker (critique-only records) is all critique."""
    import torch

    labelled = labels != -100
    end = torch.full((labels.shape[0],), labels.shape[1], device=labels.device)
    m = len(marker)
    if labels.shape[1] >= m:
        found = (labels.unfold(1, m, 1) == torch.tensor(marker, device=labels.device)).all(-1)  # (B, T-m+1)
        end = torch.where(found.any(1), found.int().argmax(1) + m, end)
    position = torch.arange(labels.shape[1], device=labels.device).expand_as(labels)
    return labelled & (position < end[:, None])


def revision_marker(tokenizer) -> list[int]:
    """The token ids of "Revision:" as a critic's target holds it, for ``critique_mask``: the tokens of a
    target that overlap the marker. Tokenised alone it can differ from the same text in its place (a Llama
    3 or Qwen tokenizer joins its ":" to the newline after it, a SentencePiece one gives it a leading
    "▁"), and a marker never found makes every row all critique: the weight silently lost."""
    if not getattr(tokenizer, "is_fast", False):  # no offsets to read: the marker as tokenised alone
        return tokenizer(REVISION_MARK, add_special_tokens=False)["input_ids"]
    target = critic_target("It is clear, but too long.", "A shorter answer.")
    start = target.index(REVISION_MARK)
    end = start + len(REVISION_MARK)
    encoded = tokenizer(target, add_special_tokens=False, return_offsets_mapping=True)
    return [i for i, (a, b) in zip(encoded["input_ids"], encoded["offset_mapping"]) if a < end and b > start]


def critique_token_weights(labels, marker: list[int], weight: float):
    """Loss weights (B, T) for next-token ``labels`` (B, T), -100 where a position is not learned.

    A critique token (``critique_mask``) weighs ``weight``, a revision token 1, an unlabelled one 0.
    Each row is then scaled so that its weights sum to its labelled tokens, so the loss keeps its
    scale and its division by the token count: only the critique's share of it grows. A row with
    no marker is all critique, and keeps weight 1 on every token.
    """
    labelled = labels != -100
    weights = (labelled.float() + (weight - 1.0) * critique_mask(labels, marker).float())
    scale = labelled.sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp(min=1e-9)
    return weights * scale


def weighted_trainer_class(weight: float, marker: list[int]):
    """An ``SFTTrainer`` whose loss weighs each token by ``critique_token_weights`` (TRL's own
    loss is the same sum over labelled tokens, divided by their count, with every weight 1)."""
    import torch
    from trl import SFTTrainer

    class CritiqueWeightedSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs["use_cache"] = False
            outputs = model(**inputs, fused_lm_head=True)  # per-token log-probs of labels[:, 1:]
            weights = critique_token_weights(inputs["labels"][:, 1:], marker, weight).to(outputs.log_probs.dtype)
            tokens = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = -(outputs.log_probs * weights).sum() / torch.as_tensor(tokens).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # as TRL's: DDP averages the gradients
            self._log_token_metrics(inputs, outputs)
            return (loss, outputs) if return_outputs else loss

        def _log_token_metrics(self, inputs, outputs) -> None:
            """What TRL's own loss logs (entropy, token accuracy, tokens so far): the card's ``tokens`` and a resumed
            run's count come from them, and were null and 0 under a critique weight."""
            mode = "train" if self.model.training else "eval"
            gather = self.accelerator.gather_for_metrics
            valid = gather(outputs.label_mask.sum()).sum()
            for name, values in (("entropy", outputs.entropy.detach()), ("mean_token_accuracy", outputs.is_top1)):
                self._metrics[mode][name].append((gather(values.sum()).sum() / valid).item() if valid > 0 else 0.0)
            if mode == "train":
                self._total_train_tokens += int(gather(inputs["attention_mask"].sum()).sum())
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]

    return CritiqueWeightedSFTTrainer


def check_weight(config: CriticConfig) -> None:
    """0 would train on the revisions alone (a critic that writes no critique); below 0, away from them."""
    if config.critique_weight <= 0:
        raise RedlineError(f"--critique-weight must be above 0 (got {config.critique_weight})")


def train_critic(config: CriticConfig, out, records: list[Feedback] | None = None) -> dict:
    """Steps 1–3 of the module docstring; returns the run's metrics."""
    from redline.config import check_required, check_values
    from redline.records import read_records

    # built in Python: flags and config files were checked as they were read (--data is needed only to read it)
    if records is None:
        check_required(config)
    else:
        check_values(config)
    # step 1
    if records is None:
        records = read_records(config.data, "feedback", skip_invalid=config.skip_invalid)
        records = select_records(records, config.limit, config.unchanged_share, config.data)
    # step 2
    examples = critic_examples(records)
    # step 3
    check_weight(config)
    trainer_class = None
    if config.critique_weight != 1:
        from redline.models import load_tokenizer

        marker = revision_marker(load_tokenizer(config.model))
        trainer_class = weighted_trainer_class(config.critique_weight, marker)
    return train_sft(examples, config, out, kind="critic", data=[config.data], config=config, trainer_class=trainer_class,
                     metrics={"critique_only_records": sum(r.critique_only for r in records)})
