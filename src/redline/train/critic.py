"""Train a critique-and-revision model ("critic") from natural-language feedback.

Jin et al. 2023, "Data-efficient alignment of large language models with human feedback through
natural language", arXiv 2311.14543: fine-tune one model on ≤1000 records of (prompt, response,
critique, revision) written by people; given a prompt and a response it writes a critique that names
strengths and weaknesses, then a revision. Training is supervised fine-tuning on that target.

    redline train critic --data feedback.jsonl --model embedded --out runs/critic

Steps:
  1. read the feedback records (``--limit N``: the paper's data-size axis; N records spread over
     as many distinct prompts as the file holds, one per prompt first, never the first N lines);
  2. turn each into a chat pair: the critic template (prompts.py) with the prompt and the response
     as the user turn, "Critique: ... Revision: ..." as the assistant turn;
  3. fine-tune with the loss on the assistant turn only (``train_sft``: TRL's SFTTrainer).

Deviations from the paper:
  1. The base is any causal LM (the paper: Falcon-40B-Instruct); LoRA is the default so a CPU can
     train the embedded 135M model; ``--no-lora`` trains all weights.
  2. Critique-only records (Shepherd, UltraFeedback imports) are used with a critique-only
     template and target, so they teach critiquing without teaching the model to stop before a
     revision. The paper's data always had both parts.
  3. The template and the "Critique:/Revision:" markers are ours; the paper's prompt is not public.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from redline.prompts import critic_messages, critic_target
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
    warmup: float = field(default=0.1, metadata={"min": 0, "help": "warm-up steps (int) or share of all steps (<1)"})
    max_length: int = field(default=1024, metadata={"min": 1, 
        "help": "tokens per example (the response appears twice: in the prompt and revised); longer ones are cut"})
    limit: int | None = field(default=None, metadata={"min": 1, "help": "train on N records spread over as many prompts as the file holds (one per prompt first)"})
    skip_invalid: bool = field(default=False, metadata={"help": "skip bad records instead of stopping"})

    def lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else (1e-3 if self.lora else 2e-5)


def critic_examples(records: list[Feedback]) -> list[dict]:
    """Chat pairs for ``train_sft``: the critic's prompt, and the critique (then revision) to learn."""
    return [
        {
            "prompt": critic_messages(r.prompt, r.response, critique_only=r.critique_only),
            "completion": [{"role": "assistant", "content": critic_target(r.critique, r.revision)}],
        }
        for r in records
    ]


def train_critic(config: CriticConfig, out, records: list[Feedback] | None = None) -> dict:
    """Steps 1–3 of the module docstring; returns the run's metrics."""
    from redline.records import read_records, spread_over_prompts

    # step 1
    if records is None:
        records = read_records(config.data, "feedback", skip_invalid=config.skip_invalid)
        records = spread_over_prompts(records, config.limit, f"{config.data} (--limit)")
    # step 2
    examples = critic_examples(records)
    # step 3
    metrics = train_sft(examples, config, out, kind="critic", data=[config.data], config=config)
    metrics["critique_only_records"] = sum(r.critique_only for r in records)
    return metrics
