"""The critic experiment: how much do critiques and revisions buy, by data size and iteration?

Jin et al. 2023, arXiv 2311.14543, found that a critic fine-tuned on ≤1000 records improves other
models' responses: revised ChatGPT responses won 56.6% against the originals after one iteration
and 65.9% after five. This reruns that experiment on any data in redline's layout (the simulated
set in ``data/simulated/`` by default: ``feedback.jsonl`` to train, ``test.jsonl`` to revise).

    redline experiment critic --data data/simulated --sizes 100,250,500,1000 --iterations 5 \\
        --judge oracle --out runs/critic-experiment

Steps (each resumes: a finished step is skipped when the command is run again):
  1. read the test responses (refused if one shares a prompt with feedback.jsonl: they are held out);
     get the second responder's responses to the same prompts, matched by id (``--second FILE``, or generate them with ``--second-model`` at ``--second-temperature``; with
     ``--second-best-of K`` it samples K per prompt and keeps the one the oracle scores best, a
     stronger responder; or ``--second DATA/test_partial.jsonl``, the annotators' partly fixed
     answers of world v2); with ``--good`` also the test responses with every problem fixed
     (``DATA/test_fixed.jsonl``, or fixed here by a simulated annotator): answers a critic should
     leave at least as good, the no-harm check;
  2. for each size N: train a critic on N feedback records spread over prompts, one per prompt first
     (``train critic --limit``'s selection, with ``--unchanged-share``), not the first N lines
     (OUT/size_N/critic);
  3. revise every set of responses for ``--iterations`` rounds (OUT/size_N/revise_test,
     OUT/size_N/revise_second, OUT/size_N/revise_good);
  4. judge every iteration against the original (OUT/size_N/eval_*): win rate with its 95%
     interval, wins/ties/losses; beside it, from the revise run, how many answers changed, the
     failures by cause (parse, budget, loop) and the mean oracle quality of the answers;
  5. write OUT/results.json, OUT/results.md (a table) and OUT/win_rates.png (win rate against
     iteration, one line per size; dashed for the second responder, dotted for the good answers).

Deviations from the paper:
  1. The judge is the simulated annotators' oracle by default (the paper used GPT-4 and people);
     any judge spec works (``reward:RUN``, ``openai:MODEL@URL``).
  2. The critic is a LoRA fine-tune of a small model; the paper fine-tuned Falcon-40B-Instruct.
  3. The second responder stands in for ChatGPT/Vicuna: by default the embedded model sampled at a
     higher temperature, or any JSONL of another model's responses.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from redline import RedlineError
from redline.config import SEED_MAX, check_required
from redline.evaluate import percent
from redline.models import DTYPES as DTYPE_CHOICES
from redline.train.critic import CriticConfig


@dataclass
class CriticExperimentConfig(CriticConfig):
    """`redline experiment critic`: the experiment's knobs, then the critic's training knobs."""

    data: str = field(default="", metadata={"required": True, "help": "a folder holding feedback.jsonl and test.jsonl "
                                            "(a simulated set, such as data/simulated)"})
    sizes: str = field(default="100,250,500,1000", metadata={"list_of": int, "min": 1,
                                                             "help": "training-set sizes, comma-separated, each once"})
    # free: iteration k reads k-1's answers only, so a rerun with more goes on from the last (revise's --iterations)
    iterations: int = field(default=5, metadata={"min": 1, "result": False,
                                                 "help": "revision rounds (a rerun with more goes on from the last)"})
    judge: str = field(default="oracle", metadata={"help": "judge spec (oracle, reward:RUN, openai:MODEL@URL)"})
    test_limit: int | None = field(default=None, metadata={"min": 1, "help": "revise only the first N test responses"})
    second: str | None = field(default=None, metadata={"help": "a JSONL of another model's responses to the test prompts (matched by id)"})
    second_model: str | None = field(default="embedded", metadata={"help": "model that writes the second responses when --second is not given ('none' to skip)"})
    second_temperature: float = field(default=1.0, metadata={"min": 0, "help": "sampling temperature of the second responder"})
    second_best_of: int = field(default=1, metadata={"min": 1, "help": "the second responder samples K responses per prompt and keeps the oracle's best"})
    good: bool = field(default=False, metadata={"help": "also revise the test responses with every problem fixed (the no-harm check)"})
    # each revise_ field with its own bounds: revise's checks name revise's flags (--temperature), not these
    revise_temperature: float = field(default=0.0, metadata={"min": 0, "help": "the critic's sampling temperature (0 = greedy)"})
    revise_critique_tokens: int = field(default=256, metadata={"min": 1, "help": "new tokens for a critique (see revise --critique-tokens)"})
    revise_max_new_tokens: int | None = field(default=None, metadata={"min": 1, "help": "cap on new tokens per item (see revise --max-new-tokens)"})
    revise_no_repeat_ngram: int = field(default=0, metadata={"min": 0,
        "help": "forbid a revision to repeat an n-gram of this many tokens (see revise --no-repeat-ngram; 0 = off)"})
    apply: str = field(default="when-critiqued", metadata={"choices": ("when-critiqued", "always"),
                                                           "help": "when-critiqued or always (see revise --apply)"})
    generate_dtype: str = field(default="bfloat16", metadata={"choices": DTYPE_CHOICES, "help": "weights dtype while revising (bfloat16: ~1.7x faster on a CPU)"})
    response_max_new_tokens: int = field(default=256, metadata={"min": 1, "help": "tokens for one second-responder response"})
    # train critic's flags that this command refuses (refuse_unread): their help says so, not what train critic does
    limit: int | None = field(default=None, metadata={"min": 1, "help": "refused here: --sizes gives each critic's "
                                                                        "number of records"})
    push_to_hub: str | None = field(default=None, metadata={"result": False, "help": "refused here: each size's critic "
                                                            "stays in OUT/size_N/critic"})

    def size_list(self) -> list[int]:
        try:
            sizes = [int(s) for s in self.sizes.split(",") if s.strip()]
        except ValueError:
            raise RedlineError(f"--sizes {self.sizes!r}: expected integers separated by commas") from None
        if not sizes or any(s < 1 for s in sizes):
            raise RedlineError(f"--sizes {self.sizes!r}: every size must be at least 1")
        repeated = [s for i, s in enumerate(sizes) if s in sizes[:i]]
        if repeated:  # as the flag refuses it: the size ran twice and its results were reported once
            raise RedlineError(f"--sizes {self.sizes!r}: {repeated[0]} is given twice (name each size once)")
        return sizes


def critic_config(config: CriticExperimentConfig, data: Path, size: int) -> CriticConfig:
    """Step 2: the settings of size N's critic, a plain ``CriticConfig`` on ``data`` with ``--limit N``: its
    train_config.json held the experiment's fields too (sizes, judge ...), which `train critic --config` refused."""
    critic = CriticConfig(**{f.name: getattr(config, f.name) for f in fields(CriticConfig)})
    return replace(critic, data=str(data), limit=size)


