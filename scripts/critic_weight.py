"""Does weighting the critique's tokens in the critic's loss help it learn the critique? (issue 14, item 3)

Trains one critic per --weights value on the same records (spread over distinct prompts) and the
same steps, then scores each on held-out feedback records of other prompts, teacher-forced: the
mean loss per token of the critique part and of the revision part. A lower critique loss at a
revision loss that is no worse is what a weight must buy to be kept.

    PYTHONPATH=src python scripts/critic_weight.py OUT --model embedded --train 48 --held-out 32 --weights 1,4
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path


def spread(records, n, skip=0):
    """The first record of each prompt, in file order, skipping the first ``skip`` prompts."""
    seen, out = set(), []
    for r in records:
        key = json.dumps(r.prompt)
        if key in seen:
            continue
        seen.add(key)
        if len(seen) > skip:
            out.append(r)
        if len(out) == n:
            break
    return out


def part_losses(run: Path, records, max_length: int) -> dict:
    """Mean loss per token of the critique (through the "Revision:" marker) and of the revision."""
    import torch

    from redline.models import load_causal_lm, load_tokenizer
    from redline.train.critic import critic_examples, critique_mask, revision_marker

    tokenizer = load_tokenizer(str(run))
    model = load_causal_lm(str(run), device="cpu", merge_lora=True).eval()
    marker = revision_marker(tokenizer)  # as the weighted trainer finds it (tokenised alone it may never match)
    sums = {"critique": [0.0, 0], "revision": [0.0, 0]}
    for ex in critic_examples(records):
        prompt = tokenizer.apply_chat_template(ex["prompt"], tokenize=False, add_generation_prompt=True)
        whole = tokenizer.apply_chat_template(ex["prompt"] + ex["completion"], tokenize=False)
        ids = tokenizer(whole, add_special_tokens=False)["input_ids"][:max_length]
        start = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        labels = torch.tensor([[-100] * min(start, len(ids)) + ids[start:]])  # a prompt past max_length: no label
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[:, :-1]
        target = labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target.clamp(min=0), reduction="none")
        critique = critique_mask(target, marker)
        revision = (target != -100) & ~critique
        for name, mask in (("critique", critique), ("revision", revision)):
            sums[name][0] += float(nll[mask].sum())
            sums[name][1] += int(mask.sum())
    # no token of a part to measure (every prompt past --max-length): null, not a loss of 0.0
    return {name: round(s / n, 4) if n else None for name, (s, n) in sums.items()} | {
        f"{name}_tokens": n for name, (_, n) in sums.items()}


MADE_OF = "critic_weight.json"  # in each weight_* run: the settings and records it was trained on


def run_inputs(config, records) -> dict:
    """What a weight's run is made of: its settings and a digest of its training records."""
    import hashlib

    from redline.config import config_dict

    text = json.dumps([r.to_dict() for r in records], sort_keys=True, ensure_ascii=False)
    return {"config": config_dict(config), "records": len(records),
            "records_sha256": hashlib.sha256(text.encode()).hexdigest()}


def check_reused(run: Path, made_of: dict) -> None:
    """A finished run is reused, and one stopped part-way resumed, only when it was trained on these settings and
    records (a rerun with another --train, --epochs, --data or --max-length reused the first run's critics, or resumed
    its checkpoints on other records)."""
    path = run / MADE_OF
    then = json.loads(path.read_text()) if path.is_file() else None
    if then != made_of:
        what = "no record of what trained it" if then is None else "other settings or records than these"
        raise SystemExit(f"{run} is a finished run with {what}: give another OUT, or remove {run} to train it again")


def weights(text: str) -> list[float]:
    """--weights as numbers above 0, each once; anything else refused in one line before any training (a weight of 0
    was refused by the trainer only after the weights before it had trained)."""
    import math

    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        raise SystemExit(f"--weights {text!r}: expected numbers above 0, comma-separated (e.g. 1,4)") from None
    bad = [v for v in values if not (math.isfinite(v) and v > 0)]
    if bad:
        raise SystemExit(f"--weights {text!r}: {bad[0]:g} is not above 0 (a critique weight multiplies its tokens' loss)")
    if len({f"{v:g}" for v in values}) < len(values):
        raise SystemExit(f"--weights {text!r}: a weight named twice (one run, weight_W, each)")
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--data", default="data/simulated/feedback.jsonl")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--train", type=int, default=48)
    parser.add_argument("--held-out", type=int, default=32)
    parser.add_argument("--weights", default="1,4")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-length", type=int, default=1024)
    args = parser.parse_args()
    chosen = weights(args.weights)
    for name, value in (("--train", args.train), ("--held-out", args.held_out)):
        if value < 1:  # spread() took 0 as "every prompt"
            parser.error(f"{name} {value}: expected a number of prompts of at least 1")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"OUT {args.out}: exists and is not a folder")

    from redline.records import json_text, read_records
    from redline.train.critic import CriticConfig, train_critic

    records = read_records(args.data, "feedback")
    train = spread(records, args.train)
    held_out = spread(records, args.held_out, skip=args.train)
    prompts = len({json.dumps(r.prompt) for r in records})
    if not held_out:
        raise SystemExit(f"{args.data}: {prompts} distinct prompts, none left to hold out after --train {args.train}: "
                         "give a smaller --train")
    if len(train) < args.train or len(held_out) < args.held_out:
        print(f"critic_weight: {args.data} has {prompts} distinct prompts: {len(train)} to train on, {len(held_out)} "
              f"held out (asked for {args.train} and {args.held_out})", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"command": " ".join(sys.argv), "train": len(train), "held_out": len(held_out), "runs": {}}
    for w in chosen:
        run = args.out / f"weight_{w:g}"
        config = CriticConfig(model=args.model, data=args.data, epochs=args.epochs, critique_weight=w,
                              max_length=args.max_length, device="cpu")
        made_of = run_inputs(config, train)
        # a finished run is reused, and one stopped after a checkpoint resumed, only as itself (one that failed before
        # any checkpoint starts afresh)
        if (run / "redline.json").exists() or ((run / "checkpoints").is_dir() and (run / MADE_OF).exists()):
            check_reused(run, made_of)
        if not (run / "redline.json").exists():
            run.mkdir(parents=True, exist_ok=True)
            (run / MADE_OF).write_text(json.dumps(made_of, indent=2) + "\n")  # before its first checkpoint
            train_critic(replace(config), run, records=train)
        results["runs"][f"{w:g}"] = part_losses(run, held_out, args.max_length)
        # a diverged critic's NaN loss as null, as every JSON file redline writes
        (args.out / "results.json").write_text(json_text(results, indent=2) + "\n", encoding="utf-8")
        print(json_text({f"{w:g}": results["runs"][f"{w:g}"]}), flush=True)
    return 0


if __name__ == "__main__":
    from redline import RedlineError
    from redline.records import RecordError

    try:
        sys.exit(main())
    except (RedlineError, RecordError) as e:  # a bad --data record, a model that does not load: no traceback
        print(f"critic_weight: {e}", file=sys.stderr)
        sys.exit(2)
