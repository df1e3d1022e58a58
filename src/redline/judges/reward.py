"""The reward-model judge: score each response alone, the higher score wins.

Any redline reward run or Hugging Face sequence-classification model with one output
(``models.load_reward_model``). A response is scored exactly as ``redline train reward`` trained
it (``models.chat_text`` and ``models.score_texts``: the prompt and the response through the chat
template, the run's ``reward_bias`` added). A model whose tokenizer has no chat template (an encoder
reward model of the hub, DeBERTa's ``OpenAssistant/reward-model-deberta-v3-large-v2``) reads the
(prompt, response) as its model card says: a text pair with the tokenizer's own special tokens
(``[CLS] prompt [SEP] response [SEP]``; its head reads the first token, so it is never cut away).
Scores within ``margin`` of each other are a tie; a score that is not a number (NaN, infinite: a model that
overflowed, in bf16 say) makes the verdict invalid, never a win of either side. Scoring is
batched, sorted by length so a batch pads little, and every distinct (prompt, response) is scored
once per judge, so an original compared with five revisions is not scored five times. Texts
longer than ``max_length`` tokens lose their start, not their end: the reward is read at the end (a text pair:
the start of its longer side, ``score_pairs``).
``max_length`` is by default the length a local redline run folder trained at (its ``train_config.json``;
a model read beyond it scores text it never learnt from), 2048 for any other model; ``?max_length=N``
sets it, and a length set so is in the judge's name (``reward:RUN?max_length=N``), so a judgments file
made at one length is never resumed at another. The default length is not in the name: a run resumed
across the change of default (tenth session) judged its earlier items at 2048.
"""

from __future__ import annotations

import math
from typing import Sequence

from redline import RedlineError
from redline.judges import Item, Verdict
from redline.records import Prompt, prompt_key


def score_pairs(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int, max_length: int) -> list[float]:
    """Rewards of (prompt text, response) pairs for a model without a chat template: each a text pair with the
    tokenizer's special tokens, as such models are trained and documented; too long a pair is cut token by token at
    the start of whichever side is the longer (``longest_first``: a long response to a short prompt loses its own
    start, the prompt stays whole), and the special tokens stay."""
    import torch

    device = next(model.parameters()).device
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    scores = [0.0] * len(pairs)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = tokenizer([pairs[i][0] for i in idx], [pairs[i][1] for i in idx], return_tensors="pt",
                              padding=True, truncation="longest_first", max_length=max_length).to(device)
            for i, v in zip(idx, model(**batch).logits.squeeze(-1).float().tolist()):
                scores[i] = v
    return scores


def trained_length(model: str, default: int = 2048) -> int:
    """The ``max_length`` a local redline run folder (or one shipped from a run, ``scripts/ship_model.py``)
    trained at; ``default`` for anything else, a hub id included."""
    from redline.models import resolve, run_config

    length = run_config(resolve(model)).get("max_length")
    return length if isinstance(length, int) and not isinstance(length, bool) and length > 0 else default


class RewardJudge:
    """``reward:RUN_OR_MODEL``: the response with the higher reward wins; within ``margin``, a tie."""

    both_orders = False  # scores do not depend on the order; the caller may shuffle, it costs nothing

    def __init__(self, model: str, margin: float = 0.0, batch_size: int = 16, device: str = "auto",
                 dtype: str = "float32", max_length: int | None = None):
        if not 0 <= margin < float("inf"):  # nan too: no gap is within it, so there was never a tie
            raise RedlineError(f"reward judge margin must be a number >= 0, got {margin}")
        if batch_size < 1:
            raise RedlineError(f"reward judge batch_size must be >= 1, got {batch_size}")
        if max_length is not None and max_length < 1:
            raise RedlineError(f"reward judge max_length must be >= 1, got {max_length}")
        self.model_name, self.margin, self.batch_size = model, margin, batch_size
        self.device, self.dtype, self.max_length = device, dtype, max_length
        # a margin, a narrower dtype or a length given changes verdicts, so they are in the name a judgments file
        # keeps (and a rerun compares); the defaults leave the name as it always was
        settings = ([f"margin={margin:g}"] * bool(margin) + [f"dtype={dtype}"] * (dtype != "float32")
                    + [f"max_length={max_length}"] * (max_length is not None))
        self.name = f"reward:{model}" + (f"?{'&'.join(settings)}" if settings else "")
        self._model = self._tokenizer = None
        self._scores: dict[tuple[str, str], float] = {}

    def check(self) -> None:
        """Load the model now, so a bad path fails before any judging."""
        if self._model is None:
            from redline.models import REWARD, check_reward_model, load_reward_model, load_tokenizer, run_kind

            # A gap-reward or language-model run would score the wrong input without any error.
            kind = run_kind(self.model_name)
            if kind is not None and kind != REWARD:
                raise RedlineError(f"{self.model_name} is a {kind} model, not a reward model: "
                                   "the reward judge needs a run of `redline train reward` or a hub reward model")
            if kind is None:  # a causal LM (embedded, a hub chat model) would load under a fresh, random head
                check_reward_model(self.model_name, "the reward judge's model (reward:RUN)")
            self._model = load_reward_model(self.model_name, dtype=self.dtype, device=self.device)
            self._tokenizer = load_tokenizer(self.model_name)
            self._tokenizer.padding_side = "right"
            self._tokenizer.truncation_side = "left"  # the reward is read at the end: keep the response
            if self.max_length is None:
                self.max_length = trained_length(self.model_name)

    def score(self, pairs: Sequence[tuple[Prompt, str]]) -> list[float]:
        """The reward of each (prompt, response); each distinct one is computed once."""
        from redline.models import chat_text, score_texts

        self.check()
        todo = {}
        for prompt, response in pairs:
            key = (prompt_key(prompt), response)
            if key not in self._scores and key not in todo:
                todo[key] = (prompt, response)
        keys = list(todo)
        if getattr(self._tokenizer, "chat_template", None):
            texts = [chat_text(self._tokenizer, *todo[k]) for k in keys]
            values = score_texts(self._model, self._tokenizer, texts, self.batch_size, self.max_length)
        else:
            # a chat's earlier turns stay as context, each message a paragraph
            texts = [(p if isinstance(p, str) else "\n\n".join(m["content"] for m in p), r) for p, r in map(todo.get, keys)]
            values = score_pairs(self._model, self._tokenizer, texts, self.batch_size, self.max_length)
        self._scores.update(zip(keys, values))
        return [self._scores[(prompt_key(p), r)] for p, r in pairs]

    def judge_many(self, items: Sequence[Item]) -> list[Verdict]:
        scores = self.score([(it.prompt, it.a) for it in items] + [(it.prompt, it.b) for it in items])
        verdicts = []
        for i in range(len(items)):
            a, b = scores[i], scores[len(items) + i]
            if not (math.isfinite(a) and math.isfinite(b)):  # a model overflowing (bf16): no evidence either way
                winner = "invalid"
            else:
                winner = "tie" if abs(a - b) <= self.margin else ("a" if a > b else "b")
            verdicts.append(Verdict(winner, raw=f"{a:.6g} vs {b:.6g}", detail={"scores": [a, b]}))
        return verdicts

    def close(self) -> None:
        self._model = self._tokenizer = None
