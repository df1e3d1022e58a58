"""The ``redline`` command.

Every command has ``--help``. Shared options are spelled the same everywhere: ``--model``,
``--out``, ``--seed``, ``--limit N`` on the commands that read records file by file (not ``evaluate rollouts``
or ``table``, which read runs, nor ``simulate build``, which writes them), ``--max-steps N`` and ``--epochs E`` on
every supervised trainer (PPO and PIT count ``--iterations``), ``--skip-invalid`` wherever records are read. An error is one
clear line on stderr (the lines of a bad file, one per bad record) and exit code 2; ``--debug``
shows the full traceback. The libraries' deprecation warnings and notices are hidden (``console.quiet``);
``--verbose`` shows them.

The wiring lives here, one ``_add_<group>`` function per command group; the work lives in the
modules, imported inside each handler so ``redline --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from redline import RedlineError, __version__
from redline.records import json_text  # results on stdout as JSON: NaN (a run that diverged) as null


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


def _launched_worker() -> bool:
    """A process of a multi-process launch (torchrun, accelerate launch) other than the main one."""
    return os.environ.get("RANK", "0") != "0"


def _launched_processes() -> int:
    """How many processes a multi-process launch (torchrun, accelerate launch) started; 1 outside one."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def _refuse_a_launch_that_would_repeat(args: argparse.Namespace) -> None:
    """Only the trainers share their work between the processes of a launch: any other command ran whole in every
    process, into the same output (`generate` under torchrun --nproc_per_node 2 wrote each response twice, and two
    progress bars). Refused in every process, before anything loads."""
    n = _launched_processes()
    if n > 1 and args.command != "train":
        command = " ".join([args.command, *(getattr(args, name) for name in sorted(vars(args))
                                            if name.endswith("_command") and getattr(args, name))])
        raise RedlineError(f"`redline {command}` runs in one process: under a launcher (WORLD_SIZE={n}) each of the {n} "
                           "processes would run all of it, into the same output; run it without torchrun or accelerate "
                           "launch (`redline train ...` alone shares its work between processes)")


def check_device(config) -> None:
    """A config's ``--device``, refused now if it is not a device of this machine: the engines found out once the
    model's weights had loaded (or downloaded). ``auto`` always is one, and needs no torch to say so."""
    if getattr(config, "device", "auto") != "auto":
        from redline.models import pick_device

        pick_device(config.device)


def configured(cls, args: argparse.Namespace, command: str, *, config_name: str = "config.json", file: bool = False,
               seeded: tuple[str, ...] = ()):
    """The command's config (flags over ``--config FILE``, required fields checked), with ``--out`` locked and
    claimed for it: another redline process on it is refused (``redline.outlock``), and a rerun with another
    fingerprint unless ``--overwrite``; the resolved config and the fingerprint are written beside the outputs."""
    from redline.config import claim_output, settings_from_args

    config = settings_from_args(cls, args)
    check_device(config)
    out = Path(args.out if args.out is not None else getattr(config, "out"))  # evaluate, simulate build: maybe from --config
    if file and out.is_dir():  # else "pass --overwrite to replace it", and --overwrite then failed on the folder
        raise RedlineError(f"--out {out} is a folder: `redline {command}` writes one JSONL file; give its path "
                           f"(such as --out {out / 'out.jsonl'})")
    if _launched_worker():  # under torchrun/accelerate launch the main process claims OUT
        from redline.train.sft import OVERWRITE_ENV

        # ... and under --overwrite removes the earlier run, maybe after this process has looked: it starts afresh too
        os.environ[OVERWRITE_ENV] = "1" if args.overwrite else ""
        return config
    if getattr(config, "push_to_hub", None):  # now, not once the run has trained
        from redline.models import check_push_target

        check_push_target(out, config.push_to_hub)
    from redline.outlock import acquire

    args.lock = acquire(out, command)  # before OUT is claimed; main() releases it when the command ends
    created = not out.exists()
    found = claim_output(out, config, command=command, overwrite=args.overwrite, config_name=config_name, file=file,
                         seeded=seeded)
    args.claimed = (out, config_name, created, file, found)  # released by main() if the run fails before writing anything
    return config


# ----------------------------------------------------------------------------- data


