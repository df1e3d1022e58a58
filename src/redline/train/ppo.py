"""PPO-ptx: reinforcement learning against a reward model, with a per-token KL penalty and a pretraining mix.

Ouyang et al. 2022, "Training language models to follow instructions with human feedback",
arXiv 2203.02155, §3.5 and Appendix C.4. The policy starts from the SFT model and maximises

    E_(x,y)~π_RL [ r(x, y) − β · log(π_RL(y|x) / π_SFT(y|x)) ]  +  γ · E_x~D_pretrain [ log π_RL(x) ]

Each episode is a bandit: one prompt, one sampled response, the reward model's score on its last
token and −β·(log π − log π_SFT) on every token. The paper's settings: β = 0.02 (fixed), value
function initialised from the reward model, batch 512 episodes, minibatch 64, 1 PPO epoch, clip 0.2,
GAE with no discount (γ = 1), rollout temperature 1, an EMA of the policy weights with decay 0.992,
Adam with β = (0.9, 0.95), a constant learning rate after a 10-iteration warm-up, and for PPO-ptx
8 pretraining examples per RL episode with γ_ptx = 27.8 ("PPO" is γ_ptx = 0).

    redline train ppo --policy runs/sft --reward runs/rm --prompts prompts.jsonl --out runs/ppo \\
        [--ptx-data demonstrations.jsonl] [--advantage rloo --rloo-k 4]

One implementation serves every RL method here: ``run_ppo`` takes a reward function
``(prompts, responses, records) -> list[float]`` and a prompt builder ``(record) -> messages``.
``train_ppo`` (the command) builds InstructGPT's reward function from a reward model (or, with
``--score oracle`` on simulated data, takes the oracle's quality: PPO with a perfect reward model, to
tell a weak reward model from a weak PPO); PIT passes a reward-gap function and prompts built from
(x, y_ref), and the loop is the same. Both read their RL knobs from one dataclass, ``RLSettings``.

``run_ppo``, one iteration in seven steps (each a function of this file, called in this order):

1. ``rollout``: the iteration's prompts (each K times with ``--advantage rloo``), built by
   ``build_prompt``, sampled from the *current* policy through redline's transformers engine
   wrapped around the live model.
2. ``score``: ``reward_fn`` scores each whole response.
3. ``evaluate``, without gradients: log π_SFT from the reference (the policy with its LoRA adapter
   off, or a frozen copy), V_old from the value model; log π_old and the entropy as the sampler
   recorded them in step 1 (``--rollout-logprobs``, the default, with float32 weights: the same
   weights at the same temperature, equal to ~1e-6) or from a policy pass (bfloat16 weights, whose
   two paths differ by ~3e-3 a token, and ``--no-rollout-logprobs``). Micro-batches group similar lengths and drop the columns that are
   padding in all their rows (``trim``).
4. ``advantages``: −β·k1 per token plus the score on the last token; then GAE over the tokens
   (``--advantage gae``) or REINFORCE leave-one-out over each prompt's K episodes (``rloo``: each
   episode's baseline is the mean KL-penalised reward of the prompt's other K − 1, no value model);
   whitening.
5. ``update``, for each PPO epoch and minibatch: the clipped policy loss plus γ_ptx times the LM
   loss on pretraining texts (one Adam step), the clipped value loss (another, GAE only); the EMA
   follows the policy. During the value warm-up only the value model learns.
6. KL controller: with ``--adaptive-kl``, β moves toward the KL target (Ziegler et al. 2019).
7. Log the iteration (RUN/ppo_log.jsonl, and TensorBoard/W&B with ``--report-to``); checkpoint
   every ``save_every`` iterations.

The maths (GAE, RLOO, whitening, KL estimates, the clipped losses, entropy) are the pure functions
of ``redline.ops.rl``, tested by hand.

Deviations from the paper (each setting is a flag; the paper's value is in its help):
  1. Sizes for a CPU: 16 episodes per iteration, minibatches of 4, LoRA adapters on the policy and
     on the value model. ``--batch-size 512 --minibatch-size 64`` are the paper's: 8 optimizer
     steps per iteration, as here (4 minibatches × 2 epochs).
  2. One pretraining text per four episodes by default (the paper: 8 per episode), since each costs an
     LM forward and backward; ``--ptx-ratio 8`` is the paper's. They are drawn with each minibatch
     (at least one), so each PPO epoch draws its own: 2 epochs draw twice the ratio per episode.
     The paper mixed GPT-3's pretraining data; here ``--ptx-data`` is any text (``{"text": ...}``) or demonstrations (prompt + response,
     chat-formatted). γ_ptx is 1 (the paper: 27.8): both losses here are per-token means, so at 27.8
     the update is supervised learning on the demonstrations (the reward stays flat). At 1 the LM
     loss's gradient is 2.2 times the policy loss's (orthogonal to it) and the policy moves a half to
     a quarter as far per update as without the mix, but it climbs without taking up what the
     reward model pays for and the demonstrations never do: 67.5%, 57.8% and 61.3% against SFT at 76
     iterations in three runs on the simulated world, 67.0% at 100 in one. At 0.3 it moved twice as far, reached 62.5% at 27, then took up a sign-off
     the reward model paid +5.3 for and fell back to 57.5% at 34 (RESULTS "InstructGPT").
  3. The EMA is off by default (``--ema-decay 0.992`` is the paper's): over a few dozen iterations an
     EMA that slow stays close to the SFT weights. When on, the saved policy is the EMA. Under LoRA it
     is an EMA of the trainable weights, the adapter's two factors, so the saved update is the product
     of their averages, not the average of their product (the two differ by how the factors co-vary).
  4. λ = 1 (``--lam``): the paper states "no discount" (γ = 1) and not λ; we read it as λ = 1 too,
     so every token's advantage is the episode's return less its value. At λ = 0.95, with a value
     head that starts from the reward model, the final score's weight on the first quarter of a
     96-token answer was 0.03 and the value head's step-to-step noise exceeded the score's spread:
     the correlation of a token's advantage with its episode's centred score was 0.11–0.20 at
     λ 0.95 and 0.37–0.68 at λ 1 on the same rollouts (issue 15's audit).
  5. β can follow Ziegler et al.'s adaptive controller (``--adaptive-kl``); the paper kept it fixed.
  6. No dropout: policy and value stay in eval mode, so the rollout's log-probs and the update's come
     from the same function (TRL does the same).
  7. The value model is the reward model's backbone with its score head read at every position; with
     LoRA and ``--shared-reference`` (the default) the reward model *is* the value model with its
     adapter off, and the SFT reference is the policy with its adapter off: one copy of each base.
  8. Learning rates for a 135M model with LoRA (the paper's per-size rates are for full training of
     1.3B–175B): 2e-4 policy and 1e-4 value with LoRA, 1e-6 and 5e-6 without. The warm-up is linear
     and lasts 1 iteration (the paper: 10, ``--warmup-iterations 10``). At 2e-5 with the paper's
     warm-up, 12 iterations left the embedded model's policy where it started (KL 0.01 nats per
     episode); at 2e-4 it moved (KL ~1 nat by iteration 10; RESULTS "InstructGPT").
  9. Advantages are whitened over each process's own episodes (no gather across processes), and each
     process draws its own pretraining texts, at least one per minibatch: over two processes a minibatch
     of 4 draws 2 texts where ``--ptx-ratio 0.25`` reads 1 (deviation 2; the PPO-ptx runs of RESULTS
     "InstructGPT" made with ``PROCS=2`` drew 32 an iteration, not 16). The LM loss is a mean over texts, so
     its gradient's expected size is the same; its variance is halved and its cost doubled.
 10. Rollouts sample at temperature 0.7 (the paper: 1, ``--temperature 1``); log-probs are taken
     at the same temperature, so the policy trained is the one that samples. At 1 the embedded
     model's rollouts ran at 1.7–3.3 nats of entropy per token: noise, not exploration.
 11. 256 new tokens per response (the paper: 1k, with prompts over 1k tokens filtered out; its
     appendix C). The simulated instructions ask for up to 250 words and check closing phrases and
     P.S. at the end; at 96 tokens 63–81% of rollouts were cut, so those instructions could never
     be met.
 12. 2 PPO epochs of 4 minibatches (the paper: 1 epoch, ``--ppo-epochs 1``): with 1 epoch of 2
     minibatches the clip fraction stayed 0 and the approximate KL per update 5e-5–1e-4; the policy
     barely moved. An update's cost grows with the epochs, not the minibatches, so the 8 steps come
     mostly from smaller minibatches.
 13. A value warm-up of 1 iteration (the paper: none, ``--value-warmup-iterations 0``): the value
     head learns the policy's returns from one rollout before its advantages steer the policy; the
     policy's lr warm-up starts after it.
 14. ``--advantage rloo`` is not in the paper: REINFORCE leave-one-out (Ahmadian et al. 2024,
     arXiv 2402.14740) with the PPO clip, K = ``--rloo-k`` samples per prompt, whitened over the
     episodes; no value model is trained, so a weak value head cannot be the limit.
 15. ``--bf16-base`` (off by default) holds the frozen base weights of every model in bfloat16 under
     float32 adapters and value head, for speed on CPUs with bfloat16 units and on GPUs; the
     paper trained in its own precision, unstated (RESULTS "PPO iteration" has the cost and effect).
 16. The policy loss is a token mean within each micro-batch, the micro-batches weighted by their episodes
     (as TRL's gradient accumulation weighs them): micro-batches group similar lengths, so a token of a short
     response weighs more than a token of a long one in another micro-batch (the paper does not say). A mean
     over every token of the minibatch would weigh them alike; left as it is while the runs in RESULTS that
     resume across sessions are under way, since it changes their maths.
 17. The reward model scores a response cut at ``--max-new-tokens`` as if it had ended: the reward text is the
     chat template's (prompt, response), which closes the turn the policy never closed, and the response is
     decoded and tokenized again rather than scored on the sampled ids. The reward model was trained on
     finished answers only. The paper does not say how it scored cut responses; TRL subtracts a
     ``missing_eos_penalty``, here ``--missing-eos-penalty`` (0, off, by default, as the runs in RESULTS ran:
     in the thirty-second session's PPO-ptx rebuild 18 of 32 and 11 of 32 rollouts of its first two
     iterations were cut at 256 tokens).
 18. Advantages are whitened by the population standard deviation (``ops.rl.masked_var`` divides by n), where
     TRL's ``masked_var`` divides by n − 1 (Bessel's correction; the paper does not say): whitened over an
     iteration's 32 episodes on one process, RLOO's advantages come out √(32/31) ≈ 1.6% larger than TRL's
     would (over two processes, 16 each: 3.2%); over GAE's thousands of tokens, under 0.1%. Left as it is while the runs in RESULTS that
     resume across sessions are under way.

What a run folder holds::

    RUN/train_config.json        the resolved PPOConfig (``--config`` repeats the run)
    RUN/ppo_log.jsonl            one row per iteration: reward, KL, entropy, losses, β, time split, the
                                 policy step's gradient norm before clipping and, for PPO-ptx with LoRA on
                                 one process, its two parts (policy loss, γ_ptx × LM loss) and their cosine
    RUN/rollouts.jsonl           every episode: iteration, prompt, response, score, KL, tokens, truncated
    RUN/ppo_curve.png            score, KL, response length and the gradient norm against the iteration
    RUN/adapter_model.safetensors  the policy (or model.safetensors), tokenizer, README.md, redline.json
    RUN/value/                   the value model (GAE only)
    RUN/checkpoints/iter-NNNNNN/ trainable weights, optimizer and RNG states, β, iteration; a rerun
                                 of the same command resumes from the last one as if never stopped (a
                                 finished run, its card at --iterations, is left as it is)

``--push-to-hub REPO`` publishes RUN, the final policy, less its checkpoints, once the run is done.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from redline import RedlineError
from redline.config import check_values, seed_field, write_config
from redline.models import DTYPES as DTYPE_CHOICES, read_json_object
from redline.train.sft import as_chat, check_report_to, overwriting_worker, publish, set_threads, threads_field

# (prompts as chat messages, response texts, the records they came from) -> one score per response
RewardFn = Callable[[list[list[dict]], list[str], list[dict]], list[float]]
# a prompt record -> the chat messages the policy answers
PromptBuilder = Callable[[dict], list[dict]]

LOG = "ppo_log.jsonl"
ROLLOUTS = "rollouts.jsonl"
CURVE = "ppo_curve.png"
CHECKPOINTS = "checkpoints"
KEEP_CHECKPOINTS = 2
ADVANTAGES = ("gae", "rloo")


@dataclass
class RLSettings:
    """The RL knobs `train ppo` and `train pit` share: a field added here is a flag of both commands.

    Defaults fit the embedded 135M model on a CPU; each help text gives the paper's value.
    """

    # --- models
    lora: bool = field(default=True, metadata={"help": "train LoRA adapters on policy and value (False: all weights)"})
    lora_r: int = field(default=16, metadata={"min": 1, "max": 4096, "help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"min": 1, "help": "LoRA scaling numerator"})
    shared_reference: bool = field(default=True, metadata={
        "help": "LoRA only: the SFT reference is the policy with its adapter off and the reward model the value "
                "model with its adapter off (one copy of each base); --no-shared-reference loads frozen copies"})
    dtype: str = field(default="float32", metadata={"choices": DTYPE_CHOICES, "help": "weights dtype"})
    bf16_base: bool = field(default=False, metadata={
        "help": "with LoRA, hold every model's frozen base weights in bfloat16 under float32 adapters and value head "
                "(RESULTS 'PPO iteration')"})
    device: str = field(default="auto", metadata={"result": False, "help": "cpu, cuda or auto (accelerate places the models)"})
    threads: int | None = threads_field()
    # --- prompts
    max_prompt_length: int = field(default=256, metadata={"help": "tokens per prompt (chat template included)"})
    truncate_prompts: bool = field(default=False, metadata={
        "help": "cut longer prompts to their last max_prompt_length tokens (counted) instead of refusing them"})
    # --- rollouts and reward
    iterations: int = field(default=20, metadata={"min": 1, "result": False, "help": "PPO iterations (rollout + update)"})
    batch_size: int = field(default=16, metadata={"min": 1, "help": "episodes per iteration, all processes together (the paper: 512)"})
    max_new_tokens: int = field(default=256, metadata={"min": 1,
        "help": "tokens per response (the paper: 1k, its appendix C); the simulated instructions ask for up to 250 words"})
    temperature: float = field(default=0.7, metadata={"min": 0, "help": "rollout sampling temperature (the paper: 1)"})
    top_p: float = field(default=1.0, metadata={"help": "rollout nucleus sampling (the paper: not stated; it samples at temperature 1)"})
    beta: float = field(default=0.02, metadata={"help": "per-token KL penalty coefficient (the paper: 0.02)"})
    adaptive_kl: bool = field(default=False, metadata={"help": "drive beta toward kl_target (Ziegler et al. 2019; the paper: fixed)"})
    kl_target: float = field(default=6.0, metadata={"help": "adaptive KL: target KL per episode, in nats"})
    kl_horizon: int = field(default=10000, metadata={"help": "adaptive KL: episodes over which beta adapts"})
    reward_max_length: int = field(default=512, metadata={"min": 1, "help": "tokens per (prompt, response) the reward model reads"})
    missing_eos_penalty: float = field(default=0.0, metadata={"min": 0, "help": (
        "subtracted from the score of a response cut at --max-new-tokens (TRL's missing_eos_penalty; 0 = off, the "
        "paper's reading): the reward model reads a cut response as finished (deviation 17)")})
    # --- advantages
    advantage: str = field(default="gae", metadata={
        "choices": ADVANTAGES, "help": "gae (a value model, the paper's) or rloo (REINFORCE leave-one-out: --rloo-k samples per prompt, each "
                "one's baseline the mean KL-penalised reward of the others; no value model)"})
    rloo_k: int = field(default=4, metadata={"help": "rloo: samples per prompt (at least 2; --batch-size must be a multiple)"})
    gamma: float = field(default=1.0, metadata={"help": "GAE discount (the paper: 1, no discount)"})
    lam: float = field(default=1.0, metadata={
        "help": "GAE λ (the paper: not stated; 1 is its no-discount reading; 0.95 starved early tokens of the score)"})
    whiten_advantages: bool = field(default=True, metadata={"help": "scale advantages to mean 0, variance 1"})
    rollout_logprobs: bool = field(default=True, metadata={
        "help": "with float32 weights, log π_old and the entropy from the sampler's own logits (equal to a forward "
                "pass to ~1e-6) instead of a second forward pass; under bfloat16 weights, whose sampler and forward "
                "pass differ by ~3e-3 a token, and with --no-rollout-logprobs, the forward pass computes them"})
    # --- PPO
    ppo_epochs: int = field(default=2, metadata={"help": "passes over each iteration's episodes (the paper: 1)"})
    minibatch_size: int = field(default=4, metadata={"help": "episodes per optimizer step, all processes together (the paper: 64 of 512)"})
    micro_batch_size: int = field(default=4, metadata={"help": "sequences per forward pass (gradients accumulate; "
        "each pass's loss is its tokens' mean, weighed by its share of the minibatch's episodes)"})
    clip_range: float = field(default=0.2, metadata={"help": "PPO ratio clip ε (the paper: 0.2)"})
    value_clip: float = field(default=0.2, metadata={"help": "value clip around the rollout's values"})
    learning_rate: float | None = field(default=None, metadata={"min": 0, "help": "policy lr (default: 2e-4 LoRA, 1e-6 full)"})
    value_learning_rate: float | None = field(default=None, metadata={"min": 0, "help": "value lr (default: 1e-4 LoRA, 5e-6 full)"})
    adam_beta1: float = field(default=0.9, metadata={"help": "Adam β1 (the paper: 0.9)"})
    adam_beta2: float = field(default=0.95, metadata={"help": "Adam β2 (the paper: 0.95)"})
    warmup_iterations: int = field(default=1, metadata={"help": "linear policy lr warm-up, in iterations (the paper: 10)"})
    value_warmup_iterations: int = field(default=1, metadata={
        "help": "gae: iterations at the start in which only the value model learns (the paper: 0)"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping (0 = off)"})
    ema_decay: float | None = field(default=None, metadata={"help": "EMA of the policy weights, saved as the final policy (the paper: 0.992; default: none, the last weights are saved)"})
    # --- bookkeeping
    seed: int = seed_field("seed of prompt order, rollouts and minibatches")
    save_every: int = field(default=5, metadata={"min": 1, "result": False, "help": "checkpoint every N iterations (and after the last)"})
    report_to: str = field(default="none", metadata={"result": False, "help": "none, tensorboard or wandb (through accelerate's trackers)"})
    push_to_hub: str | None = field(default=None, metadata={"result": False, "help":
        "publish the final policy (less checkpoints) to this hub repo id, or copy it to a local folder"})

    def sampler_logprobs(self) -> bool:
        """Whether π_old comes from the sampler (``rollout_logprobs``): only where its numbers are the forward
        pass's to float32 tolerance. In bfloat16 the two paths differ by ~3e-3 nats a token, so the first
        iteration's KL would not be 0 and the first update's ratio not 1."""
        return self.rollout_logprobs and self.base_dtype() == "float32"

    def base_dtype(self) -> str:
        """The dtype every model's base weights load in: bfloat16 under LoRA with ``bf16_base``, else ``dtype``."""
        return "bfloat16" if self.lora and self.bf16_base else self.dtype

    def policy_lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else (2e-4 if self.lora else 1e-6)

    def value_lr(self) -> float:
        return self.value_learning_rate if self.value_learning_rate is not None else (1e-4 if self.lora else 5e-6)

    def group_size(self) -> int:
        """Episodes per prompt in one iteration: K for RLOO, 1 for GAE."""
        return self.rloo_k if self.advantage == "rloo" else 1

    def check(self) -> None:
        """Settings that cannot work, refused before anything loads; every field in its range and choices too
        (``check_values``: a config built in Python, as ``run_ppo``'s callers build it, skipped them)."""
        check_values(self)
        positive = ("iterations", "batch_size", "max_new_tokens", "minibatch_size", "micro_batch_size",
                    "ppo_epochs", "max_prompt_length", "save_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise RedlineError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise RedlineError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")
        check_report_to(self.report_to)
        if self.advantage == "rloo":
            if self.rloo_k < 2:
                raise RedlineError(f"--advantage rloo needs at least 2 samples per prompt (--rloo-k), got {self.rloo_k}: "
                                   "each sample's baseline is the mean reward of the others")
            if self.batch_size % self.rloo_k:
                raise RedlineError(f"--batch-size {self.batch_size} is not a multiple of --rloo-k {self.rloo_k}")
        if self.value_warmup_iterations < 0 or self.warmup_iterations < 0:
            raise RedlineError("--warmup-iterations and --value-warmup-iterations cannot be negative")
        if not 0 <= self.lam <= 1 or not 0 <= self.gamma <= 1:
            raise RedlineError(f"--lam and --gamma must be in [0, 1], got {self.lam} and {self.gamma}")
        from redline.generation.sampling import GREEDY_BELOW

        if self.temperature < GREEDY_BELOW:  # the engine decodes greedily there, its log-probs at temperature 1
            raise RedlineError(f"--temperature must be at least {GREEDY_BELOW:g} for rollouts (below it the engine "
                               f"decodes greedily and records log-probs at temperature 1), got {self.temperature}")
        if not 0 < self.top_p <= 1:  # else the first rollout, after the models loaded, refused it
            raise RedlineError(f"--top-p must be in (0, 1], got {self.top_p}")
        for name in ("beta", "clip_range", "value_clip", "max_grad_norm", "learning_rate", "value_learning_rate"):
            if getattr(self, name) is not None and getattr(self, name) < 0:  # else Adam refused it once the models loaded
                raise RedlineError(f"--{name.replace('_', '-')} cannot be negative, got {getattr(self, name)}")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise RedlineError(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(self, name)}")
        if self.adaptive_kl and (self.kl_target <= 0 or self.kl_horizon < 1):  # else a ZeroDivisionError after iteration 1
            raise RedlineError(f"--adaptive-kl needs --kl-target above 0 and --kl-horizon at least 1, got "
                               f"{self.kl_target} and {self.kl_horizon}")