def refuse_unread(config: CriticExperimentConfig) -> None:
    """The flags this command takes from ``train critic`` and ``--second-model`` that would be dropped or misread."""
    if config.limit is not None:  # each size's training replaced it
        raise RedlineError(f"--limit {config.limit}: experiment critic does not read it; --sizes gives each critic's "
                           "number of records")
    if config.push_to_hub:  # every size's critic was published to the one place, each over the last
        raise RedlineError(f"--push-to-hub {config.push_to_hub}: experiment critic trains a critic per size, and each "
                           "would replace the last there; leave it out (OUT/size_N/critic holds each one)")
    if config.second and config.second_best_of > 1:  # it samples the second responder, which --second replaces
        raise RedlineError(f"--second-best-of {config.second_best_of} samples --second-model; with --second "
                           f"{config.second} nothing is sampled: leave one out")
    if not config.second and config.second_best_of > 1 and config.second_model in (None, "", "none"):
        raise RedlineError(f"--second-best-of {config.second_best_of} samples --second-model; with --second-model "
                           f"{config.second_model or 'none'} there is no second responder: leave one out")


def second_responses(config: CriticExperimentConfig, test_path: Path, n: int, out: Path) -> list | None:
    """Step 1: the second responder's responses to the first ``n`` test prompts (made once, then reused)."""
    from redline.records import read_records

    if config.second:
        return read_records(config.second, "response", require_id=True)  # revise matches its iterations by id
    if not config.second_model or config.second_model == "none":
        return None
    from redline.respond import GenerateConfig, generate_responses

    samples = []
    for k in range(config.second_best_of):  # sample k of each prompt: its own file and seeds
        name = "second_responses.jsonl" if k == 0 else f"second_responses_{k}.jsonl"
        # seed + 100_003 k wrapped into --seed's range, which GenerateConfig holds its seed to
        settings = GenerateConfig(model=config.second_model, prompts=str(test_path), source=f"{config.second_model}@T={config.second_temperature}",
                                  limit=n, temperature=config.second_temperature, max_new_tokens=config.response_max_new_tokens,
                                  seed=(config.seed + 100_003 * k) % (SEED_MAX + 1), dtype=config.dtype, device=config.device)
        samples.append(read_records(generate_responses(settings, out / name), "response"))
    if len(samples) == 1:
        return samples[0]
    from redline.simulate.oracle import quality

    def best(candidates):
        chosen = max(candidates, key=lambda r: quality(r.meta, r.response, r.prompt if isinstance(r.prompt, str) else None))
        return replace(chosen, source=f"{chosen.source} best of {len(candidates)} by the oracle")

    return [best(candidates) for candidates in zip(*samples)]


