"""Train a reward model on K-way rankings, the InstructGPT way.

Ouyang et al. 2022, "Training language models to follow instructions with human feedback",
arXiv 2203.02155, §3.5: labelers rank K = 4…9 responses to a prompt. All C(K,2) comparisons of
one prompt form ONE batch element, each completion gets one forward pass, and the element's loss
is −1/C(K,2) · Σ log σ(r(x, y_w) − r(x, y_l)); ties are dropped (and the mean is then over the
comparisons kept, not C(K,2)). Shuffling the comparisons as
independent pairs instead made the model overfit within an epoch (``--pairs`` does that, so the
claim can be checked). One epoch, lr 9e-6, cosine decay to 10%. Before RL a bias is added so that
labelers' demonstrations score a mean of 0 (``--normalize-with demonstrations.jsonl``).

    redline train reward --data rankings.jsonl --model embedded --out runs/rm

Steps:
  1. read rankings (or preferences, each pair its own K = 2 group: several pairs of one prompt are
     not merged into one ranking, as pairs need not agree on one order) and split off held-out
     prompts (``--eval-split``); a held-out prompt that the start model (a reward run as ``--model``)
     trained on is refused, as one in both ``--data`` and ``--eval-data`` is;
  2. format each completion as the chat (prompt, response) and tokenise it once; a chat longer than
     ``--max-length`` loses its prompt's start, never the response's end (the score is read there),
     one whose response alone does not fit is dropped, and both are counted and reported;
  3. train with ``ranking_loss`` (ops/losses.py) in a ``transformers.Trainer`` whose batch is a
     list of prompts, each with all its completions;
  4. measure held-out accuracy honestly (``comparison_accuracy``): on decisive comparisons (labelled
     ties, and held-out rankings all tied, counted, never errors), and on simulated data against the
     oracle, each beside the labels' own accuracy on exactly the same pairs — the ceiling a reward model
     trained on them can reach (a held-out response scored NaN or infinity is refused: NaN orders nothing, and
     each of its comparisons counted wrong read as a model right on none);
  5. with ``--normalize-with``, set ``config.reward_bias`` so demonstrations score 0 on average (a
     demonstration scored NaN or infinity is refused: the bias would be NaN, and so every score after);
  6. save a plain sequence-classification model (LoRA merged), loadable by
     ``AutoModelForSequenceClassification``, with its card and training curve.

Deviations from the paper:
  1. The bias of step 5 is stored as ``config.reward_bias`` and added by redline's scoring
     (``models.score_texts``): a Llama classification head has no bias term to fold it into. It does not
     change which response ranks higher, so any other loader still ranks correctly.
  2. LoRA by default (the head trains fully); ``--no-lora`` trains all weights. The default lr is
     1e-3 for LoRA (deviation 4); 9e-6 (the paper's) for full training.
  3. The scalar head reads the last token of the chat-formatted (prompt, response), as
     transformers' sequence-classification models do; the paper took the final token too.
  4. The default LoRA learning rate is 1e-3: at 1e-4 (and 3e-4) a LoRA reward model on the
     embedded model learnt almost nothing of instruction compliance in 60 steps, at 1e-3 it
     reached 77.9% on oracle-decisive pairs (world v2's audit; benchmarks/learning_checks.py).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import math
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redline import RedlineError
from redline.config import check_required, check_unless, write_config
from redline.models import REWARD, chat_text, score_texts
from redline.records import Preference, Ranking, Record, RecordError, iter_raw, prompt_key, prompt_text, read_records
from redline.train.sft import (
    SFTSettings, base_dtype, check_report_to, check_scheduler, finished_run, float32_adapters, run_trainer, save_run,
    training_device, trainer_arguments,
)


@dataclass
class RewardConfig(SFTSettings):
    """`redline train reward`: the data, then the training knobs (see SFTSettings)."""

    learning_rate: float | None = field(default=None, metadata={"min": 0, "help": "peak lr (default: 1e-3 LoRA, 9e-6 full)"})
    data: str = field(default="", metadata={"required": True, "help": "ranking or preference records"})
    eval_data: str | None = field(default=None, metadata={"help": "held-out rankings (default: split from --data)"})
    eval_split: float = field(default=0.1, metadata={"min": 0, "max": 1, "unless": "eval_data",
                                                     "help": "share of prompts held out when --eval-data is not given"})
    normalize_with: str | None = field(default=None, metadata={"help": "demonstrations whose mean reward is set to 0"})
    pairs: bool = field(default=False, metadata={"help": "train on comparisons shuffled as independent pairs (the ablation)"})
    limit: int | None = field(default=None, metadata={"min": 1, "help": "train on the first N records"})
    skip_invalid: bool = field(default=False, metadata={"help": "skip bad records instead of stopping"})
    max_length: int = field(default=512, metadata={"min": 1, "help": "tokens per (prompt, response); longer ones are cut"})
    batch_size: int = field(default=4, metadata={"min": 1, "help": "prompts per forward pass, per device, each with all its "
                                                             "completions (--pairs: comparisons); x --grad-accum per step"})
    grad_accum: int = field(default=1, metadata={"min": 1, "help": "forward passes accumulated per optimiser step"})
    lr_scheduler: str = field(default="cosine_with_min_lr", metadata={"help": "transformers scheduler name"})

    def lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else (1e-3 if self.lora else 9e-6)


def read_comparisons(path: str, *, limit=None, skip_invalid=False) -> list[Ranking]:
    """Rankings from a file of rankings or of preferences (a preference is a ranking with K = 2)."""
    return read_comparisons_and_all_tied(path, limit=limit, skip_invalid=skip_invalid)[0]


def read_comparisons_and_all_tied(path: str, *, limit=None, skip_invalid=False) -> tuple[list[Ranking], list[Ranking]]:
    """``read_comparisons``' rankings, and beside them those it skips for holding no comparison: rankings whose
    responses are all tied, and preferences whose chosen is identical to its rejected (two equal texts, as a
    ranking of ranks [0, 0]). The held-out report counts them (``comparison_accuracy``)."""
    kind = "ranking"
    for _, obj in iter_raw(path):  # the first record that says which it is: a bad first line does not decide
        if isinstance(obj, dict) and ("chosen" in obj or "responses" in obj):
            kind = "preference" if "chosen" in obj else "ranking"
            break
    records: list[Record] = read_records(path, kind, limit=limit, skip_invalid=skip_invalid)
    if kind == "ranking":
        rankings = [r for r in records if isinstance(r, Ranking) and len(set(r.ranks)) > 1]
        tied = [r for r in records if isinstance(r, Ranking) and len(set(r.ranks)) == 1]
        if tied:
            print(f"redline: {path}: skipped {len(tied)} of {len(records)} prompts whose responses are "
                  "all tied (no comparison to learn from)", file=sys.stderr)
        return rankings, tied
    rankings, tied = [], []
    for r in records:
        assert isinstance(r, Preference)
        ranks = [0, 0] if r.identical else [0, 1]  # identical: no comparison to learn from
        (tied if r.identical else rankings).append(
            Ranking(prompt=r.prompt, responses=[r.chosen, r.rejected], ranks=ranks, id=r.id, meta=r.meta))
    if tied:
        print(f"redline: {path}: {len(tied)} preference(s) with chosen identical to rejected hold no comparison; "
              "the reward model skips them", file=sys.stderr)
    return rankings, tied


def tied_beside(tied: list[Ranking], held: list[Ranking]) -> tuple[list[Ranking], list[Ranking]]:
    """All-tied rankings split as ``split_by_prompt`` split the others: the split is of prompts with a comparison
    (as it always was), and an all-tied ranking goes with its prompt. Returns (trained side, held-out side)."""
    held_prompts = {prompt_key(r.prompt) for r in held}
    return ([r for r in tied if prompt_key(r.prompt) not in held_prompts],
            [r for r in tied if prompt_key(r.prompt) in held_prompts])


def split_by_prompt(rankings: list[Ranking], share: float, seed: int, source: str = "the data"
                    ) -> tuple[list[Ranking], list[Ranking]]:
    """Hold out a share of prompts (never a prompt in both parts): the share rounded, and at least one prompt
    where the share is not 0 and two or more prompts allow it (a share of 0.1 of four prompts held out none,
    and the held-out accuracy asked for was n/a); as much, at least one prompt is left to train on where the share
    is under 1 (0.8 of two prompts held out both, and the trainers then said there was no comparison in
    ``source``). A share that holds out every prompt is refused, naming ``source``."""
    prompts = sorted({prompt_key(r.prompt) for r in rankings})
    random.Random(seed).shuffle(prompts)
    count = round(share * len(prompts))
    if count == 0 and share > 0 and len(prompts) >= 2:
        count = 1
    if count >= len(prompts) and share < 1 and len(prompts) >= 2:
        count = len(prompts) - 1
    if prompts and count >= len(prompts):
        raise RedlineError(f"{source}: --eval-split {share:g} holds out every one of its {len(prompts)} "
                           f"{'prompt' if len(prompts) == 1 else 'prompts'}, so none is left to train on: give a smaller "
                           "share, 0 (no held-out accuracy), or --eval-data")
    held = set(prompts[:count])
    return [r for r in rankings if prompt_key(r.prompt) not in held], [r for r in rankings if prompt_key(r.prompt) in held]


def split_of_run(records: list, trained: dict, metrics: dict) -> tuple[list, list]:
    """The split a finished reward or gap-reward run (its ``train_config.json``, its card's ``metrics``) made of the
    records it read: ``split_by_prompt`` at its ``--eval-split`` and ``--seed``. A run made before that held out at
    least one prompt held out none where the share rounded to none (0.1 of four prompts); its card counts none held
    out (every prompt trained on, or no held-out pair), and so none is taken as held out here."""
    train, held = split_by_prompt(records, trained.get("eval_split", 0.0), trained.get("seed", 0))
    every = len({prompt_key(r.prompt) for r in records})
    none_held = metrics.get("train_prompts") == every or (metrics.get("eval_pairs") == 0  # a reward run's card; a gap run's
                                                          and not metrics.get("eval_identical_pairs"))
    if held and none_held:
        return records, []
    return train, held


def refuse_shared_prompts(train: list, held: list, data: str, eval_data: str) -> None:
    """``--eval-data`` must hold other prompts than ``--data``'s training records: else its accuracy is not held out."""
    trained = {prompt_key(r.prompt) for r in train}
    shared = [r for r in held if prompt_key(r.prompt) in trained]
    if shared:
        raise RedlineError(f"{eval_data}: {len({prompt_key(r.prompt) for r in shared})} of its prompts are also in the "
                           f"training records of {data} (the first: {prompt_text(shared[0].prompt)[:60]!r}); held-out "
                           "records must be of other prompts")


def start_training_prompts(model: str, seen: frozenset = frozenset()) -> tuple[dict[str, str], list[str]]:
    """The prompts a start model learnt from, when ``--model`` is a `redline train reward` or `train gap-reward`
    run (and, in turn, its own start's): {prompt key: the run that trained on it}, and the runs whose data is
    not there to read.

    Its training prompts are those of its ``data`` (a gap run's third of it, under ``--split-thirds``) less the
    ones it held out (its ``--eval-split`` and ``--seed``, ``split_by_prompt``), or all of them where it was
    given ``--eval-data``.
    """
    from redline.models import GAP_REWARD, run_config, run_info, run_kind

    kind = run_kind(model) if model not in seen else None
    trained = run_config(model) if kind in (REWARD, GAP_REWARD) else {}
    if not trained:
        return {}, []
    found, unread = start_training_prompts(str(trained.get("model", "")), seen | {model})
    data = trained.get("data")
    if not data or not os.path.exists(data):
        return found, [*unread, f"{model} ({data})"]
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # its skipped records were reported when it trained
            rankings = read_start_data(kind, trained)
    except (RedlineError, RecordError):  # changed since it trained: what it read is not known
        return found, [*unread, f"{model} ({data})"]
    if not trained.get("eval_data"):
        rankings, _ = split_of_run(rankings, trained, run_info(model).get("metrics", {}))
    return {**{prompt_key(r.prompt): model for r in rankings}, **found}, unread


def read_start_data(kind: str, trained: dict) -> list:
    """The records a reward or gap-reward run read from its ``data`` before its held-out split."""
    read = dict(limit=trained.get("limit"), skip_invalid=bool(trained.get("skip_invalid")))
    if kind == REWARD:
        return read_comparisons(trained["data"], **read)
    from redline.train.gap_reward import read_preferences, split_thirds

    prefs = read_preferences(trained["data"], **read)
    return split_thirds(prefs, trained.get("split_seed", 0))[1] if trained.get("split_thirds") else prefs


def refuse_start_prompts(model: str, start: tuple[dict[str, str], list[str]], held: list, where: str) -> None:
    """A held-out prompt the start model (``--model``, a reward run) trained on would not be held out from the
    model this run saves: its accuracy there is the start's memory. Refused, before any model loads.
    ``start``: ``start_training_prompts(model)``."""
    if not held:
        return
    trained, unread = start
    if unread:
        print(f"redline: --model {model}: could not read what {', '.join(unread)} trained on from here, so whether "
              "its training prompts are among the held-out ones is not checked", file=sys.stderr)
    shared = [r for r in held if prompt_key(r.prompt) in trained]
    if shared:
        first = shared[0]
        raise RedlineError(
            f"{where}: {len({prompt_key(r.prompt) for r in shared})} of the held-out prompts were trained on by the "
            f"start model {trained[prompt_key(first.prompt)]} (the first: {prompt_text(first.prompt)[:60]!r}), so its "
            "accuracy there is not held out; pass --eval-data with records of prompts it did not train on")


def encode_chats(tokenizer, chats: list[tuple[Any, str]], max_length: int) -> tuple[list[list[int] | None], int]:
    """Token ids of (prompt, response) chats as a reward model reads them, each at most ``max_length``.

    A longer chat loses its prompt's start, never the response's end: the score is read at the last
    token. One whose response alone does not fit is None, to be dropped and counted (as TRL's
    RewardTrainer drops examples over its limit). Returns (ids, how many were cut).
    """
    from trl.data_utils import common_prefix_length

    from redline.generation import as_chat

    ids = tokenizer([chat_text(tokenizer, p, y) for p, y in chats], add_special_tokens=False)["input_ids"]
    out, cut = [], 0
    for (prompt, _), x in zip(chats, ids):
        if len(x) <= max_length:
            out.append(x)
            continue
        head = tokenizer(tokenizer.apply_chat_template(as_chat(prompt), tokenize=False, add_generation_prompt=True),
                         add_special_tokens=False)["input_ids"]
        if len(x) - common_prefix_length(head, x) >= max_length:
            out.append(None)  # the response alone fills the limit: no prompt left to score it against
        else:
            out.append(x[-max_length:])
            cut += 1
    return out, cut


def encode_groups(rankings: list[Ranking], tokenizer, max_length: int, as_pairs: bool) -> tuple[list[dict], dict[str, int]]:
    """Step 2: one group per prompt (all completions, all comparisons), or one per comparison.

    Returns the groups and counts: sequences cut (``encode_chats``), responses dropped for not fitting,
    comparisons whose two sides became identical tokens after cutting (skipped), prompts left with none.
    """
    groups = []
    counts = {"cut_sequences": 0, "dropped_sequences": 0, "identical_after_cut": 0, "dropped_prompts": 0}
    for r in rankings:
        ids, cut = encode_chats(tokenizer, [(r.prompt, y) for y in r.responses], max_length)
        counts["cut_sequences"] += cut
        counts["dropped_sequences"] += sum(x is None for x in ids)
        comparisons = []
        for w, l in r.comparisons():
            if ids[w] is None or ids[l] is None:
                continue
            if ids[w] == ids[l]:
                counts["identical_after_cut"] += 1
                continue
            comparisons.append((w, l))
        if not comparisons:
            counts["dropped_prompts"] += 1
        elif as_pairs:
            groups.extend({"input_ids": [ids[w], ids[l]], "pairs": [(0, 1)]} for w, l in comparisons)
        else:
            keep = sorted({i for pair in comparisons for i in pair})
            index = {old: new for new, old in enumerate(keep)}
            groups.append({"input_ids": [ids[i] for i in keep], "pairs": [(index[w], index[l]) for w, l in comparisons]})
    return groups, counts


def report_cuts(counts: dict[str, int], max_length: int, total: int, unit: str) -> None:
    """One line on stderr about what ``--max-length`` cut or dropped, when it did."""
    if not (counts.get("cut_sequences") or counts.get("dropped_sequences") or counts.get("identical_after_cut")):
        return
    line = (f"redline: --max-length {max_length}: {counts['cut_sequences']} of {total} sequences lost their prompt's "
            f"start (the response is kept whole); {counts['dropped_sequences']} whose response alone does not fit "
            f"were dropped")
    if counts.get("identical_after_cut"):
        line += f"; {counts['identical_after_cut']} comparisons identical after cutting were skipped"
    for key in ("dropped_prompts", "dropped_pairs"):
        if counts.get(key):
            line += f"; {counts[key]} {unit} left with nothing to compare"
    print(line, file=sys.stderr)


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


def completion_scores(model, input_ids, attention_mask):
    """(N,) the model's score of each row of a padded batch: one padded forward pass, or on a CPU one
    pass a row at its own length (``models.one_row_at_a_time``), the same scores to float rounding."""
    import torch

    from redline.models import one_row_at_a_time, real_tokens

    if not one_row_at_a_time(input_ids):
        return model(input_ids=input_ids, attention_mask=attention_mask).logits.squeeze(-1)
    return torch.cat([model(input_ids=ids).logits.reshape(1) for ids in real_tokens(input_ids, attention_mask)])


def _ranking_trainer_class():
    from transformers import Trainer

    from redline.ops.losses import ranking_loss

    class RankingTrainer(Trainer):
        """A Trainer whose loss is InstructGPT's K-way ranking loss."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            scores = completion_scores(model, inputs["input_ids"], inputs["attention_mask"])  # (N,)
            loss = ranking_loss(scores, inputs["winners"], inputs["losers"], inputs["groups"], int(inputs["n_groups"]))
            return (loss, scores) if return_outputs else loss

    return RankingTrainer


def held_out_accuracy(model, tokenizer, rankings: list[Ranking], max_length: int,
                      all_tied: list[Ranking] = (), source: str = "the held-out rankings") -> dict[str, Any]:
    """Step 4: the reward model's held-out accuracy, each figure beside its ceiling on the same pairs; ``all_tied``,
    the held-out rankings with no comparison, are counted, not scored. A score that is NaN or infinite is refused
    (``refuse_nonfinite``), naming ``source``."""
    from tqdm import tqdm

    with tqdm(total=sum(len(r.responses) for r in rankings), desc="scoring the held-out rankings", unit="text",
              file=sys.stderr) as bar:
        scores = [score_texts(model, tokenizer, [chat_text(tokenizer, r.prompt, y) for y in r.responses],
                              max_length=max_length, bar=bar) for r in rankings]
    refuse_nonfinite(scores, rankings, source, "held-out rankings",
                     "whose comparisons the held-out accuracy would count wrong (NaN orders nothing)")
    return comparison_accuracy(rankings, scores, all_tied)


def refuse_nonfinite(scores: list, records: list, source: str, what: str, why: str) -> None:
    """A trained model's scores of ``records`` (a number, or a list of them, per record), refused where one is NaN or
    infinite (a run that diverged, or overflowed in bf16): before the model is saved, naming ``source``, how many of
    ``what`` and the first one's prompt; ``why`` says what the number would have broken."""
    bad = [i for i, s in enumerate(scores) if not all(map(math.isfinite, s if isinstance(s, (list, tuple)) else [s]))]
    if bad:
        raise RedlineError(f"{source}: the trained model scored {len(bad)} of the {len(scores)} {what} NaN or infinity "
                           f"(first: the prompt {prompt_text(records[bad[0]].prompt)[:60]!r}), {why}; the training "
                           "diverged or overflowed (--bf16?): nothing was saved")


def oracle_qualities(r: Ranking) -> list[float] | None:
    """The oracle's quality of each response of a simulated ranking (None for other data)."""
    if "instructions" not in (r.meta or {}):
        return None
    stored = r.meta.get("oracle_quality")
    if isinstance(stored, list) and len(stored) == len(r.responses):
        return [float(q) for q in stored]
    from redline.simulate.oracle import quality

    return [quality(r.meta, y, prompt_text(r.prompt)) for y in r.responses]


def score_hit(scores, better: int, worse: int) -> float:
    """1 when ``scores`` put ``better`` above ``worse``, a half when they are equal, else 0."""
    return 1.0 if scores[better] > scores[worse] else 0.5 if scores[better] == scores[worse] else 0.0


# Columns of ``prompt_counts``' rows: what the model got right, out of what, and the ceilings' counts.
RIGHT, DECISIVE, ORACLE_RIGHT, ORACLE_PAIRS, LABEL_VS_ORACLE, ANNOTATOR_RIGHT, TIES = range(7)


def prompt_counts(rankings: list[Ranking], scores: list[list[float]]) -> tuple[dict[str, list[float]], bool]:
    """The comparisons of ``rankings`` counted by prompt (the bootstrap's unit; a preferences file has several
    records a prompt): rows of the columns above. A model's equal scores count half. Also whether every
    ranking is simulated (carries what the oracle needs)."""
    per_prompt: dict[str, list[float]] = {}
    simulated = True
    for r, s in zip(rankings, scores):
        q = oracle_qualities(r)
        simulated &= q is not None
        row = per_prompt.setdefault(prompt_key(r.prompt), [0.0] * 7)
        for i, j in itertools.combinations(range(len(r.ranks)), 2):
            if r.ranks[i] == r.ranks[j]:
                row[TIES] += 1
                continue
            w, l = (i, j) if r.ranks[i] < r.ranks[j] else (j, i)
            row[DECISIVE] += 1
            row[RIGHT] += score_hit(s, w, l)
            if q is None:
                continue
            row[LABEL_VS_ORACLE] += score_hit(q, w, l)
            if q[w] != q[l]:
                better, worse = (w, l) if q[w] > q[l] else (l, w)
                row[ORACLE_PAIRS] += 1
                row[ORACLE_RIGHT] += score_hit(s, better, worse)
                row[ANNOTATOR_RIGHT] += better == w
    return per_prompt, simulated


def comparison_accuracy(rankings: list[Ranking], scores: list[list[float]],
                        all_tied: list[Ranking] = ()) -> dict[str, Any]:
    """Accuracy of ``scores`` on the rankings' comparisons, honestly counted.

    - ``eval_accuracy``: on decisive comparisons (the label is not a tie); labelled ties are
      counted (``eval_ties``), never scored as errors. Equal scores count half.
    - ``eval_all_tied_rankings``: the rankings left out for holding no comparison (``all_tied``, as
      ``read_comparisons_and_all_tied`` returns them: all responses tied, or a preference whose chosen is
      its rejected), and ``eval_all_tied_comparisons`` theirs (ties all), so that ``eval_comparisons +
      eval_ties + eval_all_tied_comparisons`` is every comparison of the records scored and left out.
    - ``eval_label_ceiling``: on the same comparisons, how often the oracle orders them as the
      labels do (its ties count half) — what a perfect reward model would score against these
      labels. Simulated data only, as is the rest.
    - ``eval_oracle_accuracy``: on the labelled-decisive comparisons the oracle can tell apart, the
      share the reward model orders as the oracle does; beside it ``eval_annotator_oracle_accuracy``,
      the labels' own accuracy against the oracle on exactly those pairs: the ceiling of learning
      from these labels.
    - ``eval_accuracy_ci95`` and ``eval_oracle_accuracy_ci95``: 95% percentile-bootstrap intervals
      that resample prompts, not comparisons (a prompt's comparisons share its responses, so they
      are not independent; resampling them alone would make the interval too narrow).
    """
    per_prompt, simulated = prompt_counts(rankings, scores)
    rows = list(per_prompt.values())
    total = [sum(column) for column in zip(*rows)] if rows else [0.0] * 7
    share = lambda a, b: round(a / b, 4) if b else None
    decisive, oracle_pairs = total[DECISIVE], total[ORACLE_PAIRS]
    result: dict[str, Any] = {"eval_comparisons": int(decisive), "eval_ties": int(total[TIES]),
                              "eval_all_tied_rankings": len(all_tied),
                              "eval_all_tied_comparisons": sum(r.n_ties() for r in all_tied),
                              "eval_accuracy": share(total[RIGHT], decisive),
                              "eval_accuracy_ci95": prompt_interval(rows, RIGHT, DECISIVE)}
    if simulated and rankings:
        result.update({
            "eval_label_ceiling": share(total[LABEL_VS_ORACLE], decisive),
            "eval_oracle_comparisons": int(oracle_pairs),
            "eval_oracle_accuracy": share(total[ORACLE_RIGHT], oracle_pairs),
            "eval_oracle_accuracy_ci95": prompt_interval(rows, ORACLE_RIGHT, ORACLE_PAIRS),
            "eval_annotator_oracle_accuracy": share(total[ANNOTATOR_RIGHT], oracle_pairs),
        })
    return result


def accuracy_difference(rankings: list[Ranking], scores: list[list[float]], other: list[list[float]],
                        resamples: int = 2000) -> dict[str, Any]:
    """Two reward models' scores on the same rankings, compared pair by pair: the accuracy of ``scores`` minus that
    of ``other`` on the labels' decisive comparisons (and, on simulated data, against the oracle), each with a 95%
    percentile-bootstrap interval that resamples the same prompts for both (a paired interval: the prompts' own
    difficulty, shared by the two models, drops out of the difference)."""
    mine, simulated = prompt_counts(rankings, scores)
    theirs, _ = prompt_counts(rankings, other)
    figures = [("eval_accuracy_difference", RIGHT, DECISIVE)]
    if simulated and rankings:
        figures.append(("eval_oracle_accuracy_difference", ORACLE_RIGHT, ORACLE_PAIRS))
    result: dict[str, Any] = {}
    for name, hits, total in figures:
        rows = [[mine[k][hits], theirs[k][hits], mine[k][total]] for k in mine]  # the two models' hits, out of
        out_of = sum(row[2] for row in rows)
        result[name] = round((sum(row[0] for row in rows) - sum(row[1] for row in rows)) / out_of, 4) if out_of else None
        result[f"{name}_ci95"] = prompt_interval(rows, 0, 2, minus=1, resamples=resamples)
    return result


def prompt_interval(per_prompt: list[list[float]], hits: int, total: int, minus: int | None = None,
                    resamples: int = 2000) -> list[float] | None:
    """95% percentile-bootstrap interval of sum(hits) / sum(total) over resampled prompts (rows of
    ``per_prompt``, columns ``hits`` and ``total``), or with ``minus`` of (sum(hits) - sum(minus)) / sum(total)
    (two models' hits on the same prompts, resampled together); a resample without a comparison to count is
    left out, not counted as 0. None from fewer than two prompts with a comparison to count: one prompt has no
    spread to resample, and its "interval" would be a point, read as certainty (as ``evaluate.bootstrap_interval``).
    Where every prompt has the same rate (every comparison right, or every one wrong), each resample is that rate
    and the bootstrap a point ([100, 100]): there it is the Wilson score interval of the rate over the prompts
    counted, as the win rate's (``evaluate.win_rate_interval``); over prompts, not comparisons, as a prompt's
    comparisons are not independent (the wider of the two). A difference (``minus``) the same on every prompt keeps
    its point: of a run paired with itself it is exact, and no one interval serves that and two models both right
    on every comparison, which look the same here."""
    import numpy as np

    from redline.evaluate import wilson_interval

    if not per_prompt:
        return None
    table = np.array(per_prompt, dtype=float)
    counted = table[:, total] > 0
    if counted.sum() < 2:
        return None
    rates = table[counted, hits] / table[counted, total]
    if minus is None and rates.min() == rates.max():  # every resample the same: no spread for the bootstrap to show
        low, high = wilson_interval(float(rates[0]), int(counted.sum()))
        return [round(low, 4), round(high, 4)]
    idx = np.random.default_rng(0).integers(0, len(table), size=(resamples, len(table)))
    got, out_of = table[idx, hits].sum(axis=1), table[idx, total].sum(axis=1)
    if minus is not None:
        got = got - table[idx, minus].sum(axis=1)
    ratios = got[out_of > 0] / out_of[out_of > 0]
    return [round(float(np.percentile(ratios, 2.5)), 4), round(float(np.percentile(ratios, 97.5)), 4)]


def training_arguments(config, out: Path, device: str):
    """The Trainer's arguments of a reward-style trainer (this one, and the gap model's in gap_reward.py)."""
    from transformers import TrainingArguments

    check_report_to(config.report_to)
    return TrainingArguments(
        **trainer_arguments(config, out, device),
        lr_scheduler_kwargs={"min_lr_rate": 0.1} if config.lr_scheduler == "cosine_with_min_lr" else None,
        adam_beta2=0.95,
        bf16=config.bf16,
        remove_unused_columns=False,
    )


def train_reward(config: RewardConfig, out: str | Path) -> dict[str, Any]:
    """Steps 1–6 of the module docstring; returns the run's metrics."""
    import torch

    from redline.models import (
        LoraSettings, ModelCard, add_lora, command_line, load_reward_model, load_tokenizer,
    )

    out = Path(out)
    check_required(config)  # before anything loads: a config built in Python may name no --data
    check_unless(config)
    check_report_to(config.report_to)
    check_scheduler(config.lr_scheduler)
    finished = finished_run(out, config.push_to_hub, config)
    if finished is not None:
        return finished
    out.mkdir(parents=True, exist_ok=True)
    write_config(out / "train_config.json", config)
    # step 1 (the start's data first: this run's own reads are the ones its card reports)
    start = start_training_prompts(config.model)
    rankings, tied = read_comparisons_and_all_tied(config.data, limit=config.limit, skip_invalid=config.skip_invalid)
    if config.eval_data:
        train, train_tied = rankings, tied
        held, held_tied = read_comparisons_and_all_tied(config.eval_data, skip_invalid=config.skip_invalid)
        refuse_shared_prompts(train, held, config.data, config.eval_data)
    else:
        train, held = split_by_prompt(rankings, config.eval_split, config.seed, config.data)
        train_tied, held_tied = tied_beside(tied, held)
    if not train:
        raise RedlineError(f"{config.data}: no comparisons to train on")
    refuse_start_prompts(config.model, start, held, config.eval_data or f"{config.data} (--eval-split {config.eval_split})")
    demos = (read_records(config.normalize_with, "demonstration", skip_invalid=config.skip_invalid)  # before any compute
             if config.normalize_with else None)

    device = training_device(config)
    torch.manual_seed(config.seed)
    tokenizer = load_tokenizer(config.model)
    # a LoRA run as the start (SFT, or a shipped model) is folded into plain weights under the new adapter
    model = load_reward_model(config.model, dtype=base_dtype(config), device=device, merge_lora=True).train()
    if hasattr(model.config, "reward_bias"):  # a reward run as the start: its bias was its own; this one's is step 5's
        del model.config.reward_bias  # (absent, not None: a card's `getattr(config, "reward_bias", 0.0)` reads 0)
    if config.lora:
        lora = LoraSettings(r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout)
        model = float32_adapters(add_lora(model, lora, task_type="SEQ_CLS"))
    # step 2
    tokenizer.truncation_side = "left"  # scoring cuts as training does: the prompt's start, never the response
    groups, cuts = encode_groups(train, tokenizer, config.max_length, as_pairs=config.pairs)
    report_cuts(cuts, config.max_length, sum(len(r.responses) for r in train), "prompts")
    if not groups:
        raise RedlineError(f"{config.data}: no comparison fits in --max-length {config.max_length}")
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
        "train_prompts": len({prompt_key(r.prompt) for r in train}),  # a preferences file has several records a prompt
        "train_rankings": len(train),
        "train_comparisons": sum(len(g["pairs"]) for g in groups),
        "train_all_tied_rankings": len(train_tied),  # no comparison to train on: left out, and counted
        # two answers a prompt (preferences, K = 2): each group one pair, the same training either way
        "mode": "pairs" if config.pairs or all(len(r.responses) == 2 for r in train) else "groups",
        **cuts,
        "steps": trainer.state.global_step,
        "train_seconds": round(result.metrics.get("train_runtime", 0.0), 1),
    }
    metrics.update(held_out_accuracy(model, tokenizer, held, config.max_length, held_tied,
                                     config.eval_data or f"{config.data} (--eval-split {config.eval_split:g})"))
    # step 5
    if demos:
        from tqdm import tqdm

        with tqdm(total=len(demos), desc="normalising on the demonstrations", unit="text", file=sys.stderr) as bar:
            rewards = score_texts(model, tokenizer, [chat_text(tokenizer, d.prompt, d.response) for d in demos],
                                  max_length=config.max_length, bar=bar)
        # one NaN made the bias NaN, saved into the model: every score it gave after was NaN
        refuse_nonfinite(rewards, demos, config.normalize_with, "demonstrations", "so there is no mean to set to 0")
        model.config.reward_bias = -sum(rewards) / len(rewards)
        metrics["reward_bias"] = round(model.config.reward_bias, 4)
    # step 6
    model.config.redline_kind = REWARD
    data = [str(d) for d in (config.data, config.eval_data, config.normalize_with) if d]  # every file it read, as gap-reward's
    card = ModelCard(kind=REWARD, base_model=config.model, data=data, command=command_line(), metrics=metrics)
    save_run(model, tokenizer, out, card, trainer.state.log_history, f"reward model: {config.model}", config.push_to_hub)
    return metrics