@dataclass
class PPOConfig(RLSettings):
    """`redline train ppo`: the models and the data, then the RL knobs of RLSettings."""

    policy: str = field(default="", metadata={"required": True, "help": "the SFT run (or any causal LM) to start from; also the frozen reference"})
    reward: str = field(default="", metadata={"required": True, "help": "the reward-model run (redline train reward); the value model starts from it"})
    score: str = field(default="reward-model", metadata={
        "help": "the reward: reward-model (the --reward run's score) or oracle (simulated data only: the oracle's "
                "quality of the response, a diagnostic of PPO with a perfect reward model; the value model "
                "still starts from --reward)"})
    prompts: str = field(default="", metadata={"required": True, "help": "records with a `prompt` field (any kind): the RL prompts"})
    limit: int | None = field(default=None, metadata={"min": 1, "help": "use the first N prompt records"})
    skip_invalid: bool = field(default=False, metadata={"help": "skip bad prompt records instead of stopping"})
    ptx_data: str | None = field(default=None, metadata={"help": "pretraining-mix texts: {\"text\"} or demonstration records"})
    ptx_coef: float = field(default=1.0, metadata={"help": "γ_ptx, the LM loss's weight (the paper: 27.8; 0 = plain PPO)"})
    ptx_ratio: float = field(default=0.25, metadata={"help": "pretraining texts per RL episode, drawn with each minibatch, "
        "so per episode per PPO epoch (the paper: 8, one epoch); at least one per minibatch"})
    ptx_max_length: int = field(default=256, metadata={"min": 1, "help": "tokens per pretraining text; longer ones are cut"})

    def check(self) -> None:
        super().check()
        if self.ptx_coef < 0 or self.ptx_ratio < 0:
            raise RedlineError("--ptx-coef and --ptx-ratio cannot be negative")
        if self.score not in ("reward-model", "oracle"):
            raise RedlineError(f"--score must be reward-model or oracle, got {self.score!r}")