def on_test_prompts(second: list, test: list, source: str) -> list:
    """Step 1: the second responses to the test prompts, matched by id in the test's order: a ``--second``
    file may hold them in another order, hold more, or miss some (``test_partial.jsonl`` has no edit of
    an empty answer), where taking its first lines revised answers to other prompts."""
    by_id = {r.id: r for r in second}
    refuse_other_prompts(by_id, test, source)
    matched = [by_id[r.id] for r in test if r.id in by_id]
    if not matched:
        raise RedlineError(f"{source} has no response for any of the {len(test)} test ids (matched by id)")
    if len(matched) < len(test):
        print(f"redline: {source} has responses for {len(matched)} of the {len(test)} test prompts", file=sys.stderr)
    return matched


def refuse_other_prompts(by_id: dict, test: list, source: str) -> None:
    """Step 1: a response matched to a test record by its id answers that record's prompt. Ids alone ("q0", "1")
    recur across data sets: another set's file was revised and judged as answers to these prompts, without a word."""
    from redline.records import prompt_key, prompt_text

    for r in test:
        if r.id in by_id and prompt_key(by_id[r.id].prompt) != prompt_key(r.prompt):
            raise RedlineError(f"{source}: id {r.id!r} answers another prompt than the test record of that id "
                               f"({prompt_text(by_id[r.id].prompt)[:60]!r}, not {prompt_text(r.prompt)[:60]!r}): "
                               "its ids do not name the test prompts")


def good_responses(test: list, fixed: Path) -> list:
    """Step 1: each test response with every problem fixed: the set's own ``test_fixed.jsonl`` where it
    has one (world v2), else fixed here by a simulated annotator (``demonstrate``)."""
    from redline.records import read_records
    from redline.simulate.annotators import make_pool
    from redline.simulate.instructions import parse_instructions
    from redline.simulate.tasks import Task

    if fixed.exists():
        by_id = {r.id: r for r in read_records(fixed, "response")}
        refuse_other_prompts(by_id, test, str(fixed))
        missing = [r.id for r in test if r.id not in by_id]
        if missing:
            raise RedlineError(f"{fixed} has no fixed response for test id {missing[0]!r} ({len(missing)} missing)")
        return [by_id[r.id] for r in test]

    annotator = make_pool()[0]
    good = []
    for r in test:
        if "instructions" not in r.meta:
            raise RedlineError(f"--good needs the instructions in each test record's meta; {r.id} has none")
        task = Task(r.id or "", r.meta.get("topic", ""), r.meta.get("form", "response"),
                    tuple(parse_instructions(r.meta["instructions"])), r.prompt if isinstance(r.prompt, str) else "")
        good.append(replace(r, response=annotator.demonstrate(task, r.response), source="annotator-fixed"))
    return good


