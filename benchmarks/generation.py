"""Generation benchmark: how many tokens per second each way of generating gets from one model.

Methods, each run in its own subprocess so that its peak memory (RSS) is its own:

- ``naive``: ``model.generate`` one item at a time (``--naive-items`` of them: it is slow);
- ``batched``: ``model.generate`` on batches of 16, left-padded, in input order;
- ``engine``: redline's transformers engine (``load_engine(model)``), float32;
- ``engine-bf16``: the same engine with bfloat16 weights and K/V cache;
- ``engine-1``: the float32 engine given one item at a time (``--naive-items`` of them), the
  latency case that llama.cpp's single-prompt speed is about;
- ``llamacpp``: llama.cpp through ``llama-cpp-python`` on the embedded Q4_1 GGUF, one item at a time
  (skipped with a note where ``llama_cpp`` does not import).

Workloads, ``--items`` each (64 by default):

- ``revise``: a critique-and-revision prompt holding a question and a ~200-token response (~300
  prompt tokens with the chat template), 200 tokens out with EOS ignored, so every method generates
  exactly the same number of tokens;
- ``rollout``: a short question (~40 prompt tokens), up to 128 tokens out, EOS honoured as in a PPO
  rollout; each method counts the tokens it actually generated.
- ``budgets``: ``redline revise``'s own case: responses of 3–24 sentences, each item's new tokens its
  revision budget (``revision_budget`` with a 64-token critique: 1.5 × the response, rounded up to
  128), EOS ignored. The engines only: ``engine``/``engine-bf16`` take one call with a cap per
  prompt, ``engine-grouped``/``engine-bf16-grouped`` one call per distinct budget (revise before
  per-prompt caps), so the side by side is what that change bought. ``METHOD@N`` makes those
  calls on N items at a time, as revise's chunks do (``engine-bf16@32``, ``engine-bf16-grouped@32``).

Sampling is temperature 0.7, top-p 1. tokens/s counts generated tokens over wall time (model loading
and a short warm-up excluded; prefill included). A method that crashes is a FAILED row, its error above the
table, and the run exits 1. The ceiling is the CPU's fp32 matmul peak over the
FLOPs of one token of the embedded model: about 700 tokens/s (``--ceiling``).

    .venv/bin/python benchmarks/generation.py --out benchmarks/results/generation.json
    .venv/bin/python benchmarks/generation.py --workload rollout --items 16 --methods engine,batched
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

GROUPED = ("engine-grouped", "engine-bf16-grouped")  # the budgets workload's way before: one call per budget
METHODS = ("naive", "batched", "engine", "engine-bf16", "engine-1", "llamacpp", *GROUPED)
WORKLOADS = ("revise", "rollout", "budgets")
TEMPERATURE = 0.7
BATCH = 16

QUESTIONS = [
    "How do I keep basil alive indoors?",
    "Explain why the sky is blue to a ten-year-old.",
    "What should I pack for a three-day hiking trip?",
    "How can a small team run better meetings?",
    "Why do cats knock things off tables?",
    "Give me tips for learning to play the guitar as an adult.",
    "What is the difference between weather and climate?",
    "How should I prepare for a job interview at a startup?",
    "What are good habits for writing clean Python code?",
    "How does compound interest work?",
    "What makes a good night's sleep?",
    "How do I start running if I have never exercised?",
]
SENTENCES = [
    "It depends on several factors, and the most important one is consistency over time.",
    "Many people overlook the basics, which is usually where the biggest gains are found.",
    "Start small, measure what happens, and adjust your approach every week or so.",
    "A common mistake is trying to change everything at once instead of one thing at a time.",
    "Light, water and temperature all matter, but they interact in ways that are easy to miss.",
    "Scientists have studied this for decades, and the short answer is still surprisingly simple.",
    "If you write down what you did each day, patterns become obvious after a month.",
    "Experts disagree on the details, yet most of them agree on the general direction.",
    "The cheapest option is not always the worst one, and the most expensive is rarely the best.",
    "Ask someone who has done it before; an hour of advice can save weeks of trial and error.",
    "Remember that rest is part of the process, not a break from it.",
    "Keep a checklist, because memory fails exactly when you are tired or in a hurry.",
    "The first results may be disappointing, which is normal and says little about the outcome.",
    "Think about what could go wrong and prepare one simple plan for each case.",
    "Sometimes the best move is to do less, but to do it every single day without exception.",
    "Numbers help: even a rough estimate is better than a guess you never check.",
]
REVISE_TEMPLATE = (
    "Below is a question and a response written by an assistant. First write a short critique of the "
    "response: say what is wrong, missing or unclear. Then write an improved response that fixes every "
    "problem the critique names.\n\nQuestion: {question}\n\nResponse: {response}\n\n"
    "Answer in the form:\nCritique: ...\nRevision: ..."
)


def workload(name: str, items: int) -> tuple[list, dict]:
    """(prompts as chat messages, settings) of a workload; the same on every run."""
    rng = random.Random(0)
    prompts = []
    for i in range(items):
        question = QUESTIONS[i % len(QUESTIONS)]
        if name in ("revise", "budgets"):
            response = " ".join(rng.choice(SENTENCES) for _ in range(rng.randint(9, 12) if name == "revise" else rng.randint(3, 24)))
            prompts.append([{"role": "user", "content": REVISE_TEMPLATE.format(question=question, response=response)}])
        else:
            prompts.append([{"role": "user", "content": f"{question} Answer in a few sentences. ({i})"}])
    if name == "revise":
        return prompts, dict(max_new_tokens=200, ignore_eos=True)
    if name == "budgets":
        return prompts, dict(max_new_tokens=None, ignore_eos=True, critique_tokens=64)
    return prompts, dict(max_new_tokens=128, ignore_eos=False)


# ----------------------------------------------------------------------------- the methods (worker side)


def _count_generated(new_ids: list[int], eos_ids: set[int]) -> int:
    """Tokens a row of ``generate`` output really generated: up to and including its first EOS."""
    n = 0
    for t in new_ids:
        n += 1
        if t in eos_ids:
            break
    return n


def run_hf_generate(model_name: str, prompts, settings, batch: int) -> dict:
    import torch

    from redline.models import load_causal_lm, load_tokenizer

    model = load_causal_lm(model_name, "float32", "cpu")
    tok = load_tokenizer(model_name)
    tok.padding_side = "left"
    stops = model.generation_config.eos_token_id  # an int, or a list (Llama 3 ends a turn on either of two)
    eos = {tok.eos_token_id} | set(stops if isinstance(stops, (list, tuple)) else [stops])
    texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    m = settings["max_new_tokens"]
    kwargs = dict(do_sample=True, temperature=TEMPERATURE, top_p=1.0, max_new_tokens=m, pad_token_id=tok.pad_token_id)
    if settings["ignore_eos"]:
        kwargs["min_new_tokens"] = m  # EOS suppressed until max_new_tokens: equal counts for every method

    def go(chunk):
        enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1] :].tolist()
        return sum(_count_generated(row, eos) for row in new), int(enc["attention_mask"].sum())

    torch.manual_seed(0)
    go(texts[:1])  # warm-up
    start = time.perf_counter()
    tokens = prompt_tokens = 0
    for i in range(0, len(texts), batch):
        t, p = go(texts[i : i + batch])
        tokens += t
        prompt_tokens += p
    return dict(seconds=time.perf_counter() - start, tokens=tokens, prompt_tokens=prompt_tokens, items=len(texts))


def revision_budgets(engine, prompts, critique_tokens: int) -> list[int]:
    """Each budgets-workload item's new tokens, by ``redline revise``'s rule."""
    from redline.improve.revise import revision_budget, token_counter

    def response(prompt) -> str:
        return prompt[-1]["content"].split("Response: ", 1)[1].split("\n\nAnswer in the form", 1)[0]

    count_text, count_prompt, context = token_counter(engine)
    return [revision_budget(count_text(response(p)), count_prompt(p), critique_tokens, context) for p in prompts]


def run_engine(model_name: str, prompts, settings, dtype: str, one_at_a_time: bool = False, grouped: bool = False,
               chunk: int = 0) -> dict:
    from redline.generation import SamplingParams, load_engine

    engine = load_engine(model_name, dtype=dtype, device="cpu", ignore_eos=settings["ignore_eos"])
    engine.generate(prompts[:2], SamplingParams(temperature=TEMPERATURE, max_new_tokens=4), progress=False)
    if settings["max_new_tokens"] is None:  # budgets: a cap per prompt
        budgets = revision_budgets(engine, prompts, settings["critique_tokens"])
        per_item = [SamplingParams(temperature=TEMPERATURE, max_new_tokens=b) for b in budgets]
        size = chunk or len(prompts)
        chunks = [list(range(start, min(start + size, len(prompts)))) for start in range(0, len(prompts), size)]
        groups = [[i for i in c if budgets[i] == budget] for c in chunks for budget in sorted({budgets[i] for i in c})] \
            if grouped else chunks
    else:
        params = SamplingParams(temperature=TEMPERATURE, max_new_tokens=settings["max_new_tokens"])
        per_item = [params] * len(prompts)
        groups = [[i] for i in range(len(prompts))] if one_at_a_time else [list(range(len(prompts)))]
    out, stats = [None] * len(prompts), []
    for g in groups:  # item i's seed is i in every way of calling, so the completions can be compared
        for i, c in zip(g, engine.generate([prompts[i] for i in g], [per_item[i] for i in g], seeds=g,
                                           progress=not one_at_a_time)):
            out[i] = c
        stats.append(engine.last_stats)
    out = [c for c in out if c is not None]
    return dict(
        seconds=sum(s.seconds for s in stats),
        prefill_seconds=sum(s.prefill_seconds for s in stats),
        tokens=sum(s.completion_tokens for s in stats),
        prompt_tokens=sum(s.prompt_tokens for s in stats),
        shared_prompt_tokens=sum(s.shared_prompt_tokens for s in stats),
        items=len(out),
        finish_reasons={r: sum(c.finish_reason == r for c in out) for r in ("stop", "length")},
        calls=len(groups),
        completions_sha256=hashlib.sha256(json.dumps([c.token_ids for c in out]).encode()).hexdigest(),
    )


def run_llamacpp(model_name: str, prompts, settings, threads: int) -> dict:
    import llama_cpp

    from redline.models import embedded_gguf_path, load_tokenizer

    if model_name != "embedded":
        raise SystemExit("llama.cpp runs the embedded GGUF only")
    tok = load_tokenizer(model_name)
    import torch

    # --threads 0: torch's default, as the other methods get (os.cpu_count() counted every SMT thread)
    llm = llama_cpp.Llama(model_path=str(embedded_gguf_path()), n_ctx=1024, n_threads=threads or torch.get_num_threads(),
                          verbose=False, seed=0)
    m = settings["max_new_tokens"]
    bias = {tok.eos_token_id: -1e9} if settings["ignore_eos"] else None
    texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    llm.create_completion(texts[0], max_tokens=4, temperature=TEMPERATURE)  # warm-up
    start = time.perf_counter()
    tokens = prompt_tokens = 0
    for text in texts:
        out = llm.create_completion(text, max_tokens=m, temperature=TEMPERATURE, top_p=1.0, logit_bias=bias)
        tokens += out["usage"]["completion_tokens"]
        prompt_tokens += out["usage"]["prompt_tokens"]
    return dict(seconds=time.perf_counter() - start, tokens=tokens, prompt_tokens=prompt_tokens, items=len(texts))


def worker(args) -> dict:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # every method alike
    prompts, settings = workload(args.workload, args.items)
    method, _, chunk = args.worker.partition("@")  # engine-bf16@32: one call per 32 items, as revise's chunks
    if args.worker in ("naive", "engine-1", "llamacpp"):
        prompts = prompts[: args.naive_items]
    if args.worker == "batched" and args.batched_items:
        prompts = prompts[: args.batched_items]  # a rate: each batch of 16 runs on its own
    load_before = os.getloadavg()[0]
    if args.worker == "naive":
        result = run_hf_generate(args.model, prompts, settings, batch=1)
    elif args.worker == "batched":
        result = run_hf_generate(args.model, prompts, settings, batch=BATCH)
    elif method in GROUPED or (args.workload == "budgets" and method in ("engine", "engine-bf16")):
        dtype = "bfloat16" if "bf16" in method else "float32"
        result = run_engine(args.model, prompts, settings, dtype, grouped=method in GROUPED, chunk=int(chunk or 0))
    elif args.workload == "budgets":
        raise SystemExit(f"the budgets workload is for the engines, not {args.worker}")
    elif args.worker == "engine":
        result = run_engine(args.model, prompts, settings, "float32")
    elif args.worker == "engine-bf16":
        result = run_engine(args.model, prompts, settings, "bfloat16")
    elif args.worker == "engine-1":
        result = run_engine(args.model, prompts, settings, "float32", one_at_a_time=True)
    elif args.worker == "llamacpp":
        result = run_llamacpp(args.model, prompts, settings, args.threads)
    else:
        raise SystemExit(f"unknown method {args.worker}")
    result.update(
        method=args.worker,
        workload=args.workload,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        load_before=load_before,
        load_after=os.getloadavg()[0],
    )
    return result


# ----------------------------------------------------------------------------- the driver


def run_method(method: str, workload_name: str, args) -> dict:
    base, at, _ = method.partition("@")
    if workload_name == "budgets" and base not in (*GROUPED, "engine", "engine-bf16"):
        return dict(method=method, workload=workload_name, skipped="the budgets workload is the engines'")
    if workload_name != "budgets" and (base in GROUPED or at):
        return dict(method=method, workload=workload_name, skipped="a way of the budgets workload")
    if method == "llamacpp":
        import importlib.util

        if importlib.util.find_spec("llama_cpp") is None:
            return dict(method=method, workload=workload_name, skipped="llama-cpp-python is not installed")
    cmd = [sys.executable, __file__, "--worker", method, "--workload", workload_name, "--items", str(args.items),
           "--naive-items", str(args.naive_items), "--batched-items", str(args.batched_items),
           "--model", args.model, "--threads", str(args.threads)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:  # a crash, not a skip: its error is above in stderr, and the run exits 1
        return dict(method=method, workload=workload_name, failed=f"exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(runs: list[dict], ceiling: float) -> str:
    head = ("| workload | method | items | tokens | seconds | tokens/s | items/s | peak RSS (MB) | of ceiling "
            "| vs batched (budgets: vs grouped) |")
    lines = [head, "|" + " --- |" * 10]
    for r in runs:
        if "skipped" in r or "failed" in r:
            why = f"skipped: {r['skipped']}" if "skipped" in r else f"FAILED: {r['failed']}"
            lines.append(f"| {r['workload']} | {r['method']} | {why} |" + " |" * 7)
            continue
        name, _, chunk = r["method"].partition("@")
        base = "batched" if r["workload"] != "budgets" else name.removesuffix("-grouped") + "-grouped" + (f"@{chunk}" if chunk else "")
        batched = next((b for b in runs if b["workload"] == r["workload"] and b["method"] == base and "tokens_per_s" in b), None)
        vs = f"{r['tokens_per_s'] / batched['tokens_per_s']:.2f}×" if batched else "–"
        lines.append(
            f"| {r['workload']} | {r['method']} | {r['items']} | {r['tokens']} | {r['seconds']:.1f} | "
            f"{r['tokens_per_s']:.1f} | {r['items_per_s']:.2f} | {r['peak_rss_mb']:.0f} | "
            f"{100 * r['tokens_per_s'] / ceiling:.0f}% | {vs} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=(*WORKLOADS, "all"), default="all")
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--naive-items", type=int, default=8, help="items for the one-at-a-time methods")
    parser.add_argument("--batched-items", type=int, default=0, help="items for batched generate (0: --items)")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=0, help="torch threads for every method (0: torch's default)")
    parser.add_argument("--ceiling", type=float, default=700.0, help="tokens/s at the CPU's fp32 matmul peak")
    parser.add_argument("--out", default="benchmarks/results/generation.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    check_args(parser, args)

    import torch
    import transformers

    workloads = WORKLOADS if args.workload == "all" else (args.workload,)
    methods = [m for m in args.methods.split(",") if m]
    machine = dict(
        cpu=_cpu_name(),
        cores=os.cpu_count(),
        torch=torch.__version__,
        transformers=transformers.__version__,
        threads=args.threads or torch.get_num_threads(),
        omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", "(default)"),
        python=platform.python_version(),
        load_at_start=os.getloadavg(),
    )
    print(f"machine: {machine}", file=sys.stderr)
    runs = []
    for w in workloads:
        for m in methods:
            print(f"--- {w} / {m}", file=sys.stderr)
            r = run_method(m, w, args)
            if "skipped" not in r and "failed" not in r:
                r["tokens_per_s"] = r["tokens"] / r["seconds"]
                r["items_per_s"] = r["items"] / r["seconds"]
            print(json.dumps(r), file=sys.stderr)
            runs.append(r)
    machine["load_at_end"] = os.getloadavg()
    report = table(runs, args.ceiling)
    print(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(command=" ".join(["python", *sys.argv]), machine=machine, ceiling=args.ceiling, runs=runs, table=report), indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    failed = [f"{r['workload']}/{r['method']}" for r in runs if "failed" in r]
    if failed:
        sys.exit(f"failed: {', '.join(failed)} (each one's error is above)")


def check_args(parser: argparse.ArgumentParser, args) -> None:
    """Refuse what every method would only fail on, one subprocess each, before any of them starts."""
    for name in ("items", "naive_items"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: at least 1")
    if args.batched_items < 0 or args.threads < 0:
        parser.error("--batched-items and --threads: 0 or more")
    if not any(args.methods.split(",")):
        parser.error("--methods: no method")
    for method in filter(None, args.methods.split(",")):
        base, at, chunk = method.partition("@")
        if base not in METHODS or (at and not (chunk.isdigit() and int(chunk) > 0)):
            parser.error(f"--methods: {method!r} is not METHOD[@N] with METHOD one of {', '.join(METHODS)} "
                         f"and N a positive number of items per call")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