# ----------------------------------------------------------------------------- what the steps pass on


@dataclass
class PPOModels:
    """What ``load_ppo_models`` gives ``run_ppo``; a None says which model stands in for another."""

    policy: Any  # the causal LM that learns (a peft model with a LoRA adapter, or all weights trainable)
    value: Any | None  # sequence-classification model read at every position as V(s_t); None with --advantage rloo
    reference: Any | None  # frozen SFT policy; None when shared: the policy with its adapter off
    reward_model: Any | None  # frozen reward model; None when the value model with its adapter off scores, or an oracle does
    tokenizer: Any
    # the reward model's own (its chat template is the one it was trained on; the vocabularies are checked equal);
    # None: the policy's
    reward_tokenizer: Any = None

    @property
    def shared_reference(self) -> bool:
        return self.reference is None

    @property
    def scorer_tokenizer(self) -> Any:
        """The tokenizer whose chat template the reward is read in: the reward model's own, else the policy's."""
        return self.reward_tokenizer or self.tokenizer

    def scorer(self) -> tuple[Any, bool]:
        """(the model whose score is the reward, whether its LoRA adapter must be switched off to read it)."""
        if self.reward_model is not None:
            return self.reward_model, False
        if self.value is None:
            raise RedlineError("no reward model is loaded (the oracle scores this run)")
        return self.value, True


@dataclass
class Samples:
    """Step 1: this process's B episodes of an iteration, the prompt left-padded to Q tokens, the response right-padded to A."""

    prompts: list[list[dict]]  # B chat prompts, as built by build_prompt
    records: list[dict]  # B prompt records they came from
    texts: list[str]  # B response texts
    tokens: list[int]  # B response lengths, in tokens
    truncated: list[bool]  # B: the response ran into max_new_tokens
    query_ids: Any  # (B, Q) prompt tokens, left-padded with the pad id
    query_mask: Any  # (B, Q) 1 on prompt tokens
    response_ids: Any  # (B, A) sampled tokens (EOS included when generated), right-padded
    response_mask: Any  # (B, A) 1 on response tokens
    # (B, A) log π(a_t|s_t) and the entropy as the sampler drew them (--rollout-logprobs), 0 past the end; else None
    logprobs: Any | None = None
    entropy: Any | None = None


@dataclass
class Evaluation:
    """Step 3: what the models say of the sampled tokens, without gradients."""

    logprobs: Any  # (B, A) log π_old(a_t|s_t), the policy that sampled
    ref_logprobs: Any  # (B, A) log π_SFT(a_t|s_t), the frozen reference
    entropy: Any  # (B, A) H(π_old(·|s_t)), in nats
    values: Any | None  # (B, A) V_old(s_t), the value before token t; None with --advantage rloo


@dataclass
class Rollout:
    """Step 4: what the update learns from, B episodes; select() takes minibatches of rows."""

    query_ids: Any  # (B, Q) prompt tokens, left-padded with the pad id
    query_mask: Any  # (B, Q) 1 on prompt tokens
    response_ids: Any  # (B, A) sampled tokens (EOS included when generated), right-padded
    response_mask: Any  # (B, A) 1 on response tokens
    logprobs: Any  # (B, A) log π_old(a_t|s_t), the policy that sampled
    ref_logprobs: Any  # (B, A) log π_SFT(a_t|s_t), the frozen reference
    values: Any | None  # (B, A) V_old(s_t), the value before token t; None with --advantage rloo
    scores: Any  # (B,) the reward function's score of each whole response
    rewards: Any  # (B, A) −β·k1 on every token, plus the score on the last
    advantages: Any  # (B, A) GAE advantages, or each episode's RLOO advantage on all its tokens (whitened unless off)
    returns: Any | None  # (B, A) value targets: GAE advantages before whitening + V_old; None with rloo

    def select(self, idx) -> "Rollout":
        """The episodes ``idx`` (a LongTensor of rows), without the columns that are padding in all of
        them (``trim``): Q and A shrink to what these rows need."""
        rows = {f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[idx] for f in fields(self)}
        first, width = trim(rows["query_mask"], rows["response_mask"])
        for name, value in rows.items():
            if name.startswith("query_"):
                rows[name] = value[:, first:]
            elif value is not None and value.dim() == 2:
                rows[name] = value[:, :width]
        return Rollout(**rows)


@dataclass
class Learner:
    """The live models and optimizers of a run, after accelerate's ``prepare``."""

    accelerator: Any
    policy: Any  # the policy itself: the engine samples from it, checkpoints read it
    policy_model: Any  # the policy as accelerate wraps it (DDP across processes): the forward that trains
    reference: Any | None  # frozen SFT policy, or None: the policy with its adapter off
    value: Any | None  # the value model itself, or None (rloo)
    values_model: Any | None  # TokenValues around it, as accelerate wraps it: per-token values that train
    policy_opt: Any
    value_opt: Any | None
    ema: dict[str, Any] | None  # name -> EMA of a trainable policy weight, or None


@dataclass
class UpdateStats:
    """Step 5's statistics: sums weighted by episodes (by texts for the LM loss), averaged by ``means``."""

    policy_loss: float = 0.0  # clipped surrogate, mean over tokens
    clipfrac: float = 0.0  # share of tokens where the clip bound
    approx_kl: float = 0.0  # ½(log ρ)² over tokens: how far each step moved the policy
    policy_weight: int = 0
    value_loss: float = 0.0  # clipped value loss
    value_clipfrac: float = 0.0
    value_weight: int = 0
    ptx_loss: float = 0.0  # LM loss on pretraining texts
    ptx_weight: int = 0
    grad_norm: float = 0.0  # the policy step's gradient norm before clipping
    policy_grad_norm: float = 0.0  # of it, the clipped policy loss's part alone (PPO-ptx under LoRA)
    ptx_grad_norm: float = 0.0  # and the LM loss's part alone
    grad_cosine: float = 0.0  # cosine between the two parts: below 0, the LM loss pulls against the policy loss
    grad_weight: int = 0  # policy steps
    split_weight: int = 0  # policy steps whose gradient was split into its parts

    def add_policy(self, loss: float, clipfrac: float, approx_kl: float, n: int) -> None:
        self.policy_loss += loss * n
        self.clipfrac += clipfrac * n
        self.approx_kl += approx_kl * n
        self.policy_weight += n

    def add_value(self, loss: float, clipfrac: float, n: int) -> None:
        self.value_loss += loss * n
        self.value_clipfrac += clipfrac * n
        self.value_weight += n

    def add_ptx(self, loss: float, n: int) -> None:
        self.ptx_loss += loss * n
        self.ptx_weight += n

    def add_grad(self, norm: float, parts: tuple[float, float, float] | None) -> None:
        """One policy step's gradient norm and, where measured, (policy part, LM part, their cosine)."""
        self.grad_norm += norm
        self.grad_weight += 1
        if parts is not None:
            self.policy_grad_norm += parts[0]
            self.ptx_grad_norm += parts[1]
            self.grad_cosine += parts[2]
            self.split_weight += 1

    def means(self) -> dict[str, float | None]:
        """Each statistic's mean, or None when nothing was measured (no policy step in the value warm-up ...)."""
        def mean(total: float, weight: int) -> float | None:
            return total / weight if weight else None

        return {"policy_loss": mean(self.policy_loss, self.policy_weight), "clipfrac": mean(self.clipfrac, self.policy_weight),
                "approx_kl": mean(self.approx_kl, self.policy_weight), "value_loss": mean(self.value_loss, self.value_weight),
                "value_clipfrac": mean(self.value_clipfrac, self.value_weight), "ptx_loss": mean(self.ptx_loss, self.ptx_weight),
                "grad_norm": mean(self.grad_norm, self.grad_weight),
                "policy_grad_norm": mean(self.policy_grad_norm, self.split_weight),
                "ptx_grad_norm": mean(self.ptx_grad_norm, self.split_weight),
                "grad_cosine": mean(self.grad_cosine, self.split_weight)}


# ----------------------------------------------------------------------------- prompts and texts


