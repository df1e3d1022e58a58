"""The critic experiment: how much do critiques and revisions buy, by data size and iteration?

Jin et al. 2023, arXiv 2311.14543, found that a critic fine-tuned on ≤1000 records improves other
models' responses: revised ChatGPT responses won 56.6% against the originals after one iteration
and 65.9% after five. This reruns that experiment on any data in redline's layout (the simulated
set in ``data/simulated/`` by default: ``feedback.jsonl`` to train, ``test.jsonl`` to revise).

    redline experiment critic --data data/simulated --sizes 100,250,500,1000 --iterations 5 \\
        --judge oracle --out runs/critic-experiment

Steps (each resumes: a finished step is skipped when the command is run again):
  1. read the test responses; get the second responder's responses (``--second FILE``, or
     generate them with ``--second-model`` at ``--second-temperature`` on the same prompts);
  2. for each size N: train a critic on the first N feedback records (OUT/size_N/critic);
  3. revise the test responses and the second responder's for ``--iterations`` rounds
     (OUT/size_N/revise_test, OUT/size_N/revise_second);
  4. judge every iteration against the original (OUT/size_N/eval_*): win rate with its 95%
     interval, wins/ties/losses, and the revise run's parse failures;
  5. write OUT/results.json, OUT/results.md (a table) and OUT/win_rates.png (win rate against
     iteration, one line per size; dashed for the second responder).

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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from redline import RedlineError
from redline.train.critic import CriticConfig


@dataclass
class CriticExperimentConfig(CriticConfig):
    """`redline experiment critic`: the experiment's knobs, then the critic's training knobs."""

    sizes: str = field(default="100,250,500,1000", metadata={"help": "training-set sizes, comma-separated"})
    iterations: int = field(default=5, metadata={"min": 1, "help": "revision rounds"})
    judge: str = field(default="oracle", metadata={"help": "judge spec (oracle, reward:RUN, openai:MODEL@URL)"})
    test_limit: int | None = field(default=None, metadata={"min": 1, "help": "revise only the first N test responses"})
    second: str | None = field(default=None, metadata={"help": "a JSONL of another model's responses to the test prompts"})
    second_model: str | None = field(default="embedded", metadata={"help": "model that writes the second responses when --second is not given ('none' to skip)"})
    second_temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the second responder"})
    revise_temperature: float = field(default=0.0, metadata={"help": "the critic's sampling temperature (0 = greedy)"})
    revise_max_new_tokens: int = field(default=512, metadata={"help": "tokens for one critique and revision"})
    generate_dtype: str = field(default="bfloat16", metadata={"help": "weights dtype while revising (bfloat16: ~1.7x faster on a CPU)"})
    response_max_new_tokens: int = field(default=256, metadata={"help": "tokens for one second-responder response"})

    def size_list(self) -> list[int]:
        try:
            sizes = [int(s) for s in self.sizes.split(",") if s.strip()]
        except ValueError:
            raise RedlineError(f"--sizes {self.sizes!r}: expected integers separated by commas") from None
        if not sizes or any(s < 1 for s in sizes):
            raise RedlineError(f"--sizes {self.sizes!r}: every size must be at least 1")
        return sizes


def second_responses(config: CriticExperimentConfig, test_path: Path, n: int, out: Path) -> list | None:
    """Step 1: the second responder's responses to the first ``n`` test prompts (made once, then reused)."""
    from redline.records import read_records

    if config.second:
        return read_records(config.second, "response")
    if not config.second_model or config.second_model == "none":
        return None
    from redline.respond import GenerateConfig, generate_responses

    settings = GenerateConfig(model=config.second_model, prompts=str(test_path), source=f"{config.second_model}@T={config.second_temperature}",
                              limit=n, temperature=config.second_temperature, max_new_tokens=config.response_max_new_tokens,
                              seed=config.seed, dtype=config.dtype, device=config.device)
    return read_records(generate_responses(settings, out / "second_responses.jsonl"), "response")