def revise_counts(revise_dir: Path, summary: dict) -> dict[int, dict]:
    """Per iteration: answers changed, failures by cause, critiques that found nothing to fix, and
    the mean oracle quality of the answers (where the records carry their instructions)."""
    from redline.improve.loop import iteration_path
    from redline.records import read_jsonl_prefix

    counts = {}
    for it in [{"iteration": 0}] + summary["iterations"]:
        k = it["iteration"]
        rows = read_jsonl_prefix(iteration_path(revise_dir, k))
        counts[k] = {key: it[key] for key in ("changed", "failures", "nothing_to_fix") if key in it}
        counts[k]["mean_quality"] = _mean_quality(rows)
    return counts


def _mean_quality(rows: list[dict]) -> float | None:
    scored = [r for r in rows if "instructions" in (r.get("meta") or {})]
    if not scored:
        return None
    from redline.simulate.oracle import quality

    return round(sum(quality(r["meta"], r["response"], r["prompt"] if isinstance(r["prompt"], str) else None)
                     for r in scored) / len(scored), 4)


def run_critic_experiment(config: CriticExperimentConfig, out: str | Path) -> dict[str, Any]:
    """Steps 1–5 of the module docstring; returns what results.json holds."""
    from redline.evaluate import EvaluateConfig, evaluate_iterations
    from redline.improve.revise import ReviseConfig, revise
    from redline.judges import check_records, parse_judge
    from redline.records import read_records
    from redline.train.critic import check_weight, select_records, train_critic
    from redline.train.reward import refuse_shared_prompts

    check_required(config)  # built in Python: flags and config files were checked as they were read
    out = Path(out)
    data = Path(config.data)
    feedback_path, test_path = data / "feedback.jsonl", data / "test.jsonl"
    for p in (feedback_path, test_path):
        if not p.exists():
            raise RedlineError(f"{p} is missing: --data must be a folder with feedback.jsonl and test.jsonl (redline simulate build makes one)")
    sizes = config.size_list()
    refuse_unread(config)
    if config.second_best_of < 1:
        raise RedlineError(f"--second-best-of must be at least 1 (got {config.second_best_of})")

    def revise_config(critic_dir: Path) -> ReviseConfig:
        return ReviseConfig(
            critic=str(critic_dir), iterations=config.iterations, temperature=config.revise_temperature, apply=config.apply,
            critique_tokens=config.revise_critique_tokens, max_new_tokens=config.revise_max_new_tokens, seed=config.seed,
            dtype=config.generate_dtype, device=config.device, no_repeat_ngram=config.revise_no_repeat_ngram,
        )

    from redline.improve.loop import check_iterations_held, check_sampling, check_settings

    check_settings(config.iterations, "fixed", None)  # --iterations, --apply: before hours of training, not after
    for revised in sorted(out.glob("size_*/revise_*")):  # a rerun with fewer --iterations than a size revised
        check_iterations_held(revised, config.iterations)
    if config.revise_no_repeat_ngram == 1:  # check_sampling would name revise's --no-repeat-ngram, not this command's flag
        raise RedlineError("--revise-no-repeat-ngram must be 0 (off) or at least 2, got 1")
    check_weight(config)
    revise_config(data).check()
    check_sampling(revise_config(data))
    feedback = read_records(feedback_path, "feedback", skip_invalid=config.skip_invalid)
    if max(sizes) > len(feedback):
        raise RedlineError(f"--sizes asks for {max(sizes)} records; {feedback_path} has {len(feedback)}")
    judge = parse_judge(config.judge)
    judge.check()  # fail before hours of training, not after

    # step 1, and what revise and the judge need of every record (an id, the oracle's meta.instructions), checked
    # before OUT holds anything: found after the training, it cost the training, and the corrected rerun was refused
    test = read_records(test_path, "response", limit=config.test_limit, require_id=True)
    refuse_shared_prompts(feedback, test, str(feedback_path), str(test_path))  # a critic revising its training prompts
    check_records(judge, test, str(test_path))
    second = second_responses(config, test_path, len(test), out)
    sets = {"test": test} | ({"second": on_test_prompts(second, test, config.second or "the second responses")}
                             if second else {}) | (
        {"good": good_responses(test, data / "test_fixed.jsonl")} if config.good else {})
    for name, responses in sets.items():
        check_records(judge, responses, f"the {name} responses")
    out.mkdir(parents=True, exist_ok=True)  # its settings are OUT/config.json, written by the command (`configured`)

    results: dict[str, Any] = {"config": asdict(config), "sizes": {}}
    for size in sizes:
        folder = out / f"size_{size}"
        # step 2
        critic_dir = folder / "critic"
        if not (critic_dir / "redline.json").exists():
            print(f"redline: training a critic on {size} records", file=sys.stderr)
            train_critic(critic_config(config, feedback_path, size), critic_dir,
                         records=select_records(feedback, size, config.unchanged_share, str(feedback_path)))
        engine = None
        results["sizes"][size] = {}
        for name, responses in sets.items():
            # step 3
            revise_dir = folder / f"revise_{name}"
            if engine is None:
                from redline.generation import load_engine

                engine = load_engine(str(critic_dir), dtype=config.generate_dtype, device=config.device)
            revise_summary = revise(revise_config(critic_dir), revise_dir, engine=engine, responses=responses)
            # step 4
            evaluation = evaluate_iterations(
                EvaluateConfig(a=str(revise_dir), judge=config.judge, out=str(folder / f"eval_{name}"), seed=config.seed),
                judge=judge,
            )
            counts = revise_counts(revise_dir, revise_summary)
            for row in evaluation["iterations"]:
                row.update(counts.get(row["iteration"], {}))
            results["sizes"][size][name] = {"original_quality": counts[0]["mean_quality"], "iterations": evaluation["iterations"]}
        # steps 5, written after every size so a long run shows what it has
        write_results(results, out)
    return results