def _add_data(sub) -> None:
    import redline.formats
    from redline.config import add_settings_arguments
    from redline.formats import ImportConfig
    from redline.records import ValidateConfig
    from redline.stats import StatsConfig

    data = sub.add_parser("data", help="validate, describe and import record files").add_subparsers(
        dest="data_command", required=True, metavar="COMMAND"
    )

    p = data.add_parser("validate", help="check every record of a file; list every bad line")
    add_settings_arguments(p, ValidateConfig, resumable=False)
    p.set_defaults(func=_data_validate)

    p = data.add_parser("stats", help="counts, token lengths, ties and duplicates of a record file")
    add_settings_arguments(p, StatsConfig, resumable=False)
    p.set_defaults(func=_data_stats)

    p = data.add_parser(
        "import",
        help="turn a public data format into redline records",
        description=redline.formats.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings_arguments(p, ImportConfig, resumable=False)  # rerun: the output is written again
    p.set_defaults(func=_data_import)


def with_split(source: str, split: str | None) -> str:
    if split and Path(source).is_file():  # else read as the file "SOURCE:SPLIT", and refused as missing
        raise RedlineError(f"--split {split}: {source} is a file, which has no splits (a datasets folder or a hub "
                           "data set has them)")
    return f"{source}:{split}" if split else source


def read_validated(config) -> list:
    """The records a ``ValidateConfig`` (or ``StatsConfig``) names: its file and split, kind, limit and skips."""
    from redline.records import read_records

    return read_records(with_split(config.file, config.split), config.kind, skip_invalid=config.skip_invalid,
                        limit=config.limit)


def _data_validate(args) -> int:
    from redline.config import settings_from_args
    from redline.records import ValidateConfig

    config = settings_from_args(ValidateConfig, args)
    records = read_validated(config)
    print(f"{config.file}: {len(records)} valid {config.kind} records")
    return 0


def _data_stats(args) -> int:
    from redline.config import settings_from_args
    from redline.stats import StatsConfig, record_stats

    config = settings_from_args(StatsConfig, args)
    print(json_text(record_stats(read_validated(config), tokenizer=config.tokenizer), indent=2))
    return 0


def _data_import(args) -> int:
    from redline.config import settings_from_args, sidecar, write_config
    from redline.formats import ImportConfig, import_file

    config = settings_from_args(ImportConfig, args)
    written = import_file(config.format, with_split(config.input, config.split), config.output, limit=config.limit,
                          skip_invalid=config.skip_invalid, progress=True)
    for path, (kind, n) in written.items():
        print(f"wrote {n} {kind} records to {path}")
    # Beside the records, so that `--config OUTPUT.config.json` repeats the import; no fingerprint:
    # an import is not resumed, a rerun writes its output again.
    write_config(sidecar(config.output, "config.json", file=True), config)
    return 0


# ----------------------------------------------------------------------------- train


def _add_train(sub) -> None:
    from redline.config import add_settings_arguments
    from redline.train.critic import CriticConfig
    from redline.train.reward import RewardConfig
    from redline.train.sft import DemonstrationConfig

    train = sub.add_parser("train", help="fine-tune models: sft, critic, reward, ppo, dpo, gap-reward, pit").add_subparsers(
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
    p.set_defaults(func=_train_critic)

    p = train.add_parser(
        "sft",
        help="supervised fine-tuning on demonstrations (InstructGPT step 1)",
        description="Fine-tune on demonstration records with the loss on the response only.",
    )
    add_settings_arguments(p, DemonstrationConfig)
    add_out(p, help="the run folder")
    p.set_defaults(func=_train_sft)

    p = train.add_parser(
        "reward",
        help="train a reward model on K-way rankings (InstructGPT step 2)",
        description="All C(K,2) comparisons of a prompt in one batch element, one forward pass per completion, "
        "ties dropped. Preference records work as K = 2. Saves a sequence-classification model.",
    )
    add_settings_arguments(p, RewardConfig)
    add_out(p, help="the run folder")
    p.set_defaults(func=_train_reward)

    from redline.train.ppo import PPOConfig

    p = train.add_parser(
        "ppo",
        help="PPO-ptx against a reward model (InstructGPT step 3)",
        description="PPO with a per-token KL penalty against the SFT policy, a value model initialised from the "
        "reward model, GAE (or --advantage rloo: K samples per prompt, no value model), and an optional pretraining "
        "mix (--ptx-data, --ptx-coef). Resumes from RUN/checkpoints; runs under `accelerate launch` too. Every flag "
        "is a field of PPOConfig; the RL ones (RLSettings) are flags of `train pit` too.",
    )
    add_settings_arguments(p, PPOConfig)
    add_out(p, help="the run folder (policy, value model, ppo_log.jsonl, checkpoints)")
    p.set_defaults(func=_train_ppo)

    from redline.train.dpo import DPOSettings

    p = train.add_parser(
        "dpo",
        help="DPO on preference pairs with TRL's DPOTrainer (Rafailov et al. 2023)",
        description="Direct preference optimisation from --model (the SFT run; also the reference) on preference "
        "records. LoRA by default; resumes from RUN/checkpoints. Every flag is a field of DPOSettings.",
    )
    add_settings_arguments(p, DPOSettings)
    add_out(p, help="the run folder (policy, train_log.jsonl, checkpoints)")
    p.set_defaults(func=_train_dpo)

    from redline.train.gap_reward import GapRewardConfig

    p = train.add_parser(
        "gap-reward",
        help="train PIT's reward-gap model r_gap(x, y, y_ref) on preference pairs (Wang et al. 2023)",
        description="Four forward passes per pair, (w,l) (w,w) (l,l) (l,w), and five Bradley-Terry terms on their "
        "order; held-out accuracy per ordering. Saves a sequence-classification model of kind gap-reward.",
    )
    add_settings_arguments(p, GapRewardConfig)
    add_out(p, help="the run folder")
    p.set_defaults(func=_train_gap_reward)

    from redline.train.pit import PITConfig

    p = train.add_parser(
        "pit",
        help="train a PIT policy that improves a reference response (Wang et al. 2023)",
        description="PIT SFT (the better response given the prompt and the worse one), then PPO with the reward-gap "
        "model in a curriculum: round 0 improves the data's responses, round 1 BASE's samples (--rounds 0,1 | 0 | 1 | none). "
        "Each stage gets its folder in RUN; a rerun skips finished stages and resumes the unfinished one.",
    )
    add_settings_arguments(p, PITConfig)
    add_out(p, help="the run folder (sft/, references.jsonl, rl-*/, pit.json)")
    p.set_defaults(func=_train_pit)


def _train_pit(args) -> int:
    from redline.train.pit import PITConfig, train_pit

    manifest = train_pit(configured(PITConfig, args, "train pit", config_name="train_config.json",
                                     seeded=("sft", "references.jsonl")), args.out)
    print(json_text({"policy": str(args.out / manifest["policy"]), "stages": manifest["stages"]}, default=str))
    return 0


def _train_gap_reward(args) -> int:
    from redline.train.gap_reward import GapRewardConfig, train_gap_reward

    config = configured(GapRewardConfig, args, "train gap-reward", config_name="train_config.json")
    metrics = train_gap_reward(config, args.out)
    print(gap_accuracy_summary(metrics), file=sys.stderr)
    print(json_text(metrics))
    return 0


def _train_dpo(args) -> int:
    from redline.train.dpo import DPOSettings, train_dpo

    config = configured(DPOSettings, args, "train dpo", config_name="train_config.json")
    print(json_text(train_dpo(config, args.out)))
    return 0


def _train_ppo(args) -> int:
    from redline.train.ppo import PPOConfig, train_ppo

    config = configured(PPOConfig, args, "train ppo", config_name="train_config.json")
    print(json_text(train_ppo(config, args.out)))
    return 0


def _train_reward(args) -> int:
    from redline.train.reward import RewardConfig, train_reward

    config = configured(RewardConfig, args, "train reward", config_name="train_config.json")
    metrics = train_reward(config, args.out)
    print(accuracy_summary(metrics), file=sys.stderr)
    print(json_text(metrics))
    return 0


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _interval(m: dict, key: str) -> str:
    ci = m.get(key)
    return f" [{ci[0]:.1%}, {ci[1]:.1%}]" if ci else ""


def accuracy_summary(m: dict, lead: str | None = None, scope: str = "held-out") -> str:
    """One line a person reads: held-out accuracy, each figure beside its ceiling on the same pairs.

    ``lead`` replaces the opening figure (the gap model's, ``gap_accuracy_summary``); ``scope`` names
    what was scored; the ceilings come from ``train.reward.comparison_accuracy``'s keys, which both
    trainers and `evaluate rankings` report.
    """
    if lead is None:
        ties = m.get("eval_ties", 0)
        tied = f"{ties} labelled {'tie' if ties == 1 else 'ties'} not scored"
        if m.get("eval_all_tied_rankings"):  # rankings with no comparison at all: left out, and said
            n = m["eval_all_tied_rankings"]
            tied += (f"; {n} {'ranking' if n == 1 else 'rankings'} all tied, with {m['eval_all_tied_comparisons']} "
                     "comparisons, left out")
        if not m.get("eval_comparisons"):
            return f"{scope}: no decisive comparison to score ({tied})"
        lead = (f"{scope}: {_percent(m.get('eval_accuracy'))}{_interval(m, 'eval_accuracy_ci95')} right on "
                f"{m['eval_comparisons']} decisive comparisons ({tied})")
    line = lead
    if m.get("eval_label_ceiling") is not None:
        line += f"; the oracle itself scores {_percent(m['eval_label_ceiling'])} against these labels"
        n = m.get("eval_oracle_comparisons", 0)
        if n:
            line += (f"; against the oracle: {_percent(m.get('eval_oracle_accuracy'))}{_interval(m, 'eval_oracle_accuracy_ci95')} "
                     f"on the {n} pairs it can tell apart, "
                     f"where the annotators' labels are {_percent(m.get('eval_annotator_oracle_accuracy'))} right")
        else:
            line += "; the oracle ties every one of them"
    return line


def difference_summary(m: dict, model: str, against: str) -> str:
    """One line: ``accuracy_difference``'s figures, in points, with their paired intervals."""
    points = lambda x: f"{100 * x:+.1f}"
    parts = []
    for key, what in (("eval_accuracy_difference", "on the labels' decisive comparisons"),
                      ("eval_oracle_accuracy_difference", "against the oracle")):
        if m.get(key) is not None:
            ci = m.get(f"{key}_ci95")  # None from one prompt: nothing to resample
            interval = f" [{points(ci[0])}, {points(ci[1])}]" if ci else ""
            parts.append(f"{points(m[key])} points{interval} {what}")
    if not parts:
        return f"{model} minus {against}: no decisive comparison to tell them apart"
    return f"{model} minus {against}: {'; '.join(parts)} (paired over the same prompts)"


def gap_accuracy_summary(m: dict) -> str:
    """``accuracy_summary`` for the reward-gap model, led by its preference accuracy r_gap(w,l) > r_gap(l,w)."""
    identical = m.get("eval_identical_pairs", 0)
    left_out = (f" ({identical} held-out {'pair' if identical == 1 else 'pairs'} with chosen identical to rejected "
                "left out: no ordering to score)") if identical else ""
    if not m.get("eval_pairs"):
        return "held-out: no pair to score" + left_out
    return accuracy_summary(m, f"held-out: r_gap(w,l) > r_gap(l,w) on {_percent(m.get('eval_accuracy_wl>lw'))} of "
                               f"{m['eval_pairs']} pairs{left_out} (mean of PIT's five orderings {_percent(m.get('eval_accuracy'))})")


def _train_critic(args) -> int:
    from redline.train.critic import CriticConfig, train_critic

    config = configured(CriticConfig, args, "train critic", config_name="train_config.json")
    metrics = train_critic(config, args.out)
    print(json_text(metrics))
    return 0


def _train_sft(args) -> int:
    from redline.train.sft import DemonstrationConfig, train_demonstrations

    config = configured(DemonstrationConfig, args, "train sft", config_name="train_config.json")
    print(json_text(train_demonstrations(config, args.out)))
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
    from redline.improve.revise import ReviseConfig, revise

    config = configured(ReviseConfig, args, "revise")
    summary = revise(config, args.out)
    print(json_text(summary["iterations"]))
    return 0


# ----------------------------------------------------------------------------- generate


def _add_generate(sub) -> None:
    from redline.config import add_settings_arguments
    from redline.respond import GenerateConfig

    p = sub.add_parser(
        "generate",
        help="sample any model's responses to the prompts of a record file (to judge a policy)",
        description="Writes response records (id and meta kept from the prompts' records) to OUT, chunk by chunk; "
        "rerun the same command to resume. Judge them with `redline evaluate --a OUT --b OTHER --judge oracle --out DIR`.",
    )
    add_settings_arguments(p, GenerateConfig)
    add_out(p, help="response records (JSONL)")
    p.set_defaults(func=_generate)


def _generate(args) -> int:
    from redline.respond import GenerateConfig, generate_responses

    config = configured(GenerateConfig, args, "generate", file=True)
    print(generate_responses(config, args.out))
    return 0


# ----------------------------------------------------------------------------- improve (PIT), refine (Self-Refine)


def _add_improve(sub) -> None:
    from redline.config import add_settings_arguments
    from redline.improve.pit import ImproveConfig

    p = sub.add_parser(
        "improve",
        help="improve any model's responses with a PIT policy, iteratively (Wang et al. 2023)",
        description="Iteration k rewrites the output of iteration k-1: y_{t+1} = PIT(x, y_t). The same output layout, "
        "stop rules and resuming as `redline revise`; --model must be a `redline train pit` run.",
    )
    add_settings_arguments(p, ImproveConfig)
    add_out(p, help="output folder")
    p.set_defaults(func=_improve)


def _improve(args) -> int:
    from redline.improve.pit import ImproveConfig, improve

    config = configured(ImproveConfig, args, "improve")
    print(json_text(improve(config, args.out)["iterations"]))
    return 0


def _add_refine(sub) -> None:
    from redline.config import add_settings_arguments
    from redline.improve.self_refine import RefineConfig

    p = sub.add_parser(
        "refine",
        help="Self-Refine: the model gives feedback on its response, then refines it (Madaan et al. 2023)",
        description="Each iteration asks the model for feedback, then for a refinement given the feedback; an item "
        "stops when its feedback says NO ISSUES (--stop nothing, the default). The same output layout and resuming "
        "as `redline revise`.",
    )
    add_settings_arguments(p, RefineConfig)
    add_out(p, help="output folder")
    p.set_defaults(func=_refine)


def _refine(args) -> int:
    from redline.improve.self_refine import RefineConfig, refine

    config = configured(RefineConfig, args, "refine")
    print(json_text(refine(config, args.out)["iterations"]))
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
    from redline.experiments.critic import CriticExperimentConfig, run_critic_experiment

    config = configured(CriticExperimentConfig, args, "experiment critic")
    run_critic_experiment(config, args.out)
    print((args.out / "results.md").read_text(encoding="utf-8"))
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
    from redline.config import add_settings_arguments
    from redline.demo import DemoConfig

    add_settings_arguments(p, DemoConfig)
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default: %(default)s)")
    p.set_defaults(func=_demo)


def _demo(args) -> int:
    from redline.demo import DemoConfig, run_demo

    print(run_demo(configured(DemoConfig, args, "demo"), args.out, verbose=args.verbose))
    return 0


# ----------------------------------------------------------------------------- evaluate


def _settings_parser(parent, name: str, settings, func, **texts):
    """A (sub)command whose flags are a settings dataclass's fields, plus --out. The dataclass has an ``out`` field,
    so ``--config`` (the config a run wrote) may give it instead; ``settings_from_args`` requires one or the other."""
    from redline.config import add_settings_arguments

    p = parent.add_parser(name, **texts)
    add_settings_arguments(p, settings, skip=("out",))
    add_out(p, required=False, help="output folder (required, here or as out in --config)")
    p.set_defaults(func=func)
    return p


def _add_evaluate(sub) -> None:
    from redline.evaluate import AgreementConfig, EvaluateConfig, RankingsEvalConfig, TableConfig
    from redline.rollouts import RolloutsConfig

    p = _settings_parser(
        sub, "evaluate", EvaluateConfig, _evaluate,
        help="judge two sets of responses: win rate, 95%% interval, length-controlled rate, report",
        description="Judge response records of A against B, pair by pair (matched by id, else by prompt). "
        "OUT gets judgments.jsonl (rerun to resume), summary.json and report.md. --a may be a revise/improve/"
        "refine output folder (iteration_1.jsonl ... iteration_N.jsonl): every iteration is judged against "
        "the original and the win-rate curve is drawn (win_rate_curve.png).",
    )
    more = p.add_subparsers(dest="evaluate_command", required=False, metavar="COMMAND")
    _settings_parser(
        more, "agreement", AgreementConfig, _evaluate_agreement,
        help="how often two judges agree on the same pairs (rate and Cohen's kappa)",
        description="Judge A against B with two judges (OUT/judge_1, OUT/judge_2; rerun to resume), or read "
        "judgments files by two judges, and write OUT/agreement.json: agreement rate and Cohen's kappa "
        "over a/b/tie on the pairs both judged validly.",
    )
    _settings_parser(
        more, "rankings", RankingsEvalConfig, _evaluate_rankings,
        help="a reward model's accuracy on rankings or preferences, beside the labels' ceilings",
        description="Score every response of every ranking with a reward model and print how often it orders "
        "the decisive labelled pairs as the labels do (and, on simulated data, as the oracle does), each beside "
        "its ceiling, with 95% intervals over prompts; --held-out-of RUN scores only the prompts that run held "
        "out. Writes OUT/summary.json.",
    )
    _settings_parser(
        more, "rollouts", RolloutsConfig, _evaluate_rollouts,
        help="an RL run's rollouts read by the oracle, iteration by iteration, beside the reward it climbed",
        description="Read RUN/rollouts.jsonl (every episode a `redline train ppo` run trained on) with the simulated "
        "oracle and print, by blocks of iterations, the run's mean reward beside the rollouts' oracle quality, the "
        "share at quality 1, the share cut at the token cap and the reward-oracle correlation: whether the score the "
        "policy climbed is the quality it stands for. --against RUN2 (same prompts and --seed) pairs the two runs' "
        "episodes and gives the quality difference with a 95% interval. A `train pit` RL stage's rewrites are read "
        "beside the references they rewrite (better, worse, the reward's correlation with the oracle's gain). Writes "
        "OUT/rollouts.json, rollouts.md, episodes.jsonl and rollouts.png. Simulated data only (the prompts need "
        "meta.instructions).",
    )
    _settings_parser(
        more, "table", TableConfig, _evaluate_table,
        help="finished evaluations side by side: one table (markdown, JSON) and one plot of the win rates",
        description="Read the output folders of `redline evaluate` (each row summarised again from its judgments, "
        "with the folder's own seed and resamples) and write OUT/table.md, OUT/table.json and OUT/win_rates.png: "
        "every arm's win rate with its 95% interval and, where the judge keeps a score per response (the oracle's "
        "quality, a reward model's score), the paired difference A - B with its interval. Judges nothing.",
    )


def _evaluate(args) -> int:
    from redline.evaluate import EvaluateConfig, evaluate, table_row, TABLE_HEAD

    from redline.config import settings_from_args
    from redline.judges import parse_judge

    judge = parse_judge(settings_from_args(EvaluateConfig, args).judge)  # a bad spec writes nothing
    try:
        config = configured(EvaluateConfig, args, "evaluate")
        summary = evaluate(config, judge)
    finally:
        judge.close()
    rows = summary.get("iterations") or [summary]
    print(TABLE_HEAD)
    for row in rows:
        print(table_row(f"iteration {row['iteration']}" if "iteration" in row else "A vs B", row))
    print(f"\nwrote {config.out}/summary.json and {config.out}/report.md")
    worst = max(rows, key=lambda row: row.get("invalid_rate") or 0)
    if (worst.get("invalid_rate") or 0) > config.max_invalid:
        where = f"iteration {worst['iteration']}: " if "iteration" in worst else ""
        raise RedlineError(f"{where}{worst['invalid']} of {worst['pairs']} verdicts are invalid ({worst['invalid_rate']:.0%}, "
                           f"more than --max-invalid {config.max_invalid:.0%}): the judge failed or answered nothing usable; "
                           f"see the raw answers in {config.out}")
    return 0


def _evaluate_agreement(args) -> int:
    from redline.evaluate import AgreementConfig, evaluate_agreement

    config = configured(AgreementConfig, args, "evaluate agreement")
    result = evaluate_agreement(
        judges=[j.strip() for j in config.judges.split(",")] if config.judges else None, a=config.a, b=config.b,
        out=config.out, judgments=config.judgments.split(",") if config.judgments else None, seed=config.seed,
        limit=config.limit, skip_invalid=config.skip_invalid,
    )
    kappa = "–" if result["kappa"] is None else f"{result['kappa']:.3f}"
    rate = "–" if result["agreement"] is None else f"{100 * result['agreement']:.1f}%"
    print(f"{result['judges'][0]} vs {result['judges'][1]}: agreement {rate}, Cohen's kappa {kappa} "
          f"on {result['both_valid']} of {result['pairs']} pairs (both valid)")
    return 0


def _evaluate_table(args) -> int:
    from redline.config import settings_from_args
    from redline.evaluate import TableConfig, evaluate_table, table_lines, table_rows

    rows = table_rows(settings_from_args(TableConfig, args))  # before --overwrite clears OUT: its table.json may be read
    config = configured(TableConfig, args, "evaluate table")
    print("\n".join(table_lines(evaluate_table(config, rows), config.title)))
    print(f"\nwrote {config.out}/table.md, table.json and win_rates.png", file=sys.stderr)
    return 0


def _evaluate_rollouts(args) -> int:
    from redline.rollouts import RolloutsConfig, evaluate_rollouts, rollout_lines

    config = configured(RolloutsConfig, args, "evaluate rollouts")
    print("\n".join(rollout_lines(evaluate_rollouts(config))[2:]))
    print(f"wrote {config.out}/rollouts.json, rollouts.md, episodes.jsonl and rollouts.png", file=sys.stderr)
    return 0


def _evaluate_rankings(args) -> int:
    from redline.evaluate import RankingsEvalConfig, evaluate_rankings

    config = configured(RankingsEvalConfig, args, "evaluate rankings")
    summary = evaluate_rankings(config)
    scope = "held-out" if config.held_out_of else f"on all {summary['prompts']} prompts of {config.data} (not only held-out ones)"
    print(accuracy_summary(summary, scope=scope))
    if config.against:
        print(accuracy_summary(summary["against"], scope=f"--against {config.against}"))
        print(difference_summary(summary, config.model, config.against))
    print(f"wrote {config.out}/summary.json and scores.jsonl", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- serve


@dataclass
class ServeConfig:
    """`redline serve`: the model, where to listen, and the server's limits. (It lives here, not in serve.py,
    which needs fastapi at import: the parser must build without it.)"""

    model: str = field(default="", metadata={"required": True, "help":
        "hub id, local path, a run folder, 'embedded' (SmolLM2-135M-Instruct) or 'tiny-random'"})
    dtype: str = field(default="float32", metadata={"choices": ("float32", "bfloat16", "float16"), "help": "weights dtype"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, cuda:1, mps or auto"})
    port: int = field(default=8000, metadata={"min": 0, "max": 65535, "help": "the port to listen on"})
    host: str = field(default="127.0.0.1", metadata={"help": "the address to listen on (0.0.0.0 to listen beyond this machine)"})
    api_key_file: Path | None = field(default=None, metadata={"help":
        "require 'Authorization: Bearer KEY' with KEY the first line of this file (or set $REDLINE_API_KEY)"})
    max_batch: int = field(default=16, metadata={"min": 1, "help": "requests decoded together"})
    max_concurrency: int = field(default=64, metadata={"min": 1, "help": "requests in flight; more get 429"})
    max_tokens_limit: int = field(default=1024, metadata={"min": 1, "help":
        "the most tokens a request may ask for per choice; more is a 400"})
    max_prompt_tokens: int = field(default=2048, metadata={"min": 1, "help":
        "transformers backend: the longest prompt accepted, cut to the model's context; longer is a 400"})
    max_body_bytes: int = field(default=16 * 2**20, metadata={"min": 1, "help":
        "the largest request body, in bytes (16777216 is 16 MiB); a larger one is a 413, never read past the limit"})
    batch_wait_ms: float = field(default=5.0, metadata={"min": 0, "help": "vllm backend: how long a request waits for others to batch with"})
    served_name: str | None = field(default=None, metadata={"help": "the model name clients ask for (default: --model)"})
    backend: str = field(default="transformers", metadata={"choices": ("transformers", "vllm"), "help": "generation backend"})


def _add_serve(sub) -> None:
    from redline.config import add_settings_arguments

    p = sub.add_parser(
        "serve",
        help="an OpenAI-compatible server (/v1/chat/completions, /v1/completions, /v1/models) over a model",
        description="Serve a model over HTTP for any OpenAI client (streaming and n included), and for the LLM "
        "judge (--judge openai:MODEL@http://HOST:PORT/v1). The transformers engine batches requests continuously, "
        "token by token, so a short request never waits for a long one. Needs the serve extra: "
        "pip install 'redline[serve]'.",
    )
    add_settings_arguments(p, ServeConfig, resumable=False)
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' (default: $REDLINE_API_KEY; unset: no key). A key given "
                   "here shows in `ps`: prefer the variable or --api-key-file; never read from --config")
    p.set_defaults(func=_serve)


def _serve(args) -> int:
    from redline.config import settings_from_args
    from redline.serve import serve  # first: without fastapi, one line naming the extra

    config = settings_from_args(ServeConfig, args)
    check_device(config)
    if args.api_key and config.api_key_file is not None:
        raise RedlineError("give --api-key or --api-key-file, not both")
    api_key = args.api_key or os.environ.get("REDLINE_API_KEY") or None
    if config.api_key_file is not None:
        api_key = _read_api_key(config.api_key_file)
    serve(config.model, host=config.host, port=config.port, api_key=api_key, max_batch=config.max_batch,
          max_concurrency=config.max_concurrency, batch_wait_ms=config.batch_wait_ms,
          max_tokens_limit=config.max_tokens_limit, max_prompt_tokens=config.max_prompt_tokens,
          max_body_bytes=config.max_body_bytes, served_name=config.served_name, backend=config.backend,
          dtype=config.dtype, device=config.device)
    return 0


def _read_api_key(path: Path) -> str:
    """The first line of ``path``, stripped; a BOM (Notepad writes one) is no part of the key: kept, it made every
    client's key wrong."""
    from redline.records import read_text_file

    lines = read_text_file(path, "the API key file").splitlines()
    api_key = lines[0].strip() if lines else ""
    if not api_key:
        raise RedlineError(f"{path}: line 1: the API key is empty")
    return api_key


# ----------------------------------------------------------------------------- simulate


def _add_simulate(sub) -> None:
    sim = sub.add_parser(
        "simulate", help="the simulated-annotator environment: build feedback data with known truth, score responses"
    ).add_subparsers(dest="simulate_command", required=True, metavar="COMMAND")

    p = sim.add_parser(
        "build",
        help="sample K responses per prompt; write rankings, preferences, feedback, demonstrations, test, manifest",
        description="Draw writing tasks with verifiable instructions, sample K responses per prompt, and let a pool "
        "of noisy simulated annotators rank, compare, critique and revise them. Rerun with the same --out to resume.",
    )
    from redline.config import add_settings_arguments
    from redline.simulate.build import BuildConfig

    add_settings_arguments(p, BuildConfig, skip=("out",))
    add_out(p, required=False, help="output folder (required, here or as out in --config)")
    p.set_defaults(func=_simulate_build)

    from redline.simulate.build import ScoreConfig

    p = sim.add_parser("score", help="oracle quality of records that carry their instructions in meta; prints one JSON line")
    add_settings_arguments(p, ScoreConfig, resumable=False)  # prints its result, writes nothing
    p.set_defaults(func=_simulate_score)

    from redline.simulate.rank import RankConfig

    p = sim.add_parser(
        "rank", help="the simulated annotators rank any model's responses, several to a prompt, into rankings",
        description="Group response records by id (else prompt) across the files, let one annotator of the pool rank "
        "each group from the oracle's quality with its own noise (as `simulate build` does), and write ranking "
        "records: a reward model then learns on a policy's own answers, as InstructGPT's later comparisons were "
        "collected on its policies' outputs. --rollouts RUN ranks what an RL run trained on instead (an iteration's "
        "samples of one prompt together; a PIT stage's rewrites against their references). Prints what the labels "
        "teach (ties, noise, decisive labels right).",
    )
    add_settings_arguments(p, RankConfig)
    add_out(p, help="the rankings file to write (JSONL)")
    p.set_defaults(func=_simulate_rank)


def _simulate_build(args) -> int:
    from redline.simulate.build import BuildConfig, build

    config = configured(BuildConfig, args, "simulate build")
    out = Path(config.out)  # --out, or the out of --config
    manifest = build(config)
    counts, quality, met = manifest["counts"], manifest["quality"], manifest["all_met"]
    for name in ("demonstrations", "rankings", "preferences", "feedback", "test", "test_partial", "test_fixed"):
        print(f"wrote {counts[name]} records to {out / (name + '.jsonl')}")
    agreement = manifest["agreement"]["mean"]  # None: a pool of one annotator has nobody to agree with
    print(f"annotator agreement {'–' if agreement is None else f'{agreement:.3f}'}; oracle quality of responses {quality['responses'] or 0:.3f} "
          f"(all instructions met {met['responses'] or 0:.1%}), of revisions {quality['revisions'] or 0:.3f} ({met['revisions'] or 0:.1%})")
    print(_labels_line(manifest["labels"], "comparisons in the rankings"))
    return 0


def _labels_line(labels: dict, what: str) -> str:
    """What a rankings file's labels teach (``simulate.build.label_figures``), in one line; a share with nothing to
    count (no decisive label) is –, not 0%."""
    from redline.evaluate import percent

    return (f"{labels['comparisons']} {what}: {percent(labels['labelled_ties_share'])} labelled ties, "
            f"{percent(labels['oracle_ties_broken_by_noise_share'])} oracle ties broken by noise, decisive labels right "
            f"{percent(labels['decisive_labels_right'])}")


def _simulate_rank(args) -> int:
    from redline.simulate.rank import RankConfig, rank

    config = configured(RankConfig, args, "simulate rank", file=True)
    result = rank(config, args.out)
    dropped = ", ".join(f"{n} {why}" for why, n in result["dropped"].items()) or "none"
    pairs = f"{result['pairs']} preference pairs from " if "pairs" in result else ""
    empty = f"; empty responses left out: {result['empty_responses_left_out']}" if result["empty_responses_left_out"] else ""
    print(f"wrote {pairs}{result['rankings']} rankings to {args.out} (responses per ranking: "
          f"{', '.join(f'{k}: {n}' for k, n in result['responses_per_ranking'].items())}; groups dropped: {dropped}{empty}); "
          f"mean oracle quality of the ranked responses {result['mean_oracle_quality_ranked']:.3f}")
    print(_labels_line(result["labels"], "comparisons"))
    return 0


def _simulate_score(args) -> int:
    from redline.config import settings_from_args
    from redline.simulate.build import ScoreConfig, score_file

    config = settings_from_args(ScoreConfig, args)
    result = score_file(config.input, config.field, limit=config.limit, skip_invalid=config.skip_invalid)
    result.pop("skipped", None)  # the read printed what it skipped, and why, on stderr
    print(json_text(result))
    return 0


# ----------------------------------------------------------------------------- app


def _add_app(sub) -> None:
    from redline.app.commands import add_app_commands  # argparse only; the handlers import the app

    add_app_commands(sub)


# ----------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="redline",
        description="Teach language models from human feedback: rankings, critiques and revisions, preference pairs.",
    )
    parser.add_argument("--version", action="version", version=f"redline {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.add_argument("--verbose", action="store_true", help="also show the libraries' deprecation warnings and "
                        "notices and the dataset-preparation bars (hidden by default; redline's progress, errors "
                        "and its line on a checkpoint that does not fit its model always show)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(sub)
    _add_data(sub)
    _add_train(sub)
    _add_revise(sub)
    _add_generate(sub)
    _add_improve(sub)
    _add_refine(sub)
    _add_experiment(sub)
    _add_evaluate(sub)
    _add_serve(sub)
    _add_simulate(sub)
    _add_app(sub)
    return parser


def _release(args: argparse.Namespace) -> None:
    """A run refused before it wrote anything leaves no fingerprint (nor a folder it created)."""
    if getattr(args, "claimed", None):
        from redline.config import release_output

        out, config_name, created, file, found = args.claimed
        release_output(out, config_name=config_name, created=created, file=file, found=found)


def _refuse_flags_before_a_subcommand(parser, argv: list[str], args) -> None:
    """``evaluate`` takes flags of its own and has subcommands that take the same names: argparse lets a
    subcommand's defaults overwrite what the parent took, so ``evaluate --seed 5 agreement ...`` ran with
    seed None and ``evaluate --overwrite rankings ...`` did not overwrite. Refused, naming the flags."""
    sub = getattr(args, "evaluate_command", None)
    if getattr(args, "command", None) != "evaluate" or not sub:
        return
    start = argv.index("evaluate")
    end = argv.index(sub, start + 1)
    given = [a.split("=")[0] for a in argv[start + 1 : end] if a.startswith("-")]
    if given:
        parser.error(f"{', '.join(given)} given before `evaluate {sub}`, where it would be ignored: "
                     f"give `evaluate {sub}`'s flags after it (redline evaluate {sub} --help)")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread (``sigterm_as_interrupt``)."""


def _terminated(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends at once one stuck in C (a hung collective)
    raise Terminated


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM (``kill PID``, a scheduler's stop, torchrun ending the other processes of a failed launch) ends the
    command as Ctrl-C does: its output lock removed, a claim that wrote nothing released. Python's default ended it
    where it stood, leaving ``.NAME.lock`` (held on by any process it had started, which refused the next run). A
    handler the caller set, or a thread other than the main one, is left as it is; the default is put back after. A
    launched process other than the main one holds no lock (nor claim): it is left to the default, so that the
    launcher ending a failed launch need not wait for one stuck in a collective (in C, where no handler runs)."""
    if (threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL
            or _launched_worker()):
        yield
        return
    signal.signal(signal.SIGTERM, _terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main(argv: list[str] | None = None) -> int:
    from redline.records import RecordError

    # OpenMP threads that sleep while they wait for each other, unless the user chose: spinning ones collapse
    # when another busy process shares the cores (RESULTS "Training", "Threads beside another job"). libgomp
    # reads it once, when torch loads, which is after this line (the handlers import torch); empty is unset.
    if not os.environ.get("OMP_WAIT_POLICY"):
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    parser = build_parser()
    args = parser.parse_args(argv)
    _refuse_flags_before_a_subcommand(parser, sys.argv[1:] if argv is None else argv, args)
    from redline.console import log_bars, quiet

    try:
        _refuse_a_launch_that_would_repeat(args)
        with sigterm_as_interrupt(), log_bars(), contextlib.nullcontext() if args.verbose else quiet():
            if _launched_worker():  # under a launcher one result line, the main process's
                with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
                    return args.func(args) or 0
            return args.func(args) or 0
    except KeyboardInterrupt as e:
        _release(args)
        print("redline: terminated (SIGTERM)" if isinstance(e, Terminated) else "redline: interrupted", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except (RedlineError, RecordError, FileNotFoundError, ValueError, OSError) as e:
        _release(args)
        if args.debug:
            raise
        message = str(e) if not isinstance(e, FileNotFoundError) else f"no such file: {e.filename or e}"
        print(f"redline: error: {message}" if "\n" not in message else message, file=sys.stderr)
        return 2
    finally:
        if getattr(args, "lock", None):  # a test's second main() in one process, or an output used after this
            args.lock.release()


if __name__ == "__main__":
    sys.exit(main())
