"""The ``redline`` command.

Every command has ``--help``. Shared options are spelled the same everywhere: ``--model``,
``--out``, ``--seed``, ``--limit N`` on every command that reads records, ``--max-steps N`` and
``--epochs E`` on every trainer, ``--skip-invalid`` wherever records are read. An error is one
clear line on stderr (the lines of a bad file, one per bad record) and exit code 2; ``--debug``
shows the full traceback.

The wiring lives here, one ``_add_<group>`` function per command group; the work lives in the
modules, imported inside each handler so ``redline --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from redline import RedlineError, __version__


# ----------------------------------------------------------------------------- shared options


def add_model(p: argparse.ArgumentParser, default: str | None = "embedded", help: str | None = None) -> None:
    p.add_argument(
        "--model",
        default=default,
        required=default is None,
        help=help or "hub id, local path, 'embedded' (SmolLM2-135M-Instruct) or 'tiny-random' (default: %(default)s)",
    )
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="weights dtype")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps or auto (default: auto)")


def add_out(p: argparse.ArgumentParser, required: bool = True, help: str = "output path") -> None:
    p.add_argument("--out", required=required, type=Path, help=help)


def add_seed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")


def add_reading(p: argparse.ArgumentParser) -> None:
    """Options of every command that reads records."""
    p.add_argument("--limit", type=int, default=None, metavar="N", help="read only the first N valid records")
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip bad records (reporting how many and why) instead of stopping",
    )


def add_training(p: argparse.ArgumentParser) -> None:
    """Options of every trainer."""
    p.add_argument("--max-steps", type=int, default=None, metavar="N", help="stop after N optimiser steps")
    p.add_argument("--epochs", type=float, default=None, metavar="E", help="passes over the data")


def read_for_command(args: argparse.Namespace, path, kind: str):
    """Read records for a command, honouring --limit and --skip-invalid, and report skips."""
    from redline.records import ReadReport, read_records

    report = ReadReport(str(path))
    records = read_records(path, kind, skip_invalid=args.skip_invalid, limit=args.limit, report=report)
    if report.skipped:
        print(report.summary(), file=sys.stderr)
        for example in report.examples[:5]:
            print(f"  skipped {example}", file=sys.stderr)
    return records


# ----------------------------------------------------------------------------- data


def _add_data(sub) -> None:
    import redline.formats
    from redline.formats import FORMATS
    from redline.records import KINDS

    data = sub.add_parser("data", help="validate, describe and import record files").add_subparsers(
        dest="data_command", required=True, metavar="COMMAND"
    )

    p = data.add_parser("validate", help="check every record of a file; list every bad line")
    p.add_argument("file", help="JSONL, Parquet, a datasets folder or a hub id")
    p.add_argument("--kind", required=True, choices=list(KINDS))
    add_reading(p)
    p.set_defaults(func=_data_validate)

    p = data.add_parser("stats", help="counts, token lengths, ties and duplicates of a record file")
    p.add_argument("file")
    p.add_argument("--kind", required=True, choices=list(KINDS))
    p.add_argument("--tokenizer", default="embedded", help="tokenizer for lengths (default: %(default)s)")
    add_reading(p)
    p.set_defaults(func=_data_stats)

    p = data.add_parser(
        "import",
        help="turn a public data format into redline records",
        description=redline.formats.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--from", dest="fmt", required=True, choices=sorted(FORMATS), help="the input format")
    p.add_argument("input", help="JSONL/JSON/Parquet file, a datasets folder or a hub id")
    p.add_argument("output", type=Path, help="JSONL or Parquet output; importers that yield two kinds write a second file beside it")
    add_reading(p)
    p.set_defaults(func=_data_import)


def _data_validate(args) -> int:
    records = read_for_command(args, args.file, args.kind)
    print(f"{args.file}: {len(records)} valid {args.kind} records")
    return 0


def _data_stats(args) -> int:
    from redline.stats import record_stats

    records = read_for_command(args, args.file, args.kind)
    print(json.dumps(record_stats(records, tokenizer=args.tokenizer), indent=2))
    return 0


def _data_import(args) -> int:
    from redline.formats import import_file

    written = import_file(args.fmt, args.input, args.output, limit=args.limit, skip_invalid=args.skip_invalid)
    for path, (kind, n) in written.items():
        print(f"wrote {n} {kind} records to {path}")
    return 0


# ----------------------------------------------------------------------------- train


def _add_train(sub) -> None:
    from redline.config import add_settings_arguments
    from redline.train.critic import CriticConfig
    from redline.train.reward import RewardConfig
    from redline.train.sft import DemonstrationConfig

    train = sub.add_parser("train", help="fine-tune models: sft, critic, reward").add_subparsers(
        dest="train_command", required=True, metavar="COMMAND"
    )
    p = train.add_parser(
        "critic",
        help="train a critique-and-revision model on feedback records (Jin et al. 2023)",
        description="Fine-tune a model that, given a prompt and a response, writes a critique and then a revision. "
        "The loss covers only the critique and the revision. Every flag is a field of CriticConfig; "
        "RUN/train_config.json holds the resolved config (--config repeats a run).",
    )
    add_settings_arguments(p, CriticConfig)
    add_out(p, help="the run folder (model, card, config, training curve, checkpoints)")
    p.add_argument("--config", help="a resolved train_config.json to start from (flags override it)")
    p.set_defaults(func=_train_critic)

    p = train.add_parser(
        "sft",
        help="supervised fine-tuning on demonstrations (InstructGPT step 1)",
        description="Fine-tune on demonstration records with the loss on the response only.",
    )
    add_settings_arguments(p, DemonstrationConfig)
    add_out(p, help="the run folder")
    p.add_argument("--config", help="a resolved train_config.json to start from (flags override it)")
    p.set_defaults(func=_train_sft)

    p = train.add_parser(
        "reward",
        help="train a reward model on K-way rankings (InstructGPT step 2)",
        description="All C(K,2) comparisons of a prompt in one batch element, one forward pass per completion, "
        "ties dropped. Preference records work as K = 2. Saves a sequence-classification model.",
    )
    add_settings_arguments(p, RewardConfig)
    add_out(p, help="the run folder")
    p.add_argument("--config", help="a resolved train_config.json to start from (flags override it)")
    p.set_defaults(func=_train_reward)


def _train_reward(args) -> int:
    from redline.config import settings_from_args
    from redline.train.reward import RewardConfig, train_reward

    config = settings_from_args(RewardConfig, args)
    if not config.data:
        raise RedlineError("--data is required: a file of ranking or preference records")
    print(json.dumps(train_reward(config, args.out)))
    return 0


def _train_critic(args) -> int:
    from redline.config import settings_from_args
    from redline.train.critic import CriticConfig, train_critic

    config = settings_from_args(CriticConfig, args)
    if not config.data:
        raise RedlineError("--data is required: a file of feedback records")
    metrics = train_critic(config, args.out)
    print(json.dumps(metrics))
    return 0


def _train_sft(args) -> int:
    from redline.config import settings_from_args
    from redline.train.sft import DemonstrationConfig, train_demonstrations

    config = settings_from_args(DemonstrationConfig, args)
    if not config.data:
        raise RedlineError("--data is required: a file of demonstration records")
    print(json.dumps(train_demonstrations(config, args.out)))
    return 0


# ----------------------------------------------------------------------------- revise


def _add_revise(sub) -> None:
    from redline.config import add_settings_arguments
    from redline.improve.revise import ReviseConfig

    p = sub.add_parser(
        "revise",
        help="critique and revise any model's responses with a trained critic, iteratively",
        description="Iteration k critiques and revises the output of iteration k-1. DIR gets iteration_0.jsonl "
        "(the input) ... iteration_N.jsonl and summary.json; rerun the same command to resume.",
    )
    add_settings_arguments(p, ReviseConfig)
    add_out(p, help="output folder")
    p.set_defaults(func=_revise)


def _revise(args) -> int:
    from redline.config import settings_from_args
    from redline.improve.revise import ReviseConfig, revise

    config = settings_from_args(ReviseConfig, args)
    if not config.critic or not config.input:
        raise RedlineError("--critic and --input are required")
    summary = revise(config, args.out)
    print(json.dumps(summary["iterations"]))
    return 0


# ----------------------------------------------------------------------------- experiment


def _add_experiment(sub) -> None:
    from redline.config import add_settings_arguments
    from redline.experiments.critic import CriticExperimentConfig

    experiment = sub.add_parser("experiment", help="rerun a paper's experiment end to end").add_subparsers(
        dest="experiment_command", required=True, metavar="COMMAND"
    )
    p = experiment.add_parser(
        "critic",
        help="train critics on growing data, revise held-out responses N times, judge every iteration",
        description="Jin et al. 2023's experiment: for each training size, train a critic, revise the test "
        "responses (and a second responder's) for N iterations and judge each iteration against the original. "
        "--data is a folder with feedback.jsonl and test.jsonl. Rerun the same command to resume.",
    )
    add_settings_arguments(p, CriticExperimentConfig)
    add_out(p, help="output folder (results.md, results.json, win_rates.png, one folder a size)")
    p.set_defaults(func=_experiment_critic)


def _experiment_critic(args) -> int:
    from redline.config import settings_from_args
    from redline.experiments.critic import CriticExperimentConfig, run_critic_experiment

    config = settings_from_args(CriticExperimentConfig, args)
    if not config.data:
        raise RedlineError("--data is required: a folder with feedback.jsonl and test.jsonl")
    run_critic_experiment(config, args.out)
    print((args.out / "results.md").read_text())
    return 0


# ----------------------------------------------------------------------------- demo


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="the first run: train a critic on simulated feedback, revise held-out answers, judge them",
        description="The critique-and-revision loop in miniature on the embedded model and the simulated "
        "annotators: train a critic, revise held-out responses, print win rates against the originals. "
        "Rerun to resume.",
    )
    add_model(p)
    add_seed(p)
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default: %(default)s)")
    p.add_argument("--train-records", type=int, default=120, help="feedback records to train on (default: %(default)s)")
    p.add_argument("--test-items", type=int, default=24, help="held-out responses to revise (default: %(default)s)")
    p.add_argument("--iterations", type=int, default=2, help="rounds of critique and revision (default: %(default)s)")
    p.add_argument("--max-steps", type=int, default=None, help="cap the critic's optimiser steps")
    p.add_argument("--max-new-tokens", type=int, default=400, help="tokens per critique and revision (default: %(default)s)")
    p.set_defaults(func=_demo)


def _demo(args) -> int:
    from redline.demo import run_demo

    print(run_demo(args))
    return 0


# ----------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="redline",
        description="Teach language models from human feedback: rankings, critiques and revisions, preference pairs.",
    )
    parser.add_argument("--version", action="version", version=f"redline {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(sub)
    _add_data(sub)
    _add_train(sub)
    _add_revise(sub)
    _add_experiment(sub)
    _add_evaluate(sub)
    _add_serve(sub)
    _add_simulate(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from redline.records import RecordError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("redline: interrupted", file=sys.stderr)
        return 130
    except (RedlineError, RecordError, FileNotFoundError, ValueError, OSError) as e:
        if args.debug:
            raise
        message = str(e) if not isinstance(e, FileNotFoundError) else f"no such file: {e.filename or e}"
        print(f"redline: error: {message}" if "\n" not in message else message, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