def write_results(results: dict[str, Any], out: Path) -> None:
    """Step 5: results.json, results.md and win_rates.png."""
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Critic experiment: revisions judged against the original responses",
        "",
        f"judge: `{results['config']['judge']}`, base model: `{results['config']['model']}`, "
        f"iterations: {results['config']['iterations']}, apply: {results['config'].get('apply', 'always')}",
        "",
        "| responses | size | iteration | win rate | 95% interval | wins / ties / losses | changed | "
        "failures: parse / budget / loop | mean quality (original) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for size, sets in results["sizes"].items():
        for name, curve in sets.items():
            for row in curve["iterations"]:
                if row["iteration"] == 0:
                    continue
                ci = row.get("ci95")
                failures = row.get("failures") or {}
                quality, original = row.get("mean_quality"), curve.get("original_quality")
                lines.append(
                    f"| {name} | {size} | {row['iteration']} | {percent(row['win_rate'])} | "
                    f"{'–' if not ci else f'{percent(ci[0])} – {percent(ci[1])}'} | "
                    f"{row['wins']} / {row['ties']} / {row['losses']} | {row.get('changed', '–')} | "
                    f"{failures.get('parse', 0)} / {failures.get('budget', 0)} / {failures.get('loop', 0)} | "
                    f"{'–' if quality is None else f'{quality:.3f}'}"
                    f"{'' if original is None else f' ({original:.3f})'} |"
                )
    (out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")  # "–": not the locale's
    plot_win_rates(results, out / "win_rates.png")


def plot_win_rates(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=120)
    for i, (size, sets) in enumerate(results["sizes"].items()):
        color = f"C{i}"
        for name, curve in sets.items():
            points = [(r["iteration"], 100 * r["win_rate"]) for r in curve["iterations"]
                      if r["iteration"] > 0 and r["win_rate"] is not None]
            if points:
                style = {"test": "o-", "second": "s--"}.get(name, "^:")
                ax.plot(*zip(*points), style, color=color, label=f"{size} records, {name}")
    ax.axhline(50, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("win rate against the original (%)")
    ax.set_ylim(0, 100)
    ax.set_title("critic: revised vs original responses")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    else:  # every verdict invalid: an empty legend was a matplotlib warning, and the blank plot said nothing of why
        ax.text(0.5, 0.75, "no valid verdict: no win rate to draw", transform=ax.transAxes, ha="center", color="grey")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