def run_critic_experiment(config: CriticExperimentConfig, out: str | Path) -> dict[str, Any]:
    """Steps 1–5 of the module docstring; returns what results.json holds."""
    from redline.evaluate import EvaluateConfig, evaluate_iterations
    from redline.improve.revise import ReviseConfig, revise
    from redline.judges import parse_judge
    from redline.records import read_records, spread_over_prompts
    from redline.train.critic import train_critic

    out = Path(out)
    data = Path(config.data)
    feedback_path, test_path = data / "feedback.jsonl", data / "test.jsonl"
    for p in (feedback_path, test_path):
        if not p.exists():
            raise RedlineError(f"{p} is missing: --data must be a folder with feedback.jsonl and test.jsonl (redline simulate build makes one)")
    sizes = config.size_list()
    feedback = read_records(feedback_path, "feedback", skip_invalid=config.skip_invalid)
    if max(sizes) > len(feedback):
        raise RedlineError(f"--sizes asks for {max(sizes)} records; {feedback_path} has {len(feedback)}")
    judge = parse_judge(config.judge)
    judge.check()  # fail before hours of training, not after
    out.mkdir(parents=True, exist_ok=True)
    (out / "experiment_config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")

    # step 1
    test = read_records(test_path, "response", limit=config.test_limit)
    second = second_responses(config, test_path, len(test), out)
    sets = {"test": test} | ({"second": second[: len(test)]} if second else {})

    results: dict[str, Any] = {"config": asdict(config), "sizes": {}}
    for size in sizes:
        folder = out / f"size_{size}"
        # step 2
        critic_dir = folder / "critic"
        if not (critic_dir / "redline.json").exists():
            print(f"redline: training a critic on {size} records", file=sys.stderr)
            train_critic(replace(config, data=str(feedback_path), limit=size), critic_dir,
                         records=spread_over_prompts(feedback, size))
        engine = None
        results["sizes"][size] = {}
        for name, responses in sets.items():
            # step 3
            revise_dir = folder / f"revise_{name}"
            revise_config = ReviseConfig(
                critic=str(critic_dir), iterations=config.iterations, temperature=config.revise_temperature,
                max_new_tokens=config.revise_max_new_tokens, seed=config.seed, dtype=config.generate_dtype, device=config.device,
            )
            if engine is None:
                from redline.generation import load_engine

                engine = load_engine(str(critic_dir), dtype=config.generate_dtype, device=config.device)
            revise_summary = revise(revise_config, revise_dir, engine=engine, responses=responses)
            # step 4
            evaluation = evaluate_iterations(
                EvaluateConfig(a=str(revise_dir), judge=config.judge, out=str(folder / f"eval_{name}"), seed=config.seed),
                judge=judge,
            )
            failures = {it["iteration"]: it["parse_failures"] for it in revise_summary["iterations"]}
            for row in evaluation["iterations"]:
                row["parse_failures"] = failures.get(row["iteration"], 0)
            results["sizes"][size][name] = evaluation["iterations"]
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
        f"iterations: {results['config']['iterations']}",
        "",
        "| responses | size | iteration | win rate | 95% interval | wins / ties / losses | parse failures |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for size, sets in results["sizes"].items():
        for name, curve in sets.items():
            for row in curve:
                if row["iteration"] == 0:
                    continue
                ci = row.get("ci95")
                lines.append(
                    f"| {name} | {size} | {row['iteration']} | {_pct(row['win_rate'])} | "
                    f"{'–' if not ci else f'{_pct(ci[0])} – {_pct(ci[1])}'} | "
                    f"{row['wins']} / {row['ties']} / {row['losses']} | {row['parse_failures']} |"
                )
    (out / "results.md").write_text("\n".join(lines) + "\n")
    plot_win_rates(results, out / "win_rates.png")


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def plot_win_rates(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=120)
    for i, (size, sets) in enumerate(results["sizes"].items()):
        color = f"C{i}"
        for name, curve in sets.items():
            points = [(r["iteration"], 100 * r["win_rate"]) for r in curve if r["iteration"] > 0 and r["win_rate"] is not None]
            if points:
                style = "o-" if name == "test" else "s--"
                ax.plot(*zip(*points), style, color=color, label=f"{size} records, {name}")
    ax.axhline(50, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("win rate against the original (%)")
    ax.set_ylim(0, 100)
    ax.set_title("critic: revised vs original responses")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