def read_ptx_texts(path: str, tokenizer) -> list[str]:
    """Pretraining-mix texts: ``{"text": ...}`` as it is, a demonstration ``{"prompt", "response"}`` as its chat."""
    from redline.models import chat_text
    from redline.records import Demonstration, FieldError, iter_raw, text_field

    texts = []
    for number, obj in iter_raw(path):
        try:
            if isinstance(obj, FieldError):  # a line that is not JSON: said as such, not as a record missing its fields
                raise obj
            if isinstance(obj, dict) and "text" in obj:
                texts.append(text_field(obj, "text"))
            elif isinstance(obj, dict) and "prompt" in obj:  # checked as any demonstration: a bad prompt broke the template
                demo = Demonstration.from_dict(obj)
                texts.append(chat_text(tokenizer, demo.prompt, demo.response))
            else:
                raise FieldError("<record>", "a pretraining-mix record needs `text`, or `prompt` and `response`")
        except FieldError as e:
            raise RedlineError(f"{path}:{number}: {e.field}: {e.reason}") from None
    if not texts:
        raise RedlineError(f"{path}: no pretraining texts")
    return texts


def encode_prompt(tokenizer, messages: list[dict]) -> list[int]:
    """The prompt's token ids exactly as the engine encodes them (chat template, generation prompt)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def fit_prompts(tokenizer, prompts: list[list[dict]], max_tokens: int, truncate: bool) -> tuple[list[list[dict]], int]:
    """Prompts that fit ``max_tokens``: longer ones are refused with a count, or with ``truncate`` cut
    to the end of their last user message. Returns (prompts, how many were cut)."""
    lengths = [len(encode_prompt(tokenizer, p)) for p in prompts]
    long = [i for i, n in enumerate(lengths) if n > max_tokens]
    if long and not truncate:
        raise RedlineError(
            f"{len(long)} of {len(prompts)} prompts have more than {max_tokens} tokens (the longest {max(lengths)}); "
            "raise --max-prompt-length or pass --truncate-prompts"
        )
    out = list(prompts)
    for i in long:
        out[i] = _truncate_prompt(tokenizer, prompts[i], max_tokens)
    return out, len(long)


def _truncate_prompt(tokenizer, messages: list[dict], max_tokens: int) -> list[dict]:
    # Keep the end of the last user message (as TRL's left truncation does); decoding can shift a
    # token or two, so measure again until it fits.
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    target = users[-1] if users else len(messages) - 1
    content = tokenizer(messages[target]["content"], add_special_tokens=False)["input_ids"]
    for _ in range(8):
        excess = len(encode_prompt(tokenizer, messages)) - max_tokens
        if excess <= 0:
            return messages
        if excess >= len(content):
            break
        content = content[excess:]
        messages = [dict(m) for m in messages]
        messages[target]["content"] = tokenizer.decode(content, skip_special_tokens=True)
    raise RedlineError(f"a prompt does not fit in {max_tokens} tokens even with its last user message cut")


def stream_indices(n: int, start: int, count: int, seed: int) -> list[int]:
    """Items ``start .. start+count-1`` of an endless stream over range(n): each pass a fresh shuffle.

    A pure function of its arguments, so an iteration's prompts depend only on its number: a resumed
    run draws exactly what the uninterrupted one did.
    """
    out, orders = [], {}  # each pass's shuffle made once, however many of its items are drawn
    for k in range(start, start + count):
        epoch, offset = divmod(k, n)
        if epoch not in orders:
            orders[epoch] = list(range(n))
            random.Random(seed * 1_000_003 + epoch).shuffle(orders[epoch])
        out.append(orders[epoch][offset])
    return out


# ----------------------------------------------------------------------------- models


POLICY_ROLE = "a policy: --policy wants the SFT run (a causal language model)"


def load_ppo_models(config: PPOConfig, device: str) -> PPOModels:
    """The models ``config`` asks for (see ``PPOModels``).

    The SFT policy is loaded as plain weights (a LoRA SFT run is merged) so the PPO adapter sits on
    top of it and ``disable_adapter()`` gives the SFT policy back. With LoRA and a shared reference,
    no second copy of the policy or the reward model is loaded. RLOO trains no value model: the
    reward model is then loaded frozen (unless the oracle scores).
    """
    import torch

    from redline.models import LoraSettings, add_lora, load_causal_lm, load_reward_model, load_tokenizer

    torch.manual_seed(config.seed)  # LoRA's A matrices start random: the same seed, the same run
    tokenizer = load_tokenizer(config.policy)
    value_tokenizer = load_tokenizer(config.reward)
    # RLOO has no value model: its reward model reads the text in its own tokens, whatever the policy's
    if config.advantage == "gae" and value_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise RedlineError(f"the value model starts from {config.reward}, whose tokenizer differs from the policy's: "
                           "per-token values need the policy's tokens (train the reward model on the same base)")
    lora = LoraSettings(r=config.lora_r, alpha=config.lora_alpha, dropout=0.0)
    shared = config.lora and config.shared_reference

    from redline.train.sft import float32_adapters

    dtype = config.base_dtype()
    policy = load_causal_lm(config.policy, dtype, device, merge_lora=True)
    reference = None if shared else _frozen(load_causal_lm(config.policy, dtype, device, merge_lora=True))
    policy = float32_adapters(add_lora(policy, lora)) if config.lora else policy.requires_grad_(True)

    value = reward_model = None
    if config.advantage == "gae":
        # merged: a shipped reward model is an adapter run (scripts/ship_model.py), and the PPO adapter on an
        # unmerged one would nest; disable_adapter() below would then switch the reward model's own adapter off too
        value = load_reward_model(config.reward, dtype, device, merge_lora=True)
    # the oracle scores on its own; otherwise the value model with its adapter off is the reward model when shared
    if config.score != "oracle" and (value is None or not shared):
        reward_model = _frozen(load_reward_model(config.reward, dtype, device, merge_lora=True))
    if value is not None:
        value = float32_adapters(add_lora(value, lora, task_type="SEQ_CLS")) if config.lora else value.requires_grad_(True)
    return PPOModels(policy=policy, value=value, reference=reference, reward_model=reward_model, tokenizer=tokenizer,
                     reward_tokenizer=value_tokenizer)


def _frozen(model):
    return model.eval().requires_grad_(False)


def instructgpt_reward(reward_model, tokenizer, max_length: int = 512, adapter_off: bool = False) -> RewardFn:
    """InstructGPT's reward: the reward model's score of the chat (prompt, response), bias included.

    ``adapter_off``: the reward model is the value model, read with its LoRA adapter (and trained
    head) switched off, which gives back the reward model's own weights.
    """
    from redline.models import chat_text, score_texts

    def reward_fn(prompts: list[list[dict]], responses: list[str], records: list[dict]) -> list[float]:
        texts = [chat_text(tokenizer, p, r) for p, r in zip(prompts, responses)]
        with reward_model.disable_adapter() if adapter_off else contextlib.nullcontext():
            return score_texts(reward_model, tokenizer, texts, max_length=max_length)

    return reward_fn


def oracle_reward(records: list[dict]) -> RewardFn:
    """The simulated oracle's quality in [0, 1] of each response, for records whose ``meta`` carries
    their instructions (``redline.simulate``). With a perfect reward, what PPO gains measures PPO
    itself; the gap to a reward model's run is the reward model's fault (RESULTS "InstructGPT")."""
    from redline.records import prompt_text
    from redline.simulate.oracle import quality

    missing = [r.get("id", i) for i, r in enumerate(records) if "instructions" not in (r.get("meta") or {})]
    if missing:
        raise RedlineError(f"--score oracle needs meta.instructions in every prompt record (as `redline simulate` "
                           f"writes them); {len(missing)} of {len(records)} have none, the first: id {missing[0]}")

    def reward_fn(prompts: list[list[dict]], responses: list[str], rows: list[dict]) -> list[float]:
        return [quality(row["meta"], response, prompt_text(row["prompt"])) for row, response in zip(rows, responses)]

    return reward_fn


def _token_values_class():
    import torch
    import torch.nn.functional as F

    from redline.models import one_row_at_a_time, real_tokens

    class TokenValues(torch.nn.Module):
        """Per-token values from a sequence-classification model: its score head on every position.

        ``LlamaForSequenceClassification`` pools the head's (B, T, 1) output at the last token; the
        value function wants all of it. A module of its own so that ``accelerator.prepare`` (DDP)
        wraps the forward that training calls.
        """

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, n_last: int):
            inner = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
            backbone = getattr(inner, inner.base_model_prefix)
            if one_row_at_a_time(input_ids):  # each episode alone at its own length
                rows, queries = [], input_ids.shape[1] - n_last
                n_query, n_response = attention_mask[:, :queries].sum(1).tolist(), attention_mask[:, queries:].sum(1).tolist()
                for real, q, r in zip(real_tokens(input_ids, attention_mask), map(int, n_query), map(int, n_response)):
                    hidden = backbone(input_ids=real, position_ids=torch.arange(real.shape[1])[None]).last_hidden_state
                    rows.append(F.pad(hidden[:, q - 1 : q - 1 + r], (0, 0, 0, n_last - r)))
                hidden = torch.cat(rows)  # (B, n_last, H), zeros past each response's end
                return inner.score(hidden).squeeze(-1).float()
            hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).last_hidden_state
            # the state before response token t is the hidden state of the token before it
            return inner.score(hidden[:, -(n_last + 1) : -1]).squeeze(-1).float()  # (B, n_last)

    return TokenValues


# ----------------------------------------------------------------------------- forward passes


def _pad(rows: list[list[int]] | list[list[float]], pad_id: int, left: bool, dtype=None):
    """(values, mask), each (B, longest row): ``rows`` padded with ``pad_id`` on the left or the right;
    ``dtype`` defaults to token ids (long)."""
    import torch

    dtype = dtype or torch.long
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=dtype)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, sl] = torch.tensor(r, dtype=dtype)
        mask[i, sl] = 1
    return ids, mask


def trim(query_mask, response_mask) -> tuple[int, int]:
    """(the first query column that holds a token in some row, the response columns any row uses).

    Queries are left-padded and responses right-padded to the longest of the iteration's B episodes;
    a micro-batch of a few needs only its own longest, and a forward pass costs per column (about a
    sixth of an iteration's columns were padding in every row of a micro-batch of 4).
    """
    used = query_mask.any(dim=0)
    first = int(used.int().argmax()) if bool(used.any()) else query_mask.shape[1]
    return first, int(response_mask.sum(dim=1).max()) if response_mask.numel() else 0


def _sequence(query_ids, query_mask, response_ids, response_mask):
    """Prompt and response side by side: (ids, attention mask, position ids), each (b, Q + A)."""
    import torch

    ids = torch.cat([query_ids, response_ids], dim=1)
    mask = torch.cat([query_mask, response_mask], dim=1)
    return ids, mask, (mask.cumsum(1) - 1).clamp(min=0)  # left padding: positions count real tokens


def response_logits(model, query_ids, query_mask, response_ids, response_mask, temperature: float = 1.0):
    """Logits (b, A, V) that predict each response token: position Q−1+t predicts token t (on a CPU each
    row alone, 0 past its response's end)."""
    import torch
    import torch.nn.functional as F

    from redline.models import one_row_at_a_time, real_tokens

    n = response_ids.shape[1]
    ids, mask, pos = _sequence(query_ids, query_mask, response_ids, response_mask)
    if one_row_at_a_time(ids):  # each episode alone at its own length (its prompt's and response's real tokens)
        rows = []
        for row, k in zip(real_tokens(ids, mask), map(int, response_mask.sum(dim=1).tolist())):
            logits = model(input_ids=row, position_ids=torch.arange(row.shape[1])[None], logits_to_keep=k + 1).logits
            rows.append(F.pad(logits[:, :-1].float(), (0, 0, 0, n - k)))
        return torch.cat(rows) / temperature
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=n + 1).logits[:, :-1]
    return logits.float() / temperature


def lm_loss(model, ids, mask):
    """Mean next-token NLL over the real tokens of right-padded texts: the pretraining mix's loss."""
    from redline.ops.rl import logprobs_from_logits, masked_mean

    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    return -masked_mean(logprobs_from_logits(logits, ids[:, 1:]), mask[:, 1:])


def trainable(model) -> dict[str, Any]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


# ----------------------------------------------------------------------------- the loop


def run_ppo(
    config: RLSettings,
    models: PPOModels,
    prompt_records: list[dict],
    reward_fn: RewardFn,
    build_prompt: PromptBuilder,
    out: str | os.PathLike,
    ptx_texts: list[str] | None = None,
    *,
    kind: str = "ppo",
    data: list[str] | None = None,
    notes: str = "",
) -> dict[str, Any]:
    """PPO(-ptx), steps 1–7 of the module docstring, for ``config.iterations`` iterations; returns the metrics.

    ``models.policy``: a causal LM; with no ``models.reference`` a peft model whose
    ``disable_adapter()`` is the reference policy. ``models.value``: a sequence-classification model
    whose score head is read at every position (None for RLOO). ``reward_fn(prompts, responses,
    records)`` scores whole responses; ``build_prompt(record)`` gives the messages the policy answers.
    ``config``: a PPOConfig, or any RLSettings (PIT's rounds). Resumes from RUN/checkpoints; saves the
    final policy (card ``kind``, its ``data`` and ``notes`` on what of it was read), RUN/value (GAE only: RLOO trains
    no value model), RUN/ppo_log.jsonl, RUN/rollouts.jsonl, RUN/ppo_curve.png and RUN/train_config.json. An iteration
    with a NaN or infinite statistic stops the run before it is checkpointed (``check_finite``).
    """
    from redline.generation.transformers_engine import TransformersEngine
    from redline.ops.rl import adaptive_kl_beta

    config.check()
    if not prompt_records:  # else a ZeroDivisionError drawing the first iteration's prompts
        raise RedlineError("run_ppo: no prompt records to train on")
    set_threads(config.threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if models.reference is None and not hasattr(models.policy, "disable_adapter"):
        raise RedlineError("a shared reference needs a LoRA policy (peft); pass a frozen reference model")
    if (config.advantage == "gae") != (models.value is not None):
        raise RedlineError(f"--advantage {config.advantage} needs {'a' if config.advantage == 'gae' else 'no'} value model")
    trackers = _trackers(config.report_to)
    learner = _prepare(config, models, trackers, out)
    accelerator, tokenizer = learner.accelerator, models.tokenizer
    main = accelerator.is_main_process
    if main:
        write_config(out / "train_config.json", config)

    # Before training starts: prompts that fit, tokenized pretraining texts, the run so far.
    prompts, n_cut = fit_prompts(tokenizer, [build_prompt(r) for r in prompt_records], config.max_prompt_length,
                                 config.truncate_prompts)
    if n_cut and main:
        print(f"redline: cut {n_cut} of {len(prompts)} prompts to {config.max_prompt_length} tokens", file=sys.stderr)
    ptx_coef, ptx_ratio = getattr(config, "ptx_coef", 0.0), getattr(config, "ptx_ratio", 0.0)
    use_ptx = bool(ptx_texts) and ptx_coef > 0 and ptx_ratio > 0
    ptx_ids = tokenizer(ptx_texts, add_special_tokens=False, truncation=True,
                        max_length=getattr(config, "ptx_max_length", 256))["input_ids"] if use_ptx else []
    state = {"iteration": 0, "episodes": 0, "beta": config.beta}
    resume = None if overwriting_worker() else last_checkpoint(out)
    if resume is not None:
        check_resume_processes(out, accelerator.num_processes, config.iterations)
        state = load_checkpoint(resume, learner)
        if main:
            print(f"redline: resuming from {resume} (iteration {state['iteration']})", file=sys.stderr)
    if main:
        _truncate_log(out / LOG, state["iteration"])
        _truncate_log(out / ROLLOUTS, state["iteration"])
    if trackers:
        # A resumed run logs again the iterations after its checkpoint that the stopped one had logged (a run stopped
        # before its first checkpoint, all of them). TensorBoard reads every event file of the folder, so those steps
        # showed twice: purge_step hides the stopped run's events from the first re-logged step on (each start of a
        # wandb run is a run of its own).
        purge = {"tensorboard": {"purge_step": state["iteration"] + 1}}
        accelerator.init_trackers("redline-ppo", config={k: v if isinstance(v, (int, float, str, bool)) else str(v)
                                                          for k, v in asdict(config).items()}, init_kwargs=purge)

    # The engine wraps the live policy object: every rollout samples from the current weights with no
    # copy or reload. A completion depends only on its prompt, its seed and the weights (seeds follow
    # the episode's place in the run), so a resumed run samples as the run it resumes (it resumes over the number of
    # processes that wrote the checkpoint only: check_resume_processes).
    engine = TransformersEngine(learner.policy, tokenizer, max_batch=max(1, config.batch_size), exact=False)
    check_processes(config, accelerator.num_processes)

    first_iteration, t_first = state["iteration"], time.perf_counter()  # this process's pace, for the time left
    for it in range(state["iteration"], config.iterations):
        t_start = time.perf_counter()
        beta = state["beta"]
        lr, train_policy = _set_learning_rates(config, learner, it)

        samples = rollout(config, engine, prompts, prompt_records, it, accelerator)  # step 1
        t_generated = time.perf_counter()
        scores = score(reward_fn, samples, accelerator.device, config.missing_eos_penalty)  # step 2
        t_scored = time.perf_counter()
        evaluation = evaluate(config, learner, samples)  # step 3
        t_evaluated = time.perf_counter()
        batch = advantages(config, samples, scores, evaluation, beta)  # step 4
        update_stats = update(config, learner, batch, it, ptx_ids, ptx_coef, ptx_ratio, train_policy,
                              tokenizer.pad_token_id)  # step 5
        t_trained = time.perf_counter()

        # Step 6: the KL controller, on the measured KL per episode.
        stats = _iteration_stats(samples, evaluation, batch, update_stats, beta)
        kl_per_episode = stats.pop("_kl_per_episode")
        stats = _mean_across(accelerator, stats)
        if accelerator.num_processes > 1:  # the spread of all the iteration's scores (a mean of each process's own
            stats["reward_std"] = accelerator.gather(scores).std().item()  # leaves out the spread between them)
        state["iteration"], state["episodes"] = it + 1, state["episodes"] + config.batch_size
        if config.adaptive_kl:
            state["beta"] = adaptive_kl_beta(beta, stats["kl"], config.kl_target, config.kl_horizon, config.batch_size)

        # Step 7: log, and checkpoint every save_every iterations.
        row = {"iteration": it + 1, "episodes": state["episodes"],
               **{k: None if v is None else round(v, 6) for k, v in stats.items()},
               "beta": beta, "lr": lr, "generate_s": round(t_generated - t_start, 3),
               "score_s": round(t_scored - t_generated, 3), "evaluate_s": round(t_evaluated - t_scored, 3),
               "train_s": round(t_trained - t_evaluated, 3)}
        episodes = [{"iteration": it + 1, "prompt": prompt, "response": text, "score": round(s, 6), "kl": round(kl, 6),
                     "tokens": n, "truncated": cut}
                    for prompt, text, s, kl, n, cut in zip(samples.prompts, samples.texts, scores.tolist(), kl_per_episode,
                                                           samples.tokens, samples.truncated)]
        if accelerator.num_processes > 1:  # every process's episodes, in the main process's file
            from accelerate.utils import gather_object

            episodes = gather_object(episodes)
        if main:
            from redline.records import append_records  # whole lines, fsynced: a kill tears at most the last

            append_records(out / ROLLOUTS, episodes)  # what the policy wrote, to read beside the numbers
            append_records(out / LOG, [row])
            print(f"redline: ppo iteration {it + 1}/{config.iterations}: reward {row['reward']:.3f} "
                  f"kl {row['kl']:.3f} length {row['response_length']:.1f}"
                  f"{'' if train_policy else ' (value warm-up)'} "
                  f"({row['generate_s']:.1f}s generate, {row['train_s']:.1f}s train"
                  f"{time_left(time.perf_counter() - t_first, it + 1 - first_iteration, config.iterations - it - 1)})",
                  file=sys.stderr)
        if trackers:
            accelerator.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=it + 1)
        check_finite(stats, it + 1, out)  # before a checkpoint could keep a diverged policy (or a NaN β)
        if (it + 1) % config.save_every == 0 or it + 1 == config.iterations:
            if main:
                save_checkpoint(out, state, learner)
            accelerator.wait_for_everyone()

    if trackers:
        accelerator.end_training()
    metrics = _final_metrics(out / LOG, state, n_cut)
    if main:
        save_final(config, learner, models.tokenizer, out, kind=kind, data=data or [getattr(config, "prompts", "")],
                   metrics=metrics, notes=notes)
        plot_log(out / LOG, out / CURVE, f"{kind}: {_name(getattr(config, 'policy', kind))}")
    accelerator.wait_for_everyone()
    return metrics


def _prepare(config: RLSettings, models: PPOModels, trackers: list[str], out: Path) -> Learner:
    """Optimizers, accelerate's wrapping, eval mode (no dropout, deviation 6), the EMA."""
    import torch
    from accelerate import Accelerator

    from redline.models import on_cpu

    accelerator = Accelerator(cpu=on_cpu(config.device), log_with=trackers or None, project_dir=str(out))
    betas = (config.adam_beta1, config.adam_beta2)
    policy_opt = torch.optim.Adam(trainable(models.policy).values(), lr=config.policy_lr(), betas=betas)
    if models.value is None:
        policy_model, policy_opt = accelerator.prepare(models.policy, policy_opt)
        value = values_model = value_opt = None
    else:
        value_opt = torch.optim.Adam(trainable(models.value).values(), lr=config.value_lr(), betas=betas)
        policy_model, values_model, policy_opt, value_opt = accelerator.prepare(
            models.policy, _token_values_class()(models.value), policy_opt, value_opt)
        value = accelerator.unwrap_model(values_model).model.eval()
    policy = accelerator.unwrap_model(policy_model).eval()
    reference = models.reference.to(accelerator.device) if models.reference is not None else None
    ema = {n: p.detach().clone() for n, p in trainable(policy).items()} if config.ema_decay is not None else None
    return Learner(accelerator=accelerator, policy=policy, policy_model=policy_model, reference=reference, value=value,
                   values_model=values_model, policy_opt=policy_opt, value_opt=value_opt, ema=ema)


def _set_learning_rates(config: RLSettings, learner: Learner, it: int) -> tuple[float, bool]:
    """Linear warm-ups: the value's from iteration 0, the policy's after the value warm-up (GAE).
    Returns (the policy's lr this iteration, whether the policy learns this iteration)."""
    warmup = max(1, config.warmup_iterations)
    held = config.value_warmup_iterations if learner.value is not None else 0
    policy_warm = min(1.0, max(0, it + 1 - held) / warmup)
    for group in learner.policy_opt.param_groups:
        group["lr"] = config.policy_lr() * policy_warm
    if learner.value_opt is not None:
        for group in learner.value_opt.param_groups:
            group["lr"] = config.value_lr() * min(1.0, (it + 1) / warmup)
    return config.policy_lr() * policy_warm, it >= held


def rollout(config: RLSettings, engine, prompts: list[list[dict]], records: list[dict], it: int, accelerator) -> Samples:
    """Step 1: this iteration's prompts for this process (each ``group_size`` times), sampled from the current policy.

    The iteration's prompts are a pure function of its number (``stream_indices``) and each episode's
    seed of its place in the iteration, so processes split the work and a resumed run samples the same.
    """
    from redline.generation import SamplingParams

    rank, world, group = accelerator.process_index, accelerator.num_processes, config.group_size()
    n_prompts = config.batch_size // group
    picked = stream_indices(len(prompts), it * n_prompts, n_prompts, config.seed)
    mine = range(rank, n_prompts, world)  # a prompt's K episodes stay on one process: RLOO's baseline needs them all
    chosen = [picked[p] for p in mine for _ in range(group)]
    first_seed = (config.seed * 1_000_003 + it) * config.batch_size
    seeds = [first_seed + p * group + k for p in mine for k in range(group)]
    batch_prompts = [prompts[i] for i in chosen]
    sampler_logprobs = config.sampler_logprobs()
    params = SamplingParams(temperature=config.temperature, top_p=config.top_p, max_new_tokens=config.max_new_tokens,
                            seed=first_seed, logprobs=sampler_logprobs)
    completions = engine.generate(batch_prompts, params, seeds=seeds, progress=False)
    pad, dev = engine.tokenizer.pad_token_id, accelerator.device
    query_ids, query_mask = _pad([engine.encode(p) for p in batch_prompts], pad, left=True)
    response_ids, response_mask = _pad([c.token_ids for c in completions], pad, left=False)
    logprobs = entropy = None
    # an engine that recorded no log-probabilities (another backend) leaves them to evaluate's forward pass
    if sampler_logprobs and all(len(c.logprobs) == len(c.token_ids) for c in completions):
        import torch  # the same lengths as the token ids: the same (B, A), 0 past each response's end

        logprobs, entropy = (_pad([getattr(c, name) for c in completions], 0.0, left=False, dtype=torch.float32)[0].to(dev)
                             for name in ("logprobs", "entropies"))
    return Samples(prompts=batch_prompts, records=[records[i] for i in chosen], texts=[c.text for c in completions],
                   tokens=[c.completion_tokens for c in completions],
                   truncated=[c.finish_reason == "length" for c in completions],
                   query_ids=query_ids.to(dev), query_mask=query_mask.to(dev),
                   response_ids=response_ids.to(dev), response_mask=response_mask.to(dev), logprobs=logprobs,
                   entropy=entropy)



def check_processes(config: RLSettings, world: int) -> None:
    """The episodes and minibatches share evenly between ``world`` processes: uneven shards give the processes
    different numbers of minibatches, and one would wait for a sync forever."""
    if (config.batch_size // config.group_size()) % world or config.minibatch_size % world:
        raise RedlineError(f"--batch-size {config.batch_size} ({config.batch_size // config.group_size()} prompts) and "
                           f"--minibatch-size {config.minibatch_size} must both share evenly between the {world} "
                           "processes")


def score(reward_fn: RewardFn, samples: Samples, device, missing_eos_penalty: float = 0.0) -> Any:
    """Step 2: the reward function's score of each whole response, (B,), less ``missing_eos_penalty`` for a
    response cut at the token cap (deviation 17)."""
    import torch

    scores = torch.tensor(reward_fn(samples.prompts, samples.texts, samples.records), dtype=torch.float32, device=device)
    if scores.shape != (len(samples.texts),):  # else an IndexError (or a broadcast) deep in the advantages
        raise RedlineError(f"the reward function gave scores of shape {tuple(scores.shape)} for {len(samples.texts)} "
                           "responses: it must return one number per response, in order")
    if missing_eos_penalty:
        scores -= missing_eos_penalty * torch.tensor(samples.truncated, dtype=torch.float32, device=device)
    return scores


def evaluate(config: RLSettings, learner: Learner, samples: Samples) -> Evaluation:
    """Step 3: log π_old, the entropy, log π_SFT and V_old of the sampled tokens, without gradients.

    log π_old and the entropy come from the sampler when it recorded them (``--rollout-logprobs``);
    otherwise from a forward pass of the policy. Micro-batches take the episodes longest response
    first, each without its all-padding columns (``trim``).
    """
    import torch
    import torch.nn.functional as F

    from redline.ops import rl

    n, width = samples.response_ids.shape
    order = samples.response_mask.sum(dim=1).argsort(descending=True, stable=True)
    own = samples.logprobs is None
    parts: dict[str, list] = {"logprobs": [], "ref_logprobs": [], "values": [], "entropy": []}
    with torch.no_grad():
        for s in range(0, n, config.micro_batch_size):
            idx = order[s : s + config.micro_batch_size]
            first, a = trim(samples.query_mask[idx], samples.response_mask[idx])
            q, qm = samples.query_ids[idx, first:], samples.query_mask[idx, first:]
            r, rm_ = samples.response_ids[idx, :a], samples.response_mask[idx, :a]
            if own:
                logits = response_logits(learner.policy, q, qm, r, rm_, config.temperature)
                parts["logprobs"].append(rl.logprobs_from_logits(logits, r))
                parts["entropy"].append(rl.entropy_from_logits(logits))
                del logits
            if learner.reference is not None:
                ref_logits = response_logits(learner.reference, q, qm, r, rm_, config.temperature)
            else:
                with learner.policy.disable_adapter():
                    ref_logits = response_logits(learner.policy, q, qm, r, rm_, config.temperature)
            parts["ref_logprobs"].append(rl.logprobs_from_logits(ref_logits, r))
            del ref_logits
            if learner.values_model is not None:
                parts["values"].append(learner.values_model(*_sequence(q, qm, r, rm_), n_last=a))

    mask = samples.response_mask.to(torch.float32)

    def whole(name):  # micro-batches back to (B, A) in the episodes' order, 0 past each response's end
        if not parts[name]:
            return None
        out = torch.empty((n, width), dtype=torch.float32, device=samples.response_ids.device)
        out[order] = torch.cat([F.pad(t.float(), (0, width - t.shape[1])) for t in parts[name]])
        return out * mask

    logprobs = whole("logprobs") if own else samples.logprobs  # the sampler's are 0 past the end already
    entropy = whole("entropy") if own else samples.entropy
    return Evaluation(logprobs=logprobs, ref_logprobs=whole("ref_logprobs"), entropy=entropy, values=whole("values"))


def advantages(config: RLSettings, samples: Samples, scores, evaluation: Evaluation, beta: float) -> Rollout:
    """Step 4: per-token rewards (−β·k1, the score on the last token); GAE, or RLOO over each prompt's K
    episodes on the episode's summed reward; whitening (RLOO's over episodes: its mean is 0 already)."""
    import torch

    from redline.ops import rl

    mask = samples.response_mask
    rewards = rl.kl_penalized_rewards(scores, evaluation.logprobs, evaluation.ref_logprobs, mask, beta)
    returns = None
    if config.advantage == "rloo":
        per_episode = rl.rloo_advantages(rewards.sum(1), config.rloo_k)  # (B,)
        if config.whiten_advantages:
            per_episode = rl.masked_whiten(per_episode, torch.ones_like(per_episode))
        adv = per_episode[:, None] * mask.to(per_episode.dtype)
    else:
        adv, returns = rl.gae(rewards, evaluation.values, mask, config.gamma, config.lam)
        if config.whiten_advantages:
            adv = rl.masked_whiten(adv, mask)
    return Rollout(query_ids=samples.query_ids, query_mask=samples.query_mask, response_ids=samples.response_ids,
                   response_mask=mask, logprobs=evaluation.logprobs, ref_logprobs=evaluation.ref_logprobs,
                   values=evaluation.values, scores=scores, rewards=rewards, advantages=adv, returns=returns)


def update(config: RLSettings, learner: Learner, rollout: Rollout, it: int, ptx_ids: list[list[int]], ptx_coef: float,
           ptx_ratio: float, train_policy: bool, pad: int) -> UpdateStats:
    """Step 5: PPO epochs over shuffled minibatches. Per minibatch: the clipped policy loss and γ_ptx
    times the LM loss on pretraining texts in one Adam step (skipped in the value warm-up), the EMA,
    then the clipped value loss in another (GAE)."""
    import torch

    from redline.ops import rl

    acc, stats = learner.accelerator, UpdateStats()
    n, world, micro = rollout.response_ids.shape[0], acc.num_processes, config.micro_batch_size
    minibatch = max(1, config.minibatch_size // world)  # per process: minibatch_size is for all of them
    n_ptx = max(1, round(ptx_ratio * minibatch)) if ptx_ids and train_policy else 0
    minibatches = math.ceil(n / minibatch)
    order = torch.Generator().manual_seed(config.seed * 1_000_003 + it)
    for epoch in range(config.ppo_epochs):
        perm = torch.randperm(n, generator=order)
        for m in range(minibatches):
            mb = perm[m * minibatch : (m + 1) * minibatch]
            chunks = [mb[s : s + micro] for s in range(0, len(mb), micro)]
            if train_policy:
                step = (it * config.ppo_epochs + epoch) * minibatches + m
                texts = [ptx_ids[i] for i in stream_indices(len(ptx_ids), step * n_ptx, n_ptx,
                                                            config.seed + 7919 * (acc.process_index + 1))] if n_ptx else []
                ptx_chunks = [texts[s : s + micro] for s in range(0, len(texts), micro)]
                backwards = len(chunks) + len(ptx_chunks)
                for k, idx in enumerate(chunks):
                    part = rollout.select(idx)
                    with _sync_on_last(acc, learner.policy_model, k == backwards - 1):
                        logits = response_logits(learner.policy_model, part.query_ids, part.query_mask,
                                                 part.response_ids, part.response_mask, config.temperature)
                        new_logprobs = rl.logprobs_from_logits(logits, part.response_ids)
                        loss, clipfrac, approx_kl = rl.clipped_policy_loss(new_logprobs, part.logprobs, part.advantages,
                                                                          part.response_mask, config.clip_range)
                        acc.backward(loss * len(idx) / len(mb))
                    stats.add_policy(loss.item(), clipfrac.item(), approx_kl.item(), len(idx))
                # the policy loss's gradient alone, kept to split the step's gradient into its two parts
                # (LoRA only: a copy of every trainable weight's gradient is small there; one process only:
                # under DDP this copy is unsynced and the total synced, so their difference is no part)
                split = bool(ptx_chunks) and config.lora and acc.num_processes == 1
                policy_grads = _grads(learner.policy) if split else None
                for k, rows in enumerate(ptx_chunks):
                    ids, mask = (t.to(acc.device) for t in _pad(rows, pad, left=False))
                    with _sync_on_last(acc, learner.policy_model, len(chunks) + k == backwards - 1):
                        ptx = lm_loss(learner.policy_model, ids, mask)
                        acc.backward(ptx_coef * ptx * len(rows) / len(texts))
                    stats.add_ptx(ptx.item(), len(rows))
                parts = _gradient_parts(policy_grads, _grads(learner.policy)) if policy_grads is not None else None
                stats.add_grad(_optimizer_step(acc, learner.policy_opt, learner.policy, config.max_grad_norm), parts)
                if learner.ema is not None:
                    with torch.no_grad():
                        for name, p in trainable(learner.policy).items():
                            learner.ema[name].mul_(config.ema_decay).add_(p.detach(), alpha=1 - config.ema_decay)
            if learner.values_model is None:
                continue
            for k, idx in enumerate(chunks):
                part = rollout.select(idx)
                with _sync_on_last(acc, learner.values_model, k == len(chunks) - 1):
                    new_values = learner.values_model(*_sequence(part.query_ids, part.query_mask, part.response_ids,
                                                                 part.response_mask), n_last=part.response_ids.shape[1])
                    vloss, vclip = rl.clipped_value_loss(new_values, part.values, part.returns, part.response_mask,
                                                         config.value_clip)
                    acc.backward(vloss * len(idx) / len(mb))
                stats.add_value(vloss.item(), vclip.item(), len(idx))
            _optimizer_step(acc, learner.value_opt, learner.value, config.max_grad_norm)
    return stats


def _iteration_stats(samples: Samples, evaluation: Evaluation, batch: Rollout, update_stats: UpdateStats,
                     beta: float) -> dict[str, Any]:
    """The iteration's log row (before the step timings), and under ``_kl_per_episode`` each episode's KL."""
    from redline.ops import rl

    mask = samples.response_mask
    kl_per_episode = (rl.kl_k1(evaluation.logprobs, evaluation.ref_logprobs) * mask).sum(1)
    scores = batch.scores
    return {
        "reward": scores.mean().item(),
        "reward_std": scores.std().item() if len(scores) > 1 else 0.0,
        "kl": kl_per_episode.mean().item(),
        "kl_k3": (rl.kl_k3(evaluation.logprobs, evaluation.ref_logprobs) * mask).sum(1).mean().item(),
        "non_score_reward": (-beta * kl_per_episode).mean().item(),
        "entropy": rl.masked_mean(evaluation.entropy, mask).item(),
        "response_length": mask.sum(1).float().mean().item(),
        "truncated": sum(samples.truncated) / len(samples.truncated),
        "value_mean": rl.masked_mean(batch.values, mask).item() if batch.values is not None else None,
        "return_mean": rl.masked_mean(batch.returns, mask).item() if batch.returns is not None else None,
        **update_stats.means(),
        "_kl_per_episode": kl_per_episode.tolist(),
    }


def plot_log(log: Path, path: Path, title: str) -> Path:
    """The iterations of a run at a glance: score, KL to the reference, response length and the policy
    step's gradient norm (with PPO-ptx, its policy-loss and LM-loss parts beside the total)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    x = [row["iteration"] for row in rows]

    def series(key):  # None (not measured, or a log written before the key existed) is a gap
        return [float("nan") if row.get(key) is None else row[key] for row in rows]

    panels = (("score (mean)", ("reward",)), ("KL to reference (nats/episode)", ("kl",)),
              ("response tokens", ("response_length",)),
              ("policy step's gradient norm", ("grad_norm", "policy_grad_norm", "ptx_grad_norm")))
    names = {"grad_norm": "total", "policy_grad_norm": "policy loss", "ptx_grad_norm": "γ_ptx × LM loss"}
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2), sharex=True)
    for ax, (label, keys) in zip(axes, panels):
        drawn = [key for key in keys if any(row.get(key) is not None for row in rows)]
        for key in drawn:
            ax.plot(x, series(key), marker="o", markersize=3, label=names.get(key, key))
        if len(drawn) > 1:
            ax.legend(fontsize=8)
        ax.set_xlabel("iteration")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _optimizer_step(accelerator, optimizer, model, max_grad_norm: float) -> float:
    """Clip, step and clear; returns the gradient's norm before clipping."""
    params = list(trainable(model).values())
    norm = accelerator.clip_grad_norm_(params, max_grad_norm) if max_grad_norm > 0 else None
    norm = float(norm) if norm is not None else _norm([p.grad for p in params if p.grad is not None])
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


def _grads(model) -> list:
    """A copy of each trainable weight's gradient (zeros where none was written yet)."""
    import torch

    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in trainable(model).values()]


def _norm(tensors) -> float:
    import torch

    return float(torch.linalg.vector_norm(torch.stack([t.float().norm() for t in tensors]))) if tensors else 0.0


def _gradient_parts(first: list, total: list) -> tuple[float, float, float]:
    """Norms of the first part and of the rest (total − first) of a gradient, and the cosine between them."""
    rest = [t - f for f, t in zip(first, total)]
    a, b = _norm(first), _norm(rest)
    dot = sum(float((f.float() * r.float()).sum()) for f, r in zip(first, rest))
    return a, b, dot / (a * b) if a > 0 and b > 0 else 0.0


def _sync_on_last(accelerator, model, last: bool):
    """Gradients of a minibatch accumulate over several backward passes; DDP syncs on the last only."""
    return contextlib.nullcontext() if last else accelerator.no_sync(model)


def time_left(seconds: float, done: int, left: int) -> str:
    """``; ~N min left`` after an iteration's line: ``left`` more iterations at the mean pace of the ``done`` ones
    that took ``seconds`` (those of this process: a resumed run's earlier ones are not timed); nothing when none is
    left. An iteration is one line and no bar spans the run, so the line says how long the rest will take."""
    if left <= 0 or done <= 0:
        return ""
    rest = round(seconds / done * left)
    if rest < 60:
        return f"; ~{rest} s left"
    minutes = round(rest / 60)
    return f"; ~{minutes} min left" if minutes < 60 else f"; ~{minutes // 60} h {minutes % 60:02d} min left"


def check_finite(stats: dict[str, float | None], iteration: int, out: Path) -> None:
    """Stop a run whose iteration measured a NaN or infinite statistic, before it is checkpointed: a reward model
    that scored NaN, or a policy whose update diverged, gives NaN advantages, weights and β from then on, and every
    later iteration would be spent on them (and a resume would read the NaN β back). ``stats`` are the means over
    every process, so each process stops at the same iteration. The log row and the rollouts of the iteration are
    written (null where not finite), to read what went wrong; the last checkpoint is the one a rerun resumes from."""
    bad = [k for k, v in stats.items() if v is not None and not math.isfinite(v)]
    if not bad:
        return
    last = last_checkpoint(out)
    cause = ("the reward model (--reward) or the scorer gave a non-finite score (a reward model that overflows in "
             "bfloat16, or one that diverged in training)" if "reward" in bad else
             "the policy's update diverged (a lower --learning-rate may help)")
    raise RedlineError(f"{out}: iteration {iteration}'s {', '.join(bad)} {'was' if len(bad) == 1 else 'were'} NaN or "
                       f"infinite: {cause}. It was not checkpointed (the last checkpoint: {last or 'none'}); a resume "
                       f"is exact, so a rerun with the same settings meets it again. Its log row and rollouts are in "
                       f"{out / LOG} and {out / ROLLOUTS}")


def _mean_across(accelerator, stats: dict[str, float | None]) -> dict[str, float | None]:
    """The mean of each statistic over processes (a no-op on one); None stays None. Each process holds as many
    episodes, so a mean of means is the mean; ``entropy``, a mean over tokens, weighs each process's tokens by
    its share of the episodes, not of the tokens; ``reward_std`` is taken over the gathered scores instead."""
    if accelerator.num_processes == 1:
        return stats
    import torch

    keys = sorted(k for k, v in stats.items() if v is not None)
    means = accelerator.reduce(torch.tensor([stats[k] for k in keys], device=accelerator.device), reduction="mean")
    return {**stats, **dict(zip(keys, means.tolist()))}


def _trackers(report_to: str) -> list[str]:
    """accelerate trackers for --report-to (``RLSettings.check`` made sure the package is there)."""
    return [] if report_to == "none" else [report_to]


def _final_metrics(log: Path, state: dict, n_cut: int) -> dict[str, Any]:
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    metrics: dict[str, Any] = {"iterations": state["iteration"], "episodes": state["episodes"], "beta": state["beta"],
                               "prompts_truncated": n_cut}
    if rows:
        for key in ("reward", "kl", "response_length"):
            metrics[f"first_{key}"], metrics[f"final_{key}"] = rows[0][key], rows[-1][key]
    return metrics


# ----------------------------------------------------------------------------- checkpoints and saving


def last_checkpoint(out: Path) -> Path | None:
    """The last complete checkpoint (one with its state.json), or None."""
    folder = Path(out) / CHECKPOINTS
    done = sorted(p for p in folder.glob("iter-*") if (p / "state.json").is_file()) if folder.is_dir() else []
    return done[-1] if done else None


def save_checkpoint(out: Path, state: dict, learner: Learner) -> Path:
    """Trainable weights (safetensors), optimizer and RNG states, β and the iteration; the older ones pruned."""
    import torch
    from safetensors.torch import save_file

    folder = Path(out) / CHECKPOINTS
    final = folder / f"iter-{state['iteration']:06d}"
    tmp = folder / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({n: p.detach().cpu().contiguous() for n, p in trainable(learner.policy).items()}, str(tmp / "policy.safetensors"))
    optimizers = {"policy": learner.policy_opt.state_dict(), "torch_rng": torch.get_rng_state()}
    if learner.value is not None:
        save_file({n: p.detach().cpu().contiguous() for n, p in trainable(learner.value).items()}, str(tmp / "value.safetensors"))
        optimizers["value"] = learner.value_opt.state_dict()
    if learner.ema is not None:
        save_file({n: t.cpu().contiguous() for n, t in learner.ema.items()}, str(tmp / "ema.safetensors"))
    torch.save(optimizers, tmp / "optimizer.pt")
    # written last: marks it complete; with the processes that wrote it, which a resume must match
    saved_state = {**state, "processes": learner.accelerator.num_processes}
    (tmp / "state.json").write_text(json.dumps(saved_state, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in sorted(folder.glob("iter-*"))[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def check_resume_processes(out: str | os.PathLike, world: int, iterations: int | None = None) -> None:
    """Refuse to resume a run's last checkpoint over another number of processes than wrote it: each process whitens
    its own episodes (deviation 9), steps on its share of each minibatch and draws its own pretraining texts (at least
    one), so the run would go on with other maths than it began with. A checkpoint that does not say (an older
    redline's) is resumed as before, and so is one at ``iterations``: nothing is left to train, the run only saves
    its policy (a copy of a run's iteration-N checkpoint finished with ``--iterations N``, as
    scripts/instructgpt_ppo_aug.sh judges a run made over several processes). Refused too: a checkpoint past
    ``iterations`` (the run was saved as it stood there, not at ``iterations``, and its card said so without a word)."""
    resume = None if overwriting_worker() else last_checkpoint(Path(out))
    if resume is None:
        return
    state = read_json_object(resume / "state.json", "the checkpoint's state")
    at = state.get("iteration")
    if iterations is not None and isinstance(at, int) and at > iterations:
        raise RedlineError(f"{out} is at iteration {at}, past --iterations {iterations}: a run keeps only its last "
                           f"checkpoints, so its policy at {iterations} is not there to save. Give --iterations {at} or more "
                           "to go on, or pass --overwrite to start over")
    wrote = state.get("processes")
    if iterations is not None and at == iterations:  # nothing to train: no maths to go on with
        return
    if wrote is not None and wrote != world:
        raise RedlineError(f"{resume} was written by a run on {wrote} process{'es' if wrote != 1 else ''}; this one has "
                           f"{world}: advantages are whitened, minibatches split and pretraining texts drawn per process, "
                           f"so it would not go on as it ran. Resume it on {wrote}, or pass --overwrite to start over")


def load_checkpoint(path: Path, learner: Learner) -> dict:
    """Put a checkpoint back into the live models and optimizers; returns its state (iteration, β ...)."""
    import torch
    from safetensors.torch import load_file

    models = [(learner.policy, "policy")] + ([(learner.value, "value")] if learner.value is not None else [])
    for model, name in models:
        if not (path / f"{name}.safetensors").is_file():
            raise RedlineError(f"{path} has no {name} weights: it was written by a run with another --advantage")
        saved = load_file(str(path / f"{name}.safetensors"))
        params = trainable(model)
        if set(saved) != set(params):
            raise RedlineError(f"{path}: the {name} checkpoint does not match this model (different LoRA settings?)")
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(saved[n])
    if learner.ema is not None:
        saved = load_file(str(path / "ema.safetensors")) if (path / "ema.safetensors").exists() else None
        for n in learner.ema:
            learner.ema[n].copy_(saved[n] if saved else trainable(learner.policy)[n].detach())
    states = torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu")
    learner.policy_opt.load_state_dict(states["policy"])
    if learner.value_opt is not None:
        learner.value_opt.load_state_dict(states["value"])
    torch.set_rng_state(states["torch_rng"])
    return read_json_object(path / "state.json", "the checkpoint's state")


def _truncate_log(log: Path, iteration: int) -> None:
    """Drop log rows past the checkpoint being resumed from (those iterations run again), and a last
    line a kill tore (``read_jsonl_prefix``)."""
    from redline.records import json_text, read_jsonl_prefix, write_text_atomic

    if not log.exists():
        return
    rows = [row for row in read_jsonl_prefix(log) if row["iteration"] <= iteration]
    # as append_records writes them (UTF-8, not \u escapes; NaN as null, as an older redline's log did not): the rows
    # kept are the bytes an uninterrupted run holds
    text = "".join(json_text(row, ensure_ascii=False) + "\n" for row in rows)
    write_text_atomic(log, text)  # a kill here leaves the rows kept whole


def save_final(config: RLSettings, learner: Learner, tokenizer, out: Path, *, kind: str, data: list[str],
               metrics: dict[str, Any], notes: str = "") -> None:
    """The policy as a redline run (loadable by ``load_causal_lm`` and the engine) and RUN/value (GAE).

    The PPO adapter sits on the SFT weights. An SFT run that is a full model is the adapter's base;
    an SFT run that is itself a LoRA adapter was merged at load, so the policy is merged and saved as
    a full model whose base is the SFT run's base.
    """
    import torch

    from redline.models import ModelCard, command_line, run_info, save_model

    policy = learner.policy
    if learner.ema is not None:
        with torch.no_grad():
            for n, p in trainable(policy).items():
                p.copy_(learner.ema[n])
    start = getattr(config, "policy", "")
    info = run_info(start) if os.path.isdir(start) else {}
    base = _name(start)
    if info.get("adapter"):
        base = info["base_model"]
        policy = policy.merge_and_unload() if hasattr(policy, "merge_and_unload") else policy
    notes = (f"Trained with `redline train {kind if kind == 'pit' else 'ppo'}` ({method(config, kind)}); the log is "
             f"ppo_log.jsonl.{' ' + notes if notes else ''}")
    card = ModelCard(kind=kind, base_model=base, data=data, command=command_line(), metrics=metrics, notes=notes)
    save_model(policy, tokenizer, out, card, hub_repo=config.push_to_hub)  # the card's snippet names where it goes
    if learner.value is not None:
        value_card = ModelCard(kind="value", base_model=_name(getattr(config, "reward", "")), data=data,
                               command=command_line())
        save_model(learner.value, tokenizer, out / "value", value_card)


def method(config: Any, kind: str) -> str:
    """What the card says trained the run: PIT's rounds are no PPO-ptx (the gap reward, no mix), nor is γ_ptx 0."""
    estimator = "RLOO with the PPO clip" if config.advantage == "rloo" else "PPO"
    if kind == "pit":
        return f"PIT's RL on the reward gap, Wang et al. 2023; {estimator}"
    mixed = bool(getattr(config, "ptx_data", None)) and getattr(config, "ptx_coef", 0) > 0 and getattr(config, "ptx_ratio", 0) > 0
    if config.advantage == "rloo":
        return estimator + (" and the pretraining mix of PPO-ptx" if mixed else "")
    return ("PPO-ptx" if mixed else "PPO") + ", Ouyang et al. 2022"


def _name(model: str) -> str:
    """A model name that still works from another directory: folders become absolute paths."""
    return str(Path(model).resolve()) if os.path.isdir(model) else model


# ----------------------------------------------------------------------------- the command


def finished_ppo(config: PPOConfig, out: str | os.PathLike) -> dict[str, Any] | None:
    """A finished run (its card written at ``--iterations``) rerun with its settings: ``finished_run`` says so,
    publishes it under ``--push-to-hub`` and returns the card's metrics; None otherwise (more ``--iterations`` go on).
    Without it the rerun resumed from the last checkpoint, trained nothing and saved the policy again: another
    adapter_config.json (PEFT writes the target modules in hash order) and tokenizer.json, so the folder's digest
    changed and every run that read the policy (generate, evaluate, train pit) refused to resume."""
    from redline.models import RUN_INFO, run_info
    from redline.train.sft import finished_run

    out = Path(out)
    if (overwriting_worker() or not (out / RUN_INFO).is_file()
            or run_info(out).get("metrics", {}).get("iterations") != config.iterations):
        return None
    resume = last_checkpoint(out)  # gone on past its card (more --iterations, then stopped): not finished at N, refused
    if resume is not None and read_json_object(resume / "state.json", "the checkpoint's state").get("iteration") != config.iterations:
        return None
    return finished_run(out, config.push_to_hub, config)


def train_ppo(config: PPOConfig, out: str | os.PathLike) -> dict[str, Any]:
    """`redline train ppo`: InstructGPT's PPO-ptx, with the reward model's score as the reward.

    Every input is checked before a model loads: the config (RLOO's K among it), the reward model's
    kind, the policy's kind, the prompts (records and lengths) and the pretraining texts.
    """
    from accelerate import PartialState

    from redline.models import check_language_model, check_reward_model, load_tokenizer, on_cpu
    from redline.config import check_required
    from redline.records import read_prompt_records

    check_required(config)
    config.check()
    check_reward_model(config.reward)
    check_language_model(config.policy, POLICY_ROLE)
    tokenizer = load_tokenizer(config.policy)
    records = read_prompt_records(config.prompts, limit=config.limit, skip_invalid=config.skip_invalid)
    fit_prompts(tokenizer, [as_chat(r["prompt"]) for r in records], config.max_prompt_length, config.truncate_prompts)
    ptx_texts = read_ptx_texts(config.ptx_data, tokenizer) if config.ptx_data else None
    oracle = oracle_reward(records) if config.score == "oracle" else None

    finished = finished_ppo(config, out)
    if finished is not None:
        return finished
    # accelerate decides the device, so that each process of `accelerate launch` gets its own
    state = PartialState(cpu=on_cpu(config.device))
    check_processes(config, state.num_processes)  # before the models load, not after
    check_resume_processes(out, state.num_processes, config.iterations)
    device = str(state.device)
    models = load_ppo_models(config, device)
    if oracle is None:
        scorer, adapter_off = models.scorer()
        # the chat as the reward model was trained to read it: its own template, which may not be the policy's
        reward_fn = instructgpt_reward(scorer, models.scorer_tokenizer, config.reward_max_length, adapter_off=adapter_off)
    else:
        reward_fn = oracle
    data = [config.prompts] + ([config.ptx_data] if config.ptx_data else [])
    metrics = run_ppo(config, models, records, reward_fn, lambda record: as_chat(record["prompt"]), out, ptx_texts,
                      kind="ppo", data=data)
    if state.is_main_process:
        publish(Path(out), config.push_to_hub)
    return metrics
